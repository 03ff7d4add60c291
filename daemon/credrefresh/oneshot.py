"""``credrefresh once``: assume every role concurrently, write the file once, report what happened.

It returns a ``OnceOutcome``; the command line decides the exit status. The state file that
``status`` reads is updated too, so a failure seen by ``run`` and cured by ``once`` is not
reported as still failing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

from credrefresh import roles
from credrefresh.config import Config, Role
from credrefresh.credfile import ManagedProfile, read_profiles
from credrefresh.errors import CredentialsFileError, RefreshFailed
from credrefresh.events import conflict, emit, event, refresh_failed, refreshed
from credrefresh.model import ErrorInfo, Issued, RoleState, session_params
from credrefresh.state import load_state, save_state, state_document
from credrefresh.sts import StsClient
from credrefresh.writer import write_file

__all__ = ["OnceOutcome", "assume_all", "fresh_enough", "once"]


@dataclass(frozen=True, slots=True)
class OnceOutcome:
    """What one round did.

    Attributes:
        refreshed: Profiles written.
        skipped: Profiles left as they were (``--min-remaining``: still fresh enough).
        failed: Profiles whose AssumeRole call failed.
        conflicts: Profiles left alone because they exist without the marker.
        file_error: Why the credentials file could not be written, if it could not.
    """

    refreshed: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    file_error: str | None = None


async def assume_all(
    sts: StsClient, to_assume: Iterable[Role], limit: int
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
        for role in to_assume:
            tg.start_soon(one, role)
    return results


def fresh_enough(
    role: Role, found: ManagedProfile | None, now: datetime, min_remaining: float
) -> bool:
    """Whether the file already holds our credentials for ``role`` with enough time left."""
    return (
        found is not None
        and found.managed
        and found.role_arn == role.role_arn
        and found.session_name == role.session_name
        and found.session_params == session_params(role)
        and found.expiration is not None
        and found.expiration - now > timedelta(seconds=min_remaining)
    )


async def select(
    config: Config, now: datetime, min_remaining: float | None
) -> tuple[list[Role], list[str]]:
    """The roles to assume, and the profiles skipped as fresh enough."""
    if min_remaining is None:
        return list(config.roles), []
    try:
        in_file = await anyio.to_thread.run_sync(read_profiles, config.credentials_file)
    except CredentialsFileError:
        in_file = {}  # the write reports it
    todo: list[Role] = []
    skipped: list[str] = []
    for role in config.roles:
        if fresh_enough(role, in_file.get(role.profile), now, min_remaining):
            skipped.append(role.profile)
        else:
            todo.append(role)
    return todo, skipped


async def once(
    config: Config,
    sts: StsClient,
    log: Any,  # noqa: ANN401 - structlog's bound logger
    *,
    min_remaining: float | None = None,
) -> OnceOutcome:
    """Refresh every role (or those with less than ``min_remaining`` s left), write once."""
    emit(
        log,
        event(
            "refresh.started",
            roles=len(config.roles),
            credentials_file=config.credentials_file,
            max_concurrency=config.max_concurrency,
        ),
    )
    started = datetime.now(UTC)
    todo, skipped = await select(config, started, min_remaining)
    results = await assume_all(sts, todo, config.max_concurrency)
    successes: dict[str, Issued] = {}
    for role in todo:
        result = results[role.profile]
        if isinstance(result, Issued):
            successes[role.profile] = replace(result, params=session_params(role))
    states = {r.profile: RoleState(r, due=started) for r in todo}
    failed: list[str] = []
    for role in todo:
        outcome = results[role.profile]
        if isinstance(outcome, RefreshFailed):
            failed.append(role.profile)
            emit(
                log,
                refresh_failed(role, outcome.code, outcome.message, transient=outcome.transient),
            )
            error = ErrorInfo(outcome.code, outcome.message, outcome.transient, datetime.now(UTC))
            states[role.profile] = roles.failed(
                states[role.profile], error, config.refresh, 0.5
            ).state
    now = datetime.now(UTC)
    try:
        report, written = await write_file(config.credentials_file, successes, now=now)
    except CredentialsFileError as exc:
        emit(log, event("credentials_file.error", path=config.credentials_file, error=str(exc)))
        return OnceOutcome(skipped=tuple(skipped), failed=tuple(failed), file_error=str(exc))
    emit(log, written)
    for name in report.conflicts:
        conflicted = config.role(name)
        if conflicted is not None:
            emit(log, conflict(config.credentials_file, conflicted))
    for name in report.written:
        emit(log, refreshed(successes[name]))
        states[name] = roles.written(
            roles.issued(states[name], successes[name], config.refresh, 0.5), successes[name], now
        ).state
    for name in report.conflicts:
        states.pop(name, None)
    await _record(config, states, now, log)
    emit(
        log,
        event(
            "refresh.finished",
            refreshed=len(report.written),
            failed=len(failed),
            conflicts=len(report.conflicts),
            skipped=len(skipped),
        ),
    )
    return OnceOutcome(
        refreshed=report.written,
        skipped=tuple(skipped),
        failed=tuple(failed),
        conflicts=report.conflicts,
    )


async def _record(
    config: Config,
    states: Mapping[str, RoleState],
    now: datetime,
    log: Any,  # noqa: ANN401
) -> None:
    """Merge this round into the state file, keeping what it says of the other profiles."""
    document = state_document(
        states, now=now, pid=os.getpid(), credentials_file=config.credentials_file
    )
    previous = load_state(config.state_file)
    if previous is not None and previous.get("credentials_file") == config.credentials_file:
        merged = dict(previous.get("profiles") or {})
        merged.update(document["profiles"])
        document["profiles"] = merged
    try:
        await anyio.to_thread.run_sync(save_state, config.state_file, document)
    except OSError as exc:
        emit(log, event("state_file.error", path=config.state_file, error=str(exc)))
