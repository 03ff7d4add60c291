"""Bounded listeners: a local client cannot hold connections open or starve the refresher.

Real sockets on 127.0.0.1, a real daemon subprocess with a lowered open-files limit and a real
flood; every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from credrefresh.listener import AcceptErrors, Limits, Listener, connection_cap, url_of
from process_support import Proc, clean_env, write_config

BOUND = 30.0
pytestmark = pytest.mark.anyio


# -- pure parts ------------------------------------------------------------------------------


def test_connection_cap_keeps_the_reserve() -> None:
    """The cap leaves the reserve and one accept burst free, and is never negative."""
    limits = Limits(max_connections=64, reserve_fds=128, backlog=16)
    assert connection_cap(limits, 8192, 40) == 64
    assert connection_cap(limits, 256, 40) == 64
    assert connection_cap(limits, 200, 40) == 16
    assert connection_cap(limits, 100, 40) == 0


def test_accept_errors_are_rate_limited() -> None:
    """One accept error is logged per interval; the ones in between are counted."""
    state = AcceptErrors()
    logged = []
    for now in (0.0, 1.0, 2.0, 59.0, 60.0, 61.0):
        log, state = state.seen(now, interval=60.0)
        logged.append((log, state.suppressed))
    assert logged == [(True, 0), (False, 1), (False, 2), (False, 3), (True, 0), (False, 1)]


def test_url_of_brackets_ipv6() -> None:
    """An IPv6 literal is bracketed so the URL can be used as it is."""
    assert url_of("::1", 33167, "/metrics") == "http://[::1]:33167/metrics"
    assert url_of("127.0.0.1", 9100, "/metrics") == "http://127.0.0.1:9100/metrics"


# -- a listener in this process --------------------------------------------------------------


async def hello(_request: web.Request) -> web.Response:
    """A tiny handler."""
    return web.Response(text="ok")


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    """A listener with two connections and a 0.5 s idle timeout."""
    limits = Limits(max_connections=2, idle_timeout=0.5, reserve_fds=0)
    app = web.Application(client_max_size=limits.client_max_size)
    app.router.add_get("/", hello)
    app.router.add_post("/", hello)
    with capture_logs():
        server = Listener(app, "127.0.0.1", 0, log=None, limits=limits)
        await server.start()
        try:
            yield server
        finally:
            await server.stop()


async def closed_after(reader: asyncio.StreamReader) -> float:
    """Seconds until the server closes the connection (reading everything it sends)."""
    started = time.monotonic()
    with anyio.fail_after(5):
        while await reader.read(65536):
            pass
    return time.monotonic() - started


async def test_idle_connection_is_closed(listener: Listener) -> None:
    """A connection that never sends a request is closed after the idle timeout."""
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    try:
        assert 0.4 < await closed_after(reader) < 3
    finally:
        writer.close()


async def test_slowloris_is_closed(listener: Listener) -> None:
    """Headers trickled a byte at a time never complete a request: the connection is closed
    within the idle timeout though bytes keep arriving."""
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    started = time.monotonic()
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
        for _ in range(40):  # bounded: 40 x 0.05 s, far past the timeout
            if reader.at_eof():
                break
            writer.write(b"X")
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.read(1), 0.05)
        assert reader.at_eof()
        assert time.monotonic() - started < 1.9
    finally:
        writer.close()


async def test_kept_alive_connection_is_closed_after_idling(listener: Listener) -> None:
    """After a response, a kept-alive connection that sends nothing more is closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with anyio.fail_after(5):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert 0.3 < await closed_after(reader) < 3
    finally:
        writer.close()


async def test_excess_connections_are_closed_at_once(listener: Listener) -> None:
    """Beyond the connection limit a new connection is closed immediately."""
    held = [await asyncio.open_connection("127.0.0.1", listener.port) for _ in range(2)]
    with anyio.fail_after(5):
        while len(listener.live) < 2:  # noqa: ASYNC110 - the accept runs on this loop
            await asyncio.sleep(0)
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    try:
        assert await closed_after(reader) < 0.3
    finally:
        writer.close()
        for _, w in held:
            w.close()


async def test_oversized_requests_are_refused(
    listener: Listener, caplog: pytest.LogCaptureFixture
) -> None:
    """A too long request line or header is answered 400 without a logged traceback."""
    cases = {
        b"GET /" + b"a" * 4096 + b" HTTP/1.1\r\nHost: x\r\n\r\n": {b"400"},
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4096 + b"\r\n\r\n": {b"400"},
        # The tiny handler never reads the body, so it may answer before the limit is hit.
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n" + b"a" * 4096: {
            b"413",
            b"200",
        },
    }
    for request, statuses in cases.items():
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        try:
            writer.write(request)
            with anyio.fail_after(5):
                head = await reader.readuntil(b"\r\n")
            assert head.split()[1] in statuses, head
        finally:
            writer.close()
    assert [r for r in caplog.records if r.exc_info] == []


# -- a flood against a daemon with few descriptors -------------------------------------------

NOFILE = 256
MAX_FLOOD = 2500  # connections the test opens at most, all held until the end


def lower_nofile() -> None:
    """In the child: an open-files limit a flood can exhaust."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


def flood(port: int, sockets: list[socket.socket], count: int) -> None:
    """Open up to ``count`` more non-blocking connections and hold them (at most MAX_FLOOD)."""
    for _ in range(min(count, MAX_FLOOD - len(sockets))):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        sockets.append(sock)


def test_flood_does_not_stop_credential_rotation(tmp_path: Path) -> None:
    """With the open-files limit at 256, a flood of connections to /metrics (hundreds more,
    all held open by the client) neither makes a credentials write fail nor stops rotation, an
    idle connection is still closed, and no traceback is printed."""
    from support.fakests import Faults, ThreadedFakeSTS  # noqa: PLC0415

    creds = tmp_path / ".aws" / "credentials"
    sockets: list[socket.socket] = []
    with ThreadedFakeSTS(Faults(latency=0, lifetime=2)) as sts:
        config = write_config(
            tmp_path / "config.toml",
            creds,
            sts.url,
            ["dev"],
            metrics_address="127.0.0.1:0",
            refresh={"write_delay": 0.0},
        )
        args = ["run", "--config", str(config), "--log-format", "json"]
        proc = Proc(args, clean_env(tmp_path), preexec_fn=lower_nofile)
        try:
            proc.wait_count("metrics.listening", 1, timeout=BOUND)
            proc.wait_count("credentials_file.written", 1, timeout=BOUND)
            port = int(proc.named("metrics.listening")[0]["address"].rsplit(":", 1)[1])
            idle = socket.create_connection(("127.0.0.1", port), timeout=BOUND)
            flood(port, sockets, 2 * NOFILE)
            written = len(proc.named("credentials_file.written"))
            deadline = time.monotonic() + BOUND
            rounds = 0
            while len(proc.named("credentials_file.written")) < written + 3:
                assert time.monotonic() < deadline, "no rotation during the flood"
                assert proc.named("credentials_file.error") == []
                assert rounds < 1000
                flood(port, sockets, 50)
                rounds += 1
                with contextlib.suppress(TimeoutError):
                    proc.wait_count("credentials_file.written", written + 3, timeout=0.2)
            assert idle.recv(1) == b""  # closed by the server (the timeout above bounds it)
            idle.close()
            assert proc.named("credentials_file.error") == []
            proc.signal(signal.SIGTERM)
            assert proc.wait_exit(BOUND) == 0
        finally:
            for sock in sockets:
                sock.close()
            proc.kill()
    assert "Traceback" not in proc.stderr
    listening = proc.named("metrics.listening")[0]
    assert 0 < listening["max_connections"] <= 64
    assert listening["url"] == f"http://127.0.0.1:{port}/metrics"


# -- accept errors ---------------------------------------------------------------------------

ACCEPT_SCRIPT = r"""
import asyncio, os, resource, socket, sys
from aiohttp import web
from credrefresh.listener import Limits, Listener
from credrefresh.logs import configure, get_logger

async def main():
    configure("json", "info")
    listener = Listener(web.Application(), "127.0.0.1", 0, get_logger(),
                        Limits(reserve_fds=0, max_connections=4))
    await listener.start()
    hog = []
    while True:  # use up every descriptor but one, so accept fails with EMFILE
        try:
            hog.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            break
    os.close(hog.pop())
    print(f"PORT {listener.port}", file=sys.stderr, flush=True)
    await asyncio.sleep(float(sys.argv[1]))  # the test floods meanwhile
    for fd in hog:
        os.close(fd)
    await listener.stop()

resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))
asyncio.run(main())
"""


def test_accept_errors_are_one_event_not_tracebacks(tmp_path: Path) -> None:
    """When accept fails for want of descriptors, the listener logs one ``listener.accept_error``
    event instead of a traceback per attempt."""
    proc = subprocess.Popen(
        [sys.executable, "-c", ACCEPT_SCRIPT, "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(tmp_path),
        text=True,
    )
    clients: list[socket.socket] = []
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert line.startswith("PORT "), line
        port = int(line.split()[1])
        for _ in range(30):  # the accept is retried every second; a few seconds of it
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            clients.append(sock)
        out, err = proc.communicate(timeout=BOUND)
    finally:
        for sock in clients:
            sock.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=BOUND)
    assert proc.returncode == 0, err
    events: list[dict[str, Any]] = [json.loads(line) for line in out.splitlines()]
    errors = [e for e in events if e["event"] == "listener.accept_error"]
    assert len(errors) == 1, events
    assert errors[0]["error"] == "EMFILE"
    assert "Traceback" not in err
    assert "out of system resource" not in err
