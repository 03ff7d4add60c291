"""The task that keeps the ``[source]`` session for ``run``: the I/O around ``sourcesession``.

* MFA: every ``MFA_POLL`` seconds it reads the session file (a ``stat`` when nothing changed), so
  a session stored by ``credrefresh mfa`` is picked up without a restart.
* Web identity: it calls AssumeRoleWithWebIdentity (through ``obtain``) when the session is due
  (half-life, like a role) and backs off when that fails.

The engine asks ``signer`` for the session to sign with; roles that find none wait ("parked")
and are made due again through ``on_change`` as soon as a session arrives.
"""

from __future__ import annotations

import os
import random
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Final

import anyio
from anyio.abc import TaskStatus

from credrefresh import sourcesession
from credrefresh.errors import CredrefreshError, RefreshFailed
from credrefresh.events import Event
from credrefresh.model import Credentials, ErrorInfo, Issued, format_time
from credrefresh.seams import Clock
from credrefresh.sessionfile import load_session
from credrefresh.settings import RefreshPolicy
from credrefresh.sourceconfig import MfaSource, SessionSource
from credrefresh.sourcesession import MFA_POLL, Track

__all__ = ["SessionKeeper"]

LONGEST_SLEEP: Final = 10.0  # look at least this often (clock jumps, a resumed machine)

Obtain = Callable[[], Awaitable[Issued]]


class SessionKeeper:
    """Holds the current ``Track``; ``run`` is its task in the daemon's task group."""

    def __init__(
        self,
        source: SessionSource,
        config_path: str,
        *,
        clock: Clock,
        policy: RefreshPolicy,
        emit: Callable[..., None],
        on_change: Callable[[], None],
        obtain: Obtain | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.source = source
        self.config_path = config_path
        self.clock = clock
        self.policy = policy
        self.emit = emit
        self.on_change = on_change
        self.obtain = obtain
        self.rng = rng
        self.track = Track(next_check=clock.now())
        self.stamp: tuple[int, int, int] | None = None  # the session file's (ino, size, mtime)
        self.wake = anyio.Event()

    def adopt(self, source: SessionSource, policy: RefreshPolicy) -> None:
        """A reload: a different source starts over."""
        if source != self.source:
            self.source = source
            self.track = Track(next_check=self.clock.now())
            self.stamp = None
        self.policy = policy
        self.wake.set()

    def signer(self, now: datetime, margin: timedelta) -> Credentials | None:
        """The session to sign a role's call with, if one outlives ``margin``."""
        return sourcesession.usable(self.track, now, margin)

    @property
    def blocked(self) -> bool:
        """Whether there is no usable session and a person (or a retry) must act first."""
        no_session = self.signer(self.clock.now(), timedelta(0)) is None
        return no_session and self.track.problem is not None

    def summary(self, now: datetime) -> dict[str, object]:
        """What the state file records (no secrets: the key id and expiry, the problem)."""
        session = self.track.session
        return {
            "kind": self.source.kind,
            "phase": sourcesession.phase(self.track, self.source, now),
            "access_key_id": None if session is None else session.access_key_id,
            "expiration": None if session is None else format_time(session.expiration),
            "problem": self.track.problem,
        }

    def note(self, now: datetime) -> str | None:
        """For ``STATUS=``."""
        return sourcesession.status_note(self.track, self.source, now)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Look now, then whenever the track says; never returns."""
        await self.look()
        task_status.started()
        while True:
            self.wake = anyio.Event()
            wait = (self.track.next_check - self.clock.now()).total_seconds()
            if self.track.session is not None:
                # Wake for the expiring and expired events too.
                for moment in self._deadlines():
                    ahead = (moment - self.clock.now()).total_seconds()
                    if ahead > 0:
                        wait = min(wait, ahead)
            with anyio.move_on_after(min(max(wait, 0.05), LONGEST_SLEEP)):
                await self.wake.wait()
            await self.look()

    def _deadlines(self) -> list[datetime]:
        session = self.track.session
        assert session is not None  # noqa: S101 - checked by the caller
        lead = timedelta(seconds=self.source.lead)
        return [session.expiration - lead, session.expiration]

    async def look(self) -> None:
        """One observation: read the file (MFA) or obtain a session when due (web identity)."""
        now = self.clock.now()
        before = (self.track.session, self.track.problem)
        if isinstance(self.source, MfaSource):
            if now >= self.track.next_check:
                await self._read_file(self.source, now)
            else:
                self._apply(sourcesession.ticked(self.track, self.source, now, self.config_path))
        elif now >= self.track.next_check and self.obtain is not None:
            await self._obtain()
        else:
            self._apply(sourcesession.ticked(self.track, self.source, now, self.config_path))
        if (self.track.session, self.track.problem) != before:
            self.on_change()

    async def _read_file(self, source: MfaSource, now: datetime) -> None:
        path = source.session_file
        try:
            info = os.stat(path)
            stamp: tuple[int, int, int] | None = (info.st_ino, info.st_size, info.st_mtime_ns)
        except OSError:
            stamp = None
        if stamp is not None and stamp == self.stamp:
            track = replace(self.track, next_check=now + timedelta(seconds=MFA_POLL))
            self._apply(sourcesession.ticked(track, source, now, self.config_path))
            return
        found = None
        error = None
        try:
            stored = await anyio.to_thread.run_sync(load_session, path)
        except CredrefreshError as exc:
            error = str(exc)
        else:
            if stored is not None:
                found = (stored.credentials, stored.serial, stored.obtained_at)
        self.stamp = stamp if error is None else None
        self._apply(sourcesession.observed(self.track, source, found, error, now, self.config_path))

    async def _obtain(self) -> None:
        assert self.obtain is not None  # noqa: S101 - checked by the caller
        try:
            issued = await self.obtain()
        except RefreshFailed as exc:
            error = ErrorInfo(exc.code, exc.message, exc.transient, self.clock.now())
            self._apply(
                sourcesession.failed(self.track, self.source, error, self.policy, self.rng())
            )
            return
        self._apply(
            sourcesession.obtained(
                self.source,
                issued.credentials,
                self.clock.now(),
                self.policy,
                self.rng(),
            )
        )

    def _apply(self, outcome: tuple[Track, tuple[Event, ...]]) -> None:
        self.track, events = outcome
        if events:
            self.emit(*events)
