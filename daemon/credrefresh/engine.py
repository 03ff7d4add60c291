"""``credrefresh run``: keep every profile fresh until stopped.

One task group owns every task: the scheduler (sleeps until the earliest due time in bounded
slices, pings the watchdog), the refresh tasks it starts (at most ``max_concurrency`` at a time;
due roles wait in the table's ready queue, not as tasks), the write loop and the state-file
loop (``filing.Files``: coalesced writes, at most one state save per ``state_every``) and the
signal handler (stop; SIGHUP reloads). What a write's outcome means is ``roles.after_write``.
The role table (``table.RoleTable``) keeps the earliest due time and expiry, so a pass of the
scheduler costs O(log n), not a scan of every role.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Final

import anyio
from anyio.abc import TaskGroup, TaskStatus

from credrefresh import chains, roles
from credrefresh.config import Config, Role, load_config, plan_reload
from credrefresh.credfile import read_profiles
from credrefresh.errors import ConfigError, CredentialsFileError, RefreshFailed
from credrefresh.events import Event, emit, event
from credrefresh.filing import Files
from credrefresh.model import Credentials, ErrorInfo, Issued, RoleState, session_params
from credrefresh.roles import Transition
from credrefresh.schedule import status_text
from credrefresh.seams import Clock, Observer, Service, SystemClock
from credrefresh.served import Served
from credrefresh.sessionkeeper import SessionKeeper
from credrefresh.sourcesession import PARKED
from credrefresh.state import StateRenderer, record
from credrefresh.sts import StsClient
from credrefresh.systemd import Notifier
from credrefresh.table import RoleTable
from credrefresh.writer import STUCK_AFTER, WriteOutcome, Writer

__all__ = ["Daemon"]

SLICE: Final = 10.0  # longest single sleep: a clock jump or resume is noticed this fast
STARTUP_LIMIT: Final = 60.0  # READY=1 by then even if some first calls still hang
STOP_GRACE: Final = 10.0  # the last write must finish well inside TimeoutStopSec (30 s)
START_SPREAD: Final = 1.0  # first calls of a start are spread over this many seconds
CHAIN_RETRY: Final = 0.5  # a chained role waiting for its source looks again this soon after it
PARK_S: Final = 30.0  # a role waiting for the [source] session looks again (it is also pulled)
STATE_EVERY: Final = 5.0  # the state file (for `status`) is saved at most this often while running


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
        start_spread: float = START_SPREAD,
        write_stuck_after: float = STUCK_AFTER,
        session_obtain: Callable[[Config], Awaitable[Issued]] | None = None,
        state_every: float = STATE_EVERY,
    ) -> None:
        self.config = config
        self.start_spread = start_spread
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
        self.states = RoleTable(roles.initial(config, now, self.generations))
        self.served = Served()  # what the credentials endpoint hands out (memory, never STS)
        self.writer = Writer(
            config.credentials_file, config.refresh.write_delay, stuck_after=write_stuck_after
        )
        self.in_flight: set[str] = set()  # roles whose call runs (at most max_concurrency)
        self.unattempted: set[str] = set(self.states)
        self.live: dict[str, Issued] = {}  # the latest session per role: chained roles sign with it
        self.first_round = anyio.Event()
        self.ready = anyio.Event()
        self.done = anyio.Event()
        self.wake = anyio.Event()
        self.wake_at = now  # when the scheduler will look again by itself
        self.idle = anyio.Event()
        self.reloading = anyio.Lock()
        self.state_text = StateRenderer()  # re-encodes only the roles that changed
        self.files = Files(
            self.writer,
            clock=self.clock,
            apply=self._apply_write,
            save=self._save_state,
            settle=self._settle,
            state_every=state_every,
            stop_grace=stop_grace,
        )
        self.last_ping = -1e9
        self.last_status = ""
        self.stop_reason: str | None = None
        self._tg: TaskGroup | None = None
        self.keeper = None
        if config.session is not None:  # an MFA or web identity session signs the roles
            self.keeper = SessionKeeper(
                config.session,
                config.path,
                clock=self.clock,
                policy=config.refresh,
                margin=self._margin(config),
                emit=self._emit,
                on_change=self._session_changed,
                obtain=None if session_obtain is None else lambda: session_obtain(self.config),
                rng=self.rng,
            )

    @property
    def writes(self) -> int:
        """Credentials-file replacements so far."""
        return self.writer.writes

    # -- public seams ------------------------------------------------------------------------

    def state(self, profile: str) -> RoleState | None:
        """What the daemon knows about ``profile`` (a frozen snapshot)."""
        return self.states.get(profile)

    def refresh_now(self, *profiles: str) -> None:
        """Make ``profiles`` due now (an operator's request, or a test's)."""
        now = self.clock.now()
        for name in profiles:
            state = self.states.get(name)
            if state is not None:
                self.states[name] = replace(state, due=now)
        self.poke()

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until stopped; ``task_status.started()`` fires when READY=1 is sent."""
        self._emit(
            event(
                "daemon.started",
                pid=os.getpid(),
                config=self.config.path,
                credentials_file=self.config.credentials_file,
                roles=len(self.config.roles),
                max_concurrency=self.config.max_concurrency,
                watchdog_s=self.watchdog,
            )
        )
        # The signal receiver is open from the start (a SIGTERM during the first read of the
        # file must not get Python's default action) and stays open until the last write is
        # done, so a second SIGTERM during that write cannot kill the process half way.
        with contextlib.ExitStack() as stack:
            signals = None
            if self.handle_signals:
                signals = stack.enter_context(
                    anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
                )
            try:
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    if self.stop_reason is not None:
                        tg.cancel_scope.cancel()  # stop() came before the task group existed
                    if signals is not None:
                        tg.start_soon(self._signals, signals)
                    await self._seed_from_file()
                    if self.keeper is not None:
                        tg.start_soon(self.keeper.run)
                    for service in self.services:
                        await tg.start(service)
                    tg.start_soon(self._scheduler)
                    with anyio.move_on_after(STARTUP_LIMIT):
                        await self.first_round.wait()
                    await self.files.flush()
                    self._notify_status(force=True)
                    if self.stop_reason is None:
                        self.notifier.send("READY=1")
                        self._emit(event("daemon.ready", status=self.last_status))
                        self.ready.set()
                        task_status.started()
                    tg.start_soon(self.files.write_loop)
                    tg.start_soon(self.files.state_loop)
            finally:
                with anyio.move_on_after(self.stop_grace, shield=True):
                    await self.files.flush(lock_timeout=max(self.stop_grace - 2, 0.5), final=True)
                    await self.sts.reset()
                self._emit(event("daemon.stopped", writes=self.writes))
                self.done.set()

    def stop(self, reason: str = "requested") -> None:
        """Begin a graceful stop: in-flight calls are cancelled, a write in progress finishes.

        Works at any time, also before ``run`` has started its task group.
        """
        if self.stop_reason is not None:
            return
        self.stop_reason = reason
        self._emit(event("daemon.stopping", reason=reason))
        self.notifier.send("STOPPING=1")
        self.writer.stopping.set()
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
            found = await anyio.to_thread.run_sync(
                read_profiles, self.config.credentials_file, abandon_on_cancel=True
            )
        except CredentialsFileError:
            found = {}  # reported when the first write is attempted
        table, warm = roles.seed_table(
            self.states,
            found,
            now=self.clock.now(),
            policy=self.config.refresh,
            uniforms=iter(self.rng, None),
            spread=self.start_spread,
        )
        self.states.update(table)
        self.unattempted -= warm
        if self.config.serve is not None:  # the endpoint hands out warm profiles at once
            known = self.served.warm(self.states, self.unattempted)
            await anyio.to_thread.run_sync(self.served.load, self.config.credentials_file, known)
        if not self.unattempted:
            self.first_round.set()

    def _emit(self, *items: Event) -> None:
        emit(self.log, *items)

    def _apply(self, name: str, transition: Transition) -> None:
        self.states[name] = transition.state
        self._emit(*transition.events)

    # -- scheduling ------------------------------------------------------------------------

    async def _scheduler(self) -> None:
        while True:
            self.wake = anyio.Event()
            now = self.clock.now()
            self._report_expired(now)
            self.states.collect_due(now)
            while len(self.in_flight) < self.config.max_concurrency:
                state = self.states.next_ready(now, self.in_flight)
                if state is None:
                    break
                self._start(state, now)  # or parked, or waiting for its source role
            self._ping()
            self._notify_status()
            horizon = min(self.slice_s, self.watchdog) if self.watchdog else self.slice_s
            wait = self._next_wait(now, horizon)
            self.wake_at = now + timedelta(seconds=wait)
            with anyio.move_on_after(wait):
                await self.wake.wait()

    def _next_wait(self, now: datetime, horizon: float) -> float:
        """Seconds to sleep: until the earliest due time or expiry to report.

        At most ``horizon`` (the bounded slice that notices clock jumps). Due roles waiting for
        a free slot are started when a call ends.
        """
        soonest = now + timedelta(seconds=horizon)
        for moment in (self.states.next_due(self.in_flight), self.states.next_expiry()):
            if moment is not None and moment < soonest:
                soonest = moment
        return max(min((soonest - now).total_seconds(), horizon), 0.0)

    def _start(self, state: RoleState, now: datetime) -> None:
        assert self._tg is not None  # noqa: S101 - only called from inside run()
        source: Credentials | None = None
        sp = state.role.source_profile
        parent = None if sp is None else self.states.get(sp)
        if sp is None and self.keeper is not None:
            source = self.keeper.signer(now)
            if source is None:
                self._park(state, now)
                return
        if parent is not None:
            # Never call with a parent session that could expire during the call.
            margin = self._margin(self.config)
            source = chains.signer(self.live.get(parent.role.profile), now, margin)
            if source is None:
                pulled = chains.pulled(parent, now, in_flight=parent.role.profile in self.in_flight)
                self.states[parent.role.profile] = pulled
                self._apply(state.role.profile, roles.waiting(state, pulled, now, CHAIN_RETRY))
                return
        if state.waiting_for is not None:  # the wait is over
            self.states[state.role.profile] = replace(state, waiting_for=None)
        self.in_flight.add(state.role.profile)
        self._tg.start_soon(self._refresh, state.role, state.generation, source)

    @staticmethod
    def _margin(config: Config) -> timedelta:
        """A signing session must outlive this: a call's connect and read timeouts."""
        return timedelta(seconds=2 * config.sts_timeout)

    def _park(self, state: RoleState, now: datetime) -> None:
        """No [source] session to sign with: wait for one (the keeper logs why, once)."""
        due = now + timedelta(seconds=PARK_S)
        self.states[state.role.profile] = replace(state, due=due, waiting_for=PARKED)
        if self.keeper is not None and self.keeper.blocked:
            self._attempted(state.role.profile)

    def _session_changed(self) -> None:
        """The keeper has a new session (pull the parked roles) or a problem (stop waiting)."""
        now = self.clock.now()
        blocked = self.keeper is not None and self.keeper.blocked
        for name, state in self.states.items():
            if state.waiting_for == PARKED:
                if blocked:
                    self._attempted(name)
                else:
                    self.states[name] = replace(state, due=now)
        self.poke()

    def _attempted(self, name: str) -> None:
        """``name`` counts as tried for the first round (READY=1 does not wait for it)."""
        self.unattempted.discard(name)
        if not self.unattempted:
            self.first_round.set()

    async def _refresh(self, role: Role, generation: int, source: Credentials | None) -> None:
        try:
            try:
                result = await self.sts.assume(role, source)
            except RefreshFailed as exc:
                self._failed(role, generation, exc)
            else:
                self._succeeded(role, generation, result)
        finally:
            self.in_flight.discard(role.profile)
            self.states.requeue(role.profile)
            self._attempted(role.profile)
            if not self.in_flight:
                self.idle.set()
            # Wake the scheduler when due roles wait for the slot this call frees, or when this
            # role is now due before it would look anyway.
            state = self.states.get(role.profile)
            if self.states.backlog or (state is not None and state.due < self.wake_at):
                self.wake.set()

    def _current(self, role: Role, generation: int) -> RoleState | None:
        state = self.states.get(role.profile)
        if state is None or state.generation != generation:
            return None  # removed or replaced by a reload while the call was in flight
        return state

    def _succeeded(self, role: Role, generation: int, result: Issued) -> None:
        state = self._current(role, generation)
        if state is None:
            return
        self.states[role.profile] = roles.issued(state, result, self.config.refresh, self.rng())
        self.live[role.profile] = result
        urgent = roles.urgent_write(state, self.clock.now())
        self.writer.add(replace(result, params=session_params(role)), urgent=urgent)

    def _failed(self, role: Role, generation: int, exc: RefreshFailed) -> None:
        state = self._current(role, generation)
        if state is None:
            return
        error = ErrorInfo(exc.code, exc.message, exc.transient, self.clock.now())
        self._apply(role.profile, roles.failed(state, error, self.config.refresh, self.rng()))
        if self.observer is not None:
            self.observer.failed(role.profile, exc.code)
        self.files.mark()

    def _report_expired(self, now: datetime) -> None:
        for name in self.states.newly_expired(now, self.writer.pending):
            self._apply(name, roles.expired(self.states[name], now))
            self.files.mark()

    # -- writing ---------------------------------------------------------------------------

    async def _settle(self) -> None:
        """Until no call is in flight (``Files`` bounds the wait)."""
        while self.in_flight:
            self.idle = anyio.Event()
            await self.idle.wait()

    def _apply_write(self, outcome: WriteOutcome, now: datetime) -> None:
        effects = roles.after_write(
            outcome,
            self.states,
            now=now,
            policy=self.config.refresh,
            path=self.config.credentials_file,
            uniforms=iter(self.rng, None),
        )
        if outcome.error is not None:
            self.writer.retain(self.states)  # pending credentials of removed roles are dropped
        self.states.update(effects.states)
        self._emit(*effects.events)
        for name, result in effects.kept:
            self.served.keep(name, result.credentials, result.role_arn)
        if self.observer is not None:
            if outcome.report is not None:
                self.observer.written(outcome.duration_s, outcome.report.changed)
            for name, code in effects.failures:
                self.observer.failed(name, code)
            for _, result in effects.kept:
                self.observer.refreshed(result)
        if outcome.error is not None or outcome.report is not None:
            self.files.mark()
        if effects.wake:
            self.wake.set()
        if outcome.error is None and outcome.report is not None:
            self._notify_status()

    async def _save_state(self) -> None:
        if self.observer is not None:
            self.observer.states(self.states.snapshot())
        now = self.clock.now()
        session = None if self.keeper is None else self.keeper.summary(now)
        failure = await record(
            self.config, self.states, now, session=session, renderer=self.state_text
        )
        if failure is not None:
            self._emit(failure)

    # -- systemd ---------------------------------------------------------------------------

    def _ping(self) -> None:
        if self.watchdog is None or self.writer.stuck():
            return  # a write that hangs past every bound is no progress: let systemd act
        now = time.monotonic()
        if now - self.last_ping >= self.watchdog / 2:
            self.last_ping = now
            self.notifier.send("WATCHDOG=1")

    def _notify_status(self, *, force: bool = False) -> None:
        now = self.clock.now()
        counts, next_due = self.states.status(now)
        line = status_text(counts, next_due, now)
        note = None if self.keeper is None else self.keeper.note(now)
        if note is not None:
            line = f"{note}; {line}"
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
                if self.ready.is_set() and self.stop_reason is None:
                    self.notifier.send("READY=1")
                self._notify_status(force=True)
            return accepted

    async def _reload(self) -> bool:
        old = self.config
        try:
            # In a worker thread: 10,000 roles take a second to parse and validate, and the
            # loop keeps pinging the watchdog and writing meanwhile.
            new = await anyio.to_thread.run_sync(self.loader, old.path)
            plan = plan_reload(old, new)
        except ConfigError as exc:
            self._emit(event("config.rejected", path=old.path, errors=list(exc.problems)))
            return False
        except Exception as exc:  # noqa: BLE001 - a bad file must never end the daemon
            problem = f"{old.path}: unexpected error: {type(exc).__name__}: {exc}"
            self._emit(event("config.rejected", path=old.path, errors=[problem]))
            return False
        self.served.drop(plan.removed)
        for name in plan.removed:
            self.writer.remove(name)
            self.live.pop(name, None)
        for name in (*plan.added, *plan.changed):
            self.writer.forget(name)
            self.live.pop(name, None)
        self.states = RoleTable(
            roles.reloaded(self.states, new.roles, plan, self.clock.now(), self.generations)
        )
        self.config = new
        self.writer.set_delay(new.refresh.write_delay)
        if self.keeper is not None and new.session is not None:
            self.keeper.adopt(new.session, new.refresh, self._margin(new))
        if plan.sts_changed:
            await self.sts.reset(new)
        self._emit(
            event(
                "config.reloaded",
                path=new.path,
                roles=len(new.roles),
                added=list(plan.added),
                removed=list(plan.removed),
                changed=list(plan.changed),
            )
        )
        self.files.mark()
        self.wake.set()
        return True
