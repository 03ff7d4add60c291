"""The TOML configuration: parsed once, validated once, returned as frozen dataclasses.

Nothing past this module re-checks a value. Every problem is collected (not just the first), and
each message names the file, the key path (``roles[2].role_arn``) and what was expected. The
types live in ``credrefresh.settings`` and the checks in ``credrefresh.validate``; this module
is the entry point and re-exports the types.

The file is bounded: at most ``MAX_FILE_SIZE`` bytes, and ``MAX_DEPTH`` levels of nesting
(``tomllib`` recurses once per level, so a file nested a thousand deep ends its parse with a
``RecursionError``, which becomes a ``ConfigError`` like any other syntax problem).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Final, Literal

from credrefresh.configcache import cache_path, load_cached, store
from credrefresh.errors import ConfigError
from credrefresh.settings import (
    DEFAULT_CONCURRENCY,
    DEFAULT_DURATION,
    DURATION_MAX,
    DURATION_MIN,
    REFRESH_KEYS,
    ROLE_KEYS,
    SOURCE_KEYS,
    TOP_KEYS,
    Config,
    RefreshPolicy,
    ReloadPlan,
    Role,
)
from credrefresh.validate import MAX_ROLES, validate

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_DURATION",
    "DURATION_MAX",
    "DURATION_MIN",
    "MAX_DEPTH",
    "MAX_FILE_SIZE",
    "MAX_ROLES",
    "REFRESH_KEYS",
    "ROLE_KEYS",
    "SOURCE_KEYS",
    "TOP_KEYS",
    "Config",
    "RefreshPolicy",
    "ReloadPlan",
    "Role",
    "load_config",
    "plan_reload",
]

# 10,000 roles with every optional key take some 3 MiB; 16 MiB leaves room and still bounds
# what a hostile file makes the daemon read and parse.
MAX_FILE_SIZE: Final = 16 * 1024 * 1024
# Counting the document itself, the deepest a valid config goes is 4 (the document, the roles
# array, a role, its tags). 16 is plenty, and far below where tomllib runs out of stack.
MAX_DEPTH: Final = 16

# Settings a running daemon cannot adopt: the file it locks and the socket it serves.
FIXED_ON_RELOAD: Final = ("credentials_file", "metrics_address", "serve")


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """The difference between two configurations, as a reload applies it (pure).

    Raises:
        ConfigError: ``new`` changes a setting that needs a restart.
    """
    problems = [
        f"{new.path}: {key}: cannot change while running (from {getattr(old, key)!r} to "
        f"{getattr(new, key)!r}); restart instead"
        for key in FIXED_ON_RELOAD
        if getattr(old, key) != getattr(new, key)
    ]
    if (old.session is None) != (new.session is None) or type(old.session) is not type(new.session):
        problems.append(
            f"{new.path}: source: cannot add, remove or change the kind of session "
            "(mfa_serial, web_identity_token_file) while running; restart instead"
        )
    if problems:
        raise ConfigError(new.path, problems)
    old_roles = {r.profile: r for r in old.roles}
    new_roles = {r.profile: r for r in new.roles}

    def sts_settings(config: Config) -> Config:
        return replace(config, roles=(), refresh=new.refresh, state_file="", path="")

    return ReloadPlan(
        added=tuple(p for p in new_roles if p not in old_roles),
        removed=tuple(p for p in old_roles if p not in new_roles),
        changed=tuple(p for p in new_roles if p in old_roles and new_roles[p] != old_roles[p]),
        sts_changed=sts_settings(old) != sts_settings(new),
    )


def load_config(
    path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    *,
    cache: Literal["none", "read", "update"] = "none",
) -> Config:
    """Read and validate the configuration at ``path``.

    ``environ`` supplies ``AWS_SHARED_CREDENTIALS_FILE``, ``HOME``, ``STATE_DIRECTORY`` and
    ``XDG_STATE_HOME`` for the defaults (``os.environ`` when omitted). With ``cache`` ``read``,
    the parsed TOML comes from ``credrefresh.configcache`` when it holds these exact bytes;
    ``update`` also writes it there after a parse that validated. Validation runs either way.

    Raises:
        ConfigError: with every problem found.
    """
    env = os.environ if environ is None else environ
    name = os.fspath(path)
    try:
        with open(name, "rb") as stream:  # not pathlib: 5 ms of status's start
            raw = stream.read(MAX_FILE_SIZE + 1)
    except OSError as exc:
        raise ConfigError(name, [f"{name}: cannot read: {exc.strerror}"]) from None
    if len(raw) > MAX_FILE_SIZE:
        raise ConfigError(name, [f"{name}: larger than {MAX_FILE_SIZE} bytes; not read"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(name, [f"{name}: not UTF-8 text (byte {exc.start})"]) from None
    where = None if cache == "none" else cache_path(name, env)
    cached = None if where is None else load_cached(where, raw)
    data = parse(name, text) if cached is None else cached
    if nesting(data) > MAX_DEPTH:
        raise ConfigError(name, [f"{name}: nested more than {MAX_DEPTH} levels deep"])
    config = validate(name, env, data)
    if cache == "update" and cached is None and where is not None:
        store(where, raw, data)
    return config


def parse(name: str, text: str) -> dict[str, Any]:
    """The TOML document ``text`` read from ``name``.

    Raises:
        ConfigError: a syntax error, or nesting too deep for the parser.
    """
    import tomllib  # noqa: PLC0415 - status of a cached configuration never parses TOML

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(name, [f"{name}: TOML syntax error: {exc}"]) from None
    except RecursionError:  # tomllib recurses once per level of nesting
        raise ConfigError(name, [f"{name}: nested too deeply"]) from None


def nesting(document: dict[str, Any]) -> int:
    """How deep ``document`` nests tables and arrays, itself included (pure).

    Iterative (level by level), so any depth is safe to measure.
    """
    depth = 0
    level: list[dict[str, Any] | list[Any]] = [document]
    while level:  # one level at a time: 10,000 roles make this a hot path
        depth += 1
        # One comprehension per level, not one per table (each is a call before Python
        # 3.12), and isinstance with a tuple, not a union: half the time.
        level = [
            child
            for item in level
            for child in (item.values() if isinstance(item, dict) else item)
            if isinstance(child, (dict, list))
        ]
    return depth
