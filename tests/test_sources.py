"""Source credentials checked before any STS call: missing profiles and self-signing are refused
(exit 78), profiles the AWS config file shadows are warned about. Real files, real subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from credrefresh.config import load_config
from credrefresh.sources import inspect

EXIT_CONFIG = 78


def setup(tmp_path: Path, top: str = "", credentials: str = "", aws_config: str = "") -> Path:
    """A config with roles `a` and `b`, and the AWS shared files under HOME."""
    aws = tmp_path / ".aws"
    aws.mkdir(exist_ok=True)
    (aws / "credentials").write_text(credentials)
    (aws / "config").write_text(aws_config)
    path = tmp_path / "c.toml"
    path.write_text(
        'sts_endpoint_url = "http://127.0.0.1:9"\n'
        f"{top}"
        '[[roles]]\nprofile = "a"\nrole_arn = "arn:aws:iam::123456789012:role/a"\n'
        '[[roles]]\nprofile = "b"\nrole_arn = "arn:aws:iam::123456789012:role/b"\n'
    )
    return path


def env(home: Path, **extra: str) -> dict[str, str]:
    return {"HOME": str(home), "PATH": os.environ.get("PATH", os.defpath), **extra}


def run(home: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "credrefresh", *args],
        env=env(home, **extra),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_missing_source_profile_is_refused_by_check_once_and_run(tmp_path):
    """A [source] profile that exists nowhere is exit 78 naming the key, before any STS call."""
    config = setup(tmp_path, '[source]\nprofile = "nowhere"\n', "[other]\nregion = x\n")
    for command in ("check", "once", "run"):
        result = run(tmp_path, command, "--config", str(config))
        assert result.returncode == EXIT_CONFIG, (command, result.stderr)
        assert f"{config}: source.profile: profile 'nowhere' exists in neither" in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("credentials", "aws_config"),
    [("[base]\naws_access_key_id = AKIAEXAMPLE\n", ""), ("", "[profile base]\nregion = x\n")],
)
def test_source_profile_found_in_either_file_passes(tmp_path, credentials, aws_config):
    """A source profile in the credentials file or in the config file is accepted."""
    config = setup(tmp_path, '[source]\nprofile = "base"\n', credentials, aws_config)
    result = run(tmp_path, "check", "--config", str(config))
    assert result.returncode == 0, result.stderr


def test_aws_profile_naming_a_managed_profile_is_refused(tmp_path):
    """Without [source], AWS_PROFILE pointing at a profile we write would sign with our output."""
    config = setup(tmp_path, credentials="[a]\nregion = x\n")
    result = run(tmp_path, "check", "--config", str(config), AWS_PROFILE="a")
    assert result.returncode == EXIT_CONFIG
    assert "AWS_PROFILE='a' names a profile credrefresh writes" in result.stderr
    fine = run(tmp_path, "check", "--config", str(config), AWS_PROFILE="a", AWS_ACCESS_KEY_ID="x")
    assert fine.returncode == 0, fine.stderr  # environment keys come first in botocore's chain


def test_aws_profile_that_does_not_exist_is_refused(tmp_path):
    """Without [source], an AWS_PROFILE that exists nowhere is refused too."""
    config = setup(tmp_path)
    result = run(tmp_path, "check", "--config", str(config), AWS_PROFILE="ghost")
    assert result.returncode == EXIT_CONFIG
    assert "AWS_PROFILE='ghost' exists in neither" in result.stderr


def test_managed_profile_shadowed_by_the_config_file_is_a_warning(tmp_path):
    """A managed profile the AWS config also defines as assume-role or SSO is warned about."""
    aws_config = (
        "[profile a]\nrole_arn = arn:aws:iam::123456789012:role/x\nsource_profile = s\n"
        "[profile b]\nregion = eu-west-1\n"
    )
    config = setup(tmp_path, aws_config=aws_config)
    result = run(tmp_path, "check", "--config", str(config))
    assert result.returncode == 0
    warnings = [line for line in result.stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 1
    assert "[profile a] also sets role_arn, source_profile" in warnings[0]


def test_a_fifo_as_aws_config_never_blocks(tmp_path):
    """A FIFO where the AWS config file should be is skipped, not opened for a blocking read."""
    config = setup(tmp_path, '[source]\nprofile = "base"\n', "[base]\nregion = x\n")
    fifo = tmp_path / ".aws" / "config"
    fifo.unlink()
    os.mkfifo(fifo)
    findings = inspect(load_config(config, environ=env(tmp_path)), env(tmp_path))
    assert findings.problems == ()


def test_names_are_echoed_bounded_and_escaped(tmp_path):
    """A huge or control-character profile name is echoed short and escaped."""
    config = setup(tmp_path)
    findings = inspect(
        load_config(config, environ=env(tmp_path)), env(tmp_path, AWS_PROFILE="x\x1b[31m" * 1000)
    )
    (problem,) = findings.problems
    assert "\x1b" not in problem
    assert len(problem) < 400
