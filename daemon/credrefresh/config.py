"""The TOML configuration: parsed once, validated once, returned as frozen dataclasses.

Nothing past this module re-checks a value. Every problem is collected (not just the first), and
each message names the file, the key path (``roles[2].role_arn``) and what was expected.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, TypeVar

from credrefresh.errors import ConfigError
from credrefresh.serveconfig import ServeConfig, parse_serve

__all__ = ["Config", "RefreshPolicy", "ReloadPlan", "Role", "load_config", "plan_reload"]

_T = TypeVar("_T")

# All patterns are matched with fullmatch (a "$" would let a trailing newline through) and are
# ASCII-only (so no non-ASCII letters or digits sneak into ARNs).
ROLE_ARN_RE: Final = re.compile(
    r"arn:aws(?:-cn|-us-gov|-iso(?:-[a-z])?)?:iam::\d{12}:role/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,64}",
    re.ASCII,
)
POLICY_ARN_RE: Final = re.compile(
    r"arn:aws(?:-cn|-us-gov|-iso(?:-[a-z])?)?:iam::(?:\d{12}|aws):policy/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,128}",
    re.ASCII,
)
SESSION_CHARS_RE: Final = re.compile(r"[\w+=,.@-]+", re.ASCII)
REGION_RE: Final = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d{1,2}", re.ASCII)
DURATION_MIN: Final = 900
DURATION_MAX: Final = 43200
DEFAULT_DURATION: Final = 3600
DEFAULT_CONCURRENCY: Final = 16
MAX_TAGS: Final = 50
MAX_POLICY_ARNS: Final = 10


@dataclass(frozen=True, slots=True)
class Role:
    """One role to keep fresh in its own profile.

    Attributes:
        profile: The section of the credentials file the credentials go to.
        role_arn: The IAM role to assume.
        session_name: The ``RoleSessionName``; CloudTrail shows it, so auditors see it.
        duration_seconds: Requested lifetime; the scheduler uses the Expiration STS returns.
        external_id: Optional ``ExternalId``.
        source_identity: Optional ``SourceIdentity``.
        tags: Session tags, as sorted ``(key, value)`` pairs.
        policy_arns: Managed session policies.
        region: STS region for this role, overriding the top-level one.
        source_profile: Whose credentials assume this role: another configured role (a
            chain, assumed with its live credentials) or a profile of the AWS config files;
            ``None`` for the ``[source]``.
    """

    profile: str
    role_arn: str
    session_name: str
    duration_seconds: int = DEFAULT_DURATION
    external_id: str | None = field(default=None, repr=False)
    source_identity: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    policy_arns: tuple[str, ...] = ()
    region: str | None = None
    source_profile: str | None = None


@dataclass(frozen=True, slots=True)
class RefreshPolicy:
    """When to refresh and how to back off; see ``credrefresh.schedule``.

    Attributes:
        refresh_at: Fraction of the real lifetime after which a refresh is due.
        jitter: Extra fraction of the lifetime, drawn uniformly, added to spread load.
        backoff_initial: First delay after a transient failure, seconds.
        backoff_max: Cap of the transient backoff, seconds.
        permanent_backoff_initial: First delay after a permanent failure, seconds.
        permanent_backoff_max: Cap of the permanent backoff, seconds.
        write_delay: Longest a finished refresh waits to share a file write, seconds.
    """

    refresh_at: float = 0.5
    jitter: float = 0.1
    backoff_initial: float = 1.0
    backoff_max: float = 300.0
    permanent_backoff_initial: float = 60.0
    permanent_backoff_max: float = 1800.0
    write_delay: float = 1.0


@dataclass(frozen=True, slots=True)
class Config:
    """A validated configuration.

    Attributes:
        path: The file it was read from.
        credentials_file: Absolute path of the shared credentials file to keep fresh.
        region: Default STS region (regional endpoint).
        sts_endpoint_url: Explicit STS endpoint; ``None`` lets botocore decide (it honours
            ``AWS_ENDPOINT_URL_STS``).
        max_concurrency: AssumeRole calls in flight at once.
        sts_timeout: Connect and read timeout of one HTTP attempt, seconds.
        sts_max_attempts: Attempts botocore makes per call (its retry mode handles throttling).
        retry_mode: botocore retry mode, ``standard`` or ``adaptive``.
        source_profile: Profile whose credentials call STS; ``None`` for botocore's chain.
        roles: The roles, in file order.
        refresh: Scheduling policy.
        state_file: Where ``run`` records what ``status`` reports.
        metrics_address: ``(host, port)`` to serve Prometheus metrics on, or ``None``.
        serve: The credentials endpoint (``[serve]``), or ``None``.
    """

    path: str
    credentials_file: str
    region: str
    roles: tuple[Role, ...]
    state_file: str
    sts_endpoint_url: str | None = None
    max_concurrency: int = DEFAULT_CONCURRENCY
    sts_timeout: float = 10.0
    sts_max_attempts: int = 5
    retry_mode: str = "standard"
    source_profile: str | None = None
    refresh: RefreshPolicy = RefreshPolicy()
    metrics_address: tuple[str, int] | None = None
    serve: ServeConfig | None = None

    by_profile: Mapping[str, Role] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # An index, so looking a role up is O(1) with ten thousand of them.
        object.__setattr__(self, "by_profile", {r.profile: r for r in self.roles})

    def role(self, profile: str) -> Role | None:
        """The role kept in ``profile``, if any."""
        return self.by_profile.get(profile)


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """What a reload changes (``plan_reload``).

    Attributes:
        added: Profiles new in the configuration: assume and write them.
        removed: Profiles no longer configured: delete their managed sections.
        changed: Profiles whose role definition changed: refresh them now.
        sts_changed: Whether the STS client settings changed (region, endpoint, source...).
    """

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    sts_changed: bool


# Settings a running daemon cannot adopt: the file it locks and the sockets it serves.
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


TOP_KEYS: Final = (
    "credentials_file",
    "region",
    "sts_endpoint_url",
    "max_concurrency",
    "sts_timeout",
    "sts_max_attempts",
    "retry_mode",
    "state_file",
    "metrics_address",
    "source",
    "refresh",
    "roles",
    "serve",
)
SOURCE_KEYS: Final = ("profile",)
REFRESH_KEYS: Final = tuple(RefreshPolicy.__dataclass_fields__)
ROLE_KEYS: Final = tuple(Role.__dataclass_fields__)


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate the configuration at ``path``.

    ``environ`` supplies ``AWS_SHARED_CREDENTIALS_FILE``, ``HOME``, ``STATE_DIRECTORY`` and
    ``XDG_STATE_HOME`` for the defaults (``os.environ`` when omitted).

    Raises:
        ConfigError: with every problem found.
    """
    env = os.environ if environ is None else environ
    name = os.fspath(path)
    try:
        raw = Path(name).read_bytes()
    except OSError as exc:
        raise ConfigError(name, [f"{name}: cannot read: {exc.strerror}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(name, [f"{name}: not UTF-8 text (byte {exc.start})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(name, [f"{name}: TOML syntax error: {exc}"]) from None
    return _Validator(name, env).config(data)


def chain_problems(path: str, roles: tuple[Role, ...]) -> list[str]:
    """The role-chain problems (``credrefresh.chains``, which imports ``Role`` from here)."""
    from credrefresh.chains import problems  # noqa: PLC0415 - a cycle of imports otherwise

    return problems(path, roles)


def default_state_name(credentials_file: str) -> str:
    """``state-<hash>.json``, one per credentials file.

    Two daemons of one user, for two credentials files, must never share a state file.
    """
    digest = hashlib.sha256(credentials_file.encode()).hexdigest()[:12]
    return f"state-{digest}.json"


def default_session_name(profile: str) -> str:
    """A valid RoleSessionName derived from the profile name."""
    cleaned = re.sub(r"[^\w+=,.@-]", "-", f"credrefresh-{profile}", flags=re.ASCII)
    return cleaned[:64]


class _Validator:
    """Walks the parsed TOML once and collects every problem."""

    def __init__(self, path: str, env: Mapping[str, str]) -> None:
        self.path = path
        self.env = env
        self.problems: list[str] = []

    def fail(self, key: str, message: str) -> None:
        self.problems.append(f"{self.path}: {key}: {message}")

    def config(self, data: dict[str, Any]) -> Config:
        self.unknown(data, TOP_KEYS, "")
        credentials_file = self.credentials_file(data.get("credentials_file"))
        region = self.region(data.get("region", env_region(self.env)), "region")
        endpoint = self.optional(data, "sts_endpoint_url", str, "a URL string")
        if endpoint is not None and not re.fullmatch(r"https?://[^\s/]+(?:/\S*)?", endpoint):
            self.fail("sts_endpoint_url", f"expected an http(s) URL, got {endpoint!r}")
        concurrency = self.integer(data, "max_concurrency", DEFAULT_CONCURRENCY, 1, 1024)
        timeout = self.number(data, "sts_timeout", 10.0, 0.1, 300.0)
        attempts = self.integer(data, "sts_max_attempts", 5, 1, 20)
        retry_mode = self.choice(data, "retry_mode", "standard", ("standard", "adaptive"))
        state_file = self.state_file(data.get("state_file"), credentials_file)
        metrics = self.metrics_address(data.get("metrics_address"))
        source = self.table(data, "source")
        self.unknown(source, SOURCE_KEYS, "source.")
        source_profile = self.optional(source, "profile", str, "a profile name", "source.")
        if source_profile is not None:
            self.profile_name(source_profile, "source.profile")
        raw_roles = data.get("roles")
        managed = (
            {
                t["profile"]
                for t in raw_roles
                if isinstance(t, dict) and isinstance(t.get("profile"), str)
            }
            if isinstance(raw_roles, list)
            else set()
        )
        if source_profile is not None and source_profile in managed:
            self.fail(
                "source.profile",
                f"{source_profile!r} is also a managed profile in roles; the source credentials "
                "must come from a profile credrefresh does not overwrite",
            )
        refresh = self.refresh(self.table(data, "refresh"))
        roles = self.roles(raw_roles)
        self.problems.extend(chain_problems(self.path, roles))
        serve, problems = parse_serve(
            data.get("serve"),
            path=self.path,
            state_dir=os.path.dirname(state_file),
            managed=managed,
            expand=lambda value: expand(value, self.env),
        )
        self.problems += problems
        if self.problems:
            raise ConfigError(self.path, self.problems)
        return Config(
            path=self.path,
            credentials_file=credentials_file,
            region=region,
            sts_endpoint_url=endpoint,
            max_concurrency=concurrency,
            sts_timeout=timeout,
            sts_max_attempts=attempts,
            retry_mode=retry_mode,
            source_profile=source_profile,
            refresh=refresh,
            roles=roles,
            state_file=state_file,
            metrics_address=metrics,
            serve=serve,
        )

    # -- generic checks -------------------------------------------------------------------

    def unknown(self, table: Mapping[str, Any], allowed: tuple[str, ...], prefix: str) -> None:
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                expected = ", ".join(allowed)
                self.fail(f"{prefix}{key}", f"unknown key{hint}; expected one of: {expected}")

    def table(self, data: Mapping[str, Any], key: str) -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            self.fail(key, f"expected a table, got {type_name(value)}")
            return {}
        return value

    def optional(
        self,
        data: Mapping[str, Any],
        key: str,
        kind: type[_T],
        expected: str,
        prefix: str = "",
    ) -> _T | None:
        if key not in data:
            return None
        value = data[key]
        if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool):
            self.fail(f"{prefix}{key}", f"expected {expected}, got {type_name(value)}")
            return None
        return value

    def integer(
        self, data: Mapping[str, Any], key: str, default: int, low: int, high: int, prefix: str = ""
    ) -> int:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"{prefix}{key}", f"expected an integer, got {type_name(value)}")
            return default
        if not low <= value <= high:
            self.fail(f"{prefix}{key}", f"expected an integer from {low} to {high}, got {value}")
            return default
        return value

    def number(
        self,
        data: Mapping[str, Any],
        key: str,
        default: float,
        low: float,
        high: float,
        prefix: str = "",
    ) -> float:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(f"{prefix}{key}", f"expected a number, got {type_name(value)}")
            return default
        if not low <= value <= high:
            self.fail(f"{prefix}{key}", f"expected a number from {low:g} to {high:g}, got {value}")
            return default
        return float(value)

    def choice(
        self, data: Mapping[str, Any], key: str, default: str, choices: tuple[str, ...]
    ) -> str:
        value = data.get(key, default)
        if value not in choices:
            self.fail(key, f"expected one of {', '.join(choices)}, got {value!r}")
            return default
        return str(value)

    def path_value(self, value: object, key: str) -> str | None:
        if not isinstance(value, str) or not value.strip():
            self.fail(key, f"expected a non-empty path string, got {type_name(value)}")
            return None
        return expand(value, self.env)

    # -- specific keys --------------------------------------------------------------------

    def credentials_file(self, value: object) -> str:
        if value is None:
            from_env = self.env.get("AWS_SHARED_CREDENTIALS_FILE")
            return expand(from_env or "~/.aws/credentials", self.env)
        return self.path_value(value, "credentials_file") or ""

    def state_file(self, value: object, credentials_file: str) -> str:
        if value is not None:
            return self.path_value(value, "state_file") or ""
        state_dir = self.env.get("STATE_DIRECTORY", "").split(":")[0]
        if not state_dir:
            xdg = self.env.get("XDG_STATE_HOME", "")
            if not os.path.isabs(xdg):  # the XDG spec says to ignore relative values
                xdg = expand("~/.local/state", self.env)
            state_dir = os.path.join(xdg, "credrefresh")
        return os.path.join(state_dir, default_state_name(credentials_file))

    def region(self, value: object, key: str) -> str:
        if not isinstance(value, str) or not REGION_RE.fullmatch(value):
            self.fail(key, f"expected an AWS region name such as 'us-east-1', got {value!r}")
            return "us-east-1"
        return value

    def metrics_address(self, value: object) -> tuple[str, int] | None:
        if value is None:
            return None
        match = (
            re.fullmatch(
                r"(?:\[(?P<v6>[0-9a-fA-F:]+)\]|(?P<host>[^:\s]+)):(?P<port>[0-9]{1,5})", value
            )
            if isinstance(value, str)
            else None
        )
        if match is None or not 0 <= int(match["port"]) < 65536:  # noqa: PLR2004
            self.fail(
                "metrics_address",
                f"expected 'HOST:PORT' such as '127.0.0.1:9464', got {value!r}",
            )
            return None
        host = match["v6"] or match["host"]
        if match["v6"]:
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                self.fail("metrics_address", f"{host!r} is not an IPv6 address")
                return None
        return host, int(match["port"])

    def profile_name(self, name: str, key: str) -> None:
        if not name.strip():
            self.fail(key, "expected a non-empty profile name")
        elif any(c in name for c in "[]\r\n") or name != name.strip():
            self.fail(
                key,
                f"profile name {name!r} cannot contain '[', ']' or line breaks, "
                "nor start or end with whitespace",
            )
        elif name == "DEFAULT":
            self.fail(
                key,
                "'DEFAULT' is special to botocore's parser: its keys apply to every other "
                "profile in the file; choose another name",
            )

    def refresh(self, table: Mapping[str, Any]) -> RefreshPolicy:
        self.unknown(table, REFRESH_KEYS, "refresh.")
        p = "refresh."
        defaults = RefreshPolicy()
        refresh_at = self.number(table, "refresh_at", defaults.refresh_at, 0.1, 0.7, p)
        jitter = self.number(table, "jitter", defaults.jitter, 0.0, 0.3, p)
        if refresh_at + jitter > 0.7 + 1e-9:
            self.fail(
                "refresh.jitter",
                "refresh_at + jitter must be at most 0.7, so a reader always finds a quarter "
                f"of the lifetime left; got {refresh_at + jitter:g}",
            )
        b_init = self.number(table, "backoff_initial", defaults.backoff_initial, 0.01, 3600, p)
        b_max = self.number(table, "backoff_max", defaults.backoff_max, 0.01, 86400, p)
        pb_init = self.number(
            table, "permanent_backoff_initial", defaults.permanent_backoff_initial, 0.01, 86400, p
        )
        pb_max = self.number(
            table, "permanent_backoff_max", defaults.permanent_backoff_max, 0.01, 86400, p
        )
        for low, high, name in ((b_init, b_max, "backoff"), (pb_init, pb_max, "permanent_backoff")):
            if low > high:
                self.fail(f"refresh.{name}_max", f"must be at least {name}_initial ({low:g})")
        write_delay = self.number(table, "write_delay", defaults.write_delay, 0.0, 10.0, p)
        return RefreshPolicy(refresh_at, jitter, b_init, b_max, pb_init, pb_max, write_delay)

    def roles(self, value: object) -> tuple[Role, ...]:
        if value is None:
            self.fail("roles", "missing: add at least one [[roles]] table")
            return ()
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.fail("roles", f"expected an array of tables ([[roles]]), got {type_name(value)}")
            return ()
        if not value:
            self.fail("roles", "empty: add at least one [[roles]] table")
            return ()
        roles: list[Role] = []
        seen: dict[str, int] = {}
        for index, table in enumerate(value):
            role = self.role(table, f"roles[{index}].")
            # Duplicates are checked on the raw name, so they are reported even when the
            # role has other problems too.
            profile = table.get("profile")
            if isinstance(profile, str):
                if profile in seen:
                    self.fail(
                        f"roles[{index}].profile",
                        f"duplicate profile {profile!r}, already used by roles[{seen[profile]}]",
                    )
                    continue
                seen[profile] = index
            if role is not None:
                roles.append(role)
        return tuple(roles)

    def role(self, table: Mapping[str, Any], p: str) -> Role | None:
        before = len(self.problems)
        self.unknown(table, ROLE_KEYS, p)
        profile = self.required_str(table, "profile", p)
        if profile is not None:
            self.profile_name(profile, f"{p}profile")
        role_arn = self.required_str(table, "role_arn", p)
        if role_arn is not None and not ROLE_ARN_RE.fullmatch(role_arn):
            self.fail(
                f"{p}role_arn",
                "expected an IAM role ARN with a 12-digit account, like "
                f"'arn:aws:iam::123456789012:role/NAME', got {role_arn!r}",
            )
        session_name = self.optional(table, "session_name", str, "a string", p)
        if session_name is not None:
            self.pattern(session_name, f"{p}session_name", 2, 64)
        duration = self.integer(
            table, "duration_seconds", DEFAULT_DURATION, DURATION_MIN, DURATION_MAX, p
        )
        external_id = self.optional(table, "external_id", str, "a string", p)
        if external_id is not None and not 2 <= len(external_id) <= 1224:  # noqa: PLR2004
            self.fail(f"{p}external_id", f"expected 2 to 1224 characters, got {len(external_id)}")
        source_identity = self.optional(table, "source_identity", str, "a string", p)
        if source_identity is not None:
            self.pattern(source_identity, f"{p}source_identity", 2, 64)
        tags = self.tags(table.get("tags"), f"{p}tags")
        policy_arns = self.policy_arns(table.get("policy_arns"), f"{p}policy_arns")
        region = None
        if "region" in table:
            region = self.region(table["region"], f"{p}region")
        source_profile = self.optional(table, "source_profile", str, "a profile name", p)
        if source_profile is not None:
            self.profile_name(source_profile, f"{p}source_profile")
        if len(self.problems) > before or profile is None or role_arn is None:
            return None
        return Role(
            profile=profile,
            role_arn=role_arn,
            session_name=session_name or default_session_name(profile),
            duration_seconds=duration,
            external_id=external_id,
            source_identity=source_identity,
            tags=tags,
            policy_arns=policy_arns,
            region=region,
            source_profile=source_profile,
        )

    def required_str(self, table: Mapping[str, Any], key: str, p: str) -> str | None:
        if key not in table:
            self.fail(f"{p}{key}", "missing required key")
            return None
        return self.optional(table, key, str, "a string", p)

    def pattern(self, value: str, key: str, low: int, high: int) -> None:
        if not low <= len(value) <= high or not SESSION_CHARS_RE.fullmatch(value):
            self.fail(
                key,
                f"expected {low} to {high} characters of letters, digits and +=,.@_-, "
                f"got {value!r}",
            )

    def tags(self, value: object, key: str) -> tuple[tuple[str, str], ...]:
        if value is None:
            return ()
        if not isinstance(value, dict):
            self.fail(key, f"expected a table of string to string, got {type_name(value)}")
            return ()
        if len(value) > MAX_TAGS:
            self.fail(key, f"expected at most {MAX_TAGS} session tags, got {len(value)}")
        for tag, tag_value in value.items():
            if not isinstance(tag_value, str):
                self.fail(f"{key}.{tag}", f"expected a string, got {type_name(tag_value)}")
            elif not 1 <= len(tag) <= 128 or len(tag_value) > 256:  # noqa: PLR2004
                self.fail(f"{key}.{tag}", "tag keys are 1-128 characters, values at most 256")
        return tuple(sorted((k, v) for k, v in value.items() if isinstance(v, str)))

    def policy_arns(self, value: object, key: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.fail(key, f"expected a list of policy ARNs, got {type_name(value)}")
            return ()
        if len(value) > MAX_POLICY_ARNS:
            self.fail(key, f"expected at most {MAX_POLICY_ARNS} policy ARNs, got {len(value)}")
        for index, arn in enumerate(value):
            if not isinstance(arn, str) or not POLICY_ARN_RE.fullmatch(arn):
                self.fail(
                    f"{key}[{index}]",
                    "expected an IAM policy ARN like "
                    f"'arn:aws:iam::aws:policy/ReadOnlyAccess', got {arn!r}",
                )
        return tuple(v for v in value if isinstance(v, str))


def env_region(env: Mapping[str, str]) -> str:
    """The region botocore would pick from the environment, else us-east-1."""
    return env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"


def expand(value: str, env: Mapping[str, str]) -> str:
    """Expand ``~`` (against ``HOME`` in ``env``) and make the path absolute."""
    if value == "~" or value.startswith("~/"):
        home = env.get("HOME") or os.path.expanduser("~")
        value = home + value[1:]
    elif value.startswith("~"):
        value = os.path.expanduser(value)  # ~user/...
    return os.path.abspath(value)


def type_name(value: object) -> str:
    """How a TOML value's type reads in an error message."""
    names: dict[type, str] = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }
    return names.get(type(value), type(value).__name__)
