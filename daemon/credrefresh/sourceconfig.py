"""The session keys of ``[source]``: an MFA session, or a web identity.

With either, the roles that use the ``[source]`` are assumed with a *session* rather than with
the source's own credentials:

* ``mfa_serial``: the source's long-term keys call only GetSessionToken, once, when a person
  runs ``credrefresh mfa`` with a code; the session (``session_duration``, 900-129600 s) is
  stored in ``session_file`` (0600) and signs every AssumeRole until it expires.
* ``web_identity_token_file`` + ``role_arn``: the daemon calls AssumeRoleWithWebIdentity with
  the token it reads afresh on every call (Kubernetes and CI rotate it), and that role's
  session signs every AssumeRole.

Either way each role is then a chained role, which AWS caps at one hour: ``session_problems``
refuses a longer ``duration_seconds``. Pure: validation only; no I/O.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from credrefresh.text import shown, type_name

if TYPE_CHECKING:  # settings imports this module
    from credrefresh.settings import Role

__all__ = [
    "SESSION_KEYS",
    "MfaSource",
    "SessionSource",
    "WebIdentitySource",
    "parse_session",
    "session_problems",
]

SESSION_KEYS: Final = (
    "mfa_serial",
    "session_duration",
    "session_expiring_lead",
    "session_file",
    "web_identity_token_file",
    "role_arn",
    "role_session_name",
)
MFA_DURATION: Final = (900, 129600, 43200)  # GetSessionToken: low, high, default
WEB_DURATION: Final = (900, 43200, 3600)  # AssumeRoleWithWebIdentity
DEFAULT_LEAD: Final = 3600.0
CHAINED_MAX: Final = 3600  # AWS caps a role assumed with a session (a chain) at one hour
# A virtual MFA device's ARN, or a hardware device's serial number (STS: 9-256 of [\w+=/:,.@-]).
MFA_SERIAL_RE: Final = re.compile(r"[\w+=/:,.@-]{9,256}", re.ASCII)
ROLE_ARN_RE: Final = re.compile(
    r"arn:aws(?:-cn|-us-gov|-iso(?:-[a-z])?)?:iam::\d{12}:role/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,64}",
    re.ASCII,
)
SESSION_NAME_RE: Final = re.compile(r"[\w+=,.@-]{2,64}", re.ASCII)


@dataclass(frozen=True, slots=True)
class MfaSource:
    """``[source] mfa_serial``: roles are assumed with a GetSessionToken session.

    Attributes:
        serial: The MFA device's ARN (or a hardware device's serial number).
        duration: Lifetime asked of GetSessionToken, seconds.
        lead: How long before the session expires ``source.session_expiring`` is logged.
        session_file: Where ``credrefresh mfa`` stores the session (0600) for the daemon.
    """

    serial: str
    session_file: str
    duration: int = MFA_DURATION[2]
    lead: float = DEFAULT_LEAD

    @property
    def kind(self) -> str:
        """``mfa``: for events and status."""
        return "mfa"


@dataclass(frozen=True, slots=True)
class WebIdentitySource:
    """``[source] web_identity_token_file``: roles are assumed with a web identity session.

    Attributes:
        token_file: The OIDC token, read afresh for every AssumeRoleWithWebIdentity call.
        role_arn: The role assumed with the token.
        session_name: Its ``RoleSessionName``.
        duration: Lifetime asked for, seconds.
        lead: How long before the session expires ``source.session_expiring`` is logged.
    """

    token_file: str
    role_arn: str
    session_name: str = "credrefresh-web-identity"
    duration: int = WEB_DURATION[2]
    lead: float = 300.0

    @property
    def kind(self) -> str:
        """``web_identity``: for events and status."""
        return "web_identity"


SessionSource = MfaSource | WebIdentitySource


def default_session_file(state_file: str, serial: str) -> str:
    """``mfa-session-<hash>.json`` beside the state file, one per state file and device."""
    digest = hashlib.sha256(f"{state_file}\0{serial}".encode()).hexdigest()[:12]
    return os.path.join(os.path.dirname(state_file), f"mfa-session-{digest}.json")


def parse_session(  # noqa: C901 - one flat pass over seven keys
    table: Mapping[str, object],
    *,
    path: str,
    state_file: str,
    expand: Callable[[str], str] = os.path.abspath,
) -> tuple[SessionSource | None, list[str]]:
    """The session source of a ``[source]`` table (``None`` when it has none) and its problems."""
    problems: list[str] = []

    def fail(key: str, message: str) -> None:
        problems.append(f"{path}: source.{key}: {message}")

    def text(key: str, pattern: re.Pattern[str] | None, expected: str) -> str | None:
        value = table.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            fail(key, f"expected {expected}, got {type_name(value)}")
            return None
        if pattern is not None and not pattern.fullmatch(value):
            fail(key, f"expected {expected}, got {shown(value)}")
            return None
        return value

    def number(key: str, low: float, high: float, default: float) -> float:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            fail(key, f"expected a number of seconds, got {type_name(value)}")
            return default
        if not low <= value <= high:
            fail(key, f"expected {low:g} to {high:g} seconds, got {value}")
            return default
        return value

    serial = text(
        "mfa_serial",
        MFA_SERIAL_RE,
        "an MFA device ARN such as 'arn:aws:iam::123456789012:mfa/NAME'",
    )
    token_file = text("web_identity_token_file", None, "a path string")
    role_arn = text(
        "role_arn", ROLE_ARN_RE, "a role ARN such as 'arn:aws:iam::123456789012:role/NAME'"
    )
    session_name = text("role_session_name", SESSION_NAME_RE, "2-64 of letters, digits, +=,.@_-")
    session_file = text("session_file", None, "a path string")
    if serial is not None and token_file is not None:
        fail("web_identity_token_file", "cannot be combined with mfa_serial; choose one")
        return None, problems
    if token_file is None and (role_arn is not None or session_name is not None):
        key = "role_arn" if role_arn is not None else "role_session_name"
        fail(key, "needs web_identity_token_file (the role assumed with the token)")
    if serial is None and session_file is not None:
        fail("session_file", "needs mfa_serial (it holds the MFA session)")
    if serial is None and token_file is None:
        for key in ("session_duration", "session_expiring_lead"):
            if key in table:
                fail(key, "needs mfa_serial or web_identity_token_file")
        return None, problems
    if serial is not None:
        low, high, default = MFA_DURATION
        duration = int(number("session_duration", low, high, default))
        if not isinstance(table.get("session_duration", default), int):
            fail("session_duration", "expected a whole number of seconds")
        lead = number("session_expiring_lead", 0, high, DEFAULT_LEAD)
        where = expand(session_file) if session_file else default_session_file(state_file, serial)
        return (None if problems else MfaSource(serial, where, duration, lead)), problems
    if "profile" in table:
        fail(
            "profile",
            "cannot be combined with web_identity_token_file: the token is the source credential",
        )
    if role_arn is None and "role_arn" not in table:
        fail("role_arn", "missing: web_identity_token_file needs the role_arn to assume with it")
    low, high, default = WEB_DURATION
    duration = int(number("session_duration", low, high, default))
    lead = number("session_expiring_lead", 0, high, 300.0)
    if problems or role_arn is None or token_file is None:
        return None, problems
    name = session_name or "credrefresh-web-identity"
    return WebIdentitySource(expand(token_file), role_arn, name, duration, lead), []


def session_problems(path: str, roles: Sequence[Role], session: SessionSource | None) -> list[str]:
    """Roles signed by the session asking for more than an hour.

    Only roles without a ``source_profile`` are signed by the session.
    """
    if session is None:
        return []
    what = "MFA session" if isinstance(session, MfaSource) else "web identity session"
    return [
        f"{path}: roles[{index}].duration_seconds: {role.duration_seconds} is above "
        f"{CHAINED_MAX}, the most "
        f"AWS allows for a role assumed with a session; with the [source] {what} every role "
        "is a chained role"
        for index, role in enumerate(roles)
        if role.source_profile is None and role.duration_seconds > CHAINED_MAX
    ]
