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

``credrefresh.credtext`` is the pure part (the section format, the edit plan, ``render``);
``update_profiles`` and ``read_profiles`` are the I/O around it.

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
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Final

from credrefresh.credtext import (
    LAYOUT,
    ManagedProfile,
    Plan,
    apply,
    apply_bytes,
    plan,
    scan_profiles,
)
from credrefresh.errors import CredentialsFileError
from credrefresh.inifile import (
    Sections,
    describe,
    parse_sections,
    require_sections,
)
from credrefresh.model import Issued
from credrefresh.safefs import ensure_directory, open_private, open_regular

__all__ = [
    "FileMemo",
    "WriteReport",
    "lock_path",
    "read_profiles",
    "update_profiles",
]

LOCK_TIMEOUT: Final = 120.0  # a 50 MB file takes seconds to rewrite; don't give up too soon
STABLE_READ_TRIES: Final = 5
# The AWS CLI rewrites the file in place without a lock: it truncates, then writes. Reading in
# between would see an empty file, and writing that back would drop every other profile. So a
# file modified this recently is left to settle before it is read (bounded by SETTLE_LIMIT).
SETTLE: Final = 0.1
SETTLE_LIMIT: Final = 2.0


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
    # Here, not at the top: status and a start-up only read the file (tempfile: 7 ms).
    from credrefresh.atomic import remove_stale_temps, replace_atomically  # noqa: PLC0415

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

    Should another writer have replaced it since, the digest will not match next time. Only an
    ASCII file gets one: ``sections`` counts characters, which are bytes only there (the views
    of ``data`` are ASCII already; what a write adds, a profile name say, may not be).
    """
    if not all(isinstance(piece, memoryview) or piece.isascii() for piece in pieces):
        return None
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
