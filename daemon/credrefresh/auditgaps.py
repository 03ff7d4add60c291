"""Periods in which a profile had no valid credentials, found in a stream of log events (pure).

The tracker keeps one small record per profile and the gaps it has closed, never the events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from credrefresh.audit import LoggedEvent, parse_time, text_field

__all__ = ["Gap", "GapTracker"]


@dataclass(frozen=True, slots=True)
class Gap:
    """A period in which a profile had no valid credentials.

    Attributes:
        profile: The profile.
        role_arn: Its role, when known.
        start: When the last credentials expired.
        end: When new ones were written (or the profile was removed); ``None`` when still open
            at the end of the log.
        ended_by: ``role.refreshed``, ``profile.removed`` or ``None`` (open).
        reported: Whether the daemon logged ``role.expired``; false when the gap is inferred
            from a refresh after the previous expiry (the daemon was not running, for instance).
        failures: Failed refreshes since the last good one, as (error code, count), most first.
        file_errors: ``credentials_file.error`` events in that time (they hold every profile).
    """

    profile: str
    role_arn: str | None
    start: datetime
    end: datetime | None
    ended_by: str | None
    reported: bool
    failures: tuple[tuple[str, int], ...] = ()
    file_errors: int = 0

    def seconds(self, log_end: datetime) -> float:
        """How long it lasted (up to ``log_end`` when still open)."""
        return ((self.end or log_end) - self.start).total_seconds()

    def overlaps(self, since: datetime | None, until: datetime | None) -> bool:
        """Whether any part of the gap lies in ``[since, until)``."""
        return (since is None or self.end is None or self.end > since) and (
            until is None or self.start < until
        )


@dataclass(slots=True)
class _Profile:
    """What the gap tracker remembers about one profile (mutable: it is the tracker's own)."""

    role_arn: str | None = None
    expiration: datetime | None = None
    expired_at: datetime | None = None  # set by role.expired, until the next refresh
    failures: dict[str, int] = field(default_factory=dict)
    file_errors_before: int = 0


class GapTracker:
    """Finds the gaps in a stream of events read in time order (state: one record per profile).

    A gap opens when ``role.expired`` is logged, or is inferred when a refresh comes after the
    previous credentials had expired (the daemon was stopped, or ``once`` ran late). It closes
    at the next ``role.refreshed`` (or ``profile.removed``) for that profile.
    """

    __slots__ = ("_file_errors", "_last", "_profiles")

    def __init__(self) -> None:
        self._profiles: dict[str, _Profile] = {}
        self._file_errors = 0
        self._last: datetime | None = None

    @property
    def log_end(self) -> datetime | None:
        """The time of the latest event seen."""
        return self._last

    def feed(self, event: LoggedEvent) -> Gap | None:
        """Take one event; return the gap it closes, if any."""
        if self._last is None or event.at > self._last:
            self._last = event.at
        name, fields = event.name, event.fields
        if name == "credentials_file.error":
            self._file_errors += 1
            return None
        profile = text_field(fields, "profile")
        if profile is None:
            return None
        if name == "role.refreshed":
            return self._refreshed(profile, event)
        if name == "profile.removed":
            state = self._profiles.pop(profile, None)
            if state is not None and state.expired_at is not None:
                return self._gap(profile, state, state.expired_at, event.at, name)
            return None
        state = self._profiles.setdefault(profile, _Profile(file_errors_before=self._file_errors))
        state.role_arn = text_field(fields, "role_arn") or state.role_arn
        if name == "role.refresh_failed":
            code = text_field(fields, "error_code") or "unknown"
            state.failures[code] = state.failures.get(code, 0) + 1
        elif name == "role.expired" and state.expired_at is None:
            expiration = text_field(fields, "expiration")
            state.expired_at = (parse_time(expiration) if expiration else None) or event.at
        return None

    def _refreshed(self, profile: str, event: LoggedEvent) -> Gap | None:
        expiration = text_field(event.fields, "expiration")
        new_expiration = parse_time(expiration) if expiration else None
        if new_expiration is None:
            return None
        state = self._profiles.get(profile)
        gap = None
        if state is not None:
            start = state.expired_at
            if start is None and state.expiration is not None and state.expiration < event.at:
                start = state.expiration
            if start is not None:
                gap = self._gap(profile, state, start, event.at, "role.refreshed")
        self._profiles[profile] = _Profile(
            role_arn=text_field(event.fields, "role_arn"),
            expiration=new_expiration,
            file_errors_before=self._file_errors,
        )
        return gap

    def _gap(
        self, profile: str, state: _Profile, start: datetime, end: datetime | None, by: str | None
    ) -> Gap:
        failures = sorted(state.failures.items(), key=lambda item: (-item[1], item[0]))
        return Gap(
            profile=profile,
            role_arn=state.role_arn,
            start=start,
            end=end,
            ended_by=by,
            reported=state.expired_at is not None,
            failures=tuple(failures),
            file_errors=self._file_errors - state.file_errors_before,
        )

    def open_gaps(self) -> list[Gap]:
        """Gaps still open at the end of the log (expired, not replaced by its last event)."""
        gaps = []
        for profile, state in self._profiles.items():
            start = state.expired_at
            if start is None and state.expiration is not None and self._last is not None:
                start = state.expiration if state.expiration < self._last else None
            if start is not None:
                gaps.append(self._gap(profile, state, start, None, None))
        return sorted(gaps, key=lambda gap: (gap.start, gap.profile))
