"""``roles.after_write`` and ``roles.seed_table``: what a write and the file at start-up mean.

Pure functions, so they are driven here with plain states and outcomes; the engine tests cover
the same paths through a running daemon against the fake STS.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from credrefresh import roles
from credrefresh.config import RefreshPolicy, ReloadPlan, Role
from credrefresh.credfile import WriteReport
from credrefresh.credtext import ManagedProfile
from credrefresh.errors import CredentialsFileError
from credrefresh.events import event
from credrefresh.model import Credentials, Issued, RoleState, session_params
from credrefresh.schedule import WRITE_ERROR
from credrefresh.writer import WriteOutcome

T0 = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
PATH = "/home/user/.aws/credentials"
POLICY = RefreshPolicy()


def state(name: str, **changes: object) -> RoleState:
    role = Role(profile=name, role_arn=f"arn:aws:iam::123456789012:role/{name}", session_name=name)
    return RoleState(role, due=T0 + timedelta(hours=1), **changes)  # type: ignore[arg-type]


def issued(name: str, expires_in: float = 3600.0) -> Issued:
    credentials = Credentials(
        f"ASIA{name.upper():0<16}", "secret", "token", T0 + timedelta(seconds=expires_in)
    )
    arn = f"arn:aws:iam::123456789012:role/{name}"
    return Issued(name, arn, name, f"{arn}/{name}", credentials, T0, 12.0)


def report(
    written: tuple[str, ...] = (), removed: tuple[str, ...] = (), conflicts: tuple[str, ...] = ()
) -> WriteReport:
    return WriteReport(PATH, written, removed, conflicts, changed=True, size=100)


def names(effects: roles.WriteEffects) -> list[str]:
    return [e.name for e in effects.events]


def run(outcome: WriteOutcome, table: dict[str, RoleState]) -> roles.WriteEffects:
    draws = iter([0.5, 0.25, 0.75])
    return roles.after_write(outcome, table, now=T0, policy=POLICY, path=PATH, uniforms=draws)


def test_written_profiles_are_refreshed_and_kept() -> None:
    table = {"a": state("a"), "b": state("b")}
    outcome = WriteOutcome({"a": issued("a")}, frozenset(), report=report(("a",)))
    effects = run(outcome, table)
    assert names(effects) == ["role.refreshed"]
    assert set(effects.states) == {"a"}
    assert effects.states["a"].expiration == T0 + timedelta(hours=1)
    assert effects.states["a"].access_key_id == "ASIAA000000000000000"
    assert effects.states["a"].last_success == T0
    assert effects.states["a"].due == table["a"].due  # set when the call returned
    assert [name for name, _ in effects.kept] == ["a"]
    assert effects.failures == ()
    assert not effects.wake
    assert table["a"].expiration is None  # the input is never changed


def test_removed_conflicts_and_written_log_in_that_order() -> None:
    table = {"a": state("a"), "c": state("c")}
    outcome = WriteOutcome(
        {"a": issued("a"), "c": issued("c")},
        frozenset({"gone"}),
        events=(event("credentials_file.written", path=PATH),),
        report=report(("a",), removed=("gone",), conflicts=("c",)),
    )
    effects = run(outcome, table)
    assert names(effects) == [
        "credentials_file.written",
        "profile.removed",
        "profile.conflict",
        "role.refreshed",
    ]
    assert effects.failures == (("c", "ProfileConflict"),)
    assert effects.states["c"].conflict
    assert effects.states["c"].last_error is not None
    assert [name for name, _ in effects.kept] == ["a"]


def test_a_failed_write_keeps_unexpired_updates_pending() -> None:
    table = {"a": state("a"), "b": state("b")}
    outcome = WriteOutcome(
        {"a": issued("a"), "b": issued("b", expires_in=-1), "removed": issued("removed")},
        frozenset(),
        error=CredentialsFileError("disk full"),
    )
    effects = run(outcome, table)
    assert names(effects) == ["credentials_file.error"]
    assert effects.events[0].fields["error"] == "disk full"
    assert set(effects.states) == {"a"}  # b's credentials expired; "removed" is not configured
    error = effects.states["a"].last_error
    assert error is not None
    assert error.code == WRITE_ERROR
    assert error.transient
    assert effects.states["a"].attempt == 1
    assert effects.failures == (("a", WRITE_ERROR),)
    assert effects.kept == ()
    assert effects.wake


def test_stale_credentials_make_their_role_due_now() -> None:
    table = {"a": state("a"), "b": state("b")}
    outcome = WriteOutcome({}, frozenset(), stale=("a", "not-configured"), report=report())
    effects = run(outcome, table)
    assert effects.states == {"a": replace(table["a"], due=T0)}
    assert effects.wake


def test_nothing_to_do_changes_nothing() -> None:
    effects = run(WriteOutcome({}, frozenset()), {"a": state("a")})
    assert effects.states == {}
    assert effects.events == ()
    assert not effects.wake


def test_seed_table_marks_only_matching_unexpired_profiles_warm() -> None:
    a, b, c = state("a"), state("b"), state("c")
    found = {
        "a": ManagedProfile(
            "a",
            managed=True,
            access_key_id="ASIAAAAA",
            expiration=T0 + timedelta(hours=1),
            role_arn=a.role.role_arn,
            refreshed_at=T0 - timedelta(minutes=5),
            session_name="a",
            session_params=session_params(a.role),
        ),
        "b": ManagedProfile(
            "b",
            managed=True,
            access_key_id="ASIABBBB",
            expiration=T0 - timedelta(seconds=1),  # expired: known, not warm
            role_arn=b.role.role_arn,
            refreshed_at=T0 - timedelta(hours=1),
            session_name="b",
            session_params=session_params(b.role),
        ),
    }
    draws = itertools.cycle([0.5])
    table, warm = roles.seed_table(
        {"a": a, "b": b, "c": c}, found, now=T0, policy=POLICY, uniforms=draws, spread=2.0
    )
    assert warm == frozenset({"a"})
    assert table["a"].due > T0 + timedelta(minutes=10)
    assert table["b"].access_key_id == "ASIABBBB"
    assert table["b"].due == T0 + timedelta(seconds=1)  # spread 2 s, draw 0.5
    assert table["c"].due == T0 + timedelta(seconds=1)
    assert table["c"].access_key_id is None


def test_a_write_is_urgent_when_the_file_holds_nothing_good() -> None:
    """New credentials skip a large file's spacing when the profile has none that will last."""
    assert roles.urgent_write(state("new"), T0)  # nothing written yet
    expiring = state("a", expiration=T0 + roles.URGENT_WITHIN)
    assert roles.urgent_write(expiring, T0)
    assert roles.urgent_write(state("b", expiration=T0 - timedelta(seconds=1)), T0)
    fine = state("c", expiration=T0 + roles.URGENT_WITHIN + timedelta(seconds=1))
    assert not roles.urgent_write(fine, T0)


def test_a_changed_role_is_written_without_waiting() -> None:
    """After a reload changes a role, what the file holds is the old role's: urgent."""
    old = state("a", expiration=T0 + timedelta(minutes=50))
    assert not roles.urgent_write(old, T0)
    changed = replace(old.role, role_arn="arn:aws:iam::123456789012:role/other")
    plan = ReloadPlan(added=(), removed=(), changed=("a",), sts_changed=False)
    table = roles.reloaded({"a": old}, (changed,), plan, T0, itertools.count(10))
    assert table["a"].expiration == old.expiration  # still reported
    assert roles.urgent_write(table["a"], T0 + timedelta(seconds=2))
    again = roles.issued(table["a"], issued("a"), RefreshPolicy(), 0.5)
    assert not roles.urgent_write(again, T0 + timedelta(seconds=2))
