"""Output never kills: real pipes whose reader is gone, a full device, and library logging."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
import structlog
from botocore.configloader import raw_config_parse

from credrefresh.librarylog import LibraryHandler, route_library_logging
from credrefresh.logs import Output, configure, dropped_lines
from process_support import NotifySocket, clean_env, write_config
from support.fakests import Faults

FAST = {"backoff_initial": 0.2, "backoff_max": 1.0, "write_delay": 0.1}
DEATH = ("Traceback", "Exception ignored", "BrokenPipeError")


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(capture=False)
    structlog.reset_defaults()


def closed_pipe() -> io.TextIOWrapper:
    """The write end of a real pipe whose read end is already closed."""
    read, write = os.pipe()
    os.close(read)
    return open(write, "w")


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """credrefresh with stdout a pipe whose reader is gone before the first line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "credrefresh", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # like `| head -0`: nobody reads stdout any more
    return proc


def test_a_closed_pipe_drops_lines_counts_them_and_reports_once():
    """Writes to a pipe with no reader are dropped and counted; the other stream hears once."""
    stream = closed_pipe()
    reports: list[tuple[str, str]] = []
    out = Output(stream, "stdout", lambda name, error: reports.append((name, error)))
    before = dropped_lines()
    for n in range(3):
        assert out.write(f"line {n}\n") == len(f"line {n}\n")
    out.flush()
    assert dropped_lines() - before == 3
    assert reports == [("stdout", "[Errno 32] Broken pipe")]
    stream.write("after\n")
    stream.flush()  # now /dev/null: Python's own flush at exit cannot fail either
    stream.close()


def test_a_full_device_drops_lines_but_keeps_trying():
    """ENOSPC drops the line (counted, reported once) and leaves the stream usable later."""
    with open("/dev/full", "w") as stream:
        reports: list[str] = []
        out = Output(stream, "stdout", lambda _name, error: reports.append(error))
        before = dropped_lines()
        out.write("a\n")
        out.write("b\n")
        assert dropped_lines() - before == 2
        assert not out.broken
        assert len(reports) == 1
        assert "No space left on device" in reports[0]


def test_a_closed_stream_object_is_a_dropped_line():
    """A stream already closed (no descriptor any more) never raises either."""
    stream = io.StringIO()
    stream.close()
    out = Output(stream, "stderr")
    before = dropped_lines()
    out.write("x\n")
    out.write("y\n")
    assert dropped_lines() - before == 2


def test_library_records_become_events_without_a_traceback():
    """A botocore warning with an exception is one JSON event naming the error, no traceback."""
    stream = io.StringIO()
    configure("json", "warning", stream=stream)
    try:
        raise ValueError("source broke")  # noqa: TRY301 - a real exception with a traceback
    except ValueError:
        logging.getLogger("botocore.credentials").exception("Refreshing failed")
    logging.getLogger("botocore.hooks").debug("noise")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0].pop("timestamp")
    assert lines == [
        {
            "event": "library.log",
            "level": "warning",
            "record_level": "error",
            "logger": "botocore.credentials",
            "message": "Refreshing failed",
            "error": "ValueError: source broke",
        }
    ]
    assert "Traceback" not in stream.getvalue()


def test_library_records_are_rate_limited_per_logger():
    """Past its burst a logger's records are counted, and the count rides on its next event."""
    now = [0.0]
    handler = LibraryHandler(burst=2, window=10.0, clock=lambda: now[0])
    stream = io.StringIO()
    configure("json", "info", stream=stream)
    route_library_logging(handler)
    flood = logging.getLogger("asyncio")
    for _ in range(50):
        flood.error("socket.accept() out of system resource")
    now[0] = 10.0
    flood.error("socket.accept() out of system resource")
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(events) == 3
    assert events[2]["suppressed"] == 48


def test_once_with_stdout_closed_writes_every_profile(tmp_path, fake_sts):
    """``once | head -0`` still writes every profile, exits 0 and prints no traceback."""
    creds = tmp_path / "credentials"
    path = write_config(tmp_path / "c.toml", creds, fake_sts.url, ["a", "b", "c"])
    proc = spawn(["once", "--config", str(path)], clean_env(tmp_path))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert sorted(raw_config_parse(str(creds))) == ["a", "b", "c"]
    assert not [word for word in DEATH if word in err], err
    assert err.count("cannot write to stdout") == 1


@pytest.mark.parametrize("command", ["check", "status"])
def test_check_and_status_into_a_closed_pipe_exit_quietly(tmp_path, fake_sts, command):
    """``check | head -0`` and ``status | head -0`` exit with their status and print nothing."""
    path = write_config(tmp_path / "c.toml", tmp_path / "credentials", fake_sts.url, ["a"])
    proc = spawn([command, "--config", str(path)], clean_env(tmp_path))
    _, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (0 if command == "check" else 2, "")


@pytest.mark.slow
def test_run_with_stdout_closed_keeps_rotating(tmp_path, fake_sts):
    """``run`` whose stdout reader is gone keeps rotating credentials and stops cleanly."""
    fake_sts.set_faults(Faults(latency=0, lifetime=2))
    creds = tmp_path / "credentials"
    path = write_config(tmp_path / "c.toml", creds, fake_sts.url, ["a", "b"], refresh=FAST)
    notify = NotifySocket(tmp_path / "notify.sock")
    proc = spawn(["run", "--config", str(path)], clean_env(tmp_path, NOTIFY_SOCKET=notify.path))
    try:
        notify.wait_for(lambda m: m == "READY=1")
        first = {s["aws_access_key_id"] for s in raw_config_parse(str(creds)).values()}
        fake_sts.wait_for_stats(lambda s: s.ok >= 8, timeout=30)  # three rounds after the first
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
        notify.close()
    assert proc.returncode == 0, err
    last = {s["aws_access_key_id"] for s in raw_config_parse(str(creds)).values()}
    assert not last & first
    assert not [word for word in DEATH if word in err], err
    assert err.count("cannot write to stdout") == 1


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error"])
def test_sso_source_not_logged_in_prints_no_traceback(tmp_path, fake_sts, level):
    """An SSO source without a login is one documented error per role, no traceback anywhere."""
    aws_config = tmp_path / "aws-config"
    aws_config.write_text(
        "[profile sso-dev]\n"
        "sso_start_url = https://example.awsapps.com/start\n"
        "sso_region = us-east-1\n"
        "sso_account_id = 123456789012\n"
        "sso_role_name = Dev\n"
    )
    path = write_config(tmp_path / "c.toml", tmp_path / "credentials", fake_sts.url, ["a", "b"])
    with path.open("a") as toml:
        toml.write('[source]\nprofile = "sso-dev"\n')
    env = clean_env(tmp_path, AWS_CONFIG_FILE=str(aws_config))
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(key)
    result = subprocess.run(
        [sys.executable, "-m", "credrefresh", "once", "--config", str(path), "--log-level", level],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert (result.stdout + result.stderr).count("Traceback") == 0
    assert result.stderr == ""
    events = [json.loads(line) for line in result.stdout.splitlines()]
    failed = [e for e in events if e["event"] == "role.refresh_failed"]
    codes = [(e["error_code"], e["transient"]) for e in failed]
    assert codes == [("SourceLoginRequired", False)] * 2
    assert failed[0]["error"].endswith("run: aws sso login --profile sso-dev")
