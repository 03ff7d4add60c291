"""The systemd notify protocol in ``credrefresh.systemd``, against real datagram sockets."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from credrefresh.systemd import Notifier, watchdog_interval

RECEIVE_TIMEOUT = 5.0


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound in ``tmp_path``, as systemd's notify socket is."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(RECEIVE_TIMEOUT)
    try:
        yield sock, str(path)
    finally:
        sock.close()


@pytest.fixture
def notifier_factory() -> Iterator[list[Notifier]]:
    made: list[Notifier] = []
    yield made
    for notifier in made:
        notifier.close()


def notifier(made: list[Notifier], environ: dict[str, str]) -> Notifier:
    result = Notifier(environ)
    made.append(result)
    return result


def test_send_is_one_datagram(receiver, notifier_factory):
    """``send`` delivers all its lines as a single newline-joined datagram."""
    sock, path = receiver
    note = notifier(notifier_factory, {"NOTIFY_SOCKET": path})
    assert note.enabled
    note.send("READY=1", "STATUS=x")
    note.send("WATCHDOG=1")
    assert sock.recv(4096) == b"READY=1\nSTATUS=x"
    assert sock.recv(4096) == b"WATCHDOG=1"


def test_abstract_namespace_socket(notifier_factory):
    """A ``@name`` address reaches a socket bound in the abstract namespace."""
    name = f"credrefresh-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(RECEIVE_TIMEOUT)
        note = notifier(notifier_factory, {"NOTIFY_SOCKET": "@" + name})
        note.send("READY=1", "STATUS=2 fresh, 0 failing")
        assert sock.recv(4096) == b"READY=1\nSTATUS=2 fresh, 0 failing"


@pytest.mark.parametrize("environ", [{}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "relative"}])
def test_without_a_usable_notify_socket_send_is_a_no_op(environ, notifier_factory):
    """Without an absolute or abstract ``NOTIFY_SOCKET`` the notifier is disabled and silent."""
    note = notifier(notifier_factory, environ)
    assert not note.enabled
    note.send("READY=1")


def test_send_to_a_socket_that_went_away_does_not_raise(receiver, notifier_factory):
    """Once the manager's socket is closed and removed, sending is silently dropped."""
    sock, path = receiver
    note = notifier(notifier_factory, {"NOTIFY_SOCKET": path})
    sock.close()
    note.send("STOPPING=1")  # bound but nobody reading: ECONNREFUSED
    os.unlink(path)
    note.send("STOPPING=1")  # gone: ENOENT
    assert note.enabled


def test_a_stuck_manager_never_blocks_send(receiver, notifier_factory):
    """When nobody drains the socket and its queue is full, ``send`` drops messages, not blocks."""
    sock, path = receiver
    note = notifier(notifier_factory, {"NOTIFY_SOCKET": path})
    # Far more than the kernel queues (net.unix.max_dgram_qlen, 10 by default) or buffers.
    sender = threading.Thread(
        target=lambda: [note.send("WATCHDOG=1", f"STATUS={n}") for n in range(5000)], daemon=True
    )
    sender.start()
    sender.join(timeout=RECEIVE_TIMEOUT)
    assert not sender.is_alive(), "send blocked on a full notify socket"
    assert sock.recv(4096) == b"WATCHDOG=1\nSTATUS=0"


def test_send_after_close_is_a_no_op(receiver, notifier_factory):
    """After ``close`` the notifier is disabled and sends nothing."""
    sock, path = receiver
    note = notifier(notifier_factory, {"NOTIFY_SOCKET": path})
    note.close()
    assert not note.enabled
    note.send("READY=1")
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(4096)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "1"}, 0.0000005),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "garbage"}, None),
        ({}, None),
        ({"WATCHDOG_PID": str(os.getpid())}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "garbage"}, None),
        ({"WATCHDOG_USEC": "-30000000"}, None),
        ({"WATCHDOG_USEC": "1.5"}, None),
        ({"WATCHDOG_USEC": " 30000000"}, None),
    ],
)
def test_watchdog_interval(environ, expected):
    """Half of ``WATCHDOG_USEC`` in seconds, for our pid only; None when unset, zero or garbage."""
    assert watchdog_interval(environ) == expected


def test_watchdog_interval_superscript_digit_is_garbage():
    """A value that ``int`` cannot parse is garbage too, and yields None rather than an error."""
    assert watchdog_interval({"WATCHDOG_USEC": "\u00b2"}) is None
