"""Tests of the redaction processor and the structlog set-up in ``credrefresh.logs``."""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime as dt
from datetime import timedelta

import pytest
import structlog

from credrefresh.logs import REDACTED, configure, get_logger, redact

# A secret access key (40 base64 characters) and a session token (300), as STS returns them.
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = base64.b64encode(hashlib.shake_256(b"session token").digest(225)).decode()
ACCESS_KEY_ID = "ASIAIOSFODNN7EXAMPLE"
ROLE_ARN = "arn:aws:iam::123456789012:role/deploy"
ASSUMED_ARN = "arn:aws:sts::123456789012:assumed-role/deploy/credrefresh-prod"
SHA1_HEX = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b"


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(capture=False)


def leaks(text: str) -> list[str]:
    """Every 16-character piece of a secret found in ``text`` (none may be)."""
    return [
        secret[i : i + 16]
        for secret in (SECRET_KEY, SESSION_TOKEN)
        for i in range(len(secret) - 15)
        if secret[i : i + 16] in text
    ]


def test_secrets_have_realistic_shapes():
    """The fixtures look like what STS returns, so the shape-based tests mean something."""
    assert len(SECRET_KEY) == 40
    assert len(SESSION_TOKEN) == 300
    assert len(ACCESS_KEY_ID) == 20
    assert leaks(f"{SECRET_KEY} {SESSION_TOKEN}") != []


# -- the processor --------------------------------------------------------------------------


def test_secret_named_keys_are_blanked_in_any_case():
    """A key named like a secret is blanked whatever its value's type or its spelling's case."""
    event = {
        "event": "sts.response",
        "aws_secret_access_key": "short",
        "AWS_SESSION_TOKEN": "abc",
        "aws_security_token": None,
        "SecretAccessKey": SECRET_KEY,
        "SessionToken": SESSION_TOKEN,
        "Password": "hunter2",
        "token": 12345,
        "Credentials": {"AccessKeyId": ACCESS_KEY_ID},
        "access_key_id": ACCESS_KEY_ID,
    }
    assert redact(None, "info", event) == {
        "event": "sts.response",
        "aws_secret_access_key": REDACTED,
        "AWS_SESSION_TOKEN": REDACTED,
        "aws_security_token": REDACTED,
        "SecretAccessKey": REDACTED,
        "SessionToken": REDACTED,
        "Password": REDACTED,
        "token": REDACTED,
        "Credentials": REDACTED,
        "access_key_id": ACCESS_KEY_ID,
    }


def test_nested_dicts_and_lists_are_redacted():
    """Secret keys and secret-shaped values are redacted at any depth of dicts and lists."""
    event = {
        "event": "sts.response",
        "response": {
            "Credentials": {"SecretAccessKey": SECRET_KEY, "AccessKeyId": ACCESS_KEY_ID},
            "AssumedRoleUser": {"Arn": ASSUMED_ARN},
            "ResponseMetadata": {"HTTPStatusCode": 200, "RetryAttempts": 0},
        },
        "items": [
            {"SessionToken": SESSION_TOKEN, "profile": "prod"},
            [SECRET_KEY, "kept", {"password": "pw", "n": 3}],
        ],
    }
    assert redact(None, "info", event) == {
        "event": "sts.response",
        "response": {
            "Credentials": REDACTED,
            "AssumedRoleUser": {"Arn": ASSUMED_ARN},
            "ResponseMetadata": {"HTTPStatusCode": 200, "RetryAttempts": 0},
        },
        "items": [
            {"SessionToken": REDACTED, "profile": "prod"},
            [REDACTED, "kept", {"password": REDACTED, "n": 3}],
        ],
    }


def test_tuples_and_sets_are_redacted():
    """Secret-shaped values inside tuples and sets are redacted as inside lists."""
    event = {"event": "x", "pair": ("prod", SECRET_KEY), "bag": {SESSION_TOKEN}}
    result = redact(None, "debug", event)
    assert list(result["pair"]) == ["prod", REDACTED]
    assert list(result["bag"]) == [REDACTED]


def test_secret_shaped_values_are_scrubbed_inside_longer_strings():
    """A secret key or session token embedded in an error message is replaced, the rest kept."""
    message = (
        "An error occurred (InvalidClientTokenId) when calling the AssumeRole operation: "
        f"key {SECRET_KEY} with token {SESSION_TOKEN}, id {ACCESS_KEY_ID} rejected"
    )
    event = {"event": f"role.failed: {SESSION_TOKEN}", "error": message, "level": "error"}
    assert redact(None, "error", event) == {
        "event": f"role.failed: {REDACTED}",
        "error": (
            "An error occurred (InvalidClientTokenId) when calling the AssumeRole operation: "
            f"key {REDACTED} with token {REDACTED}, id {ACCESS_KEY_ID} rejected"
        ),
        "level": "error",
    }


@pytest.mark.parametrize(
    "template",
    ["{}", "'{}'", '"{}"', "({})", "key: {}", "\n{}\n", "[{}]", "a,{},b"],
)
def test_secret_key_is_scrubbed_in_common_punctuation(template):
    """A secret key quoted, bracketed, after a colon or on its own line is scrubbed."""
    result = redact(None, "info", {"event": "x", "detail": template.format(SECRET_KEY)})
    assert result == {"event": "x", "detail": template.format(REDACTED)}


@pytest.mark.parametrize("template", ["aws_secret_access_key={}", "AWS_SECRET_ACCESS_KEY={}"])
def test_secret_key_is_scrubbed_after_an_equals_sign(template):
    """A secret key in ``name=value`` form in a message (an env dump, a CLI flag) is scrubbed."""
    result = redact(None, "info", {"event": "x", "detail": f"env: {template.format(SECRET_KEY)}"})
    assert result == {"event": "x", "detail": f"env: {template.format(REDACTED)}"}


def test_secret_key_without_a_digit_is_scrubbed():
    """A secret key that happens to contain no digit is still scrubbed from free text."""
    secret = "wJalrXUtnFEMI/KxMDENG/bPxRfiCYEXAMPLEKEY"
    result = redact(None, "info", {"event": "x", "detail": f"key {secret} rejected"})
    assert result == {"event": "x", "detail": f"key {REDACTED} rejected"}


def test_audit_fields_and_numbers_are_kept():
    """Access key ids, ARNs, session names, timestamps, hex digests and numbers stay readable."""
    event = {
        "event": "role.refreshed",
        "profile": "prod",
        "access_key_id": ACCESS_KEY_ID,
        "role_arn": ROLE_ARN,
        "assumed_role_arn": ASSUMED_ARN,
        "session_name": "credrefresh-prod",
        "expiration": "2030-06-01T12:00:00.123456+00:00",
        "timestamp": "2030-06-01T11:00:00.000001Z",
        "sha1": SHA1_HEX,
        "message": f"wrote {ACCESS_KEY_ID} for {ROLE_ARN} at 2030-06-01T12:00:00Z ({SHA1_HEX})",
        "duration_ms": 123.4,
        "attempt": 3,
        "big": 10**40,
        "transient": True,
        "last_error": None,
        "profiles": ["prod", "staging"],
    }
    assert redact(None, "info", copy.deepcopy(event)) == event


def test_objects_are_rendered_and_scrubbed():
    """An arbitrary object (an exception, say) is turned into its scrubbed string."""
    event = {"event": "x", "error": RuntimeError(f"signature mismatch for {SECRET_KEY}")}
    assert redact(None, "info", event) == {
        "event": "x",
        "error": f"signature mismatch for {REDACTED}",
    }


# -- end to end -----------------------------------------------------------------------------


def fail() -> None:
    raise RuntimeError(f"AssumeRole failed: {SECRET_KEY} {SESSION_TOKEN}")


def log_everything() -> None:
    """Emit secrets at every level, bound, in context variables, in a traceback."""
    structlog.contextvars.bind_contextvars(request_token=SESSION_TOKEN)
    log = get_logger().bind(session_token=SESSION_TOKEN)
    log.debug("probe.debug", secret_access_key=SECRET_KEY, detail=f"key {SECRET_KEY}")
    log.info("probe.info", credentials={"SecretAccessKey": SECRET_KEY}, n=1)
    log.info("probe.format %s", f"token {SESSION_TOKEN}")
    log.warning("probe.warning", response={"items": [SECRET_KEY, SESSION_TOKEN]})
    log.error("probe.error", error=f"denied {SECRET_KEY}", role_arn=ROLE_ARN)
    try:
        fail()
    except RuntimeError:
        log.exception("probe.exception", access_key_id=ACCESS_KEY_ID)


def test_json_lines_are_objects_with_utc_timestamps_and_no_secrets():
    """Every JSON line is one object with UTC timestamp, level and event, and holds no secret."""
    out = io.StringIO()
    configure("json", "debug", stream=out)
    log_everything()
    text = out.getvalue()
    assert leaks(text) == []
    lines = [json.loads(line) for line in text.splitlines()]
    for line in lines:
        stamp = line.pop("timestamp")
        assert stamp.endswith(("Z", "+00:00"))
        assert dt.fromisoformat(stamp).utcoffset() == timedelta(0)
    exception = lines[-1].pop("exception")
    assert exception.startswith("Traceback (most recent call last):")
    assert exception.endswith(f"RuntimeError: AssumeRole failed: {REDACTED} {REDACTED}")
    bound = {"request_token": REDACTED, "session_token": REDACTED}
    assert lines == [
        {
            **bound,
            "event": "probe.debug",
            "level": "debug",
            "secret_access_key": REDACTED,
            "detail": f"key {REDACTED}",
        },
        {**bound, "event": "probe.info", "level": "info", "credentials": REDACTED, "n": 1},
        {**bound, "event": f"probe.format token {REDACTED}", "level": "info"},
        {
            **bound,
            "event": "probe.warning",
            "level": "warning",
            "response": {"items": [REDACTED, REDACTED]},
        },
        {
            **bound,
            "event": "probe.error",
            "level": "error",
            "error": f"denied {REDACTED}",
            "role_arn": ROLE_ARN,
        },
        {**bound, "event": "probe.exception", "level": "error", "access_key_id": ACCESS_KEY_ID},
    ]


def test_level_filter_drops_lower_levels():
    """At level ``warning`` only warnings and errors are written."""
    out = io.StringIO()
    configure("json", "warning", stream=out)
    log_everything()
    events = [json.loads(line)["event"] for line in out.getvalue().splitlines()]
    assert events == ["probe.warning", "probe.error", "probe.exception"]


def test_auto_format_writes_json_when_not_a_terminal():
    """``auto`` picks JSON for a stream that is not a terminal."""
    out = io.StringIO()
    configure("auto", "info", stream=out)
    get_logger().info("probe.auto", token=SESSION_TOKEN)
    line = json.loads(out.getvalue())
    assert line.pop("timestamp").endswith(("Z", "+00:00"))
    assert line == {"event": "probe.auto", "level": "info", "token": REDACTED}


def test_console_renderer_never_shows_a_secret():
    """The console renderer shows every event, and no secret, at every level."""
    out = io.StringIO()
    configure("console", "debug", stream=out)
    log_everything()
    text = out.getvalue()
    assert leaks(text) == []
    for event in ("probe.debug", "probe.info", "probe.warning", "probe.error", "probe.exception"):
        assert event in text
    assert "RuntimeError: AssumeRole failed: [REDACTED] [REDACTED]" in text
    assert text.count(REDACTED) >= 12
    assert ROLE_ARN in text
    assert ACCESS_KEY_ID in text
