"""How often botocore parses the credentials file to resolve the source, and what it costs.

    .venv/bin/python tests/perf/source_parses.py [--profiles 10000] [--roles 40] [--regions 4]

The production layout: the managed file is ``~/.aws/credentials`` (in a temporary HOME), holding
``--profiles`` managed profiles and the ``[source]`` profile the config names; the roles are
spread over ``--regions`` regions. One round of AssumeRole calls (in this process, against
``python -m support.fakests`` on 127.0.0.1) counts the calls of botocore's
``configloader.raw_config_parse`` and the time spent in them. Each botocore session parses the
file whole twice (its profile map, then the source's keys), so this is the cost of every
session credrefresh opens. Nothing is written outside the temporary directory, which is removed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench  # noqa: E402 - this directory's harness

REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-2", "us-west-2", "sa-east-1", "ca-central-1")


def main() -> int:
    """Write the files, run one round, print the count and the time."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiles", type=int, default=10000, help="profiles in the file")
    parser.add_argument("--roles", type=int, default=40, help="roles in the config")
    parser.add_argument("--regions", type=int, default=4, choices=range(1, len(REGIONS) + 1))
    opts = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="credrefresh-parses-"))
    try:
        home = work / "home"
        (home / ".aws").mkdir(parents=True)
        os.environ.clear()
        os.environ.update(HOME=str(home), AWS_EC2_METADATA_DISABLED="true", PATH=os.defpath)
        print(run(work, home, opts))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def run(work: Path, home: Path, opts: argparse.Namespace) -> str:
    """One round in the production layout; a line saying what botocore parsed."""
    import anyio  # noqa: PLC0415 - after HOME is set
    import botocore.configloader  # noqa: PLC0415

    from credrefresh.config import load_config  # noqa: PLC0415
    from credrefresh.credtext import render  # noqa: PLC0415
    from credrefresh.oneshot import assume_all  # noqa: PLC0415
    from credrefresh.sts import AioStsClient  # noqa: PLC0415

    now = datetime.now(UTC)
    names = bench.profiles(opts.profiles)
    managed = render("", {p: bench.fake_issued(p, now) for p in names}, now=now)[0]
    credentials = home / ".aws" / "credentials"
    credentials.write_text(
        f"[source]\naws_access_key_id = {bench.SOURCE_KEY}\n"
        f"aws_secret_access_key = {bench.SOURCE_SECRET}\n\n{managed}"
    )
    parsed = {"calls": 0, "seconds": 0.0}
    original = botocore.configloader.raw_config_parse

    def counted(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            parsed["calls"] += 1
            parsed["seconds"] += time.perf_counter() - started

    botocore.configloader.raw_config_parse = counted
    with bench.FakeSts(work, latency=0.0, error_rate=0.0) as sts:
        lines = [
            f"credentials_file = {str(credentials)!r}",
            f"state_file = {str(work / 'state.json')!r}",
            f"sts_endpoint_url = {sts.url!r}",
            "[source]",
            'profile = "source"',
        ]
        for index in range(opts.roles):
            name = f"role-{index:04d}"
            lines += [
                "[[roles]]",
                f'profile = "{name}"',
                f'role_arn = "{bench.role_arn(name)}"',
                f'region = "{REGIONS[index % opts.regions]}"',
            ]
        config_path = work / "config.toml"
        config_path.write_text("\n".join(lines) + "\n")
        config = load_config(str(config_path))

        async def round_() -> tuple[int, float]:
            async with AioStsClient(config) as client:
                cpu = time.process_time()
                results = await assume_all(client, config.roles, 64)
                cpu = time.process_time() - cpu
            return sum(1 for r in results.values() if hasattr(r, "credentials")), cpu

        ok, cpu = anyio.run(round_, backend="asyncio")
    return (
        f"{opts.roles} roles in {opts.regions} region(s), {ok} answered; credentials file of "
        f"{opts.profiles} profiles ({credentials.stat().st_size / 1e6:.1f} MB): "
        f"raw_config_parse x{parsed['calls']}, {parsed['seconds']:.2f} s; round CPU {cpu:.2f} s; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )


if __name__ == "__main__":
    sys.exit(main())
