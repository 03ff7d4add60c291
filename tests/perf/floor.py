"""The floor: the least a program can do to turn N roles into one credentials file.

Reads the same TOML configuration as ``credrefresh once`` (roles, endpoint, file, concurrency),
POSTs one form-encoded AssumeRole per role with bare aiohttp (at most ``max_concurrency`` in
flight over one keep-alive pool), parses each XML answer with ``xml.etree``, and writes one INI
file (temp file, fsync, rename, as credrefresh does). No validation, no logging, no locking, and
only an immediate retry (up to ``ATTEMPTS`` tries) of a failed call, for runs with an injected
error rate: it is the yardstick, not a tool. The Authorization header only looks like SigV4;
the fake STS reads the access key id from it and verifies nothing else.

    python tests/perf/floor.py --config CONFIG.toml

Exit status 0 when every role was assumed, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import tomllib
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import aiohttp

NS = {"sts": "https://sts.amazonaws.com/doc/2011-06-15/"}
ATTEMPTS = 5  # as credrefresh's default sts_max_attempts


def authorization(access_key: str, region: str) -> str:
    """A header shaped like SigV4; the signature is a constant, nobody checks it."""
    day = datetime.now(UTC).strftime("%Y%m%d")
    return (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{day}/{region}/sts/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date, Signature=" + "0" * 64
    )


async def assume(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], role: dict[str, str]
) -> tuple[str, dict[str, str]]:
    """One AssumeRole call; the profile and its four values."""
    body = urlencode(
        {
            "Action": "AssumeRole",
            "Version": "2011-06-15",
            "RoleArn": role["role_arn"],
            "RoleSessionName": role.get("session_name", f"credrefresh-{role['profile']}"),
            "DurationSeconds": str(role.get("duration_seconds", 3600)),
        }
    )
    async with session.post(url, data=body, headers=headers) as response:
        text = await response.read()
        response.raise_for_status()
    root = ET.fromstring(text)  # noqa: S314 - the answer comes from our own fake STS
    creds = root.find("sts:AssumeRoleResult/sts:Credentials", NS)
    if creds is None:
        raise ValueError("no Credentials in the answer")

    def value(tag: str) -> str:
        return creds.findtext(f"sts:{tag}", default="", namespaces=NS)

    return role["profile"], {
        "aws_access_key_id": value("AccessKeyId"),
        "aws_secret_access_key": value("SecretAccessKey"),
        "aws_session_token": value("SessionToken"),
        "x_security_token_expires": value("Expiration"),
    }


def write_ini(path: str, profiles: dict[str, dict[str, str]]) -> None:
    """One atomic write of every profile."""
    lines: list[str] = []
    for name, values in profiles.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {value}" for key, value in values.items()]
        lines.append("")
    directory = os.path.dirname(path) or "."
    fd, temp = tempfile.mkstemp(dir=directory, prefix=".floor-", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


async def assume_all(config: dict[str, Any]) -> tuple[dict[str, dict[str, str]], int]:
    """Assume every role of the configuration; the profiles and how many roles failed."""
    url = config.get("sts_endpoint_url") or os.environ["AWS_ENDPOINT_URL_STS"]
    limit = int(config.get("max_concurrency", 16))
    region = config.get("region", "us-east-1")
    headers = {
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
        "Authorization": authorization(os.environ.get("AWS_ACCESS_KEY_ID", "AKIAFLOOR"), region),
        "X-Amz-Date": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
    }
    semaphore = asyncio.Semaphore(limit)
    connector = aiohttp.TCPConnector(limit=limit)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def bounded(role: dict[str, str]) -> tuple[str, dict[str, str]] | None:
            async with semaphore:
                for _ in range(ATTEMPTS):
                    try:
                        return await assume(session, url, headers, role)
                    except (aiohttp.ClientError, ValueError, ET.ParseError):
                        continue
                return None

        results = await asyncio.gather(*(bounded(role) for role in config["roles"]))
    profiles = dict(r for r in results if r is not None)
    return profiles, len(results) - len(profiles)


def main(argv: list[str]) -> int:
    """Read the configuration, assume every role, write the file; return the exit status."""
    if len(argv) != 2 or argv[0] != "--config":
        sys.stderr.write("usage: floor.py --config CONFIG.toml\n")
        return 2
    with open(argv[1], "rb") as handle:
        config = tomllib.load(handle)
    profiles, failed = asyncio.run(assume_all(config))
    write_ini(os.path.expanduser(config["credentials_file"]), profiles)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
