"""The credentials endpoint: what the SDKs' container credentials provider asks for.

``GET /v1/credentials/<profile>`` with the token in ``Authorization`` answers the container
provider's JSON from the daemon's memory (``Daemon.credentials``), never from a new STS call.
Loopback only, a bearer token compared in constant time, browsers (``Origin``), DNS rebinding
(a ``Host`` that is not our literal) and proxies (``X-Forwarded-For``) refused, connections
bounded in number, idleness and size (``listener.Listener``). Every answer is audited
(``credentials.served``, ``credentials.refused``); the secret and the token never are.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import unquote

import anyio
from aiohttp import web
from anyio.abc import TaskStatus

from credrefresh.errors import ConfigError
from credrefresh.events import emit, event
from credrefresh.listener import Limits, hostport, listening
from credrefresh.model import RoleState, format_time
from credrefresh.seams import Clock
from credrefresh.serveconfig import ServeConfig
from credrefresh.served import Entry, Served

__all__ = ["PREFIX", "Endpoint", "Refusal", "check_request", "ensure_token"]

PREFIX: Final = "/v1/credentials/"
# Connections at once (fewer if the open-files limit is low), 5 s without a complete request head
# (idle, kept alive or trickling: slowloris), request line and header fields 2 KiB, body 1 KiB.
LIMITS: Final = Limits(max_connections=256, backlog=64)
TOKEN_BYTES: Final = 32  # secrets.token_urlsafe(32): 256 bits, 43 characters
MIN_TOKEN: Final = 32  # characters a token read from an existing file must have


class Source(Protocol):
    """Where the endpoint reads from (the daemon): its roles, its clock, what it wrote."""

    @property
    def states(self) -> Mapping[str, RoleState]:
        """The role table."""
        ...

    served: Served
    clock: Clock


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is refused.

    Attributes:
        status: The HTTP status answered.
        reason: A short code, logged as ``reason`` (``no_token``, ``origin``...).
        message: What the client is told.
    """

    status: int
    reason: str
    message: str


def check_request(
    method: str, raw_path: str, headers: Mapping[str, str], *, netloc: str, token: bytes
) -> Refusal | str:
    """The profile asked for, or why the request is refused (pure; headers case-insensitive)."""
    if "Origin" in headers:
        return Refusal(403, "origin", "requests from browsers are refused")
    if "X-Forwarded-For" in headers or "Forwarded" in headers:
        return Refusal(403, "forwarded", "proxied requests are refused")
    if headers.get("Host", "").lower() != netloc.lower():
        return Refusal(403, "host", f"the Host header must be {netloc}")
    given = headers.get("Authorization")
    if not given:
        return Refusal(401, "no_token", "the Authorization header is missing")
    if not hmac.compare_digest(given.encode("utf-8", "replace"), token):
        return Refusal(403, "bad_token", "the Authorization token is wrong")
    if method not in {"GET", "HEAD"}:
        return Refusal(405, "method", "only GET is answered")
    if not raw_path.startswith(PREFIX) or raw_path == PREFIX or "?" in raw_path:
        return Refusal(404, "unknown_path", f"ask for {PREFIX}<profile>")
    return unquote(raw_path.removeprefix(PREFIX))


def container_json(entry: Entry) -> dict[str, str]:
    """The container credentials provider's answer (secrets included: only for the wire)."""
    creds = entry.credentials
    return {
        "AccessKeyId": creds.access_key_id,
        "SecretAccessKey": creds.secret_access_key,
        "Token": creds.session_token,
        "Expiration": format_time(creds.expiration),
        "AccountId": entry.role_arn.split(":")[4],
    }


def ensure_token(serve: ServeConfig, config_path: str) -> bytes:
    """The token, from ``serve.token_file``; a new random one (0600, no newline) when missing.

    Raises:
        ConfigError: the file cannot be created or read, is world-accessible, or holds
            something that is not a usable token.
    """
    path = serve.token_file

    def problem(message: str) -> ConfigError:
        return ConfigError(config_path, [f"{config_path}: serve.token_file: {path}: {message}"])

    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise problem(f"cannot create: {exc.strerror}") from None
    else:
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(secrets.token_urlsafe(TOKEN_BYTES))  # no newline: botocore refuses one
    try:
        with open(path, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            token = handle.read(4096)
    except OSError as exc:
        raise problem(f"cannot read: {exc.strerror}") from None
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        raise problem("readable or writable by every user; chmod o-rw (use a group instead)")
    printable = all(0x20 < b < 0x7F for b in token)  # noqa: PLR2004
    if len(token) < MIN_TOKEN or not printable:
        raise problem(
            f"expected at least {MIN_TOKEN} printable characters and no line break or space "
            "(botocore refuses a token with a newline); delete it to have a new one made"
        )
    return token


def peer(request: web.Request) -> dict[str, Any]:
    """The client's address and port, for the audit trail."""
    info = request.transport.get_extra_info("peername") if request.transport else None
    if not info:
        return {"client": None, "port": None}
    return {"client": str(info[0]), "port": int(info[1])}


class Endpoint:
    """The HTTP endpoint, run as a service in the daemon's task group."""

    def __init__(self, serve: ServeConfig, config_path: str) -> None:
        self.settings = serve
        self.config_path = config_path
        self.port = serve.port
        self.source: Source | None = None  # the daemon, attached once it exists
        self.token = b""
        self.log: Any = None
        self.netloc = serve.netloc

    def attach(self, source: Source) -> None:
        """Read credentials from ``source``."""
        self.source = source

    def _refuse(self, request: web.Request, refusal: Refusal, profile: str | None) -> web.Response:
        emit(
            self.log,
            event(
                "credentials.refused",
                reason=refusal.reason,
                status=refusal.status,
                profile=profile,
                path=request.raw_path[:128] if profile is None else None,
                **peer(request),
            ),
        )
        body = {"code": refusal.reason, "message": refusal.message}
        return web.json_response(body, status=refusal.status, headers={"Cache-Control": "no-store"})

    async def _handle(self, request: web.Request) -> web.Response:
        checked = check_request(
            request.method, request.raw_path, request.headers, netloc=self.netloc, token=self.token
        )
        if isinstance(checked, Refusal):
            return self._refuse(request, checked, None)
        profile = checked
        source = self.source
        assert source is not None  # noqa: S101 - attached before the service starts
        if profile not in source.states or not self.settings.serves(profile):
            refusal = Refusal(404, "unknown_profile", "no such profile is served here")
            return self._refuse(request, refusal, profile)
        entry = source.served.get(profile, source.clock.now())
        if entry is None:
            message = "no valid credentials for this profile right now; retry later"
            return self._refuse(request, Refusal(503, "no_credentials", message), profile)
        emit(
            self.log,
            event(
                "credentials.served",
                profile=profile,
                access_key_id=entry.credentials.access_key_id,
                expiration=format_time(entry.credentials.expiration),
                **peer(request),
            ),
        )
        return web.Response(
            text=json.dumps(container_json(entry)),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    async def serve(self, log: Any, *, task_status: TaskStatus[None]) -> None:  # noqa: ANN401
        """Serve until cancelled; ``task_status.started()`` once listening."""
        self.log = log
        self.token = await anyio.to_thread.run_sync(ensure_token, self.settings, self.config_path)
        app = web.Application(client_max_size=LIMITS.client_max_size)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        async with listening(
            app,
            self.settings.host,
            self.settings.port,
            log,
            LIMITS,
            config_path=self.config_path,
            key="serve.address",
        ) as listener:
            self.port = listener.port
            self.netloc = hostport(self.settings.host, self.port)
            listening_event = event(
                "serve.listening",
                address=self.netloc,
                path=PREFIX,
                max_connections=listener.cap,
            )
            emit(log, listening_event)
            task_status.started()
            await anyio.sleep_forever()
