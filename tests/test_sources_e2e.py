"""[source] sessions end to end: real subprocesses against the fake STS, which records who signed
each call. The MFA morning routine, run picking a session up without a restart, session expiry,
web identity with a rotating token, and sts_endpoint_url reaching botocore's own STS clients."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys

import boto3
import pytest
from botocore.configloader import raw_config_parse

from process_support import NotifySocket, Proc, clean_env, run_cli, write_config
from support.fakests import BAD_WEB_TOKEN, ECHOED_MFA_CODE, ECHOED_WEB_TOKEN, Faults

SERIAL = "arn:aws:iam::123456789012:mfa/alice"
HUB = "arn:aws:iam::111111111111:role/ci-hub"
SOURCE_KEY = "AKIASOURCEEXAMPLE000"  # clean_env's static source keys

pytestmark = pytest.mark.slow


def mfa_setup(tmp_path, fake_sts, profiles=("a", "b", "c"), **top):
    creds = tmp_path / "aws" / "credentials"
    source = {"mfa_serial": SERIAL, **top.pop("source", {})}
    config = write_config(
        tmp_path / "c.toml", creds, fake_sts.url, list(profiles), source=source, **top
    )
    return config, creds


def session_file(tmp_path):
    found = list(tmp_path.glob("mfa-session-*.json"))
    assert len(found) == 1, found
    return found[0]


def stored_secrets(tmp_path) -> list[str]:
    document = json.loads(session_file(tmp_path).read_text())
    return [document["secret_access_key"], document["session_token"]]


def test_the_mfa_morning_routine(tmp_path, fake_sts):
    """once refuses without a session (no STS call); mfa stores one 0600, signed by the long-term
    keys; once then signs every role with the session; nothing secret is printed."""
    config, creds = mfa_setup(tmp_path, fake_sts)
    env = clean_env(tmp_path)
    outputs: list[str] = []

    def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "credrefresh", *args, "--config", str(config)],
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        outputs.append(result.stdout + result.stderr)
        return result

    checked = cli("check")
    assert checked.returncode == 0
    assert f"MFA {SERIAL}" in checked.stdout

    refused = cli("once")
    assert refused.returncode == 1
    assert "MfaSessionRequired" in refused.stdout
    assert f"run: credrefresh mfa --config {config}" in refused.stdout
    assert fake_sts.stats.assume_role == 0

    assert cli("mfa", stdin="").returncode == 2  # no code, and stdin is no terminal
    assert cli("mfa", "--code", "12345").returncode == 2
    wrong = cli("mfa", "--code", "000000")
    assert wrong.returncode == 1
    assert "AccessDenied" in wrong.stderr
    assert not list(tmp_path.glob("mfa-session-*.json"))

    stored = cli("mfa", "--code", "-", stdin="123456\n")
    assert stored.returncode == 0, stored.stderr
    path = session_file(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (token_call,) = fake_sts.session_calls
    assert token_call.action == "GetSessionToken"
    assert token_call.caller_access_key_id == SOURCE_KEY
    assert token_call.detail == SERIAL
    assert token_call.duration_seconds == 43200

    done = cli("once")
    assert done.returncode == 0, done.stdout + done.stderr
    assert {c.caller_access_key_id for c in fake_sts.calls} == {token_call.access_key_id}
    assert len(fake_sts.calls) == 3

    status = cli("status", "--json")
    document = json.loads(status.stdout)
    assert status.returncode == 0
    assert document["source_session"]["state"] == "valid"
    assert document["source_session"]["mfa_serial"] == SERIAL

    # What we wrote works for an SDK against the same STS.
    written = raw_config_parse(str(creds))["a"]
    client = boto3.client(
        "sts",
        region_name="us-east-1",
        endpoint_url=fake_sts.url,
        aws_access_key_id=written["aws_access_key_id"],
        aws_secret_access_key=written["aws_secret_access_key"],
        aws_session_token=written["aws_session_token"],
    )
    assert client.get_caller_identity()["Arn"].endswith(":assumed-role/a/credrefresh-a")

    for secret in stored_secrets(tmp_path):
        assert not [o for o in outputs if secret in o]


def test_mfa_without_mfa_serial_is_exit_78(tmp_path, fake_sts):
    creds = tmp_path / "aws" / "credentials"
    config = write_config(tmp_path / "c.toml", creds, fake_sts.url, ["a"])
    result = run_cli(["mfa", "--code", "123456", "--config", str(config)], clean_env(tmp_path))
    assert result.returncode == 78
    assert f"{config}: source.mfa_serial: not set" in result.stderr


def test_run_waits_for_mfa_and_picks_the_session_up_without_a_restart(tmp_path, fake_sts):
    """READY=1 with STATUS= 'waiting for MFA'; one source.session_required; after credrefresh mfa
    every role is refreshed, signed with the session, by the same process."""
    config, creds = mfa_setup(tmp_path, fake_sts)
    notify = NotifySocket(tmp_path / "n.sock")
    proc = Proc(["run", "--config", str(config)], clean_env(tmp_path, NOTIFY_SOCKET=notify.path))
    try:
        notify.wait_for(lambda m: m == "READY=1")
        notify.wait_for(lambda m: m.startswith("STATUS=waiting for MFA (run credrefresh mfa)"))
        proc.wait_count("source.session_required", 1)
        assert fake_sts.stats.assume_role == 0
        result = run_cli(["mfa", "--code", "654321", "--config", str(config)], clean_env(tmp_path))
        assert result.returncode == 0, result.stderr
        proc.wait_count("role.refreshed", 3, timeout=20)
        notify.wait_for(lambda m: m.startswith("STATUS=MFA session valid until"))
        proc.signal(signal.SIGTERM)
        assert proc.wait_exit(timeout=20) == 0
    finally:
        proc.kill()
        notify.close()
    (token_call,) = fake_sts.session_calls
    assert {c.caller_access_key_id for c in fake_sts.calls} == {token_call.access_key_id}
    assert len(proc.named("source.session_required")) == 1
    assert len(proc.named("source.session_started")) == 1
    assert not proc.named("role.refresh_failed")
    for secret in stored_secrets(tmp_path):
        assert secret not in proc.output()


def test_an_expiring_mfa_session_is_announced_and_never_signs_once_expired(tmp_path, fake_sts):
    """Sessions of 8 s with a 4 s lead: expiring, expired and required once each, and no call is
    ever signed with an expired session (the fake STS would answer ExpiredToken)."""
    fake_sts.set_faults(Faults(latency=0, lifetime=8))
    config, _ = mfa_setup(
        tmp_path,
        fake_sts,
        source={"session_expiring_lead": 4},
        sts_timeout=0.5,
        refresh={"write_delay": 0.1, "backoff_initial": 0.2, "backoff_max": 1.0},
    )
    env = clean_env(tmp_path)
    assert run_cli(["mfa", "--code", "123456", "--config", str(config)], env).returncode == 0
    proc = Proc(["run", "--config", str(config)], env)
    try:
        proc.wait_count("source.session_expired", 1, timeout=20)
        proc.wait_count("source.session_required", 1, timeout=10)
        proc.signal(signal.SIGTERM)
        assert proc.wait_exit(timeout=20) == 0
    finally:
        proc.kill()
    assert len(proc.named("source.session_expiring")) == 1
    assert proc.named("role.refreshed")
    assert fake_sts.stats.expired == 0


# -- web identity ------------------------------------------------------------------------------


def web_setup(tmp_path, fake_sts, token: str, **top):
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    creds = tmp_path / "aws" / "credentials"
    source = {"web_identity_token_file": str(token_file), "role_arn": HUB}
    config = write_config(
        tmp_path / "c.toml", creds, fake_sts.url, ["a", "b"], source=source, **top
    )
    return config, token_file


def test_once_with_a_web_identity_signs_every_role_with_its_session(tmp_path, fake_sts):
    config, _ = web_setup(tmp_path, fake_sts, "token-one")
    result = run_cli(["once", "--config", str(config)], clean_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    (web_call,) = fake_sts.session_calls
    assert web_call.action == "AssumeRoleWithWebIdentity"
    assert web_call.caller_access_key_id is None  # unsigned, like botocore's own provider
    assert web_call.detail == "token-one"
    assert {c.caller_access_key_id for c in fake_sts.calls} == {web_call.access_key_id}


def test_an_invalid_web_identity_token_fails_once_and_is_never_printed(tmp_path, fake_sts):
    config, _ = web_setup(tmp_path, fake_sts, BAD_WEB_TOKEN)
    result = run_cli(["once", "--config", str(config)], clean_env(tmp_path))
    assert result.returncode == 1
    events = [json.loads(line) for line in result.stdout.splitlines()]
    (failure,) = [e for e in events if e["event"] == "source.session_failed"]
    assert failure["code"] == "InvalidIdentityToken"
    assert {e["error_code"] for e in events if e["event"] == "role.refresh_failed"} == {
        "InvalidIdentityToken"
    }
    assert fake_sts.stats.assume_role == 0
    assert BAD_WEB_TOKEN not in result.stdout + result.stderr


def test_run_rereads_a_rotated_token_and_keeps_roles_fresh(tmp_path, fake_sts):
    """Sessions of 4 s: each renewal reads the token file again; the roles never see an
    ExpiredToken."""
    fake_sts.set_faults(Faults(latency=0, lifetime=4))
    config, token_file = web_setup(
        tmp_path,
        fake_sts,
        "token-one",
        sts_timeout=0.5,
        refresh={"write_delay": 0.1, "backoff_initial": 0.2, "backoff_max": 1.0},
    )
    proc = Proc(["run", "--config", str(config)], clean_env(tmp_path))
    try:
        proc.wait_count("source.session_started", 1, timeout=20)
        token_file.write_text("token-two\n")
        proc.wait_count("source.session_started", 3, timeout=20)
        proc.signal(signal.SIGTERM)
        assert proc.wait_exit(timeout=20) == 0
    finally:
        proc.kill()
    tokens = [c.detail for c in fake_sts.session_calls]
    assert tokens[0] == "token-one"
    assert tokens[-1] == "token-two"
    assert fake_sts.stats.expired == 0
    assert not proc.named("role.refresh_failed")
    session_keys = {c.access_key_id for c in fake_sts.session_calls}
    assert {c.caller_access_key_id for c in fake_sts.calls} <= session_keys


# -- sts_endpoint_url reaches botocore's own STS clients ---------------------------------------


def test_sts_endpoint_url_applies_to_an_assume_role_source_profile(tmp_path, fake_sts):
    """[source] profile is an assume-role profile of ~/.aws/config: botocore's inner AssumeRole
    goes to sts_endpoint_url too (AWS_ENDPOINT_URL points at a dead loopback port, so any call
    that ignores the setting fails, and nothing can reach AWS)."""
    aws = tmp_path / ".aws"
    aws.mkdir()
    (aws / "credentials").write_text(
        "[base]\naws_access_key_id = AKIABASEEXAMPLE00000\n"
        "aws_secret_access_key = base-secret-not-real\n"
    )
    (aws / "config").write_text(
        "[profile via-hub]\nrole_arn = arn:aws:iam::111111111111:role/hub\nsource_profile = base\n"
    )
    creds = tmp_path / "out" / "credentials"
    config = write_config(
        tmp_path / "c.toml", creds, fake_sts.url, ["a"], source={"profile": "via-hub"}
    )
    env = clean_env(tmp_path, AWS_ENDPOINT_URL="http://127.0.0.1:9")
    result = run_cli(["once", "--config", str(config)], env)
    assert result.returncode == 0, result.stdout + result.stderr
    by_role = {c.role_arn.rsplit("/", 1)[1]: c for c in fake_sts.calls}
    assert by_role["hub"].caller_access_key_id == "AKIABASEEXAMPLE00000"
    assert by_role["a"].caller_access_key_id == by_role["hub"].access_key_id
    assert os.path.exists(creds)


def test_mfa_asks_for_the_code_on_a_terminal(tmp_path, fake_sts):
    """With stdin a terminal (a real pseudo-terminal here), mfa prompts and reads the code."""
    config, _ = mfa_setup(tmp_path, fake_sts)
    leader, follower = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "credrefresh", "mfa", "--config", str(config)],
        env=clean_env(tmp_path),
        stdin=follower,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        os.write(leader, b"246810\n")  # typed ahead of the prompt: must not be discarded
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
        os.close(leader)
        os.close(follower)
    assert proc.returncode == 0, err
    assert err.startswith("MFA code: ")
    (call,) = fake_sts.session_calls
    assert call.action == "GetSessionToken"


def test_check_refuses_a_long_role_under_an_mfa_session_with_exit_78(tmp_path, fake_sts):
    config, _ = mfa_setup(tmp_path, fake_sts)
    config.write_text(config.read_text() + "duration_seconds = 7200\n")
    result = run_cli(["check", "--config", str(config)], clean_env(tmp_path))
    assert result.returncode == 78
    assert f"{config}: roles[2].duration_seconds: 7200 is above 3600" in result.stderr


def test_an_mfa_code_sts_quotes_back_is_not_printed(tmp_path, fake_sts):
    config, _ = mfa_setup(tmp_path, fake_sts)
    result = run_cli(
        ["mfa", "--code", ECHOED_MFA_CODE, "--config", str(config)], clean_env(tmp_path)
    )
    assert result.returncode == 1
    assert "ValidationError" in result.stderr
    assert ECHOED_MFA_CODE not in result.stdout + result.stderr


def test_a_long_web_identity_token_sts_quotes_back_is_not_printed_even_in_part(tmp_path, fake_sts):
    """The quoted token crosses the 1024-character cut of error messages: it is redacted before
    the cut, so no piece of it survives (in events, role failures or the state file)."""
    token = ECHOED_WEB_TOKEN + "".join(f"{i:04d}" for i in range(400))  # 1605 characters
    config, _ = web_setup(tmp_path, fake_sts, token)
    result = run_cli(["once", "--config", str(config)], clean_env(tmp_path))
    assert result.returncode == 1
    state = (tmp_path / "state.json").read_text()
    assert "[REDACTED]" in result.stdout
    assert "[REDACTED]" in state
    pieces = [token[i : i + 16] for i in range(0, len(token) - 16, 8)]
    for text in (result.stdout, result.stderr, state):
        assert not [p for p in pieces if p in text]


def test_audit_names_the_mfa_session_that_signed_the_roles(tmp_path, fake_sts):
    """CloudTrail shows the MFA session's key as the caller of each AssumeRole: `audit key`
    finds it in the log (as the [source] session of the device), and `audit sessions` lists it
    once although both `mfa` and `run` announce it."""
    config, _ = mfa_setup(tmp_path, fake_sts, profiles=("a", "b"))
    env = clean_env(tmp_path)
    log = tmp_path / "log.jsonl"
    stored = run_cli(["mfa", "--code", "123456", "--config", str(config)], env)
    proc = Proc(["run", "--config", str(config)], env)
    try:
        proc.wait_count("role.refreshed", 2)
        proc.signal(signal.SIGTERM)
        assert proc.wait_exit(timeout=20) == 0
    finally:
        proc.kill()
    log.write_text(stored.stdout + proc.output())
    (call,) = fake_sts.session_calls
    found = run_cli(["audit", "key", "--json", call.access_key_id, str(log)], env)
    assert found.returncode == 0, found.stderr
    (session,) = json.loads(found.stdout)["sessions"]
    assert (session["profile"], session["role_arn"]) == ("[source]", SERIAL)
    listed = run_cli(["audit", "sessions", "--json", str(log)], env)
    profiles = [s["profile"] for s in json.loads(listed.stdout)]
    assert sorted(profiles) == ["[source]", "a", "b"]
