"""The ``[serve]`` table, ``check``'s warnings, and the consumer commands.

``env``, ``exec`` and ``credential-process``, run as the user runs them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from credrefresh.config import load_config, plan_reload
from credrefresh.errors import ConfigError
from credrefresh.model import format_time
from process_support import clean_env, run_cli

ROLE = 'profile = "{p}"\nrole_arn = "arn:aws:iam::123456789012:role/{p}"\n'


def config_file(tmp_path: Path, serve: str, *, duration: int = 3600, extra: str = "") -> Path:
    path = tmp_path / "c.toml"
    path.write_text(
        f'credentials_file = "{tmp_path / "credentials"}"\n'
        f'state_file = "{tmp_path / "state" / "state.json"}"\n'
        f"{extra}"
        f"[serve]\n{serve}\n"
        f"[[roles]]\n{ROLE.format(p='a')}duration_seconds = {duration}\n"
        f"[[roles]]\n{ROLE.format(p='b')}"
    )
    return path


@pytest.mark.parametrize(
    ("address", "host", "port"),
    [
        ("127.0.0.1:9911", "127.0.0.1", 9911),
        ("127.1.2.3:1", "127.1.2.3", 1),
        ("[::1]:65535", "::1", 65535),
    ],
)
def test_loopback_literals_are_accepted(tmp_path, address, host, port):
    """Loopback IPv4 and IPv6 literals are accepted; the token file defaults beside the state."""
    config = load_config(config_file(tmp_path, f'address = "{address}"'), environ={})
    assert config.serve is not None
    assert (config.serve.host, config.serve.port) == (host, port)
    assert config.serve.token_file == str(tmp_path / "state" / "serve-token")
    assert config.serve.profiles is None


@pytest.mark.parametrize(
    "address",
    [
        "localhost:9911",
        "0.0.0.0:9911",
        "10.0.0.1:9911",
        "[::]:9911",
        "127.0.0.1",
        "127.0.0.1:0",
        "127.0.0.1:70000",
        9911,
    ],
)
def test_other_addresses_are_refused_naming_the_key(tmp_path, address):
    """Names, wildcards, non-loopback addresses and missing or bad ports are refused."""
    value = json.dumps(address)
    with pytest.raises(ConfigError) as caught:
        load_config(config_file(tmp_path, f"address = {value}"), environ={})
    assert [p for p in caught.value.problems if "serve.address" in p]


def test_check_exits_78_on_a_non_loopback_address(tmp_path):
    """``check`` exits 78 and names serve.address."""
    path = config_file(tmp_path, 'address = "0.0.0.0:9911"')
    done = run_cli(["check", "--config", str(path)], clean_env(tmp_path))
    assert done.returncode == 78
    assert "serve.address" in done.stderr


def test_unknown_served_profiles_and_keys_are_refused(tmp_path):
    """serve.profiles must name managed profiles; unknown keys in [serve] are refused."""
    path = config_file(tmp_path, 'address = "127.0.0.1:9911"\nprofiles = ["a", "zz"]\nport = 1')
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    text = "\n".join(caught.value.problems)
    assert "serve.profiles" in text
    assert "zz" in text
    assert "serve.port: unknown key" in text


def test_check_warns_when_a_served_profile_cannot_keep_15_minutes(tmp_path):
    """A served 900 s role with refresh_at + jitter 0.6 gets a warning from check; 3600 s none."""
    path = config_file(tmp_path, 'address = "127.0.0.1:9911"', duration=900)
    done = run_cli(["check", "--config", str(path)], clean_env(tmp_path))
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stdout.splitlines() if "warning:" in line]
    assert len(warnings) == 1
    assert "a: duration_seconds 900" in warnings[0]
    assert "serve:            http://127.0.0.1:9911/v1/credentials/<profile>" in done.stdout


def test_serve_cannot_change_on_reload(tmp_path):
    """A reload that changes [serve] is rejected: the socket is fixed until a restart."""
    old = load_config(config_file(tmp_path, 'address = "127.0.0.1:9911"'), environ={})
    assert old.serve is not None
    new = replace(old, serve=replace(old.serve, port=9912))
    with pytest.raises(ConfigError, match="serve: cannot change while running"):
        plan_reload(old, new)


def test_env_prints_plain_lines(tmp_path):
    """``env`` prints the two variables as KEY=VALUE lines, no quotes, URL per profile."""
    path = config_file(tmp_path, 'address = "127.0.0.1:9911"')
    done = run_cli(["env", "--config", str(path), "--profile", "a"], clean_env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:9911/v1/credentials/a",
        f"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE={tmp_path / 'state' / 'serve-token'}",
    ]


@pytest.mark.parametrize(
    ("serve", "profile", "message"),
    [
        ('address = "127.0.0.1:9911"', "zz", "not managed"),
        ('address = "127.0.0.1:9911"\nprofiles = ["a"]', "b", "not in serve.profiles"),
    ],
)
def test_env_refuses_profiles_not_served(tmp_path, serve, profile, message):
    """``env`` for an unmanaged or unserved profile exits 1 with one line."""
    path = config_file(tmp_path, serve)
    done = run_cli(["env", "--config", str(path), "--profile", profile], clean_env(tmp_path))
    assert done.returncode == 1
    assert message in done.stderr
    assert len(done.stderr.splitlines()) == 1


def test_exec_sets_the_endpoint_and_drops_leaking_variables(tmp_path):
    """``exec`` runs the command with the endpoint variables, without static keys or a profile."""
    path = config_file(tmp_path, 'address = "127.0.0.1:9911"')
    script = (
        "import json, os, sys; "
        "print(json.dumps({k: v for k, v in os.environ.items() if k.startswith('AWS_')})); "
        "sys.exit(7)"
    )
    env = clean_env(tmp_path, AWS_PROFILE="other", AWS_SESSION_TOKEN="leak")
    done = run_cli(
        ["exec", "--config", str(path), "--profile", "a", "--", sys.executable, "-c", script], env
    )
    assert done.returncode == 7
    seen = json.loads(done.stdout)
    assert seen["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == "http://127.0.0.1:9911/v1/credentials/a"
    assert seen["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"].endswith("serve-token")
    for leak in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        assert leak not in seen


def test_exec_of_a_missing_command_exits_127(tmp_path):
    """A command that cannot be started exits 127 with one line, like a shell."""
    path = config_file(tmp_path, 'address = "127.0.0.1:9911"')
    done = run_cli(
        ["exec", "--config", str(path), "--profile", "a", "--", str(tmp_path / "nope")],
        clean_env(tmp_path),
    )
    assert done.returncode == 127
    assert "cannot run" in done.stderr


def write_credentials(tmp_path: Path, expires: datetime, *, managed: bool = True) -> None:
    marker = "credrefresh_managed = true\n" if managed else ""
    (tmp_path / "credentials").write_text(
        "[a]\n"
        f"{marker}"
        "aws_access_key_id = ASIAEXAMPLEKEY000001\n"
        "aws_secret_access_key = secretvalue0000000000000000000000000000\n"
        "aws_session_token = tokenvalue000000000000000000000\n"
        f"x_security_token_expires = {format_time(expires)}\n"
        "[other]\naws_access_key_id = AKIAOTHER\n"
    )


def no_serve_config(tmp_path: Path) -> Path:
    path = tmp_path / "plain.toml"
    path.write_text(
        f'credentials_file = "{tmp_path / "credentials"}"\n'
        f'state_file = "{tmp_path / "state" / "state.json"}"\n'
        f"[[roles]]\n{ROLE.format(p='a')}[[roles]]\n{ROLE.format(p='b')}"
    )
    return path


def test_credential_process_prints_version_1_json_from_the_file(tmp_path):
    """Without [serve], the managed profile's keys and expiry come from the file."""
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    write_credentials(tmp_path, expires)
    done = run_cli(
        ["credential-process", "--config", str(no_serve_config(tmp_path)), "--profile", "a"],
        clean_env(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "Version": 1,
        "AccessKeyId": "ASIAEXAMPLEKEY000001",
        "SecretAccessKey": "secretvalue0000000000000000000000000000",
        "SessionToken": "tokenvalue000000000000000000000",
        "Expiration": format_time(expires),
    }


@pytest.mark.parametrize(
    ("profile", "managed", "hours", "message"),
    [
        ("b", True, 1, "is not in"),
        ("a", False, 1, "not written by credrefresh"),
        ("a", True, -1, "expired at"),
    ],
)
def test_credential_process_refuses_missing_foreign_or_expired(
    tmp_path, profile, managed, hours, message
):
    """A missing, foreign or expired profile exits 1 with one line on stderr and no secret."""
    write_credentials(tmp_path, datetime.now(UTC) + timedelta(hours=hours), managed=managed)
    done = run_cli(
        ["credential-process", "--config", str(no_serve_config(tmp_path)), "--profile", profile],
        clean_env(tmp_path),
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1
    assert message in done.stderr
    assert "secretvalue" not in done.stderr


def test_credential_process_imports_no_aws_sdk_nor_aiohttp(tmp_path):
    """credential-process starts light: no AWS SDK, aiohttp nor anyio is imported."""
    write_credentials(tmp_path, datetime.now(UTC) + timedelta(hours=1))
    config = no_serve_config(tmp_path)
    code = (
        "import sys, contextlib, io\n"
        "from credrefresh.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    status = main(['credential-process', '-c', {str(config)!r}, '--profile', 'a'])\n"
        "names = ('botocore', 'aioboto3', 'aiohttp', 'anyio')\n"
        "heavy = sorted(m for m in names if m in sys.modules)\n"
        "print(status, heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout.strip() == "0 []", done.stderr
