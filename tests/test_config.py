"""The configuration contract of ``daemon.config.load_config``, exercised in-process.

Every test passes an explicit ``environ`` so nothing depends on the environment of the machine
running the suite. Refusals are checked against the documented message shape:
``<file>: <key path>: <what was expected>``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pwd
import unicodedata
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from credrefresh.config import (
    MAX_FILE_SIZE,
    MAX_ROLES,
    Config,
    RefreshPolicy,
    Role,
    load_config,
    nesting,
    plan_reload,
)
from credrefresh.errors import ConfigError

HOME = "/home/tester"
ENV = {"HOME": HOME}
ROLE = '[[roles]]\nprofile = "dev"\nrole_arn = "arn:aws:iam::123456789012:role/dev"\n'
ROLE_ARN = "arn:aws:iam::123456789012:role/dev"
SECOND_ROLE = '[[roles]]\nprofile = "ops"\nrole_arn = "arn:aws:iam::123456789012:role/ops"\n'


def state_name(credentials_file: str) -> str:
    """The default state file name: one per credentials file (sha256 of its path, 12 hex)."""
    return f"state-{hashlib.sha256(credentials_file.encode()).hexdigest()[:12]}.json"


H_STATE = state_name("/h/.aws/credentials")
# What the readers of the credentials file split lines on: botocore reads it through a
# universal-newline text stream and configupdater through StringIO; neither splits on \x0b,
# \x85 or \u2028, so those inside a section name are harmless.
LINE_BREAKS = "\r\n"
# Unicode categories a profile name may not hold: controls, format characters (bidi overrides),
# surrogates, private use, unassigned, and the line and paragraph separators.
NOT_PRINTED = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def write(directory: Path, content: str | bytes, name: str = "config.toml") -> str:
    """Write ``content`` (text as UTF-8) to ``directory/name`` and return the path."""
    path = directory / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return str(path)


def refused(path: str, environ: dict[str, str] | None = None) -> tuple[str, ...]:
    """The problems ``load_config`` reports for ``path``; fails the test if it accepts."""
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=ENV if environ is None else environ)
    assert info.value.path == path
    assert info.value.problems, "a ConfigError must carry at least one problem"
    assert str(info.value) == "\n".join(info.value.problems)
    for problem in info.value.problems:
        assert problem.startswith(f"{path}: "), problem
    return info.value.problems


def key_of(path: str, problem: str) -> str:
    """The key path a problem names (the text between the file name and the message)."""
    return problem.removeprefix(f"{path}: ").split(": ", 1)[0]


def one_problem_for(problems: tuple[str, ...], path: str, key: str) -> str:
    """The single problem naming exactly ``key``."""
    matching = [p for p in problems if p.startswith(f"{path}: {key}: ")]
    assert len(matching) == 1, f"expected one problem for {key!r}, got {problems!r}"
    return matching[0]


def role(**fields: str) -> str:
    """A ``[[roles]]`` table with the valid profile/ARN, overridden or extended by raw TOML."""
    values = {"profile": '"dev"', "role_arn": f'"{ROLE_ARN}"', **fields}
    body = "".join(f"{key} = {value}\n" for key, value in values.items() if value is not None)
    return "[[roles]]\n" + body


def without(key: str) -> str:
    """A ``[[roles]]`` table with the valid keys except ``key``."""
    return "".join(line for line in role().splitlines(keepends=True) if not line.startswith(key))


FULL = """\
credentials_file = "~/creds/credentials"
region = "eu-west-1"
sts_endpoint_url = "http://127.0.0.1:4566"
max_concurrency = 4
sts_timeout = 2.5
sts_max_attempts = 3
retry_mode = "adaptive"
state_file = "~/state/credrefresh.json"
metrics_address = "127.0.0.1:9464"

[source]
profile = "base"

[refresh]
refresh_at = 0.4
jitter = 0.2
backoff_initial = 2
backoff_max = 120.0
permanent_backoff_initial = 30.0
permanent_backoff_max = 600.0
write_delay = 0.5

[[roles]]
profile = "prod-admin"
role_arn = "arn:aws:iam::123456789012:role/path/to/Admin"
session_name = "alice@example.com"
duration_seconds = 7200
external_id = "ext-id-1234"
source_identity = "alice"
tags = { team = "infra", env = "prod" }
policy_arns = [
  "arn:aws:iam::aws:policy/ReadOnlyAccess",
  "arn:aws:iam::123456789012:policy/Boundary",
]
region = "us-west-2"

[[roles]]
profile = "dev"
role_arn = "arn:aws-cn:iam::210987654321:role/Dev"
"""


# -- acceptance and defaults ---------------------------------------------------------------


def test_full_config_parses_into_expected_dataclasses(tmp_path):
    """A config using every key parses into exactly the expected Config, roles in file order."""
    path = write(tmp_path, FULL)
    config = load_config(path, environ=ENV)
    assert config == Config(
        path=path,
        credentials_file=f"{HOME}/creds/credentials",
        region="eu-west-1",
        sts_endpoint_url="http://127.0.0.1:4566",
        max_concurrency=4,
        sts_timeout=2.5,
        sts_max_attempts=3,
        retry_mode="adaptive",
        source_profile="base",
        refresh=RefreshPolicy(
            refresh_at=0.4,
            jitter=0.2,
            backoff_initial=2.0,
            backoff_max=120.0,
            permanent_backoff_initial=30.0,
            permanent_backoff_max=600.0,
            write_delay=0.5,
        ),
        roles=(
            Role(
                profile="prod-admin",
                role_arn="arn:aws:iam::123456789012:role/path/to/Admin",
                session_name="alice@example.com",
                duration_seconds=7200,
                external_id="ext-id-1234",
                source_identity="alice",
                tags=(("env", "prod"), ("team", "infra")),
                policy_arns=(
                    "arn:aws:iam::aws:policy/ReadOnlyAccess",
                    "arn:aws:iam::123456789012:policy/Boundary",
                ),
                region="us-west-2",
            ),
            Role(
                profile="dev",
                role_arn="arn:aws-cn:iam::210987654321:role/Dev",
                session_name="credrefresh-dev",
            ),
        ),
        state_file=f"{HOME}/state/credrefresh.json",
        metrics_address=("127.0.0.1", 9464),
    )
    assert type(config.refresh.backoff_initial) is float
    assert config.role("dev") is config.roles[1]
    assert config.role("nope") is None


def test_minimal_config_gets_documented_defaults(tmp_path):
    """A config with one role and nothing else gets every documented default."""
    path = write(tmp_path, ROLE)
    assert load_config(path, environ=ENV) == Config(
        path=path,
        credentials_file=f"{HOME}/.aws/credentials",
        region="us-east-1",
        sts_endpoint_url=None,
        max_concurrency=16,
        sts_timeout=10.0,
        sts_max_attempts=5,
        retry_mode="standard",
        source_profile=None,
        refresh=RefreshPolicy(
            refresh_at=0.5,
            jitter=0.1,
            backoff_initial=1.0,
            backoff_max=300.0,
            permanent_backoff_initial=60.0,
            permanent_backoff_max=1800.0,
            write_delay=1.0,
        ),
        roles=(
            Role(
                profile="dev",
                role_arn=ROLE_ARN,
                session_name="credrefresh-dev",
                duration_seconds=3600,
                external_id=None,
                source_identity=None,
                tags=(),
                policy_arns=(),
                region=None,
            ),
        ),
        state_file=f"{HOME}/.local/state/credrefresh/{state_name(f'{HOME}/.aws/credentials')}",
        metrics_address=None,
    )


@pytest.mark.parametrize(
    ("environ", "credentials_file"),
    [
        pytest.param({"HOME": "/h"}, "/h/.aws/credentials", id="home"),
        pytest.param({"HOME": "/h/"}, "/h/.aws/credentials", id="home-trailing-slash"),
        pytest.param(
            {"HOME": "/h", "AWS_SHARED_CREDENTIALS_FILE": "/srv/aws/creds"},
            "/srv/aws/creds",
            id="env-absolute",
        ),
        pytest.param(
            {"HOME": "/h", "AWS_SHARED_CREDENTIALS_FILE": "~/alt/creds"},
            "/h/alt/creds",
            id="env-tilde",
        ),
        pytest.param(
            {"HOME": "/h", "AWS_SHARED_CREDENTIALS_FILE": ""},
            "/h/.aws/credentials",
            id="env-empty-ignored",
        ),
    ],
)
def test_credentials_file_default(tmp_path, environ, credentials_file):
    """credentials_file is AWS_SHARED_CREDENTIALS_FILE, else ~/.aws/credentials via HOME."""
    assert load_config(write(tmp_path, ROLE), environ=environ).credentials_file == credentials_file


def test_credentials_file_key_beats_environment(tmp_path):
    """An explicit credentials_file wins over AWS_SHARED_CREDENTIALS_FILE and ~ uses HOME."""
    path = write(tmp_path, 'credentials_file = "~/mine"\n' + ROLE)
    environ = {"HOME": "/h", "AWS_SHARED_CREDENTIALS_FILE": "/srv/other"}
    assert load_config(path, environ=environ).credentials_file == "/h/mine"


@pytest.mark.parametrize(
    ("environ", "state_file"),
    [
        pytest.param({"HOME": "/h"}, f"/h/.local/state/credrefresh/{H_STATE}", id="home"),
        pytest.param(
            {"HOME": "/h", "XDG_STATE_HOME": "/xdg"}, f"/xdg/credrefresh/{H_STATE}", id="xdg"
        ),
        pytest.param(
            {"HOME": "/h", "XDG_STATE_HOME": "/xdg", "STATE_DIRECTORY": "/var/lib/credrefresh"},
            f"/var/lib/credrefresh/{H_STATE}",
            id="state-directory-beats-xdg",
        ),
        pytest.param(
            {"HOME": "/h", "STATE_DIRECTORY": "/var/lib/a:/var/lib/b"},
            f"/var/lib/a/{H_STATE}",
            id="state-directory-first-of-list",
        ),
        pytest.param(
            {"HOME": "/h", "STATE_DIRECTORY": "", "XDG_STATE_HOME": ""},
            f"/h/.local/state/credrefresh/{H_STATE}",
            id="empty-vars-ignored",
        ),
    ],
)
def test_state_file_default(tmp_path, environ, state_file):
    """state_file defaults to STATE_DIRECTORY, else XDG_STATE_HOME, else ~/.local/state."""
    assert "state-" + hashlib.sha256(b"/h/.aws/credentials").hexdigest()[:12] + ".json" == H_STATE
    assert load_config(write(tmp_path, ROLE), environ=environ).state_file == state_file


def test_state_file_key_beats_environment(tmp_path):
    """An explicit state_file wins over STATE_DIRECTORY and is ~-expanded against HOME."""
    path = write(tmp_path, 'state_file = "~/s.json"\n' + ROLE)
    environ = {"HOME": "/h", "STATE_DIRECTORY": "/var/lib/x"}
    assert load_config(path, environ=environ).state_file == "/h/s.json"


def test_relative_xdg_state_home_is_ignored(tmp_path):
    """A relative XDG_STATE_HOME is ignored (XDG spec), so state_file stays absolute."""
    environ = {"HOME": "/h", "XDG_STATE_HOME": "relative/state"}
    state_file = load_config(write(tmp_path, ROLE), environ=environ).state_file
    assert state_file == f"/h/.local/state/credrefresh/{H_STATE}"


def test_tilde_user_is_not_glued_to_home(tmp_path):
    """'~user/...' expands to that user's home or is refused, never to HOME + 'user/...'."""
    path = write(tmp_path, 'credentials_file = "~root/creds"\n' + ROLE)
    try:
        credentials_file = load_config(path, environ=ENV).credentials_file
    except ConfigError as exc:
        one_problem_for(exc.problems, path, "credentials_file")
    else:
        assert credentials_file == str(Path(pwd.getpwnam("root").pw_dir) / "creds")


@pytest.mark.parametrize(
    ("environ", "region"),
    [
        pytest.param({"HOME": "/h"}, "us-east-1", id="none"),
        pytest.param({"HOME": "/h", "AWS_DEFAULT_REGION": "eu-west-3"}, "eu-west-3", id="default"),
        pytest.param(
            {"HOME": "/h", "AWS_DEFAULT_REGION": "eu-west-3", "AWS_REGION": "ap-south-1"},
            "ap-south-1",
            id="aws-region-first",
        ),
    ],
)
def test_region_default_from_environment(tmp_path, environ, region):
    """Without a region key the region is AWS_REGION, else AWS_DEFAULT_REGION, else us-east-1."""
    assert load_config(write(tmp_path, ROLE), environ=environ).region == region


@pytest.mark.parametrize(
    ("profile", "session_name"),
    [
        pytest.param("dev", "credrefresh-dev", id="plain"),
        pytest.param("team/prod admin", "credrefresh-team-prod-admin", id="bad-chars-replaced"),
        pytest.param("café", "credrefresh-caf-", id="non-ascii-replaced"),
        pytest.param("p" * 100, "credrefresh-" + "p" * 52, id="truncated-to-64"),
    ],
)
def test_session_name_derived_from_profile(tmp_path, profile, session_name):
    """Without session_name the RoleSessionName is a valid name derived from the profile."""
    path = write(tmp_path, role(profile=f'"{profile}"'))
    assert load_config(path, environ=ENV).roles[0].session_name == session_name


def test_config_is_frozen(tmp_path):
    """Config, Role and RefreshPolicy cannot be modified after loading, and hold only tuples."""
    config = load_config(write(tmp_path, FULL), environ=ENV)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.region = "us-east-2"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.roles[0].role_arn = "arn:aws:iam::123456789012:role/other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.refresh.jitter = 0.0  # type: ignore[misc]
    assert isinstance(config.roles, tuple)
    assert isinstance(config.roles[0].tags, tuple)
    assert isinstance(config.roles[0].policy_arns, tuple)
    for cls in (Config, Role, RefreshPolicy):
        assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_external_id_absent_from_repr(tmp_path):
    """The external ID never shows in the repr of the loaded configuration."""
    config = load_config(write(tmp_path, FULL), environ=ENV)
    assert config.roles[0].external_id == "ext-id-1234"
    assert "ext-id-1234" not in repr(config)


# -- refusals ------------------------------------------------------------------------------

# (id, file content, key path or None for file-level problems, fragments the message contains)
MALFORMED: list[tuple[str, str | bytes, str | None, tuple[str, ...]]] = [
    # TOML syntax: the message carries tomllib's line.
    ("syntax-missing-value", "region =\n" + ROLE, None, ("TOML syntax error", "at line 1")),
    ("syntax-unclosed-table", ROLE + "[refresh\n", None, ("TOML syntax error", "at line 4")),
    (
        "syntax-duplicate-key",
        ROLE + 'profile = "again"\n',
        None,
        ("TOML syntax error", "Cannot overwrite a value", "at line 4"),
    ),
    ("syntax-unterminated-string", 'region = "us-east-1\n' + ROLE, None, ("at line 1",)),
    # Encodings.
    (
        "utf16-file",
        (ROLE).encode("utf-16"),
        None,
        ("not UTF-8 text (byte 0)",),
    ),
    ("latin1-byte", b"# caf\xe9\n" + ROLE.encode(), None, ("not UTF-8 text (byte 5)",)),
    (
        "nul-byte",
        b'region = "us-\x00east-1"\n' + ROLE.encode(),
        None,
        ("TOML syntax error", "character '\\x00'", "at line 1"),
    ),
    # tomllib does not skip a UTF-8 BOM: it is an invalid statement at line 1, column 1.
    (
        "utf8-bom",
        b"\xef\xbb\xbf" + ROLE.encode(),
        None,
        ("TOML syntax error", "at line 1, column 1"),
    ),
    # Unknown keys, with a hint for a near miss.
    ("unknown-top", 'regoin = "us-east-1"\n' + ROLE, "regoin", ("did you mean 'region'?",)),
    (
        "unknown-source",
        '[source]\nprofil = "base"\n' + ROLE,
        "source.profil",
        ("did you mean 'profile'?", "expected one of: profile"),
    ),
    (
        "unknown-refresh",
        "[refresh]\njiter = 0.1\n" + ROLE,
        "refresh.jiter",
        ("did you mean 'jitter'?",),
    ),
    (
        "unknown-role",
        role(rolearn='"x"'),
        "roles[0].rolearn",
        ("did you mean 'role_arn'?", "expected one of: profile, role_arn"),
    ),
    # Missing required keys and tables.
    ("missing-profile", without("profile"), "roles[0].profile", ("missing required key",)),
    ("missing-role-arn", without("role_arn"), "roles[0].role_arn", ("missing required key",)),
    ("missing-roles", 'region = "us-east-1"\n', "roles", ("missing", "[[roles]]")),
    ("empty-roles", "roles = []\n", "roles", ("empty", "[[roles]]")),
    # Wrong types.
    (
        "string-for-integer",
        'max_concurrency = "8"\n' + ROLE,
        "max_concurrency",
        ("expected an integer, got a string",),
    ),
    (
        "boolean-for-integer",
        role(duration_seconds="true"),
        "roles[0].duration_seconds",
        ("expected an integer, got a boolean",),
    ),
    (
        "float-for-integer",
        role(duration_seconds="3600.0"),
        "roles[0].duration_seconds",
        ("expected an integer, got a number",),
    ),
    (
        "integer-for-string",
        role(profile="5"),
        "roles[0].profile",
        ("expected a string, got an integer",),
    ),
    (
        "table-for-array",
        '[roles]\nprofile = "dev"\n',
        "roles",
        ("expected an array of tables ([[roles]]), got a table",),
    ),
    (
        "array-of-non-tables",
        "roles = [1, 2]\n",
        "roles",
        ("expected an array of tables",),
    ),
    ("string-for-table", 'source = "base"\n' + ROLE, "source", ("expected a table, got a string",)),
    ("integer-for-table", "refresh = 1\n" + ROLE, "refresh", ("expected a table, got an integer",)),
    (
        "string-for-number",
        'sts_timeout = "10"\n' + ROLE,
        "sts_timeout",
        ("expected a number, got a string",),
    ),
    (
        "bad-choice",
        'retry_mode = "legacy"\n' + ROLE,
        "retry_mode",
        ("expected one of standard, adaptive", "'legacy'"),
    ),
    (
        "empty-path",
        'credentials_file = ""\n' + ROLE,
        "credentials_file",
        ("expected a non-empty path string",),
    ),
    (
        "integer-for-path",
        "state_file = 1\n" + ROLE,
        "state_file",
        ("expected a non-empty path string, got an integer",),
    ),
    ("bad-region", 'region = "mars-1"\n' + ROLE, "region", ("expected an AWS region name",)),
    (
        "bad-role-region",
        role(region='"US-EAST-1"'),
        "roles[0].region",
        ("expected an AWS region name", "'US-EAST-1'"),
    ),
    (
        "bad-endpoint",
        'sts_endpoint_url = "ftp://sts.example"\n' + ROLE,
        "sts_endpoint_url",
        ("expected an http(s) URL",),
    ),
    # Out of range.
    (
        "duration-899",
        role(duration_seconds="899"),
        "roles[0].duration_seconds",
        ("expected an integer from 900 to 43200, got 899",),
    ),
    (
        "duration-43201",
        role(duration_seconds="43201"),
        "roles[0].duration_seconds",
        ("expected an integer from 900 to 43200, got 43201",),
    ),
    (
        "concurrency-0",
        "max_concurrency = 0\n" + ROLE,
        "max_concurrency",
        ("expected an integer from 1 to 1024, got 0",),
    ),
    (
        "timeout-nan",
        "sts_timeout = nan\n" + ROLE,
        "sts_timeout",
        ("expected a number from 0.1 to 300, got nan",),
    ),
    (
        "refresh-at-low",
        "[refresh]\nrefresh_at = 0.05\n" + ROLE,
        "refresh.refresh_at",
        ("expected a number from 0.1 to 0.7, got 0.05",),
    ),
    (
        "refresh-at-plus-jitter",
        "[refresh]\nrefresh_at = 0.6\njitter = 0.2\n" + ROLE,
        "refresh.jitter",
        ("refresh_at + jitter must be at most 0.7", "got 0.8"),
    ),
    (
        "backoff-max-below-initial",
        "[refresh]\nbackoff_initial = 10\nbackoff_max = 5\n" + ROLE,
        "refresh.backoff_max",
        ("must be at least backoff_initial (10)",),
    ),
    # ARNs.
    (
        "user-arn",
        role(role_arn='"arn:aws:iam::123456789012:user/alice"'),
        "roles[0].role_arn",
        ("expected an IAM role ARN", "'arn:aws:iam::123456789012:user/alice'"),
    ),
    (
        "11-digit-account",
        role(role_arn='"arn:aws:iam::12345678901:role/dev"'),
        "roles[0].role_arn",
        ("expected an IAM role ARN with a 12-digit account",),
    ),
    (
        "13-digit-account",
        role(role_arn='"arn:aws:iam::1234567890123:role/dev"'),
        "roles[0].role_arn",
        ("expected an IAM role ARN",),
    ),
    (
        "s3-arn",
        role(role_arn='"arn:aws:s3:::my-bucket"'),
        "roles[0].role_arn",
        ("expected an IAM role ARN", "'arn:aws:s3:::my-bucket'"),
    ),
    (
        "garbage-arn",
        role(role_arn='"not an arn"'),
        "roles[0].role_arn",
        ("expected an IAM role ARN",),
    ),
    (
        "role-arn-without-name",
        role(role_arn='"arn:aws:iam::123456789012:role/"'),
        "roles[0].role_arn",
        ("expected an IAM role ARN",),
    ),
    (
        "unknown-partition",
        role(role_arn='"arn:aws-moon:iam::123456789012:role/dev"'),
        "roles[0].role_arn",
        ("expected an IAM role ARN",),
    ),
    # Role parameters.
    (
        "external-id-short",
        role(external_id='"x"'),
        "roles[0].external_id",
        ("expected 2 to 1224 characters, got 1",),
    ),
    (
        "external-id-long",
        role(external_id=f'"{"e" * 1225}"'),
        "roles[0].external_id",
        ("expected 2 to 1224 characters, got 1225",),
    ),
    (
        "session-name-bad-chars",
        role(session_name='"alice smith"'),
        "roles[0].session_name",
        ("expected 2 to 64 characters of letters, digits and +=,.@_-", "'alice smith'"),
    ),
    (
        "session-name-non-ascii",
        role(session_name='"zoë"'),
        "roles[0].session_name",
        ("expected 2 to 64 characters",),
    ),
    (
        "session-name-long",
        role(session_name=f'"{"s" * 65}"'),
        "roles[0].session_name",
        ("expected 2 to 64 characters",),
    ),
    (
        "session-name-short",
        role(session_name='"a"'),
        "roles[0].session_name",
        ("expected 2 to 64 characters", "'a'"),
    ),
    (
        "source-identity-invalid",
        role(source_identity='"alice:admin"'),
        "roles[0].source_identity",
        ("expected 2 to 64 characters", "'alice:admin'"),
    ),
    (
        "tags-not-table",
        role(tags='"team=infra"'),
        "roles[0].tags",
        ("expected a table of string to string, got a string",),
    ),
    (
        "tag-non-string",
        role(tags="{ team = 1 }"),
        "roles[0].tags.team",
        ("expected a string, got an integer",),
    ),
    (
        "too-many-tags",
        role(tags="{ " + ", ".join(f't{i} = "v"' for i in range(51)) + " }"),
        "roles[0].tags",
        ("expected at most 50 session tags, got 51",),
    ),
    (
        "policy-arns-not-list",
        role(policy_arns='"arn:aws:iam::aws:policy/ReadOnlyAccess"'),
        "roles[0].policy_arns",
        ("expected a list of policy ARNs, got a string",),
    ),
    (
        "policy-arn-bad",
        role(policy_arns=f'["arn:aws:iam::aws:policy/ReadOnlyAccess", "{ROLE_ARN}"]'),
        "roles[0].policy_arns[1]",
        ("expected an IAM policy ARN", f"{ROLE_ARN!r}"),
    ),
    (
        "policy-arn-not-string",
        role(policy_arns="[1]"),
        "roles[0].policy_arns[0]",
        ("expected an IAM policy ARN", "got 1"),
    ),
    (
        "too-many-policy-arns",
        role(policy_arns="[" + ", ".join(['"arn:aws:iam::aws:policy/P"'] * 11) + "]"),
        "roles[0].policy_arns",
        ("expected at most 10 policy ARNs, got 11",),
    ),
    # Profile names.
    (
        "duplicate-profile",
        ROLE + SECOND_ROLE + role(role_arn='"arn:aws:iam::123456789012:role/again"'),
        "roles[2].profile",
        ("duplicate profile 'dev', already used by roles[0]",),
    ),
    ("empty-profile", role(profile='""'), "roles[0].profile", ("non-empty profile name",)),
    ("blank-profile", role(profile='"   "'), "roles[0].profile", ("non-empty profile name",)),
    ("profile-open-bracket", role(profile='"a[b"'), "roles[0].profile", ("cannot contain '['",)),
    ("profile-close-bracket", role(profile='"a]b"'), "roles[0].profile", ("cannot contain",)),
    ("profile-newline", role(profile='"a\\nb"'), "roles[0].profile", ("line breaks",)),
    ("profile-carriage-return", role(profile='"a\\rb"'), "roles[0].profile", ("line breaks",)),
    ("profile-leading-space", role(profile='" dev"'), "roles[0].profile", ("whitespace",)),
    (
        "source-is-managed",
        '[source]\nprofile = "dev"\n' + ROLE,
        "source.profile",
        ("'dev' is also a managed profile",),
    ),
    ("source-empty", '[source]\nprofile = ""\n' + ROLE, "source.profile", ("non-empty",)),
    ("source-not-string", "[source]\nprofile = 1\n" + ROLE, "source.profile", ("got an integer",)),
    # Metrics address.
    (
        "metrics-no-port",
        'metrics_address = "127.0.0.1"\n' + ROLE,
        "metrics_address",
        ("expected 'HOST:PORT' such as '127.0.0.1:9464'", "'127.0.0.1'"),
    ),
    (
        "metrics-port-65536",
        'metrics_address = "localhost:65536"\n' + ROLE,
        "metrics_address",
        ("expected 'HOST:PORT'",),
    ),
    (
        "metrics-unbracketed-ipv6",
        'metrics_address = "::1:9464"\n' + ROLE,
        "metrics_address",
        ("expected 'HOST:PORT'",),
    ),
    (
        "metrics-bad-ipv6",
        'metrics_address = "[1:2:3]:9464"\n' + ROLE,
        "metrics_address",
        ("'1:2:3' is not an IPv6 address",),
    ),
    (
        "metrics-integer",
        "metrics_address = 9464\n" + ROLE,
        "metrics_address",
        ("expected 'HOST:PORT'", "got 9464"),
    ),
]


def test_malformed_table_is_large_and_distinct():
    """The malformed-config table has at least 30 distinct cases."""
    assert len(MALFORMED) >= 30
    assert len({case[0] for case in MALFORMED}) == len(MALFORMED)
    assert len({case[1] for case in MALFORMED}) == len(MALFORMED)


@pytest.mark.parametrize(
    ("content", "key", "fragments"),
    [pytest.param(content, key, fragments, id=name) for name, content, key, fragments in MALFORMED],
)
def test_malformed_config_is_refused(tmp_path, content, key, fragments):
    """A malformed config raises ConfigError naming the file, the key path and what was expected."""
    path = write(tmp_path, content)
    problems = refused(path)
    if key is None:
        assert len(problems) == 1, problems
        problem = problems[0]
    else:
        problem = one_problem_for(problems, path, key)
    for fragment in fragments:
        assert fragment in problem, f"{fragment!r} not in {problem!r}"


def test_unknown_key_without_near_miss_has_no_hint(tmp_path):
    """An unknown key unlike any known one lists the allowed keys but suggests none."""
    path = write(tmp_path, "zzz = 1\n" + ROLE)
    problem = one_problem_for(refused(path), path, "zzz")
    assert "did you mean" not in problem
    assert "unknown key; expected one of: credentials_file, region" in problem


def test_missing_file_is_refused(tmp_path):
    """A missing config file raises ConfigError naming the path."""
    path = str(tmp_path / "absent.toml")
    assert refused(path) == (f"{path}: cannot read: No such file or directory",)


def test_directory_is_refused(tmp_path):
    """A directory given as the config raises ConfigError, not IsADirectoryError."""
    path = str(tmp_path)
    assert refused(path) == (f"{path}: cannot read: Is a directory",)


def test_every_problem_is_reported_at_once(tmp_path):
    """Problems across all sections and roles are reported together, in file order."""
    content = (
        'regoin = "us-east-1"\n'
        "max_concurrency = 0\n"
        'metrics_address = "nope"\n'
        "[source]\nprofil = 'x'\n"
        "[refresh]\nrefresh_at = 2\n"
        + role(role_arn='"arn:aws:iam::123456789012:user/a"', duration_seconds="899")
        + SECOND_ROLE
        + role(profile='"ops"', session_name='"a b"')
    )
    path = write(tmp_path, content)
    problems = refused(path)
    assert [key_of(path, p) for p in problems] == [
        "regoin",
        "max_concurrency",
        "metrics_address",
        "source.profil",
        "refresh.refresh_at",
        "roles[0].role_arn",
        "roles[0].duration_seconds",
        "roles[2].session_name",
        "roles[2].profile",
    ]


def test_external_id_is_not_echoed_in_problems(tmp_path):
    """A refused external ID is described by its length only, never quoted."""
    secret = "S3cretExternal" * 100
    path = write(tmp_path, role(external_id=f'"{secret}"'))
    problems = refused(path)
    assert problems == (f"{path}: roles[0].external_id: expected 2 to 1224 characters, got 1400",)
    assert not any("S3cret" in p for p in problems)


def test_duplicate_of_an_invalid_role_is_still_reported(tmp_path):
    """A duplicate profile is reported even when its first use also has another problem."""
    content = (
        '[source]\nprofile = "dev"\n' + role(role_arn='"arn:aws:iam::123456789012:user/a"') + role()
    )
    path = write(tmp_path, content)
    keys = [key_of(path, p) for p in refused(path)]
    assert keys == ["source.profile", "roles[0].role_arn", "roles[1].profile"]


def test_refresh_at_plus_jitter_of_exactly_0_7_is_accepted(tmp_path):
    """refresh_at + jitter equal to 0.7 in decimal is accepted, whatever float rounding does."""
    path = write(tmp_path, "[refresh]\nrefresh_at = 0.65\njitter = 0.05\n" + ROLE)
    refresh = load_config(path, environ=ENV).refresh
    assert (refresh.refresh_at, refresh.jitter) == (0.65, 0.05)


# Values that look valid to a regex using '$' (which also matches before a final newline) or an
# un-flagged '\w'/'\d' (which match any Unicode letter or digit), and that STS or the HTTP
# stack would reject later, contrary to "nothing past config.py re-checks a value".


@pytest.mark.parametrize(
    ("content", "key"),
    [
        pytest.param(
            role(role_arn=f'"{ROLE_ARN}\\n"'),
            "roles[0].role_arn",
            id="role-arn-trailing-newline",
        ),
        pytest.param(
            role(session_name='"alice\\n"'),
            "roles[0].session_name",
            id="session-name-trailing-newline",
        ),
        pytest.param(
            role(source_identity='"alice\\n"'),
            "roles[0].source_identity",
            id="source-identity-trailing-newline",
        ),
        pytest.param(
            'region = "us-east-1\\n"\n' + ROLE,
            "region",
            id="region-trailing-newline",
        ),
        pytest.param(
            role(policy_arns='["arn:aws:iam::aws:policy/ReadOnlyAccess\\n"]'),
            "roles[0].policy_arns[0]",
            id="policy-arn-trailing-newline",
        ),
        pytest.param(
            'metrics_address = "127.0.0.1:9464\\n"\n' + ROLE,
            "metrics_address",
            id="metrics-trailing-newline",
        ),
        pytest.param(
            role(role_arn='"arn:aws:iam::123456789012:role/café"'),
            "roles[0].role_arn",
            id="role-name-non-ascii",
        ),
        pytest.param(
            role(role_arn='"arn:aws:iam::١٢٣٤٥٦٧٨٩٠١٢:role/dev"'),
            "roles[0].role_arn",
            id="account-non-ascii-digits",
        ),
        pytest.param(
            role(policy_arns='["arn:aws:iam::aws:policy/Lecture\u00e9"]'),
            "roles[0].policy_arns[0]",
            id="policy-name-non-ascii",
        ),
    ],
)
def test_value_that_only_a_loose_pattern_accepts_is_refused(tmp_path, content, key):
    """A value with a trailing newline or non-ASCII name characters is refused at its key."""
    path = write(tmp_path, content)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=ENV)
    one_problem_for(info.value.problems, path, key)


# -- property --------------------------------------------------------------------------------


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string, every character escaped so any scalar value survives."""
    return '"' + "".join(f"\\U{ord(c):08X}" for c in text) + '"'


def valid_profile_name(name: str) -> bool:
    """What the contract allows: stripped, short, no brackets, line breaks or unprintables.

    And not ``DEFAULT`` (botocore applies its keys to every profile): Hypothesis draws that
    literal from the code under test.
    """
    return (
        bool(name)
        and name != "DEFAULT"
        and name == name.strip()
        and not any(c in name for c in "[]" + LINE_BREAKS)
        and not any(unicodedata.category(c) in NOT_PRINTED for c in name)
        and len(name) <= 256
    )


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """One directory shared by all Hypothesis examples (each rewrites the same file)."""
    return tmp_path_factory.mktemp("profiles")


# Surrogates are left out: no UTF-8 file and no TOML escape can hold one.
@settings(max_examples=300, deadline=None)
@given(
    name=st.text(
        alphabet=st.one_of(
            st.characters(codec="utf-8"), st.sampled_from("[]\r\n \t\x0b\x85\u2028\x00")
        ),
        max_size=20,
    )
)
def test_profile_name_property(scratch, name):
    """Any profile text is accepted exactly when it is a valid name, else refused at its key."""
    path = write(scratch, role(profile=toml_string(name)))
    if valid_profile_name(name):
        # Anything but ConfigError escapes and fails the test, as would a refusal here.
        assert load_config(path, environ=ENV).roles[0].profile == name
    else:
        with pytest.raises(ConfigError) as info:
            load_config(path, environ=ENV)
        assert len(info.value.problems) == 1, info.value.problems
        assert info.value.problems[0].startswith(f"{path}: roles[0].profile: ")


def test_toml_string_helper_round_trips(tmp_path):
    """The escaping used by the property test reproduces awkward text exactly."""
    text = "a[\r\n\x00\u2028é\U0001f600 "
    problems = refused(write(tmp_path, role(profile=toml_string(text))))
    assert f"{text!r}" in problems[0]


def test_metrics_port_zero_means_any_free_port(tmp_path):
    """Port 0 is accepted: the endpoint binds a free port and logs it (the demo uses this)."""
    path = write(tmp_path, 'metrics_address = "127.0.0.1:0"\n' + ROLE)
    assert load_config(path, environ=ENV).metrics_address == ("127.0.0.1", 0)


def test_plan_reload_diffs_roles_and_refuses_fixed_settings(tmp_path):
    """A reload plan names added, removed and changed profiles, and refuses a new file path."""
    old = load_config(write(tmp_path, ROLE + SECOND_ROLE), environ=ENV)
    dev, ops = old.roles
    new = replace(
        old,
        roles=(replace(dev, duration_seconds=7200), replace(ops, profile="ops2")),
    )
    plan = plan_reload(old, new)
    assert (plan.added, plan.removed, plan.changed) == (("ops2",), ("ops",), ("dev",))
    assert plan.sts_changed is False
    assert plan_reload(old, replace(old, region="eu-west-1")).sts_changed is True
    assert plan_reload(old, replace(old, state_file="/elsewhere")).sts_changed is False
    with pytest.raises(ConfigError) as refused:
        plan_reload(old, replace(old, credentials_file="/other/credentials"))
    assert "credentials_file: cannot change while running" in refused.value.problems[0]


def test_two_credentials_files_get_two_default_state_files(tmp_path):
    """Two daemons of one user, for two credentials files, never share a state file."""
    path = write(tmp_path, ROLE)
    one = load_config(path, environ={"HOME": "/h"}).state_file
    two = load_config(
        path, environ={"HOME": "/h", "AWS_SHARED_CREDENTIALS_FILE": "/x/c"}
    ).state_file
    assert one != two
    assert one.rsplit("/", 1)[0] == two.rsplit("/", 1)[0]


def test_default_profile_name_is_refused(tmp_path):
    """A profile called DEFAULT would leak its keys into every other profile: refused."""
    path = write(tmp_path, ROLE.replace('profile = "dev"', 'profile = "DEFAULT"'))
    problems = refused(path)
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}: roles[0].profile: 'DEFAULT' is special")


def test_profile_of_the_wrong_type_with_a_source_profile_is_reported(tmp_path):
    """A non-string profile next to [source] is a clean error, not a crash."""
    path = write(tmp_path, '[source]\nprofile = "src"\n' + ROLE.replace('"dev"', '["dev"]'))
    problems = refused(path)
    assert [key_of(path, p) for p in problems] == ["roles[0].profile"]


# -- hostile input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://sts.example.com",
        "http://localhost:5000",
        "http://10.0.0.1:8080/",
        "http://[fe80::1]:80",
        "http://127.0.0.1.nip.io",
        "http://0x7f.0.0.1",
    ],
)
def test_plain_http_endpoint_off_loopback_is_refused(tmp_path, endpoint):
    """Plain http is refused unless it goes to a loopback literal; localhost is refused too."""
    path = write(tmp_path, f'sts_endpoint_url = "{endpoint}"\n' + ROLE)
    problem = one_problem_for(refused(path), path, "sts_endpoint_url")
    assert "plain http" in problem


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://sts.us-east-1.amazonaws.com",
        "https://sts.example.com:8443/path",
        "http://127.0.0.1:5000",
        "http://127.9.9.9",
        "http://[::1]:5000/",
    ],
)
def test_https_or_loopback_http_endpoint_is_accepted(tmp_path, endpoint):
    """https anywhere, and http to 127.0.0.0/8 or [::1], are accepted as written."""
    path = write(tmp_path, f'sts_endpoint_url = "{endpoint}"\n' + ROLE)
    assert load_config(path, environ=ENV).sts_endpoint_url == endpoint


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("a\x00b", "a\\x00b"),
        ("bell\x07", "bell\\x07"),
        ("evil\u202eexe.txt", "evil\\u202eexe.txt"),
        ("line\u2028sep", "line\\u2028sep"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("x" * 257, "x" * 80 + "... (177 more characters)"),
    ],
)
def test_profile_name_with_control_characters_is_refused_and_shown_escaped(tmp_path, name, shown):
    """Control, format and separator characters, or more than 256 characters, are refused."""
    path = write(tmp_path, role(profile=toml_string(name)))
    problem = one_problem_for(refused(path), path, "roles[0].profile")
    assert f"'{shown}'" in problem
    assert name not in problem


def test_a_huge_profile_name_is_not_echoed_whole(tmp_path):
    """A one-megabyte profile name is named in a message of bounded length."""
    path = write(tmp_path, role(profile=f'"{"n" * 1_000_000}"'))
    (problem,) = refused(path)
    assert len(problem) < len(path) + 400
    assert "999920 more characters" in problem


def test_a_hostile_unknown_key_is_escaped_and_bounded(tmp_path):
    """An unknown key is echoed escaped and cut short: it cannot repaint a terminal."""
    key = "\x1b]0;owned\x07" + "k" * 10_000
    path = write(tmp_path, f"{toml_string(key)} = 1\n" + ROLE)
    (problem,) = refused(path)
    assert "\x1b" not in problem
    assert "\\x1b]0;owned\\x07" in problem
    assert len(problem) < len(path) + 600


@pytest.mark.parametrize("depth", [15, 1000, 100_000])
def test_deeply_nested_toml_is_refused_without_recursion_error(tmp_path, depth):
    """Nesting past 16 levels (and far past Python's recursion limit) is a ConfigError."""
    path = write(tmp_path, ROLE + "[refresh]\nx = " + "[" * depth + "]" * depth + "\n")
    (problem,) = refused(path)
    assert problem.startswith(f"{path}: nested ")


def test_sixteen_levels_of_nesting_are_allowed_through_to_validation(tmp_path):
    """16 levels (the document, [refresh] and 14 arrays) pass the depth bound."""
    path = write(tmp_path, ROLE + "[refresh]\nx = " + "[" * 14 + "]" * 14 + "\n")
    (problem,) = refused(path)
    assert problem.startswith(f"{path}: refresh.x: unknown key")


def reference_depth(item: object) -> int:
    """How deep ``item`` nests tables and arrays, itself included, counted recursively."""
    if isinstance(item, dict):
        return 1 + max(map(reference_depth, item.values()), default=0)
    if isinstance(item, list):
        return 1 + max(map(reference_depth, item), default=0)
    return 0


TOML_SCALARS = st.one_of(st.integers(), st.text(max_size=3), st.booleans(), st.floats())
TOML_VALUES = st.recursive(
    TOML_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=2), inner, max_size=4)
    ),
    max_leaves=30,
)


@given(st.dictionaries(st.text(max_size=2), TOML_VALUES, max_size=5))
def test_nesting_counts_what_a_recursive_walk_counts(document: dict) -> None:
    """The level-by-level count (one comprehension per level) is the recursive one."""
    assert nesting(document) == reference_depth(document)


def test_a_file_over_the_size_bound_is_not_parsed(tmp_path):
    """A 20 MB file is refused by its size, naming the bound."""
    path = write(tmp_path, ROLE + "# " + "x" * 20_000_000 + "\n")
    (problem,) = refused(path)
    assert problem == f"{path}: larger than {MAX_FILE_SIZE} bytes; not read"


def test_more_roles_than_the_bound_are_refused(tmp_path):
    """More than MAX_ROLES role tables is one problem, not a walk through all of them."""
    path = write(tmp_path, "roles = [" + "{}," * (MAX_ROLES + 1) + "]\n")
    (problem,) = refused(path)
    assert problem == f"{path}: roles: expected at most {MAX_ROLES} roles, got {MAX_ROLES + 1}"


def test_a_path_over_path_max_is_refused(tmp_path):
    """A credentials_file longer than PATH_MAX, or holding a control character, is refused."""
    for value in ["/" + "d" * 5000, "/srv/creds\x07"]:
        path = write(tmp_path, f"credentials_file = {toml_string(value)}\n" + ROLE)
        problem = one_problem_for(refused(path), path, "credentials_file")
        assert "without control characters" in problem


@pytest.mark.parametrize("external_id", ["has space", "quote'd", "caf\u00e9", "new\nline"])
def test_external_id_outside_sts_pattern_is_refused_and_not_echoed(tmp_path, external_id):
    """An external_id STS would reject is refused here, without echoing it."""
    path = write(tmp_path, role(external_id=toml_string(external_id)))
    problem = one_problem_for(refused(path), path, "roles[0].external_id")
    assert "STS's pattern" in problem
    assert external_id not in problem


def test_external_id_with_every_allowed_character_is_accepted(tmp_path):
    """STS's pattern: letters, digits, underscore and +=,.@:/-."""
    value = "Ab_9+=,.@:/-"
    path = write(tmp_path, role(external_id=f'"{value}"'))
    assert load_config(path, environ=ENV).roles[0].external_id == value
