"""Tests of the pure timing decisions in ``credrefresh.schedule``."""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from credrefresh.config import RefreshPolicy, Role
from credrefresh.model import ErrorInfo, RoleState
from credrefresh.roles import after_failure, after_success
from credrefresh.schedule import (
    backoff_delay,
    human_duration,
    newly_expired,
    next_refresh,
    next_wait,
    retry_at,
    status_line,
)

T0 = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
DEFAULT = RefreshPolicy()
ROLE = Role(
    profile="prod",
    role_arn="arn:aws:iam::123456789012:role/deploy",
    session_name="credrefresh-prod",
)
US = timedelta(microseconds=1)  # datetime's resolution, to which every computed time rounds
MAX_LIFETIME_US = 43_200 * 1_000_000

draws = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
# Instants with microseconds, so rounding in the functions under test is exercised.
# Hypothesis takes naive bounds; ``timezones`` makes every instant aware UTC.
instants = st.datetimes(
    min_value=datetime(2000, 1, 1),  # noqa: DTZ001
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)


@st.composite
def policies(draw: st.DrawFn) -> RefreshPolicy:
    """Any refresh policy the configuration accepts (see ``_Validator.refresh``)."""
    refresh_at = draw(st.floats(min_value=0.1, max_value=0.7))
    jitter = draw(st.floats(min_value=0.0, max_value=min(0.3, 0.7 - refresh_at)))
    b_init = draw(st.floats(min_value=0.01, max_value=3600))
    b_max = draw(st.floats(min_value=b_init, max_value=86400))
    pb_init = draw(st.floats(min_value=0.01, max_value=86400))
    pb_max = draw(st.floats(min_value=pb_init, max_value=86400))
    write_delay = draw(st.floats(min_value=0.0, max_value=10.0))
    return RefreshPolicy(refresh_at, jitter, b_init, b_max, pb_init, pb_max, write_delay)


def error(at: datetime, *, transient: bool = True, code: str = "Throttling") -> ErrorInfo:
    return ErrorInfo(code, "Rate exceeded", transient, at)


# -- next_refresh ---------------------------------------------------------------------------


@settings(deadline=None)
@given(
    issued=instants,
    lifetime_us=st.one_of(
        st.integers(min_value=1_000_000, max_value=MAX_LIFETIME_US),  # 1 s .. 12 h
        st.integers(min_value=2, max_value=999_999),  # sub-second
    ),
    u=draws,
)
def test_next_refresh_default_policy_between_half_and_sixty_percent(issued, lifetime_us, u):
    """With the default policy the refresh falls in 50-60 % of the lifetime, before expiry."""
    lifetime = timedelta(microseconds=lifetime_us)
    expires = issued + lifetime
    due = next_refresh(issued, expires, DEFAULT, u)
    seconds = lifetime.total_seconds()
    assert issued + timedelta(seconds=0.5 * seconds) <= due
    assert due <= issued + timedelta(seconds=0.6 * seconds)
    assert due < expires


@settings(deadline=None)
@given(
    issued=instants,
    lifetime_us=st.integers(min_value=2, max_value=MAX_LIFETIME_US),
    policy=policies(),
    u=draws,
)
def test_next_refresh_within_policy_and_before_expiry(issued, lifetime_us, policy, u):
    """Any valid policy refreshes from refresh_at to refresh_at + jitter, before expiry."""
    expires = issued + timedelta(microseconds=lifetime_us)
    due = next_refresh(issued, expires, policy, u)
    seconds = (expires - issued).total_seconds()
    assert issued + timedelta(seconds=policy.refresh_at * seconds) <= due
    assert due <= issued + timedelta(seconds=(policy.refresh_at + policy.jitter) * seconds)
    assert due < expires


def test_next_refresh_one_microsecond_lifetime_is_before_expiry():
    """Even the shortest positive lifetime (1 us) is refreshed strictly before it expires."""
    expires = T0 + US
    assert next_refresh(T0, expires, DEFAULT, 0.5) < expires


@pytest.mark.parametrize(
    ("lifetime", "u", "expected"),
    [
        (timedelta(hours=1), 0.0, timedelta(minutes=30)),
        (timedelta(hours=1), 0.5, timedelta(minutes=33)),
        (timedelta(hours=12), 0.0, timedelta(hours=6)),
        (timedelta(seconds=1), 0.0, timedelta(milliseconds=500)),
        (timedelta(milliseconds=10), 0.5, timedelta(microseconds=5500)),
        (timedelta(hours=1), 1.0, timedelta(minutes=36)),  # out-of-range draws are clamped
        (timedelta(hours=1), -3.0, timedelta(minutes=30)),
    ],
)
def test_next_refresh_examples(lifetime, u, expected):
    """The refresh is ``refresh_at + jitter * u`` of the way through the real lifetime."""
    assert next_refresh(T0, T0 + lifetime, DEFAULT, u) == T0 + expected


@pytest.mark.parametrize("lifetime", [timedelta(0), timedelta(seconds=-30)])
def test_next_refresh_nonpositive_lifetime_is_due_at_once(lifetime):
    """Credentials that were already expired when issued are due for refresh immediately."""
    assert next_refresh(T0, T0 + lifetime, DEFAULT, 0.7) == T0


# -- a reader always finds a quarter of the lifetime left ----------------------------------


@dataclass(frozen=True)
class Refresh:
    """One AssumeRole round trip in the simulation.

    Attributes:
        lifetime_us: Lifetime STS grants, from the moment it issues the credentials.
        u: The scheduling draw used once these credentials are written.
        latency: Fraction of the allowed budget spent on STS latency and the file write.
        issued_within: Where within that latency STS stamped the credentials (0 = at once).
        coalesce: Fraction of the allowed coalescing delay the writer waited.
    """

    lifetime_us: int
    u: float
    latency: float
    issued_within: float
    coalesce: float


fractions = st.floats(min_value=0.0, max_value=1.0)
refreshes = st.lists(
    st.builds(
        Refresh,
        lifetime_us=st.integers(min_value=1_000_000, max_value=MAX_LIFETIME_US),
        u=draws,
        latency=fractions,
        issued_within=fractions,
        coalesce=fractions,
    ),
    min_size=2,
    max_size=30,
)


def time_left(
    policy: RefreshPolicy, steps: list[Refresh], *, coalescing: bool
) -> list[tuple[timedelta, timedelta]]:
    """Replay ``steps`` through ``next_refresh``: (least time left, lifetime) of each credential.

    A refresh starts at the ``due`` time of the credentials in the file. It takes an STS
    latency plus file write of up to 5 % of the lifetimes involved (the ones in the file and
    the ones being issued), and, with ``coalescing``, the writer's wait to share a write: up to
    ``policy.write_delay`` but no more than another 5 % of those lifetimes. STS stamps the
    credentials somewhere within the latency, and their expiry counts from there. The old
    credentials stay in the file until the new ones are written, so each is at its lowest the
    instant before it is replaced (the last one: when it is written, as nothing replaces it).
    """
    start = T0  # the first refresh starts at once
    in_file: tuple[datetime, timedelta] | None = None  # (expires, lifetime)
    written = T0
    left: list[tuple[timedelta, timedelta]] = []
    for step in steps:
        lifetime = timedelta(microseconds=step.lifetime_us)
        budget_us = 0.05 * min([step.lifetime_us] + ([in_file[1] // US] if in_file else []))
        latency_us = int(budget_us * step.latency)
        coalesce_us = (
            int(min(policy.write_delay * 1_000_000, budget_us) * step.coalesce) if coalescing else 0
        )
        stamped = start + timedelta(microseconds=int(latency_us * step.issued_within))
        expires = stamped + lifetime
        written = start + timedelta(microseconds=latency_us + coalesce_us)
        if in_file is not None:
            left.append((in_file[0] - written, in_file[1]))
        in_file = (expires, lifetime)
        # The engine schedules from the call's start (issued_at) and STS's Expiration.
        start = next_refresh(start, expires, policy, step.u)
        assert start > written, "the next refresh would start before this one was written"
    assert in_file is not None
    left.append((in_file[0] - written, in_file[1]))
    return left


def assert_quarter_left(left: list[tuple[timedelta, timedelta]]) -> None:
    # US: next_refresh rounds to datetime's resolution, so exactly a quarter may be 1 us short.
    for remaining, lifetime in left:
        assert remaining + US >= lifetime / 4, (remaining, lifetime)


@settings(deadline=None)
@given(steps=refreshes)
def test_default_policy_leaves_a_quarter_with_latency_and_coalescing(steps):
    """Default policy: STS+write delay <= 5 % plus coalescing <= 1 s (and <= 5 %) leaves >= 25 %."""
    assert_quarter_left(time_left(DEFAULT, steps, coalescing=True))


@settings(deadline=None)
@given(steps=refreshes, policy=policies())
def test_any_valid_policy_leaves_a_quarter_when_delays_stay_within_five_percent(steps, policy):
    """Any accepted policy leaves >= 25 % if all delays together stay within 5 % of the lifetime."""
    assert_quarter_left(time_left(policy, steps, coalescing=False))


def test_quarter_property_is_tight_at_the_configuration_limit():
    """At refresh_at + jitter = 0.7 and a 5 % delay, exactly a quarter of the lifetime is left."""
    policy = replace(DEFAULT, refresh_at=0.5, jitter=0.2)
    hour = 3_600_000_000
    steps = [Refresh(hour, 1.0, 1.0, 0.0, 0.0), Refresh(hour, 0.0, 1.0, 0.0, 0.0)]
    assert time_left(policy, steps, coalescing=False)[0] == (
        timedelta(minutes=15),
        timedelta(hours=1),
    )


# -- backoff_delay --------------------------------------------------------------------------


def ceiling(attempt: int, initial: float, cap: float) -> float:
    exponent = attempt - 1
    # initial >= 0.01 and cap <= 86400, so past 2**40 the cap always wins.
    return cap if exponent > 40 else min(cap, initial * 2.0**exponent)


@pytest.mark.parametrize(
    ("transient", "expected"),
    [
        (True, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]),
        (False, [60, 120, 240, 480, 960, 1800, 1800, 1800, 1800, 1800, 1800, 1800]),
    ],
)
def test_backoff_doubles_up_to_the_cap(transient, expected):
    """The backoff ceiling doubles per attempt from the initial delay and stops at the cap."""
    lows = [backoff_delay(n, transient=transient, policy=DEFAULT, u=0.0) for n in range(1, 13)]
    assert lows == [c / 2 for c in expected]
    highs = [backoff_delay(n, transient=transient, policy=DEFAULT, u=1.0) for n in range(1, 13)]
    assert highs == expected


@settings(deadline=None)
@given(
    attempt=st.integers(min_value=1, max_value=10**30),
    transient=st.booleans(),
    policy=policies(),
    u=draws,
)
def test_backoff_within_half_ceiling_and_ceiling(attempt, transient, policy, u):
    """The delay is between half the (capped) exponential ceiling and the ceiling itself."""
    if transient:
        top = ceiling(attempt, policy.backoff_initial, policy.backoff_max)
    else:
        top = ceiling(attempt, policy.permanent_backoff_initial, policy.permanent_backoff_max)
    delay = backoff_delay(attempt, transient=transient, policy=policy, u=u)
    assert top / 2 <= delay <= top


@settings(deadline=None)
@given(attempt=st.integers(min_value=1, max_value=10**6), transient=st.booleans(), u=draws)
def test_backoff_never_shrinks_with_more_failures(attempt, transient, u):
    """For the same draw, one more failure never shortens the wait."""
    now = backoff_delay(attempt, transient=transient, policy=DEFAULT, u=u)
    after = backoff_delay(attempt + 1, transient=transient, policy=DEFAULT, u=u)
    assert now <= after


@settings(deadline=None)
@given(attempt=st.integers(min_value=1, max_value=10**30), u_perm=draws, u_trans=draws)
def test_permanent_backs_off_longer_than_transient(attempt, u_perm, u_trans):
    """By default a permanent failure waits longer than a transient one, whatever the draws."""
    permanent = backoff_delay(attempt, transient=False, policy=DEFAULT, u=u_perm)
    transient = backoff_delay(attempt, transient=True, policy=DEFAULT, u=u_trans)
    assert permanent > transient


@pytest.mark.parametrize("attempt", [61, 1024, 10**9, sys.maxsize, sys.maxsize * 10**6])
def test_backoff_huge_attempt_numbers_are_capped(attempt):
    """Huge attempt counts do not overflow: the delay stays within the capped range."""
    assert backoff_delay(attempt, transient=True, policy=DEFAULT, u=0.0) == 150.0
    assert backoff_delay(attempt, transient=True, policy=DEFAULT, u=0.5) == 225.0
    assert backoff_delay(attempt, transient=False, policy=DEFAULT, u=0.0) == 900.0


# -- retry_at -------------------------------------------------------------------------------


@settings(deadline=None)
@given(
    now=instants,
    expires_in_us=st.integers(min_value=-(10**11), max_value=10**11),
    attempt=st.integers(min_value=1, max_value=200),
    transient=st.booleans(),
    policy=st.one_of(st.just(DEFAULT), policies()),
    u=draws,
)
def test_retry_at_bounds(now, expires_in_us, attempt, transient, policy, u):
    """A retry is never before now nor past valid credentials' expiry; normal once expired."""
    expiration = now + timedelta(microseconds=expires_in_us)
    delay = backoff_delay(attempt, transient=transient, policy=policy, u=u)
    normal = now + timedelta(seconds=delay)
    at = retry_at(now, attempt, transient=transient, expiration=expiration, policy=policy, u=u)
    assert now <= at <= normal
    if expiration <= now:
        assert at == normal
        return
    assert at <= expiration
    remaining = (expiration - now).total_seconds()
    if delay > remaining:
        # Halving towards expiry: no hot loop, and another try before it when time allows.
        assert at >= now + timedelta(seconds=remaining / 2)
        if remaining > policy.backoff_initial:
            assert at < expiration
    else:
        assert at == normal


@settings(deadline=None)
@given(
    now=instants, attempt=st.integers(min_value=1, max_value=200), transient=st.booleans(), u=draws
)
def test_retry_at_without_credentials_uses_normal_backoff(now, attempt, transient, u):
    """With nothing in the file (expiration None) the normal backoff applies."""
    delay = backoff_delay(attempt, transient=transient, policy=DEFAULT, u=u)
    at = retry_at(now, attempt, transient=transient, expiration=None, policy=DEFAULT, u=u)
    assert at == now + timedelta(seconds=delay)


@pytest.mark.parametrize(
    ("attempt", "transient", "expires_in", "u", "expected"),
    [
        (10, True, timedelta(minutes=10), 0.0, timedelta(seconds=150)),  # far from expiry
        (3, False, timedelta(seconds=100), 0.0, timedelta(seconds=50)),  # 120 s > 100 s: halve
        (1, False, timedelta(seconds=1.5), 0.0, timedelta(seconds=1)),  # at least backoff_initial
        (1, False, timedelta(seconds=0.5), 0.0, timedelta(seconds=0.5)),  # but not past expiry
        (1, False, timedelta(seconds=-1), 0.0, timedelta(seconds=30)),  # expired: normal backoff
        (1, False, timedelta(0), 1.0, timedelta(seconds=60)),  # expiring now counts as expired
    ],
)
def test_retry_at_examples(attempt, transient, expires_in, u, expected):
    """Worked examples of the backoff, clamped by the expiry of the credentials in the file."""
    at = retry_at(T0, attempt, transient=transient, expiration=T0 + expires_in, policy=DEFAULT, u=u)
    assert at == T0 + expected


# -- after_failure / after_success -------------------------------------------------------------


def test_after_failure_counts_attempts_and_keeps_the_error():
    """Each failure bumps the attempt, records the error and schedules the backoff from its time."""
    state = RoleState(ROLE, due=T0)
    first = error(T0)
    once = after_failure(state, first, policy=DEFAULT, u=0.0)
    assert once == replace(state, due=T0 + timedelta(seconds=0.5), attempt=1, last_error=first)
    second = error(T0 + timedelta(seconds=1), transient=False, code="AccessDenied")
    twice = after_failure(once, second, policy=DEFAULT, u=0.0)
    assert twice == replace(
        once, due=second.at + timedelta(seconds=60), attempt=2, last_error=second
    )


def test_after_failure_clamps_to_the_expiry_in_the_file():
    """A failure with credentials about to expire retries before they do."""
    expiration = T0 + timedelta(seconds=10)
    state = RoleState(ROLE, due=T0, expiration=expiration, access_key_id="ASIAIOSFODNN7EXAMPLE")
    failed = after_failure(state, error(T0, transient=False), policy=DEFAULT, u=0.9)
    assert failed == replace(
        state, due=T0 + timedelta(seconds=5), attempt=1, last_error=error(T0, transient=False)
    )


def test_after_failure_sets_conflict_and_keeps_expired_reported():
    """A conflict failure raises the conflict flag; an already-reported expiry stays reported."""
    state = RoleState(
        ROLE, due=T0, expiration=T0 - timedelta(minutes=1), expired_reported=True, attempt=4
    )
    err = ErrorInfo("ProfileConflict", "profile exists without the marker", False, T0)
    failed = after_failure(state, err, policy=DEFAULT, u=0.0, conflict=True)
    assert failed == replace(
        state, due=T0 + timedelta(seconds=480), attempt=5, last_error=err, conflict=True
    )


def test_after_success_resets_failures_and_keeps_due():
    """A success records the credentials and clears attempts, error, conflict, expiry report."""
    due = T0 + timedelta(minutes=33)
    state = RoleState(
        ROLE,
        due=due,
        generation=3,
        expiration=T0 - timedelta(seconds=1),
        access_key_id="ASIAOLDOLDOLDOLDOLD1",
        last_success=T0 - timedelta(hours=1),
        attempt=7,
        last_error=error(T0 - timedelta(seconds=5)),
        expired_reported=True,
        conflict=True,
    )
    expiration = T0 + timedelta(hours=1)
    done = after_success(state, expiration=expiration, access_key_id="ASIANEWNEWNEWNEWNEW2", now=T0)
    assert done == RoleState(
        ROLE,
        due=due,
        generation=3,
        expiration=expiration,
        access_key_id="ASIANEWNEWNEWNEWNEW2",
        last_success=T0,
    )


# -- status_line / human_duration -----------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0s"),
        (0.4, "0s"),
        (42, "42s"),
        (59.4, "59s"),
        (59.6, "1m"),
        (60, "1m"),
        (719, "11m"),
        (720, "12m"),
        (3599, "59m"),
        (3600, "1h00m"),
        (11100, "3h05m"),
        (43200, "12h00m"),
        (90000, "25h00m"),
        (-5, "0s"),
    ],
)
def test_human_duration_examples(seconds, expected):
    """Durations read as seconds, minutes, or hours and zero-padded minutes; negatives as 0s."""
    assert human_duration(seconds) == expected


def fresh(due: timedelta) -> RoleState:
    return RoleState(
        ROLE, due=T0 + due, expiration=T0 + timedelta(hours=1), last_success=T0 - timedelta(1)
    )


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        (
            [
                fresh(timedelta(minutes=12)),
                fresh(timedelta(minutes=30)),
                replace(fresh(timedelta(minutes=15)), attempt=1, last_error=error(T0)),
            ],
            "2 fresh, 1 failing, next refresh in 12m",
        ),
        (
            [replace(fresh(timedelta(seconds=5)), expiration=T0, last_error=error(T0))],
            "0 fresh, 0 failing, 1 expired, next refresh in 5s",
        ),
        ([RoleState(ROLE, due=T0)], "0 fresh, 0 failing, 1 pending, next refresh in 0s"),
        (
            [RoleState(ROLE, due=T0 + timedelta(seconds=3), last_error=error(T0))],
            "0 fresh, 1 failing, next refresh in 3s",
        ),
        (
            [replace(fresh(timedelta(hours=3, minutes=5)), conflict=True)],
            "0 fresh, 1 failing, next refresh in 3h05m",
        ),
        (
            [fresh(-timedelta(minutes=2)), RoleState(ROLE, due=T0 + timedelta(minutes=1))],
            "1 fresh, 0 failing, 1 pending, next refresh in 0s",
        ),
        ([], "0 fresh, 0 failing"),
    ],
)
def test_status_line_examples(states, expected):
    """The status line counts fresh, failing, expired and pending roles and the soonest refresh."""
    assert status_line(states, T0) == expected


def test_status_line_accepts_a_generator():
    """Any iterable of states works, including a one-shot generator."""
    states = (fresh(timedelta(minutes=m)) for m in (40, 20))
    assert status_line(states, T0) == "2 fresh, 0 failing, next refresh in 20m"


def test_next_wait_ignores_expiry_of_credentials_waiting_to_be_replaced():
    """Old credentials whose replacement awaits the next write do not make the loop spin."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    role = Role("p", "arn:aws:iam::123456789012:role/p", "s")
    state = RoleState(role, due=now + timedelta(seconds=30), expiration=now - timedelta(seconds=1))
    states = {"p": state}
    assert next_wait(states, in_flight=(), pending=("p",), now=now, horizon=10) == 10
    assert next_wait(states, in_flight=(), pending=(), now=now, horizon=10) == 0
    assert newly_expired(states, pending=("p",), now=now) == []
    assert newly_expired(states, pending=(), now=now) == ["p"]
    reported = {"p": replace(state, expired_reported=True)}
    assert newly_expired(reported, pending=(), now=now) == []
    assert next_wait(reported, in_flight=(), pending=(), now=now, horizon=10) == 10
