"""The small STS that ``credrefresh demo`` runs on 127.0.0.1, and the STS XML it speaks.

It answers ``AssumeRole`` and ``GetCallerIdentity`` in the real query/XML protocol, so botocore,
boto3 and the AWS CLI talk to it through ``endpoint_url``. Credentials are random, obviously fake
and short-lived; keys it issued are answered with ``ExpiredToken`` once expired, like STS.
Signatures are not verified. There are no control endpoints and no faults: the test suite's fake
STS (``tests/support/fakests.py``) builds on the XML builders here and adds those.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import math
import re
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

import anyio
from aiohttp import web

__all__ = [
    "DEFAULT_ACCOUNT",
    "DEFAULT_SOURCE_ARN",
    "STS_NAMESPACE",
    "DemoSTS",
    "Identity",
    "assume_role_xml",
    "caller_access_key",
    "caller_identity_xml",
    "error_xml",
    "is_loopback",
    "iso8601",
    "new_access_key_id",
    "new_secret_access_key",
    "new_session_token",
    "role_id",
    "serve_demo",
]

STS_NAMESPACE: Final = "https://sts.amazonaws.com/doc/2011-06-15/"
DEFAULT_ACCOUNT: Final = "123456789012"
DEFAULT_SOURCE_ARN: Final = f"arn:aws:iam::{DEFAULT_ACCOUNT}:user/source"
DEFAULT_SOURCE_USER_ID: Final = "AIDAFAKESTSSOURCEUSER"
MAX_BODY: Final = 64 * 1024
MAX_IDENTITIES: Final = 10_000

_ROLE_ARN_RE: Final = re.compile(
    r"arn:(aws|aws-cn|aws-us-gov):iam::(\d{12}):role/(?:[\w+=,.@-]+/)*([\w+=,.@-]{1,64})",
    re.ASCII,
)
_SESSION_NAME_RE: Final = re.compile(r"[\w+=,.@-]{2,64}", re.ASCII)
_CREDENTIAL_RE: Final = re.compile(r"Credential=([A-Za-z0-9]+)/")


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a key this server issued belongs to.

    Attributes:
        arn: The assumed-role ARN.
        account: The role's account.
        user_id: ``AROA...:session``.
        expires_at: Epoch seconds after which the key answers ``ExpiredToken``.
    """

    arn: str
    account: str
    user_id: str
    expires_at: float | None = None


# -- the protocol's pieces, shared with the test suite's fake STS -----------------------------


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback IP address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def new_access_key_id() -> str:
    """``ASIA`` and 16 base32 characters, like a real temporary key id."""
    return "ASIA" + base64.b32encode(secrets.token_bytes(10)).decode("ascii")


def new_secret_access_key() -> str:
    """40 base64 characters."""
    return base64.b64encode(secrets.token_bytes(30)).decode("ascii")


def new_session_token() -> str:
    """400 base64 characters."""
    return base64.b64encode(secrets.token_bytes(300)).decode("ascii")


def role_id(role_arn: str) -> str:
    """A stable fake ``AROA...`` role id (21 characters) derived from the role ARN."""
    digest = hashlib.blake2b(role_arn.encode(), digest_size=11).digest()
    return "AROA" + base64.b32encode(digest).decode("ascii")[:17]


def iso8601(epoch_seconds: float) -> str:
    """``2024-05-01T12:00:00Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_seconds))


def caller_access_key(headers: Mapping[str, str], params: Mapping[str, str]) -> str | None:
    """The access key id from a SigV4 ``Authorization`` header or a presigned query."""
    auth = headers.get("Authorization")
    if auth:
        match = _CREDENTIAL_RE.search(auth)
        if match:
            return match.group(1)
    credential = params.get("X-Amz-Credential")
    if credential:
        return credential.split("/", 1)[0] or None
    return None


def assume_role_xml(
    *,
    access_key_id: str,
    secret_access_key: str,
    session_token: str,
    expiration: str,
    assumed_role_id: str,
    assumed_arn: str,
    request_id: str,
    packed_policy_size: int = 0,
    source_identity: str | None = None,
) -> str:
    """An ``AssumeRoleResponse`` document."""
    source_identity_xml = (
        f"    <SourceIdentity>{escape(source_identity)}</SourceIdentity>\n"
        if source_identity is not None
        else ""
    )
    return (
        f'<AssumeRoleResponse xmlns="{STS_NAMESPACE}">\n'
        "  <AssumeRoleResult>\n"
        "    <Credentials>\n"
        f"      <AccessKeyId>{escape(access_key_id)}</AccessKeyId>\n"
        f"      <SecretAccessKey>{escape(secret_access_key)}</SecretAccessKey>\n"
        f"      <SessionToken>{escape(session_token)}</SessionToken>\n"
        f"      <Expiration>{escape(expiration)}</Expiration>\n"
        "    </Credentials>\n"
        "    <AssumedRoleUser>\n"
        f"      <AssumedRoleId>{escape(assumed_role_id)}</AssumedRoleId>\n"
        f"      <Arn>{escape(assumed_arn)}</Arn>\n"
        "    </AssumedRoleUser>\n"
        f"    <PackedPolicySize>{packed_policy_size}</PackedPolicySize>\n"
        f"{source_identity_xml}"
        "  </AssumeRoleResult>\n"
        "  <ResponseMetadata>\n"
        f"    <RequestId>{request_id}</RequestId>\n"
        "  </ResponseMetadata>\n"
        "</AssumeRoleResponse>\n"
    )


def caller_identity_xml(identity: Identity | None, request_id: str) -> str:
    """A ``GetCallerIdentityResponse``; a key this server did not issue is the source user."""
    if identity is None:
        arn, user_id, account = DEFAULT_SOURCE_ARN, DEFAULT_SOURCE_USER_ID, DEFAULT_ACCOUNT
    else:
        arn, user_id, account = identity.arn, identity.user_id, identity.account
    return (
        f'<GetCallerIdentityResponse xmlns="{STS_NAMESPACE}">\n'
        "  <GetCallerIdentityResult>\n"
        f"    <Arn>{escape(arn)}</Arn>\n"
        f"    <UserId>{escape(user_id)}</UserId>\n"
        f"    <Account>{escape(account)}</Account>\n"
        "  </GetCallerIdentityResult>\n"
        "  <ResponseMetadata>\n"
        f"    <RequestId>{request_id}</RequestId>\n"
        "  </ResponseMetadata>\n"
        "</GetCallerIdentityResponse>\n"
    )


def error_xml(code: str, message: str, request_id: str, *, sender: bool = True) -> str:
    """An ``ErrorResponse`` document."""
    return (
        f'<ErrorResponse xmlns="{STS_NAMESPACE}">\n'
        "  <Error>\n"
        f"    <Type>{'Sender' if sender else 'Receiver'}</Type>\n"
        f"    <Code>{escape(code)}</Code>\n"
        f"    <Message>{escape(message)}</Message>\n"
        "  </Error>\n"
        f"  <RequestId>{request_id}</RequestId>\n"
        "</ErrorResponse>\n"
    )


def xml_response(body: str, request_id: str, status: int = 200) -> web.Response:
    """An aiohttp answer carrying ``body``."""
    return web.Response(
        body=body.encode("utf-8"),
        status=status,
        content_type="text/xml",
        headers={"x-amzn-RequestId": request_id},
    )


# -- the demo's server --------------------------------------------------------------------------


class DemoSTS:
    """AssumeRole and GetCallerIdentity with short lifetimes, on a loopback address only."""

    def __init__(
        self,
        *,
        lifetime: float,
        host: str = "127.0.0.1",
        latency: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not is_loopback(host) or host == "localhost":
            raise ValueError(f"the demo STS listens on a loopback literal only, not {host!r}")
        self.lifetime = lifetime
        self.host = host
        self.latency = latency
        self.clock = clock
        self.port = 0
        self.identities: OrderedDict[str, Identity] = OrderedDict()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Listen on a free port."""
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, 0)
        await site.start()
        self.port = int(runner.addresses[0][1])
        self._runner = runner

    async def stop(self) -> None:
        """Stop listening."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        request_id = str(uuid.uuid4())
        body = await request.read()
        params = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        if self.latency:
            await anyio.sleep(self.latency)
        caller = caller_access_key(request.headers, params)
        identity = self.identities.get(caller) if caller else None
        expires_at = None if identity is None else identity.expires_at
        if expires_at is not None and expires_at <= self.clock():
            message = "The security token included in the request is expired"
            return xml_response(error_xml("ExpiredToken", message, request_id), request_id, 403)
        action = params.get("Action", "")
        if action == "GetCallerIdentity":
            return xml_response(caller_identity_xml(identity, request_id), request_id)
        if action != "AssumeRole":
            message = f"Could not find operation {action[:64]!r}"
            return xml_response(error_xml("InvalidAction", message, request_id), request_id, 400)
        return self._assume_role(params, request_id)

    def _assume_role(self, params: Mapping[str, str], request_id: str) -> web.Response:
        role_arn = params.get("RoleArn", "")
        session = params.get("RoleSessionName", "")
        match = _ROLE_ARN_RE.fullmatch(role_arn)
        if match is None or not _SESSION_NAME_RE.fullmatch(session):
            message = "RoleArn or RoleSessionName is not valid"
            return xml_response(error_xml("ValidationError", message, request_id), request_id, 400)
        partition, account, name = match.groups()
        expires_at = math.ceil(self.clock() + self.lifetime)
        key = new_access_key_id()
        assumed_id = f"{role_id(role_arn)}:{session}"
        assumed_arn = f"arn:{partition}:sts::{account}:assumed-role/{name}/{session}"
        self.identities[key] = Identity(assumed_arn, account, assumed_id, expires_at)
        while len(self.identities) > MAX_IDENTITIES:
            self.identities.popitem(last=False)
        body = assume_role_xml(
            access_key_id=key,
            secret_access_key=new_secret_access_key(),
            session_token=new_session_token(),
            expiration=iso8601(expires_at),
            assumed_role_id=assumed_id,
            assumed_arn=assumed_arn,
            request_id=request_id,
        )
        return xml_response(body, request_id)


@contextlib.asynccontextmanager
async def serve_demo(lifetime: float, latency: float = 0.02) -> AsyncIterator[DemoSTS]:
    """Run a ``DemoSTS`` on 127.0.0.1 for the ``async with`` body."""
    server = DemoSTS(lifetime=lifetime, latency=latency)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
