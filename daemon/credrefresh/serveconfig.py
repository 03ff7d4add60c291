"""The ``[serve]`` table: where the credentials endpoint listens and who may ask it.

Validated once here (called by ``config``), into a frozen dataclass that cannot hold a
non-loopback address. Pure: no I/O; the token file is created by the endpoint when it starts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

__all__ = ["SERVE_KEYS", "TOKEN_NAME", "ServeConfig", "parse_serve"]

SERVE_KEYS: Final = ("address", "token_file", "profiles")
TOKEN_NAME: Final = "serve-token"  # noqa: S105 - the default token file's name, in the state directory
_Fail = Callable[[str, str], None]
_ADDRESS_RE: Final = re.compile(
    r"(?:\[(?P<v6>[0-9a-fA-F:]+)\]|(?P<v4>[0-9.]+)):(?P<port>[0-9]{1,5})"
)


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """A validated ``[serve]`` table.

    Attributes:
        host: A loopback IP literal (``127.x.x.x`` or ``::1``), never a name.
        port: The TCP port (1-65535 in a file; 0, a free port, only when built in code).
        token_file: Absolute path of the file holding the bearer token.
        profiles: The managed profiles served; ``None`` serves every managed profile.
    """

    host: str
    port: int
    token_file: str
    profiles: tuple[str, ...] | None = None

    @property
    def netloc(self) -> str:
        """``host:port`` as it appears in a URL and in the ``Host`` header."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def url(self, profile: str) -> str:
        """The URL that serves ``profile``."""
        return f"http://{self.netloc}/v1/credentials/{profile}"

    def serves(self, profile: str) -> bool:
        """Whether ``profile`` may be served at all (it must also be managed)."""
        return self.profiles is None or profile in self.profiles


def parse_serve(
    value: object,
    *,
    path: str,
    state_dir: str,
    managed: set[str],
    expand: Callable[[str], str] = os.path.abspath,
) -> tuple[ServeConfig | None, list[str]]:
    """``[serve]`` from the parsed TOML: the config (``None`` when absent) and its problems."""
    if value is None:
        return None, []
    problems: list[str] = []

    def fail(key: str, message: str) -> None:
        problems.append(f"{path}: serve.{key}: {message}")

    if not isinstance(value, Mapping):
        return None, [f"{path}: serve: expected a table, got {type(value).__name__}"]
    for key in value:
        if key not in SERVE_KEYS:
            fail(str(key), f"unknown key; expected one of: {', '.join(SERVE_KEYS)}")
    address = _address(value.get("address"), fail)
    token_file = _token_file(value.get("token_file"), state_dir, expand, fail)
    profiles = _profiles(value.get("profiles"), managed, fail)
    if problems or address is None or token_file is None:
        return None, problems
    return ServeConfig(address[0], address[1], token_file, profiles), []


def _address(value: object, fail: _Fail) -> tuple[str, int] | None:
    if value is None:
        fail("address", 'missing required key, e.g. address = "127.0.0.1:9911"')
        return None
    match = _ADDRESS_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None or not 1 <= int(match["port"]) <= 65535:  # noqa: PLR2004
        fail(
            "address",
            "expected a loopback IP literal and a port 1-65535, such as '127.0.0.1:9911' or "
            f"'[::1]:9911', got {value!r}",
        )
        return None
    host = match["v6"] or match["v4"]
    import ipaddress  # noqa: PLC0415 - only a configuration with [serve] holds one

    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        fail(
            "address",
            f"{host!r} is not a loopback IP literal; the endpoint hands out credentials and "
            "listens only on 127.x.x.x or ::1 (not 'localhost', not 0.0.0.0)",
        )
        return None
    return str(ipaddress.ip_address(host)), int(match["port"])


def _token_file(
    value: object, state_dir: str, expand: Callable[[str], str], fail: _Fail
) -> str | None:
    if value is None:
        return os.path.join(state_dir, TOKEN_NAME)
    if not isinstance(value, str) or not value.strip():
        fail("token_file", "expected a non-empty path string")
        return None
    return expand(value)


def _profiles(value: object, managed: set[str], fail: _Fail) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        fail("profiles", "expected a list of profile names")
        return None
    unknown = [p for p in value if p not in managed]
    if unknown:
        fail("profiles", f"not managed profiles (no [[roles]] entry): {', '.join(unknown)}")
    return tuple(value)
