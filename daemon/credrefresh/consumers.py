"""How long-running processes get fresh credentials: ``env``, ``exec`` and ``credential-process``.

Light on purpose: ``credential-process`` runs on every refresh of every consumer, so this module
imports neither aiohttp nor botocore, and never calls STS. It reads the endpoint of a running
``credrefresh run`` when ``[serve]`` is configured (and the profile served), else the file.
"""

from __future__ import annotations

import configparser
import json
import os
import sys
import urllib.error
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final
from urllib.parse import quote

from credrefresh.config import Config
from credrefresh.model import Credentials, format_time
from credrefresh.served import read_secrets

__all__ = [
    "ConsumerError",
    "consume",
    "credential_process",
    "environment",
    "exec_command",
    "print_env",
    "serve_summary",
]

URI_VAR: Final = "AWS_CONTAINER_CREDENTIALS_FULL_URI"
TOKEN_VAR: Final = "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"  # noqa: S105 - a name
# Variables that would win over the container provider in an SDK's chain, or point it elsewhere.
LEAKS: Final = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
)
ENDPOINT_TIMEOUT: Final = 5.0  # seconds for the whole request to the local endpoint
SDK_MARGIN: Final = 900  # botocore refetches on every call with less than 15 minutes left


class ConsumerError(Exception):
    """A profile cannot be handed out; the message is the one line printed to stderr."""


def served_url(config: Config, profile: str) -> str:
    """The endpoint URL of ``profile``.

    Raises:
        ConsumerError: no ``[serve]`` table, or the profile is not managed or not served.
    """
    if config.serve is None:
        raise ConsumerError(f"{config.path}: no [serve] table: the endpoint is off")
    if config.role(profile) is None:
        raise ConsumerError(f"profile {profile!r} is not managed by {config.path}")
    if not config.serve.serves(profile):
        raise ConsumerError(f"profile {profile!r} is not in serve.profiles of {config.path}")
    return config.serve.url(quote(profile, safe=""))


def environment(config: Config, profile: str) -> dict[str, str]:
    """The two variables that point an SDK's container provider at ``profile``."""
    assert config.serve is not None  # noqa: S101 - served_url checked it
    url = served_url(config, profile)
    return {URI_VAR: url, TOKEN_VAR: config.serve.token_file}


def print_env(config: Config, profile: str) -> None:
    """``credrefresh env``: ``KEY=VALUE`` lines, no quotes (``EnvironmentFile=``, ``export``)."""
    for key, value in environment(config, profile).items():
        print(f"{key}={value}")  # noqa: T201


def exec_command(config: Config, profile: str, argv: Sequence[str]) -> int:
    """``credrefresh exec``: replace this process with ``argv`` in the endpoint's environment.

    Returns only when the command cannot be started (127, like a shell).
    """
    env = {k: v for k, v in os.environ.items() if k not in LEAKS}
    env.update(environment(config, profile))
    try:
        os.execvpe(argv[0], list(argv), env)  # noqa: S606 - running the user's command is the point
    except OSError as exc:
        print(f"credrefresh: cannot run {argv[0]!r}: {exc.strerror}", file=sys.stderr)  # noqa: T201
    return 127


def credential_process(config: Config, profile: str, now: datetime | None = None) -> str:
    """``credrefresh credential-process``: the Version 1 JSON for ``profile``.

    Raises:
        ConsumerError: the profile is missing, not ours, or has no valid credentials.
    """
    moment = now or datetime.now(UTC)
    if config.serve is not None and config.role(profile) and config.serve.serves(profile):
        try:
            credentials = from_endpoint(config, profile)
        except urllib.error.HTTPError as exc:
            raise ConsumerError(endpoint_refusal(profile, exc)) from None
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            credentials = from_file(config, profile)  # no daemon listening: the file may do
    else:
        credentials = from_file(config, profile)
    if credentials.expiration <= moment:
        raise ConsumerError(
            f"profile {profile!r}: credentials expired at {format_time(credentials.expiration)}"
            "; is credrefresh run running?"
        )
    return json.dumps(
        {
            "Version": 1,
            "AccessKeyId": credentials.access_key_id,
            "SecretAccessKey": credentials.secret_access_key,
            "SessionToken": credentials.session_token,
            "Expiration": format_time(credentials.expiration),
        }
    )


def from_file(config: Config, profile: str) -> Credentials:
    """The credentials credrefresh wrote for ``profile`` in the credentials file."""
    path = config.credentials_file
    try:
        found = read_secrets(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConsumerError(f"{path}: cannot read: {getattr(exc, 'strerror', exc)}") from None
    except configparser.Error:
        raise ConsumerError(f"{path}: does not parse as an INI file") from None
    entry = found.get(profile)
    if entry is None:
        raise ConsumerError(f"profile {profile!r} is not in {path}")
    if not entry.managed:
        raise ConsumerError(f"profile {profile!r} in {path} was not written by credrefresh")
    if entry.credentials is None:
        raise ConsumerError(f"profile {profile!r} in {path} has no complete credentials")
    return entry.credentials


def from_endpoint(config: Config, profile: str) -> Credentials:
    """The credentials the running daemon serves for ``profile``.

    Raises:
        urllib.error.HTTPError: the daemon refused.
        OSError: nothing answered (no daemon running), or the token file cannot be read.
        ValueError: the answer is not what the endpoint sends.
    """
    import urllib.request  # noqa: PLC0415 - it imports ssl: only when the endpoint is asked

    assert config.serve is not None  # noqa: S101 - checked by the caller
    with open(config.serve.token_file, encoding="ascii") as handle:
        token = handle.read()
    request = urllib.request.Request(  # noqa: S310 - http://127.x or [::1] from the config
        served_url(config, profile), headers={"Authorization": token}
    )
    with urllib.request.urlopen(request, timeout=ENDPOINT_TIMEOUT) as answer:  # noqa: S310
        data = json.loads(answer.read(65536))
    expiration = datetime.fromisoformat(data["Expiration"])
    return Credentials(data["AccessKeyId"], data["SecretAccessKey"], data["Token"], expiration)


def endpoint_refusal(profile: str, exc: urllib.error.HTTPError) -> str:
    """One line for a refusal of the endpoint (its ``message``, never a header)."""
    try:
        message = str(json.loads(exc.read(4096)).get("message", ""))
    except (ValueError, AttributeError, OSError, RecursionError):
        message = ""
    return f"profile {profile!r}: the credrefresh endpoint answered {exc.code} {message}".strip()


def serve_summary(config: Config) -> list[str]:
    """The lines ``check`` adds about ``[serve]``, warnings included."""
    if config.serve is None:
        return []
    served = config.serve.profiles
    lines = [
        f"  serve:            http://{config.serve.netloc}/v1/credentials/<profile>",
        f"  token file:       {config.serve.token_file}",
        f"  served profiles:  {', '.join(served) if served is not None else 'all'}",
    ]
    policy = config.refresh
    late = 1 - policy.refresh_at - policy.jitter  # lifetime share left at the latest refresh
    for role in config.roles:
        left = role.duration_seconds * late
        if config.serve.serves(role.profile) and left < SDK_MARGIN:
            lines.append(
                f"  warning: {role.profile}: duration_seconds {role.duration_seconds} with "
                f"refresh_at + jitter {1 - late:g} hands out credentials with as little as "
                f"{left:.0f} s left; SDKs refetch on every call below {SDK_MARGIN} s. Raise "
                f"duration_seconds to {SDK_MARGIN / late:.0f} or lower refresh_at."
            )
    return lines


def consume(command: str, config: Config, profile: str, argv: Sequence[str] = ()) -> int:
    """Run ``env``, ``exec`` or ``credential-process``; the exit status."""
    try:
        if command == "env":
            print_env(config, profile)
            return 0
        if command == "exec":
            return exec_command(config, profile, argv)
        print(credential_process(config, profile))  # noqa: T201
    except ConsumerError as exc:
        print(f"credrefresh: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    return 0
