"""File-system hygiene for every file credrefresh writes, in the spirit of OpenSSH's StrictModes.

* A directory we write in, and each of its parents up to ``/``, must be owned by the daemon's
  user or root and must not be writable by group or others; otherwise another user could plant
  symlinks or swap files there. One deviation from OpenSSH's ``safe_path``: a *parent* that is
  owned by root, world-writable and sticky (``/tmp``) is accepted, because the sticky bit stops
  other users from renaming or removing the entries below it that are ours. The directory that
  holds the files themselves gets no such exception.
* Missing directories are created one by one, each 0700 (``os.makedirs`` creates the
  intermediate ones with the umask's default, typically 0755).
* Lock and pid files are opened with ``O_NOFOLLOW`` (created with ``O_EXCL``), files we only read
  with ``O_NONBLOCK``, and anything that is not a regular file is refused, never replaced: a
  FIFO would block us and a device would be replaced by a file of secrets.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import stat
from typing import Final

from credrefresh.errors import CredentialsFileError

__all__ = [
    "check_directory",
    "directory_problem",
    "ensure_directory",
    "file_kind",
    "open_private",
    "open_regular",
    "require_regular",
]

OPEN_TRIES: Final = 3


def _who(uid: int) -> str:
    with contextlib.suppress(KeyError):
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    return f"uid {uid}"


def directory_problem(mode: int, owner: int, uid: int, *, leaf: bool) -> str | None:
    """Why a directory with ``mode`` and ``owner`` is unsafe for user ``uid``, or ``None``.

    ``leaf`` is the directory that holds our files; the others are its parents.
    """
    if owner not in {0, uid}:
        return f"is owned by {_who(owner)}, not by the daemon's user ({_who(uid)}) or root"
    writable = mode & (stat.S_IWGRP | stat.S_IWOTH)
    if not writable:
        return None
    if not leaf and owner == 0 and mode & stat.S_ISVTX and mode & stat.S_IWOTH:
        return None  # a root-owned sticky parent such as /tmp: nobody can rename our entry
    who = (
        "group and others"
        if writable == stat.S_IWGRP | stat.S_IWOTH
        else ("its group" if writable == stat.S_IWGRP else "others")
    )
    return f"has mode {stat.S_IMODE(mode):04o}: writable by {who}"


def check_directory(directory: str, *, leaf: bool = True) -> None:
    """Refuse ``directory`` when it or any parent could be changed by another user.

    ``leaf=False`` checks it as a parent of the directory our files will be in.

    Raises:
        CredentialsFileError: names the directory, its owner or mode, and the fix.
    """
    uid = os.geteuid()
    path = os.path.realpath(directory)
    current = path
    while True:
        try:
            info = os.stat(current)
        except OSError as exc:
            raise CredentialsFileError(f"{current}: cannot check: {exc.strerror}") from None
        problem = directory_problem(info.st_mode, info.st_uid, uid, leaf=leaf and current == path)
        if problem is not None:
            raise CredentialsFileError(
                f"{current}: {problem}; another user could plant links or files there, so "
                f"nothing is written under {path} (chmod go-w, or chown it to the daemon's user)"
            )
        parent = os.path.dirname(current)
        if parent == current:
            return
        current = parent


def ensure_directory(directory: str) -> None:
    """Create ``directory`` and missing parents (each 0700), then check the whole chain.

    Raises:
        CredentialsFileError: a directory cannot be created or is not safe (see
            ``check_directory``).
    """
    missing: list[str] = []
    current = os.path.abspath(directory)
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    if missing:
        # Build nothing under a directory that others control.
        check_directory(current, leaf=False)
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        except OSError as exc:
            raise CredentialsFileError(f"{path}: cannot create: {exc.strerror}") from None
    check_directory(directory)


def file_kind(mode: int) -> str:
    """A person's name for the type of file ``mode`` describes."""
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symbolic link"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def require_regular(path: str, mode: int, what: str) -> None:
    """Raise unless ``mode`` is a regular file's."""
    if not stat.S_ISREG(mode):
        raise CredentialsFileError(
            f"{path}: is {file_kind(mode)}, not a {what}; refusing to read or replace it"
        )


def open_regular(path: str, what: str) -> int | None:
    """Open ``path`` read-only without ever blocking; ``None`` when it does not exist.

    The type is checked before the open (a device on a ``nodev`` mount cannot even be opened)
    and again on the descriptor, in case something was swapped in between.

    Raises:
        CredentialsFileError: it is not a regular file, or cannot be opened.
    """
    try:
        require_regular(path, os.stat(path).st_mode, what)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CredentialsFileError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        require_regular(path, os.fstat(fd).st_mode, what)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_private(path: str, what: str) -> int:
    """Open or create (0600, ``O_EXCL``) the lock or pid file ``path``, never through a link.

    Raises:
        CredentialsFileError: it is a symlink or not a regular file, or cannot be opened.
    """
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    for _ in range(OPEN_TRIES):
        try:
            try:
                fd = os.open(path, flags)
            except FileNotFoundError:
                # Created by us or not at all; if another writer wins the race, open theirs.
                fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise CredentialsFileError(
                    f"{path}: is a symbolic link; a {what} is never opened through one "
                    "(remove it if you did not make it)"
                ) from None
            raise CredentialsFileError(f"{path}: cannot open {what}: {exc.strerror}") from None
        try:
            require_regular(path, os.fstat(fd).st_mode, what)
        except BaseException:
            os.close(fd)
            raise
        return fd
    raise CredentialsFileError(f"{path}: appeared and vanished {OPEN_TRIES} times; not opened")
