"""The boundary for what STS sends back: answers are checked before anything uses them.

An AssumeRole answer crosses the network; a party on the path (a plain-http endpoint, a broken
proxy) or a faulty endpoint can put anything in it. A newline in a key id would become a new
line, and a ``[section]`` a new profile, in the credentials file that botocore reads (with its
``credential_process``). So every field that is used is checked against its documented
character set and size here, and an answer that fails is rejected whole: nothing of it is
written or logged, and the error names the field, never its value.

Error answers are cleaned too (``clean_failure``): STS quotes request values back in its
messages, and a message reaches events, the state file and ``status``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Final

from credrefresh.config import DURATION_MAX, Role
from credrefresh.errors import RefreshFailed
from credrefresh.model import Credentials, Issued
from credrefresh.text import printable

__all__ = ["REDACTED", "clean_failure", "session_answer", "validate_answer"]

# STS documents AccessKeyId as 16 to 128 word characters; real ones are upper-case base32.
ACCESS_KEY_ID_RE: Final = re.compile(r"[A-Z0-9]{16,128}", re.ASCII)
# Secrets are base64 text (40 characters today); the bound leaves room for a longer format.
SECRET_RE: Final = re.compile(r"[A-Za-z0-9/+=]{16,256}", re.ASCII)
# STS says to assume no maximum size of a session token; session policies and tags make it
# grow to a few KiB. 64 KiB bounds what one answer can add to the file.
TOKEN_RE: Final = re.compile(r"[A-Za-z0-9/+=]{16,65536}", re.ASCII)
ASSUMED_ROLE_ARN_RE: Final = re.compile(
    r"arn:aws(?:-[a-z]+){0,3}:sts::\d{12}:assumed-role/[\w+=,.@-]{1,64}/[\w+=,.@-]{2,64}",
    re.ASCII,
)
ARN_MAX: Final = 2048
# How far STS's clock may differ from ours. An Expiration before the call started (less this)
# or later than the longest lifetime STS grants (plus this) is not a credential we can use.
CLOCK_SKEW: Final = timedelta(minutes=15)
REDACTED: Final = "[REDACTED]"
MESSAGE_MAX: Final = 1024


def invalid(role: Role, problem: str) -> RefreshFailed:
    """The failure for an answer that breaks the rules; ``problem`` never holds a value."""
    return RefreshFailed(
        "InvalidStsResponse",
        f"AssumeRole answer for profile {role.profile!r} rejected: {problem}; nothing written",
        transient=True,
    )


def text_field(
    role: Role, record: Mapping[str, object], key: str, pattern: re.Pattern[str], what: str
) -> str:
    """``record[key]`` when it is a string that fully matches ``pattern``."""
    value = record.get(key)
    if not isinstance(value, str):
        raise invalid(role, f"{key} is missing")
    if not pattern.fullmatch(value):
        raise invalid(role, f"{key} is not {what}")
    return value


def expiration_field(
    role: Role, value: object, started: datetime, longest: int = DURATION_MAX
) -> datetime:
    """The Expiration as an aware UTC datetime within sane bounds of ``started``.

    ``longest`` is the longest lifetime the call can grant (GetSessionToken's is 36 hours).
    """
    if not isinstance(value, datetime):
        raise invalid(role, "Expiration is missing or not a timestamp")
    try:
        moment = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
        earliest = started - CLOCK_SKEW
        latest = started + timedelta(seconds=longest) + CLOCK_SKEW
    except (OverflowError, ValueError):
        raise invalid(role, "Expiration is out of range") from None
    if not earliest <= moment <= latest:
        raise invalid(
            role,
            "Expiration is before the call started or later than STS's longest lifetime "
            f"(tolerance {CLOCK_SKEW.total_seconds():g} s)",
        )
    return moment


def validate_answer(
    role: Role, response: Mapping[str, object], *, started: datetime, duration_ms: float
) -> Issued:
    """The ``Issued`` for an AssumeRole ``response``, every used field checked (pure).

    Raises:
        RefreshFailed: ``InvalidStsResponse``, naming the field but never its value.
    """
    creds = response.get("Credentials")
    user = response.get("AssumedRoleUser")
    if not isinstance(creds, Mapping) or not isinstance(user, Mapping):
        raise invalid(role, "Credentials or AssumedRoleUser is missing")
    key_id = text_field(role, creds, "AccessKeyId", ACCESS_KEY_ID_RE, "16-128 A-Z and 0-9")
    secret = text_field(role, creds, "SecretAccessKey", SECRET_RE, "16-256 base64 characters")
    token = text_field(role, creds, "SessionToken", TOKEN_RE, "16-65536 base64 characters")
    expiration = expiration_field(role, creds.get("Expiration"), started)
    arn = user.get("Arn")
    if not isinstance(arn, str) or len(arn) > ARN_MAX or not ASSUMED_ROLE_ARN_RE.fullmatch(arn):
        raise invalid(role, "AssumedRoleUser.Arn is not an assumed-role ARN")
    return Issued(
        profile=role.profile,
        role_arn=role.role_arn,
        session_name=role.session_name,
        assumed_role_arn=arn,
        credentials=Credentials(
            access_key_id=key_id,
            secret_access_key=secret,
            session_token=token,
            expiration=expiration,
        ),
        issued_at=started,
        duration_ms=duration_ms,
    )


def session_answer(
    source: Role, response: Mapping[str, object], *, started: datetime, longest: int
) -> Credentials:
    """The credentials of a GetSessionToken answer, every field checked (pure).

    ``source`` is a stand-in role naming the session in messages.

    Raises:
        RefreshFailed: ``InvalidStsResponse``, naming the field but never its value.
    """
    creds = response.get("Credentials")
    if not isinstance(creds, Mapping):
        raise invalid(source, "Credentials is missing")
    return Credentials(
        access_key_id=text_field(source, creds, "AccessKeyId", ACCESS_KEY_ID_RE, "16-128 A-Z, 0-9"),
        secret_access_key=text_field(
            source, creds, "SecretAccessKey", SECRET_RE, "16-256 base64 characters"
        ),
        session_token=text_field(
            source, creds, "SessionToken", TOKEN_RE, "16-65536 base64 characters"
        ),
        expiration=expiration_field(source, creds.get("Expiration"), started, longest),
    )


def clean_failure(
    failure: RefreshFailed, role: Role, secrets: tuple[str, ...] = ()
) -> RefreshFailed:
    """``failure`` made safe to print: secrets redacted, controls escaped, size bounded.

    STS (or a party on the path) writes the message; it reaches events, the state file and
    ``status``. The role's external id and ``secrets`` (a web identity token, an MFA code) are
    replaced before the message is cut, so a cut can never leave part of one behind. Pure.
    """
    hidden = tuple(s for s in (role.external_id, *secrets) if s)

    def clean(text: str, limit: int) -> str:
        for secret in hidden:
            text = text.replace(secret, REDACTED)
        return printable(text, limit)

    code, message = clean(failure.code, 128), clean(failure.message, MESSAGE_MAX)
    if (code, message) == (failure.code, failure.message):
        return failure
    return RefreshFailed(code, message, transient=failure.transient, source=failure.source)
