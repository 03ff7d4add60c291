"""Tests of the single-pass reader and writer: they agree with botocore's parser and the old writer.

``inifile.scan`` must read every text exactly as ``configparser.RawConfigParser`` (what botocore
uses) does, errors included; ``credtext.render`` must produce, byte for byte, what the
configupdater-based writer it replaced produced, on every file both accept.
"""

from __future__ import annotations

import configparser
import itertools
import string
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from botocore.configloader import raw_config_parse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run straight from a checkout, without installing
    sys.path.insert(0, str(REPO))

from credrefresh.credfile import read_profiles, update_profiles  # noqa: E402
from credrefresh.credtext import (  # noqa: E402
    LAYOUT,
    MANAGED_COMMENT,
    MANAGED_KEYS,
    MARKER_KEY,
    render,
    scan_each,
    scan_profiles,
    section_text,
    tiled,
)
from credrefresh.credtext import NO_DEFAULT as SCAN_DEFAULT  # noqa: E402
from credrefresh.errors import CredentialsFileError  # noqa: E402
from credrefresh.inifile import Span, layout, scan  # noqa: E402
from credrefresh.model import ParsedTimes, parse_time  # noqa: E402
from support import oldrender  # noqa: E402
from test_credfile import LATER, NOW, documents, make_issued  # noqa: E402

NO_DEFAULT = "\x00no-default"
KEYS = ("a", "b", "key", "credrefresh_managed")
# Keys as a person may spell them: botocore lowercases them, so "Key" repeats "key".
SPELLED = ("a", "A", "b", "key", "Key", "KEY", "credrefresh_managed", "CREDREFRESH_MANAGED")
SMALL_LAYOUT = layout("# ours", ("credrefresh_managed", "b", "a", "key"), optional={"b"})

names = st.sampled_from(["p", "q", "r s", "DEFAULT", "é", "a]b", " x "])
indents = st.sampled_from(["", "", "", " ", "  ", "\t", "\x0c"])
values = st.text(alphabet="ab tTrRuUeE:=[]#;", max_size=6)
headers = st.builds(lambda i, n, t: f"{i}[{n}]{t}", indents, names, st.sampled_from(["", "", " x"]))
options = st.builds(
    lambda i, k, d, v: f"{i}{k}{d}{v}",
    indents,
    st.sampled_from(SPELLED),
    st.sampled_from(["=", " = ", ":", " : ", "=:"]),
    values,
)
odd = st.sampled_from(["[]", "[", "= v", " = v", "junk", "  junk", "[]]", "true"])
comments = st.builds(lambda i, p, t: i + p + t, indents, st.sampled_from("#;"), values)
blanks = st.sampled_from(["", " ", "\t", "\x0c"])
lines = st.one_of(headers, options, odd, comments, blanks)


@st.composite
def soups(draw: st.DrawFn, *, known: bool = False) -> str:
    """INI-ish text, mostly valid, with every kind of line RawConfigParser tells apart."""
    body = draw(st.lists(lines, max_size=14))
    if known:
        for _ in range(draw(st.integers(0, 3))):
            name = draw(names)
            values_ = draw(st.lists(values, min_size=4, max_size=4))
            block = [f"[{name}]", "# ours"] + [
                f"{key} = {value}"
                for key, value in zip(SMALL_LAYOUT.keys, values_, strict=True)
                if key != "b" or draw(st.booleans())
            ]
            at = draw(st.integers(0, len(body)))
            body[at:at] = block + draw(st.lists(st.sampled_from(["", ""]), max_size=2))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    return newline.join(body) + draw(st.sampled_from(["", newline]))


def outcome_of_configparser(text: str, default_section: str) -> Any:
    """What RawConfigParser makes of ``text``: sections with values, or the error it raises."""
    parser = configparser.RawConfigParser(default_section=default_section)
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        return error_summary(exc)
    sections = parser.sections()
    if default_section != NO_DEFAULT:
        return sections, None
    return sections, {
        name: {key: parser.get(name, key) for key in parser.options(name) if key in KEYS}
        for name in sections
    }


def outcome_of_scan(text: str, default_section: str, known: Any = None) -> Any:
    """The same summary from ``scan``."""
    try:
        spans = scan(text, KEYS, default_section, known)
    except configparser.Error as exc:
        return error_summary(exc)
    sections = [span.name for span in spans if span.name != default_section]
    if default_section != NO_DEFAULT:
        return sections, None
    return sections, {
        span.name: {key: span.value(key) for key in KEYS if span.value(key) is not None}
        for span in spans
    }


def error_summary(exc: configparser.Error) -> tuple[str, Any]:
    """The error's kind and where it was found, as comparable data."""
    if isinstance(exc, configparser.ParsingError) and not isinstance(
        exc, configparser.MissingSectionHeaderError
    ):
        return type(exc).__name__, [lineno for lineno, _ in exc.errors]
    return type(exc).__name__, getattr(exc, "lineno", None)


def assert_spans_tile(text: str, spans: tuple[Span, ...]) -> None:
    """Sections follow one another: each ends where the next starts, the last at the end."""
    for span, following in itertools.pairwise(spans):
        assert span.end == following.start
        assert span.start < span.body <= span.end
    if spans:
        assert spans[-1].end == len(text)
        assert text[spans[0].start :].lstrip().startswith("[")


PROPERTY = settings(
    max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY
@given(soups(), st.sampled_from(["DEFAULT", NO_DEFAULT]))
def test_scan_reads_like_rawconfigparser(text: str, default_section: str) -> None:
    """Sections, values and errors (kind and line) are exactly what RawConfigParser reports."""
    assert outcome_of_scan(text, default_section) == outcome_of_configparser(text, default_section)
    if not isinstance(outcome_of_scan(text, default_section)[0], str):
        assert_spans_tile(text, scan(text, KEYS, default_section))


@PROPERTY
@given(soups(known=True))
def test_scan_of_known_sections_in_one_step_changes_nothing(text: str) -> None:
    """Reading sections of a known layout in one step gives the same spans as line by line."""
    slow = outcome_of_scan(text, NO_DEFAULT)
    assert outcome_of_scan(text, NO_DEFAULT, SMALL_LAYOUT) == slow
    assert slow == outcome_of_configparser(text, NO_DEFAULT)
    if not isinstance(slow[0], str):
        fast_spans = scan(text, KEYS, NO_DEFAULT, SMALL_LAYOUT)
        slow_spans = scan(text, KEYS, NO_DEFAULT)
        assert [(s.name, s.start, s.body, s.end) for s in fast_spans] == [
            (s.name, s.start, s.body, s.end) for s in slow_spans
        ]


def test_known_layout_is_read_in_one_step() -> None:
    """A section in the layout credrefresh writes is matched whole by the layout's pattern."""
    text = render("", {"dev": make_issued("dev")}, now=NOW)[0]
    match = LAYOUT.pattern.match(text)
    assert match is not None
    assert match.end() == len(text)
    assert match["name"] == "dev"


@settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(documents())
def test_render_agrees_with_the_configupdater_writer(doc: dict[str, Any]) -> None:
    """On every generated file, the single-pass render writes exactly what the old writer wrote."""
    text, updates, removals = doc["text"], doc["updates"], doc["removals"]
    assert render(text, updates, removals, now=LATER) == oldrender.render(
        text, updates, removals, now=LATER
    )


def test_render_copies_a_large_file_outside_the_changed_sections() -> None:
    """In a file of many profiles, only the changed ones differ; every other byte is the same."""
    names = [f"role-{index:04d}" for index in range(300)]
    text = render("", {name: make_issued(name) for name in names}, now=NOW)[0]
    text = "# my notes\n[user]\nregion = eu-west-1\n\n" + text
    changed = {name: make_issued(name, 1) for name in names[::30]}
    new_text, written, _, _ = render(text, changed, ["role-0001"], now=LATER)
    assert written == tuple(changed)
    assert new_text == oldrender.render(text, changed, ["role-0001"], now=LATER)[0]
    for name in names[2:30]:
        assert section_text(name, make_issued(name), NOW, "\n") in new_text


# -- the marker must say true ------------------------------------------------------------------


@pytest.mark.parametrize("value", ["false", "no", "", "1", "true\n  more", "yes"])
def test_marker_not_true_is_a_conflict(value: str) -> None:
    """A profile whose marker is not ``true`` is somebody else's: a conflict, left untouched."""
    text = f"[dev]\n{MARKER_KEY} = {value}\naws_access_key_id = AKIAUSERKEY\n\n[other]\nx = 1\n"
    new_text, written, removed, conflicts = render(text, {"dev": make_issued("dev")}, now=NOW)
    assert (new_text, written, removed, conflicts) == (text, (), (), ("dev",))
    assert render(text, {}, ["dev"], now=NOW) == (text, (), (), ())


@pytest.mark.parametrize("value", ["true", "TRUE", "True", " true ", "true\n\n"])
def test_marker_true_in_any_case_is_managed(value: str) -> None:
    """``true`` in any case, as botocore reads it, marks a profile credrefresh may rewrite."""
    text = f"[dev]\n{MARKER_KEY} = {value}\naws_access_key_id = AKIAOLD\n"
    new_text, written, _, conflicts = render(text, {"dev": make_issued("dev")}, now=NOW)
    assert (written, conflicts) == (("dev",), ())
    assert "AKIAOLD" not in new_text


def test_read_profiles_needs_a_true_marker(tmp_path: Path) -> None:
    """``read_profiles`` calls a profile managed only when its marker says ``true``."""
    path = tmp_path / "credentials"
    path.write_text(f"[a]\n{MARKER_KEY} = false\n[b]\n{MARKER_KEY} = True\n[c]\nx = 1\n")
    profiles = read_profiles(str(path))
    assert {name: p.managed for name, p in profiles.items()} == {"a": False, "b": True, "c": False}


# -- nothing unchecked is written -------------------------------------------------------------

FIELDS = {
    "credrefresh_role_arn": lambda i, v: replace(i, role_arn=v),
    "credrefresh_session_name": lambda i, v: replace(i, session_name=v),
    "credrefresh_assumed_role_arn": lambda i, v: replace(i, assumed_role_arn=v),
    "aws_access_key_id": lambda i, v: replace(
        i, credentials=replace(i.credentials, access_key_id=v)
    ),
    "aws_secret_access_key": lambda i, v: replace(
        i, credentials=replace(i.credentials, secret_access_key=v)
    ),
    "aws_session_token": lambda i, v: replace(
        i, credentials=replace(i.credentials, session_token=v)
    ),
}
CONTROLS = ["\n", "\r", "\r\n", "\x00", "\x1b", "\x7f", "\x85", "\t"]


@pytest.mark.parametrize("control", CONTROLS, ids=[f"{ord(c[0]):02x}" for c in CONTROLS])
@pytest.mark.parametrize("field", sorted(FIELDS))
def test_value_with_a_control_character_is_refused(field: str, control: str) -> None:
    """A value that could break a line is never written; the error names profile and field."""
    value = f"SECRETPART{control}[injected]\n{MARKER_KEY} = true"
    issued = FIELDS[field](make_issued("dev"), value)
    with pytest.raises(CredentialsFileError) as caught:
        section_text("dev", issued, NOW, "\n")
    message = str(caught.value)
    assert "[dev]" in message
    assert field in message
    assert "SECRETPART" not in message
    assert "injected" not in message


def test_profile_name_with_a_line_break_is_refused() -> None:
    """A profile name that could start a second header is never written."""
    with pytest.raises(CredentialsFileError, match="control character"):
        render("", {"dev]\n[prod": make_issued("dev")}, now=NOW)


def test_refused_value_leaves_the_file_untouched(tmp_path: Path) -> None:
    """An update carrying a bad value fails as a whole and the file keeps its bytes."""
    path = tmp_path / "credentials"
    path.write_text("[user]\nregion = eu-west-1\n")
    bad = FIELDS["aws_session_token"](make_issued("dev"), "tok\n[evil]\nx = 1")
    with pytest.raises(CredentialsFileError, match="aws_session_token") as caught:
        update_profiles(str(path), {"ok": make_issued("ok"), "dev": bad}, now=NOW)
    assert "evil" not in str(caught.value)
    assert path.read_text() == "[user]\nregion = eu-west-1\n"


# -- what a rewrite must not change ------------------------------------------------------------


def test_indented_header_after_a_managed_profile_is_not_swallowed() -> None:
    """An indented header after a rewritten profile would become part of its last value:
    the rewrite is refused instead of losing that profile."""
    text = (
        "[user]\nregion = eu-west-1\n"
        f"[dev]\n  {MARKER_KEY} = true\n  aws_access_key_id = AKIAOLD\n"
        "  [other]\nregion = eu-west-1\n"
    )
    assert raw_config_parse_text(text) == ["user", "dev", "other"]
    with pytest.raises(CredentialsFileError, match="indented"):
        render(text, {"dev": make_issued("dev", 1)}, now=LATER)
    # Removed, [other] would continue [user]'s last value, and its key repeat one of [user].
    with pytest.raises(CredentialsFileError, match="would not parse: line 4: duplicate key"):
        render(text, {}, ["dev"], now=LATER)


def raw_config_parse_text(text: str) -> list[str]:
    """Section names botocore reads from ``text``."""
    parser = configparser.RawConfigParser()
    parser.read_string(text)
    return parser.sections()


@pytest.mark.parametrize("params", ["", "3f2a9c"], ids=["plain", "session-params"])
def test_managed_keys_are_the_written_ones(params: str) -> None:
    """The layout read in one step lists exactly the keys ``section_text`` writes, in order,
    and matches what it writes with and without session parameters."""
    issued = replace(make_issued("dev"), params=params)
    text = section_text("dev", issued, NOW, "\n")
    written = text.splitlines()
    assert written[1] == MANAGED_COMMENT
    keys = tuple(line.split(" = ")[0] for line in written[2:])
    assert keys == tuple(k for k in MANAGED_KEYS if params or k != "credrefresh_session_params")
    match = LAYOUT.pattern.match(text)
    assert match is not None
    assert match.end() == len(text)


def test_output_is_read_by_botocore(tmp_path: Path) -> None:
    """A file of mixed user and managed profiles written by render is one botocore reads."""
    text = "[user]\nregion = eu-west-1\n  continued\n; note\n\n"
    text = render(text, {n: make_issued(n) for n in string.ascii_lowercase[:5]}, now=NOW)[0]
    path = tmp_path / "credentials"
    path.write_text(text)
    assert sorted(raw_config_parse(str(path))) == ["a", "b", "c", "d", "e", "user"]


@settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.one_of(documents().map(lambda doc: doc["text"]), soups()))
def test_scan_profiles_agrees_with_read_profiles(tmp_path_factory: Any, text: str) -> None:
    """``scan_profiles`` returns exactly what ``read_profiles`` returns, or fails where it fails."""
    path = tmp_path_factory.mktemp("scan") / "credentials"
    path.write_bytes(text.encode())
    try:
        expected: Any = read_profiles(str(path))
    except CredentialsFileError:
        expected = "error"
    try:
        got: Any = scan_profiles(text)
    except configparser.Error:
        got = "error"
    assert got == expected


def reference_profiles(text: str) -> dict[str, Any]:
    """``scan_profiles`` as it was, every section read line by line: the reference."""
    from credrefresh.credtext import PROFILE_KEYS  # noqa: PLC0415 - this test only
    from credrefresh.model import parse_time  # noqa: PLC0415

    profiles = {}
    for span in scan(text.removeprefix("\ufeff"), PROFILE_KEYS, NO_DEFAULT, LAYOUT):
        expires = span.value("x_security_token_expires")
        profiles[span.name] = (
            (span.value(MARKER_KEY) or "").lower() == "true",
            span.value("aws_access_key_id"),
            parse_time(expires) if expires else None,
            span.value("credrefresh_role_arn"),
            parse_time(span.value("credrefresh_refreshed_at") or ""),
            span.value("credrefresh_session_name"),
            span.value("credrefresh_session_params"),
        )
    return profiles


EDITS = (
    lambda line: line + "\n  continued",  # the value goes on (or an indented line)
    lambda line: line.replace("= true", "= TRUE"),
    lambda line: line.replace("= true", "= false"),
    lambda line: line + "\n",
    lambda line: line + "\n\n   ",
    lambda line: " " + line,
    lambda line: line + "\nextra = 1",
    lambda line: line.replace(" = ", "="),
    lambda line: line + "\n# note",
)


@st.composite
def edited_documents(draw: st.DrawFn) -> str:
    """A credentials file with managed sections, some of their lines edited by hand."""
    text = draw(documents())["text"]
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.split(newline)
    for _ in range(draw(st.integers(0, 3))):
        if lines:
            at = draw(st.integers(0, len(lines) - 1))
            lines[at] = draw(st.sampled_from(EDITS))(lines[at]).replace("\n", newline)
    return draw(st.sampled_from(["", "\ufeff"])) + newline.join(lines)


@settings(
    max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.one_of(edited_documents(), documents().map(lambda doc: doc["text"]), soups()))
def test_scan_profiles_reads_every_section_as_line_by_line_reading_does(text: str) -> None:
    """Sections of the managed shape are read with one match each, the rest line by line: the
    result (and any error) is what reading every section line by line gives."""
    try:
        expected: Any = reference_profiles(text)
    except configparser.Error as exc:
        expected = type(exc).__name__
    try:
        got: Any = {
            name: (
                p.managed,
                p.access_key_id,
                p.expiration,
                p.role_arn,
                p.refreshed_at,
                p.session_name,
                p.session_params,
            )
            for name, p in scan_profiles(text).items()
        }
    except configparser.Error as exc:
        got = type(exc).__name__
    assert got == expected


@pytest.mark.parametrize(
    "after",
    ["  continued\n", "\n  continued\n", "\n\n\tcontinued\n", "\n", "# note\n", "extra = 1\n"],
    ids=["indented", "blank-then-indented", "blanks-then-tab", "blank", "comment", "extra-key"],
)
@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_a_managed_section_edited_after_its_last_line_reads_as_botocore_reads_it(
    after: str, newline: str
) -> None:
    """Lines after the last key of a managed section may continue its value (botocore joins
    them): the one-match reading must then give way to the line-by-line one."""
    text = (section_text("dev", make_issued("dev"), NOW, "\n") + after + "[user]\nk = v\n").replace(
        "\n", newline
    )
    expected = reference_profiles(text)
    got = scan_profiles(text)
    assert set(got) == set(expected) == {"dev", "user"}
    assert got["dev"].expiration == expected["dev"][2]
    assert (got["dev"].expiration is None) == after.strip().startswith("continued")
    parser = configparser.RawConfigParser(default_section=NO_DEFAULT)
    parser.read_string(text)
    assert parser.get("dev", "x_security_token_expires").endswith("continued") == (
        got["dev"].expiration is None
    )


# What a section of the managed shape may hold: values a person or a tool may have put there,
# times in every form parse_time meets, and names that repeat or are special.
TILE_NAMES = ("a", "b", "c", "DEFAULT", "x y", " p ", "é", "a[b", SCAN_DEFAULT)
TILE_VALUES = st.text(alphabet="aZ0 :=-[]#;.\t\x01é", max_size=8)
TILE_TIMES = st.sampled_from(
    [
        "2026-12-01T16:52:09Z",
        "2026-12-01T16:52:09+02:00",
        "2026-12-01T16:52:09",
        "2026-12-01T16:52:09.5Z",
        " 2026-12-01T16:52:09Z ",
        "9999-12-31T23:59:59-14:00",
        "0999-01-01T00:00:00Z",
        "not a time",
        "",
    ]
)
TILE_MARKERS = st.sampled_from(["true", "TRUE", "True", "false", "", " true ", "yes"])
TILE_EDITS = (
    lambda text, nl: text,
    lambda text, nl: text,
    lambda text, nl: text,
    lambda text, nl: text.removesuffix(nl),  # no line break at the end
    lambda text, nl: text + "  continued" + nl,  # the last value goes on
    lambda text, nl: text + nl + "\tcontinued" + nl,
    lambda text, nl: text + "# note" + nl,
    lambda text, nl: text + "[user]" + nl + "k = v" + nl,
    lambda text, nl: " " + text,  # an indented first header
    lambda text, nl: "\ufeff" + text,
    lambda text, nl: nl + text,
    lambda text, nl: text.replace(" = ", "=", 1),
    lambda text, nl: text.replace(nl + "[", nl + " [", 1),  # a header turned continuation
    # After the first section (or more): what makes the rest be read line by line.
    lambda text, nl: text.replace(nl + "[", nl + "[user]" + nl + "k = v" + nl + "[", 1),
    lambda text, nl: text.replace(nl + "[", nl + "junk" + nl + "[", 1),  # a parsing error
    lambda text, nl: text.replace(nl + "[", nl + "   " + nl + "[", 1),  # a line of spaces
    lambda text, nl: text + "[user]" + nl + "[a]" + nl,  # a name read before, repeated
    lambda text, nl: text + "[user]" + nl + "k = v" + nl + f"[{SCAN_DEFAULT}]" + nl + "k = v",
    lambda text, nl: text.replace(nl + "[", nl + "\tgoes on" + nl + "[", 2),
)


@st.composite
def tiled_texts(
    draw: st.DrawFn, *, edit: bool = True, unique: bool = False, edits: Any = TILE_EDITS
) -> str:
    """Sections of the managed shape back to back (names may repeat), sometimes edited."""
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    sections = []
    for name in draw(st.lists(st.sampled_from(TILE_NAMES), max_size=6, unique=unique)):
        lines = [f"[{name}]", MANAGED_COMMENT]
        for key in MANAGED_KEYS:
            if key == "credrefresh_session_params" and draw(st.booleans()):
                continue  # the optional line
            if key == MARKER_KEY:
                value = draw(TILE_MARKERS)
            elif key in {"credrefresh_refreshed_at", "x_security_token_expires"}:
                value = draw(TILE_TIMES)
            else:
                value = draw(TILE_VALUES)
            lines.append(f"{key} = {value}")
        sections.append(newline.join(lines) + newline * draw(st.integers(1, 3)))
    text = "".join(sections)
    if not edit:
        return text
    if unique:  # edits after the k-th section, so that what precedes is read in one pass
        k = draw(st.integers(1, max(1, len(sections))))
        head, tail = "".join(sections[:k]), "".join(sections[k:])
        return head + draw(st.sampled_from(edits))(tail, newline)
    return draw(st.sampled_from(edits))(text, newline)


def outcome(read: Any, text: str) -> Any:
    """What ``read(text)`` returns, or the kind of error it raises."""
    try:
        return read(text)
    except configparser.Error as exc:
        return type(exc).__name__


@settings(
    max_examples=600, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.one_of(tiled_texts(), edited_documents(), soups()))
def test_scan_profiles_in_one_pass_reads_what_a_section_at_a_time_reads(text: str) -> None:
    """A file of managed sections only is read one match per section, in one pass: the
    profiles (and any error) are what ``scan_each`` (index, then each section) gives, and what
    reading every section line by line gives."""
    got = outcome(scan_profiles, text)
    assert got == outcome(scan_each, text.removeprefix("\ufeff"))
    reference = outcome(reference_profiles, text)
    if isinstance(got, dict) and SCAN_DEFAULT not in text:  # the reference's default differs
        assert {
            name: (p.managed, p.access_key_id, p.expiration, p.role_arn, p.refreshed_at, *p[6:])
            for name, p in got.items()
        } == reference


@settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(tiled_texts(edit=False))
def test_sections_of_the_managed_shape_back_to_back_are_read_in_one_pass(text: str) -> None:
    """``tiled`` takes such a text whole, one match per section, each where the last ended;
    nothing of a text that does not start with one."""
    profiles, count, last, end = tiled(text, ParsedTimes())
    assert count == text.count("\n[") + bool(text)
    assert last == (text.rfind("\n[") + 1 if count else 0)
    assert end == len(text)
    assert set(profiles) <= set(TILE_NAMES)
    assert tiled(" " + text, ParsedTimes()) == ({}, 0, 0, 0)
    assert tiled(text + "# note\n", ParsedTimes())[1:] == (count, last, len(text))


MIDDLE_EDITS = (
    lambda text, nl: text,
    lambda text, nl: "[user]" + nl + "k = v" + nl + text,  # a foreign section
    lambda text, nl: "  continued" + nl + text,  # the last value read in one pass goes on
    lambda text, nl: nl + "\tcontinued" + nl + text,
    lambda text, nl: "# note" + nl + text,
    lambda text, nl: "   " + nl + text,  # a line of spaces
    lambda text, nl: "junk" + nl + text,  # a parsing error, with its line number
    lambda text, nl: "[user]" + nl + "[a]" + nl + text,  # a name read in one pass, repeated
    lambda text, nl: "[user]" + nl + "[b]" + nl + text,
    lambda text, nl: f"[{SCAN_DEFAULT}]" + nl + "k = v" + nl + text,
    lambda text, nl: "[user]" + nl + "k = v" + nl + "k = w" + nl + text,  # a repeated key
    lambda text, nl: text.replace(nl + "[", nl + " [", 1),
)


@settings(
    max_examples=500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(tiled_texts(unique=True, edits=MIDDLE_EDITS))
def test_what_follows_the_sections_read_in_one_pass_is_read_as_a_whole_text_reads_it(
    text: str,
) -> None:
    """Sections read in one pass, then a foreign section, a continuation, an error, a repeated
    name or a default section: the profiles (or the error, line number included) are what
    ``scan_each`` gives for the whole text."""

    def outcome_with_line(read: Any, text: str) -> Any:
        try:
            return read(text)
        except configparser.Error as exc:
            return error_summary(exc)

    assert outcome_with_line(scan_profiles, text) == outcome_with_line(scan_each, text)


def test_a_large_file_credrefresh_wrote_takes_the_one_pass() -> None:
    """What the daemon writes (many profiles, LF or CRLF) is one run of the managed shape."""
    for newline in ("\n", "\r\n"):
        issued = {f"p{i}": make_issued(f"p{i}", i) for i in range(50)}
        text = render("", issued, now=NOW)[0].replace("\n", newline)
        profiles, count, _, end = tiled(text, ParsedTimes())
        assert (len(profiles), count, end) == (50, 50, len(text))
        assert scan_profiles(text) == scan_each(text) == profiles


@given(st.lists(st.one_of(TILE_TIMES, st.text(max_size=30)), max_size=20))
def test_parsed_times_are_parse_time(texts: list[str]) -> None:
    """The memo gives what parse_time gives, for every text, looked up any number of times."""
    times = ParsedTimes()
    for text in texts + texts:
        assert times[text] == parse_time(text)
