"""Atomic file replacement, shared by the credentials-file writer and the state file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Final

__all__ = ["TEMP_MARK", "replace_atomically"]

TEMP_MARK: Final = ".credrefresh-"


def replace_atomically(target: str, data: bytes) -> None:
    """Write ``data`` to a 0600 temp file beside ``target``, fsync, rename over, fsync the dir.

    Readers see the old file or the new one, never a partial one. The temp file is named
    ``.<name>.credrefresh-*.tmp`` so a later run can recognise and remove one a crash left.
    """
    directory, base = os.path.split(target)
    fd, temp = tempfile.mkstemp(prefix=f".{base}{TEMP_MARK}", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
