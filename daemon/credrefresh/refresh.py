"""One round of refreshes (``credrefresh once``) and the audit events both modes log.

Event names and fields here are the README's event catalogue; keep them in step.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final

import anyio

from credrefresh.config import Config, Role
from credrefresh.credfile import LOCK_TIMEOUT, WriteReport, format_time, update_profiles
from credrefresh.errors import CredentialsFileError, RefreshFailed
from credrefresh.model import Issued
from credrefresh.sts import StsClient

__all__ = [
    "EXIT_FAILED",
    "EXIT_FILE",
    "EXIT_OK",
    "assume_all",
    "log_conflict",
    "log_failed",
    "log_refreshed",
    "log_written",
    "once",
]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_FILE: Final = 74  # EX_IOERR: the credentials file could not be read, parsed or replaced


async def assume_all(
    sts: StsClient, roles: Iterable[Role], limit: int
) -> dict[str, Issued | RefreshFailed]:
    """Assume every role concurrently, at most ``limit`` calls in flight."""
    limiter = anyio.CapacityLimiter(limit)
    results: dict[str, Issued | RefreshFailed] = {}

    async def one(role: Role) -> None:
        async with limiter:
            try:
                results[role.profile] = await sts.assume(role)
            except RefreshFailed as exc:
                results[role.profile] = exc

    async with anyio.create_task_group() as tg:
        for role in roles:
            tg.start_soon(one, role)
    return results


def log_refreshed(log: Any, issued: Issued, **extra: object) -> None:  # noqa: ANN401
    """``role.refreshed``: new credentials are in the file."""
    log.info(
        "role.refreshed",
        profile=issued.profile,
        role_arn=issued.role_arn,
        session_name=issued.session_name,
        assumed_role_arn=issued.assumed_role_arn,
        access_key_id=issued.credentials.access_key_id,
        expiration=format_time(issued.credentials.expiration),
        duration_ms=issued.duration_ms,
        **extra,
    )


def log_failed(log: Any, role: Role, error: RefreshFailed, **extra: object) -> None:  # noqa: ANN401
    """``role.refresh_failed``: an AssumeRole call failed."""
    log.error(
        "role.refresh_failed",
        profile=role.profile,
        role_arn=role.role_arn,
        session_name=role.session_name,
        error_code=error.code,
        error=error.message,
        transient=error.transient,
        **extra,
    )


def log_conflict(log: Any, path: str, role: Role) -> None:  # noqa: ANN401
    """``profile.conflict``: the profile exists without our marker and was left alone."""
    log.error(
        "profile.conflict",
        profile=role.profile,
        role_arn=role.role_arn,
        path=path,
        error=(
            "the profile exists in the credentials file but was not written by credrefresh; "
            "it was left untouched. Rename the role's profile or remove that section."
        ),
    )


def log_written(log: Any, report: WriteReport, duration_ms: float) -> None:  # noqa: ANN401
    """``credentials_file.written``: one atomic replace (or a check that found nothing to do)."""
    log.info(
        "credentials_file.written",
        path=report.path,
        profiles=len(report.written),
        removed=len(report.removed),
        conflicts=len(report.conflicts),
        changed=report.changed,
        bytes=report.size,
        duration_ms=duration_ms,
    )


async def write(
    config: Config,
    updates: Mapping[str, Issued],
    removals: Iterable[str] = (),
    *,
    now: datetime,
    log: Any,  # noqa: ANN401
    lock_timeout: float | None = None,
    cancel: threading.Event | None = None,
) -> WriteReport:
    """Write in a worker thread, shielded from cancellation so a write always finishes.

    ``lock_timeout`` bounds the wait for another writer's lock (at shutdown, say); setting
    ``cancel`` abandons that wait (a write already under the lock still completes).
    """
    started = time.perf_counter()
    write_file = partial(
        update_profiles,
        config.credentials_file,
        updates,
        tuple(removals),
        now=now,
        lock_timeout=LOCK_TIMEOUT if lock_timeout is None else lock_timeout,
        cancel=cancel,
    )
    with anyio.CancelScope(shield=True):
        report = await anyio.to_thread.run_sync(write_file)
    log_written(log, report, round((time.perf_counter() - started) * 1000, 1))
    return report


async def once(config: Config, sts: StsClient, log: Any) -> int:  # noqa: ANN401
    """Refresh every role once, write the file once; return the exit status."""
    log.info(
        "refresh.started",
        roles=len(config.roles),
        credentials_file=config.credentials_file,
        max_concurrency=config.max_concurrency,
    )
    results = await assume_all(sts, config.roles, config.max_concurrency)
    successes = {p: r for p, r in results.items() if isinstance(r, Issued)}
    failed = 0
    for role in config.roles:
        outcome = results[role.profile]
        if isinstance(outcome, RefreshFailed):
            failed += 1
            log_failed(log, role, outcome)
    try:
        report = await write(config, successes, now=datetime.now(UTC), log=log)
    except CredentialsFileError as exc:
        log.error("credentials_file.error", path=config.credentials_file, error=str(exc))
        return EXIT_FILE
    for name in report.conflicts:
        conflicted = config.role(name)
        if conflicted is not None:
            log_conflict(log, config.credentials_file, conflicted)
    for name in report.written:
        log_refreshed(log, successes[name])
    log.info(
        "refresh.finished",
        refreshed=len(report.written),
        failed=failed,
        conflicts=len(report.conflicts),
    )
    return EXIT_OK if not failed and not report.conflicts else EXIT_FAILED
