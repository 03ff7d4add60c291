"""The only module that touches the shared credentials file.

Rules it keeps:

* It edits only profiles that carry its marker key (``credrefresh_managed``). A configured profile
  that exists without the marker is a conflict and is left exactly as it is.
* Everything else survives byte for byte: other profiles, comments, blank lines, order, UTF-8 text
  and CRLF line endings. Only the sections it manages are re-rendered.
* It never writes a file it cannot parse, and never leaves a partial one: the new text goes to a
  temporary file in the same directory, is fsynced and renamed over the target, and the directory
  is fsynced. A symlink stays a symlink; its target is what gets replaced.
* Writers are serialised by an advisory lock on ``<file>.lock``, and the file is read under that
  lock, so edits made since any earlier read are kept.

``render`` is the pure part (text in, text out); ``update_profiles`` is the I/O around it.

Finding the sections of a 10 MB file costs more than changing a few of them, so a write returns
a ``FileMemo`` (a digest of what it wrote and where its sections start) and the next write,
given it, skips the scan when the file still holds exactly those bytes.
"""

from __future__ import annotations

import configparser
import contextlib
import fcntl
import hashlib
import os
import re
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from itertools import compress
from typing import Final, NamedTuple

from credrefresh.atomic import remove_stale_temps, replace_atomically
from credrefresh.errors import CredentialsFileError
from credrefresh.inifile import (
    BOTOCORE_DEFAULT,
    Sections,
    Span,
    comments_and_blanks,
    describe,
    layout,
    parse_sections,
    require_sections,
    scan,
    section_body,
    section_value,
)
from credrefresh.model import Issued, format_time, parse_time
from credrefresh.safefs import ensure_directory, open_private, open_regular

__all__ = [
    "MARKER_KEY",
    "FileMemo",
    "ManagedProfile",
    "Plan",
    "WriteReport",
    "apply",
    "apply_bytes",
    "lock_path",
    "plan",
    "read_profiles",
    "render",
    "scan_profiles",
    "update_profiles",
]

MARKER_KEY: Final = "credrefresh_managed"
MANAGED_COMMENT: Final = "# Managed by credrefresh: this profile is rewritten on every refresh."
LOCK_TIMEOUT: Final = 120.0  # a 50 MB file takes seconds to rewrite; don't give up too soon
STABLE_READ_TRIES: Final = 5
# The AWS CLI rewrites the file in place without a lock: it truncates, then writes. Reading in
# between would see an empty file, and writing that back would drop every other profile. So a
# file modified this recently is left to settle before it is read (bounded by SETTLE_LIMIT).
SETTLE: Final = 0.1
SETTLE_LIMIT: Final = 2.0
# Any C0 or C1 control character, DEL included: none belongs in a value, and some break lines.
CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class FileMemo:
    """What an update left in the file, so that the next one need not scan it again.

    Holds no text: a digest, the file's identity and where the sections start (about 100 bytes
    a profile). It is used only when the file holds exactly the bytes it describes.

    Attributes:
        identity: ``(inode, size, mtime_ns)`` of the file after the update.
        digest: SHA-256 of the file's bytes.
        sections: Where its sections start.
    """

    identity: tuple[int, int, int]
    digest: bytes
    sections: Sections

    def describes(self, identity: tuple[int, int, int] | None, data: bytes) -> bool:
        """Whether ``data``, read from a file of ``identity``, is the file this memo describes.

        The identity alone is no proof (a same-size rewrite within the clock's resolution
        keeps it); the digest is. The identity only spares the hashing when it already differs.
        """
        return identity == self.identity and digest(data) == self.digest


@dataclass(frozen=True, slots=True)
class WriteReport:
    """What one update did.

    Attributes:
        path: The credentials file (as configured, not resolved).
        written: Profiles whose credentials were written.
        removed: Managed profiles deleted.
        conflicts: Configured profiles left alone because they exist without the marker.
        changed: Whether the file was replaced at all.
        size: Size in bytes of the file after the update.
        memo: For the next update of the same file, when the sections of this one are known.
        scanned: Whether the file was scanned (rather than read with a memo).
    """

    path: str
    written: tuple[str, ...]
    removed: tuple[str, ...]
    conflicts: tuple[str, ...]
    changed: bool
    size: int
    memo: FileMemo | None = field(default=None, repr=False, compare=False)
    scanned: bool = field(default=True, compare=False)


@dataclass(frozen=True, slots=True)
class ManagedProfile:
    """What the file says about one profile, secrets left out.

    Attributes:
        profile: The section name.
        managed: Whether it carries the marker.
        access_key_id: The key id written, if any.
        expiration: Parsed ``x_security_token_expires``, if present and valid.
        role_arn: The role recorded by credrefresh, if any.
        refreshed_at: When credrefresh wrote it, if recorded.
        session_name: The role session name recorded, if any.
        session_params: The fingerprint of the session parameters recorded, if any.
    """

    profile: str
    managed: bool
    access_key_id: str | None
    expiration: datetime | None
    role_arn: str | None
    refreshed_at: datetime | None = None
    session_name: str | None = None
    session_params: str | None = None


MANAGED_KEYS: Final = (  # what section_text writes, in order
    MARKER_KEY,
    "credrefresh_role_arn",
    "credrefresh_session_name",
    "credrefresh_assumed_role_arn",
    "credrefresh_session_params",  # only when the role sets session parameters
    "credrefresh_refreshed_at",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "x_security_token_expires",
)
# What scan_profiles reads (no secret), and its default section: [DEFAULT] is a profile like any.
PROFILE_KEYS: Final = frozenset(MANAGED_KEYS) - {"aws_secret_access_key", "aws_session_token"}
NO_DEFAULT: Final = "\x00credrefresh-no-default"
# Sections written as section_text writes them (nearly all of a populated file): read in one step.
LAYOUT: Final = layout(MANAGED_COMMENT, MANAGED_KEYS, optional={"credrefresh_session_params"})


class Plan(NamedTuple):
    """What ``plan`` decided to change in a text, as edits to apply to it.

    Attributes:
        edits: ``(start, end, new)``: replace the text's ``[start:end]`` by ``new``; in order,
            not overlapping.
        appended: Text to add after the end (line breaks, then new profiles).
        written: Profiles whose credentials were written.
        removed: Managed profiles deleted.
        conflicts: Configured profiles left alone because they exist without the marker.
        sections: Where the sections of the new text start (in characters).
        check: Whether the new text must be scanned (``require_sections``) before it is
            written: a header after a changed section is indented, or a ``[DEFAULT]`` written.
            ``sections`` then holds the names to expect and no more than that.
    """

    edits: list[tuple[int, int, str]]
    appended: str
    written: tuple[str, ...]
    removed: tuple[str, ...]
    conflicts: tuple[str, ...]
    sections: Sections
    check: bool


def render(
    text: str,
    updates: Mapping[str, Issued],
    removals: Collection[str] = (),
    *,
    now: datetime,
) -> tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Apply ``updates`` and ``removals`` to credentials-file ``text``.

    Returns ``(new_text, written, removed, conflicts)``. One pass finds the sections; only the
    ones changed are rendered again, everything else is copied by slicing, byte for byte.

    Raises:
        CredentialsFileError: the text does not parse as an INI file botocore could read, or a
            value to write could break a line.
    """
    sections = parse_sections(text, LAYOUT)
    newline = "\r\n" if "\r" in text and "\r\n" in text else "\n"  # "\r" alone: memchr
    decided = plan(text.__getitem__, len(text), newline, sections, updates, removals, now=now)
    out = apply(text, decided)
    if decided.check:
        require_sections(out, decided.sections.names)
    return out, decided.written, decided.removed, decided.conflicts


def plan(
    read: Callable[[slice], str],
    size: int,
    newline: str,
    sections: Sections,
    updates: Mapping[str, Issued],
    removals: Collection[str] = (),
    *,
    now: datetime,
) -> Plan:
    """What ``render`` changes in a text of ``size`` characters whose sections are ``sections``.

    ``read`` gives a slice of the text (as text); only the sections changed and a few
    characters around them are read, so the text may be held as bytes. ``newline`` is the
    file's: CRLF if it has any, else LF.

    Raises:
        CredentialsFileError: a value to write could break a line.
    """
    names, starts = sections
    edits: list[tuple[int, int, str]] = []
    written: list[str] = []
    removed: list[str] = []
    conflicts: list[str] = []
    present: set[str] = set()  # the names in updates that the file holds
    check = False  # whether a header after a changed section is indented
    new_names: list[str] = []  # the sections of the new text, up to `carried`
    new_starts: list[int] = []
    carried = 0  # sections before this position are in new_names already
    delta = 0  # how far the new text has moved what follows the last edit
    wanted = updates.keys() | set(removals)
    for position, name in compress(enumerate(names), map(wanted.__contains__, names)):
        start = starts[position]
        end = starts[position + 1] if position + 1 < len(starts) else size
        chunk = read(slice(start, end))
        if name in updates:
            present.add(name)
            if not marked(chunk, name):
                conflicts.append(name)
                continue
            fresh = section_text(name, updates[name], now, newline)
            written.append(name)
        elif name in removals and marked(chunk, name):
            fresh = ""
            removed.append(name)
        else:
            continue
        fresh += comments_and_blanks(chunk[section_body(chunk, 0) :], MANAGED_COMMENT)
        edits.append((start, end, fresh))
        new_names += names[carried:position]
        new_starts += moved(starts[carried:position], delta)
        if name in updates:
            new_names.append(name)
            new_starts.append(start + delta)
        delta += len(fresh) - (end - start)
        carried = position + 1
        check = check or (end < size and read(slice(end, end + 1)).isspace())
    new_names += names[carried:]
    new_starts += moved(starts[carried:], delta)
    new = {name: issued for name, issued in updates.items() if name not in present}
    appended, at = append(new, size + delta, tail(read, size, edits), newline, now)
    new_names += new
    new_starts += at
    written += new
    if check or BOTOCORE_DEFAULT in written:  # the scan must find the kept, then the new
        kept = [n for n in names if n not in removed]
        new_names = kept + [name for name in written if name not in kept]
        check = True
    done = tuple(written), tuple(removed), tuple(conflicts)
    return Plan(edits, appended, *done, Sections(tuple(new_names), tuple(new_starts)), check)


def moved(starts: Sequence[int], delta: int) -> Sequence[int]:
    """Offsets ``starts`` moved by ``delta``."""
    return [start + delta for start in starts] if delta else starts


def append(
    new: Mapping[str, Issued], length: int, ending: str, newline: str, now: datetime
) -> tuple[str, list[int]]:
    """The text appending profiles ``new`` adds, and where each of them will start.

    The text they follow has ``length`` characters and ends in ``ending``; each new profile
    comes after one blank line.
    """
    # One string grown in place, not a list: at start-up that is 10,000 profiles, and as
    # many live pieces of 1 KB would leave the heap fragmented (RSS measured 10 MB higher).
    appended = ""
    starts: list[int] = []
    for name, issued in new.items():
        gap = ""
        if length and not ending.endswith("\n"):
            gap += newline
        if length and not (ending + gap).endswith(newline * 2):
            gap += newline
        fresh = section_text(name, issued, now, newline)
        appended += gap + fresh
        starts.append(length + len(gap))
        length += len(gap) + len(fresh)
        ending = fresh[-4:]
    return appended, starts


def tail(read: Callable[[slice], str], size: int, edits: list[tuple[int, int, str]]) -> str:
    """The last few characters of the text once ``edits`` are applied (to space what follows)."""
    ending = ""
    end = size
    for start, stop, fresh in reversed(edits):
        ending = read(slice(max(stop, end - 4), end)) + ending
        if len(ending) >= 4:  # noqa: PLR2004 - two CRLFs
            return ending
        ending = fresh[-4:] + ending
        if len(ending) >= 4:  # noqa: PLR2004
            return ending
        end = start
    return read(slice(max(0, end - 4), end)) + ending


def apply(text: str, decided: Plan) -> str:
    """``text`` with ``decided``'s edits: everything between them copied, one join."""
    pieces: list[str] = []
    copied = 0
    for start, end, fresh in decided.edits:
        pieces += (text[copied:start], fresh)
        copied = end
    pieces.append(text[copied:])
    pieces.append(decided.appended)
    return "".join(pieces)


def apply_bytes(data: bytes, decided: Plan) -> list[bytes | memoryview]:
    """``apply`` on the UTF-8 bytes of an ASCII text, as pieces to write one after the other.

    Between the edits the pieces are views of ``data``: nothing is copied.
    """
    view = memoryview(data)
    pieces: list[bytes | memoryview] = []
    copied = 0
    for start, end, fresh in decided.edits:
        pieces += (view[copied:start], fresh.encode("utf-8"))
        copied = end
    pieces.append(view[copied:])
    if decided.appended:
        pieces.append(decided.appended.encode("utf-8"))
    return pieces


def marked(chunk: str, name: str) -> bool:
    """Whether the section ``chunk`` (whole, alone) carries the marker set to ``true``."""
    alone = Sections((name,), (0,))
    return (section_value(chunk, alone, 0, MARKER_KEY, LAYOUT) or "").lower() == "true"


def is_marked(span: Span) -> bool:
    """Whether a section carries the marker set to ``true`` (any case), as botocore reads it."""
    return (span.value(MARKER_KEY) or "").lower() == "true"


def section_text(name: str, issued: Issued, now: datetime, newline: str) -> str:
    """A managed profile, rendered whole.

    Raises:
        CredentialsFileError: the name or a value holds a control character (a line break
            would let it start a section of its own); the message names the field, never the
            value.
    """
    creds = issued.credentials
    values = (
        *(issued.role_arn, issued.session_name, issued.assumed_role_arn, issued.params),
        *(format_time(now), creds.access_key_id, creds.secret_access_key, creds.session_token),
        format_time(creds.expiration),
    )
    # Session parameters are written only when the role sets some.
    fields = tuple(
        (key, value)
        for key, value in zip(MANAGED_KEYS[1:], values, strict=True)
        if value or key != "credrefresh_session_params"
    )
    if not name or CONTROL.search(name):
        raise CredentialsFileError(
            f"profile name {name!r} is empty or holds a control character; not written"
        )
    for key, value in fields:
        if CONTROL.search(value):
            raise CredentialsFileError(
                f"profile [{name}]: {key} holds a control character; not written"
            )
    lines = [f"[{name}]", MANAGED_COMMENT, f"{MARKER_KEY} = true"]
    lines += (f"{key} = {value}" for key, value in fields)
    return newline.join(lines) + newline


# -- I/O ------------------------------------------------------------------------------------


def lock_path(path: str) -> str:
    """The advisory lock file that serialises writers of ``path``.

    Other scripts that edit the file can take the same lock (``flock`` on this path) so that
    nothing they write is lost.
    """
    return os.path.realpath(path) + ".lock"


@contextlib.contextmanager
def locked(
    path: str, timeout: float = LOCK_TIMEOUT, cancel: threading.Event | None = None
) -> Iterator[None]:
    """Hold the writers' lock of ``path``.

    Give up with an error after ``timeout`` seconds, or as soon as ``cancel`` is set (the
    daemon is stopping and will retry once, with a short bound).
    """
    name = lock_path(path)
    fd = open_private(name, "lock file")
    try:
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if cancel is not None and cancel.is_set():
                    raise CredentialsFileError(f"{name}: gave up waiting for the lock") from None
                if time.monotonic() >= deadline:
                    raise CredentialsFileError(
                        f"{name}: another writer has held the lock for {timeout:g} s"
                    ) from None
                # A writer holds the lock for milliseconds; poll with a short, growing wait.
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        yield
    finally:
        os.close(fd)


def read_text(target: str) -> tuple[str, tuple[int, int, int] | None]:
    """Read the file; return its text and ``(inode, size, mtime_ns)``, or ``None`` when absent."""
    data, info = read_data(target)
    return decode(target, data), info


def read_data(target: str) -> tuple[bytes, tuple[int, int, int] | None]:
    """Read the file; return its bytes and ``(inode, size, mtime_ns)``, or ``None`` when absent."""
    fd = open_regular(target, "credentials file")
    if fd is None:
        return b"", None
    try:
        with open(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            data = handle.read()
    except OSError as exc:
        raise CredentialsFileError(f"{target}: cannot read: {exc.strerror}") from None
    return data, (info.st_ino, info.st_size, info.st_mtime_ns)


def decode(target: str, data: bytes) -> str:
    """The text of the file's ``data``; refuses what is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CredentialsFileError(
            f"{target}: is not UTF-8 text (invalid byte at offset {exc.start}); refusing to "
            "rewrite it"
        ) from None


def identity(target: str) -> tuple[int, int, int] | None:
    """``(inode, size, mtime_ns)`` of the file right now, or ``None`` when absent."""
    try:
        info = os.stat(target)
    except FileNotFoundError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


def wait_settled(target: str, settle: float = SETTLE, limit: float = SETTLE_LIMIT) -> None:
    """Wait until ``target`` has not been modified for ``settle`` seconds (at most ``limit``)."""
    deadline = time.monotonic() + limit
    while True:
        try:
            modified = os.stat(target).st_mtime_ns / 1e9
        except OSError:
            return  # absent or unreadable: read_text reports it
        age = time.time() - modified
        # A modification time in the future (clock skew) says nothing about a writer: go on.
        if age >= settle or age < 0 or time.monotonic() >= deadline:
            return
        time.sleep(settle - max(age, 0.0))


def stays_empty(target: str, limit: float = SETTLE_LIMIT, step: float = 0.05) -> bool:
    """Whether an existing empty file is still empty after ``limit`` seconds.

    An empty credentials file is almost always one the AWS CLI has truncated and not yet
    rewritten (its timestamps may not even say so); writing our profiles onto that emptiness
    would drop every other profile. So it must stay empty a while before we believe it.
    """
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if os.stat(target).st_size > 0:
                return False
        except OSError:
            return False
        time.sleep(step)
    return True


def unchanged(target: str, before: tuple[int, int, int] | None) -> bool:
    """Whether the file is still the one that was read (same inode, size and mtime)."""
    return identity(target) == before


def update_profiles(
    path: str,
    updates: Mapping[str, Issued],
    removals: Collection[str] = (),
    *,
    now: datetime | None = None,
    lock_timeout: float = LOCK_TIMEOUT,
    cancel: threading.Event | None = None,
    memo: FileMemo | None = None,
) -> WriteReport:
    """Write ``updates`` and delete managed ``removals`` in one atomic replace of ``path``.

    ``memo`` is the previous update's (``WriteReport.memo``): when the file still holds exactly
    what that update left, its sections are not scanned again. Anything else is scanned.

    Raises:
        CredentialsFileError: the file cannot be read, parsed, locked or replaced; it is then
            exactly as it was.
    """
    target = os.path.realpath(path)
    moment = now or datetime.now(UTC)
    # The link's own directory too: whoever can write there can point the link elsewhere.
    ensure_directory(os.path.dirname(os.path.abspath(path)))
    ensure_directory(os.path.dirname(target))
    with locked(path, lock_timeout, cancel):
        remove_stale_temps(target)
        for _ in range(STABLE_READ_TRIES):
            wait_settled(target)
            data, before = read_data(target)
            if before is not None and before[1] == 0 and not stays_empty(target):
                continue  # someone was rewriting it: read what they wrote
            # Not UTF-8 is a reading error: reported as such, before any parsing.
            text = None if data.isascii() else decode(target, data)
            try:
                pieces, decided, sections, scanned = rendered(
                    data, text, before, memo, updates, removals, moment
                )
            except CredentialsFileError as exc:
                raise CredentialsFileError(f"{path}: {exc}; the file was left untouched") from None
            written, removed, conflicts = decided.written, decided.removed, decided.conflicts
            if same(data, pieces):
                kept = None if before is None else FileMemo(before, digest(data), sections)
                return WriteReport(
                    path, written, removed, conflicts, False, len(data), kept, scanned
                )
            # Writers that take no lock (the AWS CLI) may have rewritten the file since we
            # read it. Checked after the new data is on disk and right before the rename (the
            # smallest window there is): if it changed, start over from what is there now.
            try:
                replaced = replace_atomically(
                    target, pieces, precondition=partial(unchanged, target, before)
                )
            except OSError as exc:
                raise CredentialsFileError(
                    f"{path}: cannot replace: {exc.strerror}; the file was left untouched"
                ) from None
            if replaced:
                memo = None if decided.check else memo_of(target, pieces, decided.sections)
                size = sum(map(len, pieces))
                return WriteReport(path, written, removed, conflicts, True, size, memo, scanned)
            memo = None  # the file changed under us: whatever it holds now, scan it
        raise CredentialsFileError(
            f"{path}: changed under us {STABLE_READ_TRIES} times; not written"
        )


def rendered(
    data: bytes,
    text: str | None,
    before: tuple[int, int, int] | None,
    memo: FileMemo | None,
    updates: Mapping[str, Issued],
    removals: Collection[str],
    now: datetime,
) -> tuple[list[bytes | memoryview], Plan, Sections, bool]:
    """The new file's bytes in pieces, the plan, the old file's sections, whether scanned.

    ``text`` is ``data`` decoded, or ``None`` when ``data`` is ASCII (nearly every file): that is
    edited as bytes, offsets being the same in both, so that a memo spares decoding it and the
    edits copy it once. Anything else is decoded, edited and encoded again.

    Raises:
        CredentialsFileError: the file does not parse, or a value is refused.
    """
    if memo is not None and text is None and memo.describes(before, data):
        sections, scanned = memo.sections, False
    else:
        sections, scanned = parse_sections(text or data.decode("ascii"), LAYOUT), True
    if text is None:
        newline = "\r\n" if b"\r" in data and b"\r\n" in data else "\n"
        decided = plan(
            partial(ascii_slice, data), len(data), newline, sections, updates, removals, now=now
        )
        pieces = apply_bytes(data, decided)
    else:
        newline = "\r\n" if "\r" in text and "\r\n" in text else "\n"
        decided = plan(text.__getitem__, len(text), newline, sections, updates, removals, now=now)
        pieces = [apply(text, decided).encode("utf-8")]
    if decided.check:
        require_sections(b"".join(pieces).decode("utf-8"), decided.sections.names)
    return pieces, decided, sections, scanned


def same(data: bytes, pieces: Sequence[bytes | memoryview]) -> bool:
    """Whether ``pieces`` put together are ``data``, without putting them together."""
    if sum(map(len, pieces)) != len(data):
        return False
    view = memoryview(data)
    at = 0
    for piece in pieces:
        if view[at : at + len(piece)] != piece:
            return False
        at += len(piece)
    return True


def ascii_slice(data: bytes, part: slice) -> str:
    """``part`` of ASCII ``data``, as text."""
    return data[part].decode("ascii")


def memo_of(
    target: str, pieces: Sequence[bytes | memoryview], sections: Sections
) -> FileMemo | None:
    """The memo of the file just written with ``pieces`` (``None`` if it is gone already).

    Should another writer have replaced it since, the digest will not match next time.
    """
    try:
        info = os.stat(target)
    except OSError:
        return None
    return FileMemo((info.st_ino, info.st_size, info.st_mtime_ns), digest(*pieces), sections)


def digest(*pieces: bytes | memoryview) -> bytes:
    """What a memo keeps of the file's bytes (given in pieces, one after the other)."""
    summary = hashlib.sha256()
    for piece in pieces:
        summary.update(piece)
    return summary.digest()


def read_profiles(path: str) -> dict[str, ManagedProfile]:
    """Every profile in the file, with what credrefresh recorded; never a secret.

    Raises:
        CredentialsFileError: the file cannot be read or parsed.
    """
    target = os.path.realpath(path)
    text, _ = read_text(target)
    try:
        return scan_profiles(text)
    except configparser.Error as exc:
        raise CredentialsFileError(f"{path}: does not parse: {describe(exc)}") from None


def scan_profiles(text: str) -> dict[str, ManagedProfile]:
    """What ``read_profiles`` makes of ``text``, in one pass; raises as ``RawConfigParser``."""
    spans = scan(text.removeprefix("\ufeff"), PROFILE_KEYS, NO_DEFAULT, LAYOUT)
    profiles: dict[str, ManagedProfile] = {}
    for span in spans:
        expires = span.value("x_security_token_expires")
        profiles[span.name] = ManagedProfile(
            profile=span.name,
            managed=is_marked(span),
            access_key_id=span.value("aws_access_key_id"),
            expiration=parse_time(expires) if expires else None,
            role_arn=span.value("credrefresh_role_arn"),
            refreshed_at=parse_time(span.value("credrefresh_refreshed_at") or ""),
            session_name=span.value("credrefresh_session_name"),
            session_params=span.value("credrefresh_session_params"),
        )
    return profiles
