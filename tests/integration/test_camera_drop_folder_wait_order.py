"""The agent's camera watching a drop folder (``watch: true``) of plain (text) PNMs whose last sample ends the file,
as a line camera writes them one per part: each waits ``CUT_SHORT_WAIT_S`` (its last digits may still be being
written) and must then be handed on in the order the files were written, or the line's parts are judged out of
sequence (a reject gate acting on the wrong part). The watcher's polls are as the machine's load makes them; the
watcher's monotonic clock is the test's here, so that the polls fall where a loaded machine can put them."""

from __future__ import annotations

import asyncio
import sys
import time
import types

import devices.camera.capture as capture
from devices.camera.capture import CameraSource
from devices.camera.settings import CameraSettings
from tests.integration.test_camera_drop_folder_by_content import connected
from tests.integration.test_camera_source import take


class PollClock:
    """The watcher's ``time.monotonic``, set by the test; counts the polls that read it."""

    def __init__(self) -> None:
        self.now, self.polls = 1000.0, 0

    def monotonic(self) -> float:
        if sys._getframe(1).f_code.co_name == "_watch_folder":
            self.polls += 1
        return self.now

    async def poll_at(self, t: float) -> None:
        """One whole poll of the watcher at ``1000 + t``."""
        self.now, at = 1000.0 + t, self.polls
        for _ in range(6000):
            if self.polls >= at + 2:  # a poll began after the clock was set, and has ended
                return
            await asyncio.sleep(0.005)
        raise AssertionError("the watcher stopped polling")


def plain_pgm(value: int) -> bytes:
    return ("P2\n6 4\n255\n" + " ".join([str(value)] * 24)).encode()  # no line end after its last sample


async def test_plain_pnms_waiting_for_their_last_digits_are_handed_on_in_the_order_written(
    tmp_path, monkeypatch
):
    """Each waiting file was read again every 0.25 s from when it was first seen, and read for good at the first of
    those reads past its wait: two parts written 0.1 s apart, whose reads the polls of a loaded machine had put at
    different times, were handed on in the reverse order when the earlier's last read fell just short of its wait
    (seen at a load of 8). Each waiting file is now read again at the end of its wait: the file seen first is read
    first, those seen in one poll in the order written."""
    clock = PollClock()
    monkeypatch.setattr(
        capture,
        "time",
        types.SimpleNamespace(time=time.time, thread_time=time.thread_time, monotonic=clock.monotonic),
    )
    drop = tmp_path / "drop"
    drop.mkdir()
    src = CameraSource("cam", CameraSettings(url=str(drop), watch=True, settle_ms=50, keep_files=None))
    await src.start()
    try:
        await connected(src)
        for name, value, t in (("part_0001.pgm", 1, 0.0), ("part_0002.pgm", 2, 0.1)):
            clock.now = 1000.0 + t
            (drop / name).write_bytes(plain_pgm(value))
            for _ in range(3000):  # settled, and found waiting for its last digits
                if name in src._cut:
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError(f"{name} was never found waiting for its last digits")
        # the two files' reads, each 0.25 s or more after the last (later when a poll comes late), never in one poll:
        # part_0001's at 0.3, 0.765, ... 4.95, just short of its wait; part_0002's 0.23 s after each
        for i in range(11):
            await clock.poll_at(0.3 + 0.465 * i)
            await clock.poll_at(0.53 + 0.465 * i)
        await clock.poll_at(6.0)
        frames = await take(src, 2, 10)
    finally:
        await src.stop()
    assert [int(f.image[0, 0, 0]) for f in frames] == [1, 2]
    assert src.stats.errors_by_reason == {}, src.stats.errors_by_reason
