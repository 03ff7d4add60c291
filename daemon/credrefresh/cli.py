"""Command-line parsing and dispatch, nothing else (like uvicorn's ``main.py``).

Exit statuses: 0 success; 1 some role failed or conflicted; 2 usage error; 74 the credentials
file could not be read, parsed or replaced; 75 another ``run`` already keeps the file fresh;
78 (EX_CONFIG) the configuration is invalid (for every command, ``status`` included); 143
``once`` stopped by SIGTERM. ``status`` otherwise exits 0, 1 or 2 as a monitoring check
(``credrefresh.status``).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Sequence
from typing import Final, Literal

from credrefresh import auditargs, mfacli
from credrefresh.config import Config, load_config
from credrefresh.errors import AlreadyRunning, ConfigError, CredentialsFileError
from credrefresh.logs import Output, scrub, stderr

__all__ = ["main"]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1  # some role failed or conflicted
EXIT_USAGE: Final = 2
EXIT_FILE: Final = 74  # EX_IOERR: the credentials file could not be read, parsed or replaced
EXIT_RUNNING: Final = 75
EXIT_CONFIG: Final = 78
DEMO_LIFETIME: Final = 10.0  # seconds: refreshes scroll by while the person watches
# The parsed-config cache (credrefresh.configcache): status only reads it, and check neither
# reads nor writes it, as both create nothing; once and run, which write in the state directory
# anyway, read it and keep it current.
CACHE_USE: Final[dict[str, Literal["read", "update"]]] = {
    "status": "read",
    "once": "update",
    "run": "update",
}


def default_config() -> str:
    """``$CREDREFRESH_CONFIG``, else ``~/.config/credrefresh/config.toml``."""
    return os.environ.get("CREDREFRESH_CONFIG") or os.path.expanduser(
        "~/.config/credrefresh/config.toml"
    )


def parser() -> argparse.ArgumentParser:
    """The argument parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", "-c", default=default_config(), help="TOML configuration file (%(default)s)"
    )
    common.add_argument(
        "--log-format",
        choices=("auto", "json", "console"),
        default="auto",
        help="JSON lines, or a console renderer; auto picks console on a terminal",
    )
    common.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), default="info"
    )
    top = argparse.ArgumentParser(
        prog="credrefresh",
        description="Keep AWS IAM role credentials fresh in the shared credentials file.",
    )
    top.add_argument("--version", action=Version, nargs=0, help="show the version and exit")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("check", parents=[common], help="validate the configuration and exit")
    once = commands.add_parser("once", parents=[common], help="refresh every role once and exit")
    once.add_argument(
        "--min-remaining",
        type=duration,
        default=None,
        metavar="DURATION",
        help="refresh only profiles with less than this left (e.g. 900, 15m, 1h); "
        "default: refresh every profile",
    )
    commands.add_parser("run", parents=[common], help="keep every profile fresh until stopped")
    status = commands.add_parser(
        "status", parents=[common], help="show each profile's state (exit 0/1/2 as a check)"
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    demo = commands.add_parser(
        "demo", parents=[common], help="run the daemon against an embedded STS on 127.0.0.1"
    )
    demo.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    demo.add_argument("--roles", type=int, default=3, help="how many demo roles (%(default)s)")
    demo.add_argument(
        "--lifetime",
        type=float,
        default=DEMO_LIFETIME,
        help="credential lifetime, seconds (%(default)s)",
    )
    auditargs.add_parser(commands)
    mfacli.add_parser(commands, common)
    for name, text in CONSUMERS.items():
        consumer = commands.add_parser(name, parents=[common], help=text)
        consumer.add_argument("--profile", "-p", required=True, help="a managed profile")
        if name == "exec":
            consumer.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND ...")
    return top


CONSUMERS: Final = {
    "env": "print the variables that point an SDK at a profile's endpoint URL",
    "exec": "run a command with those variables (exit status passed through)",
    "credential-process": "print a profile's credentials for credential_process",
}


class Version(argparse.Action):
    """``--version``, reading the installed metadata only when asked (it costs a start-up)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,  # noqa: ARG002 - argparse's signature
        values: object,  # noqa: ARG002
        option_string: str | None = None,  # noqa: ARG002
    ) -> None:
        from credrefresh import __version__  # noqa: PLC0415

        parser.exit(message=f"credrefresh {__version__}\n")


def duration(text: str) -> float:
    """``900``, ``90s``, ``15m``, ``1h``: seconds (argparse type)."""
    units = {"s": 1, "m": 60, "h": 3600}
    value = text.strip().lower()
    scale = units.get(value[-1:], 0)
    number = value[:-1] if scale else value
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        message = f"expected a duration like 900, 15m or 1h, got {text[:32]!r}"
        raise argparse.ArgumentTypeError(message) from None
    if not 0 <= seconds <= 366 * 86400:
        raise argparse.ArgumentTypeError("expected a duration from 0 to 366 days")
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``credrefresh`` console script."""
    args = parser().parse_args(argv)
    if args.command == "audit":
        from credrefresh import auditcli  # noqa: PLC0415 - imported per command: faster starts

        return auditcli.run(args)
    if args.command not in {"status", "check"} or not gc.isenabled():
        return command(args)
    # status and check build tens of thousands of objects (10,000 roles and profiles) and
    # exit: hardly any is in a reference cycle, so the cyclic collector's passes over the
    # growing heap (a fifth of status's time) would free nothing; reference counting frees the
    # rest. Enabled again after, for callers in the same process (the tests).
    gc.disable()
    try:
        return command(args)
    finally:
        gc.enable()


def command(args: argparse.Namespace) -> int:
    """Run the parsed command line; the exit status."""
    err = stderr()  # a closed stderr drops the message, it never raises
    try:
        if args.command == "demo":
            from credrefresh.demo import demo  # noqa: PLC0415 - only the demo needs the fake STS

            return demo(
                duration=args.duration,
                roles=args.roles,
                lifetime=args.lifetime,
                log_format=args.log_format,
                log_level=args.log_level,
            )
        return dispatch(args, load_config(args.config, cache=CACHE_USE.get(args.command, "none")))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"credrefresh: {problem}", file=err)
        print(
            f"credrefresh: {len(exc.problems)} problem(s) in {exc.path}; nothing was changed",
            file=err,
        )
        return EXIT_CONFIG
    except AlreadyRunning as exc:
        print(f"credrefresh: {scrub(str(exc))}", file=err)
        return EXIT_RUNNING
    except CredentialsFileError as exc:
        print(f"credrefresh: {scrub(str(exc))}", file=err)
        return EXIT_FILE
    except KeyboardInterrupt:
        return 130


def dispatch(args: argparse.Namespace, config: Config) -> int:
    """Run the command for a valid ``config``."""
    if args.command in CONSUMERS:
        return local(args.command, config, args)
    # check and status print for a person or a pipe; a reader gone early (| head) is fine.
    out = Output(sys.stdout, "stdout")
    if args.command == "status":
        from credrefresh.status import status  # noqa: PLC0415

        return status(config, as_json=args.json, out=out)
    warnings = source_warnings(config)
    if args.command == "check":
        print(summary(config), file=out)
        for warning in warnings:
            print(f"credrefresh: warning: {warning}", file=stderr())
        return EXIT_OK
    from credrefresh.events import emit, event  # noqa: PLC0415
    from credrefresh.logs import configure, get_logger  # noqa: PLC0415

    configure(args.log_format, args.log_level)
    emit(get_logger(), *(event("config.warning", warning=w) for w in warnings))
    if args.command == "mfa":
        return mfacli.mfa(config, args.code, get_logger())
    return refresh(args.command, config, args)


def source_warnings(config: Config) -> tuple[str, ...]:
    """The warnings about where the source credentials come from.

    Raises:
        ConfigError: the source cannot work (missing profile, or one credrefresh writes).
    """
    from credrefresh.sources import inspect  # noqa: PLC0415 - status does not need it

    findings = inspect(config)
    if findings.problems:
        raise ConfigError(config.path, findings.problems)
    return findings.warnings


def local(command: str, config: Config, args: argparse.Namespace) -> int:
    """``env``, ``exec`` or ``credential-process`` (no logging, no STS)."""
    from credrefresh.consumers import consume  # noqa: PLC0415 - keeps check and run lean

    argv = list(getattr(args, "argv", []))
    argv = argv[1:] if argv[:1] == ["--"] else argv
    if command == "exec" and not argv:
        parser().error("exec: give the command after --")
    return consume(command, config, args.profile, argv)


def refresh(command: str, config: Config, args: argparse.Namespace) -> int:
    """``once`` or ``run``, with the exit status each outcome maps to."""
    if command == "once":
        from credrefresh.children import stop_on_sigterm  # noqa: PLC0415
        from credrefresh.wiring import run_once  # noqa: PLC0415 - imports the AWS SDK

        stop_on_sigterm()  # no credential_process helper outlives a stopped once
        outcome = run_once(config, min_remaining=args.min_remaining)
        if outcome.file_error is not None:
            return EXIT_FILE
        return EXIT_FAILED if outcome.failed or outcome.conflicts else EXIT_OK
    from credrefresh.wiring import run_daemon  # noqa: PLC0415 - imports the AWS SDK

    run_daemon(config)
    return EXIT_OK


def summary(config: Config) -> str:
    """The few lines ``check`` prints for a valid configuration."""
    source = config.source_profile or "botocore default chain"
    endpoint = config.sts_endpoint_url or "regional default (or AWS_ENDPOINT_URL_STS)"
    lines = [
        f"{config.path}: OK",
        f"  roles:            {len(config.roles)}",
        f"  credentials file: {config.credentials_file}",
        f"  state file:       {config.state_file}",
        f"  region:           {config.region}",
        f"  sts endpoint:     {endpoint}",
        f"  source:           {source}",
        f"  max concurrency:  {config.max_concurrency}",
    ]
    if config.session is not None:
        lines.append(f"  source session:   {session_summary(config)}")
    lines += [f"  - {role.profile}: {role.role_arn}" for role in config.roles[:20]]
    if len(config.roles) > 20:  # noqa: PLR2004
        lines.append(f"  ... and {len(config.roles) - 20} more")
    if config.serve is not None:
        from credrefresh.consumers import serve_summary  # noqa: PLC0415

        lines += serve_summary(config)
    return "\n".join(lines)


def session_summary(config: Config) -> str:
    """One line about the ``[source]`` session, for ``check``."""
    from credrefresh.sourceconfig import MfaSource  # noqa: PLC0415

    session = config.session
    if isinstance(session, MfaSource):
        return (
            f"MFA {session.serial}, {session.duration} s sessions stored in "
            f"{session.session_file} (start one with: credrefresh mfa)"
        )
    if session is None:
        return "none"
    return f"web identity {session.role_arn}, token {session.token_file}"
