"""The standard library's logging, routed into ``library.log`` events.

botocore, aiobotocore, asyncio and aiohttp log through ``logging``; ``route_library_logging``
puts a ``LibraryHandler`` on the root logger, so their records become rate-limited events
without tracebacks. Apart from ``credrefresh.logs`` (which calls it from ``configure``) so
that commands that never log (``check``, ``status``) do not import ``logging``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from credrefresh.logs import get_logger

__all__ = ["LibraryHandler", "route_library_logging"]


class LibraryHandler(logging.Handler):
    """Turns a library's log record (WARNING and up) into a ``library.log`` event.

    The exception, if any, becomes ``error`` (its class and message): never a traceback. Each
    logger gets ``burst`` events per ``window`` seconds; what it logs beyond that is counted
    and the count rides on its next event as ``suppressed`` (an accept-error flood must not
    become a log flood).
    """

    def __init__(
        self,
        *,
        burst: int = 5,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(logging.WARNING)
        self.burst = burst
        self.window = window
        self.clock = clock
        self.windows: dict[str, tuple[float, int, int]] = {}  # name: (start, sent, suppressed)

    def emit(self, record: logging.LogRecord) -> None:
        """Log ``record`` as one event, unless its logger is over its budget."""
        now = self.clock()
        start, sent, suppressed = self.windows.get(record.name, (now, 0, 0))
        if now - start >= self.window:
            start, sent = now, 0
        if sent >= self.burst:
            self.windows[record.name] = (start, sent, suppressed + 1)
            return
        self.windows[record.name] = (start, sent + 1, 0)
        fields: dict[str, Any] = {"logger": record.name}
        try:
            fields["message"] = record.getMessage()
        except (TypeError, ValueError):  # a library's bad format string
            fields["message"] = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            fields["error"] = f"{type(exc).__name__}: {exc}"
        if suppressed:
            fields["suppressed"] = suppressed
        # One level per event (see events.CATALOGUE); the library's own is a field.
        get_logger().warning("library.log", record_level=record.levelname.lower(), **fields)


def route_library_logging(handler: logging.Handler | None = None) -> None:
    """Send every standard-library log record (WARNING and up) to ``handler``.

    With a handler on the root logger, Python's last-resort handler (stderr, with tracebacks)
    is never used. Handlers someone else installed are left alone; ours is replaced.
    """
    logging.raiseExceptions = False  # a failing handler must not print a traceback either
    root = logging.getLogger()
    for old in root.handlers[:]:
        if isinstance(old, LibraryHandler):
            root.removeHandler(old)
    root.addHandler(handler or LibraryHandler())
    root.setLevel(logging.WARNING)
    logging.captureWarnings(capture=True)
