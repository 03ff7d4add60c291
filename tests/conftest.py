"""Shared fixtures: the anyio backend and a scripted in-process STS client."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """The daemon runs on asyncio; test it there."""
    return "asyncio"
