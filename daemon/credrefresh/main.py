"""Wiring: build the real parts (STS client, notifier, logger) and run ``once`` or ``run``."""

from __future__ import annotations

from functools import partial

import anyio

from credrefresh.config import Config
from credrefresh.credfile import instance_lock
from credrefresh.engine import Daemon
from credrefresh.errors import CredrefreshError
from credrefresh.logs import get_logger
from credrefresh.refresh import once
from credrefresh.sts import AioStsClient
from credrefresh.systemd import Notifier, watchdog_interval

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
    log = get_logger()
    metrics = None
    if config.metrics_address is not None:
        from credrefresh.metrics import Metrics  # noqa: PLC0415 - only when metrics are on

        metrics = Metrics(*config.metrics_address, config_path=config.path)

    async def main() -> None:
        services = [] if metrics is None else [partial(metrics.serve, log)]
        async with AioStsClient(config) as sts:
            daemon = Daemon(
                config,
                sts,
                log=log,
                notifier=notifier,
                watchdog=watchdog_interval(),
                observer=metrics,
                services=services,
            )
            await daemon.run()

    try:
        with instance_lock(config.credentials_file):
            anyio.run(main, backend="asyncio")
    except BaseExceptionGroup as group:
        # A task group wraps what its tasks raise; our own errors carry the user's message.
        ours = group.subgroup(lambda exc: isinstance(exc, CredrefreshError))
        if ours is None:
            raise
        raise first_leaf(ours) from None
    finally:
        notifier.close()
    return 0


def first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first exception in a (nested) exception group."""
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf
