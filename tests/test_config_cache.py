"""The parsed-config cache (``credrefresh.configcache``) and the fast path of role validation.

The cache may make a configuration load faster and must change nothing else: a cache that does
not belong to the config's exact bytes, or that is not a private regular file of ours, is
ignored and the TOML parsed; validation runs on every load; ``status`` prints the same with and
without it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from credrefresh import config as config_module
from credrefresh import configcache
from credrefresh import validate as validate_module
from credrefresh.atomic import TEMP_MARK
from credrefresh.config import load_config
from credrefresh.credtext import render
from credrefresh.errors import ConfigError
from credrefresh.model import Credentials, Issued
from credrefresh.plainrole import plain_role
from credrefresh.status import status
from credrefresh.validate import _Validator, validate

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown)")
ARN = "arn:aws:iam::123456789012:role/{}"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def config_text(count: int, region: str = "us-east-1") -> str:
    """A config of ``count`` plain roles plus one with every optional key."""
    lines = [f'region = "{region}"', "[refresh]", "jitter = 0.05"]
    for i in range(count):
        lines += ["[[roles]]", f'profile = "p{i}"', f'role_arn = "{ARN.format(f"r{i}")}"']
    lines += [
        "[[roles]]",
        'profile = "full"',
        f'role_arn = "{ARN.format("full")}"',
        "duration_seconds = 1800",
        'session_name = "audit-me"',
        'tags = { team = "ops", env = "prod" }',
        'policy_arns = ["arn:aws:iam::aws:policy/ReadOnlyAccess"]',
        'region = "eu-west-1"',
    ]
    return "\n".join(lines) + "\n"


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A config file and an environment whose state directory is under ``tmp_path``."""
    path = tmp_path / "config.toml"
    path.write_text(config_text(3))
    return path, {"HOME": str(tmp_path / "home"), "XDG_STATE_HOME": str(tmp_path / "state")}


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The configs ``load_config`` parsed as TOML (not taken from the cache), by path."""
    seen: list[str] = []
    real = config_module.parse

    def counting(name: str, text: str) -> dict[str, Any]:
        seen.append(name)
        return real(name, text)

    monkeypatch.setattr(config_module, "parse", counting)
    return seen


def cache_of(path: Path, env: dict[str, str]) -> Path:
    """Where the cache of ``path`` goes under ``env``."""
    return Path(configcache.cache_path(str(path), env))


def test_cache_is_written_private_and_then_used(setup, parses):
    """``update`` writes a 0600 file in a 0700 state directory; ``read`` then skips the parse
    and returns an equal configuration."""
    path, env = setup
    parsed = load_config(path, env)
    assert load_config(path, env, cache="update") == parsed
    cache = cache_of(path, env)
    assert cache.parent == Path(env["XDG_STATE_HOME"]) / "credrefresh"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.parent.stat().st_mode) == 0o700
    assert len(parses) == 2
    assert load_config(path, env, cache="read") == parsed
    assert load_config(path, env, cache="update") == parsed
    assert len(parses) == 2  # both came from the cache


def test_read_never_writes(setup, parses):
    """``read`` (status) with no cache parses the TOML and creates nothing."""
    path, env = setup
    load_config(path, env, cache="read")
    assert parses == [str(path)]
    assert not Path(env["XDG_STATE_HOME"]).exists()


def test_changed_config_of_the_same_size_is_parsed(setup, parses):
    """A config whose bytes changed but not its size is parsed again, and its new values hold."""
    path, env = setup
    load_config(path, env, cache="update")
    before = path.read_bytes()
    after = before.replace(b"us-east-1", b"us-west-2")
    assert len(after) == len(before)
    assert after != before
    path.write_bytes(after)
    assert load_config(path, env, cache="read").region == "us-west-2"
    assert len(parses) == 2


def test_invalid_config_is_refused_as_without_the_cache(setup):
    """An edit that makes the config invalid is reported (same problems) despite a cache of the
    valid version; an invalid config is never cached."""
    path, env = setup
    load_config(path, env, cache="update")
    cache = cache_of(path, env)
    cached = cache.read_bytes()
    path.write_text(config_text(3).replace('"p1"', '"p0"'))
    with pytest.raises(ConfigError) as plain:
        load_config(path, env)
    with pytest.raises(ConfigError) as through_cache:
        load_config(path, env, cache="update")
    assert through_cache.value.problems == plain.value.problems
    assert "duplicate profile 'p0'" in plain.value.problems[0]
    assert cache.read_bytes() == cached


def test_validation_runs_with_the_current_environment(setup):
    """The cache holds the parse, not the result: defaults follow the environment of each load."""
    path, env = setup
    load_config(path, env, cache="update")
    other = {**env, "HOME": "/elsewhere", "AWS_SHARED_CREDENTIALS_FILE": "/x/credentials"}
    assert load_config(path, other, cache="read") == load_config(path, other)
    assert load_config(path, other, cache="read").credentials_file == "/x/credentials"


def tamper_body(content: bytes) -> bytes:
    """The cache with one role's profile renamed in the table, header untouched."""
    return content.replace(b'"p1"', b'"px"', 1)


def tamper_header(content: bytes) -> bytes:
    """The cache with its body changed and the body digest in the header made to match."""
    header, body = content.split(b"\n", 1)
    body = tamper_body(body)
    fields = json.loads(header)
    fields["body_sha256"] = hashlib.sha256(body.rstrip(b"\n")).hexdigest()
    fields["config_sha256"] = "0" * 64
    return json.dumps(fields, sort_keys=True).encode() + b"\n" + body


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(tamper_body, id="body-edited"),
        pytest.param(tamper_header, id="header-forged-for-other-bytes"),
        pytest.param(lambda c: c[: len(c) // 2], id="truncated"),
        pytest.param(lambda _: b"", id="empty"),
        pytest.param(lambda _: b"\xff\xfe garbage\n{", id="garbage"),
        pytest.param(lambda c: c.split(b"\n")[0] + b"\n[1, 2]\n", id="body-not-a-table"),
        pytest.param(lambda c: c.replace(b'"version": 1', b'"version": 2'), id="other-version"),
    ],
)
def test_damaged_cache_is_ignored(setup, parses, damage):
    """A cache whose header or body does not match the config's bytes is ignored."""
    path, env = setup
    expected = load_config(path, env, cache="update")
    cache = cache_of(path, env)
    cache.write_bytes(damage(cache.read_bytes()))
    assert load_config(path, env, cache="read") == expected
    assert len(parses) == 2


def test_body_of_the_right_digest_but_other_content_needs_the_header(setup, parses):
    """The header binds the body to the config bytes: a body for other bytes is not used."""
    path, env = setup
    load_config(path, env, cache="update")
    cache = cache_of(path, env)
    original = cache.read_bytes()
    path.write_text(config_text(4))
    load_config(path, env, cache="update")
    path.write_text(config_text(3))
    header = original.split(b"\n", 1)[0]
    cache.write_bytes(header + b"\n" + cache.read_bytes().split(b"\n", 1)[1])
    assert load_config(path, env, cache="read") == load_config(path, env)
    assert len(parses) == 4


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o602])
def test_cache_readable_or_writable_by_others_is_ignored(setup, parses, mode):
    """A cache with any group or other permission is ignored."""
    path, env = setup
    load_config(path, env, cache="update")
    cache_of(path, env).chmod(mode)
    load_config(path, env, cache="read")
    assert len(parses) == 2


@ROOT_ONLY
def test_cache_owned_by_another_user_is_ignored(setup, parses):
    """A cache file owned by another user is ignored, whatever it holds."""
    path, env = setup
    load_config(path, env, cache="update")
    os.chown(cache_of(path, env), 65534, 65534)
    load_config(path, env, cache="read")
    assert len(parses) == 2


def test_symlinked_cache_is_ignored(setup, parses, tmp_path):
    """A symlink in the cache's place is not followed, even to a valid cache."""
    path, env = setup
    load_config(path, env, cache="update")
    cache = cache_of(path, env)
    moved = tmp_path / "elsewhere.json"
    cache.rename(moved)
    cache.symlink_to(moved)
    load_config(path, env, cache="read")
    assert len(parses) == 2


def test_fifo_in_the_cache_place_is_ignored_without_blocking(setup, parses):
    """A FIFO where the cache goes is ignored at once (nothing writes to it; a blocking open
    would hang the test until the global timeout)."""
    path, env = setup
    cache = cache_of(path, env)
    cache.parent.mkdir(parents=True, mode=0o700)
    os.mkfifo(cache, 0o600)
    assert load_config(path, env, cache="read").roles
    assert len(parses) == 1
    load_config(path, env, cache="update")  # the rename replaces the FIFO, as for the state file
    assert stat.S_ISREG(cache.lstat().st_mode)
    assert len(parses) == 2


def test_oversized_cache_is_ignored(setup, parses, monkeypatch):
    """A cache larger than ``MAX_CACHE_SIZE`` is not read."""
    path, env = setup
    load_config(path, env, cache="update")
    monkeypatch.setattr(configcache, "MAX_CACHE_SIZE", 100)
    load_config(path, env, cache="read")
    assert len(parses) == 2


def test_unsafe_state_directory_gets_no_cache(setup):
    """A state directory others can write is not written in; loading still works."""
    path, env = setup
    directory = cache_of(path, env).parent
    directory.mkdir(parents=True)
    directory.chmod(0o777)
    assert load_config(path, env, cache="update").roles
    assert os.listdir(directory) == []


def test_table_json_cannot_carry_is_not_cached(tmp_path):
    """A table with a date, or a NaN, is not cached (JSON would not give it back exactly)."""
    target = str(tmp_path / "c.json")
    assert not configcache.store(target, b"x", {"when": datetime(2026, 1, 1, tzinfo=UTC)})
    assert not configcache.store(target, b"x", {"n": float("nan")})
    assert not os.path.exists(target)
    assert configcache.store(target, b"x", {"a": [1, 1.0, True, "s", {"b": 2, "c": None}]})
    assert configcache.load_cached(target, b"x") == {"a": [1, 1.0, True, "s", {"b": 2, "c": None}]}
    assert configcache.load_cached(target, b"y") is None


def credentials_file(path: Path, profiles: list[str]) -> None:
    """A credentials file with managed sections for ``profiles`` (not real keys)."""
    updates = {
        name: Issued(
            profile=name,
            role_arn=ARN.format(f"r{i}"),
            session_name=f"credrefresh-{name}",
            assumed_role_arn=f"arn:aws:sts::123456789012:assumed-role/r{i}/credrefresh-{name}",
            credentials=Credentials(
                access_key_id=f"ASIA{i:016d}",
                secret_access_key="s" * 40,
                session_token="t" * 100,
                expiration=NOW + timedelta(minutes=10 * i),
            ),
            issued_at=NOW - timedelta(minutes=50),
            duration_ms=1.0,
        )
        for i, name in enumerate(profiles)
    }
    path.write_text(render("", updates, now=NOW - timedelta(minutes=50))[0])


@pytest.mark.parametrize("as_json", [False, True])
def test_status_prints_the_same_with_and_without_the_cache(setup, parses, as_json):
    """``status`` of a config read through the cache prints exactly what it prints without."""
    path, env = setup
    creds = path.parent / "credentials"
    path.write_text(f'credentials_file = "{creds}"\n' + config_text(5))
    credentials_file(creds, ["p0", "p1", "p3", "full"])
    outputs, codes = [], []
    for mode in ("none", "update", "read"):
        out = io.StringIO()
        codes.append(status(load_config(path, env, cache=mode), as_json=as_json, out=out, now=NOW))
        outputs.append(out.getvalue())
    assert len(parses) == 2  # the last load came from the cache
    assert outputs[0] == outputs[1] == outputs[2]
    assert codes == [2, 2, 2]
    assert "p2" in outputs[0]
    assert "s" * 40 not in outputs[0]
    assert "t" * 100 not in outputs[0]


# -- the fast path of role validation ----------------------------------------------------------

PROFILES = st.one_of(
    st.from_regex(r"[A-Za-z0-9_+=,.@-]{1,12}", fullmatch=True),
    st.sampled_from(["DEFAULT", "x" * 256, "y" * 257, "a b", " a", "a]", "é", "a\u202e", ""]),
    st.text(max_size=8),
)
ARNS = st.one_of(
    st.builds(ARN.format, st.from_regex(r"[A-Za-z0-9_+=,.@/-]{0,70}", fullmatch=True)),
    st.sampled_from(["arn:aws:iam::12345678901:role/x", "arn:aws:iam::123456789012:role/x\n"]),
    st.text(max_size=8),
)
VALUES = st.one_of(PROFILES, ARNS, st.integers(), st.booleans(), st.none(), st.lists(st.text()))


@settings(max_examples=400, deadline=None)
@given(
    profile=st.one_of(PROFILES, VALUES),
    arn=st.one_of(ARNS, VALUES),
    extra=st.dictionaries(st.sampled_from(["duration_seconds", "regio", "tags"]), VALUES),
)
def test_plain_role_agrees_with_the_full_walk(profile, arn, extra):
    """The fast path builds a role only when the full walk accepts the table, and the same one."""
    table = {"profile": profile, "role_arn": arn, **extra}
    walk = _Validator("config.toml", {"HOME": "/h"})
    expected = walk.role(table, "roles[0].")
    fast = plain_role(table)
    if fast is not None:
        assert walk.problems == []
        assert fast == expected
    usual = isinstance(profile, str) and re.fullmatch(r"[A-Za-z0-9_+=,.@-]{1,256}", profile)
    if not extra and expected is not None and usual and profile != "DEFAULT":
        assert fast is not None  # the fast path takes the usual shape, or it is no use


ROLE_TABLES = st.one_of(
    st.builds(lambda p: {"profile": p, "role_arn": ARN.format(p)}, st.sampled_from("abcd")),
    st.fixed_dictionaries({"profile": st.one_of(PROFILES, VALUES), "role_arn": ARNS}),
    st.builds(
        lambda p, d: {"profile": p, "role_arn": ARN.format("x"), "duration_seconds": d},
        st.sampled_from("abcd"),
        st.sampled_from([900, 3600, 10]),
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    tables=st.lists(ROLE_TABLES, max_size=6),
    source=st.sampled_from([None, "a", "elsewhere"]),
    serve=st.sampled_from([None, ["a"], ["nobody"]]),
)
def test_roles_in_one_step_are_what_the_walk_makes_of_them(tables, source, serve):
    """Every table plain and no profile twice: validate takes the roles in one step. Its
    Config, or its problems, are what the table-by-table walk alone gives (plain_role off)."""
    data: dict[str, Any] = {"credentials_file": "/h/credentials", "roles": tables}
    if source is not None:
        data["source"] = {"profile": source}
    if serve is not None:
        data["serve"] = {"address": "127.0.0.1:9911", "profiles": serve}

    def outcome() -> Any:
        try:
            return validate("/h/config.toml", {"HOME": "/h"}, data)
        except ConfigError as exc:
            return exc.problems

    fast = outcome()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(validate_module, "plain_role", lambda _table: None)
        assert outcome() == fast


@pytest.mark.asyncio
async def test_a_reload_keeps_the_cache_current(setup, parses, monkeypatch):
    """``run`` on SIGHUP loads through the cache as its start did: status then reads the new
    configuration from the cache, not the one ``run`` started with."""
    from credrefresh.systemd import Notifier  # noqa: PLC0415 - this test only
    from credrefresh.wiring import build_daemon  # noqa: PLC0415

    path, env = setup
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    started = load_config(path, cache="update")
    path.write_text(config_text(7))
    async with build_daemon(started, notifier=Notifier({}), handle_signals=False) as daemon:
        assert await daemon.reload()
    parses.clear()
    assert len(load_config(path, cache="read").roles) == 8
    assert parses == []  # from the cache the reload wrote


def test_a_config_with_an_external_id_is_not_cached(setup, parses):
    """``external_id`` is never echoed; a copy in the cache would outlive its removal from the
    config, so such a configuration is parsed every time instead."""
    path, env = setup
    text = config_text(2).replace(
        'session_name = "audit-me"', 'session_name = "audit-me"\nexternal_id = "s3cr3t-partner-id"'
    )
    path.write_text(text)
    config = load_config(path, env, cache="update")
    assert any(role.external_id == "s3cr3t-partner-id" for role in config.roles)
    assert not cache_of(path, env).exists()
    load_config(path, env, cache="read")
    assert parses == [str(path), str(path)]


def test_a_store_killed_half_way_leaves_no_temp_file_behind(setup):
    """A temp file left by a store that was killed is removed by the next one."""
    path, env = setup
    load_config(path, env, cache="update")
    cache = cache_of(path, env)
    leftover = cache.parent / f".{cache.name}{TEMP_MARK}12345.tmp"
    leftover.write_bytes(b"x" * 1000)
    path.write_text(config_text(4))
    load_config(path, env, cache="update")
    assert not leftover.exists()
    assert sorted(p.name for p in cache.parent.iterdir()) == [cache.name]
