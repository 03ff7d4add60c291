"""``state.StateRenderer``: the state file re-encoded only where roles changed, same content.

``run`` saves the state file every few seconds; the renderer keeps each role's encoded entry
with the ``RoleState`` it came from. These tests drive it through random tables (roles added,
removed, replaced, left alone, errors coming and going) and compare what it writes with the
plain document of the same table, decoded by ``json``: the contract ``status`` relies on.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from credrefresh.config import Role
from credrefresh.model import ErrorInfo, RoleState
from credrefresh.state import StateRenderer, load_state, save_state, state_document, state_json

T0 = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
NAMES = ("a", "b", "c", "d", "é-unicode", 'quote"d')


def fresh(name: str) -> RoleState:
    role = Role(
        profile=name, role_arn=f"arn:aws:iam::123456789012:role/x{len(name)}", session_name="s"
    )
    return RoleState(role, due=T0)


changes = st.lists(
    st.tuples(
        st.sampled_from(NAMES),
        st.sampled_from(["add", "remove", "due", "error", "success", "same"]),
        st.integers(min_value=0, max_value=10_000),
    ),
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(changes, min_size=1, max_size=10), st.sampled_from([None, {"phase": "valid"}]))
def test_rendered_text_decodes_to_the_document(
    rounds: list[list[tuple[str, str, int]]], session: dict[str, str] | None
) -> None:
    renderer = StateRenderer()
    table: dict[str, RoleState] = {}
    for step, round_ in enumerate(rounds):
        for name, change, n in round_:
            state = table.get(name)
            moment = T0 + timedelta(seconds=n)
            if change == "add" or state is None:
                table[name] = fresh(name)
            elif change == "remove":
                del table[name]
            elif change == "due":
                table[name] = replace(state, due=moment)
            elif change == "error":
                error = ErrorInfo("Throttling", f"slow down {n}", True, moment)
                table[name] = replace(state, last_error=error, attempt=state.attempt + 1)
            elif change == "success":
                table[name] = replace(
                    state, expiration=moment, access_key_id=f"ASIA{n:016d}", last_error=None
                )
            else:
                table[name] = replace(state)  # equal, but a new object
        now = T0 + timedelta(seconds=step)
        args = {"now": now, "pid": 42, "credentials_file": "/x/credentials", "session": session}
        text = renderer.render(table, **args)  # type: ignore[arg-type]
        assert text.endswith("}\n")
        assert "\n" not in text[:-1]
        assert json.loads(text) == json.loads(state_json(state_document(table, **args)))  # type: ignore[arg-type]


def test_an_entry_is_reencoded_only_when_its_state_is_replaced() -> None:
    renderer = StateRenderer()
    a, b = fresh("a"), fresh("b")
    args = {"now": T0, "pid": 1, "credentials_file": "/x/credentials"}
    renderer.render({"a": a, "b": b}, **args)  # type: ignore[arg-type]
    kept = dict(renderer._entries)
    b2 = replace(b, attempt=3)
    text = renderer.render({"a": a, "b": b2}, **args)  # type: ignore[arg-type]
    assert renderer._entries["a"] is kept["a"]
    assert renderer._entries["b"] is not kept["b"]
    assert json.loads(text)["profiles"]["b"]["attempt"] == 3


def test_saved_text_reads_back_with_load_state(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "state" / "state.json"
    table = {"a": fresh("a")}
    text = StateRenderer().render(table, now=T0, pid=7, credentials_file="/x/credentials")
    save_state(str(path), text)
    loaded = load_state(str(path))
    assert loaded == json.loads(
        state_json(state_document(table, now=T0, pid=7, credentials_file="/x/credentials"))
    )
    assert path.stat().st_mode & 0o777 == 0o600
