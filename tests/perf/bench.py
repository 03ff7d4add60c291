"""Benchmark credrefresh against the floor and its peers, on the fake STS in its own process.

    .venv/bin/python tests/perf/bench.py            # the full set (about 5 minutes)
    .venv/bin/python tests/perf/bench.py --quick    # a reduced set to smoke-test the harness

Every program measured runs as its own process; CPU seconds (user + sys) and peak RSS come from
``os.wait4`` on that process (a daemon's idle CPU from ``/proc/<pid>/stat``). The fake STS
(``python -m support.fakests``) answers on 127.0.0.1 only, with the latency, credential lifetime
and error rate given here. The peers (the AWS CLI and awsume) are installed on first use into
``tests/perf/.peers-venv`` (gitignored); a peer that cannot be installed is skipped with a message.

Prints a Markdown table, writes ``tests/perf/results/latest.json`` and, for a full run,
``tests/perf/RESULTS.md``. See ``tests/perf/README.md`` for what each scenario measures.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PEERS_VENV = HERE / ".peers-venv"
RESULTS_DIR = HERE / "results"
SOURCE_KEY = "AKIASOURCEEXAMPLE000"
SOURCE_SECRET = "source-secret-not-real"
ACCOUNT = "123456789012"
TICKS = os.sysconf("SC_CLK_TCK")
MB = 1024.0  # ru_maxrss and /proc are in KiB
ONCE_TIMEOUT = 300.0
STEP_TIMEOUT = 120.0
READY_TIMEOUT = 180.0
WRITE_DELAY = 1.0  # the config default, which the run scenarios keep
SCENARIOS = ("once", "peers", "idle", "hour", "writer", "commands", "scale")


# -- processes ------------------------------------------------------------------------------


@dataclass
class Run:
    """One measured process: wall seconds, CPU seconds (user+sys), peak RSS KiB, exit code."""

    wall: float
    cpu: float
    maxrss_kb: int
    status: int


def kill(pid: int, signum: int = signal.SIGKILL) -> None:
    """Signal ``pid``, ignoring a process that is already gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def run_process(
    argv: Sequence[str], env: dict[str, str], out: Path, timeout: float = STEP_TIMEOUT
) -> Run:
    """Run ``argv`` to completion with stdout in ``out``; measure it with ``wait4``.

    Through ``measure.py``, so that its peak RSS is its own, not this process's (see there).
    """
    result = out.with_suffix(".measure.json")
    result.unlink(missing_ok=True)
    launcher = [sys.executable, str(HERE / "measure.py"), str(result), str(timeout), "--"]
    with out.open("wb") as stdout, out.with_suffix(".err").open("wb") as stderr:
        proc = subprocess.Popen([*launcher, *argv], env=env, stdout=stdout, stderr=stderr, cwd=REPO)
        # measure.py kills the command after ``timeout``; this is for measure.py itself.
        killer = threading.Timer(timeout + 30.0, kill, (proc.pid,))
        killer.start()
        try:
            proc.wait()
        except BaseException:
            kill(proc.pid)
            proc.wait()
            raise
        finally:
            killer.cancel()
    if proc.returncode != 0 or not result.exists():
        raise RuntimeError(f"measure.py failed for {shlex.join(argv[:2])}: exit {proc.returncode}")
    measured = json.loads(result.read_text())
    return Run(measured["wall"], measured["cpu"], measured["maxrss_kb"], measured["status"])


def read_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    """The first stdout line of ``proc``, waiting at most ``timeout`` seconds."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buffer = b""
    while b"\n" not in buffer:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or proc.poll() is not None:
            raise RuntimeError(f"no ready line from {proc.args!r}; got {buffer!r}")
        ready, _, _ = select.select([proc.stdout], [], [], remaining)
        if ready:
            buffer += os.read(proc.stdout.fileno(), 4096)
    return buffer.split(b"\n", 1)[0]


def stop_process(proc: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """SIGTERM ``proc`` by pid, SIGKILL it after ``grace`` seconds, and reap it."""
    if proc.poll() is None:
        kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            kill(proc.pid)
            proc.wait()


class FakeSts:
    """``python -m support.fakests`` in its own process, on 127.0.0.1."""

    def __init__(
        self, workdir: Path, *, latency: float, error_rate: float, lifetime: float | None = None
    ) -> None:
        self.argv = [
            sys.executable,
            "-m",
            "support.fakests",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--latency",
            str(latency),
            "--error-rate",
            str(error_rate),
            "--seed",
            "1",
        ]
        if lifetime is not None:
            self.argv += ["--lifetime", str(lifetime)]
        self.log = workdir / "fakests.err"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def __enter__(self) -> Self:
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(
                self.argv, stdout=subprocess.PIPE, stderr=err, cwd=REPO / "tests"
            )
        try:
            self.url = json.loads(read_line(self.proc, 30.0))["url"]
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.proc is not None:
            stop_process(self.proc, 10.0)
            if self.proc.stdout is not None:
                self.proc.stdout.close()

    def assume_role_calls(self) -> int:
        """AssumeRole requests served so far."""
        with urllib.request.urlopen(f"{self.url}/_fake/stats", timeout=10) as answer:  # noqa: S310 - our own loopback URL
            return int(json.load(answer)["assume_role"])


class NotifySocket:
    """A datagram socket passed as NOTIFY_SOCKET, drained by a thread, as systemd would."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self.changed = threading.Condition()
        self.closing = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.closing.is_set():
            try:
                message = self.sock.recv(65536).decode()
            except TimeoutError:
                continue
            except OSError:
                return
            with self.changed:
                self.messages.append(message)
                self.changed.notify_all()

    def wait_ready(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        """Wait for READY=1; fail if ``proc`` exits or ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not any("READY=1" in m.splitlines() for m in self.messages):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or proc.poll() is not None:
                    raise RuntimeError(f"daemon not READY (exit {proc.poll()})")
                self.changed.wait(min(remaining, 1.0))

    def close(self) -> None:
        """Stop the reader and close the socket."""
        self.closing.set()
        self.thread.join(5)
        self.sock.close()


# -- inputs ---------------------------------------------------------------------------------


def profiles(count: int) -> list[str]:
    """Profile names role-0000, role-0001, ..."""
    return [f"role-{i:04d}" for i in range(count)]


def role_arn(profile: str) -> str:
    """The role ARN used for ``profile``."""
    return f"arn:aws:iam::{ACCOUNT}:role/{profile}"


def write_config(path: Path, credentials: Path, url: str, count: int, concurrency: int) -> Path:
    """A credrefresh TOML config with ``count`` roles (floor.py reads the same file)."""
    lines = [
        f"credentials_file = {json.dumps(str(credentials))}",
        'region = "us-east-1"',
        f"sts_endpoint_url = {json.dumps(url)}",
        f"state_file = {json.dumps(str(path.parent / 'state.json'))}",
        f"max_concurrency = {concurrency}",
    ]
    for name in profiles(count):
        lines += ["[[roles]]", f'profile = "{name}"', f'role_arn = "{role_arn(name)}"']
    path.write_text("\n".join(lines) + "\n")
    return path


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment without the developer's AWS setup, HOME in the work directory.

    Without ``PYTHONDONTWRITEBYTECODE`` too: programs are measured as installed, with their
    modules byte-compiled (pip compiles them at install, Python caches them on first import);
    compiling credrefresh's own modules on every start added about 85 ms to each command.
    """
    drop = (
        *("AWS_", "NOTIFY_SOCKET", "WATCHDOG_", "STATE_DIRECTORY", "XDG_", "CREDREFRESH_"),
        "PYTHONDONTWRITEBYTECODE",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(HOME=str(home), AWS_EC2_METADATA_DISABLED="true", AWS_DEFAULT_REGION="us-east-1")
    env.update(extra)
    return env


def source_env(home: Path, **extra: str) -> dict[str, str]:
    """``clean_env`` plus static source credentials (not real) in the environment."""
    return clean_env(
        home, AWS_ACCESS_KEY_ID=SOURCE_KEY, AWS_SECRET_ACCESS_KEY=SOURCE_SECRET, **extra
    )


def credrefresh() -> list[str]:
    """The ``credrefresh`` console script of this interpreter's venv, else ``python -m daemon``."""
    script = Path(sys.executable).parent / "credrefresh"
    return [str(script)] if script.exists() else [sys.executable, "-m", "credrefresh"]


def events(path: Path) -> list[dict[str, Any]]:
    """The JSON log lines of a credrefresh run."""
    found = []
    with path.open() as handle:
        for line in handle:
            with contextlib.suppress(json.JSONDecodeError):
                found.append(json.loads(line))
    return found


def file_writes(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``credentials_file.written`` events that replaced the file."""
    return [e for e in log if e.get("event") == "credentials_file.written" and e.get("changed")]


def stamp(event: dict[str, Any]) -> float:
    """An event's timestamp as epoch seconds."""
    return datetime.fromisoformat(event["timestamp"]).timestamp()


def file_identity(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime_ns) of ``path``: a change means the file was written."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


# -- results --------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the results table."""

    scenario: str
    roles: int
    wall_s: float | None
    cpu_s: float | None
    cpu_ms_per_role: float | None
    peak_rss_mb: float | None
    writes: int | None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def median_row(scenario: str, roles: int, runs: list[Run], writes: int, notes: str = "") -> Row:
    """A row of medians over repeated runs (peak RSS: the largest)."""
    wall = statistics.median(r.wall for r in runs)
    cpu = statistics.median(r.cpu for r in runs)
    spread = f"wall min {min(r.wall for r in runs):.2f} / max {max(r.wall for r in runs):.2f}"
    label = f"median of {len(runs)}; {spread}" if len(runs) > 1 else ""
    return Row(
        scenario,
        roles,
        wall,
        cpu,
        cpu / roles * 1000,
        max(r.maxrss_kb for r in runs) / MB,
        writes,
        "; ".join(x for x in (notes, label) if x),
        {"walls": [r.wall for r in runs], "cpus": [r.cpu for r in runs]},
    )


def say(message: str) -> None:
    """Progress, to stderr."""
    sys.stderr.write(f"[bench] {message}\n")
    sys.stderr.flush()


# -- scenario: cold once, and the floor ------------------------------------------------------


def once_ours(
    workdir: Path, config: Path, credentials: Path, roles: int, *, populated: bool = False
) -> tuple[Run, int, int]:
    """One ``credrefresh once``: the run, the file writes it logged, the roles that failed.

    Cold: no credentials file beforehand. Populated: the file as the last run left it, holding
    every managed profile (cron, restarts, ``run`` after its first round).
    """
    if not populated:
        credentials.unlink(missing_ok=True)
    elif not credentials.exists():
        raise RuntimeError("a populated run needs the file a cold run wrote")
    out = workdir / f"once-{roles}{'-populated' if populated else ''}.log"
    run = run_process(
        [*credrefresh(), "once", "--config", str(config), "--log-format", "json"],
        source_env(workdir / "home"),
        out,
        ONCE_TIMEOUT,
    )
    log = events(out)
    finished = [e for e in log if e.get("event") == "refresh.finished"]
    # Exit 1 means some role failed, which an injected error rate can cause; anything else, or
    # no summary at all, means the run itself went wrong.
    if run.status not in {0, 1} or not finished:
        raise RuntimeError(f"credrefresh once ({roles} roles) failed: exit {run.status}")
    return run, len(file_writes(log)), finished[0]["failed"]


def once_floor(workdir: Path, config: Path, credentials: Path, roles: int) -> tuple[Run, int]:
    """One run of floor.py on the same config: the run and the roles missing from its file."""
    credentials.unlink(missing_ok=True)
    run = run_process(
        [sys.executable, str(HERE / "floor.py"), "--config", str(config)],
        source_env(workdir / "home"),
        workdir / f"floor-{roles}.log",
        ONCE_TIMEOUT,
    )
    sections = credentials.read_text().count("\n[") + 1 if credentials.exists() else 0
    if run.status not in {0, 1} or not credentials.exists():
        raise RuntimeError(f"floor.py ({roles} roles) failed: exit {run.status}")
    return run, roles - sections


def scenario_once(opts: argparse.Namespace, workdir: Path) -> list[Row]:
    """Cold ``once``, ``once`` on the file it wrote, and the floor, interleaved, per size."""
    ours: dict[int, list[Run]] = {n: [] for n in opts.sizes}
    again: dict[int, list[Run]] = {n: [] for n in opts.sizes}
    floor: dict[int, list[Run]] = {n: [] for n in opts.sizes}
    writes: dict[int, int] = {}
    failed = {"ours": 0, "floor": 0}
    with FakeSts(workdir, latency=opts.latency, error_rate=opts.error_rate) as sts:
        for repeat in range(opts.repeats):
            for roles in opts.sizes:
                say(f"once: {roles} roles, run {repeat + 1}/{opts.repeats}")
                credentials = workdir / f"credentials-{roles}"
                config = workdir / f"once-{roles}.toml"
                write_config(config, credentials, sts.url, roles, opts.concurrency)
                run, writes[roles], lost = once_ours(workdir, config, credentials, roles)
                ours[roles].append(run)
                failed["ours"] += lost
                run, _, lost = once_ours(workdir, config, credentials, roles, populated=True)
                again[roles].append(run)
                failed["ours"] += lost
                run, lost = once_floor(workdir, config, credentials, roles)
                floor[roles].append(run)
                failed["floor"] += lost
    rows = []
    for roles in opts.sizes:
        rows.append(median_row("credrefresh once (cold)", roles, ours[roles], writes[roles]))
        rows.append(median_row("credrefresh once (populated)", roles, again[roles], writes[roles]))
        rows.append(median_row("floor (bare aiohttp)", roles, floor[roles], 1))
    if any(failed.values()):
        rows[
            0
        ].notes += f"; roles failed over all runs: ours {failed['ours']}, floor {failed['floor']}"
    return rows


# -- scenario: the writer alone, and the commands that only read -------------------------------


def fake_issued(profile: str, now: datetime) -> Any:
    """Credentials shaped like STS's (not real), for files written without STS."""
    from credrefresh.model import Credentials, Issued  # noqa: PLC0415 - only these scenarios

    suffix = f"{abs(hash(profile)) % 10**12:012d}"
    return Issued(
        profile=profile,
        role_arn=role_arn(profile),
        session_name=f"credrefresh-{profile}",
        assumed_role_arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/{profile}/credrefresh-{profile}",
        credentials=Credentials(
            access_key_id=f"ASIA{suffix}0000",
            secret_access_key="s" * 28 + suffix,
            session_token="IQoJb3JpZ2luX2Vj" + "t" * 372 + suffix,
            expiration=now + timedelta(hours=1),
        ),
        issued_at=now,
        duration_ms=1.0,
    )


def cpu_timed(fn: Any, repeats: int) -> tuple[float, float, float]:
    """Median wall and this thread's CPU seconds of ``fn()`` over ``repeats`` calls; min CPU."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.thread_time()
        fn()
        cpus.append(time.thread_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return statistics.median(walls), statistics.median(cpus), min(cpus)


def scenario_writer(opts: argparse.Namespace, workdir: Path) -> list[Row]:
    """``render`` and ``update_profiles`` on a file of n managed profiles, k of them changed.

    In this process, CPU from ``time.thread_time``; against the configupdater writer it replaced
    (kept with the tests) and against merely copying the text once. Cold: each call scans the
    file. Steady state: successive writes to one file, each given the last one's memo (as the
    daemon's writer does), k = ``--writer-k`` and k = 5 (what a write carries at 10,000 roles
    with one-hour credentials, about once a second).
    """
    sys.path.insert(0, str(HERE.parent))
    from credrefresh.credfile import update_profiles  # noqa: PLC0415
    from credrefresh.credtext import render  # noqa: PLC0415
    from support import oldrender  # noqa: PLC0415 - the reference lives with the tests

    n, k = opts.writer_n, opts.writer_k
    now = datetime.now(UTC)
    names = profiles(n)
    text = render("", {p: fake_issued(p, now) for p in names}, now=now)[0]
    changed = {p: fake_issued(p, now + timedelta(minutes=1)) for p in names[:: max(n // k, 1)]}
    later = now + timedelta(minutes=1)
    path = workdir / "writer-credentials"
    path.write_text(text)
    half = len(text) // 2

    def update() -> None:
        update_profiles(str(path), changed, now=later)
        path.write_text(text)  # the next call starts from the same file

    cases: list[tuple[str, Any]] = [
        ("writer: copying the text once (baseline)", lambda: "x".join([text[:half], text[half:]])),
        ("writer: render (single pass)", lambda: render(text, changed, now=later)),
        (
            "writer: render (configupdater, before)",
            lambda: oldrender.render(text, changed, now=later),
        ),
        ("writer: update_profiles (lock, read, render, fsync, rename)", update),
    ]
    rows = []
    for scenario, fn in cases:
        say(f"{scenario}: n={n}, k={len(changed)}")
        repeats = 3 if "before" in scenario else opts.writer_repeats
        wall, cpu, best = cpu_timed(fn, repeats)
        notes = (
            f"n={n} profiles ({len(text) / 1e6:.1f} MB), k={len(changed)} changed; CPU median "
            f"{cpu * 1000:.1f} ms, min {best * 1000:.1f} ms, of {repeats}; in-process"
        )
        rows.append(Row(scenario, n, wall, cpu, None, None, None, notes, {"cpu_min": best}))
    rows += [steady_writes(path, text, names, size, now, opts.writer_repeats) for size in (k, 5)]
    return rows


def steady_writes(
    path: Path, text: str, names: list[str], k: int, now: datetime, repeats: int
) -> Row:
    """Successive ``update_profiles`` of k profiles on one file, each given the last memo.

    The first write (which scans) is not counted. Also measured: what the memo keeps (the
    sizes of its objects) and the largest Python allocation of one write (tracemalloc,
    untimed), with the memo and without.
    """
    from credrefresh.credfile import update_profiles  # noqa: PLC0415

    path.write_text(text)
    step = max(len(names) // k, 1)
    rounds = [
        {p: fake_issued(p, now + timedelta(minutes=j + 2)) for p in names[j % step :: step][:k]}
        for j in range(repeats + 3)
    ]
    report = update_profiles(str(path), rounds[0], now=now + timedelta(minutes=2))
    cpus, walls, scanned = [], [], 0
    for j, changed in enumerate(rounds[1 : repeats + 1], start=1):
        wall, cpu = time.perf_counter(), time.thread_time()
        report = update_profiles(
            str(path), changed, now=now + timedelta(minutes=j + 2), memo=report.memo
        )
        cpus.append(time.thread_time() - cpu)
        walls.append(time.perf_counter() - wall)
        scanned += report.scanned
    memo_bytes = deep_size(report.memo)
    peaks = []
    for j, memo in ((repeats + 1, report.memo), (repeats + 2, None)):
        tracemalloc.start()
        report = update_profiles(
            str(path), rounds[j], now=now + timedelta(minutes=j + 2), memo=memo
        )
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    cpu = statistics.median(cpus)
    notes = (
        f"n={len(names)} ({len(text) / 1e6:.1f} MB), k={k} per write, {repeats} successive "
        f"writes to one file, each given the last memo ({scanned} scanned); CPU median "
        f"{cpu * 1000:.1f} ms, min {min(cpus) * 1000:.1f} ms; memo {memo_bytes / 1e6:.2f} MB; "
        f"largest allocation in a write {peaks[0] / 1e6:.1f} MB with the memo, "
        f"{peaks[1] / 1e6:.1f} MB scanning"
    )
    return Row(
        f"writer: update_profiles, steady state (memo), k={k}",
        len(names),
        statistics.median(walls),
        cpu,
        None,
        None,
        None,
        notes,
        {"cpu_min": min(cpus), "memo_bytes": memo_bytes, "alloc_peaks": peaks},
    )


def deep_size(memo: Any) -> int:
    """Bytes held by a memo: the object, its digest and identity, the tuples and their items."""
    if memo is None:
        return 0
    names, starts = memo.sections
    held = [memo, memo.digest, memo.identity, memo.sections, names, starts, *names, *starts]
    return sum(sys.getsizeof(item) for item in held)


def command_runs(argv: list[str], home: Path, out: Path, repeats: int) -> list[Run]:
    """``repeats`` runs of a read-only credrefresh command; each must exit 0, 1 or 2.

    One untimed run first, which leaves the modules byte-compiled as an install has them.
    """
    runs = []
    for _ in range(repeats + 1):
        run = run_process(argv, clean_env(home), out, STEP_TIMEOUT)
        if run.status not in {0, 1, 2}:
            raise RuntimeError(f"{shlex.join(argv[-3:])} failed: exit {run.status}")
        runs.append(run)
    return runs[1:]


def scenario_commands(opts: argparse.Namespace, workdir: Path) -> list[Row]:
    """``status`` of a file of n managed profiles (without and with the parsed-config cache),
    and ``check`` of a config of m roles."""
    from credrefresh.config import load_config  # noqa: PLC0415
    from credrefresh.credtext import render  # noqa: PLC0415

    rows = []
    now = datetime.now(UTC)
    n, m = opts.status_n, opts.check_m
    credentials = workdir / "status-credentials"
    names = profiles(n)
    credentials.write_text(render("", {p: fake_issued(p, now) for p in names}, now=now)[0])
    config = write_config(workdir / "status.toml", credentials, "http://127.0.0.1:9", n, 64)
    say(f"status: {n} profiles")
    runs = command_runs(
        [*credrefresh(), "status", "--config", str(config)],
        workdir / "home",
        workdir / "status.out",
        opts.repeats,
    )
    rows.append(median_row("credrefresh status", n, runs, 0, "subprocess, start-up included"))
    # The parsed-config cache as once and run leave it (status itself only reads it).
    load_config(str(config), clean_env(workdir / "home"), cache="update")
    say(f"status: {n} profiles, config cached")
    runs = command_runs(
        [*credrefresh(), "status", "--config", str(config)],
        workdir / "home",
        workdir / "status-cached.out",
        opts.repeats,
    )
    notes = "subprocess, start-up included; the config cache written by once/run"
    rows.append(median_row("credrefresh status (config cached)", n, runs, 0, notes))
    config = write_config(workdir / "check.toml", credentials, "http://127.0.0.1:9", m, 64)
    say(f"check: {m} roles")
    runs = command_runs(
        [*credrefresh(), "check", "--config", str(config)],
        workdir / "home",
        workdir / "check.out",
        opts.repeats,
    )
    rows.append(median_row("credrefresh check", m, runs, 0, "subprocess, start-up included"))
    return rows


# -- scenario: the peers ----------------------------------------------------------------------


def ensure_peers(opts: argparse.Namespace) -> tuple[Path | None, str]:
    """The peers' bin directory, installing awscli and awsume on first use; else a reason."""
    bindir = PEERS_VENV / "bin"
    if (bindir / "aws").exists() and (bindir / "awsumepy").exists():
        return bindir, ""
    if opts.no_install:
        return None, "peers not installed and --no-install given"
    say(f"installing awscli and awsume into {PEERS_VENV.relative_to(REPO)} (first use)")
    try:
        if not (bindir / "pip").exists():
            subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True, timeout=300)
        subprocess.run(
            [
                str(bindir / "pip"),
                "install",
                "-q",
                "--disable-pip-version-check",
                "awsume",
                "awscli",
            ],
            check=True,
            timeout=900,
            capture_output=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"could not install awscli/awsume: {exc}"
    return bindir, ""


@dataclass
class Loop:
    """What a loop of peer commands cost, summed over its processes."""

    cpu: float = 0.0
    maxrss_kb: int = 0
    processes: int = 0
    writes: int = 0

    def add(self, run: Run, argv: Sequence[str]) -> None:
        """Account for one finished command; fail on a non-zero exit."""
        if run.status != 0:
            raise RuntimeError(f"{shlex.join(argv[:3])} ... exited {run.status}")
        self.cpu += run.cpu
        self.maxrss_kb = max(self.maxrss_kb, run.maxrss_kb)
        self.processes += 1


def peer_home(workdir: Path, name: str, roles: list[str], *, awsume: bool) -> Path:
    """A temporary HOME: a source profile and, for awsume, one role profile per role."""
    home = workdir / name
    aws = home / ".aws"
    aws.mkdir(parents=True)
    credentials = aws / "credentials"
    credentials.write_text(
        f"[source]\naws_access_key_id = {SOURCE_KEY}\naws_secret_access_key = {SOURCE_SECRET}\n"
    )
    credentials.chmod(0o600)
    config = ["[default]", "region = us-east-1"]
    if awsume:
        for profile in roles:
            config += [
                f"[profile {profile}]",
                f"role_arn = {role_arn(profile)}",
                "source_profile = source",
                "region = us-east-1",
            ]
    (aws / "config").write_text("\n".join(config) + "\n")
    return home


def cli_loop(bindir: Path, workdir: Path, url: str, roles: list[str]) -> Loop:
    """What a cron script does per role: ``aws sts assume-role``, then ``aws configure set`` x3."""
    home = peer_home(workdir, "home-awscli", roles, awsume=False)
    credentials = home / ".aws" / "credentials"
    env = source_env(home, AWS_ENDPOINT_URL_STS=url, PATH=f"{bindir}:{os.environ['PATH']}")
    loop = Loop()
    answer = workdir / "assume-role.json"  # holds fake secrets; deleted below
    try:
        for profile in roles:
            argv = [
                str(bindir / "aws"),
                "sts",
                "assume-role",
                "--role-arn",
                role_arn(profile),
                "--role-session-name",
                f"cron-{profile}",
                "--duration-seconds",
                "3600",
                "--output",
                "json",
            ]
            loop.add(run_process(argv, env, answer), argv)
            creds = json.loads(answer.read_text())["Credentials"]
            for key, field_name in (
                ("aws_access_key_id", "AccessKeyId"),
                ("aws_secret_access_key", "SecretAccessKey"),
                ("aws_session_token", "SessionToken"),
            ):
                before = file_identity(credentials)
                argv = [str(bindir / "aws"), "configure", "set", key, creds[field_name]]
                argv += ["--profile", profile]
                loop.add(run_process(argv, env, workdir / "configure.out"), argv)
                loop.writes += int(file_identity(credentials) != before)
    finally:
        answer.unlink(missing_ok=True)
    return loop


def awsume_loop(bindir: Path, workdir: Path, url: str, roles: list[str]) -> Loop:
    """``awsume ROLE -o PROFILE`` per role (awsumepy, which the awsume shell wrapper runs)."""
    home = peer_home(workdir, "home-awsume", roles, awsume=True)
    credentials = home / ".aws" / "credentials"
    env = clean_env(home, AWS_ENDPOINT_URL_STS=url, PATH=f"{bindir}:{os.environ['PATH']}")
    loop = Loop()
    out = workdir / "awsume.out"  # awsume prints the credentials for its shell wrapper
    try:
        for profile in roles:
            before = file_identity(credentials)
            argv = [str(bindir / "awsumepy"), profile, "-o", f"out-{profile}"]
            loop.add(run_process(argv, env, out), argv)
            loop.writes += int(file_identity(credentials) != before)
    finally:
        out.unlink(missing_ok=True)
    return loop


def timed_loop(kind: str, bindir: Path, workdir: Path, url: str, roles: list[str]) -> Row:
    """Run one peer loop (after one untimed warm-up role) and make its row."""
    body = cli_loop if kind == "aws-cli" else awsume_loop
    body(bindir, workdir / "warmup", url, ["warm-0000"])
    started = time.perf_counter()
    loop = body(bindir, workdir, url, roles)
    wall = time.perf_counter() - started
    label = (
        "aws sts assume-role + aws configure set x3"
        if kind == "aws-cli"
        else "awsume ROLE -o PROFILE"
    )
    return Row(
        f"{kind} loop ({label})",
        len(roles),
        wall,
        loop.cpu,
        loop.cpu / len(roles) * 1000,
        loop.maxrss_kb / MB,
        loop.writes,
        f"{loop.processes} processes; wall {wall / len(roles) * 1000:.0f} ms/role",
    )


def scenario_peers(opts: argparse.Namespace, workdir: Path) -> tuple[list[Row], list[str]]:
    """The aws-cli and awsume loops on ``opts.peer_roles`` roles; rows and skip messages."""
    bindir, why = ensure_peers(opts)
    if bindir is None:
        say(f"peers skipped: {why}")
        return [], [f"aws-cli and awsume loops skipped: {why}"]
    rows, skipped = [], []
    roles = profiles(opts.peer_roles)
    with FakeSts(workdir, latency=opts.latency, error_rate=opts.error_rate) as sts:
        for kind in ("aws-cli", "awsume"):
            say(f"peers: {kind} loop over {len(roles)} roles")
            try:
                rows.append(timed_loop(kind, bindir, workdir / kind, sts.url, roles))
            except (RuntimeError, OSError, KeyError, ValueError) as exc:
                say(f"{kind} skipped: {exc}")
                skipped.append(f"{kind} loop skipped: {exc}")
    return rows, skipped


# -- scenario: the daemon ---------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads, live or exited), in seconds."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def proc_memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of ``pid`` in MB."""
    found = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in {"VmRSS", "VmHWM"}:
                found[key] = int(value.split()[0]) / MB
    return found


@dataclass
class Ready:
    """How long a daemon took from spawn to READY=1 (its first round), and what it used."""

    wall: float
    cpu: float
    memory: dict[str, float]


@contextlib.contextmanager
def daemon(
    workdir: Path, config: Path, name: str, ready: list[Ready] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """``credrefresh run`` with our NOTIFY_SOCKET, READY when entered, stopped by pid on exit.

    Appends the time from spawn to READY=1 (and the CPU and memory used by then) to ``ready``.
    """
    notify = NotifySocket(workdir / f"{name}.notify")
    out = workdir / f"{name}.log"
    env = source_env(workdir / "home", NOTIFY_SOCKET=notify.path)
    argv = [*credrefresh(), "run", "--config", str(config), "--log-format", "json"]
    try:
        with out.open("wb") as stdout, out.with_suffix(".err").open("wb") as stderr:
            started = time.perf_counter()
            proc = subprocess.Popen(argv, env=env, stdout=stdout, stderr=stderr, cwd=REPO)
        try:
            notify.wait_ready(proc, READY_TIMEOUT)
            if ready is not None:
                wall = time.perf_counter() - started
                ready.append(Ready(wall, proc_cpu(proc.pid), proc_memory(proc.pid)))
            yield proc, out
        finally:
            stop_process(proc)
    finally:
        notify.close()


@dataclass
class Window:
    """CPU and memory of a daemon over a measured stretch of wall time."""

    start: float
    end: float
    cpu: float
    memory: dict[str, float]


def measure_window(proc: subprocess.Popen[bytes], seconds: float) -> Window:
    """Watch ``proc`` for ``seconds`` of wall time (this wait is the measurement)."""
    start, cpu0 = time.time(), proc_cpu(proc.pid)
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited during the window: {proc.returncode}")
        time.sleep(min(remaining, 1.0))
    return Window(start, time.time(), proc_cpu(proc.pid) - cpu0, proc_memory(proc.pid))


def scenario_idle(opts: argparse.Namespace, workdir: Path) -> Row:
    """``run`` with lifetimes of an hour: CPU and RSS while nothing is due."""
    roles = opts.daemon_roles
    with FakeSts(workdir, latency=opts.latency, error_rate=opts.error_rate) as sts:
        config = write_config(
            workdir / "idle.toml", workdir / "credentials-idle", sts.url, roles, opts.concurrency
        )
        say(f"run (idle): {roles} roles, {opts.idle_seconds:g} s window after READY")
        with daemon(workdir, config, "idle") as (proc, out):
            settle = measure_window(proc, 2.0)  # let the first round's state write finish
            calls = sts.assume_role_calls()
            window = measure_window(proc, opts.idle_seconds)
            calls = sts.assume_role_calls() - calls
        log = events(out)
    writes = [e for e in file_writes(log) if window.start <= stamp(e) <= window.end]
    percent = window.cpu / (window.end - window.start) * 100
    return Row(
        "credrefresh run, idle (nothing due)",
        roles,
        window.end - window.start,
        window.cpu,
        None,
        window.memory.get("VmHWM"),
        len(writes),
        f"{percent:.3f} % of one core (tick {1 / TICKS * 1000:.0f} ms); VmRSS "
        f"{window.memory.get('VmRSS', 0):.1f} MB; {calls} STS calls in the window",
        {"cpu_percent": percent, "settle_cpu_s": settle.cpu, "sts_calls": calls, **window.memory},
    )


@dataclass
class Tally:
    """What a daemon's log says of a window: file writes, refreshes, failures and pacing."""

    seconds: float
    writes: list[dict[str, Any]]
    refreshed: int
    failed: int
    expired: int  # over the whole log: role.expired is logged once per expiry
    min_gap: float | None
    most_in_1s: int


def tally(log: list[dict[str, Any]], window: Window) -> Tally:
    """Count the events of ``log`` inside ``window``."""
    inside = [e for e in log if "timestamp" in e and window.start <= stamp(e) <= window.end]
    writes = file_writes(inside)
    return Tally(
        window.end - window.start,
        writes,
        sum(1 for e in inside if e["event"] == "role.refreshed"),
        sum(1 for e in inside if e["event"] == "role.refresh_failed"),
        sum(1 for e in log if e.get("event") == "role.expired"),
        *write_pacing(writes),
    )


def write_pacing(writes: list[dict[str, Any]]) -> tuple[float | None, int]:
    """Smallest gap between consecutive writes, and the most writes in any 1 s span."""
    times = sorted(stamp(e) for e in writes)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    most = max((sum(1 for t in times if s <= t < s + 1.0) for s in times), default=0)
    return (min(gaps) if gaps else None), most


def scenario_hour(opts: argparse.Namespace, workdir: Path) -> Row:
    """``run`` with lifetimes compressed (an hour per ``lifetime`` seconds): writes and CPU."""
    roles, lifetime = opts.daemon_roles, opts.lifetime
    with FakeSts(
        workdir, latency=opts.latency, error_rate=opts.error_rate, lifetime=lifetime
    ) as sts:
        config = write_config(
            workdir / "hour.toml", workdir / "credentials-hour", sts.url, roles, opts.concurrency
        )
        say(
            f"run (compressed hour): {roles} roles, lifetime {lifetime:g} s, "
            f"{opts.hour_seconds:g} s window"
        )
        with daemon(workdir, config, "hour") as (proc, out):
            window = measure_window(proc, opts.hour_seconds)
        log = events(out)
    seen = tally(log, window)
    writes, refreshed, failed, expired = seen.writes, seen.refreshed, seen.failed, seen.expired
    gap, most, seconds = seen.min_gap, seen.most_in_1s, seen.seconds
    sim_hours = seconds / lifetime  # one credential lifetime stands for one real hour
    coalesced = most <= 1 and (gap is None or gap >= WRITE_DELAY * 0.99)
    return Row(
        f"credrefresh run, compressed hour (lifetime {lifetime:g} s)",
        roles,
        seconds,
        window.cpu,
        window.cpu / refreshed * 1000 if refreshed else None,
        window.memory.get("VmHWM"),
        len(writes),
        f"{refreshed} refreshes, {failed} failed, {expired} expired; "
        f"{len(writes) / sim_hours:.0f} writes per simulated hour; "
        f"{len(writes) / seconds * 60:.1f} writes/min; min gap "
        f"{'n/a' if gap is None else f'{gap:.2f} s'}; max {most} in any 1 s; "
        f"{window.cpu / seconds * 100:.1f} % of one core",
        {
            "refreshed": refreshed,
            "failed": failed,
            "expired": expired,
            "min_gap_s": gap,
            "max_writes_per_1s": most,
            "coalesced": coalesced,
            "writes_per_sim_hour": len(writes) / sim_hours,
            **window.memory,
        },
    )


def wave_row(name: str, roles: int, window: Window, log: list[dict[str, Any]]) -> Row:
    """A row for a window of ``run``: refreshes, CPU per refresh and the pacing of writes."""
    seen = tally(log, window)
    writes, refreshed, failed, expired = seen.writes, seen.refreshed, seen.failed, seen.expired
    gap, most, seconds = seen.min_gap, seen.most_in_1s, seen.seconds
    write_ms = [float(e.get("duration_ms") or 0) for e in writes]
    return Row(
        name,
        roles,
        seconds,
        window.cpu,
        window.cpu / refreshed * 1000 if refreshed else None,
        window.memory.get("VmHWM"),
        len(writes),
        f"{refreshed} refreshes, {failed} failed, {expired} expired; min gap "
        f"{'n/a' if gap is None else f'{gap:.2f} s'}; max {most} in any 1 s; writes take "
        f"{statistics.median(write_ms) if write_ms else 0:.0f} ms (median); "
        f"{window.cpu / seconds * 100:.1f} % of one core",
        {
            "refreshed": refreshed,
            "failed": failed,
            "expired": expired,
            "min_gap_s": gap,
            "max_writes_per_1s": most,
            "coalesced": most <= 1 and (gap is None or gap >= WRITE_DELAY * 0.99),
            **window.memory,
        },
    )


def scenario_scale(opts: argparse.Namespace, workdir: Path) -> list[Row]:
    """``run`` with ``scale_roles`` roles: start-up to READY, idle, and a wave of refreshes.

    Two daemons, each started on an empty file (their first round is timed to READY=1): one
    with one-hour credentials, watched while nothing is due; one with credentials that live
    ``scale_lifetime`` seconds, watched while every role is refreshed once (the wave comes at
    50-60 % of the lifetime after READY, and the window ends before the next one).
    """
    roles, lifetime = opts.scale_roles, opts.scale_lifetime
    ready: list[Ready] = []
    rows: list[Row] = []
    with FakeSts(workdir, latency=opts.latency, error_rate=opts.error_rate) as sts:
        config = write_config(
            workdir / "scale-idle.toml",
            workdir / "credentials-scale-idle",
            sts.url,
            roles,
            opts.concurrency,
        )
        say(f"run (scale, idle): {roles} roles, {opts.scale_idle_seconds:g} s window after READY")
        with daemon(workdir, config, "scale-idle", ready) as (proc, out):
            settle = measure_window(proc, opts.scale_settle_seconds)  # the state file's write
            calls = sts.assume_role_calls()
            window = measure_window(proc, opts.scale_idle_seconds)
            calls = sts.assume_role_calls() - calls
        log = events(out)
    writes = [e for e in file_writes(log) if window.start <= stamp(e) <= window.end]
    percent = window.cpu / (window.end - window.start) * 100
    rows.append(
        Row(
            "credrefresh run, idle (nothing due)",
            roles,
            window.end - window.start,
            window.cpu,
            None,
            window.memory.get("VmHWM"),
            len(writes),
            f"{percent:.3f} % of one core (tick {1 / TICKS * 1000:.0f} ms); VmRSS "
            f"{window.memory.get('VmRSS', 0):.1f} MB; {calls} STS calls in the window",
            {"cpu_percent": percent, "settle_cpu_s": settle.cpu, "sts_calls": calls},
        )
    )
    with FakeSts(
        workdir, latency=opts.latency, error_rate=opts.error_rate, lifetime=lifetime
    ) as sts:
        config = write_config(
            workdir / "scale-wave.toml",
            workdir / "credentials-scale-wave",
            sts.url,
            roles,
            opts.concurrency,
        )
        seconds = lifetime * 0.75
        say(f"run (scale, wave): {roles} roles, lifetime {lifetime:g} s, {seconds:g} s window")
        with daemon(workdir, config, "scale-wave", ready) as (proc, out):
            window = measure_window(proc, seconds)
        log = events(out)
    rows.append(
        wave_row(f"credrefresh run, refresh wave (lifetime {lifetime:g} s)", roles, window, log)
    )
    rows.append(
        Row(
            "credrefresh run, start-up to READY (first round)",
            roles,
            statistics.median(r.wall for r in ready),
            statistics.median(r.cpu for r in ready),
            statistics.median(r.cpu for r in ready) / roles * 1000,
            max(r.memory.get("VmHWM", 0) for r in ready),
            None,
            f"empty file, fake STS as for once; median of {len(ready)} starts; wall "
            + " / ".join(f"{r.wall:.2f}" for r in ready),
            {"walls": [r.wall for r in ready], "cpus": [r.cpu for r in ready]},
        )
    )
    return rows


# -- report -----------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2) -> str:
    """A table cell."""
    return "-" if value is None else f"{value:.{digits}f}"


def table(rows: list[Row]) -> str:
    """The Markdown results table."""
    lines = [
        "| scenario | roles | wall s | CPU s | CPU ms/role | peak RSS MB | file writes | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| {r.scenario} | {r.roles} | {fmt(r.wall_s)} | {fmt(r.cpu_s)} | "
        f"{fmt(r.cpu_ms_per_role)} | {fmt(r.peak_rss_mb, 1)} | "
        f"{'-' if r.writes is None else r.writes} | {r.notes} |"
        for r in rows
    ]
    return "\n".join(lines)


def find(rows: list[Row], prefix: str, roles: int | None = None) -> Row | None:
    """The row of a scenario (at ``roles``, else the largest)."""
    matches = [r for r in rows if r.scenario.startswith(prefix)]
    if roles is not None:
        matches = [r for r in matches if r.roles == roles]
    return max(matches, key=lambda r: r.roles, default=None)


def verdict(ok: bool | None) -> str:
    """A table cell for a target."""
    return {True: "met", False: "**not met**", None: "not measured"}[ok]


def targets(rows: list[Row]) -> list[tuple[str, str, str]]:
    """Each target, what was measured, and whether it is met."""
    found: list[tuple[str, str, str]] = []
    ours, floor = find(rows, "credrefresh once"), find(rows, "floor")
    if ours and floor and ours.wall_s and floor.wall_s:
        ratio = ours.wall_s / floor.wall_s
        measured = (
            f"{ratio:.2f}x ({ours.wall_s:.2f} s vs {floor.wall_s:.2f} s, {ours.roles} roles; "
            f"CPU {ours.cpu_s or 0:.2f} s vs {floor.cpu_s or 0:.2f} s)"
        )
        found.append(("cold once <= 2.0x the floor's wall time", measured, verdict(ratio <= 2.0)))
        found.append(("stretch: <= 1.5x the floor", measured, verdict(ratio <= 1.5)))
    if ours and ours.wall_s:
        per_role = ours.wall_s / ours.roles
        for prefix in ("aws-cli", "awsume"):
            peer = find(rows, prefix)
            if peer is None or not peer.wall_s:
                found.append(
                    (f">= 100x faster per role than the {prefix} loop", "skipped", verdict(None))
                )
                continue
            speedup = peer.wall_s / peer.roles / per_role
            same = find(rows, "credrefresh once", peer.roles)
            at_same = ""
            if same and same.wall_s:
                at_same = f"; {peer.wall_s / same.wall_s:.0f}x at {peer.roles} roles"
            found.append(
                (
                    f">= 100x faster per role than the {prefix} loop",
                    (
                        f"{speedup:.0f}x ({per_role * 1000:.1f} ms vs "
                        f"{peer.wall_s / peer.roles * 1000:.0f} ms per role, ours at "
                        f"{ours.roles} roles{at_same})"
                    ),
                    verdict(speedup >= 100),
                )
            )
    rss = [r for r in rows if r.scenario.startswith("credrefresh") and r.peak_rss_mb]
    if rss:
        worst = max(rss, key=lambda r: r.peak_rss_mb or 0)
        found.append(
            (
                "peak RSS <= 150 MB",
                f"{worst.peak_rss_mb:.1f} MB ({worst.scenario}, {worst.roles} roles)",
                verdict((worst.peak_rss_mb or 0) <= 150),
            )
        )
    found += targets_issue13(rows)
    idle = find(rows, "credrefresh run, idle")
    if idle:
        percent = idle.extra["cpu_percent"]
        measured = f"{percent:.3f} % ({idle.roles} roles, {idle.wall_s:.0f} s)"
        found.append(("run idle <= 0.2 % of one core", measured, verdict(percent <= 0.2)))
        found.append(("stretch: idle <= 0.05 %", measured, verdict(percent <= 0.05)))
    hour = find(rows, "credrefresh run, compressed")
    if hour:
        gap = hour.extra["min_gap_s"]
        found.append(
            (
                "writes coalesced: <= 1 rewrite per second",
                (
                    f"max {hour.extra['max_writes_per_1s']} in any 1 s; min gap "
                    f"{'n/a' if gap is None else f'{gap:.2f} s'}; {hour.writes} writes for "
                    f"{hour.extra['refreshed']} refreshes"
                ),
                verdict(hour.extra["coalesced"]),
            )
        )
    return found


def targets_issue13(rows: list[Row]) -> list[tuple[str, str, str]]:
    """The targets of the populated-file, 10,000-role and read-only-command scenarios."""
    found: list[tuple[str, str, str]] = []
    for row in rows:
        floor = find(rows, "floor", row.roles)
        if row.scenario != "credrefresh once (populated)" or not floor or not floor.wall_s:
            continue
        ratio = (row.wall_s or 0) / floor.wall_s
        measured = (
            f"{ratio:.2f}x ({row.wall_s:.2f} s vs {floor.wall_s:.2f} s; CPU {row.cpu_s:.2f} s "
            f"vs {floor.cpu_s or 0:.2f} s)"
        )
        found.append(
            (
                f"populated once <= 1.5x the floor, {row.roles} roles",
                measured,
                verdict(ratio <= 1.5),
            )
        )
    writer = find(rows, "writer: render (single pass)")
    if writer and writer.cpu_s is not None:
        found.append(
            (
                f"render of k=100 in n={writer.roles} <= 50 ms",
                f"{writer.cpu_s * 1e3:.1f} ms CPU (median; min {writer.extra['cpu_min']:.3f} s)",
                verdict(writer.cpu_s <= 0.05),
            )
        )
    found += [
        (
            f"{row.scenario.removeprefix('writer: ')} in n={row.roles} <= 50 ms",
            f"{row.cpu_s * 1e3:.1f} ms CPU (median; min {row.extra['cpu_min']:.3f} s)",
            verdict(row.cpu_s <= 0.05),
        )
        for row in rows
        if row.scenario.startswith("writer: update_profiles, steady state") and row.cpu_s
    ]
    found += targets_scale(rows)
    for name, limit, what in (
        ("credrefresh status", 0.5, "status"),
        ("credrefresh status (config cached)", 0.5, "status (config cached)"),
        ("credrefresh check", 0.3, "check"),
    ):
        row = next((r for r in rows if r.scenario == name), None)
        if row and row.wall_s is not None:
            found.append(
                (
                    f"{what} of {row.roles} <= {limit} s",
                    f"{row.wall_s:.2f} s wall, {row.cpu_s or 0:.2f} s CPU",
                    verdict(row.wall_s <= limit),
                )
            )
    return found


def targets_scale(rows: list[Row]) -> list[tuple[str, str, str]]:
    """The targets of ``run`` at scale: CPU per refresh, writes, idle, start-up to READY."""
    found: list[tuple[str, str, str]] = []
    wave = find(rows, "credrefresh run, refresh wave")
    if wave and wave.cpu_ms_per_role is not None:
        found.append(
            (
                f"run at {wave.roles} roles: CPU per refresh <= 1 ms",
                (
                    f"{wave.cpu_ms_per_role:.2f} ms ({wave.cpu_s:.1f} s for "
                    f"{wave.extra['refreshed']} refreshes, file writes included)"
                ),
                verdict(wave.cpu_ms_per_role <= 1.0),
            )
        )
        gap = wave.extra["min_gap_s"]
        found.append(
            (
                f"run at {wave.roles} roles: <= 1 rewrite per second",
                (
                    f"max {wave.extra['max_writes_per_1s']} in any 1 s; min gap "
                    f"{'n/a' if gap is None else f'{gap:.2f} s'}; {wave.writes} writes"
                ),
                verdict(wave.extra["coalesced"]),
            )
        )
    idle = find(rows, "credrefresh run, idle")
    if idle and wave and idle.roles == wave.roles:
        percent = idle.extra["cpu_percent"]
        found.append(
            (
                f"run at {idle.roles} roles: idle <= 0.05 % of a core",
                f"{percent:.3f} % ({idle.wall_s:.0f} s window)",
                verdict(percent <= 0.05),
            )
        )
    ready = find(rows, "credrefresh run, start-up to READY")
    cold = None if ready is None else find(rows, "credrefresh once (cold)", ready.roles)
    if ready and ready.wall_s:
        if cold and cold.wall_s:
            ratio = ready.wall_s / cold.wall_s
            measured = (
                f"{ratio:.2f}x ({ready.wall_s:.2f} s vs {cold.wall_s:.2f} s; CPU "
                f"{ready.cpu_s or 0:.2f} s vs {cold.cpu_s or 0:.2f} s)"
            )
            ok: bool | None = ratio <= 1.5
        else:
            measured, ok = f"{ready.wall_s:.2f} s; no cold once at {ready.roles} roles", None
        found.append(
            (f"start-up to READY at {ready.roles} roles <= 1.5x cold once", measured, verdict(ok))
        )
    return found


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg_start": None,
        "loadavg_end": None,
    }


def command(argv: Sequence[str]) -> str:
    """The command line that was run, without machine-specific paths."""
    python = Path(sys.executable)
    try:
        shown = str(python.relative_to(REPO))
    except ValueError:
        shown = python.name
    return shlex.join([shown, "tests/perf/bench.py", *argv])


def notes_of(results: Path) -> str:
    """The written sections of ``results`` (from its first ``## `` heading on), which a full
    run keeps below the new table: the notes of what moved each figure, issue by issue."""
    try:
        old = results.read_text()
    except FileNotFoundError:
        return ""
    at = old.find("\n## ")
    return "" if at < 0 else old[at:]


def markdown(report: dict[str, Any], rows: list[Row]) -> str:
    """RESULTS.md."""
    info, opts = report["machine"], report["options"]
    machine_line = (
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, "
        f"Linux {info['kernel']}, {info['date']}  "
    )
    load_line = (
        f"Load average (1/5/15 min) at start: {info['loadavg_start']}, at end: "
        f"{info['loadavg_end']}. Other work shares this machine; wall times are noisy.  "
    )
    fake_line = (
        f"Fake STS: latency {opts['latency']:g} s, error rate {opts['error_rate']:g}; "
        f"max_concurrency {opts['concurrency']}."
    )
    lines = [
        "# credrefresh benchmark results",
        "",
        f"Command: `{report['command']}`  ",
        machine_line,
        load_line,
        fake_line,
        "",
        table(rows),
        "",
        "| target | measured | verdict |",
        "|---|---|---|",
    ]
    lines += [f"| {t} | {m} | {v} |" for t, m, v in report["targets"]]
    lines += [f"\n{note}" for note in report["skipped"]]
    return "\n".join(lines) + "\n"


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Options; ``--quick`` shrinks every scenario."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="reduced set, under a minute")
    parser.add_argument("--latency", type=float, default=0.05, help="fake STS latency, s")
    parser.add_argument("--error-rate", type=float, default=0.0, help="fake STS 500 rate, 0-1")
    parser.add_argument("--concurrency", type=int, default=64, help="max_concurrency (64)")
    parser.add_argument("--lifetime", type=float, help="compressed lifetime, s (60; quick 10)")
    parser.add_argument("--no-peers", action="store_true", help="skip the aws-cli/awsume loops")
    parser.add_argument("--no-install", action="store_true", help="never install the peers")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help="comma-separated subset of: %(default)s",
    )
    parser.add_argument("--sizes", dest="sizes_given", help="role counts for once, e.g. 1000,10000")
    parser.add_argument(
        "--scale-roles",
        dest="scale_roles_given",
        type=int,
        help="roles for the scale scenario (10000)",
    )
    opts = parser.parse_args(argv)
    opts.scenarios = [x for x in opts.scenarios.split(",") if x]
    if unknown := set(opts.scenarios) - set(SCENARIOS):
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    if opts.quick:
        opts.sizes, opts.repeats, opts.peer_roles, opts.daemon_roles = [10, 100], 1, 2, 100
        opts.idle_seconds, opts.hour_seconds = 5.0, 10.0
        opts.writer_n, opts.writer_k, opts.writer_repeats = 1000, 10, 3
        opts.status_n, opts.check_m = 1000, 100
        opts.lifetime = opts.lifetime or 10.0
        opts.scale_roles, opts.scale_lifetime = 300, 20.0
        opts.scale_idle_seconds, opts.scale_settle_seconds = 5.0, 1.0
    else:
        opts.sizes, opts.repeats, opts.peer_roles, opts.daemon_roles = (
            [10, 1000, 10000],
            3,
            10,
            1000,
        )
        opts.idle_seconds, opts.hour_seconds = 60.0, 60.0
        opts.writer_n, opts.writer_k, opts.writer_repeats = 10000, 100, 9
        opts.status_n, opts.check_m = 10000, 1000
        opts.lifetime = opts.lifetime or 60.0
        opts.scale_roles, opts.scale_lifetime = 10000, 120.0
        opts.scale_idle_seconds, opts.scale_settle_seconds = 60.0, 5.0
    if opts.sizes_given:
        opts.sizes = [int(x) for x in opts.sizes_given.split(",")]
    if opts.scale_roles_given:
        opts.scale_roles = opts.scale_roles_given
    return opts


def run_scenarios(opts: argparse.Namespace, workdir: Path) -> tuple[list[Row], list[str]]:
    """The rows of every scenario asked for, and the notes on those skipped."""
    rows: list[Row] = []
    skipped: list[str] = []
    if "once" in opts.scenarios:
        rows += scenario_once(opts, workdir)
    if "peers" not in opts.scenarios:
        pass
    elif opts.no_peers:
        skipped.append("aws-cli and awsume loops skipped: --no-peers")
    else:
        peer_rows, skipped = scenario_peers(opts, workdir)
        rows += peer_rows
    if "idle" in opts.scenarios:
        rows.append(scenario_idle(opts, workdir))
    if "hour" in opts.scenarios:
        rows.append(scenario_hour(opts, workdir))
    if "writer" in opts.scenarios:
        rows += scenario_writer(opts, workdir)
    if "commands" in opts.scenarios:
        rows += scenario_commands(opts, workdir)
    if "scale" in opts.scenarios:
        rows += scenario_scale(opts, workdir)
    return rows, skipped


def main(argv: Sequence[str] | None = None) -> int:
    """Run every scenario, print the table, write the results."""
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = parse_args(argv)
    info = machine()
    info["loadavg_start"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    workdir = Path(tempfile.mkdtemp(prefix="credrefresh-bench-"))
    (workdir / "home").mkdir()
    try:
        rows, skipped = run_scenarios(opts, workdir)
    finally:
        if opts.keep:
            say(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    info["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    report = {
        "command": command(argv),
        "machine": info,
        "options": {k: v for k, v in vars(opts).items() if not k.startswith("_")},
        "rows": [asdict(r) for r in rows],
        "targets": targets(rows),
        "skipped": skipped,
    }
    text = markdown(report, rows)
    sys.stdout.write(text)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "latest.json").write_text(json.dumps(report, indent=1) + "\n")
    if not opts.quick and set(opts.scenarios) == set(SCENARIOS):
        results = HERE / "RESULTS.md"
        results.write_text(text.rstrip("\n") + "\n" + notes_of(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
