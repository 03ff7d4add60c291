"""``credrefresh run``: keep every profile fresh until stopped.

One task group owns every task: the scheduler (sleeps until the earliest due time, in bounded
slices measured against the wall clock, and pings the systemd watchdog), the refresh tasks it
starts (bounded by a capacity limiter), the writer (coalesces finished refreshes into one file
write) and the signal handler (SIGTERM/SIGINT stop, SIGHUP reloads).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

import anyio
from anyio.abc import TaskGroup, TaskStatus

from credrefresh.config import Config, Role, load_config, plan_reload
from credrefresh.credfile import ManagedProfile, format_time, read_profiles
from credrefresh.errors import ConfigError, CredentialsFileError, RefreshFailed
from credrefresh.model import Issued
from credrefresh.refresh import log_conflict, log_failed, log_refreshed, write
from credrefresh.schedule import (
    ErrorInfo,
    RoleState,
    after_failure,
    after_success,
    newly_expired,
    next_refresh,
    next_wait,
    status_line,
)
from credrefresh.state import save_state, state_document
from credrefresh.sts import StsClient
from credrefresh.systemd import Notifier

__all__ = ["Clock", "Daemon", "SystemClock"]

SLICE: Final = 10.0  # longest single sleep: a clock jump or resume is noticed this fast
STARTUP_LIMIT: Final = 60.0  # READY=1 by then even if some first calls still hang
STOP_GRACE: Final = 10.0  # the last write must finish well inside TimeoutStopSec (30 s)
WRITE_BACKOFF_MAX: Final = 60.0  # retry a failed file write at least this often


# A long-running helper (the metrics endpoint) started in the daemon's task group.
Service = Callable[..., Coroutine[Any, Any, None]]


class Clock(Protocol):
    """Wall-clock time, injectable so tests can jump it."""

    def now(self) -> datetime:
        """The current time, aware, UTC."""
        ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> datetime:
        """The current time, aware, UTC."""
        return datetime.now(UTC)


class Observer(Protocol):
    """Receives what happens, for metrics. Every method must be cheap and never raise."""

    def refreshed(self, issued: Issued) -> None:
        """Credentials for a profile were written."""

    def failed(self, profile: str, code: str) -> None:
        """A refresh failed."""

    def written(self, duration_s: float, changed: bool) -> None:
        """The credentials file was written."""

    def states(self, states: dict[str, RoleState]) -> None:
        """The role states changed."""


class Daemon:
    """The long-running refresher. Create, then ``await run()`` inside an event loop."""

    def __init__(
        self,
        config: Config,
        sts: StsClient,
        *,
        log: Any,  # noqa: ANN401 - structlog's bound logger
        clock: Clock | None = None,
        rng: Callable[[], float] | None = None,
        notifier: Notifier | None = None,
        watchdog: float | None = None,
        handle_signals: bool = True,
        loader: Callable[[str], Config] = load_config,
        observer: Observer | None = None,
        slice_s: float = SLICE,
        services: Sequence[Service] = (),
        stop_grace: float = STOP_GRACE,
    ) -> None:
        self.config = config
        self.stop_grace = stop_grace
        self.sts = sts
        self.log = log
        self.clock = clock or SystemClock()
        self.rng = rng or random.random
        self.notifier = notifier or Notifier({})
        self.watchdog = watchdog
        self.handle_signals = handle_signals
        self.loader = loader
        self.observer = observer
        self.slice_s = slice_s
        self.services = tuple(services)
        # Generations only ever grow, so a call started before a reload can never pass for one
        # started after it, even when a profile is removed and added back.
        self.generations = itertools.count()
        now = self.clock.now()
        self.states: dict[str, RoleState] = {
            r.profile: RoleState(r, due=now, generation=next(self.generations))
            for r in config.roles
        }
        self.limiter = anyio.CapacityLimiter(config.max_concurrency)
        self.in_flight: set[str] = set()
        self.pending: dict[str, Issued] = {}
        self.removals: set[str] = set()
        self.unattempted: set[str] = set(self.states)
        self.first_round = anyio.Event()
        self.ready = anyio.Event()
        self.done = anyio.Event()
        self.wake = anyio.Event()
        self.wake_at = now  # when the scheduler will look again by itself
        self.write_wanted = anyio.Event()
        self.idle = anyio.Event()
        self.reloading = anyio.Lock()
        self.state_dirty = False
        self.next_write_at = 0.0  # monotonic; writes are spaced and failed ones backed off
        self.write_failures = 0
        self.last_ping = -1e9
        self.last_status = ""
        self.writes = 0
        self.stopping = threading.Event()  # read by the writer thread waiting for the lock
        self._tg: TaskGroup | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until stopped; ``task_status.started()`` fires when READY=1 is sent."""
        self.log.info(
            "daemon.started",
            pid=os.getpid(),
            config=self.config.path,
            credentials_file=self.config.credentials_file,
            roles=len(self.config.roles),
            max_concurrency=self.config.max_concurrency,
            watchdog_s=self.watchdog,
        )
        await self._seed_from_file()
        # The signal receiver stays open until the last write is done, so a second SIGTERM
        # during that write cannot kill the process half way.
        with contextlib.ExitStack() as stack:
            signals = None
            if self.handle_signals:
                signals = stack.enter_context(
                    anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
                )
            try:
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    if signals is not None:
                        tg.start_soon(self._signals, signals)
                    for service in self.services:
                        await tg.start(service)
                    tg.start_soon(self._scheduler)
                    with anyio.move_on_after(STARTUP_LIMIT):
                        await self.first_round.wait()
                    await self._flush()
                    self._notify_status(force=True)
                    self.notifier.send("READY=1")
                    self.log.info("daemon.ready", status=self.last_status)
                    self.ready.set()
                    task_status.started()
                    tg.start_soon(self._writer)
            finally:
                with anyio.move_on_after(self.stop_grace, shield=True):
                    await self._flush(lock_timeout=max(self.stop_grace - 2, 0.5), final=True)
                    await self.sts.reset()
                self.log.info("daemon.stopped", writes=self.writes)
                self.done.set()

    def stop(self, reason: str = "requested") -> None:
        """Begin a graceful stop: in-flight calls are cancelled, a write in progress finishes."""
        self.log.info("daemon.stopping", reason=reason)
        self.notifier.send("STOPPING=1")
        self.stopping.set()
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    def poke(self) -> None:
        """Re-examine the schedule now (after a clock jump, say)."""
        self.wake.set()

    async def _signals(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            if signum == signal.SIGHUP:
                # In its own task, so a slow reload never keeps a SIGTERM from being read.
                assert self._tg is not None  # noqa: S101 - started from inside run()
                self._tg.start_soon(self.reload)
            else:
                self.stop(signal.Signals(signum).name)

    async def _seed_from_file(self) -> None:
        """Learn the expiry of credentials already in the file, so it is reported and shown."""
        try:
            found = await anyio.to_thread.run_sync(read_profiles, self.config.credentials_file)
        except CredentialsFileError:
            return  # reported when the first write is attempted
        for name, state in self.states.items():
            self.states[name] = seeded(state, found.get(name))

    # -- scheduling ------------------------------------------------------------------------

    async def _scheduler(self) -> None:
        while True:
            self.wake = anyio.Event()
            now = self.clock.now()
            self._report_expired(now)
            for state in list(self.states.values()):
                if state.due <= now and state.role.profile not in self.in_flight:
                    self._start(state)
            self._ping()
            self._notify_status()
            horizon = min(self.slice_s, self.watchdog) if self.watchdog else self.slice_s
            wait = next_wait(
                self.states,
                in_flight=self.in_flight,
                pending=self.pending,
                now=now,
                horizon=horizon,
            )
            self.wake_at = now + timedelta(seconds=wait)
            with anyio.move_on_after(wait):
                await self.wake.wait()

    def _start(self, state: RoleState) -> None:
        assert self._tg is not None  # noqa: S101 - only called from inside run()
        self.in_flight.add(state.role.profile)
        self._tg.start_soon(self._refresh, state.role, state.generation)

    async def _refresh(self, role: Role, generation: int) -> None:
        try:
            async with self.limiter:
                try:
                    issued = await self.sts.assume(role)
                except RefreshFailed as exc:
                    self._failed(role, generation, exc)
                else:
                    self._succeeded(role, generation, issued)
        finally:
            self.in_flight.discard(role.profile)
            self.unattempted.discard(role.profile)
            if not self.unattempted:
                self.first_round.set()
            if not self.in_flight:
                self.idle.set()
            # Wake the scheduler only if this role is now due before it would look anyway:
            # with a thousand roles, waking on every completion would cost O(n) each time.
            state = self.states.get(role.profile)
            if state is not None and state.due < self.wake_at:
                self.wake.set()

    def _current(self, role: Role, generation: int) -> RoleState | None:
        state = self.states.get(role.profile)
        if state is None or state.generation != generation:
            return None  # removed or replaced by a reload while the call was in flight
        return state

    def _succeeded(self, role: Role, generation: int, issued: Issued) -> None:
        state = self._current(role, generation)
        if state is None:
            return
        due = next_refresh(
            issued.issued_at, issued.credentials.expiration, self.config.refresh, self.rng()
        )
        self.states[role.profile] = replace(state, due=due)
        self.pending[role.profile] = issued
        self.write_wanted.set()

    def _failed(self, role: Role, generation: int, exc: RefreshFailed) -> None:
        state = self._current(role, generation)
        if state is None:
            return
        error = ErrorInfo(exc.code, exc.message, exc.transient, self.clock.now())
        state = after_failure(state, error, policy=self.config.refresh, u=self.rng())
        self.states[role.profile] = state
        log_failed(self.log, role, exc, attempt=state.attempt, retry_at=format_time(state.due))
        if self.observer is not None:
            self.observer.failed(role.profile, exc.code)
        self.state_dirty = True
        self.write_wanted.set()

    def _report_expired(self, now: datetime) -> None:
        for name in newly_expired(self.states, pending=self.pending, now=now):
            state = self.states[name]
            self.log.error(
                "role.expired",
                profile=name,
                role_arn=state.role.role_arn,
                expiration=format_time(state.expiration or now),
                last_error_code=None if state.last_error is None else state.last_error.code,
            )
            self.states[name] = replace(state, expired_reported=True)
            self.state_dirty = True

    # -- writing ---------------------------------------------------------------------------

    async def _writer(self) -> None:
        while True:
            await self.write_wanted.wait()
            self.write_wanted = anyio.Event()
            delay = self.config.refresh.write_delay
            # Let refreshes that are about to finish share this write, for at most `delay`.
            with anyio.move_on_after(delay):
                while self.in_flight:
                    self.idle = anyio.Event()
                    await self.idle.wait()
            # Never rewrite the file more than once per `delay`; after a failed write, wait
            # out its backoff.
            await anyio.sleep(max(0.0, self.next_write_at - time.monotonic()))
            await self._flush()

    async def _flush(self, lock_timeout: float | None = None, *, final: bool = False) -> None:
        updates, self.pending = self.pending, {}
        removals, self.removals = self.removals, set()
        # Credentials that expired while waiting to be written (a long wait for the file to
        # settle, say) are worth nothing in the file: refresh those roles again instead.
        now = self.clock.now()
        for name in [n for n, i in updates.items() if i.credentials.expiration <= now]:
            del updates[name]
            state = self.states.get(name)
            if state is not None:
                self.states[name] = replace(state, due=now)
                self.wake.set()
        if updates or removals:
            await self._write(updates, removals, lock_timeout, final=final)
        if self.state_dirty:
            self.state_dirty = False
            await self._save_state()

    async def _write(
        self,
        updates: dict[str, Issued],
        removals: set[str],
        lock_timeout: float | None,
        *,
        final: bool,
    ) -> None:
        now = self.clock.now()
        path = self.config.credentials_file
        started = time.monotonic()
        try:
            report = await write(
                self.config,
                updates,
                removals,
                now=now,
                log=self.log,
                lock_timeout=lock_timeout,
                cancel=None if final else self.stopping,
            )
        except CredentialsFileError as exc:
            self._write_failed(updates, removals, exc, now)
            return
        self.write_failures = 0
        self.next_write_at = time.monotonic() + self.config.refresh.write_delay
        self.writes += int(report.changed)
        if self.observer is not None:
            self.observer.written(time.monotonic() - started, report.changed)
        for name in report.removed:
            self.log.info("profile.removed", profile=name, path=path)
        for name in report.conflicts:
            state = self.states.get(name)
            if state is not None:
                log_conflict(self.log, path, state.role)
                message = "profile exists without the credrefresh marker; left untouched"
                error = ErrorInfo("ProfileConflict", message, False, now)
                self.states[name] = after_failure(
                    state, error, policy=self.config.refresh, u=self.rng(), conflict=True
                )
                if self.observer is not None:
                    self.observer.failed(name, error.code)
        for name in report.written:
            issued = updates[name]
            state = self.states.get(name)
            if state is None:
                continue
            state = after_success(
                state,
                expiration=issued.credentials.expiration,
                access_key_id=issued.credentials.access_key_id,
                now=now,
            )
            self.states[name] = state
            log_refreshed(self.log, issued, next_refresh_at=format_time(state.due))
            if self.observer is not None:
                self.observer.refreshed(issued)
        self.state_dirty = True
        self._notify_status()

    def _write_failed(
        self,
        updates: dict[str, Issued],
        removals: set[str],
        exc: CredentialsFileError,
        now: datetime,
    ) -> None:
        """Keep what could not be written and retry the write alone, with its own backoff.

        The credentials are still good; calling STS again for all of them at once would only
        hammer it (and defeat the jitter).
        """
        self.log.error("credentials_file.error", path=self.config.credentials_file, error=str(exc))
        self.write_failures += 1
        backoff = min(WRITE_BACKOFF_MAX, 2.0 ** (self.write_failures - 1))
        self.next_write_at = time.monotonic() + backoff
        self.removals |= removals
        error = ErrorInfo("CredentialsFileError", str(exc), True, now)
        for name, issued in updates.items():
            state = self.states.get(name)
            if state is None or issued.credentials.expiration <= now:
                continue
            self.pending.setdefault(name, issued)  # a newer refresh may have arrived meanwhile
            self.states[name] = replace(state, last_error=error)
            if self.observer is not None:
                self.observer.failed(name, error.code)
        self.state_dirty = True
        self.write_wanted.set()

    async def _save_state(self) -> None:
        document = state_document(
            self.states,
            now=self.clock.now(),
            pid=os.getpid(),
            credentials_file=self.config.credentials_file,
        )
        if self.observer is not None:
            self.observer.states(self.states)
        try:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(save_state, self.config.state_file, document)
        except OSError as exc:
            self.log.warning("state_file.error", path=self.config.state_file, error=str(exc))

    # -- systemd ---------------------------------------------------------------------------

    def _ping(self) -> None:
        if self.watchdog is None:
            return
        now = time.monotonic()
        if now - self.last_ping >= self.watchdog / 2:
            self.last_ping = now
            self.notifier.send("WATCHDOG=1")

    def _notify_status(self, *, force: bool = False) -> None:
        line = status_line(self.states.values(), self.clock.now())
        if force or line != self.last_status:
            self.last_status = line
            self.notifier.send(f"STATUS={line}")

    # -- reload ----------------------------------------------------------------------------

    async def reload(self) -> bool:
        """Reload the configuration file; keep the old one when the new one is invalid."""
        async with self.reloading:
            self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
            try:
                accepted = await self._reload()
            finally:
                # Before the first round is written, READY=1 is still to come from run().
                if self.ready.is_set():
                    self.notifier.send("READY=1")
                self._notify_status(force=True)
            return accepted

    async def _reload(self) -> bool:
        old = self.config
        try:
            new = self.loader(old.path)
            plan = plan_reload(old, new)
        except ConfigError as exc:
            self.log.error("config.rejected", path=old.path, errors=list(exc.problems))
            return False
        except Exception as exc:  # noqa: BLE001 - a bad file must never end the daemon
            problem = f"{old.path}: unexpected error: {type(exc).__name__}: {exc}"
            self.log.error("config.rejected", path=old.path, errors=[problem])
            return False
        now = self.clock.now()
        for name in plan.removed:
            del self.states[name]
            self.pending.pop(name, None)
            self.removals.add(name)
        for role in new.roles:
            if role.profile in plan.added or role.profile in plan.changed:
                self.removals.discard(role.profile)
                self.pending.pop(role.profile, None)
                previous = self.states.get(role.profile)
                fresh = RoleState(role, due=now, generation=next(self.generations))
                self.states[role.profile] = (
                    fresh
                    if previous is None
                    else replace(
                        fresh,
                        expiration=previous.expiration,
                        access_key_id=previous.access_key_id,
                        last_success=previous.last_success,
                        expired_reported=previous.expired_reported,
                    )
                )
        self.config = new
        self.limiter.total_tokens = new.max_concurrency
        if plan.sts_changed:
            await self.sts.reset(new)
        self.log.info(
            "config.reloaded",
            path=new.path,
            roles=len(new.roles),
            added=list(plan.added),
            removed=list(plan.removed),
            changed=list(plan.changed),
        )
        self.state_dirty = True
        self.write_wanted.set()
        self.wake.set()
        return True


def seeded(state: RoleState, found: ManagedProfile | None) -> RoleState:
    """``state`` knowing the credentials already in the file for its role, if ours."""
    if found is None or not found.managed or found.role_arn != state.role.role_arn:
        return state
    return replace(
        state,
        expiration=found.expiration,
        access_key_id=found.access_key_id,
        last_success=found.refreshed_at,
    )
