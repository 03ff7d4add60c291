"""``credrefresh.table.RoleTable`` answers what the scans of ``credrefresh.schedule`` answer.

The engine used to scan every role on every pass (``newly_expired``, ``next_wait``,
``status_line``); the table keeps heaps instead. These tests drive a table and a plain dict
through the same random changes, with time moving forwards and backwards, and compare.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from credrefresh.config import Role
from credrefresh.model import ErrorInfo, RoleState
from credrefresh.schedule import (
    WRITE_ERROR,
    awaits_write,
    newly_expired,
    status_line,
    status_text,
)
from credrefresh.table import RoleTable

T0 = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
NAMES = ("a", "b", "c", "d", "e")
ERRORS = (
    None,
    ErrorInfo("AccessDenied", "no", False, T0),
    ErrorInfo(WRITE_ERROR, "disk full", True, T0),
)


def state(name: str, due: int) -> RoleState:
    role = Role(profile=name, role_arn=f"arn:aws:iam::123456789012:role/{name}", session_name=name)
    return RoleState(role, due=T0 + timedelta(seconds=due))


seconds = st.integers(min_value=-5, max_value=40)
changes = st.tuples(
    st.sampled_from(NAMES),
    seconds,  # due
    st.one_of(st.none(), seconds),  # expiration
    st.sampled_from(range(len(ERRORS))),
    st.booleans(),  # conflict
)
steps = st.lists(
    st.tuples(
        st.lists(changes, max_size=4),
        st.integers(min_value=-8, max_value=15),  # how the clock moves
        st.sets(st.sampled_from(NAMES), max_size=2),  # new credentials waiting for the write
        st.booleans(),  # whether this pass reports expiries (the engine's scheduler does)
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(steps=steps)
def test_the_table_agrees_with_a_scan_of_every_role(steps):
    plain = {name: state(name, 0) for name in NAMES[:3]}
    table = RoleTable(plain)
    now = T0
    for edits, move, pending, report in steps:
        for name, due, expires, error, conflict in edits:
            old = plain.get(name) or state(name, due)
            new = replace(
                old,
                due=T0 + timedelta(seconds=due),
                expiration=None if expires is None else T0 + timedelta(seconds=expires),
                last_error=ERRORS[error],
                conflict=conflict,
                expired_reported=old.expired_reported and old.expiration is not None,
            )
            if new.expiration != old.expiration:
                new = replace(new, expired_reported=False)
            plain[name] = table[name] = new
        now += timedelta(seconds=move)
        assert dict(table.items()) == plain
        assert list(table) == list(plain)  # configuration order, added ones at the end
        counts, next_due = table.status(now)
        assert status_text(counts, next_due, now) == status_line(plain.values(), now)
        assert table.next_due(()) == min(s.due for s in plain.values())
        if report:  # as the scheduler does on every pass
            expected = newly_expired(plain, pending=pending, now=now)
            assert table.newly_expired(now, pending) == expected
            for name in expected:
                plain[name] = table[name] = replace(plain[name], expired_reported=True)
            soonest = table.next_expiry()
            left = [
                s.expiration
                for n, s in plain.items()
                if s.expiration is not None
                and not s.expired_reported
                and not awaits_write(n, s, pending)
            ]
            if left:
                assert soonest is not None
                assert now < soonest <= min(left)


@settings(max_examples=200, deadline=None)
@given(dues=st.lists(seconds, min_size=1, max_size=8), at=seconds)
def test_due_roles_are_started_in_table_order(dues, at):
    names = [f"p{i}" for i in range(len(dues))]
    table = RoleTable({n: state(n, d) for n, d in zip(names, dues, strict=True)})
    now = T0 + timedelta(seconds=at)
    table.collect_due(now)
    started = []
    while (ready := table.next_ready(now, started)) is not None:
        started.append(ready.role.profile)
    assert started == [n for n, d in zip(names, dues, strict=True) if d <= at]
    assert not table.backlog


def test_a_role_in_flight_is_skipped_until_its_call_ends():
    table = RoleTable({"a": state("a", 0), "b": state("b", 5)})
    assert table.next_due({"a"}) == T0 + timedelta(seconds=5)
    table.requeue("a")  # its call ended without a new due time
    assert table.next_due(()) == T0
    table.collect_due(T0)
    assert table.backlog
    assert table.next_ready(T0, ()) == table["a"]


def test_an_idle_table_does_not_grow():
    table = RoleTable({n: state(n, 10) for n in NAMES})
    for i in range(3000):
        name = NAMES[i % len(NAMES)]
        table[name] = replace(table[name], due=T0 + timedelta(seconds=i))
        table.status(T0)
    assert len(table._all_due) <= 2 * len(NAMES) + 1024
