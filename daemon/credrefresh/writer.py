"""The daemon's writer: pending updates and removals, coalesced into one atomic file write.

It owns what waits to be written, the spacing between writes (``write_delay``) and the backoff
after a failed write, on an injected monotonic clock; each ``flush`` returns a ``WriteOutcome``
that the engine applies to the role table. The file itself is ``credfile``'s business.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Final

import anyio

from credrefresh.credfile import (
    LOCK_TIMEOUT,
    SETTLE_LIMIT,
    FileMemo,
    WriteReport,
    update_profiles,
)
from credrefresh.errors import CredentialsFileError
from credrefresh.events import Event, event
from credrefresh.model import Issued

__all__ = [
    "SPACING_MAX",
    "SPACING_PER_BYTE",
    "STUCK_AFTER",
    "WRITE_BACKOFF_MAX",
    "WriteOutcome",
    "Writer",
    "spacing",
    "write_file",
]

WRITE_BACKOFF_MAX: Final = 60.0  # retry a failed file write at least this often
# A large file is rewritten at most once per second per MB of it (a write costs about 4 ms of
# CPU per MB whatever it changes), and never less often than every SPACING_MAX seconds.
SPACING_PER_BYTE: Final = 1e-6
SPACING_MAX: Final = 10.0
# Longest a write may legitimately take: the lock wait, two settle waits and a large file.
STUCK_AFTER: Final = LOCK_TIMEOUT + 2 * SETTLE_LIMIT + 30.0


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """What one flush did.

    Attributes:
        updates: The credentials it tried to write, by profile.
        removals: The managed profiles it tried to delete.
        stale: Profiles whose credentials expired before their write and were dropped.
        report: The file's report, when the write succeeded.
        error: The error, when it failed (everything is then pending again).
        duration_s: Time spent writing.
        events: What to log about the write itself.
    """

    updates: Mapping[str, Issued]
    removals: frozenset[str]
    stale: tuple[str, ...] = ()
    report: WriteReport | None = None
    error: CredentialsFileError | None = None
    duration_s: float = 0.0
    events: tuple[Event, ...] = field(default_factory=tuple)


def written_event(report: WriteReport, duration_ms: float) -> Event:
    """``credentials_file.written``: one atomic replace (or a check that found nothing to do)."""
    return event(
        "credentials_file.written",
        path=report.path,
        profiles=len(report.written),
        removed=len(report.removed),
        conflicts=len(report.conflicts),
        changed=report.changed,
        bytes=report.size,
        duration_ms=duration_ms,
    )


async def write_file(
    path: str,
    updates: Mapping[str, Issued],
    removals: Iterable[str] = (),
    *,
    now: datetime,
    lock_timeout: float | None = None,
    cancel: threading.Event | None = None,
    time_limit: float | None = None,
    memo: FileMemo | None = None,
) -> tuple[WriteReport, Event]:
    """Write in a worker thread, shielded from cancellation so a write always finishes.

    ``lock_timeout`` bounds the wait for another writer's lock (at shutdown, say); setting
    ``cancel`` abandons that wait (a write already under the lock still completes).
    ``time_limit`` bounds the whole write even so (at shutdown): past it the worker thread is
    abandoned, which is safe because the file is only ever replaced by an atomic rename.
    ``memo`` is the previous write's (``WriteReport.memo``), to skip scanning the file again.

    Raises:
        CredentialsFileError: nothing was written.
    """
    started = time.perf_counter()
    job = partial(
        update_profiles,
        path,
        updates,
        tuple(removals),
        now=now,
        lock_timeout=LOCK_TIMEOUT if lock_timeout is None else lock_timeout,
        cancel=cancel,
        memo=memo,
    )
    with anyio.CancelScope(shield=True) as scope:
        if time_limit is not None:
            scope.deadline = anyio.current_time() + time_limit
        report = await anyio.to_thread.run_sync(job, abandon_on_cancel=True)
    if scope.cancelled_caught:
        raise CredentialsFileError(f"{path}: the write did not finish within {time_limit:g} s")
    return report, written_event(report, round((time.perf_counter() - started) * 1000, 1))


def spacing(size: int, delay: float) -> float:
    """Seconds between two writes of a file of ``size`` bytes that nothing urgent waits for.

    At least ``delay`` (``write_delay``); for a file of more than ``delay`` MB, one second per
    MB up to ``SPACING_MAX``. Rewriting the file costs about the same for one profile as for a
    hundred, so at 10,000 profiles (9.5 MB) with refreshes arriving a few a second, writing
    every second would spend most of the daemon's CPU re-copying the file; every 9.5 s, each
    write carries some fifty of them. The credentials already in the file stay valid meanwhile
    (a refresh is due long before they expire), and anything urgent is written after ``delay``.
    """
    return max(delay, min(SPACING_MAX, size * SPACING_PER_BYTE))


class Writer:
    """Pending changes to the credentials file and when the next write may happen.

    A change is *urgent* when the file holds nothing good for it (new, expired, or expiring
    soon, as the engine decides) or removes a profile: it is written ``delay`` after the last
    write. Anything else may wait for the file's ``spacing``.
    """

    def __init__(
        self,
        path: str,
        delay: float,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        stuck_after: float = STUCK_AFTER,
    ) -> None:
        self.path = path
        self.delay = delay
        self.monotonic = monotonic
        self.stuck_after = stuck_after
        self.pending: dict[str, Issued] = {}
        self.removals: set[str] = set()
        self.wanted = anyio.Event()
        self.failures = 0
        self.next_at = 0.0  # monotonic: the next write may start (an urgent one, or a retry)
        self.spaced_at = 0.0  # monotonic: the next write that nothing urgent waits for may start
        self.last: tuple[float, int] | None = None  # the last good write: when it ended, size
        self.urgent = anyio.Event()  # set while something urgent is pending
        self.writes = 0
        self.stopping = threading.Event()  # read by the worker thread waiting for the lock
        self.busy_since: float | None = None
        # What the last write left in the file: the next one skips the scan if it is still so.
        self.memo: FileMemo | None = None

    # -- what waits ---------------------------------------------------------------------------

    def add(self, issued: Issued, *, urgent: bool = True) -> None:
        """Credentials to write at the next flush (replacing older ones for that profile).

        ``urgent``: the file holds nothing good for the profile; do not wait for the spacing.
        """
        self.pending[issued.profile] = issued
        self.removals.discard(issued.profile)
        if urgent:
            self.urgent.set()
        self.wanted.set()

    def remove(self, profile: str) -> None:
        """A managed profile to delete at the next flush (urgent: the configuration changed)."""
        self.pending.pop(profile, None)
        self.removals.add(profile)
        self.urgent.set()
        self.wanted.set()

    def forget(self, profile: str) -> None:
        """Drop anything waiting for ``profile`` (its role was replaced by a reload)."""
        self.pending.pop(profile, None)
        self.removals.discard(profile)

    def retain(self, profiles: Collection[str]) -> None:
        """Drop pending credentials of profiles no longer configured (removals stay)."""
        for name in [n for n in self.pending if n not in profiles]:
            del self.pending[name]

    async def wait_wanted(self) -> None:
        """Until a flush is asked for; then re-arm."""
        await self.wanted.wait()
        self.wanted = anyio.Event()

    def set_delay(self, delay: float) -> None:
        """A new ``write_delay`` (a reload): it spaces the next write already."""
        self.delay = delay
        if self.last is not None and not self.failures:  # a backoff is the failures' own
            self._space(*self.last)

    def _space(self, done: float, size: int) -> None:
        self.next_at = done + self.delay
        self.spaced_at = done + spacing(size, self.delay)

    def wait_s(self) -> float:
        """Seconds before the next write may start (spacing, or backoff after a failure)."""
        at = self.next_at if self.urgent.is_set() else max(self.next_at, self.spaced_at)
        return max(0.0, at - self.monotonic())

    async def wait_due(self) -> None:
        """Until the next write may start; something urgent arriving meanwhile shortens it.

        With nothing pending it returns at once: the flush then only passes the state file on.
        """
        while (self.pending or self.removals) and (wait := self.wait_s()) > 0:
            if self.urgent.is_set():
                await anyio.sleep(wait)
            else:
                with anyio.move_on_after(wait):
                    await self.urgent.wait()

    # -- writing ------------------------------------------------------------------------------

    def stuck(self) -> bool:
        """Whether a write has been running for longer than any write may take."""
        busy = self.busy_since
        return busy is not None and self.monotonic() - busy > self.stuck_after

    async def flush(
        self,
        now: datetime,
        *,
        lock_timeout: float | None = None,
        final: bool = False,
        time_limit: float | None = None,
    ) -> WriteOutcome | None:
        """Write everything pending in one replace; ``None`` when there was nothing to do.

        Credentials that expired while waiting (a long wait for the file to settle, say) are
        worth nothing in the file: they are dropped and reported as ``stale``.
        """
        updates, self.pending = self.pending, {}
        removals, self.removals = frozenset(self.removals), set()
        if self.urgent.is_set():
            self.urgent = anyio.Event()
        stale = tuple(n for n, i in updates.items() if i.credentials.expiration <= now)
        for name in stale:
            del updates[name]
        if not updates and not removals:
            return WriteOutcome(updates, removals, stale) if stale else None
        started = self.busy_since = self.monotonic()
        try:
            report, written = await write_file(
                self.path,
                updates,
                removals,
                now=now,
                lock_timeout=lock_timeout,
                cancel=None if final else self.stopping,
                time_limit=time_limit,
                memo=self.memo,
            )
        except CredentialsFileError as exc:
            self._failed(updates, removals, now)
            return WriteOutcome(
                updates, removals, stale, error=exc, duration_s=self.monotonic() - started
            )
        finally:
            self.busy_since = None
        self.failures = 0
        self.memo = report.memo
        self.last = (self.monotonic(), report.size)
        self._space(*self.last)
        self.writes += int(report.changed)
        return WriteOutcome(
            updates,
            removals,
            stale,
            report=report,
            duration_s=self.monotonic() - started,
            events=(written,),
        )

    def _failed(
        self, updates: Mapping[str, Issued], removals: Collection[str], now: datetime
    ) -> None:
        """Keep what could not be written and retry the write alone, with its own backoff.

        The credentials are still good; calling STS again for all of them at once would only
        hammer it (and defeat the jitter).
        """
        self.failures += 1
        self.next_at = self.monotonic() + min(WRITE_BACKOFF_MAX, 2.0 ** (self.failures - 1))
        self.removals |= set(removals)
        for name, issued in updates.items():
            if issued.credentials.expiration > now:
                self.pending.setdefault(name, issued)  # a newer refresh may have arrived
        self.urgent.set()  # only the backoff spaces a retry
        self.wanted.set()
