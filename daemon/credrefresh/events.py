"""The catalogue of every event credrefresh logs, and the one way events reach the log.

Decisions elsewhere return ``Event`` values (data); the engine, ``once`` and the services hand
them to ``emit``. The README's event catalogue is checked against ``CATALOGUE`` by the tests, so a
new event name is added here first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from credrefresh.config import Role
from credrefresh.model import Issued, format_time

__all__ = [
    "CATALOGUE",
    "Event",
    "conflict",
    "emit",
    "event",
    "refresh_failed",
    "refreshed",
]

# name -> level. Levels are fixed per event so a filter on level never hides half of an event.
CATALOGUE: Final[Mapping[str, str]] = {
    "daemon.started": "info",
    "daemon.ready": "info",
    "daemon.stopping": "info",
    "daemon.stopped": "info",
    "refresh.started": "info",
    "refresh.finished": "info",
    "role.refreshed": "info",
    "role.refresh_failed": "error",
    "role.expired": "error",
    "role.waiting": "warning",
    "source.session_started": "info",
    "source.session_required": "warning",
    "source.session_expiring": "warning",
    "source.session_expired": "error",
    "source.session_failed": "error",
    "profile.conflict": "error",
    "profile.removed": "info",
    "credentials_file.written": "info",
    "credentials_file.error": "error",
    "state_file.error": "warning",
    "config.reloaded": "info",
    "config.rejected": "error",
    "config.warning": "warning",
    "metrics.listening": "info",
    "listener.accept_error": "error",
    "library.log": "warning",
    "output.dropped": "error",
    "serve.listening": "info",
    "credentials.served": "info",
    "credentials.refused": "warning",
}


@dataclass(frozen=True, slots=True)
class Event:
    """One log event, as data.

    Attributes:
        name: A key of ``CATALOGUE``.
        fields: The event's fields (never a secret; the redaction processor checks anyway).
    """

    name: str
    fields: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in CATALOGUE:
            raise ValueError(f"event {self.name!r} is not in the catalogue")


def event(name: str, **fields: Any) -> Event:  # noqa: ANN401
    """``Event(name, fields)``."""
    return Event(name, fields)


def emit(log: Any, *events: Event) -> None:  # noqa: ANN401 - structlog's bound logger
    """Log ``events`` at their catalogue level."""
    for item in events:
        getattr(log, CATALOGUE[item.name])(item.name, **item.fields)


def refreshed(issued: Issued, *, source: str | None = None, **extra: object) -> Event:
    """``role.refreshed``: new credentials are in the file (``source``: the signing role)."""
    if source is not None:
        extra["source"] = source
    return event(
        "role.refreshed",
        profile=issued.profile,
        role_arn=issued.role_arn,
        session_name=issued.session_name,
        assumed_role_arn=issued.assumed_role_arn,
        access_key_id=issued.credentials.access_key_id,
        expiration=format_time(issued.credentials.expiration),
        duration_ms=issued.duration_ms,
        **extra,
    )


def refresh_failed(
    role: Role, code: str, message: str, *, transient: bool, **extra: object
) -> Event:
    """``role.refresh_failed``: an AssumeRole call failed."""
    return event(
        "role.refresh_failed",
        profile=role.profile,
        role_arn=role.role_arn,
        session_name=role.session_name,
        error_code=code,
        error=message,
        transient=transient,
        **extra,
    )


def conflict(path: str, role: Role) -> Event:
    """``profile.conflict``: the profile exists without our marker and was left alone."""
    return event(
        "profile.conflict",
        profile=role.profile,
        role_arn=role.role_arn,
        path=path,
        error=(
            "the profile exists in the credentials file but was not written by credrefresh; "
            "it was left untouched. Rename the role's profile or remove that section."
        ),
    )
