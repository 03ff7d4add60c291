"""Run the proof-of-safety suite at its full counts and print the figures it measured.

    .venv/bin/python tests/soak/run.py               # full counts (about 8 minutes on 2 cores)
    .venv/bin/python tests/soak/run.py --scale 0.1   # the CI counts, with the figures printed
    .venv/bin/python tests/soak/run.py --aws         # the real `aws configure set` (7 more minutes)

The same as ``CREDREFRESH_SOAK_SCALE=full .venv/bin/pytest tests/test_safety_*.py``, plus a
summary of the figures each test records through ``CREDREFRESH_SOAK_REPORT``: kills survived,
writes without a lost update, faults survived, secret hits, and how many updates the AWS CLI
(which takes no lock) loses beside the daemon. Exits with pytest's status.

Full counts: 200 SIGKILLs (120 of ``once``, 80 of ``run``); 1000 writes by lock-taking editors
beside ``once`` and ``run``; 1000 AWS-CLI-style updates per timing (300 with ``--aws``, which
starts the real CLI once per update); fault phases repeated 10 to 20 times.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FILES = [
    "tests/test_safety_crash.py",
    "tests/test_safety_concurrency.py",
    "tests/test_safety_faults.py",
    "tests/test_safety_secrets.py",
]


def summary(figures: list[dict[str, object]]) -> str:
    """One line per test, its figures as ``key=value``."""
    lines = []
    for entry in figures:
        test = entry.pop("test")
        entry.pop("per_scene", None)
        entry.pop("scale", None)
        cells = ", ".join(f"{key}={json.dumps(value)}" for key, value in sorted(entry.items()))
        lines.append(f"{test}: {cells}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run pytest on the safety files with the scale set; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="full", help="'full', 'ci' or a fraction (full)")
    parser.add_argument(
        "--aws", action="store_true", help="use the real `aws` command for the AWS CLI test"
    )
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "figures.jsonl"
        env = {
            **os.environ,
            "CREDREFRESH_SOAK_SCALE": args.scale,
            "CREDREFRESH_SOAK_REPORT": str(report),
        }
        if args.aws:
            env["CREDREFRESH_SOAK_AWS"] = "1"
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--durations=0",
            *FILES,
            *args.pytest_args,
        ]
        status = subprocess.run(command, cwd=ROOT, env=env, check=False).returncode
        figures = (
            [json.loads(line) for line in report.read_text().splitlines()]
            if report.exists()
            else []
        )
    sys.stdout.write("\n== figures\n" + summary(figures) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
