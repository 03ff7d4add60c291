"""The command line's side of the configuration contract, run as a real subprocess.

Each test starts ``python -m credrefresh`` with a clean environment whose HOME is the test's
``tmp_path``, so defaults (``~/.aws/credentials``, ``~/.config/credrefresh``) land there.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from credrefresh.config import load_config
from credrefresh.errors import ConfigError

EXIT_CONFIG = 78
# Nothing listens on the discard port; no test here should get as far as calling STS anyway.
ENDPOINT = 'sts_endpoint_url = "http://127.0.0.1:9"\n'


def roles(count: int) -> str:
    """``count`` valid ``[[roles]]`` tables."""
    return "".join(
        f'[[roles]]\nprofile = "p{i}"\nrole_arn = "arn:aws:iam::123456789012:role/r{i}"\n'
        for i in range(count)
    )


def clean_env(home: Path) -> dict[str, str]:
    """An environment with nothing from the caller but PATH, and HOME set to ``home``."""
    return {"HOME": str(home), "PATH": os.environ.get("PATH", os.defpath)}


def credrefresh(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m credrefresh ARGS`` with a clean environment, bounded in time."""
    return subprocess.run(
        [sys.executable, "-m", "credrefresh", *args],
        env=clean_env(home),
        cwd=home,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def expected_stderr(path: str, home: Path) -> str:
    """What the CLI must print for an invalid config: each problem, then a count line."""
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=clean_env(home))
    problems = info.value.problems
    lines = [f"credrefresh: {problem}\n" for problem in problems]
    lines.append(f"credrefresh: {len(problems)} problem(s) in {path}; nothing was changed\n")
    return "".join(lines)


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    """Neither stream shows a Python traceback."""
    assert "Traceback" not in result.stdout
    assert "Traceback" not in result.stderr


def test_check_valid_config_prints_summary(tmp_path):
    """check on a valid config exits 0, names the file and the role count, and creates nothing."""
    config = tmp_path / "config.toml"
    config.write_text(ENDPOINT + roles(3), encoding="utf-8")
    result = credrefresh(tmp_path, "check", "--config", str(config))
    assert (result.returncode, result.stderr) == (0, "")
    no_traceback(result)
    lines = result.stdout.splitlines()
    assert lines[0] == f"{config}: OK"
    assert re.search(r"^  roles:\s+3$", result.stdout, re.MULTILINE), result.stdout
    assert f"credentials file: {tmp_path}/.aws/credentials" in result.stdout
    assert [line for line in lines if line.startswith("  - ")] == [
        f"  - p{i}: arn:aws:iam::123456789012:role/r{i}" for i in range(3)
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


MALFORMED = [
    pytest.param(
        roles(1) + "[refresh\n",
        ("TOML syntax error: Expected ']' at the end of a table declaration (at line 4",),
        id="syntax",
    ),
    pytest.param(roles(1).encode("utf-16"), ("not UTF-8 text (byte 0)",), id="utf16"),
    pytest.param(
        'max_concurrency = "8"\n' + roles(1),
        ("max_concurrency: expected an integer, got a string",),
        id="type",
    ),
    pytest.param(
        'regoin = "us-east-1"\n'
        + roles(2)
        + '[[roles]]\nprofile = "p0"\nrole_arn = "arn:aws:iam::12345678901:role/x"\n'
        + "duration_seconds = 899\n",
        (
            "regoin: unknown key (did you mean 'region'?)",
            "roles[2].role_arn: expected an IAM role ARN",
            "roles[2].duration_seconds: expected an integer from 900 to 43200, got 899",
        ),
        id="several-problems",
    ),
]


@pytest.mark.parametrize(("content", "fragments"), MALFORMED)
def test_check_invalid_config_exits_78(tmp_path, content, fragments):
    """check on an invalid config exits 78 and prints every problem, naming file and key."""
    config = tmp_path / "config.toml"
    if isinstance(content, bytes):
        config.write_bytes(content)
    else:
        config.write_text(content, encoding="utf-8")
    result = credrefresh(tmp_path, "check", "--config", str(config))
    assert result.returncode == EXIT_CONFIG
    no_traceback(result)
    assert result.stdout == ""
    assert result.stderr == expected_stderr(str(config), tmp_path)
    for fragment in fragments:
        assert f"credrefresh: {config}: {fragment}" in result.stderr, result.stderr


@pytest.mark.parametrize("command", ["once", "run"])
def test_invalid_config_leaves_credentials_file_alone(tmp_path, command):
    """once and run on an invalid config exit 78 and never touch the credentials file."""
    aws = tmp_path / ".aws"
    aws.mkdir()
    credentials = aws / "credentials"
    credentials.write_bytes(
        b"[other]\naws_access_key_id = AKIDOTHER\naws_secret_access_key = keep-me\n"
    )
    past = 1_600_000_000_000_000_000
    os.utime(credentials, ns=(past, past))
    before = (credentials.read_bytes(), credentials.stat().st_mtime_ns)
    config = tmp_path / "config.toml"
    config.write_text(
        ENDPOINT
        + 'credentials_file = "~/.aws/credentials"\n'
        + roles(1)
        + '[[roles]]\nprofile = "bad"\nrole_arn = "arn:aws:iam::123456789012:user/bad"\n',
        encoding="utf-8",
    )
    result = credrefresh(tmp_path, command, "--config", str(config))
    assert result.returncode == EXIT_CONFIG
    no_traceback(result)
    assert result.stderr == expected_stderr(str(config), tmp_path)
    assert f"credrefresh: {config}: roles[1].role_arn: expected an IAM role ARN" in result.stderr
    assert "keep-me" not in result.stdout + result.stderr
    assert (credentials.read_bytes(), credentials.stat().st_mtime_ns) == before
    assert sorted(p.name for p in aws.iterdir()) == ["credentials"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".aws", "config.toml"]


def test_missing_config_exits_78(tmp_path):
    """A missing --config file exits 78 with a message naming the path."""
    config = tmp_path / "absent.toml"
    result = credrefresh(tmp_path, "check", "--config", str(config))
    assert result.returncode == EXIT_CONFIG
    no_traceback(result)
    assert result.stdout == ""
    assert result.stderr == (
        f"credrefresh: {config}: cannot read: No such file or directory\n"
        f"credrefresh: 1 problem(s) in {config}; nothing was changed\n"
    )


def test_missing_default_config_exits_78(tmp_path):
    """Without --config the default under HOME is read, and its absence exits 78 naming it."""
    config = tmp_path / ".config" / "credrefresh" / "config.toml"
    result = credrefresh(tmp_path, "check")
    assert result.returncode == EXIT_CONFIG
    no_traceback(result)
    assert result.stderr.startswith(f"credrefresh: {config}: cannot read: ")
