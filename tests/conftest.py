"""Shared fixtures: the anyio backend and a scripted in-process STS client."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """The daemon runs on asyncio; test it there."""
    return "asyncio"


@pytest.fixture(scope="session")
def moto_url():
    """moto's STS server on loopback, shared by the session."""
    from moto.server import ThreadedMotoServer  # noqa: PLC0415 - heavy import, only when used

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def fake_sts():
    """Our fake STS (real HTTP/XML protocol) on loopback, with zero latency by default."""
    from support.fakests import Faults, ThreadedFakeSTS  # noqa: PLC0415

    with ThreadedFakeSTS(Faults(latency=0)) as server:
        yield server
