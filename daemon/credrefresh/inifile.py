"""A single-pass reader of INI text that agrees with botocore's parser on every line.

botocore reads the credentials file with ``configparser.RawConfigParser`` (default settings:
``=`` and ``:`` as delimiters, ``#`` and ``;`` as full-line comments, no inline comments,
indented lines continue the previous value, strict about duplicate sections and keys, keys
lowercased). ``scan`` follows ``RawConfigParser._read`` step for step, raises the same
exceptions on the same lines, and returns where each section starts and ends so that a writer
can copy everything it does not change by slicing, and re-render only what it changes.
"""

from __future__ import annotations

import configparser
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Final, NamedTuple

from credrefresh.errors import CredentialsFileError

__all__ = [
    "BOTOCORE_DEFAULT",
    "Layout",
    "Sections",
    "Span",
    "check_text",
    "comments_and_blanks",
    "describe",
    "index",
    "layout",
    "parse",
    "parse_sections",
    "require_sections",
    "scan",
    "section_body",
    "section_value",
]

BOTOCORE_DEFAULT: Final = "DEFAULT"  # RawConfigParser's default section, as botocore uses it
SOURCE: Final = "<string>"


class Span(NamedTuple):
    """One section of the text, by offsets.

    A named tuple rather than a frozen dataclass (immutable all the same): a write builds one
    per section, 10,000 for a file of 10,000 profiles, and a frozen dataclass takes four times
    as long to build (each field goes through ``object.__setattr__``).

    Attributes:
        name: The section name, as in its header.
        start: Offset of the header line.
        body: Offset just past the header line.
        end: Offset of the next header line, or the end of the text.
        parts: The watched keys this section sets, lowercased, with the lines of their
            values; ``value`` joins them.
    """

    name: str
    start: int
    body: int
    end: int
    parts: Mapping[str, list[str]]

    def value(self, key: str) -> str | None:
        """The value of watched ``key`` as ``RawConfigParser`` reads it, or ``None`` if unset."""
        lines = self.parts.get(key)
        # Lines joined with newlines, trailing empty ones dropped, as _join_multiline_values.
        return None if lines is None else "\n".join(lines).rstrip()


class Sections(NamedTuple):
    """Where the sections of a text start, and nothing else: two tuples, not a record each.

    A section ends where the next one starts (the last at the end of the text); its values are
    read again from the text when wanted (``section_value``). Small enough to keep between
    writes: about 100 bytes a section.

    Attributes:
        names: The section names, in order (``DEFAULT`` may repeat).
        starts: Offset of each section's header line.
    """

    names: tuple[str, ...]
    starts: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Layout:
    """A section shape known in advance, read whole by one regular expression.

    Attributes:
        pattern: Matches a ``[name]`` header line, then the comment, then one ``key = value``
            line per key (value in group ``v<index>``), then empty lines (group ``tail``);
            every line at column 0, LF or CRLF line endings.
        keys: The keys, in order; distinct and lowercase.
        optional: The keys whose line may be missing (their group is then ``None``).
        run: Matches one or more such sections in a row, with no groups (``index`` reads
            a file it wrote itself in a few such steps).
    """

    pattern: re.Pattern[str]
    keys: tuple[str, ...]
    optional: frozenset[str] = frozenset()
    run: re.Pattern[str] | None = None


def layout(comment: str, keys: Sequence[str], optional: Collection[str] = ()) -> Layout:
    """The layout of a section written as a header, a comment line and ``keys`` in order.

    The lines of ``optional`` keys may be missing; the last key's line may not.

    Such a section needs no line-by-line reading: no line of it can continue another, no key
    repeats, and the header starts at column 0.
    """
    if comment[:1] not in {"#", ";"} or "\n" in comment:
        msg = f"not a one-line comment: {comment!r}"
        raise ValueError(msg)
    if len(set(keys)) != len(keys) or not all(re.fullmatch("[a-z0-9_]+", key) for key in keys):
        msg = f"keys must be distinct, lowercase words: {keys!r}"
        raise ValueError(msg)
    if not set(optional) <= set(keys[:-1]):
        msg = f"optional keys must be keys, not the last one: {sorted(optional)!r}"
        raise ValueError(msg)
    eol = r"\r?\n"
    lines = [rf"\[(?P<name>[^\n\]]+)\]{eol}", re.escape(comment) + eol]
    for index, key in enumerate(keys):
        line = rf"{key} = (?P<v{index}>[^\n]*){eol}"
        lines.append(f"(?:{line})?" if key in optional else line)
    source = "".join(lines) + rf"(?P<tail>(?:{eol})*)"
    # Possessive: a run never gives a section back, so matching it needs no backtracking stack.
    run = re.compile("(?:{})++".format(re.sub(r"\(\?P<\w+>", "(?:", source)))
    return Layout(re.compile(source), tuple(keys), frozenset(optional), run)


def parse(text: str, watch: Collection[str] = (), known: Layout | None = None) -> tuple[Span, ...]:
    """The sections of a credentials file's ``text``, read as botocore reads the file.

    Raises:
        CredentialsFileError: botocore could not read it, or would read it otherwise than
            ``read_string`` does; the message never quotes a line.
    """
    check_text(text)
    try:
        return scan(text, watch, known=known)
    except configparser.Error as exc:
        raise CredentialsFileError(f"does not parse as an INI file: {describe(exc)}") from None


def parse_sections(text: str, known: Layout | None = None) -> Sections:
    """Where the sections of ``text`` start, as botocore reads the file; raises as ``parse``."""
    check_text(text)
    try:
        return index(text, known=known)
    except configparser.Error as exc:
        raise CredentialsFileError(f"does not parse as an INI file: {describe(exc)}") from None


def check_text(text: str) -> None:
    """Refuse text that ``read_string`` would read otherwise than botocore reads the file.

    Raises:
        CredentialsFileError: a byte order mark, or carriage returns outside CRLF line endings.
    """
    if text.startswith("\ufeff"):
        raise CredentialsFileError(
            "starts with a UTF-8 byte order mark, which botocore cannot read; "
            "remove the first three bytes and try again"
        )
    # Two counts rather than a copy without the CRLFs: no second 10 MB string.
    if "\r" in text and text.count("\r") != text.count("\r\n"):
        raise CredentialsFileError(
            "contains carriage returns that are not part of CRLF line endings; botocore reads "
            "them as line breaks, so editing the file safely is not possible; convert it to LF "
            "or CRLF line endings"
        )


def require_sections(text: str, names: Sequence[str]) -> None:
    """Refuse ``text`` unless botocore would read exactly the sections ``names``, in order.

    Raises:
        CredentialsFileError: it would not parse, or an indented header after a rewritten
            section would read as part of that section's last value.
    """
    try:
        found = [span.name for span in scan(text)]
    except configparser.Error as exc:
        raise CredentialsFileError(f"the result would not parse: {describe(exc)}") from None
    if found != list(names):
        raise CredentialsFileError(
            "a section header after a managed profile is indented; botocore would read it as "
            "part of the profile's last value; remove the indentation and try again"
        )


def scan(
    text: str,
    watch: Collection[str] = (),
    default_section: str = BOTOCORE_DEFAULT,
    known: Layout | None = None,
) -> tuple[Span, ...]:
    """The sections of ``text`` as ``RawConfigParser(default_section=...)`` reads them.

    A section that matches ``known`` is read in one step; everything else line by line.

    Lines end at a line feed only, as with ``read_string``: callers that read a file in text
    mode (universal newlines) must refuse lone carriage returns first.

    Raises:
        configparser.Error: the same error ``RawConfigParser.read_string`` raises, on the same
            line (duplicate sections and keys and a missing header at once, other bad lines
            together at the end).
    """
    names, starts, bodies, parts = read(text, watch, default_section, known, runs=False)
    ends = [*starts[1:], len(text)]
    return tuple(map(Span, names, starts, bodies, ends, parts))


def index(
    text: str, default_section: str = BOTOCORE_DEFAULT, known: Layout | None = None
) -> Sections:
    """Where the sections of ``text`` start, as ``RawConfigParser`` reads them; raises as ``scan``.

    Runs of sections that match ``known`` are read a run at a time: for a file credrefresh
    wrote, a few regular-expression calls instead of one step per section.
    """
    names, starts, _, _ = read(text, (), default_section, known, runs=True)
    return Sections(tuple(names), tuple(starts))


def section_body(text: str, start: int) -> int:
    """Offset just past the header line of the section starting at ``start``."""
    newline = text.find("\n", start)
    return len(text) if newline < 0 else newline + 1


def section_value(
    text: str, sections: Sections, position: int, key: str, known: Layout | None = None
) -> str | None:
    """Watched ``key`` of the ``position``-th section, as ``scan`` would read it.

    A section's values depend on its own lines only (its header resets what came before), so
    the section is read alone: in one step when it starts as ``known`` says and ``key`` is one
    of its single-line keys, else line by line.
    """
    start = sections.starts[position]
    following = position + 1
    end = sections.starts[following] if following < len(sections.starts) else len(text)
    if known is not None and key in known.keys[:-1]:  # the last key's value may continue
        fast = known.pattern.match(text, start, end)
        if fast is not None and (value := fast[f"v{known.keys.index(key)}"]) is not None:
            return value.strip()
    # Under its own name as the default section: alone, it is never merged into another.
    name = sections.names[position]
    return scan(text[start:end], (key,), name)[0].value(key)


# The next regular expressions are used on runs of sections of a known layout only, where every
# line that starts with "[" is a header whose name is the text up to the first "]".
HEADER_AFTER_LF: Final = re.compile(r"\n\[([^\n\]]+)\]")


# One loop that follows RawConfigParser._read branch for branch: split up, it would be slower
# (this runs once per line of a file of 10,000 profiles) and harder to compare with the original.
def read(  # noqa: C901, PLR0912, PLR0915
    text: str,
    watch: Collection[str],
    default_section: str,
    known: Layout | None,
    *,
    runs: bool,
) -> tuple[list[str], list[int], list[int], list[Mapping[str, list[str]]]]:
    """``scan``'s loop: names, starts, body offsets and watched values of the sections.

    With ``runs``, runs of sections matching ``known`` are taken whole and only names and starts
    are returned for them (the other two lists then have no use: they are left incomplete).
    """
    names: list[str] = []
    starts: list[int] = []
    bodies: list[int] = []
    parts: list[Mapping[str, list[str]]] = []
    sections: set[str] = set()
    options: set[tuple[str, str]] = set()
    errors: configparser.ParsingError | None = None
    name: str | None = None
    values: dict[str, list[str]] = {}
    option = ""  # the key continuation lines extend ("" after a header: none)
    watched: list[str] | None = None  # the value being read, when its key is watched
    indent_level = 0
    size = len(text)
    pos = 0
    layout_keys: frozenset[str] = frozenset(known.keys) if known else frozenset()
    in_layout: frozenset[str] = frozenset()  # the keys ``known`` read in the current section
    # The fast path runs once per section: groups by number, loops rather than comprehensions
    # (each of those is a function call before Python 3.12).
    match = known.pattern.match if known else None
    groups = known.pattern.groupindex if known else {}
    optional = (
        [(k, groups[f"v{i}"]) for i, k in enumerate(known.keys) if k in known.optional]
        if known
        else []
    )
    picks = [(k, groups[f"v{i}"]) for i, k in enumerate(known.keys) if k in watch] if known else []
    last = known.keys[-1] if known else ""
    head, tail = groups.get("name", 0), groups.get("tail", 0)
    run = known.run.match if known is not None and known.run is not None and runs else None
    no_run_before = 0  # a run that could not be taken whole is read a section at a time
    while pos <= size:
        if run is not None and pos >= no_run_before and text.startswith("[", pos):
            whole = run(text, pos)
            if whole is not None:
                no_run_before = stop = whole.end()
                heads = list(HEADER_AFTER_LF.finditer(text, pos, stop))
                found = [text[pos + 1 : text.index("]", pos)], *map(itemgetter(1), heads)]
                # Duplicates and [DEFAULT] are left to the step below, which reports them exactly.
                if (
                    len(found) > 1
                    and default_section not in found
                    and sections.isdisjoint(found)
                    and len(set(found)) == len(found)
                ):
                    at = [pos, *[s + 1 for s in map(re.Match.start, heads)]]
                    # The last section of the run is read by the step below, which sets up what
                    # the lines after it (if any) continue or must not repeat.
                    del found[-1]
                    pos = at.pop()
                    sections.update(found)
                    names += found
                    starts += at
        fast = match(text, pos) if match is not None and text.startswith("[", pos) else None
        if fast is not None and (header := fast[head]) not in sections:
            if header == default_section:
                fast = None  # read line by line: [DEFAULT] may repeat
            else:
                sections.add(header)
                name = header
                names.append(header)
                starts.append(pos)
                bodies.append(text.index("\n", pos) + 1)
                values = {}
                parts.append(values)
                for key, group in picks:
                    value = fast[group]
                    if value is not None:
                        values[key] = [value.strip()]
                option = last
                watched = values.get(last)
                if watched is not None and (blank := fast[tail].count("\n")):
                    watched.extend([""] * blank)  # the empty lines after it belong to its value
                in_layout = layout_keys
                for key, group in optional:
                    if fast[group] is None:
                        in_layout = in_layout.difference((key,))
                indent_level = 0
                pos = fast.end()
                continue
        here = pos
        newline = text.find("\n", pos)
        pos = size + 1 if newline < 0 else newline + 1
        line = text[here : pos - 1]
        stripped = line.strip()
        if not stripped:
            if watched is not None:
                watched.append("")  # RawConfigParser keeps blank lines inside a value
            continue
        first = stripped[0]
        if first in "#;":
            continue  # a comment: neither ends a value nor sets the indentation
        indent = len(line) - len(line.lstrip())
        if option and indent > indent_level:
            if watched is not None:
                watched.append(stripped)
            continue
        indent_level = indent
        if first == "[" and stripped.rfind("]") >= 2:  # noqa: PLR2004 - "[x]" at least
            header = stripped[1 : stripped.rfind("]")]
            if header in sections:
                raise configparser.DuplicateSectionError(header, SOURCE, line_number(text, here))
            if header != default_section:
                sections.add(header)
            name, values, option, watched, in_layout = header, {}, "", None, frozenset()
            names.append(header)
            starts.append(here)
            bodies.append(min(pos, size))
            parts.append(values)
            continue
        if name is None:
            raise configparser.MissingSectionHeaderError(SOURCE, line_number(text, here), line)
        cut = delimiter(stripped)
        if cut < 0:
            errors = bad_line(errors, line_number(text, here), line)
            continue  # the previous key still takes continuation lines, as in RawConfigParser
        key = stripped[:cut].rstrip()
        if not key:
            errors = bad_line(errors, line_number(text, here), line)
        key = key.lower()
        if (name, key) in options or key in in_layout:
            raise configparser.DuplicateOptionError(name, key, SOURCE, line_number(text, here))
        options.add((name, key))
        option = key
        if key in watch:
            watched = [stripped[cut + 1 :].strip()]
            values[key] = watched
        else:
            watched = None
    if errors is not None:
        raise errors
    return names, starts, bodies, parts


def line_number(text: str, offset: int) -> int:
    """The 1-based number of the line starting at ``offset`` (counted only for errors)."""
    return text.count("\n", 0, offset) + 1


def delimiter(stripped: str) -> int:
    """Index of the first ``=`` or ``:`` (where ``RawConfigParser``'s OPTCRE splits), or -1."""
    equals = stripped.find("=")
    colon = stripped.find(":", 0, equals if equals >= 0 else len(stripped))
    return colon if colon >= 0 else equals


def bad_line(
    errors: configparser.ParsingError | None, lineno: int, line: str
) -> configparser.ParsingError:
    """Add a line RawConfigParser cannot read to the error it raises at the end."""
    if errors is None:
        errors = configparser.ParsingError(SOURCE)
    errors.append(lineno, repr(line))
    return errors


def describe(exc: Exception) -> str:
    """What is wrong and on which line, never quoting the line itself.

    configparser's messages quote the offending line, which in a credentials file may be (a
    wrapped piece of) a secret; only the line number and section or key names are kept.
    """
    if isinstance(exc, configparser.DuplicateSectionError):
        return f"line {exc.lineno}: duplicate section [{exc.section}]"
    if isinstance(exc, configparser.DuplicateOptionError):
        return f"line {exc.lineno}: duplicate key {exc.option!r} in section [{exc.section}]"
    if isinstance(exc, configparser.MissingSectionHeaderError):
        return f"line {exc.lineno}: a line before the first [section] header"
    if isinstance(exc, configparser.ParsingError):
        errors = getattr(exc, "errors", [])
        lines = ", ".join(str(lineno) for lineno, _ in errors[:5]) or "?"
        return f"line {lines}: not a [section] header, a key = value pair or a comment"
    return type(exc).__name__


def comments_and_blanks(body: str, drop: str) -> str:
    """The comment and blank lines of ``body``, minus those reading ``drop``, line ends kept.

    In a section about to be rewritten they may be a person's notes for the next section, so
    they are kept; keys and their continuation lines go.
    """
    lines = body.split("\n")  # not splitlines: botocore breaks lines at \n only
    ends = ["\n"] * (len(lines) - 1) + [""]
    return "".join(
        line + end
        for line, end in zip(lines, ends, strict=True)
        if (not (stripped := line.strip()) or stripped[0] in "#;") and stripped != drop
    )
