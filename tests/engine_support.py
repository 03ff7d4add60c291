"""Helpers for driving the engine in-process: a scripted STS client, a jumpable clock and a
logger that lets a test wait (with a bound) for an event instead of sleeping."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel

from credrefresh.config import Config, RefreshPolicy, Role
from credrefresh.errors import RefreshFailed
from credrefresh.model import Credentials, Issued

SECRET_PREFIX = "SeCrEt"
TOKEN_PREFIX = "ToKeN"


class JumpClock:
    """The wall clock plus an offset a test can move (a simulated suspend or clock jump)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


class ScriptedSts:
    """An in-process StsClient: issues credentials of a fixed lifetime, or scripted failures."""

    def __init__(self, clock: JumpClock, lifetime: float) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.queued: dict[str, list[RefreshFailed]] = {}
        self.always: dict[str, RefreshFailed] = {}
        self.calls: list[str] = []
        self.signers: list[tuple[str, str | None]] = []  # (profile, signing access key id)
        self.resets = 0
        self.hang = False
        self.gate: anyio.Event | None = None  # when set, calls wait for it
        self._called = anyio.Event()
        self._serial = itertools.count()

    async def wait_calls(
        self, predicate: Callable[[list[str]], bool], timeout: float = 10.0
    ) -> None:
        """Wait (bounded) until the list of calls made so far satisfies ``predicate``."""
        with anyio.fail_after(timeout):
            while not predicate(self.calls):
                await self._called.wait()

    async def assume(self, role: Role, source: Credentials | None = None) -> Issued:
        self.calls.append(role.profile)
        self.signers.append((role.profile, None if source is None else source.access_key_id))
        self._called.set()
        self._called = anyio.Event()
        await anyio.lowlevel.checkpoint()
        if self.hang:
            await anyio.sleep_forever()
        if self.gate is not None:
            await self.gate.wait()
        if role.profile in self.always:
            raise self.always[role.profile]
        queue = self.queued.get(role.profile)
        if queue:
            raise queue.pop(0)
        now = self.clock.now()
        serial = next(self._serial)
        name = role.role_arn.rsplit("/", 1)[-1]
        return Issued(
            profile=role.profile,
            role_arn=role.role_arn,
            session_name=role.session_name,
            assumed_role_arn=f"arn:aws:sts::123456789012:assumed-role/{name}/{role.session_name}",
            credentials=Credentials(
                access_key_id=f"ASIA{serial:016d}",
                secret_access_key=f"{SECRET_PREFIX}{serial:034d}",
                session_token=f"{TOKEN_PREFIX}{serial:0200d}",
                expiration=now + timedelta(seconds=self.lifetime),
            ),
            issued_at=now,
            duration_ms=1.0,
        )

    async def reset(self, config: Config | None = None) -> None:
        self.resets += 1


class Recorder:
    """A logger stand-in that records event dicts and wakes waiters on every event."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._changed = anyio.Event()

    def _log(self, level: str, event: str, **fields: Any) -> None:
        self.events.append({"event": event, "log_level": level, **fields})
        self._changed.set()
        self._changed = anyio.Event()

    def debug(self, event: str, **fields: Any) -> None:
        self._log("debug", event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log("info", event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log("warning", event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log("error", event, **fields)

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == name]

    async def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 10.0
    ) -> None:
        with anyio.fail_after(timeout):
            while not predicate(self.events):
                await self._changed.wait()

    async def wait_count(self, name: str, count: int, timeout: float = 10.0) -> None:
        await self.wait_for(lambda events: len(self.named(name)) >= count, timeout)


def make_config(
    tmp_path: Any,
    profiles: list[str],
    **refresh: float,
) -> Config:
    """A config of roles r0..rN writing to tmp_path, with a fast refresh policy."""
    policy = replace(
        RefreshPolicy(
            backoff_initial=0.05,
            backoff_max=0.5,
            permanent_backoff_initial=0.2,
            permanent_backoff_max=1.0,
            write_delay=0.05,
        ),
        **refresh,
    )
    roles = tuple(
        Role(profile=p, role_arn=f"arn:aws:iam::123456789012:role/{p}", session_name=f"s-{p}")
        for p in profiles
    )
    return Config(
        path=str(tmp_path / "config.toml"),
        credentials_file=str(tmp_path / "aws" / "credentials"),
        region="us-east-1",
        roles=roles,
        state_file=str(tmp_path / "state" / "state.json"),
        refresh=policy,
    )
