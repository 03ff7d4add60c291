"""Where the source credentials come from, checked before anything calls STS.

``check``, ``once`` and ``run`` look at the AWS config files the way botocore will (without
importing it): a ``[source] profile`` that exists nowhere, or a source that resolves to a profile
credrefresh itself writes, is refused (exit 78) now rather than failing 30 minutes later; a
managed profile that the AWS config file also defines as an assume-role, SSO, web-identity or
``credential_process`` profile is a warning, because every SDK then ignores the keys we write.

The files are read with bounds: regular files only (never blocking on a FIFO), at most
``MAX_FILE`` bytes; an unreadable file counts as absent.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from credrefresh.config import Config
from credrefresh.text import printable

__all__ = ["MAX_FILE", "SHADOWING_KEYS", "Findings", "helper_program", "inspect"]

MAX_FILE: Final = 16 * 1024 * 1024
# Keys of a config-file profile that make SDKs resolve it themselves, ignoring static keys.
SHADOWING_KEYS: Final = (
    "role_arn",
    "source_profile",
    "credential_source",
    "credential_process",
    "web_identity_token_file",
    "sso_session",
    "sso_start_url",
    "sso_account_id",
    "sso_role_name",
)


@dataclass(frozen=True, slots=True)
class Findings:
    """What ``inspect`` found.

    Attributes:
        problems: Refusals, each naming the file and key (exit 78).
        warnings: Things that work but will surprise, each naming the profile.
    """

    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def read_ini(path: str) -> dict[str, dict[str, str]]:
    """The sections of an INI file, or ``{}`` when absent, unreadable, special or too large."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return {}
    with contextlib.closing(os.fdopen(fd, "rb")) as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_FILE:
            return {}
        data = handle.read(MAX_FILE + 1)
    parser = configparser.RawConfigParser(default_section="\x00none", strict=False)
    try:
        parser.read_string(data.decode("utf-8", "replace"))
    except configparser.Error:
        return {}
    return {name: dict(parser[name]) for name in parser.sections()}


def expand(value: str, env: Mapping[str, str]) -> str:
    """``~`` against ``HOME`` in ``env``."""
    if value == "~" or value.startswith("~/"):
        return (env.get("HOME") or os.path.expanduser("~")) + value[1:]
    return os.path.expanduser(value)


def profiles_known(env: Mapping[str, str]) -> tuple[str, str, set[str], dict[str, dict[str, str]]]:
    """The shared files botocore reads, the profiles they define, and the config file's sections."""
    credentials = expand(env.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials", env)
    config = expand(env.get("AWS_CONFIG_FILE") or "~/.aws/config", env)
    in_config: dict[str, dict[str, str]] = {}
    for section, values in read_ini(config).items():
        if section == "default":
            in_config["default"] = values
        elif section.startswith("profile "):
            in_config[section.removeprefix("profile ").strip()] = values
    names = set(read_ini(credentials)) | set(in_config)
    return credentials, config, names, in_config


def helper_program(profile: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """The program a profile's ``credential_process`` runs, or ``None`` when it has none.

    Its base name only, never its arguments, which may hold secrets. Reads the AWS files.
    """
    environ = os.environ if env is None else env
    name = profile or environ.get("AWS_PROFILE") or environ.get("AWS_DEFAULT_PROFILE") or "default"
    credentials, _, _, in_config = profiles_known(environ)
    command = in_config.get(name, {}).get("credential_process")
    if command is None:
        command = read_ini(credentials).get(name, {}).get("credential_process")
    words = (command or "").split()
    if not words:
        return None
    return printable(os.path.basename(words[0].strip("'\"")), 64)


def clip(name: str) -> str:
    """A profile name fit to echo: bounded and with control characters escaped."""
    shown = name if len(name) <= 64 else name[:61] + "..."  # noqa: PLR2004
    return repr(shown)


def inspect(config: Config, env: Mapping[str, str] | None = None) -> Findings:
    """Problems and warnings about the source credentials of ``config`` (reads the AWS files)."""
    environ = os.environ if env is None else env
    credentials, config_file, known, in_config = profiles_known(environ)
    managed = {role.profile for role in config.roles}
    problems: list[str] = []
    warnings: list[str] = []
    source = config.source_profile
    if source is not None and source not in known:
        problems.append(
            f"{config.path}: source.profile: profile {clip(source)} exists in neither "
            f"{config_file} nor {credentials}; botocore could not sign with it"
        )
    env_keys = bool(environ.get("AWS_ACCESS_KEY_ID"))
    chosen = environ.get("AWS_PROFILE") or environ.get("AWS_DEFAULT_PROFILE")
    web_identity = config.session is not None and config.session.kind == "web_identity"
    if source is None and chosen and not env_keys and not web_identity:
        if chosen in managed:
            problems.append(
                f"{config.path}: source.profile: unset, and AWS_PROFILE={clip(chosen)} names a "
                "profile credrefresh writes: the daemon would sign with its own output; set "
                "[source] profile to the identity that assumes the roles"
            )
        elif chosen not in known:
            problems.append(
                f"{config.path}: source.profile: unset, and AWS_PROFILE={clip(chosen)} exists in "
                f"neither {config_file} nor {credentials}"
            )
    for index, role in enumerate(config.roles):
        signer = role.source_profile
        if signer is not None and signer not in managed and signer not in known:
            problems.append(
                f"{config.path}: roles[{index}].source_profile: {clip(signer)} is neither a "
                f"configured role nor a profile of {config_file} or {credentials}"
            )
        shadowing = sorted(k for k in in_config.get(role.profile, {}) if k in SHADOWING_KEYS)
        if shadowing:
            warnings.append(
                f"{config_file}: [profile {role.profile}] also sets {', '.join(shadowing)}: "
                "SDKs resolve that and ignore the keys credrefresh writes to "
                f"{config.credentials_file}; remove those keys or rename the role's profile"
            )
    return Findings(tuple(problems), tuple(warnings))
