"""Restart and crash-loop cost: AssumeRole calls made by graceful restarts and ``kill -9`` loops
of ``credrefresh run`` while the credentials file is fresh (fake STS on 127.0.0.1).

    python tests/perf/restarts.py --roles 200 --cycles 20

Set ``CREDREFRESH_PYTHONPATH`` to a checkout's source root to measure another version.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import FakeSts, NotifySocket, source_env, write_config

READY_TIMEOUT = 120.0


def start(config: Path, work: Path, name: str) -> tuple[subprocess.Popen[bytes], NotifySocket]:
    """``credrefresh run`` until READY=1."""
    notify = NotifySocket(work / f"{name}.sock")
    extra = {"NOTIFY_SOCKET": notify.path}
    if os.environ.get("CREDREFRESH_PYTHONPATH"):
        extra["PYTHONPATH"] = os.environ["CREDREFRESH_PYTHONPATH"]
    argv = [sys.executable, "-m", "credrefresh", "run", "--config", str(config)]
    with (work / f"{name}.log").open("wb") as out:
        proc = subprocess.Popen(argv, env=source_env(work, **extra), stdout=out, stderr=out)
    notify.wait_ready(proc, READY_TIMEOUT)
    return proc, notify


def main() -> None:
    """Report the calls per start, graceful and after ``kill -9``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--roles", type=int, default=200)
    parser.add_argument("--cycles", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="credrefresh-restarts-") as name:
        work = Path(name)
        with FakeSts(work, latency=0.0, error_rate=0.0, lifetime=3600) as sts:
            config = write_config(
                work / "c.toml", work / "credentials", sts.url, args.roles, concurrency=64
            )
            proc, notify = start(config, work, "first")
            first = sts.assume_role_calls()
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            notify.close()
            began = time.monotonic()
            proc, notify = start(config, work, "graceful")
            graceful = sts.assume_role_calls() - first
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            notify.close()
            before = sts.assume_role_calls()
            for cycle in range(args.cycles):
                proc, notify = start(config, work, f"kill{cycle}")
                proc.kill()
                proc.wait(30)
                notify.close()
            crash = sts.assume_role_calls() - before
            took = time.monotonic() - began
    print(f"roles {args.roles}: first start {first} AssumeRole calls")
    print(f"graceful restart: {graceful} calls")
    print(f"{args.cycles} start/kill -9 cycles: {crash} calls ({took:.1f} s in all)")


if __name__ == "__main__":
    main()
