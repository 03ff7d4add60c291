"""Plain data shared by the modules: what a refresh produces.

Frozen, slotted dataclasses only; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["Credentials", "Issued"]


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
    """

    profile: str
    role_arn: str
    session_name: str
    assumed_role_arn: str
    credentials: Credentials
    issued_at: datetime
    duration_ms: float
