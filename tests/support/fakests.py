"""A fake AWS STS server speaking the real STS query/XML protocol.

The server is built on :mod:`aiohttp.web` and understands just enough of the
AWS Security Token Service wire protocol (``Version=2011-06-15``, form-encoded
``POST`` bodies on any path, XML answers) for botocore, aioboto3, boto3 and the
AWS CLI to talk to it through ``endpoint_url`` or ``AWS_ENDPOINT_URL_STS``:

* ``AssumeRole`` issues random, obviously fake temporary credentials
  (``ASIA...`` access key ids) for any well-formed role ARN.
* ``GetCallerIdentity`` answers with the assumed-role identity for access keys
  this server issued, and with ``arn:aws:iam::123456789012:user/source`` for
  any other key.  Request signatures are never verified; only the access key
  id is read from the ``Authorization`` header.  Keys it issued are answered
  with ``ExpiredToken`` once their advertised expiration has passed, like STS.

Faults (latency, short credential lifetimes, throttling, internal errors,
hanging requests, access denied, expired source tokens) are described by the
frozen :class:`Faults` dataclass.  They are set at start and can be replaced at
runtime, in-process (:meth:`FakeSTS.set_faults`) or over HTTP through the
control endpoints, which live under ``/_fake/``:

* ``GET /_fake/faults`` -- the current faults as JSON.
* ``POST /_fake/faults`` -- a JSON object with any subset of the
  :class:`Faults` fields (``deny_roles`` as a list) replaces those fields.
* ``GET /_fake/stats`` -- request counters (see :class:`Stats`) as JSON.
* ``POST /_fake/reset-stats`` -- zero the counters.
* ``GET /_fake/calls`` -- the most recent successful ``AssumeRole`` calls.
* ``GET /_fake/health`` -- ``{"ok": true}``.

Ways to run it:

* ``async with serve(Faults(lifetime=5)) as sts: ...`` inside an event loop;
* ``ThreadedFakeSTS`` for synchronous code (its own loop in a daemon thread);
* ``python -m support.fakests --port 0 --lifetime 20`` as a separate process,
  which prints one JSON line ``{"url": ..., "port": ..., "pid": ...}`` to
  stdout once it is listening and exits 0 on SIGTERM or SIGINT.

It only ever listens on loopback addresses.  None of the secrets it hands out
are real.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import math
import os
import random
import re
import signal
import sys
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, Self, TypeVar
from urllib.parse import parse_qsl

from aiohttp import web

from credrefresh.demosts import (
    DEFAULT_ACCOUNT,
    DEFAULT_SOURCE_ARN,
    STS_NAMESPACE,
    assume_role_xml,
    caller_access_key,
    caller_identity_xml,
    error_xml,
    is_loopback,
    iso8601,
    new_access_key_id,
    new_secret_access_key,
    new_session_token,
    role_id,
)
from credrefresh.demosts import Identity as _Identity

__all__ = [
    "DEFAULT_ACCOUNT",
    "DEFAULT_SOURCE_ARN",
    "STS_NAMESPACE",
    "AssumeRoleCall",
    "FakeSTS",
    "Faults",
    "SessionCall",
    "Stats",
    "ThreadedFakeSTS",
    "build_parser",
    "faults_from_args",
    "main",
    "serve",
]

STS_VERSION: Final = "2011-06-15"
_RECENT_CALLS: Final = 256
_MIN_DURATION: Final = 900
_MAX_DURATION: Final = 43200
_MAX_TAGS: Final = 50
_MAX_POLICY_ARNS: Final = 10
_PACKED_POLICY_BYTES: Final = 2048
_MAX_PERCENT: Final = 100

_ROLE_ARN_RE: Final = re.compile(
    r"arn:(aws|aws-cn|aws-us-gov):iam::(\d{12}):role/(?:[\w+=,.@-]+/)*([\w+=,.@-]{1,64})",
    re.ASCII,
)
_SESSION_NAME_RE: Final = re.compile(r"[\w+=,.@-]{2,64}", re.ASCII)

_T = TypeVar("_T")


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Faults:
    """Fault-injection settings of a :class:`FakeSTS`.

    Attributes:
        latency: seconds slept before answering each STS request.
        lifetime: credential lifetime in seconds; ``None`` means honour the
            request's ``DurationSeconds`` (default 3600) like real STS.
        throttle_rate: probability (0..1) that a request gets ``Throttling``.
        error_rate: probability (0..1) that a request gets a 500
            ``InternalFailure``.
        hang: accept requests but never answer them until the client goes
            away or ``hang`` is switched off (then they are answered); when
            the server stops they are dropped unanswered.
        deny_roles: role ARNs whose ``AssumeRole`` gets ``AccessDenied``.
        expired_token: every request gets ``ExpiredToken``.
        seed: seed of the random generator deciding throttling and errors.
    """

    latency: float = 0.05
    lifetime: float | None = None
    throttle_rate: float = 0.0
    error_rate: float = 0.0
    hang: bool = False
    deny_roles: frozenset[str] = field(default_factory=frozenset)
    expired_token: bool = False
    seed: int | None = None

    def __post_init__(self) -> None:
        """Validate the values; coerce ``deny_roles`` to a frozenset."""
        if not isinstance(self.deny_roles, frozenset):
            # Accept any iterable of strings at runtime (e.g. a list or set).
            object.__setattr__(self, "deny_roles", frozenset(self.deny_roles))
        if not math.isfinite(self.latency) or self.latency < 0:
            raise ValueError(f"latency must be a finite number >= 0, not {self.latency!r}")
        if self.lifetime is not None and (not math.isfinite(self.lifetime) or self.lifetime <= 0):
            raise ValueError(f"lifetime must be None or a number > 0, not {self.lifetime!r}")
        for name in ("throttle_rate", "error_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {value!r}")
        if not all(isinstance(arn, str) for arn in self.deny_roles):
            raise ValueError("deny_roles must contain strings")

    def to_json(self) -> dict[str, object]:
        """Return the faults as a JSON-compatible dict (``deny_roles`` sorted)."""
        return {
            "latency": self.latency,
            "lifetime": self.lifetime,
            "throttle_rate": self.throttle_rate,
            "error_rate": self.error_rate,
            "hang": self.hang,
            "deny_roles": sorted(self.deny_roles),
            "expired_token": self.expired_token,
            "seed": self.seed,
        }

    def updated(self, changes: Mapping[str, object]) -> Faults:
        """Return a copy with the fields in ``changes`` replaced.

        ``changes`` uses the JSON representation (``deny_roles`` may be any
        list/set/tuple of strings).  Unknown fields and out-of-range values
        raise :class:`ValueError`, wrongly typed values :class:`TypeError`.
        """
        kwargs = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for key, value in changes.items():
            kwargs[key] = _check_fault_value(key, value)
        return Faults(**kwargs)


def _number(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{key} must be a number")
    return float(value)


def _optional_number(key: str, value: object) -> float | None:
    return None if value is None else _number(key, value)


def _boolean(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{key} must be a boolean")
    return value


def _optional_int(key: str, value: object) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise TypeError(f"{key} must be an integer or null")
    return value


def _role_set(key: str, value: object) -> frozenset[str]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, set, frozenset)):
        raise TypeError(f"{key} must be a list of role ARNs")
    if not all(isinstance(arn, str) for arn in value):
        raise TypeError(f"{key} must contain strings")
    return frozenset(value)


_FAULT_CHECKERS: Final[Mapping[str, Callable[[str, object], object]]] = {
    "latency": _number,
    "lifetime": _optional_number,
    "throttle_rate": _number,
    "error_rate": _number,
    "hang": _boolean,
    "deny_roles": _role_set,
    "expired_token": _boolean,
    "seed": _optional_int,
}


def _check_fault_value(key: str, value: object) -> object:
    """Type-check one fault field coming from JSON or keyword arguments."""
    checker = _FAULT_CHECKERS.get(key)
    if checker is None:
        raise ValueError(f"unknown fault field {key!r}")
    return checker(key, value)


@dataclass(frozen=True, slots=True)
class Stats:
    """A snapshot of the request counters of a :class:`FakeSTS`.

    Attributes:
        requests: STS requests received (control endpoints excluded).
        assume_role: of those, ``AssumeRole`` requests.
        ok: successful (HTTP 200) STS answers.
        throttled: ``Throttling`` answers.
        errors: other error answers: injected ``InternalFailure`` 500s and
            invalid requests (``ValidationError``, ``InvalidAction``, ...).
        denied: ``AccessDenied`` answers.
        expired: ``ExpiredToken`` answers.
        hung: requests that were held by the ``hang`` fault.
        in_flight: STS requests currently being handled.
        max_in_flight: highest ``in_flight`` seen since start / last reset.
    """

    requests: int = 0
    assume_role: int = 0
    ok: int = 0
    throttled: int = 0
    errors: int = 0
    denied: int = 0
    expired: int = 0
    hung: int = 0
    in_flight: int = 0
    max_in_flight: int = 0

    def to_json(self) -> dict[str, int]:
        """Return the counters as a JSON-compatible dict."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True, slots=True)
class AssumeRoleCall:
    """A successful ``AssumeRole`` call, as recorded by :class:`FakeSTS`."""

    role_arn: str
    role_session_name: str
    duration_seconds: int
    external_id: str | None
    source_identity: str | None
    tags: tuple[tuple[str, str], ...]
    transitive_tag_keys: tuple[str, ...]
    policy_arns: tuple[str, ...]
    policy: str | None
    caller_access_key_id: str | None
    caller_arn: str
    access_key_id: str
    expiration: str

    def to_json(self) -> dict[str, object]:
        """Return the call as a JSON-compatible dict."""
        return {
            "role_arn": self.role_arn,
            "role_session_name": self.role_session_name,
            "duration_seconds": self.duration_seconds,
            "external_id": self.external_id,
            "source_identity": self.source_identity,
            "tags": [{"Key": k, "Value": v} for k, v in self.tags],
            "transitive_tag_keys": list(self.transitive_tag_keys),
            "policy_arns": list(self.policy_arns),
            "policy": self.policy,
            "caller_access_key_id": self.caller_access_key_id,
            "caller_arn": self.caller_arn,
            "access_key_id": self.access_key_id,
            "expiration": self.expiration,
        }


@dataclass(frozen=True, slots=True)
class SessionCall:
    """A successful ``GetSessionToken`` or ``AssumeRoleWithWebIdentity`` call.

    ``detail`` is the MFA serial number or the web identity token that was sent.
    """

    action: str
    caller_access_key_id: str | None
    detail: str
    duration_seconds: int
    access_key_id: str
    expiration: str

    def to_json(self) -> dict[str, object]:
        """Return the call as a JSON-compatible dict."""
        return dataclasses.asdict(self)


# The one MFA code the fake refuses, and the one web identity token it calls invalid.
BAD_MFA_CODE: Final = "000000"
BAD_WEB_TOKEN: Final = "invalid-token"
# A code and a token prefix whose values the fake quotes back in its error message.
ECHOED_MFA_CODE: Final = "999999"
ECHOED_WEB_TOKEN: Final = "echo-"


def session_xml(action: str, result: str, request_id: str) -> str:
    """A ``<Action>Response`` document around ``result``."""
    return (
        f'<{action}Response xmlns="{STS_NAMESPACE}">\n'
        f"  <{action}Result>\n{result}  </{action}Result>\n"
        f"  <ResponseMetadata>\n    <RequestId>{request_id}</RequestId>\n"
        f"  </ResponseMetadata>\n</{action}Response>\n"
    )


def credentials_xml(key: str, secret: str, token: str, expiration: str) -> str:
    """A ``<Credentials>`` element."""
    return (
        "    <Credentials>\n"
        f"      <AccessKeyId>{key}</AccessKeyId>\n"
        f"      <SecretAccessKey>{secret}</SecretAccessKey>\n"
        f"      <SessionToken>{token}</SessionToken>\n"
        f"      <Expiration>{expiration}</Expiration>\n"
        "    </Credentials>\n"
    )


class _Counters:
    """Mutable counters behind :class:`Stats` (event-loop thread only)."""

    __slots__ = (
        "assume_role",
        "denied",
        "errors",
        "expired",
        "hung",
        "in_flight",
        "max_in_flight",
        "ok",
        "requests",
        "throttled",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.assume_role = 0
        self.ok = 0
        self.throttled = 0
        self.errors = 0
        self.denied = 0
        self.expired = 0
        self.hung = 0
        self.in_flight = 0
        self.max_in_flight = 0

    def snapshot(self) -> Stats:
        return Stats(
            requests=self.requests,
            assume_role=self.assume_role,
            ok=self.ok,
            throttled=self.throttled,
            errors=self.errors,
            denied=self.denied,
            expired=self.expired,
            hung=self.hung,
            in_flight=self.in_flight,
            max_in_flight=self.max_in_flight,
        )


class _STSError(Exception):
    """An error answer in the STS ``ErrorResponse`` shape."""

    def __init__(self, status: int, code: str, message: str, *, sender: bool = True) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.sender = sender


def _validation_error(message: str) -> _STSError:
    return _STSError(400, "ValidationError", message)


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _members(params: Mapping[str, str], prefix: str, suffix: str) -> list[str]:
    """Values of ``prefix.member.N.suffix`` (or ``prefix.member.N``) for N = 1, 2, ..."""
    values: list[str] = []
    n = 1
    while True:
        key = f"{prefix}.member.{n}{suffix}"
        value = params.get(key)
        if value is None:
            return values
        values.append(value)
        n += 1


@dataclass(frozen=True, slots=True)
class _AssumeRoleRequest:
    """The validated parameters of an ``AssumeRole`` request."""

    role_arn: str
    partition: str
    account: str
    role_name: str
    role_session_name: str
    duration_seconds: int
    external_id: str | None
    source_identity: str | None
    tags: tuple[tuple[str, str], ...]
    transitive_tag_keys: tuple[str, ...]
    policy_arns: tuple[str, ...]
    policy: str | None
    packed_policy_size: int


def _not_null(name: str) -> _STSError:
    return _validation_error(
        f"1 validation error detected: Value null at '{name}' failed to satisfy "
        "constraint: Member must not be null"
    )


def _parse_duration(raw: str) -> int:
    prefix = f"1 validation error detected: Value '{raw}' at 'durationSeconds' failed to satisfy"
    try:
        duration = int(raw)
    except ValueError:
        raise _validation_error(f"{prefix} constraint: Member must be an integer") from None
    if duration < _MIN_DURATION:
        raise _validation_error(
            f"{prefix} constraint: Member must have value greater than or equal to {_MIN_DURATION}"
        )
    if duration > _MAX_DURATION:
        raise _validation_error(
            f"{prefix} constraint: Member must have value less than or equal to {_MAX_DURATION}"
        )
    return duration


def _parse_tags(params: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    keys = _members(params, "Tags", ".Key")
    values = _members(params, "Tags", ".Value")
    if len(keys) != len(values):
        raise _validation_error("Each tag must have both a Key and a Value")
    if len(keys) > _MAX_TAGS:
        raise _validation_error(f"Cannot pass more than {_MAX_TAGS} session tags")
    return tuple(zip(keys, values, strict=True))


def _packed_policy_size(
    policy: str | None, policy_arns: tuple[str, ...], tags: tuple[tuple[str, str], ...]
) -> int:
    """A plausible ``PackedPolicySize`` percentage; too large is an error like STS."""
    packed = len(policy or "") + sum(len(arn) for arn in policy_arns)
    packed += sum(len(k) + len(v) + 8 for k, v in tags)
    percent = math.ceil(packed * 100 / _PACKED_POLICY_BYTES)
    if percent > _MAX_PERCENT:
        raise _STSError(
            400,
            "PackedPolicyTooLarge",
            f"Packed policy consumes {percent}% of allotted space, please use smaller policy.",
        )
    return percent


def _parse_assume_role(params: Mapping[str, str]) -> _AssumeRoleRequest:
    """Validate the ``AssumeRole`` parameters like STS would."""
    role_arn = params.get("RoleArn")
    if role_arn is None:
        raise _not_null("roleArn")
    match = _ROLE_ARN_RE.fullmatch(role_arn)
    if match is None:
        raise _validation_error(f"{role_arn} is invalid")
    partition, account, role_name = match.groups()

    session_name = params.get("RoleSessionName")
    if session_name is None:
        raise _not_null("roleSessionName")
    if not _SESSION_NAME_RE.fullmatch(session_name):
        raise _validation_error(
            f"1 validation error detected: Value '{session_name}' at 'roleSessionName' "
            "failed to satisfy constraint: Member must satisfy regular expression "
            "pattern: [\\w+=,.@-]* and have length between 2 and 64"
        )
    source_identity = params.get("SourceIdentity")
    if source_identity is not None and not _SESSION_NAME_RE.fullmatch(source_identity):
        raise _validation_error(
            f"1 validation error detected: Value '{source_identity}' at 'sourceIdentity' "
            "failed to satisfy constraint: Member must have length between 2 and 64"
        )
    tags = _parse_tags(params)
    policy_arns = tuple(_members(params, "PolicyArns", ".arn"))
    if len(policy_arns) > _MAX_POLICY_ARNS:
        raise _validation_error(
            f"Cannot pass more than {_MAX_POLICY_ARNS} managed session policies"
        )
    policy = params.get("Policy")
    return _AssumeRoleRequest(
        role_arn=role_arn,
        partition=partition,
        account=account,
        role_name=role_name,
        role_session_name=session_name,
        duration_seconds=_parse_duration(params.get("DurationSeconds", "3600")),
        external_id=params.get("ExternalId"),
        source_identity=source_identity,
        tags=tags,
        transitive_tag_keys=tuple(_members(params, "TransitiveTagKeys", "")),
        policy_arns=policy_arns,
        policy=policy,
        packed_policy_size=_packed_policy_size(policy, policy_arns, tags),
    )


def _xml_response(body: str, request_id: str, status: int = 200) -> web.Response:
    return web.Response(
        body=body.encode("utf-8"),
        status=status,
        content_type="text/xml",
        headers={"x-amzn-RequestId": request_id},
    )


def _error_response(err: _STSError, request_id: str) -> web.Response:
    body = error_xml(err.code, err.message, request_id, sender=err.sender)
    return _xml_response(body, request_id, err.status)


def _json_response(data: object, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


# --------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------


class FakeSTS:
    """A fake STS endpoint running on the current asyncio event loop.

    Use :func:`serve` (or ``async with FakeSTS(...)``) to run it; all methods
    must be called from the event loop thread (see :class:`ThreadedFakeSTS`
    for use from other threads).

    Args:
        faults: initial fault settings (default: ``Faults()``).
        host: loopback address to listen on.
        port: TCP port; 0 picks a free one (see :attr:`port`).
        max_identities: how many issued access keys to remember for
            ``GetCallerIdentity`` (oldest forgotten first).
        backlog: listen backlog, large enough for bursts of connections.
        clock: wall clock in epoch seconds, used for credential expiration
            (injectable for tests).
    """

    def __init__(
        self,
        faults: Faults | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_identities: int = 100_000,
        backlog: int = 4096,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not is_loopback(host):
            raise ValueError(f"FakeSTS only listens on loopback addresses, not {host!r}")
        if max_identities < 1:
            raise ValueError("max_identities must be >= 1")
        self._faults = faults if faults is not None else Faults()
        # "localhost" may resolve to several addresses which, with port 0,
        # would get different ports: pin it to IPv4 loopback.
        self._host = "127.0.0.1" if host == "localhost" else host
        self._requested_port = port
        self._port: int | None = None
        self._max_identities = max_identities
        self._backlog = backlog
        self._clock = clock
        # Fault decisions only, never secrets: those come from `secrets`.
        self._rng = random.Random(self._faults.seed)  # noqa: S311
        self._counters = _Counters()
        self._identities: OrderedDict[str, _Identity] = OrderedDict()
        self._calls: deque[AssumeRoleCall] = deque(maxlen=_RECENT_CALLS)
        self._session_calls: deque[SessionCall] = deque(maxlen=_RECENT_CALLS)
        self._unhang = asyncio.Event()
        self._waiters: set[asyncio.Future[None]] = set()
        self._hung_tasks: set[asyncio.Task[object]] = set()
        self._closing = False
        self._runner: web.AppRunner | None = None

    # -- lifecycle ---------------------------------------------------------

    def make_app(self) -> web.Application:
        """Build the aiohttp application (control routes first, then STS)."""
        app = web.Application()
        app.router.add_get("/_fake/faults", self._get_faults)
        app.router.add_post("/_fake/faults", self._post_faults)
        app.router.add_get("/_fake/stats", self._get_stats)
        app.router.add_post("/_fake/reset-stats", self._post_reset_stats)
        app.router.add_get("/_fake/calls", self._get_calls)
        app.router.add_get("/_fake/session-calls", self._get_session_calls)
        app.router.add_get("/_fake/health", self._get_health)
        app.router.add_route("*", "/{tail:.*}", self._handle_sts)
        return app

    async def start(self) -> None:
        """Start listening; :attr:`url` and :attr:`port` are valid afterwards."""
        if self._runner is not None:
            raise RuntimeError("FakeSTS already started")
        self._closing = False
        runner = web.AppRunner(
            self.make_app(),
            access_log=None,
            handler_cancellation=True,  # free hung handlers when clients leave
            shutdown_timeout=2.0,
        )
        await runner.setup()
        try:
            site = web.TCPSite(
                runner,
                self._host,
                self._requested_port,
                backlog=self._backlog,
                reuse_address=True,
            )
            await site.start()
            self._port = int(runner.addresses[0][1])
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    async def stop(self) -> None:
        """Stop listening and close all connections.

        Requests held by the ``hang`` fault are dropped unanswered (their
        connections are closed); requests in their latency sleep are
        answered if that takes under two seconds.
        """
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._closing = True
        for task in self._hung_tasks:
            task.cancel()
        await runner.cleanup()

    async def __aenter__(self) -> Self:
        """Start the server."""
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        await self.stop()

    # -- properties and control -------------------------------------------

    @property
    def host(self) -> str:
        """The address listened on."""
        return self._host

    @property
    def port(self) -> int:
        """The TCP port listened on (raises if not started)."""
        if self._port is None:
            raise RuntimeError("FakeSTS not started")
        return self._port

    @property
    def url(self) -> str:
        """Endpoint URL, e.g. ``http://127.0.0.1:PORT``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    @property
    def faults(self) -> Faults:
        """The current fault settings (assign to replace them)."""
        return self._faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self.set_faults(faults)

    def set_faults(self, faults: Faults) -> None:
        """Replace the fault settings; takes effect for the next decisions.

        Switching ``hang`` off releases the requests being held.  A new
        ``seed`` re-seeds the random generator.
        """
        if not isinstance(faults, Faults):
            raise TypeError("faults must be a Faults instance")
        old, self._faults = self._faults, faults
        if faults.seed is not None and faults.seed != old.seed:
            self._rng.seed(faults.seed)
        if old.hang and not faults.hang:
            self._wake_hung()

    def update_faults(self, **changes: object) -> Faults:
        """Replace only the given fault fields (as :meth:`Faults.updated`)."""
        faults = self._faults.updated(changes)
        self.set_faults(faults)
        return faults

    @property
    def stats(self) -> Stats:
        """A snapshot of the request counters."""
        return self._counters.snapshot()

    def reset_stats(self) -> Stats:
        """Zero the counters (``in_flight`` keeps counting live requests)."""
        live = self._counters.in_flight
        self._counters = _Counters()
        self._counters.in_flight = live
        self._counters.max_in_flight = live
        self._notify()
        return self._counters.snapshot()

    @property
    def calls(self) -> tuple[AssumeRoleCall, ...]:
        """The most recent successful ``AssumeRole`` calls, oldest first."""
        return tuple(self._calls)

    @property
    def session_calls(self) -> tuple[SessionCall, ...]:
        """The most recent successful session calls (MFA, web identity), oldest first."""
        return tuple(self._session_calls)

    async def wait_for_stats(self, predicate: Callable[[Stats], bool]) -> Stats:
        """Wait until ``predicate(stats)`` holds and return that snapshot.

        Re-checked whenever a counter changes; bound it with
        ``asyncio.timeout(...)``.
        """
        loop = asyncio.get_running_loop()
        while True:
            snapshot = self.stats
            if predicate(snapshot):
                return snapshot
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.add(waiter)
            try:
                await waiter
            finally:
                self._waiters.discard(waiter)

    def _notify(self) -> None:
        if self._waiters:
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _wake_hung(self) -> None:
        event, self._unhang = self._unhang, asyncio.Event()
        event.set()

    # -- control endpoints -------------------------------------------------

    async def _get_faults(self, _request: web.Request) -> web.Response:
        return _json_response(self._faults.to_json())

    async def _post_faults(self, request: web.Request) -> web.Response:
        try:
            data = json.loads(await request.read() or b"{}")
        except ValueError as exc:
            return _json_response({"error": f"invalid JSON: {exc}"}, status=400)
        if not isinstance(data, dict):
            return _json_response({"error": "expected a JSON object"}, status=400)
        try:
            faults = self.update_faults(**data)
        except (TypeError, ValueError) as exc:
            return _json_response({"error": str(exc)}, status=400)
        return _json_response(faults.to_json())

    async def _get_stats(self, _request: web.Request) -> web.Response:
        return _json_response(self.stats.to_json())

    async def _post_reset_stats(self, _request: web.Request) -> web.Response:
        return _json_response(self.reset_stats().to_json())

    async def _get_calls(self, _request: web.Request) -> web.Response:
        return _json_response([call.to_json() for call in self._calls])

    async def _get_session_calls(self, _request: web.Request) -> web.Response:
        return _json_response([call.to_json() for call in self._session_calls])

    async def _get_health(self, _request: web.Request) -> web.Response:
        return _json_response({"ok": True})

    # -- STS ---------------------------------------------------------------

    async def _handle_sts(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/_fake/"):
            return _json_response({"error": "unknown control endpoint"}, status=404)
        counters = self._counters
        counters.requests += 1
        counters.in_flight += 1
        counters.max_in_flight = max(counters.max_in_flight, counters.in_flight)
        self._notify()
        try:
            params: dict[str, str] = dict(request.query)
            if request.can_read_body:
                body = await request.read()
                params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
            action = params.get("Action", "")
            if action == "AssumeRole":
                self._counters.assume_role += 1
            if self._faults.hang and not self._closing:
                await self._hold()
            latency = self._faults.latency
            if latency > 0:
                await asyncio.sleep(latency)
            return self._answer(action, params, caller_access_key(request.headers, params))
        finally:
            # Counters may have been reset meanwhile: decrement the live ones.
            self._counters.in_flight -= 1
            self._notify()

    async def _hold(self) -> None:
        """Hold a request while ``hang`` is on (cancelled if the client leaves)."""
        self._counters.hung += 1
        self._notify()
        task = asyncio.current_task()
        if task is not None:
            self._hung_tasks.add(task)
        try:
            while self._faults.hang:
                await self._unhang.wait()
        finally:
            if task is not None:
                self._hung_tasks.discard(task)

    def _answer(self, action: str, params: Mapping[str, str], caller: str | None) -> web.Response:
        request_id = str(uuid.uuid4())
        counters = self._counters
        try:
            body = self._dispatch(action, params, caller, request_id)
        except _STSError as err:
            if err.code == "Throttling":
                counters.throttled += 1
            elif err.code == "AccessDenied":
                counters.denied += 1
            elif err.code == "ExpiredToken":
                counters.expired += 1
            else:
                counters.errors += 1
            return _error_response(err, request_id)
        counters.ok += 1
        return _xml_response(body, request_id)

    def _dispatch(
        self, action: str, params: Mapping[str, str], caller: str | None, request_id: str
    ) -> str:
        faults = self._faults
        identity = self._identities.get(caller) if caller is not None else None
        if faults.expired_token or (
            identity is not None
            and identity.expires_at is not None
            and identity.expires_at <= self._clock()
        ):
            raise _STSError(
                403, "ExpiredToken", "The security token included in the request is expired"
            )
        if faults.throttle_rate > 0 and self._rng.random() < faults.throttle_rate:
            raise _STSError(400, "Throttling", "Rate exceeded")
        if faults.error_rate > 0 and self._rng.random() < faults.error_rate:
            raise _STSError(
                500,
                "InternalFailure",
                "The request processing has failed because of an unknown error, "
                "exception or failure.",
                sender=False,
            )
        if action == "AssumeRole":
            return self._assume_role(params, caller, identity, request_id)
        if action == "GetCallerIdentity":
            return self._get_caller_identity(identity, request_id)
        if action == "GetSessionToken":
            return self._get_session_token(params, caller, identity, request_id)
        if action == "AssumeRoleWithWebIdentity":
            return self._assume_role_with_web_identity(params, caller, request_id)
        raise _STSError(
            400,
            "InvalidAction",
            f"Could not find operation {action} for version {STS_VERSION}",
        )

    def _assume_role(
        self,
        params: Mapping[str, str],
        caller: str | None,
        identity: _Identity | None,
        request_id: str,
    ) -> str:
        req = _parse_assume_role(params)
        role_arn, session_name = req.role_arn, req.role_session_name
        caller_arn = identity.arn if identity is not None else DEFAULT_SOURCE_ARN
        if role_arn in self._faults.deny_roles:
            raise _STSError(
                403,
                "AccessDenied",
                f"User: {caller_arn} is not authorized to perform: sts:AssumeRole "
                f"on resource: {role_arn}",
            )

        lifetime = self._faults.lifetime
        expires_at = math.ceil(
            self._clock() + (lifetime if lifetime is not None else float(req.duration_seconds))
        )
        expiration = iso8601(expires_at)
        access_key_id = new_access_key_id()
        secret_access_key = new_secret_access_key()
        session_token = new_session_token()
        assumed_role_id = f"{role_id(role_arn)}:{session_name}"
        assumed_arn = (
            f"arn:{req.partition}:sts::{req.account}:assumed-role/{req.role_name}/{session_name}"
        )

        identities = self._identities
        identities[access_key_id] = _Identity(assumed_arn, req.account, assumed_role_id, expires_at)
        while len(identities) > self._max_identities:
            identities.popitem(last=False)
        self._calls.append(
            AssumeRoleCall(
                role_arn=role_arn,
                role_session_name=session_name,
                duration_seconds=req.duration_seconds,
                external_id=req.external_id,
                source_identity=req.source_identity,
                tags=req.tags,
                transitive_tag_keys=req.transitive_tag_keys,
                policy_arns=req.policy_arns,
                policy=req.policy,
                caller_access_key_id=caller,
                caller_arn=caller_arn,
                access_key_id=access_key_id,
                expiration=expiration,
            )
        )

        return assume_role_xml(
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            session_token=session_token,
            expiration=expiration,
            assumed_role_id=assumed_role_id,
            assumed_arn=assumed_arn,
            request_id=request_id,
            packed_policy_size=req.packed_policy_size,
            source_identity=req.source_identity,
        )

    def _issue(
        self, identity_arn: str, account: str, user_id: str, duration: int
    ) -> tuple[str, ...]:
        """New credentials remembered as ``identity_arn``: key, secret, token, expiration."""
        lifetime = self._faults.lifetime
        expires_at = math.ceil(self._clock() + (lifetime if lifetime is not None else duration))
        key = new_access_key_id()
        self._identities[key] = _Identity(identity_arn, account, user_id, expires_at)
        while len(self._identities) > self._max_identities:
            self._identities.popitem(last=False)
        return key, new_secret_access_key(), new_session_token(), iso8601(expires_at)

    def _get_session_token(
        self,
        params: Mapping[str, str],
        caller: str | None,
        identity: _Identity | None,
        request_id: str,
    ) -> str:
        if caller is None:
            raise _STSError(403, "MissingAuthenticationToken", "Request is missing a signature")
        if identity is not None:  # a session cannot make a session
            raise _STSError(
                403, "AccessDenied", "Cannot call GetSessionToken with session credentials"
            )
        serial, code = params.get("SerialNumber"), params.get("TokenCode")
        if not serial or not code:
            raise _validation_error("SerialNumber and TokenCode are required here")
        if code == ECHOED_MFA_CODE:  # as a proxy or a future STS might: quote the value back
            raise _validation_error(f"Value '{code}' at 'tokenCode' failed to satisfy constraint")
        if code == BAD_MFA_CODE or not code.isdigit() or len(code) != 6:
            raise _STSError(
                403,
                "AccessDenied",
                "MultiFactorAuthentication failed with invalid MFA one time pass code.",
            )
        duration = int(params.get("DurationSeconds") or 43200)
        if not 900 <= duration <= 129600:
            raise _validation_error(f"DurationSeconds {duration} is out of range")
        key, secret, token, expiration = self._issue(
            DEFAULT_SOURCE_ARN, DEFAULT_ACCOUNT, "AIDAFAKEUSER", duration
        )
        self._session_calls.append(
            SessionCall("GetSessionToken", caller, serial, duration, key, expiration)
        )
        return session_xml(
            "GetSessionToken", credentials_xml(key, secret, token, expiration), request_id
        )

    def _assume_role_with_web_identity(
        self, params: Mapping[str, str], caller: str | None, request_id: str
    ) -> str:
        if caller is not None:
            raise _validation_error("AssumeRoleWithWebIdentity is not signed")
        token = params.get("WebIdentityToken") or ""
        if not token:
            raise _validation_error("WebIdentityToken is required")
        if token.startswith(ECHOED_WEB_TOKEN):
            raise _validation_error(
                f"1 validation error detected: Value '{token}' at 'webIdentityToken' failed to "
                "satisfy constraint: Member must have length less than or equal to 20000"
            )
        if token == BAD_WEB_TOKEN:
            raise _STSError(400, "InvalidIdentityToken", "Couldn't retrieve verification key")
        req = _parse_assume_role(params)
        assumed_arn = (
            f"arn:{req.partition}:sts::{req.account}:assumed-role/{req.role_name}/"
            f"{req.role_session_name}"
        )
        key, secret, token_out, expiration = self._issue(
            assumed_arn,
            req.account,
            f"{role_id(req.role_arn)}:{req.role_session_name}",
            req.duration_seconds,
        )
        self._session_calls.append(
            SessionCall(
                "AssumeRoleWithWebIdentity", None, token, req.duration_seconds, key, expiration
            )
        )
        assumed_id = f"{role_id(req.role_arn)}:{req.role_session_name}"
        subject = "system:serviceaccount:ns:sa"
        user = (
            "    <AssumedRoleUser>\n"
            f"      <AssumedRoleId>{assumed_id}</AssumedRoleId>\n"
            f"      <Arn>{assumed_arn}</Arn>\n"
            "    </AssumedRoleUser>\n"
            f"    <SubjectFromWebIdentityToken>{subject}</SubjectFromWebIdentityToken>\n"
        )
        return session_xml(
            "AssumeRoleWithWebIdentity",
            credentials_xml(key, secret, token_out, expiration) + user,
            request_id,
        )

    def _get_caller_identity(self, identity: _Identity | None, request_id: str) -> str:
        return caller_identity_xml(identity, request_id)


@contextlib.asynccontextmanager
async def serve(
    faults: Faults | None = None, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[FakeSTS]:
    """Run a :class:`FakeSTS` on the running event loop for the ``async with`` body.

    Example::

        async with serve(Faults(latency=0, lifetime=5)) as sts:
            session.client("sts", endpoint_url=sts.url, ...)
    """
    server = FakeSTS(faults, host=host, port=port)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


# --------------------------------------------------------------------------
# Thread-based runner for synchronous code
# --------------------------------------------------------------------------


class ThreadedFakeSTS:
    """Run a :class:`FakeSTS` on its own event loop in a daemon thread.

    Meant for synchronous pytest fixtures and scripts, in the spirit of moto's
    ``ThreadedMotoServer``::

        server = ThreadedFakeSTS(Faults(latency=0))
        server.start()
        try:
            boto3.client("sts", endpoint_url=server.url, ...)
        finally:
            server.stop()

    Every method is thread-safe: it runs the corresponding :class:`FakeSTS`
    operation on the server's loop and waits for it.  It is also a context
    manager (``with ThreadedFakeSTS() as server: ...``).
    """

    def __init__(
        self,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        clock: Callable[[], float] = time.time,
        timeout: float = 10.0,
    ) -> None:
        self._server = FakeSTS(faults, host=host, port=port, clock=clock)
        self._timeout = timeout
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None

    def start(self) -> None:
        """Start the server thread and wait until it is listening."""
        if self._thread is not None:
            raise RuntimeError("ThreadedFakeSTS already started")
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        thread = threading.Thread(target=self._run, args=(ready,), name="fakests", daemon=True)
        self._thread = thread
        thread.start()
        try:
            ready.result(timeout=self._timeout)
        except BaseException:
            self._thread = None
            thread.join(timeout=self._timeout)
            raise

    def _run(self, ready: concurrent.futures.Future[None]) -> None:
        async def main() -> None:
            stop_event = asyncio.Event()
            try:
                await self._server.start()
            except BaseException as exc:  # noqa: BLE001 - handed to start()'s caller
                ready.set_exception(exc)
                return
            self._loop = asyncio.get_running_loop()
            self._stop_event = stop_event
            ready.set_result(None)
            try:
                await stop_event.wait()
            finally:
                await self._server.stop()

        asyncio.run(main())

    def stop(self) -> None:
        """Stop the server and join its thread (no-op if not running)."""
        thread, loop, stop_event = self._thread, self._loop, self._stop_event
        self._thread = self._loop = self._stop_event = None
        if thread is None:
            return
        if loop is not None and stop_event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop already gone
                loop.call_soon_threadsafe(stop_event.set)
        thread.join(timeout=self._timeout)

    def __enter__(self) -> Self:
        """Start the server thread."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server thread."""
        self.stop()

    def _call(self, fn: Callable[[], _T]) -> _T:
        loop = self._loop
        if loop is None:
            raise RuntimeError("ThreadedFakeSTS not started")

        async def run() -> _T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout=self._timeout)

    def _await(self, make: Callable[[], Awaitable[_T]], timeout: float) -> _T:
        loop = self._loop
        if loop is None:
            raise RuntimeError("ThreadedFakeSTS not started")

        async def run() -> _T:
            return await make()

        future = asyncio.run_coroutine_threadsafe(run(), loop)
        return future.result(timeout=timeout + self._timeout)

    @property
    def url(self) -> str:
        """Endpoint URL, e.g. ``http://127.0.0.1:PORT``."""
        return self._server.url

    @property
    def port(self) -> int:
        """The TCP port listened on."""
        return self._server.port

    @property
    def faults(self) -> Faults:
        """The current fault settings (assign to replace them)."""
        return self._server.faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self.set_faults(faults)

    def set_faults(self, faults: Faults) -> None:
        """Replace the fault settings (see :meth:`FakeSTS.set_faults`)."""
        self._call(lambda: self._server.set_faults(faults))

    def update_faults(self, **changes: object) -> Faults:
        """Replace only the given fault fields (see :meth:`Faults.updated`)."""
        return self._call(lambda: self._server.update_faults(**changes))

    @property
    def stats(self) -> Stats:
        """A snapshot of the request counters."""
        return self._call(lambda: self._server.stats)

    def reset_stats(self) -> Stats:
        """Zero the counters."""
        return self._call(self._server.reset_stats)

    @property
    def calls(self) -> tuple[AssumeRoleCall, ...]:
        """The most recent successful ``AssumeRole`` calls, oldest first."""
        return self._call(lambda: self._server.calls)

    @property
    def session_calls(self) -> tuple[SessionCall, ...]:
        """The most recent successful session calls (MFA, web identity), oldest first."""
        return self._call(lambda: self._server.session_calls)

    def wait_for_stats(self, predicate: Callable[[Stats], bool], timeout: float = 10.0) -> Stats:
        """Block until ``predicate(stats)`` holds; :class:`TimeoutError` after ``timeout``."""

        async def wait() -> Stats:
            async with asyncio.timeout(timeout):
                return await self._server.wait_for_stats(predicate)

        return self._await(wait, timeout)


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def _loopback_host(value: str) -> str:
    if not is_loopback(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a loopback address")
    return value


def _rate(value: str) -> float:
    try:
        rate = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0.0 <= rate <= 1.0:
        raise argparse.ArgumentTypeError(f"{value!r} is not between 0 and 1")
    return rate


def _non_negative(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not math.isfinite(number) or number < 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be >= 0")
    return number


def _positive(value: str) -> float:
    number = _non_negative(value)
    if number == 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be > 0")
    return number


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``python -m support.fakests``."""
    parser = argparse.ArgumentParser(
        prog="python -m support.fakests",
        description="Fake AWS STS server (loopback only). Prints one JSON line "
        '{"url": ..., "port": ..., "pid": ...} once listening; stops on SIGTERM/SIGINT.',
    )
    parser.add_argument(
        "--host",
        type=_loopback_host,
        default="127.0.0.1",
        help="loopback address to listen on (default 127.0.0.1)",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port, 0 = any free port")
    parser.add_argument(
        "--latency",
        type=_non_negative,
        default=0.05,
        help="seconds added before each answer (default 0.05)",
    )
    parser.add_argument(
        "--lifetime",
        type=_positive,
        default=None,
        help="credential lifetime in seconds (default: DurationSeconds)",
    )
    parser.add_argument(
        "--throttle-rate", type=_rate, default=0.0, help="probability of a Throttling answer"
    )
    parser.add_argument(
        "--error-rate", type=_rate, default=0.0, help="probability of a 500 InternalFailure answer"
    )
    parser.add_argument(
        "--deny",
        action="append",
        default=[],
        metavar="ROLEARN",
        help="role ARN that gets AccessDenied (repeatable)",
    )
    parser.add_argument("--hang", action="store_true", help="never answer STS requests")
    parser.add_argument(
        "--expired-token", action="store_true", help="answer every request with ExpiredToken"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for the fault RNG")
    return parser


def faults_from_args(args: argparse.Namespace) -> Faults:
    """Build :class:`Faults` from parsed command-line arguments."""
    return Faults(
        latency=args.latency,
        lifetime=args.lifetime,
        throttle_rate=args.throttle_rate,
        error_rate=args.error_rate,
        hang=args.hang,
        deny_roles=frozenset(args.deny),
        expired_token=args.expired_token,
        seed=args.seed,
    )


async def _run_cli(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = FakeSTS(faults_from_args(args), host=args.host, port=args.port)
    await server.start()
    try:
        line = json.dumps({"url": server.url, "port": server.port, "pid": os.getpid()})
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        await stop.wait()
    finally:
        await server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m support.fakests``; returns the exit status."""
    args = build_parser().parse_args(argv)
    return asyncio.run(_run_cli(args))


if __name__ == "__main__":
    sys.exit(main())
