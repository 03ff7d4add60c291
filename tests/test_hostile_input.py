"""Hostile input from files and the config, through the real command line.

The credentials file is anyone's to edit who can write it, and the config may come from a
template: neither may crash a command, flood a terminal or make it print escape sequences.
"""

from __future__ import annotations

import json
import signal
from datetime import UTC, datetime

import pytest

from credrefresh.model import parse_time
from process_support import Proc, clean_env, run_cli, write_config
from support.fakests import Faults

EXIT_CONFIG = 78
OVERFLOWS = "9999-12-31T23:59:59-14:00"
UNDERFLOWS = "0001-01-01T00:00:00+14:00"
ROLE = '[[roles]]\nprofile = "{profile}"\nrole_arn = "arn:aws:iam::123456789012:role/r"\n'


def managed_section(profile: str, expires: str) -> str:
    """A section as credrefresh writes it, with ``expires`` as its expiry and refresh time."""
    return (
        f"[{profile}]\n"
        "aws_access_key_id = ASIAOLDEXAMPLE000000\n"
        "aws_secret_access_key = old-secret\n"
        "aws_session_token = old-token\n"
        f"x_security_token_expires = {expires}\n"
        "credrefresh_managed = true\n"
        f"credrefresh_role_arn = arn:aws:iam::123456789012:role/{profile}\n"
        f"credrefresh_refreshed_at = {expires}\n"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (OVERFLOWS, None),
        (UNDERFLOWS, None),
        ("9999-12-31T23:59:59Z", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
        ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),
        ("2026-05-01T14:00:00+02:00", datetime(2026, 5, 1, 12, tzinfo=UTC)),
        ("2026-05-01T12:00:00", datetime(2026, 5, 1, 12, tzinfo=UTC)),
        ("not a time", None),
    ],
)
def test_parse_time_returns_aware_utc_or_none(text, expected):
    """Any offset comes back as aware UTC; a time with no UTC equivalent reads as None."""
    moment = parse_time(text)
    assert moment == expected
    assert moment is None or moment.utcoffset() is not None


@pytest.mark.parametrize("expires", [OVERFLOWS, UNDERFLOWS, "9999-12-31T23:59:59Z"])
def test_status_survives_an_expiry_at_the_edge_of_time(tmp_path, expires):
    """status reads a far-future or far-past expiry without a traceback, in both formats."""
    creds = tmp_path / "credentials"
    creds.write_text(managed_section("p", expires))
    config = write_config(tmp_path / "c.toml", creds, "http://127.0.0.1:9", ["p"])
    env = clean_env(tmp_path)
    table = run_cli(["status", "--config", str(config)], env)
    document = run_cli(["status", "--config", str(config), "--json"], env)
    for result in (table, document):
        assert "Traceback" not in result.stderr
        assert result.returncode in {0, 2}, result.stderr
    (row,) = json.loads(document.stdout)["profiles"]
    if expires == "9999-12-31T23:59:59Z":
        assert (row["state"], row["expiration"]) == ("fresh", expires)
    else:
        assert (row["state"], row["expiration"]) == ("missing", None)


@pytest.mark.parametrize("expires", [OVERFLOWS, UNDERFLOWS, "9999-12-31T23:59:59Z"])
def test_run_survives_an_expiry_at_the_edge_of_time(tmp_path, fake_sts, expires):
    """run starts, refreshes what it can and stops cleanly, whatever expiry the file holds."""
    fake_sts.set_faults(Faults(latency=0, deny_roles=["arn:aws:iam::123456789012:role/denied"]))
    creds = tmp_path / "credentials"
    creds.write_text(managed_section("denied", expires) + managed_section("ok", expires))
    config = write_config(tmp_path / "c.toml", creds, fake_sts.url, ["denied", "ok"])
    proc = Proc(["run", "--config", str(config), "--log-format", "json"], clean_env(tmp_path))
    try:
        proc.wait_count("daemon.ready", 1)
        proc.signal(signal.SIGTERM)
        assert proc.wait_exit() == 0, proc.stderr
    finally:
        proc.kill()
    assert "Traceback" not in proc.stderr
    assert [e["profile"] for e in proc.named("role.refreshed")] == ["ok"]
    assert [e["profile"] for e in proc.named("role.refresh_failed")] == ["denied"]
    state = json.loads((tmp_path / "state.json").read_text())
    assert set(state["profiles"]) == {"denied", "ok"}


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("x = " + "[" * 1000 + "]" * 1000 + "\n", id="nested-1000-deep"),
        pytest.param(ROLE.format(profile="n" * 20_000 + "\\n"), id="profile-20k"),
        pytest.param(ROLE.format(profile="ok\\u0007bell\\u202e"), id="profile-escapes"),
    ],
)
def test_check_refuses_hostile_config_with_exit_78_and_a_bounded_message(tmp_path, content):
    """check exits 78 with short, escaped messages and no traceback for a hostile config."""
    config = tmp_path / "c.toml"
    config.write_text(content)
    result = run_cli(["check", "--config", str(config)], clean_env(tmp_path))
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "Traceback" not in result.stderr
    assert "\x1b" not in result.stderr
    assert "\x07" not in result.stderr
    assert len(result.stderr) < 2000
