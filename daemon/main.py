"""Wiring: build the real parts (STS client, notifier, logger) and run ``once`` or ``run``."""

from __future__ import annotations

import anyio

from daemon.config import Config
from daemon.credfile import instance_lock
from daemon.engine import Daemon
from daemon.logs import get_logger
from daemon.refresh import once
from daemon.sts import AioStsClient
from daemon.systemd import Notifier, watchdog_interval

__all__ = ["run_daemon", "run_once"]


def run_once(config: Config) -> int:
    """``credrefresh once``: exit status 0, 1 or 74."""

    async def main() -> int:
        async with AioStsClient(config) as sts:
            return await once(config, sts, get_logger())

    return anyio.run(main, backend="asyncio")


def run_daemon(config: Config) -> int:
    """``credrefresh run``: returns 0 after a graceful stop."""
    notifier = Notifier()

    async def main() -> None:
        async with AioStsClient(config) as sts:
            daemon = Daemon(
                config,
                sts,
                log=get_logger(),
                notifier=notifier,
                watchdog=watchdog_interval(),
                observer=None,
            )
            await daemon.run()

    try:
        with instance_lock(config.credentials_file):
            anyio.run(main, backend="asyncio")
    finally:
        notifier.close()
    return 0
