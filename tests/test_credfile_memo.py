"""Tests of the writer's fast paths: runs of sections read whole, and the memo between writes.

``inifile.index`` must find exactly the sections ``scan`` finds (errors included), and a write
given the previous write's ``FileMemo`` must produce exactly what a write that scans the file
produces, whatever happened to the file in between.
"""

from __future__ import annotations

import configparser
import os
import random
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run straight from a checkout, without installing
    sys.path.insert(0, str(REPO))

from credrefresh.credfile import FileMemo, digest, rendered, update_profiles  # noqa: E402
from credrefresh.credtext import LAYOUT, render  # noqa: E402
from credrefresh.errors import CredentialsFileError  # noqa: E402
from credrefresh.inifile import Sections, index, scan  # noqa: E402
from credrefresh.writer import Writer  # noqa: E402
from test_credfile import LATER, NOW, documents, make_issued  # noqa: E402
from test_inifile import (  # noqa: E402
    NO_DEFAULT,
    SMALL_LAYOUT,
    error_summary,
    indents,
    lines,
    values,
)

PROPERTY = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


# -- index: runs of known sections -------------------------------------------------------------

run_names = st.sampled_from(["p", "q", "r", "s", "t", "DEFAULT", "é", "a b"])


@st.composite
def runs(draw: st.DrawFn) -> str:
    """Text with runs of sections in ``SMALL_LAYOUT`` back to back, and odd lines around them."""
    body: list[str] = []
    for _ in range(draw(st.integers(1, 4))):
        for _ in range(draw(st.integers(1, 5))):  # one run
            body += [f"[{draw(run_names)}]", "# ours"]
            body += [
                f"{key} = {draw(values)}"
                for key in SMALL_LAYOUT.keys
                if key != "b" or draw(st.booleans())
            ]
            body += [""] * draw(st.integers(0, 2))
        # What may follow a run: a continuation, a repeated key, another header, anything.
        body += draw(
            st.lists(
                st.one_of(
                    lines,
                    st.builds(lambda i, v: f"{i}key = {v}", indents, values),
                    st.builds(lambda i, v: f"{i}{v}", st.sampled_from([" ", "\t"]), values),
                ),
                max_size=3,
            )
        )
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    return newline.join(body) + draw(st.sampled_from(["", newline]))


def outcome_of_index(text: str, default_section: str, known: Any) -> Any:
    """The sections ``index`` finds, or the error it raises."""
    try:
        found = index(text, default_section, known)
    except configparser.Error as exc:
        return error_summary(exc)
    return list(zip(found.names, found.starts, strict=True))


def outcome_of_full_scan(text: str, default_section: str) -> Any:
    """The same from ``scan``, line by line."""
    try:
        spans = scan(text, (), default_section)
    except configparser.Error as exc:
        return error_summary(exc)
    return [(span.name, span.start) for span in spans]


@PROPERTY
@given(runs(), st.sampled_from(["DEFAULT", NO_DEFAULT]))
def test_index_reads_runs_as_scan_reads_lines(text: str, default_section: str) -> None:
    """Runs of known sections read whole give the sections, and errors, that a scan gives."""
    assert outcome_of_index(text, default_section, SMALL_LAYOUT) == outcome_of_full_scan(
        text, default_section
    )


def test_index_of_a_written_file_takes_few_steps() -> None:
    """A file credrefresh wrote is one run: its sections are found without a step each."""
    names = [f"role-{n:03d}" for n in range(200)]
    text = render("", {name: make_issued(name) for name in names}, now=NOW)[0]
    found = index(text, known=LAYOUT)
    assert list(found.names) == names
    assert [span.start for span in scan(text)] == list(found.starts)


# -- the memo, without the disk ----------------------------------------------------------------

pool = st.sampled_from(["dev", "prod", "ci", "new-1", "new-2", "é-role", "DEFAULT"])
writes = st.tuples(
    st.just("write"),
    st.dictionaries(pool, st.integers(0, 1000), max_size=4),
    st.lists(pool, unique=True, max_size=2),
)
edits = st.tuples(
    st.sampled_from(["same-size", "append", "new-inode", "new-inode-changed", "truncate"]),
    st.integers(0, 10**6),
    st.sampled_from(["\n[extra]\nregion = x\n", "  indented\n", "[dev]\n", "x = 1\n", "# c\n"]),
)


@st.composite
def written_files(draw: st.DrawFn) -> str:
    """An ASCII file such as credrefresh writes (the kind a memo is used for), a user's profile
    in it somewhere."""
    names = draw(st.lists(st.sampled_from(["dev", "prod", "ci", "qa", "ops"]), unique=True))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    text = render("", {name: make_issued(name) for name in names}, now=NOW)[0]
    sections = text.replace("\n", newline).split(newline + newline)
    at = draw(st.integers(0, len(sections)))
    sections.insert(at, f"[user]{newline}region = eu-west-1{newline}")
    return (newline + newline).join(sections)


def edited(data: bytes, kind: str, seed: int, extra: str) -> bytes:
    """``data`` after another program's edit of ``kind``."""
    if kind == "same-size":  # a letter, often the first of a section name
        letters = [i for i, byte in enumerate(data) if byte < 128 and chr(byte).isalnum()]
        heads = [i for i in letters if data[i - 1 : i] == b"["]
        letters = heads if heads and seed % 2 else letters
        if not letters:
            return data
        at = letters[seed % len(letters)]
        swapped = b"x" if data[at : at + 1] != b"x" else b"y"
        return data[:at] + swapped + data[at + 1 :]
    if kind == "truncate":
        text = data.decode()
        return text[: seed % (len(text) + 1)].encode()
    if kind == "new-inode":
        return data
    return data + extra.encode()


def full_scan_result(data: bytes, updates: dict[str, Any], removals: list[str]) -> Any:
    """What a write that scans the file makes of ``data``, or the error it raises."""
    try:
        out, written, removed, conflicts = render(data.decode(), updates, removals, now=LATER)
    except CredentialsFileError as exc:
        return str(exc)
    return out.encode(), written, removed, conflicts


def memo_result(
    data: bytes, identity: Any, memo: FileMemo | None, updates: Any, removals: list[str]
) -> Any:
    """What a write given ``memo`` makes of ``data``, or the error it raises."""
    text = None if data.isascii() else data.decode()
    try:
        return rendered(data, text, identity, memo, updates, removals, LATER)
    except CredentialsFileError as exc:
        return str(exc)


@settings(
    max_examples=250, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    st.one_of(documents().map(lambda doc: doc["text"]), written_files()),
    st.lists(st.one_of(writes, edits, writes), max_size=10),
)
def test_memo_gives_what_a_full_scan_gives(text: str, steps: list[Any]) -> None:
    """Over any sequence of writes and other programs' edits, a write given the last write's
    memo produces exactly what a write that scans the file produces, and the memo's sections
    are exactly the ones a scan of the written file finds."""
    data = text.encode()
    inode, mtime = 1, 0
    memo: FileMemo | None = None
    for step in steps:
        if step[0] != "write":
            kind, seed, extra = step
            data = edited(data, kind, seed, extra)
            # A same-size edit keeps the identity (mtime restored, same inode): only the digest
            # can tell. The others change it as a real edit would.
            inode += kind.startswith("new-inode")
            mtime += kind != "same-size"
            continue
        _, seeds, removals = step
        updates = {name: make_issued(name, seed) for name, seed in seeds.items()}
        expected = full_scan_result(data, updates, removals)
        identity = (inode, len(data), mtime)
        got = memo_result(data, identity, memo, updates, removals)
        if isinstance(got, str):
            assert got == expected
            memo = None  # update_profiles gives no memo when it fails
            continue
        pieces, decided, sections, scanned = got
        new = b"".join(pieces)
        assert (new, decided.written, decided.removed, decided.conflicts) == expected
        assert sections == index(data.decode(), known=LAYOUT)
        if memo is not None and not scanned:
            assert digest(data) == memo.digest  # the memo was used only for what it describes
        mtime += new != data
        data = new
        memo = None
        if not decided.check:
            assert decided.sections == index(data.decode(), known=LAYOUT)
            memo = FileMemo((inode, len(data), mtime), digest(data), decided.sections)


# -- the memo, on disk -------------------------------------------------------------------------


def managed_file(path: Path, count: int = 50) -> list[str]:
    """A credentials file with a user profile and ``count`` managed ones; their names."""
    names = [f"role-{n:03d}" for n in range(count)]
    text = render("", {name: make_issued(name) for name in names}, now=NOW)[0]
    path.write_text("# mine\n[user]\nregion = eu-west-1\n\n" + text)
    return names


def test_second_write_skips_the_scan(tmp_path: Path) -> None:
    """A write given the memo of the write before, on a file nobody else touched, does not scan
    it, and writes what a write that scans would have written."""
    path, other = tmp_path / "credentials", tmp_path / "reference"
    names = managed_file(path)
    other.write_bytes(path.read_bytes())
    first = update_profiles(str(path), {names[3]: make_issued(names[3], 1)}, now=LATER)
    assert first.scanned
    assert first.memo is not None
    updates = {names[7]: make_issued(names[7], 2), "brand-new": make_issued("brand-new")}
    second = update_profiles(str(path), updates, [names[9]], now=LATER, memo=first.memo)
    assert not second.scanned
    update_profiles(str(other), {names[3]: make_issued(names[3], 1)}, now=LATER)
    reference = update_profiles(str(other), updates, [names[9]], now=LATER)
    assert path.read_bytes() == other.read_bytes()
    assert (second.written, second.removed, second.changed, second.size) == (
        reference.written,
        reference.removed,
        reference.changed,
        reference.size,
    )


def rewrite_same_size_keeping_identity(path: Path) -> None:
    """Another program changes bytes in place, size unchanged, and restores the mtime."""
    info = os.stat(path)
    data = path.read_bytes()
    at = data.index(b"[user]") + 1
    with path.open("r+b") as handle:
        handle.seek(at)
        handle.write(b"U")  # [user] becomes [User]: another profile for botocore
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        info.st_ino,
        info.st_size,
        info.st_mtime_ns,
    )


def append_profile(path: Path, name: str) -> None:
    """Another program appends a profile."""
    with path.open("a", encoding="utf-8") as handle:
        handle.write(f"\n[{name}]\nregion = us-east-1\n")


def replace_inode(path: Path, extra: bytes = b"") -> None:
    """Another program replaces the file by a new one (a new inode)."""
    fresh = path.with_name("fresh")
    fresh.write_bytes(path.read_bytes() + extra)
    os.replace(fresh, path)


@pytest.mark.parametrize(
    "change",
    [
        rewrite_same_size_keeping_identity,
        replace_inode,
        lambda path: replace_inode(path, b"\n[other]\nregion = us-east-1\n"),
        lambda path: append_profile(path, "appended"),
    ],
    ids=["same-size-same-identity", "new-inode", "new-inode-changed", "appended"],
)
def test_file_changed_by_someone_else_is_scanned(tmp_path: Path, change: Any) -> None:
    """After another program changed the file (or only replaced it), the memo is not used: the
    file is scanned, and the result is what a write without a memo writes."""
    path, other = tmp_path / "credentials", tmp_path / "reference"
    names = managed_file(path)
    first = update_profiles(str(path), {names[1]: make_issued(names[1], 1)}, now=LATER)
    assert first.memo is not None
    change(path)
    other.write_bytes(path.read_bytes())
    updates = {"user": make_issued("user"), names[2]: make_issued(names[2], 2)}
    second = update_profiles(str(path), updates, [names[4]], now=LATER, memo=first.memo)
    assert second.scanned
    reference = update_profiles(str(other), updates, [names[4]], now=LATER)
    assert path.read_bytes() == other.read_bytes()
    assert (second.written, second.conflicts) == (reference.written, reference.conflicts)


def outcome(path: Path, updates: dict[str, Any], removals: list[str], memo: Any) -> Any:
    """What ``update_profiles`` reports, or the error it raises (the path left out)."""
    try:
        report = update_profiles(str(path), updates, removals, now=LATER, memo=memo)
    except CredentialsFileError as exc:
        return str(exc).replace(str(path), "<path>"), None, None, None, None
    return report.written, report.removed, report.conflicts, report.scanned, report.memo


def test_random_edits_between_writes_on_disk(tmp_path: Path) -> None:
    """Writes with the memo and writes without, on two copies of a file that other programs
    also edit now and then, leave the two copies identical after every step."""
    rng = random.Random(13)  # noqa: S311 - reproducible on purpose
    cached, scanned = tmp_path / "cached", tmp_path / "scanned"
    names = managed_file(cached, 30)
    scanned.write_bytes(cached.read_bytes())
    memo: FileMemo | None = None
    used = 0
    for step in range(24):
        if rng.random() < 0.3:
            kind = rng.choice(["same-size", "append", "new-inode"])
            for path in (cached, scanned):
                if kind == "same-size" and path.read_bytes().count(b"[user]"):
                    rewrite_same_size_keeping_identity(path)
                elif kind == "new-inode":
                    replace_inode(path)
                else:
                    append_profile(path, f"extra-{step}")
        picked = rng.sample([*names, "user", f"new-{step}"], rng.randint(1, 6))
        updates = {name: make_issued(name, step) for name in picked[1:]}
        removals = picked[:1]
        report = outcome(cached, updates, removals, memo)
        reference = outcome(scanned, updates, removals, None)
        assert cached.read_bytes() == scanned.read_bytes(), step
        assert report[:3] == reference[:3]
        used += report[3] is False
        memo = report[4]
    assert used >= 10  # the memo was really used, most of the time


def test_unchanged_write_keeps_a_memo(tmp_path: Path) -> None:
    """A write that finds nothing to change still leaves a memo that describes the file."""
    path = tmp_path / "credentials"
    names = managed_file(path, 5)
    report = update_profiles(str(path), {}, [], now=LATER)
    assert not report.changed
    assert report.memo is not None
    again = update_profiles(str(path), {names[0]: make_issued(names[0], 5)}, memo=report.memo)
    assert not again.scanned
    assert again.written == (names[0],)


def test_writer_keeps_the_memo_between_flushes(tmp_path: Path) -> None:
    """The daemon's writer hands each write the memo of the one before."""
    path = tmp_path / "credentials"
    names = managed_file(path, 5)
    writer = Writer(str(path), 0.0)
    reports = []

    async def flushes() -> None:
        for seed, name in enumerate(names[:3]):
            writer.add(make_issued(name, seed + 1, now=NOW))
            outcome = await writer.flush(NOW)
            assert outcome is not None
            assert outcome.report is not None
            reports.append(outcome.report)

    anyio.run(flushes)
    assert [report.scanned for report in reports] == [True, False, False]
    assert writer.memo == reports[-1].memo
    assert writer.memo is not None
    assert writer.memo.sections == index(path.read_text(), known=LAYOUT)


def test_memo_holds_no_text() -> None:
    """What a memo keeps is small: the digest, the identity, the names and offsets."""
    names = [f"role-{n:04d}" for n in range(1000)]
    text = render("", {name: make_issued(name) for name in names}, now=NOW)[0]
    memo = FileMemo((1, len(text), 0), digest(text.encode()), index(text, known=LAYOUT))
    assert isinstance(memo.sections, Sections)
    assert all(isinstance(name, str) and len(name) < 20 for name in memo.sections.names)
    assert len(memo.digest) == 32


def test_a_write_that_leaves_non_ascii_text_keeps_no_memo(tmp_path: Path) -> None:
    """Section offsets count characters; a file that is not ASCII after the write (a profile
    name with an accent, appended to an ASCII file) gets no memo, so the next write scans."""
    path = tmp_path / "credentials"
    names = managed_file(path)
    first = update_profiles(str(path), {"été": make_issued("été")}, now=LATER)
    assert first.changed
    assert first.memo is None
    second = update_profiles(str(path), {names[1]: make_issued(names[1], 1)}, now=LATER)
    assert second.scanned
    assert "été" in path.read_text(encoding="utf-8")
