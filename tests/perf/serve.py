"""Benchmark the credentials endpoint: CPU per answer, and latency under load while roles refresh.

    .venv/bin/python tests/perf/serve.py            # both phases (about 2 minutes)
    .venv/bin/python tests/perf/serve.py --quick    # smaller numbers, to smoke-test the harness

Phase ``startup``: wall time of ``credrefresh credential-process`` reading the file, beside
``python -c pass`` and ``python -c "import botocore.session"``.

Phase ``cost``: ``credrefresh run`` with 10 one-hour roles (nothing refreshes), one keep-alive
client asks for credentials ``--requests`` times in a row; the daemon's CPU (utime + stime from
``/proc/<pid>/stat``) over those requests, divided by their number, is the CPU per answer.

Phase ``load``: ``credrefresh run`` with ``--roles`` roles whose credentials live ``--lifetime``
seconds (so they refresh all the time), first ``--baseline`` seconds with no client, then
``--clients`` concurrent keep-alive clients asking for random profiles for ``--seconds``, each
at most once per ``--interval`` seconds (0: as fast as it can); the same run without clients is
the comparison. Reports
answer latency (p50, p99, max), errors, and the refresher's schedule in both windows: refreshes
written, and lateness (when ``role.refreshed`` was logged minus the ``next_refresh_at`` of the
previous refresh of that role; the write delay, 1 s, is part of it), and ``role.expired`` count.

Everything listens on 127.0.0.1. Writes ``tests/perf/SERVE.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench import FakeSts, stop_process  # noqa: E402

REPO = HERE.parents[1]
TICKS = os.sysconf("SC_CLK_TCK")
CREDRREFRESH = str(Path(sys.executable).with_name("credrefresh"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


class Daemon:
    """``credrefresh run`` with ``roles`` roles and a ``[serve]`` table, its log collected."""

    def __init__(self, workdir: Path, sts_url: str, roles: int) -> None:
        self.port = free_port()
        config = workdir / "config.toml"
        lines = [
            f'credentials_file = "{workdir / "credentials"}"',
            f'state_file = "{workdir / "state.json"}"',
            'region = "us-east-1"',
            f'sts_endpoint_url = "{sts_url}"',
            "max_concurrency = 64",
            "[serve]",
            f'address = "127.0.0.1:{self.port}"',
        ]
        for i in range(roles):
            lines += [
                "[[roles]]",
                f'profile = "p{i}"',
                f'role_arn = "arn:aws:iam::123456789012:role/r{i}"',
            ]
        config.write_text("\n".join(lines) + "\n")
        self.token = ""
        self.token_file = workdir / "serve-token"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            HOME=str(workdir),
            AWS_ACCESS_KEY_ID="AKIASOURCEEXAMPLE000",
            AWS_SECRET_ACCESS_KEY="source-secret-not-real",
            AWS_EC2_METADATA_DISABLED="true",
            STATE_DIRECTORY=str(workdir),
        )
        self.proc = subprocess.Popen(
            [CREDRREFRESH, "run", "--config", str(config), "--log-format", "json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.events: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        if not self.ready.wait(180):
            self.stop()
            raise RuntimeError("the daemon did not become ready")
        self.token = self.token_file.read_text()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = json.loads(line)
            self.events.append(event)
            if event["event"] == "daemon.ready":
                self.ready.set()

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        stop_process(self.proc, 30.0)
        self.reader.join(10)


async def client(
    port: int,
    token: str,
    profiles: list[str],
    deadline: float,
    rng: random.Random,
    limit: int,
    interval: float = 0.0,
) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    headers = {"Authorization": token}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        while time.monotonic() < deadline and len(latencies) + errors < limit:
            url = f"http://127.0.0.1:{port}/v1/credentials/{rng.choice(profiles)}"
            start = time.perf_counter()
            try:
                async with session.get(url, headers=headers) as answer:
                    await answer.read()
                    ok = answer.status == 200
            except aiohttp.ClientError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - start)
            else:
                errors += 1
            if interval:
                await asyncio.sleep(max(0.0, interval - (time.perf_counter() - start)))
    return latencies, errors


async def load(
    daemon: Daemon,
    clients: int,
    seconds: float,
    profiles: list[str],
    limit: int = 10**9,
    interval: float = 0.0,
) -> tuple[list[float], int]:
    deadline = time.monotonic() + seconds
    results = await asyncio.gather(
        *(
            client(daemon.port, daemon.token, profiles, deadline, random.Random(i), limit, interval)  # noqa: S311
            for i in range(clients)
        )
    )
    latencies = [x for r in results for x in r[0]]
    return latencies, sum(r[1] for r in results)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def schedule(events: list[dict[str, Any]], start: float, end: float) -> dict[str, float]:
    """Refreshes written in [start, end) and how late they were against their schedule."""
    due: dict[str, float] = {}
    late: list[float] = []
    written = 0
    expired = 0
    for event in events:
        at = parse_time(event["timestamp"])
        if event["event"] == "role.expired" and start <= at < end:
            expired += 1
        if event["event"] != "role.refreshed":
            continue
        profile = event["profile"]
        if start <= at < end:
            written += 1
            if profile in due:
                late.append(at - due[profile])
        if event.get("next_refresh_at"):
            due[profile] = parse_time(event["next_refresh_at"])
    return {
        "refreshes": written,
        "late_p50_s": statistics.median(late) if late else float("nan"),
        "late_p99_s": percentile(late, 0.99),
        "late_max_s": max(late) if late else float("nan"),
        "expired": expired,
    }


def phase_cost(workdir: Path, requests: int) -> dict[str, float]:
    with FakeSts(workdir, latency=0.0, error_rate=0.0) as sts:
        daemon = Daemon(workdir, sts.url, 10)
        try:
            profiles = [f"p{i}" for i in range(10)]
            asyncio.run(load(daemon, 1, 5, profiles, limit=200))  # warm-up
            before = daemon.cpu()
            started = time.perf_counter()
            latencies, errors = asyncio.run(load(daemon, 1, 600, profiles, limit=requests))
            wall = time.perf_counter() - started
            used = daemon.cpu() - before
        finally:
            daemon.stop()
    return {
        "requests": len(latencies),
        "errors": errors,
        "cpu_ms_per_answer": 1000 * used / max(len(latencies), 1),
        "latency_p50_ms": 1000 * statistics.median(latencies),
        "latency_p99_ms": 1000 * percentile(latencies, 0.99),
        "answers_per_s": len(latencies) / wall,
    }


def window(workdir: Path, clients: int, options: argparse.Namespace) -> dict[str, Any]:
    """One daemon; after ``options.baseline`` s, ``clients`` clients (or none) for a window."""
    with FakeSts(workdir, latency=0.05, error_rate=0.0, lifetime=options.lifetime) as sts:
        daemon = Daemon(workdir, sts.url, options.roles)
        try:
            profiles = [f"p{i}" for i in range(options.roles)]
            time.sleep(options.baseline)  # into the first wave of refreshes
            start, cpu0 = time.time(), daemon.cpu()
            if clients:
                latencies, errors = asyncio.run(
                    load(daemon, clients, options.seconds, profiles, interval=options.interval)
                )
            else:
                latencies, errors = [], 0
                time.sleep(options.seconds)
            end, cpu1 = time.time(), daemon.cpu()
        finally:
            daemon.stop()
    return {
        "answers": len(latencies),
        "errors": errors,
        "answers_per_s": len(latencies) / options.seconds,
        "latency_p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
        "latency_p99_ms": 1000 * percentile(latencies, 0.99),
        "latency_max_ms": 1000 * max(latencies) if latencies else float("nan"),
        "daemon_cpu_pct": 100 * (cpu1 - cpu0) / (end - start),
        "schedule": schedule(daemon.events, start, end),
        "loadavg": os.getloadavg()[0],
    }


def phase_startup(workdir: Path, runs: int) -> dict[str, float]:
    """Wall time of ``credential-process`` (from the file), against Python and botocore alone."""
    expires = datetime.fromtimestamp(time.time() + 3600, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    (workdir / "credentials").write_text(
        "[a]\ncredrefresh_managed = true\naws_access_key_id = ASIAEXAMPLE\n"
        f"aws_secret_access_key = s\naws_session_token = t\nx_security_token_expires = {expires}\n"
    )
    config = workdir / "c.toml"
    config.write_text(
        f'credentials_file = "{workdir / "credentials"}"\nstate_file = "{workdir / "s.json"}"\n'
        '[[roles]]\nprofile = "a"\nrole_arn = "arn:aws:iam::123456789012:role/a"\n'
    )
    commands = {
        "python_pass_ms": [sys.executable, "-c", "pass"],
        "credential_process_ms": [CREDRREFRESH, "credential-process", "-c", str(config), "-p", "a"],
        "import_botocore_ms": [sys.executable, "-c", "import botocore.session"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):  # interleaved, so a burst of other work hits all three alike
        for name, argv in commands.items():
            start = time.perf_counter()
            subprocess.run(argv, capture_output=True, check=True)
            times[name].append(1000 * (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in times.items()}


def phase_load(workdir: Path, options: argparse.Namespace) -> dict[str, Any]:
    """The same window twice: the refresher alone, then with the clients."""
    alone, loaded = workdir / "alone", workdir / "loaded"
    alone.mkdir()
    loaded.mkdir()
    return {
        "alone": window(alone, 0, options),
        "loaded": window(loaded, options.clients, options),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--roles", type=int, default=1000)
    parser.add_argument("--lifetime", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--baseline", type=float, default=20.0)
    parser.add_argument(
        "--interval", type=float, default=0.5, help="seconds between one client's requests"
    )
    args = parser.parse_args()
    if args.quick:
        args.requests, args.roles, args.clients, args.seconds, args.baseline = 300, 50, 20, 3, 2
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="credrefresh-serve-") as tmp:
        cost_dir, load_dir, start_dir = Path(tmp, "cost"), Path(tmp, "load"), Path(tmp, "start")
        cost_dir.mkdir()
        load_dir.mkdir()
        start_dir.mkdir()
        startup = phase_startup(start_dir, 5 if args.quick else 20)
        cost = phase_cost(cost_dir, args.requests)
        loaded = phase_load(load_dir, args)
    result = {"args": vars(args), "startup": startup, "cost": cost, "load": loaded}
    print(json.dumps(result, indent=2))
    if not args.quick:
        write_markdown(result)
    return 0


def row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def write_markdown(result: dict[str, Any]) -> None:
    cost, loaded, args = result["cost"], result["load"], result["args"]
    base, under = loaded["alone"], loaded["loaded"]
    cpu = platform.processor() or platform.machine()
    lines = [
        "# Credentials endpoint benchmark",
        "",
        f"Arguments: `{json.dumps(args)}`.",
        "",
        (
            f"`.venv/bin/python tests/perf/serve.py` on {os.cpu_count()} CPUs ({cpu}), Python "
            f"{platform.python_version()}, {datetime.now(UTC):%Y-%m-%d}, load average "
            f"{os.getloadavg()[0]:.2f} at the end (the machine is shared: other work competes)."
        ),
        "",
        "## credential-process start-up (median wall time of 20 runs, interleaved)",
        "",
        row("`python -c pass`", "`credrefresh credential-process`", "`import botocore.session`"),
        row(*["---"] * 3),
        row(*(f"{result['startup'][k]:.0f} ms" for k in result["startup"])),
        "",
        "## CPU per answer (10 roles, nothing refreshing, one keep-alive client)",
        "",
        row("answers", "errors", "daemon CPU per answer", "p50", "p99", "answers/s"),
        row(*["---"] * 6),
        row(
            cost["requests"],
            cost["errors"],
            f"{cost['cpu_ms_per_answer']:.3f} ms",
            f"{cost['latency_p50_ms']:.2f} ms",
            f"{cost['latency_p99_ms']:.2f} ms",
            f"{cost['answers_per_s']:.0f}",
        ),
        "",
        (
            f"## {args['clients']} concurrent clients (one request per {args['interval']:g} s "
            f"each) for {args['seconds']:g} s while {args['roles']} roles refresh"
        ),
        "",
        (
            f"Credentials live {args['lifetime']:g} s (each role refreshes after 50-60 % of "
            "that; 50 ms STS latency); the clients are aiohttp sessions in the harness process, "
            "on the same CPUs."
        ),
        "",
        row("answers", "errors", "answers/s", "p50", "p99", "max"),
        row(*["---"] * 6),
        row(
            under["answers"],
            under["errors"],
            f"{under['answers_per_s']:.0f}",
            f"{under['latency_p50_ms']:.1f} ms",
            f"{under['latency_p99_ms']:.1f} ms",
            f"{under['latency_max_ms']:.1f} ms",
        ),
        "",
        "The refresher's schedule over the same window of two runs, without and with the clients:",
        "",
        row(
            "run",
            "refreshes written",
            "late p50",
            "late p99",
            "late max",
            "role.expired",
            "daemon CPU",
            "load average",
        ),
        row(*["---"] * 8),
    ]
    for name, run in (("no clients", base), (f"{args['clients']} clients", under)):
        sched = run["schedule"]
        lines.append(
            row(
                name,
                sched["refreshes"],
                f"{sched['late_p50_s']:.2f} s",
                f"{sched['late_p99_s']:.2f} s",
                f"{sched['late_max_s']:.2f} s",
                sched["expired"],
                f"{run['daemon_cpu_pct']:.0f} % of a core",
                f"{run['loadavg']:.1f}",
            )
        )
    lines += [
        "",
        '"Late" is when `role.refreshed` was logged (the credentials are in the file) minus the',
        "`next_refresh_at` the previous refresh of that role announced; it includes the STS call",
        "and the write delay (up to 1 s).",
    ]
    (HERE / "SERVE.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
