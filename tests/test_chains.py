"""Role chains (hub and spoke): refused shapes, signing with the hub's live session, waiting for a
failing hub with one event, and a real fake-STS run that keeps hub and spokes fresh."""

from __future__ import annotations

import signal
from dataclasses import replace

import anyio
import pytest
from botocore.configloader import raw_config_parse

from credrefresh.chains import levels
from credrefresh.config import load_config
from credrefresh.engine import Daemon
from credrefresh.errors import ConfigError, RefreshFailed
from engine_support import JumpClock, Recorder, ScriptedSts, make_config
from process_support import NotifySocket, Proc, clean_env, run_cli, write_config
from support.fakests import Faults

ARN = "arn:aws:iam::123456789012:role/"


def toml(*roles: tuple[str, str | None, int]) -> str:
    """Roles as (profile, source_profile, duration_seconds)."""
    text = 'sts_endpoint_url = "http://127.0.0.1:9"\n'
    for profile, source, duration in roles:
        text += f'[[roles]]\nprofile = "{profile}"\nrole_arn = "{ARN}{profile}"\n'
        text += f"duration_seconds = {duration}\n"
        if source is not None:
            text += f'source_profile = "{source}"\n'
    return text


@pytest.mark.parametrize(
    ("roles", "key", "words"),
    [
        ((("a", "a", 3600),), "roles[0].source_profile", "names itself"),
        ((("a", "b", 3600), ("b", "a", 3600)), "roles[0].source_profile", "a cycle"),
        ((("hub", None, 3600), ("s", "hub", 7200)), "roles[1].duration_seconds", "role chaining"),
        (
            tuple((f"r{i}", f"r{i - 1}" if i else None, 3600) for i in range(8)),
            "roles[6].source_profile",
            "at most 5",
        ),
    ],
)
def test_bad_chains_are_refused(tmp_path, roles, key, words):
    """Self-reference, cycles, chained durations over an hour and deep chains: ConfigError."""
    path = tmp_path / "c.toml"
    path.write_text(toml(*roles))
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={"HOME": str(tmp_path)})
    assert any(p.startswith(f"{path}: {key}: ") and words in p for p in info.value.problems)


def test_unknown_source_profile_is_exit_78_at_check(tmp_path):
    """A source_profile that is neither a role nor an AWS profile is refused by ``check``."""
    path = tmp_path / "c.toml"
    path.write_text(toml(("a", None, 3600), ("b", "nowhere", 3600)))
    result = run_cli(["check", "--config", str(path)], clean_env(tmp_path))
    assert result.returncode == 78
    assert f"{path}: roles[1].source_profile: 'nowhere' is neither" in result.stderr


def test_levels_put_every_role_after_its_signer(tmp_path):
    """``once`` assumes level by level: the hub, then its spokes, then theirs."""
    path = tmp_path / "c.toml"
    path.write_text(toml(("leaf", "spoke", 900), ("spoke", "hub", 900), ("hub", None, 3600)))
    config = load_config(path, environ={"HOME": str(tmp_path)})
    assert [[r.profile for r in level] for level in levels(config.roles)] == [
        ["hub"],
        ["spoke"],
        ["leaf"],
    ]


def chained_config(tmp_path, spokes: int):
    config = make_config(tmp_path, ["hub", *(f"s{i}" for i in range(spokes))])
    return replace(
        config,
        roles=(
            config.roles[0],
            *(replace(r, source_profile="hub") for r in config.roles[1:]),
        ),
    )


@pytest.mark.anyio
async def test_spokes_sign_with_the_hub_session_in_memory(tmp_path):
    """Every spoke call is signed with the hub's live session; the hub with the [source]."""
    clock = JumpClock()
    config = chained_config(tmp_path, 5)
    sts = ScriptedSts(clock, lifetime=3600)
    log = Recorder()
    daemon = Daemon(config, sts, log=log, clock=clock, handle_signals=False, start_spread=0.0)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        daemon.stop()
    hub_key = raw_config_parse(config.credentials_file)["hub"]["aws_access_key_id"]
    signers = dict(sts.signers)
    assert signers.pop("hub") is None
    assert set(signers.values()) == {hub_key}
    assert len(signers) == 5
    assert {e.get("source") for e in log.named("role.refreshed") if e["profile"] != "hub"} == {
        "hub"
    }


@pytest.mark.anyio
async def test_a_failing_hub_makes_spokes_wait_with_one_event_each(tmp_path):
    """Spokes of a hub that cannot be assumed are not called: one role.waiting each."""
    clock = JumpClock()
    config = chained_config(tmp_path, 3)
    sts = ScriptedSts(clock, lifetime=3600)
    sts.always["hub"] = RefreshFailed("AccessDenied", "no", transient=False)
    log = Recorder()
    daemon = Daemon(
        config, sts, log=log, clock=clock, handle_signals=False, start_spread=0.0, slice_s=0.2
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(daemon.run)
        await log.wait_count("role.waiting", 3)
        await sts.wait_calls(lambda calls: calls.count("hub") >= 2)
        daemon.stop()
    assert set(sts.calls) == {"hub"}
    waiting = log.named("role.waiting")
    assert sorted(e["profile"] for e in waiting) == ["s0", "s1", "s2"]
    assert {e["source"] for e in waiting} == {"hub"}
    assert not [e for e in log.named("role.refresh_failed") if e["profile"] != "hub"]


@pytest.mark.slow
def test_once_signs_spokes_with_the_hub_through_a_real_sts(tmp_path, fake_sts):
    """Against the fake STS: the hub is signed by the source key, each spoke by the hub's key."""
    fake_sts.set_faults(Faults(latency=0, lifetime=3600))
    creds = tmp_path / "aws" / "credentials"
    config = write_config(tmp_path / "c.toml", creds, fake_sts.url, ["hub", "s1", "s2", "s3"])
    text = config.read_text()
    for spoke in ("s1", "s2", "s3"):
        text = text.replace(
            f'profile = "{spoke}"\n', f'profile = "{spoke}"\nsource_profile = "hub"\n'
        )
    config.write_text(text)
    result = run_cli(["once", "--config", str(config)], clean_env(tmp_path))
    assert result.returncode == 0, result.stderr
    hub_key = raw_config_parse(str(creds))["hub"]["aws_access_key_id"]
    callers = {c.role_arn.rsplit("/", 1)[1]: c.caller_access_key_id for c in fake_sts.calls}
    assert callers.pop("hub") == "AKIASOURCEEXAMPLE000"
    assert callers == {"s1": hub_key, "s2": hub_key, "s3": hub_key}


@pytest.mark.slow
def test_run_keeps_hub_and_spokes_fresh_without_expired_tokens(tmp_path, fake_sts):
    """Short lifetimes, several rotations of the hub: no spoke call is ever signed with an
    expired hub session (the fake STS answers ExpiredToken for those)."""
    fake_sts.set_faults(Faults(latency=0, lifetime=4))
    creds = tmp_path / "aws" / "credentials"
    spokes = [f"s{i}" for i in range(6)]
    config = write_config(
        tmp_path / "c.toml",
        creds,
        fake_sts.url,
        ["hub", *spokes],
        sts_timeout=0.5,
        refresh={"write_delay": 0.1, "backoff_initial": 0.2, "backoff_max": 1.0},
    )
    text = config.read_text()
    for spoke in spokes:
        text = text.replace(
            f'profile = "{spoke}"\n', f'profile = "{spoke}"\nsource_profile = "hub"\n'
        )
    config.write_text(text)
    notify = NotifySocket(tmp_path / "n.sock")
    proc = Proc(["run", "--config", str(config)], clean_env(tmp_path, NOTIFY_SOCKET=notify.path))
    try:
        notify.wait_for(lambda m: m == "READY=1")
        proc.wait_for(
            lambda events: (
                sum(e["event"] == "role.refreshed" and e["profile"] == "hub" for e in events) >= 4
            ),
            timeout=30,
        )
        proc.signal(signal.SIGTERM)
        assert proc.wait_exit(timeout=20) == 0
    finally:
        proc.kill()
        notify.close()
    assert fake_sts.stats.expired == 0
    assert not proc.named("role.refresh_failed")
    refreshed = {e["profile"] for e in proc.named("role.refreshed")}
    assert refreshed == {"hub", *spokes}
