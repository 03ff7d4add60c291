"""``credrefresh audit``: its arguments, its inputs (files, ``.gz``, stdin) and its output.

The questions are answered by :mod:`credrefresh.audit` and :mod:`credrefresh.audittrail`; this
module opens what they read and prints what they find. It imports neither aioboto3 nor aiohttp,
so an audit starts fast on a machine that only has the log.

Exit statuses: 0 answered; 1 ``audit key`` found no such key; 2 usage error; 65 (EX_DATAERR) a
CloudTrail file is not CloudTrail JSON; 66 (EX_NOINPUT) an input could not be opened or read
(a truncated ``.gz`` included).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import itertools
import json
import os
import sys
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, Final, TextIO

from credrefresh.audit import (
    KEY_RE,
    LoggedEvent,
    Served,
    Session,
    Tally,
    events,
    for_keys,
    issued,
    parse_bound,
)
from credrefresh.auditargs import add_parser
from credrefresh.auditgaps import Gap, GapTracker
from credrefresh.audittrail import Joined, join, records
from credrefresh.logs import scrub

__all__ = ["add_parser", "run"]

EXIT_NOT_FOUND: Final = 1
EXIT_USAGE: Final = 2
EXIT_DATAERR: Final = 65
EXIT_NOINPUT: Final = 66
EXIT_INTERRUPTED: Final = 130
EXIT_PIPE: Final = 141  # 128 + SIGPIPE
_GZIP_MAGIC: Final = b"\x1f\x8b"


class InputError(Exception):
    """An input could not be opened or read; the message names it."""


class DataError(Exception):
    """A CloudTrail file is not CloudTrail JSON; the message names it."""


def run(
    args: argparse.Namespace,
    stdin: IO[bytes] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    now: datetime | None = None,
) -> int:
    """Answer one audit question; return the exit status.

    ``stdin`` defaults to the process's standard input, looked up only when read.
    """
    stdout, stderr = out or sys.stdout, err or sys.stderr
    try:
        window = check(args, now or datetime.now(UTC))
    except ValueError as exc:
        print(f"credrefresh audit: {scrub(str(exc))}", file=stderr)
        return EXIT_USAGE
    tally = Tally()
    try:
        code = answer(args, window, stdin, tally, stdout, stderr)
    except (DataError, InputError) as exc:
        print(f"credrefresh audit: {scrub(str(exc))}", file=stderr)
        return EXIT_DATAERR if isinstance(exc, DataError) else EXIT_NOINPUT
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as a process killed by SIGPIPE would.
        # Anything still buffered would fail again when Python flushes stdout at exit (the
        # recipe in the signal module's documentation).
        if stdout is sys.stdout:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    print(f"credrefresh audit: {tally.summary()}", file=stderr)
    return code


@dataclass(frozen=True, slots=True)
class Window:
    """``--since`` and ``--until``: a half-open interval, either end open when ``None``."""

    since: datetime | None = None
    until: datetime | None = None


def check(args: argparse.Namespace, now: datetime) -> Window:
    """What argparse cannot check; raises ValueError with a message for the person."""
    if args.question == "key" and KEY_RE.fullmatch(args.access_key_id) is None:
        raise ValueError("an access key id is 16-128 of A-Z and 0-9")
    if args.question == "cloudtrail" and "-" in args.trails:
        raise ValueError("CloudTrail files are read twice, so not from stdin")
    since, until = (getattr(args, "since", None), getattr(args, "until", None))
    return Window(
        since=parse_bound(since, now) if since else None,
        until=parse_bound(until, now) if until else None,
    )


def answer(
    args: argparse.Namespace,
    window: Window,
    stdin: IO[bytes] | None,
    tally: Tally,
    out: TextIO,
    err: TextIO,
) -> int:
    """Dispatch to the question asked."""
    if args.question == "sessions":
        stream = issued(events(read_lines(args.files, stdin), tally), tally)
        return sessions(args, stream, window, out)
    if args.question == "key":
        return key(args, read_lines(args.files, stdin), tally, out)
    if args.question == "gaps":
        return gaps(args, events(read_lines(args.files, stdin), tally), window, out)
    return cloudtrail(args, stdin, tally, out, err)


# -- input -------------------------------------------------------------------------------------


@contextlib.contextmanager
def opened(name: str, stdin: IO[bytes] | None) -> Iterator[IO[bytes]]:
    """A file (``-`` is stdin) as binary, gunzipped when it starts with gzip's magic bytes."""
    if name == "-":
        raw = stdin if stdin is not None else sys.stdin.buffer
    else:
        try:
            raw = open(name, "rb")  # noqa: SIM115 - closed below, after the caller is done
        except OSError as exc:
            raise InputError(f"cannot open {name}: {exc.strerror or exc}") from exc
    try:
        peek = getattr(raw, "peek", None)
        head = peek(2)[:2] if peek is not None else b""
        yield gzip.GzipFile(fileobj=raw, mode="rb") if head == _GZIP_MAGIC else raw  # type: ignore[misc]
    finally:
        if name != "-":
            raw.close()


def read_lines(names: Sequence[str], stdin: IO[bytes] | None) -> Iterator[str]:
    """Every line of every file in turn (stdin when none), raising InputError on a bad read.

    Bytes that are not UTF-8 become U+FFFD: such a line is noise, never a reason to stop.
    """
    for name in names or ["-"]:
        with opened(name, stdin) as stream:
            text = io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="\n")
            try:
                yield from text
            except (OSError, EOFError, zlib.error) as exc:
                raise InputError(f"cannot read {'stdin' if name == '-' else name}: {exc}") from exc
            finally:
                # Leave the stream to `opened` (stdin stays open). When a closed pipe ends the
                # run, this generator is finalized late, after the stream: nothing to detach.
                with contextlib.suppress(ValueError):
                    text.detach()


def load_trail(name: str, stdin: IO[bytes] | None) -> object:
    """One CloudTrail file's JSON document."""
    with opened(name, stdin) as stream:
        try:
            data = stream.read()
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"cannot read {name}: {exc}") from exc
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise DataError(f"{name}: not JSON ({exc})") from exc


# -- questions ---------------------------------------------------------------------------------


def _in_window(session: Session, window: Window) -> bool:
    if window.since is None and window.until is None:
        return True
    at = datetime.fromisoformat(session.issued).astimezone(UTC)
    return (window.since is None or at >= window.since) and (
        window.until is None or at < window.until
    )


def sessions(
    args: argparse.Namespace,
    stream: Iterable[Session],
    window: Window,
    out: TextIO,
) -> int:
    """``audit sessions``: a JSON array or a table, streamed either way."""
    profiles = set(args.profile or ())
    found = (
        session
        for session in stream
        if (not profiles or session.profile in profiles) and _in_window(session, window)
    )
    if args.json:
        write_array(out, (session.to_json() for session in found))
    else:
        header = ("ISSUED", "PROFILE", "ROLE", "SESSION", "SOURCE", "ACCESS KEY ID", "EXPIRES")
        write_table(out, header, (session_row(session) for session in found))
    return 0


def session_row(session: Session) -> tuple[str, ...]:
    """A session as table cells."""
    return (
        session.issued,
        session.profile,
        session.role_arn,
        session.session_name,
        session.source or "-",
        session.access_key_id,
        session.expiration,
    )


def key(args: argparse.Namespace, lines: Iterable[str], tally: Tally, out: TextIO) -> int:
    """``audit key``: the sessions that issued an access key id, and its hand-outs."""
    wanted = args.access_key_id
    found = list(for_keys(events(lines, tally, needle=wanted), {wanted}, tally))
    found_sessions = [item for item in found if isinstance(item, Session)]
    served = [item for item in found if isinstance(item, Served)]
    if args.json:
        document = {
            "access_key_id": wanted,
            "found": bool(found),
            "sessions": [session.to_json() for session in found_sessions],
            "served": [given.to_json() for given in served],
        }
        print(json.dumps(document, indent=2), file=out)
    elif not found:
        print(f"{wanted}: not in the log", file=out)
    else:
        write_key(out, found_sessions, served)
    return 0 if found else EXIT_NOT_FOUND


def write_key(out: TextIO, issued: Sequence[Session], served: Sequence[Served]) -> None:
    """The sessions of one key, one field a line, then a table of its hand-outs."""
    for session in issued:
        for label, value in session.to_json().items():
            if value is not None:
                out.write(f"{label + ':':18}{value}\n")
        out.write("\n")
    if served:
        header = ("SERVED", "PROFILE", "CLIENT", "EXPIRES")
        rows = [(s.at, s.profile or "-", s.client or "-", s.expiration or "-") for s in served]
        write_table(out, header, rows)
    else:
        out.write("served: no credentials.served events for this key\n")


def gaps(
    args: argparse.Namespace,
    stream: Iterable[LoggedEvent],
    window: Window,
    out: TextIO,
) -> int:
    """``audit gaps``: every period without valid credentials, closed ones first."""
    tracker = GapTracker()
    found = [gap for event in stream if (gap := tracker.feed(event)) is not None]
    found += tracker.open_gaps()
    profiles = set(args.profile or ())
    chosen = [
        gap
        for gap in found
        if (not profiles or gap.profile in profiles) and gap.overlaps(window.since, window.until)
    ]
    log_end = tracker.log_end or datetime.now(UTC)
    if args.json:
        write_array(out, (gap_json(gap, log_end) for gap in chosen))
        return 0
    if not chosen:
        out.write("no gaps: every profile had valid credentials\n")
        return 0
    header = ("PROFILE", "FROM", "TO", "LASTED", "HOW", "FAILURES")
    write_table(out, header, (gap_row(gap, log_end) for gap in chosen))
    return 0


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def gap_json(gap: Gap, log_end: datetime) -> dict[str, Any]:
    """A gap as a JSON object."""
    return {
        "profile": gap.profile,
        "role_arn": gap.role_arn,
        "start": _iso(gap.start),
        "end": _iso(gap.end),
        "seconds": round(gap.seconds(log_end), 3),
        "ended_by": gap.ended_by,
        "reported": gap.reported,
        "failures": [{"error_code": code, "count": n} for code, n in gap.failures],
        "file_errors": gap.file_errors,
    }


def gap_row(gap: Gap, log_end: datetime) -> tuple[str, ...]:
    """A gap as table cells."""
    failures = [f"{code} x{n}" for code, n in gap.failures]
    if gap.file_errors:
        failures.append(f"credentials_file.error x{gap.file_errors}")
    end = _iso(gap.end) or "(open at end of log)"
    how = "role.expired" if gap.reported else "inferred"
    lasted = f"{gap.seconds(log_end):.0f}s"
    return (gap.profile, _iso(gap.start) or "-", end, lasted, how, ", ".join(failures) or "-")


def cloudtrail(
    args: argparse.Namespace, stdin: IO[bytes] | None, tally: Tally, out: TextIO, err: TextIO
) -> int:
    """``audit cloudtrail``: read the trails for their keys, keep only those sessions, join."""
    wanted: set[str] = set()
    for name in args.trails:
        for record in _records(name, stdin):
            wanted.update(record.keys())
    ours = {
        session.access_key_id: session
        for session in for_keys(events(read_lines(args.log or [], stdin), tally), wanted, tally)
        if isinstance(session, Session)
    }
    profiles = set(args.profile or ())
    counts = {"used": 0, "issued": 0, "unknown": 0}

    def joined() -> Iterator[Joined]:
        for name in args.trails:
            for record in _records(name, stdin):
                result = join(record, ours)
                if profiles and (result.session is None or result.session.profile not in profiles):
                    continue
                counts[result.match] += 1
                yield result

    if args.json:
        write_array(out, (result.to_json() for result in joined()))
    else:
        header = ("EVENT TIME", "EVENT", "ACCESS KEY ID", "PROFILE", "ROLE", "SESSION")
        write_table(out, header, (trail_row(result) for result in joined()))
    print(
        f"credrefresh audit: {sum(counts.values())} CloudTrail records: {counts['used']} made "
        f"with keys credrefresh issued, {counts['issued']} issuing them (AssumeRole), "
        f"{counts['unknown']} not issued by credrefresh",
        file=err,
    )
    return 0


def _records(name: str, stdin: IO[bytes] | None) -> Iterator[Any]:
    try:
        yield from records(load_trail(name, stdin))
    except ValueError as exc:
        raise DataError(f"{name}: {exc}") from exc


def trail_row(result: Joined) -> tuple[str, ...]:
    """A joined record as table cells."""
    record, session = result.record, result.session
    event = f"{record.event_source or '?'} {record.event_name or '?'}"
    if record.error_code:
        event += f" ({record.error_code})"
    key = record.access_key_id or "-"
    if session is None:
        cells = (record.event_time or "-", event, key, "(not issued by credrefresh)", "-", "-")
    else:
        if result.match == "issued":
            key = f"{key} -> {session.access_key_id}"
        cells = (
            record.event_time or "-",
            event,
            key,
            session.profile,
            session.role_arn,
            session.session_name,
        )
    return cells


# -- output ------------------------------------------------------------------------------------


def write_array(out: TextIO, items: Iterable[dict[str, Any]]) -> None:
    """A JSON array, one element a line, written as the elements come (nothing is gathered).

    The elements' strings were scrubbed where they were read.
    """
    separator = "[\n"
    encode = json.JSONEncoder().encode
    for item in items:
        out.write(separator + encode(item))
        separator = ",\n"
    out.write("[]\n" if separator == "[\n" else "\n]\n")


def write_table(
    out: TextIO, header: Sequence[str], rows: Iterable[Sequence[str]], sample: int = 1000
) -> None:
    """Left-aligned columns two spaces apart, the last one unpadded.

    Widths come from the first ``sample`` rows, so a table of a million sessions streams in
    constant memory; a longer cell further down only shifts its own line.
    """
    stream = iter(rows)
    head = [header, *itertools.islice(stream, sample)]
    widths = [max(len(row[i]) for row in head) for i in range(len(header) - 1)]
    for row in itertools.chain(head, stream):
        cells = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        out.write(f"{cells}  {row[-1]}\n")
