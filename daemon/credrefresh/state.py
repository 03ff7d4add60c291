"""The state file ``run`` keeps for ``status``.

It holds what the daemon knows that the credentials file does not say (last success, last
error, next attempt). JSON, atomically replaced, mode 0600, no
secrets: the only credential-related value in it is the access key id, which is not secret.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from credrefresh.config import Config
from credrefresh.errors import CredentialsFileError
from credrefresh.model import RoleState, format_time
from credrefresh.safefs import ensure_directory, open_regular

if TYPE_CHECKING:
    from credrefresh.events import Event

__all__ = [
    "STATE_VERSION",
    "StateRenderer",
    "load_state",
    "record",
    "save_state",
    "state_document",
    "state_json",
]

STATE_VERSION: Final = 1


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else format_time(moment)


def state_document(
    states: Mapping[str, RoleState],
    *,
    now: datetime,
    pid: int,
    credentials_file: str,
    session: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON document for ``states`` (pure)."""
    document = _head(now=now, pid=pid, credentials_file=credentials_file, session=session)
    document["profiles"] = {name: _entry(state) for name, state in states.items()}
    return document


def _head(
    *, now: datetime, pid: int, credentials_file: str, session: Mapping[str, Any] | None
) -> dict[str, Any]:
    return {
        "version": STATE_VERSION,
        "updated_at": _time(now),
        "pid": pid,
        "credentials_file": credentials_file,
        "source_session": session,
    }


def _entry(state: RoleState) -> dict[str, Any]:
    error = state.last_error
    return {
        "role_arn": state.role.role_arn,
        "session_name": state.role.session_name,
        "expiration": _time(state.expiration),
        "access_key_id": state.access_key_id,
        "last_success": _time(state.last_success),
        "next_attempt": _time(state.due),
        "attempt": state.attempt,
        "conflict": state.conflict,
        "last_error": None
        if error is None
        else {
            "code": error.code,
            "message": error.message,
            "transient": error.transient,
            "at": _time(error.at),
        },
    }


class StateRenderer:
    """Renders the state file's text again and again, encoding only what changed.

    ``run`` saves every role's state every few seconds; at 10,000 roles building the document
    and encoding it cost about 0.1 s a save, while a few dozen roles had changed. A role's
    state is a frozen ``RoleState`` that is replaced, never mutated, on every change, so the
    encoded entry of a role is kept with the very object it was made from (which also keeps
    that object's id from being reused) and reused while the table still holds that object.
    The text decodes to exactly ``state_document`` of the same arguments.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[RoleState, str]] = {}

    def render(
        self,
        states: Mapping[str, RoleState],
        *,
        now: datetime,
        pid: int,
        credentials_file: str,
        session: Mapping[str, Any] | None = None,
    ) -> str:
        """``state_json(state_document(...))``, up to the order of the profiles."""
        kept = self._entries
        entries: dict[str, tuple[RoleState, str]] = {}
        for name, state in states.items():
            hit = kept.get(name)
            if hit is None or hit[0] is not state:
                text = f"{json.dumps(name)}: {json.dumps(_entry(state), sort_keys=True)}"
                hit = (state, text)
            entries[name] = hit
        self._entries = entries
        head = _head(now=now, pid=pid, credentials_file=credentials_file, session=session)
        body = ", ".join(text for _, text in entries.values())
        return f'{json.dumps(head, sort_keys=True)[:-1]}, "profiles": {{{body}}}}}\n'


def save_state(path: str, document: Mapping[str, Any] | str) -> None:
    """Atomically replace the state file (creating its directory 0700) with ``document``.

    ``document`` is the document, or its text (``StateRenderer.render``).

    Raises:
        OSError: it cannot be written, or its directory is unsafe (``safefs.check_directory``).
    """
    from credrefresh.atomic import remove_stale_temps, replace_atomically  # noqa: PLC0415 - status

    try:
        ensure_directory(os.path.dirname(os.path.abspath(path)))
    except CredentialsFileError as exc:
        # The daemon treats a state file it cannot write as a warning, like any OSError.
        raise PermissionError(errno.EPERM, str(exc)) from None
    remove_stale_temps(path)  # only `run` writes it, and one `run` per file
    text = document if isinstance(document, str) else state_json(document)
    replace_atomically(path, text.encode())


def state_json(document: Mapping[str, Any]) -> str:
    """``document`` as one line of JSON.

    Not indented: with ``indent``, ``json`` falls back from its C encoder to pure Python, which
    costs 110 ms at 10,000 profiles on every write of a running daemon (30 ms without). People
    read the file through ``credrefresh status`` (or ``jq``).
    """
    return json.dumps(document, sort_keys=True) + "\n"


def load_state(path: str) -> dict[str, Any] | None:
    """The state document, or ``None`` when absent or unreadable (status then says less)."""
    try:
        fd = open_regular(path, "state file")  # a FIFO planted here must not block status
        if fd is None:
            return None
        with open(fd, "rb") as handle:
            document = json.load(handle)
    except (OSError, ValueError, RecursionError, CredentialsFileError):
        return None
    if not isinstance(document, dict) or document.get("version") != STATE_VERSION:
        return None
    return document


async def record(
    config: Config,
    states: Mapping[str, RoleState],
    now: datetime,
    *,
    merge: bool = False,
    session: Mapping[str, Any] | None = None,
    renderer: StateRenderer | None = None,
) -> Event | None:
    """Write ``states`` to the state file in a worker thread; the failure event, if any.

    With ``merge``, profiles the document does not mention keep what the file said of them
    (``once`` records only its own round). ``renderer`` (``run``'s, kept between saves)
    encodes only the roles that changed since its last save.
    """
    if renderer is not None and not merge:
        text = renderer.render(
            states,
            now=now,
            pid=os.getpid(),
            credentials_file=config.credentials_file,
            session=session,
        )
        return await _save(config.state_file, text)
    document = state_document(
        states,
        now=now,
        pid=os.getpid(),
        credentials_file=config.credentials_file,
        session=session,
    )
    if merge:
        previous = load_state(config.state_file)
        if previous is not None and previous.get("credentials_file") == config.credentials_file:
            merged = dict(previous.get("profiles") or {})
            merged.update(document["profiles"])
            document["profiles"] = merged
            if session is None:  # once records no session of run's: keep what run said
                document["source_session"] = previous.get("source_session")
    return await _save(config.state_file, document)


async def _save(path: str, document: Mapping[str, Any] | str) -> Event | None:
    import anyio  # noqa: PLC0415 - here: status, which only reads the file, starts faster

    from credrefresh.events import event  # noqa: PLC0415 - likewise

    try:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(save_state, path, document)
    except OSError as exc:
        return event("state_file.error", path=path, error=str(exc))
    return None
