"""``credrefresh once``: assume every role concurrently, write the file once, report what happened.

It returns a ``OnceOutcome``; the command line decides the exit status. The state file that
``status`` reads is updated too, so a failure seen by ``run`` and cured by ``once`` is not
reported as still failing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

from credrefresh import roles
from credrefresh.chains import levels
from credrefresh.config import Config, Role
from credrefresh.credfile import read_profiles
from credrefresh.credtext import ManagedProfile
from credrefresh.errors import CredentialsFileError, RefreshFailed
from credrefresh.events import Event, conflict, emit, event, refresh_failed, refreshed
from credrefresh.model import Credentials, ErrorInfo, Issued, RoleState, session_params
from credrefresh.sessionfile import read_session
from credrefresh.sourceconfig import MfaSource
from credrefresh.sourcesession import Track, action, observed
from credrefresh.state import record
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
    sts: StsClient,
    to_assume: Iterable[Role],
    limit: int,
    sources: Mapping[str, Credentials] | None = None,
) -> dict[str, Issued | RefreshFailed]:
    """Assume every role concurrently, at most ``limit`` calls in flight.

    ``sources`` holds, for chained roles, the parent session that signs their call.
    ``limit`` workers take the roles in order from one iterator: a task per role, waiting on
    a limiter, would hold 10,000 coroutines (some 30 MB) at 10,000 roles.
    """
    signers = sources or {}
    results: dict[str, Issued | RefreshFailed] = {}
    pending = list(to_assume)
    queue = iter(pending)

    async def worker() -> None:
        for role in queue:  # shared: each role goes to exactly one worker
            try:
                results[role.profile] = await sts.assume(role, signers.get(role.profile))
            except RefreshFailed as exc:
                results[role.profile] = exc

    async with anyio.create_task_group() as tg:
        for _ in range(min(limit, len(pending))):
            tg.start_soon(worker)
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
    needed = {
        r.profile
        for r in config.roles
        if not fresh_enough(r, in_file.get(r.profile), now, min_remaining)
    }
    # A chained role signs with its parent's session, which only a call brings into memory.
    pending = list(needed)
    while pending:
        role = config.role(pending.pop())
        signer = None if role is None else role.source_profile
        if signer is not None and signer not in needed and config.role(signer) is not None:
            needed.add(signer)
            pending.append(signer)
    todo = [r for r in config.roles if r.profile in needed]
    return todo, [r.profile for r in config.roles if r.profile not in needed]


def successes_role(config: Config, profile: str) -> str | None:
    """The source role of ``profile``, for the event's ``source`` field."""
    role = config.role(profile)
    return None if role is None else role.source_profile


def collect(
    config: Config,
    todo: Iterable[Role],
    results: Mapping[str, Issued | RefreshFailed],
    started: datetime,
    log: Any,  # noqa: ANN401 - structlog's bound logger
) -> tuple[dict[str, Issued], dict[str, RoleState], list[str]]:
    """What to write, the states to record, and which profiles failed (failures logged)."""
    successes: dict[str, Issued] = {}
    states: dict[str, RoleState] = {}
    failed: list[str] = []
    for role in todo:
        states[role.profile] = RoleState(role, due=started)
        result = results[role.profile]
        if isinstance(result, Issued):
            successes[role.profile] = replace(result, params=session_params(role))
            continue
        failed.append(role.profile)
        emit(log, refresh_failed(role, result.code, result.message, transient=result.transient))
        error = ErrorInfo(result.code, result.message, result.transient, datetime.now(UTC))
        states[role.profile] = roles.failed(states[role.profile], error, config.refresh, 0.5).state
    return successes, states, failed


async def assume_chained(
    sts: StsClient,
    todo: Sequence[Role],
    limit: int,
    root: Credentials | RefreshFailed | None = None,
) -> dict[str, Issued | RefreshFailed]:
    """Assume ``todo`` level by level: a chained role after the role that signs for it.

    ``root`` is the ``[source]`` session (MFA, web identity) that signs every role without a
    ``source_profile``, or why there is none.
    """
    results: dict[str, Issued | RefreshFailed] = {}
    configured = {r.profile for r in todo}
    for level in levels(todo):
        ready: list[Role] = []
        sources: dict[str, Credentials] = {}
        for role in level:
            if role.source_profile is None and isinstance(root, RefreshFailed):
                results[role.profile] = root
                continue
            if role.source_profile is None and isinstance(root, Credentials):
                sources[role.profile] = root
            signer = role.source_profile if role.source_profile in configured else None
            parent = None if signer is None else results.get(signer)
            if isinstance(parent, RefreshFailed):
                results[role.profile] = RefreshFailed(
                    "SourceUnavailable",
                    f"the source role {signer!r} failed: {parent.code}",
                    transient=True,
                )
                continue
            if isinstance(parent, Issued):
                sources[role.profile] = parent.credentials
            ready.append(role)
        results |= await assume_all(sts, ready, limit, sources)
    return results


async def source_session(
    config: Config,
    obtain: Callable[[Config], Awaitable[Issued]] | None,
    now: datetime,
) -> tuple[Credentials | RefreshFailed, tuple[Event, ...]]:
    """The ``[source]`` session to sign with, or why there is none (and the events to log)."""
    source = config.session
    assert source is not None  # noqa: S101 - the caller checks
    margin = timedelta(seconds=2 * config.sts_timeout)
    if isinstance(source, MfaSource):
        found, error = await anyio.to_thread.run_sync(read_session, source.session_file)
        track, events = observed(Track(next_check=now), source, found, error, now, config.path)
        session = track.session
        if track.problem is None and session is not None and session.expiration - now > margin:
            return session, ()
        reason = track.problem or "MFA session expires within the call's time"
        failure = RefreshFailed(
            "MfaSessionRequired", f"{reason}; {action(source, config.path)}", transient=False
        )
        return failure, tuple(e for e in events if e.name != "source.session_started")
    if obtain is None:
        return RefreshFailed(
            "SourceConfigError", "no way to obtain the session", transient=False
        ), ()
    try:
        issued = await obtain(config)
    except RefreshFailed as exc:
        failed = event(
            "source.session_failed",
            kind=source.kind,
            role_arn=source.role_arn,
            code=exc.code,
            error=exc.message,
            transient=exc.transient,
            attempt=1,
        )
        return exc, (failed,)
    return issued.credentials, ()


async def once(
    config: Config,
    sts: StsClient,
    log: Any,  # noqa: ANN401 - structlog's bound logger
    *,
    min_remaining: float | None = None,
    session_obtain: Callable[[Config], Awaitable[Issued]] | None = None,
) -> OnceOutcome:
    """Refresh every role (or those with less than ``min_remaining`` s left), write once.

    ``session_obtain`` obtains the web identity session when the ``[source]`` has one.
    """
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
    root = None
    if config.session is not None and any(r.source_profile is None for r in todo):
        root, found = await source_session(config, session_obtain, started)
        emit(log, *found)
    results = await assume_chained(sts, todo, config.max_concurrency, root)
    successes, states, failed = collect(config, todo, results, started, log)
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
        emit(log, refreshed(successes[name], source=successes_role(config, name)))
        states[name] = roles.written(
            roles.issued(states[name], successes[name], config.refresh, 0.5), successes[name], now
        ).state
    for name in report.conflicts:
        states.pop(name, None)
    failure = await record(config, states, now, merge=True)
    if failure is not None:
        emit(log, failure)
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
