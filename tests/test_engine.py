"""The daemon loop driven in-process: a scripted STS client, real files, a jumpable clock."""

from __future__ import annotations

import socket
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from botocore.configloader import raw_config_parse

from credrefresh.config import Config, Role
from credrefresh.engine import Daemon
from credrefresh.errors import ConfigError, RefreshFailed
from credrefresh.systemd import Notifier
from engine_support import (
    SECRET_PREFIX,
    TOKEN_PREFIX,
    JumpClock,
    Recorder,
    ScriptedSts,
    make_config,
)

pytestmark = pytest.mark.anyio

THROTTLED = RefreshFailed("Throttling", "Rate exceeded", transient=True)
DENIED = RefreshFailed("AccessDenied", "not authorized to perform sts:AssumeRole", transient=False)


def build(
    config: Config, sts: ScriptedSts, clock: JumpClock, **kwargs: Any
) -> tuple[Daemon, Recorder]:
    log = Recorder()
    kwargs.setdefault("start_spread", 0.0)
    daemon = Daemon(config, sts, log=log, clock=clock, handle_signals=False, slice_s=0.2, **kwargs)
    return daemon, log


def read(config: Config) -> dict[str, dict[str, str]]:
    return raw_config_parse(config.credentials_file)


def no_secrets(log: Recorder) -> None:
    text = repr(log.events)
    assert SECRET_PREFIX not in text
    assert TOKEN_PREFIX not in text


async def test_first_round_is_one_write_then_ready(tmp_path):
    """Every role is assumed and written in a single file write before READY."""
    clock = JumpClock()
    config = make_config(tmp_path, [f"p{i}" for i in range(20)])
    sts = ScriptedSts(clock, lifetime=3600)
    daemon, log = build(config, sts, clock)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        assert len(log.named("credentials_file.written")) == 1
        assert log.named("credentials_file.written")[0]["profiles"] == 20
        assert len(log.named("role.refreshed")) == 20
        assert log.named("daemon.ready")[0]["status"].startswith("20 fresh, 0 failing")
        daemon.stop()
    profiles = read(config)
    assert sorted(profiles) == sorted(f"p{i}" for i in range(20))
    assert [e["event"] for e in log.events][-1] == "daemon.stopped"
    no_secrets(log)


async def test_refreshed_event_fields(tmp_path):
    """role.refreshed carries the audit fields, the next refresh time, and no secret."""
    clock = JumpClock()
    config = make_config(tmp_path, ["only"])
    sts = ScriptedSts(clock, lifetime=3600)
    daemon, log = build(config, sts, clock, rng=lambda: 0.0)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        daemon.stop()
    event = log.named("role.refreshed")[0]
    assert set(event) == {
        "event",
        "log_level",
        "profile",
        "role_arn",
        "session_name",
        "assumed_role_arn",
        "access_key_id",
        "expiration",
        "duration_ms",
        "next_refresh_at",
    }
    assert event["profile"] == "only"
    assert event["access_key_id"] == "ASIA0000000000000000"
    assert event["assumed_role_arn"] == "arn:aws:sts::123456789012:assumed-role/only/s-only"
    assert event["expiration"].endswith("Z")
    assert event["next_refresh_at"] < event["expiration"]
    no_secrets(log)


async def test_refreshes_before_expiry_repeatedly(tmp_path):
    """With one-second credentials, each profile is refreshed again and again before expiry."""
    clock = JumpClock()
    config = make_config(tmp_path, ["a", "b", "c"])
    sts = ScriptedSts(clock, lifetime=1.0)
    daemon, log = build(config, sts, clock)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        await log.wait_count("role.refreshed", 12, timeout=10)
        daemon.stop()
    assert not log.named("role.expired")
    assert not log.named("role.refresh_failed")
    written = log.named("credentials_file.written")
    assert len(written) < len(log.named("role.refreshed"))  # writes were shared


async def test_transient_failure_backs_off_then_recovers(tmp_path):
    """Throttling is logged with attempt and retry_at, retried with backoff, then recovers."""
    clock = JumpClock()
    config = make_config(tmp_path, ["t"])
    sts = ScriptedSts(clock, lifetime=3600)
    sts.queued["t"] = [THROTTLED, THROTTLED, THROTTLED]
    daemon, log = build(config, sts, clock)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        await log.wait_count("role.refreshed", 1)
        daemon.stop()
    failures = log.named("role.refresh_failed")
    assert [f["attempt"] for f in failures] == [1, 2, 3]
    assert all(f["error_code"] == "Throttling" and f["transient"] is True for f in failures)
    assert set(failures[0]) == {
        "event",
        "log_level",
        "profile",
        "role_arn",
        "session_name",
        "error_code",
        "error",
        "transient",
        "attempt",
        "retry_at",
    }
    assert sts.calls == ["t"] * 4
    assert "t" in read(config)


async def test_permanent_failure_keeps_reporting_and_others_refresh(tmp_path):
    """AccessDenied for one role never stops the daemon; the others stay fresh."""
    clock = JumpClock()
    config = make_config(tmp_path, ["ok", "denied"])
    sts = ScriptedSts(clock, lifetime=1.0)
    sts.always["denied"] = DENIED
    daemon, log = build(config, sts, clock)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        await log.wait_for(
            lambda _: (
                len(log.named("role.refresh_failed")) >= 3 and len(log.named("role.refreshed")) >= 3
            )
        )
        daemon.stop()
    assert {f["profile"] for f in log.named("role.refresh_failed")} == {"denied"}
    assert all(f["transient"] is False for f in log.named("role.refresh_failed"))
    assert "denied" not in read(config)


async def test_expiry_logged_once_and_last_good_credentials_kept(tmp_path):
    """While refreshes fail, the last good credentials stay until expiry; role.expired is once."""
    clock = JumpClock()
    config = make_config(tmp_path, ["x"])
    sts = ScriptedSts(clock, lifetime=0.6)
    daemon, log = build(config, sts, clock)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        first = read(config)["x"]["aws_access_key_id"]
        sts.always["x"] = THROTTLED
        await log.wait_count("role.expired", 1)
        # Keep going a little: further failures must not repeat role.expired.
        await log.wait_count("role.refresh_failed", len(log.named("role.refresh_failed")) + 3)
        daemon.stop()
    assert len(log.named("role.expired")) == 1
    assert log.named("role.expired")[0]["last_error_code"] == "Throttling"
    assert read(config)["x"]["aws_access_key_id"] == first
    # No retry was ever scheduled past the expiry of the credentials still in the file.
    expiry = read(config)["x"]["x_security_token_expires"]
    expired_at = log.events.index(log.named("role.expired")[0])
    before = [e for e in log.events[:expired_at] if e["event"] == "role.refresh_failed"]
    assert before
    assert all(f["retry_at"] <= expiry for f in before)


async def test_clock_jump_triggers_overdue_refresh(tmp_path):
    """A wall-clock jump of an hour (a suspend) refreshes everything overdue at once."""
    clock = JumpClock()
    config = make_config(tmp_path, [f"p{i}" for i in range(5)])
    sts = ScriptedSts(clock, lifetime=3600)
    daemon, log = build(config, sts, clock)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        assert len(log.named("role.refreshed")) == 5
        clock.offset = timedelta(hours=1)
        # No poke: the scheduler's bounded sleep slice must notice the jump by itself.
        await log.wait_count("role.refreshed", 10, timeout=5)
        daemon.stop()
    assert sts.calls.count("p0") == 2


async def test_conflict_left_untouched_and_others_written(tmp_path):
    """A configured profile that exists without the marker is left byte-identical."""
    clock = JumpClock()
    config = make_config(tmp_path, ["mine", "theirs"])
    path = tmp_path / "aws" / "credentials"
    path.parent.mkdir()
    original = b"[theirs]\naws_access_key_id = AKIAUSER\naws_secret_access_key = keep\n"
    path.write_bytes(original)
    sts = ScriptedSts(clock, lifetime=3600)
    daemon, log = build(config, sts, clock)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        daemon.stop()
    assert path.read_bytes().startswith(original)
    assert "mine" in read(config)
    conflict = log.named("profile.conflict")[0]
    assert conflict["profile"] == "theirs"
    assert conflict["log_level"] == "error"


async def test_reload_adds_removes_and_changes_roles(tmp_path):
    """A reload assumes new roles, deletes removed roles' profiles and refreshes changed ones."""
    clock = JumpClock()
    config = make_config(tmp_path, ["keep", "drop", "change"])
    new_roles = (
        config.roles[0],
        replace(config.roles[2], role_arn="arn:aws:iam::123456789012:role/changed"),
        Role("added", "arn:aws:iam::123456789012:role/added", "s-added"),
    )
    reloaded = replace(config, roles=new_roles)
    sts = ScriptedSts(clock, lifetime=3600)
    daemon, log = build(config, sts, clock, loader=lambda _path: reloaded)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        assert await daemon.reload()
        await log.wait_count("profile.removed", 1)
        await log.wait_for(lambda _: "added" in read(config))
        daemon.stop()
    profiles = read(config)
    assert sorted(profiles) == ["added", "change", "keep"]
    assert profiles["change"]["credrefresh_role_arn"] == "arn:aws:iam::123456789012:role/changed"
    event = log.named("config.reloaded")[0]
    assert (event["added"], event["removed"], event["changed"]) == (["added"], ["drop"], ["change"])
    assert sts.calls.count("keep") == 1


async def test_invalid_reload_rejected_and_old_config_kept(tmp_path):
    """An invalid new config is rejected with config.rejected; the old one keeps running."""
    clock = JumpClock()
    config = make_config(tmp_path, ["a"])

    def broken(path: str) -> Config:
        raise ConfigError(path, [f"{path}: roles[0].role_arn: expected an IAM role ARN"])

    sts = ScriptedSts(clock, lifetime=1.0)
    daemon, log = build(config, sts, clock, loader=broken)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        assert not await daemon.reload()
        await log.wait_count("role.refreshed", 3)
        daemon.stop()
    rejected = log.named("config.rejected")[0]
    assert rejected["errors"] == [f"{config.path}: roles[0].role_arn: expected an IAM role ARN"]
    assert daemon.config is config


async def test_notify_ready_status_watchdog_reload_stopping(tmp_path):
    """READY, STATUS, WATCHDOG, RELOADING and STOPPING reach a real datagram socket."""
    address = str(tmp_path / "notify.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(address)
    receiver.settimeout(5)
    clock = JumpClock()
    config = make_config(tmp_path, ["a", "b"])
    sts = ScriptedSts(clock, lifetime=3600)
    notifier = Notifier({"NOTIFY_SOCKET": address})
    daemon, log = build(
        config, sts, clock, notifier=notifier, watchdog=0.1, loader=lambda _p: config
    )
    messages: list[str] = []
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(daemon.run)
            await daemon.reload()
            # The watchdog is pinged from the scheduler loop every half interval.
            with anyio.fail_after(5):
                while sum("WATCHDOG=1" in m for m in messages) < 3:
                    await anyio.wait_readable(receiver)
                    messages.append(receiver.recv(4096).decode())
            daemon.stop()
        receiver.setblocking(False)
        while True:
            try:
                messages.append(receiver.recv(4096).decode())
            except BlockingIOError:
                break
    finally:
        receiver.close()
        notifier.close()
    joined = "\n".join(messages)
    assert "READY=1" in joined
    assert "STATUS=2 fresh, 0 failing" in joined
    ready_index = next(i for i, m in enumerate(messages) if m == "READY=1")
    assert any(m.startswith("RELOADING=1\nMONOTONIC_USEC=") for m in messages[ready_index:])
    assert messages.index("STOPPING=1") > ready_index


async def test_stop_cancels_hanging_calls_quickly(tmp_path):
    """A stop during hanging STS calls returns promptly and still logs daemon.stopped."""
    clock = JumpClock()
    config = make_config(tmp_path, ["h"])
    sts = ScriptedSts(clock, lifetime=1.0)
    daemon, log = build(config, sts, clock)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(daemon.run)
            sts.hang = True
            await sts.wait_calls(lambda calls: calls.count("h") >= 2)
            daemon.stop()
    assert log.events[-1]["event"] == "daemon.stopped"


async def test_state_file_has_no_secrets(tmp_path):
    """The state file is 0600, names every profile, and holds no secret."""
    clock = JumpClock()
    config = make_config(tmp_path, ["a", "denied"])
    sts = ScriptedSts(clock, lifetime=3600)
    sts.always["denied"] = DENIED
    daemon, log = build(config, sts, clock)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        daemon.stop()
    state = tmp_path / "state" / "state.json"
    text = state.read_text()
    assert state.stat().st_mode & 0o777 == 0o600
    assert SECRET_PREFIX not in text
    assert TOKEN_PREFIX not in text
    assert '"AccessDenied"' in text


async def test_removed_then_readded_profile_is_kept_and_stale_calls_dropped(tmp_path):
    """A profile removed and added back is not deleted, and a call from before is not used."""
    clock = JumpClock()
    config = make_config(tmp_path, ["p", "q"])
    without = replace(config, roles=config.roles[1:])
    moved = replace(
        config,
        roles=(replace(config.roles[0], role_arn=config.roles[0].role_arn + "2"), config.roles[1]),
    )
    configs = iter([without, moved])
    sts = ScriptedSts(clock, lifetime=3600)
    daemon, log = build(config, sts, clock, loader=lambda _path: next(configs))
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        sts.gate = anyio.Event()  # the next calls hang until released
        daemon.refresh_now("p")
        await sts.wait_calls(lambda calls: calls.count("p") == 2)  # in flight, OLD role
        assert await daemon.reload()  # p removed
        assert await daemon.reload()  # p back, on another role
        sts.gate.set()
        await sts.wait_calls(lambda calls: calls.count("p") == 3)
        await log.wait_for(
            lambda _: read(config)["p"]["credrefresh_role_arn"].endswith("/p2"), timeout=5
        )
        daemon.stop()
    assert not log.named("profile.removed")
    assert read(config)["p"]["credrefresh_role_arn"] == "arn:aws:iam::123456789012:role/p2"


async def test_unexpected_reload_error_is_rejected_not_fatal(tmp_path):
    """Any error while loading a new config is config.rejected; the daemon keeps running."""
    clock = JumpClock()
    config = make_config(tmp_path, ["a"])

    def explode(_path: str) -> Config:
        raise TypeError("unhashable type: 'list'")

    sts = ScriptedSts(clock, lifetime=3600)
    daemon, log = build(config, sts, clock, loader=explode)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        assert not await daemon.reload()
        daemon.stop()
    assert log.named("config.rejected")[0]["errors"] == [
        f"{config.path}: unexpected error: TypeError: unhashable type: 'list'"
    ]


async def test_failed_write_retries_the_write_not_sts(tmp_path):
    """While the file cannot be written, credentials are kept and only the write is retried."""
    clock = JumpClock()
    config = make_config(tmp_path, [f"p{i}" for i in range(5)])
    path = tmp_path / "aws" / "credentials"
    path.parent.mkdir()
    path.write_bytes(b"[broken\n")
    sts = ScriptedSts(clock, lifetime=3600)
    daemon, log = build(config, sts, clock)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        await log.wait_count("credentials_file.error", 2, timeout=10)
        assert len(sts.calls) == 5  # no new AssumeRole for credentials still valid
        path.write_text("# fixed\n")
        await log.wait_count("role.refreshed", 5, timeout=10)
        daemon.stop()
    assert sorted(read(config)) == [f"p{i}" for i in range(5)]
    assert len(sts.calls) == 5


async def test_changed_role_keeps_the_expiry_of_what_is_in_the_file(tmp_path):
    """After a reload changes a role, the old credentials' expiry is still known and reported."""
    clock = JumpClock()
    config = make_config(tmp_path, ["x"])
    changed = replace(config, roles=(replace(config.roles[0], session_name="other"),))
    sts = ScriptedSts(clock, lifetime=0.8)
    daemon, log = build(config, sts, clock, loader=lambda _path: changed)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        sts.always["x"] = DENIED
        assert await daemon.reload()
        assert daemon.state("x").expiration is not None
        await log.wait_count("role.expired", 1, timeout=5)
        daemon.stop()
    assert len(log.named("role.expired")) == 1


async def test_reload_during_the_first_round_does_not_send_ready_early(tmp_path):
    """READY=1 waits for the first round even when a reload comes first."""
    address = str(tmp_path / "notify.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(address)
    receiver.setblocking(False)
    clock = JumpClock()
    config = make_config(tmp_path, ["a"])
    sts = ScriptedSts(clock, lifetime=3600)
    sts.gate = anyio.Event()
    notifier = Notifier({"NOTIFY_SOCKET": address})
    daemon, log = build(config, sts, clock, notifier=notifier, loader=lambda _p: config)
    messages: list[str] = []

    def drain() -> None:
        while True:
            try:
                messages.append(receiver.recv(4096).decode())
            except BlockingIOError:
                return

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(daemon.run)
            await sts.wait_calls(lambda calls: calls == ["a"])
            await daemon.reload()
            drain()
            assert "READY=1" not in messages
            sts.gate.set()
            with anyio.fail_after(5):
                await daemon.ready.wait()
            daemon.stop()
        drain()
    finally:
        receiver.close()
        notifier.close()
    assert messages.count("READY=1") == 1
    assert (tmp_path / "aws" / "credentials").exists()


async def test_stop_is_bounded_when_another_writer_holds_the_lock(tmp_path):
    """A stop finishes within its grace even if the writers' lock is never released."""
    import fcntl  # noqa: PLC0415
    import os  # noqa: PLC0415

    from credrefresh.credfile import lock_path  # noqa: PLC0415

    clock = JumpClock()
    config = make_config(tmp_path, ["a"])
    sts = ScriptedSts(clock, lifetime=3600)
    daemon, log = build(config, sts, clock, stop_grace=2.5)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        fd = os.open(lock_path(config.credentials_file), os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            daemon.refresh_now("a")
            await sts.wait_calls(lambda calls: len(calls) == 2)
            await anyio.wait_all_tasks_blocked()  # the call has returned; the writer waits
            with anyio.fail_after(6):
                daemon.stop()
                await daemon.done.wait()
        finally:
            os.close(fd)
    assert log.events[-1]["event"] == "daemon.stopped"
    assert log.named("credentials_file.error")


async def test_credentials_that_expired_before_the_write_are_not_written(tmp_path):
    """Credentials already expired when their write comes are dropped and refreshed again."""
    clock = JumpClock()
    config = make_config(tmp_path, ["a"])
    sts = ScriptedSts(clock, lifetime=3600)
    daemon, log = build(config, sts, clock)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        first = read(config)["a"]["aws_access_key_id"]
        sts.lifetime = 0.0  # the next credentials are expired by the time they would be written
        daemon.refresh_now("a")
        await sts.wait_calls(lambda calls: len(calls) >= 3)
        sts.lifetime = 3600
        await log.wait_count("role.refreshed", 2)
        daemon.stop()
    written = log.named("role.refreshed")[1]
    assert written["access_key_id"] != first
    assert read(config)["a"]["aws_access_key_id"] == written["access_key_id"]
    assert written["expiration"] > written["next_refresh_at"]


class RecordingNotifier(Notifier):
    """The real notifier, sending to a real datagram socket that this test reads back."""

    def __init__(self, path: Path) -> None:
        self.receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.receiver.bind(str(path))
        self.receiver.setblocking(False)
        self.seen: list[str] = []
        super().__init__({"NOTIFY_SOCKET": str(path)})

    @property
    def sent(self) -> list[str]:
        """Every message that reached the socket so far."""
        while True:
            try:
                self.seen.append(self.receiver.recv(65536).decode())
            except BlockingIOError:
                return self.seen

    def close(self) -> None:
        """Close both ends."""
        super().close()
        self.receiver.close()


@pytest.fixture
def recording(tmp_path):
    notifier = RecordingNotifier(tmp_path / "n.sock")
    yield notifier
    notifier.close()


async def test_stop_before_run_is_not_lost(tmp_path, recording):
    """A stop requested before the task group exists ends run() without READY or any call."""
    clock = JumpClock()
    config = make_config(tmp_path, ["a"])
    sts = ScriptedSts(clock, lifetime=3600)
    notifier = recording
    daemon, log = build(config, sts, clock, notifier=notifier)
    daemon.stop("early")
    with anyio.fail_after(5):
        await daemon.run()
    assert not log.named("daemon.ready")
    assert "READY=1" not in notifier.sent
    assert sts.calls == []
    assert [e["event"] for e in log.events][-1] == "daemon.stopped"


async def test_no_ready_after_stopping_during_the_first_write(tmp_path, recording):
    """A stop while the first write waits for the file: STOPPING=1 and never READY=1 after it."""
    import fcntl  # noqa: PLC0415
    import os  # noqa: PLC0415

    from credrefresh.credfile import lock_path  # noqa: PLC0415

    clock = JumpClock()
    config = make_config(tmp_path, ["a", "b"])
    sts = ScriptedSts(clock, lifetime=3600)
    daemon, log = build(config, sts, clock, notifier=recording, stop_grace=2.0)
    os.makedirs(os.path.dirname(config.credentials_file), exist_ok=True)
    fd = os.open(lock_path(config.credentials_file), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        async with anyio.create_task_group() as tg:
            tg.start_soon(daemon.run)
            await sts.wait_calls(lambda calls: len(calls) == 2)
            await anyio.wait_all_tasks_blocked()  # the first write waits for the lock
            daemon.stop()
            with anyio.fail_after(10):
                await daemon.done.wait()
    finally:
        os.close(fd)
    sent = recording.sent
    assert "STOPPING=1" in sent
    assert "READY=1" not in sent[sent.index("STOPPING=1") :]
    assert not log.named("daemon.ready")


async def test_expiry_is_reported_while_writes_keep_failing(tmp_path):
    """New credentials that cannot be written do not hide the expiry of those in the file."""
    clock = JumpClock()
    config = make_config(tmp_path, ["a"])
    sts = ScriptedSts(clock, lifetime=1.5)
    daemon, log = build(config, sts, clock)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        target = anyio.Path(config.credentials_file)
        text = await target.read_text()
        await target.unlink()
        await target.mkdir()  # every write now fails: "is a directory"
        try:
            await log.wait_count("credentials_file.error", 1, timeout=5)
            await log.wait_count("role.expired", 1, timeout=5)
            state = daemon.state("a")
            assert state is not None
            assert state.last_error is not None
            assert state.last_error.code == "CredentialsFileError"
            assert state.attempt >= 1
        finally:
            await target.rmdir()
            await target.write_text(text)
        daemon.stop()
    assert log.named("role.expired")[0]["last_error_code"] == "CredentialsFileError"


async def test_watchdog_pings_stop_while_a_write_is_stuck(tmp_path, recording):
    """A write stuck past every bound stops WATCHDOG=1, so systemd can act; pings resume after."""
    import fcntl  # noqa: PLC0415
    import os  # noqa: PLC0415

    from credrefresh.credfile import lock_path  # noqa: PLC0415

    clock = JumpClock()
    config = make_config(tmp_path, ["a"])
    sts = ScriptedSts(clock, lifetime=3600)
    daemon, log = build(config, sts, clock, notifier=recording, watchdog=0.1, write_stuck_after=0.3)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        fd = os.open(lock_path(config.credentials_file), os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            daemon.refresh_now("a")
            await sts.wait_calls(lambda calls: len(calls) == 2)
            # Collect the pings for 2 s while the write waits for the lock: they stop once it
            # has been stuck for 0.3 s, so the last one comes well before the window ends.
            pings: list[float] = []
            window_end = anyio.current_time() + 2.0
            with anyio.move_on_after(2.0):
                while True:
                    await anyio.wait_readable(recording.receiver)
                    before = len(recording.seen)
                    pings += [anyio.current_time()] * recording.sent[before:].count("WATCHDOG=1")
            assert pings, "no ping at all: the write never started?"
            assert window_end - pings[-1] > 1.0, window_end - pings[-1]
        finally:
            os.close(fd)
        await log.wait_count("credentials_file.written", 2)
        with anyio.fail_after(5):
            while "WATCHDOG=1" not in recording.sent:
                await anyio.wait_readable(recording.receiver)
        daemon.stop()


async def test_a_large_file_is_written_by_its_spacing_unless_credentials_run_out(tmp_path):
    """An ordinary refresh of a 4 MB file waits for its spacing; an urgent one does not.

    The spacing (one second per MB) is what keeps ``run`` at 10,000 profiles from re-copying
    the whole file every second; a profile whose credentials in the file expire within five
    minutes must not wait for it.
    """
    clock = JumpClock()
    config = make_config(tmp_path, ["a"], jitter=0.0)
    path = tmp_path / "aws" / "credentials"
    path.parent.mkdir()
    filler = "# " + "x" * 98 + "\n"
    path.write_text("[theirs]\naws_access_key_id = AKIAUSER\n" + filler * 40_000)  # 4 MB
    sts = ScriptedSts(clock, lifetime=3600)
    daemon, log = build(config, sts, clock)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)  # the first write: nothing in the file, so urgent
        assert len(log.named("credentials_file.written")) == 1
        first = read(config)["a"]["aws_access_key_id"]

        # The next write waits for the file's spacing (4 s), or for the delay when urgent.
        spaced, delay = daemon.writer.spaced_at, daemon.writer.next_at
        assert spaced - delay > 3.5

        # 31 minutes on: due (refresh_at 0.5), and what the file holds lasts 29 more minutes.
        clock.offset = timedelta(minutes=31)
        await sts.wait_calls(lambda calls: len(calls) == 2, timeout=5)
        await log.wait_count("credentials_file.written", 2, timeout=10)
        assert anyio.current_time() >= spaced  # it waited for the spacing
        second = read(config)["a"]["aws_access_key_id"]
        assert second != first

        # 87 minutes on: overdue (since 61), and what the file holds expires in 4 minutes.
        clock.offset = timedelta(minutes=87)
        await sts.wait_calls(lambda calls: len(calls) == 3, timeout=5)
        await log.wait_count("credentials_file.written", 3, timeout=2)  # not the 4 s spacing
        daemon.stop()
    assert read(config)["a"]["aws_access_key_id"] not in {first, second}
    assert read(config)["theirs"] == {"aws_access_key_id": "AKIAUSER"}


async def test_reload_changes_the_write_spacing(tmp_path):
    """A new ``write_delay`` spaces the writes after a reload, not only the wait to settle."""
    clock = JumpClock()
    config = make_config(tmp_path, ["a"])
    reloaded = replace(config, refresh=replace(config.refresh, write_delay=7.5))
    sts = ScriptedSts(clock, lifetime=3600)
    daemon, _ = build(config, sts, clock, loader=lambda _path: reloaded)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        assert daemon.writer.wait_s() < 1
        assert await daemon.reload()
        assert daemon.writer.wait_s() > 5  # 7.5 s from the first write
        daemon.stop()


async def test_the_state_file_does_not_wait_for_the_spacing(tmp_path):
    """A failure reaches the state file (for ``status``) while a refresh waits to be written."""
    clock = JumpClock()
    config = make_config(tmp_path, ["a", "b"], jitter=0.0)
    path = tmp_path / "aws" / "credentials"
    path.parent.mkdir()
    path.write_text("[theirs]\naws_access_key_id = AKIAUSER\n" + ("#" * 99 + "\n") * 80_000)  # 8 MB
    sts = ScriptedSts(clock, lifetime=3600)
    daemon, log = build(config, sts, clock, state_every=0.1)
    saved = anyio.Event()
    save = daemon.files.save

    async def save_and_tell() -> None:
        await save()
        saved.set()

    daemon.files.save = save_and_tell
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        sts.queued["b"] = [DENIED]
        saved = anyio.Event()
        clock.offset = timedelta(minutes=31)  # both due; "a" then waits 8 s to be written
        await log.wait_count("role.refresh_failed", 1, timeout=5)
        with anyio.fail_after(4):  # half the spacing
            while "AccessDenied" not in await anyio.Path(config.state_file).read_text():
                await saved.wait()
                saved = anyio.Event()
        assert len(log.named("credentials_file.written")) == 1  # "a" still waits
        daemon.stop()
