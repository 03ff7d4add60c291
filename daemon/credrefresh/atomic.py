"""Atomic file replacement, shared by the credentials-file writer and the state file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Sequence
from typing import Final

__all__ = ["TEMP_MARK", "remove_stale_temps", "replace_atomically"]

TEMP_MARK: Final = ".credrefresh-"


def replace_atomically(
    target: str,
    data: bytes | Sequence[bytes | memoryview],
    precondition: Callable[[], bool] | None = None,
) -> bool:
    """Write ``data`` to a 0600 temp file beside ``target``, fsync, rename over, fsync the dir.

    Readers see the old file or the new one, never a partial one. The temp file is named
    ``.<name>.credrefresh-*.tmp`` so a later run can recognise and remove one a crash left.
    ``precondition`` is checked after the data is on disk and right before the rename, the
    last moment possible; when it fails nothing is replaced and False is returned. ``data``
    may come in pieces, written one after the other: joining 10 MB first costs a copy.
    """
    directory, base = os.path.split(target)
    fd, temp = tempfile.mkstemp(prefix=f".{base}{TEMP_MARK}", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            if isinstance(data, bytes):
                handle.write(data)
            else:
                handle.writelines(data)
            handle.flush()
            os.fsync(handle.fileno())
        if precondition is not None and not precondition():
            os.unlink(temp)
            return False
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    # The file is replaced; syncing the directory makes the rename durable. If that fails
    # (some filesystems refuse it) the new file is still what readers see, so it is no error.
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return True


def remove_stale_temps(target: str) -> None:
    """Delete temp files a killed writer of ``target`` left behind (only our own naming).

    Call it only while no other writer of ``target`` can be active (under the writers' lock, or
    in the one process that owns the file).
    """
    directory, base = os.path.split(target)
    prefix = f".{base}{TEMP_MARK}"
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.startswith(prefix) and entry.name.endswith(".tmp"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
