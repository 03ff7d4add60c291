"""``credrefresh status``: every state, both renderings, exit codes, and never a secret."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import PurePosixPath
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from credrefresh.config import load_config
from credrefresh.credtext import ManagedProfile
from credrefresh.model import FormattedTimes, format_time, parse_time
from credrefresh.schedule import human_duration
from credrefresh.status import ProfileStatus, decide, exit_code, history, render_table, status
from engine_support import make_config
from process_support import clean_env, run_cli, write_config
from support.fakests import Faults

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def managed(name: str, left: float, lifetime: float = 3600) -> ManagedProfile:
    expiration = NOW + timedelta(seconds=left)
    return ManagedProfile(
        profile=name,
        managed=True,
        access_key_id=f"ASIA{name.upper():0>16}"[:20],
        expiration=expiration,
        role_arn=f"arn:aws:iam::123456789012:role/{name}",
        refreshed_at=expiration - timedelta(seconds=lifetime),
    )


def test_every_state_is_decided(tmp_path):
    """Each of the six states is reached from the file and state-file facts that define it."""
    config = make_config(
        tmp_path, ["fresh", "expiring", "failing", "expired", "missing", "conflict"]
    )
    in_file = {
        "fresh": managed("fresh", left=3000),
        "expiring": managed("expiring", left=600),  # past 60 % of its hour: overdue
        "failing": managed("failing", left=1800),
        "expired": managed("expired", left=-5),
        "conflict": managed("conflict", left=3000)._replace(managed=False),
    }
    state = {
        "profiles": {
            "failing": {
                "last_error": {"code": "Throttling", "message": "Rate exceeded"},
                "next_attempt": "2026-11-27T12:00:05Z",
                "last_success": "2026-11-27T11:30:00Z",
            }
        }
    }
    rows = decide(config, in_file, state, NOW)
    assert [(r.profile, r.state) for r in rows] == [
        ("fresh", "fresh"),
        ("expiring", "expiring"),
        ("failing", "failing"),
        ("expired", "expired"),
        ("missing", "missing"),
        ("conflict", "conflict"),
    ]
    failing = rows[2]
    assert (failing.last_error_code, failing.last_error) == ("Throttling", "Rate exceeded")
    assert failing.next_attempt == "2026-11-27T12:00:05Z"
    assert rows[5].access_key_id is None  # not ours: we print nothing from it


@pytest.mark.parametrize(
    ("states", "code"),
    [
        (["fresh"], 0),
        (["fresh", "expiring"], 0),
        (["fresh", "failing"], 1),
        (["failing", "expired"], 2),
        (["fresh", "missing"], 2),
        (["conflict"], 2),
    ],
)
def test_exit_codes_follow_the_monitoring_convention(tmp_path, states, code):
    """0 all valid and healthy, 1 some failing but valid, 2 anything expired/missing/conflict."""
    config = make_config(tmp_path, ["x"])
    row = decide(config, {"x": managed("x", 3000)}, None, NOW)[0]
    assert exit_code([row._replace(state=s) for s in states]) == code


def test_status_after_once_fresh_expiring_expired(tmp_path, fake_sts):
    """Real credentials written by once read back as fresh, then expiring, then expired."""
    fake_sts.set_faults(Faults(latency=0, lifetime=100))
    creds = tmp_path / "credentials"
    path = write_config(tmp_path / "c.toml", creds, fake_sts.url, ["a", "b"])
    result = run_cli(["once", "--config", str(path)], clean_env(tmp_path))
    assert result.returncode == 0, result.stderr
    config = load_config(path, environ={"HOME": str(tmp_path)})
    text = creds.read_text()
    secrets = [
        line.split(" = ", 1)[1]
        for line in text.splitlines()
        if line.startswith(("aws_secret_access_key", "aws_session_token"))
    ]
    assert len(secrets) == 4
    expiry = datetime.fromisoformat(text.split("x_security_token_expires = ")[1].split()[0])
    seen = []
    for offset, expected, code in [(-90, "fresh", 0), (-20, "expiring", 0), (1, "expired", 2)]:
        for as_json in (True, False):
            out = io.StringIO()
            now = expiry + timedelta(seconds=offset)
            assert status(config, as_json=as_json, out=out, now=now) == code
            seen.append(out.getvalue())
        document = json.loads(seen[-2])
        assert [p["state"] for p in document["profiles"]] == [expected, expected]
        assert document["profiles"][0]["expiration"].endswith("Z")
        assert f"\n2 {expected}; exit {code}" in seen[-1]
    for output in seen:
        for secret in secrets:
            assert secret not in output


def test_status_command_json_and_exit_code(tmp_path, fake_sts):
    """The status subcommand prints JSON with every profile and exits 2 when one is missing."""
    creds = tmp_path / "credentials"
    path = write_config(tmp_path / "c.toml", creds, fake_sts.url, ["a"])
    assert run_cli(["once", "--config", str(path)], clean_env(tmp_path)).returncode == 0
    write_config(tmp_path / "c.toml", creds, fake_sts.url, ["a", "new"])
    result = run_cli(["status", "--config", str(path), "--json"], clean_env(tmp_path))
    assert result.returncode == 2
    document = json.loads(result.stdout)
    assert [(p["profile"], p["state"]) for p in document["profiles"]] == [
        ("a", "fresh"),
        ("new", "missing"),
    ]
    table = run_cli(["status", "--config", str(path)], clean_env(tmp_path))
    assert table.returncode == 2
    assert table.stdout.splitlines()[0].split() == [
        "PROFILE",
        "STATE",
        "EXPIRES",
        "LEFT",
        "LAST",
        "SUCCESS",
        "NEXT",
        "ATTEMPT",
        "LAST",
        "ERROR",
    ]


def test_table_truncates_long_errors(tmp_path):
    """A long error message is cut so each row stays one line."""
    config = make_config(tmp_path, ["x"])
    state = {"profiles": {"x": {"last_error": {"code": "AccessDenied", "message": "m" * 500}}}}
    rows = decide(config, {"x": managed("x", 3000)}, state, NOW)
    table = render_table(rows)
    assert len(table.splitlines()) == 2
    assert table.splitlines()[1].endswith("...")


def test_state_of_another_credentials_file_is_ignored(tmp_path):
    """A state file written for another credentials file lends its errors to no profile."""
    import json as _json  # noqa: PLC0415

    config = make_config(tmp_path, ["x"])
    state_path = tmp_path / "state" / "state.json"
    state_path.parent.mkdir()
    state_path.write_text(
        _json.dumps(
            {
                "version": 1,
                "credentials_file": "/somewhere/else",
                "profiles": {"x": {"last_error": {"code": "AccessDenied", "message": "no"}}},
            }
        )
    )
    out = io.StringIO()
    code = status(config, as_json=True, out=out, now=NOW)
    row = json.loads(out.getvalue())["profiles"][0]
    assert (row["state"], row["last_error_code"], code) == ("missing", None, 2)


def failed_state(name: str, at: str | None, role: str | None = None) -> dict[str, object]:
    """A state document in which ``name`` last failed at ``at``."""
    saved: dict[str, object] = {
        "last_error": {"code": "AccessDenied", "message": "no", "at": at},
        "next_attempt": "2026-11-27T12:05:00Z",
        "last_success": "2026-11-27T10:00:00Z",
    }
    if role is not None:
        saved["role_arn"] = role
    return {"profiles": {name: saved}}


def test_a_newer_refresh_in_the_file_outranks_the_state_files_error(tmp_path):
    """A failure recorded before the file's last refresh is history, not a current failure."""
    config = make_config(tmp_path, ["x"])
    found = managed("x", left=3000)  # written 600 s ago, at 11:50
    before = decide(config, {"x": found}, failed_state("x", "2026-11-27T11:40:00Z"), NOW)[0]
    assert (before.state, before.last_error_code, before.next_attempt) == ("fresh", None, None)
    assert before.last_success == "2026-11-27T11:50:00Z"  # the file's record, not the state's
    after = decide(config, {"x": found}, failed_state("x", "2026-11-27T11:55:00Z"), NOW)[0]
    assert (after.state, after.last_error_code) == ("failing", "AccessDenied")
    assert exit_code([before]) == 0
    assert exit_code([after]) == 1


def test_state_kept_for_another_role_is_ignored(tmp_path):
    """A state entry recorded for a role the config no longer names lends it no error."""
    config = make_config(tmp_path, ["x"])
    state = failed_state("x", "2026-11-27T11:55:00Z", role="arn:aws:iam::123456789012:role/old")
    row = decide(config, {"x": managed("x", left=3000)}, state, NOW)[0]
    assert (row.state, row.last_error_code) == ("fresh", None)


def test_another_roles_credentials_are_a_mismatch(tmp_path):
    """A profile holding credentials credrefresh wrote for another role is critical, not fresh."""
    config = make_config(tmp_path, ["x"])
    other = managed("x", left=3000)._replace(role_arn="arn:aws:iam::123456789012:role/other")
    row = decide(config, {"x": other}, None, NOW)[0]
    assert row.state == "mismatch"
    assert row.role_arn == config.roles[0].role_arn
    assert exit_code([row]) == 2


def test_status_ignores_a_stale_failure_left_by_a_killed_daemon(tmp_path, fake_sts):
    """A failure recorded before the file's last refresh (a daemon killed since) is not shown."""
    creds = tmp_path / "credentials"
    path = write_config(tmp_path / "c.toml", creds, fake_sts.url, ["a"])
    assert run_cli(["once", "--config", str(path)], clean_env(tmp_path)).returncode == 0
    # What a `run` killed with -9 leaves: its last state, a failure from before that refresh.
    earlier = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    document = failed_state("a", earlier, role="arn:aws:iam::123456789012:role/a")
    document.update(version=1, credentials_file=str(creds), updated_at=earlier)
    (tmp_path / "state.json").write_text(json.dumps(document))
    result = run_cli(["status", "--config", str(path), "--json"], clean_env(tmp_path))
    row = json.loads(result.stdout)["profiles"][0]
    assert (row["state"], row["last_error_code"], result.returncode) == ("fresh", None, 0)


ZONES = (UTC, timezone(timedelta(hours=2)), ZoneInfo("Europe/Berlin"), None)


@given(
    st.lists(
        st.builds(
            lambda moment, zone, fold: moment.replace(tzinfo=zone, fold=fold),
            st.one_of(
                # Few moments, so that equal ones meet (02:30 on 2026-10-25 is ambiguous in
                # Berlin, microseconds are not formatted), and any other.
                st.sampled_from(
                    [
                        datetime(2026, 10, 25, 2, 30),  # noqa: DTZ001 - the zone comes next
                        datetime(2026, 10, 25, 2, 30, 0, 500),  # noqa: DTZ001
                        datetime(2026, 11, 27, 12, 0),  # noqa: DTZ001
                    ]
                ),
                st.datetimes(
                    min_value=datetime(2000, 1, 1),  # noqa: DTZ001 - hypothesis wants naive bounds
                    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
                ),
            ),
            st.sampled_from(ZONES),
            st.sampled_from([0, 1]),
        ),
        max_size=20,
    )
)
def test_formatted_times_are_format_time(moments: list[datetime]) -> None:
    """The memo decide formats with gives what format_time gives, whatever the zone (moments
    of one zone that compare equal but differ in fold included), in any order."""
    formatted = FormattedTimes()
    for moment in moments + moments[::-1]:
        assert formatted[moment] == format_time(moment)


def test_formatted_times_keep_an_ambiguous_local_time_apart() -> None:
    """02:30 on the night clocks go back in Berlin happens twice: equal as datetimes, an hour
    apart as instants."""
    first = datetime(2026, 10, 25, 2, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    second = first.replace(fold=1)
    assert first == second
    formatted = FormattedTimes()
    assert formatted[first] == "2026-10-25T00:30:00Z"
    assert formatted[second] == "2026-10-25T01:30:00Z"
    assert formatted[first.astimezone(UTC)] == "2026-10-25T00:30:00Z"


def reference_decide(config, in_file, state, now):
    """``decide`` as it was before its loop was tightened: the reference."""
    recorded = (state or {}).get("profiles", {})
    overdue_below = 1 - (config.refresh.refresh_at + config.refresh.jitter)
    rows = []
    for role in config.roles:
        profile, role_arn = role.profile, role.role_arn
        found = in_file.get(profile)
        entry = recorded.get(profile) if recorded else None
        saved = history(role_arn, found, entry) if entry else {}
        error = (saved.get("last_error") or None) if saved else None
        if found is None:
            expiration = refreshed = left = None
        else:
            expiration, refreshed = found.expiration, found.refreshed_at
            left = None if expiration is None else (expiration - now).total_seconds()
        if refreshed is None and saved:
            refreshed = parse_time(str(saved.get("last_success") or ""))
        if found is not None and not found.managed:
            verdict = "conflict"
        elif found is None or expiration is None or left is None:
            verdict = "missing"
        elif found.role_arn is not None and found.role_arn != role_arn:
            verdict = "mismatch"
        elif left <= 0:
            verdict = "expired"
        elif error is not None:
            verdict = "failing"
        else:
            lifetime = None if refreshed is None else (expiration - refreshed).total_seconds()
            overdue = lifetime is not None and lifetime > 0 and left < lifetime * overdue_below
            verdict = "expiring" if overdue else "fresh"
        rows.append(
            ProfileStatus(
                profile,
                verdict,
                None if expiration is None else format_time(expiration),
                None if left is None else round(left, 1),
                found.access_key_id if found is not None and found.managed else None,
                None if refreshed is None else format_time(refreshed),
                saved.get("next_attempt") if saved else None,
                None if error is None else error.get("code"),
                None if error is None else error.get("message"),
                role_arn,
            )
        )
    return rows


def reference_table(rows: list[ProfileStatus]) -> str:
    """``render_table`` as it was: the reference."""
    header = ("PROFILE", "STATE", "EXPIRES", "LEFT", "LAST SUCCESS", "NEXT ATTEMPT", "LAST ERROR")
    lines = [header]
    for row in rows:
        left = "-" if row.seconds_left is None else human_duration(max(row.seconds_left, 0))
        if row.seconds_left is not None and row.seconds_left <= 0:
            left = "expired"
        error = "-"
        if row.last_error_code:
            error = f"{row.last_error_code}: {row.last_error or ''}".strip()
            error = error if len(error) <= 60 else error[:57] + "..."
        lines.append(
            (
                row.profile,
                row.state,
                row.expiration or "-",
                left,
                row.last_success or "-",
                row.next_attempt or "-",
                error,
            )
        )
    widths = [max(len(line[column]) for line in lines) for column in range(6)]
    return "\n".join(
        "".join(cell.ljust(width) + "  " for cell, width in zip(line, widths, strict=False))
        + line[-1]
        for line in lines
    )


OFFSETS = st.one_of(
    st.sampled_from([-3600.0, -0.04, 0.0, 0.04, 0.05, 0.06, 29.5, 59.6, 3599.5, 3600.0]),
    st.floats(-7200, 50000, allow_nan=False),
)
TIMES = st.one_of(st.none(), OFFSETS.map(lambda s: NOW + timedelta(seconds=s)))
ERRORS = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {
            "code": st.sampled_from(["AccessDenied", "", "Throttling"]),
            "message": st.one_of(st.none(), st.text(max_size=80)),
            "at": st.sampled_from(["2026-11-27T11:00:00Z", "2026-11-27T12:30:00Z", "junk"]),
        }
    ),
)


@st.composite
def status_inputs(draw: st.DrawFn) -> tuple[dict[str, ManagedProfile], dict[str, object]]:
    """What the file and the state file may say of profiles r0..r5."""
    in_file = {}
    recorded: dict[str, object] = {}
    for name in ("r0", "r1", "r2", "r3", "r4", "r5"):
        if draw(st.booleans()):
            in_file[name] = ManagedProfile(
                profile=name,
                managed=draw(st.booleans()),
                access_key_id=draw(st.sampled_from([None, "ASIAEXAMPLE"])),
                expiration=draw(TIMES),
                role_arn=draw(
                    st.sampled_from([None, f"arn:aws:iam::123456789012:role/{name}", "other"])
                ),
                refreshed_at=draw(TIMES),
            )
        if draw(st.booleans()):
            recorded[name] = {
                "role_arn": draw(st.sampled_from([None, f"arn:aws:iam::123456789012:role/{name}"])),
                "last_error": draw(ERRORS),
                "last_success": draw(st.sampled_from([None, "2026-11-27T11:00:00Z", "bad"])),
                "next_attempt": draw(st.sampled_from([None, "2026-11-27T12:05:00Z"])),
            }
    return in_file, {"profiles": recorded}


@given(status_inputs())
def test_decide_and_the_table_are_what_they_were(inputs: tuple[dict, dict]) -> None:
    """The tightened loop (unpacked profiles, rows built without the named tuple's __new__,
    durations worded once) decides and renders what the plain one did."""
    config = make_config(PurePosixPath("never-written"), ["r0", "r1", "r2", "r3", "r4", "r5"])
    in_file, state = inputs
    rows = decide(config, in_file, state, NOW)
    expected = reference_decide(config, in_file, state, NOW)
    assert rows == expected
    assert all(type(row) is ProfileStatus for row in rows)
    assert render_table(rows) == reference_table(expected)
