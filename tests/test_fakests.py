"""Tests of the fake STS server, driven by the real AWS clients."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aioboto3
import aiohttp
import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:  # the test support package lives beside this file
    sys.path.insert(0, str(TESTS))

from support.fakests import (  # noqa: E402
    DEFAULT_SOURCE_ARN,
    FakeSTS,
    Faults,
    Stats,
    ThreadedFakeSTS,
    build_parser,
    faults_from_args,
    main,
    serve,
)

ROLE = "arn:aws:iam::111122223333:role/deploy"
OTHER_ROLE = "arn:aws:iam::111122223333:role/other"
# Note: botocore's client-config ``max_attempts`` counts *retries* (1 = two
# attempts); ``total_max_attempts`` counts attempts, so 1 disables retrying.
NO_RETRIES = {"total_max_attempts": 1, "mode": "standard"}

ClientFactory = Callable[..., Any]


@pytest.fixture
def sts() -> Iterator[ThreadedFakeSTS]:
    server = ThreadedFakeSTS(Faults(latency=0, lifetime=20))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_client() -> Iterator[ClientFactory]:
    """Build real boto3 STS clients and close them afterwards."""
    clients: list[Any] = []

    def factory(
        url: str,
        *,
        access_key: str = "AKIDEXAMPLE",
        secret_key: str = "x",  # noqa: S107 - fake secret
        token: str | None = None,
        read_timeout: float = 10,
    ) -> Any:
        client = boto3.client(
            "sts",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            aws_session_token=token,
            config=Config(retries=NO_RETRIES, read_timeout=read_timeout, connect_timeout=5),
        )
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()


def _control(url: str, path: str, body: object | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - http://127.0.0.1 only
        url + path, data=data, method="GET" if body is None else "POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read())


def _expiration_delta(expiration: datetime) -> float:
    return (expiration - datetime.now(UTC)).total_seconds()


def test_assume_role_happy_path(sts: ThreadedFakeSTS, make_client: ClientFactory) -> None:
    client = make_client(sts.url)
    response = client.assume_role(
        RoleArn=ROLE,
        RoleSessionName="session-1",
        ExternalId="ext-123",
        SourceIdentity="alice",
        Tags=[{"Key": "team", "Value": "infra"}, {"Key": "env", "Value": "test"}],
        TransitiveTagKeys=["team"],
        PolicyArns=[{"arn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}],
    )
    creds = response["Credentials"]
    assert re.fullmatch(r"ASIA[A-Z0-9]{16}", creds["AccessKeyId"])
    assert len(creds["SecretAccessKey"]) == 40
    assert len(creds["SessionToken"]) >= 200
    assert 18.5 <= _expiration_delta(creds["Expiration"]) <= 21.5
    user = response["AssumedRoleUser"]
    assert user["Arn"] == "arn:aws:sts::111122223333:assumed-role/deploy/session-1"
    assert re.fullmatch(r"AROA[A-Z0-9]{17}:session-1", user["AssumedRoleId"])
    assert response["SourceIdentity"] == "alice"
    assert isinstance(response["PackedPolicySize"], int)
    assert response["ResponseMetadata"]["HTTPHeaders"]["content-type"] == "text/xml"

    (call,) = sts.calls
    assert call.role_arn == ROLE
    assert call.external_id == "ext-123"
    assert call.tags == (("team", "infra"), ("env", "test"))
    assert call.transitive_tag_keys == ("team",)
    assert call.policy_arns == ("arn:aws:iam::aws:policy/ReadOnlyAccess",)
    assert call.caller_access_key_id == "AKIDEXAMPLE"
    assert call.access_key_id == creds["AccessKeyId"]

    again = client.assume_role(RoleArn=ROLE, RoleSessionName="session-2")
    assert again["Credentials"]["AccessKeyId"] != creds["AccessKeyId"]
    assert "SourceIdentity" not in again
    assert (
        again["AssumedRoleUser"]["AssumedRoleId"].split(":")[0]
        == (user["AssumedRoleId"].split(":")[0])
    )
    assert sts.stats == Stats(requests=2, assume_role=2, ok=2, max_in_flight=1)


def test_short_lifetime_expiration_is_rounded_up(make_client: ClientFactory) -> None:
    with ThreadedFakeSTS(Faults(latency=0, lifetime=2)) as server:
        before = time.time()
        creds = make_client(server.url).assume_role(RoleArn=ROLE, RoleSessionName="sess")[
            "Credentials"
        ]
        after = time.time()
    expires = creds["Expiration"].timestamp()
    assert before + 2 <= expires <= after + 3


def test_duration_seconds_used_without_lifetime(make_client: ClientFactory) -> None:
    with ThreadedFakeSTS(Faults(latency=0)) as server:
        client = make_client(server.url)
        default = client.assume_role(RoleArn=ROLE, RoleSessionName="sess")["Credentials"]
        short = client.assume_role(RoleArn=ROLE, RoleSessionName="sess", DurationSeconds=900)[
            "Credentials"
        ]
    assert 3598 <= _expiration_delta(default["Expiration"]) <= 3602
    assert 898 <= _expiration_delta(short["Expiration"]) <= 902


def test_get_caller_identity(sts: ThreadedFakeSTS, make_client: ClientFactory) -> None:
    source = make_client(sts.url)
    identity = source.get_caller_identity()
    assert identity["Arn"] == DEFAULT_SOURCE_ARN
    assert identity["Account"] == "123456789012"

    creds = source.assume_role(RoleArn=ROLE, RoleSessionName="who")["Credentials"]
    assumed = make_client(
        sts.url,
        access_key=creds["AccessKeyId"],
        secret_key=creds["SecretAccessKey"],
        token=creds["SessionToken"],
    )
    identity = assumed.get_caller_identity()
    assert identity["Arn"] == "arn:aws:sts::111122223333:assumed-role/deploy/who"
    assert identity["Account"] == "111122223333"
    assert identity["UserId"].endswith(":who")

    # Chained AssumeRole: AccessDenied names the assumed role as the caller.
    sts.update_faults(deny_roles=[OTHER_ROLE])
    with pytest.raises(ClientError) as excinfo:
        assumed.assume_role(RoleArn=OTHER_ROLE, RoleSessionName="chain")
    assert excinfo.value.response["Error"]["Message"].startswith(
        "User: arn:aws:sts::111122223333:assumed-role/deploy/who is not authorized"
    )


def test_issued_credentials_expire(make_client: ClientFactory) -> None:
    now = [time.time()]
    with ThreadedFakeSTS(Faults(latency=0, lifetime=5), clock=lambda: now[0]) as server:
        creds = make_client(server.url).assume_role(RoleArn=ROLE, RoleSessionName="sess")[
            "Credentials"
        ]
        assumed = make_client(
            server.url,
            access_key=creds["AccessKeyId"],
            secret_key=creds["SecretAccessKey"],
            token=creds["SessionToken"],
        )
        assumed.get_caller_identity()
        now[0] += 6
        with pytest.raises(ClientError) as excinfo:
            assumed.get_caller_identity()
        assert excinfo.value.response["Error"]["Code"] == "ExpiredToken"
        assert server.stats.expired == 1


@pytest.mark.parametrize(
    ("faults", "code", "status", "counter"),
    [
        (Faults(latency=0, throttle_rate=1.0), "Throttling", 400, "throttled"),
        (Faults(latency=0, error_rate=1.0), "InternalFailure", 500, "errors"),
        (Faults(latency=0, deny_roles=frozenset({ROLE})), "AccessDenied", 403, "denied"),
        (Faults(latency=0, expired_token=True), "ExpiredToken", 403, "expired"),
    ],
    ids=["throttling", "internal-failure", "access-denied", "expired-token"],
)
def test_error_codes(
    sts: ThreadedFakeSTS,
    make_client: ClientFactory,
    faults: Faults,
    code: str,
    status: int,
    counter: str,
) -> None:
    sts.set_faults(faults)
    with pytest.raises(ClientError) as excinfo:
        make_client(sts.url).assume_role(RoleArn=ROLE, RoleSessionName="sess")
    response = excinfo.value.response
    assert response["Error"]["Code"] == code
    assert response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert response["ResponseMetadata"]["RequestId"]
    assert response["Error"]["Type"] == ("Receiver" if status == 500 else "Sender")
    expected_messages = {
        "Throttling": "Rate exceeded",
        "ExpiredToken": "The security token included in the request is expired",
        "AccessDenied": (
            f"User: {DEFAULT_SOURCE_ARN} is not authorized to perform: sts:AssumeRole "
            f"on resource: {ROLE}"
        ),
    }
    if code in expected_messages:
        assert response["Error"]["Message"] == expected_messages[code]
    stats = sts.stats
    assert getattr(stats, counter) == 1
    assert stats.ok == 0
    assert stats.requests == 1


def test_invalid_role_arn_is_validation_error(
    sts: ThreadedFakeSTS, make_client: ClientFactory
) -> None:
    client = make_client(sts.url)
    for bad in ("arn:aws:iam::1234:role/deploy", "arn:aws:iam::111122223333:user/deploy"):
        with pytest.raises(ClientError) as excinfo:
            client.assume_role(RoleArn=bad, RoleSessionName="sess")
        assert excinfo.value.response["Error"]["Code"] == "ValidationError"
        assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert sts.stats.errors == 2


def test_runtime_fault_switching_via_control_endpoint(
    sts: ThreadedFakeSTS, make_client: ClientFactory
) -> None:
    client = make_client(sts.url)
    status, faults = _control(sts.url, "/_fake/faults", {"throttle_rate": 1.0})
    assert status == 200
    assert faults["throttle_rate"] == 1.0
    assert faults["lifetime"] == 20  # untouched fields are kept
    with pytest.raises(ClientError) as excinfo:
        client.assume_role(RoleArn=ROLE, RoleSessionName="sess")
    assert excinfo.value.response["Error"]["Code"] == "Throttling"

    _control(sts.url, "/_fake/faults", {"throttle_rate": 0, "deny_roles": [ROLE]})
    with pytest.raises(ClientError) as excinfo:
        client.assume_role(RoleArn=ROLE, RoleSessionName="sess")
    assert excinfo.value.response["Error"]["Code"] == "AccessDenied"
    assert sts.faults.deny_roles == frozenset({ROLE})

    _control(sts.url, "/_fake/faults", {"deny_roles": [], "lifetime": None})
    creds = client.assume_role(RoleArn=ROLE, RoleSessionName="sess")["Credentials"]
    assert _expiration_delta(creds["Expiration"]) > 3000

    status, stats = _control(sts.url, "/_fake/stats")
    assert status == 200
    assert stats == {
        "requests": 3,
        "assume_role": 3,
        "ok": 1,
        "throttled": 1,
        "errors": 0,
        "denied": 1,
        "expired": 0,
        "hung": 0,
        "in_flight": 0,
        "max_in_flight": 1,
    }
    status, stats = _control(sts.url, "/_fake/reset-stats", {})
    assert status == 200
    assert set(stats.values()) == {0}
    assert _control(sts.url, "/_fake/stats")[1]["requests"] == 0

    for bad in ({"latency": "slow"}, {"bogus": 1}, {"throttle_rate": 2}, [1]):
        status, error = _control(sts.url, "/_fake/faults", bad)
        assert status == 400
        assert "error" in error
    assert _control(sts.url, "/_fake/faults")[1]["throttle_rate"] == 0


def test_hang_causes_read_timeout(sts: ThreadedFakeSTS, make_client: ClientFactory) -> None:
    sts.update_faults(hang=True)
    client = make_client(sts.url, read_timeout=0.5)
    with pytest.raises(ReadTimeoutError):
        client.assume_role(RoleArn=ROLE, RoleSessionName="sess")
    # The client closed its connection: the server drops the held request.
    stats = sts.wait_for_stats(lambda s: s.hung == 1 and s.in_flight == 0)
    assert stats.ok == 0

    sts.update_faults(hang=False)
    assert client.assume_role(RoleArn=ROLE, RoleSessionName="sess")["Credentials"]


def test_hang_switched_off_answers_held_requests(
    sts: ThreadedFakeSTS, make_client: ClientFactory
) -> None:
    sts.update_faults(hang=True)
    client = make_client(sts.url, read_timeout=30)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(client.assume_role, RoleArn=ROLE, RoleSessionName="sess")
        sts.wait_for_stats(lambda s: s.hung == 1)
        assert not future.done()
        sts.set_faults(Faults(latency=0))
        response = future.result(timeout=10)
    assert response["Credentials"]["AccessKeyId"].startswith("ASIA")
    assert sts.stats.ok == 1


def test_stop_drops_held_requests(make_client: ClientFactory) -> None:
    server = ThreadedFakeSTS(Faults(latency=0, hang=True))
    server.start()
    try:
        client = make_client(server.url, read_timeout=30)
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(client.assume_role, RoleArn=ROLE, RoleSessionName="sess")
            server.wait_for_stats(lambda s: s.hung == 1)
            server.stop()
            with pytest.raises(ConnectionClosedError):
                future.result(timeout=10)
    finally:
        server.stop()


def test_faults_validation() -> None:
    with pytest.raises(ValueError, match="throttle_rate"):
        Faults(throttle_rate=1.5)
    with pytest.raises(ValueError, match="latency"):
        Faults(latency=-1)
    with pytest.raises(ValueError, match="lifetime"):
        Faults(lifetime=0)
    with pytest.raises(TypeError, match="hang"):
        Faults().updated({"hang": "yes"})
    with pytest.raises(ValueError, match="unknown"):
        Faults().updated({"nope": 1})
    assert Faults().updated({"deny_roles": [ROLE]}).deny_roles == frozenset({ROLE})
    with pytest.raises(ValueError, match="loopback"):
        FakeSTS(host="0.0.0.0")  # noqa: S104 - the point of the test


def test_cli_parsing() -> None:
    args = build_parser().parse_args(
        ["--lifetime", "20", "--throttle-rate", "0.25", "--deny", ROLE, "--deny", OTHER_ROLE]
    )
    assert faults_from_args(args) == Faults(
        latency=0.05, lifetime=20, throttle_rate=0.25, deny_roles=frozenset({ROLE, OTHER_ROLE})
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com"])  # noqa: S104
def test_cli_refuses_non_loopback_host(host: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["--host", host])
    assert excinfo.value.code == 2
    assert "loopback" in capsys.readouterr().err


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """Read one line from the child's stdout, giving up after ``timeout`` seconds."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            pytest.fail(f"no ready line within {timeout}s")
    return proc.stdout.readline()


def _cli(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-m", "support.fakests", *args],
        cwd=TESTS,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _terminate(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_cli_subprocess(signum: signal.Signals, make_client: ClientFactory) -> None:
    proc = _cli("--port", "0", "--latency", "0", "--lifetime", "20", "--deny", OTHER_ROLE)
    try:
        line = _read_line(proc, timeout=30)
        ready = json.loads(line)
        assert set(ready) == {"url", "port", "pid"}
        assert ready["pid"] == proc.pid
        assert ready["url"] == f"http://127.0.0.1:{ready['port']}"

        client = make_client(ready["url"])
        creds = client.assume_role(RoleArn=ROLE, RoleSessionName="cli")["Credentials"]
        assert 18.5 <= _expiration_delta(creds["Expiration"]) <= 21.5
        with pytest.raises(ClientError) as excinfo:
            client.assume_role(RoleArn=OTHER_ROLE, RoleSessionName="cli")
        assert excinfo.value.response["Error"]["Code"] == "AccessDenied"
        assert _control(ready["url"], "/_fake/stats")[1]["ok"] == 1

        proc.send_signal(signum)
        assert proc.wait(timeout=15) == 0
        assert proc.stdout is not None
        assert proc.stdout.read() == ""  # exactly one line on stdout
    finally:
        _terminate(proc)


@pytest.mark.skipif(shutil.which("aws") is None, reason="AWS CLI not installed")
def test_aws_cli_via_endpoint_env(sts: ThreadedFakeSTS, tmp_path: Path) -> None:
    aws = shutil.which("aws")
    assert aws is not None
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "AWS_ENDPOINT_URL_STS": sts.url,
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
    }
    result = subprocess.run(
        [
            aws,
            "sts",
            "assume-role",
            "--role-arn",
            ROLE,
            "--role-session-name",
            "cli",
            "--output",
            "json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["AssumedRoleUser"]["Arn"].endswith(":assumed-role/deploy/cli")
    assert sts.calls[-1].role_session_name == "cli"


@pytest.mark.asyncio
async def test_serve_with_aioboto3() -> None:
    async with serve(Faults(latency=0.05, lifetime=30)) as sts:
        assert sts.url == f"http://127.0.0.1:{sts.port}"
        session = aioboto3.Session()
        config = Config(retries=NO_RETRIES, max_pool_connections=50)
        async with session.client(
            "sts",
            endpoint_url=sts.url,
            region_name="us-east-1",
            aws_access_key_id="AKIDEXAMPLE",
            aws_secret_access_key="x",
            config=config,
        ) as client:
            responses = await asyncio.gather(
                *(client.assume_role(RoleArn=ROLE, RoleSessionName=f"s{i}") for i in range(50))
            )
            assert len({r["Credentials"]["AccessKeyId"] for r in responses}) == 50
            sts.faults = Faults(latency=0, throttle_rate=1.0)
            with pytest.raises(ClientError) as excinfo:
                await client.get_caller_identity()
            assert excinfo.value.response["Error"]["Code"] == "Throttling"
        stats = sts.stats
        assert stats.ok == 50
        assert stats.throttled == 1
        assert stats.max_in_flight > 1


@pytest.mark.asyncio
async def test_thousand_concurrent_requests() -> None:
    """1000 requests held open at once, then all answered once released."""
    n = 1000
    body = f"Action=AssumeRole&Version=2011-06-15&RoleArn={ROLE}&RoleSessionName=load"
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    async with (
        serve(Faults(latency=0.05, hang=True)) as sts,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http,
    ):

        async def one() -> int:
            async with http.post(sts.url + "/", data=body, headers=headers) as response:
                text = await response.text()
                assert "<AccessKeyId>ASIA" in text
                return response.status

        tasks = [asyncio.create_task(one()) for _ in range(n)]
        async with asyncio.timeout(60):
            await sts.wait_for_stats(lambda s: s.hung == n)
            sts.set_faults(Faults(latency=0.05))
            statuses = await asyncio.gather(*tasks)
        assert statuses == [200] * n
        stats = sts.stats
        assert stats.max_in_flight == n
        assert stats.ok == n
        assert stats.in_flight == 0
