"""[source] sessions (MFA, web identity): refusals, the pure session track, the session file's
safety, and the engine waiting for a session and signing every role with it."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

from credrefresh.config import load_config, plan_reload
from credrefresh.engine import Daemon
from credrefresh.errors import ConfigError, CredentialsFileError, RefreshFailed
from credrefresh.model import Credentials, ErrorInfo, Issued
from credrefresh.sessionfile import MAX_SIZE, StoredSession, load_session, save_session
from credrefresh.settings import RefreshPolicy
from credrefresh.sourceconfig import MfaSource, WebIdentitySource
from credrefresh.sourcesession import PARKED, Track, failed, observed, ticked
from credrefresh.sts import AioStsClient
from credrefresh.stssession import MAX_TOKEN, read_token
from engine_support import JumpClock, Recorder, ScriptedSts, make_config

SERIAL = "arn:aws:iam::123456789012:mfa/alice"
HUB = "arn:aws:iam::123456789012:role/hub"
SECRET = "SeSsIoNsEcReT" + "x" * 30
TOKEN = "SeSsIoNtOkEn" + "y" * 200


ROLE_A = '[[roles]]\nprofile = "a"\nrole_arn = "arn:aws:iam::123456789012:role/a"\n'


def write(tmp_path, source: str, roles: str = "") -> str:
    path = tmp_path / "c.toml"
    text = f'sts_endpoint_url = "http://127.0.0.1:9"\n[source]\n{source}\n'
    path.write_text(text + (roles or ROLE_A))
    return str(path)


@pytest.mark.parametrize(
    ("source", "roles", "key", "words"),
    [
        (
            f'mfa_serial = "{SERIAL}"\nweb_identity_token_file = "/t"',
            "",
            "web_identity_token_file",
            "cannot be combined",
        ),
        ('mfa_serial = "x"', "", "mfa_serial", "MFA device ARN"),
        (
            f'mfa_serial = "{SERIAL}"\nsession_duration = 600',
            "",
            "session_duration",
            "900 to 129600",
        ),
        (
            f'mfa_serial = "{SERIAL}"\nsession_duration = 200000',
            "",
            "session_duration",
            "900 to 129600",
        ),
        (
            f'mfa_serial = "{SERIAL}"\nsession_duration = 3600.5',
            "",
            "session_duration",
            "whole number",
        ),
        ("session_duration = 3600", "", "session_duration", "needs mfa_serial"),
        ('session_file = "/x"', "", "session_file", "needs mfa_serial"),
        (f'role_arn = "{HUB}"', "", "role_arn", "needs web_identity_token_file"),
        ('web_identity_token_file = "/t"', "", "role_arn", "missing"),
        (
            f'web_identity_token_file = "/t"\nrole_arn = "{HUB}"\nprofile = "p"',
            "",
            "profile",
            "cannot be combined",
        ),
        (
            f'web_identity_token_file = "/t"\nrole_arn = "{HUB}"\nsession_duration = 50000',
            "",
            "session_duration",
            "900 to 43200",
        ),
        (
            'web_identity_token_file = "/t"\nrole_arn = "arn:aws:iam::1:role/x"',
            "",
            "role_arn",
            "role ARN",
        ),
        (
            f'mfa_serial = "{SERIAL}"',
            ROLE_A + "duration_seconds = 7200\n",
            "roles[0].duration_seconds",
            "MFA session",
        ),
        (
            f'web_identity_token_file = "/t"\nrole_arn = "{HUB}"',
            ROLE_A + "duration_seconds = 7200\n",
            "roles[0].duration_seconds",
            "web identity session",
        ),
    ],
)
def test_bad_session_sources_are_refused(tmp_path, source, roles, key, words):
    """Each mistake is one problem naming the file and the key."""
    path = write(tmp_path, source, roles)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={"HOME": str(tmp_path)})
    full = key if key.startswith("roles") else f"source.{key}"
    assert any(p.startswith(f"{path}: {full}: ") and words in p for p in info.value.problems), (
        info.value.problems
    )


def test_roles_with_their_own_source_profile_may_ask_for_longer(tmp_path):
    """The session signs only roles without source_profile: a role signed by an AWS profile
    keeps its 12-hour limit."""
    roles = (
        '[[roles]]\nprofile = "a"\nrole_arn = "arn:aws:iam::123456789012:role/a"\n'
        'duration_seconds = 7200\nsource_profile = "elsewhere"\n'
    )
    config = load_config(
        write(tmp_path, f'mfa_serial = "{SERIAL}"', roles), environ={"HOME": str(tmp_path)}
    )
    assert isinstance(config.session, MfaSource)
    assert config.session.duration == 43200
    assert config.session.lead == 3600
    assert config.session.session_file.startswith(os.path.dirname(config.state_file))


def test_adding_a_session_needs_a_restart(tmp_path):
    """A reload cannot switch the source between keys and a session."""
    before = load_config(write(tmp_path, ""), environ={"HOME": str(tmp_path)})
    after = load_config(
        write(tmp_path, f'mfa_serial = "{SERIAL}"'), environ={"HOME": str(tmp_path)}
    )
    with pytest.raises(ConfigError, match="restart instead"):
        plan_reload(before, after)
    longer = load_config(
        write(tmp_path, f'mfa_serial = "{SERIAL}"\nsession_duration = 3600'),
        environ={"HOME": str(tmp_path)},
    )
    assert plan_reload(after, longer).sts_changed


# -- the pure track ----------------------------------------------------------------------------

NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
MFA = MfaSource(SERIAL, "/state/mfa.json", lead=3600)


def creds(key: str, expires: datetime) -> Credentials:
    return Credentials(key, SECRET, TOKEN, expires)


def on_clock(config: Any, sts: Any, clock: Any, log: Any, **options: Any) -> Daemon:
    """A daemon on the test clock: no signal handling, first calls not spread out."""
    return Daemon(
        config, sts, log=log, clock=clock, handle_signals=False, start_spread=0.0, **options
    )


def web_session(key: str, expires: datetime, now: datetime) -> Issued:
    """What a web identity ``obtain`` returns: a session issued ``now``."""
    return Issued("[source]", HUB, "w", "arn", creds(key, expires), now, 1.0)


def names(events) -> list[str]:
    return [e.name for e in events]


def test_a_missing_session_is_reported_once_not_once_per_look():
    track = Track(next_check=NOW)
    track, first = observed(track, MFA, None, None, NOW, "/c.toml")
    assert names(first) == ["source.session_required"]
    assert first[0].fields["action"] == "run: credrefresh mfa --config /c.toml"
    for minute in range(1, 5):
        track, again = observed(track, MFA, None, None, NOW + timedelta(minutes=minute), "/c.toml")
        assert again == ()


def test_a_new_session_is_announced_and_then_expires_with_one_event_each():
    track = Track(next_check=NOW)
    found = StoredSession(SERIAL, creds("ASIAFIRST0000000000", NOW + timedelta(hours=12)), NOW)
    track, events = observed(track, MFA, found, None, NOW, "/c.toml")
    assert names(events) == ["source.session_started"]
    assert events[0].fields["access_key_id"] == "ASIAFIRST0000000000"
    assert SECRET not in repr(events)
    assert TOKEN not in repr(events)
    track, events = observed(track, MFA, found, None, NOW + timedelta(hours=1), "/c.toml")
    assert events == ()
    late = NOW + timedelta(hours=11, minutes=1)
    track, events = ticked(track, MFA, late, "/c.toml")
    assert names(events) == ["source.session_expiring"]
    assert ticked(track, MFA, late + timedelta(minutes=5), "/c.toml")[1] == ()
    gone = NOW + timedelta(hours=12, seconds=1)
    track, events = ticked(track, MFA, gone, "/c.toml")
    assert names(events) == ["source.session_expired", "source.session_required"]
    assert ticked(track, MFA, gone + timedelta(minutes=5), "/c.toml")[1] == ()
    # The morning routine: a new session is picked up and announced.
    fresh = StoredSession(SERIAL, creds("ASIASECOND000000000", gone + timedelta(hours=12)), gone)
    track, events = observed(track, MFA, fresh, None, gone + timedelta(minutes=6), "/c.toml")
    assert names(events) == ["source.session_started"]
    assert track.problem is None


def test_a_session_of_another_device_is_not_used():
    bob = "arn:aws:iam::123456789012:mfa/bob"
    found = StoredSession(bob, creds("ASIAOTHER0000000000", NOW + timedelta(hours=12)), NOW)
    track, events = observed(Track(next_check=NOW), MFA, found, None, NOW, "/c.toml")
    assert track.session is None
    assert names(events) == ["source.session_required"]
    assert "another MFA device" in events[0].fields["reason"]


def test_web_identity_failures_back_off_and_never_wait_past_the_session():
    web = WebIdentitySource("/t", HUB, lead=300)
    policy = RefreshPolicy()
    session = creds("ASIAWEB000000000000", NOW + timedelta(seconds=600))
    track = Track(next_check=NOW, session=session)
    error = ErrorInfo("InvalidIdentityToken", "bad", True, NOW)
    track, events = failed(track, web, error, policy, 0.5)
    assert names(events) == ["source.session_failed"]
    assert track.attempt == 1
    assert track.problem == "InvalidIdentityToken"
    for _ in range(12):
        track, _ = failed(track, web, replace(error, at=NOW), policy, 1.0)
    assert track.next_check <= NOW + timedelta(seconds=300)  # half of what is left, at most


# -- the session file --------------------------------------------------------------------------


def stored(expires: datetime | None = None) -> StoredSession:
    return StoredSession(
        SERIAL, creds("ASIASTORED000000000", expires or NOW + timedelta(hours=12)), NOW
    )


def test_the_session_file_is_private_and_round_trips(tmp_path):
    path = str(tmp_path / "state" / "mfa.json")
    save_session(path, stored())
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "state").st_mode) == 0o700
    back = load_session(path)
    assert back == stored()
    assert SECRET not in repr(back)


def test_a_session_file_others_can_write_is_refused(tmp_path):
    path = str(tmp_path / "state" / "mfa.json")
    save_session(path, stored())
    os.chmod(path, 0o622)  # noqa: S103 - the attack under test
    with pytest.raises(CredentialsFileError, match="writable by no one else"):
        load_session(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_a_session_file_owned_by_another_user_is_refused(tmp_path):
    path = str(tmp_path / "state" / "mfa.json")
    save_session(path, stored())
    os.chown(path, 65534, -1)
    with pytest.raises(CredentialsFileError, match="owner uid 65534"):
        load_session(path)


def test_a_fifo_in_place_of_the_session_file_is_refused_without_blocking(tmp_path):
    (tmp_path / "state").mkdir(mode=0o700)
    path = tmp_path / "state" / "mfa.json"
    os.mkfifo(path)
    with pytest.raises(CredentialsFileError, match="FIFO"):
        load_session(str(path))


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"secret_access_key": "bad value\n[x]"}, "secret_access_key is missing or malformed"),
        ({"access_key_id": "lower"}, "access_key_id is missing or malformed"),
        ({"expiration": "soon"}, "expiration or obtained_at"),
        ({"version": 9}, "not a version 1"),
    ],
)
def test_a_tampered_session_file_is_refused_naming_the_field_not_the_value(tmp_path, change, words):
    path = tmp_path / "state" / "mfa.json"
    save_session(str(path), stored())
    document = json.loads(path.read_text())
    document.update(change)
    path.write_text(json.dumps(document))
    with pytest.raises(CredentialsFileError, match=words) as info:
        load_session(str(path))
    assert SECRET not in str(info.value)
    assert "bad value" not in str(info.value)


def test_an_oversized_session_file_is_refused(tmp_path):
    path = tmp_path / "state" / "mfa.json"
    save_session(str(path), stored())
    path.write_text(" " * (MAX_SIZE + 1))
    with pytest.raises(CredentialsFileError, match="larger than"):
        load_session(str(path))


# -- the engine --------------------------------------------------------------------------------


def mfa_config(tmp_path):
    config = make_config(tmp_path, ["a", "b", "c"])
    session_file = str(tmp_path / "state" / "mfa.json")
    return replace(config, session=MfaSource(SERIAL, session_file, lead=60))


@pytest.mark.anyio
async def test_run_waits_for_mfa_then_signs_every_role_with_the_session(tmp_path):
    """No session: READY=1 anyway, no STS call, one source.session_required and a STATUS that
    says so. A session stored meanwhile is picked up without a restart and signs every role."""
    clock = JumpClock()
    config = mfa_config(tmp_path)
    sts = ScriptedSts(clock, lifetime=3600)
    log = Recorder()
    daemon = on_clock(config, sts, clock, log)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        assert sts.calls == []
        assert len(log.named("source.session_required")) == 1
        assert daemon.last_status.startswith("waiting for MFA (run credrefresh mfa); ")
        assert {daemon.state(p).waiting_for for p in "abc"} == {PARKED}
        session = creds("ASIAMFASESSION00000", clock.now() + timedelta(hours=12))
        await anyio.to_thread.run_sync(
            save_session, config.session.session_file, StoredSession(SERIAL, session, clock.now())
        )
        await log.wait_count("role.refreshed", 3)
        daemon.stop()
    assert sorted(sts.signers) == [(p, "ASIAMFASESSION00000") for p in "abc"]
    assert len(log.named("source.session_started")) == 1
    assert len(log.named("source.session_required")) == 1
    assert not log.named("role.refresh_failed")


@pytest.mark.anyio
async def test_web_identity_session_failure_makes_roles_wait_then_signs_them(tmp_path):
    """The first AssumeRoleWithWebIdentity fails: one source.session_failed, no role called;
    the retry succeeds and every role is signed with that session."""
    clock = JumpClock()
    config = replace(
        make_config(tmp_path, ["a", "b"]),
        session=WebIdentitySource(str(tmp_path / "token"), HUB),
    )
    sts = ScriptedSts(clock, lifetime=3600)
    log = Recorder()
    attempts: list[int] = []

    async def obtain(_config) -> Issued:
        attempts.append(1)
        if len(attempts) == 1:
            raise RefreshFailed("InvalidIdentityToken", "expired token", transient=True)
        now = clock.now()
        return web_session("ASIAWEBSESSION00000", now + timedelta(hours=1), now)

    daemon = on_clock(config, sts, clock, log, session_obtain=obtain)
    async with anyio.create_task_group() as tg:
        tg.start_soon(daemon.run)
        await log.wait_count("role.refreshed", 2)
        daemon.stop()
    assert len(attempts) == 2
    assert len(log.named("source.session_failed")) == 1
    assert sorted(sts.signers) == [("a", "ASIAWEBSESSION00000"), ("b", "ASIAWEBSESSION00000")]


# -- the web identity token and the refusal before STS -----------------------------------------


def test_the_token_is_read_bounded_and_never_echoed(tmp_path):
    token = tmp_path / "token"
    token.write_text("eyJhbGciOi.payload.sig\n")
    assert read_token(str(token)) == "eyJhbGciOi.payload.sig"
    cases = {
        "missing": "does not exist",
        "fifo": "FIFO",
        "big": f"larger than {MAX_TOKEN}",
        "two words": "not one line",
    }
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "big").write_text("x" * (MAX_TOKEN + 1))
    (tmp_path / "two words").write_text("secret-part other-part")
    for name, words in cases.items():
        with pytest.raises(RefreshFailed, match=words) as info:
            read_token(str(tmp_path / name))
        assert info.value.code == "WebIdentityTokenError"
        assert "secret-part" not in str(info.value)


@pytest.mark.anyio
async def test_the_source_keys_never_sign_a_role_when_a_session_is_configured(tmp_path):
    """A call that reaches the STS client without the session is refused before any request."""
    config = replace(
        make_config(tmp_path, ["a"]),
        sts_endpoint_url="http://127.0.0.1:9",
        session=MfaSource(SERIAL, str(tmp_path / "mfa.json")),
    )
    async with AioStsClient(config) as sts:
        with pytest.raises(RefreshFailed) as info:
            await sts.assume(config.roles[0], None)
    assert info.value.code == "SourceSessionRequired"


def test_a_deleted_or_replaced_session_file_stops_the_session_at_once():
    """Removing the file (or planting a bad one) withdraws the session: nothing signs with it."""
    found = StoredSession(SERIAL, creds("ASIAFIRST0000000000", NOW + timedelta(hours=12)), NOW)
    track, _ = observed(Track(next_check=NOW), MFA, found, None, NOW, "/c.toml")
    assert track.session is not None
    later = NOW + timedelta(minutes=1)
    gone, events = observed(track, MFA, None, None, later, "/c.toml")
    assert gone.session is None
    assert names(events) == ["source.session_required"]
    refused, events = observed(track, MFA, None, "/s: not JSON", later, "/c.toml")
    assert refused.session is None
    assert events[0].fields["reason"] == "/s: not JSON"


def test_no_state_directory_yet_means_no_session(tmp_path):
    assert load_session(str(tmp_path / "not-yet" / "mfa.json")) is None


@pytest.mark.anyio
async def test_a_reload_that_moves_the_session_file_reads_the_new_one(tmp_path):
    """SIGHUP with another session_file: the keeper starts over from the new file."""
    clock = JumpClock()
    config = mfa_config(tmp_path)
    first = creds("ASIAFIRSTSESSION000", clock.now() + timedelta(hours=12))
    save_session(config.session.session_file, StoredSession(SERIAL, first, clock.now()))
    moved = replace(config.session, session_file=str(tmp_path / "state" / "other.json"))
    second = creds("ASIASECONDSESSION00", clock.now() + timedelta(hours=12))
    save_session(moved.session_file, StoredSession(SERIAL, second, clock.now()))
    sts = ScriptedSts(clock, lifetime=3600)
    log = Recorder()
    daemon = on_clock(config, sts, clock, log, loader=lambda _path: replace(config, session=moved))
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        assert await daemon.reload()
        await log.wait_count("source.session_started", 2)
        daemon.refresh_now("a")
        await sts.wait_calls(lambda calls: calls.count("a") >= 2)
        daemon.stop()
    assert [key for profile, key in sts.signers if profile == "a"] == [
        "ASIAFIRSTSESSION000",
        "ASIASECONDSESSION00",
    ]


# -- review findings: each attack fails without its fix ----------------------------------------


def test_a_deeply_nested_session_file_is_refused_not_a_crash(tmp_path):
    """50,000 '[' fit in the size bound and recurse past the stack in json.loads."""
    path = tmp_path / "state" / "mfa.json"
    save_session(str(path), stored())
    path.write_text("[" * 50_000)
    with pytest.raises(CredentialsFileError, match="not JSON"):
        load_session(str(path))


def keeper_for(tmp_path, source, clock, *, obtain=None, margin=20.0):
    from credrefresh.sessionkeeper import SessionKeeper  # noqa: PLC0415

    log = Recorder()
    changes: list[int] = []
    keeper = SessionKeeper(
        source,
        str(tmp_path / "c.toml"),
        clock=clock,
        policy=RefreshPolicy(backoff_initial=1.0),
        margin=timedelta(seconds=margin),
        emit=lambda *events: [log.info(e.name, **e.fields) for e in events],
        on_change=lambda: changes.append(1),
        obtain=obtain,
    )
    return keeper, log


@pytest.mark.anyio
async def test_a_session_file_made_writable_by_others_is_withdrawn_at_the_next_look(tmp_path):
    """chmod changes neither size nor mtime: the keeper must still notice (it reads every time)."""
    clock = JumpClock()
    source = MfaSource(SERIAL, str(tmp_path / "state" / "mfa.json"))
    save_session(source.session_file, stored(clock.now() + timedelta(hours=12)))
    keeper, log = keeper_for(tmp_path, source, clock)
    await keeper.look()
    assert keeper.signer(clock.now()) is not None
    os.chmod(source.session_file, 0o666)  # noqa: S103 - the attack under test
    clock.offset += timedelta(seconds=3)  # past the next poll
    await keeper.look()
    assert keeper.signer(clock.now()) is None
    assert "writable by no one else" in log.named("source.session_required")[-1]["reason"]


@pytest.mark.anyio
async def test_a_keeper_survives_anything_a_file_throws(tmp_path):
    """An unexpected error becomes the session's problem; the task goes on."""
    clock = JumpClock()

    async def explode() -> Issued:
        raise RecursionError

    web = WebIdentitySource(str(tmp_path / "token"), HUB)
    keeper, log = keeper_for(tmp_path, web, clock, obtain=explode)
    await keeper.look()
    assert keeper.track.problem == "unexpected error: RecursionError"
    assert keeper.blocked


@pytest.mark.anyio
async def test_a_web_session_that_is_already_over_does_not_make_the_keeper_spin(tmp_path):
    """STS (or a wrong local clock) hands out a session that ends within the margin: it is a
    failure with a backoff, not a reason to call again at once."""
    clock = JumpClock()
    calls: list[int] = []

    async def obtain() -> Issued:
        calls.append(1)
        now = clock.now()
        return web_session("ASIAPASTSESSION0000", now - timedelta(minutes=1), now)

    web = WebIdentitySource(str(tmp_path / "token"), HUB)
    keeper, log = keeper_for(tmp_path, web, clock, obtain=obtain)
    with anyio.move_on_after(1.0):  # an observation window: a spinning keeper calls ~20 times
        await keeper.run()
    assert len(calls) <= 2  # the first backoff is 0.5-1 s
    assert keeper.signer(clock.now()) is None
    assert {f["code"] for f in log.named("source.session_failed")} == {"InvalidStsResponse"}
    assert not log.named("source.session_started")


@pytest.mark.anyio
async def test_web_identity_retries_at_once_when_the_token_is_rotated_during_a_backoff(tmp_path):
    clock = JumpClock()
    token = tmp_path / "token"
    token.write_text("old\n")
    tokens: list[str] = []

    async def obtain() -> Issued:
        text = token.read_text().strip()
        tokens.append(text)
        if text == "old":
            raise RefreshFailed("ExpiredTokenException", "token expired", transient=False)
        now = clock.now()
        return web_session("ASIAWEBNEW000000000", now + timedelta(hours=1), now)

    web = WebIdentitySource(str(token), HUB)
    keeper, log = keeper_for(tmp_path, web, clock, obtain=obtain)
    await keeper.look()
    assert keeper.track.next_check - clock.now() > timedelta(seconds=30)  # the permanent backoff
    token.write_text("new-token\n")
    await keeper.look()
    assert tokens == ["old", "new-token"]
    assert keeper.signer(clock.now()) is not None


@pytest.mark.anyio
async def test_ready_does_not_wait_for_a_session_that_ends_within_the_margin(tmp_path):
    """A session with less left than a call may take: READY=1 at once, roles parked."""
    clock = JumpClock()
    config = mfa_config(tmp_path)
    soon = creds("ASIASOONSESSION0000", clock.now() + timedelta(seconds=5))
    save_session(config.session.session_file, StoredSession(SERIAL, soon, clock.now()))
    sts = ScriptedSts(clock, lifetime=3600)
    daemon = on_clock(config, sts, clock, Recorder())
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(10):  # STARTUP_LIMIT is 60 s: this fails if READY waits for it
            await tg.start(daemon.run)
        daemon.stop()
    assert sts.calls == []


def test_a_replaced_expired_session_withdraws_the_one_held():
    held = StoredSession(SERIAL, creds("ASIAHELD00000000000", NOW + timedelta(hours=12)), NOW)
    track, _ = observed(Track(next_check=NOW), MFA, held, None, NOW, "/c.toml")
    old = StoredSession(SERIAL, creds("ASIAOLDANDEXPIRED00", NOW - timedelta(hours=1)), NOW)
    track, events = observed(track, MFA, old, None, NOW + timedelta(minutes=1), "/c.toml")
    assert track.session is None
    assert names(events) == ["source.session_required"]
