"""Run one command and report its wall time, CPU seconds and peak RSS as one JSON line.

    python tests/perf/measure.py RESULT_FILE TIMEOUT -- ARGV...

bench.py runs every measured program through this small process. Linux carries a process's
peak RSS (``ru_maxrss``) across ``exec`` from the memory it had before: a program spawned
straight from the harness, after the writer scenario has grown the harness to 200 MB, would
report 200 MB whatever it used itself. Spawned from here, it starts from this script's few MB.
stdout and stderr are passed through; the child is killed (by pid) after TIMEOUT seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time


def kill(pid: int) -> None:
    """SIGKILL ``pid`` (our child), unless it is already gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def main(argv: list[str]) -> int:
    """Run ``argv[3:]``; write the measurement to ``argv[0]``; exit with the child's status."""
    result, timeout, separator, *command = argv
    if separator != "--" or not command:
        sys.stderr.write("usage: measure.py RESULT_FILE TIMEOUT -- ARGV...\n")
        return 2
    started = time.perf_counter()
    proc = subprocess.Popen(command)
    killer = threading.Timer(float(timeout), kill, (proc.pid,))
    killer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        killer.cancel()
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    with open(result, "w") as handle:
        json.dump(
            {
                "wall": wall,
                "cpu": usage.ru_utime + usage.ru_stime,
                "maxrss_kb": usage.ru_maxrss,
                "status": code,
            },
            handle,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
