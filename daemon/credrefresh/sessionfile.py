"""The MFA session file: written by ``credrefresh mfa``, read by ``run``, ``once`` and ``status``.

It holds one GetSessionToken session (the secret and token included), so it is treated like the
credentials file: its directory must pass ``safefs.check_directory`` (created 0700), it is
replaced atomically at mode 0600, and it is read only when it is a regular file owned by us and
writable by nobody else. A session file that another user could have planted would make the
daemon sign with their credentials, so such a file is refused, never used.

Every field is checked on the way in (the same character sets as an STS answer) and the file is
bounded in size. ``status`` reads only the expiry; nothing here ever prints a secret.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from credrefresh.answer import ACCESS_KEY_ID_RE, SECRET_RE, TOKEN_RE
from credrefresh.atomic import replace_atomically
from credrefresh.errors import CredentialsFileError
from credrefresh.model import Credentials, format_time, parse_time
from credrefresh.safefs import check_directory, ensure_directory, open_regular

__all__ = ["MAX_SIZE", "StoredSession", "load_session", "read_session", "save_session"]

VERSION: Final = 1
MAX_SIZE: Final = 128 * 1024  # a session token is a few KiB (TOKEN_RE allows up to 64 KiB)


@dataclass(frozen=True, slots=True)
class StoredSession:
    """A session read back from the file.

    Attributes:
        serial: The MFA device the session was obtained with.
        credentials: The session's credentials (secret fields excluded from ``repr``).
        obtained_at: When ``credrefresh mfa`` obtained it.
    """

    serial: str
    credentials: Credentials
    obtained_at: datetime


def save_session(path: str, session: StoredSession) -> None:
    """Replace the session file atomically (0600), creating its directory 0700.

    Raises:
        CredentialsFileError: the directory is unsafe or the file cannot be written.
    """
    ensure_directory(os.path.dirname(path))
    creds = session.credentials
    document = {
        "version": VERSION,
        "mfa_serial": session.serial,
        "obtained_at": format_time(session.obtained_at),
        "access_key_id": creds.access_key_id,
        "secret_access_key": creds.secret_access_key,
        "session_token": creds.session_token,
        "expiration": format_time(creds.expiration),
    }
    try:
        replace_atomically(path, json.dumps(document, indent=1).encode())
    except OSError as exc:
        raise CredentialsFileError(
            f"{path}: cannot write the MFA session: {exc.strerror}"
        ) from None


def load_session(path: str) -> StoredSession | None:
    """The stored session, or ``None`` when there is none.

    Raises:
        CredentialsFileError: the file or its directory is unsafe, or its content is not a
            session (the message names the problem, never a value).
    """
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        return None  # nothing stored yet (credrefresh mfa creates the directory)
    check_directory(directory)
    fd = open_regular(path, "MFA session file")
    if fd is None:
        return None
    with open(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if info.st_uid != os.geteuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise CredentialsFileError(
                f"{path}: the MFA session file must be owned by uid {os.geteuid()} and "
                f"writable by no one else (owner uid {info.st_uid}, mode "
                f"{stat.S_IMODE(info.st_mode):04o}); not used. Remove it and run credrefresh mfa"
            )
        data = handle.read(MAX_SIZE + 1)
    if len(data) > MAX_SIZE:
        raise CredentialsFileError(f"{path}: larger than {MAX_SIZE} bytes; not an MFA session")
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):  # a few KiB of "[" recurse past the stack
        raise CredentialsFileError(f"{path}: not JSON; not an MFA session") from None
    return parse_session(path, document)


def read_session(path: str) -> tuple[StoredSession | None, str | None]:
    """The stored session and ``None``, or ``None`` and why the file cannot be used."""
    try:
        return load_session(path), None
    except CredentialsFileError as exc:
        return None, str(exc)


def parse_session(path: str, document: Any) -> StoredSession:  # noqa: ANN401 - parsed JSON
    """The session in a parsed ``document`` (pure)."""

    def bad(what: str) -> CredentialsFileError:
        return CredentialsFileError(f"{path}: {what}; not an MFA session. Run credrefresh mfa")

    if not isinstance(document, dict) or document.get("version") != VERSION:
        raise bad(f"not a version {VERSION} session document")
    fields = {
        "mfa_serial": None,
        "access_key_id": ACCESS_KEY_ID_RE,
        "secret_access_key": SECRET_RE,
        "session_token": TOKEN_RE,
    }
    values: dict[str, str] = {}
    for key, pattern in fields.items():
        value = document.get(key)
        if not isinstance(value, str) or (pattern is not None and not pattern.fullmatch(value)):
            raise bad(f"{key} is missing or malformed")
        values[key] = value
    expiration = parse_time(str(document.get("expiration") or ""))
    obtained = parse_time(str(document.get("obtained_at") or ""))
    if expiration is None or obtained is None:
        raise bad("expiration or obtained_at is missing or not a time")
    return StoredSession(
        serial=values["mfa_serial"],
        credentials=Credentials(
            values["access_key_id"],
            values["secret_access_key"],
            values["session_token"],
            expiration,
        ),
        obtained_at=obtained,
    )
