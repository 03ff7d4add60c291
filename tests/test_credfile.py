"""Tests of the credentials-file writer: what it writes, what it leaves alone, and how it fails.

Everything runs on real files in ``tmp_path``; botocore's own parser reads back what was written.
"""

from __future__ import annotations

import configparser
import os
import random
import re
import resource
import selectors
import stat
import string
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import FrameType
from typing import Any

import botocore.session
import pytest
from botocore.configloader import raw_config_parse
from botocore.exceptions import ConfigParseError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run straight from a checkout, without installing
    sys.path.insert(0, str(REPO))

from credrefresh.credfile import identity, lock_path, read_profiles, update_profiles  # noqa: E402
from credrefresh.credtext import MANAGED_COMMENT, MARKER_KEY, ManagedProfile, render  # noqa: E402
from credrefresh.errors import AlreadyRunning, CredentialsFileError  # noqa: E402
from credrefresh.instance import instance_lock  # noqa: E402
from credrefresh.model import Credentials, Issued  # noqa: E402

NOW = datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC)
LATER = NOW + timedelta(minutes=45)
ACCOUNT = "111122223333"
KEY_CHARS = string.ascii_uppercase + string.digits
SECRET_CHARS = string.ascii_letters + string.digits + "+/"
TEMP_RE = re.compile(r"^\..*\.credrefresh-.*\.tmp$")
BARE_LF = re.compile(r"(?<!\r)\n")
WAIT = 10.0  # upper bound for anything a test waits on; never reached when things work
MANAGED_KEYS = {
    MARKER_KEY,
    "credrefresh_role_arn",
    "credrefresh_session_name",
    "credrefresh_assumed_role_arn",
    "credrefresh_refreshed_at",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "x_security_token_expires",
}


# -- helpers ---------------------------------------------------------------------------------


def make_issued(
    profile: str, seed: int = 0, *, expiration: datetime | None = None, now: datetime = NOW
) -> Issued:
    """Fake credentials shaped like STS's: ASIA key id, 40-char secret, 400-char token."""
    rng = random.Random(f"{profile}/{seed}")  # noqa: S311 - fake secrets, reproducible on purpose
    role = re.sub(r"[^\w+=,.@-]", "-", profile, flags=re.ASCII)
    session = f"credrefresh-{role}"[:64]
    return Issued(
        profile=profile,
        role_arn=f"arn:aws:iam::{ACCOUNT}:role/{role}",
        session_name=session,
        assumed_role_arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{session}",
        credentials=Credentials(
            access_key_id="ASIA" + "".join(rng.choices(KEY_CHARS, k=16)),
            secret_access_key="".join(rng.choices(SECRET_CHARS, k=40)),
            session_token="IQoJb3JpZ2luX2Vj" + "".join(rng.choices(SECRET_CHARS, k=384)),
            expiration=expiration or now + timedelta(hours=1),
        ),
        issued_at=now,
        duration_ms=187.5,
    )


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expected_values(issued: Issued, now: datetime) -> dict[str, str]:
    """Exactly what botocore must read from a managed profile."""
    creds = issued.credentials
    return {
        MARKER_KEY: "true",
        "credrefresh_role_arn": issued.role_arn,
        "credrefresh_session_name": issued.session_name,
        "credrefresh_assumed_role_arn": issued.assumed_role_arn,
        "credrefresh_refreshed_at": iso(now),
        "aws_access_key_id": creds.access_key_id,
        "aws_secret_access_key": creds.secret_access_key,
        "aws_session_token": creds.session_token,
        "x_security_token_expires": iso(creds.expiration),
    }


def parse_like_botocore(text: str) -> dict[str, dict[str, str]]:
    """Read text with the parser class botocore uses, as botocore would see the file."""
    parser = configparser.RawConfigParser()
    parser.read_string(text)
    return {name: dict(parser[name]) for name in parser.sections()}


def split_sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    """Split text into its preamble and ``(name, chunk)`` pairs at unindented ``[...]`` lines.

    A chunk runs from its header to the next header; only for files whose headers are at
    column 0 and that have no other line starting with ``[`` (the files these tests build).
    """
    preamble: list[str] = []
    chunks: list[tuple[str, list[str]]] = []
    for line in text.splitlines(keepends=True):
        if line.startswith("["):
            chunks.append((line[1 : line.rindex("]")], [line]))
        elif chunks:
            chunks[-1][1].append(line)
        else:
            preamble.append(line)
    return "".join(preamble), [(name, "".join(lines)) for name, lines in chunks]


def is_managed(chunk: str) -> bool:
    return any(line.startswith(f"{MARKER_KEY} =") for line in chunk.splitlines())


def user_lines(chunk: str) -> str:
    """The comment and blank lines of a managed chunk that are not credrefresh's own."""
    return "".join(
        line
        for line in chunk.splitlines(keepends=True)[1:]
        if (not line.strip() or line.lstrip()[0] in "#;") and line.strip() != MANAGED_COMMENT
    )


def snapshot(path: Path) -> tuple[bytes, int, int]:
    info = os.stat(path)
    return path.read_bytes(), info.st_mtime_ns, info.st_ino


def temp_leftovers(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if TEMP_RE.match(name))


def secrets_of(*issued: Issued) -> list[str]:
    return [
        s for i in issued for s in (i.credentials.secret_access_key, i.credentials.session_token)
    ]


def read_line(proc: subprocess.Popen[str], timeout: float = WAIT) -> str:
    """The next line the child prints, waiting at most ``timeout`` seconds."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            pytest.fail(f"child {proc.pid} printed nothing within {timeout} s")
    return proc.stdout.readline().strip()


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start Python children that talk line by line; kill any still running afterwards."""
    children: list[subprocess.Popen[str]] = []

    def start(code: str, *args: str) -> subprocess.Popen[str]:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env,
        )
        children.append(proc)
        return proc

    yield start
    for proc in children:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=WAIT)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def creds_path(tmp_path: Path) -> Path:
    aws = tmp_path / ".aws"
    aws.mkdir(mode=0o700)
    return aws / "credentials"


class ThreadResult:
    """What a call made in a helper thread returned or raised."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self.run, args=(fn,), daemon=True)

    def run(self, fn: Callable[[], Any]) -> None:
        try:
            self.value = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test thread
            self.error = exc


def interfering(when: Callable[[FrameType, str, Any], bool], action: Callable[[], None]) -> Any:
    """A profile hook that runs ``action`` (a writer that takes no lock) at a chosen moment.

    This is how a lockless writer such as ``aws configure set`` is made to strike at one
    exact point of ``update_profiles``, deterministically; nothing is replaced or faked.
    """

    def hook(frame: FrameType, event: str, arg: Any) -> None:
        if when(frame, event, arg):
            action()

    return hook


# -- file modes and creation -----------------------------------------------------------------


def test_new_file_is_created_0600(creds_path: Path) -> None:
    """A credentials file that did not exist is created with mode 0600."""
    report = update_profiles(str(creds_path), {"dev": make_issued("dev")}, now=NOW)
    assert stat.S_IMODE(os.stat(creds_path).st_mode) == 0o600
    assert report.changed
    assert report.written == ("dev",)
    assert report.size == os.path.getsize(creds_path)


def test_missing_directory_is_created_0700(tmp_path: Path) -> None:
    """A missing directory for the file is created with mode 0700."""
    path = tmp_path / "home" / ".aws" / "credentials"
    (tmp_path / "home").mkdir()
    update_profiles(str(path), {"dev": make_issued("dev")}, now=NOW)
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert raw_config_parse(str(path))["dev"] == expected_values(make_issued("dev"), NOW)


def test_existing_0644_file_ends_up_0600(creds_path: Path) -> None:
    """A world-readable credentials file is 0600 once secrets have been written to it."""
    creds_path.write_text("[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\n")
    creds_path.chmod(0o644)
    update_profiles(str(creds_path), {"dev": make_issued("dev")}, now=NOW)
    assert stat.S_IMODE(os.stat(creds_path).st_mode) == 0o600


# -- what is touched and what is not ---------------------------------------------------------


def test_conflicting_unmanaged_profile_is_left_alone(creds_path: Path) -> None:
    """A configured profile that exists without the marker is a conflict, byte-identical, and
    every other configured profile is still written."""
    prod = "[prod]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = hand\n"
    update_profiles(str(creds_path), {"stage": make_issued("stage")}, now=NOW)
    creds_path.write_text(prod + "\n" + creds_path.read_text())
    updates = {name: make_issued(name, 1) for name in ("stage", "prod", "dev")}

    report = update_profiles(str(creds_path), updates, now=LATER)

    assert report.conflicts == ("prod",)
    assert report.written == ("stage", "dev")
    text = creds_path.read_text()
    assert text.startswith(prod + "\n[stage]\n")
    parsed = raw_config_parse(str(creds_path))
    assert parsed["prod"] == {
        "aws_access_key_id": "AKIAIOSFODNN7EXAMPLE",
        "aws_secret_access_key": "hand",
    }
    assert parsed["stage"] == expected_values(updates["stage"], LATER)
    assert parsed["dev"] == expected_values(updates["dev"], LATER)


OLD_MANAGED = (
    "[ci]",
    MANAGED_COMMENT,
    f"{MARKER_KEY} = true",
    "aws_access_key_id = ASIAOLDOLDOLDOLDOLD1",
    "aws_secret_access_key = " + "o" * 40,
    "aws_session_token = " + "t" * 400,
    "x_security_token_expires = 2025-03-14T08:00:00Z",
    "# Zugangsdaten für das Team — 東京 (this note belongs to the next profile)",
)
UNMANAGED_HEAD = (
    "# AWS credentials — bearbeitet von Jürgen",
    "; generated by hand, do not reorder",
    "",
    "[default]",
    "aws_access_key_id = AKIAIOSFODNN7EXAMPLE",
    "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "region = eu-central-1 # not an inline comment for botocore",
    "",
    "",
)
UNMANAGED_TAIL = (
    "[büro-ünïcödé]",
    "note = naïve café → ✓",
    "  ; indented comment",
    "s3 =",
    "    max_concurrent_requests = 20",
    "    signature_version = s3v4",
    "",
    "; trailing comment",
    "[last]",
    "aws_access_key_id = AKIAI44QH8DHBEXAMPLE",
)


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["LF", "CRLF"])
@pytest.mark.parametrize("trailing", [True, False], ids=["eol", "no-eol"])
def test_unmanaged_content_survives_byte_for_byte(
    creds_path: Path, newline: str, trailing: bool
) -> None:
    """Comments, blank lines, order, UTF-8, CRLF, continuations and a missing final newline
    outside managed sections survive an update byte for byte, and no bare LF enters a CRLF file."""
    lines = UNMANAGED_HEAD + OLD_MANAGED + UNMANAGED_TAIL
    original = newline.join(lines) + (newline if trailing else "")
    creds_path.write_bytes(original.encode())
    updates = {"ci": make_issued("ci"), "new": make_issued("new")}

    update_profiles(str(creds_path), updates, now=NOW)

    text = creds_path.read_bytes().decode()
    old_pre, old_chunks = split_sections(original)
    new_pre, new_chunks = split_sections(text)
    assert new_pre == old_pre
    assert [name for name, _ in new_chunks] == ["default", "ci", "büro-ünïcödé", "last", "new"]
    old, new = dict(old_chunks), dict(new_chunks)
    assert new["default"] == old["default"]
    assert new["büro-ünïcödé"] == old["büro-ünïcödé"]
    # New profiles go after exactly one blank line; nothing of the old last line changes.
    assert new["last"] == old["last"] + ("" if trailing else newline) + newline
    assert new["ci"].endswith(newline + OLD_MANAGED[-1] + newline)
    assert new["ci"].count("# Zugangsdaten") == 1
    if newline == "\r\n":
        assert BARE_LF.search(text) is None
    parsed = raw_config_parse(str(creds_path))
    assert parsed["ci"] == expected_values(updates["ci"], NOW)
    assert parsed["new"] == expected_values(updates["new"], NOW)
    assert parsed["büro-ünïcödé"] == {
        "note": "naïve café → ✓",
        "s3": {"max_concurrent_requests": "20", "signature_version": "s3v4"},
    }
    assert parsed["default"]["region"] == "eu-central-1 # not an inline comment for botocore"


def test_file_without_final_newline_keeps_it_when_nothing_is_appended(creds_path: Path) -> None:
    """Updating a managed profile in the middle leaves a file's missing final newline missing."""
    update_profiles(str(creds_path), {"ci": make_issued("ci")}, now=NOW)
    tail = "[last]\nregion = us-west-2"
    creds_path.write_text(creds_path.read_text() + tail)

    update_profiles(str(creds_path), {"ci": make_issued("ci", 1)}, now=LATER)

    text = creds_path.read_text()
    assert text.endswith("\n" + tail)
    assert raw_config_parse(str(creds_path))["ci"] == expected_values(make_issued("ci", 1), LATER)


def test_update_replaces_values_in_place(creds_path: Path) -> None:
    """An update rewrites a managed profile where it stands, keeps a user's comment inside it,
    and leaves everything around it as it was."""
    before = "# mine\n[default]\nregion = eu-west-1\n\n"
    after = "[other]\nregion = ap-south-1\n"
    update_profiles(str(creds_path), {"ci": make_issued("ci")}, now=NOW)
    managed = creds_path.read_text()
    note = "; the next profile is used by the nightly job\n"
    creds_path.write_text(before + managed + "\n" + note + after)

    report = update_profiles(str(creds_path), {"ci": make_issued("ci", 1)}, now=LATER)

    assert report.written == ("ci",)
    text = creds_path.read_text()
    assert text.startswith(before + "[ci]\n")
    assert text.endswith("\n\n" + note + after)
    # The same lines in the same order; only the values differ.
    old, new = make_issued("ci").credentials, make_issued("ci", 1).credentials
    expected = managed
    for field in ("access_key_id", "secret_access_key", "session_token"):
        expected = expected.replace(getattr(old, field), getattr(new, field))
    expected = expected.replace(f"refreshed_at = {iso(NOW)}", f"refreshed_at = {iso(LATER)}")
    assert text[len(before) : -len(after)] == expected + "\n" + note
    for secret in secrets_of(make_issued("ci")):
        assert secret not in text
    assert raw_config_parse(str(creds_path))["ci"] == expected_values(make_issued("ci", 1), LATER)


def test_removals_delete_only_managed_profiles(creds_path: Path) -> None:
    """Removals delete managed profiles and leave an unmanaged profile of the same name."""
    hand = "[old-hand]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\n\n"
    creds_path.write_text(hand)
    update_profiles(
        str(creds_path), {"old": make_issued("old"), "keep": make_issued("keep")}, now=NOW
    )
    before = creds_path.read_text()

    report = update_profiles(str(creds_path), {}, ["old", "old-hand", "never-there"], now=LATER)

    assert report.removed == ("old",)
    assert report.written == ()
    assert report.conflicts == ()
    text = creds_path.read_text()
    assert text.startswith(hand)
    chunks = split_sections(before)[1]
    assert [name for name, _ in chunks] == ["old-hand", "old", "keep"]
    # The blank line that separated [old] from [keep] stays; [old] itself goes.
    assert chunks[1][1].endswith("\n\n")
    assert text == chunks[0][1] + "\n" + chunks[2][1]
    assert sorted(raw_config_parse(str(creds_path))) == ["keep", "old-hand"]
    for secret in secrets_of(make_issued("old")):
        assert secret not in text


def test_managed_profile_holds_exactly_the_expected_keys(
    creds_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A managed profile holds the key id, secret, token, ISO 8601 UTC expiry, the marker and
    credrefresh's audit fields, nothing else, and botocore's credential chain loads it."""
    eastern = timezone(timedelta(hours=-5))
    expires = datetime(2025, 3, 14, 6, 0, 7, 999_999, tzinfo=eastern)
    issued = make_issued("dev", expiration=expires)

    update_profiles(str(creds_path), {"dev": issued}, now=NOW)

    values = raw_config_parse(str(creds_path))["dev"]
    assert set(values) == MANAGED_KEYS
    assert values == expected_values(issued, NOW)
    assert values["x_security_token_expires"] == "2025-03-14T11:00:07Z"
    text = creds_path.read_text()
    for secret in secrets_of(issued):
        assert text.count(secret) == 1
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds_path))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(creds_path.parent / "no-config"))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    loaded = botocore.session.Session(profile="dev").get_credentials()
    assert loaded is not None
    frozen = loaded.get_frozen_credentials()
    assert frozen.access_key == issued.credentials.access_key_id
    assert frozen.secret_key == issued.credentials.secret_access_key
    assert frozen.token == issued.credentials.session_token


# -- atomicity -------------------------------------------------------------------------------


def test_replace_is_a_rename_and_leaves_no_temp_files(creds_path: Path) -> None:
    """Each write renames a new inode over the file and leaves no temporary file behind."""
    creds_path.write_text("[default]\nregion = eu-west-1\n")
    inode = os.stat(creds_path).st_ino
    update_profiles(str(creds_path), {"dev": make_issued("dev")}, now=NOW)
    assert os.stat(creds_path).st_ino != inode
    assert temp_leftovers(creds_path.parent) == []
    assert sorted(os.listdir(creds_path.parent)) == ["credentials", "credentials.lock"]


def test_failed_write_leaves_original_intact(creds_path: Path) -> None:
    """When writing the new file fails mid-way (EFBIG from RLIMIT_FSIZE, which binds root too),
    the original is untouched and the partial temp file is gone."""
    original = ("[default]\n" + "".join(f"k{i} = {'v' * 60}\n" for i in range(120))).encode()
    creds_path.write_bytes(original)
    before = snapshot(creds_path)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    # Python ignores SIGXFSZ, so the write fails with EFBIG instead of killing the process.
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with pytest.raises(CredentialsFileError, match="cannot replace: File too large; the file"):
            update_profiles(str(creds_path), {"dev": make_issued("dev")}, now=NOW)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert len(original) > 4096
    assert snapshot(creds_path) == before
    assert temp_leftovers(creds_path.parent) == []


@pytest.mark.parametrize("kind", ["absolute", "relative", "chain"])
def test_symlink_stays_a_symlink(tmp_path: Path, kind: str) -> None:
    """A credentials file that is a symlink (absolute, relative or a chain) stays one; the file
    it finally points to is what gets replaced."""
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    real = dotfiles / "aws-credentials"
    real.write_text("[default]\nregion = eu-west-1\n")
    aws = tmp_path / ".aws"
    aws.mkdir()
    path = aws / "credentials"
    if kind == "absolute":
        os.symlink(real, path)
    elif kind == "relative":
        os.symlink("../dotfiles/aws-credentials", path)
    else:
        os.symlink("aws-credentials", dotfiles / "hop")
        os.symlink(dotfiles / "hop", path)
    links = {p: os.readlink(p) for p in (path, dotfiles / "hop") if p.is_symlink()}

    update_profiles(str(path), {"dev": make_issued("dev")}, now=NOW)

    assert {p: os.readlink(p) for p in links} == links
    assert real.read_text().startswith("[default]\nregion = eu-west-1\n\n[dev]\n")
    assert not real.is_symlink()
    assert stat.S_IMODE(os.stat(real).st_mode) == 0o600
    assert raw_config_parse(str(path))["dev"] == expected_values(make_issued("dev"), NOW)
    assert lock_path(str(path)) == os.path.realpath(real) + ".lock"
    assert sorted(os.listdir(aws)) == ["credentials"]
    assert temp_leftovers(dotfiles) == []


def test_stale_temp_files_of_our_naming_are_removed(creds_path: Path) -> None:
    """Temp files a killed writer left (``.<name>.credrefresh-*.tmp``) go at the next update;
    files of any other name stay."""
    aws = creds_path.parent
    stale = [".credentials.credrefresh-k2j4_x9a.tmp", ".credentials.credrefresh-.tmp"]
    kept = [
        ".credentials.credrefresh-k2j4_x9a",  # not .tmp
        ".config.credrefresh-k2j4_x9a.tmp",  # another file's
        "credentials.credrefresh-abc.tmp",  # no leading dot
        "notes.tmp",
        ".credentials.swp",
    ]
    for name in stale + kept:
        (aws / name).write_text("half a file")
    update_profiles(str(creds_path), {"dev": make_issued("dev")}, now=NOW)
    assert sorted(os.listdir(aws)) == sorted([*kept, "credentials", "credentials.lock"])


# -- files that must never be rewritten ------------------------------------------------------

UNPARSEABLE = {
    "binary": (
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)),
        r": is not UTF-8 text \(invalid byte at offset 0\); refusing to rewrite it$",
    ),
    "latin-1": (
        "[default]\n# Zugangsdaten für Jürgen\nregion = eu-central-1\n".encode("latin-1"),
        r": is not UTF-8 text \(invalid byte at offset 26\); refusing to rewrite it$",
    ),
    "key-before-section": (
        b"aws_access_key_id = AKIAIOSFODNN7EXAMPLE\n[default]\nregion = eu-west-1\n",
        (
            r"credentials: does not parse as an INI file: line 1: a line before the first "
            r"\[section\] header; the file was left untouched$"
        ),
    ),
    "duplicate-section": (
        b"[default]\nregion = eu-west-1\n\n[work]\nregion = a\n[default]\nregion = b\n",
        (
            r"credentials: does not parse as an INI file: line 6: duplicate section \[default\]; "
            r"the file was left untouched$"
        ),
    ),
    "duplicate-key": (
        b"[default]\nregion = eu-west-1\nregion = us-east-1\n",
        (
            r"credentials: does not parse as an INI file: line 3: duplicate key 'region' in "
            r"section \[default\]; the file was left untouched$"
        ),
    ),
    "stray-line": (
        b"[default]\nregion = eu-west-1\nthis is not a key\n",
        (
            r"credentials: does not parse as an INI file: line 3: not a \[section\] header, a "
            r"key = value pair or a comment; the file was left untouched$"
        ),
    ),
    "bom": (
        b"\xef\xbb\xbf[default]\nregion = eu-west-1\n",
        (
            r"credentials: starts with a UTF-8 byte order mark, which botocore cannot read; remove "
            r"the first three bytes and try again; the file was left untouched$"
        ),
    ),
}


@pytest.mark.parametrize("case", sorted(UNPARSEABLE))
def test_unparseable_file_is_never_rewritten(creds_path: Path, case: str) -> None:
    """A file that does not parse is never rewritten: a clear error, same bytes, same mtime."""
    data, message = UNPARSEABLE[case]
    creds_path.write_bytes(data)
    before = snapshot(creds_path)
    with pytest.raises(CredentialsFileError, match=message) as caught:
        update_profiles(str(creds_path), {"dev": make_issued("dev")}, now=NOW)
    assert str(caught.value).startswith(str(creds_path))
    # The message never quotes the file's content (a line may hold a secret).
    assert "eu-west-1" not in str(caught.value)
    assert snapshot(creds_path) == before
    assert temp_leftovers(creds_path.parent) == []


def test_unparseable_files_are_ones_botocore_rejects_too(tmp_path: Path) -> None:
    """Every file the writer refuses is one botocore itself cannot read (the refusals are real)."""
    for case, (data, _) in UNPARSEABLE.items():
        path = tmp_path / case
        path.write_bytes(data)
        with pytest.raises(ConfigParseError):
            raw_config_parse(str(path))


def test_directory_in_place_of_file_is_an_error(creds_path: Path) -> None:
    """A directory where the file should be raises a clear error and is left as it was."""
    creds_path.mkdir()
    (creds_path / "inside").write_text("x")
    with pytest.raises(
        CredentialsFileError, match=r"credentials: is a directory, not a credentials"
    ):
        update_profiles(str(creds_path), {"dev": make_issued("dev")}, now=NOW)
    assert os.listdir(creds_path) == ["inside"]
    assert (creds_path / "inside").read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file, so no EACCES; CI runs as root")
def test_unreadable_file_is_an_error(creds_path: Path) -> None:
    """A file without read permission raises a clear error and is left as it was."""
    creds_path.write_text("[default]\nregion = eu-west-1\n")
    creds_path.chmod(0o200)
    before = os.stat(creds_path).st_mtime_ns
    with pytest.raises(CredentialsFileError, match=r"credentials: cannot read: Permission denied"):
        update_profiles(str(creds_path), {"dev": make_issued("dev")}, now=NOW)
    creds_path.chmod(0o600)
    assert creds_path.read_text() == "[default]\nregion = eu-west-1\n"
    assert os.stat(creds_path).st_mtime_ns == before


def test_duplicate_key_differing_in_case_is_refused(creds_path: Path) -> None:
    """A file botocore rejects for a key repeated in another case is refused, not rewritten."""
    data = b"[default]\nRegion = eu-west-1\nregion = us-east-1\n"
    creds_path.write_bytes(data)
    with pytest.raises(configparser.DuplicateOptionError):
        parse_like_botocore(data.decode())
    before = snapshot(creds_path)
    with pytest.raises(CredentialsFileError, match="does not parse"):
        update_profiles(str(creds_path), {"dev": make_issued("dev")}, now=NOW)
    assert snapshot(creds_path) == before


def test_lone_cr_line_endings_never_yield_a_file_botocore_rejects(creds_path: Path) -> None:
    """A file with old-Mac CR line endings is refused or written so botocore still reads it."""
    creds_path.write_bytes(b"# mine\r[dev]\raws_access_key_id = AKIAIOSFODNN7EXAMPLE\r")
    assert raw_config_parse(str(creds_path)) == {
        "dev": {"aws_access_key_id": "AKIAIOSFODNN7EXAMPLE"}
    }
    before = snapshot(creds_path)
    try:
        update_profiles(str(creds_path), {"dev": make_issued("dev")}, now=NOW)
    except CredentialsFileError:
        assert snapshot(creds_path) == before
    else:
        assert "dev" in raw_config_parse(str(creds_path))


def test_indented_comment_in_managed_section_is_kept(creds_path: Path) -> None:
    """An indented user comment inside a managed profile survives the next update."""
    update_profiles(str(creds_path), {"ci": make_issued("ci")}, now=NOW)
    creds_path.write_text(creds_path.read_text() + "    # rotate by hand if the job is stuck\n")
    assert set(raw_config_parse(str(creds_path))["ci"]) == MANAGED_KEYS
    update_profiles(str(creds_path), {"ci": make_issued("ci", 1)}, now=LATER)
    assert "    # rotate by hand if the job is stuck\n" in creds_path.read_text()


def test_appended_profile_follows_exactly_one_blank_line(creds_path: Path) -> None:
    """A new profile is appended after exactly one blank line, also after a managed profile."""
    update_profiles(str(creds_path), {"ci": make_issued("ci")}, now=NOW)
    first = creds_path.read_text()
    update_profiles(str(creds_path), {"ci": make_issued("ci"), "dev": make_issued("dev")}, now=NOW)
    assert creds_path.read_text().startswith(first + "\n[dev]\n")


# -- locking and concurrent writers ----------------------------------------------------------

LOCK_HOLDER = r"""
import fcntl, os, sys
lock, target = sys.argv[1], sys.argv[2]
fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
if sys.stdin.readline().strip() == "write":
    with open(target, "a", encoding="utf-8") as handle:
        handle.write("\n[locked-writer]\nregion = sa-east-1\n")
fcntl.flock(fd, fcntl.LOCK_UN)
print("released", flush=True)
"""


def test_update_waits_for_the_lock_and_rereads_under_it(
    creds_path: Path, spawn: Callable[..., subprocess.Popen[str]]
) -> None:
    """While another process holds the writers' lock, an update waits; once it is released, the
    update proceeds from the file as the other writer left it."""
    update_profiles(str(creds_path), {"ci": make_issued("ci")}, now=NOW)
    holder = spawn(LOCK_HOLDER, lock_path(str(creds_path)), str(creds_path))
    assert read_line(holder) == "locked"
    before = snapshot(creds_path)
    # What it waits for is the lock: with a short bound on that wait, the update gives up
    # saying so, and the file is untouched.
    with pytest.raises(CredentialsFileError, match=r"another writer has held the lock for 0\.3 s"):
        update_profiles(str(creds_path), {"dev": make_issued("dev")}, now=LATER, lock_timeout=0.3)
    assert snapshot(creds_path) == before
    call = ThreadResult(
        lambda: update_profiles(str(creds_path), {"dev": make_issued("dev")}, now=LATER)
    )
    call.thread.start()
    call.thread.join(timeout=0.3)  # it keeps waiting as long as the lock is held
    assert call.thread.is_alive()
    assert snapshot(creds_path) == before

    assert holder.stdin is not None
    holder.stdin.write("write\n")
    holder.stdin.flush()
    assert read_line(holder) == "released"
    call.thread.join(timeout=WAIT)
    assert not call.thread.is_alive()
    assert call.error is None
    assert call.value.written == ("dev",)
    parsed = raw_config_parse(str(creds_path))
    assert list(parsed) == ["ci", "locked-writer", "dev"]
    assert parsed["locked-writer"] == {"region": "sa-east-1"}
    assert parsed["dev"] == expected_values(make_issued("dev"), LATER)


def test_edit_between_updates_is_kept(creds_path: Path) -> None:
    """Content another writer adds between two updates is still there after the second."""
    update_profiles(str(creds_path), {"ci": make_issued("ci")}, now=NOW)
    with creds_path.open("a", encoding="utf-8") as handle:
        handle.write("\n[sso]\nsso_session = corp # by aws configure\n")
    update_profiles(str(creds_path), {"ci": make_issued("ci", 1)}, now=LATER)
    parsed = raw_config_parse(str(creds_path))
    assert parsed["sso"] == {"sso_session": "corp # by aws configure"}
    assert parsed["ci"] == expected_values(make_issued("ci", 1), LATER)


def test_identity_semantics(creds_path: Path) -> None:
    """``identity`` is None for a missing file, follows symlinks, and changes on a rename or an
    in-place append."""
    assert identity(str(creds_path)) is None
    creds_path.write_text("[default]\n")
    info = os.stat(creds_path)
    assert identity(str(creds_path)) == (info.st_ino, info.st_size, info.st_mtime_ns)
    link = creds_path.parent / "link"
    link.symlink_to(creds_path)
    assert identity(str(link)) == identity(str(creds_path))
    first = identity(str(creds_path))
    update_profiles(str(creds_path), {"dev": make_issued("dev")}, now=NOW)
    second = identity(str(creds_path))
    assert second is not None
    assert first is not None
    assert second[0] != first[0]
    with creds_path.open("a") as handle:
        handle.write("# x\n")
    third = identity(str(creds_path))
    assert third is not None
    assert third[0] == second[0]
    assert third[1] == second[1] + 4


def test_lockless_write_between_read_and_check_is_kept(creds_path: Path) -> None:
    """A lockless writer (the AWS CLI) that changes the file after it was read makes the update
    start over from the new content instead of losing the edit."""
    update_profiles(str(creds_path), {"ci": make_issued("ci")}, now=NOW)
    hits: list[int] = []

    def cli_write() -> None:
        if not hits:
            with creds_path.open("a", encoding="utf-8") as handle:
                handle.write("\n[cli]\nregion = eu-north-1\n")
        hits.append(1)

    hook = interfering(
        lambda frame, event, _: event == "call" and frame.f_code is identity.__code__, cli_write
    )
    sys.setprofile(hook)
    try:
        report = update_profiles(str(creds_path), {"dev": make_issued("dev")}, now=LATER)
    finally:
        sys.setprofile(None)
    assert len(hits) == 2  # checked, found a change, read again, checked again
    assert report.changed
    parsed = raw_config_parse(str(creds_path))
    assert list(parsed) == ["ci", "cli", "dev"]
    assert parsed["cli"] == {"region": "eu-north-1"}


def test_file_that_keeps_changing_is_not_written(creds_path: Path) -> None:
    """A file that changes under every attempt is left to the other writer, with a clear error."""
    update_profiles(str(creds_path), {"ci": make_issued("ci")}, now=NOW)
    start = creds_path.read_text()

    def cli_write() -> None:
        with creds_path.open("a", encoding="utf-8") as handle:
            handle.write("# touched\n")

    hook = interfering(
        lambda frame, event, _: event == "call" and frame.f_code is identity.__code__, cli_write
    )
    sys.setprofile(hook)
    try:
        with pytest.raises(CredentialsFileError, match=r"credentials: changed under us 5 times"):
            update_profiles(str(creds_path), {"dev": make_issued("dev")}, now=LATER)
    finally:
        sys.setprofile(None)
    assert creds_path.read_text() == start + "# touched\n" * 5
    assert temp_leftovers(creds_path.parent) == []


def test_lockless_write_during_fsync_is_kept(creds_path: Path) -> None:
    """A lockless edit made while the new file is being written and fsynced is not lost."""
    update_profiles(str(creds_path), {"ci": make_issued("ci")}, now=NOW)
    done: list[int] = []

    def cli_write() -> None:
        if not done:
            done.append(1)
            with creds_path.open("a", encoding="utf-8") as handle:
                handle.write("\n[cli]\nregion = eu-north-1\n")

    hook = interfering(lambda _, event, arg: event == "c_call" and arg is os.fsync, cli_write)
    sys.setprofile(hook)
    try:
        update_profiles(str(creds_path), {"dev": make_issued("dev")}, now=LATER)
    finally:
        sys.setprofile(None)
    assert done == [1]
    assert "cli" in raw_config_parse(str(creds_path))


# -- no-op updates, size, reading ------------------------------------------------------------


def test_update_without_changes_does_not_rewrite(creds_path: Path) -> None:
    """An update that changes nothing leaves the file alone (same inode and mtime) and says so."""
    updates = {"ci": make_issued("ci")}
    update_profiles(str(creds_path), updates, now=NOW)
    before = snapshot(creds_path)
    report = update_profiles(str(creds_path), updates, ["not-there"], now=NOW)
    assert not report.changed
    assert report.written == ("ci",)
    assert snapshot(creds_path) == before
    empty = update_profiles(str(creds_path.parent / "absent"), {}, now=NOW)
    assert not empty.changed
    assert not (creds_path.parent / "absent").exists()


def test_unchanged_report_size_is_bytes(creds_path: Path) -> None:
    """``WriteReport.size`` is the file size in bytes, also when nothing was written."""
    creds_path.write_text("# Jürgen's profiles — 東京\n[default]\nregion = eu-west-1\n")
    report = update_profiles(str(creds_path), {}, now=NOW)
    assert not report.changed
    assert report.size == os.path.getsize(creds_path)


def test_fifty_megabytes_of_other_profiles_survive(creds_path: Path) -> None:
    """Writing one managed profile into ~50 MB of unrelated profiles keeps all of them."""
    rng = random.Random(7)  # noqa: S311 - fake secrets, reproducible on purpose
    token = "".join(rng.choices(SECRET_CHARS, k=400))
    profile = (
        "[team-{0:06d}]\naws_access_key_id = AKIA{0:016d}\n"
        "aws_secret_access_key = {1}\naws_session_token = {2}\n# owner: team {0}\n\n"
    )
    count = 50_000_000 // len(profile.format(0, "s" * 40, token))
    original = "".join(
        profile.format(i, token[i % 300 : i % 300 + 40], token) for i in range(count)
    ).encode()
    creds_path.write_bytes(original)
    issued = make_issued("dev")

    started = time.perf_counter()
    report = update_profiles(str(creds_path), {"dev": issued}, now=NOW)
    elapsed = time.perf_counter() - started
    print(f"50 MB update: {len(original) / 1e6:.1f} MB, {count} profiles, {elapsed:.2f} s")  # noqa: T201

    data = creds_path.read_bytes()
    assert report.size == len(data)
    assert len(original) >= 50_000_000
    assert data[: len(original)] == original
    tail = data[len(original) :].decode()
    assert tail.startswith("[dev]\n")
    assert parse_like_botocore(tail) == {"dev": expected_values(issued, NOW)}


def test_read_profiles_reports_no_secrets(creds_path: Path) -> None:
    """``read_profiles`` gives expiry, key id, role, refresh time and the managed flag, never a
    secret."""
    issued = make_issued("ci")
    creds_path.write_text("[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\n\n")
    update_profiles(str(creds_path), {"ci": issued}, now=NOW)

    profiles = read_profiles(str(creds_path))

    assert profiles == {
        "default": ManagedProfile(
            profile="default",
            managed=False,
            access_key_id="AKIAIOSFODNN7EXAMPLE",
            expiration=None,
            role_arn=None,
            refreshed_at=None,
        ),
        "ci": ManagedProfile(
            profile="ci",
            managed=True,
            access_key_id=issued.credentials.access_key_id,
            expiration=issued.credentials.expiration.replace(microsecond=0),
            role_arn=issued.role_arn,
            refreshed_at=NOW,
            session_name=issued.session_name,
        ),
    }
    for secret in secrets_of(issued):
        assert secret not in repr(profiles)
    assert read_profiles(str(creds_path.parent / "absent")) == {}


INSTANCE_HOLDER = r"""
import sys
from credrefresh.instance import instance_lock
with instance_lock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.readline()
print("released", flush=True)
"""


def test_instance_lock_names_the_running_pid(
    creds_path: Path, spawn: Callable[..., subprocess.Popen[str]]
) -> None:
    """A second ``instance_lock`` on the same file fails with the holder's pid in the message,
    and succeeds once the holder has let go."""
    holder = spawn(INSTANCE_HOLDER, str(creds_path))
    assert read_line(holder) == "held"
    second = instance_lock(str(creds_path))
    with pytest.raises(AlreadyRunning, match=rf"\(pid {holder.pid}\) already keeps "):
        second.__enter__()
    assert holder.stdin is not None
    holder.stdin.write("\n")
    holder.stdin.flush()
    assert read_line(holder) == "released"
    assert holder.wait(timeout=WAIT) == 0
    with instance_lock(str(creds_path)):
        pid_file = Path(os.path.realpath(creds_path) + ".credrefresh.pid")
        assert pid_file.read_text() == f"{os.getpid()}\n"


# -- the property ----------------------------------------------------------------------------

NAME_CHARS = string.ascii_letters + string.digits + "-_.@+ éüßøΩжд東京"
names = st.text(alphabet=NAME_CHARS, min_size=1, max_size=10).filter(
    lambda n: n == n.strip() and n != "DEFAULT"
)
keys = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True).filter(
    lambda k: not k.startswith("credrefresh")
)
free_text = st.text(alphabet=st.characters(categories=("L", "N", "P", "S", "Zs")), max_size=16)
comments = st.builds(lambda p, t: p + t, st.sampled_from(["#", ";", "# ", "; "]), free_text)
blanks = st.sampled_from(["", " ", "\t"])
continuations = st.builds(
    lambda indent, t: indent + t, st.sampled_from(["  ", "    ", "\t"]), free_text
).filter(lambda line: line.strip())
option_items = st.builds(
    lambda k, v, cont: [f"{k} = {v}".rstrip(" "), *cont],
    keys,
    free_text,
    st.lists(continuations, max_size=2),
)
body_items = st.one_of(option_items, comments.map(lambda c: [c]), blanks.map(lambda b: [b]))


@st.composite
def unmanaged_section(draw: st.DrawFn, name: str) -> list[str]:
    lines = [f"[{name}]"]
    seen: set[str] = set()
    for item in draw(st.lists(body_items, max_size=6)):
        key = item[0].split("=")[0].rstrip()
        if item[0] and item[0][0].isalpha():
            if key in seen:
                continue
            seen.add(key)
        lines.extend(item)
    return lines


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """A credentials file as a user might have it, with some sections credrefresh manages."""
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    section_names = draw(st.lists(names, unique=True, max_size=7))
    managed = {n for n in section_names if draw(st.booleans())}
    lines = draw(st.lists(st.one_of(comments, blanks), max_size=3))
    for name in section_names:
        if name in managed:
            seed = draw(st.integers(0, 1000))
            text = render("", {name: make_issued(name, seed)}, now=NOW)[0]
            lines.extend(text.splitlines())
            lines.extend(draw(st.lists(st.one_of(comments, blanks), max_size=3)))
        else:
            lines.extend(draw(unmanaged_section(name)))
    trailing = draw(st.booleans())
    text = newline.join(lines) + (newline if trailing and lines else "")
    present = set(section_names)
    new = draw(st.lists(names.filter(lambda n: n not in present), unique=True, max_size=3))
    targets = draw(st.lists(st.sampled_from(section_names), unique=True)) if section_names else []
    updates = {n: make_issued(n, draw(st.integers(0, 1000))) for n in [*targets, *new]}
    removal_pool = [*section_names, "gone", "never-seen"]
    removals = draw(st.lists(st.sampled_from(removal_pool), unique=True, max_size=4))
    return {
        "text": text,
        "managed": managed,
        "updates": updates,
        "removals": removals,
    }


def expected_prefix(text: str, updates: Mapping[str, Issued], removals: list[str], nl: str) -> str:
    """The new text up to where appended profiles start, as the rules say it must be."""
    preamble, chunks = split_sections(text)
    out = [preamble]
    for name, chunk in chunks:
        if not is_managed(chunk):
            out.append(chunk)
        elif name in updates:
            fresh = render("", {name: updates[name]}, now=LATER)[0].replace("\n", nl)
            out.append(fresh + user_lines(chunk))
        elif name in removals:
            out.append(user_lines(chunk))
        else:
            out.append(chunk)
    return "".join(out)


def comment_lines(text: str) -> list[str]:
    return [
        line.strip()
        for line in text.splitlines()
        if line[:1] in {"#", ";"} and line.strip() != MANAGED_COMMENT
    ]


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(documents())
def test_render_keeps_everything_it_does_not_manage(doc: dict[str, Any]) -> None:
    """Whatever the file held, every unmanaged section, comment and blank line is unchanged,
    and botocore's parser reads every managed profile with exactly the values written."""
    text, updates, removals = doc["text"], doc["updates"], doc["removals"]
    # A CRLF file stays CRLF; a file with no line break yet (or none at all) gets LF.
    nl = "\r\n" if "\r\n" in text else "\n"
    before = parse_like_botocore(text)
    present = set(before)
    managed = doc["managed"]

    new_text, written, removed, conflicts = render(text, updates, removals, now=LATER)

    # Everything up to the appended profiles is exactly what the rules dictate ...
    prefix = expected_prefix(text, updates, removals, nl)
    assert new_text.startswith(prefix)
    # ... and what follows is the new profiles, each after line breaks of the file's kind only.
    appended = [n for n in updates if n not in present]
    tail = new_text[len(prefix) :]
    # (Whether a header really starts a line is checked by the parse below.)
    pattern = "".join(
        f"(?:{re.escape(nl)})*"
        + re.escape(render("", {n: updates[n]}, now=LATER)[0].replace("\n", nl))
        for n in appended
    )
    assert re.fullmatch(pattern, tail), (prefix[-40:], tail[:80])
    assert comment_lines(new_text) == comment_lines(text)
    if nl == "\r\n":
        assert BARE_LF.search(new_text) is None

    assert set(conflicts) == {n for n in updates if n in present and n not in managed}
    assert set(written) == set(updates) - set(conflicts)
    assert set(removed) == {n for n in removals if n in managed and n not in updates}

    after = parse_like_botocore(new_text)
    assert list(after) == [n for n in before if n not in removed] + appended
    for name, values in after.items():
        if name in written:
            assert values == expected_values(updates[name], LATER)
        else:
            assert values == before[name]
    # Rendering the result again with the same input changes nothing.
    assert render(new_text, updates, removals, now=LATER)[0] == new_text
