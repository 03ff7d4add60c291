"""Text that is safe to print: no control characters, bounded length.

A profile name, an STS error message or a value from a file can carry escape sequences (that
repaint a terminal), NUL, line separators or bidi overrides (that make text read differently
from what it is). Printed values go through ``printable``; names are refused when ``unsafe``.
"""

from __future__ import annotations

import unicodedata
from typing import Final

__all__ = ["printable", "shown", "type_name", "unsafe"]

# Categories Zl and Zp (U+2028, U+2029) break lines in some readers; every C* category
# (controls, format characters such as the bidi overrides U+202A-202E and U+2066-2069,
# surrogates, private use, unassigned) is either invisible or not text.
UNSAFE_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
SHOWN_MAX: Final = 80


def is_unsafe_char(char: str) -> bool:
    """Whether ``char`` must never be printed as it is."""
    return unicodedata.category(char) in UNSAFE_CATEGORIES


def unsafe(text: str) -> bool:
    """Whether ``text`` holds a character that must not be printed as it is."""
    return not text.isprintable() and any(is_unsafe_char(c) for c in text)


def escape_char(char: str) -> str:
    r"""``\n``, ``\x07``, ``\u202e``: the escape Python's ``repr`` writes for ``char``."""
    return repr(char)[1:-1]


def printable(text: str, limit: int) -> str:
    """``text`` with unsafe characters escaped and cut to about ``limit`` characters."""
    cut = text[:limit]
    if unsafe(cut):
        cut = "".join(escape_char(c) if is_unsafe_char(c) else c for c in cut)
    if len(text) > limit:
        cut += f"... ({len(text) - limit} more characters)"
    return cut


def shown(value: object, limit: int = SHOWN_MAX) -> str:
    """How a bad value is echoed in an error message: quoted, escaped and bounded."""
    if isinstance(value, str):
        return f"'{printable(value, limit)}'"
    return printable(repr(value), limit)


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
