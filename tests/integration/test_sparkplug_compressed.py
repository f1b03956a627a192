"""Sparkplug B payloads compressed as Eclipse Tahu's nodes send them, through a real Mosquitto.

Tahu's Java and JavaScript edge nodes, with compression on, publish each payload encoded and compressed in
the ``body`` of a wrapper payload whose ``uuid`` is ``SPBV1.0_COMPRESSED``, with a String metric
``algorithm`` (DEFLATE, zlib's format, when absent; or GZIP) and the seq copied outside."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import zlib
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from devices.base import Quality
from devices.mqtt import sparkplug_host
from devices.mqtt.client import MqttSource
from devices.mqtt.settings import MqttSettings
from protocols import sparkplug as sp
from tests.support.shifted_clock import ShiftedClock
from tests.support.sparkplug_pb import pb_metric as _metric
from tests.support.waits import until

D = sp.DataType
T0_MS = 1_700_000_000_000  # a node whose clock is set (a time before 2001 is a clock never set)
T0 = T0_MS / 1000


def closed(c: paho.Client) -> None:
    """Disconnect a raw paho client and end its network thread. ``loop_stop`` alone waits for the thread's
    select to time out (paho's 1 s) before the thread sees the stop; the DISCONNECT wakes it at once."""
    c.disconnect()
    c.loop_stop()


def _compressed(inner, algorithm: str | None = "DEFLATE", body: bytes | None = None) -> bytes:
    """The wrapper Tahu's ``PayloadUtil.compress`` builds: the seq outside, the payload in ``body``."""
    raw = inner.SerializeToString()
    out = sp._pb().Payload()
    out.uuid = sp.COMPRESSED_UUID
    if inner.HasField("seq"):
        out.seq = inner.seq
    if body is None:
        body = gzip.compress(raw) if algorithm == "GZIP" else zlib.compress(raw)
    out.body = body
    if algorithm is not None:
        _metric(out, "algorithm", datatype=D.STRING, string_value=algorithm)
    return out.SerializeToString()


def _consume(src: MqttSource, got: list | None = None) -> tuple[list, asyncio.Task]:
    """The readings the source gives, gathered (into ``got``, if given) by a task (cancel it when done)."""
    got = [] if got is None else got

    async def consume() -> None:
        async for r in src.items():
            got.append(r)

    return got, asyncio.create_task(consume())


async def _ready(src: MqttSource) -> None:
    """Connected and subscribed: a message published now reaches it."""
    async with asyncio.timeout(5):
        await src.connected.wait()
        await src.subscribed.wait()


async def _started(
    port: int, max_inflated_bytes_per_s: int, also: list[dict] | None = None
) -> tuple[MqttSource, paho.Client, list, asyncio.Task]:
    """A started source reading spBv1.0/g/# (and ``also``) with messages up to 300 KiB and that inflate budget,
    a connected paho client to publish with, and the list its readings are collected into (``_consume``)."""
    settings = MqttSettings(
        port=port,
        subscriptions=[*(also or []), {"topic": "spBv1.0/g/#", "codec": "sparkplug_b", "qos": 1}],
        max_message_bytes=300 * 1024,
        sparkplug={"max_inflated_bytes_per_s": max_inflated_bytes_per_s},
    )
    src = MqttSource("mq", settings)
    await src.start()
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", port, 30)
    pub.loop_start()
    got, task = _consume(src)
    return src, pub, got, task


async def test_a_tahu_node_with_compression_on_is_read_and_a_zip_bomb_is_refused_bounded(mosquitto):
    """Before, a compressed payload was read as its wrapper: a compressed NBIRTH declared no metric but
    ``algorithm``, which became a tag ``n/algorithm`` = "DEFLATE" read GOOD, and the node's data (its
    metrics inside ``body``) gave nothing, its unknown aliases asking rebirths that came compressed again.
    Now the payload inside is read (DEFLATE, GZIP, no algorithm metric: DEFLATE). A body inflating past
    max_message_bytes (a few kilobytes of zeros can inflate to gigabytes) is too_large, inflated no further;
    an unknown algorithm or a corrupt body is bad_compression; the node's messages after them are read."""
    settings = MqttSettings(
        port=mosquitto.port,
        subscriptions=[{"topic": "spBv1.0/g/#", "codec": "sparkplug_b"}],
        max_message_bytes=64 * 1024,
    )
    src = MqttSource("mq", settings)
    await src.start()
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", mosquitto.port, 30)
    pub.loop_start()
    try:
        await _ready(src)
        birth = sp._pb().Payload()
        birth.timestamp, birth.seq = T0_MS + 1000, 0
        _metric(birth, "bdSeq", datatype=D.INT64, long_value=0)
        _metric(birth, "Temp", alias=1, datatype=D.DOUBLE, double_value=20.5)
        _metric(birth, "Count", alias=2, datatype=D.INT32, int_value=(-5) & 0xFFFFFFFF)
        gz = sp._pb().Payload()
        gz.timestamp, gz.seq = T0_MS + 2000, 1
        _metric(gz, alias=1, double_value=21.0)
        plain = sp._pb().Payload()  # Tahu's compress(payload, stripDataTypes): no algorithm metric
        plain.timestamp, plain.seq = T0_MS + 3000, 2
        _metric(plain, alias=2, int_value=(-7) & 0xFFFFFFFF)  # no datatype: the birth's Int32
        bomb = zlib.compress(b"\0" * (4 * 1024 * 1024), 9)  # 4 KB inflating to 4 MiB: not read
        last = sp._pb().Payload()
        last.timestamp, last.seq = T0_MS + 4000, 3
        _metric(last, alias=1, double_value=22.0)
        for kind, body in (
            ("NBIRTH", _compressed(birth)),
            ("NDATA", _compressed(gz, "GZIP")),
            ("NDATA", _compressed(plain, None)),
            ("NDATA", _compressed(sp._pb().Payload(), body=bomb)),
            ("NDATA", _compressed(gz, "LZ4")),
            ("NDATA", _compressed(gz, body=zlib.compress(gz.SerializeToString())[:-6])),  # cut short
            ("NDATA", last.SerializeToString()),  # a node may send some payloads uncompressed
        ):
            pub.publish(f"spBv1.0/g/{kind}/n", body, qos=1)
        got: list = []
        try:
            async with asyncio.timeout(10):
                async for r in src.items():
                    got.append(r)
                    if r.timestamp == T0 + 4.0:
                        break
        except TimeoutError:
            pass  # what came is asserted below
    finally:
        closed(pub)
        await src.stop()
    assert [(r.tag, r.value, r.timestamp) for r in got] == [
        ("n/Temp", 20.5, T0 + 1.0),
        ("n/Count", -5, T0 + 1.0),
        ("n/Temp", 21.0, T0 + 2.0),
        ("n/Count", -7, T0 + 3.0),
        ("n/Temp", 22.0, T0 + 4.0),
    ]
    assert len(bomb) < 8 * 1024
    assert src.stats.errors_by_reason == {"too_large": 1, "bad_compression": 2}
    assert src.sparkplug.rebirths_requested == 0  # every alias known, no seq gap: nothing to ask


async def test_a_node_flooding_compressed_payloads_is_held_to_the_inflate_budget_and_json_keeps_flowing(
    mosquitto,
):
    """Before, every compressed payload was inflated and decoded in the agent's loop, at about 1 ms per MiB
    inflated: a node's 8 KB inflating to 8 MiB, 100 times a second (0.8 MB/s on the wire), took all of the
    loop, and every other source, pipeline and the status endpoint starved. Now a source inflates at most
    sparkplug.max_inflated_bytes_per_s: a payload is inflated while some is left and charged what it
    inflated; while none is left, one is counted as inflate_budget and skipped, not inflated, and the node is
    asked for nothing (the seq gap left is not the node's: no seq_gap, no rebirth); plain payloads are not
    counted; a JSON topic of the same source keeps being read, every message of it."""
    # 4 KB a second: the first message of 256 KiB is read (some budget was left) and leaves a debt of
    # 252 KiB, paid back in a minute: every later one is skipped in the test's few seconds
    src, pub, got, task = await _started(
        mosquitto.port, 4096, also=[{"topic": "line/#", "codec": "json", "qos": 1}]
    )
    n = 30
    try:
        await _ready(src)
        birth = sp._pb().Payload()
        birth.timestamp, birth.seq = T0_MS + 1000, 0
        _metric(birth, "bdSeq", datatype=D.INT64, long_value=0)
        _metric(birth, "Temp", alias=1, datatype=D.DOUBLE, double_value=20.0)
        pub.publish("spBv1.0/g/NBIRTH/n", birth.SerializeToString(), qos=1)
        for i in range(n):
            bomb = sp._pb().Payload()  # 256 KiB of zeros in the payload's body: a few hundred bytes sent
            bomb.timestamp, bomb.seq = T0_MS + 2000 + i, i + 1
            _metric(bomb, alias=1, double_value=float(i))
            bomb.body = b"\0" * (256 * 1024)
            pub.publish("spBv1.0/g/NDATA/n", _compressed(bomb), qos=1)
            pub.publish("line/press", json.dumps({"force": i}), qos=1)
        plain = sp._pb().Payload()  # then a plain NDATA: not counted against the budget, read
        plain.timestamp, plain.seq = T0_MS + 9000, n + 1
        _metric(plain, alias=1, double_value=99.0)
        pub.publish("spBv1.0/g/NDATA/n", plain.SerializeToString(), qos=1)

        def spark() -> list:
            return [r for r in got if r.tag == "n/Temp"]

        try:
            async with asyncio.timeout(10):
                while not (
                    sum(r.tag == "line/press/force" for r in got) >= n
                    and any(r.value == 99.0 for r in spark())
                ):
                    await asyncio.sleep(0.02)
        except TimeoutError:
            pass  # what came is asserted below
    finally:
        task.cancel()
        closed(pub)
        await src.stop()
    assert [r.value for r in got if r.tag == "line/press/force"] == list(range(n))
    # the birth, the first compressed NDATA, the plain one
    assert [(r.value, r.timestamp) for r in spark()] == [(20.0, T0 + 1.0), (0.0, T0 + 2.0), (99.0, T0 + 9.0)]
    # the seq gap the skipped messages leave is this host's doing: not counted, no rebirth asked
    assert src.stats.errors_by_reason == {"inflate_budget": n - 1}
    assert src.sparkplug.rebirths_requested == 0


async def test_a_compressed_death_or_birth_is_read_while_the_inflate_budget_is_spent(mosquitto):
    """Before, while the source's inflate budget was spent every compressed payload was skipped, a death or
    a birth too: a node whose compressed NDEATH came then stayed alive, its tags GOOD, until its next birth.
    A message's type is in its topic, known before inflating: births and deaths are inflated all the same
    (charged, bounded by max_message_bytes); only data messages are inflate_budget."""
    # spent by the first NDATA for a minute
    src, pub, got, task = await _started(mosquitto.port, 4096)
    try:
        await _ready(src)
        birth = sp._pb().Payload()
        birth.timestamp, birth.seq = T0_MS + 1000, 0
        _metric(birth, "bdSeq", datatype=D.INT64, long_value=0)
        _metric(birth, "Temp", alias=1, datatype=D.DOUBLE, double_value=20.0)
        pub.publish("spBv1.0/g/NBIRTH/n", birth.SerializeToString(), qos=1)
        for i in range(2):  # the first is read and spends the budget; the second is inflate_budget
            bomb = sp._pb().Payload()
            bomb.timestamp, bomb.seq = T0_MS + 2000 + i, i + 1
            _metric(bomb, alias=1, double_value=float(i))
            bomb.body = b"\0" * (256 * 1024)
            pub.publish("spBv1.0/g/NDATA/n", _compressed(bomb), qos=1)
        death = sp._pb().Payload()
        _metric(death, "bdSeq", datatype=D.INT64, long_value=0)
        pub.publish("spBv1.0/g/NDEATH/n", _compressed(death), qos=1)
        birth.seq, birth.timestamp = 0, T0_MS + 5000  # born again, compressed: its data is read after it
        birth.metrics[0].long_value, birth.metrics[1].double_value = 1, 30.0
        pub.publish("spBv1.0/g/NBIRTH/n", _compressed(birth), qos=1)
        try:
            async with asyncio.timeout(10):
                while not any(r.tag == "n/Temp" and r.value == 30.0 for r in got):
                    await asyncio.sleep(0.02)
        except TimeoutError:
            pass  # what came is asserted below
    finally:
        task.cancel()
        closed(pub)
        await src.stop()
    assert [(r.value, r.quality) for r in got if r.tag == "n/Temp"] == [
        (20.0, Quality.GOOD),
        (0.0, Quality.GOOD),
        (0.0, Quality.BAD),  # the death: the node's tags BAD, as for a plain NDEATH
        (30.0, Quality.GOOD),
    ]
    assert src.stats.errors_by_reason == {"inflate_budget": 1}
    assert (src.sparkplug.births, src.sparkplug.deaths) == (2, 1)


async def test_a_node_flooding_compressed_payloads_does_not_hold_up_another_nodes_compressed_data(mosquitto):
    """Before, the inflate budget was the source's: one node flooding compressed payloads spent it, and every
    other compressed node of the source had its NDATA skipped as inflate_budget with the flood's, its
    readings lost while nothing was wrong with it. Now each edge node has its own budget
    (sparkplug.max_inflated_bytes_per_s), drawing on a total of 4 times it for the source's nodes together:
    the flooding node is held to its own, and a well-behaved compressed node beside it keeps every reading."""
    # 4 KB a second a node, 16 KB all together: the flood's first message (12 KiB inflated) is read and
    # leaves its node a debt of 8 KiB, paid back in 2 s, the test's time; the total keeps 4 KiB
    src, pub, got, task = await _started(mosquitto.port, 4096)
    n = 10
    try:
        await _ready(src)
        for node in ("flood", "calm"):
            birth = sp._pb().Payload()
            birth.timestamp, birth.seq = T0_MS + 1000, 0
            _metric(birth, "bdSeq", datatype=D.INT64, long_value=0)
            _metric(birth, "Temp", alias=1, datatype=D.DOUBLE, double_value=20.0)
            pub.publish(f"spBv1.0/g/NBIRTH/{node}", birth.SerializeToString(), qos=1)
        for i in range(n):
            bomb = sp._pb().Payload()  # 12 KiB of zeros in the payload's body
            bomb.timestamp, bomb.seq = T0_MS + 2000 + i, i + 1
            _metric(bomb, alias=1, double_value=float(i))
            bomb.body = b"\0" * (12 * 1024)
            pub.publish("spBv1.0/g/NDATA/flood", _compressed(bomb), qos=1)
            calm = sp._pb().Payload()  # a few dozen bytes inflated: well within its own budget
            calm.timestamp, calm.seq = T0_MS + 2000 + i, i + 1
            _metric(calm, alias=1, double_value=100.0 + i)
            pub.publish("spBv1.0/g/NDATA/calm", _compressed(calm), qos=1)
        try:
            async with asyncio.timeout(10):
                while not any(r.tag == "calm/Temp" and r.value == 100.0 + n - 1 for r in got):
                    await asyncio.sleep(0.02)
                await asyncio.sleep(0.2)  # the flood's last message, published before, is handled too
        except TimeoutError:
            pass  # what came is asserted below
    finally:
        task.cancel()
        closed(pub)
        await src.stop()
    # every reading of the well-behaved node, in order
    assert [r.value for r in got if r.tag == "calm/Temp"] == [20.0] + [100.0 + i for i in range(n)]
    # the flooding node is held to its own budget: its first message read, most others skipped
    flood = [r.value for r in got if r.tag == "flood/Temp"]
    skipped = src.stats.errors_by_reason.get("inflate_budget", 0)
    assert flood[:2] == [20.0, 0.0] and skipped >= 1
    assert len(flood) - 1 + skipped == n  # each flood message read or skipped, none of the calm node's
    assert set(src.stats.errors_by_reason) == {"inflate_budget"}
    assert src.sparkplug.rebirths_requested == 0


async def test_a_node_storming_compressed_births_does_not_starve_another_nodes_data_and_its_last_birth_is_known(
    mosquitto,
):
    """Before, compressed births were inflated whatever the budget and charged to the source's total, which
    other nodes' data is read on: one node in a rebirth storm (compressed NBIRTHs in a loop) spent it, and a
    well-behaved compressed node beside it had every NDATA skipped as inflate_budget. Now births and deaths
    draw on budgets of their own (per node, and 4 times it in total): the storming node's births past its
    budget are skipped (inflate_budget), the node stale (its tags BAD once, its data data_before_birth), and
    once its budget has refilled its next message is answered by a rebirth request, which it answers as a Tahu
    node does: the metrics of its last birth are known. The calm node keeps every reading."""
    settings = MqttSettings(
        port=mosquitto.port,
        subscriptions=[{"topic": "spBv1.0/g/#", "codec": "sparkplug_b", "qos": 1}],
        max_message_bytes=300 * 1024,
        # 4 KB a second a node: the storm's first birth (12 KiB inflated) is read and leaves a debt of 8 KiB,
        # paid back in 2 s; the source's births together 16 KB, data together 16 KB
        sparkplug={"max_inflated_bytes_per_s": 4096, "rebirth_min_interval_s": 1.0},
    )
    src = MqttSource("mq", settings)
    await src.start()
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    k, n = 20, 10
    asked: list[bytes] = []

    def storm_birth(step: int) -> bytes:
        nb = sp._pb().Payload()
        nb.timestamp, nb.seq = T0_MS + 1000 + step, 0
        _metric(nb, "bdSeq", datatype=D.INT64, long_value=0)
        _metric(nb, "Step", alias=1, datatype=D.DOUBLE, double_value=float(step))
        nb.body = b"\0" * (12 * 1024)  # 12 KiB inflated, a few dozen bytes sent
        return _compressed(nb)

    # the storming node's data seq, which starts again after each birth it sends, as a node's does (under a
    # lock: a data message numbered before the birth and sent after it would be a seq_gap of the test's own)
    seq, sending = [1], threading.Lock()

    def on_message(client, userdata, msg) -> None:  # the storming node answers a rebirth with its birth
        asked.append(msg.payload)
        with sending:
            seq[0] = 1
            client.publish("spBv1.0/g/NBIRTH/storm", storm_birth(k - 1), qos=1)

    pub.on_message = on_message
    pub.connect("127.0.0.1", mosquitto.port, 30)
    pub.subscribe("spBv1.0/g/NCMD/storm", qos=1)
    pub.loop_start()
    got, task = _consume(src)
    try:
        await _ready(src)
        calm = sp._pb().Payload()
        calm.timestamp, calm.seq = T0_MS + 1000, 0
        _metric(calm, "bdSeq", datatype=D.INT64, long_value=0)
        _metric(calm, "Temp", alias=1, datatype=D.DOUBLE, double_value=20.0)
        pub.publish("spBv1.0/g/NBIRTH/calm", _compressed(calm), qos=1)
        for i in range(k):  # the storm, the calm node's compressed data among it
            pub.publish("spBv1.0/g/NBIRTH/storm", storm_birth(i), qos=1)
            if i < n:
                data = sp._pb().Payload()
                data.timestamp, data.seq = T0_MS + 2000 + i, i + 1
                _metric(data, alias=1, double_value=100.0 + i)
                pub.publish("spBv1.0/g/NDATA/calm", _compressed(data), qos=1)

        def last_known() -> bool:
            return any(r.tag == "storm/Step" and r.value == k - 1 for r in got)

        try:
            async with asyncio.timeout(10):
                sent = 0
                while not last_known():  # the storming node goes on sending data, as a node does
                    with sending:
                        plain = sp._pb().Payload()
                        sent += 1
                        plain.timestamp, plain.seq = T0_MS + 3000 + sent, seq[0]
                        _metric(plain, alias=1, double_value=float(k - 1))
                        pub.publish("spBv1.0/g/NDATA/storm", plain.SerializeToString(), qos=1)
                        seq[0] += 1
                    await asyncio.sleep(0.25)
        except TimeoutError:
            pass  # what came is asserted below
    finally:
        task.cancel()
        closed(pub)
        await src.stop()
    # every reading of the well-behaved node, in order
    assert [r.value for r in got if r.tag == "calm/Temp"] == [20.0] + [100.0 + i for i in range(n)]
    # the storm's first birth read, its node stale at the second, and its last birth known once asked again
    assert [(r.value, r.quality) for r in got if r.tag == "storm/Step"][:2] == [
        (0.0, Quality.GOOD),
        (0.0, Quality.BAD),
    ]
    assert [(r.value, r.quality) for r in got if r.tag == "storm/Step"][-1] == (k - 1, Quality.GOOD)
    assert src.stats.errors_by_reason == {"inflate_budget": k - 1}
    assert src.sparkplug.births_skipped == k - 1
    assert asked and src.sparkplug.rebirths_requested == len(asked)  # asked only once its budget refilled


async def test_a_node_flooding_compressed_deaths_does_not_starve_another_nodes_birth(mosquitto):
    """Before, a compressed death was inflated whatever its node's births budget, and charged to it and to the
    births' total of the source: one node flooding compressed NDEATHs (a flapping or hostile client: each a
    few dozen bytes sent, kilobytes inflated) drove the total into debt, and every other node's compressed
    birth was then skipped as inflate_budget, the node stale. Now a death is inflated while its own node's
    budget has some left; past it, it is a death all the same, its bdSeq unread (counted as inflate_budget),
    so a node spends its own share of the total only, and the calm node's birth is read."""
    # 4 KB a second a node, 16 KB the births and deaths of all together: the flood's 200 deaths of 3 KiB
    # inflated would leave the total some 580 KiB in debt, 36 s to pay back
    src, pub, got, task = await _started(mosquitto.port, 4096)

    # a Payload of the generated module (``sp._pb()``): a call is no annotation mypy reads
    def birth(value: float) -> Any:
        nb = sp._pb().Payload()
        nb.timestamp, nb.seq = T0_MS + 1000, 0
        _metric(nb, "bdSeq", datatype=D.INT64, long_value=0)
        _metric(nb, "Temp", alias=1, datatype=D.DOUBLE, double_value=value)
        return nb

    try:
        await _ready(src)
        pub.publish("spBv1.0/g/NBIRTH/flap", birth(1.0).SerializeToString(), qos=1)
        death = sp._pb().Payload()
        _metric(death, "bdSeq", datatype=D.INT64, long_value=0)
        death.body = b"\0" * (3 * 1024)  # 3 KiB inflated, a few dozen bytes sent
        for _ in range(200):
            pub.publish("spBv1.0/g/NDEATH/flap", _compressed(death), qos=1)
        pub.publish("spBv1.0/g/NBIRTH/calm", _compressed(birth(20.0)), qos=1)
        pub.publish("spBv1.0/g/NBIRTH/last", birth(3.0).SerializeToString(), qos=1)  # in order after it
        async with asyncio.timeout(10):
            while not any(r.tag == "last/Temp" for r in got):
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        closed(pub)
        await src.stop()
    assert [(r.value, r.quality) for r in got if r.tag == "calm/Temp"] == [(20.0, Quality.GOOD)]
    assert src.sparkplug.births_skipped == 0
    # the flood is deaths all the same: the flapping node's tag went BAD at the first and stayed so
    assert [(r.value, r.quality) for r in got if r.tag == "flap/Temp"][:2] == [
        (1.0, Quality.GOOD),
        (1.0, Quality.BAD),
    ]


async def test_data_of_ever_new_devices_while_a_nodes_births_budget_is_spent_does_not_grow_the_memory(
    mosquitto,
):
    """Before, each DDATA of a device not born yet added the device's name to the rebirth its node wanted, and
    while the node's births budget was spent (a compressed birth inflating much) no rebirth was asked, so
    nothing emptied it: a node sending data under ever new device names (a bug or a hostile client) grew the
    host's memory by a name a message, without bound. Now past ``MAX_WANTED_DEVICES`` names the node's own
    rebirth is wanted (it answers with every device's birth), and the names are let go."""
    from devices.mqtt import sparkplug_host

    # the DBIRTH's 256 KiB: a minute of debt
    src, pub, got, task = await _started(mosquitto.port, 4096)
    n = sparkplug_host.MAX_WANTED_DEVICES + 200
    try:
        await _ready(src)
        nb = sp._pb().Payload()
        nb.timestamp, nb.seq = T0_MS + 1000, 0
        _metric(nb, "bdSeq", datatype=D.INT64, long_value=0)
        pub.publish("spBv1.0/g/NBIRTH/n", nb.SerializeToString(), qos=1)
        db = sp._pb().Payload()
        db.timestamp, db.seq = T0_MS + 1000, 1
        _metric(db, "Temp", alias=1, datatype=D.DOUBLE, double_value=20.0)
        db.body = b"\0" * (256 * 1024)
        pub.publish("spBv1.0/g/DBIRTH/n/d0", _compressed(db), qos=1)
        for i in range(n + 1):
            data = sp._pb().Payload()
            data.timestamp, data.seq = T0_MS + 2000 + i, (i + 2) % 256
            _metric(data, alias=1, double_value=float(i))
            pub.publish(f"spBv1.0/g/DDATA/n/{'d0' if i == n else f'dev{i}'}", data.SerializeToString(), qos=1)
        async with asyncio.timeout(20):
            while not any(r.tag == "n/d0/Temp" and r.value == float(n) for r in got):
                await asyncio.sleep(0.02)
        node = src.sparkplug._nodes[("g", "n")]
        assert len(node.want) <= sparkplug_host.MAX_WANTED_DEVICES
        assert None in node.want  # the node's rebirth, asked once its births budget has some left
        assert src.sparkplug.rebirths_requested == 0 and src.sparkplug.data_before_birth == n
    finally:
        task.cancel()
        closed(pub)
        await src.stop()


async def test_a_compressed_death_over_64_kib_is_matched_to_the_birth_by_its_bdseq_a_stale_will_kills_nothing(
    mosquitto,
):
    """Before, a compressed NDEATH inflating past 64 KiB was taken as a death without its bdSeq: a stale will of
    the node's older session (its bdSeq not the current birth's), if large, killed the live session, its tags
    BAD and commands refused until the next birth. Now its bdSeq is read from its first 64 KiB inflated (the
    metrics come before the body): a stale will is ignored, the current session's death is taken, and one whose
    bdSeq is not within that bound is refused (counted too_large, not a death: Sparkplug 3.0 has an NDEATH carry
    its birth's bdSeq, which must match)."""
    src, pub, got, task = await _started(mosquitto.port, 4 * 1024 * 1024)

    def death(bd: int, big_first: bool = False) -> bytes:
        d = sp._pb().Payload()
        if big_first:  # a metric of 70 KiB before the bdSeq: not within the bound
            _metric(d, "junk", datatype=D.STRING, string_value="x" * (70 * 1024))
        _metric(d, "bdSeq", datatype=D.INT64, long_value=bd)
        d.body = b"\0" * (80 * 1024)  # inflates past 64 KiB
        return _compressed(d)

    step = 0

    async def data_read() -> None:  # the node's next NDATA read: every message before it was handled
        nonlocal step
        step += 1
        nd = sp._pb().Payload()
        nd.timestamp, nd.seq = T0_MS + 1000 * step, step
        _metric(nd, alias=1, double_value=float(step))
        pub.publish("spBv1.0/g/NDATA/n", nd.SerializeToString(), qos=1)
        async with asyncio.timeout(10):
            while not any(r.tag == "n/Temp" and r.value == step for r in got):
                await asyncio.sleep(0.02)

    try:
        await _ready(src)
        nb = sp._pb().Payload()
        nb.timestamp, nb.seq = T0_MS, 0
        _metric(nb, "bdSeq", datatype=D.INT64, long_value=1)
        _metric(nb, "Temp", alias=1, datatype=D.DOUBLE, double_value=0.0)
        pub.publish("spBv1.0/g/NBIRTH/n", nb.SerializeToString(), qos=1)
        pub.publish("spBv1.0/g/NDEATH/n", death(0), qos=1)  # the will of its session before: stale
        await data_read()
        assert src.sparkplug.deaths == 0 and src.sparkplug.node_alive("g", "n")
        pub.publish("spBv1.0/g/NDEATH/n", death(1, big_first=True), qos=1)  # bdSeq past the bound
        await data_read()
        assert src.sparkplug.deaths == 0 and src.sparkplug.node_alive("g", "n")
        pub.publish("spBv1.0/g/NDEATH/n", death(1), qos=1)  # the current session's death
        async with asyncio.timeout(10):
            while src.sparkplug.deaths == 0:
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        closed(pub)
        await src.stop()
    assert not src.sparkplug.node_alive("g", "n")
    assert [r.quality for r in got if r.tag == "n/Temp"] == [Quality.GOOD] * 3 + [Quality.BAD]
    assert src.stats.errors_by_reason == {"too_large": 3}  # each death past the bound, counted once


async def test_a_calm_nodes_compressed_birth_is_read_while_six_nodes_storm_births_their_total_bounded(
    mosquitto, monkeypatch
):
    """Before, four or more nodes storming compressed NBIRTHs spent the births' total between them (each its own
    budget's worth), and a calm node's compressed birth was then skipped as inflate_budget, the node stale,
    until a rebirth found the total with some left (the storm spent it again first). Now the total's last
    node's worth is kept from nodes refused within the last second (storming): they stop at it, and a node
    refused nothing finds it; the total still bounds them all."""
    # the host's clock held: the budgets refill only as the test moves it, however long a loaded machine takes
    monkeypatch.setattr(sparkplug_host, "time", clock := ShiftedClock(held=True))
    # 64 KiB a second a node, 256 KiB all nodes' births together, 64 KiB of it kept from storming nodes
    src, pub, got, task = await _started(mosquitto.port, 64 * 1024)
    stop = threading.Event()

    def storm() -> None:  # six nodes, a birth of 48 KiB inflated each, a thousand births a second in all
        c = paho.Client(CallbackAPIVersion.VERSION2)
        c.connect("127.0.0.1", mosquitto.port, 30)
        c.loop_start()
        nb = sp._pb().Payload()
        nb.timestamp, nb.seq = T0_MS, 0
        _metric(nb, "bdSeq", datatype=D.INT64, long_value=0)
        _metric(nb, "Step", alias=1, datatype=D.DOUBLE, double_value=0.0)
        nb.body = b"\0" * (48 * 1024)
        data = _compressed(nb)
        while not stop.is_set():
            for k in range(6):
                c.publish(f"spBv1.0/g/NBIRTH/storm{k}", data, qos=0)
                stop.wait(0.001)
        closed(c)

    stormer = threading.Thread(target=storm, daemon=True)
    try:
        await _ready(src)
        stormer.start()
        async with asyncio.timeout(30):  # the storm under way: its births skipped by the hundred
            while src.sparkplug.births_skipped < 300:
                await asyncio.sleep(0.02)
        # most of a second passes, the storm going on: the total refills (the storm's first births, each node's
        # first, had spent it all) and the nodes storming (refused within STORMING_S) spend it down to its reserve
        clock.ahead += 0.9 * sp.STORMING_S
        skipped = src.sparkplug.births_skipped
        async with asyncio.timeout(30):  # each storming node refused again and again since
            while src.sparkplug.births_skipped < skipped + 300:
                await asyncio.sleep(0.02)
        cb = sp._pb().Payload()
        cb.timestamp, cb.seq = T0_MS, 0
        _metric(cb, "bdSeq", datatype=D.INT64, long_value=0)
        _metric(cb, "Temp", alias=1, datatype=D.DOUBLE, double_value=20.0)
        pub.publish("spBv1.0/g/NBIRTH/calm", _compressed(cb), qos=1)
        nd = sp._pb().Payload()
        nd.timestamp, nd.seq = T0_MS + 1000, 1
        _metric(nd, alias=1, double_value=21.0)
        pub.publish("spBv1.0/g/NDATA/calm", nd.SerializeToString(), qos=1)  # in order after its birth
        async with asyncio.timeout(30):
            while not src.sparkplug.data_before_birth and not any(r.value == 21.0 for r in got):
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        stormer.join(5)
        task.cancel()
        closed(pub)
        await src.stop()
    assert [(r.value, r.quality) for r in got if r.tag == "calm/Temp"] == [
        (20.0, Quality.GOOD),
        (21.0, Quality.GOOD),
    ]
    assert src.sparkplug.data_before_birth == 0  # before: its birth skipped, its data before birth
    assert src.sparkplug.births < src.sparkplug.births_skipped  # the storm's held to the total


async def test_a_calm_nodes_first_birth_is_read_amid_a_storms_opening_burst_of_nodes_never_seen_before(
    mosquitto, monkeypatch
):
    """The births' total keeps one node's worth from storming nodes, those refused within the last second. In a
    storm's opening burst nothing has been refused yet (every node is new): before, four nodes sending
    compressed births in a loop spent the whole total, reserve and all, before any was refused, and the first
    birth of a calm node among them was skipped (inflate_budget), the node stale until a rebirth it asked was
    answered. Now a node that has inflated more than half its second's worth within about the last second is
    busy and may not draw on the reserve either, so the calm node's birth is read. (The total still bounds
    them all: as many nodes never seen before as the total holds, each sending its first birth at once, can
    still spend it, and a calm one after them is asked its birth once the budget has refilled.)"""
    # the host's clock held: the budgets refill not at all, however long a loaded machine takes over the burst
    monkeypatch.setattr(sparkplug_host, "time", ShiftedClock(held=True))
    src, pub, got, task = await _started(mosquitto.port, 4096)  # 4 KB a node, 16 KB all births together

    def birth(name: str, value: float, inflated: int | None) -> None:
        nb = sp._pb().Payload()
        nb.timestamp, nb.seq = T0_MS + 1000, 0
        _metric(nb, "bdSeq", datatype=D.INT64, long_value=0)
        _metric(nb, "Temp", alias=1, datatype=D.DOUBLE, double_value=value)
        if inflated is None:  # plain: no budget
            pub.publish(f"spBv1.0/g/NBIRTH/{name}", nb.SerializeToString(), qos=1)
            return
        nb.body = b"\0" * inflated
        pub.publish(f"spBv1.0/g/NBIRTH/{name}", _compressed(nb), qos=1)

    try:
        await _ready(src)
        for step in range(10):  # four nodes storming births of 3 KB inflated each, all new
            for i in range(4):
                birth(f"storm{i}", float(step), 3000)
        birth("calm", 20.0, 100)
        birth("last", 3.0, None)  # in order after it: every message before it was handled
        async with asyncio.timeout(10):
            while not any(r.tag == "last/Temp" for r in got):
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        closed(pub)
        await src.stop()
    assert [(r.value, r.quality) for r in got if r.tag == "calm/Temp"] == [
        (20.0, Quality.GOOD)
    ]  # before: none
    assert src.sparkplug.births_skipped >= 20  # the storm's births past their budgets skipped


async def test_a_calm_nodes_births_past_half_its_budget_are_read_amid_a_storm_going_on(mosquitto):
    """A calm node's restart is one NBIRTH and then a DBIRTH per device, back to back: together they may inflate
    to more than half its second's worth. Since a node that had inflated over half of it was busy and kept off
    the births' reserve (for a storm's opening burst), such a calm node's later DBIRTHs amid a storm going on
    (the total held at its reserve by the storming nodes) were skipped: the device stale, and the rebirth asked
    for it brought the same births, cut again, for as long as the storm lasted. Before that the whole reserve
    was the calm node's. Now a node's births are judged at its NBIRTH: one not busy then may draw on the reserve
    for the DBIRTHs that follow it (within STORMING_S), up to its own budget."""
    src, pub, got, task = await _started(mosquitto.port, 4096)  # 4 KB a node, 16 KB all births together

    def birth(kind: str, name: str, inflated: int | None) -> None:
        nb = sp._pb().Payload()
        nb.timestamp, nb.seq = T0_MS + 1000, 0
        if kind == "NBIRTH":
            _metric(nb, "bdSeq", datatype=D.INT64, long_value=0)
        _metric(nb, "Temp", datatype=D.DOUBLE, double_value=20.0)
        if inflated is None:  # plain: no budget
            pub.publish(f"spBv1.0/g/{kind}/{name}", nb.SerializeToString(), qos=1)
            return
        nb.body = b"\0" * inflated
        pub.publish(f"spBv1.0/g/{kind}/{name}", _compressed(nb), qos=1)

    async def storm() -> None:  # eight nodes storming small births: the total held at its reserve
        while True:
            for i in range(8):
                birth("NBIRTH", f"storm{i}", 300)
            await asyncio.sleep(0.005)

    storming = asyncio.create_task(storm())
    try:
        await _ready(src)
        # the storm going on: its opening burst spent the total, which has refilled up to the reserve that the
        # storming nodes may not draw on
        total = src.sparkplug._births_total
        await until(
            lambda: src.sparkplug.births_skipped > 100 and total.left() > 3000, 20, "a storm going on"
        )
        birth("NBIRTH", "calm", 700)  # ~3 KB inflated in all: three quarters of its budget
        for d in ("d1", "d2", "d3"):
            birth("DBIRTH", f"calm/{d}", 700)
        await asyncio.sleep(0.2)  # the storm goes on meanwhile
        storming.cancel()
        birth("NBIRTH", "last", None)  # in order after them: every message before it was handled
        await until(lambda: any(r.tag == "last/Temp" for r in got), 20, "the births before 'last' handled")
    finally:
        storming.cancel()
        task.cancel()
        closed(pub)
        await src.stop()
    calm = sorted(r.tag for r in got if r.tag.startswith("calm/") and r.quality is Quality.GOOD)
    assert calm == ["calm/Temp", "calm/d1/Temp", "calm/d2/Temp", "calm/d3/Temp"]  # before: no calm/d3/Temp
