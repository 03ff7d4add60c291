"""Answer an auditor's questions from credrefresh's own log: the pure part of ``credrefresh audit``.

Lines become events, events become sessions and served credentials, all while streaming: nothing
here keeps a line after reading it, so memory grows with what a question keeps, never with the
length of the log. Gaps are found in ``auditgaps.py``, CloudTrail records joined in
``audittrail.py``; opening files and printing are in ``auditcli.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Container, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from credrefresh.logs import scrub

__all__ = [
    "LoggedEvent",
    "Served",
    "Session",
    "Tally",
    "events",
    "for_keys",
    "issued",
    "parse_bound",
    "parse_time",
    "served_of",
    "session_of",
    "text_field",
]

# Access key ids are upper-case letters and digits (AKIA..., ASIA...); IAM allows 16-128.
KEY_RE: Final = re.compile(r"[A-Z0-9]{16,128}")
_RELATIVE_RE: Final = re.compile(r"(\d+)\s*([smhdw])")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_REORDER_SLACK: Final = timedelta(seconds=1)
_MAX_FIELD: Final = 2048  # longer strings are not ours: ARNs and names are far shorter
_DECODER: Final = json.JSONDecoder()
_SECRET_LEN: Final = 40
_SECRET_RUN: Final = re.compile(r"[A-Za-z0-9/+=]{40}")


@dataclass(slots=True)
class Tally:
    """What reading the input found, line by line (a running count, so not frozen).

    Attributes:
        lines: Lines read.
        events: Lines that were credrefresh events (JSON objects with ``event``, ``level`` and
            an ISO 8601 ``timestamp``).
        not_json: Lines that held no JSON object (journal noise, tracebacks, blank lines).
        foreign: JSON lines that were not credrefresh events (another program's log).
        unread: Lines not parsed because they lack the access key id looked for.
        malformed: credrefresh events this command reads whose fields did not check out.
        out_of_order: Events more than a second older than an event read before them (files
            given newest first, or two logs interleaved); gaps need the log in time order.
    """

    lines: int = 0
    events: int = 0
    not_json: int = 0
    foreign: int = 0
    unread: int = 0
    malformed: int = 0
    out_of_order: int = 0

    def summary(self) -> str:
        """One line for stderr."""
        text = f"{self.lines} lines: "
        if self.unread:
            text += f"{self.unread} without the key (not parsed), "
        text += (
            f"{self.events} credrefresh events, "
            f"{self.not_json} not JSON, {self.foreign} other JSON skipped"
        )
        if self.malformed:
            text += f", {self.malformed} malformed events skipped"
        if self.out_of_order:
            text += (
                f"; {self.out_of_order} events out of time order (give files oldest first, "
                "one daemon's log at a time)"
            )
        return text


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """One event read back from credrefresh's log (``events.Event`` is one about to be logged).

    Attributes:
        name: The ``event`` field, e.g. ``role.refreshed``.
        at: Its ``timestamp``, in UTC.
        timestamp: The ``timestamp`` as logged.
        fields: The whole JSON object.
    """

    name: str
    at: datetime
    timestamp: str
    fields: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Session:
    """One issued session, from a ``role.refreshed`` event.

    Attributes:
        profile: The profile the credentials were written to.
        role_arn: The role assumed.
        session_name: The RoleSessionName (CloudTrail's ``roleSessionName``).
        access_key_id: The session's access key id (CloudTrail's ``userIdentity.accessKeyId``).
        issued: When the credentials were in the file (the event's timestamp).
        expiration: When they expire, as logged.
        assumed_role_arn: The assumed-role ARN STS returned, when logged.
        source: The profile or role whose credentials called STS, when the role was chained.
    """

    profile: str
    role_arn: str
    session_name: str
    access_key_id: str
    issued: str
    expiration: str
    assumed_role_arn: str | None = None
    source: str | None = None

    def to_json(self) -> dict[str, str | None]:
        """The session as a JSON object."""
        return {
            "profile": self.profile,
            "role_arn": self.role_arn,
            "session_name": self.session_name,
            "source": self.source,
            "access_key_id": self.access_key_id,
            "assumed_role_arn": self.assumed_role_arn,
            "issued": self.issued,
            "expiration": self.expiration,
        }


@dataclass(frozen=True, slots=True)
class Served:
    """One hand-out of credentials to a client, from a ``credentials.served`` event.

    Attributes:
        at: When, as logged.
        access_key_id: The key handed out.
        profile: The profile served, when logged.
        expiration: The expiry of what was served, when logged.
        client: The client's address (and port), when logged.
    """

    at: str
    access_key_id: str
    profile: str | None = None
    expiration: str | None = None
    client: str | None = None

    def to_json(self) -> dict[str, str | None]:
        """The hand-out as a JSON object."""
        return {
            "timestamp": self.at,
            "profile": self.profile,
            "access_key_id": self.access_key_id,
            "expiration": self.expiration,
            "client": self.client,
        }


def parse_time(text: str) -> datetime | None:
    """An ISO 8601 time as an aware UTC datetime (naive means UTC); ``None`` if it is not one."""
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def parse_bound(text: str, now: datetime) -> datetime:
    """A ``--since``/``--until`` value: ISO 8601 (naive means UTC) or a duration ago (``2h``).

    Durations are a number and a unit (s, m, h, d, w), summed: ``1d12h`` is 36 hours ago.
    """
    moment = parse_time(text.strip())
    if moment is not None:
        return moment
    compact = text.strip().lower().removesuffix("ago").strip()
    parts = _RELATIVE_RE.findall(compact)
    if parts and _RELATIVE_RE.sub("", compact).strip() == "":
        return now - timedelta(seconds=sum(int(n) * _UNITS[unit] for n, unit in parts))
    raise ValueError(
        f"{text!r} is not a time: give ISO 8601 (2026-11-27, 2026-11-27T10:00Z) "
        "or a duration ago (90m, 2h, 7d)"
    )


def _decode(line: str) -> Any:  # noqa: ANN401 - whatever the JSON holds
    """The JSON object on a line, which may carry a syslog-style prefix; ``None`` if none."""
    start = line.find("{")
    if start < 0:
        return None
    try:
        return _DECODER.raw_decode(line, start)[0]
    except ValueError:
        return None


def events(lines: Iterable[str], tally: Tally, needle: str | None = None) -> Iterator[LoggedEvent]:
    """The credrefresh events on ``lines``, counting everything else in ``tally``.

    Lines may be bare JSON (``journalctl -o cat``), carry a prefix before the JSON (syslog,
    ``journalctl -o short``), or be journald's own JSON export (``journalctl -o json``, whose
    ``MESSAGE`` holds our line). With ``needle``, lines that do not contain it are counted but not
    parsed (a fast path for one access key id).
    """
    latest: datetime | None = None
    for line in lines:
        tally.lines += 1
        if needle is not None and needle not in line:
            tally.unread += 1
            continue
        data = _decode(line)
        if isinstance(data, dict) and "event" not in data and isinstance(data.get("MESSAGE"), str):
            data = _decode(data["MESSAGE"])
        if not isinstance(data, dict):
            tally.not_json += 1
            continue
        name, stamp = data.get("event"), data.get("timestamp")
        at = parse_time(stamp) if isinstance(stamp, str) else None
        if not isinstance(name, str) or not isinstance(data.get("level"), str) or at is None:
            tally.foreign += 1
            continue
        tally.events += 1
        if latest is not None and at < latest - _REORDER_SLACK:
            tally.out_of_order += 1
        latest = at if latest is None or at > latest else latest
        yield LoggedEvent(name, at, stamp, data)  # type: ignore[arg-type]


def text_field(fields: Mapping[str, Any], key: str) -> str | None:
    """A field that is short printable text (no escapes to move a terminal's cursor), scrubbed.

    Anything shaped like a secret is blanked, as the daemon's own log processor does.
    """
    value = fields.get(key)
    if value.__class__ is str and 0 < len(value) <= _MAX_FIELD and value.isprintable():
        # Every secret shape ``scrub`` knows is a run of 40 or more of these characters: look
        # for one before paying for scrub's two substitutions.
        if len(value) < _SECRET_LEN or _SECRET_RUN.search(value) is None:
            return value
        return scrub(value)
    return None


def _key(fields: Mapping[str, Any]) -> str | None:
    value = fields.get("access_key_id")
    return value if value.__class__ is str and KEY_RE.fullmatch(value) else None


SESSION_EVENTS: Final = frozenset({"role.refreshed", "source.session_started"})
SOURCE_PROFILE: Final = "[source]"


def session_of(event: LoggedEvent) -> Session | None:
    """The session a ``role.refreshed`` (or ``source.session_started``) event records.

    A ``[source]`` session (MFA, web identity) is listed under the profile ``[source]``, with
    the MFA device or the web identity role as its role: it is the key CloudTrail shows as the
    caller of every AssumeRole it signed. ``None`` if the fields do not check out.
    """
    fields = event.fields
    if event.name == "source.session_started":
        device = text_field(fields, "mfa_serial")
        role = text_field(fields, "role_arn") or device
        fields = {
            **fields,
            "profile": SOURCE_PROFILE,
            "role_arn": role,
            "session_name": "mfa" if device else fields.get("session_name"),
        }
    profile, key, expiration = text_field(fields, "profile"), _key(fields), fields.get("expiration")
    if (
        profile is None
        or key is None
        or expiration.__class__ is not str
        or parse_time(expiration) is None
    ):
        return None
    return Session(
        profile=profile,
        role_arn=text_field(fields, "role_arn") or "-",
        session_name=text_field(fields, "session_name") or "-",
        access_key_id=key,
        issued=event.timestamp,
        expiration=expiration,
        assumed_role_arn=text_field(fields, "assumed_role_arn"),
        source=text_field(fields, "source"),
    )


def served_of(event: LoggedEvent) -> Served | None:
    """The hand-out a ``credentials.served`` event records; ``None`` if it names no valid key."""
    fields = event.fields
    key = _key(fields)
    if key is None:
        return None
    client = text_field(fields, "client")
    if client is None:
        address = text_field(fields, "client_address") or text_field(fields, "address")
        port = fields.get("client_port", fields.get("port"))
        if address is not None:
            client = f"{address}:{port}" if isinstance(port, int) else address
    return Served(
        at=event.timestamp,
        access_key_id=key,
        profile=text_field(fields, "profile"),
        expiration=text_field(fields, "expiration"),
        client=client,
    )


def issued(stream: Iterable[LoggedEvent], tally: Tally) -> Iterator[Session]:
    """Every session the ``role.refreshed`` and ``source.session_started`` events record.

    A source session is listed once, however often it was announced; malformed events count.
    """
    sources: set[str] = set()
    for event in stream:
        if event.name in SESSION_EVENTS:
            session = session_of(event)
            if session is None:
                tally.malformed += 1
            elif not once_more(session, sources):
                yield session


def for_keys(
    stream: Iterable[LoggedEvent], keys: Container[str], tally: Tally
) -> Iterator[Session | Served]:
    """The sessions that issued, and the hand-outs that served, any of ``keys``."""
    sources: set[str] = set()
    for event in stream:
        found: Session | Served | None = None
        if event.name in SESSION_EVENTS:
            found = session_of(event)
        elif event.name == "credentials.served":
            found = served_of(event)
        else:
            continue
        if found is None:
            tally.malformed += 1
        elif found.access_key_id in keys and not once_more(found, sources):
            yield found


def once_more(found: Session | Served, sources: set[str]) -> bool:
    """Whether ``found`` announces a source session already seen (``sources`` grows)."""
    if not isinstance(found, Session) or found.profile != SOURCE_PROFILE:
        return False
    if found.access_key_id in sources:
        return True
    sources.add(found.access_key_id)
    return False
