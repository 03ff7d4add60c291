"""Wiring: build the real parts (STS client, notifier, metrics, logger).

For ``once``, ``run`` and ``demo``; ``build_daemon`` is the one place a daemon is put together.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import anyio

from credrefresh.config import Config, load_config
from credrefresh.engine import Daemon
from credrefresh.errors import ConfigError, CredrefreshError
from credrefresh.instance import instance_lock
from credrefresh.logs import get_logger
from credrefresh.oneshot import OnceOutcome, once
from credrefresh.seams import Service
from credrefresh.sts import AioStsClient
from credrefresh.stssession import obtain_session
from credrefresh.systemd import Notifier, watchdog_interval

__all__ = ["build_daemon", "run_daemon", "run_once"]


def run_once(config: Config, *, min_remaining: float | None = None) -> OnceOutcome:
    """``credrefresh once``."""

    async def main() -> OnceOutcome:
        async with AioStsClient(config) as sts:
            return await once(
                config,
                sts,
                get_logger(),
                min_remaining=min_remaining,
                session_obtain=obtain_session,
            )

    return anyio.run(main, backend="asyncio")


@contextlib.asynccontextmanager
async def build_daemon(
    config: Config,
    *,
    notifier: Notifier | None = None,
    log: Any = None,  # noqa: ANN401 - structlog's bound logger
    **options: Any,  # noqa: ANN401 - passed to Daemon
) -> AsyncIterator[Daemon]:
    """The daemon for ``config`` with its STS client, metrics (when configured) and notifier."""
    logger = log if log is not None else get_logger()
    services: list[Service] = []
    metrics = None
    if config.metrics_address is not None:
        from credrefresh.metrics import Metrics  # noqa: PLC0415 - only when metrics are on

        metrics = Metrics(*config.metrics_address, config_path=config.path)
        services.append(partial(metrics.serve, logger))
    endpoint = None
    if config.serve is not None:
        from credrefresh.serve import Endpoint  # noqa: PLC0415 - only when serving

        endpoint = Endpoint(config.serve, config.path)
        services.append(partial(endpoint.serve, logger))
    # A reload keeps status's parsed-config cache current, as the start did.
    options.setdefault("loader", partial(load_config, cache="update"))
    async with AioStsClient(config) as sts:
        daemon = Daemon(
            config,
            sts,
            log=logger,
            notifier=notifier,
            observer=metrics,
            services=services,
            session_obtain=obtain_session,
            **options,
        )
        if endpoint is not None:
            endpoint.attach(daemon)
        yield daemon


def run_daemon(config: Config) -> None:
    """``credrefresh run``: returns after a graceful stop.

    Raises:
        CredrefreshError: the first of our own errors a task raised (all are logged).
    """
    notifier = Notifier()

    async def main() -> None:
        async with build_daemon(config, notifier=notifier, watchdog=watchdog_interval()) as daemon:
            await daemon.run()

    try:
        with instance_lock(config.credentials_file):
            anyio.run(main, backend="asyncio")
    except BaseExceptionGroup as group:
        # A task group wraps what its tasks raise; our own errors carry the user's message.
        ours = group.subgroup(lambda exc: isinstance(exc, CredrefreshError))
        if ours is None:
            raise
        raise merged(leaves(ours)) from None
    finally:
        notifier.close()


def merged(errors: list[BaseException]) -> BaseException:
    """One error for the command line: configuration problems together, else the first."""
    configs = [e for e in errors if isinstance(e, ConfigError)]
    if configs:
        return ConfigError(configs[0].path, [p for e in configs for p in e.problems])
    return errors[0]


def leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """Every exception in a (nested) exception group, in order."""
    found: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found.extend(leaves(exc))
        else:
            found.append(exc)
    return found
