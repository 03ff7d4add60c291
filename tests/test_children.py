"""A hung source ``credential_process`` dies with everything it started: on timeout, on SIGTERM."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from aiobotocore.session import AioSession

from credrefresh import children
from process_support import NotifySocket, clean_env, run_cli, write_config

# The helper starts a grandchild, tells the test both pids over a datagram socket, and hangs.
HELPER = """\
import os, socket, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
report = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
report.sendto(f"helper {os.getpid()} {child.pid}".encode(), os.environ["HELPER_REPORT"])
time.sleep(300)
"""


@pytest.fixture
def report(tmp_path):
    sock = NotifySocket(tmp_path / "report.sock")
    yield sock
    sock.close()


def aws_config(tmp_path: Path) -> Path:
    """An AWS config whose profile ``helper`` gets its credentials from the hanging helper."""
    script = tmp_path / "helper.py"
    script.write_text(f"#!{sys.executable}\n{HELPER}")
    script.chmod(0o755)
    path = tmp_path / "aws-config"
    path.write_text(f"[profile helper]\ncredential_process = {script}\n")
    return path


def reported_pids(report: NotifySocket, timeout: float = 20.0) -> list[int]:
    """The helper's and its grandchild's pids, once the helper has started both."""
    index = report.wait_for(lambda m: m.startswith("helper "), timeout=timeout)
    return [int(pid) for pid in report.messages[index].split()[1:]]


def gone(pid: int, timeout: float) -> bool:
    """Whether ``pid`` has ended within ``timeout`` (waits on a pidfd: no polling)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        return bool(readable)
    finally:
        os.close(fd)


def marked(marker: str) -> list[int]:
    """Live (not zombie) processes whose environment holds ``marker``, found through /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in environ.split(b"\0") and state != "Z":
            found.append(int(entry.name))
    return found


def survivors(pids: list[int], marker: str) -> list[int]:
    """What is left of the helper and its grandchild, after giving them time to die."""
    alive = [pid for pid in pids if not gone(pid, timeout=10)]
    return sorted(set(alive) | set(marked(marker)))


def end(pids: list[int]) -> None:
    """Kill (by pid) whatever a failing test left running."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.anyio
async def test_a_cancelled_credential_process_dies_with_its_grandchild(
    tmp_path, report, monkeypatch
):
    """Cancelling the source resolution kills the helper and what it started: none survive."""
    marker = f"HELPER_REPORT={report.path}"
    monkeypatch.setenv("HELPER_REPORT", report.path)
    session = AioSession(profile="helper")
    session.set_config_variable("config_file", str(aws_config(tmp_path)))
    children.adopt(session)
    pids: list[int] = []
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(session.get_credentials)
            pids = await anyio.to_thread.run_sync(reported_pids, report)
            tg.cancel_scope.cancel()
        assert len(pids) == 2
        assert await anyio.to_thread.run_sync(survivors, pids, marker) == []
    finally:
        end(pids)


def source_config(tmp_path: Path, endpoint: str, **top: object) -> tuple[Path, dict[str, str]]:
    """A config whose source profile is the hanging helper, and the environment to run it in."""
    path = write_config(tmp_path / "c.toml", tmp_path / "credentials", endpoint, ["a"], **top)
    with path.open("a") as toml:
        toml.write('[source]\nprofile = "helper"\n')
    env = clean_env(
        tmp_path,
        AWS_CONFIG_FILE=str(aws_config(tmp_path)),
        HELPER_REPORT=str(tmp_path / "report.sock"),
    )
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(key)
    return path, env


def test_sigterm_of_run_leaves_no_helper_behind(tmp_path, fake_sts, report):
    """``run`` stopped by SIGTERM while the source helper hangs leaves no descendant behind."""
    path, env = source_config(tmp_path, fake_sts.url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "credrefresh", "run", "--config", str(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pids: list[int] = []
    try:
        pids = reported_pids(report)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert survivors(pids, f"HELPER_REPORT={report.path}") == []
        assert "Traceback" not in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
        end(pids)


@pytest.mark.slow
def test_once_times_out_a_hung_helper_and_leaves_nothing_behind(tmp_path, fake_sts, report):
    """``once`` gives up on a hung helper at the call's deadline and kills it with its group."""
    path, env = source_config(tmp_path, fake_sts.url, sts_timeout=0.1, sts_max_attempts=1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "credrefresh", "once", "--config", str(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pids: list[int] = []
    try:
        pids = reported_pids(report)
        out, err = proc.communicate(timeout=60)  # the deadline is 20.2 s
        assert proc.returncode == 1, err
        failed = [json.loads(line) for line in out.splitlines() if "refresh_failed" in line]
        # A hang while resolving the source is the source's failure, naming its helper.
        assert [e["error_code"] for e in failed] == ["SourceCredentialsError"]
        assert failed[0]["error"].startswith("credential_process 'helper.py' of profile 'helper'")
        assert "no answer within" in failed[0]["error"]
        assert survivors(pids, f"HELPER_REPORT={report.path}") == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
        end(pids)


def test_sigterm_of_once_leaves_no_helper_behind(tmp_path, fake_sts, report):
    """``once`` stopped by SIGTERM while the source helper hangs leaves no descendant behind."""
    path, env = source_config(tmp_path, fake_sts.url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "credrefresh", "once", "--config", str(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pids: list[int] = []
    try:
        pids = reported_pids(report)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert survivors(pids, f"HELPER_REPORT={report.path}") == []
        assert proc.returncode == 128 + signal.SIGTERM, err
        assert "Traceback" not in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
        end(pids)


def test_a_failing_helper_is_named_in_the_failure(tmp_path, fake_sts):
    """A source helper that exits 1 fails the role with SourceCredentialsError naming the
    program (never its arguments, which may hold a secret)."""
    script = tmp_path / "vault-helper"
    script.write_text(f"#!{sys.executable}\nimport sys\nsys.exit('locked')\n")
    script.chmod(0o755)
    aws = tmp_path / "aws-config"
    aws.write_text(f"[profile helper]\ncredential_process = {script} --password hunter2\n")
    path = write_config(tmp_path / "c.toml", tmp_path / "credentials", fake_sts.url, ["a"])
    with path.open("a") as toml:
        toml.write('[source]\nprofile = "helper"\n')
    env = clean_env(tmp_path, AWS_CONFIG_FILE=str(aws))
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(key)
    result = run_cli(["once", "--config", str(path)], env)
    assert result.returncode == 1
    (failed,) = [json.loads(x) for x in result.stdout.splitlines() if "refresh_failed" in x]
    assert failed["error_code"] == "SourceCredentialsError"
    assert failed["error"].startswith("credential_process 'vault-helper' of profile 'helper': ")
    assert "hunter2" not in result.stdout + result.stderr
