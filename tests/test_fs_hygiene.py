"""File-system hygiene: untrusted directories, planted links and special files are refused.

Real files, real FIFOs and device nodes, a real second user (when running as root) and real
``credrefresh`` subprocesses bounded by timeouts; nothing is mocked.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from credrefresh.credfile import lock_path, update_profiles
from credrefresh.errors import AlreadyRunning, CredentialsFileError
from credrefresh.instance import instance_lock, instance_path, pid_text
from credrefresh.model import Credentials, Issued
from credrefresh.safefs import directory_problem
from process_support import Proc, clean_env, run_cli, write_config

NOW = datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC)
BOUND = 30.0  # no command here may take longer; a FIFO that blocked it would hit this
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, chown, useradd)")


def issued(profile: str = "dev") -> Issued:
    """Fake credentials shaped like STS's."""
    return Issued(
        profile=profile,
        role_arn="arn:aws:iam::111122223333:role/dev",
        session_name="credrefresh-dev",
        assumed_role_arn="arn:aws:sts::111122223333:assumed-role/dev/credrefresh-dev",
        credentials=Credentials(
            access_key_id="ASIAEXAMPLEEXAMPLE00",
            secret_access_key="s" * 40,
            session_token="t" * 400,
            expiration=NOW + timedelta(hours=1),
        ),
        issued_at=NOW,
        duration_ms=1.0,
    )


def snapshot(path: Path) -> tuple[int, int, bytes]:
    """Inode, mode and content of a regular file."""
    info = os.lstat(path)
    return info.st_ino, info.st_mode, path.read_bytes()


@pytest.fixture
def aws(tmp_path: Path) -> Path:
    """A private credentials directory."""
    directory = tmp_path / ".aws"
    directory.mkdir(mode=0o700)
    return directory


# -- the pure decision -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "owner", "leaf", "problem"),
    [
        (0o40700, 1000, True, None),
        (0o40755, 0, True, None),
        (0o40775, 1000, True, "has mode 0775: writable by its group"),
        (0o40757, 1000, False, "has mode 0757: writable by others"),
        (0o40777, 0, False, "has mode 0777: writable by group and others"),
        (0o41777, 0, False, None),
        (0o41777, 0, True, "has mode 1777: writable by group and others"),
        (0o41777, 1000, False, "has mode 1777: writable by group and others"),
        (0o40700, 1001, False, "is owned by uid 1001"),
    ],
)
def test_directory_problem(mode: int, owner: int, leaf: bool, problem: str | None) -> None:
    """Only the daemon's user or root may own a directory on the path, nobody else may write
    it, and only a root-owned sticky parent (``/tmp``) is let off."""
    found = directory_problem(mode, owner, 1000, leaf=leaf)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert found.startswith(problem)


def test_pid_text_never_returns_raw_bytes() -> None:
    """Only a plain pid is shown; escapes, text and oversized numbers become ``unknown``."""
    assert pid_text(b"4242\n") == "4242"
    assert pid_text(b"4242") == "4242"
    for planted in (b"\x1b[31mevil\n", b"", b"12 34\n", b"1" * 11, b"42\n\x1b[2J", b"\xff\xfe"):
        assert pid_text(planted) == "unknown"


# -- directories -----------------------------------------------------------------------------


def test_missing_parents_are_created_0700(tmp_path: Path) -> None:
    """Every directory created on the way to a new credentials file is 0700, not only the last."""
    path = tmp_path / "a" / "b" / "c" / "credentials"
    update_profiles(str(path), {"dev": issued()}, now=NOW)
    for directory in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700, directory


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o1777])
def test_group_or_other_writable_directory_is_refused(tmp_path: Path, mode: int) -> None:
    """A credentials directory others can write (sticky or not) is refused, naming its mode,
    and nothing is created in it."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    with pytest.raises(CredentialsFileError, match=rf"shared: has mode {mode:04o}: writable by"):
        update_profiles(str(shared / "credentials"), {"dev": issued()}, now=NOW)
    assert os.listdir(shared) == []


def test_writable_parent_is_refused(tmp_path: Path) -> None:
    """A private directory below a group-writable one is refused too: the parent's owner
    could rename it away."""
    parent = tmp_path / "team"
    parent.mkdir()
    parent.chmod(0o770)
    (parent / ".aws").mkdir(mode=0o700)
    with pytest.raises(CredentialsFileError, match=r"team: has mode 0770: writable by its group"):
        update_profiles(str(parent / ".aws" / "credentials"), {"dev": issued()}, now=NOW)
    assert os.listdir(parent / ".aws") == []


def test_nothing_is_created_under_an_unsafe_directory(tmp_path: Path) -> None:
    """Missing directories are not created below a directory others can write."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(CredentialsFileError, match=r"shared: has mode 0777"):
        update_profiles(str(shared / "new" / "credentials"), {"dev": issued()}, now=NOW)
    assert os.listdir(shared) == []


@ROOT_ONLY
def test_directory_owned_by_another_user_is_refused(aws: Path) -> None:
    """A 0700 directory owned by someone other than the daemon's user and root is refused,
    naming the owner."""
    os.chown(aws, 65534, 65534)
    with pytest.raises(CredentialsFileError, match=r"\.aws: is owned by uid 65534"):
        update_profiles(str(aws / "credentials"), {"dev": issued()}, now=NOW)


def test_state_file_directory_is_created_0700_and_checked(tmp_path: Path) -> None:
    """The state file's missing parents are 0700 and an unsafe state directory is an error."""
    from credrefresh.state import save_state  # noqa: PLC0415

    save_state(str(tmp_path / "x" / "y" / "state.json"), {"version": 1})
    assert stat.S_IMODE(os.stat(tmp_path / "x").st_mode) == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(OSError, match=r"shared: has mode 0777"):
        save_state(str(shared / "state.json"), {"version": 1})
    assert os.listdir(shared) == []


# -- links and special files -----------------------------------------------------------------


def test_symlinked_lock_file_is_refused(aws: Path, tmp_path: Path) -> None:
    """A symlink at ``<file>.lock`` is never followed: its target is neither created nor
    truncated."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    creds = aws / "credentials"
    os.symlink(victim, lock_path(str(creds)))
    before = snapshot(victim)
    with pytest.raises(CredentialsFileError, match=r"credentials\.lock: is a symbolic link"):
        update_profiles(str(creds), {"dev": issued()}, now=NOW)
    assert snapshot(victim) == before
    assert not creds.exists()


def test_symlinked_pid_file_is_refused(aws: Path, tmp_path: Path) -> None:
    """A symlink at ``<file>.credrefresh.pid`` is never followed, so its target is not
    truncated and overwritten with a pid."""
    victim = tmp_path / "victim"
    victim.write_text("ssh-ed25519 AAAA... someone\n")
    creds = aws / "credentials"
    os.symlink(victim, instance_path(str(creds)))
    before = snapshot(victim)
    with (
        pytest.raises(CredentialsFileError, match=r"credrefresh\.pid: is a symbolic link"),
        instance_lock(str(creds)),
    ):
        pass
    assert snapshot(victim) == before


def test_planted_pid_file_text_is_not_echoed(aws: Path) -> None:
    """When another process holds the instance lock, escape sequences it planted in the pid
    file are not printed: the holder is ``unknown``."""
    creds = aws / "credentials"
    name = instance_path(str(creds))
    Path(name).write_bytes(b"\x1b]0;pwned\x07\x1b[2J\n")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, name], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"held\n"
        with pytest.raises(AlreadyRunning) as caught, instance_lock(str(creds)):
            pass
        assert str(caught.value) == (
            f"another credrefresh run (pid unknown) already keeps {creds} fresh"
        )
    finally:
        holder.kill()
        holder.communicate(timeout=BOUND)


HOLD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


@ROOT_ONLY
def test_character_device_behind_a_symlink_is_never_replaced(aws: Path, tmp_path: Path) -> None:
    """``credentials -> a null device`` is refused with a clear message; the device node stays
    a device and nothing is written beside it."""
    devices = tmp_path / "dev"
    devices.mkdir(mode=0o700)
    null = devices / "null"
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    creds = aws / "credentials"
    os.symlink(null, creds)
    before = os.lstat(null)
    with pytest.raises(
        CredentialsFileError, match=r"null: is a character device, not a credentials file"
    ):
        update_profiles(str(creds), {"dev": issued()}, now=NOW)
    after = os.lstat(null)
    assert stat.S_ISCHR(after.st_mode)
    assert (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)
    assert sorted(os.listdir(devices)) == ["null", "null.lock"]


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_symlink_to_a_special_file_is_refused(aws: Path, tmp_path: Path, kind: str) -> None:
    """A symlink to a FIFO or a directory is refused without blocking and left as it is."""
    target = tmp_path / "target"
    if kind == "fifo":
        os.mkfifo(target, 0o600)
    else:
        target.mkdir()
    creds = aws / "credentials"
    os.symlink(target, creds)
    with pytest.raises(CredentialsFileError, match=r"target: is a (FIFO|directory)"):
        update_profiles(str(creds), {"dev": issued()}, now=NOW)
    assert creds.is_symlink()
    assert stat.S_ISFIFO(os.stat(target).st_mode) == (kind == "fifo")


# -- FIFOs and the command line --------------------------------------------------------------


@pytest.fixture
def fifo_setup(tmp_path: Path, fake_sts: object) -> tuple[Path, Path, dict[str, str]]:
    """A config whose credentials file is a FIFO, and a clean environment."""
    creds = tmp_path / ".aws" / "credentials"
    creds.parent.mkdir(mode=0o700)
    os.mkfifo(creds, 0o600)
    config = write_config(tmp_path / "config.toml", creds, fake_sts.url, ["dev"])  # type: ignore[attr-defined]
    return creds, config, clean_env(tmp_path)


def test_once_does_not_block_on_a_fifo(fifo_setup: tuple[Path, Path, dict[str, str]]) -> None:
    """``once`` with a FIFO as the credentials file exits 74 at once, naming it."""
    creds, config, env = fifo_setup
    result = run_cli(["once", "--config", str(config)], env, timeout=BOUND)
    assert result.returncode == 74, result.stderr
    assert f"{creds}: is a FIFO (named pipe), not a credentials file" in result.stdout
    assert stat.S_ISFIFO(os.stat(creds).st_mode)


def test_status_does_not_block_on_a_fifo(fifo_setup: tuple[Path, Path, dict[str, str]]) -> None:
    """``status`` with a FIFO as the credentials file (and as the state file) reports it and
    exits 2, the profile missing."""
    creds, config, env = fifo_setup
    os.mkfifo(config.parent / "state.json", 0o600)
    result = run_cli(["status", "--config", str(config)], env, timeout=BOUND)
    assert result.returncode == 2, result.stderr
    assert f"{creds}: is a FIFO (named pipe), not a credentials file" in result.stderr


def test_run_does_not_block_on_a_fifo(fifo_setup: tuple[Path, Path, dict[str, str]]) -> None:
    """``run`` with a FIFO as the credentials file starts, reports the file error, leaves the
    FIFO alone and stops on SIGTERM."""
    creds, config, env = fifo_setup
    proc = Proc(["run", "--config", str(config), "--log-format", "json"], env)
    try:
        proc.wait_count("credentials_file.error", 1, timeout=BOUND)
        error = proc.named("credentials_file.error")[0]["error"]
        assert "is a FIFO (named pipe), not a credentials file" in error
        proc.signal(signal.SIGTERM)
        assert proc.wait_exit(BOUND) == 0
    finally:
        proc.kill()
    assert stat.S_ISFIFO(os.stat(creds).st_mode)


def test_fifo_swapped_in_under_a_running_daemon(tmp_path: Path) -> None:
    """A FIFO renamed over the credentials file while ``run`` rotates short-lived credentials
    is reported on the next write, not blocked on, and the daemon still stops on SIGTERM."""
    from support.fakests import Faults, ThreadedFakeSTS  # noqa: PLC0415

    creds = tmp_path / ".aws" / "credentials"
    with ThreadedFakeSTS(Faults(latency=0, lifetime=3)) as sts:
        config = write_config(
            tmp_path / "config.toml", creds, sts.url, ["dev"], refresh={"write_delay": 0.0}
        )
        env = clean_env(tmp_path)
        proc = Proc(["run", "--config", str(config), "--log-format", "json"], env)
        try:
            proc.wait_count("credentials_file.written", 1, timeout=BOUND)
            os.mkfifo(tmp_path / "fifo", 0o600)
            os.replace(tmp_path / "fifo", creds)
            proc.wait_count("credentials_file.error", 1, timeout=BOUND)
            error = proc.named("credentials_file.error")[0]["error"]
            assert "is a FIFO (named pipe), not a credentials file" in error
            proc.signal(signal.SIGTERM)
            assert proc.wait_exit(BOUND) == 0
        finally:
            proc.kill()
    assert stat.S_ISFIFO(os.stat(creds).st_mode)


# -- a second user plants links in a shared directory ----------------------------------------


@pytest.fixture
def attacker() -> Iterator[int]:
    """A real second user, created for the test and removed afterwards."""
    useradd, userdel = shutil.which("useradd"), shutil.which("userdel")
    if os.geteuid() != 0 or useradd is None or userdel is None:
        pytest.skip("needs root and useradd/userdel to create a second user")
    name = f"crtest{secrets.token_hex(3)}"
    subprocess.run(
        [useradd, "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
        timeout=BOUND,
    )
    try:
        import pwd  # noqa: PLC0415

        yield pwd.getpwnam(name).pw_uid
    finally:
        subprocess.run([userdel, name], check=False, capture_output=True, timeout=BOUND)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A world-writable (not sticky) directory another user can reach."""
    top = Path(tempfile.mkdtemp(prefix="credrefresh-shared-"))
    top.chmod(0o755)
    shared = top / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    try:
        yield shared
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(top)


def plant(uid: int, target: Path, link: Path) -> None:
    """``ln -s target link`` run as ``uid``."""
    ln = shutil.which("ln")
    assert ln is not None
    subprocess.run([ln, "-s", str(target), str(link)], user=uid, check=True, timeout=BOUND)
    assert os.lstat(link).st_uid == uid


@pytest.mark.parametrize("command", ["once", "run"])
def test_links_planted_by_another_user_are_refused(
    attacker: int, shared_dir: Path, fake_sts: object, command: str
) -> None:
    """Symlinks a second user planted at ``<file>.credrefresh.pid`` and ``<file>.lock`` in a
    world-writable directory: ``once`` and ``run`` refuse (exit 74, naming the directory and
    its mode) and the link targets are untouched."""
    victims = shared_dir.parent / "victims"
    victims.mkdir(mode=0o700)
    pid_victim, lock_victim = victims / "authorized_keys", victims / "root-owned"
    pid_victim.write_text("ssh-ed25519 AAAA... admin\n")
    lock_victim.write_text("root only\n")
    creds = shared_dir / "credentials"
    plant(attacker, pid_victim, Path(f"{creds}.credrefresh.pid"))
    plant(attacker, lock_victim, Path(f"{creds}.lock"))
    before = (snapshot(pid_victim), snapshot(lock_victim))
    home = shared_dir.parent / "home"
    home.mkdir(mode=0o700)
    config = write_config(home / "config.toml", creds, fake_sts.url, ["dev"])  # type: ignore[attr-defined]
    proc = Proc([command, "--config", str(config), "--log-format", "json"], clean_env(home))
    try:
        code = proc.wait_exit(BOUND)
    finally:
        proc.kill()
    assert code == 74, proc.output()
    assert f"{shared_dir}: has mode 0777: writable by group and others" in proc.output()
    assert (snapshot(pid_victim), snapshot(lock_victim)) == before
    assert not creds.exists()
