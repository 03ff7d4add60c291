"""The configuration's types and defaults: frozen dataclasses that hold only validated values.

``credrefresh.config`` builds them (``load_config``) and compares them (``plan_reload``);
``credrefresh.validate`` does the checking. Nothing past that boundary re-checks a value.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from credrefresh.serveconfig import ServeConfig
from credrefresh.sourceconfig import SESSION_KEYS, SessionSource

__all__ = [
    "REFRESH_KEYS",
    "ROLE_KEYS",
    "SOURCE_KEYS",
    "TOP_KEYS",
    "Config",
    "RefreshPolicy",
    "ReloadPlan",
    "Role",
    "default_session_name",
    "default_state_dir",
    "default_state_name",
    "env_region",
    "expand",
]

DURATION_MIN: Final = 900
DURATION_MAX: Final = 43200
DEFAULT_DURATION: Final = 3600
DEFAULT_CONCURRENCY: Final = 16
MAX_TAGS: Final = 50
MAX_POLICY_ARNS: Final = 10
# botocore and the AWS CLI take any profile name; 256 characters is far beyond real ones and
# keeps error messages, events and the status table sane.
PROFILE_MAX: Final = 256


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
        session: The ``[source]`` session (MFA or web identity) that signs every role
            without a ``source_profile``, or ``None``.
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
    session: SessionSource | None = None

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
SOURCE_KEYS: Final = ("profile", *SESSION_KEYS)
REFRESH_KEYS: Final = tuple(RefreshPolicy.__dataclass_fields__)
ROLE_KEYS: Final = tuple(Role.__dataclass_fields__)


def default_session_name(profile: str) -> str:
    """A valid RoleSessionName derived from the profile name."""
    cleaned = re.sub(r"[^\w+=,.@-]", "-", f"credrefresh-{profile}", flags=re.ASCII)
    return cleaned[:64]


def default_state_name(credentials_file: str) -> str:
    """``state-<hash>.json``, one per credentials file.

    Two daemons of one user, for two credentials files, must never share a state file.
    """
    digest = hashlib.sha256(credentials_file.encode()).hexdigest()[:12]
    return f"state-{digest}.json"


def default_state_dir(env: Mapping[str, str]) -> str:
    """Where the state file goes unless configured.

    systemd's ``STATE_DIRECTORY`` (its first entry), else ``$XDG_STATE_HOME/credrefresh``, else
    ``~/.local/state/credrefresh``.
    """
    state_dir = env.get("STATE_DIRECTORY", "").split(":")[0]
    if state_dir:
        return state_dir
    xdg = env.get("XDG_STATE_HOME", "")
    if not os.path.isabs(xdg):  # the XDG spec says to ignore relative values
        xdg = expand("~/.local/state", env)
    return os.path.join(xdg, "credrefresh")


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
