"""Proof of safety, secrets: no output of credrefresh ever holds a secret it handled.

Also the helpers the safety suite shares (the suite has no support module of its own, so
``test_safety_crash``, ``test_safety_concurrency`` and ``test_safety_faults`` import them from
here): the soak scale, the figures a soak run reports, an inotify watch to wait on file events
with a bound, a sampler that reads every version of the credentials and state files, checks of
the credentials file, and the ``SecretLedger`` that scans outputs for secrets.

Heavy variants scale with ``CREDREFRESH_SOAK_SCALE``: unset or ``ci`` is 0.1 of the full
counts, ``full`` is 1.0, a number is that fraction. ``tests/soak/run.py`` runs the full counts.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import fcntl
import hashlib
import itertools
import json
import os
import re
import secrets
import select
import signal
import struct
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

import pytest
from botocore.configloader import raw_config_parse

from credrefresh.credfile import lock_path
from credrefresh.credtext import MARKER_KEY
from process_support import NotifySocket, Proc, clean_env, run_cli, write_config
from support.fakests import Faults, ThreadedFakeSTS

# -- scale and figures ----------------------------------------------------------------------

CI_SCALE = 0.1


def soak_scale() -> float:
    """The fraction of the full soak counts to run (``CREDREFRESH_SOAK_SCALE``)."""
    raw = os.environ.get("CREDREFRESH_SOAK_SCALE", "").strip().lower()
    if raw in {"", "ci"}:
        return CI_SCALE
    if raw == "full":
        return 1.0
    value = float(raw)
    if not value > 0:
        raise ValueError(f"CREDREFRESH_SOAK_SCALE must be 'ci', 'full' or > 0, not {raw!r}")
    return value


def soak_timeout() -> float:
    """The per-test timeout: pyproject's 120 s at CI counts, more for bigger counts."""
    return max(120.0, 1500.0 * soak_scale())


def scaled(full: int, minimum: int = 1) -> int:
    """``full`` scaled by ``soak_scale()``, at least ``minimum``."""
    return max(minimum, round(full * soak_scale()))


def record_figures(test: str, **figures: object) -> None:
    """Append one JSON line of figures to ``$CREDREFRESH_SOAK_REPORT`` (tests/soak/run.py)."""
    target = os.environ.get("CREDREFRESH_SOAK_REPORT")
    if target:
        line = json.dumps({"test": test, "scale": soak_scale(), **figures}, sort_keys=True)
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")


pytestmark = [pytest.mark.slow, pytest.mark.timeout(soak_timeout())]

# -- waiting on files: inotify ---------------------------------------------------------------

IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
_EVENT = struct.Struct("iIII")


@dataclass(frozen=True, slots=True)
class FileEvent:
    """One inotify event: when it was read (monotonic), the directory, the mask, the name."""

    at: float
    directory: str
    mask: int
    name: str


class DirWatch:
    """inotify on a few directories, so a test waits on a file event with a bound, never polls.

    ``pidfd`` may be passed to ``wait`` so that the exit of a process ends the wait too.
    """

    MASK = IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE

    def __init__(self, *directories: str | Path) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self._dirs: dict[int, str] = {}
        self._pending: deque[FileEvent] = deque()
        self.history: list[FileEvent] = []  # every event read, for a test to classify afterwards
        for directory in directories:
            self.add(directory)

    def add(self, directory: str | Path) -> None:
        """Watch one more directory."""
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(directory), self.MASK)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory}")
        self._dirs[wd] = str(directory)

    def _fill(self, timeout: float, pidfd: int | None) -> bool:
        """Read pending events, waiting up to ``timeout``; False once ``pidfd`` is readable."""
        fds = [self.fd] if pidfd is None else [self.fd, pidfd]
        ready, _, _ = select.select(fds, [], [], max(timeout, 0.0))
        now = time.monotonic()
        if self.fd in ready:
            with contextlib.suppress(BlockingIOError):
                data = os.read(self.fd, 1 << 16)
                offset = 0
                while offset < len(data):
                    wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                    start = offset + _EVENT.size
                    name = data[start : start + length].rstrip(b"\0").decode(errors="replace")
                    event = FileEvent(now, self._dirs.get(wd, "?"), mask, name)
                    self._pending.append(event)
                    self.history.append(event)
                    offset = start + length
        return not (pidfd is not None and pidfd in ready and not self._pending)

    def wait(
        self,
        predicate: Callable[[FileEvent], bool],
        timeout: float,
        *,
        pidfd: int | None = None,
    ) -> FileEvent | None:
        """The first event matching ``predicate`` within ``timeout``; ``None`` on timeout or
        when the process behind ``pidfd`` exits first."""
        deadline = time.monotonic() + timeout
        while True:
            while self._pending:
                event = self._pending.popleft()
                if predicate(event):
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._fill(remaining, pidfd):
                return None

    def drain(self) -> list[FileEvent]:
        """Every event already queued, without waiting."""
        self._fill(0, None)
        events = list(self._pending)
        self._pending.clear()
        return events

    def close(self) -> None:
        """Stop watching."""
        os.close(self.fd)


# -- the credentials file ---------------------------------------------------------------------

MANAGED_KEYS = (
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "x_security_token_expires",
)
_HEADER = re.compile(rb"^\[", re.MULTILINE)
_MARKER_LINE = re.compile(rb"^" + MARKER_KEY.encode() + rb"\s*[=:]", re.MULTILINE)


def sections(data: bytes) -> list[bytes]:
    """The file cut before every section header: the preamble, then one chunk per section."""
    cuts = [m.start() for m in _HEADER.finditer(data)]
    bounds = [0, *[c for c in cuts if c > 0], len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def unmanaged_sections(data: bytes) -> list[str]:
    """A digest of every chunk credrefresh must never touch (preamble and unmanaged sections).

    Digests, not bytes, so that a failing comparison never prints a secret.
    """
    return [
        hashlib.sha256(chunk).hexdigest()[:16]
        for chunk in sections(data)
        if not _MARKER_LINE.search(chunk)
    ]


def parse_expiry(value: str) -> datetime:
    """``x_security_token_expires`` as an aware datetime."""
    moment = datetime.fromisoformat(value.strip())
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_credentials(path: str | Path) -> dict[str, dict[str, str]]:
    """The file as botocore reads it (raises botocore's error when it does not parse)."""
    return raw_config_parse(str(path))


def managed_problems(parsed: Mapping[str, Mapping[str, str]]) -> list[str]:
    """What is wrong with any managed section: a missing or empty key, an unparseable expiry."""
    problems = []
    for name, section in parsed.items():
        if MARKER_KEY not in section:
            continue
        missing = [key for key in MANAGED_KEYS if not section.get(key)]
        if missing:
            problems.append(f"[{name}] lacks {missing}")
            continue
        try:
            parse_expiry(section["x_security_token_expires"])
        except ValueError:
            problems.append(f"[{name}] has an unparseable x_security_token_expires")
    return problems


def managed(parsed: Mapping[str, Mapping[str, str]]) -> dict[str, Mapping[str, str]]:
    """The managed sections."""
    return {name: section for name, section in parsed.items() if MARKER_KEY in section}


def random_secret_key() -> str:
    """A secret access key shaped like AWS's (40 base64 characters)."""
    while True:
        value = base64.b64encode(secrets.token_bytes(30)).decode()
        if re.search("[a-z]", value) and re.search("[A-Z]", value) and re.search("[0-9]", value):
            return value


def random_session_token() -> str:
    """A session token shaped like STS's (a long base64 run)."""
    return base64.b64encode(secrets.token_bytes(300)).decode()


def credentials_section(name: str, *, managed_by_us: bool, expires: str) -> str:
    """A complete profile; a managed one looks like what credrefresh writes."""
    lines = [f"[{name}]"]
    if managed_by_us:
        lines += [f"{MARKER_KEY} = true", f"credrefresh_role_arn = {role_arn(name)}"]
    lines += [
        f"aws_access_key_id = AKIA{secrets.token_hex(8).upper()}",
        f"aws_secret_access_key = {random_secret_key()}",
        f"aws_session_token = {random_session_token()}",
    ]
    if managed_by_us:
        lines.append(f"x_security_token_expires = {expires}")
    return "\n".join(lines) + "\n"


def role_arn(profile: str) -> str:
    """The role ``process_support.write_config`` configures for ``profile``."""
    return f"arn:aws:iam::123456789012:role/{profile}"


def create_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file with mode 0600, as the AWS CLI creates the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


# -- secrets -------------------------------------------------------------------------------

_SECRET_VALUE = re.compile(
    r"^[ \t]*(?:aws_secret_access_key|aws_session_token)[ \t]*[=:][ \t]*(\S+)[ \t]*\r?$",
    re.MULTILINE,
)
_RUN = re.compile(r"[A-Za-z0-9/+=_-]+")


class SecretLedger:
    """Every secret credrefresh handled, and a scan of outputs for any of them.

    A hit is a whole secret or any piece of one at least ``WINDOW + STRIDE - 1`` characters long
    (a truncated or wrapped secret is still a leak): pieces of ``WINDOW`` characters starting
    every ``STRIDE`` characters are remembered, and every offset of the output is looked up.
    Hits are reported by channel and offset, never by value.
    """

    WINDOW = 20
    STRIDE = 8

    def __init__(self) -> None:
        self._windows: set[str] = set()
        self._short: set[str] = set()
        self._seen: set[str] = set()

    @property
    def count(self) -> int:
        """How many distinct secrets are remembered."""
        return len(self._seen)

    def add(self, value: str) -> None:
        """Remember one secret value."""
        value = value.strip()
        if len(value) < 8 or value in self._seen:  # too short to be a credential, or known
            return
        self._seen.add(value)
        long_runs = [run for run in _RUN.findall(value) if len(run) >= self.WINDOW]
        if not long_runs:
            self._short.add(value)
        for run in long_runs:
            starts = range(0, len(run) - self.WINDOW + 1, self.STRIDE)
            self._windows.update(run[i : i + self.WINDOW] for i in starts)
            self._windows.add(run[-self.WINDOW :])

    def add_text(self, text: str) -> int:
        """Remember every secret key and session token in credentials-file ``text``."""
        found = _SECRET_VALUE.findall(text)
        for value in found:
            self.add(value)
        return len(found)

    def add_file(self, path: str | Path) -> int:
        """Remember the secrets in a credentials file (or a temp file left by a crash)."""
        try:
            return self.add_text(Path(path).read_bytes().decode(errors="replace"))
        except FileNotFoundError:
            return 0

    def hits(self, channel: str, text: str) -> list[str]:
        """Where in ``text`` a secret appears, without the secret."""
        found = [
            f"{channel}: a short secret at offset {text.find(value)}"
            for value in self._short
            if value in text
        ]
        window = self.WINDOW
        for match in _RUN.finditer(text):
            run = match.group()
            if len(run) < window:
                continue
            for i in range(len(run) - window + 1):
                if run[i : i + window] in self._windows:
                    found.append(f"{channel}: part of a secret at offset {match.start() + i}")
                    break
        return found

    def assert_absent(self, outputs: Mapping[str, str], *, at_least: int = 1) -> None:
        """Fail when any output holds a secret; also when too few secrets were collected."""
        __tracebackhide__ = True  # pytest would print ``outputs``, secrets included
        assert self.count >= at_least, (
            f"only {self.count} secrets collected; the scan would prove little"
        )
        assert outputs, "nothing to scan"
        hits = [hit for channel, text in outputs.items() for hit in self.hits(channel, text)]
        assert not hits, hits


def safety_env(tmp_path: Path, ledger: SecretLedger | None = None, **extra: str) -> dict[str, str]:
    """``clean_env`` with a realistic source secret key (remembered by ``ledger``)."""
    source_secret = random_secret_key()
    if ledger is not None:
        ledger.add(source_secret)
    return clean_env(tmp_path, AWS_SECRET_ACCESS_KEY=source_secret, **extra)


def daemon_outputs(proc: Proc, name: str) -> dict[str, str]:
    """Everything a credrefresh process wrote: its stdout (JSON lines) and its stderr."""
    return {f"{name} stdout": "".join(proc.raw), f"{name} stderr": proc.stderr}


# -- sampling every version of the files ----------------------------------------------------


@dataclass(slots=True)
class Version:
    """One read of a file: when (wall clock), and its bytes."""

    at: datetime
    data: bytes


@dataclass(slots=True)
class Sampler:
    """Reads the credentials file (and the state file) after every change, in a thread.

    ``locked`` takes the writers' lock for each read, so writers that edit in place under the
    lock are never seen half-way.
    """

    credentials: Path
    state: Path | None = None
    locked: bool = False
    credential_versions: list[Version] = field(default_factory=list)
    state_versions: list[Version] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _watch: DirWatch | None = None

    def __enter__(self) -> Self:
        directories = {str(self.credentials.parent)}
        if self.state is not None:
            self.state.parent.mkdir(parents=True, exist_ok=True)
            directories.add(str(self.state.parent))
        self._watch = DirWatch(*sorted(directories))
        self._read_credentials()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._watch is not None:
            self._watch.close()
        self._read_credentials()
        self._read_state()

    def _read(self, path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def _read_credentials(self) -> None:
        if self.locked:
            fd = os.open(lock_path(str(self.credentials)), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                data = self._read(self.credentials)
            finally:
                os.close(fd)
        else:
            data = self._read(self.credentials)
        if data is not None:
            self.credential_versions.append(Version(datetime.now(UTC), data))

    def _read_state(self) -> None:
        if self.state is not None:
            data = self._read(self.state)
            if data is not None:
                self.state_versions.append(Version(datetime.now(UTC), data))

    def _run(self) -> None:
        assert self._watch is not None
        changed = IN_MOVED_TO | IN_CLOSE_WRITE
        while not self._stop.is_set():
            event = self._watch.wait(lambda e: bool(e.mask & changed), 0.1)
            if event is None:
                continue
            if event.name == self.credentials.name:
                self._read_credentials()
            elif self.state is not None and event.name == self.state.name:
                self._read_state()

    def newest(self) -> bytes:
        """The last credentials version read."""
        return self.credential_versions[-1].data


def check_versions(
    versions: Sequence[Version], profiles: Iterable[str], ledger: SecretLedger | None = None
) -> list[str]:
    """Problems over a sequence of credentials-file versions (only daemon writers expected).

    Every version parses; every managed section is complete; a managed profile whose expiry is
    still ahead is never removed, nor replaced by one that expires sooner.
    """
    problems: list[str] = []
    best: dict[str, datetime] = {}
    wanted = set(profiles)
    for index, version in enumerate(versions):
        text = version.data.decode(errors="replace")
        if ledger is not None:
            ledger.add_text(text)
        parsed = parse_text(text)
        if parsed is None:
            problems.append(f"version {index} does not parse")
            continue
        problems += [f"version {index}: {p}" for p in managed_problems(parsed)]
        mine = managed(parsed)
        for name, expires in best.items():
            if expires <= version.at:
                continue
            if name not in mine:
                problems.append(f"version {index}: valid profile {name} removed")
                continue
            now_expires = parse_expiry(mine[name]["x_security_token_expires"])
            if now_expires < expires:
                problems.append(f"version {index}: {name} replaced by credentials expiring sooner")
        for name in wanted & mine.keys():
            with contextlib.suppress(ValueError):
                best[name] = max(
                    best.get(name, datetime.min.replace(tzinfo=UTC)),
                    parse_expiry(mine[name]["x_security_token_expires"]),
                )
    return problems


def parse_text(text: str) -> dict[str, dict[str, str]] | None:
    """Parse credentials text as botocore would; ``None`` when it does not parse."""
    import configparser  # noqa: PLC0415 - botocore's parser, for text already in memory

    parser = configparser.RawConfigParser()
    try:
        parser.read_string(text)
    except configparser.Error:
        return None
    return {name: dict(parser.items(name)) for name in parser.sections()}


def event_time(event: Mapping[str, object]) -> datetime:
    """The ``timestamp`` of a JSON log event."""
    return datetime.fromisoformat(str(event["timestamp"]))


def logged_since(
    events: Iterable[Mapping[str, object]], name: str, moment: datetime
) -> list[Mapping[str, object]]:
    """Events called ``name`` logged at or after ``moment``.

    By timestamp, not by position: ``Proc.events`` only grows while a test waits, so an index
    taken earlier may already be behind events that were logged before it.
    """
    return [e for e in events if e["event"] == name and event_time(e) >= moment]


# -- the tests ---------------------------------------------------------------------------

FAST = {
    "backoff_initial": 0.2,
    "backoff_max": 1.0,
    "permanent_backoff_initial": 0.3,
    "permanent_backoff_max": 1.0,
    "write_delay": 0.1,
}


def test_the_ledger_finds_whole_and_partial_secrets():
    """The scanner reports a whole secret, a 27-character piece of one, and nothing else."""
    ledger = SecretLedger()
    token, key = random_session_token(), random_secret_key()
    ledger.add_text(f"[p]\naws_secret_access_key = {key}\naws_session_token={token}\n")
    ledger.add("short-source-secret")
    assert ledger.count == 3
    assert (
        ledger.hits("clean", json.dumps({"access_key_id": "ASIAEXAMPLE", "key": "[REDACTED]"}))
        == []
    )
    assert len(ledger.hits("whole", f'{{"x": "{key}"}}')) == 1
    assert len(ledger.hits("piece", f"wrapped line: {token[77:104]}\n")) == 1
    assert len(ledger.hits("short", "error: short-source-secret rejected")) == 1
    assert ledger.hits("nineteen", token[:19]) == []
    assert len(ledger.hits("tail", f"..{key[-20:]}")) == 1


def go_through_faults(proc: Proc, fake_sts: ThreadedFakeSTS, profiles: Sequence[str]) -> None:
    """Throttling and 500s, AccessDenied, ExpiredToken, hanging calls; then all fresh again."""
    phases = [
        (
            Faults(latency=0, lifetime=3, throttle_rate=0.5, error_rate=0.5),
            {"Throttling", "InternalFailure"},
        ),
        (Faults(latency=0, lifetime=3, deny_roles=[role_arn("denied")]), {"AccessDenied"}),
        (Faults(latency=0, lifetime=3, expired_token=True), {"ExpiredToken"}),
        (Faults(latency=0, lifetime=3, hang=True), {"Timeout"}),
    ]
    for faults, codes in phases:
        fake_sts.set_faults(faults)
        proc.wait_for(
            lambda events, codes=codes: (
                codes
                <= {e.get("error_code") for e in events if e["event"] == "role.refresh_failed"}
            )
        )
    fake_sts.set_faults(Faults(latency=0, lifetime=3))
    healed = datetime.now(UTC)
    proc.wait_for(
        lambda events: (
            {e["profile"] for e in logged_since(events, "role.refreshed", healed)} == set(profiles)
        )
    )


def test_once_and_run_at_debug_level_under_faults_never_output_a_secret(tmp_path, fake_sts):
    """At debug level, with failures of every kind, no output, state or metric holds a secret."""
    ledger = SecretLedger()
    creds = tmp_path / "aws" / "credentials"
    future = "2099-01-01T00:00:00Z"
    create_private(
        creds,
        (
            "# other tools' profiles, with secrets of their own\n"
            + credentials_section("default", managed_by_us=False, expires=future)
            + "\n"
            + credentials_section("sso-cache", managed_by_us=False, expires=future)
        ).encode(),
    )
    ledger.add_file(creds)
    profiles = ["alpha", "beta", "gamma", "denied"]
    config = write_config(
        tmp_path / "c.toml",
        creds,
        fake_sts.url,
        profiles,
        refresh=FAST,
        sts_max_attempts=1,
        sts_timeout=0.5,
        metrics_address="127.0.0.1:0",
    )
    state = tmp_path / "state.json"
    fake_sts.set_faults(Faults(latency=0, lifetime=3))
    env = safety_env(tmp_path, ledger)
    debug = ["--config", str(config), "--log-level", "debug", "--log-format", "json"]
    outputs: dict[str, str] = {}

    once = run_cli(["once", *debug], env)
    assert once.returncode == 0, once.stderr
    outputs |= {"once stdout": once.stdout, "once stderr": once.stderr}
    assert ledger.add_file(creds) == 4 + 2 * len(profiles)

    notify = NotifySocket(tmp_path / "notify.sock")
    proc = Proc(["run", *debug], {**env, "NOTIFY_SOCKET": notify.path})
    try:
        with Sampler(creds, state) as sampler:
            notify.wait_for(lambda m: m == "READY=1")
            # The file from `once` is fresh, so `run` starts warm; its own first round of
            # secrets comes with the first scheduled refreshes.
            proc.wait_for(
                lambda _: {e["profile"] for e in proc.named("role.refreshed")} >= set(profiles)
            )
            proc.wait_count("metrics.listening", 1)
            address = proc.named("metrics.listening")[0]["address"]
            go_through_faults(proc, fake_sts, profiles)
            with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
                outputs["metrics"] = response.read().decode()
            proc.signal(signal.SIGTERM)
            assert proc.wait_exit(timeout=15) == 0
    finally:
        proc.kill()
        notify.close()
    status = run_cli(["status", "--json", "--config", str(config)], env)
    outputs |= daemon_outputs(proc, "run")
    outputs |= {"status stdout": status.stdout, "status stderr": status.stderr}
    outputs["notify"] = "\n".join(notify.messages)
    outputs |= {f"state v{i}": v.data.decode() for i, v in enumerate(sampler.state_versions)}
    for lock in tmp_path.joinpath("aws").glob("credentials.*"):
        outputs[lock.name] = lock.read_text(errors="replace")

    assert check_versions(sampler.credential_versions, profiles, ledger) == []
    assert {e["error_code"] for e in proc.named("role.refresh_failed")} >= {
        "Throttling",
        "InternalFailure",
        "AccessDenied",
        "ExpiredToken",
        "Timeout",
    }
    assert sampler.state_versions
    assert state.stat().st_mode & 0o777 == 0o600
    assert "credrefresh_refresh_failures_total" in outputs["metrics"]
    # The scan has material: access key ids (not secret) are in the logs, secrets are not.
    last = parse_credentials(creds)["alpha"]["aws_access_key_id"]
    assert last in outputs["run stdout"]
    ledger.assert_absent(outputs, at_least=4 + 2 * len(profiles) * 3)
    record_figures(
        "secrets.debug_run",
        secrets_scanned=ledger.count,
        channels=len(outputs),
        credential_versions=len(sampler.credential_versions),
        hits=0,
    )


def mispasted_file(tmp_path: Path, ledger: SecretLedger, mispaste: str) -> tuple[Path, bytes]:
    """A credentials file that does not parse because a secret was pasted badly."""
    key, token = random_secret_key(), random_session_token()
    ledger.add(key)
    ledger.add(token)
    if mispaste == "secret-key-alone":  # the value landed on a line of its own
        body = f"[user]\naws_access_key_id = AKIAUSEREXAMPLE00000\naws_secret_access_key =\n{key}\n"
    else:  # a token pasted from a terminal that wrapped it at 76 columns
        wrapped = "\n".join(token[i : i + 76] for i in range(0, len(token), 76))
        body = f"[user]\naws_access_key_id = AKIAUSEREXAMPLE00000\naws_session_token = {wrapped}\n"
    creds = tmp_path / "credentials"
    create_private(creds, body.encode())
    return creds, body.encode()


@pytest.mark.parametrize("mispaste", ["secret-key-alone", "wrapped-token"])
def test_an_unparseable_file_is_logged_without_its_secrets(tmp_path, fake_sts, mispaste):
    """A file that does not parse is left alone and named in the log, with none of its secrets."""
    ledger = SecretLedger()
    creds, body = mispasted_file(tmp_path, ledger, mispaste)
    config = write_config(tmp_path / "c.toml", creds, fake_sts.url, ["p"])
    once = run_cli(
        ["once", "--config", str(config), "--log-format", "json"], safety_env(tmp_path, ledger)
    )
    assert once.returncode == 74
    assert creds.read_bytes() == body
    assert '"credentials_file.error"' in once.stdout
    ledger.assert_absent({"once stdout": once.stdout, "once stderr": once.stderr}, at_least=3)


@pytest.mark.parametrize("mispaste", ["secret-key-alone", "wrapped-token"])
def test_status_reports_an_unparseable_file_without_its_secrets(tmp_path, fake_sts, mispaste):
    """``status`` on a file that does not parse says so, with none of the file's secrets."""
    ledger = SecretLedger()
    creds, _ = mispasted_file(tmp_path, ledger, mispaste)
    config = write_config(tmp_path / "c.toml", creds, fake_sts.url, ["p"])
    status = run_cli(["status", "--config", str(config)], safety_env(tmp_path, ledger))
    assert status.returncode == 2
    assert "does not parse" in status.stderr
    ledger.assert_absent(
        {"status stdout": status.stdout, "status stderr": status.stderr}, at_least=3
    )
