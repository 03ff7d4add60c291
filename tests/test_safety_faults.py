"""Proof of safety, STS faults: ``run`` rides out every failure STS can throw at it.

Each test runs ``credrefresh run --log-level debug`` as a real process against the fake STS
(``support.fakests``), switches a fault on at runtime, waits until every affected profile has
felt it, switches it off, and checks, throughout and after:

* the daemon stays up and stops cleanly on SIGTERM;
* every version of the credentials file (read after each change) parses, every managed profile
  is complete, and a profile whose credentials are still valid is never removed nor replaced by
  credentials that expire sooner; the unmanaged profile is byte for byte as it was;
* every failure is logged as ``role.refresh_failed`` with its ``error_code`` (one event per
  failed STS answer when botocore makes one attempt), and its ``retry_at`` is at most the
  backoff cap after it (``backoff_max`` when transient, ``permanent_backoff_max`` otherwise);
* every profile that failed is fresh again within one backoff cap, plus a small margin for
  the call in flight and the coalesced write, after the fault ends;
* no output (stdout, stderr, notify datagrams, state file versions) holds a secret.

Fault phases are ended by events (enough failures seen), so a phase takes as long as it needs;
``CREDREFRESH_SOAK_SCALE`` sets how many failures or bursts a phase waits for.
"""

from __future__ import annotations

import json
import signal
import socket
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

import pytest

from process_support import Event, NotifySocket, Proc, run_cli, write_config
from support.fakests import Faults, ThreadedFakeSTS
from test_safety_secrets import (
    Sampler,
    SecretLedger,
    check_versions,
    create_private,
    credentials_section,
    daemon_outputs,
    event_time,
    logged_since,
    parse_credentials,
    parse_expiry,
    parse_text,
    record_figures,
    role_arn,
    safety_env,
    scaled,
    soak_timeout,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(soak_timeout())]

LIFETIME = 1.0  # fake credential lifetime (rounded up to the second): due every 0.5-1.2 s
BOUNDS = {
    "backoff_initial": 0.2,
    "backoff_max": 1.0,
    "permanent_backoff_initial": 0.5,
    "permanent_backoff_max": 2.0,
    "write_delay": 0.1,
}
# After a fault ends: the call in flight finishes, the write waits up to write_delay for
# others and is rate-limited to one per write_delay, and the log line reaches the test.
MARGIN = 1.0
PROFILES = ["alpha", "beta", "gamma", "delta"]


def free_port() -> int:
    """A loopback TCP port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def healthy() -> Faults:
    return Faults(latency=0, lifetime=LIFETIME)


class FaultRun:
    """``credrefresh run`` on a file with one unmanaged profile, sampled and checked."""

    def __init__(
        self,
        tmp_path: Path,
        endpoint: str,
        *,
        attempts: int = 1,
        profiles: Iterable[str] = PROFILES,
    ) -> None:
        self.profiles = list(profiles)
        self.ledger = SecretLedger()
        self.creds = tmp_path / "aws" / "credentials"
        create_private(
            self.creds,
            credentials_section("default", managed_by_us=False, expires="").encode(),
        )
        self.original = self.creds.read_bytes()
        self.ledger.add_file(self.creds)
        config = write_config(
            tmp_path / "c.toml",
            self.creds,
            endpoint,
            self.profiles,
            refresh=BOUNDS,
            sts_timeout=0.5,
            sts_max_attempts=attempts,
        )
        self.notify = NotifySocket(tmp_path / "notify.sock")
        self.sampler = Sampler(self.creds, tmp_path / "state.json")
        self.sampler.__enter__()
        env = {**safety_env(tmp_path, self.ledger), "NOTIFY_SOCKET": self.notify.path}
        self.proc = Proc(["run", "--config", str(config), "--log-level", "debug"], env)
        self.recoveries: list[float] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.proc.kill()
        self.notify.close()
        self.sampler.__exit__()

    # -- waiting ---------------------------------------------------------------------------

    def ready(self) -> None:
        self.notify.wait_for(lambda m: m == "READY=1")

    def failures(self, since: datetime | None = None) -> list[Event]:
        """``role.refresh_failed`` events (logged at or after ``since``)."""
        if since is None:
            return self.proc.named("role.refresh_failed")
        return logged_since(self.proc.events, "role.refresh_failed", since)  # type: ignore[return-value]

    def wait_failures(self, code: str, profiles: Iterable[str], count: int = 1) -> datetime:
        """Wait until each of ``profiles`` failed ``count`` times with ``code`` from now on;
        return when the wait began."""
        wanted = set(profiles)
        began = datetime.now(UTC)

        def enough(_: list[Event]) -> bool:
            seen = Counter(e["profile"] for e in self.failures(began) if e["error_code"] == code)
            return all(seen[p] >= count for p in wanted)

        self.proc.wait_for(enough, timeout=60)
        return began

    def fault_ends(self, server: ThreadedFakeSTS | None) -> datetime:
        """Switch the faults off (when ``server`` is given) and note the moment."""
        if server is not None:
            server.set_faults(healthy())
        return datetime.now(UTC)

    def recovered(self, since: datetime, profiles: Iterable[str], cap: float) -> float:
        """Every one of ``profiles`` is written again within ``cap + MARGIN`` of ``since``."""
        wanted = set(profiles)

        def first_after(events: list[Event]) -> dict[str, datetime]:
            first: dict[str, datetime] = {}
            for e in events:
                if e["event"] == "role.refreshed" and e["profile"] in wanted:
                    at = event_time(e)
                    if at >= since and e["profile"] not in first:
                        first[e["profile"]] = at
            return first

        self.proc.wait_for(lambda events: first_after(events).keys() == wanted, cap + 10)
        took = max((at - since).total_seconds() for at in first_after(self.proc.events).values())
        assert took <= cap + MARGIN, f"fresh again {took:.2f} s after the fault, cap {cap}"
        self.recoveries.append(round(took, 3))
        parsed = parse_credentials(self.creds)
        for name in wanted:
            assert parse_expiry(parsed[name]["x_security_token_expires"]) > since
        return took

    # -- the end ---------------------------------------------------------------------------

    def stop_and_check(self, codes: set[str], name: str) -> dict[str, object]:
        """SIGTERM, then every check of the module docstring; return the figures."""
        assert self.proc.popen.poll() is None, f"the daemon died: {self.proc.stderr}"
        self.proc.signal(signal.SIGTERM)
        assert self.proc.wait_exit(timeout=15) == 0
        self.sampler.__exit__()
        versions = self.sampler.credential_versions
        assert check_versions(versions, self.profiles, self.ledger) == []
        # Managed profiles are appended after the unmanaged one, which stays byte for byte.
        assert all(version.data.startswith(self.original) for version in versions)
        failures = self.failures()
        assert failures, "the fault never showed"
        assert {e["error_code"] for e in failures} <= codes
        for event in failures:
            cap = BOUNDS["backoff_max"] if event["transient"] else BOUNDS["permanent_backoff_max"]
            wait = (
                event_time({"timestamp": event["retry_at"]}) - event_time(event)
            ).total_seconds()
            assert wait <= cap, event
            assert event["attempt"] >= 1
        outputs = daemon_outputs(self.proc, "run")
        outputs["notify"] = "\n".join(self.notify.messages)
        for i, version in enumerate(self.sampler.state_versions):
            outputs[f"state v{i}"] = version.data.decode()
        self.ledger.assert_absent(outputs, at_least=2 * len(self.profiles) * 2)
        figures: dict[str, object] = {
            "failures": dict(Counter(e["error_code"] for e in failures)),
            "recoveries_s": self.recoveries,
            "file_versions": len(versions),
            "refreshes": len(self.proc.named("role.refreshed")),
            "secrets_scanned": self.ledger.count,
            "secret_hits": 0,
        }
        record_figures(f"faults.{name}", **figures)
        return figures


def assert_every_failure_logged(run: FaultRun, server: ThreadedFakeSTS) -> None:
    """With one attempt per call, each failed STS answer is one ``role.refresh_failed``."""
    stats = server.stats
    logged = Counter(e["error_code"] for e in run.failures())
    assert logged["Throttling"] == stats.throttled
    assert logged["InternalFailure"] == stats.errors
    assert logged["AccessDenied"] == stats.denied
    assert logged["ExpiredToken"] == stats.expired


def test_half_the_calls_throttled(tmp_path, fake_sts):
    """With 50 % Throttling the daemon keeps every profile valid and logs each throttled call."""
    fake_sts.set_faults(healthy())
    with FaultRun(tmp_path, fake_sts.url) as run:
        run.ready()
        fake_sts.set_faults(Faults(latency=0, lifetime=LIFETIME, throttle_rate=0.5))
        wanted = scaled(60, minimum=6)
        began = datetime.now(UTC)
        run.proc.wait_for(
            lambda events: (
                len(run.failures(began)) >= wanted
                and len(logged_since(events, "role.refreshed", began)) >= wanted
            ),
            timeout=120,
        )
        failed = {e["profile"] for e in run.failures(began)}
        run.recovered(run.fault_ends(fake_sts), failed, BOUNDS["backoff_max"])
        assert_every_failure_logged(run, fake_sts)
        run.stop_and_check({"Throttling"}, "throttling")


def test_bursts_of_internal_errors(tmp_path, fake_sts):
    """After each burst of 500s every profile is fresh again within the transient backoff cap."""
    fake_sts.set_faults(healthy())
    with FaultRun(tmp_path, fake_sts.url) as run:
        run.ready()
        for _ in range(scaled(20, minimum=2)):
            fake_sts.set_faults(Faults(latency=0, lifetime=LIFETIME, error_rate=1.0))
            run.wait_failures("InternalFailure", PROFILES)
            run.recovered(run.fault_ends(fake_sts), PROFILES, BOUNDS["backoff_max"])
        assert_every_failure_logged(run, fake_sts)
        run.stop_and_check({"InternalFailure"}, "internal_errors")


def test_hanging_connections(tmp_path, fake_sts):
    """Calls that hang time out (sts_timeout 0.5, two attempts) and recover when STS answers."""
    fake_sts.set_faults(healthy())
    with FaultRun(tmp_path, fake_sts.url, attempts=2) as run:
        run.ready()
        for _ in range(scaled(10, minimum=1)):
            fake_sts.set_faults(Faults(latency=0, lifetime=LIFETIME, hang=True))
            run.wait_failures("Timeout", PROFILES)
            # A call in flight may still be in botocore's retry pause (at most 1 s) when the
            # hang ends; it then succeeds on its second attempt.
            run.recovered(run.fault_ends(fake_sts), PROFILES, BOUNDS["backoff_max"] + 1.0)
        run.stop_and_check({"Timeout"}, "hang")


def test_connection_refused_then_sts_comes_back(tmp_path):
    """Started with nothing listening, and when STS goes away later, it recovers each time."""
    port = free_port()
    with FaultRun(tmp_path, f"http://127.0.0.1:{port}") as run:
        run.ready()  # READY even when the first round failed entirely
        run.wait_failures("ConnectionError", PROFILES)
        for _ in range(scaled(10, minimum=2)):
            with ThreadedFakeSTS(healthy(), port=port):
                run.recovered(run.fault_ends(None), PROFILES, BOUNDS["backoff_max"])
            run.wait_failures("ConnectionError", PROFILES)
        with ThreadedFakeSTS(healthy(), port=port):
            run.recovered(run.fault_ends(None), PROFILES, BOUNDS["backoff_max"])
            run.stop_and_check({"ConnectionError"}, "connection_refused")


def test_access_denied_for_one_role(tmp_path, fake_sts):
    """A denied role keeps its credentials, backs off permanently, and the others carry on."""
    fake_sts.set_faults(healthy())
    with FaultRun(tmp_path, fake_sts.url) as run:
        run.ready()
        denied, others = PROFILES[0], PROFILES[1:]
        fake_sts.set_faults(Faults(latency=0, lifetime=LIFETIME, deny_roles=[role_arn(denied)]))
        began = run.wait_failures("AccessDenied", [denied], count=scaled(20, minimum=2))
        assert all(not e["transient"] for e in run.failures(began))
        assert {e["profile"] for e in run.failures(began)} == {denied}
        # The others' schedules are spread (start jitter), not in step with the denied role's:
        # each is refreshed within a lifetime and a write of the fault beginning.
        run.proc.wait_for(
            lambda events: (
                set(others) <= {e["profile"] for e in logged_since(events, "role.refreshed", began)}
            ),
            timeout=2 * LIFETIME + 2,
        )
        assert all(
            e["profile"] == denied
            for e in logged_since(run.proc.events, "role.refresh_failed", began)
        )
        present = [denied in section_names(v.data) for v in run.sampler.credential_versions]
        assert present.index(True) >= 0
        assert all(present[present.index(True) :])  # never removed once written
        run.recovered(run.fault_ends(fake_sts), [denied], BOUNDS["permanent_backoff_max"])
        assert_every_failure_logged(run, fake_sts)
        run.stop_and_check({"AccessDenied"}, "access_denied")


def test_expired_source_token(tmp_path, fake_sts):
    """ExpiredToken on the source credentials is permanent-backoff, and every profile recovers."""
    fake_sts.set_faults(healthy())
    with FaultRun(tmp_path, fake_sts.url) as run:
        run.ready()
        for _ in range(scaled(10, minimum=1)):
            fake_sts.set_faults(Faults(latency=0, lifetime=LIFETIME, expired_token=True))
            began = run.wait_failures("ExpiredToken", PROFILES)
            expired = [e for e in run.failures(began) if e["error_code"] == "ExpiredToken"]
            assert all(not e["transient"] for e in expired)
            run.recovered(run.fault_ends(fake_sts), PROFILES, BOUNDS["permanent_backoff_max"])
        assert_every_failure_logged(run, fake_sts)
        run.stop_and_check({"ExpiredToken"}, "expired_token")


def test_a_source_error_does_not_abort_other_calls_in_flight(tmp_path, fake_sts):
    """With the source token expired, every role's failure is logged as ExpiredToken."""
    fake_sts.set_faults(Faults(latency=0.3, expired_token=True))
    creds = tmp_path / "credentials"
    profiles = [f"p{i}" for i in range(24)]  # all in flight at once when the first answer lands
    config = write_config(
        tmp_path / "c.toml", creds, fake_sts.url, profiles, sts_max_attempts=1, max_concurrency=24
    )
    # A regression (closing the shared client under calls in flight) shows in nine runs of
    # ten with 8 roles, and in every one of ten with 24.
    once = run_cli(["once", "--config", str(config), "--log-format", "json"], safety_env(tmp_path))
    assert once.returncode == 1
    events = [json.loads(line) for line in once.stdout.splitlines()]
    codes = Counter(e["error_code"] for e in events if e["event"] == "role.refresh_failed")
    assert codes == {"ExpiredToken": len(profiles)}


def section_names(data: bytes) -> set[str]:
    """The section names in credentials-file bytes."""
    parsed = parse_text(data.decode())
    assert parsed is not None
    return set(parsed)
