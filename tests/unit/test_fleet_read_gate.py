"""The fleet service's read gate (``cloud_trainer.fleet.guard._read_gated``, bd4662f): a batch waits for a place
among its tenant's reads and for room together at most ``in_flight_wait_s``, then is read all the same and flagged
for its refusal (``RESOURCE_EXHAUSTED``; read first, as an agent whose message was refused half sent saw INTERNAL).
Found in review: the wait for a place had no bound (behind a queue of its tenant's streams a batch waited up to 7
times the bound, past the agent's 60 s for an acknowledgement)."""

from __future__ import annotations

import asyncio

from cloud_trainer.fleet.guard import _read_gated


async def test_a_batch_that_finds_no_place_within_the_wait_is_flagged_for_refusal_and_read_within_a_place():
    gate = asyncio.Semaphore(1)
    await gate.acquire()  # the tenant's one place: another stream's read, done after the wait
    asked: list[float] = []

    async def reserve(deadline: float) -> tuple[int, bool]:
        asked.append(deadline - asyncio.get_running_loop().time())  # the wait left: none
        return 100, True  # there is room, but the place came late

    freed: list[bool] = []  # whether the other stream's place was given back when the batch was read

    async def messages():
        freed.append(bool(released))
        yield b"batch"

    released: list[bool] = []

    def release() -> None:
        released.append(True)
        gate.release()

    asyncio.get_running_loop().call_later(0.6, release)  # past the 0.3-s wait
    got = await _read_gated(lambda: gate, messages(), reserve, lambda n: None, 0.3)
    assert freed == [True]  # read once a place was free, not before: bounded memory
    assert got == (100, False, b"batch") and asked[0] <= 0.0
    assert not gate.locked()  # its place given back


async def test_a_batch_with_a_place_and_room_is_read_and_its_place_given_back():
    gate = asyncio.Semaphore(1)

    async def reserve(deadline: float) -> tuple[int, bool]:
        return 100, True

    async def messages():
        yield b"batch"

    assert await _read_gated(lambda: gate, messages(), reserve, lambda n: None, 1.0) == (100, True, b"batch")
    assert not gate.locked()
