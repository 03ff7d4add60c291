"""Proof of safety, concurrent writers: nobody who takes the lock loses an update.

Two writers share the credentials file with credrefresh in the first test: ``run`` keeps
four profiles fresh (rewriting the file about twice a second), ``once`` runs again and again
beside it, and two editor processes take the writers' lock (``flock`` on
``credrefresh.credfile.lock_path(path)``) to bump a counter in their own unmanaged profile, one
replacing the file by rename, one rewriting it in place. Every editor write happens either
right after credrefresh starts a write (so the two contend for the lock) or after a short
pause. At the end each counter equals its number of writes, and every read taken under the
lock along the way parsed, with every managed profile complete.

The second test hammers another profile with what ``aws configure set`` does: the AWS CLI takes
no lock and rewrites the file in place (awscli's ``ConfigFileWriter``: read the whole file,
change a line, ``open(path, "w")``, write), either at random moments or the moment credrefresh
starts a write (the worst case). It uses awscli's own ``ConfigFileWriter`` when awscli is
importable, an emulation of it otherwise, and the real ``aws`` command with
``CREDREFRESH_SOAK_AWS=1``. It measures (and reports, without asserting) the AWS CLI's lost
updates, the daemon writes it undid and any read that lacked the other profiles, and asserts what
must hold regardless: whenever the AWS CLI reads the file it parses, and once every profile has
been refreshed after the AWS CLI stopped, all of the daemon's profiles are there and valid.

The third: a file the AWS CLI has truncated but not yet rewritten never becomes the base of
credrefresh's write, whether the CLI is descheduled for 0.03 s (it holds) or 0.15 s (a strict
xfail: credrefresh only waits 0.1 s for the file to settle).

Run as a script, this module is the helper processes: ``edit``, ``awscli`` and ``stall``.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

import pytest

from credrefresh.credfile import lock_path
from process_support import NotifySocket, Proc, run_cli, write_config
from support.fakests import Faults
from test_safety_secrets import (
    IN_CREATE,
    IN_MOVED_TO,
    DirWatch,
    Sampler,
    SecretLedger,
    create_private,
    credentials_section,
    daemon_outputs,
    logged_since,
    managed,
    managed_problems,
    parse_credentials,
    parse_expiry,
    parse_text,
    record_figures,
    safety_env,
    scaled,
    soak_timeout,
    unmanaged_sections,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(soak_timeout())]

PROFILES = ["alpha", "beta", "gamma", "delta"]
REFRESH = {"backoff_initial": 0.2, "backoff_max": 1.0, "write_delay": 0.05}
PACE = 0.1  # longest pause between two writes of a helper when credrefresh is not writing
OUR_TEMP = ".credentials.credrefresh-"
HERE = Path(__file__).resolve()


# -- the helper processes ---------------------------------------------------------------------


def pause(watch: DirWatch, rng: random.Random) -> None:
    """Wait until credrefresh creates a temp file (a write has begun) or a random short pause."""
    watch.drain()
    watch.wait(
        lambda e: bool(e.mask & IN_CREATE) and e.name.startswith(OUR_TEMP),
        rng.uniform(0, PACE),
    )


def bump(text: str, key: str) -> str:
    """``text`` with ``key = N`` replaced by ``key = N+1``."""
    pattern = re.compile(rf"^{re.escape(key)} = (\d+)$", re.MULTILINE)
    match = pattern.search(text)
    if match is None:
        raise SystemExit(f"{key} not found: the editor's profile was lost")
    return pattern.sub(f"{key} = {int(match.group(1)) + 1}", text, count=1)


def edit(path: str, key: str, count: int, mode: str) -> dict[str, object]:
    """Bump ``key`` ``count`` times under the writers' lock, by rename or in place."""
    rng = random.Random()  # noqa: S311 - pacing, not secrets
    watch = DirWatch(os.path.dirname(path))
    for _ in range(count):
        pause(watch, rng)
        fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with open(path, encoding="utf-8") as handle:
                text = bump(handle.read(), key)
            if mode == "rename":
                temp = f"{os.path.dirname(path)}/.credentials.editor-{os.getpid()}.tmp"
                with open(temp, "w", encoding="utf-8") as handle:
                    handle.write(text)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.chmod(temp, 0o600)
                os.replace(temp, path)
            else:
                with open(path, "w", encoding="utf-8") as handle:
                    handle.write(text)
        finally:
            os.close(fd)
    watch.close()
    return {"writes": count, "mode": mode}


def cli_writer(tool: str, path: str) -> tuple[str, object]:
    """How to run ``aws configure set aws_access_key_id V --profile cli``, and what that is."""
    if tool == "aws":
        return "aws configure set (the AWS CLI itself)", None
    if tool == "awscli-writer":
        from awscli.customizations.configure.writer import (  # noqa: PLC0415
            ConfigFileWriter,
        )

        return "awscli's ConfigFileWriter, in-process", ConfigFileWriter()
    return "an emulation of awscli's ConfigFileWriter", None


def emulated_set(path: str, section: str, key: str, value: str) -> None:
    """What awscli's ConfigFileWriter does to set an existing key: no lock, rewrite in place."""
    with open(path, encoding="utf-8") as handle:
        contents = handle.readlines()
    start = contents.index(f"[{section}]\n")
    for index in range(start + 1, len(contents)):
        if contents[index].startswith("["):
            contents.insert(index, f"{key} = {value}\n")
            break
        if contents[index].split("=")[0].strip() == key:
            contents[index] = f"{key} = {value}\n"
            break
    else:
        contents.append(f"{key} = {value}\n")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("".join(contents))


def hammer(
    path: str, count: int, tool: str, timing: str, profiles: Sequence[str]
) -> dict[str, object]:
    """Set ``[cli] aws_access_key_id`` ``count`` times as the AWS CLI does; record every read.

    ``timing`` is ``synced`` (start right when credrefresh begins a write: the worst case) or
    ``random`` (pauses that ignore credrefresh). Update ``n`` is lost when, just before update
    ``n + 1``, the file no longer holds it. The AWS CLI is the only writer that edits in place,
    so every read here sees the file at rest.
    """
    rng = random.Random()  # noqa: S311 - pacing, not secrets
    watch = DirWatch(os.path.dirname(path))
    description, writer = cli_writer(tool, path)
    env = {**os.environ, "AWS_SHARED_CREDENTIALS_FILE": path, "AWS_CONFIG_FILE": os.devnull}
    with open(path, "rb") as handle:
        default = unmanaged_sections(handle.read())[:1]
    lost = unparseable = incomplete = default_gone = 0
    reads: list[tuple[float, dict[str, str]]] = []
    previous = None
    for n in range(1, count + 1):
        if timing == "synced":
            pause(watch, rng)
        else:
            watch.wait(lambda _: False, rng.uniform(0, PACE))
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        at = time.time()
        parsed = parse_text(text)
        if parsed is None:
            unparseable += 1
        else:
            mine = managed(parsed)
            incomplete += bool(managed_problems(parsed)) or set(mine) != set(profiles)
            reads.append(
                (at, {name: section["aws_access_key_id"] for name, section in mine.items()})
            )
            if previous is not None and parsed.get("cli", {}).get("aws_access_key_id") != previous:
                lost += 1
        default_gone += unmanaged_sections(text.encode())[:1] != default
        value = f"AKIACLI{n:013d}"
        if tool == "aws":
            subprocess.run(
                ["aws", "configure", "set", "aws_access_key_id", value, "--profile", "cli"],
                env=env,
                check=True,
                capture_output=True,
            )
        elif writer is not None:
            writer.update_config({"__section__": "cli", "aws_access_key_id": value}, path)  # type: ignore[attr-defined]
        else:
            emulated_set(path, "cli", "aws_access_key_id", value)
        previous = value
    watch.close()
    return {
        "tool": description,
        "timing": timing,
        "updates": count,
        "lost": lost,
        "unparseable_reads": unparseable,
        "reads_without_every_managed_profile": incomplete,
        "reads_without_the_default_profile": default_gone,
        "reads": reads,
        "last": previous,
    }


def stall(path: str, seconds: float) -> dict[str, object]:
    """What a descheduled AWS CLI does: truncate the file (``open(path, "w")``), lose the CPU
    for ``seconds``, then write what it read. Reports whether anyone renamed a file over it
    meanwhile."""
    watch = DirWatch(os.path.dirname(path))
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    with open(path, "w", encoding="utf-8") as handle:
        sys.stdout.write("truncated\n")
        sys.stdout.flush()
        time.sleep(seconds)  # the scenario itself (the process is off the CPU), not a wait
        renamed = [e for e in watch.drain() if e.mask & IN_MOVED_TO and e.name == "credentials"]
        handle.write(text)
    watch.close()
    return {"renamed_meanwhile": bool(renamed)}


def main(argv: Sequence[str] | None = None) -> int:
    """``edit``, ``awscli`` or ``stall`` (see ``--help``); a JSON summary on stdout."""
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    editor = commands.add_parser("edit")
    editor.add_argument("path")
    editor.add_argument("key")
    editor.add_argument("count", type=int)
    editor.add_argument("mode", choices=("rename", "inplace"))
    cli = commands.add_parser("awscli")
    cli.add_argument("path")
    cli.add_argument("count", type=int)
    cli.add_argument("tool", choices=("aws", "awscli-writer", "emulated"))
    cli.add_argument("timing", choices=("synced", "random"))
    cli.add_argument("profiles", nargs="+")
    stalled = commands.add_parser("stall")
    stalled.add_argument("path")
    stalled.add_argument("seconds", type=float)
    args = parser.parse_args(argv)
    if args.command == "edit":
        result = edit(args.path, args.key, args.count, args.mode)
    elif args.command == "awscli":
        result = hammer(args.path, args.count, args.tool, args.timing, args.profiles)
    else:
        result = stall(args.path, args.seconds)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


def helper(*args: str) -> subprocess.Popen[str]:
    """Start this module as a helper process."""
    return subprocess.Popen(
        [sys.executable, str(HERE), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(process: subprocess.Popen[str], timeout: float) -> dict[str, object]:
    """The helper's JSON summary, once it exits 0."""
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    return json.loads(out)


def best_cli_tool() -> str:
    """The real ``aws`` when it works, else awscli's writer in-process, else the emulation."""
    if os.environ.get("CREDREFRESH_SOAK_AWS") == "1" and shutil.which("aws"):
        with tempfile.TemporaryDirectory() as scratch:
            probe = Path(scratch) / "credentials"
            probe.write_text("[cli]\naws_access_key_id = X\n")
            env = {**os.environ, "AWS_SHARED_CREDENTIALS_FILE": str(probe)}
            done = subprocess.run(
                ["aws", "configure", "set", "aws_access_key_id", "Y", "--profile", "cli"],
                env=env,
                capture_output=True,
                check=False,
                timeout=60,
            )
            if done.returncode == 0 and "aws_access_key_id = Y" in probe.read_text():
                return "aws"
    try:
        import awscli.customizations.configure.writer  # noqa: F401, PLC0415
    except ImportError:
        return "emulated"
    return "awscli-writer"


# -- the tests --------------------------------------------------------------------------------


class OnceLoop:
    """``credrefresh once`` again and again in a thread until stopped."""

    def __init__(self, config: Path, env: dict[str, str]) -> None:
        self.config = config
        self.env = env
        self.results: list[subprocess.CompletedProcess[str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="once-loop", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            args = ["once", "--config", str(self.config), "--log-format", "json"]
            self.results.append(run_cli(args, self.env))

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(120)


def daemon_writes(proc: Proc) -> int:
    return sum(1 for e in proc.named("credentials_file.written") if e["changed"])


def start_daemon(tmp_path: Path, config: Path, env: dict[str, str]) -> tuple[Proc, NotifySocket]:
    notify = NotifySocket(tmp_path / "notify.sock")
    proc = Proc(["run", "--config", str(config)], {**env, "NOTIFY_SOCKET": notify.path})
    notify.wait_for(lambda m: m == "READY=1")
    return proc, notify


def test_locked_editors_beside_once_and_run_lose_no_update(tmp_path, fake_sts):
    """Editors that take the lock never lose a write while once and run rewrite the file."""
    fake_sts.set_faults(Faults(latency=0, lifetime=1))
    ledger = SecretLedger()
    creds = tmp_path / "aws" / "credentials"
    create_private(
        creds,
        (
            credentials_section("default", managed_by_us=False, expires="")
            + "\n[editor-a]\neditor_a_writes = 0\n\n[editor-b]\neditor_b_writes = 0\n"
        ).encode(),
    )
    ledger.add_file(creds)
    config = write_config(tmp_path / "c.toml", creds, fake_sts.url, PROFILES, refresh=REFRESH)
    env = safety_env(tmp_path, ledger)
    total = scaled(1000)
    counts = {"a": total // 2, "b": total - total // 2}
    proc, notify = start_daemon(tmp_path, config, env)
    try:
        with Sampler(creds, locked=True) as sampler, OnceLoop(config, env) as once:
            editors = [
                helper("edit", str(creds), "editor_a_writes", str(counts["a"]), "rename"),
                helper("edit", str(creds), "editor_b_writes", str(counts["b"]), "inplace"),
            ]
            summaries = [finished(e, timeout=30 + total * PACE) for e in editors]
            once_runs = len(once.results) + 1  # the one still running is waited for on exit
        assert proc.popen.poll() is None
        proc.signal(signal.SIGTERM)
        assert proc.wait_exit(timeout=15) == 0
    finally:
        proc.kill()
        notify.close()

    final = parse_credentials(creds)
    assert final["editor-a"]["editor_a_writes"] == str(counts["a"])
    assert final["editor-b"]["editor_b_writes"] == str(counts["b"])
    assert [s["writes"] for s in summaries] == [counts["a"], counts["b"]]
    assert all(r.returncode == 0 for r in once.results), [r.stderr for r in once.results]
    problems = []
    for index, version in enumerate(sampler.credential_versions):
        ledger.add_text(version.data.decode())
        parsed = parse_text(version.data.decode())
        if parsed is None:
            problems.append(f"read {index} under the lock did not parse")
            continue
        problems += [f"read {index}: {p}" for p in managed_problems(parsed)]
        if index > 0 and set(managed(parsed)) != set(PROFILES):
            problems.append(f"read {index}: managed profiles {sorted(managed(parsed))}")
    assert problems == []
    assert managed_problems(final) == []
    assert set(managed(final)) == set(PROFILES)
    outputs = daemon_outputs(proc, "run")
    for index, result in enumerate(once.results):
        outputs |= {f"once {index} stdout": result.stdout, f"once {index} stderr": result.stderr}
    ledger.assert_absent(outputs, at_least=2 * len(PROFILES) * 3)
    assert not proc.named("credentials_file.error")
    record_figures(
        "concurrency.locked_editors",
        editor_writes=total,
        lost_updates=0,
        once_runs=once_runs,
        daemon_writes=daemon_writes(proc),
        reads_under_lock=len(sampler.credential_versions),
        secrets_scanned=ledger.count,
        secret_hits=0,
    )


def reverted(summary: dict[str, object], proc: Proc) -> int:
    """Daemon writes the AWS CLI undid: a read after the daemon logged a profile's new key
    that shows an older key of that profile (the CLI wrote back what it had read before)."""
    history: dict[str, list[tuple[datetime, str]]] = {}
    for event in proc.named("role.refreshed"):
        history.setdefault(event["profile"], []).append(
            (parse_expiry(event["timestamp"]), event["access_key_id"])
        )
    undone: set[tuple[str, str]] = set()
    for at, keys in summary["reads"]:  # type: ignore[attr-defined]
        moment = datetime.fromtimestamp(at, UTC)
        for name, key in keys.items():
            written = [k for t, k in history.get(name, []) if t < moment]
            if written and key != written[-1] and key in written:
                undone.add((name, written[-1]))
    return len(undone)


def run_aws_cli_beside_run(
    tmp_path: Path, sts_url: str, tool: str, timing: str, updates: int
) -> dict[str, object]:
    """The daemon and an AWS CLI hammer on one file; the checks that hold; the figures."""
    ledger = SecretLedger()
    creds = tmp_path / "aws" / "credentials"
    create_private(
        creds,
        (
            credentials_section("default", managed_by_us=False, expires="")
            + "\n[cli]\naws_access_key_id = AKIACLI0000000000000\n\n"
        ).encode(),
    )
    ledger.add_file(creds)
    config = write_config(tmp_path / "c.toml", creds, sts_url, PROFILES, refresh=REFRESH)
    env = safety_env(tmp_path, ledger)
    proc, notify = start_daemon(tmp_path, config, env)
    try:
        summary = finished(
            helper("awscli", str(creds), str(updates), tool, timing, *PROFILES),
            timeout=60 + updates * (PACE + (1.5 if tool == "aws" else 0.05)),
        )
        hammer_done = datetime.now(UTC)
        # Once every profile has been refreshed after the AWS CLI stopped, all are there.
        proc.wait_for(
            lambda events: (
                {e["profile"] for e in logged_since(events, "role.refreshed", hammer_done)}
                == set(PROFILES)
            ),
            timeout=30,
        )
        final = parse_credentials(creds)
        assert proc.popen.poll() is None
        proc.signal(signal.SIGTERM)
        assert proc.wait_exit(timeout=15) == 0
    finally:
        proc.kill()
        notify.close()
    assert summary["unparseable_reads"] == 0  # at rest, the file always parses
    assert managed_problems(final) == []
    assert set(managed(final)) == set(PROFILES)
    # Nothing from before the AWS CLI stopped survives in our profiles: each holds credentials
    # the daemon wrote after that. (Not "unexpired": with 1 s lifetimes, a write that had to
    # wait up to 2 s for the file to settle can land credentials that expire as it does.)
    written_after = {
        (e["profile"], e["access_key_id"])
        for e in logged_since(proc.events, "role.refreshed", hammer_done)
    }
    for name in PROFILES:
        assert (name, final[name]["aws_access_key_id"]) in written_after
    ledger.add_file(creds)
    ledger.assert_absent(daemon_outputs(proc, "run"), at_least=2 * len(PROFILES))
    lost = int(summary["lost"])  # type: ignore[call-overload]
    errors = Counter(e["error"].rsplit(": ", 1)[-1] for e in proc.named("credentials_file.error"))
    return {
        "tool": summary["tool"],
        "timing": timing,
        "updates": updates,
        "lost": lost,
        "loss_rate": round(lost / updates, 4),
        "final_value_kept": final.get("cli", {}).get("aws_access_key_id") == summary["last"],
        "reads_without_every_managed_profile": summary["reads_without_every_managed_profile"],
        "reads_without_the_default_profile": summary["reads_without_the_default_profile"],
        "default_profile_at_the_end": "default" in final,
        "daemon_writes": daemon_writes(proc),
        "daemon_writes_undone": reverted(summary, proc),
        "daemon_write_errors": dict(errors),
        "secret_hits": 0,
    }


@pytest.mark.parametrize("timing", ["synced", "random"])
def test_aws_cli_without_a_lock_beside_run(tmp_path, fake_sts, timing):
    """The AWS CLI (no lock) beside run: the file parses whenever it reads it, the daemon's
    profiles are all back once each is refreshed, and the losses are measured."""
    fake_sts.set_faults(Faults(latency=0, lifetime=1))
    tool = best_cli_tool()
    updates = scaled(300) if tool == "aws" else scaled(1000)
    figures = run_aws_cli_beside_run(tmp_path, fake_sts.url, tool, timing, updates)
    record_figures(f"concurrency.aws_cli.{timing}", **figures)


@pytest.mark.parametrize(
    "stall_s",
    [
        0.03,  # descheduled for a scheduler slice or two
        0.15,  # longer than SETTLE: the empty file must stay empty before it is believed
    ],
)
def test_a_file_truncated_by_a_writer_without_the_lock_is_not_written_over(
    tmp_path, fake_sts, stall_s
):
    """While another program has truncated the file and not yet rewritten it (a descheduled
    AWS CLI), once neither reads the empty file as the truth nor renames over it."""
    creds = tmp_path / "aws" / "credentials"
    create_private(creds, credentials_section("default", managed_by_us=False, expires="").encode())
    config = write_config(tmp_path / "c.toml", creds, fake_sts.url, ["alpha"])
    fake_sts.set_faults(Faults(latency=0, hang=True))
    once = Proc(["once", "--config", str(config)], safety_env(tmp_path))
    stalled = None
    try:
        fake_sts.wait_for_stats(lambda s: s.hung >= 1, timeout=30)
        stalled = helper("stall", str(creds), str(stall_s))
        assert stalled.stdout is not None
        ready, _, _ = select.select([stalled.stdout], [], [], 30)
        assert ready
        assert stalled.stdout.readline() == "truncated\n"
        fake_sts.set_faults(Faults(latency=0))  # once gets its credentials now, mid-truncation
        summary = finished(stalled, timeout=30)
        assert once.wait_exit(timeout=30) == 0
    finally:
        once.kill()
        if stalled is not None and stalled.poll() is None:
            stalled.kill()
            stalled.communicate()
    assert summary == {"renamed_meanwhile": False}
    parsed = parse_credentials(creds)
    assert "alpha" in managed(parsed)
    assert "default" in set(parsed)


if __name__ == "__main__":
    sys.exit(main())
