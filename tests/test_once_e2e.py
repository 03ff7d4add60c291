"""``credrefresh once`` end to end against moto's STS server, read back by boto3 and botocore."""

from __future__ import annotations

import boto3
import pytest
from botocore.configloader import raw_config_parse

from process_support import clean_env, run_cli, write_config

SECRET_KEYS = ("aws_secret_access_key", "aws_session_token")


def secrets_in(path) -> list[str]:
    parsed = raw_config_parse(str(path))
    return [
        v
        for section in parsed.values()
        if "credrefresh_managed" in section
        for k, v in section.items()
        if k in SECRET_KEYS
    ]


def test_once_writes_every_profile_usable_by_boto3(tmp_path, moto_url, monkeypatch):
    """Each role lands in its own profile; boto3 using it is the assumed role."""
    creds = tmp_path / ".aws" / "credentials"
    creds.parent.mkdir()
    creds.write_text(
        "# keep me\n[default]\naws_access_key_id = AKIAUSER\naws_secret_access_key = u\n"
    )
    profiles = [f"acct-{i}" for i in range(8)]
    config = write_config(tmp_path / "config.toml", creds, moto_url, profiles)
    result = run_cli(["once", "--config", str(config)], clean_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert creds.read_text().startswith(
        "# keep me\n[default]\naws_access_key_id = AKIAUSER\naws_secret_access_key = u\n"
    )
    assert creds.stat().st_mode & 0o777 == 0o600
    # boto3 reads the file we wrote through the standard variable, exactly as a user would.
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    client = boto3.Session(profile_name="acct-3").client(
        "sts", endpoint_url=moto_url, region_name="us-east-1"
    )
    identity = client.get_caller_identity()
    assert identity["Arn"] == "arn:aws:sts::123456789012:assumed-role/acct-3/credrefresh-acct-3"
    # Every line on stdout is a JSON event (process_support would fail otherwise); secrets absent.
    assert len(secrets_in(creds)) == 16
    for secret in secrets_in(creds):
        assert secret not in result.stdout
        assert secret not in result.stderr


def test_once_writes_the_file_once(tmp_path, moto_url):
    """One once run is one write of the file, however many roles."""
    creds = tmp_path / "credentials"
    config = write_config(tmp_path / "c.toml", creds, moto_url, [f"p{i}" for i in range(30)])
    result = run_cli(["once", "--config", str(config), "--log-format", "json"], clean_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count('"credentials_file.written"') == 1
    assert result.stdout.count('"role.refreshed"') == 30


def test_endpoint_from_environment(tmp_path, moto_url):
    """AWS_ENDPOINT_URL_STS is honoured when sts_endpoint_url is not set."""
    creds = tmp_path / "credentials"
    config = tmp_path / "c.toml"
    config.write_text(
        f'credentials_file = "{creds}"\n[[roles]]\nprofile = "p"\n'
        'role_arn = "arn:aws:iam::123456789012:role/r"\n'
    )
    env = clean_env(tmp_path, AWS_ENDPOINT_URL_STS=moto_url)
    result = run_cli(["once", "--config", str(config)], env)
    assert result.returncode == 0, result.stderr
    assert "p" in raw_config_parse(str(creds))


def test_once_exits_1_on_conflict_and_still_writes_others(tmp_path, moto_url):
    """A conflicting profile gives exit 1; the other profiles are still written."""
    creds = tmp_path / "credentials"
    original = "[taken]\naws_access_key_id = AKIAUSER\naws_secret_access_key = mine\n"
    creds.write_text(original)
    config = write_config(tmp_path / "c.toml", creds, moto_url, ["taken", "free"])
    result = run_cli(["once", "--config", str(config)], clean_env(tmp_path))
    assert result.returncode == 1
    assert creds.read_text().startswith(original)
    assert "free" in raw_config_parse(str(creds))
    assert '"profile.conflict"' in result.stdout


@pytest.mark.parametrize(
    "content",
    [b"\x00\x01garbage\xff", b"key = value before any section\n", b"[a]\nk=1\n[a]\nk=2\n"],
    ids=["binary", "no-section", "duplicate-section"],
)
def test_once_never_overwrites_a_broken_file(tmp_path, moto_url, content):
    """A credentials file that does not parse is left untouched and once exits 74."""
    creds = tmp_path / "credentials"
    creds.write_bytes(content)
    before = creds.stat()
    config = write_config(tmp_path / "c.toml", creds, moto_url, ["p"])
    result = run_cli(["once", "--config", str(config)], clean_env(tmp_path))
    assert result.returncode == 74
    assert creds.read_bytes() == content
    assert creds.stat().st_mtime_ns == before.st_mtime_ns
    assert "Traceback" not in result.stderr + result.stdout
    assert '"credentials_file.error"' in result.stdout


def test_once_exits_1_when_a_role_fails(tmp_path, fake_sts):
    """AccessDenied on one role: exit 1, the failure logged with its code, the rest written."""
    from support.fakests import Faults  # noqa: PLC0415

    fake_sts.set_faults(
        Faults(latency=0, deny_roles=frozenset({"arn:aws:iam::123456789012:role/no"}))
    )
    creds = tmp_path / "credentials"
    config = write_config(tmp_path / "c.toml", creds, fake_sts.url, ["yes", "no"])
    result = run_cli(["once", "--config", str(config)], clean_env(tmp_path))
    assert result.returncode == 1
    assert '"error_code": "AccessDenied"' in result.stdout
    assert sorted(raw_config_parse(str(creds))) == ["yes"]
