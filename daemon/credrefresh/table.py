"""The engine's role table, with the earliest due time and expiry kept at hand.

The scheduler looks at the table on every pass: what is due, what has just expired, how long it
may sleep, what the status line says. Scanning 10,000 roles for that every 10 s (and back to back
during a refresh wave) was most of the daemon's idle CPU, so the table keeps heaps of due times
and expiries and the status counts as it changes. Heap entries are invalidated lazily: an entry
counts only while it still matches the role's current state, and the heaps are rebuilt when stale
entries pile up. An idle pass is O(1); a change is O(log n).

Data only: no clock, no I/O. ``now`` is passed in, and a clock that goes back in time makes the
counts be taken again from scratch.
"""

from __future__ import annotations

import heapq
from collections.abc import (
    Collection,
    ItemsView,
    Iterator,
    KeysView,
    Mapping,
    MutableMapping,
    ValuesView,
)
from datetime import datetime

from credrefresh.model import RoleState
from credrefresh.schedule import awaits_write, status_kind

__all__ = ["RoleTable"]

SLACK = 1024  # stale heap entries tolerated beyond twice the table's size before a rebuild

# (moment, position in the table, profile): ties keep the table's order, as a scan would.
_Entry = tuple[datetime, int, str]


class RoleTable(MutableMapping[str, RoleState]):
    """Profile to ``RoleState``, in configuration order, with indexes for the scheduler."""

    def __init__(self, states: Mapping[str, RoleState] | None = None) -> None:
        self._states: dict[str, RoleState] = dict(states or {})
        self._order = {name: i for i, name in enumerate(self._states)}
        self._ready: list[tuple[int, str]] = []  # due, waiting for a free slot
        self._deferred: set[str] = set()  # expired, but new credentials wait for the write
        self._counted_at: datetime | None = None  # the moment the status counts hold for
        self._kinds: dict[str, int] = {}
        self._counts = [0, 0, 0, 0]
        self._valid: list[_Entry] = []  # expirations of the roles counted as still valid
        self._due: list[_Entry] = []  # due times for the scheduler (it pops them)
        self._all_due: list[_Entry] = []  # due times for the status line (only peeked)
        self._expiry: list[_Entry] = []  # expirations not yet reported
        self._rebuild_due()
        self._rebuild_expiry()

    # -- the mapping -------------------------------------------------------------------------

    def __getitem__(self, name: str) -> RoleState:
        return self._states[name]

    def __setitem__(self, name: str, state: RoleState) -> None:
        old = self._states.get(name)
        order = self._order.get(name)
        if order is None:
            order = self._order[name] = len(self._order)
        self._states[name] = state
        if old is None or old.due != state.due:
            heapq.heappush(self._due, (state.due, order, name))
            heapq.heappush(self._all_due, (state.due, order, name))
            if len(self._all_due) > 2 * len(self._states) + SLACK:
                self._rebuild_due()
        expiration = state.expiration
        if (
            expiration is not None
            and not state.expired_reported
            and (old is None or old.expiration != expiration or old.expired_reported)
        ):
            heapq.heappush(self._expiry, (expiration, order, name))
            if len(self._expiry) > 2 * len(self._states) + SLACK:
                self._rebuild_expiry()
        if self._counted_at is not None:
            self._count(name, state, self._counted_at)

    def __delitem__(self, name: str) -> None:
        del self._states[name]  # its heap entries are now stale
        kind = self._kinds.pop(name, None)
        if kind is not None:
            self._counts[kind] -= 1

    def __iter__(self) -> Iterator[str]:
        return iter(self._states)

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, name: object) -> bool:
        return name in self._states

    def keys(self) -> KeysView[str]:
        """The dict's own view (``state_document`` and friends iterate every role)."""
        return self._states.keys()

    def values(self) -> ValuesView[RoleState]:
        """The dict's own view."""
        return self._states.values()

    def items(self) -> ItemsView[str, RoleState]:
        """The dict's own view."""
        return self._states.items()

    def snapshot(self) -> dict[str, RoleState]:
        """A plain copy (states are frozen: the copy never changes)."""
        return dict(self._states)

    # -- due roles ---------------------------------------------------------------------------

    def collect_due(self, now: datetime) -> None:
        """Move the roles due by ``now`` to the ready queue (in table order)."""
        due, states = self._due, self._states
        while due and due[0][0] <= now:
            moment, order, name = heapq.heappop(due)
            state = states.get(name)
            if state is not None and state.due == moment:
                heapq.heappush(self._ready, (order, name))

    def next_ready(self, now: datetime, in_flight: Collection[str]) -> RoleState | None:
        """The next due role to start, taken off the ready queue; ``None`` when none is left."""
        while self._ready:
            _, name = heapq.heappop(self._ready)
            state = self._states.get(name)
            if state is not None and state.due <= now and name not in in_flight:
                return state
        return None

    @property
    def backlog(self) -> bool:
        """Whether due roles wait for a free slot."""
        return bool(self._ready)

    def requeue(self, name: str) -> None:
        """Look at ``name``'s due time again (its call ended: it was skipped while in flight)."""
        state = self._states.get(name)
        if state is not None:
            heapq.heappush(self._due, (state.due, self._order[name], name))

    def next_due(self, in_flight: Collection[str]) -> datetime | None:
        """The earliest due time of a role not in flight (and not already ready)."""
        due, states = self._due, self._states
        while due:
            moment, _, name = due[0]
            state = states.get(name)
            if state is not None and state.due == moment and name not in in_flight:
                return moment
            heapq.heappop(due)  # stale, or in flight: ``requeue`` brings it back
        return None

    # -- expiry ------------------------------------------------------------------------------

    def newly_expired(self, now: datetime, pending: Collection[str]) -> list[str]:
        """Profiles whose credentials in the file have just expired (``schedule.newly_expired``)."""
        found: dict[int, str] = {}
        states = self._states
        for name in list(self._deferred):
            state = states.get(name)
            if state is None or state.expired_reported or state.expiration is None:
                self._deferred.discard(name)  # gone, reported, or replaced
            elif state.expiration > now:  # the clock went back: wait for it again
                self._deferred.discard(name)
                heapq.heappush(self._expiry, (state.expiration, self._order[name], name))
            elif not awaits_write(name, state, pending):
                self._deferred.discard(name)
                found[self._order[name]] = name
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            moment, order, name = heapq.heappop(expiry)
            state = states.get(name)
            if state is None or state.expiration != moment or state.expired_reported:
                continue
            if awaits_write(name, state, pending):
                self._deferred.add(name)
            else:
                found[order] = name
        return [found[order] for order in sorted(found)]

    def next_expiry(self) -> datetime | None:
        """The earliest expiration not yet reported.

        A role's new credentials may be about to replace it: the scheduler then looks once for
        nothing.
        """
        expiry, states = self._expiry, self._states
        while expiry:
            moment, _, name = expiry[0]
            state = states.get(name)
            if state is not None and state.expiration == moment and not state.expired_reported:
                return moment
            heapq.heappop(expiry)
        return None

    # -- the status line ---------------------------------------------------------------------

    def status(self, now: datetime) -> tuple[tuple[int, ...], datetime | None]:
        """Counts by ``schedule.status_kind`` at ``now``, and the earliest due time of all."""
        counted = self._counted_at
        if counted is None or now < counted:
            self._recount(now)
        else:
            states = self._states
            while self._valid and self._valid[0][0] <= now:  # _count may rebuild it
                _, _, name = heapq.heappop(self._valid)
                state = states.get(name)
                if state is not None:
                    self._count(name, state, now)
            self._counted_at = now
        return tuple(self._counts), self._earliest_due()

    def _earliest_due(self) -> datetime | None:
        all_due, states = self._all_due, self._states
        while all_due:
            moment, _, name = all_due[0]
            state = states.get(name)
            if state is not None and state.due == moment:
                return moment
            heapq.heappop(all_due)
        return None

    def _count(self, name: str, state: RoleState, now: datetime) -> None:
        kind = status_kind(state, now)
        old = self._kinds.get(name)
        if old is not None:
            self._counts[old] -= 1
        self._kinds[name] = kind
        self._counts[kind] += 1
        expiration = state.expiration
        if expiration is not None and expiration > now:
            heapq.heappush(self._valid, (expiration, self._order[name], name))
            if len(self._valid) > 2 * len(self._states) + SLACK:
                self._recount(now)

    def _recount(self, now: datetime) -> None:
        self._counted_at = now
        self._kinds = {name: status_kind(state, now) for name, state in self._states.items()}
        self._counts = [0, 0, 0, 0]
        for kind in self._kinds.values():
            self._counts[kind] += 1
        self._valid = [
            (state.expiration, self._order[name], name)
            for name, state in self._states.items()
            if state.expiration is not None and state.expiration > now
        ]
        heapq.heapify(self._valid)

    # -- rebuilding --------------------------------------------------------------------------

    def _rebuild_due(self) -> None:
        order = self._order
        self._all_due = [(s.due, order[n], n) for n, s in self._states.items()]
        heapq.heapify(self._all_due)
        self._due = list(self._all_due)  # a heap already; in-flight entries drop out again

    def _rebuild_expiry(self) -> None:
        order = self._order
        self._expiry = [
            (s.expiration, order[n], n)
            for n, s in self._states.items()
            if s.expiration is not None and not s.expired_reported
        ]
        heapq.heapify(self._expiry)
