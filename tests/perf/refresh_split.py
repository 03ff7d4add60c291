"""Where the CPU of one refresh goes in ``run``: the STS call versus the daemon around it.

    .venv/bin/python tests/perf/refresh_split.py [--roles 10000] [--lifetime 60] [--rate 400]

Two measurements in this process, nothing timed as a test:

* **the call**: ``sts.AioStsClient.assume`` alone (botocore, aiobotocore, aiohttp and
  ``sts.py``) against ``python -m support.fakests`` on 127.0.0.1, ``--roles`` calls started
  at ``--rate`` per second (about the pace of the scale scenario's wave), after one warm-up
  call. CPU from ``time.process_time``.
* **the daemon**: ``engine.Daemon`` with every role, JSON logs to a file, and an STS double
  that answers after 50 ms with credentials living ``--lifetime`` seconds (no botocore). After
  READY=1, CPU is measured over 75 % of the lifetime, i.e. one refresh wave: the scheduler,
  the transitions, the events, the credentials-file writes (their worker thread included:
  ``process_time``) and the state file.

The two add up to about what the ``scale`` scenario measures per refresh in the wave.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import anyio  # noqa: E402
import bench  # noqa: E402 - this directory's harness

from credrefresh import logs  # noqa: E402
from credrefresh.config import Config, Role, load_config  # noqa: E402
from credrefresh.engine import Daemon  # noqa: E402
from credrefresh.model import Credentials, Issued  # noqa: E402
from credrefresh.sts import AioStsClient  # noqa: E402


class Double:
    """Answers every AssumeRole after ``latency`` seconds, as the fake STS would."""

    def __init__(self, lifetime: float, latency: float = 0.05) -> None:
        self.lifetime = lifetime
        self.latency = latency
        self.calls = 0

    async def assume(self, role: Role, source: Credentials | None = None) -> Issued:
        """Credentials after ``latency`` seconds."""
        now = datetime.now(UTC)
        await anyio.sleep(self.latency)
        self.calls += 1
        expiration = now + timedelta(seconds=self.lifetime)
        credentials = Credentials("ASIA" + "X" * 16, "s" * 40, "t" * 300, expiration)
        return Issued(
            role.profile, role.role_arn, role.session_name, role.role_arn, credentials, now, 50.0
        )

    async def reset(self, config: Config | None = None) -> None:
        """Nothing to drop."""


async def the_call(config: Config, rate: float) -> float:
    """CPU ms per ``AioStsClient.assume``, calls started at ``rate`` per second."""
    client = AioStsClient(config)
    await client.assume(config.roles[0])  # the session, the client and a connection
    roles = config.roles[1:]
    cpu, started = time.process_time(), time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i, role in enumerate(roles):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await anyio.sleep(delay)
            tg.start_soon(client.assume, role)
    spent = time.process_time() - cpu
    await client.reset()
    return spent / len(roles) * 1000


async def the_daemon(config: Config, lifetime: float, log: Path) -> tuple[float, int, int]:
    """CPU ms per refresh of the daemon around an STS double, refreshes, file writes."""
    with log.open("w") as stream:
        logs.configure("json", "info", stream)
        sts = Double(lifetime)
        daemon = Daemon(config, sts, log=logs.get_logger(), handle_signals=False)
        async with anyio.create_task_group() as tg:
            await tg.start(daemon.run)
            calls, writes, cpu = sts.calls, daemon.writes, time.process_time()
            await anyio.sleep(lifetime * 0.75)
            spent, calls = time.process_time() - cpu, sts.calls - calls
            writes = daemon.writes - writes
            daemon.stop()
    return spent / max(calls, 1) * 1000, calls, writes


def main() -> int:
    """Run both measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--roles", type=int, default=10000)
    parser.add_argument("--lifetime", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=400.0, help="calls per second")
    opts = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="credrefresh-split-"))
    try:
        (work / "home").mkdir()
        os.environ.update(bench.source_env(work / "home"))
        with bench.FakeSts(work, latency=0.05, error_rate=0, lifetime=3600) as fake:
            path = bench.write_config(work / "c.toml", work / "creds", fake.url, opts.roles, 64)
            config = load_config(str(path))
            call = anyio.run(the_call, config, opts.rate)
        (work / "creds").unlink(missing_ok=True)
        ours, calls, writes = anyio.run(the_daemon, config, opts.lifetime, work / "run.log")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"the call (AioStsClient.assume, {opts.rate:g}/s): {call:.2f} ms CPU per call")
    print(
        f"the daemon around it: {ours:.2f} ms CPU per refresh ({calls} refreshes, {writes} writes)"
    )
    print(f"load average at the end: {load}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
