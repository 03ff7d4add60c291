"""Real clients of a real ``credrefresh run``: boto3 and the AWS CLI follow rotations.

The fake STS answers ``ExpiredToken`` for expired keys, and issues six-second credentials, so a
client that keeps the first credentials it read fails within seconds (the control client shows
it); clients on the endpoint or on ``credential_process`` must see no error at all.
"""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.configloader import raw_config_parse

from process_support import Proc, clean_env, run_cli, write_config
from support.fakests import Faults, ThreadedFakeSTS

pytestmark = pytest.mark.slow

LIFETIME = 6.0  # seconds of every credential the fake STS issues
CLIENT_SECONDS = 16  # more than two lifetimes, at least three rotations
FAST = {"refresh_at": 0.5, "jitter": 0.1, "write_delay": 0.1, "backoff_initial": 0.2}

# One STS client object for the whole run, one call a second; prints what it saw.
CLIENT = """
import json, sys, time
import boto3
sts = boto3.client("sts", region_name="us-east-1", endpoint_url=sys.argv[1])
end = time.monotonic() + float(sys.argv[2])
calls, errors, keys = 0, [], []
while time.monotonic() < end:
    try:
        sts.get_caller_identity()
        calls += 1
    except Exception as exc:
        errors.append(type(exc).__name__ + ": " + str(exc)[:120])
    key = sts._request_signer._credentials.get_frozen_credentials().access_key
    if key not in keys:
        keys.append(key)
    time.sleep(1)  # the client's pace, not a wait for anything
print(json.dumps({"calls": calls, "errors": errors, "keys": keys}))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def consumer_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A client's environment: no static keys, no config file, HOME in tmp_path."""
    env = clean_env(tmp_path, **{"AWS_CONFIG_FILE": str(tmp_path / "no-config"), **extra})
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(key, None)
    return env


@pytest.fixture(scope="module")
def daemon(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """``credrefresh run`` serving two profiles, against a fake STS with six-second keys."""
    tmp_path = tmp_path_factory.mktemp("serve")
    with ThreadedFakeSTS(Faults(latency=0, lifetime=LIFETIME)) as sts:
        creds = tmp_path / "aws" / "credentials"
        config = write_config(tmp_path / "c.toml", creds, sts.url, ["a", "b"], refresh=FAST)
        with config.open("a") as handle:
            handle.write(f'[serve]\naddress = "127.0.0.1:{free_port()}"\n')
        proc = Proc(["run", "--config", str(config)], clean_env(tmp_path))
        try:
            proc.wait_count("daemon.ready", 1)
            yield {"proc": proc, "config": config, "creds": creds, "sts": sts.url, "tmp": tmp_path}
            proc.signal(signal.SIGTERM)
            assert proc.wait_exit() == 0
        finally:
            proc.kill()


def start_client(env: dict[str, str], sts_url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CLIENT, sts_url, str(CLIENT_SECONDS)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(client: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = client.communicate(timeout=CLIENT_SECONDS + 60)
    assert client.returncode == 0, err
    return json.loads(out)


def test_boto3_follows_rotations_through_endpoint_and_credential_process(daemon, tmp_path):
    """One long-lived STS client each, via ``env`` and via credential_process: 0 errors."""
    config, sts_url = str(daemon["config"]), daemon["sts"]
    printed = run_cli(["env", "--config", config, "--profile", "a"], clean_env(tmp_path))
    assert printed.returncode == 0, printed.stderr
    endpoint_vars = dict(line.split("=", 1) for line in printed.stdout.splitlines())
    aws_config = tmp_path / "aws-config"
    command = shlex.join(
        [sys.executable, "-m", "credrefresh", "credential-process", "-c", config, "-p", "b"]
    )
    aws_config.write_text(f"[profile cp]\ncredential_process = {command}\n")
    shared = str(daemon["creds"])
    envs = {
        "endpoint": consumer_env(tmp_path, **endpoint_vars),
        "process": consumer_env(tmp_path, AWS_CONFIG_FILE=str(aws_config), AWS_PROFILE="cp"),
        # The control: the shared file read once, as every SDK does.
        "file": consumer_env(tmp_path, AWS_SHARED_CREDENTIALS_FILE=shared, AWS_PROFILE="a"),
    }
    clients: dict[str, subprocess.Popen[str]] = {}
    try:
        for name, env in envs.items():
            clients[name] = start_client(env, sts_url)
        seen = {name: finish(client) for name, client in clients.items()}
    finally:
        for client in clients.values():
            if client.poll() is None:
                client.kill()  # by its pid
            client.communicate(timeout=30)
    for name in ("endpoint", "process"):
        assert seen[name]["errors"] == [], name
        assert seen[name]["calls"] >= 5, name  # credential_process spawns a process per call
        assert len(seen[name]["keys"]) >= 4, (name, seen[name])  # three rotations at least
    assert any("ExpiredToken" in e for e in seen["file"]["errors"]), seen["file"]
    proc = daemon["proc"]
    keys = set(seen["endpoint"]["keys"])
    proc.wait_for(
        lambda _: {e["access_key_id"] for e in proc.named("credentials.served")} >= keys, 10
    )
    served = proc.named("credentials.served")
    assert all(e["client"] == "127.0.0.1" for e in served)
    secrets = [
        v
        for section in raw_config_parse(shared).values()
        for k, v in section.items()
        if k in {"aws_secret_access_key", "aws_session_token"}
    ]
    assert secrets
    assert not [s for s in secrets if s in daemon["proc"].output()]


@pytest.mark.skipif(shutil.which("aws") is None, reason="the AWS CLI is not installed")
def test_aws_cli_works_under_exec(daemon, tmp_path):
    """``credrefresh exec -- aws sts get-caller-identity`` answers with the served role."""
    env = consumer_env(tmp_path)
    done = run_cli(
        [
            "exec",
            "--config",
            str(daemon["config"]),
            "--profile",
            "a",
            "--",
            "aws",
            "sts",
            "get-caller-identity",
            "--region",
            "us-east-1",
            "--endpoint-url",
            daemon["sts"],
            "--output",
            "json",
        ],
        env,
    )
    assert done.returncode == 0, done.stderr
    assert ":assumed-role/a/" in json.loads(done.stdout)["Arn"]


JS = Path(__file__).resolve().parent / "js"


@pytest.mark.skipif(
    shutil.which("node") is None or not (JS / "node_modules" / "@aws-sdk").is_dir(),
    reason="node or the JavaScript SDK is missing: npm ci --prefix tests/js",
)
def test_javascript_sdk_follows_rotations_through_the_endpoint(daemon, tmp_path):
    """A long-lived JavaScript SDK v3 client on its default chain, via ``env``: 0 errors."""
    printed = run_cli(
        ["env", "--config", str(daemon["config"]), "--profile", "a"], clean_env(tmp_path)
    )
    assert printed.returncode == 0, printed.stderr
    env = consumer_env(tmp_path, **dict(line.split("=", 1) for line in printed.stdout.splitlines()))
    client = subprocess.Popen(
        ["node", str(JS / "client.mjs"), daemon["sts"], str(CLIENT_SECONDS)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=JS,
    )
    try:
        seen = finish(client)
    finally:
        if client.poll() is None:
            client.kill()  # by its pid
            client.communicate(timeout=30)
    assert seen["errors"] == []
    assert seen["calls"] >= 5
    assert len(seen["keys"]) >= 4, seen  # three rotations at least
