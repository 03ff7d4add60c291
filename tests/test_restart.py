"""Restarts and crash loops against the fake STS: a fresh file means no STS call at start;
``once --min-remaining``; ``once`` keeps the state file true; suspend longer than the lifetime."""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime

import pytest
from botocore.configloader import raw_config_parse

from process_support import NotifySocket, Proc, clean_env, run_cli, write_config
from support.fakests import Faults

pytestmark = pytest.mark.slow

PROFILES = [f"p{i}" for i in range(20)]
FAST = {"write_delay": 0.1, "backoff_initial": 0.2, "backoff_max": 1.0}


def start(tmp_path, config, name: str) -> tuple[Proc, NotifySocket]:
    notify = NotifySocket(tmp_path / f"{name}.sock")
    env = clean_env(tmp_path, NOTIFY_SOCKET=notify.path)
    proc = Proc(["run", "--config", str(config)], env)
    notify.wait_for(lambda m: m == "READY=1")
    return proc, notify


def stop(proc: Proc, notify: NotifySocket) -> None:
    """SIGTERM, a clean exit, pipes and socket closed."""
    try:
        proc.signal(signal.SIGTERM)
        assert proc.wait_exit(timeout=20) == 0
    finally:
        proc.kill()
        notify.close()


def fresh_after(path, moment: datetime) -> bool:
    """Whether every managed profile in the file expires after ``moment``."""
    parsed = raw_config_parse(str(path))
    return all(
        datetime.fromisoformat(section["x_security_token_expires"]) > moment
        for section in parsed.values()
        if "credrefresh_managed" in section
    )


def test_restarts_and_kill_loops_make_no_sts_call_while_the_file_is_fresh(tmp_path, fake_sts):
    """After the first start, graceful restarts and kill -9 loops re-assume nothing."""
    fake_sts.set_faults(Faults(latency=0, lifetime=3600))
    creds = tmp_path / "aws" / "credentials"
    config = write_config(tmp_path / "c.toml", creds, fake_sts.url, PROFILES, refresh=FAST)
    proc, notify = start(tmp_path, config, "first")
    stop(proc, notify)
    assert fake_sts.stats.assume_role == len(PROFILES)

    for cycle in range(5):
        proc, notify = start(tmp_path, config, f"kill{cycle}")
        proc.kill()
        notify.close()
    proc, notify = start(tmp_path, config, "last")
    status = json.loads(
        run_cli(["status", "--json", "--config", str(config)], clean_env(tmp_path)).stdout
    )
    stop(proc, notify)
    assert fake_sts.stats.assume_role == len(PROFILES)
    assert {row["state"] for row in status["profiles"]} == {"fresh"}


def test_a_changed_session_parameter_is_assumed_again_at_start(tmp_path, fake_sts):
    """Credentials issued for other session parameters are not warm: that role is re-assumed."""
    fake_sts.set_faults(Faults(latency=0, lifetime=3600))
    creds = tmp_path / "aws" / "credentials"
    config = write_config(tmp_path / "c.toml", creds, fake_sts.url, ["a", "b"], refresh=FAST)
    proc, notify = start(tmp_path, config, "first")
    stop(proc, notify)
    config.write_text(config.read_text() + '[roles.tags]\nteam = "blue"\n')
    proc, notify = start(tmp_path, config, "second")
    stop(proc, notify)
    assert fake_sts.stats.assume_role == 3
    assert [c.role_arn.rsplit("/", 1)[1] for c in fake_sts.calls][-1] == "b"


def test_once_min_remaining_refreshes_only_what_needs_it(tmp_path, fake_sts):
    """``once --min-remaining`` skips profiles with enough time left; plain ``once`` does all."""
    fake_sts.set_faults(Faults(latency=0, lifetime=3600))
    creds = tmp_path / "aws" / "credentials"
    config = write_config(tmp_path / "c.toml", creds, fake_sts.url, PROFILES)
    env = clean_env(tmp_path)
    assert run_cli(["once", "--config", str(config)], env).returncode == 0
    assert fake_sts.stats.assume_role == len(PROFILES)
    skipped = run_cli(["once", "--min-remaining", "15m", "--config", str(config)], env)
    assert skipped.returncode == 0
    assert fake_sts.stats.assume_role == len(PROFILES)
    finished = [
        json.loads(line) for line in skipped.stdout.splitlines() if "refresh.finished" in line
    ]
    assert finished[0]["skipped"] == len(PROFILES)
    assert run_cli(["once", "--min-remaining", "2h", "--config", str(config)], env).returncode == 0
    assert fake_sts.stats.assume_role == 2 * len(PROFILES)
    assert run_cli(["once", "--config", str(config)], env).returncode == 0
    assert fake_sts.stats.assume_role == 3 * len(PROFILES)


def test_once_cures_a_failure_recorded_by_run(tmp_path, fake_sts):
    """A role that failed under ``run``, then succeeded under ``once``, is not failing."""
    denied = "arn:aws:iam::123456789012:role/b"
    fake_sts.set_faults(Faults(latency=0, lifetime=3600, deny_roles=frozenset({denied})))
    creds = tmp_path / "aws" / "credentials"
    config = write_config(tmp_path / "c.toml", creds, fake_sts.url, ["a", "b"], refresh=FAST)
    env = clean_env(tmp_path)
    proc, notify = start(tmp_path, config, "run")
    stop(proc, notify)
    before = json.loads(run_cli(["status", "--json", "--config", str(config)], env).stdout)
    assert {r["profile"]: r["state"] for r in before["profiles"]}["b"] != "fresh"

    fake_sts.update_faults(deny_roles=frozenset())
    assert run_cli(["once", "--config", str(config)], env).returncode == 0
    after = run_cli(["status", "--json", "--config", str(config)], env)
    rows = {r["profile"]: r for r in json.loads(after.stdout)["profiles"]}
    assert after.returncode == 0
    assert rows["b"]["state"] == "fresh"
    assert rows["b"]["last_error_code"] is None


def test_credentials_are_fresh_within_seconds_of_a_resume(tmp_path, fake_sts):
    """Stopped (SIGSTOP) for longer than the lifetime, the daemon writes fresh credentials soon
    after SIGCONT."""
    lifetime = 3
    fake_sts.set_faults(Faults(latency=0, lifetime=lifetime))
    creds = tmp_path / "aws" / "credentials"
    config = write_config(tmp_path / "c.toml", creds, fake_sts.url, ["a", "b"], refresh=FAST)
    proc, notify = start(tmp_path, config, "run")
    try:
        proc.signal(signal.SIGSTOP)
        # The suspension itself is the scenario (a closed laptop lid), not a wait for an event.
        time.sleep(lifetime + 1)
        resumed = datetime.now(UTC)
        assert not fresh_after(creds, resumed)
        proc.signal(signal.SIGCONT)
        # The bound is the requirement: fresh credentials within seconds of the resume.
        proc.wait_for(lambda _: fresh_after(creds, resumed), timeout=10)
    finally:
        stop(proc, notify)
