"""The documentation lists what the code does: every config key and every log event."""

from __future__ import annotations

import re
from pathlib import Path

from credrefresh.config import REFRESH_KEYS, ROLE_KEYS, SOURCE_KEYS, TOP_KEYS, load_config
from credrefresh.events import CATALOGUE
from credrefresh.serveconfig import SERVE_KEYS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
EXAMPLE = (ROOT / "config.example.toml").read_text()


def documented_keys() -> set[str]:
    keys = {k for k in TOP_KEYS if k not in {"source", "refresh", "roles", "serve"}}
    keys |= {f"serve.{k}" for k in SERVE_KEYS}
    keys |= {f"source.{k}" for k in SOURCE_KEYS}
    keys |= {f"refresh.{k}" for k in REFRESH_KEYS}
    keys |= {f"roles[].{k}" for k in ROLE_KEYS}
    return keys


def section(title: str) -> str:
    """The README text under a ``## title`` heading, up to the next one."""
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_readme_reference_lists_every_config_key():
    """The README's configuration table has one row per key the validator accepts, no more."""
    rows = set(
        re.findall(r"^\| `([a-z_.\[\]]+)` \|", section("Configuration reference"), re.MULTILINE)
    )
    assert rows == documented_keys()


def test_example_config_shows_every_key_and_is_valid(tmp_path):
    """config.example.toml mentions every key (most as commented defaults) and passes check."""
    for key in documented_keys():
        name = key.rsplit(".", 1)[-1]
        assert re.search(rf"^#? ?{re.escape(name)} = ", EXAMPLE, flags=re.MULTILINE), key
    config = load_config(ROOT / "config.example.toml", environ={"HOME": str(tmp_path)})
    assert [r.profile for r in config.roles] == ["prod-readonly", "staging-admin"]


def test_event_catalogue_lists_every_event_the_code_logs():
    """The README's catalogue is the code's: every event in events.CATALOGUE, and nothing else."""
    readme = set(re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|", section("Auditing"), re.MULTILINE))
    assert set(CATALOGUE) == readme, set(CATALOGUE) ^ readme


def test_every_event_name_in_the_code_is_in_the_catalogue():
    """No module logs an event name by hand that the catalogue does not know."""
    named: set[str] = set()
    for path in (ROOT / "daemon" / "credrefresh").glob("*.py"):
        text = path.read_text()
        named |= set(re.findall(r"\.(?:info|warning|error|debug)\(\s*\"([a-z_]+\.[a-z_]+)\"", text))
        named |= set(re.findall(r"\bevent\(\s*\"([a-z_]+\.[a-z_]+)\"", text))
    assert named
    assert named <= set(CATALOGUE), named - set(CATALOGUE)
