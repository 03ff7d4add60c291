"""What credrefresh writes into the credentials file, and how a write edits its text. Pure.

A managed profile is a section ``section_text`` renders: the ``MANAGED_COMMENT``, the marker
key (``credrefresh_managed``) and the ``MANAGED_KEYS`` in order. ``plan`` decides, from where
the sections of a text start (``inifile``), which ones a write replaces, deletes or appends,
reading only those; ``apply`` and ``apply_bytes`` carry the decision out, copying everything
else byte for byte. ``render`` is the three in one step (text in, text out), and
``scan_profiles`` reads what the file says of every profile, secrets left out.
``credrefresh.credfile`` does the I/O around them.
"""

from __future__ import annotations

import configparser
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from itertools import compress
from typing import Final, NamedTuple

from credrefresh.errors import CredentialsFileError
from credrefresh.inifile import (
    BOTOCORE_DEFAULT,
    Sections,
    comments_and_blanks,
    index,
    layout,
    parse_sections,
    require_sections,
    scan,
    section_body,
    section_value,
)
from credrefresh.model import Issued, ParsedTimes, format_time

__all__ = [
    "LAYOUT",
    "MANAGED_COMMENT",
    "MARKER_KEY",
    "ManagedProfile",
    "Plan",
    "apply",
    "apply_bytes",
    "plan",
    "render",
    "scan_profiles",
    "section_text",
]

MARKER_KEY: Final = "credrefresh_managed"
MANAGED_COMMENT: Final = "# Managed by credrefresh: this profile is rewritten on every refresh."
# Any C0 or C1 control character, DEL included: none belongs in a value, and some break lines.
CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class ManagedProfile(NamedTuple):
    """What the file says about one profile, secrets left out.

    A named tuple rather than a frozen dataclass (immutable all the same): ``status`` and a
    start-up read one per profile, and a frozen dataclass of eight fields takes 3.8 us to
    build (each field through ``object.__setattr__``), a third of reading the section.

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
# What scan_profiles reads of a profile, in order, and the groups of LAYOUT that hold them.
PROFILE_READ: Final = (
    MARKER_KEY,
    "aws_access_key_id",
    "credrefresh_role_arn",
    "credrefresh_session_name",
    "credrefresh_session_params",
    "credrefresh_refreshed_at",
    "x_security_token_expires",
)
# Sections written as section_text writes them (nearly all of a populated file): read in one step.
LAYOUT: Final = layout(MANAGED_COMMENT, MANAGED_KEYS, optional={"credrefresh_session_params"})
PROFILE_GROUPS: Final = tuple(f"v{MANAGED_KEYS.index(key)}" for key in PROFILE_READ)
NAME_GROUP: Final = LAYOUT.pattern.groupindex["name"]
NEW_PROFILE: Final = tuple.__new__


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


def scan_profiles(text: str) -> dict[str, ManagedProfile]:
    """What ``read_profiles`` makes of ``text``; raises as ``RawConfigParser``.

    The sections written as ``section_text`` writes them that follow one another from the
    start of the text (a file credrefresh wrote is nothing else) are read in one pass, one
    match per section (``tiled``). The rest of the text, from the last of them on, is read as
    ``scan_each`` reads a text; so is the whole text when a name repeats (the error it
    raises) or a section could be the default one. ``[DEFAULT]`` is a profile like any other
    here.
    """
    text = text.removeprefix("\ufeff")
    times = ParsedTimes()  # a file written in rounds holds each time many times over
    profiles, count, last, end = tiled(text, times)
    if len(profiles) < count or NO_DEFAULT in profiles:
        return scan_each(text, times)  # a name repeats: RawConfigParser's error, as it words it
    if end == len(text):
        return profiles
    if "\x00" in text:  # a section named NO_DEFAULT further on would be every section's default
        return scan_each(text, times)
    # Each header of the sections read starts a section afresh, and none of them repeats: they
    # read as they would with what follows. The last may go on past its shape (lines that
    # continue its last value), so it is read again with the rest.
    if count:
        profiles.popitem()
    try:
        rest = scan_each(text[last:], times)
    except configparser.Error:
        return scan_each(text, times)  # raises as for the whole text (its line numbers)
    if not rest.keys().isdisjoint(profiles):
        return scan_each(text, times)  # a name repeats
    profiles.update(rest)
    return profiles


def tiled(text: str, times: ParsedTimes) -> tuple[dict[str, ManagedProfile], int, int, int]:
    """The sections of ``LAYOUT``'s shape that follow one another from the start of ``text``.

    Returns their profiles (a name read twice counts once), how many sections that was, where
    the last of them starts, and where they end (``len(text)`` when they cover it).
    """
    match = LAYOUT.pattern.match
    size = len(text)
    profiles: dict[str, ManagedProfile] = {}
    count = last = pos = 0
    while pos < size and (found := match(text, pos)) is not None:
        name = found[NAME_GROUP]
        values = [None if v is None else v.strip() for v in found.group(*PROFILE_GROUPS)]
        profiles[name] = profile_of(name, values, times)
        count += 1
        last, pos = pos, found.end()
    return profiles, count, last, pos


def scan_each(text: str, times: ParsedTimes | None = None) -> dict[str, ManagedProfile]:
    """``scan_profiles`` of any text (without its byte order mark), a section at a time.

    Where the sections are comes from ``inifile.index`` (runs of sections written as
    ``section_text`` writes them are read a run at a time). A section of that shape, whole, is
    then read with one match; any other line by line, alone (a section's values depend on its
    own lines only).
    """
    names, starts = index(text, NO_DEFAULT, LAYOUT)
    match = LAYOUT.pattern.match
    ends = (*starts[1:], len(text)) if starts else ()
    times = ParsedTimes() if times is None else times
    profiles: dict[str, ManagedProfile] = {}
    for name, start, end in zip(names, starts, ends, strict=True):
        found = match(text, start, end)
        if found is not None and found.end() == end:
            values = [None if v is None else v.strip() for v in found.group(*PROFILE_GROUPS)]
        else:
            span = scan(text[start:end], PROFILE_KEYS, NO_DEFAULT)[0]
            values = [span.value(key) for key in PROFILE_READ]
        profiles[name] = profile_of(name, values, times)
    return profiles


def profile_of(name: str, values: Sequence[str | None], times: ParsedTimes) -> ManagedProfile:
    """The ``ManagedProfile`` of section ``name`` from its ``PROFILE_READ`` values."""
    marker, key_id, role_arn, session, params, refreshed, expires = values
    # As _make builds it: the named tuple's own __new__ is a Python call, 10,000 per read.
    return NEW_PROFILE(
        ManagedProfile,
        (
            name,
            (marker or "").lower() == "true",
            key_id,
            times[expires or ""],
            role_arn,
            times[refreshed or ""],
            session,
            params,
        ),
    )
