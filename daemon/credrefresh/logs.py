"""structlog set-up and the redaction processor.

Every line on stdout is one JSON object with ``timestamp`` (ISO 8601 UTC), ``level`` and ``event``
when stdout is not a terminal; a console renderer is used on a terminal or on request. The
redaction processor runs last before rendering, so no secret reaches any output at any level.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Final, TextIO

import structlog

__all__ = ["REDACTED", "configure", "get_logger", "redact", "scrub"]

REDACTED: Final = "[REDACTED]"

# Keys whose values are secret whatever they look like.
SECRET_KEYS: Final = frozenset(
    {
        "aws_secret_access_key",
        "aws_session_token",
        "aws_security_token",
        "secret_access_key",
        "secretaccesskey",
        "session_token",
        "sessiontoken",
        "security_token",
        "credentials",
        "password",
        "token",
    }
)

# The shapes of AWS secrets: a session token is a long base64 run; a secret access key is 40
# base64 characters mixing upper and lower case. Access key ids (20 characters), ARNs (colons)
# and lowercase hex digests never match, so they stay readable for audits. "=" may follow a key
# name ("aws_secret_access_key=...") so it does not count as part of the run around a key.
TOKEN_RE: Final = re.compile(r"[A-Za-z0-9/+=]{100,}")
SECRET_RE: Final = re.compile(
    r"(?<![A-Za-z0-9/+])(?=[A-Za-z0-9/+]*[a-z])(?=[A-Za-z0-9/+]*[A-Z])"
    r"[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])"
)


def scrub(text: str) -> str:
    """Replace anything shaped like an AWS secret key or session token in ``text``."""
    if len(text) < 40:  # noqa: PLR2004 - nothing shorter can hold a secret
        return text
    return SECRET_RE.sub(REDACTED, TOKEN_RE.sub(REDACTED, text))


def _clean(value: object) -> object:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {
            k: REDACTED if str(k).lower() in SECRET_KEYS else _clean(v) for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return scrub(str(value))


def redact(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Blank secret-named keys and secret-shaped values, recursively (a structlog processor)."""
    for key, value in list(event_dict.items()):
        if key.lower() in SECRET_KEYS:
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _clean(value)
    return event_dict


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog once for the process.

    ``fmt`` is ``json``, ``console`` or ``auto`` (console on a terminal, JSON otherwise).
    """
    out = stream or sys.stdout
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if console
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


def get_logger() -> Any:  # noqa: ANN401 - structlog's bound loggers are dynamically typed
    """The project's logger."""
    return structlog.get_logger("credrefresh")
