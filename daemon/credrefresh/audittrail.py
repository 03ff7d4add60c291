"""CloudTrail records joined to credrefresh's sessions by access key id (pure).

Two shapes are read: what CloudTrail delivers to S3 (``{"Records": [...]}``) and what
``aws cloudtrail lookup-events`` prints (``{"Events": [...]}``, each with the record as a JSON
string in ``CloudTrailEvent``). Only named fields are kept: a record's ``responseElements`` may
hold a session token, and nothing else of the record is ever printed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from credrefresh.audit import KEY_RE, Session, text_field

__all__ = ["Joined", "TrailRecord", "join", "records"]


@dataclass(frozen=True, slots=True)
class TrailRecord:
    """The fields of one CloudTrail record an audit needs.

    Attributes:
        event_time: ``eventTime``.
        event_source: ``eventSource`` (``s3.amazonaws.com``).
        event_name: ``eventName`` (``GetObject``).
        region: ``awsRegion``.
        source_ip: ``sourceIPAddress``.
        error_code: ``errorCode``, when the call failed.
        access_key_id: ``userIdentity.accessKeyId``: the key that made the call.
        principal: ``userIdentity.arn``.
        issued_key: ``responseElements.credentials.accessKeyId``: the key an AssumeRole call
            issued (the record of credrefresh's own call to STS).
    """

    event_time: str | None
    event_source: str | None
    event_name: str | None
    region: str | None
    source_ip: str | None
    error_code: str | None
    access_key_id: str | None
    principal: str | None
    issued_key: str | None = None

    def keys(self) -> tuple[str, ...]:
        """The access key ids this record mentions."""
        return tuple(key for key in (self.access_key_id, self.issued_key) if key is not None)


@dataclass(frozen=True, slots=True)
class Joined:
    """A CloudTrail record and the credrefresh session it belongs to.

    Attributes:
        record: The record.
        session: The session whose key made (or, for AssumeRole, was issued by) the call;
            ``None`` when credrefresh never issued that key.
        match: ``used`` (the key made the call), ``issued`` (the call issued the key) or
            ``unknown``.
    """

    record: TrailRecord
    session: Session | None
    match: str

    def to_json(self) -> dict[str, Any]:
        """The joined record as a JSON object."""
        record = self.record
        return {
            "event_time": record.event_time,
            "event_source": record.event_source,
            "event_name": record.event_name,
            "aws_region": record.region,
            "source_ip_address": record.source_ip,
            "error_code": record.error_code,
            "access_key_id": record.access_key_id,
            "principal_arn": record.principal,
            "issued_by_credrefresh": self.session is not None,
            "match": self.match,
            "session": None if self.session is None else self.session.to_json(),
        }


def _key(data: object, key: str) -> str | None:
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, str) and KEY_RE.fullmatch(value) else None


def _record(data: Mapping[str, Any]) -> TrailRecord:
    identity = data.get("userIdentity")
    response = data.get("responseElements")
    issued = response.get("credentials") if isinstance(response, dict) else None
    return TrailRecord(
        event_time=text_field(data, "eventTime"),
        event_source=text_field(data, "eventSource"),
        event_name=text_field(data, "eventName"),
        region=text_field(data, "awsRegion"),
        source_ip=text_field(data, "sourceIPAddress"),
        error_code=text_field(data, "errorCode"),
        access_key_id=_key(identity, "accessKeyId"),
        principal=text_field(identity, "arn") if isinstance(identity, dict) else None,
        issued_key=_key(issued, "accessKeyId"),
    )


def _looked_up(data: Mapping[str, Any]) -> TrailRecord:
    """A ``lookup-events`` entry: the full record when it carries one, else its summary."""
    embedded = data.get("CloudTrailEvent")
    if isinstance(embedded, str):
        try:
            full = json.loads(embedded)
        except (ValueError, RecursionError):
            full = None
        if isinstance(full, dict):
            return _record(full)
    return TrailRecord(
        event_time=text_field(data, "EventTime"),
        event_source=text_field(data, "EventSource"),
        event_name=text_field(data, "EventName"),
        region=None,
        source_ip=None,
        error_code=None,
        access_key_id=_key(data, "AccessKeyId"),
        principal=None,
    )


def records(document: object) -> Iterator[TrailRecord]:
    """The records of one CloudTrail file (S3 delivery or ``lookup-events`` output).

    Raises:
        ValueError: The document is neither shape.
    """
    if isinstance(document, dict) and isinstance(document.get("Records"), list):
        items, read = document["Records"], _record
    elif isinstance(document, dict) and isinstance(document.get("Events"), list):
        items, read = document["Events"], _looked_up
    else:
        raise ValueError(  # noqa: TRY004 - a bad document is bad data, not a programming error
            'not a CloudTrail file: expected {"Records": [...]} or {"Events": [...]}'
        )
    for item in items:
        if isinstance(item, dict):
            yield read(item)


def join(record: TrailRecord, sessions: Mapping[str, Session]) -> Joined:
    """Attach the session whose key made the call, or whose key the call issued."""
    if record.access_key_id is not None and record.access_key_id in sessions:
        return Joined(record, sessions[record.access_key_id], "used")
    if record.issued_key is not None and record.issued_key in sessions:
        return Joined(record, sessions[record.issued_key], "issued")
    return Joined(record, None, "unknown")
