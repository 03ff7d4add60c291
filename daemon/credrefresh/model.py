"""Plain data shared by the modules, and how times are written and read.

What a refresh produces, what the daemon knows of a role.

Frozen, slotted dataclasses and pure functions only; no I/O.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

from credrefresh.settings import Role

__all__ = [
    "Credentials",
    "ErrorInfo",
    "FormattedTimes",
    "Issued",
    "ParsedTimes",
    "RoleState",
    "format_time",
    "parse_time",
    "session_params",
]


@dataclass(frozen=True, slots=True)
class Credentials:
    """Temporary credentials returned by AssumeRole.

    Attributes:
        access_key_id: Not secret: CloudTrail records it, so it is logged for audits.
        secret_access_key: Secret. Excluded from ``repr`` so it cannot leak through a log
            line or a traceback.
        session_token: Secret, excluded from ``repr`` likewise.
        expiration: When STS says the credentials stop working (aware, UTC).
    """

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    expiration: datetime


@dataclass(frozen=True, slots=True)
class Issued:
    """The outcome of one successful AssumeRole call.

    Attributes:
        profile: The profile the credentials are for.
        role_arn: The role that was assumed.
        session_name: The role session name sent to STS.
        assumed_role_arn: The ``AssumedRoleUser.Arn`` STS returned.
        credentials: The credentials themselves.
        issued_at: When the call was started (aware, UTC); with ``expiration`` it gives the
            real lifetime the scheduler works from.
        duration_ms: How long the call took, retries included.
        params: Fingerprint of the session parameters asked for (``session_params``), so a
            restart knows whether the credentials in the file still answer the configuration.
    """

    profile: str
    role_arn: str
    session_name: str
    assumed_role_arn: str
    credentials: Credentials
    issued_at: datetime
    duration_ms: float
    params: str = ""


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """The last failure of a role.

    Attributes:
        code: AWS error code or network error name.
        message: The error message (never holds a secret; logs redact it anyway).
        transient: Whether it was classified transient.
        at: When it happened.
    """

    code: str
    message: str
    transient: bool
    at: datetime


@dataclass(frozen=True, slots=True)
class RoleState:
    """Everything the daemon knows about one role.

    Attributes:
        role: The configured role.
        due: When the next AssumeRole should start.
        generation: Bumped when the role is replaced by a reload; results of calls started
            for an older generation are dropped.
        expiration: Expiry of the credentials in the file, if any were written.
        access_key_id: Access key id of those credentials.
        last_success: When credentials for it were last written.
        attempt: Consecutive failures so far (0 after a success).
        last_error: The most recent failure, cleared by a success.
        expired_reported: Whether ``role.expired`` was logged for the current credentials.
        conflict: Whether the profile exists in the file without our marker.
        waiting_for: The source role this one waits for (a chain whose parent has no valid
            session), reported once per wait.
        reconfigured: The credentials in the file were issued for the role as configured
            before a reload; the next ones are written without waiting for the file's spacing.
    """

    role: Role
    due: datetime
    generation: int = 0
    expiration: datetime | None = None
    access_key_id: str | None = None
    last_success: datetime | None = None
    attempt: int = 0
    last_error: ErrorInfo | None = None
    expired_reported: bool = False
    conflict: bool = False
    waiting_for: str | None = None
    reconfigured: bool = False


def session_params(role: Role) -> str:
    """A short fingerprint of what shapes a role's session (not the external id: secret-ish).

    Recorded in the file beside the credentials; equal fingerprints mean credentials issued
    for this exact configuration.
    """
    shape = repr(
        (
            role.role_arn,
            role.session_name,
            role.duration_seconds,
            role.source_identity,
            role.tags,
            role.policy_arns,
            role.region,
        )
    )
    return hashlib.sha256(shape.encode()).hexdigest()[:16]


def format_time(moment: datetime) -> str:
    """ISO 8601 UTC with a ``Z``, second precision: the form saml2aws and gimme-aws-creds use.

    Formatted field by field with ``%``: twice as fast as an f-string with format specs, which
    is twice as fast as ``strftime``, and this runs three times per role on every state-file
    write and twice per row of ``status``. Years below 1000 get their four digits, as ISO 8601
    (and ``parse_time``) want.
    """
    u = moment if moment.tzinfo is UTC else moment.astimezone(UTC)
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % (  # noqa: UP031 - see above
        u.year,
        u.month,
        u.day,
        u.hour,
        u.minute,
        u.second,
    )


def parse_time(value: str) -> datetime | None:
    """The inverse of ``format_time``, tolerant of offsets; aware UTC, or ``None``.

    ``None`` also for a time that has no UTC equivalent a ``datetime`` can hold
    (``9999-12-31T23:59:59-14:00``): the file is anyone's to edit, and such a value must read
    as "no usable expiry", never end a run or a ``status`` with an ``OverflowError``.
    """
    try:
        moment = datetime.fromisoformat(value.strip())
        if moment.tzinfo is UTC:  # what format_time writes ("Z"): nothing to convert
            return moment
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


class ParsedTimes(dict[str, datetime | None]):
    """``parse_time`` of each text looked up, each distinct text parsed once.

    A memo for one read of many times (``scan_profiles``): a file written in rounds holds the
    same refresh and expiry times many times over. Looking a time up here costs a dict lookup,
    parsing it about ten times that.
    """

    def __missing__(self, value: str) -> datetime | None:
        parsed = self[value] = parse_time(value)
        return parsed


class FormattedTimes(dict[datetime, str]):
    """``format_time`` of each moment looked up, each distinct moment formatted once.

    ``ParsedTimes`` the other way round, for ``status``'s rows. Only moments in ``UTC`` (what
    ``parse_time`` returns) are kept: two moments of one other zone may compare equal and still
    format differently (``fold``), while a moment equal to one in ``UTC`` is the same instant.
    """

    def __missing__(self, moment: datetime) -> str:
        text = format_time(moment)
        if moment.tzinfo is UTC:
            self[moment] = text
        return text
