"""``credrefresh run`` in its steady state at scale: refreshes spread out, as hours after a start.

    .venv/bin/python tests/perf/steady.py [--roles 10000] [--spread 1800] [--window 120]

The compressed-hour and wave scenarios of ``bench.py`` start on an empty file, so every role
is issued at once and the refreshes come in one wave: each write then carries hundreds of
profiles and the cost of rewriting the file is shared among them. A daemon that has run for a
few hours sees the opposite: with one-hour credentials, 10,000 roles refresh about five times a
second, and each write pays for the whole 9.5 MB file: written every ``write_delay`` it would
carry a handful of profiles (``writer.spacing`` now spaces it by its size: about fifty).

This script builds that state without waiting hours: it writes every profile into the file
first (``credfile.update_profiles`` in batches), as credrefresh would have, with the moments
they were refreshed spread over ``--spread`` seconds, so that the daemon, which schedules warm
profiles from what the file records, has their refreshes due uniformly over the next
``--spread`` seconds (plus the policy's jitter). It then starts ``credrefresh run`` (no STS call
at start-up: every profile is warm), lets it settle, and watches ``--window`` seconds: CPU per
refresh (every file and state-file write included), writes, profiles per write, peak RSS.
Fake STS on 127.0.0.1 as for ``bench.py``; nothing here is a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench  # noqa: E402 - this directory's harness

from credrefresh.config import load_config  # noqa: E402
from credrefresh.credfile import update_profiles  # noqa: E402
from credrefresh.model import session_params  # noqa: E402

LIFETIME = 3600.0  # one-hour credentials, from the fake STS too
LEAD = 30.0  # the first refreshes are due this long after the file is written
BATCHES = 100


def populate(config_path: Path, spread: float) -> float:
    """Every configured profile in the file, refreshed at moments spread over ``spread`` s.

    Returns the ``time.time()`` from which refreshes come at a steady rate: a profile is due
    between 50 % and 60 % of its lifetime (the default jitter), so the rate ramps up over the
    first 10 % of a lifetime (360 s) and stays level until ``spread`` seconds after ``LEAD``.
    """
    config = load_config(str(config_path))
    now = datetime.now(UTC)
    policy = config.refresh
    per = -(-len(config.roles) // BATCHES)
    for b in range(BATCHES):
        # Due at refresh_at (0.5) to refresh_at + jitter (0.6) of the lifetime after this.
        issued = now - timedelta(seconds=LIFETIME * 0.5 - LEAD - spread * b / BATCHES)
        updates = {}
        for role in config.roles[b * per : (b + 1) * per]:
            fake = bench.fake_issued(role.profile, issued)
            updates[role.profile] = replace(
                fake,
                session_name=role.session_name,
                params=session_params(role),
                credentials=replace(
                    fake.credentials, expiration=issued + timedelta(seconds=LIFETIME)
                ),
            )
        if updates:
            update_profiles(config.credentials_file, updates, now=issued)
    return now.timestamp() + LEAD + LIFETIME * policy.jitter


def main() -> int:
    """Populate, run, watch, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--roles", type=int, default=10000)
    parser.add_argument("--spread", type=float, default=1800.0, help="seconds")
    parser.add_argument(
        "--settle", type=float, default=30.0, help="at least this long after READY=1"
    )
    parser.add_argument("--window", type=float, default=120.0, help="seconds watched")
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument(
        "--py-spy",
        metavar="OUT",
        help="also record the window with this py-spy (given as PROG:OUT)",
    )
    opts = parser.parse_args()
    if opts.spread < LIFETIME * 0.1 + opts.window + 120:
        parser.error("--spread must leave a level stretch: at least 480 s more than --window")
    work = Path(tempfile.mkdtemp(prefix="credrefresh-steady-"))
    try:
        (work / "home").mkdir()
        with bench.FakeSts(work, latency=opts.latency, error_rate=0, lifetime=LIFETIME) as sts:
            config = bench.write_config(
                work / "steady.toml", work / "credentials", sts.url, opts.roles, 64
            )
            started = time.perf_counter()
            level = populate(config, opts.spread)
            size = (work / "credentials").stat().st_size
            print(f"file written: {size / 1e6:.1f} MB in {time.perf_counter() - started:.1f} s")
            calls = sts.assume_role_calls()
            ready: list[bench.Ready] = []
            with bench.daemon(work, config, "steady", ready) as (proc, out):
                at_ready = sts.assume_role_calls() - calls
                # Until the rate is level (the jitter's ramp), and at least --settle.
                bench.measure_window(proc, max(opts.settle, level - time.time()))
                spy = None
                if opts.py_spy:
                    prog, _, dest = opts.py_spy.partition(":")
                    argv = [prog, "record", "-p", str(proc.pid), "-d", str(int(opts.window))]
                    argv += ["--threads", "-f", "speedscope", "-o", dest, "-r", "50"]
                    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
                window = bench.measure_window(proc, opts.window)
                if spy is not None:
                    spy.wait(timeout=60)
            log = bench.events(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    row = bench.wave_row("steady state", opts.roles, window, log)
    writes = bench.tally(log, window).writes
    carried = [int(e.get("profiles") or 0) for e in writes]
    seconds = window.end - window.start
    print(
        f"READY=1 after {ready[0].wall:.1f} s ({at_ready} STS calls before it); "
        f"window {seconds:.0f} s"
    )
    print(
        f"{row.extra['refreshed']} refreshes ({row.extra['refreshed'] / seconds:.1f}/s), "
        f"{row.extra['failed']} failed; {len(writes)} writes carrying "
        f"{statistics.median(carried) if carried else 0:g} profiles (median)"
    )
    cpu = row.cpu_s or 0.0
    per = "n/a" if row.cpu_ms_per_role is None else f"{row.cpu_ms_per_role:.2f} ms"
    print(f"CPU {cpu:.2f} s: {per} per refresh; {cpu / seconds * 100:.1f} % of one core")
    print(f"peak RSS (VmHWM) {row.extra.get('VmHWM', 0):.1f} MB; {row.notes}")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
