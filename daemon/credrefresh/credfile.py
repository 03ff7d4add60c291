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
"""

from __future__ import annotations

import configparser
import contextlib
import fcntl
import os
import re
import threading
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Final

from credrefresh.atomic import remove_stale_temps, replace_atomically
from credrefresh.errors import CredentialsFileError
from credrefresh.inifile import (
    BOTOCORE_DEFAULT,
    Span,
    comments_and_blanks,
    describe,
    layout,
    parse,
    require_sections,
    scan,
)
from credrefresh.model import Issued, format_time, parse_time
from credrefresh.safefs import ensure_directory, open_private, open_regular

__all__ = [
    "MARKER_KEY",
    "ManagedProfile",
    "WriteReport",
    "lock_path",
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
class WriteReport:
    """What one update did.

    Attributes:
        path: The credentials file (as configured, not resolved).
        written: Profiles whose credentials were written.
        removed: Managed profiles deleted.
        conflicts: Configured profiles left alone because they exist without the marker.
        changed: Whether the file was replaced at all.
        size: Size in bytes of the file after the update.
    """

    path: str
    written: tuple[str, ...]
    removed: tuple[str, ...]
    conflicts: tuple[str, ...]
    changed: bool
    size: int


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
    spans = parse(text, (MARKER_KEY,), LAYOUT)
    newline = "\r\n" if "\r\n" in text else "\n"
    pieces: list[str] = []
    written: list[str] = []
    removed: list[str] = []
    conflicts: list[str] = []
    present: set[str] = set()  # the names in updates that the file holds
    copied = 0  # text[:copied] is in pieces already
    shifted: list[int] = []  # where a changed section ended: the next header must stay one
    for span in spans:
        name = span.name
        if name in updates:
            present.add(name)
            if not is_marked(span):
                conflicts.append(name)
                continue
            fresh = section_text(name, updates[name], now, newline)
            written.append(name)
        elif name in removals and is_marked(span):
            fresh = ""
            removed.append(name)
        else:
            continue
        pieces += (
            text[copied : span.start],
            fresh,
            comments_and_blanks(text[span.body : span.end], MANAGED_COMMENT),
        )
        copied = span.end
        shifted.append(span.end)
    pieces.append(text[copied:])
    out = "".join(pieces)
    for name, issued in updates.items():
        if name in present:
            continue
        if out and not out.endswith("\n"):
            out += newline
        if out and not out.endswith(newline * 2):
            out += newline
        out += section_text(name, issued, now, newline)
        written.append(name)
    if any(end < len(text) and text[end].isspace() for end in shifted) or (
        BOTOCORE_DEFAULT in written
    ):
        gone = set(removed)
        kept = [s.name for s in spans if s.name not in gone]
        require_sections(out, kept + [name for name in written if name not in kept])
    return out, tuple(written), tuple(removed), tuple(conflicts)


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
    fd = open_regular(target, "credentials file")
    if fd is None:
        return "", None
    try:
        with open(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            data = handle.read()
    except OSError as exc:
        raise CredentialsFileError(f"{target}: cannot read: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CredentialsFileError(
            f"{target}: is not UTF-8 text (invalid byte at offset {exc.start}); refusing to "
            "rewrite it"
        ) from None
    return text, (info.st_ino, info.st_size, info.st_mtime_ns)


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
) -> WriteReport:
    """Write ``updates`` and delete managed ``removals`` in one atomic replace of ``path``.

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
            text, before = read_text(target)
            if before is not None and before[1] == 0 and not stays_empty(target):
                continue  # someone was rewriting it: read what they wrote

            try:
                new_text, written, removed, conflicts = render(text, updates, removals, now=moment)
            except CredentialsFileError as exc:
                raise CredentialsFileError(f"{path}: {exc}; the file was left untouched") from None
            if new_text == text:
                size = len(text.encode("utf-8"))
                return WriteReport(path, written, removed, conflicts, changed=False, size=size)
            data = new_text.encode("utf-8")
            # Writers that take no lock (the AWS CLI) may have rewritten the file since we
            # read it. Checked after the new data is on disk and right before the rename (the
            # smallest window there is): if it changed, start over from what is there now.
            try:
                replaced = replace_atomically(
                    target, data, precondition=partial(unchanged, target, before)
                )
            except OSError as exc:
                raise CredentialsFileError(
                    f"{path}: cannot replace: {exc.strerror}; the file was left untouched"
                ) from None
            if replaced:
                return WriteReport(path, written, removed, conflicts, changed=True, size=len(data))
        raise CredentialsFileError(
            f"{path}: changed under us {STABLE_READ_TRIES} times; not written"
        )


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
