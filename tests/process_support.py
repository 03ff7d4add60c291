"""Run credrefresh as a real subprocess: read its JSON log lines and its sd_notify datagrams,
with bounded waits (a reader thread feeds a queue; the test waits on the queue)."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Event = dict[str, Any]


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment with nothing from the developer's AWS setup, HOME in tmp_path."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "NOTIFY_SOCKET", "WATCHDOG_", "STATE_DIRECTORY", "XDG_"))
    }
    env.update(
        HOME=str(tmp_path),
        AWS_ACCESS_KEY_ID="AKIASOURCEEXAMPLE000",
        AWS_SECRET_ACCESS_KEY="source-secret-not-real",
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class NotifySocket:
    """A real AF_UNIX datagram socket to pass as NOTIFY_SOCKET, drained by a reader thread
    (like systemd, it always reads, so the sender's queue never fills)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._changed = threading.Condition()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closing.is_set():
            try:
                message = self.sock.recv(65536).decode()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._changed:
                self.messages.append(message)
                self._changed.notify_all()

    def wait_for(
        self, predicate: Callable[[str], bool], timeout: float = 20.0, start: int = 0
    ) -> int:
        """Index of the first datagram from ``start`` on that matches, waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for index in range(start, len(self.messages)):
                    if predicate(self.messages[index]):
                        return index
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no matching notify message; got {self.messages!r}")
                self._changed.wait(remaining)

    def close(self) -> None:
        self._closing.set()
        self._thread.join(5)
        self.sock.close()


class Proc:
    """A credrefresh subprocess whose stdout JSON events are collected as they arrive."""

    def __init__(
        self,
        args: Sequence[str],
        env: dict[str, str],
        preexec_fn: Callable[[], object] | None = None,
    ) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "credrefresh", *args],
            env=env,
            preexec_fn=preexec_fn,  # noqa: PLW1509 - only setrlimit, before exec
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: list[Event] = []
        self.raw: list[str] = []
        self.stderr = ""
        self._queue: queue.Queue[Event | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._err_reader = threading.Thread(target=self._read_err, daemon=True)
        self._err_reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.raw.append(line)
            event = json.loads(line)  # every stdout line must be one JSON object
            self._queue.put(event)
        self._queue.put(None)

    def _read_err(self) -> None:
        assert self.popen.stderr is not None
        self.stderr = self.popen.stderr.read()

    def _drain(self, timeout: float) -> bool:
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return True
        if item is None:
            return False
        self.events.append(item)
        return True

    def named(self, name: str) -> list[Event]:
        return [e for e in self.events if e["event"] == name]

    def wait_for(self, predicate: Callable[[list[Event]], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.events):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                names = [e["event"] for e in self.events][-30:]
                raise TimeoutError(f"condition not met; last events {names}; {self.stderr}")
            if not self._drain(remaining) and not predicate(self.events):
                raise AssertionError(f"process exited early: {self.stderr}")

    def wait_count(self, name: str, count: int, timeout: float = 30.0) -> None:
        self.wait_for(lambda _: len(self.named(name)) >= count, timeout)

    def signal(self, signum: signal.Signals) -> None:
        self.popen.send_signal(signum)

    def wait_exit(self, timeout: float = 30.0) -> int:
        code = self.popen.wait(timeout=timeout)
        self._reader.join(timeout)
        self._err_reader.join(timeout)
        while self._drain(0):
            if self._queue.empty() and not self._reader.is_alive():
                break
        return code

    def output(self) -> str:
        return "".join(self.raw) + self.stderr

    def kill(self) -> None:
        """End the process (by its pid) if still running, and close its pipes."""
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)
        self._reader.join(10)
        self._err_reader.join(10)
        for pipe in (self.popen.stdout, self.popen.stderr):
            if pipe is not None:
                pipe.close()


def run_cli(
    args: Sequence[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run a short credrefresh command to completion."""
    return subprocess.run(
        [sys.executable, "-m", "credrefresh", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def write_config(
    path: Path, credentials: Path, endpoint: str, profiles: Sequence[str], **top: Any
) -> Path:
    """A TOML config with one role per profile."""
    lines = [
        f'credentials_file = "{credentials}"',
        'region = "us-east-1"',
        f'sts_endpoint_url = "{endpoint}"',
        f'state_file = "{path.parent / "state.json"}"',
    ]
    refresh = top.pop("refresh", None)
    source = top.pop("source", None)
    lines += [f"{k} = {json.dumps(v)}" for k, v in top.items()]
    if refresh:
        lines.append("[refresh]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in refresh.items()]
    if source:
        lines.append("[source]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in source.items()]
    for profile in profiles:
        lines += [
            "[[roles]]",
            f'profile = "{profile}"',
            f'role_arn = "arn:aws:iam::123456789012:role/{profile}"',
        ]
    path.write_text("\n".join(lines) + "\n")
    return path
