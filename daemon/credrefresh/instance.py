"""The single-instance lock: one ``credrefresh run`` per credentials file.

The lock is an ``flock`` on ``<file>.credrefresh.pid``, which holds the pid of the holder. The
file is opened without following links and, when missing, created with ``O_EXCL``; what it holds
is shown to a person only after it was checked to be a pid.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from typing import Final

from credrefresh.errors import AlreadyRunning
from credrefresh.safefs import ensure_directory, open_private

__all__ = ["instance_lock", "instance_path", "pid_text"]

PID_BYTES: Final = 32
PID_RE: Final = re.compile(rb"[0-9]{1,10}\n?")


def instance_path(path: str) -> str:
    """The file whose lock marks a running ``credrefresh run`` for ``path``."""
    return os.path.realpath(path) + ".credrefresh.pid"


def pid_text(data: bytes) -> str:
    """The pid recorded in a pid file's first bytes, or ``unknown``: never the raw bytes."""
    return data.rstrip(b"\n").decode() if PID_RE.fullmatch(data) else "unknown"


@contextlib.contextmanager
def instance_lock(path: str) -> Iterator[None]:
    """Hold the one-daemon-per-file lock for ``path`` while the block runs.

    Raises:
        AlreadyRunning: another ``run`` holds it; the message names its pid.
        CredentialsFileError: the pid file or its directory is unsafe or cannot be opened.
    """
    name = instance_path(path)
    ensure_directory(os.path.dirname(name))
    fd = open_private(name, "pid file")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = pid_text(os.pread(fd, PID_BYTES, 0))
            raise AlreadyRunning(
                f"another credrefresh run (pid {holder}) already keeps {path} fresh"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
