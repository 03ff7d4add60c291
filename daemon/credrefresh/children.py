"""Child processes are ours to reap: a source ``credential_process`` and whatever it starts.

botocore runs a profile's ``credential_process`` with ``asyncio.create_subprocess_exec`` and
waits for it; when the call's deadline (or SIGTERM) cancels that wait, the helper is left
running, and so is anything it started. Here each helper starts in a session (and process
group) of its own, and the group is killed when the wait is cancelled, and at exit whatever is
left of any group we started. ``adopt`` hooks this into one botocore session; nothing else
changes in how botocore resolves credentials.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any, Final

from botocore.credentials import ProcessProvider

__all__ = ["Terminated", "adopt", "groups", "kill_group", "reap", "spawn", "stop_on_sigterm"]

# Process groups of the helpers started and maybe not all gone. Module state, because the
# helpers belong to the process, whichever client or session started them.
_groups: set[int] = set()

ADOPTED: Final = "_credrefresh_adopted"


class Terminated(SystemExit):
    """SIGTERM arrived (``once``): unwinding cancels the calls, which kills their helpers."""


def _terminated(signum: int, _frame: object) -> None:
    raise Terminated(128 + signum)


def stop_on_sigterm() -> None:
    """Make SIGTERM unwind the process instead of ending it on the spot.

    Python's default action ends the process at once, leaving a helper running in its own
    session; raised as an exception, it lets asyncio cancel every task (so each pending wait
    kills its helper's group) and the STS client's close reap the rest.
    """
    signal.signal(signal.SIGTERM, _terminated)


def groups() -> frozenset[int]:
    """The process groups started and not yet known to be gone."""
    _prune()
    return frozenset(_groups)


def kill_group(pgid: int) -> None:
    """SIGKILL every process in the group ``pgid``, if any is left."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        _groups.discard(pgid)
    except PermissionError:  # the id is someone else's by now: not ours to kill
        _groups.discard(pgid)


def _prune() -> None:
    for pgid in list(_groups):
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            _groups.discard(pgid)


def reap() -> None:
    """Kill what is left of every helper's group (at exit: no descendant outlives us)."""
    _prune()
    for pgid in list(_groups):
        kill_group(pgid)
    _groups.clear()


async def spawn(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:  # noqa: ANN401 - botocore's popen signature
    """``asyncio.create_subprocess_exec`` in a new session, killed with its group if cancelled."""
    _prune()
    process = await asyncio.create_subprocess_exec(*args, start_new_session=True, **kwargs)
    _groups.add(process.pid)
    communicate = process.communicate

    async def communicate_or_kill(
        data: bytes | bytearray | memoryview | None = None,
    ) -> tuple[bytes, bytes]:
        try:
            return await communicate(data)
        except BaseException:  # cancelled (deadline, SIGTERM) or failed: no helper survives it
            kill_group(process.pid)
            # Close its pipes now, while the loop runs: left to the garbage collector, they
            # would be closed after the loop and print "Event loop is closed" at exit.
            process._transport.close()  # type: ignore[attr-defined]  # noqa: SLF001
            raise

    process.communicate = communicate_or_kill  # type: ignore[method-assign,assignment]
    return process


def _adopt_provider(provider: object) -> None:
    if isinstance(provider, ProcessProvider):
        provider._popen = spawn  # noqa: SLF001 - botocore's injection point for this
    # An assume-role chain builds its source's providers later, with this builder.
    builder = getattr(provider, "_profile_provider_builder", None)
    if builder is None or getattr(builder, ADOPTED, False):
        return
    create = builder._create_process_provider  # noqa: SLF001

    def create_adopted(profile_name: str) -> ProcessProvider:
        made: ProcessProvider = create(profile_name)
        made._popen = spawn  # noqa: SLF001
        return made

    builder._create_process_provider = create_adopted  # noqa: SLF001
    setattr(builder, ADOPTED, True)


def adopt(session: Any) -> None:  # noqa: ANN401 - an aiobotocore AioSession
    """Make every ``credential_process`` that ``session`` runs one of ours (see the module)."""
    create = session._create_credential_resolver  # noqa: SLF001 - the session's own factory

    def resolver() -> Any:  # noqa: ANN401
        made = create()
        for provider in made.providers:
            _adopt_provider(provider)
        return made

    session.lazy_register_component("credential_provider", resolver)
