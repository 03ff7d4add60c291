"""What the input checks cost: one AssumeRole answer, and loading a 10,000-role config.

    .venv/bin/python tests/perf/validation.py

Prints the median of several timed repetitions of each. Run it on the base commit too (with
``PYTHONPATH`` pointing at its ``daemon/``) to compare config loading; ``validate_answer`` is new.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import timeit
from datetime import UTC, datetime, timedelta
from pathlib import Path

from credrefresh.config import Role, load_config

ROLES = 10_000
REPEAT = 7


def config_text(credentials: Path) -> str:
    """A config with ``ROLES`` roles, each with an external id and a session name."""
    lines = [f'credentials_file = "{credentials}"', 'sts_endpoint_url = "https://sts.example.com"']
    for i in range(ROLES):
        lines += [
            "[[roles]]",
            f'profile = "account-{i:05d}-readonly"',
            f'role_arn = "arn:aws:iam::123456789012:role/team/ReadOnly{i}"',
            f'external_id = "tenant-{i:05d}-7f3a9c1e"',
        ]
    return "\n".join(lines) + "\n"


def bench_load() -> list[float]:
    """Seconds per ``load_config`` of the 10,000-role file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.toml"
        path.write_text(config_text(Path(tmp) / "credentials"))
        env = {"HOME": tmp}
        return timeit.repeat(lambda: load_config(path, environ=env), number=1, repeat=REPEAT)


def bench_answer() -> list[float] | None:
    """Microseconds per ``validate_answer`` of a typical answer (None before it existed)."""
    try:
        from credrefresh.answer import validate_answer  # noqa: PLC0415 - absent on old commits
    except ImportError:
        return None
    started = datetime.now(UTC)
    role = Role(profile="p", role_arn="arn:aws:iam::123456789012:role/r", session_name="sess")
    response = {
        "Credentials": {
            "AccessKeyId": "ASIAIOSFODNN7EXAMPLE",
            "SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "SessionToken": "FwoGZXIvYXdzEBYaD" + "A" * 800 + "==",
            "Expiration": started + timedelta(hours=1),
        },
        "AssumedRoleUser": {"Arn": "arn:aws:sts::123456789012:assumed-role/r/sess"},
    }
    number = 20_000
    times = timeit.repeat(
        lambda: validate_answer(role, response, started=started, duration_ms=1.0),
        number=number,
        repeat=REPEAT,
    )
    return [t / number * 1e6 for t in times]


def main() -> None:
    """Print the medians."""
    load = bench_load()
    print(f"load_config, {ROLES} roles: median {statistics.median(load) * 1000:.0f} ms")
    answer = bench_answer()
    if answer is not None:
        print(f"validate_answer: median {statistics.median(answer):.1f} us per answer")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
