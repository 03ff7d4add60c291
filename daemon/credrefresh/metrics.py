"""Prometheus metrics, served by aiohttp inside the daemon's task group (no extra thread).

Off unless ``metrics_address`` is set. Counters are updated by the engine through the
``Observer`` methods; per-profile gauges (seconds until expiry, last success) are computed at
scrape time from the latest snapshot of the role states, so they are always current.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import anyio
from aiohttp import web
from anyio.abc import TaskStatus
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from credrefresh.listener import Limits, hostport, listening, url_of
from credrefresh.logs import dropped_lines
from credrefresh.model import Issued, RoleState

__all__ = ["Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _StateCollector(Collector):
    """Per-profile gauges computed from the latest state snapshot at scrape time."""

    def __init__(self) -> None:
        self.snapshot: Mapping[str, RoleState] = {}

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        now = datetime.now(UTC)
        left = GaugeMetricFamily(
            "credrefresh_credentials_seconds_until_expiry",
            "Seconds until the credentials in the profile expire (negative once expired).",
            labels=["profile"],
        )
        success = GaugeMetricFamily(
            "credrefresh_last_success_timestamp_seconds",
            "Unix time of the last successful refresh written for the profile.",
            labels=["profile"],
        )
        failing = GaugeMetricFamily(
            "credrefresh_consecutive_failures",
            "Refreshes of the profile that failed in a row (0 when healthy).",
            labels=["profile"],
        )
        for name, state in self.snapshot.items():
            if state.expiration is not None:
                left.add_metric([name], (state.expiration - now).total_seconds())
            if state.last_success is not None:
                success.add_metric([name], state.last_success.timestamp())
            failing.add_metric([name], state.attempt)
        yield left
        yield success
        yield failing
        yield CounterMetricFamily(
            "credrefresh_output_lines_dropped",
            "Log lines dropped because stdout or stderr could not be written (a closed pipe).",
            value=dropped_lines(),
        )


class Metrics:
    """The daemon's metrics and the HTTP endpoint that serves them (implements ``Observer``)."""

    def __init__(self, host: str, port: int, config_path: str = "config") -> None:
        self.host = host
        self.port = port
        self.config_path = config_path
        self.registry = CollectorRegistry()
        self.refreshes = Counter(
            "credrefresh_refreshes",
            "Credentials refreshed and written, by profile.",
            ["profile"],
            registry=self.registry,
        )
        self.failures = Counter(
            "credrefresh_refresh_failures",
            "Failed refreshes, by profile and error code.",
            ["profile", "error_code"],
            registry=self.registry,
        )
        self.sts_seconds = Histogram(
            "credrefresh_sts_call_seconds",
            "Duration of successful AssumeRole calls, retries included.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.writes = Counter(
            "credrefresh_file_writes",
            "Atomic replacements of the credentials file.",
            registry=self.registry,
        )
        self.write_seconds = Histogram(
            "credrefresh_file_write_seconds",
            "Time to lock, read, render and replace the credentials file.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self._states = _StateCollector()
        self.registry.register(self._states)

    # -- Observer --------------------------------------------------------------------------

    def refreshed(self, issued: Issued) -> None:
        """Count a written refresh and its STS latency."""
        self.refreshes.labels(issued.profile).inc()
        self.sts_seconds.observe(issued.duration_ms / 1000)

    def failed(self, profile: str, code: str) -> None:
        """Count a failure by error code."""
        self.failures.labels(profile, code).inc()

    def written(self, duration_s: float, changed: bool) -> None:
        """Count a file write."""
        if changed:
            self.writes.inc()
        self.write_seconds.observe(duration_s)

    def states(self, states: Mapping[str, RoleState]) -> None:
        """Take a snapshot (a copy: the scrape must not see a dict being changed)."""
        self._states.snapshot = dict(states)

    # -- HTTP ------------------------------------------------------------------------------

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.render(), headers={"Content-Type": CONTENT_TYPE})

    async def serve(self, log: Any, *, task_status: TaskStatus[None]) -> None:  # noqa: ANN401
        """Serve ``/metrics`` until cancelled; ``task_status.started()`` once listening."""
        limits = Limits()
        app = web.Application(client_max_size=limits.client_max_size)
        app.router.add_get("/metrics", self._metrics)
        async with listening(
            app,
            self.host,
            self.port,
            log,
            limits,
            config_path=self.config_path,
            key="metrics_address",
        ) as listener:
            self.port = listener.port
            log.info(
                "metrics.listening",
                address=hostport(self.host, self.port),
                url=url_of(self.host, self.port, "/metrics"),
                path="/metrics",
                max_connections=listener.cap,
            )
            task_status.started()
            await anyio.sleep_forever()
