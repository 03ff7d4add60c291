"""Role chains (hub and spoke): which configured role signs for which, checked and ordered.

A role whose ``source_profile`` names another configured role is assumed with that role's live
credentials, held in memory (never read back from the file). Pure functions over the
configuration: the graph's problems, its depth, and the order ``once`` assumes roles in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Final

from credrefresh.model import Credentials, Issued, RoleState
from credrefresh.settings import Role
from credrefresh.sourceconfig import CHAINED_MAX

__all__ = [
    "CHAINED_MAX_DURATION",
    "MAX_DEPTH",
    "levels",
    "parent",
    "problems",
    "pulled",
    "signer",
]

CHAINED_MAX_DURATION: Final = CHAINED_MAX  # AWS caps a chained role session at one hour
MAX_DEPTH: Final = 5  # hub -> spoke chains deeper than this are a configuration mistake


def parent(role: Role, by_profile: Mapping[str, Role]) -> Role | None:
    """The configured role that signs for ``role``, if its source is one."""
    if role.source_profile is None:
        return None
    return by_profile.get(role.source_profile)


def depth(role: Role, by_profile: Mapping[str, Role]) -> int | None:
    """How many configured roles sign above ``role``; ``None`` on a cycle."""
    seen: set[str] = {role.profile}
    current: Role | None = role
    count = 0
    while current is not None:
        up = parent(current, by_profile)
        if up is None:
            return count
        if up.profile in seen:
            return None
        seen.add(up.profile)
        count += 1
        current = up
    return count


def problems(path: str, roles: Sequence[Role]) -> list[str]:
    """What is wrong with the chains, one message per role, naming file and key."""
    by_profile = {r.profile: r for r in roles}
    found: list[str] = []
    for index, role in enumerate(roles):
        key = f"{path}: roles[{index}].source_profile"
        if role.source_profile is None:
            continue
        if role.source_profile == role.profile:
            found.append(f"{key}: the role names itself as its source")
            continue
        if parent(role, by_profile) is None:
            continue  # a profile of the AWS config files: botocore resolves it
        levels_up = depth(role, by_profile)
        if levels_up is None:
            found.append(f"{key}: {role.source_profile!r} leads back to {role.profile!r} (a cycle)")
        elif levels_up > MAX_DEPTH:
            found.append(f"{key}: chain {levels_up} roles deep; at most {MAX_DEPTH} are allowed")
        if role.duration_seconds > CHAINED_MAX_DURATION:
            found.append(
                f"{path}: roles[{index}].duration_seconds: {role.duration_seconds} is above "
                f"{CHAINED_MAX_DURATION}, the most AWS allows for a role assumed with another "
                "role's session (role chaining)"
            )
    return found


def levels(roles: Sequence[Role]) -> list[list[Role]]:
    """Roles grouped so every role comes after the configured role that signs for it.

    Assumes ``problems`` found nothing (no cycles).
    """
    by_profile = {r.profile: r for r in roles}
    grouped: dict[int, list[Role]] = {}
    for role in roles:
        grouped.setdefault(depth(role, by_profile) or 0, []).append(role)
    return [grouped[d] for d in sorted(grouped)]


def signer(live: Issued | None, now: datetime, margin: timedelta) -> Credentials | None:
    """The parent session to sign a child's call with, if it outlives the call's ``margin``."""
    if live is None or live.credentials.expiration - now <= margin:
        return None
    return live.credentials


def pulled(parent: RoleState, now: datetime, *, in_flight: bool) -> RoleState:
    """The parent, due now when a child needs a session it does not have in memory.

    After a warm start a parent's session is only in the file; it is refreshed first. A parent
    that is failing keeps its backoff (its children wait for it), one in flight is left alone.
    """
    if in_flight or parent.last_error is not None or parent.due <= now:
        return parent
    return replace(parent, due=now)
