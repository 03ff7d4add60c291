"""The task that keeps the ``[source]`` session for ``run``: the I/O around ``sourcesession``.

* MFA: every ``MFA_POLL`` seconds it reads the session file afresh, in a worker thread (a few
  KiB; the ownership and mode checks run every time), so a session stored by ``credrefresh mfa``
  is picked up without a restart, and a file removed, replaced or made writable by others
  withdraws the session within one poll.
* Web identity: it calls AssumeRoleWithWebIdentity (through ``obtain``) when the session is due
  (half-life, like a role), backs off when that fails, and retries at once when the token file
  changes during a backoff (the kubelet rotated it).

The engine asks ``signer`` for the session to sign with; roles that find none wait ("parked")
and are made due again through ``on_change`` as soon as a session arrives. Nothing a file or STS
does can end the task: an unexpected error becomes the session's problem.
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
from credrefresh.errors import RefreshFailed
from credrefresh.events import Event
from credrefresh.model import Credentials, ErrorInfo, Issued, format_time
from credrefresh.seams import Clock
from credrefresh.sessionfile import read_session
from credrefresh.settings import RefreshPolicy
from credrefresh.sourceconfig import MfaSource, SessionSource, WebIdentitySource
from credrefresh.sourcesession import MFA_POLL, Track

__all__ = ["SessionKeeper"]

LONGEST_SLEEP: Final = 10.0  # look at least this often (clock jumps, a resumed machine)
SHORTEST_SLEEP: Final = 0.05

Obtain = Callable[[], Awaitable[Issued]]
Stamp = tuple[int, int, int, int]


def identity(source: SessionSource) -> tuple[str, ...]:
    """What makes a session another one (a new lead or duration does not)."""
    if isinstance(source, MfaSource):
        return ("mfa", source.serial, source.session_file)
    return ("web", source.token_file, source.role_arn, source.session_name)


def stamp(path: str) -> Stamp | None:
    """The file's (inode, size, mtime, ctime), or ``None`` when it cannot be looked at."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


class SessionKeeper:
    """Holds the current ``Track``; ``run`` is its task in the daemon's task group."""

    def __init__(
        self,
        source: SessionSource,
        config_path: str,
        *,
        clock: Clock,
        policy: RefreshPolicy,
        margin: timedelta,
        emit: Callable[..., None],
        on_change: Callable[[], None],
        obtain: Obtain | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.source = source
        self.config_path = config_path
        self.clock = clock
        self.policy = policy
        self.margin = margin
        self.emit = emit
        self.on_change = on_change
        self.obtain = obtain
        self.rng = rng
        self.track = Track(next_check=clock.now())
        self.looked = False  # the first look is done: "no session" is then an answer
        self.token_stamp: Stamp | None = None  # the token file as the last attempt read it
        self.wake = anyio.Event()

    def adopt(self, source: SessionSource, policy: RefreshPolicy, margin: timedelta) -> None:
        """A reload: another device, file or role starts over; a new lead does not."""
        if identity(source) != identity(self.source):
            self.track = Track(next_check=self.clock.now())
            self.looked = False
            self.token_stamp = None
        self.source = source
        self.policy = policy
        self.margin = margin
        self.wake.set()

    def signer(self, now: datetime, margin: timedelta | None = None) -> Credentials | None:
        """The session to sign a role's call with, if one outlives ``margin``."""
        return sourcesession.usable(self.track, now, self.margin if margin is None else margin)

    @property
    def blocked(self) -> bool:
        """Whether the keeper has looked and has no session fit to sign with.

        Parked roles then count as tried: READY=1 does not wait for a person.
        """
        return self.looked and self.signer(self.clock.now()) is None

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
            with anyio.move_on_after(self._sleep()):
                await self.wake.wait()
            await self.look()

    def _sleep(self) -> float:
        now = self.clock.now()
        moments = [self.track.next_check]
        session = self.track.session
        if session is not None:  # wake for the expiring and expired events too
            moments += [session.expiration - timedelta(seconds=self.source.lead)]
            moments += [session.expiration]
        ahead = [(m - now).total_seconds() for m in moments]
        wait = min([a for a in ahead if a > 0] or [SHORTEST_SLEEP])
        if isinstance(self.source, WebIdentitySource) and self.track.problem is not None:
            wait = min(wait, MFA_POLL)  # watch the token file during a backoff
        return min(max(wait, SHORTEST_SLEEP), LONGEST_SLEEP)

    async def look(self) -> None:
        """One observation: read the file (MFA) or obtain a session when due (web identity)."""
        now = self.clock.now()
        before = (self.track.session, self.track.problem)
        try:
            if isinstance(self.source, MfaSource):
                if now >= self.track.next_check:
                    await self._read_file(self.source, now)
            elif self.obtain is not None and (
                now >= self.track.next_check or await self._token_rotated()
            ):
                await self._obtain(now)
            self._apply(sourcesession.ticked(self.track, self.source, now, self.config_path))
        except Exception as exc:  # noqa: BLE001 - a hostile file or answer must not end run
            problem = f"unexpected error: {type(exc).__name__}"
            retry = now + timedelta(seconds=MFA_POLL)
            self.track = replace(self.track, session=None, problem=problem, next_check=retry)
            self._apply(sourcesession.ticked(self.track, self.source, now, self.config_path))
        self.looked = True
        if (self.track.session, self.track.problem) != before:
            self.on_change()

    async def _read_file(self, source: MfaSource, now: datetime) -> None:
        found, error = await anyio.to_thread.run_sync(read_session, source.session_file)
        self._apply(sourcesession.observed(self.track, source, found, error, now, self.config_path))

    async def _token_rotated(self) -> bool:
        if self.track.problem is None or not isinstance(self.source, WebIdentitySource):
            return False
        current = await anyio.to_thread.run_sync(stamp, self.source.token_file)
        return current is not None and current != self.token_stamp

    async def _obtain(self, now: datetime) -> None:
        assert self.obtain is not None  # noqa: S101 - checked by the caller
        if isinstance(self.source, WebIdentitySource):
            self.token_stamp = await anyio.to_thread.run_sync(stamp, self.source.token_file)
        try:
            issued = await self.obtain()
            if issued.credentials.expiration - self.clock.now() <= self.margin:
                raise RefreshFailed(  # noqa: TRY301 - one path for every failure
                    "InvalidStsResponse",
                    f"the session expires at {format_time(issued.credentials.expiration)}, "
                    "too soon to sign with (is this machine's clock right?)",
                    transient=True,
                )
        except RefreshFailed as exc:
            error = ErrorInfo(exc.code, exc.message, exc.transient, self.clock.now())
            self._apply(
                sourcesession.failed(self.track, self.source, error, self.policy, self.rng())
            )
            return
        self._apply(
            sourcesession.obtained(self.source, issued.credentials, now, self.policy, self.rng())
        )

    def _apply(self, outcome: tuple[Track, tuple[Event, ...]]) -> None:
        self.track, events = outcome
        if events:
            self.emit(*events)
