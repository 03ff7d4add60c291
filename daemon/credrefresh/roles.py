"""The role table's transitions: old state and an outcome in, new state and events out.

Pure: no clock, no randomness (``now`` and the uniform draw ``u`` are passed in), no I/O. The
engine is the only caller and the only holder of the table; it applies the states and hands the
events to ``events.emit``. Timing rules come from ``credrefresh.schedule``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Final

from credrefresh import events
from credrefresh.config import Config, RefreshPolicy, ReloadPlan, Role
from credrefresh.credtext import ManagedProfile
from credrefresh.events import Event
from credrefresh.model import ErrorInfo, Issued, RoleState, format_time, session_params
from credrefresh.schedule import WRITE_ERROR, next_refresh, retry_at
from credrefresh.writer import WriteOutcome

__all__ = [
    "Transition",
    "WriteEffects",
    "after_failure",
    "after_success",
    "after_write",
    "conflicted",
    "expired",
    "failed",
    "initial",
    "issued",
    "reloaded",
    "seed_table",
    "seeded",
    "urgent_write",
    "waiting",
    "write_failed",
    "written",
]

CONFLICT_MESSAGE = "profile exists without the credrefresh marker; left untouched"
# New credentials for a profile whose credentials in the file expire sooner than this are
# written without waiting for a large file's spacing (``writer.spacing``, at most 10 s).
URGENT_WITHIN: Final = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Transition:
    """A role's new state and what to log about the change.

    Attributes:
        state: The new state.
        events: Events to log, in order.
    """

    state: RoleState
    events: tuple[Event, ...] = ()


@dataclass(frozen=True, slots=True)
class WriteEffects:
    """What one flush of the credentials file does to the role table.

    Attributes:
        states: New states by profile, in the order they were decided.
        events: What to log, in order: the write's own events, then one per profile.
        kept: Credentials now in the file, by profile (the endpoint serves them).
        failures: ``(profile, error code)`` for each role the write failed.
        wake: The scheduler has to look again now (a role is due, or expiries are to report).
    """

    states: Mapping[str, RoleState]
    events: tuple[Event, ...]
    kept: tuple[tuple[str, Issued], ...] = ()
    failures: tuple[tuple[str, str], ...] = ()
    wake: bool = False


def after_write(
    outcome: WriteOutcome,
    states: Mapping[str, RoleState],
    *,
    now: datetime,
    policy: RefreshPolicy,
    path: str,
    uniforms: Iterator[float],
) -> WriteEffects:
    """The table after a flush: written roles refreshed, conflicts backed off, failures kept.

    Credentials that expired before their write (``outcome.stale``) make their role due now. A
    failed write leaves every unexpired update pending (the writer's backoff retries it); a
    successful one logs ``profile.removed``, ``profile.conflict`` and ``role.refreshed``.
    ``uniforms`` gives one draw per conflict (the backoff's jitter).
    """
    changed = {n: replace(states[n], due=now) for n in outcome.stale if n in states}
    wake = bool(changed)
    if outcome.error is not None:
        message = str(outcome.error)
        error = ErrorInfo(WRITE_ERROR, message, True, now)
        failures: list[tuple[str, str]] = []
        for name, result in outcome.updates.items():
            state = changed.get(name) or states.get(name)
            if state is not None and result.credentials.expiration > now:
                changed[name] = write_failed(state, error)
                failures.append((name, error.code))
        failed = events.event("credentials_file.error", path=path, error=message)
        return WriteEffects(changed, (*outcome.events, failed), (), tuple(failures), wake=True)
    if outcome.report is None:
        return WriteEffects(changed, outcome.events, wake=wake)
    report = outcome.report
    conflicts = [
        (name, state)
        for name in report.conflicts
        if (state := changed.get(name) or states.get(name)) is not None
    ]
    steps = [(n, conflicted(state, path, now, policy, next(uniforms))) for n, state in conflicts]
    kept: list[tuple[str, Issued]] = []
    for name in report.written:
        if (state := changed.get(name) or states.get(name)) is not None:
            kept.append((name, outcome.updates[name]))
            steps.append((name, written(state, outcome.updates[name], now)))
    logged = [*outcome.events]
    logged.extend(events.event("profile.removed", profile=n, path=path) for n in report.removed)
    for name, transition in steps:
        changed[name] = transition.state
        logged.extend(transition.events)
    refused = tuple((name, "ProfileConflict") for name, _ in conflicts)
    return WriteEffects(changed, tuple(logged), tuple(kept), refused, wake=wake)


def initial(config: Config, now: datetime, generations: Iterator[int]) -> dict[str, RoleState]:
    """Every configured role, due now."""
    return {r.profile: RoleState(r, due=now, generation=next(generations)) for r in config.roles}


def after_success(
    state: RoleState,
    *,
    expiration: datetime,
    access_key_id: str,
    now: datetime,
) -> RoleState:
    """The state once new credentials are in the file.

    ``due`` is left as set when the call returned (``next_refresh`` of its lifetime).
    """
    return replace(
        state,
        expiration=expiration,
        access_key_id=access_key_id,
        last_success=now,
        attempt=0,
        last_error=None,
        expired_reported=False,
        conflict=False,
        waiting_for=None,
    )


def after_failure(
    state: RoleState, error: ErrorInfo, *, policy: RefreshPolicy, u: float, conflict: bool = False
) -> RoleState:
    """The state after a failed refresh (or a refresh that could not be written)."""
    attempt = state.attempt + 1
    return replace(
        state,
        due=retry_at(
            error.at,
            attempt,
            transient=error.transient,
            expiration=state.expiration,
            policy=policy,
            u=u,
        ),
        attempt=attempt,
        last_error=error,
        conflict=conflict,
    )


def issued(state: RoleState, result: Issued, policy: RefreshPolicy, u: float) -> RoleState:
    """A call returned credentials (not yet written): the next refresh is scheduled from them."""
    due = next_refresh(result.issued_at, result.credentials.expiration, policy, u)
    return replace(state, due=due, reconfigured=False)


def urgent_write(state: RoleState, now: datetime) -> bool:
    """Whether new credentials for ``state``'s profile must not wait for the file's spacing.

    They must not when the file holds none for it (a new role, or nothing written yet), holds
    credentials that expire within ``URGENT_WITHIN``, or holds credentials of the role as it
    was configured before a reload (a narrower session policy, say, must not wait); an
    ordinary refresh, due long before expiry, may wait.
    """
    return state.reconfigured or state.expiration is None or state.expiration - now <= URGENT_WITHIN


def failed(state: RoleState, error: ErrorInfo, policy: RefreshPolicy, u: float) -> Transition:
    """A call failed: back off, and log ``role.refresh_failed``."""
    new = after_failure(state, error, policy=policy, u=u)
    return Transition(
        new,
        (
            events.refresh_failed(
                state.role,
                error.code,
                error.message,
                transient=error.transient,
                attempt=new.attempt,
                retry_at=format_time(new.due),
            ),
        ),
    )


def written(state: RoleState, result: Issued, now: datetime) -> Transition:
    """Credentials are in the file: log ``role.refreshed``."""
    new = after_success(
        state,
        expiration=result.credentials.expiration,
        access_key_id=result.credentials.access_key_id,
        now=now,
    )
    refreshed = events.refreshed(
        result, source=state.role.source_profile, next_refresh_at=format_time(new.due)
    )
    return Transition(new, (refreshed,))


def conflicted(
    state: RoleState, path: str, now: datetime, policy: RefreshPolicy, u: float
) -> Transition:
    """The profile exists without our marker: permanent backoff, ``profile.conflict``."""
    error = ErrorInfo("ProfileConflict", CONFLICT_MESSAGE, False, now)
    new = after_failure(state, error, policy=policy, u=u, conflict=True)
    return Transition(new, (events.conflict(path, state.role),))


def waiting(state: RoleState, source: RoleState, now: datetime, retry_s: float) -> Transition:
    """A chained role is due but its source role has no session fit to sign with.

    It waits for the source (at most ``retry_s`` before looking again, or until the source's
    own next attempt); ``role.waiting`` is logged once per wait, not once per look.
    """
    due = max(source.due, now) + timedelta(seconds=retry_s)
    new = replace(state, due=due, waiting_for=source.role.profile)
    if state.waiting_for == source.role.profile:
        return Transition(new)
    reason = "no valid session yet" if source.last_error is None else source.last_error.code
    return Transition(
        new,
        (
            events.event(
                "role.waiting",
                profile=state.role.profile,
                role_arn=state.role.role_arn,
                source=source.role.profile,
                reason=reason,
                retry_at=format_time(due),
            ),
        ),
    )


def write_failed(state: RoleState, error: ErrorInfo) -> RoleState:
    """Credentials for it could not be written; they wait for the next write attempt."""
    return replace(state, last_error=error, attempt=state.attempt + 1)


def expired(state: RoleState, now: datetime) -> Transition:
    """The credentials in the file have expired: report once."""
    code = None if state.last_error is None else state.last_error.code
    return Transition(
        replace(state, expired_reported=True),
        (
            events.event(
                "role.expired",
                profile=state.role.profile,
                role_arn=state.role.role_arn,
                expiration=format_time(state.expiration or now),
                last_error_code=code,
            ),
        ),
    )


def seeded(
    state: RoleState,
    found: ManagedProfile | None,
    *,
    now: datetime,
    policy: RefreshPolicy,
    u: float,
    spread: float = 0.0,
) -> tuple[RoleState, bool]:
    """``state`` at start-up, knowing what the file holds for its profile; and whether warm.

    Credentials we wrote for the same role keep their expiry known (reported, shown). They are
    *warm* when issued for this exact configuration (same session parameters) and still valid:
    the role is then scheduled from them instead of being assumed again, so a restart with a
    fresh file makes no STS call. Other roles are due within ``spread`` seconds (drawn with
    ``u``), so a fleet of daemons restarting together does not call STS in one burst.
    """
    cold = replace(state, due=now + timedelta(seconds=spread * min(max(u, 0.0), 1.0)))
    if found is None or not found.managed or found.role_arn != state.role.role_arn:
        return cold, False
    known = replace(
        cold,
        expiration=found.expiration,
        access_key_id=found.access_key_id,
        last_success=found.refreshed_at,
    )
    warm = (
        found.session_params == session_params(state.role)
        and found.session_name == state.role.session_name
        and found.expiration is not None
        and found.refreshed_at is not None
        and found.expiration > now
    )
    if not warm or found.expiration is None or found.refreshed_at is None:
        return known, False
    due = next_refresh(found.refreshed_at, found.expiration, policy, u)
    return replace(known, due=max(due, now)), True


def seed_table(
    states: Mapping[str, RoleState],
    found: Mapping[str, ManagedProfile],
    *,
    now: datetime,
    policy: RefreshPolicy,
    uniforms: Iterator[float],
    spread: float,
) -> tuple[dict[str, RoleState], frozenset[str]]:
    """Every role ``seeded`` from what the file holds (``found``); and the warm ones."""
    table: dict[str, RoleState] = {}
    warm: set[str] = set()
    for name, state in states.items():
        table[name], is_warm = seeded(
            state, found.get(name), now=now, policy=policy, u=next(uniforms), spread=spread
        )
        if is_warm:
            warm.add(name)
    return table, frozenset(warm)


def reloaded(
    states: Mapping[str, RoleState],
    new_roles: tuple[Role, ...],
    plan: ReloadPlan,
    now: datetime,
    generations: Iterator[int] | None = None,
) -> dict[str, RoleState]:
    """The table after a reload: removed roles gone, added and changed ones due now.

    A changed role keeps what is known of the credentials in the file (their expiry is still
    reported), marked ``reconfigured`` until new ones are issued. Generations only ever grow,
    so a call started before the reload is never taken for one started after it, even for a
    profile removed and added back.
    """
    newest = max((s.generation for s in states.values()), default=0)
    counter = generations or itertools.count(newest + 1)
    table = {name: state for name, state in states.items() if name not in plan.removed}
    for role in new_roles:
        if role.profile not in plan.added and role.profile not in plan.changed:
            continue
        previous = table.get(role.profile)
        fresh = RoleState(role, due=now, generation=next(counter))
        table[role.profile] = (
            fresh
            if previous is None
            else replace(
                fresh,
                expiration=previous.expiration,
                access_key_id=previous.access_key_id,
                last_success=previous.last_success,
                expired_reported=previous.expired_reported,
                reconfigured=True,
            )
        )
    return table
