"""Hostile STS answers: every field is checked before it reaches the file or a log line.

The STS here is a real HTTP server on loopback (``support.evilsts``) speaking STS's XML, so the
answers go through botocore's parser exactly as an answer from a party on the network path
would. Each case fails without ``credrefresh.answer`` (checked by running them against the
unvalidated client: the injected section lands in the file, or an OverflowError escapes).
"""

from __future__ import annotations

import json
import signal
from datetime import UTC, datetime, timedelta

import pytest
from botocore.configloader import raw_config_parse

from credrefresh.answer import REDACTED, clean_failure, validate_answer
from credrefresh.config import Role
from credrefresh.errors import RefreshFailed
from process_support import Proc, clean_env, run_cli, write_config
from support.evilsts import EvilSTS, answer_with, denied_quoting

INJECT = "\n[injected]\ncredential_process = /bin/sh -c 'echo pwned'\n"
KEPT = "# keep me\n[default]\naws_access_key_id = AKIAUSER\naws_secret_access_key = u\n"
STARTED = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
ROLE = Role(profile="p", role_arn="arn:aws:iam::123456789012:role/r", session_name="sess")
GOOD_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
GOOD_TOKEN = "FwoGZXIvYXdzEBYaD" + "A" * 300 + "=="


def good_response(**changes: object) -> dict[str, object]:
    """A response as botocore parses a valid AssumeRole answer, with ``changes`` applied."""
    credentials: dict[str, object] = {
        "AccessKeyId": "ASIAIOSFODNN7EXAMPLE",
        "SecretAccessKey": GOOD_SECRET,
        "SessionToken": GOOD_TOKEN,
        "Expiration": STARTED + timedelta(hours=1),
    }
    user: dict[str, object] = {"Arn": "arn:aws:sts::123456789012:assumed-role/r/sess"}
    for key, value in changes.items():
        (user if key == "Arn" else credentials)[key] = value
    return {"Credentials": credentials, "AssumedRoleUser": user}


EVIL_FIELDS = {
    "access-key-id": {"access_key_id": "ASIAEVILEXAMPLE0" + INJECT},
    "access-key-id-lowercase": {"access_key_id": "asiaevilexample0"},
    "secret": {"secret_access_key": GOOD_SECRET + INJECT},
    "token": {"session_token": GOOD_TOKEN + INJECT},
    "assumed-role-arn": {"assumed_arn": "arn:aws:sts::123456789012:assumed-role/r/s" + INJECT},
    "expiration-overflows": {"expiration": "9999-12-31T23:59:59-14:00"},
    "expiration-far-future": {"expiration": "2999-01-01T00:00:00Z"},
    "expiration-long-past": {"expiration": "2000-01-01T00:00:00Z"},
}


@pytest.mark.parametrize("fields", EVIL_FIELDS.values(), ids=EVIL_FIELDS.keys())
def test_once_rejects_a_hostile_answer_whole(tmp_path, fields):
    """A hostile field fails the role with InvalidStsResponse; nothing of the answer is written."""
    creds = tmp_path / "credentials"
    creds.write_text(KEPT)
    with EvilSTS(answer_with(**fields)) as sts:
        config = write_config(tmp_path / "c.toml", creds, sts.url, ["p"])
        result = run_cli(
            ["once", "--config", str(config), "--log-format", "json"], clean_env(tmp_path)
        )
    assert result.returncode == 1, result.stderr
    assert creds.read_text() == KEPT
    assert set(raw_config_parse(str(creds))) == {"default"}
    events = [json.loads(line) for line in result.stdout.splitlines()]
    failed = [e for e in events if e["event"] == "role.refresh_failed"]
    assert [(e["profile"], e["error_code"]) for e in failed] == [("p", "InvalidStsResponse")]
    for value in fields.values():
        assert value.strip() not in result.stdout + result.stderr
    assert "injected" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_once_accepts_a_well_formed_answer_from_the_same_server(tmp_path):
    """The hostile server's ordinary answer is written: the rejections above are the checks'."""
    creds = tmp_path / "credentials"
    with EvilSTS(answer_with()) as sts:
        config = write_config(tmp_path / "c.toml", creds, sts.url, ["p"])
        result = run_cli(["once", "--config", str(config)], clean_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert raw_config_parse(str(creds))["p"]["credrefresh_managed"] == "true"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"AccessKeyId": "A" * 15}, "AccessKeyId"),
        ({"AccessKeyId": "A" * 129}, "AccessKeyId"),
        ({"AccessKeyId": "ASIAIOSFODNN7EXAMPL\u0130"}, "AccessKeyId"),
        ({"AccessKeyId": "ASIAIOSFODNN7EXAMPLE\n"}, "AccessKeyId"),
        ({"AccessKeyId": None}, "AccessKeyId"),
        ({"SecretAccessKey": GOOD_SECRET + "\r"}, "SecretAccessKey"),
        ({"SecretAccessKey": "a" * 257}, "SecretAccessKey"),
        ({"SecretAccessKey": GOOD_SECRET[:-1] + "\x00"}, "SecretAccessKey"),
        ({"SessionToken": "A" * 65537}, "SessionToken"),
        ({"SessionToken": GOOD_TOKEN + " x"}, "SessionToken"),
        ({"SessionToken": 42}, "SessionToken"),
        ({"Expiration": "2026-05-01T13:00:00Z"}, "Expiration"),
        ({"Expiration": STARTED - timedelta(minutes=16)}, "Expiration"),
        ({"Expiration": STARTED + timedelta(hours=12, minutes=16)}, "Expiration"),
        ({"Expiration": datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)}, "Expiration"),
        ({"Arn": "arn:aws:iam::123456789012:role/r"}, "AssumedRoleUser.Arn"),
        ({"Arn": "arn:aws:sts::123456789012:assumed-role/r/sess/x"}, "AssumedRoleUser.Arn"),
        ({"Arn": "arn:aws:sts::123456789012:assumed-role/r/s"}, "AssumedRoleUser.Arn"),
        ({"Arn": "arn:aws:sts::123456789012:assumed-role/r/" + "s" * 2048}, "AssumedRoleUser.Arn"),
    ],
)
def test_validate_answer_names_the_field_never_the_value(change, field):
    """Each out-of-bounds field is refused by name, and the error holds none of its value."""
    with pytest.raises(RefreshFailed) as info:
        validate_answer(ROLE, good_response(**change), started=STARTED, duration_ms=1.0)
    failure = info.value
    assert (failure.code, failure.transient) == ("InvalidStsResponse", True)
    assert field in failure.message
    for value in change.values():
        if isinstance(value, str):
            assert value not in str(failure)


def test_validate_answer_keeps_a_valid_answer_exactly():
    """A valid answer becomes the Issued it always did, Expiration in UTC."""
    local = STARTED.astimezone(datetime.now().astimezone().tzinfo) + timedelta(hours=1)
    naive = (STARTED + timedelta(hours=12, minutes=14)).replace(tzinfo=None)
    for expiration, expected in [
        (local, STARTED + timedelta(hours=1)),
        (naive, STARTED + timedelta(hours=12, minutes=14)),
        (STARTED - timedelta(minutes=14), STARTED - timedelta(minutes=14)),
    ]:
        issued = validate_answer(
            ROLE, good_response(Expiration=expiration), started=STARTED, duration_ms=2.5
        )
        assert issued.credentials.expiration == expected
        assert issued.credentials.expiration.tzinfo is UTC
    assert issued.credentials.secret_access_key == GOOD_SECRET
    assert issued.credentials.session_token == GOOD_TOKEN
    assert (issued.profile, issued.assumed_role_arn, issued.issued_at, issued.duration_ms) == (
        "p",
        "arn:aws:sts::123456789012:assumed-role/r/sess",
        STARTED,
        2.5,
    )


def test_validate_answer_refuses_a_response_without_its_parts():
    """A response missing Credentials or AssumedRoleUser is refused, not a KeyError."""
    for response in ({}, {"Credentials": {}}, {"AssumedRoleUser": {"Arn": "x"}}):
        with pytest.raises(RefreshFailed, match="InvalidStsResponse"):
            validate_answer(ROLE, response, started=STARTED, duration_ms=0.0)


def test_clean_failure_redacts_the_external_id_and_escapes_controls():
    """An STS message quoting the external id, or carrying escapes, is safe to print."""
    role = Role(profile="p", role_arn=ROLE.role_arn, session_name="s", external_id="ext-9f2c")
    failure = RefreshFailed(
        "AccessDenied\x1b[2J",
        "ExternalId ext-9f2c is wrong\n\x1b[31mred\u202e" + "x" * 5000,
        transient=False,
        source=True,
    )
    cleaned = clean_failure(failure, role)
    assert cleaned.code == "AccessDenied\\x1b[2J"
    assert cleaned.message.startswith(
        f"ExternalId {REDACTED} is wrong\\n\\x1b[31mred\\u202e" + "x" * 10
    )
    redacted = failure.message.replace("ext-9f2c", REDACTED)
    assert cleaned.message.endswith(f"... ({len(redacted) - 1024} more characters)")
    assert (cleaned.transient, cleaned.source) == (False, True)
    plain = RefreshFailed("Throttling", "Rate exceeded", transient=True)
    assert clean_failure(plain, role) is plain


def test_an_echoed_external_id_reaches_no_output(tmp_path):
    """STS quoting the external id back: events, state file and status --json show [REDACTED]."""
    external_id = "tenant-7f3a9c1e-ext"
    creds = tmp_path / "credentials"
    env = clean_env(tmp_path)
    with EvilSTS(denied_quoting("ExternalId")) as sts:
        config = write_config(tmp_path / "c.toml", creds, sts.url, ["p"])
        config.write_text(config.read_text() + f'external_id = "{external_id}"\n')
        once = run_cli(["once", "--config", str(config), "--log-format", "json"], env)
        daemon = Proc(["run", "--config", str(config), "--log-format", "json"], env)
        try:
            daemon.wait_count("role.refresh_failed", 1)
            daemon.wait_count("daemon.ready", 1)
            daemon.signal(signal.SIGTERM)
            assert daemon.wait_exit() == 0, daemon.stderr
        finally:
            daemon.kill()
        status = run_cli(["status", "--config", str(config), "--json"], env)
    state = (tmp_path / "state.json").read_text()
    assert once.returncode == 1
    failed = daemon.named("role.refresh_failed") + [
        e for e in map(json.loads, once.stdout.splitlines()) if e["event"] == "role.refresh_failed"
    ]
    assert {e["error"] for e in failed} == {
        f"User is not authorized: ExternalId {REDACTED} did not match"
    }
    assert f"ExternalId {REDACTED}" in state
    assert json.loads(status.stdout)["profiles"][0]["last_error"] == (
        f"User is not authorized: ExternalId {REDACTED} did not match"
    )
    for text in (once.stdout, once.stderr, daemon.output(), state, status.stdout, status.stderr):
        assert external_id not in text
