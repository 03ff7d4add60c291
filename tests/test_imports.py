"""``check`` and ``status`` import only what they need: never the AWS SDK or the HTTP stack.

Each command runs in a fresh interpreter (a real subprocess), which then reports which heavy
packages ended up in ``sys.modules``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from credrefresh.config import load_config

HEAVY = ("aioboto3", "aiobotocore", "botocore", "boto3", "aiohttp", "configupdater")
PROBE = """
import json, sys
from credrefresh.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})
print(json.dumps({{"code": code, "heavy": heavy}}))
"""


def config_for(home: Path, credentials: str) -> Path:
    """A valid configuration with three roles and its credentials file under ``home``."""
    path = home / "config.toml"
    path.write_text(
        f'credentials_file = "{home / "credentials"}"\n'
        f'state_file = "{home / "state.json"}"\n'
        'sts_endpoint_url = "http://127.0.0.1:9"\n'
        + "".join(
            f'[[roles]]\nprofile = "p{i}"\nrole_arn = "arn:aws:iam::123456789012:role/r{i}"\n'
            for i in range(3)
        )
    )
    (home / "credentials").write_text(credentials)
    return path


def heavy_imports(home: Path, *args: str) -> dict[str, object]:
    """Run ``credrefresh ARGS`` in a fresh interpreter; its exit code and heavy imports."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=set(HEAVY)), *args],
        env={"HOME": str(home), "PATH": os.environ.get("PATH", os.defpath)},
        cwd=home,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.splitlines()[-1])
    return result


@pytest.mark.parametrize(
    ("args", "credentials", "code"),
    [
        (("check",), "", 0),
        (("status",), "[p0]\ncredrefresh_managed = true\n", 2),
        (("status", "--json"), "", 2),
        (("status",), "not an ini file\n", 2),
    ],
    ids=["check", "status", "status-json", "status-unreadable-file"],
)
def test_command_imports_no_sdk(
    tmp_path: Path, args: tuple[str, ...], credentials: str, code: int
) -> None:
    """The command runs to its exit status without importing boto, aiohttp or configupdater."""
    config = config_for(tmp_path, credentials)
    result = heavy_imports(tmp_path, *args, "--config", str(config))
    assert result == {"code": code, "heavy": []}


LAZY = ("logging", "tomllib", "difflib", "ipaddress", "credrefresh.events")
LAZY_PROBE = """
import json, sys
from credrefresh.cli import main
code = main(sys.argv[1:])
print(json.dumps({{"code": code, "lazy": sorted(m for m in sys.modules if m in {lazy!r})}}))
"""


def test_status_of_a_cached_configuration_imports_only_what_it_uses(tmp_path: Path) -> None:
    """No logging (status never logs), no TOML parser (the cache once and run leave holds
    the table), no difflib (no mistyped key), no ipaddress (no address in the config), no
    event types (status writes no state)."""
    config = tmp_path / "config.toml"
    config.write_text(
        f'credentials_file = "{tmp_path / "credentials"}"\n'
        '[[roles]]\nprofile = "p0"\nrole_arn = "arn:aws:iam::123456789012:role/r0"\n'
    )
    (tmp_path / "credentials").write_text("")
    env = {"HOME": str(tmp_path), "PATH": os.environ.get("PATH", os.defpath)}
    load_config(config, env, cache="update")
    probe = LAZY_PROBE.format(lazy=set(LAZY))
    proc = subprocess.run(
        [sys.executable, "-c", probe, "status", "--config", str(config)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == {"code": 2, "lazy": []}
    # Without the cache, the TOML is parsed: the probe does see a lazy import happen.
    for cached in (tmp_path / ".local" / "state").rglob("config-*.json"):
        cached.unlink()
    proc = subprocess.run(
        [sys.executable, "-c", probe, "status", "--config", str(config)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert json.loads(proc.stdout.splitlines()[-1]) == {"code": 2, "lazy": ["tomllib"]}
