"""The STS client: the only module that imports aioboto3.

``StsClient`` is the Protocol the rest of the code depends on; ``AioStsClient`` is the real one,
and unit tests drive the engine with a small fake instead. In-call retries of throttling and 5xx
are botocore's (its ``standard`` or ``adaptive`` retry mode); this module only classifies what
is left when botocore gives up.
"""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime
from typing import Any, Final, Protocol, Self

import aioboto3
import anyio
from aiobotocore.config import AioConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)

from daemon import __version__
from daemon.config import Config, Role
from daemon.errors import RefreshFailed
from daemon.model import Credentials, Issued

__all__ = ["AioStsClient", "StsClient", "classify"]

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


class StsClient(Protocol):
    """Assumes one role; raises ``RefreshFailed`` on any failure."""

    async def assume(self, role: Role) -> Issued:
        """Call AssumeRole for ``role``."""
        ...


def classify(exc: BaseException) -> RefreshFailed:
    """Turn a botocore error into ``RefreshFailed`` with an error code and transient flag."""
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
    if isinstance(exc, EndpointConnectionError | ConnectionClosedError | ConnectionError):
        return RefreshFailed("ConnectionError", str(exc), transient=True)
    if isinstance(exc, ParamValidationError):
        return RefreshFailed("ParamValidationError", str(exc), transient=False)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | ProfileNotFound):
        return RefreshFailed(type(exc).__name__, str(exc), transient=False, source=True)
    if isinstance(exc, BotoCoreError):
        return RefreshFailed(type(exc).__name__, str(exc), transient=True)
    return RefreshFailed(type(exc).__name__, str(exc), transient=True)


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


class AioStsClient:
    """The real client: one aiobotocore STS client per region, opened lazily, shared by tasks.

    Use as an async context manager; ``reset()`` drops the clients so that the next call loads
    the source credentials afresh (after ExpiredToken, or on reload).
    """

    def __init__(self, config: Config) -> None:
        self._config = config
        self._stack = contextlib.AsyncExitStack()
        self._clients: dict[str, Any] = {}
        self._lock = anyio.Lock()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every open client."""
        self._clients = {}
        stack, self._stack = self._stack, contextlib.AsyncExitStack()
        with anyio.CancelScope(shield=True):
            await stack.aclose()

    async def reset(self, config: Config | None = None) -> None:
        """Close the clients (and adopt ``config``); the next call opens fresh ones."""
        async with self._lock:
            if config is not None:
                self._config = config
            await self.aclose()

    async def _client(self, region: str) -> Any:  # noqa: ANN401 - botocore clients are dynamic
        client = self._clients.get(region)
        if client is not None:
            return client
        async with self._lock:
            client = self._clients.get(region)
            if client is None:
                config = self._config
                session = aioboto3.Session(profile_name=config.source_profile)
                client = await self._stack.enter_async_context(
                    session.client(
                        "sts",
                        region_name=region,
                        endpoint_url=config.sts_endpoint_url,
                        config=AioConfig(
                            max_pool_connections=config.max_concurrency,
                            connect_timeout=config.sts_timeout,
                            read_timeout=config.sts_timeout,
                            retries={
                                "mode": config.retry_mode,
                                "total_max_attempts": config.sts_max_attempts,
                            },
                            user_agent_extra=f"credrefresh/{__version__}",
                        ),
                    )
                )
                self._clients[region] = client
        return client

    async def assume(self, role: Role) -> Issued:
        """Call AssumeRole; raise ``RefreshFailed`` (never anything else) on failure."""
        started = datetime.now(UTC)
        clock = time.perf_counter()
        try:
            client = await self._client(role.region or self._config.region)
            response = await client.assume_role(**request(role))
        except Exception as exc:  # noqa: BLE001 - one role's failure must never end the run
            failure = classify(exc)
        else:
            creds = response["Credentials"]
            expiration = creds["Expiration"]
            if expiration.tzinfo is None:
                expiration = expiration.replace(tzinfo=UTC)
            return Issued(
                profile=role.profile,
                role_arn=role.role_arn,
                session_name=role.session_name,
                assumed_role_arn=response["AssumedRoleUser"]["Arn"],
                credentials=Credentials(
                    access_key_id=creds["AccessKeyId"],
                    secret_access_key=creds["SecretAccessKey"],
                    session_token=creds["SessionToken"],
                    expiration=expiration.astimezone(UTC),
                ),
                issued_at=started,
                duration_ms=round((time.perf_counter() - clock) * 1000, 1),
            )
        if failure.source:
            await self.reset()
        raise failure
