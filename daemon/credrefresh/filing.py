"""The daemon's two files, one at a time: the credentials file and the state file.

Credentials-file writes are coalesced (``writer.Writer``): a write waits up to ``write_delay``
for refreshes about to finish, never starts sooner than ``write_delay`` after the last one (or,
when nothing urgent waits, the spacing of a large file: ``writer.spacing``), and after a failure
waits out the writer's backoff. The state file (for ``status``) holds every
role, so while running it is saved at most once per ``state_every``; before READY=1 and at stop
it is saved at once. One lock keeps the two apart: each big file's buffers add up otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime

import anyio

from credrefresh.seams import Clock
from credrefresh.writer import WriteOutcome, Writer

__all__ = ["Files"]


class Files:
    """Paces the daemon's file writes; the daemon decides what a write's outcome means.

    Args:
        writer: The pending credentials and the write itself.
        clock: Wall time for the writes.
        apply: Called with each write's outcome and the time it started.
        save: Saves the state file.
        settle: Returns when no STS call is in flight (a write waits for it, up to the
            writer's ``write_delay``).
        state_every: Seconds between two state-file saves while running.
        stop_grace: The final write at stop gives up after this.
    """

    def __init__(
        self,
        writer: Writer,
        *,
        clock: Clock,
        apply: Callable[[WriteOutcome, datetime], None],
        save: Callable[[], Awaitable[None]],
        settle: Callable[[], Awaitable[None]],
        state_every: float,
        stop_grace: float,
    ) -> None:
        self.writer = writer
        self.clock = clock
        self.apply = apply
        self.save = save
        self.settle = settle
        self.state_every = state_every
        self.stop_grace = stop_grace
        self.dirty = False  # the state file is behind the role table
        self.io = anyio.Lock()
        self.state_wanted = anyio.Event()
        self.state_next_at = 0.0  # monotonic: the state file may be saved again from then on

    def mark(self) -> None:
        """The state file no longer matches the role table: save it (within ``state_every``).

        Not through the write loop, which may be waiting out a large file's spacing.
        """
        self.dirty = True
        self.state_wanted.set()

    async def write_loop(self) -> None:
        """Write whenever the writer wants it, coalescing and spacing the writes."""
        while True:
            await self.writer.wait_wanted()
            # Let refreshes that are about to finish share this write, for at most the delay.
            with anyio.move_on_after(self.writer.delay):
                await self.settle()
            # Never rewrite the file more than once per delay (per spacing, for a large file,
            # unless something urgent waits); after a failed write, wait out its backoff.
            await self.writer.wait_due()
            await self.flush(save_state=False)

    async def state_loop(self) -> None:
        """Save the state file when it changed, at most once per ``state_every``."""
        while True:
            await self.state_wanted.wait()
            self.state_wanted = anyio.Event()
            await anyio.sleep(max(0.0, self.state_next_at - time.monotonic()))
            async with self.io:
                if self.dirty:
                    await self._save()

    async def flush(
        self, lock_timeout: float | None = None, *, final: bool = False, save_state: bool = True
    ) -> None:
        """Write what is pending; with ``save_state``, save the state file too.

        ``save_state`` is for before READY=1 and at stop, when no state loop runs; otherwise
        ``mark`` has asked ``state_loop`` for the save already.
        """
        async with self.io:
            now = self.clock.now()
            outcome = await self.writer.flush(
                now,
                lock_timeout=lock_timeout,
                final=final,
                time_limit=self.stop_grace - 0.5 if final else None,
            )
            if outcome is not None:
                self.apply(outcome, now)
            if save_state and self.dirty:
                await self._save()

    async def _save(self) -> None:
        self.dirty = False
        await self.save()
        self.state_next_at = time.monotonic() + self.state_every
