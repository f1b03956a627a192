"""A PLC's ByteString value forwarded as JSON is its bytes, not Python's picture of them. An RFID reader's tag
UID (an OPC UA AutoID server's ByteString), a drive's raw parameter block or a Beckhoff ``ARRAY OF BYTE``
mapped to a ByteString reaches the broker and the cloud's telemetry as OPC UA's own JSON encoding gives a
ByteString (Part 6, 5.4.2.8): base64 text. Against a real asyncua server and a
real Mosquitto, through the real agent."""

from __future__ import annotations

import base64
import json
import urllib.request
import uuid

from asyncua import ua

from edge_agent.agent import Agent
from edge_agent.config import parse_config
from tests.integration.test_tags_without_model import Subscriber
from tests.support.peers import free_port, opcua_server
from tests.support.waits import until as wait_for

UID = bytes.fromhex("e004010812345678")  # an ISO 15693 tag's UID, with a zero byte and bytes past ASCII
BLOCK = bytes(range(256))
TRAY = uuid.UUID("72962b91-fa75-4ae6-8d28-b404dc7daf63")


async def test_a_byte_string_is_forwarded_as_base64_text_to_the_broker_and_the_cloud(tmp_path, mosquitto):
    """Before, JSON had no form for bytes and the agent wrote Python's repr of them: the UID went out as the
    text ``"b'\\xe0\\x04\\x01\\x08\\x124Vx'"``, which no consumer decodes to the tag's bytes (and a byte
    block as four times its size). Now it is ``"4AQBCBI0Vng="``; a Guid stays its text."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "Reader")
    await obj.add_variable(ua.NodeId("Uid", idx), "Uid", ua.Variant(UID, ua.VariantType.ByteString))
    await obj.add_variable(ua.NodeId("Block", idx), "Block", ua.Variant(BLOCK, ua.VariantType.ByteString))
    await obj.add_variable(
        ua.NodeId("History", idx), "History", ua.Variant([UID, b""], ua.VariantType.ByteString)
    )
    await obj.add_variable(ua.NodeId("Tray", idx), "Tray", ua.Variant(TRAY, ua.VariantType.Guid))
    await srv.start()
    sub = Subscriber(mosquitto.port, "factory/#")
    tags = ("uid", "block", "history", "tray")
    cfg = {
        "agent": {"id": "gw1", "site": "plant", "line": "line1", "data_dir": str(tmp_path / "data")},
        "http": {"port": 0},
        "outbox": {},
        "sources": {
            "plc": {
                "type": "opcua",
                "endpoint": f"opc.tcp://127.0.0.1:{port}/plc/",
                "nodes": [{"node_id": f"ns={idx};s={t.title()}", "tag": t} for t in tags],
            },
            "broker": {"type": "mqtt", "port": mosquitto.port},
        },
        "forward": [{"name": "rfid", "source": "plc", "tags": list(tags), "to": "broker", "outbox": True}],
    }
    agent = Agent(parse_config(cfg))
    try:
        await agent.start()
        await wait_for(lambda: len(sub.raw) >= len(tags), what="every forwarded tag")
        assert agent.outbox is not None

        def telemetry() -> list[dict]:
            assert agent.outbox is not None
            return [json.loads(r.payload) for r in agent.outbox.pending() if r.kind == "telemetry"]

        await wait_for(lambda: len(telemetry()) >= len(tags), what="every tag in the outbox")
        cloud = {m["tag"]: m["value"] for m in telemetry()}
        url = f"http://127.0.0.1:{agent.http.port}/api/tags"
        shown = {r["tag"]: r for r in json.loads(urllib.request.urlopen(url, timeout=5).read())["plc"]}
    finally:
        await agent.stop()
        sub.stop()
        await srv.stop()
    want = {
        "uid": base64.b64encode(UID).decode(),
        "block": base64.b64encode(BLOCK).decode(),
        "history": [base64.b64encode(UID).decode(), ""],
        "tray": str(TRAY),
    }
    assert want["uid"] == "4AQBCBI0Vng="
    assert {m["tag"]: m["value"] for _, m in sub.messages} == want
    assert cloud == want
    # the status page's tags view shows the value as they go out (it showed "b'\\xe0\\x04...'" and "UUID('...')");
    # an array as its JSON text, as every other non-scalar value is shown there
    assert {t: r["value"] for t, r in shown.items()} == {
        "uid": want["uid"],
        "block": want["block"],
        "history": json.dumps(want["history"]),
        "tray": want["tray"],
    }
    assert shown["uid"]["type"] == "bytes"
