"""The credentials endpoint in-process: what it answers, what it refuses, and what it logs."""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from botocore.configloader import raw_config_parse

from credrefresh import serve as serve_module
from credrefresh.config import Config
from credrefresh.engine import Daemon
from credrefresh.errors import ConfigError, RefreshFailed
from credrefresh.serve import Endpoint, ensure_token
from credrefresh.serveconfig import ServeConfig
from engine_support import (
    SECRET_PREFIX,
    TOKEN_PREFIX,
    JumpClock,
    Recorder,
    ScriptedSts,
    make_config,
)

pytestmark = pytest.mark.anyio

DENIED = RefreshFailed("AccessDenied", "not authorized", transient=False)


def serving(tmp_path: Path, profiles: list[str], served: tuple[str, ...] | None = None) -> Config:
    config = make_config(tmp_path, profiles)
    token_file = str(tmp_path / "state" / "serve-token")
    return replace(config, serve=ServeConfig("127.0.0.1", 0, token_file, served))


def build(config: Config, sts: ScriptedSts, clock: JumpClock) -> tuple[Daemon, Endpoint, Recorder]:
    log = Recorder()
    assert config.serve is not None
    endpoint = Endpoint(config.serve, config.path)
    from functools import partial  # noqa: PLC0415

    daemon = Daemon(
        config,
        sts,
        log=log,
        clock=clock,
        handle_signals=False,
        slice_s=0.2,
        start_spread=0.0,
        services=[partial(endpoint.serve, log)],
    )
    endpoint.attach(daemon)
    return daemon, endpoint, log


def token(config: Config) -> str:
    assert config.serve is not None
    return Path(config.serve.token_file).read_text()


async def get(
    endpoint: Endpoint, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{endpoint.port}{path}"
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers=headers or {}) as answer,
    ):
        return answer.status, await answer.json(content_type=None)


def no_secrets(log: Recorder, config: Config) -> None:
    text = repr(log.events)
    assert SECRET_PREFIX not in text
    assert TOKEN_PREFIX not in text
    assert token(config) not in text


async def test_serves_what_was_written_and_audits_it(tmp_path):
    """The answer is the container-provider JSON of the credentials in the file, audited."""
    clock = JumpClock()
    config = serving(tmp_path, ["a", "b"])
    sts = ScriptedSts(clock, lifetime=3600)
    daemon, endpoint, log = build(config, sts, clock)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        status, body = await get(endpoint, "/v1/credentials/a", {"Authorization": token(config)})
        daemon.stop()
    written = raw_config_parse(config.credentials_file)["a"]
    assert status == 200
    assert body == {
        "AccessKeyId": written["aws_access_key_id"],
        "SecretAccessKey": written["aws_secret_access_key"],
        "Token": written["aws_session_token"],
        "Expiration": written["x_security_token_expires"],
        "AccountId": "123456789012",
    }
    [served] = log.named("credentials.served")
    assert served == {
        "event": "credentials.served",
        "log_level": "info",
        "profile": "a",
        "access_key_id": written["aws_access_key_id"],
        "expiration": written["x_security_token_expires"],
        "client": "127.0.0.1",
        "port": served["port"],
    }
    assert isinstance(served["port"], int)
    assert log.named("serve.listening")[0]["address"] == f"127.0.0.1:{endpoint.port}"
    no_secrets(log, config)


async def test_requests_never_call_sts(tmp_path):
    """A hundred answers cost no AssumeRole call: they come from memory."""
    clock = JumpClock()
    config = serving(tmp_path, ["a"])
    sts = ScriptedSts(clock, lifetime=3600)
    daemon, endpoint, log = build(config, sts, clock)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        calls = len(sts.calls)
        for _ in range(100):
            status, _ = await get(endpoint, "/v1/credentials/a", {"Authorization": token(config)})
            assert status == 200
        assert len(sts.calls) == calls == 1
        daemon.stop()
    assert len(log.named("credentials.served")) == 100


REFUSALS = [
    ("no_token", "/v1/credentials/a", {}, 401),
    ("bad_token", "/v1/credentials/a", {"Authorization": "x" * 43}, 403),
    ("origin", "/v1/credentials/a", {"Origin": "https://evil.example"}, 403),
    ("host", "/v1/credentials/a", {"Host": "attacker.example"}, 403),
    ("host", "/v1/credentials/a", {"Host": "localhost"}, 403),
    ("forwarded", "/v1/credentials/a", {"X-Forwarded-For": "10.0.0.1"}, 403),
    ("unknown_profile", "/v1/credentials/nope", {}, 404),
    ("unknown_profile", "/v1/credentials/b", {}, 404),  # managed, but not in serve.profiles
    ("unknown_path", "/latest/meta-data/", {}, 404),
    ("no_credentials", "/v1/credentials/denied", {}, 503),
]


@pytest.mark.parametrize(("reason", "path", "headers", "status"), REFUSALS)
async def test_refusals(tmp_path, reason, path, headers, status):
    """Each refusal has its status, a JSON error, a credentials.refused event, and no secret."""
    clock = JumpClock()
    config = serving(tmp_path, ["a", "b", "denied"], served=("a", "denied"))
    sts = ScriptedSts(clock, lifetime=3600)
    sts.always["denied"] = DENIED
    daemon, endpoint, log = build(config, sts, clock)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        sent = {"Authorization": token(config)}
        if reason == "no_token":
            sent = {}
        sent.update(headers)
        if "Host" in sent and ":" not in sent["Host"]:
            sent["Host"] = f"{sent['Host']}:{endpoint.port}"
        answer_status, body = await get(endpoint, path, sent)
        daemon.stop()
    assert answer_status == status
    assert body["code"] == reason
    assert "AccessKeyId" not in body
    [refused] = log.named("credentials.refused")
    assert refused["reason"] == reason
    assert refused["status"] == status
    assert refused["client"] == "127.0.0.1"
    assert not log.named("credentials.served")
    no_secrets(log, config)


async def test_expired_credentials_are_never_served(tmp_path):
    """Once the last credentials expire and refreshes fail, the answer is 503, not stale keys."""
    clock = JumpClock()
    config = serving(tmp_path, ["a"])
    sts = ScriptedSts(clock, lifetime=60)
    daemon, endpoint, _log = build(config, sts, clock)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        auth = {"Authorization": token(config)}
        assert (await get(endpoint, "/v1/credentials/a", auth))[0] == 200
        sts.always["a"] = DENIED
        clock.offset = timedelta(seconds=61)
        status, body = await get(endpoint, "/v1/credentials/a", auth)
        daemon.stop()
    assert status == 503
    assert body["code"] == "no_credentials"


async def test_warm_start_serves_from_the_file_without_sts(tmp_path):
    """A restart with fresh credentials in the file serves them at once, with no AssumeRole."""
    clock = JumpClock()
    config = serving(tmp_path, ["a"])
    first = ScriptedSts(clock, lifetime=3600)
    daemon, _endpoint, _log = build(config, first, clock)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        daemon.stop()
    second = ScriptedSts(clock, lifetime=3600)
    daemon, endpoint, _log = build(config, second, clock)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        status, body = await get(endpoint, "/v1/credentials/a", {"Authorization": token(config)})
        daemon.stop()
    assert second.calls == []
    assert status == 200
    assert (
        body["AccessKeyId"] == raw_config_parse(config.credentials_file)["a"]["aws_access_key_id"]
    )


async def test_reload_removing_a_profile_stops_serving_it(tmp_path):
    """A profile removed by a reload is no longer served (404), the others still are."""
    clock = JumpClock()
    config = serving(tmp_path, ["a", "b"])
    reloaded = replace(config, roles=config.roles[:1])
    sts = ScriptedSts(clock, lifetime=3600)
    daemon, endpoint, _log = build(config, sts, clock)
    daemon.loader = lambda _path: reloaded
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        auth = {"Authorization": token(config)}
        assert (await get(endpoint, "/v1/credentials/b", auth))[0] == 200
        assert await daemon.reload()
        assert (await get(endpoint, "/v1/credentials/b", auth))[0] == 404
        assert (await get(endpoint, "/v1/credentials/a", auth))[0] == 200
        assert daemon.served.get("b", clock.now()) is None
        daemon.stop()


async def test_connections_over_the_limit_are_closed(tmp_path, monkeypatch):
    """Past the connection cap a new connection is closed at once."""
    monkeypatch.setattr(serve_module, "LIMITS", replace(serve_module.LIMITS, max_connections=2))
    clock = JumpClock()
    config = serving(tmp_path, ["a"])
    sts = ScriptedSts(clock, lifetime=3600)
    daemon, endpoint, log = build(config, sts, clock)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        request = (
            f"GET /v1/credentials/a HTTP/1.1\r\nHost: 127.0.0.1:{{port}}\r\n"
            f"Authorization: {token(config)}\r\n\r\n"
        )
        held = []
        for _ in range(2):  # two kept-alive connections, each known to the server
            stream = await anyio.connect_tcp("127.0.0.1", endpoint.port)
            await stream.send(request.format(port=endpoint.port).encode())
            with anyio.fail_after(5):
                assert (await stream.receive()).startswith(b"HTTP/1.1 200")
            held.append(stream)
        extra = await anyio.connect_tcp("127.0.0.1", endpoint.port)
        with (
            anyio.fail_after(5),
            pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError)),
        ):
            await extra.receive()
        for stream in (*held, extra):
            await stream.aclose()
        daemon.stop()
    assert log.named("serve.listening")[0]["max_connections"] == 2


async def test_idle_connections_are_closed(tmp_path, monkeypatch):
    """A connection that sends no complete request head within the idle timeout is closed."""
    quick = replace(serve_module.LIMITS, idle_timeout=0.2)
    monkeypatch.setattr(serve_module, "LIMITS", quick)
    clock = JumpClock()
    config = serving(tmp_path, ["a"])
    sts = ScriptedSts(clock, lifetime=3600)
    daemon, endpoint, _log = build(config, sts, clock)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        stream = await anyio.connect_tcp("127.0.0.1", endpoint.port)
        await stream.send(b"GET /v1/credentials/a HTTP/1.1\r\nHost: 127.0.0.1")  # and no more
        with (
            anyio.fail_after(5),
            pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError)),
        ):
            await stream.receive()
        await stream.aclose()
        daemon.stop()


async def test_oversized_headers_are_refused(tmp_path):
    """A request with a header line over the size limit is refused by the parser."""
    clock = JumpClock()
    config = serving(tmp_path, ["a"])
    sts = ScriptedSts(clock, lifetime=3600)
    daemon, endpoint, _log = build(config, sts, clock)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        headers = {"Authorization": token(config), "X-Big": "b" * 8000}
        url = f"http://127.0.0.1:{endpoint.port}/v1/credentials/a"
        async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as answer:
            status = answer.status
        daemon.stop()
    assert status in {400, 431}


def test_token_file_is_created_private_without_newline(tmp_path):
    """A missing token file is created 0600 with 43 random URL-safe characters, no newline."""
    serve = ServeConfig("127.0.0.1", 0, str(tmp_path / "d" / "token"))
    made = ensure_token(serve, "c.toml")
    text = Path(serve.token_file).read_bytes()
    assert made == text
    assert len(text) >= 43
    assert b"\n" not in text
    assert stat.S_IMODE(os.stat(serve.token_file).st_mode) == 0o600
    assert ensure_token(serve, "c.toml") == made  # kept across restarts


@pytest.mark.parametrize(
    ("content", "mode", "problem"),
    [
        (b"t" * 43 + b"\n", 0o600, "line break"),
        (b"short", 0o600, "at least 32"),
        (b"t" * 43, 0o604, "every user"),
    ],
)
def test_unusable_token_files_are_refused(tmp_path, content, mode, problem):
    """A token with a newline, too short, or readable by every user stops the start."""
    path = tmp_path / "token"
    path.write_bytes(content)
    path.chmod(mode)
    with pytest.raises(ConfigError) as caught:
        ensure_token(ServeConfig("127.0.0.1", 0, str(path)), "c.toml")
    assert "serve.token_file" in caught.value.problems[0]
    assert problem in caught.value.problems[0]
