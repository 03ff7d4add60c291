"""The writer as it was before the single-pass one: configupdater parses, re-renders everything.

Kept with the tests as the reference the new ``credtext.render`` must agree with, byte for
byte, on every file both accept (and for the benchmark's before/after figures).
"""

from __future__ import annotations

import configparser
from collections.abc import Collection, Mapping
from datetime import datetime

from configupdater import ConfigUpdater, Option, Section
from configupdater.parser import ParsingError as UpdaterParsingError

from credrefresh.credfile import describe
from credrefresh.credtext import MANAGED_COMMENT, MARKER_KEY, section_text
from credrefresh.errors import CredentialsFileError
from credrefresh.model import Issued

__all__ = ["render"]


def render(
    text: str,
    updates: Mapping[str, Issued],
    removals: Collection[str] = (),
    *,
    now: datetime,
) -> tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Apply ``updates`` and ``removals`` to credentials-file ``text``.

    Returns ``(new_text, written, removed, conflicts)``. Unmanaged sections and all text outside
    managed sections come back unchanged.

    Raises:
        CredentialsFileError: the text does not parse as an INI file botocore could read.
    """
    updater = parse(text)
    newline = "\r\n" if "\r\n" in text else "\n"
    pieces: list[str] = []
    written: list[str] = []
    removed: list[str] = []
    conflicts: list[str] = []
    present: set[str] = set()
    for block in updater.iter_blocks():
        if not isinstance(block, Section):
            pieces.append(str(block))
            continue
        name = block.name
        present.add(name)
        managed = block.has_option(MARKER_KEY)
        if name in updates and not managed:
            conflicts.append(name)
            pieces.append(str(block))
        elif name in updates:
            pieces.append(section_text(name, updates[name], now, newline))
            pieces.append(leftover_text(block))
            written.append(name)
        elif name in removals and managed:
            pieces.append(leftover_text(block))
            removed.append(name)
        else:
            pieces.append(str(block))
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
    return out, tuple(written), tuple(removed), tuple(conflicts)


def parse(text: str) -> ConfigUpdater:
    """Parse like botocore does (``RawConfigParser`` rules), keeping every byte for re-output."""
    if text.startswith("\ufeff"):
        raise CredentialsFileError(
            "starts with a UTF-8 byte order mark, which botocore cannot read; "
            "remove the first three bytes and try again"
        )
    if "\r" in text.replace("\r\n", ""):
        raise CredentialsFileError(
            "contains carriage returns that are not part of CRLF line endings; botocore reads "
            "them as line breaks, so editing the file safely is not possible; convert it to LF "
            "or CRLF line endings"
        )
    updater = ConfigUpdater()
    try:
        updater.read_string(text)
        # configupdater keeps every byte but compares keys case-sensitively; botocore's own
        # parser (RawConfigParser) lowercases them. A file botocore rejects is not ours to edit.
        configparser.RawConfigParser().read_string(text)
    except (configparser.Error, UpdaterParsingError) as exc:
        raise CredentialsFileError(f"does not parse as an INI file: {describe(exc)}") from None
    return updater


def leftover_text(section: Section) -> str:
    """Comments and blank lines inside a managed section, minus our own comment.

    They may be a user's notes for the next section, so they are kept.
    """
    kept: list[str] = []
    for block in section.iter_blocks():
        if isinstance(block, Option):
            # configupdater reads an indented comment after a key as a continuation of its
            # value; botocore reads it as a comment. Keep it, it is the user's.
            kept.extend(
                line
                for line in str(block).splitlines(keepends=True)[1:]
                if line.strip().startswith(("#", ";"))
            )
            continue
        kept.extend(
            line for line in str(block).splitlines(keepends=True) if line.strip() != MANAGED_COMMENT
        )
    return "".join(kept)
