"""``credrefresh run`` as a real subprocess: notify socket, signals, reload, faults, one run."""

from __future__ import annotations

import signal

import pytest
from botocore.configloader import raw_config_parse

from process_support import NotifySocket, Proc, clean_env, run_cli, write_config
from support.fakests import Faults

pytestmark = pytest.mark.slow

FAST = {
    "backoff_initial": 0.2,
    "backoff_max": 1.0,
    "permanent_backoff_initial": 0.5,
    "permanent_backoff_max": 2.0,
    "write_delay": 0.1,
}


def managed_secrets(path) -> list[str]:
    parsed = raw_config_parse(str(path))
    return [
        value
        for section in parsed.values()
        if "credrefresh_managed" in section
        for key, value in section.items()
        if key in {"aws_secret_access_key", "aws_session_token"}
    ]


@pytest.fixture
def notify(tmp_path):
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


def test_lifecycle_notify_reload_and_stop(tmp_path, fake_sts, notify):
    """READY after the first write, STATUS and WATCHDOG, reload on SIGHUP, clean exit on SIGTERM."""
    fake_sts.set_faults(Faults(latency=0, lifetime=3))
    creds = tmp_path / "aws" / "credentials"
    config = write_config(tmp_path / "c.toml", creds, fake_sts.url, ["a", "b", "c"], refresh=FAST)
    env = clean_env(tmp_path, NOTIFY_SOCKET=notify.path, WATCHDOG_USEC="1000000")
    proc = Proc(["run", "--config", str(config)], env)
    seen: list[str] = []
    try:
        ready_at = notify.wait_for(lambda m: m == "READY=1")
        # READY=1 only once the first round is written.
        assert sorted(raw_config_parse(str(creds))) == ["a", "b", "c"]
        notify.wait_for(lambda m: m.startswith("STATUS=3 fresh, 0 failing"))
        notify.wait_for(lambda m: m == "WATCHDOG=1")
        proc.wait_count("role.refreshed", 6)  # a second round, from the scheduler
        seen += managed_secrets(creds)

        write_config(tmp_path / "c.toml", creds, fake_sts.url, ["a", "b", "d"], refresh=FAST)
        proc.signal(signal.SIGHUP)
        proc.wait_count("config.reloaded", 1)
        proc.wait_count("profile.removed", 1)
        proc.wait_for(lambda _: "d" in raw_config_parse(str(creds)))
        reload_at = notify.wait_for(lambda m: m.startswith("RELOADING=1\nMONOTONIC_USEC="))
        notify.wait_for(lambda m: m == "READY=1", start=reload_at)
        assert sorted(raw_config_parse(str(creds))) == ["a", "b", "d"]
        assert proc.named("profile.removed")[0]["profile"] == "c"
        seen += managed_secrets(creds)

        (tmp_path / "c.toml").write_text("roles = 'not a list'\n")
        proc.signal(signal.SIGHUP)
        proc.wait_count("config.rejected", 1)
        assert proc.named("config.rejected")[0]["errors"][0].endswith(
            "roles: expected an array of tables ([[roles]]), got a string"
        )
        refreshed = len(proc.named("role.refreshed"))
        proc.wait_count("role.refreshed", refreshed + 3)  # the old config keeps running

        proc.signal(signal.SIGTERM)
        assert proc.wait_exit(timeout=15) == 0
        assert notify.wait_for(lambda m: m == "STOPPING=1") > ready_at
        seen += managed_secrets(creds)
    finally:
        proc.kill()
    assert proc.events[-1]["event"] == "daemon.stopped"
    assert proc.named("daemon.stopping")[0]["reason"] == "SIGTERM"
    output = proc.output()
    assert seen
    for secret in seen:
        assert secret not in output
    assert "Traceback" not in output


def test_second_instance_refused(tmp_path, fake_sts, notify):
    """A second run on the same credentials file exits 75 with a clear message."""
    creds = tmp_path / "credentials"
    config = write_config(tmp_path / "c.toml", creds, fake_sts.url, ["a"], refresh=FAST)
    env = clean_env(tmp_path, NOTIFY_SOCKET=notify.path)
    first = Proc(["run", "--config", str(config)], env)
    try:
        notify.wait_for(lambda m: m == "READY=1")
        second = run_cli(["run", "--config", str(config)], clean_env(tmp_path))
        assert second.returncode == 75
        assert f"(pid {first.popen.pid}) already keeps {creds} fresh" in second.stderr
        assert "Traceback" not in second.stderr
        # `once` is allowed alongside: it takes only the writers' lock.
        assert run_cli(["once", "--config", str(config)], clean_env(tmp_path)).returncode == 0
        first.signal(signal.SIGINT)
        assert first.wait_exit(timeout=15) == 0
    finally:
        first.kill()


def test_survives_throttling_and_errors_then_catches_up(tmp_path, fake_sts, notify):
    """Under throttling and 500s the daemon stays up, logs codes, and every profile recovers."""
    fake_sts.set_faults(Faults(latency=0, lifetime=4))
    creds = tmp_path / "credentials"
    profiles = [f"p{i}" for i in range(5)]
    config = write_config(
        tmp_path / "c.toml", creds, fake_sts.url, profiles, refresh=FAST, sts_max_attempts=1
    )
    proc = Proc(["run", "--config", str(config)], clean_env(tmp_path, NOTIFY_SOCKET=notify.path))
    try:
        notify.wait_for(lambda m: m == "READY=1")
        fake_sts.set_faults(Faults(latency=0, lifetime=4, throttle_rate=0.5, error_rate=0.5))
        proc.wait_for(
            lambda _: (
                {"Throttling", "InternalFailure"}
                <= {e["error_code"] for e in proc.named("role.refresh_failed")}
            )
        )
        fake_sts.set_faults(Faults(latency=0, lifetime=4))
        mark = len(proc.events)
        proc.wait_for(
            lambda events: (
                {e["profile"] for e in events[mark:] if e["event"] == "role.refreshed"}
                == set(profiles)
            )
        )
        assert proc.popen.poll() is None
        failures = proc.named("role.refresh_failed")
        assert all(f["transient"] is True for f in failures)
        assert all(f["attempt"] >= 1 and f["retry_at"].endswith("Z") for f in failures)
        proc.signal(signal.SIGTERM)
        assert proc.wait_exit(timeout=15) == 0
    finally:
        proc.kill()
