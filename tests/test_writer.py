"""Tests of the daemon's writer: how far apart its writes of the credentials file are.

A file written every ``write_delay`` costs a re-copy of the whole file per write; at 10,000
profiles (9.5 MB) and a few refreshes a second that was most of ``run``'s CPU. A large file is
now spaced by its size (``spacing``), unless something urgent waits: a profile the file holds
nothing good for, a removal, or a retry after a failed write.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import anyio
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run straight from a checkout, without installing
    sys.path.insert(0, str(REPO))

from credrefresh.writer import SPACING_MAX, Writer, spacing  # noqa: E402
from test_credfile import NOW, make_issued  # noqa: E402

MB = 1_000_000


class Ticks:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def big_file(path: Path, size: int) -> None:
    """A credentials file of about ``size`` bytes: one foreign profile and a long comment."""
    line = "# " + "x" * 98 + "\n"
    path.write_text("[foreign]\naws_access_key_id = AKIDEXAMPLE\n" + line * (size // len(line)))


@pytest.mark.parametrize(
    ("size", "delay", "expected"),
    [
        (0, 1.0, 1.0),  # an empty file: write_delay
        (950_000, 1.0, 1.0),  # 1000 profiles: write_delay, as before
        (9_500_000, 1.0, 9.5),  # 10,000 profiles: one second per MB
        (3 * MB, 5.0, 5.0),  # write_delay is the least
        (200 * MB, 1.0, SPACING_MAX),  # and SPACING_MAX the most
        (2 * MB, 0.0, 2.0),
    ],
)
def test_spacing_grows_with_the_file(size: int, delay: float, expected: float) -> None:
    assert spacing(size, delay) == pytest.approx(expected)


def flush_one(writer: Writer, name: str, seed: int) -> None:
    async def go() -> None:
        writer.add(make_issued(name, seed, now=NOW))
        outcome = await writer.flush(NOW)
        assert outcome is not None
        assert outcome.error is None

    anyio.run(go)


def written(
    tmp_path: Path, size: int, delay: float, clock: Ticks | None = None
) -> tuple[Writer, Path]:
    """A writer that has just written ``dev`` into a credentials file of about ``size`` bytes."""
    path = tmp_path / "credentials"
    if size:
        big_file(path, size)
    writer = Writer(str(path), delay, monotonic=clock or time.monotonic)
    flush_one(writer, "dev", 1)  # urgent (the default)
    return writer, path


def test_a_large_file_waits_for_its_spacing_unless_urgent(tmp_path: Path) -> None:
    """After a write of a 3 MB file, an ordinary refresh waits 3 s; an urgent one the delay."""
    clock = Ticks()
    writer, path = written(tmp_path, 3 * MB, 0.5, clock)
    assert path.stat().st_size > 3 * MB - 200

    writer.add(make_issued("dev", 2, now=NOW), urgent=False)
    assert writer.wait_s() == pytest.approx(spacing(path.stat().st_size, 0.5))
    assert writer.wait_s() > 2.9
    clock.t += 1.0
    assert writer.wait_s() == pytest.approx(spacing(path.stat().st_size, 0.5) - 1.0)

    writer.add(make_issued("prod", 1, now=NOW))  # urgent: the file holds nothing for it
    assert writer.wait_s() == 0.0  # the delay (0.5 s) has passed
    clock.t -= 0.75
    assert writer.wait_s() == pytest.approx(0.25)


def test_a_removal_is_urgent(tmp_path: Path) -> None:
    writer, _ = written(tmp_path, 3 * MB, 0.5, Ticks())
    writer.add(make_issued("dev", 2, now=NOW), urgent=False)
    assert writer.wait_s() > 2.9
    writer.remove("dev")
    assert writer.wait_s() == pytest.approx(0.5)


def test_urgency_lasts_until_the_next_flush(tmp_path: Path) -> None:
    """Once written, the next ordinary refresh waits for the spacing again."""
    writer, _ = written(tmp_path, 3 * MB, 0.5, Ticks())  # its write was urgent
    writer.add(make_issued("dev", 2, now=NOW), urgent=False)
    assert writer.wait_s() > 2.9


def test_a_small_file_keeps_write_delay(tmp_path: Path) -> None:
    writer, _ = written(tmp_path, 0, 1.0, Ticks())
    writer.add(make_issued("dev", 2, now=NOW), urgent=False)
    assert writer.wait_s() == pytest.approx(1.0)


def test_an_urgent_change_cuts_a_spacing_wait_short(tmp_path: Path) -> None:
    """``wait_due`` returns when something urgent arrives, not when the spacing ends."""
    writer, _ = written(tmp_path, 8 * MB, 0.0)  # a spacing of 8 s
    waited = anyio.Event()

    async def go() -> None:
        writer.add(make_issued("dev", 2, now=NOW), urgent=False)
        assert writer.wait_s() > 5
        async with anyio.create_task_group() as tg:

            async def wait() -> None:
                await writer.wait_due()
                waited.set()

            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            assert not waited.is_set()
            writer.add(make_issued("prod", 1, now=NOW))
            with anyio.fail_after(4):  # half the spacing: only the urgent change ends the wait
                await waited.wait()

    anyio.run(go)


def test_nothing_pending_is_never_spaced(tmp_path: Path) -> None:
    """With nothing to write, the write loop's wait for the spacing ends at once."""
    writer, _ = written(tmp_path, 8 * MB, 0.0)
    assert writer.wait_s() > 5  # what a pending ordinary refresh would wait

    async def go() -> None:
        with anyio.fail_after(4):
            await writer.wait_due()

    anyio.run(go)


def test_a_new_delay_spaces_the_next_write(tmp_path: Path) -> None:
    """``set_delay`` (a reload) moves the next write, not only the ones after it."""
    writer, _ = written(tmp_path, 0, 10.0, Ticks())
    writer.add(make_issued("dev", 2, now=NOW))
    assert writer.wait_s() == pytest.approx(10.0)
    writer.set_delay(0.5)
    assert writer.wait_s() == pytest.approx(0.5)
    writer.set_delay(30.0)
    assert writer.wait_s() == pytest.approx(30.0)


def test_a_new_delay_leaves_a_failed_write_s_backoff(tmp_path: Path) -> None:
    """After a failed write only its backoff spaces the retry."""
    path = tmp_path / "credentials"
    path.mkdir()  # a directory where the file should be: the write fails
    clock = Ticks()
    writer = Writer(str(path), 0.0, monotonic=clock)

    async def go() -> None:
        writer.add(make_issued("dev", 1, now=NOW))
        outcome = await writer.flush(NOW)
        assert outcome is not None
        assert outcome.error is not None

    anyio.run(go)
    backoff = writer.wait_s()
    assert backoff > 0
    writer.set_delay(9.0)
    assert writer.wait_s() == backoff
