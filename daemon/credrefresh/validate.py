"""Checks of the parsed TOML: every problem is collected, each naming the key path.

``Validator`` walks the table ``tomllib`` returns once; ``credrefresh.config.load_config`` is
the entry point. Messages echo a bad value only quoted, escaped and cut short
(``credrefresh.text.shown``), so a hostile config cannot flood or repaint a terminal.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Final, TypeVar

from credrefresh.chains import problems as chain_problems
from credrefresh.errors import ConfigError
from credrefresh.plainrole import plain_role
from credrefresh.serveconfig import parse_serve
from credrefresh.settings import (
    DEFAULT_CONCURRENCY,
    DEFAULT_DURATION,
    DURATION_MAX,
    DURATION_MIN,
    MAX_POLICY_ARNS,
    MAX_TAGS,
    PROFILE_MAX,
    REFRESH_KEYS,
    ROLE_KEYS,
    SOURCE_KEYS,
    TOP_KEYS,
    Config,
    RefreshPolicy,
    Role,
    default_session_name,
    default_state_dir,
    default_state_name,
    env_region,
    expand,
)
from credrefresh.sourceconfig import ROLE_ARN_RE, parse_session, session_problems
from credrefresh.text import printable, shown, type_name, unsafe

__all__ = ["validate"]

_T = TypeVar("_T")

# All patterns are matched with fullmatch (a "$" would let a trailing newline through) and are
# ASCII-only (so no non-ASCII letters or digits sneak into ARNs).
POLICY_ARN_RE: Final = re.compile(
    r"arn:aws(?:-cn|-us-gov|-iso(?:-[a-z])?)?:iam::(?:\d{12}|aws):policy/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,128}",
    re.ASCII,
)
SESSION_CHARS_RE: Final = re.compile(r"[\w+=,.@-]+", re.ASCII)
# STS's documented pattern for ExternalId; anything else STS rejects (and quotes back).
EXTERNAL_ID_RE: Final = re.compile(r"[\w+=,.@:/-]{2,1224}", re.ASCII)
ENDPOINT_RE: Final = re.compile(r"(?P<scheme>https?)://(?P<netloc>[^\s/?#]+)(?:[/?#]\S*)?")
# The 10,000-role benchmark must load; a file of ten times that is not a real configuration.
MAX_ROLES: Final = 100_000
# Paths and other free strings; PATH_MAX on Linux is 4096.
STRING_MAX: Final = 4096
KEY_SHOWN_MAX: Final = 120


REGION_RE: Final = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d{1,2}", re.ASCII)


def validate(path: str, env: Mapping[str, str], data: dict[str, Any]) -> Config:
    """The ``Config`` for the parsed TOML ``data`` read from ``path``.

    Raises:
        ConfigError: with every problem found.
    """
    return _Validator(path, env).config(data)


class _Validator:
    """Walks the parsed TOML once and collects every problem."""

    def __init__(self, path: str, env: Mapping[str, str]) -> None:
        self.path = path
        self.env = env
        self.problems: list[str] = []

    def fail(self, key: str, message: str) -> None:
        self.problems.append(f"{self.path}: {printable(key, KEY_SHOWN_MAX)}: {message}")

    def config(self, data: dict[str, Any]) -> Config:
        self.unknown(data, TOP_KEYS, "")
        credentials_file = self.credentials_file(data.get("credentials_file"))
        region = self.region(data.get("region", env_region(self.env)), "region")
        endpoint = self.optional(data, "sts_endpoint_url", str, "a URL string")
        if endpoint is not None:
            self.endpoint(endpoint)
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
        # The profiles the roles name: asked only by a source profile and by [serve].
        managed = (
            {
                t["profile"]
                for t in raw_roles
                if isinstance(t, dict) and isinstance(t.get("profile"), str)
            }
            if isinstance(raw_roles, list)
            and (source_profile is not None or data.get("serve") is not None)
            else set()
        )
        if source_profile is not None and source_profile in managed:
            self.fail(
                "source.profile",
                f"{shown(source_profile)} is also a managed profile in roles; the source "
                "credentials must come from a profile credrefresh does not overwrite",
            )
        session, problems = parse_session(
            source, path=self.path, state_file=state_file, expand=lambda v: expand(v, self.env)
        )
        self.problems += problems
        refresh = self.refresh(self.table(data, "refresh"))
        roles = self.roles(raw_roles)
        self.problems.extend(chain_problems(self.path, roles))
        self.problems.extend(session_problems(self.path, roles, session))
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
            session=session,
        )

    # -- generic checks -------------------------------------------------------------------

    def unknown(self, table: Mapping[str, Any], allowed: tuple[str, ...], prefix: str) -> None:
        for key in table:
            if key not in allowed:
                import difflib  # noqa: PLC0415 - only for a mistyped key

                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f" (did you mean {shown(close[0])}?)" if close else ""
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
            self.fail(key, f"expected one of {', '.join(choices)}, got {shown(value)}")
            return default
        return str(value)

    def path_value(self, value: object, key: str) -> str | None:
        if not isinstance(value, str) or not value.strip():
            self.fail(key, f"expected a non-empty path string, got {type_name(value)}")
            return None
        if len(value) > STRING_MAX or unsafe(value):
            self.fail(
                key,
                f"expected a path of at most {STRING_MAX} characters without control "
                f"characters, got {shown(value)}",
            )
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
        return os.path.join(default_state_dir(self.env), default_state_name(credentials_file))

    def region(self, value: object, key: str) -> str:
        if not isinstance(value, str) or not REGION_RE.fullmatch(value):
            self.fail(key, f"expected an AWS region name such as 'us-east-1', got {shown(value)}")
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
                f"expected 'HOST:PORT' such as '127.0.0.1:9464', got {shown(value)}",
            )
            return None
        host = match["v6"] or match["host"]
        if match["v6"]:
            import ipaddress  # noqa: PLC0415 - most configurations hold no IP address

            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                self.fail("metrics_address", f"{shown(host)} is not an IPv6 address")
                return None
        return host, int(match["port"])

    def endpoint(self, url: str) -> None:
        match = ENDPOINT_RE.fullmatch(url) if len(url) <= STRING_MAX else None
        if match is None:
            self.fail("sts_endpoint_url", f"expected an http(s) URL, got {shown(url)}")
        elif match["scheme"] == "http" and not loopback_literal(match["netloc"]):
            self.fail(
                "sts_endpoint_url",
                f"{shown(url)} is plain http: credentials would cross the network unprotected; "
                "use https (http is accepted only to a loopback address such as 127.0.0.1 "
                "or [::1])",
            )

    def profile_name(self, name: str, key: str) -> None:
        if not name.strip():
            self.fail(key, "expected a non-empty profile name")
        elif any(c in name for c in "[]\r\n") or name != name.strip():
            self.fail(
                key,
                f"profile name {shown(name)} cannot contain '[', ']' or line breaks, "
                "nor start or end with whitespace",
            )
        elif unsafe(name) or len(name) > PROFILE_MAX:
            self.fail(
                key,
                f"profile name {shown(name)} must be at most {PROFILE_MAX} characters, none of "
                "them a control, format or line-separator character",
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
        if len(value) > MAX_ROLES:
            self.fail("roles", f"expected at most {MAX_ROLES} roles, got {len(value)}")
            return ()
        plain = [plain_role(table) for table in value]
        roles = [role for role in plain if role is not None]
        if len(roles) == len(value) and len({role.profile for role in roles}) == len(roles):
            return tuple(roles)  # the usual case, in one step: every table plain, no repeats
        # Otherwise table by table, wording every problem.
        roles = []
        seen: dict[str, int] = {}
        for index, table in enumerate(value):
            role = plain[index] or self.role(table, f"roles[{index}].")
            # Duplicates are checked on the raw name, so they are reported even when the
            # role has other problems too.
            profile = table.get("profile")
            if isinstance(profile, str):
                if profile in seen:
                    self.fail(
                        f"roles[{index}].profile",
                        f"duplicate profile {shown(profile)}, "
                        f"already used by roles[{seen[profile]}]",
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
                f"'arn:aws:iam::123456789012:role/NAME', got {shown(role_arn)}",
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
        elif external_id is not None and not EXTERNAL_ID_RE.fullmatch(external_id):
            # Not echoed: an external id is a shared secret of sorts.
            self.fail(
                f"{p}external_id",
                "expected only letters, digits and +=,.@:/_- (STS's pattern for ExternalId)",
            )
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
                f"got {shown(value)}",
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
                    f"'arn:aws:iam::aws:policy/ReadOnlyAccess', got {shown(arn)}",
                )
        return tuple(v for v in value if isinstance(v, str))


def loopback_literal(netloc: str) -> bool:
    """Whether ``netloc`` (``host[:port]``) names a loopback IP address literally.

    ``localhost`` is refused: a resolver, an ``/etc/hosts`` entry or a search domain decides
    where it goes.
    """
    match = re.fullmatch(r"(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<v4>[0-9.]+))(?::[0-9]{1,5})?", netloc)
    if match is None:
        return False
    import ipaddress  # noqa: PLC0415 - most configurations hold no IP address

    try:
        return ipaddress.ip_address(match["v6"] or match["v4"]).is_loopback
    except ValueError:
        return False
