"""The seams the engine is driven through: its clock, its observer (metrics) and its services.

Protocols only (and the real clock), so tests drive the engine with a jumping clock and a
recording observer, and production wires in the wall clock and Prometheus.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from credrefresh.model import Issued, RoleState

__all__ = ["Clock", "Observer", "Service", "SystemClock"]

# A long-running helper (the metrics endpoint) started in the daemon's task group.
Service = Callable[..., Coroutine[Any, Any, None]]


class Clock(Protocol):
    """Wall-clock time, injectable so tests can jump it."""

    def now(self) -> datetime:
        """The current time, aware, UTC."""
        ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> datetime:
        """The current time, aware, UTC."""
        return datetime.now(UTC)


class Observer(Protocol):
    """Receives what happens, for metrics. Every method must be cheap and never raise."""

    def refreshed(self, issued: Issued) -> None:
        """Credentials for a profile were written."""

    def failed(self, profile: str, code: str) -> None:
        """A refresh failed."""

    def written(self, duration_s: float, changed: bool) -> None:
        """The credentials file was written."""

    def states(self, states: Mapping[str, RoleState]) -> None:
        """The role states changed."""
