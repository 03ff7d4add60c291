"""The ``[source]`` session's life, as pure decisions: what is known, when to look, what to log.

``run`` keeps one ``Track``: the session that signs every role without a ``source_profile``
(an MFA session from the session file, or a web identity session it obtains itself), when to
look again, and which one-off events it has logged for that session. The engine does the I/O
(reading the file, calling STS) and hands the outcome to these functions, which return the new
track and the events to log (``source.session_started``, ``source.session_required``,
``source.session_expiring``, ``source.session_expired``, ``source.session_failed``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Final

from credrefresh.events import Event, event
from credrefresh.model import Credentials, ErrorInfo, format_time
from credrefresh.schedule import backoff_delay, next_refresh
from credrefresh.sessionfile import StoredSession
from credrefresh.settings import RefreshPolicy
from credrefresh.sourceconfig import MfaSource, SessionSource

__all__ = [
    "MFA_POLL",
    "PARKED",
    "Track",
    "action",
    "failed",
    "observed",
    "obtained",
    "phase",
    "status_note",
    "ticked",
    "usable",
]

MFA_POLL: Final = 2.0  # how often run looks at the MFA session file (a stat, mostly)
PARKED: Final = "[source]"  # RoleState.waiting_for of a role waiting for the session


@dataclass(frozen=True, slots=True)
class Track:
    """What ``run`` knows about the source session.

    Attributes:
        next_check: When to read the file (MFA) or call STS (web identity) again.
        session: The latest session seen (possibly expired; see ``usable``).
        obtained_at: When it was obtained.
        attempt: Consecutive failures to obtain one (web identity).
        problem: Why there is no usable session, for status and events; ``None`` when fine.
        reported: One-off events already logged for the current session or problem.
    """

    next_check: datetime
    session: Credentials | None = None
    obtained_at: datetime | None = None
    attempt: int = 0
    problem: str | None = None
    reported: frozenset[str] = frozenset()


def action(source: SessionSource, config_path: str) -> str:
    """What a person does about a missing session."""
    if isinstance(source, MfaSource):
        return f"run: credrefresh mfa --config {config_path}"
    return f"check {source.token_file} and the trust policy of {source.role_arn}"


def usable(track: Track, now: datetime, margin: timedelta) -> Credentials | None:
    """The session to sign with, if it outlives ``margin``."""
    session = track.session
    if session is None or session.expiration - now <= margin:
        return None
    return session


def phase(track: Track, source: SessionSource, now: datetime) -> str:
    """``missing``, ``valid``, ``expiring`` (within the lead) or ``expired``."""
    session = track.session
    if session is None:
        return "missing"
    if session.expiration <= now:
        return "expired"
    if session.expiration - now <= timedelta(seconds=source.lead):
        return "expiring"
    return "valid"


def _fields(track: Track, source: SessionSource) -> dict[str, object]:
    fields: dict[str, object] = {"kind": source.kind}
    if isinstance(source, MfaSource):
        fields["mfa_serial"] = source.serial
    else:
        fields["role_arn"] = source.role_arn
    if track.session is not None:
        fields["access_key_id"] = track.session.access_key_id
        fields["expiration"] = format_time(track.session.expiration)
    return fields


def ticked(
    track: Track, source: SessionSource, now: datetime, config_path: str
) -> tuple[Track, tuple[Event, ...]]:
    """The one-off events the passing of time calls for: expiring, expired, required."""
    found = []
    reported = set(track.reported)
    current = phase(track, source, now)
    fields = _fields(track, source)
    todo = action(source, config_path)
    if current == "expiring" and "expiring" not in reported:
        reported.add("expiring")
        assert track.session is not None  # noqa: S101 - phase says so
        left = round((track.session.expiration - now).total_seconds())
        found.append(event("source.session_expiring", seconds_left=left, action=todo, **fields))
    if current == "expired" and "expired" not in reported:
        reported |= {"expiring", "expired"}
        found.append(event("source.session_expired", action=todo, **fields))
    if current in {"missing", "expired"} and isinstance(source, MfaSource):
        problem = track.problem or (
            "no MFA session" if current == "missing" else "MFA session expired"
        )
        if "required" not in reported:
            reported.add("required")
            found.append(event("source.session_required", reason=problem, action=todo, **fields))
        track = replace(track, problem=problem)
    return replace(track, reported=frozenset(reported)), tuple(found)


def observed(
    track: Track,
    source: MfaSource,
    found: StoredSession | None,
    error: str | None,
    now: datetime,
    config_path: str,
) -> tuple[Track, tuple[Event, ...]]:
    """The MFA session file was read: ``found`` is its session, ``error`` why it is unusable.

    A new session (a new access key id) is announced once; a file that cannot be used is a
    problem reported once per distinct reason, not once per look.
    """
    track = replace(track, next_check=now + timedelta(seconds=MFA_POLL))
    problem = error
    if found is not None and found.serial != source.serial:
        problem = "the session file holds a session for another MFA device"
        found = None
    if found is None:
        # Deleted, refused or another device's: that session is no longer to be used.
        problem = problem or "no MFA session"
        track = replace(track, session=None, obtained_at=None)
    if found is not None and found.credentials.expiration <= now:
        problem = problem or "MFA session expired"
        held = track.session
        if held is None or held.access_key_id != found.credentials.access_key_id:
            track = replace(track, session=None, obtained_at=None)  # replaced by an expired one
    if found is not None and problem is None:
        creds, obtained_at = found.credentials, found.obtained_at
        if track.session is not None and track.session.access_key_id == creds.access_key_id:
            return ticked(replace(track, problem=None), source, now, config_path)
        track = Track(next_check=track.next_check, session=creds, obtained_at=obtained_at)
        started = event(
            "source.session_started",
            obtained_at=format_time(obtained_at),
            **_fields(track, source),
        )
        following = ticked(track, source, now, config_path)
        return following[0], (started, *following[1])
    if problem is not None and problem != track.problem:
        # A new reason: say it once (``ticked`` logs the event).
        track = replace(track, problem=problem, reported=track.reported - {"required"})
    return ticked(track, source, now, config_path)


def obtained(
    source: SessionSource,
    creds: Credentials,
    now: datetime,
    policy: RefreshPolicy,
    u: float,
) -> tuple[Track, tuple[Event, ...]]:
    """A web identity session arrived: use it, and renew it like a role (at half-life)."""
    # Never sooner than the first backoff: a session STS says is (nearly) over must not make
    # the keeper call it again at once.
    earliest = now + timedelta(seconds=max(policy.backoff_initial, 1.0))
    new = Track(
        next_check=max(next_refresh(now, creds.expiration, policy, u), earliest),
        session=creds,
        obtained_at=now,
    )
    return new, (
        event("source.session_started", obtained_at=format_time(now), **_fields(new, source)),
    )


def failed(
    track: Track,
    source: SessionSource,
    error: ErrorInfo,
    policy: RefreshPolicy,
    u: float,
) -> tuple[Track, tuple[Event, ...]]:
    """Obtaining a web identity session failed: back off, roles keep waiting."""
    attempt = track.attempt + 1
    delay = backoff_delay(attempt, transient=error.transient, policy=policy, u=u)
    retry = error.at + timedelta(seconds=delay)
    session = track.session
    if session is not None and session.expiration > error.at:
        # Do not wait past the expiry of the session still held.
        left = (session.expiration - error.at).total_seconds()
        retry = min(retry, error.at + timedelta(seconds=max(left / 2, 1.0)))
    new = replace(track, next_check=retry, attempt=attempt, problem=error.code)
    fields = _fields(track, source)
    return new, (
        event(
            "source.session_failed",
            code=error.code,
            error=error.message,
            transient=error.transient,
            attempt=attempt,
            retry_at=format_time(retry),
            **fields,
        ),
    )


def status_note(track: Track | None, source: SessionSource | None, now: datetime) -> str | None:
    """What ``STATUS=`` says about the session, when it needs saying."""
    if track is None or source is None:
        return None
    current = phase(track, source, now)
    if isinstance(source, MfaSource):
        if current in {"missing", "expired"}:
            return "waiting for MFA (run credrefresh mfa)"
        assert track.session is not None  # noqa: S101 - phase says so
        until = format_time(track.session.expiration)
        return f"MFA session {'expiring' if current == 'expiring' else 'valid'} until {until}"
    if track.problem is not None and current in {"missing", "expired"}:
        return f"waiting for the web identity session ({track.problem})"
    return None
