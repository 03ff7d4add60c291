"""Pure timing decisions: when to refresh, when to retry, what the status line says.

Nothing here reads a clock, draws a random number or does I/O: ``now`` and the uniform draw
``u`` in ``[0, 1)`` are passed in, so every rule is a plain function to test.

Defaults, argued from the renewers people trust with secrets:

* Refresh at 50-60 % of the real lifetime (``refresh_at`` 0.5 plus up to ``jitter`` 0.1), taken
  from the Expiration STS returned. spire-agent rotates at half-life +-10 %; Vault Agent renews at
  about two thirds. Refreshing by 60 % leaves 40 % of the lifetime in the file, and the
  configuration refuses any setting past 70 %, so a reader always finds more than a quarter left
  while STS answers, whatever the lifetime (seconds-long ones included).
* Transient failures back off exponentially from 1 s, capped at 5 min (Vault Agent's bounds),
  with "equal jitter" (half fixed, half drawn) so a thousand roles don't retry in lock step.
* Permanent failures (AccessDenied) back off from 1 min to 30 min: they rarely cure themselves,
  but an operator fixing a trust policy should see the profile recover without a restart.
* No retry is scheduled past the expiry of the credentials still in the file: the wait shrinks to
  at most the time left, halving towards expiry, so there are a few more tries before it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Final

from credrefresh.config import RefreshPolicy
from credrefresh.model import RoleState

WRITE_ERROR: Final = "CredentialsFileError"  # the error code of a failed file write

__all__ = [
    "EXPIRED",
    "FAILING",
    "FRESH",
    "PENDING",
    "WRITE_ERROR",
    "awaits_write",
    "backoff_delay",
    "human_duration",
    "newly_expired",
    "next_refresh",
    "next_wait",
    "retry_at",
    "status_kind",
    "status_line",
    "status_text",
]


def next_refresh(issued: datetime, expires: datetime, policy: RefreshPolicy, u: float) -> datetime:
    """When credentials issued at ``issued`` and expiring at ``expires`` should be refreshed.

    Always strictly before ``expires`` for a positive lifetime, and at most
    ``refresh_at + jitter`` of the way through it.
    """
    lifetime = (expires - issued).total_seconds()
    if lifetime <= 0:
        return issued
    fraction = policy.refresh_at + policy.jitter * min(max(u, 0.0), 1.0)
    due = issued + timedelta(seconds=lifetime * fraction)
    # datetime rounds to microseconds; keep "strictly before expiry" even for absurd lifetimes.
    return max(issued, min(due, expires - timedelta(microseconds=1)))


def backoff_delay(attempt: int, *, transient: bool, policy: RefreshPolicy, u: float) -> float:
    """Seconds to wait after the ``attempt``-th consecutive failure (``attempt`` >= 1)."""
    if transient:
        initial, cap = policy.backoff_initial, policy.backoff_max
    else:
        initial, cap = policy.permanent_backoff_initial, policy.permanent_backoff_max
    exponent = min(max(attempt - 1, 0), 60)  # 2**60 s is past any cap; avoid huge floats
    ceiling = min(cap, initial * 2.0**exponent)
    return ceiling / 2 + ceiling / 2 * min(max(u, 0.0), 1.0)


def retry_at(
    now: datetime,
    attempt: int,
    *,
    transient: bool,
    expiration: datetime | None,
    policy: RefreshPolicy,
    u: float,
) -> datetime:
    """When to try again after a failure, never past the expiry of what is in the file."""
    delay = backoff_delay(attempt, transient=transient, policy=policy, u=u)
    if expiration is not None:
        remaining = (expiration - now).total_seconds()
        if 0 < remaining < delay:
            delay = max(remaining / 2, min(policy.backoff_initial, remaining))
    return now + timedelta(seconds=delay)


def next_wait(
    states: Mapping[str, RoleState],
    *,
    in_flight: Collection[str],
    pending: Collection[str],
    now: datetime,
    horizon: float,
) -> float:
    """Seconds the scheduler may sleep: until the earliest due time, or expiry to report.

    Roles in flight are not due again until their call ends; the old credentials of a role whose
    new ones wait for the next write are not about to be reported expired. Never more than
    ``horizon`` (the bounded slice that notices clock jumps), never negative.
    """
    # The earliest moment first, then one subtraction: this runs on every pass of the
    # scheduler, over every role (a timedelta per role made it 20 ms at 10,000 roles).
    limit = now + timedelta(seconds=horizon)
    soonest = limit
    for name, state in states.items():
        if state.due < soonest and name not in in_flight:
            soonest = state.due
        expiration = state.expiration
        if (
            expiration is not None
            and expiration < soonest
            and not state.expired_reported
            and not awaits_write(name, state, pending)
        ):
            soonest = expiration
    if soonest is limit:
        return max(horizon, 0.0)
    return max(min((soonest - now).total_seconds(), horizon), 0.0)


def awaits_write(name: str, state: RoleState, pending: Collection[str]) -> bool:
    """Whether new credentials for ``name`` are about to replace the ones in the file.

    Not when writing has been failing: the old credentials then really do expire in the file,
    and that must be reported.
    """
    failing_writes = state.last_error is not None and state.last_error.code == WRITE_ERROR
    return name in pending and not failing_writes


def newly_expired(
    states: Mapping[str, RoleState], *, pending: Collection[str], now: datetime
) -> list[str]:
    """Profiles whose credentials in the file have just expired (to report once each)."""
    return [
        name
        for name, state in states.items()
        if state.expiration is not None
        and state.expiration <= now
        and not state.expired_reported
        and not awaits_write(name, state, pending)
    ]


def human_duration(seconds: float) -> str:
    """``42s``, ``12m``, ``3h05m``: short enough for a status line."""
    seconds = max(0, round(seconds))
    if seconds < 60:  # noqa: PLR2004
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:  # noqa: PLR2004
        return f"{minutes}m"
    return f"{minutes // 60}h{minutes % 60:02d}m"


FRESH, FAILING, EXPIRED, PENDING = range(4)  # what ``status_kind`` says of a role


def status_kind(state: RoleState, now: datetime) -> int:
    """How the status line counts ``state`` at ``now``.

    ``FRESH``, ``FAILING``, ``EXPIRED`` or ``PENDING``; it changes with time only when the
    expiration passes.
    """
    expiration, error = state.expiration, state.last_error
    valid = expiration is not None and expiration > now
    if error is not None and not valid and expiration is not None:
        return EXPIRED
    if error is not None or state.conflict:
        return FAILING
    return FRESH if valid else PENDING


def status_text(counts: Sequence[int], next_due: datetime | None, now: datetime) -> str:
    """The status line from the counts by kind (indexed by ``status_kind``) and the next due."""
    parts = [f"{counts[FRESH]} fresh", f"{counts[FAILING]} failing"]
    if counts[EXPIRED]:
        parts.append(f"{counts[EXPIRED]} expired")
    if counts[PENDING]:
        parts.append(f"{counts[PENDING]} pending")
    if next_due is not None:
        parts.append(f"next refresh in {human_duration((next_due - now).total_seconds())}")
    return ", ".join(parts)


def status_line(states: Iterable[RoleState], now: datetime) -> str:
    """The one-line summary for systemd's ``STATUS=`` (the engine keeps the counts itself)."""
    counts = [0, 0, 0, 0]
    next_due: datetime | None = None
    for state in states:
        counts[status_kind(state, now)] += 1
        if next_due is None or state.due < next_due:
            next_due = state.due
    return status_text(counts, next_due, now)
