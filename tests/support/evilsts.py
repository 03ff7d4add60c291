"""A hostile STS on loopback: it answers AssumeRole with whatever the test scripts.

Real HTTP and STS's XML (built with the demo STS's own builders), so botocore parses the answer
exactly as it would parse one from a party on the network path. The test sets ``answer``: a
function from the request's parameters to ``(status, body)``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Self

from aiohttp import web

from credrefresh.demosts import (
    assume_role_xml,
    error_xml,
    iso8601,
    new_access_key_id,
    new_secret_access_key,
    new_session_token,
)

Answer = Callable[[Mapping[str, str]], tuple[int, str]]

__all__ = ["Answer", "EvilSTS", "answer_with", "denied_quoting"]


def answer_with(**fields: str) -> Answer:
    """A successful AssumeRole answer, real-looking except for the ``fields`` given."""

    def answer(params: Mapping[str, str]) -> tuple[int, str]:
        role = params.get("RoleArn", "arn:aws:iam::123456789012:role/r").rsplit("/", 1)[-1]
        values = {
            "access_key_id": new_access_key_id(),
            "secret_access_key": new_secret_access_key(),
            "session_token": new_session_token(),
            "expiration": iso8601(time.time() + 3600),
            "assumed_role_id": "AROAEXAMPLEEXAMPLE123",
            "assumed_arn": (
                f"arn:aws:sts::123456789012:assumed-role/{role}/{params.get('RoleSessionName')}"
            ),
        }
        values.update(fields)
        return 200, assume_role_xml(request_id="evil-1", **values)

    return answer


def denied_quoting(key: str) -> Answer:
    """AccessDenied whose message quotes the request's ``key`` back, as real STS does."""

    def answer(params: Mapping[str, str]) -> tuple[int, str]:
        message = f"User is not authorized: {key} {params.get(key)} did not match"
        return 403, error_xml("AccessDenied", message, "evil-2")

    return answer


class EvilSTS:
    """The server, on its own event loop in a thread (a context manager)."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The endpoint URL to configure as ``sts_endpoint_url``."""
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        params = dict(await request.post()) | dict(request.query)
        status, body = self.answer({k: str(v) for k, v in params.items()})
        return web.Response(status=status, text=body, content_type="text/xml")

    def _run(self, ready: concurrent.futures.Future[None]) -> None:
        async def main() -> None:
            app = web.Application()
            app.router.add_post("/", self._handle)
            runner = web.AppRunner(app)
            await runner.setup()
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
            await web.SockSite(runner, sock).start()
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            ready.set_result(None)
            try:
                await self._stop.wait()
            finally:
                await runner.cleanup()

        asyncio.run(main())

    def __enter__(self) -> Self:
        """Start listening; return once the port is bound."""
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        ready.result(timeout=10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop and join the thread."""
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=10)
