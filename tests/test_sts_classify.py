"""Tests of ``credrefresh.sts``: error classification, request building, and one call to moto."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    HTTPClientError,
    InvalidConfigError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
    ProxyConnectionError,
    ReadTimeoutError,
    SSLError,
    SSOTokenLoadError,
    TokenRetrievalError,
    UnauthorizedSSOTokenError,
)

from credrefresh.config import Role, load_config
from credrefresh.errors import RefreshFailed
from credrefresh.sts import AioStsClient, classify, request

ENDPOINT = "https://sts.us-east-1.amazonaws.com"
ROLE_ARN = "arn:aws:iam::123456789012:role/deploy"


def client_error(code: str | None, status: int | None, message: str | None = "msg") -> ClientError:
    """A ClientError exactly as botocore builds it from an STS error response."""
    error: dict[str, str] = {"Type": "Sender"}
    if code is not None:
        error["Code"] = code
    if message is not None:
        error["Message"] = message
    response: dict[str, object] = {"Error": error, "ResponseMetadata": {"RequestId": "r-1"}}
    if status is not None:
        response["ResponseMetadata"] = {"RequestId": "r-1", "HTTPStatusCode": status}
    return ClientError(response, "AssumeRole")


def as_tuple(failure: RefreshFailed) -> tuple[str, str, bool, bool]:
    return failure.code, failure.message, failure.transient, failure.source


# -- classify ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status", "transient", "source"),
    [
        ("Throttling", 400, True, False),
        ("ThrottlingException", 400, True, False),
        ("RequestLimitExceeded", 400, True, False),
        ("InternalFailure", 500, True, False),
        ("ServiceUnavailable", 503, True, False),
        ("IDPCommunicationError", 400, True, False),
        ("SomethingNew", 502, True, False),  # any 5xx is worth another try
        ("AccessDenied", 403, False, False),
        ("ValidationError", 400, False, False),
        ("MalformedPolicyDocument", 400, False, False),
        ("PackedPolicyTooLarge", 400, False, False),
        ("RegionDisabledException", 403, False, False),
        ("ExpiredToken", 400, False, True),
        ("InvalidClientTokenId", 403, False, True),
        ("SignatureDoesNotMatch", 403, False, True),
    ],
)
def test_classify_client_errors(code, status, transient, source):
    """An STS error is transient when throttled or 5xx, and blames the source when it is theirs."""
    failure = classify(client_error(code, status, f"{code} happened"))
    assert isinstance(failure, RefreshFailed)
    assert as_tuple(failure) == (code, f"{code} happened", transient, source)


def test_classify_client_error_without_code_status_or_message():
    """A bare error response is an unknown, permanent failure described by botocore's text."""
    exc = client_error(None, None, None)
    assert as_tuple(classify(exc)) == ("Unknown", str(exc), False, False)


@pytest.mark.parametrize(
    ("exc", "code", "transient", "source"),
    [
        (ReadTimeoutError(endpoint_url=ENDPOINT), "Timeout", True, False),
        (ConnectTimeoutError(endpoint_url=ENDPOINT), "Timeout", True, False),
        (EndpointConnectionError(endpoint_url=ENDPOINT), "ConnectionError", True, False),
        (ConnectionClosedError(endpoint_url=ENDPOINT), "ConnectionError", True, False),
        (ConnectionRefusedError(111, "Connection refused"), "ConnectionError", True, False),
        (NoCredentialsError(), "NoCredentialsError", False, True),
        (
            PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY"),
            "PartialCredentialsError",
            False,
            True,
        ),
        (ProfileNotFound(profile="ops"), "ProfileNotFound", False, True),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None,
)
def test_classify_network_and_credential_errors(exc, code, transient, source):
    """Timeouts and connection errors are transient; missing source credentials are not."""
    assert as_tuple(classify(exc)) == (code, str(exc), transient, source)


def test_classify_bare_timeout_has_a_message():
    """A message-less ``TimeoutError`` (as ``anyio.fail_after`` raises) still reads sensibly."""
    assert as_tuple(classify(TimeoutError())) == ("Timeout", "timed out", True, False)


# -- request -----------------------------------------------------------------------------------


def test_request_minimal_role():
    """A plain role sends only the ARN, the session name and the duration."""
    role = Role(profile="prod", role_arn=ROLE_ARN, session_name="credrefresh-prod")
    assert request(role) == {
        "RoleArn": ROLE_ARN,
        "RoleSessionName": "credrefresh-prod",
        "DurationSeconds": 3600,
    }


def test_request_full_role():
    """External id, source identity, session tags and policy ARNs are sent in STS's shapes."""
    role = Role(
        profile="prod",
        role_arn=ROLE_ARN,
        session_name="ops-prod",
        duration_seconds=900,
        external_id="ext-1234",
        source_identity="alice",
        tags=(("env", "prod"), ("team", "ops")),
        policy_arns=(
            "arn:aws:iam::aws:policy/ReadOnlyAccess",
            "arn:aws:iam::123456789012:policy/extra",
        ),
    )
    assert request(role) == {
        "RoleArn": ROLE_ARN,
        "RoleSessionName": "ops-prod",
        "DurationSeconds": 900,
        "ExternalId": "ext-1234",
        "SourceIdentity": "alice",
        "Tags": [{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "ops"}],
        "PolicyArns": [
            {"arn": "arn:aws:iam::aws:policy/ReadOnlyAccess"},
            {"arn": "arn:aws:iam::123456789012:policy/extra"},
        ],
    }


@pytest.mark.parametrize(
    ("field", "value", "key"),
    [("external_id", "ext-1234", "ExternalId"), ("source_identity", "alice", "SourceIdentity")],
)
def test_request_optional_fields_only_when_set(field, value, key):
    """An optional parameter appears exactly when the role sets it."""
    base = {"profile": "prod", "role_arn": ROLE_ARN, "session_name": "s-prod"}
    assert key not in request(Role(**base))
    params = request(Role(**base, **{field: value}))
    assert params == {
        "RoleArn": ROLE_ARN,
        "RoleSessionName": "s-prod",
        "DurationSeconds": 3600,
        key: value,
    }


# -- against moto (``moto_url``: the session's ThreadedMotoServer on 127.0.0.1, conftest.py) ----


@pytest.fixture
def source_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Source credentials from the environment only, never from the user's own files."""
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_STS",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.mark.asyncio
async def test_assume_against_moto(moto_url, source_env, tmp_path):
    """A real AssumeRole yields an aware UTC expiry about 900 s ahead and a secret-free repr."""
    config_file = tmp_path / "credrefresh.toml"
    config_file.write_text(
        f"""
credentials_file = {json.dumps(str(tmp_path / "credentials"))}
state_file = {json.dumps(str(tmp_path / "state.json"))}
region = "us-east-1"
sts_endpoint_url = {json.dumps(moto_url)}
sts_max_attempts = 1

[[roles]]
profile = "prod"
role_arn = "{ROLE_ARN}"
session_name = "credrefresh-prod"
duration_seconds = 900
external_id = "ext-1234"
source_identity = "alice"
policy_arns = ["arn:aws:iam::aws:policy/ReadOnlyAccess"]
tags = {{ team = "ops", env = "prod" }}
""",
        encoding="utf-8",
    )
    config = load_config(config_file)
    role = config.roles[0]
    before = datetime.now(UTC)
    with anyio.fail_after(30):
        async with AioStsClient(config) as client:
            issued = await client.assume(role)
    after = datetime.now(UTC)

    creds = issued.credentials
    assert (issued.profile, issued.role_arn, issued.session_name) == (
        "prod",
        ROLE_ARN,
        "credrefresh-prod",
    )
    assert issued.assumed_role_arn == (
        "arn:aws:sts::123456789012:assumed-role/deploy/credrefresh-prod"
    )
    assert creds.expiration.tzinfo is UTC
    assert issued.issued_at.tzinfo is UTC
    assert before <= issued.issued_at <= after
    # moto stamps the expiry to the second or better; allow for that truncation.
    duration = timedelta(seconds=900)
    assert before + duration - timedelta(seconds=1) <= creds.expiration <= after + duration
    assert 0 <= issued.duration_ms <= (after - before).total_seconds() * 1000
    assert creds.access_key_id.startswith("ASIA")
    assert len(creds.secret_access_key) >= 40
    assert len(creds.session_token) >= 100
    text = repr(issued)
    assert creds.access_key_id in text
    assert creds.secret_access_key not in text
    assert creds.session_token not in text
    assert creds.secret_access_key not in str(issued)


@pytest.mark.parametrize(
    ("exc", "code", "transient"),
    [
        (
            SSOTokenLoadError(error_msg="Token for https://x does not exist"),
            "SourceLoginRequired",
            False,
        ),
        (UnauthorizedSSOTokenError(), "SourceLoginRequired", False),
        (TokenRetrievalError(provider="sso", error_msg="expired"), "SourceLoginRequired", False),
        (
            CredentialRetrievalError(provider="custom-process", error_msg="exit 1"),
            "SourceCredentialsError",
            True,
        ),
        (FileNotFoundError(2, "No such file or directory"), "SourceCredentialsError", False),
        (PermissionError(13, "Permission denied"), "SourceCredentialsError", False),
        (InvalidConfigError(error_msg="bad"), "SourceConfigError", False),
        (
            ProxyConnectionError(proxy_url="http://127.0.0.1:9", error="refused"),
            "ConnectionError",
            True,
        ),
        (SSLError(endpoint_url=ENDPOINT, error="bad cert"), "ConnectionError", True),
        (HTTPClientError(error="reset"), "ConnectionError", True),
        (ValueError("odd"), "UnexpectedError", True),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None,
)
def test_source_and_other_errors_map_to_documented_codes(exc, code, transient):
    """Source-credential, proxy and unforeseen errors get a code from the README's list."""
    failure = classify(exc, "sso-dev")
    assert (failure.code, failure.transient) == (code, transient)
    assert failure.source == code.startswith("Source")
    assert failure.code in documented_codes()


def test_sso_login_failure_says_what_to_run():
    """An SSO source that is not logged in names the command that fixes it."""
    failure = classify(UnauthorizedSSOTokenError(), "sso-dev")
    assert failure.message.endswith("; run: aws sso login --profile sso-dev")
    assert classify(SSOTokenLoadError(error_msg="gone")).message.endswith("run: aws sso login")


def documented_codes() -> set[str]:
    """The error codes of our own that the README lists."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("Error codes\nare AWS's", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"`(\w+)`", section))
