"""Proof of safety, crashes: SIGKILL of ``once`` or ``run`` at any moment never damages the file.

Each kill lands at a random moment, concentrated around the write: the credentials file holds
hundreds of unrelated profiles and the configuration many roles, so a write takes a while, and
a calibration run measures when it happens. Kills are placed in four ways: after a random delay
from the first AssumeRole request the fake STS sees (stratified over the STS wait, the write and
just after it), when the temp file is created plus a random part of the time it lives, right
after the rename, and (``run``) when the state file's temp file is created.

After every kill: botocore parses the file, it is mode 0600, every managed profile is complete,
every unmanaged byte is as it was, a temp file left behind is 0600 and is removed by the next
writer, and a decoy temp file of another tool is never touched. At the end no output of any
killed process holds a secret.

CI runs ``scaled(200)`` kills (20); ``CREDREFRESH_SOAK_SCALE=full`` runs 200.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from process_support import NotifySocket, Proc, run_cli, write_config
from support.fakests import Faults, ThreadedFakeSTS
from test_safety_secrets import (
    IN_CREATE,
    IN_MOVED_TO,
    DirWatch,
    FileEvent,
    SecretLedger,
    create_private,
    credentials_section,
    daemon_outputs,
    managed,
    managed_problems,
    parse_credentials,
    parse_expiry,
    record_figures,
    safety_env,
    scaled,
    soak_timeout,
    unmanaged_sections,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(soak_timeout())]

ROLES = 40
UNMANAGED = 300  # about 160 kB of other profiles: the write takes tens of milliseconds
LATENCY = 0.1  # the fake STS holds every AssumeRole this long, which places the write
LIFETIME = 1.0  # run rewrites the file about once a second
TEMP_PREFIX = ".credentials.credrefresh-"
STATE_TEMP_PREFIX = ".state.json.credrefresh-"
DECOY = ".credentials.other.tmp"
FAST = {
    "backoff_initial": 0.2,
    "backoff_max": 1.0,
    "permanent_backoff_initial": 0.5,
    "permanent_backoff_max": 2.0,
    "write_delay": 0.05,
}


@dataclass
class Calibration:
    """Seconds from the first AssumeRole request to the temp file and to the rename."""

    temp: float
    rename: float


@dataclass
class Scene:
    """One credentials file, its configuration, the fake STS and what every kill did."""

    tmp_path: Path
    sts: ThreadedFakeSTS
    rng: random.Random
    creds: Path = field(init=False)
    config: Path = field(init=False)
    profiles: list[str] = field(init=False)
    baseline: list[str] = field(init=False)  # digests of the unmanaged chunks
    env: dict[str, str] = field(init=False)
    watch: DirWatch = field(init=False)
    ledger: SecretLedger = field(default_factory=SecretLedger)
    outcomes: Counter[str] = field(default_factory=Counter)
    outputs: dict[str, str] = field(default_factory=dict)
    removed_stale: int = 0
    state_temps_seen: set[str] = field(default_factory=set)
    removed_stale_state: int = 0

    def __post_init__(self) -> None:
        self.creds = self.tmp_path / "aws" / "credentials"
        self.profiles = [f"role-{i:02d}" for i in range(ROLES)]
        chunks = ["# Team credentials. Ünïcödé comments stay, byte for byte.\n\n"]
        every = UNMANAGED // ROLES
        for i in range(UNMANAGED):
            chunks.append(credentials_section(f"user-{i:03d}", managed_by_us=False, expires=""))
            chunks.append(f"# note for user-{i:03d}\n\n")
            if i % every == every - 1 and i // every < ROLES:
                name = self.profiles[i // every]
                future = "2099-01-01T00:00:00Z"
                chunks.append(credentials_section(name, managed_by_us=True, expires=future))
                chunks.append("\n")
        data = "".join(chunks).encode()
        create_private(self.creds, data)
        self.baseline = unmanaged_sections(data)
        self.ledger.add_file(self.creds)
        (self.creds.parent / DECOY).write_bytes(b"another tool's temp file\n")
        self.config = write_config(
            self.tmp_path / "c.toml",
            self.creds,
            self.sts.url,
            self.profiles,
            refresh=FAST,
            max_concurrency=ROLES,
            sts_max_attempts=1,
        )
        self.env = safety_env(self.tmp_path, self.ledger)
        self.watch = DirWatch(self.creds.parent, self.tmp_path)

    # -- files -------------------------------------------------------------------------------

    def temps(self) -> set[str]:
        """Our temp files beside the credentials file."""
        return {p.name for p in self.creds.parent.iterdir() if p.name.startswith(TEMP_PREFIX)}

    def state_temps(self) -> set[str]:
        """Our temp files beside the state file."""
        return {p.name for p in self.tmp_path.iterdir() if p.name.startswith(STATE_TEMP_PREFIX)}

    def state_inode(self) -> int | None:
        try:
            return (self.tmp_path / "state.json").stat().st_ino
        except FileNotFoundError:
            return None

    def check(self, label: str) -> None:
        """Everything that must hold after any kill."""
        data = self.creds.read_bytes()
        assert unmanaged_sections(data) == self.baseline, label
        parsed = parse_credentials(self.creds)
        assert managed_problems(parsed) == [], label
        assert sorted(managed(parsed)) == self.profiles, label
        assert self.creds.stat().st_mode & 0o777 == 0o600, label
        assert (self.creds.parent / DECOY).read_bytes() == b"another tool's temp file\n", label
        for name in self.temps():
            temp = self.creds.parent / name
            assert temp.stat().st_mode & 0o777 == 0o600, f"{label}: {name} readable by others"
            self.ledger.add_file(temp)
        state = self.tmp_path / "state.json"
        if state.exists():
            json.loads(state.read_bytes())  # replaced atomically: never half a document
        self.state_temps_seen |= self.state_temps()
        self.ledger.add_text(data.decode())

    # -- processes ---------------------------------------------------------------------------

    def start(self, mode: str) -> tuple[Proc, int, float]:
        """Start ``mode``; return it, a pidfd and when the fake STS saw its first AssumeRole."""
        self.sts.reset_stats()
        self.watch.drain()
        self.watch.history.clear()
        args = [mode, "--config", str(self.config), "--log-level", "debug", "--log-format", "json"]
        proc = Proc(args, self.env)
        pidfd = os.pidfd_open(proc.popen.pid)
        self.sts.wait_for_stats(lambda s: s.assume_role >= 1, timeout=30)
        return proc, pidfd, time.monotonic()

    def calibrate(self, mode: str) -> Calibration:
        """Run ``mode`` to its first write, uninterrupted, and time the write."""
        proc, pidfd, anchor = self.start(mode)
        try:
            temp = self.watch.wait(self.is_temp, 30, pidfd=pidfd)
            rename = self.watch.wait(self.is_rename, 30, pidfd=pidfd)
            assert temp is not None
            assert rename is not None
            if mode == "run":
                proc.wait_count("daemon.ready", 1)
                proc.signal(signal.SIGTERM)
            assert proc.wait_exit(timeout=30) == 0, proc.stderr
        finally:
            os.close(pidfd)
            proc.kill()
        self.outputs |= daemon_outputs(proc, f"calibration {mode}")
        self.check(f"calibration {mode}")
        return Calibration(temp.at - anchor, rename.at - anchor)

    def is_temp(self, event: FileEvent) -> bool:
        return bool(event.mask & IN_CREATE) and event.name.startswith(TEMP_PREFIX)

    def is_rename(self, event: FileEvent) -> bool:
        return bool(event.mask & IN_MOVED_TO) and event.name == self.creds.name

    def is_state_temp(self, event: FileEvent) -> bool:
        return bool(event.mask & IN_CREATE) and event.name.startswith(STATE_TEMP_PREFIX)

    def nth(self, predicate, n: int, timeout: float, pidfd: int) -> FileEvent | None:
        """The ``n``-th event matching ``predicate``."""
        found = None
        for _ in range(n):
            found = self.watch.wait(predicate, timeout, pidfd=pidfd)
            if found is None:
                return None
        return found

    def kill_once(self, mode: str, strategy: str, delay: float, nth: int, label: str) -> bool:
        """One run of ``mode`` killed per ``strategy``; True when it was killed, not finished."""
        before = self.creds.read_bytes()
        stale, stale_state, state_before = self.temps(), self.state_temps(), self.state_inode()
        proc, pidfd, _anchor = self.start(mode)
        try:
            if strategy == "timed":
                self.watch.wait(lambda _: False, delay, pidfd=pidfd)
            elif strategy == "temp":
                if self.nth(self.is_temp, nth, 30, pidfd) is not None:
                    self.watch.wait(self.is_rename, delay, pidfd=pidfd)
            elif strategy == "rename":
                self.nth(self.is_rename, nth, 30, pidfd)
            else:
                self.nth(self.is_state_temp, nth, 30, pidfd)
            proc.popen.send_signal(signal.SIGKILL)
            code = proc.wait_exit(timeout=30)
        finally:
            os.close(pidfd)
            proc.kill()
        self.outputs |= daemon_outputs(proc, label)
        self.check(label)
        after = self.creds.read_bytes()
        left = self.temps() - stale
        if after != before:
            self.outcomes["after the rename"] += 1
            assert not stale & self.temps(), f"{label}: the writer left stale temp files"
            self.removed_stale += len(stale)
        if self.state_inode() != state_before:  # run saved its state: it cleared old temps first
            assert not stale_state & self.state_temps(), f"{label}: stale state temp files kept"
            self.removed_stale_state += len(stale_state)
        if left:
            self.outcomes["inside the write (temp file left)"] += 1
        if after == before and not left:
            self.outcomes["before the write"] += 1
        if code != -signal.SIGKILL:
            assert code == 0, f"{label}: exit {code}: {proc.stderr}"
            self.outcomes["finished before the kill"] += 1
            return False
        return True

    def follow_up(self) -> None:
        """A plain ``once`` afterwards: exit 0, no temp file of ours left, the decoy intact."""
        stale = self.temps()
        started = datetime.now(UTC)
        result = run_cli(["once", "--config", str(self.config), "--log-format", "json"], self.env)
        assert result.returncode == 0, result.stderr
        self.outputs |= {"follow-up stdout": result.stdout, "follow-up stderr": result.stderr}
        self.check("follow-up")
        assert self.temps() == set()
        self.removed_stale += len(stale)
        parsed = parse_credentials(self.creds)
        for name in self.profiles:
            assert parse_expiry(parsed[name]["x_security_token_expires"]) > started


def stratified(count: int, low: float, high: float, rng: random.Random) -> list[float]:
    """``count`` delays spread evenly (one random draw per stratum) over ``[low, high]``."""
    draws = [low + (high - low) * (i + rng.random()) / count for i in range(count)]
    rng.shuffle(draws)
    return draws


PARALLEL = 2  # two scenes at once: each run spends most of its second importing


@pytest.fixture
def scenes(tmp_path):
    with contextlib.ExitStack() as stack:
        made = []
        for index in range(PARALLEL):
            sts = stack.enter_context(ThreadedFakeSTS(Faults(latency=LATENCY, lifetime=LIFETIME)))
            root = tmp_path / f"scene{index}"
            root.mkdir()
            scene = Scene(root, sts, random.Random())  # noqa: S311 - timing, not secrets
            stack.callback(scene.watch.close)
            made.append(scene)
        yield made


def run_kills(scene: Scene, mode: str, kills: int, strategies: list[str]) -> dict[str, float]:
    """Kill ``mode`` ``kills`` times, cycling through ``strategies``; return the figures."""
    calibration = scene.calibrate(mode)
    low, high = LATENCY / 2, calibration.rename * 1.2
    planned = sum(1 for i in range(kills) if strategies[i % len(strategies)] == "timed")
    timed = stratified(max(1, planned), low, high, scene.rng)
    window = max(calibration.rename - calibration.temp, 0.001)
    done = attempts = 0
    while done < kills:
        attempts += 1
        assert attempts <= 3 * kills, f"only {done} of {attempts} runs could be killed"
        strategy = strategies[done % len(strategies)]
        if strategy == "timed":
            delay = timed.pop() if timed else scene.rng.uniform(low, high)
        else:
            delay = scene.rng.uniform(0, window / 2)  # the first half: the kill lands inside
        nth = 1 if mode == "once" else scene.rng.choice([1, 2])
        label = f"{mode} kill {done} ({strategy}, {delay * 1000:.1f} ms, write {nth})"
        if scene.kill_once(mode, strategy, delay, nth, label):
            done += 1
    scene.follow_up()
    scene.ledger.assert_absent(scene.outputs, at_least=2 * (UNMANAGED + ROLES))
    return {
        "kills": done,
        "runs": attempts,
        "calibration_temp_ms": round(calibration.temp * 1000, 1),
        "calibration_rename_ms": round(calibration.rename * 1000, 1),
        "secrets_scanned": scene.ledger.count,
    }


def kill_in_parallel(
    scenes: list[Scene], mode: str, kills: int, strategies: list[str]
) -> Counter[str]:
    """``run_kills`` on every scene at once; the outcomes summed; figures recorded."""
    share = [kills // len(scenes) + (i < kills % len(scenes)) for i in range(len(scenes))]
    with concurrent.futures.ThreadPoolExecutor(len(scenes)) as pool:
        futures = [
            pool.submit(run_kills, scene, mode, count, strategies)
            for scene, count in zip(scenes, share, strict=True)
        ]
        figures = [future.result() for future in futures]
    outcomes: Counter[str] = sum((scene.outcomes for scene in scenes), Counter())
    record_figures(
        f"crash.{mode}",
        kills=sum(int(f["kills"]) for f in figures),
        runs=sum(int(f["runs"]) for f in figures),
        outcomes=dict(outcomes),
        stale_temps_removed_by_next_writer=sum(scene.removed_stale for scene in scenes),
        state_temps_left_by_kills=sum(len(scene.state_temps_seen) for scene in scenes),
        stale_state_temps_removed_by_next_run=sum(scene.removed_stale_state for scene in scenes),
        per_scene=figures,
        secret_hits=0,
    )
    return outcomes


def test_kill_once_at_random_moments_around_the_write(scenes):
    """SIGKILL of ``once`` anywhere around its write leaves a whole, parseable, private file."""
    outcomes = kill_in_parallel(scenes, "once", scaled(120), ["timed", "temp", "timed", "rename"])
    assert outcomes["before the write"] >= 1
    assert outcomes["inside the write (temp file left)"] >= 1
    assert outcomes["after the rename"] >= 1
    assert sum(scene.removed_stale for scene in scenes) >= 1


def test_kill_run_at_random_moments_around_its_writes(scenes):
    """SIGKILL of ``run`` during its first or a later write, or its state write, is as safe."""
    outcomes = kill_in_parallel(scenes, "run", scaled(80), ["timed", "temp", "rename", "state"])
    # Its temp file lives a fraction of a millisecond, so a kill on its creation does not always
    # land inside; test_kill_once_... asserts that case.
    assert outcomes["after the rename"] >= 1
    assert sum(outcomes.values()) >= scaled(80)


def test_the_next_run_removes_a_state_temp_file_a_killed_run_left(tmp_path, fake_sts):
    """A state temp file a killed ``run`` left is removed by the next ``run``; others stay."""
    creds = tmp_path / "aws" / "credentials"
    config = write_config(tmp_path / "c.toml", creds, fake_sts.url, ["p"], refresh=FAST)
    left = tmp_path / f"{STATE_TEMP_PREFIX}x1y2z3.tmp"
    left.write_bytes(b'{"version": 1, "profi')  # what a kill during save_state leaves
    decoy = tmp_path / ".state.json.other.tmp"
    decoy.write_bytes(b"not ours\n")
    notify = NotifySocket(tmp_path / "notify.sock")
    proc = Proc(
        ["run", "--config", str(config)], {**safety_env(tmp_path), "NOTIFY_SOCKET": notify.path}
    )
    try:
        notify.wait_for(lambda m: m == "READY=1")
        proc.signal(signal.SIGTERM)
        assert proc.wait_exit(timeout=15) == 0
    finally:
        proc.kill()
        notify.close()
    assert json.loads((tmp_path / "state.json").read_bytes())["version"] == 1
    assert decoy.read_bytes() == b"not ours\n"
    assert not left.exists()
