"""The fast path of role validation: the usual ``[[roles]]`` table, checked in one step.

Nearly every role of a large configuration is ``profile`` plus ``role_arn`` with a plain profile
name. ``plain_role`` accepts exactly those tables that the full walk
(``credrefresh.validate``) accepts without a problem and builds the same ``Role``; anything else
it leaves to the walk, which words the problems. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from credrefresh.settings import PROFILE_MAX, Role
from credrefresh.sourceconfig import ROLE_ARN_RE

__all__ = ["plain_role"]

PLAIN_KEYS: Final = frozenset({"profile", "role_arn"})
# RoleSessionName's characters: none of them is one the profile-name check refuses (brackets,
# whitespace, control or format characters) or one default_session_name replaces.
PLAIN_PROFILE_RE: Final = re.compile(r"[\w+=,.@-]{1,%d}" % PROFILE_MAX, re.ASCII)  # noqa: UP031


def plain_role(table: Mapping[str, Any]) -> Role | None:
    """The ``Role`` of a table of the usual shape that passes every check, else ``None``.

    ``None`` sends the table through the full walk, which finds and words any problem; for a
    table this accepts, the result equals the walk's (``tests/test_config.py`` compares the two
    on generated tables).
    """
    if table.keys() != PLAIN_KEYS:
        return None
    profile, role_arn = table["profile"], table["role_arn"]
    if (
        type(profile) is not str
        or type(role_arn) is not str
        or profile == "DEFAULT"
        or not PLAIN_PROFILE_RE.fullmatch(profile)
        or not ROLE_ARN_RE.fullmatch(role_arn)
    ):
        return None
    # default_session_name, with nothing to replace.
    return Role(profile, role_arn, f"credrefresh-{profile}"[:64])
