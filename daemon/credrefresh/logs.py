"""structlog set-up and the redaction processor.

Every line on stdout is one JSON object with ``timestamp`` (ISO 8601 UTC), ``level`` and ``event``
when stdout is not a terminal; a console renderer is used on a terminal or on request. The
redaction processor runs last before rendering, so no secret reaches any output at any level.

Output never kills: a line that cannot be written (the reader of a pipe went away, a closed
descriptor, a full disk) is dropped and counted (``dropped_lines``), and reported once on the
other stream. The standard library's logging (botocore, aiobotocore, asyncio, aiohttp) is
routed into ``library.log`` events (``credrefresh.librarylog``), without tracebacks and
rate-limited, so an expected failure never prints a traceback anywhere.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import sys
from collections.abc import Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Final, TextIO

if TYPE_CHECKING:
    import structlog.typing

__all__ = [
    "REDACTED",
    "Output",
    "configure",
    "dropped_lines",
    "get_logger",
    "redact",
    "scrub",
    "stderr",
    "stdout",
]

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


# Lines dropped because their stream failed, for the metrics. Module state, but a process has
# one stdout and one stderr, and the count must survive a reconfigure.
_dropped = 0

# After these the stream is gone for good; after others (ENOSPC, EIO) a later line may pass.
GONE: Final = frozenset({errno.EPIPE, errno.EBADF, errno.ECONNRESET})


def dropped_lines() -> int:
    """How many output lines were dropped because their stream could not be written."""
    return _dropped


def _fileno(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (OSError, ValueError, AttributeError):
        return None


def _silence(fd: int) -> None:
    """Point ``fd`` at /dev/null, so nothing else (Python's flush at exit) fails on it again."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        os.dup2(null, fd)
    except OSError:
        pass
    finally:
        os.close(null)


class Output:
    """A text stream whose failed writes are dropped and counted, never raised.

    Each line goes to the descriptor in ``os.write`` calls, so nothing waits in Python's buffer
    to fail again later. ``report`` is called once, with the stream's name and the error, at the
    first failure. ``quiet`` outputs (``check``, ``status``) report nothing.
    """

    def __init__(
        self, stream: TextIO, name: str, report: Callable[[str, str], None] | None = None
    ) -> None:
        self.stream = stream
        self.name = name
        self.report = report
        self.broken = False
        self.reported = False
        self.fd = _fileno(stream)
        if self.fd is not None:
            try:
                stream.flush()  # whatever Python buffered before goes first
            except (OSError, ValueError) as exc:
                self._failed(exc)

    def isatty(self) -> bool:
        """Whether the underlying stream is a terminal."""
        try:
            return self.stream.isatty()
        except (OSError, ValueError):
            return False

    def write(self, text: str) -> int:
        """Write ``text``, or drop and count it if the stream fails."""
        if self.broken:
            self._count()
            return len(text)
        try:
            if self.fd is None:
                self.stream.write(text)
                self.stream.flush()
            else:
                view = memoryview(text.encode("utf-8", "replace"))
                while view:
                    view = view[os.write(self.fd, view) :]
        except (OSError, ValueError) as exc:
            self._failed(exc)
        return len(text)

    def flush(self) -> None:
        """Nothing is buffered here; flush a stream without a descriptor."""
        if self.fd is None and not self.broken:
            try:
                self.stream.flush()
            except (OSError, ValueError) as exc:
                self._failed(exc)

    def _count(self) -> None:
        global _dropped  # noqa: PLW0603 - see _dropped
        _dropped += 1

    def _failed(self, exc: OSError | ValueError) -> None:
        self._count()
        if isinstance(exc, ValueError) or exc.errno in GONE:
            self.broken = True
            if self.fd is not None:
                _silence(self.fd)
        if not self.reported and self.report is not None:
            self.reported = True
            self.report(self.name, scrub(str(exc)) or type(exc).__name__)


def _report_on_stderr(name: str, error: str) -> None:
    """Tell stderr (plain text, like the command line's messages) that stdout failed."""
    line = f"credrefresh: cannot write to {name} ({error}); its lines are dropped and counted\n"
    fd = _fileno(sys.__stderr__) if sys.__stderr__ is not None else None
    if fd is None:
        return
    with contextlib.suppress(OSError):
        os.write(fd, line.encode())


def _report_on_stdout(name: str, error: str) -> None:
    """Tell stdout (as one of our JSON events) that stderr failed."""
    get_logger().error("output.dropped", stream=name, error=error)


def stdout() -> Output:
    """The process's stdout, guarded, reporting a failure once on stderr."""
    return Output(sys.stdout, "stdout", _report_on_stderr)


def stderr() -> Output:
    """The process's stderr, guarded, reporting a failure once on stdout."""
    return Output(sys.stderr, "stderr", _report_on_stdout)


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog once for the process.

    ``fmt`` is ``json``, ``console`` or ``auto`` (console on a terminal, JSON otherwise). Lines
    go to ``stream`` (default: stdout) through an ``Output``; library logging is routed here.
    """
    import logging  # noqa: PLC0415 - check and status never log: they start faster

    import structlog  # noqa: PLC0415

    from credrefresh.librarylog import route_library_logging  # noqa: PLC0415

    out = stream or sys.stdout
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if console
        else structlog.processors.JSONRenderer()
    )
    guarded = stdout() if out is sys.stdout else Output(out, "log stream", _report_on_stderr)
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
        logger_factory=structlog.WriteLoggerFactory(file=guarded),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    route_library_logging()


def get_logger() -> Any:  # noqa: ANN401 - structlog's bound loggers are dynamically typed
    """The project's logger."""
    import structlog  # noqa: PLC0415 - see configure

    return structlog.get_logger("credrefresh")
