"""Benchmark ``credrefresh audit`` on a month of a 1000-role daemon's log (about 1.5 million lines).

    .venv/bin/python tests/perf/audit_bench.py            # the month (about 1.5 million lines)
    .venv/bin/python tests/perf/audit_bench.py --quick    # a day, to smoke-test the script

The log is synthetic but shaped like ``run``'s (the same events and fields, in time order): every
role refreshed every 33 minutes (one-hour credentials, refreshed at 50-60 % of their life), one
``credentials_file.written`` per 10 refreshes (coalesced writes), and every third day an outage
of one role in fifty through the noon refreshes (AccessDenied every five minutes, then
``role.expired``, until the next round succeeds).
Each command runs as its own process, output to /dev/null; wall time is from spawn to exit and
CPU seconds and peak RSS come from ``os.wait4`` on that process. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROLES = 1000
PERIOD = timedelta(minutes=33)
LIFETIME = timedelta(hours=1)
START = datetime(2026, 11, 1, tzinfo=UTC)
ACCOUNT = "123456789012"
TIMEOUT = 600.0


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def short(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def key(n: int) -> str:
    return f"ASIA{n:016d}"


def line(event: str, level: str, moment: datetime, **fields: object) -> str:
    # structlog's JSONRenderer puts the call's fields first, then event, level and timestamp.
    fields.update(event=event, level=level, timestamp=stamp(moment))
    return json.dumps(fields) + "\n"


def month(days: int) -> Iterator[str]:
    """The log's lines, in time order (an outage's later events wait in a heap until due)."""
    end = START + timedelta(days=days)
    offsets = [timedelta(seconds=PERIOD.total_seconds() * i / ROLES) for i in range(ROLES)]
    yield line("daemon.started", "info", START, pid=1234, roles=ROLES, max_concurrency=16)
    later: list[tuple[datetime, int, str]] = []
    order = itertools.count()
    serial = 0
    base = START
    while base < end:
        day = (base - START).days
        outage = day % 3 == 2 and base.hour == 12
        for i, offset in enumerate(offsets):
            at = base + offset
            while later and later[0][0] <= at:
                yield heapq.heappop(later)[2]
            profile = f"role-{i:04d}"
            arn = f"arn:aws:iam::{ACCOUNT}:role/{profile}"
            if outage and i % 50 == 0:
                for due, text in outage_events(profile, arn, at):
                    heapq.heappush(later, (due, next(order), text))
                continue
            serial += 1
            yield line(
                "role.refreshed",
                "info",
                at,
                profile=profile,
                role_arn=arn,
                session_name=f"credrefresh-{profile}",
                assumed_role_arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/{profile}/credrefresh-{profile}",
                access_key_id=key(serial),
                expiration=short(at + LIFETIME),
                duration_ms=48.7,
                next_refresh_at=short(at + PERIOD),
            )
            if serial % 10 == 0:
                yield line(
                    "credentials_file.written",
                    "info",
                    at,
                    path="/var/lib/credrefresh/.aws/credentials",
                    profiles=10,
                    removed=0,
                    conflicts=0,
                    changed=True,
                    bytes=812345,
                    duration_ms=3.1,
                )
        base += PERIOD
    while later:
        yield heapq.heappop(later)[2]


def outage_events(profile: str, arn: str, at: datetime) -> Iterator[tuple[datetime, str]]:
    """AccessDenied every five minutes from ``at``, then ``role.expired`` when the credentials
    refreshed one period earlier run out."""
    for attempt in range(1, 7):
        failed = at + timedelta(minutes=5 * attempt)
        yield (
            failed,
            line(
                "role.refresh_failed",
                "error",
                failed,
                profile=profile,
                role_arn=arn,
                session_name=f"credrefresh-{profile}",
                error_code="AccessDenied",
                error="not authorized to perform: sts:AssumeRole",
                transient=False,
                attempt=attempt,
                retry_at=short(failed + timedelta(minutes=5)),
            ),
        )
    expired = at - PERIOD + LIFETIME
    yield (
        expired + timedelta(seconds=1),
        line(
            "role.expired",
            "error",
            expired + timedelta(seconds=1),
            profile=profile,
            role_arn=arn,
            expiration=short(expired),
            last_error_code="AccessDenied",
        ),
    )


def measure(
    argv: Sequence[str], work: Path, stdin: Path | None = None
) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (MB) of one command, its output discarded."""
    err_path = work / "stderr"
    with (
        open(os.devnull, "wb") as sink,
        open(stdin or os.devnull, "rb") as source,
        err_path.open("wb") as err,
    ):
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=source, stdout=sink, stderr=err)
        killer = threading.Timer(TIMEOUT, proc.kill)  # bounds the wait below
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    message = err_path.read_text().strip()
    if code not in {0, 1}:
        raise RuntimeError(f"{argv} exited {code}: {message}")
    print(f"  {' '.join(argv[1:3])}: {message.splitlines()[-1]}", file=sys.stderr)
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one day instead of thirty")
    parser.add_argument("--days", type=int, default=None)
    args = parser.parse_args()
    days = args.days or (1 if args.quick else 30)
    exe = str(Path(sys.executable).with_name("credrefresh"))
    with tempfile.TemporaryDirectory(prefix="audit-bench-") as work:
        log = Path(work) / "credrefresh.log"
        started = time.monotonic()
        lines = 0
        with log.open("w") as out:
            for text in month(days):
                out.write(text)
                lines += 1
        size = log.stat().st_size / 1e6
        print(
            f"generated {lines} lines ({size:.0f} MB) in {time.monotonic() - started:.1f} s",
            file=sys.stderr,
        )
        probe = key(lines // 2)
        runs = [
            ("audit sessions --json FILE", [exe, "audit", "sessions", "--json", str(log)], None),
            ("audit sessions --json < FILE", [exe, "audit", "sessions", "--json"], log),
            ("audit sessions (table)", [exe, "audit", "sessions", str(log)], None),
            ("audit gaps FILE", [exe, "audit", "gaps", str(log)], None),
            ("audit key KEY FILE", [exe, "audit", "key", probe, str(log)], None),
        ]
        rows = []
        for label, argv, stdin in runs:
            wall, cpu, rss = measure(argv, Path(work), stdin)
            rows.append((label, wall, cpu, rss))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"\n{lines} lines ({size:.0f} MB), {days} days of {ROLES} roles; "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average after: {load}\n"
    )
    print("| command | wall s | CPU s | lines/s | peak RSS MB |")
    print("|---|---:|---:|---:|---:|")
    for label, wall, cpu, rss in rows:
        print(f"| `{label}` | {wall:.1f} | {cpu:.1f} | {lines / wall:,.0f} | {rss:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
