"""``publish_connection: separate``: what an mqtt source publishes goes over a second connection of its own, so
that a QoS 1 result's PUBACK never waits behind a flood on one of the source's subscriptions (the broker's
PUBACKs come on the connection that carries the flood's backlog; paho holds all but 20 QoS 1 messages until
they come: results 11-32 s late under a 10,000 msg/s flood)."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import subprocess
import threading
import time
import urllib.request
from types import SimpleNamespace

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import ValidationError

from devices.mqtt import client as mqtt_client
from devices.mqtt.client import MqttBadTopic, MqttPublishRefused, MqttSource
from devices.mqtt.settings import MqttSettings
from edge_agent.agent import Agent
from edge_agent.cli import _status
from edge_agent.config import ConfigError, parse_config
from tests.integration.test_mqtt_security import KEEP_USER
from tests.support.peers import Mosquitto, free_port, mosquitto_binary
from tests.support.recorded import recorded_events
from tests.support.waits import until

RESULTS = 40  # QoS 1 results published at once during the flood: twice paho's 20 in flight
FLOOD_LINES = 200_000  # more than it reads in the test: Mosquitto queues the rest


def _watch(port: int, arrived: dict[str, float]) -> paho.Client:
    c = paho.Client(CallbackAPIVersion.VERSION2)
    ready = threading.Event()
    c.on_connect = lambda cl, *_: cl.subscribe("factory/#", qos=1)
    c.on_subscribe = lambda *_: ready.set()
    c.on_message = lambda _c, _u, m: arrived.setdefault(m.topic, time.monotonic())
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert ready.wait(10), "the watching subscriber got no SUBACK"
    return c


async def _results_lag(port: int, tmp_path, connection: str) -> float:
    """Seconds until a subscriber has all of ``RESULTS`` QoS 1 messages published through a source whose
    subscription is flooded faster than it reads (Mosquitto queues the rest for it)."""
    lines = tmp_path / "flood.txt"
    lines.write_bytes((b'{"v": 1.5, "w": 2, "pad": "' + b"x" * 64 + b'"}\n') * FLOOD_LINES)
    src = MqttSource(
        "mq",
        MqttSettings(
            port=port,
            client_id="gw1-line",  # the publish connection's is gw1-line-pub: the same id would drop both
            subscriptions=[{"topic": "plant/line1/#"}],
            queue_max_items=1000,
            publish_connection=connection,
        ),
    )
    arrived: dict[str, float] = {}
    watch = _watch(port, arrived)
    await src.start()
    flood = None
    try:
        await asyncio.wait_for(src.subscribed.wait(), 30)
        with lines.open("rb") as stdin:
            flood = subprocess.Popen(
                [
                    "mosquitto_pub",
                    "-p",
                    str(port),
                    "-t",
                    "plant/line1/flood",
                    "-l",
                ],
                stdin=stdin,
            )
        await until(lambda: src.stats.received > 10_000, timeout_s=10, what="the flood coming in")
        t0 = time.monotonic()
        await asyncio.gather(
            *(src.publish(f"factory/s/l/gw/results/r{i}", b"{}", qos=1, confirm=True) for i in range(RESULTS))
        )
        deadline = t0 + 4.0
        while len(arrived) < RESULTS and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return (max(arrived.values()) - t0) if len(arrived) == RESULTS else float("inf")
    finally:
        if flood is not None:
            flood.kill()
            flood.wait()
        watch.disconnect()
        watch.loop_stop()
        await src.stop(timeout_s=1.0)


async def test_a_flood_on_a_subscription_does_not_hold_back_what_a_separate_publish_connection_sends(
    mosquitto, tmp_path
):
    """A device floods a subscribed topic faster than the gateway reads (Mosquitto queues the rest for it) and
    the source publishes 40 QoS 1 results at once: over the separate connection all reach a subscriber at once.
    Over the shared one (the former behaviour, still the default) none of the last 20 had come 4 s later: their
    PUBACKs wait behind the flood's backlog."""
    if shutil.which("mosquitto_pub") is None:
        pytest.fail("mosquitto_pub is not installed; `make setup` installs it (mosquitto-clients)")
    lag = await _results_lag(mosquitto.port, tmp_path, "separate")
    assert lag < 2.0, f"QoS 1 results reached the subscriber {lag:.1f} s after they were published"


def test_a_publish_client_id_that_is_the_client_id_is_refused():
    """Two connections with one client id: the broker drops each as the other connects."""
    with pytest.raises(ValidationError, match="publish_client_id is the client_id"):
        MqttSettings(client_id="gw1", publish_connection="separate", publish_client_id="gw1")


def test_two_connections_of_a_config_with_one_client_id_on_one_broker_are_refused():
    """A publish connection's default client id ``<client_id>-pub`` (or one set twice) that another mqtt source
    of the config connects with to the same broker: each connect would end the other's for good (the agent
    said only "a gateway cloned from this one's disk image?"). Refused by validate, naming both fields and no
    id (a gateway's variable may give it); another broker's or a random id is fine."""
    a = {"type": "mqtt", "client_id": "gw1", "publish_connection": "separate"}
    for b, field, clash in (
        ({"type": "mqtt", "client_id": "gw1-pub"}, "client_id", "publish_client_id"),
        ({**a, "client_id": "gw2", "publish_client_id": "gw1-pub"}, "publish_client_id", "publish_client_id"),
    ):
        with pytest.raises(ConfigError) as caught:
            parse_config({"agent": {"id": "gw1"}, "sources": {"a": a, "b": b}})
        (line,) = caught.value.errors
        assert line.startswith(f"<config>: sources.b.{field}: the client id of sources.a.{clash} "), line
        assert "gw1-pub" not in line, line
    for b in ({"type": "mqtt", "client_id": "gw1-pub", "port": 1884}, {"type": "mqtt"}):
        parse_config({"agent": {"id": "gw1"}, "sources": {"a": a, "b": b}})
    # the cloud's check of a fleet config reads no environment: two brokers a gateway's variables give, with one
    # client id on each, are both '' there, not one broker
    two = {n: {"type": "mqtt", "host": f"${{BROKER_{n}}}", "client_id": "line1-gw"} for n in "AB"}
    parse_config({"agent": {"id": "gw1"}, "sources": two}, local_checks=False)


async def test_what_the_separate_publish_connection_fails_is_counted_on_the_source(mosquitto):
    """A publish refused over the publish connection is the source's error on /status, as over a shared one."""
    src = MqttSource("mq", MqttSettings(port=mosquitto.port, publish_connection="separate"))
    await src.start()
    try:
        with pytest.raises(MqttBadTopic):
            await src.publish("factory/+/results", b"{}", qos=1, confirm=True)
        assert src.stats.errors_by_reason == {"publish_failed": 1}
        assert src.stats.last_error is not None and "factory/+/results" in src.stats.last_error
        await asyncio.wait_for(src._pub.connected.wait(), 30)  # its CONNACK: "sent", not "queued"
        assert await src.publish("factory/s/l/gw/results/r", b"{}", qos=1, confirm=True) == "sent"
        assert src.published["sent"] == 1
    finally:
        await src.stop(timeout_s=1.0)


async def test_a_publish_connection_taken_over_by_a_clone_says_the_drop_as_its_own(mosquitto, monkeypatch):
    """Two gateways cloned from one image share a publish_client_id: each publish connection's connect drops the
    other's. The drop (told apart as a takeover, said once) is the publish connection's: its ``last_error`` on
    /status and the source's error name it. It was counted as the source's own drop ('lost broker ...', no
    publish connection named) and /status showed the publish connection in backoff with no error."""
    monkeypatch.setattr(mqtt_client, "SHORT_SESSIONS", 1)  # the first short session is enough here

    def clone(name: str) -> MqttSource:
        settings = MqttSettings(
            port=mosquitto.port,
            client_id=f"gw-{name}",
            publish_client_id="clone-pub",
            publish_connection="separate",
            reconnect_min_s=5,  # the takeover's backoff (twice that): nothing reconnects within the test
        )
        return MqttSource(name, settings)

    a, b = clone("a"), clone("b")
    try:
        await a.start()
        await asyncio.wait_for(a._pub.connected.wait(), 30)
        await b.start()  # takes clone-pub over: a's publish connection is dropped right after its connect
        await until(lambda: a.stats.errors_by_reason.get("broker_unreachable"), 10, "a's drop counted")
        said = "broker_unreachable: publish connection (client id clone-pub): lost broker"
        assert ((a.publish_connection or {}).get("last_error") or "").startswith(said), a.publish_connection
        assert (a.stats.last_error or "").startswith(said), a.stats.last_error
    finally:
        await asyncio.gather(a.stop(timeout_s=1.0), b.stop(timeout_s=1.0))


def _gw1_config(tmp_path, port: int, pub_id: str, **source) -> dict:
    """An agent whose mqtt source ``mq`` (client id gw1-line) publishes over a connection of its own, ``pub_id``."""
    return {
        "agent": {"id": "gw1", "data_dir": str(tmp_path / "data")},
        "http": {"enabled": False},
        "sources": {
            "mq": {
                "type": "mqtt",
                "port": port,
                "client_id": "gw1-line",
                "publish_connection": "separate",
                "publish_client_id": pub_id,
                "subscriptions": [{"topic": "plant/#"}],
                **source,
            }
        },
    }


async def test_a_broker_refusing_the_publish_client_id_is_named_on_the_source_status(
    tmp_path, monkeypatch, capsys
):
    """A broker that lets in the subscriptions' client id but not the publish connection's (here Mosquitto's
    ``clientid_prefixes``; elsewhere a per-client-id ACL or a connection limit per login): the source's status
    shows the publish connection down with its client id, and its refusal names that connection and the fix
    (``publish_client_id``), not the login."""
    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed; `make setup` installs it with apt-get")
    broker = Mosquitto(tmp_path / "mosquitto", extra_conf="clientid_prefixes gw1-").start()
    agent = Agent(
        parse_config(_gw1_config(tmp_path, broker.port, "pub-gw1", reconnect_min_s=5.0, reconnect_max_s=5.0))
    )
    src = agent.sources["mq"]
    await src.start()
    try:
        await asyncio.wait_for(src.subscribed.wait(), 30)
        await until(
            lambda: src.stats.errors_by_reason.get("connect_refused"), timeout_s=30, what="the refusal"
        )
        assert src.state.value == "connected"  # the subscriptions' connection is in
        pc = src.publish_connection
        assert pc is not None and pc["state"] == "backoff" and pc["client_id"] == "pub-gw1"
        for err in (pc["last_error"], src.stats.last_error):
            assert err is not None and err.startswith(
                "connect_refused: publish connection (client id pub-gw1): "
            )
            assert "refused the connection" in err and "publish_client_id" in err, err
        # /status (the status page reads it) and `edge-agent status` show it where the source's state shows
        st = agent.status()
        assert st["sources"]["mq"]["state"] == "connected"
        assert st["sources"]["mq"]["publish_connection"] == pc
        monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: io.BytesIO(json.dumps(st).encode()))
        assert _status(SimpleNamespace(url="http://127.0.0.1:1", json=False)) == 0
        out = capsys.readouterr().out
        assert (
            "publish connection (client id pub-gw1): backoff  last: connect_refused: publish connection"
            in out
        )
    finally:
        await src.stop(timeout_s=1.0)
        broker.stop()


def test_validate_online_tries_the_publish_client_id_and_names_it_when_refused(tmp_path, capsys):
    """``edge-agent validate --online`` connects with each client id a source connects with: a broker that lets
    in the source's client id but not its publish connection's (here Mosquitto's ``clientid_prefixes``) fails
    the check, the line naming ``publish_client_id``, the publish connection and its id; an id the broker takes
    passes. Before, ``--online`` asked only OPC UA servers: the refusal showed first in the running agent."""
    from edge_agent.cli import main

    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed; `make setup` installs it with apt-get")
    broker = Mosquitto(tmp_path / "mosquitto", extra_conf="clientid_prefixes gw1-").start()
    try:
        for pub_id, rc in (("pub-gw1", 1), ("gw1-pub", 0)):
            path = tmp_path / f"{pub_id}.yaml"
            path.write_text(json.dumps(_gw1_config(tmp_path, broker.port, pub_id)))
            assert main(["validate", "--online", str(path)]) == rc, pub_id
            err = capsys.readouterr().err
            if rc:
                (line,) = [x for x in err.splitlines() if "sources.mq" in x]
                assert line.startswith(
                    f"{path}: sources.mq.publish_client_id: publish connection (client id pub-gw1): "
                )
                assert "refused the connection" in line and "set publish_client_id" in line, line
            else:
                assert "sources.mq" not in err, err
    finally:
        broker.stop()


def test_validate_online_says_a_broker_not_reached_once_not_once_per_client_id(tmp_path, capsys):
    """``validate --online`` with nothing listening on the broker's port: one line for the source's ``host``,
    none more for its publish connection, which the same broker cannot take either. Before, the same broker was
    said unreachable twice, once per client id."""
    from edge_agent.cli import main

    path = tmp_path / "gw1.yaml"
    path.write_text(json.dumps(_gw1_config(tmp_path, free_port(), "gw1-pub")))
    assert main(["validate", "--online", str(path)]) == 1
    lines = [x for x in capsys.readouterr().err.splitlines() if "sources.mq" in x]
    assert len(lines) == 1 and lines[0].startswith(f"{path}: sources.mq.host: cannot reach broker "), lines


async def test_validate_online_leaves_the_client_ids_of_its_running_agent_untried(
    mosquitto, tmp_path, capsys
):
    """``validate --online`` run while this config's agent runs (it holds the data folder): a connect with the
    agent's client ids would take its connections over, and the broker would publish its will (here a retained
    ``offline`` on its status topic, left there while it runs). They are not tried, and a warning says why."""
    from edge_agent.agent import DataDirLock
    from edge_agent.cli import main

    will = {"topic": "factory/s/l/gw1/status", "payload": "offline"}
    config = _gw1_config(tmp_path, mosquitto.port, "gw1-pub", will=will)
    path = tmp_path / "gw1.yaml"
    path.write_text(json.dumps(config))
    src = MqttSource("mq", parse_config(config).sources["mq"])
    lock = DataDirLock(tmp_path / "data")
    lock.acquire()
    arrived: dict[str, float] = {}
    await src.start()
    watch = None
    try:
        await asyncio.wait_for(src.subscribed.wait(), 30)
        watch = _watch(mosquitto.port, arrived)
        assert await asyncio.to_thread(main, ["validate", "--online", str(path)]) == 0
        await asyncio.sleep(0.3)
        assert will["topic"] not in arrived and src.stats.reconnects == 0, arrived
        assert "the MQTT client ids were not tried: this config's agent runs" in capsys.readouterr().err
    finally:
        if watch is not None:
            watch.disconnect()
            watch.loop_stop()
        await src.stop(timeout_s=1.0)
        lock.release()


async def test_a_publish_connection_down_for_long_raises_publish_down_and_what_waited_is_delivered(tmp_path):
    """The broker lets the source in but refuses its publish connection's client id (``clientid_prefixes``):
    after ``source_down_after_s`` the agent raises ``publish_down`` (active, naming the source and the client
    id, with the refusal), and no ``source_down`` (the source is connected). A QoS 1 alarm published meanwhile
    is queued. The broker restarts on the same port letting it in: the end (active false, how long) follows,
    and the alarm reaches the broker, and /status shows the publish connection without its last error. Before,
    only /status showed it: nothing told the line that alarms could not reach the broker; and once connected
    again, the refusal stood beside its state on /status."""
    from tests.integration.test_source_down import quick_watch

    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed; `make setup` installs it with apt-get")
    broker = Mosquitto(tmp_path / "mosquitto", extra_conf="clientid_prefixes gw1-").start()
    config = _gw1_config(tmp_path, broker.port, "pub-gw1", reconnect_min_s=0.5, reconnect_max_s=1.0)
    agent = quick_watch(Agent(parse_config({**config, "outbox": {}})))
    agent.source_down_after_s = 1.0  # 30 s in service
    src = agent.sources["mq"]

    def downs(kind: str) -> list[dict]:
        return [dict(e) for e in agent.events if e["kind"] == kind]

    await agent.start()
    watch = None
    try:
        await until(lambda: downs("publish_down"), 15, "publish_down")
        (down,) = downs("publish_down")
        assert down["source"] == "mq" and down["client_id"] == "pub-gw1" and down["active"] is True, down
        assert down["state"] != "connected" and down["down_s"] >= 1.0, down
        assert down["last_error"].startswith("connect_refused: publish connection (client id pub-gw1): "), (
            down
        )
        assert "pub-gw1" in down["message"] and "alarms" in down["message"], down
        assert src.state.value == "connected" and not downs("source_down")
        agent.metrics.refresh(agent)  # a scrape: the source is up, its publish connection is not
        scraped = agent.metrics.exposition().decode()
        assert (
            'edge_source_up{source="mq"} 1.0' in scraped
            and 'edge_source_publish_up{source="mq"} 0.0' in scraped
        )
        alarm = "factory/s/l/gw1/alarms/a"
        assert await src.publish(alarm, b'{"active": true}', qos=1, retain=True) == "queued"
        broker.stop()
        broker.extra_conf = ""  # the broker now lets the publish connection in
        broker.start()
        await until(lambda: len(downs("publish_down")) >= 2, 15, "publish_down's end")
        up = downs("publish_down")[1]
        assert up["source"] == "mq" and up["active"] is False and up["down_s"] >= 1.0, up
        assert up["client_id"] == "pub-gw1", up
        # connected again: /status shows no last error beside its state (the refusal stood there); counted still
        pc = agent.status()["sources"]["mq"]["publish_connection"]
        assert pc["state"] == "connected" and pc["last_error"] is None, pc
        assert src.stats.errors_by_reason.get("connect_refused"), src.stats.errors_by_reason
        arrived: dict[str, float] = {}
        watch = _watch(broker.port, arrived)  # the alarm was retained: it reached the broker
        await until(lambda: alarm in arrived, 30, "the queued alarm at the broker")
        rows = recorded_events(agent, "publish_down")
    finally:
        if watch is not None:
            watch.disconnect()
            watch.loop_stop()
        await agent.stop()
        broker.stop()
    assert [r["active"] for r in rows] == [True, False], rows  # recorded for the cloud, in order


async def test_the_end_after_a_restart_hides_a_client_id_whose_variable_changed_meanwhile(
    tmp_path, monkeypatch
):
    """The publish client id comes from ``${GW_PUB}``; the broker refuses it, publish_down is told, and the agent
    restarts with GW_PUB changed and a broker letting it in. The new agent says the end: before, it named the old
    client id, no value of its config any more, in clear to the cloud (``client_id`` and message)."""
    from tests.integration.test_source_down import quick_watch

    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed; `make setup` installs it with apt-get")
    broker = Mosquitto(tmp_path / "mosquitto", extra_conf="clientid_prefixes gw1-").start()
    config = _gw1_config(tmp_path, broker.port, "${GW_PUB}", reconnect_min_s=0.5, reconnect_max_s=1.0)
    monkeypatch.setenv("GW_PUB", "pub-press3-old")
    agent = quick_watch(Agent(parse_config({**config, "outbox": {}})))
    agent.source_down_after_s = 1.0  # 30 s in service
    downs = lambda a: [dict(e) for e in a.events if e["kind"] == "publish_down"]  # noqa: E731
    try:
        await agent.start()
        await until(lambda: downs(agent), 15, "publish_down")
        assert agent.for_cloud.tree(downs(agent)[0])["client_id"] == "<$GW_PUB>"
        await agent.stop()
        broker.stop()
        broker.extra_conf = ""
        broker.start()
        monkeypatch.setenv("GW_PUB", "pub-press3-new")
        agent = quick_watch(Agent(parse_config({**config, "outbox": {}})))
        await agent.start()
        await until(lambda: downs(agent), 15, "publish_down's end")
    finally:
        await agent.stop()
        broker.stop()
    (end,) = downs(agent)
    told = agent.for_cloud.tree(end)
    assert end["active"] is False and told["client_id"] == "<$GW_PUB>", told
    assert "pub-press3-old" not in json.dumps(told), told


async def test_what_waits_for_a_refused_publish_connection_is_queued_and_counted_lost_at_stop(tmp_path):
    """The broker refuses the publish connection's client id: QoS 1 alarms published right after its refusal
    are ``queued`` (paho holds them for a connection to come), not ``sent``; the source stopping before any came
    counts them lost (``publish_lost``, once per message, said once naming the publish connection and how many).
    Before, paho took them on the socket the broker had just refused: "sent", and at the stop they were gone
    without a word; then the stop counted one ``publish_lost`` however many were lost."""
    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed; `make setup` installs it with apt-get")
    broker = Mosquitto(tmp_path / "mosquitto", extra_conf="clientid_prefixes gw1-").start()
    src = MqttSource(
        "mq",
        MqttSettings(
            port=broker.port, client_id="gw1-line", publish_connection="separate", publish_client_id="p1"
        ),
    )
    await src.start()
    try:
        await until(lambda: src.stats.errors_by_reason.get("connect_refused"), 30, "the refusal")
        for i in range(3):
            assert await src.publish(f"factory/s/l/gw1/alarms/a{i}", b"{}", qos=1) == "queued"
        assert src.published == {"sent": 0, "queued": 3}
    finally:
        await src.stop(timeout_s=1.0)
        broker.stop()
    assert src.stats.errors_by_reason.get("publish_lost") == 3, src.stats.errors_by_reason
    lost = src.publish_connection["last_error"]
    assert lost.startswith(
        "publish_lost: publish connection (client id p1): stopping with 3 QoS 1 message"
    ), lost


async def test_a_publish_an_acl_by_client_id_refuses_names_the_publish_connection(tmp_path):
    """Mosquitto's ACL by client id (``pattern write factory/%c/#``) lets the source's client id publish under
    its own branch, not the publish connection's: over MQTT 5 the refusal (PUBACK 0x87) is counted with the
    publish connection and its client id named, in the source's last error and the publish connection's own on
    /status, and the exception says which client id the ACL must let publish. Before, it named neither: the
    publish connection's last_error stayed None, and the ACL looked to be the source's."""
    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed; `make setup` installs it with apt-get")
    acl = tmp_path / "acl"
    acl.write_text("pattern write factory/%c/#\n")
    broker = Mosquitto(tmp_path / "mosquitto", extra_conf=f"acl_file {acl}\n{KEEP_USER}").start()
    settings = MqttSettings(
        port=broker.port,
        client_id="gw1",
        protocol="mqtt5",
        publish_connection="separate",
        publish_client_id="p1",
    )
    src = MqttSource("mq", settings)
    await src.start()
    try:
        await asyncio.wait_for(src._pub.connected.wait(), 30)
        assert await src.publish("factory/p1/alarms/a", b"{}", qos=1, confirm=True) == "sent"
        with pytest.raises(
            MqttPublishRefused, match=r"client id p1: an ACL by client id must let it publish"
        ):
            await src.publish("factory/gw1/alarms/a", b"{}", qos=1, confirm=True)
    finally:
        await src.stop(timeout_s=1.0)
        broker.stop()
    expected = "publish_refused: publish connection (client id p1): topic 'factory/gw1/alarms/a': PUBACK"
    for err in (src.stats.last_error, src.publish_connection["last_error"]):
        assert err is not None and err.startswith(expected), err


async def test_a_forward_holds_its_byte_bound_while_the_publish_connection_alone_is_down(
    tmp_path, monkeypatch
):
    """A forward's messages handed to the MQTT client for the broker's return are held to MAX_PENDING_BYTES: with
    ``publish_connection: separate`` that is the publish connection's return, not the subscriptions' connection's.
    Here the broker refuses only the publish connection's client id: the source stays connected, and the forward
    took it as connected, so what it handed the client was never weighed (12 values of 1 MB: 12 MB held against
    a 4 MiB bound; up to publish_max_queued, 10,000 by default, of them: the agent's memory)."""
    from devices.base import Reading
    from edge_agent import tags as tags_mod

    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed; `make setup` installs it with apt-get")
    bound = 4 * 2**20
    monkeypatch.setattr(tags_mod, "MAX_PENDING_BYTES", bound)
    broker = Mosquitto(tmp_path / "mosquitto", extra_conf="clientid_prefixes gw1-").start()
    config = _gw1_config(tmp_path, broker.port, "pub-gw1")
    config["forward"] = [{"name": "blobs", "source": "mq", "tags": ["blob"], "to": "mq", "qos": 1}]
    agent = Agent(parse_config(config))
    src, fwd = agent.sources["mq"], agent.forwarders[0]
    await src.start()
    fwd.start()
    try:
        await asyncio.wait_for(src.subscribed.wait(), 30)
        await until(lambda: src.stats.errors_by_reason.get("connect_refused"), 30, "the refusal")
        assert src.state.value == "connected" and src.publish_connection["state"] != "connected"
        for i in range(12):
            fwd.offer(Reading("mq", "blob", f"{i:02d}" * 2**19, time.time(), time.time()))
            await asyncio.sleep(0)
        await until(lambda: fwd.stats["queued"] >= 2, 30, "the forward's first values handed to the client")
        await asyncio.sleep(0.3)  # its sender's turns: it hands the client nothing more past the bound
        out = src._pub._client._out_messages.values()
        held = sum(map(len, fwd._queue)) + sum(len(m.payload) for m in list(out))
        assert held <= bound + 2**20 + 100, held  # the bound and the one message over it
        assert fwd.stats["dropped"] > 0, dict(fwd.stats)
    finally:
        await fwd.stop(timeout_s=0.1)
        await src.stop(timeout_s=1.0)
        broker.stop()
