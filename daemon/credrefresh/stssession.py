"""The STS calls that make a ``[source]`` session: GetSessionToken and AssumeRoleWithWebIdentity.

With ``sts``, the only modules that import the AWS SDK. Both calls go to the configured
``sts_endpoint_url`` and region like every AssumeRole, and their answers are checked like any
other (``credrefresh.answer``) before anything uses them.

* ``get_session_token`` is called by ``credrefresh mfa``, once, with a code a person typed:
  signed by the ``[source] profile``'s long-term keys (botocore resolves them).
* ``WebIdentity.obtain`` is called by ``run`` and ``once`` whenever the session is due: it reads
  the token file afresh each time (Kubernetes and CI rotate it) and sends an unsigned call, as
  botocore's own web-identity provider does.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Any, Final

import aioboto3
import anyio
from botocore import UNSIGNED

from credrefresh.answer import clean_failure, session_answer, validate_answer
from credrefresh.errors import RefreshFailed
from credrefresh.model import Issued
from credrefresh.safefs import open_regular
from credrefresh.settings import Config, Role
from credrefresh.sourceconfig import MfaSource, WebIdentitySource
from credrefresh.sts import EndpointSession, call_deadline, classify, client_config

__all__ = ["MAX_TOKEN", "WebIdentity", "get_session_token", "obtain_session", "read_token"]

MAX_TOKEN: Final = 20_000  # STS accepts at most 20,000 characters; OIDC tokens are a few KiB
WEB_SOURCE: Final = "[source] web identity"
MFA_SOURCE: Final = "[source] MFA session"


async def _call(config: Config, profile: str | None, operation: str, **params: Any) -> Any:  # noqa: ANN401
    """One STS call on a client of its own, bounded like an AssumeRole call."""
    core = EndpointSession(profile=profile, sts_endpoint_url=config.sts_endpoint_url)
    options = client_config(config, core)
    if profile is None and operation == "assume_role_with_web_identity":
        options = options.merge(type(options)(signature_version=UNSIGNED))
    session = aioboto3.Session(botocore_session=core)
    with anyio.fail_after(call_deadline(config)):
        async with session.client(
            "sts",
            region_name=config.region,
            endpoint_url=config.sts_endpoint_url,
            config=options,
        ) as client:
            return await getattr(client, operation)(**params)


def _failure(exc: BaseException, config: Config, stand_in: Role, secret: str) -> RefreshFailed:
    """``exc`` as a documented failure, with ``secret`` (the code or token) redacted first."""
    if isinstance(exc, TimeoutError):
        failure = RefreshFailed(
            "Timeout", f"no answer within {call_deadline(config):g} s", transient=True
        )
    elif isinstance(exc, RefreshFailed):
        failure = exc
    else:
        failure = classify(exc, config.source_profile)
    failure = clean_failure(failure, stand_in, (secret,))
    return RefreshFailed(failure.code, failure.message, transient=failure.transient, source=True)


async def get_session_token(config: Config, mfa: MfaSource, code: str) -> Issued:
    """Call GetSessionToken with ``code``.

    Raises:
        RefreshFailed: any failure, with a documented code.
    """
    stand_in = Role(MFA_SOURCE, "arn:aws:iam::000000000000:role/mfa", "credrefresh-mfa")
    started = datetime.now(UTC)
    clock = time.perf_counter()
    try:
        response = await _call(
            config,
            config.source_profile,
            "get_session_token",
            DurationSeconds=mfa.duration,
            SerialNumber=mfa.serial,
            TokenCode=code,
        )
        credentials = session_answer(stand_in, response, started=started, longest=mfa.duration)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one documented error
        raise _failure(exc, config, stand_in, code) from None
    return Issued(
        profile=MFA_SOURCE,
        role_arn=mfa.serial,
        session_name="",
        assumed_role_arn="",
        credentials=credentials,
        issued_at=started,
        duration_ms=round((time.perf_counter() - clock) * 1000, 1),
    )


def read_token(path: str) -> str:
    """The web identity token in ``path``: a regular file, bounded, one line of printable text.

    Raises:
        RefreshFailed: ``WebIdentityTokenError`` naming the file and the problem (never the
            token).
    """

    def bad(problem: str) -> RefreshFailed:
        return RefreshFailed(
            "WebIdentityTokenError", f"{path}: {problem}", transient=True, source=True
        )

    try:
        fd = open_regular(path, "web identity token file")
    except Exception as exc:  # noqa: BLE001 - CredentialsFileError: unsafe type, unreadable
        raise bad(str(exc).removeprefix(f"{path}: ")) from None
    if fd is None:
        raise bad("does not exist")
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(MAX_TOKEN + 2)  # the token and one newline
    token = data.strip()
    if len(token) > MAX_TOKEN:
        raise bad(f"larger than {MAX_TOKEN} characters, the most STS accepts; not a token")
    if not token or not all(0x21 <= byte <= 0x7E for byte in token):  # noqa: PLR2004
        raise bad("empty, or not one line of printable ASCII; not a token")
    return token.decode("ascii")


class WebIdentity:
    """Obtains the web identity session: AssumeRoleWithWebIdentity, the token read each time."""

    def __init__(self, config: Config, source: WebIdentitySource) -> None:
        self.config = config
        self.source = source
        self.stand_in = Role(WEB_SOURCE, source.role_arn, source.session_name, source.duration)

    async def obtain(self) -> Issued:
        """A new session.

        Raises:
            RefreshFailed: the token cannot be read, or STS refused (``InvalidIdentityToken``,
                ``ExpiredTokenException``, ``AccessDenied``...), or the answer is invalid.
        """
        token = await anyio.to_thread.run_sync(read_token, self.source.token_file)
        started = datetime.now(UTC)
        clock = time.perf_counter()
        try:
            response = await _call(
                self.config,
                None,
                "assume_role_with_web_identity",
                RoleArn=self.source.role_arn,
                RoleSessionName=self.source.session_name,
                WebIdentityToken=token,
                DurationSeconds=self.source.duration,
            )
            return validate_answer(
                self.stand_in,
                response,
                started=started,
                duration_ms=round((time.perf_counter() - clock) * 1000, 1),
            )
        except Exception as exc:  # noqa: BLE001 - every failure becomes one documented error
            # STS quotes request values back; the token must never reach a message.
            raise _failure(exc, self.config, self.stand_in, token) from None


async def obtain_session(config: Config) -> Issued:
    """A web identity session for ``config`` (``run`` calls this whenever the session is due).

    Raises:
        RefreshFailed: as ``WebIdentity.obtain``; ``SourceConfigError`` without a web identity.
    """
    if not isinstance(config.session, WebIdentitySource):
        raise RefreshFailed(
            "SourceConfigError", "no [source] web_identity_token_file", transient=False
        )
    return await WebIdentity(config, config.session).obtain()
