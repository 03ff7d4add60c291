"""A cache of the parsed TOML, so ``status`` of a large configuration skips ``tomllib``.

``tomllib`` takes about 0.3 s for 10,000 ``[[roles]]``; ``json`` reads the same table in a
tenth of that. The cache holds only what ``tomllib.loads`` returned for the config file's exact
bytes, never a validated ``Config``: every command still validates what it gets, with its own
environment and working directory, so a cache can change how fast a configuration loads and
nothing else. Nothing but the bytes decides what the parse returns, so the key is their SHA-256
(with the cache format and the Python version, whose ``tomllib`` did the parse).

``run`` and ``once`` read it and keep it current: they write it after a parse that validated
(``run`` on a reload too); ``status`` only reads it (it writes nothing, as before); ``check``
neither reads nor writes it. One file per configuration path,
``config-<hash of the absolute path>.json`` in the default state directory (the config is not
parsed yet, so it cannot say where its own state file goes): mode 0600, replaced atomically, its
directory created 0700 and checked like the state file's. Two lines: a JSON header (format,
Python version, SHA-256 of the config bytes and of the second line), then the table as JSON.
A configuration that sets an ``external_id`` is not cached: the value is never echoed (not in
errors, logs or state), and a copy in another file would outlive its removal from the config.

The file is hostile input: anything but a regular file of ours (owner, mode 0600 or stricter,
not a symlink, within ``MAX_CACHE_SIZE``) with a header that matches and a body whose digest
matches is ignored, and the TOML is parsed instead. The digest of the body catches a damaged or
edited file; someone who can write files as the daemon's user could edit the configuration
itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from collections.abc import Mapping
from typing import Any, Final

from credrefresh.errors import CredentialsFileError
from credrefresh.settings import default_state_dir

__all__ = ["CACHE_VERSION", "MAX_CACHE_SIZE", "cache_path", "load_cached", "store"]

CACHE_VERSION: Final = 1
# A config is at most 16 MiB; its table as JSON is about twice the TOML at worst.
MAX_CACHE_SIZE: Final = 48 * 1024 * 1024
PYTHON: Final = ".".join(map(str, sys.version_info[:3]))


def cache_path(config_path: str, env: Mapping[str, str]) -> str:
    """The cache file of the configuration at ``config_path``."""
    digest = hashlib.sha256(os.path.abspath(config_path).encode()).hexdigest()[:16]
    return os.path.join(default_state_dir(env), f"config-{digest}.json")


def header(raw: bytes, body: bytes) -> bytes:
    """The first line of the cache of ``raw``'s table, ``body``."""
    return json.dumps(
        {
            "version": CACHE_VERSION,
            "python": PYTHON,
            "config_sha256": hashlib.sha256(raw).hexdigest(),
            "body_sha256": hashlib.sha256(body).hexdigest(),
        },
        sort_keys=True,
    ).encode()


def read_private(path: str) -> bytes | None:
    """The bytes of ``path`` if it is a regular file of ours, 0600 or stricter, else ``None``.

    Never through a symlink, never blocking on a FIFO.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(path, flags)
    except OSError:  # missing, a symlink (ELOOP), unreadable
        return None
    try:
        info = os.fstat(fd)
        if (
            not stat.S_ISREG(info.st_mode)
            or info.st_uid != os.geteuid()
            or info.st_mode & 0o077
            or info.st_size > MAX_CACHE_SIZE
        ):
            return None
        chunks = []
        size = 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_CACHE_SIZE:  # it grew since the fstat
                return None
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def load_cached(path: str, raw: bytes) -> dict[str, Any] | None:
    """The table cached at ``path`` for the config bytes ``raw``, or ``None`` to parse them."""
    content = read_private(path)
    if content is None:
        return None
    first, newline, body = content.partition(b"\n")
    if not newline or first != header(raw, body.removesuffix(b"\n")):
        return None
    try:
        table = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return table if isinstance(table, dict) else None


def same(a: object, b: object) -> bool:
    """Equal, with the same types throughout (``1``, ``1.0`` and ``True`` differ)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        assert isinstance(b, dict)  # noqa: S101 - for mypy: same type as a
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        assert isinstance(b, list)  # noqa: S101
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def holds_key(document: object, key: str) -> bool:
    """Whether ``key`` is a key of any table in ``document``, at any depth (iterative)."""
    pending = [document]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            if key in item:
                return True
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def store(path: str, raw: bytes, table: dict[str, Any]) -> bool:
    """Cache ``table``, what ``tomllib`` made of ``raw``; whether it was written.

    Best effort: a table JSON cannot carry exactly (dates and times, NaN, infinities), an
    unsafe or unwritable directory, or a full disk leave no cache, and no error.
    """
    if holds_key(table, "external_id"):
        return False
    try:
        body = json.dumps(table, allow_nan=False).encode()
    except (TypeError, ValueError, RecursionError):
        return False
    if not same(json.loads(body), table):
        return False
    from credrefresh.atomic import remove_stale_temps, replace_atomically  # noqa: PLC0415
    from credrefresh.safefs import ensure_directory  # noqa: PLC0415

    try:
        ensure_directory(os.path.dirname(path))
        remove_stale_temps(path)  # a store killed half way; one run or once per config
        replace_atomically(path, header(raw, body) + b"\n" + body + b"\n")
    except (OSError, CredentialsFileError):
        return False
    return True
