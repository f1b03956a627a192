"""OPC UA source: values that fit ``max_message_bytes`` one by one but not together in one Publish answer, and
a value that does not fit alone, against a real asyncua server."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from asyncua import ua

from devices.base import ConnectionState, Quality, Reading
from devices.opcua.client import OpcUaSource
from devices.opcua.settings import OpcUaSettings
from tests.integration.test_opcua_source import _collect
from tests.support.peers import free_port, opcua_server
from tests.support.waits import until

LIMIT = 1024 * 1024


def _settings(port: int, nodes: list[str]) -> OpcUaSettings:
    return OpcUaSettings(
        endpoint=f"opc.tcp://127.0.0.1:{port}/plc/",
        nodes=[{"node_id": n} for n in nodes],
        publishing_interval_ms=50,
        reconnect_initial_s=0.1,
        reconnect_max_s=0.5,
        connect_timeout_s=2.0,
        keepalive_check_s=0.3,
        max_message_bytes=LIMIT,
    )


async def _server(port: int):
    """A server with an image (a ByteString of 0.8 MB), a profile (40,000 doubles: 0.32 MB) and a force:
    each under the 1 MiB limit, together over it (the first Publish answer carries all three)."""
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:together", "Line")
    await obj.add_variable(
        ua.NodeId("Image", idx), "Image", ua.Variant(b"\x07" * 800_000, ua.VariantType.ByteString)
    )
    await obj.add_variable(
        ua.NodeId("Profile", idx), "Profile", ua.Variant([0.5] * 40_000, ua.VariantType.Double)
    )
    await obj.add_variable(ua.NodeId("Force", idx), "Force", ua.Variant(1.5, ua.VariantType.Double))
    return srv, idx, obj


async def test_values_over_the_limit_together_arrive_once_the_largest_is_subscribed_apart(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No node's value is over max_message_bytes, but the server sends them in one Publish answer that is
    (1.12 MB over 1 MiB): the connection is closed (too_large), and the next one reads each value on its own,
    names the largest in the log and subscribes it on its own: every node arrives, whole."""
    port = free_port()
    srv, idx, _ = await _server(port)
    await srv.start()
    src = OpcUaSource(
        "plc", _settings(port, [f"ns={idx};s=Image", f"ns={idx};s=Profile", f"ns={idx};s=Force"])
    )
    caplog.set_level(logging.INFO, logger="devices.opcua")
    await src.start()
    try:
        got = await _collect(src, {"Image", "Profile", "Force"}, timeout_s=10)
    finally:
        await src.stop()
        await srv.stop()
    assert len(got["Image"].value) == 800_000 and len(got["Profile"].value) == 40_000, got.keys()
    assert got["Force"].value == 1.5
    assert src.stats.errors_by_reason.get("too_large", 0) >= 1, src.stats.errors_by_reason
    said = [r.getMessage() for r in caplog.records if "subscribed on their own" in r.getMessage()]
    assert said and f"ns={idx};s=Image (" in said[0] and "Profile" not in said[0], said


async def test_a_value_over_the_limit_alone_is_named_and_left_out_and_the_others_arrive() -> None:
    """A node whose value alone is over max_message_bytes, beside nodes that fit: the node is named (node
    error, with the size it reached) and not subscribed; every other node arrives."""
    port = free_port()
    srv, idx, obj = await _server(port)
    await obj.add_variable(
        ua.NodeId("Scan", idx), "Scan", ua.Variant([0.25] * 200_000, ua.VariantType.Double)
    )  # 1.6 MB
    await srv.start()
    src = OpcUaSource(
        "plc", _settings(port, [f"ns={idx};s=Scan", f"ns={idx};s=Force", f"ns={idx};s=Profile"])
    )
    await src.start()
    try:
        got = await _collect(src, {"Force", "Profile"}, timeout_s=10)
    finally:
        await src.stop()
        await srv.stop()
    assert got["Force"].value == 1.5 and len(got["Profile"].value) == 40_000
    said = src.node_errors.get(f"ns={idx};s=Scan", "")
    assert "its value alone reached" in said and "over max_message_bytes 1048576" in said, src.node_errors


async def test_a_single_node_over_the_limit_is_left_out_keeping_the_session_until_its_value_fits() -> None:
    """A source of one node whose value alone is over max_message_bytes: after the connections it closed (its
    Publish answer, then the read that measured it alone: the answer over the limit might have been another
    read's), the node is named (node_errors, and on /status under silent_drops) and left out, and the next
    session stays up. Before, every session ended so (a reconnect at each backoff pause, each leaving a session on
    the PLC: 8 sessions in a minute at the default backoff). Once its value fits, it is subscribed and arrives."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:alone", "Line")
    scan = await obj.add_variable(
        ua.NodeId("Scan", idx), "Scan", ua.Variant([0.25] * 200_000, ua.VariantType.Double)
    )  # 1.6 MB
    await srv.start()
    src = OpcUaSource("plc", _settings(port, [f"ns={idx};s=Scan"]))
    await src.start()
    try:
        await until(lambda: f"ns={idx};s=Scan" in src.node_errors, 30, "the node named")
        await until(lambda: src.state is ConnectionState.CONNECTED, 30, "the next session")
        reconnects = src.stats.reconnects
        await asyncio.sleep(2.0)  # six checks of the session, one read of the node for its size
        kept = (src.state, src.stats.reconnects - reconnects, dict(src.stats.errors_by_reason))
        said = src.node_errors[f"ns={idx};s=Scan"]
        shown = src.notices.status().get("value_too_large", {}).get("message", "")
        await scan.write_value(ua.Variant([0.5] * 1000, ua.VariantType.Double))
        got = await _collect(src, {"Scan"}, timeout_s=10)
    finally:
        await src.stop()
        await srv.stop()
    assert kept == (ConnectionState.CONNECTED, 0, {"too_large": 2}), kept
    assert "its value alone reached" in said and "over max_message_bytes 1048576" in said, said
    assert f"ns={idx};s=Scan" in shown and "its value alone reached" in shown, shown
    assert list(got["Scan"].value) == [0.5] * 1000 and f"ns={idx};s=Scan" not in src.node_errors


async def test_a_write_targets_large_value_is_not_charged_to_the_one_subscribed_tag() -> None:
    """A source of one small tag (a Double) and a write target of BaseDataType holding 150,000 Doubles (1.2 MB, over
    max_message_bytes): the target's value, read to know the type it holds, closes each connection. 57fbe38 charged
    any answer over the limit in a session of one monitored item to that item: the tag was named too large and left
    out (found in review). It is measured alone first: it fits, so it is never named nor left out."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:target", "Line")
    await obj.add_variable(ua.NodeId("Small", idx), "Small", ua.Variant(1.5, ua.VariantType.Double))
    big = await obj.add_variable(
        ua.NodeId("Big", idx), "Big", ua.Variant([0.5] * 150_000, ua.VariantType.Double)
    )
    await big.write_attribute(
        ua.AttributeIds.DataType,
        ua.DataValue(ua.Variant(ua.NodeId(ua.ObjectIds.BaseDataType), ua.VariantType.NodeId)),
    )
    await big.set_writable()
    await srv.start()
    src = OpcUaSource("plc", _settings(port, [f"ns={idx};s=Small"]))
    src.expect_writes([(f"ns={idx};s=Big", 1.0)])
    await src.start()
    try:
        await until(
            lambda: src.stats.errors_by_reason.get("too_large", 0) >= 3,
            20,
            "the target's reads over the limit",
        )
    finally:
        await src.stop()
        await srv.stop()
    assert f"ns={idx};s=Small" not in src.node_errors, src.node_errors
    assert f"ns={idx};s=Small" not in src.notices.status().get("value_too_large", {}).get("message", "")


async def test_a_large_values_own_subscription_that_stalls_turns_its_tag_bad_and_the_value_comes_again() -> (
    None
):
    """The subscription a large value was given on its own stops publishing (no data, no keep-alive) while the
    session, its reads and the other subscription go on: it is watched as the main one is: the tag gets a BAD
    reading, the source says which node's subscription stalled and reconnects, and the value written meanwhile
    arrives GOOD. Before, nothing was said and the node stayed at its last value (measured: 20 s, no reading)."""
    port = free_port()
    srv, idx, _ = await _server(port)
    image = srv.get_node(f"ns={idx};s=Image")
    await srv.start()
    src = OpcUaSource(
        "plc", _settings(port, [f"ns={idx};s=Image", f"ns={idx};s=Profile", f"ns={idx};s=Force"])
    )
    got: list[Reading] = []

    async def read() -> None:
        async for r in src.items():
            got.append(r)

    async def silent(requestdata=None) -> bool:
        return False

    await src.start()
    reader = asyncio.create_task(read())
    try:
        await until(lambda: {"Image", "Profile", "Force"} <= {r.tag for r in got}, 30, "every node")
        subs = srv.iserver.subscription_service.subscriptions.values()
        own = [
            s
            for s in subs
            if [m.read_value_id.NodeId for m in s.monitored_item_srv._monitored_items.values()]
            == [image.nodeid]
        ]
        assert len(own) == 1, "Image has a subscription of its own"
        own[0].publish_results = silent  # a stalled subscription: the server's others go on
        n = len(got)
        await image.write_value(ua.Variant(b"\x09" * 800_000, ua.VariantType.ByteString))
        await until(
            lambda: any(r.tag == "Image" and r.quality is Quality.GOOD for r in got[n:]),
            30,
            "Image GOOD again",
        )
    finally:
        reader.cancel()
        await src.stop()
        await srv.stop()
    images = [r for r in got[n:] if r.tag == "Image"]
    assert images[0].quality is Quality.BAD and images[0].value is None, images
    assert images[-1].value[0] == 9 and len(images[-1].value) == 800_000, images[-1]
    assert src.stats.errors_by_reason.get("stalled") == 1, src.stats.errors_by_reason
    assert f"subscription of node 'ns={idx};s=Image'" in (src.stats.last_error or ""), src.stats.last_error


def _one_session_at_a_time(srv) -> list[float]:
    """The server refuses a session (BadTooManySessions) while another connection holds one: a PLC that allows
    one session. The times it refused one, returned."""
    refused: list[float] = []
    create = srv.iserver.create_session

    def limited(*args, **kwargs):
        if any(c.processor is not None and c.processor.session is not None for c in srv.bserver.clients):
            refused.append(time.monotonic())
            raise ua.UaStatusCodeError(ua.StatusCodes.BadTooManySessions)
        return create(*args, **kwargs)

    srv.iserver.create_session = limited
    return refused


async def test_a_node_left_out_for_its_size_is_read_again_on_the_session_when_the_plc_refuses_a_second() -> (
    None
):
    """A PLC that allows one session refuses the connection a node left out for its size is read again on: it
    is read on the source's session instead. Still too large, that closes the session once (the source
    reconnects without it, the other node goes on); once it fits, it is subscribed and arrives. Before, every
    read again was refused and the node stayed out for good."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:one-session", "Line")
    scan = await obj.add_variable(
        ua.NodeId("Scan", idx), "Scan", ua.Variant([0.25] * 200_000, ua.VariantType.Double)
    )  # 1.6 MB
    await obj.add_variable(ua.NodeId("Force", idx), "Force", ua.Variant(1.5, ua.VariantType.Double))
    await srv.start()
    refused = _one_session_at_a_time(srv)
    src = OpcUaSource("plc", _settings(port, [f"ns={idx};s=Scan", f"ns={idx};s=Force"]))
    await src.start()
    try:
        await until(lambda: f"ns={idx};s=Scan" in src.node_errors, 30, "the node named")
        too_large = src.stats.errors_by_reason["too_large"]
        await until(
            lambda: src.stats.errors_by_reason["too_large"] > too_large, 30, "a read again, still too large"
        )
        await _collect(src, {"Force"}, timeout_s=5)  # the session made again, without the node
        still_out = f"ns={idx};s=Scan" in src.node_errors
        await scan.write_value(ua.Variant([0.5] * 1000, ua.VariantType.Double))
        got = await _collect(src, {"Scan"}, timeout_s=10)
    finally:
        await src.stop()
        await srv.stop()
    assert refused, "the PLC refused the second connection"
    assert still_out and src.stats.errors_by_reason["too_large"] == too_large + 1, src.stats.errors_by_reason
    assert list(got["Scan"].value) == [0.5] * 1000 and f"ns={idx};s=Scan" not in src.node_errors


async def test_a_node_that_never_fits_is_no_longer_read_on_the_session_after_a_few_closes_until_the_plc_drops_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A PLC that allows one session, and a node whose value never fits: each read of it on the source's session
    closed that session (every tag BAD, a reconnect), once per pause, for good (fdf509f: up to every 10 minutes).
    After REFIT_HERE_MAX closes it is no longer read there: said once in the log and in ``node_errors`` (on
    ``/status``), and the session stays; a session the PLC drops on its own (a restart) has it read there again.
    The pause is cut to 0.3 s here (10 minutes at most in the field)."""
    from devices.opcua import client as client_module

    monkeypatch.setattr(client_module, "REFIT_MIN_S", 0.3, raising=False)
    monkeypatch.setattr(client_module, "REFIT_MAX_S", 0.3, raising=False)
    caplog.set_level(logging.INFO, logger="devices.opcua")
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:never-fits", "Line")
    await obj.add_variable(
        ua.NodeId("Scan", idx), "Scan", ua.Variant([0.25] * 200_000, ua.VariantType.Double)
    )  # 1.6 MB
    await obj.add_variable(ua.NodeId("Force", idx), "Force", ua.Variant(1.5, ua.VariantType.Double))
    await srv.start()
    refused = _one_session_at_a_time(srv)
    scan = f"ns={idx};s=Scan"
    src = OpcUaSource("plc", _settings(port, [scan, f"ns={idx};s=Force"]))
    await src.start()
    try:
        await until(lambda: "no longer read there" in src.node_errors.get(scan, ""), 60, "the node given up")
        await until(lambda: src.state is ConnectionState.CONNECTED, 30, "the session made again")
        before = (src.stats.errors_by_reason["too_large"], src.stats.reconnects)
        await asyncio.sleep(1.5)  # five pauses: each read the node on the session before, closing it
        kept = (src.state, src.stats.errors_by_reason["too_large"], src.stats.reconnects)
        for transport in list(srv.iserver.asyncio_transports):  # the PLC drops the session on its own
            transport.close()
        await until(
            lambda: src.stats.errors_by_reason["too_large"] > before[0], 30, "a read on the session again"
        )
    finally:
        await src.stop()
        await srv.stop()
    assert refused, "the PLC refused the connections of its own"
    assert kept == (ConnectionState.CONNECTED, *before), (kept, before)
    said = [r for r in caplog.records if "no longer read there" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING and scan in said[0].getMessage(), said


def _sessions_held_at_most(srv, most: int) -> list[float]:
    """The server refuses a session (BadTooManySessions) while it holds ``most``, counting those a cut connection
    left behind until they time out (as a PLC does): the times it refused one, returned."""
    refused: list[float] = []
    create = srv.iserver.create_session

    def limited(*args, **kwargs):
        if len(srv.iserver._external_sessions) >= most:
            refused.append(time.monotonic())
            raise ua.UaStatusCodeError(ua.StatusCodes.BadTooManySessions)
        return create(*args, **kwargs)

    srv.iserver.create_session = limited
    return refused


async def test_the_session_a_too_large_cut_leaves_on_the_plc_is_closed_so_the_next_one_is_not_refused() -> (
    None
):
    """A value grows over max_message_bytes in a subscribed session: the source closes the connection, and the
    server keeps that session (with its subscription) until its timeout. On a PLC that allows one session, every
    reconnect was refused that long (session_timeout_s: 30 s here, 60 by default; measured with 10 s: 11 s
    without values, 27 refusals). The source now closes that session first (CloseSession on a channel of its own)
    and the next one is taken at once: the other tag is GOOD again within a second."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:left-session", "Line")
    scan = await obj.add_variable(
        ua.NodeId("Scan", idx), "Scan", ua.Variant([0.25] * 1000, ua.VariantType.Double)
    )
    await obj.add_variable(ua.NodeId("Force", idx), "Force", ua.Variant(1.5, ua.VariantType.Double))
    await srv.start()
    refused = _sessions_held_at_most(srv, 1)
    settings = _settings(port, [f"ns={idx};s=Scan", f"ns={idx};s=Force"]).model_copy(
        update={"session_timeout_s": 30}
    )
    src = OpcUaSource("plc", settings)
    got: list[Reading] = []

    async def read() -> None:
        async for r in src.items():
            got.append(r)

    await src.start()
    reader = asyncio.create_task(read())
    try:
        await until(lambda: {"Scan", "Force"} <= {r.tag for r in got}, 30, "both tags")
        await scan.write_value(ua.Variant([0.25] * 200_000, ua.VariantType.Double))  # 1.6 MB
        await until(lambda: src.stats.errors_by_reason.get("too_large", 0) >= 1, 30, "the cut")
        n = len(got)
        await until(
            lambda: any(r.tag == "Force" and r.quality is Quality.GOOD for r in got[n:]),
            20,  # within the session timeout (30 s), which the refused reconnects waited for before
            "Force GOOD again",
        )
        held = len(srv.iserver._external_sessions)
    finally:
        reader.cancel()
        await src.stop()
        await srv.stop()
    assert refused == [] and held == 1, (refused, held, src.stats.errors_by_reason)


async def test_a_node_given_up_on_the_session_stays_so_when_another_nodes_value_grows_too_large(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A PLC that allows one session, a node whose value never fits, given up on the session after REFIT_HERE_MAX
    closes. Then another node's value grows over max_message_bytes: the source itself closes the session for it
    (too_large), which is not the PLC dropping the session; the given-up node was read on the session again for
    it (57615df8 took every loss of a live session that was not its own read's close for the PLC's), closing the
    session REFIT_HERE_MAX times more. It stays given up. The pause is cut to 0.3 s here."""
    from devices.opcua import client as client_module

    monkeypatch.setattr(client_module, "REFIT_MIN_S", 0.3, raising=False)
    monkeypatch.setattr(client_module, "REFIT_MAX_S", 0.3, raising=False)
    caplog.set_level(logging.INFO, logger="devices.opcua")
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:never-fits-other", "Line")
    await obj.add_variable(
        ua.NodeId("Scan", idx), "Scan", ua.Variant([0.25] * 200_000, ua.VariantType.Double)
    )  # 1.6 MB
    wave = await obj.add_variable(
        ua.NodeId("Wave", idx), "Wave", ua.Variant([0.5] * 100, ua.VariantType.Double)
    )
    await obj.add_variable(ua.NodeId("Force", idx), "Force", ua.Variant(1.5, ua.VariantType.Double))
    await srv.start()
    _one_session_at_a_time(srv)
    scan, wave_id = f"ns={idx};s=Scan", f"ns={idx};s=Wave"
    src = OpcUaSource("plc", _settings(port, [scan, wave_id, f"ns={idx};s=Force"]))
    await src.start()
    try:
        await until(lambda: "no longer read there" in src.node_errors.get(scan, ""), 60, "the node given up")
        await until(lambda: src.state is ConnectionState.CONNECTED, 30, "the session made again")
        mark = len(caplog.records)
        await wave.write_value(
            ua.Variant([0.5] * 200_000, ua.VariantType.Double)
        )  # 1.6 MB: cut by the source
        await until(lambda: wave_id in src.node_errors, 30, "the other node left out for its size")
        await asyncio.sleep(2.0)  # six pauses: the given-up node was read on the session again within them
    finally:
        await src.stop()
        await srv.stop()
    again = [
        r.getMessage()
        for r in caplog.records[mark:]
        if "is read again on this session" in r.getMessage() and scan in r.getMessage()
    ]
    assert again == [], again
    assert "no longer read there" in src.node_errors.get(scan, ""), src.node_errors


async def test_a_node_given_up_on_the_session_that_fit_again_is_read_there_anew_when_it_grows_too_large_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A node given up on the session (REFIT_HERE_MAX closes) fits again, read on a connection of its own, and is
    subscribed; later its value grows too large again. It starts anew: read on the session again. Its count of
    closes was kept (57615df8), which only the clearing at every loss of a session hid (the source's own cut for
    this node's value cleared it); without that it was given up at once, never read on the session again while the
    PLC refused a connection of its own."""
    from devices.opcua import client as client_module

    monkeypatch.setattr(client_module, "REFIT_MIN_S", 0.3, raising=False)
    monkeypatch.setattr(client_module, "REFIT_MAX_S", 0.3, raising=False)
    caplog.set_level(logging.INFO, logger="devices.opcua")
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:fits-again", "Line")
    big, small = (
        ua.Variant([0.25] * 200_000, ua.VariantType.Double),
        ua.Variant([0.25], ua.VariantType.Double),
    )
    node = await obj.add_variable(ua.NodeId("Scan", idx), "Scan", big)  # 1.6 MB
    await obj.add_variable(ua.NodeId("Force", idx), "Force", ua.Variant(1.5, ua.VariantType.Double))
    await srv.start()
    create = srv.iserver.create_session
    _one_session_at_a_time(srv)
    scan = f"ns={idx};s=Scan"
    src = OpcUaSource("plc", _settings(port, [scan, f"ns={idx};s=Force"]))
    await src.start()
    try:
        await until(lambda: "no longer read there" in src.node_errors.get(scan, ""), 60, "the node given up")
        srv.iserver.create_session = create  # a connection of its own allowed: it is read there, and fits
        await node.write_value(small)
        await until(lambda: scan not in src.node_errors, 30, "the node subscribed again")
        _one_session_at_a_time(srv)
        mark = len(caplog.records)
        await node.write_value(big)
        await until(lambda: scan in src.node_errors, 30, "the node left out again")
        said = src.node_errors[scan]
        await until(
            lambda: any(
                "is read again on this session" in r.getMessage() and scan in r.getMessage()
                for r in caplog.records[mark:]
            ),
            30,
            "the node read on the session again",
        )
    finally:
        await src.stop()
        await srv.stop()
    assert "no longer read there" not in said, said
