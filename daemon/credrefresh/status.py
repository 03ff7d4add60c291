"""``credrefresh status``: what is fresh, what is failing, what expires when.

The credentials file is the source of truth for what is in it (key id, expiry, role, when it
was written); the state file only adds the failure history and the next attempt, and is ignored
for a profile once the file shows a refresh newer than the recorded failure. The decision of each
profile's state is a pure function; rendering is separate from reading. Never prints a secret.

Exit statuses follow the monitoring-plugin convention: 0 when every profile holds valid
credentials that are not failing to refresh (fresh or expiring), 1 when some profile is failing
but its credentials are still valid, 2 when any profile is expired, missing, in conflict or holds
another role's credentials (mismatch). The command line exits 78 before any of this when the
configuration is invalid.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple, TextIO

from credrefresh.config import Config
from credrefresh.credfile import read_profiles
from credrefresh.credtext import ManagedProfile
from credrefresh.errors import CredentialsFileError
from credrefresh.logs import Output, scrub, stderr
from credrefresh.model import FormattedTimes, format_time, parse_time
from credrefresh.schedule import human_duration
from credrefresh.state import load_state
from credrefresh.text import printable

__all__ = ["ProfileStatus", "decide", "exit_code", "render_table", "status"]

OK: Final = 0
WARNING: Final = 1
CRITICAL: Final = 2
STATES: Final = ("fresh", "expiring", "failing", "expired", "missing", "conflict", "mismatch")


class ProfileStatus(NamedTuple):
    """One row of ``status``.

    A named tuple rather than a frozen dataclass (immutable all the same, like
    ``inifile.Span``): ``status`` builds one per profile, and a frozen dataclass takes some
    3 µs to build (each field goes through ``object.__setattr__``), 30 ms for 10,000 profiles.

    Attributes:
        profile: The profile name.
        state: One of ``fresh``, ``expiring``, ``failing``, ``expired``, ``missing``,
            ``conflict``, ``mismatch``.
        expiration: Expiry of the credentials in the file (ISO 8601 UTC), if any.
        seconds_left: Seconds until then (negative once expired).
        access_key_id: The access key id in the file (not secret).
        last_success: When credrefresh last wrote credentials for it (the file's record).
        next_attempt: When the daemon will next call STS for it.
        last_error_code: Code of the most recent failure, if the profile is failing.
        last_error: Message of that failure.
        role_arn: The configured role.
    """

    profile: str
    state: str
    expiration: str | None
    seconds_left: float | None
    access_key_id: str | None
    last_success: str | None
    next_attempt: str | None
    last_error_code: str | None
    last_error: str | None
    role_arn: str


def history(
    role_arn: str, found: ManagedProfile | None, saved: Mapping[str, Any]
) -> Mapping[str, Any]:
    """What the state file may still add for a profile: nothing once it is out of date.

    It is out of date when it was kept for another role, or when the file shows a refresh
    after the recorded failure (``once`` or another ``run`` succeeded since).
    """
    if saved.get("role_arn") not in {None, role_arn}:
        return {}
    error = saved.get("last_error") or None
    refreshed = None if found is None else found.refreshed_at
    if error is not None and refreshed is not None:
        failed = parse_time(str(error.get("at") or ""))
        if failed is not None and refreshed > failed:
            return {}
    return saved


def decide(
    config: Config,
    in_file: Mapping[str, ManagedProfile],
    state: Mapping[str, Any] | None,
    now: datetime,
) -> list[ProfileStatus]:
    """Each configured profile's state, from the file, the daemon's state file and ``now``.

    ``expiring`` means valid but past the latest point at which credrefresh refreshes (the
    daemon is stopped or behind); ``failing`` means valid but the last refresh failed;
    ``mismatch`` means the file holds credentials credrefresh wrote for another role.
    """
    recorded: Mapping[str, Any] = (state or {}).get("profiles", {})
    # Valid credentials with less than this fraction of their lifetime left are overdue.
    overdue_below = 1 - (config.refresh.refresh_at + config.refresh.jitter)
    rows: list[ProfileStatus] = []
    append = rows.append  # 10,000 rows: the loop is the command's cost, so it is kept tight
    # The file holds each time many times over (profiles written in one round share them).
    formatted = FormattedTimes()
    # Rows are built as _make builds them, without the Python-level __new__ of a named tuple
    # (a fifth of the loop); found is unpacked, not read attribute by attribute, likewise.
    new_row = tuple.__new__
    for role in config.roles:
        profile, role_arn = role.profile, role.role_arn
        found = in_file.get(profile)
        entry = recorded.get(profile) if recorded else None
        saved: Mapping[str, Any] = history(role_arn, found, entry) if entry else {}
        error = (saved.get("last_error") or None) if saved else None
        if found is None:
            managed, key_id = False, None
            expiration = found_arn = refreshed = left = None
        else:
            _, managed, key_id, expiration, found_arn, refreshed, _, _ = found
            left = None if expiration is None else (expiration - now).total_seconds()
        if refreshed is None and saved:
            refreshed = parse_time(str(saved.get("last_success") or ""))
        if found is not None and not managed:
            verdict = "conflict"
        elif found is None or expiration is None or left is None:
            verdict = "missing"
        elif found_arn is not None and found_arn != role_arn:
            verdict = "mismatch"
        elif left <= 0:
            verdict = "expired"
        elif error is not None:
            verdict = "failing"
        else:
            lifetime = None if refreshed is None else (expiration - refreshed).total_seconds()
            overdue = lifetime is not None and lifetime > 0 and left < lifetime * overdue_below
            verdict = "expiring" if overdue else "fresh"
        append(
            new_row(
                ProfileStatus,
                (
                    profile,
                    verdict,
                    None if expiration is None else formatted[expiration],
                    None if left is None else round(left, 1),
                    key_id if managed else None,
                    None if refreshed is None else formatted[refreshed],
                    saved.get("next_attempt") if saved else None,
                    None if error is None else error.get("code"),
                    None if error is None else error.get("message"),
                    role_arn,
                ),
            )
        )
    return rows


def session_status(
    config: Config, saved: Mapping[str, Any] | None, now: datetime
) -> dict[str, Any] | None:
    """The ``[source]`` session: an MFA session from its file, else what ``run`` recorded."""
    source = config.session
    if source is None:
        return None
    from credrefresh.sourceconfig import MfaSource  # noqa: PLC0415
    from credrefresh.sourcesession import action  # noqa: PLC0415

    row: dict[str, Any] = {"kind": source.kind, "state": "missing", "expiration": None}
    problem = None
    expiration = None
    if isinstance(source, MfaSource):
        from credrefresh.sessionfile import load_session  # noqa: PLC0415

        row["mfa_serial"] = source.serial
        row["session_file"] = source.session_file
        try:
            stored = load_session(source.session_file)
        except CredentialsFileError as exc:
            problem = scrub(str(exc))
        else:
            if stored is not None and stored.serial != source.serial:
                problem = "the session file holds a session for another MFA device"
            elif stored is not None:
                expiration = stored.credentials.expiration
    else:
        row["role_arn"] = source.role_arn
        expiration, problem = recorded_session(saved)
    if expiration is not None:
        row["expiration"] = format_time(expiration)
        left = (expiration - now).total_seconds()
        row["seconds_left"] = round(left, 1)
        row["state"] = "expired" if left <= 0 else "expiring" if left <= source.lead else "valid"
    if problem is not None:
        row["problem"] = problem
    if row["state"] in {"missing", "expired"}:
        row["action"] = action(source, config.path)
    return row


def recorded_session(saved: Mapping[str, Any] | None) -> tuple[datetime | None, str | None]:
    """The web identity session's expiry and problem as ``run`` recorded them."""
    recorded = (saved or {}).get("source_session")
    if not isinstance(recorded, Mapping):  # the state file is ours, but never trusted
        return None, None
    problem = recorded.get("problem")
    return (
        parse_time(str(recorded.get("expiration") or "")),
        None if problem is None else printable(str(problem), 300),
    )


def exit_code(rows: Sequence[ProfileStatus]) -> int:
    """0, 1 or 2 as documented in the module docstring."""
    states = {row.state for row in rows}
    if states & {"expired", "missing", "conflict", "mismatch"}:
        return CRITICAL
    if "failing" in states:
        return WARNING
    return OK


def render_table(rows: Sequence[ProfileStatus]) -> str:
    """A table for people."""
    header = ("PROFILE", "STATE", "EXPIRES", "LEFT", "LAST SUCCESS", "NEXT ATTEMPT", "LAST ERROR")
    lines = [header]
    append = lines.append
    durations: dict[int, str] = {}  # human_duration of whole seconds, each worded once
    for profile, state, expiration, seconds, _, success, attempt, code, message, _ in rows:
        if seconds is None:
            left = "-"
        elif seconds <= 0:
            left = "expired"
        else:
            whole = round(seconds)
            left = durations.get(whole) or durations.setdefault(whole, human_duration(whole))
        error = "-"
        if code:
            error = f"{code}: {message or ''}".strip()
            error = error if len(error) <= 60 else error[:57] + "..."  # noqa: PLR2004
        append((profile, state, expiration or "-", left, success or "-", attempt or "-", error))
    # Every column but the last is padded to its widest cell (what str.ljust does, in one
    # %-format per line).
    widths = [max(map(len, column)) for column in list(zip(*lines, strict=True))[:-1]]
    template = "".join(f"%-{width}s  " for width in widths) + "%s"
    return "\n".join([template % line for line in lines])


def status(
    config: Config,
    *,
    as_json: bool,
    out: TextIO | Output | None = None,
    now: datetime | None = None,
) -> int:
    """Print the status of every configured profile; return the exit status."""
    stream = out or sys.stdout
    moment = now or datetime.now(UTC)
    try:
        in_file = read_profiles(config.credentials_file)
    except CredentialsFileError as exc:
        print(f"credrefresh: {scrub(str(exc))}", file=stderr())
        in_file = {}
    state = load_state(config.state_file)
    if state is not None and state.get("credentials_file") != config.credentials_file:
        state = None  # another daemon's (for another file): its errors are not ours
    rows = decide(config, in_file, state, moment)
    code = exit_code(rows)
    session = session_status(config, state, moment)
    if session is not None and session["state"] in {"missing", "expired"}:
        code = max(code, WARNING)  # nothing can be refreshed until a session is there
    if as_json:
        document = {
            "credentials_file": config.credentials_file,
            "state_file": config.state_file,
            "state_updated_at": None if state is None else state.get("updated_at"),
            "generated_at": format_time(moment),
            "exit_code": code,
            "source_session": session,
            "profiles": [row._asdict() for row in rows],
        }
        print(json.dumps(document, indent=2), file=stream)
    else:
        tally = Counter(row.state for row in rows)
        counts = {name: tally[name] for name in STATES}
        summary = ", ".join(f"{n} {name}" for name, n in counts.items() if n)
        print(render_table(rows), file=stream)
        if session is not None:
            print(f"\n{session_line(session)}", file=stream)
        print(f"\n{summary}; exit {code}", file=stream)
    return code


def session_line(session: Mapping[str, Any]) -> str:
    """The ``[source]`` session, for people."""
    what = "MFA session" if session["kind"] == "mfa" else "web identity session"
    if session["state"] in {"missing", "expired"}:
        line = f"source: waiting for {'MFA' if session['kind'] == 'mfa' else what}: "
        reason = session.get("problem") or (
            "no session" if session["state"] == "missing" else "the session expired"
        )
        line += f"{reason}; {session['action']}"
        return line
    left = human_duration(max(float(session.get("seconds_left") or 0), 0))
    return f"source: {what} {session['state']} until {session['expiration']} ({left} left)"
