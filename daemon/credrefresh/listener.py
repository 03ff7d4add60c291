"""Bounded HTTP listeners: local clients must never starve the refresher of descriptors.

Every aiohttp endpoint the daemon serves (``/metrics`` today) goes through ``Listener``, which

* admits at most ``max_connections`` connections at once and closes any excess one at once,
  the cap lying well below the open-files limit so the credentials file can always be written
  (at start the soft ``RLIMIT_NOFILE`` is raised to the hard one when the sandbox allows it);
* accepts in small bursts (``backlog``), so a flood never holds many unadmitted sockets;
* closes a connection that has gone ``idle_timeout`` seconds without a complete request head:
  idle after connecting, kept alive between requests, or trickling headers (slowloris);
* caps request line, header field and body sizes;
* turns the event loop's ``socket.accept() out of system resource`` tracebacks into one
  rate-limited ``listener.accept_error`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import resource
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Final

import anyio
from aiohttp import web

from credrefresh.errors import ConfigError

__all__ = [
    "AcceptErrors",
    "Limits",
    "Listener",
    "connection_cap",
    "hostport",
    "listening",
    "raise_nofile",
    "url_of",
]

ACCEPT_ERROR_INTERVAL: Final = 60.0


@dataclass(frozen=True, slots=True)
class Limits:
    """How much one listener may take.

    Attributes:
        max_connections: Connections served at once (lowered further by ``connection_cap``).
        idle_timeout: Seconds a connection may go without a complete request head.
        backlog: Listen queue length, which is also how many sockets one accept burst takes.
        reserve_fds: Descriptors kept free for the refresher (file writes, STS connections).
        max_line_size: Longest request line, bytes.
        max_field_size: Longest header field, bytes.
        client_max_size: Largest request body, bytes.
    """

    max_connections: int = 64
    idle_timeout: float = 5.0
    backlog: int = 16
    reserve_fds: int = 128
    max_line_size: int = 2048
    max_field_size: int = 2048
    client_max_size: int = 1024


def connection_cap(limits: Limits, nofile: int, open_fds: int) -> int:
    """How many connections fit under ``nofile`` beside ``open_fds`` and the reserve (>= 0)."""
    room = nofile - open_fds - limits.reserve_fds - limits.backlog
    return max(0, min(limits.max_connections, room))


def raise_nofile() -> int:
    """Raise the soft open-files limit to the hard one if allowed; return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        # A seccomp filter (SystemCallFilter=~@resources) may refuse; then the unit's
        # LimitNOFILE= has set both already.
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def open_descriptors() -> int:
    """Descriptors open in this process now (0 when it cannot be told)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def url_of(host: str, port: int, path: str) -> str:
    """An HTTP URL for ``host``/``port``, IPv6 literals in brackets."""
    return f"http://{hostport(host, port)}{path}"


def hostport(host: str, port: int) -> str:
    """``host:port``, with an IPv6 literal in brackets so the port stays unambiguous."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class AcceptErrors:
    """Rate limit of the accept-error event (pure).

    Attributes:
        last: Monotonic time of the last event logged, or ``None``.
        suppressed: Errors seen since then and not logged.
    """

    last: float | None = None
    suppressed: int = 0

    def seen(
        self, now: float, interval: float = ACCEPT_ERROR_INTERVAL
    ) -> tuple[bool, AcceptErrors]:
        """Whether to log this error, and the new state."""
        if self.last is None or now - self.last >= interval:
            return True, AcceptErrors(now, 0)
        return False, replace(self, suppressed=self.suppressed + 1)


def _quiet_logger() -> logging.Logger:
    quiet = logging.getLogger("credrefresh.listener.http")
    quiet.propagate = False
    quiet.disabled = True
    if not quiet.handlers:
        quiet.addHandler(logging.NullHandler())
    return quiet


class _Bounded(asyncio.Protocol):
    """Admits a connection if there is room and closes it when it idles; else drops it."""

    def __init__(self, listener: Listener, inner: asyncio.Protocol) -> None:
        self.listener = listener
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.admitted = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 - TCP servers give one
        self.transport = transport
        if len(self.listener.live) >= self.listener.cap:
            transport.abort()
            return
        self.admitted = True
        self.listener.live[transport] = self
        self.inner.connection_made(transport)
        self.idle()

    def idle(self) -> None:
        """Start the clock: a complete request head must come within the idle timeout."""
        self.busy()
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.listener.limits.idle_timeout, self.expire)

    def busy(self) -> None:
        """A request is being served: stop the clock."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def expire(self) -> None:
        self.timer = None
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.admitted:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.admitted else None

    def pause_writing(self) -> None:
        if self.admitted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.admitted:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.busy()
        if self.admitted:
            self.admitted = False
            if self.transport is not None:
                self.listener.live.pop(self.transport, None)
            self.inner.connection_lost(exc)


class Listener:
    """An aiohttp application served on ``host``/``port`` within ``Limits``."""

    def __init__(
        self,
        app: web.Application,
        host: str,
        port: int,
        log: Any,  # noqa: ANN401 - structlog's bound loggers are dynamically typed
        limits: Limits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits or Limits()
        self.host = host
        self.port = port
        self.log = log
        self.clock = clock
        self.cap = self.limits.max_connections
        self.live: dict[asyncio.Transport, _Bounded] = {}
        self.accept_errors = AcceptErrors()
        self._fds: set[int] = set()
        self._server: asyncio.Server | None = None
        self._previous: Any = None
        app.middlewares.append(self._middleware)
        self.runner = web.AppRunner(
            app,
            access_log=None,
            # aiohttp logs a traceback quoting the request for each malformed one: a local
            # client could fill the journal with it. The client gets its 400; that is enough.
            logger=_quiet_logger(),
            keepalive_timeout=self.limits.idle_timeout,
            max_line_size=self.limits.max_line_size,
            max_field_size=self.limits.max_field_size,
        )

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        bounded = self.live.get(request.transport) if request.transport is not None else None
        if bounded is not None:
            bounded.busy()
        try:
            return await handler(request)
        finally:
            if bounded is not None and bounded.admitted:
                bounded.idle()  # the response must be taken within the timeout too

    async def start(self) -> None:
        """Bind and listen.

        Raises:
            OSError: the address cannot be bound.
        """
        self.cap = connection_cap(self.limits, raise_nofile(), open_descriptors())
        await self.runner.setup()
        factory = self.runner.server
        assert factory is not None  # noqa: S101 - set by setup()
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _Bounded(self, factory()),
                self.host,
                self.port,
                backlog=self.limits.backlog,
                reuse_address=True,
            )
        except BaseException:
            await self.runner.cleanup()
            raise
        sockets = self._server.sockets
        self._fds = {sock.fileno() for sock in sockets}
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        self._previous = loop.get_exception_handler()
        loop.set_exception_handler(self._loop_error)

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        loop = asyncio.get_running_loop()
        if loop.get_exception_handler() == self._loop_error:
            loop.set_exception_handler(self._previous)
        if self._server is not None:
            self._server.close()
        for transport in list(self.live):
            transport.abort()
        await self.runner.cleanup()

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        sock = context.get("socket")
        exc = context.get("exception")
        ours = sock is not None and sock.fileno() in self._fds
        if not (ours and isinstance(exc, OSError)):
            if self._previous is not None:
                self._previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        suppressed = self.accept_errors.suppressed
        log, self.accept_errors = self.accept_errors.seen(self.clock())
        if log:
            self.log.error(
                "listener.accept_error",
                address=hostport(self.host, self.port),
                error=errno.errorcode.get(exc.errno or 0, "OSError"),
                message=exc.strerror,
                connections=len(self.live),
                suppressed=suppressed,
            )


@contextlib.asynccontextmanager
async def listening(
    app: web.Application,
    host: str,
    port: int,
    log: Any,  # noqa: ANN401 - structlog's bound logger
    limits: Limits,
    *,
    config_path: str,
    key: str,
) -> AsyncIterator[Listener]:
    """A started ``Listener`` for the ``async with`` body, stopped (shielded) after it.

    Raises:
        ConfigError: the address cannot be bound; the message names ``key``.
    """
    listener = Listener(app, host, port, log, limits)
    try:
        await listener.start()
    except OSError as exc:
        problem = (
            f"{config_path}: {key}: cannot listen on {hostport(host, port)}: {exc.strerror or exc}"
        )
        raise ConfigError(config_path, [problem]) from None
    try:
        yield listener
    finally:
        with anyio.CancelScope(shield=True):
            await listener.stop()
