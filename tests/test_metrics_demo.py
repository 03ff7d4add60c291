"""Prometheus metrics scraped from a running daemon, and the offline demo as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial

import aiohttp
import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from credrefresh.engine import Daemon
from credrefresh.errors import RefreshFailed
from credrefresh.metrics import Metrics
from engine_support import JumpClock, Recorder, ScriptedSts, make_config


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.anyio
async def test_metrics_endpoint_reports_refreshes_failures_and_expiry(tmp_path):
    """Scraping /metrics gives refresh and failure counters, expiry gauges and histograms."""
    clock = JumpClock()
    config = make_config(tmp_path, ["good", "bad"])
    sts = ScriptedSts(clock, lifetime=3600)
    sts.always["bad"] = RefreshFailed("AccessDenied", "not authorized", transient=False)
    log = Recorder()
    metrics = Metrics("127.0.0.1", 0)
    daemon = Daemon(
        config,
        sts,
        log=log,
        clock=clock,
        handle_signals=False,
        start_spread=0.0,
        observer=metrics,
        services=[partial(metrics.serve, log)],
    )
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        assert log.named("metrics.listening")[0]["address"] == f"127.0.0.1:{metrics.port}"
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{metrics.port}/metrics"
            async with session.get(url) as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                text = await response.text()
        daemon.stop()
    got = samples(text)
    assert got[("credrefresh_refreshes_total", (("profile", "good"),))] == 1
    failure_key = (
        "credrefresh_refresh_failures_total",
        (("error_code", "AccessDenied"), ("profile", "bad")),
    )
    assert got[failure_key] == 1
    left = got[("credrefresh_credentials_seconds_until_expiry", (("profile", "good"),))]
    assert 3500 < left <= 3600
    assert ("credrefresh_credentials_seconds_until_expiry", (("profile", "bad"),)) not in got
    assert got[("credrefresh_consecutive_failures", (("profile", "bad"),))] == 1
    assert got[("credrefresh_file_writes_total", ())] == 1
    assert got[("credrefresh_sts_call_seconds_count", ())] == 1
    assert got[("credrefresh_file_write_seconds_count", ())] >= 1
    assert "ToKeN" not in text
    assert "SeCrEt" not in text


def test_demo_runs_offline_and_exits_zero(tmp_path):
    """The demo refreshes short-lived credentials against its embedded STS and exits 0."""
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "credrefresh",
            "demo",
            "--duration",
            "5",
            "--lifetime",
            "2",
            "--roles",
            "2",
            "--log-format",
            "json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    names = [e["event"] for e in events]
    assert names[0] == "daemon.started"
    assert names[-1] == "daemon.stopped"
    refreshed = [e for e in events if e["event"] == "role.refreshed"]
    assert len(refreshed) >= 4  # the first round and at least one refresh of each
    assert {e["profile"] for e in refreshed} == {"demo-0", "demo-1"}
    assert (
        "AWS_DEFAULT_REGION=us-east-1 aws --profile demo-0 sts get-caller-identity" in result.stderr
    )
    assert "Traceback" not in result.stderr


@pytest.mark.anyio
async def test_metrics_follow_a_profile_from_fresh_to_expired(tmp_path):
    """Seconds until expiry is positive while fresh and negative once refreshes fail past expiry."""
    clock = JumpClock()
    config = make_config(tmp_path, ["p"])
    sts = ScriptedSts(clock, lifetime=0.5)
    log = Recorder()
    metrics = Metrics("127.0.0.1", 0)
    daemon = Daemon(
        config,
        sts,
        log=log,
        clock=clock,
        handle_signals=False,
        start_spread=0.0,
        observer=metrics,
        services=[partial(metrics.serve, log)],
    )
    url = ""

    async def scrape() -> dict:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return samples(await response.text())

    key = ("credrefresh_credentials_seconds_until_expiry", (("profile", "p"),))
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        url = f"http://127.0.0.1:{metrics.port}/metrics"
        fresh = await scrape()
        sts.always["p"] = RefreshFailed("Throttling", "Rate exceeded", transient=True)
        await log.wait_count("role.expired", 1)
        expired = await scrape()
        daemon.stop()
    assert 0 < fresh[key] <= 0.5
    assert expired[key] < 0
    throttled = (
        "credrefresh_refresh_failures_total",
        (("error_code", "Throttling"), ("profile", "p")),
    )
    assert expired[throttled] >= 1


def test_metrics_port_in_use_is_a_config_error_without_traceback(tmp_path, fake_sts):
    """A metrics address that cannot be bound stops run with exit 78 and a clear message."""
    import socket  # noqa: PLC0415

    from process_support import clean_env, run_cli, write_config  # noqa: PLC0415

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(
            tmp_path / "c.toml",
            tmp_path / "credentials",
            fake_sts.url,
            ["a"],
            metrics_address=f"127.0.0.1:{port}",
        )
        result = run_cli(["run", "--config", str(config)], clean_env(tmp_path), timeout=30)
    assert result.returncode == 78
    assert f"metrics_address: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_dropped_output_lines_are_a_metric():
    """The count of log lines dropped on a dead stream is exported."""
    from credrefresh.logs import dropped_lines  # noqa: PLC0415

    text = Metrics("127.0.0.1", 0).render().decode()
    assert f"credrefresh_output_lines_dropped_total {float(dropped_lines())}" in text
