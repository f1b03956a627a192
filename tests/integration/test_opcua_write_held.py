"""What ``OpcUaSource`` does with a BaseDataType write target whose held type changes under it, against a real
asyncua server on a free loopback port (which, like many gateways and soft PLCs, holds the type of the value
last written to such a node): a node that flaps between two types is not said at every change, for months."""

from __future__ import annotations

import logging

import pytest
from asyncua import ua

from devices.opcua import client as opcua_client
from devices.opcua.client import OpcUaSource, OpcUaTypeMismatch
from tests.integration.test_plc_exact_values import _config
from tests.integration.test_plc_retyped_nodes import _any_state
from tests.support.peers import free_port, opcua_server
from tests.support.waits import until

VT = ua.VariantType


async def _holds(state, value: ua.Variant) -> None:
    """The PLC makes ``state`` hold ``value`` (its type with it)."""
    await state.write_value(ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadWaitingForInitialData)))
    await state.write_value(value)


async def test_a_base_data_type_node_whose_held_type_flaps_is_said_once_per_spell_and_counted(
    caplog, monkeypatch
):
    """A BaseDataType node that a PLC program retypes again and again (String, Boolean, String, ...) was said
    at each re-read that found it changed (``write target ... now holds Boolean``, then ``... fits its writes
    again``): at most twice a second per node for as long as the outputs' results came, a gateway's log filled
    over months. Now the first change is said, the first of a spell of changes within HELD_QUIET_S is said
    once, and the rest are counted (notice held_type_changes); a change after a quiet spell is said again
    with the count of those not said. Each change is still read and judged."""
    monkeypatch.setattr(opcua_client, "HELD_RECHECK_S", 0.0)  # each refusal reads it again
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    state = await _any_state(srv, idx, obj)  # holds the String "idle"
    await srv.start()
    node_id = f"ns={idx};s=State"
    src = OpcUaSource("plc", _config(port).sources["plc"])
    src.expect_writes([(node_id, True), (node_id, False)])
    await src.start()
    caplog.set_level(logging.INFO)
    flips = 6
    try:
        await until(lambda: node_id in src.target_errors, 10, "the String it holds judged at connect")
        for _ in range(flips):
            await _holds(state, ua.Variant("idle", VT.String))
            with pytest.raises(OpcUaTypeMismatch, match="holding a String"):
                await src.write(node_id, True)  # the write reads what it holds: a String
            await _holds(state, ua.Variant(False, VT.Boolean))
            assert src.write_misfit(node_id, False, after=True) is not None  # refused: read again
            await until(lambda: src._types[node_id].held is VT.Boolean, 10, "the Boolean read again")
            await until(lambda: not src._target_checks, 10, "the target judged again")
            assert node_id not in src.target_errors, src.target_errors
        said = [r.getMessage() for r in caplog.records if "now holds" in r.getMessage()]
        assert len(said) == 2, said  # the first change, and the first of the spell that followed
        fits = [r.getMessage() for r in caplog.records if "fits its writes again" in r.getMessage()]
        assert len(fits) == 1, fits
        assert src.notices.counts["held_type_changes"] == flips - 1, src.notices.counts
        # it then holds one type for HELD_QUIET_S: its next change is said, with those not said meanwhile
        last, unsaid = src._held_changes[node_id]
        src._held_changes[node_id] = (last - opcua_client.HELD_QUIET_S, unsaid)
        caplog.clear()
        await _holds(state, ua.Variant("idle", VT.String))
        with pytest.raises(OpcUaTypeMismatch, match="holding a String"):
            await src.write(node_id, True)
        await _holds(state, ua.Variant(False, VT.Boolean))
        assert src.write_misfit(node_id, False, after=True) is not None
        await until(lambda: src._types[node_id].held is VT.Boolean, 10, "the Boolean read again")
        await until(lambda: not src._target_checks, 10, "the target judged again")
        said = [r.getMessage() for r in caplog.records if "now holds" in r.getMessage()]
        assert len(said) == 1 and f"after {flips - 1} change(s) within" in said[0], said
    finally:
        await src.stop()
        await srv.stop()
