"""``credrefresh mfa``: the morning routine. One code, one GetSessionToken, one stored session.

The code comes from ``--code 123456``, from stdin with ``--code -`` (a password manager's OTP
command piped in), or from a prompt when stdin is a terminal. The session is stored 0600 in the
session file (``credrefresh.sessionfile``), where a running daemon picks it up within seconds
and ``once`` finds it; nothing secret is printed or logged.

Exit statuses: 0 stored; 1 STS refused the call (a wrong or reused code, say); 2 no code and no
terminal to ask on, or a code that is not six digits; 74 the session file cannot be written;
78 the configuration has no ``[source] mfa_serial`` (or is invalid).
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import UTC, datetime
from typing import Any, Final

from credrefresh.errors import CredentialsFileError, RefreshFailed
from credrefresh.settings import Config
from credrefresh.sourceconfig import MfaSource

__all__ = ["add_parser", "mfa"]

CODE_RE: Final = re.compile(r"[0-9]{6}", re.ASCII)
EXIT_REFUSED: Final = 1
EXIT_USAGE: Final = 2
EXIT_FILE: Final = 74
EXIT_CONFIG: Final = 78


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:  # noqa: ANN401
    """Add ``mfa`` to the subcommands."""
    command = commands.add_parser(
        "mfa",
        parents=[common],
        help="start an MFA session ([source] mfa_serial) for run and once to assume roles with",
    )
    command.add_argument(
        "--code",
        default=None,
        help="the six-digit code; '-' reads it from stdin; default: ask when stdin is a terminal",
    )


def read_code(given: str | None) -> str | None:
    """The code from ``--code``, stdin or a prompt; ``None`` when there is no way to get one."""
    if given == "-":
        return sys.stdin.readline(64).strip()
    if given is not None:
        return given.strip()
    if not sys.stdin.isatty():
        return None
    sys.stderr.write("MFA code: ")
    sys.stderr.flush()
    return read_quietly().strip()


def read_quietly() -> str:
    """One line from the terminal on stdin, not echoed (the code is secret for 30 s)."""
    import termios  # noqa: PLC0415 - POSIX only, and only for the prompt

    fd = sys.stdin.fileno()
    try:
        saved = termios.tcgetattr(fd)
    except termios.error:
        return sys.stdin.readline(64)
    quiet = list(saved)
    quiet[3] &= ~termios.ECHO  # lflags
    # TCSADRAIN, not TCSAFLUSH: a code typed (or pasted) before the prompt is kept.
    termios.tcsetattr(fd, termios.TCSADRAIN, quiet)
    try:
        return sys.stdin.readline(64)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        sys.stderr.write("\n")


def mfa(config: Config, code_option: str | None, log: Any) -> int:  # noqa: ANN401
    """Obtain and store an MFA session for ``config``; the exit status."""
    from credrefresh.events import emit, event  # noqa: PLC0415
    from credrefresh.logs import stderr  # noqa: PLC0415

    err = stderr()
    source = config.session
    if not isinstance(source, MfaSource):
        print(
            f"credrefresh: {config.path}: source.mfa_serial: not set; credrefresh mfa needs "
            "the MFA device whose session signs the roles",
            file=err,
        )
        return EXIT_CONFIG
    code = read_code(code_option)
    if code is None:
        print("credrefresh: mfa: stdin is not a terminal; give --code CODE or --code -", file=err)
        return EXIT_USAGE
    if not CODE_RE.fullmatch(code):
        print("credrefresh: mfa: the code must be six digits", file=err)
        return EXIT_USAGE
    try:
        issued = call(config, source, code)
    except RefreshFailed as exc:
        print(f"credrefresh: GetSessionToken for {source.serial} failed: {exc}", file=err)
        return EXIT_REFUSED
    from credrefresh.sessionfile import StoredSession, save_session  # noqa: PLC0415

    now = datetime.now(UTC)
    try:
        save_session(source.session_file, StoredSession(source.serial, issued.credentials, now))
    except CredentialsFileError as exc:
        print(f"credrefresh: {exc}", file=err)
        return EXIT_FILE
    from credrefresh.model import format_time  # noqa: PLC0415
    from credrefresh.schedule import human_duration  # noqa: PLC0415

    expiration = issued.credentials.expiration
    emit(
        log,
        event(
            "source.session_started",
            kind="mfa",
            mfa_serial=source.serial,
            access_key_id=issued.credentials.access_key_id,
            expiration=format_time(expiration),
            obtained_at=format_time(now),
        ),
    )
    left = human_duration((expiration - now).total_seconds())
    print(
        f"credrefresh: MFA session stored in {source.session_file}, valid until "
        f"{format_time(expiration)} ({left}); a running daemon uses it within seconds",
        file=err,
    )
    return 0


def call(config: Config, source: MfaSource, code: str) -> Any:  # noqa: ANN401 - Issued
    """GetSessionToken, in its own event loop."""
    import anyio  # noqa: PLC0415

    from credrefresh.stssession import get_session_token  # noqa: PLC0415 - the AWS SDK

    async def main() -> Any:  # noqa: ANN401
        return await get_session_token(config, source, code)

    return anyio.run(main, backend="asyncio")
