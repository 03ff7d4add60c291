"""``credrefresh run``: keep every profile fresh until stopped.

One task group owns every task: the scheduler (sleeps until the earliest due time, in bounded
slices measured against the wall clock, and pings the systemd watchdog), the refresh tasks it
starts (bounded by a capacity limiter), the writer (coalesces finished refreshes into one file
write) and the signal handler (SIGTERM/SIGINT stop, SIGHUP reloads).
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

import anyio
from anyio.abc import TaskGroup, TaskStatus

from daemon.config import Config, Role, load_config, plan_reload
from daemon.credfile import format_time
from daemon.errors import ConfigError, CredentialsFileError, RefreshFailed
from daemon.model import Issued
from daemon.refresh import log_conflict, log_failed, log_refreshed, write
from daemon.schedule import (
    ErrorInfo,
    RoleState,
    after_failure,
    after_success,
    next_refresh,
    status_line,
)
from daemon.state import save_state, state_document
from daemon.systemd import Notifier

__all__ = ["Clock", "Daemon", "Reloadable", "SystemClock"]

SLICE: Final = 10.0  # longest single sleep: a clock jump or resume is noticed this fast
STARTUP_LIMIT: Final = 60.0  # READY=1 by then even if some first calls still hang
STOP_GRACE: Final = 10.0  # the last write must finish well inside TimeoutStopSec


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


class Reloadable(Protocol):
    """An STS client that can adopt a new configuration."""

    async def assume(self, role: Role) -> Issued:
        """Call AssumeRole for ``role``."""
        ...

    async def reset(self, config: Config | None = None) -> None:
        """Drop cached clients, adopting ``config`` when given."""
        ...


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
        sts: Reloadable,
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
    ) -> None:
        self.config = config
        self.slice_s = slice_s
        self.services = tuple(services)
        self.sts = sts
        self.log = log
        self.clock = clock or SystemClock()
        self.rng = rng or random.random
        self.notifier = notifier or Notifier({})
        self.watchdog = watchdog
        self.handle_signals = handle_signals
        self.loader = loader
        self.observer = observer
        now = self.clock.now()
        self.states: dict[str, RoleState] = {r.profile: RoleState(r, due=now) for r in config.roles}
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
        self.state_dirty = False
        self.last_write = -1e9
        self.last_ping = -1e9
        self.last_status = ""
        self.writes = 0
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
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                if self.handle_signals:
                    tg.start_soon(self._signals)
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
            with anyio.move_on_after(STOP_GRACE, shield=True):
                await self._flush()
                await self.sts.reset()
            self.log.info("daemon.stopped", writes=self.writes)
            self.done.set()

    def stop(self, reason: str = "requested") -> None:
        """Begin a graceful stop: in-flight calls are cancelled, a write in progress finishes."""
        self.log.info("daemon.stopping", reason=reason)
        self.notifier.send("STOPPING=1")
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    def poke(self) -> None:
        """Re-examine the schedule now (after a clock jump, say)."""
        self.wake.set()

    async def _signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await self.reload()
                else:
                    self.stop(signal.Signals(signum).name)
                    return

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
            wait = self._next_wait(now)
            self.wake_at = now + timedelta(seconds=wait)
            with anyio.move_on_after(wait):
                await self.wake.wait()

    def _next_wait(self, now: datetime) -> float:
        horizon = min(self.slice_s, self.watchdog) if self.watchdog else self.slice_s
        soonest = horizon
        for name, state in self.states.items():
            if name not in self.in_flight:
                soonest = min(soonest, (state.due - now).total_seconds())
            if state.expiration is not None and not state.expired_reported:
                soonest = min(soonest, (state.expiration - now).total_seconds())
        return max(soonest, 0.0)

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
        for name, state in self.states.items():
            expired = state.expiration is not None and state.expiration <= now
            if expired and not state.expired_reported and name not in self.pending:
                last = state.last_error
                self.log.error(
                    "role.expired",
                    profile=name,
                    role_arn=state.role.role_arn,
                    expiration=format_time(state.expiration),  # type: ignore[arg-type]
                    last_error_code=None if last is None else last.code,
                )
                self.states[name] = replace(state, expired_reported=True)
                self.state_dirty = True

    # -- writing ---------------------------------------------------------------------------

    async def _writer(self) -> None:
        delay = self.config.refresh.write_delay
        while True:
            await self.write_wanted.wait()
            self.write_wanted = anyio.Event()
            # Let refreshes that are about to finish share this write, for at most `delay`.
            with anyio.move_on_after(delay):
                while self.in_flight:
                    self.idle = anyio.Event()
                    await self.idle.wait()
            # And never rewrite the file more than once per `delay`.
            await anyio.sleep(max(0.0, self.last_write + delay - time.monotonic()))
            await self._flush()

    async def _flush(self) -> None:
        updates, self.pending = self.pending, {}
        removals, self.removals = self.removals, set()
        if updates or removals:
            await self._write(updates, removals)
        if self.state_dirty:
            self.state_dirty = False
            await self._save_state()

    async def _write(self, updates: dict[str, Issued], removals: set[str]) -> None:
        now = self.clock.now()
        path = self.config.credentials_file
        started = time.monotonic()
        try:
            report = await write(self.config, updates, removals, now=now, log=self.log)
        except CredentialsFileError as exc:
            self.log.error("credentials_file.error", path=path, error=str(exc))
            self.removals |= removals
            for name in updates:
                self._write_failed(name, ErrorInfo("CredentialsFileError", str(exc), True, now))
            self.state_dirty = True
            return
        self.last_write = time.monotonic()
        self.writes += int(report.changed)
        if self.observer is not None:
            self.observer.written(self.last_write - started, report.changed)
        for name in report.removed:
            self.log.info("profile.removed", profile=name, path=path)
        for name in report.conflicts:
            state = self.states.get(name)
            if state is not None:
                log_conflict(self.log, path, state.role)
                message = "profile exists without the credrefresh marker; left untouched"
                self._write_failed(name, ErrorInfo("ProfileConflict", message, False, now))
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

    def _write_failed(self, name: str, error: ErrorInfo) -> None:
        state = self.states.get(name)
        if state is not None:
            self.states[name] = after_failure(
                state,
                error,
                policy=self.config.refresh,
                u=self.rng(),
                conflict=error.code == "ProfileConflict",
            )
            if self.observer is not None:
                self.observer.failed(name, error.code)

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
        self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            accepted = await self._reload()
        finally:
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
        now = self.clock.now()
        for name in plan.removed:
            del self.states[name]
            self.pending.pop(name, None)
            self.removals.add(name)
        for role in new.roles:
            if role.profile in plan.added or role.profile in plan.changed:
                previous = self.states.get(role.profile)
                generation = 0 if previous is None else previous.generation + 1
                self.states[role.profile] = RoleState(role, due=now, generation=generation)
                self.pending.pop(role.profile, None)
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
