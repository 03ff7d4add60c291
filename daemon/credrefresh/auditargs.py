"""The arguments of ``credrefresh audit``, apart from the code that answers it.

The command line builds its parser for every command; keeping this module to argparse means
``check`` and ``status`` do not import the audit readers (:mod:`credrefresh.auditcli`).
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser"]


def add_parser(commands: Any) -> None:  # noqa: ANN401 - argparse's subparsers action is private
    """Add ``audit`` and its questions to the top-level subcommands."""
    audit = commands.add_parser(
        "audit",
        help="answer audit questions from the daemon's JSON log (and CloudTrail)",
        description=(
            "Read credrefresh's JSON log lines from FILEs (.gz too) or stdin, e.g. "
            "journalctl -o cat -u credrefresh | credrefresh audit sessions. Lines that are not "
            "credrefresh events are skipped and counted on stderr."
        ),
    )
    questions = audit.add_subparsers(dest="question", required=True, metavar="QUESTION")
    window = argparse.ArgumentParser(add_help=False)
    window.add_argument("--profile", action="append", help="only this profile (repeatable)")
    window.add_argument("--since", help="from this time: ISO 8601 (UTC if no offset) or 2h, 7d")
    window.add_argument("--until", help="before this time (same forms)")
    window.add_argument("--json", action="store_true", help="print a JSON array")
    _files(questions.add_parser("sessions", parents=[window], help="every issued session"))
    key = questions.add_parser("key", help="who got an access key id (exit 1 when nobody did)")
    key.add_argument("access_key_id", metavar="ACCESS_KEY_ID")
    key.add_argument("--json", action="store_true", help="print a JSON object")
    _files(key)
    _files(
        questions.add_parser(
            "gaps", parents=[window], help="when a profile had no valid credentials, and why"
        )
    )
    trail = questions.add_parser(
        "cloudtrail", help="join CloudTrail records to the sessions that made them"
    )
    trail.add_argument(
        "--log", action="append", metavar="LOG", help="credrefresh log (repeatable; default stdin)"
    )
    trail.add_argument("--profile", action="append", help="only records of this profile")
    trail.add_argument("--json", action="store_true", help="print a JSON array")
    trail.add_argument(
        "trails", nargs="+", metavar="TRAIL", help="CloudTrail JSON files (.json.gz too)"
    )


def _files(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files", nargs="*", metavar="FILE", help="log files, oldest first; stdin when none or '-'"
    )
