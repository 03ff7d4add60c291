"""What the credentials endpoint hands out: the credentials last written, kept in memory.

The engine records each profile's credentials when they reach the file, and forgets a profile
when it is removed; the endpoint only ever reads from here, so a request never calls STS.
``read_secrets`` is the one reader of the secret values in the file (for a warm start and for
``credential-process``); nothing it returns is ever logged.
"""

from __future__ import annotations

import configparser
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from credrefresh.credtext import MARKER_KEY
from credrefresh.model import Credentials, RoleState, parse_time

__all__ = ["FileCredentials", "Served", "read_secrets"]


@dataclass(frozen=True, slots=True)
class FileCredentials:
    """One profile's credentials as the file holds them.

    Attributes:
        profile: The section name.
        managed: Whether credrefresh wrote it (it carries the marker).
        credentials: The keys and their expiry; ``None`` when incomplete or without an expiry.
        role_arn: The role credrefresh recorded, if any.
    """

    profile: str
    managed: bool
    credentials: Credentials | None = field(repr=False)
    role_arn: str | None


def read_secrets(path: str) -> dict[str, FileCredentials]:
    """Every profile of the credentials file, secrets included.

    Raises:
        OSError: the file cannot be read.
        configparser.Error: it does not parse.
    """
    text = Path(path).read_text(encoding="utf-8").removeprefix("\ufeff")
    parser = configparser.RawConfigParser(default_section="\x00credrefresh-no-default")
    parser.read_string(text, source="credentials file")
    found: dict[str, FileCredentials] = {}
    for name in parser.sections():
        section = parser[name]
        key = section.get("aws_access_key_id", "").strip()
        secret = section.get("aws_secret_access_key", "").strip()
        token = section.get("aws_session_token", "").strip()
        expires = parse_time(section.get("x_security_token_expires", ""))
        complete = bool(key and secret and token) and expires is not None
        found[name] = FileCredentials(
            profile=name,
            managed=MARKER_KEY in section,
            credentials=Credentials(key, secret, token, expires) if complete else None,  # type: ignore[arg-type]
            role_arn=section.get("credrefresh_role_arn"),
        )
    return found


@dataclass(frozen=True, slots=True)
class Entry:
    """What is served for one profile.

    Attributes:
        credentials: The credentials last written.
        role_arn: The role they are for (its account is the ``AccountId`` served).
    """

    credentials: Credentials = field(repr=False)
    role_arn: str


class Served:
    """The credentials last written, per profile (owned by the engine, read by the endpoint)."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}

    def keep(self, profile: str, credentials: Credentials, role_arn: str) -> None:
        """``profile`` now has these credentials in the file."""
        self._entries[profile] = Entry(credentials, role_arn)

    def drop(self, profiles: Iterable[str]) -> None:
        """These profiles are no longer kept."""
        for name in profiles:
            self._entries.pop(name, None)

    def get(self, profile: str, now: datetime) -> Entry | None:
        """What to hand out for ``profile``: ``None`` when absent or expired."""
        entry = self._entries.get(profile)
        if entry is None or entry.credentials.expiration <= now:
            return None
        return entry

    @staticmethod
    def warm(states: Mapping[str, RoleState], unattempted: AbstractSet[str]) -> dict[str, str]:
        """``profile -> role_arn`` of the roles a start-up scheduled from the file (warm)."""
        return {n: s.role.role_arn for n, s in states.items() if n not in unattempted}

    def load(self, path: str, warm: dict[str, str]) -> None:
        """Adopt the file's credentials of warm profiles (``profile -> role_arn``) at start-up.

        A file that cannot be read leaves nothing adopted: those profiles are answered 503
        until their next refresh.
        """
        try:
            found = read_secrets(path)
        except (OSError, UnicodeDecodeError, configparser.Error):
            return
        for name, role_arn in warm.items():
            entry = found.get(name)
            if (
                entry is not None
                and entry.managed
                and entry.role_arn == role_arn
                and entry.credentials is not None
            ):
                self.keep(name, entry.credentials, role_arn)
