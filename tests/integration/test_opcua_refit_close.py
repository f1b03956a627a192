"""The source's read of a node left out for its size (on a one-off connection of its own, ``_refit``) against a PLC
that takes the connection and then answers nothing (hung, busy): the read times out, or the source is stopped
during it, and the one-off connection is closed either way. Before, its close waited 1 s for the CloseSession's
answer inside a time limit whose cancellation skipped asyncua's socket close: the connection stayed open for good,
one more at every refit while the PLC stayed silent, and one at a stop (``docs/opcua-and-machine.md``)."""

from __future__ import annotations

import asyncio

import pytest

import devices.opcua.client as opcua
from devices.opcua.client import OpcUaSource
from tests.integration.test_opcua_connection_lost import _plc
from tests.integration.test_opcua_halt_recovery import _settings
from tests.support.peers import free_port
from tests.support.waits import until


class _SilentAfter:
    """A relay to the PLC that drops what the gateway sends once ``stall`` is set; ``open``: connections the
    gateway has not ended."""

    def __init__(self, upstream: int) -> None:
        self.upstream, self.stall, self.open = upstream, False, 0

    async def start(self) -> int:
        self.srv = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.srv.sockets[0].getsockname()[1]

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.open += 1
        ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream)

        async def pipe(a: asyncio.StreamReader, b: asyncio.StreamWriter, held: bool) -> None:
            try:
                while data := await a.read(65536):
                    if not (held and self.stall):
                        b.write(data)
            except Exception:
                pass

        back = asyncio.create_task(pipe(ur, w, False))
        await pipe(r, uw, True)  # ends at the gateway's end of the connection (its FIN or reset)
        self.open -= 1
        back.cancel()
        uw.close()


@pytest.mark.parametrize("stopped", [False, True], ids=["read-timed-out", "stopped-during-read"])
async def test_a_refit_read_the_plc_leaves_unanswered_closes_its_connection(monkeypatch, stopped) -> None:
    port = free_port()
    srv, idx = await _plc(port)
    relay = _SilentAfter(port)
    rport = await relay.start()
    src = OpcUaSource(
        "plc", _settings(rport, connect_timeout_s=1, reconnect_initial_s=0.1, reconnect_max_s=0.1)
    )
    src._too_big = {f"ns={idx};s=Speed": 10_000_000}
    one_off = opcua._one_off_client

    async def then_silent(settings, what):
        got = await one_off(settings, what)
        relay.stall = True  # connected: the PLC answers nothing more
        monkeypatch.setattr(opcua, "REFIT_MIN_S", 600.0)  # no second refit within the test
        return got

    monkeypatch.setattr(opcua, "REFIT_MIN_S", 0.1)
    monkeypatch.setattr(opcua, "_one_off_client", then_silent)
    task = asyncio.create_task(src._refit())
    try:
        await until(lambda: relay.stall, 30, "the refit's one-off connection made")
        assert relay.open == 1
        if stopped:
            await asyncio.sleep(0.3)  # within the read's 2-s limit
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), 30)
        await until(lambda: relay.open == 0, 30, "the one-off connection closed")
    finally:
        task.cancel()
        relay.srv.close()
        await srv.stop()
