"""``credrefresh demo``: the real daemon against an embedded fake STS on 127.0.0.1.

No AWS account and no network: the embedded STS (``credrefresh.demosts``) speaks the real STS
protocol and issues short-lived, obviously fake credentials, so refreshes scroll by within
seconds. Everything lives in a temporary directory that is removed when the demo stops (Ctrl-C or
``--duration``).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import anyio

from credrefresh.config import load_config
from credrefresh.demosts import serve_demo
from credrefresh.logs import configure
from credrefresh.wiring import build_daemon

__all__ = ["demo"]

SOURCE = """\
# The demo's source profile: it calls the (fake) STS. Sections credrefresh does not manage,
# like this one and its comments, are never touched.
[demo-source]
aws_access_key_id = AKIADEMOSOURCE000000
aws_secret_access_key = demo-source-key-not-a-real-secret
"""


def demo_config(tmp: Path, endpoint: str, roles: int) -> str:
    """The TOML configuration of the demo."""
    lines = [
        f'credentials_file = "{tmp / "credentials"}"',
        'region = "us-east-1"',
        f'sts_endpoint_url = "{endpoint}"',
        f'state_file = "{tmp / "state.json"}"',
        'metrics_address = "127.0.0.1:0"',
        "[source]",
        'profile = "demo-source"',
        "[refresh]",
        "write_delay = 0.5",
        "backoff_max = 5.0",
    ]
    for index in range(roles):
        account = f"{111111111111 * (index % 9 + 1):012d}"
        lines += [
            "[[roles]]",
            f'profile = "demo-{index}"',
            f'role_arn = "arn:aws:iam::{account}:role/DemoRole{index}"',
            "duration_seconds = 900",
        ]
    return "\n".join(lines) + "\n"


def instructions(tmp: Path, sts_url: str, metrics_port: int, roles: int, lifetime: float) -> str:
    """What the demo prints for the person running it (to stderr)."""
    creds = tmp / "credentials"
    return f"""
credrefresh demo: no AWS account, no network. An embedded STS answers on {sts_url}
  credentials file: {creds}
  {roles} demo profiles (demo-0 ...), credentials live {lifetime:g} s and are refreshed at 50-60 %.
  Try, in another terminal, while this runs:
    AWS_SHARED_CREDENTIALS_FILE={creds} AWS_ENDPOINT_URL_STS={sts_url} \\
      AWS_DEFAULT_REGION=us-east-1 aws --profile demo-0 sts get-caller-identity
    credrefresh status --config {tmp / "config.toml"}
    curl -s http://127.0.0.1:{metrics_port}/metrics | grep '^credrefresh_'
  Stop with Ctrl-C; the temporary directory is then removed.
"""


def demo(
    *,
    duration: float | None,
    roles: int = 3,
    lifetime: float,
    log_format: str = "auto",
    log_level: str = "info",
) -> int:
    """Run the demo; return 0 after a clean stop."""
    configure(log_format, log_level)
    roles = max(1, min(roles, 50))
    lifetime = max(2.0, lifetime)
    with tempfile.TemporaryDirectory(prefix="credrefresh-demo-") as name:
        tmp = Path(name)
        anyio.run(_demo, tmp, duration, roles, lifetime, backend="asyncio")
    return 0


async def _demo(tmp: Path, duration: float | None, roles: int, lifetime: float) -> None:
    async with serve_demo(lifetime) as sts:
        (tmp / "credentials").write_text(SOURCE)
        (tmp / "credentials").chmod(0o600)
        config_path = tmp / "config.toml"
        config_path.write_text(demo_config(tmp, sts.url, roles))
        # The source profile lives in the demo's file; never read the user's own AWS files.
        os.environ["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp / "credentials")
        os.environ["AWS_CONFIG_FILE"] = str(tmp / "config")
        os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
        config = load_config(config_path)
        async with build_daemon(config) as daemon, anyio.create_task_group() as tg:
            await tg.start(daemon.run)
            port = getattr(daemon.observer, "port", 0)
            print(  # noqa: T201 - meant for the person running the demo
                instructions(tmp, sts.url, port, roles, lifetime), file=sys.stderr
            )
            if duration is not None:
                with anyio.move_on_after(duration):
                    await daemon.done.wait()
                if not daemon.done.is_set():
                    daemon.stop("duration elapsed")
