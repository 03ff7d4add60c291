"""``credrefresh audit`` on real logs of ``once`` and ``run`` against the fake STS, and CloudTrail
records made from the keys in them."""

from __future__ import annotations

import gzip
import io
import json
import signal
import subprocess
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from botocore.configloader import raw_config_parse

from credrefresh.audit import parse_bound
from credrefresh.auditcli import write_table
from credrefresh.cli import main
from process_support import Proc, clean_env, run_cli, write_config
from support.fakests import Faults, ThreadedFakeSTS

pytestmark = pytest.mark.slow

FAST = {
    "backoff_initial": 0.2,
    "backoff_max": 1.0,
    "permanent_backoff_initial": 0.5,
    "permanent_backoff_max": 1.0,
    "write_delay": 0.1,
}
PROFILES = ("alpha", "beta", "gamma")
LIFETIME = 4  # seconds: short enough to see expiries, long enough for a loaded machine
ARN = "arn:aws:iam::123456789012:role/{}"
NOISE = [
    "-- Boot 0f3c2a9e1b7d4c55a1e2b3c4d5e6f708 --\n",
    "Started credrefresh.service - Keep AWS role credentials fresh.\n",
    "\n",
    "Traceback (most recent call last): not ours\n",
    "\udcff\udcfe not UTF-8\n",
]
FOREIGN = [
    '{"msg": "another program", "level": "info"}\n',
    '{"event": "x", "level": "info", "timestamp": "yesterday"}\n',
    '{"event": "role.refreshed", "profile": "alpha"}\n',  # no level or timestamp: not ours
]


class RealLog:
    """What one real daemon session left behind: its log, the STS calls, the file's secrets."""

    def __init__(self, lines, calls, secrets, path, noisy):
        self.lines = lines
        self.events = [json.loads(line) for line in lines]
        self.calls = calls
        self.secrets = secrets
        self.path = path
        self.noisy = noisy

    def named(self, name, profile=None):
        return [
            e for e in self.events if e["event"] == name and profile in {None, e.get("profile")}
        ]


@pytest.fixture(scope="module")
def real_log(tmp_path_factory):
    """``once``, then ``run`` through an AccessDenied outage of gamma until its credentials
    expire and a recovery, against the fake STS with short-lived credentials."""
    tmp = tmp_path_factory.mktemp("audit")
    creds = tmp / "aws" / "credentials"
    env = clean_env(tmp)
    with ThreadedFakeSTS(Faults(latency=0, lifetime=LIFETIME)) as sts:
        config = write_config(tmp / "c.toml", creds, sts.url, PROFILES, refresh=FAST)
        with config.open("a") as toml:  # a spoke signed with alpha's session: a role chain
            toml.write(f'[[roles]]\nprofile = "delta"\nrole_arn = "{ARN.format("delta")}"\n')
            toml.write('source_profile = "alpha"\n')
        once = run_cli(["once", "--config", str(config)], env)
        assert once.returncode == 0, once.stderr
        proc = Proc(["run", "--config", str(config)], env)
        try:
            proc.wait_count("role.refreshed", 6)
            sts.set_faults(Faults(latency=0, lifetime=LIFETIME, deny_roles={ARN.format("gamma")}))
            proc.wait_for(
                lambda ev: any(
                    e["event"] == "role.expired" and e["last_error_code"] == "AccessDenied"
                    for e in ev
                )
            )
            mark = len(proc.events)
            sts.set_faults(Faults(latency=0, lifetime=LIFETIME))
            proc.wait_for(
                lambda ev: any(
                    e["event"] == "role.refreshed" and e["profile"] == "gamma" for e in ev[mark:]
                )
            )
            proc.signal(signal.SIGTERM)
            assert proc.wait_exit(timeout=15) == 0
        finally:
            proc.kill()
        calls = sts.calls
    secrets = [
        v
        for section in raw_config_parse(str(creds)).values()
        for k, v in section.items()
        if k in {"aws_secret_access_key", "aws_session_token"}
    ]
    lines = once.stdout.splitlines(keepends=True) + proc.raw
    path = tmp / "credrefresh.log"
    path.write_text("".join(lines))
    # The same log as a journal shows it: noise between the lines.
    noisy_lines = list(lines)
    for i, extra in enumerate(NOISE + FOREIGN):
        noisy_lines.insert(1 + i * 3, extra)
    noisy = tmp / "journal.log"
    noisy.write_bytes("".join(noisy_lines).encode("utf-8", "surrogateescape"))
    return RealLog(lines, calls, secrets, path, noisy)


def audit(capsys, *argv):
    """Run ``credrefresh audit`` in this process; return (exit status, stdout, stderr)."""
    code = main(["audit", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def audit_process(*argv, stdin=None):
    """Run ``credrefresh audit`` as a real process, bytes on its stdin."""
    return subprocess.run(
        [sys.executable, "-m", "credrefresh", "audit", *map(str, argv)],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )


def expected_sessions(real_log, events=None):
    return [
        {
            "profile": e["profile"],
            "role_arn": e["role_arn"],
            "session_name": e["session_name"],
            "source": e.get("source"),
            "access_key_id": e["access_key_id"],
            "assumed_role_arn": e["assumed_role_arn"],
            "issued": e["timestamp"],
            "expiration": e["expiration"],
        }
        for e in (events if events is not None else real_log.named("role.refreshed"))
    ]


def stamp(text):
    return datetime.fromisoformat(text).astimezone(UTC)


# -- sessions ----------------------------------------------------------------------------------


def test_sessions_json_lists_every_issued_session_in_order(real_log, capsys):
    """One element per role.refreshed of once and run, with every field, in log order."""
    code, out, err = audit(capsys, "sessions", "--json", real_log.path)
    assert code == 0
    sessions = json.loads(out)
    assert sessions == expected_sessions(real_log)
    refreshed = real_log.named("role.refreshed")
    assert len(sessions) == len(refreshed) >= 3 + 6 + 1
    assert {s["profile"] for s in sessions} == {*PROFILES, "delta"}
    assert len({s["access_key_id"] for s in sessions}) == len(sessions)
    assert f"{len(real_log.lines)} lines: {len(real_log.lines)} credrefresh events" in err


def test_sessions_table_shows_each_session(real_log, capsys):
    """The table has a header and one row per session with its key, role and expiry."""
    code, out, _ = audit(capsys, "sessions", real_log.path)
    assert code == 0
    rows = out.splitlines()
    assert rows[0].split() == [
        "ISSUED",
        "PROFILE",
        "ROLE",
        "SESSION",
        "SOURCE",
        "ACCESS",
        "KEY",
        "ID",
        "EXPIRES",
    ]
    assert len(rows) == 1 + len(real_log.named("role.refreshed"))
    for row, event in zip(rows[1:], real_log.named("role.refreshed"), strict=True):
        assert row.split() == [
            event["timestamp"],
            event["profile"],
            event["role_arn"],
            event["session_name"],
            event.get("source", "-"),
            event["access_key_id"],
            event["expiration"],
        ]


def test_chained_sessions_name_their_source(real_log, capsys):
    """The spoke's sessions, signed with alpha's session, show alpha as their source."""
    delta = real_log.named("role.refreshed", "delta")
    assert delta
    assert {e["source"] for e in delta} == {"alpha"}
    _, out, _ = audit(capsys, "sessions", "--json", "--profile", "delta", real_log.path)
    assert [s["source"] for s in json.loads(out)] == ["alpha"] * len(delta)
    _, out, _ = audit(capsys, "sessions", "--profile", "delta", real_log.path)
    assert [row.split()[4] for row in out.splitlines()[1:]] == ["alpha"] * len(delta)


def test_sessions_profile_filter(real_log, capsys):
    """--profile keeps only that profile's sessions (and is repeatable)."""
    _, out, _ = audit(capsys, "sessions", "--json", "--profile", "beta", real_log.path)
    assert json.loads(out) == expected_sessions(real_log, real_log.named("role.refreshed", "beta"))
    _, out, _ = audit(
        capsys, "sessions", "--json", "--profile", "beta", "--profile", "gamma", real_log.path
    )
    assert {s["profile"] for s in json.loads(out)} == {"beta", "gamma"}


def test_sessions_since_until_window(real_log, capsys):
    """--since keeps sessions issued at or after it, --until those issued before it."""
    refreshed = real_log.named("role.refreshed")
    middle = refreshed[len(refreshed) // 2]["timestamp"]
    cut = stamp(middle)
    _, out, _ = audit(capsys, "sessions", "--json", "--since", middle, real_log.path)
    after = [e for e in refreshed if stamp(e["timestamp"]) >= cut]
    assert json.loads(out) == expected_sessions(real_log, after)
    _, out, _ = audit(capsys, "sessions", "--json", "--until", middle, real_log.path)
    before = [e for e in refreshed if stamp(e["timestamp"]) < cut]
    assert json.loads(out) == expected_sessions(real_log, before)
    assert before
    assert after
    _, out, _ = audit(capsys, "sessions", "--json", "--since", "1h", real_log.path)
    assert len(json.loads(out)) == len(refreshed)
    _, out, _ = audit(capsys, "sessions", "--json", "--until", "1h", real_log.path)
    assert json.loads(out) == []


def test_bad_time_is_a_usage_error(real_log, capsys):
    """A --since that is no time exits 2 with the forms it accepts."""
    code, out, err = audit(capsys, "sessions", "--since", "yesterday-ish", real_log.path)
    assert (code, out) == (2, "")
    assert "not a time: give ISO 8601" in err


# -- input: noise, gzip, stdin, journal formats ------------------------------------------------


def test_journal_noise_is_skipped_and_counted(real_log, capsys):
    """Non-JSON and foreign JSON lines change nothing but the counts on stderr."""
    _, clean_out, _ = audit(capsys, "sessions", "--json", real_log.path)
    code, out, err = audit(capsys, "sessions", "--json", real_log.noisy)
    assert code == 0
    assert out == clean_out
    total = len(real_log.lines) + len(NOISE) + len(FOREIGN)
    assert (
        f"{total} lines: {len(real_log.lines)} credrefresh events, "
        f"{len(NOISE)} not JSON, {len(FOREIGN)} other JSON skipped"
    ) in err


def test_gzip_and_stdin_read_the_same_log(real_log, tmp_path, capsys):
    """A .gz file, gzip on stdin and plain stdin give what the plain file gives."""
    _, expected, _ = audit(capsys, "sessions", "--json", real_log.noisy)
    packed = tmp_path / "journal.log.gz"
    packed.write_bytes(gzip.compress(real_log.noisy.read_bytes()))
    _, out, _ = audit(capsys, "sessions", "--json", packed)
    assert out == expected
    for data in (real_log.noisy.read_bytes(), packed.read_bytes()):
        result = audit_process("sessions", "--json", stdin=data)
        assert result.returncode == 0, result.stderr
        assert result.stdout.decode() == expected
    # Several files in turn, "-" among them.
    result = audit_process("sessions", "--json", packed, "-", stdin=real_log.path.read_bytes())
    assert len(json.loads(result.stdout)) == 2 * len(real_log.named("role.refreshed"))


def test_syslog_prefixes_and_journal_json_export(real_log, tmp_path, capsys):
    """Lines as ``journalctl -o short`` and ``-o json`` print them are read too."""
    _, expected, _ = audit(capsys, "sessions", "--json", real_log.path)
    short = tmp_path / "short.log"
    short.write_text(
        "".join(f"Nov 27 10:00:00 host credrefresh[42]: {line}" for line in real_log.lines)
    )
    export = tmp_path / "export.json"
    export.write_text(
        "".join(
            json.dumps({"__CURSOR": "s=1", "_PID": "42", "MESSAGE": line.rstrip("\n")}) + "\n"
            for line in real_log.lines
        )
    )
    for path in (short, export):
        code, out, _ = audit(capsys, "sessions", "--json", path)
        assert (code, out) == (0, expected)


def test_files_out_of_order_are_flagged(real_log, tmp_path, capsys):
    """Giving the newer file first is reported on stderr (gaps need time order)."""
    first, second = tmp_path / "1.log", tmp_path / "2.log"
    half = len(real_log.lines) // 2
    first.write_text("".join(real_log.lines[:half]))
    second.write_text("".join(real_log.lines[half:]))
    _, _, err = audit(capsys, "gaps", first, second)
    assert "out of time order" not in err
    _, _, err = audit(capsys, "gaps", second, first)
    assert "events out of time order (give files oldest first" in err


def test_unreadable_inputs_exit_66(real_log, tmp_path, capsys):
    """A missing file or a truncated .gz exits 66 naming it, without a traceback."""
    code, _, err = audit(capsys, "sessions", tmp_path / "missing.log")
    assert code == 66
    assert "cannot open" in err
    assert "missing.log" in err
    truncated = tmp_path / "cut.log.gz"
    truncated.write_bytes(gzip.compress(real_log.path.read_bytes())[:-20])
    code, _, err = audit(capsys, "gaps", truncated)
    assert code == 66
    assert "cannot read" in err
    assert "cut.log.gz" in err


# -- key ---------------------------------------------------------------------------------------


def test_key_names_profile_role_session_and_expiry(real_log, capsys):
    """A key from the log is found: its profile, role, session name, issue time and expiry."""
    event = real_log.named("role.refreshed", "beta")[-1]
    code, out, _ = audit(capsys, "key", event["access_key_id"], real_log.noisy)
    assert code == 0
    for field in ("profile", "role_arn", "session_name", "access_key_id", "expiration"):
        assert f"{field + ':':18}{event[field]}" in out.splitlines()
    assert f"{'issued:':18}{event['timestamp']}" in out.splitlines()
    assert "served: no credentials.served events for this key" in out
    code, out, _ = audit(capsys, "key", "--json", event["access_key_id"], real_log.path)
    assert json.loads(out) == {
        "access_key_id": event["access_key_id"],
        "found": True,
        "sessions": expected_sessions(real_log, [event]),
        "served": [],
    }


def test_unknown_key_exits_1(real_log):
    """A key credrefresh never issued exits 1, as a real process, reading stdin."""
    result = audit_process("key", "ASIANEVERISSUED00000", stdin=real_log.noisy.read_bytes())
    assert result.returncode == 1
    assert result.stdout.decode() == "ASIANEVERISSUED00000: not in the log\n"
    assert b"Traceback" not in result.stderr
    result = audit_process("key", "not-a-key", real_log.path)
    assert result.returncode == 2


def test_key_lists_served_events(real_log, tmp_path, capsys):
    """credentials.served events for the key are listed with their client."""
    event = real_log.named("role.refreshed", "alpha")[-1]
    key = event["access_key_id"]
    served = [
        {
            "profile": "alpha",
            "access_key_id": key,
            "expiration": event["expiration"],
            "client_address": "127.0.0.1",
            "client_port": 40000 + i,
            "event": "credentials.served",
            "level": "info",
            "timestamp": f"{stamp(event['timestamp']) + timedelta(seconds=i):%Y-%m-%dT%H:%M:%SZ}",
        }
        for i in range(3)
    ]
    served.append({**served[0], "access_key_id": "ASIAOTHERKEY00000000", "client_port": 1})
    log = tmp_path / "served.log"
    log.write_text("".join(real_log.lines) + "".join(json.dumps(s) + "\n" for s in served))
    code, out, _ = audit(capsys, "key", "--json", key, log)
    assert code == 0
    document = json.loads(out)
    assert [s["client"] for s in document["served"]] == [
        "127.0.0.1:40000",
        "127.0.0.1:40001",
        "127.0.0.1:40002",
    ]
    assert all(s["profile"] == "alpha" for s in document["served"])
    code, out, _ = audit(capsys, "key", key, log)
    assert "127.0.0.1:40002" in out
    assert "127.0.0.1:1" not in out
    # A key only ever served (its refresh rotated out of the log) is still found.
    code, out, _ = audit(capsys, "key", "ASIAOTHERKEY00000000", log)
    assert code == 0


# -- gaps --------------------------------------------------------------------------------------


def test_gaps_from_the_real_expiry(real_log, capsys):
    """Each role.expired opens a gap that its profile's next refresh closes, with the failures
    since the last good refresh; gamma's outage is one, with its AccessDenied count."""
    code, out, _ = audit(capsys, "gaps", "--json", real_log.noisy)
    assert code == 0
    found = json.loads(out)
    by_start = sorted(found, key=lambda g: (g["start"], g["profile"]))
    assert [g for g in by_start if g["reported"]] == reported_gaps(real_log)
    # On a loaded machine a refresh may also come after the previous expiry: an inferred gap.
    inferred = [(g["profile"], g["start"]) for g in found if not g["reported"]]
    assert inferred == late_refreshes(real_log)
    outage = [g for g in found if {"error_code": "AccessDenied"}.items() <= first(g).items()]
    assert [(g["profile"], g["reported"], g["ended_by"]) for g in outage] == [
        ("gamma", True, "role.refreshed")
    ]
    denied = outage[0]["failures"][0]["count"]
    assert denied >= 1
    _, out, _ = audit(capsys, "gaps", real_log.path)
    assert out.splitlines()[0].split() == ["PROFILE", "FROM", "TO", "LASTED", "HOW", "FAILURES"]
    assert f"role.expired  AccessDenied x{denied}" in out
    if found == outage:  # the usual case: nothing else was late
        _, out, _ = audit(capsys, "gaps", "--profile", "alpha", real_log.path)
        assert out == "no gaps: every profile had valid credentials\n"
        after = f"{stamp(outage[0]['end']) + timedelta(seconds=1):%Y-%m-%dT%H:%M:%SZ}"
        _, out, _ = audit(capsys, "gaps", "--json", "--since", after, real_log.path)
        assert json.loads(out) == []


def first(gap):
    return gap["failures"][0] if gap["failures"] else {}


def reported_gaps(real_log):
    """Worked out here, independently of the tracker: for every role.expired, the gap to the
    profile's next refresh, with the failures since its previous refresh; by start."""
    events = real_log.events
    log_end = stamp(events[-1]["timestamp"])
    gaps = []
    for i, expired in enumerate(events):
        if expired["event"] != "role.expired":
            continue
        profile = expired["profile"]
        mine = [j for j, e in enumerate(events) if e.get("profile") == profile]
        refreshes = [j for j in mine if events[j]["event"] == "role.refreshed"]
        last_ok = max((j for j in refreshes if j < i), default=-1)
        end = next((j for j in refreshes if j > i), None)
        codes = Counter(
            events[j]["error_code"]
            for j in mine
            if last_ok < j < (end or len(events)) and events[j]["event"] == "role.refresh_failed"
        )
        start = stamp(expired["expiration"])
        stop = stamp(events[end]["timestamp"]) if end is not None else log_end
        gaps.append(
            {
                "profile": profile,
                "role_arn": ARN.format(profile),
                "start": expired["expiration"],
                "end": None if end is None else stop.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "seconds": round((stop - start).total_seconds(), 3),
                "ended_by": None if end is None else "role.refreshed",
                "reported": True,
                "failures": [
                    {"error_code": code, "count": n}
                    for code, n in sorted(codes.items(), key=lambda item: (-item[1], item[0]))
                ],
                "file_errors": 0,
            }
        )
    return sorted(gaps, key=lambda g: (g["start"], g["profile"]))


def late_refreshes(real_log):
    """(profile, previous expiration) of each refresh written after the previous one expired
    with no role.expired in between, in log order."""
    late = []
    previous = {}
    for event in real_log.events:
        profile = event.get("profile")
        if event["event"] == "role.expired":
            previous.pop(profile, None)
        elif event["event"] == "role.refreshed":
            before = previous.get(profile)
            if before is not None and stamp(before) < stamp(event["timestamp"]):
                late.append((profile, before))
            previous[profile] = event["expiration"]
    return late


def synthetic(*events):
    """Lines of credrefresh events, a minute apart from 10:00, with the given fields."""
    base = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    lines = []
    for i, (name, fields) in enumerate(events):
        moment = base + timedelta(minutes=i)
        record = {
            **fields,
            "event": name,
            "level": "info",
            "timestamp": f"{moment:%Y-%m-%dT%H:%M:%S}.5Z",
        }
        lines.append(json.dumps(record) + "\n")
    return "".join(lines)


def refreshed(profile, key, expires):
    return (
        "role.refreshed",
        {
            "profile": profile,
            "role_arn": ARN.format(profile),
            "session_name": f"credrefresh-{profile}",
            "access_key_id": key,
            "expiration": expires,
        },
    )


def test_gap_inferred_when_a_refresh_comes_after_expiry(tmp_path, capsys):
    """A refresh after the previous credentials expired (no role.expired: the daemon was down)
    is a gap from that expiry, with the failures since the last good refresh."""
    log = tmp_path / "log"
    log.write_text(
        synthetic(
            refreshed("a", "ASIA0000000000000001", "2026-11-27T10:01:30Z"),
            ("role.refresh_failed", {"profile": "a", "error_code": "Throttling"}),
            ("daemon.stopped", {"writes": 1}),
            ("daemon.started", {"pid": 1}),
            refreshed("a", "ASIA0000000000000002", "2026-11-27T11:00:00Z"),
            refreshed("a", "ASIA0000000000000003", "2026-11-27T11:30:00Z"),  # in time: no gap
        )
    )
    code, out, _ = audit(capsys, "gaps", "--json", log)
    assert code == 0
    assert json.loads(out) == [
        {
            "profile": "a",
            "role_arn": ARN.format("a"),
            "start": "2026-11-27T10:01:30Z",
            "end": "2026-11-27T10:04:00Z",
            "seconds": 150.5,
            "ended_by": "role.refreshed",
            "reported": False,
            "failures": [{"error_code": "Throttling", "count": 1}],
            "file_errors": 0,
        }
    ]


def test_open_gaps_removed_profiles_and_file_errors(tmp_path, capsys):
    """Gaps still open at the end of the log, one ended by profile.removed, and file errors."""
    log = tmp_path / "log"
    log.write_text(
        synthetic(
            refreshed("a", "ASIA0000000000000001", "2026-11-27T10:00:40Z"),
            refreshed("b", "ASIA0000000000000002", "2026-11-27T10:01:40Z"),
            refreshed("c", "ASIA0000000000000003", "2026-11-27T12:00:00Z"),
            ("credentials_file.error", {"path": "credentials", "error": "unparseable"}),
            ("role.expired", {"profile": "b", "expiration": "2026-11-27T10:01:40Z"}),
            ("role.refresh_failed", {"profile": "b", "error_code": "CredentialsFileError"}),
            ("profile.removed", {"profile": "b", "path": "credentials"}),
            ("credentials_file.error", {"path": "credentials", "error": "unparseable"}),
        )
    )
    _, out, _ = audit(capsys, "gaps", "--json", log)
    gaps = {g["profile"]: g for g in json.loads(out)}
    assert set(gaps) == {"a", "b"}  # c is valid until noon
    assert gaps["b"]["end"] == "2026-11-27T10:06:00Z"
    assert gaps["b"]["ended_by"] == "profile.removed"
    assert gaps["b"]["reported"] is True
    assert gaps["b"]["failures"] == [{"error_code": "CredentialsFileError", "count": 1}]
    assert gaps["b"]["file_errors"] == 1
    assert gaps["a"]["end"] is None
    assert gaps["a"]["reported"] is False
    assert gaps["a"]["file_errors"] == 2
    assert gaps["a"]["seconds"] == 380.5  # to the last event, 10:07:00.5
    _, out, _ = audit(capsys, "gaps", log)
    assert "(open at end of log)" in out


# -- cloudtrail --------------------------------------------------------------------------------


def used_record(key, name="GetObject", source="s3.amazonaws.com", arn=None):
    return {
        "eventVersion": "1.09",
        "userIdentity": {
            "type": "AssumedRole",
            "principalId": "AROAEXAMPLE:credrefresh",
            "arn": arn or "arn:aws:sts::123456789012:assumed-role/x/y",
            "accountId": "123456789012",
            "accessKeyId": key,
        },
        "eventTime": "2026-11-27T10:00:00Z",
        "eventSource": source,
        "eventName": name,
        "awsRegion": "us-east-1",
        "sourceIPAddress": "192.0.2.10",
        "userAgent": "aws-cli/2.15",
        "requestParameters": {"bucketName": "logs"},
        "responseElements": None,
        "requestID": str(uuid.uuid4()),
        "eventID": str(uuid.uuid4()),
        "readOnly": True,
        "eventType": "AwsApiCall",
        "recipientAccountId": "123456789012",
    }


def assume_record(call, token):
    """The AssumeRole record CloudTrail keeps for one call the fake STS answered."""
    record = used_record(call.caller_access_key_id, "AssumeRole", "sts.amazonaws.com")
    record["userIdentity"] = {
        "type": "IAMUser",
        "arn": call.caller_arn,
        "accessKeyId": call.caller_access_key_id,
    }
    record["requestParameters"] = {
        "roleArn": call.role_arn,
        "roleSessionName": call.role_session_name,
    }
    record["responseElements"] = {
        "credentials": {
            "accessKeyId": call.access_key_id,
            "sessionToken": token,
            "expiration": call.expiration,
        }
    }
    return record


@pytest.fixture
def trail(real_log, tmp_path):
    """A CloudTrail file as delivered to S3 (gzip): calls made with alpha's and beta's keys,
    credrefresh's own AssumeRole calls (carrying a real session token), and calls by keys
    credrefresh never issued."""
    alpha = real_log.named("role.refreshed", "alpha")[-1]
    beta = real_log.named("role.refreshed", "beta")[0]
    token = next(s for s in real_log.secrets if len(s) > 100)
    issued_keys = {e["access_key_id"] for e in real_log.named("role.refreshed")}
    assumed = [c for c in real_log.calls if c.access_key_id in issued_keys][:2]
    records = [
        used_record(alpha["access_key_id"], arn=alpha["assumed_role_arn"]),
        used_record(beta["access_key_id"], "DescribeInstances", "ec2.amazonaws.com"),
        used_record("ASIAUNKNOWNKEY000000"),
        *[assume_record(call, token) for call in assumed],
        {
            **used_record(None, "Decrypt", "kms.amazonaws.com"),
            "userIdentity": {"type": "AWSService"},
        },
    ]
    path = tmp_path / "123456789012_CloudTrail_us-east-1_20261127T1000Z_abc.json.gz"
    path.write_bytes(gzip.compress(json.dumps({"Records": records}).encode()))
    return path, records, alpha, beta, assumed


def test_cloudtrail_joins_records_to_sessions(real_log, trail, capsys):
    """Every record is printed; ours with profile and role, the rest marked not issued."""
    path, records, alpha, beta, assumed = trail
    code, out, err = audit(capsys, "cloudtrail", "--log", real_log.noisy, "--json", path)
    assert code == 0
    joined = json.loads(out)
    assert len(joined) == len(records)
    assert [j["event_name"] for j in joined] == [r["eventName"] for r in records]
    assert joined[0]["session"] == expected_sessions(real_log, [alpha])[0]
    assert (joined[0]["match"], joined[0]["issued_by_credrefresh"]) == ("used", True)
    assert joined[1]["session"]["profile"] == "beta"
    assert joined[1]["event_source"] == "ec2.amazonaws.com"
    assert (joined[2]["match"], joined[2]["session"]) == ("unknown", None)
    assert joined[2]["issued_by_credrefresh"] is False
    for entry, call in zip(joined[3:-1], assumed, strict=True):
        assert entry["match"] == "issued"
        assert entry["session"]["access_key_id"] == call.access_key_id
        assert entry["session"]["session_name"] == call.role_session_name
        assert entry["access_key_id"] == "AKIASOURCEEXAMPLE000"
    assert (joined[-1]["access_key_id"], joined[-1]["match"]) == (None, "unknown")
    assert (
        f"{len(records)} CloudTrail records: 2 made with keys credrefresh issued, "
        f"{len(assumed)} issuing them (AssumeRole), 2 not issued by credrefresh"
    ) in err
    code, out, _ = audit(capsys, "cloudtrail", "--log", real_log.path, path)
    rows = out.splitlines()
    assert rows[0].split()[:4] == ["EVENT", "TIME", "EVENT", "ACCESS"]
    assert "alpha" in rows[1]
    assert alpha["role_arn"] in rows[1]
    assert "ASIAUNKNOWNKEY000000" in rows[3]
    assert "(not issued by credrefresh)" in rows[3]
    _, out, _ = audit(
        capsys, "cloudtrail", "--log", real_log.path, "--profile", "beta", "--json", path
    )
    assert [j["session"]["profile"] for j in json.loads(out)] == ["beta"] + [
        "beta" for c in assumed if c.role_session_name == "credrefresh-beta"
    ]


def test_cloudtrail_lookup_events_output_and_log_on_stdin(real_log, trail, tmp_path):
    """``aws cloudtrail lookup-events`` output joins the same, with the log piped in."""
    path, records, *_ = trail
    looked_up = tmp_path / "lookup.json"
    looked_up.write_text(
        json.dumps(
            {
                "Events": [
                    {
                        "EventId": r["eventID"],
                        "EventName": r["eventName"],
                        "EventTime": r["eventTime"],
                        "EventSource": r["eventSource"],
                        "AccessKeyId": r["userIdentity"].get("accessKeyId"),
                        "CloudTrailEvent": json.dumps(r),
                    }
                    for r in records
                ]
            }
        )
    )
    stdin = real_log.noisy.read_bytes()
    delivered = audit_process("cloudtrail", "--json", path, stdin=stdin)
    looked = audit_process("cloudtrail", "--json", looked_up, stdin=stdin)
    assert delivered.returncode == looked.returncode == 0
    assert json.loads(looked.stdout) == json.loads(delivered.stdout)
    assert sum(j["issued_by_credrefresh"] for j in json.loads(looked.stdout)) == len(records) - 2


def test_cloudtrail_output_never_holds_a_secret(real_log, trail):
    """The session token in AssumeRole records, and the file's secrets, reach no output."""
    path, *_ = trail
    outputs = [
        audit_process("cloudtrail", "--log", real_log.path, *extra, path)
        for extra in ([], ["--json"])
    ]
    outputs.append(audit_process("sessions", "--json", real_log.path))
    assert real_log.secrets
    for result in outputs:
        assert result.returncode == 0
        text = (result.stdout + result.stderr).decode()
        for secret in real_log.secrets:
            assert secret not in text


def test_not_cloudtrail_exits_65(real_log, tmp_path, capsys):
    """A trail file that is not CloudTrail JSON exits 65 naming it; stdin is refused (exit 2)."""
    bad = tmp_path / "notes.json"
    bad.write_text('{"hello": 1}')
    code, _, err = audit(capsys, "cloudtrail", "--log", real_log.path, bad)
    assert code == 65
    assert "notes.json: not a CloudTrail file" in err
    bad.write_text("not json")
    code, _, err = audit(capsys, "cloudtrail", "--log", real_log.path, bad)
    assert (code, "notes.json: not JSON" in err) == (65, True)
    code, _, _ = audit(capsys, "cloudtrail", "--log", real_log.path, "-")
    assert code == 2


# -- safety and footprint ----------------------------------------------------------------------


def test_crafted_lines_cannot_print_secrets_or_escapes(tmp_path, capsys):
    """Event-shaped lines with a secret-shaped value or terminal escapes are scrubbed or
    refused (counted as malformed), never printed as given."""
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    log = tmp_path / "log"
    log.write_text(
        synthetic(
            refreshed(f"p-{secret}", "ASIA0000000000000001", "2026-11-27T11:00:00Z"),
            refreshed("\x1b[2Jwipe", "ASIA0000000000000002", "2026-11-27T11:00:00Z"),
            refreshed("ok", "asia-lowercase-key", "2026-11-27T11:00:00Z"),
            refreshed("ok", "ASIA0000000000000003", "not a time"),
        )
    )
    code, out, err = audit(capsys, "sessions", "--json", log)
    assert code == 0
    sessions = json.loads(out)
    assert [s["profile"] for s in sessions] == ["p-[REDACTED]"]
    assert secret not in out
    assert "\x1b" not in out
    assert "3 malformed events skipped" in err


def test_audit_does_not_import_the_aws_sdk(real_log):
    """``credrefresh audit`` loads neither aioboto3, aiohttp nor botocore."""
    code = (
        "import sys\n"
        "from credrefresh.cli import main\n"
        f"assert main(['audit', 'gaps', {str(real_log.path)!r}]) == 0\n"
        "heavy = {m.split('.')[0] for m in sys.modules} & {'aioboto3', 'aiohttp', 'botocore',"
        " 'aiobotocore', 'boto3'}\n"
        "print(sorted(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


def test_chained_source_is_shown(tmp_path, capsys):
    """A role.refreshed with a source (a role chain) shows it in the table and the JSON."""
    chained = refreshed("child", "ASIA0000000000000009", "2026-11-27T11:00:00Z")
    chained[1]["source"] = "parent"
    log = tmp_path / "log"
    log.write_text(
        synthetic(refreshed("parent", "ASIA0000000000000008", "2026-11-27T11:00:00Z"), chained)
    )
    _, out, _ = audit(capsys, "sessions", "--json", log)
    assert [s["source"] for s in json.loads(out)] == [None, "parent"]
    _, out, _ = audit(capsys, "sessions", log)
    assert out.splitlines()[2].split()[4] == "parent"
    assert out.splitlines()[1].split()[4] == "-"


def test_long_tables_stream_with_widths_from_the_first_rows():
    """Widths come from the header and the first rows; later, longer cells shift only their line."""
    out = io.StringIO()
    rows = [("a", "1"), ("bb", "2"), ("a-much-longer-cell", "3")]
    write_table(out, ("H", "LAST"), iter(rows), sample=2)
    assert out.getvalue().splitlines() == ["H   LAST", "a   1", "bb  2", "a-much-longer-cell  3"]


def test_time_bounds():
    """--since/--until take ISO 8601 (naive is UTC, offsets converted) or a duration ago."""
    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    assert parse_bound("2026-11-27", now) == datetime(2026, 11, 27, tzinfo=UTC)
    assert parse_bound("2026-11-27T10:00+02:00", now) == datetime(2026, 11, 27, 8, tzinfo=UTC)
    assert parse_bound("1d12h", now) == now - timedelta(hours=36)
    assert parse_bound("90m ago", now) == now - timedelta(minutes=90)
    for bad in ("", "2h-ish", "tomorrow", "12"):
        with pytest.raises(ValueError, match="is not a time"):
            parse_bound(bad, now)


def test_closed_pipe_stops_quietly(tmp_path):
    """A reader that goes away (``| head``) stops audit without a traceback, status 141."""
    log = tmp_path / "log"
    log.write_text(
        synthetic(*(refreshed("p", f"ASIA{i:016d}", "2026-11-27T11:00:00Z") for i in range(3000)))
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "credrefresh", "audit", "sessions", "--json", str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout.readline() == b"[\n"
        proc.stdout.close()
        assert proc.wait(timeout=60) == 141
        assert proc.stderr.read() == b""  # no traceback, no "Exception ignored" at exit
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stderr.close()
