"""The STS client: the only module that imports the AWS SDK (aioboto3 and its aiobotocore).

``StsClient`` is the Protocol the rest of the code depends on; ``AioStsClient`` is the real one,
and unit tests drive the engine with a small fake instead. In-call retries of throttling and 5xx
are botocore's (its ``standard`` or ``adaptive`` retry mode); this module only classifies what
is left when botocore gives up.

Per call, botocore's own overheads dominate the CPU cost of a refresh, so the client is set
up to skip the avoidable ones; see ``client_config`` (tests/perf/bench.py measures them).
"""

from __future__ import annotations

import contextlib
import platform
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any, Final, Protocol, Self

import aioboto3
import anyio
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.configprovider import ConstantProvider
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    HTTPClientError,
    InvalidConfigError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
    RefreshWithMFAUnsupportedError,
    SSOError,
    TokenRetrievalError,
)
from botocore.exceptions import ConnectionError as BotocoreConnectionError
from botocore.utils import parse_timestamp as botocore_parse_timestamp

from credrefresh import __version__, children
from credrefresh.answer import clean_failure, validate_answer
from credrefresh.config import Config, Role
from credrefresh.errors import RefreshFailed
from credrefresh.model import Credentials, Issued
from credrefresh.sources import helper_program

__all__ = ["AioStsClient", "EndpointSession", "StsClient", "classify"]

TRANSIENT_CODES: Final = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalError",
        "RequestTimeout",
        "RequestTimeoutException",
        "IDPCommunicationError",
        "PriorRequestNotComplete",
    }
)
# Errors about the caller's own credentials: loading them afresh may cure these.
SOURCE_CODES: Final = frozenset(
    {
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
    }
)
SERVER_ERROR: Final = 500
MAX_KEYED: Final = 64  # open clients signing with parent sessions (hubs times their rotations)
# The source needs a person (an SSO login, an MFA code): retrying soon cannot help.
LOGIN_ERRORS: Final = (SSOError, TokenRetrievalError, RefreshWithMFAUnsupportedError)
# Network failures botocore reports in its own classes (a proxy, TLS, the HTTP client).
NETWORK_ERRORS: Final = (
    EndpointConnectionError,
    ConnectionClosedError,
    BotocoreConnectionError,
    HTTPClientError,
    ConnectionError,
)


class StsClient(Protocol):
    """Assumes one role (raising ``RefreshFailed`` on any failure); can adopt a new config."""

    async def assume(self, role: Role, source: Credentials | None = None) -> Issued:
        """Call AssumeRole for ``role``, signed with ``source`` when given (a role chain)."""
        ...

    async def reset(self, config: Config | None = None) -> None:
        """Drop cached clients, adopting ``config`` when given."""
        ...


def classify(exc: BaseException, source_profile: str | None = None) -> RefreshFailed:
    """Turn a botocore error into ``RefreshFailed`` with a documented code and transient flag.

    Codes are AWS's for an answer from STS, else one of ours (listed in the README); anything
    unforeseen is ``UnexpectedError`` naming the exception's class in its message.
    """
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "Unknown")
        message = str(error.get("Message") or exc)
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return RefreshFailed(
            code,
            message,
            transient=code in TRANSIENT_CODES or status >= SERVER_ERROR,
            source=code in SOURCE_CODES,
        )
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError | TimeoutError):
        return RefreshFailed("Timeout", str(exc) or "timed out", transient=True)
    if isinstance(exc, NETWORK_ERRORS):
        return RefreshFailed("ConnectionError", str(exc), transient=True)
    if isinstance(exc, ParamValidationError):
        return RefreshFailed("ParamValidationError", str(exc), transient=False)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | ProfileNotFound):
        return RefreshFailed(type(exc).__name__, str(exc), transient=False, source=True)
    if isinstance(exc, LOGIN_ERRORS):
        login = "aws sso login" + (f" --profile {source_profile}" if source_profile else "")
        action = f"run: {login}" if isinstance(exc, SSOError | TokenRetrievalError) else ""
        message = f"{exc}; {action}" if action else str(exc)
        return RefreshFailed("SourceLoginRequired", message, transient=False, source=True)
    if isinstance(exc, CredentialRetrievalError):
        return RefreshFailed("SourceCredentialsError", str(exc), transient=True, source=True)
    if isinstance(exc, InvalidConfigError):
        return RefreshFailed("SourceConfigError", str(exc), transient=False, source=True)
    if isinstance(exc, OSError):
        # A credential_process or token file that cannot be found or run.
        detail = f"{type(exc).__name__}: {exc}"
        return RefreshFailed("SourceCredentialsError", detail, transient=False, source=True)
    return RefreshFailed("UnexpectedError", f"{type(exc).__name__}: {exc}", transient=True)


def unsigned(config: Config, role: Role, source: Credentials | None) -> None:
    """Refuse a call that would sign with the wrong credentials (before any request).

    Raises:
        RefreshFailed: a chained role without its parent's session, or a role the ``[source]``
            session signs without that session.
    """
    chained = role.source_profile is not None and config.role(role.source_profile)
    if source is None and chained:
        # Never sign with what credrefresh itself wrote to the file.
        raise RefreshFailed(
            "SourceUnavailable",
            f"the source role {role.source_profile!r} has no valid session",
            transient=True,
        )
    if source is None and role.source_profile is None and config.session is not None:
        # The [source] session signs these; the source's own keys never do.
        raise RefreshFailed(
            "SourceSessionRequired",
            f"no valid [source] {config.session.kind} session to sign with",
            transient=False,
        )


async def helper_failure(failure: RefreshFailed, profile: str | None, detail: str) -> RefreshFailed:
    """``failure`` naming the source profile's ``credential_process`` helper, when it has one."""
    helper = await anyio.to_thread.run_sync(helper_program, profile)
    if helper is None:
        return failure
    return RefreshFailed(
        "SourceCredentialsError",
        f"credential_process {helper!r} of profile {profile or 'default'!r}: {detail}",
        transient=True,
        source=True,
    )


def request(role: Role) -> dict[str, Any]:
    """The AssumeRole parameters for ``role``."""
    params: dict[str, Any] = {
        "RoleArn": role.role_arn,
        "RoleSessionName": role.session_name,
        "DurationSeconds": role.duration_seconds,
    }
    if role.external_id is not None:
        params["ExternalId"] = role.external_id
    if role.source_identity is not None:
        params["SourceIdentity"] = role.source_identity
    if role.tags:
        params["Tags"] = [{"Key": k, "Value": v} for k, v in role.tags]
    if role.policy_arns:
        params["PolicyArns"] = [{"arn": arn} for arn in role.policy_arns]
    return params


def parse_timestamp(value: object) -> datetime:
    """Botocore's timestamp parser, with a fast path for the ISO 8601 that STS sends.

    botocore hands every timestamp to dateutil, some 7 % of the CPU of a call; ``fromisoformat``
    reads STS's ``2024-05-01T12:00:00Z`` alike, and anything else still goes to botocore.
    """
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(value)
    return botocore_parse_timestamp(value)  # type: ignore[no-any-return]


class EndpointSession(AioSession):  # type: ignore[misc] # aiobotocore has no type hints
    """A botocore session set up the credrefresh way; every STS client of it is configured.

    botocore resolves an assume-role or web-identity source profile with STS clients of its own
    (nested clients), which would otherwise go to the regional AWS endpoint (or wherever
    ``AWS_ENDPOINT_URL_STS`` and the config file point): the configured endpoint must apply to
    every STS call credrefresh causes. Its timestamps are parsed by ``parse_timestamp``, and any
    ``credential_process`` it runs is one of ours to reap (``children.adopt``).
    """

    def __init__(self, *, profile: str | None = None, sts_endpoint_url: str | None = None) -> None:
        super().__init__(profile=profile)
        self.sts_endpoint_url = sts_endpoint_url
        children.adopt(self)  # a hung credential_process dies with its group
        self.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=parse_timestamp
        )

    def _add_configured_endpoint_provider(self, client_name: str, config_store: Any) -> None:  # noqa: ANN401
        if self.sts_endpoint_url is not None and client_name == "sts":
            config_store.set_config_provider(
                logical_name="endpoint_url", provider=ConstantProvider(self.sts_endpoint_url)
            )
            return
        super()._add_configured_endpoint_provider(client_name, config_store)


def client_config(config: Config, session: AioSession) -> AioConfig:
    """The botocore client configuration for ``config``.

    * The connection pool holds ``max_concurrency`` connections, so no call waits for one.
    * ``parameter_validation`` is off: ``credrefresh.config`` has validated every value already.
    * The User-Agent is fixed once, in botocore's classic form plus ``credrefresh/<version>``.
      botocore otherwise rebuilds its structured one twice per call (sanitising each piece,
      character by character): the largest single CPU cost of a refresh. CloudTrail still
      records ``credrefresh/<version>`` in each call's ``userAgent``.
    """
    agent = (
        f"{session.user_agent_name}/{session.user_agent_version} "
        f"Python/{platform.python_version()} {platform.system()}/{platform.release()} "
        f"credrefresh/{__version__}"
    )
    return AioConfig(
        max_pool_connections=config.max_concurrency,
        connect_timeout=config.sts_timeout,
        read_timeout=config.sts_timeout,
        retries={"mode": config.retry_mode, "total_max_attempts": config.sts_max_attempts},
        parameter_validation=False,
        user_agent=agent,
    )


def call_deadline(config: Config) -> float:
    """The longest one AssumeRole call may take, in seconds.

    Every attempt (connect and read timeouts) plus botocore's retry backoff, which it caps at
    20 s per retry.
    """
    return config.sts_max_attempts * (2 * config.sts_timeout + 20)


class _Generation:
    """One set of open clients. A reset retires it; it is closed once no call still uses it."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.stack = contextlib.AsyncExitStack()
        self.clients: dict[str, Any] = {}
        self.users = 0
        self.retired = False
        # botocore sessions by the profile they load (None: the default chain), and one that
        # loads none, for keyed clients: each session parses the AWS files (the credentials
        # file whole, for its profile map and again to load the source: about 3 s at 10,000
        # profiles), so every client of a generation shares them, whatever its region or parent.
        self.sessions: dict[str | None, AioSession] = {}
        self.bare: AioSession | None = None
        # Clients signing with a parent role's session, by access key id: a parent's rotation
        # makes a new one; idle old ones are closed once more than MAX_KEYED are open.
        self.keyed: OrderedDict[str, tuple[Any, contextlib.AsyncExitStack]] = OrderedDict()
        self.keyed_users: dict[str, int] = {}

    def session(self, profile: str | None) -> AioSession:
        """The botocore session of this generation that loads ``profile``."""
        core = self.sessions.get(profile)
        if core is None:
            core = self.sessions[profile] = EndpointSession(
                profile=profile, sts_endpoint_url=self.config.sts_endpoint_url
            )
        return core

    def bare_session(self) -> AioSession:
        """The session of this generation's keyed clients (their credentials are given)."""
        if self.bare is None:
            self.bare = EndpointSession()
        return self.bare

    async def close(self) -> None:
        self.clients = {}
        keyed, self.keyed = self.keyed, OrderedDict()
        with anyio.CancelScope(shield=True):
            for _, stack in keyed.values():
                await stack.aclose()
            await self.stack.aclose()

    async def trim(self) -> None:
        """Close the least recently used idle keyed clients beyond ``MAX_KEYED``."""
        idle = [k for k in self.keyed if not self.keyed_users.get(k)]
        with anyio.CancelScope(shield=True):
            for key in idle[: max(0, len(self.keyed) - MAX_KEYED)]:
                _, stack = self.keyed.pop(key)
                self.keyed_users.pop(key, None)
                await stack.aclose()


class AioStsClient:
    """The real client: one STS client per region, opened lazily, shared by tasks.

    Use as an async context manager; ``reset()`` retires the clients so that the next call
    loads the source credentials afresh (after ExpiredToken, or on reload). Calls still running
    on retired clients finish on them; those are closed when the last one is done.
    """

    def __init__(self, config: Config) -> None:
        self._current = _Generation(config)
        self._lock = anyio.Lock()

    @property
    def _config(self) -> Config:
        return self._current.config

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every open client, and kill what is left of any credential_process."""
        await self.reset()
        children.reap()

    async def reset(self, config: Config | None = None) -> None:
        """Retire the clients (and adopt ``config``); the next call opens fresh ones."""
        async with self._lock:
            old = self._current
            self._current = _Generation(config or old.config)
            old.retired = True
            if old.users == 0:
                await old.close()

    async def _client(
        self, generation: _Generation, region: str, profile: str | None = None
    ) -> Any:  # noqa: ANN401
        key = region if profile is None else f"{region}|profile|{profile}"
        client = generation.clients.get(key)
        if client is not None:
            return client
        async with self._lock:
            client = generation.clients.get(key)
            if client is None:
                config = generation.config
                core = generation.session(profile or config.source_profile)
                session = aioboto3.Session(botocore_session=core)
                client = await generation.stack.enter_async_context(
                    session.client(
                        "sts",
                        region_name=region,
                        endpoint_url=config.sts_endpoint_url,
                        config=client_config(config, core),
                    )
                )
                generation.clients[key] = client
        return client

    async def _signer(
        self, generation: _Generation, role: Role, source: Credentials | None
    ) -> tuple[str | None, Any]:
        """The client to call with, and its keyed-client key when it signs with ``source``."""
        region = role.region or generation.config.region
        if source is not None:
            return await self._keyed_client(generation, region, source)
        return None, await self._client(generation, region, role.source_profile)

    async def _keyed_client(
        self, generation: _Generation, region: str, source: Credentials
    ) -> tuple[str, Any]:
        """A client signing with a parent role's session (role chains)."""
        key = f"{region}|{source.access_key_id}"
        async with self._lock:
            entry = generation.keyed.get(key)
            if entry is None:
                config = generation.config
                core = generation.bare_session()
                session = aioboto3.Session(botocore_session=core)
                stack = contextlib.AsyncExitStack()
                client = await stack.enter_async_context(
                    session.client(
                        "sts",
                        region_name=region,
                        endpoint_url=config.sts_endpoint_url,
                        config=client_config(config, core),
                        aws_access_key_id=source.access_key_id,
                        aws_secret_access_key=source.secret_access_key,
                        aws_session_token=source.session_token,
                    )
                )
                entry = generation.keyed[key] = (client, stack)
            generation.keyed.move_to_end(key)
            generation.keyed_users[key] = generation.keyed_users.get(key, 0) + 1
        return key, entry[0]

    async def assume(self, role: Role, source: Credentials | None = None) -> Issued:
        """Call AssumeRole; raise ``RefreshFailed`` (never anything else) on failure.

        ``source`` signs the call when given: the live session of the configured role named
        by ``role.source_profile``. A ``source_profile`` that is not a configured role is a
        profile of the AWS config files, resolved by botocore.
        """
        unsigned(self._current.config, role, source)
        started = datetime.now(UTC)
        clock = time.perf_counter()
        generation = self._current
        generation.users += 1
        keyed: str | None = None
        client = None
        profile = role.source_profile or generation.config.source_profile
        try:
            # botocore bounds each HTTP attempt; this bounds the whole call, credential
            # resolution (a hung credential_process, say) and retries included.
            with anyio.fail_after(call_deadline(generation.config)):
                keyed, client = await self._signer(generation, role, source)
                response = await client.assume_role(**request(role))
        except TimeoutError:
            deadline = call_deadline(generation.config)
            failure = RefreshFailed("Timeout", f"no answer within {deadline:g} s", transient=True)
            if client is None and source is None:  # still resolving the source credentials
                failure = await helper_failure(failure, profile, f"no answer within {deadline:g} s")
        except Exception as exc:  # noqa: BLE001 - one role's failure must never end the run
            failure = clean_failure(classify(exc, generation.config.source_profile), role)
            if failure.code == "SourceCredentialsError" and source is None:
                failure = await helper_failure(failure, profile, failure.message)
        else:
            try:
                return validate_answer(
                    role,
                    response,
                    started=started,
                    duration_ms=round((time.perf_counter() - clock) * 1000, 1),
                )
            except RefreshFailed as exc:
                failure = exc
        finally:
            generation.users -= 1
            if keyed is not None:
                generation.keyed_users[keyed] -= 1
                await generation.trim()
            if generation.retired and generation.users == 0:
                await generation.close()
        if failure.source and generation is self._current:
            await self.reset()
        raise failure
