"""A Sparkplug B node whose seq goes past 255 (Sparkplug's runs 0..255 and wraps), through a real Mosquitto:
a node that counts on (256, 257, ...) is said once, counted, and kept in sequence by its seq compared whole; a
lost message is still a gap (however many were lost), asked one rebirth; a node whose seq is anything asks one
rebirth, never a storm."""

from __future__ import annotations

import asyncio

from protocols import sparkplug as sp
from tests.integration.test_sparkplug_compressed import T0_MS
from tests.integration.test_sparkplug_rebirth_requests import _host
from tests.support.sparkplug_pb import pb_metric as _metric
from tests.support.waits import until

D = sp.DataType


def _seq_host(port: int, got: list | None = None):
    """``_host`` on ``spBv1.0/g/#``, the rebirths asked on NCMD as soon as they are wanted (no interval), its
    readings into ``got`` if given."""
    return _host(port, "spBv1.0/g/NCMD/+", got, sparkplug={"rebirth_min_interval_s": 0})


def _nbirth(seq: int = 0, at_ms: int = 0) -> bytes:
    b = sp._pb().Payload()
    b.timestamp, b.seq = T0_MS + at_ms, seq
    _metric(b, "bdSeq", datatype=D.INT64, long_value=0)
    _metric(b, "Temp", alias=1, datatype=D.DOUBLE, double_value=20.0)
    return b.SerializeToString()


def _ndata(seq: int, value: float) -> bytes:
    d = sp._pb().Payload()
    d.timestamp, d.seq = T0_MS + int(value), seq
    _metric(d, alias=1, double_value=value)
    return d.SerializeToString()


async def test_a_node_counting_its_seq_on_past_255_is_said_once_and_kept_in_sequence(mosquitto):
    """Before, its 256 after 255 was a seq gap and so was every message after it (seq_gap each one, a rebirth
    asked at every wrap of its low byte), and nothing said the seq was outside 0-255."""
    async with _seq_host(mosquitto.port) as (src, asked, pub):
        for node in ("a", "b"):
            pub.publish(f"spBv1.0/g/NBIRTH/{node}", _nbirth(), qos=1)
        for seq in range(1, 301):  # "a" counts on past 255; "b" wraps as Sparkplug says
            pub.publish("spBv1.0/g/NDATA/a", _ndata(seq, float(seq)), qos=1)
            pub.publish("spBv1.0/g/NDATA/b", _ndata(seq % 256, float(seq)), qos=1)
        await until(lambda: src.stats.received >= 2 + 600, 30, "every message read")
        await asyncio.sleep(0.3)  # a rebirth asked would be on its way
        assert asked == [] and src.sparkplug.rebirths_requested == 0
        assert src.stats.errors_by_reason == {}
        notice = src.notices.status()["seq_out_of_range"]
        assert notice["count"] == 45  # 256..300, each message counted
        assert "'g/a': seq 256 in its NDATA is outside 0-255" in notice["message"]
        assert "wrap its seq at 255" in notice["message"] and not notice.get("more")  # said once, of "a" only
        # a message lost by the node counting on is a gap still: counted, one rebirth asked
        pub.publish("spBv1.0/g/NDATA/a", _ndata(302, 302.0), qos=1)
        await until(lambda: asked == ["a"], 30, "a rebirth asked for the gap 300 -> 302")
    assert src.stats.errors_by_reason == {"seq_gap": 1}
    assert src.notices.status()["seq_out_of_range"]["count"] == 46


async def test_a_node_whose_seq_is_anything_past_255_asks_one_rebirth_not_a_storm(mosquitto):
    """A node whose seq is no sequence at all (a broken encoder's): each message counted as out of range and as
    a gap, one rebirth asked (its births answer it and its seq stays broken: not asked again)."""
    async with _seq_host(mosquitto.port) as (src, asked, pub):
        pub.publish("spBv1.0/g/NBIRTH/a", _nbirth(), qos=1)
        pub.publish("spBv1.0/g/NDATA/a", _ndata(1, 1.0), qos=1)  # in sequence: a later gap asks
        for i in range(60):
            pub.publish("spBv1.0/g/NDATA/a", _ndata(1000 + 7 * i * i, float(i)), qos=1)
            if i % 20 == 19:  # the node answers the rebirth, then goes on as before
                pub.publish("spBv1.0/g/NBIRTH/a", _nbirth(), qos=1)
        await until(lambda: src.stats.received >= 1 + 1 + 60 + 3, 30, "every message read")
        await asyncio.sleep(0.3)
    assert asked == ["a"] and src.sparkplug.rebirths_requested == 1
    assert src.notices.status()["seq_out_of_range"]["count"] == 60


async def test_a_node_counting_on_that_loses_255_or_256_messages_is_asked_a_rebirth_and_told_as_sent(
    mosquitto,
):
    """Its seq is compared whole. Checked modulo 256, 300 then 556 (255 lost) was a repeat ('seq 44 after 44',
    no rebirth asked) and 300 then 557 (256 lost) in sequence: nothing counted, the lost values unseen."""
    async with _seq_host(mosquitto.port) as (src, asked, pub):
        for node in ("a", "c"):
            pub.publish(f"spBv1.0/g/NBIRTH/{node}", _nbirth(), qos=1)
        for seq in range(1, 301):
            for node in ("a", "c"):
                pub.publish(f"spBv1.0/g/NDATA/{node}", _ndata(seq, float(seq)), qos=1)
        await until(lambda: src.stats.received >= 2 + 600, 30, "every message read")
        assert src.stats.errors_by_reason == {} and asked == []
        pub.publish("spBv1.0/g/NDATA/a", _ndata(556, 556.0), qos=1)  # 301..555 lost
        await until(lambda: "a" in asked, 30, "a rebirth asked for the gap 300 -> 556")
        assert src.stats.last_error == "seq_gap: g/a: seq 556 after 300"
        pub.publish("spBv1.0/g/NDATA/c", _ndata(557, 557.0), qos=1)  # 301..556 lost
        await until(lambda: "c" in asked, 30, "a rebirth asked for the gap 300 -> 557")
        assert src.stats.last_error == "seq_gap: g/c: seq 557 after 300"
    assert src.stats.errors_by_reason == {"seq_gap": 2}


async def test_a_counter_that_wraps_a_rebirth_at_0_and_a_repeat_ask_nothing_when_seq_is_compared_whole(
    mosquitto,
):
    """What was in sequence stays so: a 64-bit counter's 2**64-1 -> 0, a 16-bit one's 65535 -> 0, a signed 16-, 32-
    or 64-bit one's 32767 -> 0, 2**31-1 -> 0, 2**63-1 -> 0 (a PLC's Int16 register, a Java int reset at MAX_VALUE: a
    seq_gap and a rebirth at every wrap, review /work/notes56/review_mqtt L1), a node that counted on past 255
    reborn at seq 0, and a repeat (a redelivery of 556) lost nothing."""
    async with _seq_host(mosquitto.port) as (src, asked, pub):
        sent = {
            "u": [2**64 - 3, 2**64 - 2, 2**64 - 1, 0, 1, 2],
            "w": [65533, 65534, 65535, 0, 1],
            "s": [32766, 32767, 0, 1],
            "j": [2**31 - 2, 2**31 - 1, 0, 1],
            "l": [2**63 - 2, 2**63 - 1, 0, 1],
            "r": list(range(254, 301)),
            "p": [555, 556, 556, 557],
        }
        for node, seqs in sent.items():
            pub.publish(f"spBv1.0/g/NBIRTH/{node}", _nbirth(seqs[0]), qos=1)
            for seq in seqs[1:]:
                # stamped as its birth: the data after r's rebirth (stamped as its birth too) is not older
                pub.publish(f"spBv1.0/g/NDATA/{node}", _ndata(seq, 0.0), qos=1)
        pub.publish("spBv1.0/g/NBIRTH/r", _nbirth(0), qos=1)  # reborn: its seq starts again at 0
        for seq in (1, 2):
            pub.publish("spBv1.0/g/NDATA/r", _ndata(seq, 100.0 + seq), qos=1)
        total = sum(len(seqs) for seqs in sent.values()) + 3
        await until(lambda: src.stats.received >= total, 30, "every message read")
        await asyncio.sleep(0.3)  # a rebirth asked would be on its way
        assert asked == [] and src.sparkplug.rebirths_requested == 0
        assert src.stats.errors_by_reason == {"seq_gap": 1}  # the repeat of 556: counted, nothing asked
        assert src.stats.last_error == "seq_gap: g/p: seq 556 after 556"


async def test_a_0_after_a_seq_past_255_that_tops_no_counter_is_a_gap(mosquitto):
    """A 0 follows only the top of a counter (255, 65535, 2**32-1, 2**64-1). Before, any 0 after a seq whose
    low byte is 255 was in sequence: 511 -> 0 (a node counting on that reset, what it sent between lost)
    counted nothing and asked no rebirth."""
    async with _seq_host(mosquitto.port) as (src, asked, pub):
        for node in ("a", "v"):
            pub.publish(f"spBv1.0/g/NBIRTH/{node}", _nbirth(), qos=1)
        for seq in range(1, 512):
            pub.publish("spBv1.0/g/NDATA/a", _ndata(seq, 0.0), qos=1)
        for seq in (1, 2**32 - 2, 2**32 - 1, 0, 1):  # a 32-bit counter's wrap: in sequence after the first
            pub.publish("spBv1.0/g/NDATA/v", _ndata(seq, 0.0), qos=1)
        await until(lambda: src.stats.received >= 2 + 511 + 5, 30, "every message read")
        # (received counts a message as it is queued, before the host judges its seq: wait for the judging)
        await until(lambda: src.stats.errors_by_reason.get("seq_gap"), 30, "v's 1 -> 2**32-2 judged")
        await asyncio.sleep(0.3)  # v's later messages judged too: in sequence, nothing more counted
        assert src.stats.errors_by_reason == {"seq_gap": 1}  # v's 1 -> 2**32-2
        pub.publish("spBv1.0/g/NDATA/a", _ndata(0, 0.0), qos=1)
        await until(lambda: "a" in asked, 30, "a rebirth asked for 511 -> 0")
        assert src.stats.last_error == "seq_gap: g/a: seq 0 after 511"
    assert src.stats.errors_by_reason == {"seq_gap": 2} and asked.count("v") == 1


async def test_an_nbirth_whose_seq_is_not_0_is_said_once_per_node_and_its_data_read_without_a_rebirth(
    mosquitto,
):
    """Sparkplug 3.0 has every NBIRTH carry seq 0. Such a birth is taken (its data that follows it in sequence is
    in sequence, no rebirth asked: it would answer with another such birth), counted and said once per node.
    Before, nothing was said."""
    async with _seq_host(mosquitto.port) as (src, asked, pub):
        pub.publish("spBv1.0/g/NBIRTH/a", _nbirth(7), qos=1)
        pub.publish("spBv1.0/g/NBIRTH/z", _nbirth(0), qos=1)  # as Sparkplug has it: nothing said
        for seq in (8, 9):
            pub.publish("spBv1.0/g/NDATA/a", _ndata(seq, 0.0), qos=1)  # stamped as its births
        pub.publish("spBv1.0/g/NBIRTH/a", _nbirth(12), qos=1)  # again: counted, not said again
        pub.publish("spBv1.0/g/NDATA/a", _ndata(13, 13.0), qos=1)
        await until(lambda: src.stats.received >= 6, 30, "every message read")
        await asyncio.sleep(0.3)  # a rebirth asked would be on its way
        assert asked == [] and src.sparkplug.rebirths_requested == 0
        assert src.stats.errors_by_reason == {}
        notice = src.notices.status()["birth_seq_not_zero"]
        assert notice["count"] == 2 and src.sparkplug.birth_seq_not_zero == 2
        assert "'g/a': its NBIRTH carries seq 7, not 0" in notice["message"] and not notice.get("more")


async def test_a_node_whose_data_after_each_birth_does_not_follow_it_is_asked_once_not_every_interval(
    mosquitto,
):
    """A node answering each rebirth with a birth whose first data does not follow it: "b" an NBIRTH carrying its
    running counter (40, 44, ...) and data 1, 2, 3 (as the birth_seq_not_zero notice tells it); "c" an NBIRTH at 0
    and data from 2. Its data in sequence after the gap cleared the ask, so the birth answering it asked again:
    a rebirth every rebirth_min_interval_s for ever, each one republishing every metric (review
    /work/notes56/review_mqtt M2). "b" is in sequence (no gap, no ask); "c" is asked once, its every value read."""
    async with _seq_host(mosquitto.port) as (src, asked, pub):
        births = {"b": 0, "c": 0}

        def birth(node: str) -> None:
            n = births[node]
            births[node] += 1
            pub.publish(f"spBv1.0/g/NBIRTH/{node}", _nbirth(40 + 4 * n if node == "b" else 0, 100 * n), qos=1)
            for k in (1, 2, 3) if node == "b" else (2, 3, 4):
                pub.publish(f"spBv1.0/g/NDATA/{node}", _ndata(k, 100.0 * n + k), qos=1)

        birth("b")
        birth("c")
        answered = 0
        for _ in range(15):  # 1.5 s: the former code asked "c" (and "b") a rebirth at every birth
            await asyncio.sleep(0.1)
            for node in asked[answered:]:
                birth(node)
            answered = len(asked)
        await until(lambda: src.stats.received >= 4 * sum(births.values()), 30, "every message read")
    assert asked == ["c"] and births == {"b": 1, "c": 2}
    assert src.stats.errors_by_reason == {"seq_gap": 2}  # c's 2 after 0, at each birth
    assert src.sparkplug.birth_seq_not_zero == 1
    assert (
        "its next message in sequence at 41 or at 1" in src.notices.status()["birth_seq_not_zero"]["message"]
    )


def _press(got: list, node: str) -> list[float]:
    """The values read of ``node``'s Press, in order."""
    return [r.value for r in got if r.tag.endswith(f"{node}/Press")]


def _birth_press(temp: float, press: float, at_ms: int, seq: int = 0) -> bytes:
    b = sp._pb().Payload()
    b.timestamp, b.seq = T0_MS + at_ms, seq
    _metric(b, "bdSeq", datatype=D.INT64, long_value=0)
    _metric(b, "Temp", alias=1, datatype=D.DOUBLE, double_value=temp)
    _metric(b, "Press", alias=2, datatype=D.DOUBLE, double_value=press)
    return b.SerializeToString()


async def test_a_gap_right_after_the_birth_answering_a_gap_is_asked_again_its_lost_value_read(mosquitto):
    """A node whose births are followed in sequence loses data 5 (asked a rebirth), goes on 6, 7, 8 while the ask
    travels, and the first data of the birth answering it (Press = 100) is lost too. Since a birth's own first
    data alone cleared the ask (review /work/notes56/review_mqtt2 M1), its data 2 was a seq_gap with no rebirth
    asked and Press read 0.0 until it changed again. Now it is asked again, and the birth answering that carries
    Press = 100."""
    got: list = []
    async with _seq_host(mosquitto.port, got) as (src, asked, pub):

        def send(kind: str, payload: bytes) -> None:
            pub.publish(f"spBv1.0/g/{kind}/a", payload, qos=1)

        send("NBIRTH", _birth_press(0.0, 0.0, 0))
        for seq in (1, 2, 3, 4, 6, 7, 8):  # 5 lost
            send("NDATA", _ndata(seq, float(seq)))
        await until(lambda: asked == ["a"], 30, "a rebirth asked for the gap 4 -> 6")
        send("NBIRTH", _birth_press(8.0, 0.0, 100))
        for seq in (2, 3):  # 1 (Press = 100) lost
            send("NDATA", _ndata(seq, 100.0 + seq))
        await until(lambda: src.stats.received >= 1 + 7 + 1 + 2, 30, "every message read")
        await until(
            lambda: len(asked) >= 2, 8, "a rebirth asked for the gap 0 -> 2 after the answering birth"
        )
        send("NBIRTH", _birth_press(103.0, 100.0, 200))
        await until(lambda: src.stats.received >= 12, 30, "the birth answering it read")
        await asyncio.sleep(0.3)  # a third rebirth asked would be on its way
    assert asked == ["a", "a"]
    assert src.stats.errors_by_reason == {"seq_gap": 2}
    press = [r.value for r in got if r.tag.endswith("a/Press")]
    assert press and press[-1] == 100.0


async def test_the_first_data_lost_after_two_births_in_a_row_is_asked_both_times_its_lost_value_read(
    mosquitto,
):
    """A node whose births are followed in sequence is born again (a restart) and its first data (Press = 100) is
    lost: asked a rebirth. The first data of the birth answering it (Press = 200) is lost too. Since the ask stood
    until a birth's first data came in sequence, the second gap was counted with no rebirth asked, and Press read
    100 until it changed again. Now a node whose births follow is asked again for a second birth in a row whose
    first data is lost (not past that: a node whose data after each birth never follows it is asked once, as
    before), and the birth answering it carries Press = 200."""
    got: list = []
    async with _seq_host(mosquitto.port, got) as (src, asked, pub):

        def send(kind: str, payload: bytes) -> None:
            pub.publish(f"spBv1.0/g/{kind}/a", payload, qos=1)

        send("NBIRTH", _birth_press(0.0, 0.0, 0))
        for seq in (1, 2):
            send("NDATA", _ndata(seq, float(seq)))
        send("NBIRTH", _birth_press(2.0, 0.0, 100))  # born again; its data 1 (Press = 100) lost
        send("NDATA", _ndata(2, 102.0))
        await until(lambda: asked == ["a"], 30, "a rebirth asked for the gap 0 -> 2")
        send("NBIRTH", _birth_press(102.0, 100.0, 200))  # the answer; its data 1 (Press = 200) lost
        send("NDATA", _ndata(2, 202.0))
        await until(lambda: src.stats.received >= 3 + 2 + 2, 30, "every message read")
        await until(
            lambda: len(asked) >= 2, 8, "a rebirth asked for the gap 0 -> 2 after the answering birth"
        )
        send("NBIRTH", _birth_press(202.0, 200.0, 300))
        await until(lambda: src.stats.received >= 8, 30, "the birth answering it read")
        await asyncio.sleep(0.3)  # a third rebirth asked would be on its way
    assert asked == ["a", "a"]
    assert src.stats.errors_by_reason == {"seq_gap": 2}
    press = [r.value for r in got if r.tag.endswith("a/Press")]
    assert press[-1] == 200.0, press


async def test_a_restart_losing_its_first_data_is_asked_again_once_a_streak_of_such_births_is_old(mosquitto):
    """A node whose births follow loses the first data of three births in a row (a lossy link): asked twice, not
    the third time. Its data then runs in sequence and, later than rebirth_retry_max_s after the last such ask, it
    restarts and loses its first data (Press = 777) again. Since the count of such births reset only when a
    birth's first data came in sequence, that restart was a seq_gap with no rebirth asked, and every later one
    the same, Press unseen until it changed (review /work/notes57/review_plc LOW 1). Now the count is forgotten
    once rebirth_retry_max_s has passed: asked, the birth answering it carries Press = 777."""
    got: list = []
    settings = {"rebirth_min_interval_s": 0, "rebirth_retry_s": 0, "rebirth_retry_max_s": 1.0}
    async with _host(mosquitto.port, "spBv1.0/g/NCMD/+", got, sparkplug=settings) as (src, asked, pub):

        def send(kind: str, payload: bytes) -> None:
            pub.publish(f"spBv1.0/g/{kind}/a", payload, qos=1)

        send("NBIRTH", _birth_press(0.0, 0.0, 0))
        send("NDATA", _ndata(1, 1.0))  # its births follow
        for k in (1, 2, 3):  # three births in a row whose first data is lost
            send("NBIRTH", _birth_press(0.0, 0.0, 100 * k))
            send("NDATA", _ndata(2, 100.0 * k + 2))
        for seq in range(3, 13):  # then in sequence
            send("NDATA", _ndata(seq, 400.0 + seq))
        await until(lambda: src.stats.received >= 2 + 6 + 10, 30, "every message read")
        await asyncio.sleep(0.3)  # a third rebirth asked would be on its way
        assert asked == ["a", "a"]
        await asyncio.sleep(1.0)  # rebirth_retry_max_s since the last such ask
        send("NBIRTH", _birth_press(412.0, 0.0, 500))  # a restart; its data 1 (Press = 777) lost
        send("NDATA", _ndata(2, 502.0))
        await until(lambda: len(asked) >= 3, 8, "a rebirth asked for the gap 0 -> 2 at the later restart")
        send("NBIRTH", _birth_press(502.0, 777.0, 600))
        await until(lambda: src.stats.received >= 21, 30, "the birth answering it read")
        await until(lambda: _press(got, "a")[-1:] == [777.0], 30, "Press = 777 read")
    assert asked == ["a", "a", "a"]
    assert src.stats.errors_by_reason == {"seq_gap": 4}


async def test_a_births_first_data_alone_lost_is_asked_again_across_the_wrap_and_after_data_counting_from_1(
    mosquitto,
):
    """Two births in a row whose first data alone is lost, of nodes whose births follow: "w" born at seq 254 (its
    255 lost, 0 read: the 255 -> 0 wrap) and "r" born at seq 7 whose data counts from 1 (1 lost, 2 read). The
    second birth's loss was compared as the birth's seq + 2 (256, 9) unwrapped: a seq_gap with no rebirth asked,
    the value its lost data carried (Press = 200) unseen (review /work/notes57/review_plc LOW 2). Now both are
    asked again, as a node born at 0 is, and the births answering them carry Press = 200."""
    got: list = []
    births = {"w": (254, 255, 0), "r": (7, 1, 2)}  # birth seq, its first data, the one after
    async with _seq_host(mosquitto.port, got) as (src, asked, pub):
        for node, (at, first, then) in births.items():
            pub.publish(f"spBv1.0/g/NBIRTH/{node}", _birth_press(0.0, 0.0, 0, at), qos=1)
            pub.publish(f"spBv1.0/g/NDATA/{node}", _ndata(first, 1.0), qos=1)  # its births follow
            # born again; its first data (Press = 100) lost
            pub.publish(f"spBv1.0/g/NBIRTH/{node}", _birth_press(1.0, 0.0, 100, at), qos=1)
            pub.publish(f"spBv1.0/g/NDATA/{node}", _ndata(then, 102.0), qos=1)
        await until(lambda: sorted(asked) == ["r", "w"], 30, "a rebirth asked of each for the first gap")
        for node, (at, _, then) in births.items():  # the answer; its first data (Press = 200) lost
            pub.publish(f"spBv1.0/g/NBIRTH/{node}", _birth_press(102.0, 100.0, 200, at), qos=1)
            pub.publish(f"spBv1.0/g/NDATA/{node}", _ndata(then, 202.0), qos=1)
        await until(lambda: src.stats.received >= 12, 30, "every message read")
        await until(lambda: len(asked) >= 4, 8, "a rebirth asked of each after the answering birth")
        for node, (at, _, _) in births.items():
            pub.publish(f"spBv1.0/g/NBIRTH/{node}", _birth_press(202.0, 200.0, 300, at), qos=1)
        await until(lambda: src.stats.received >= 14, 30, "the births answering them read")
        for node in births:
            await until(lambda n=node: _press(got, n)[-1:] == [200.0], 30, f"{node}'s Press = 200 read")
        await asyncio.sleep(0.3)  # a third rebirth asked would be on its way
    assert sorted(asked) == ["r", "r", "w", "w"]
    assert src.stats.errors_by_reason == {"seq_gap": 4}


async def test_the_data_0_lost_after_an_nbirth_at_255_of_a_node_that_wraps_is_a_gap_asked_its_lost_value_read(
    mosquitto,
):
    """A node born at seq 255 whose data wraps to 0 (its first birth so shows it: its seq goes on from its
    births'). Born at 255 again, its data 0 (Press = 100) is lost: the 1 after it was taken as in sequence (data
    counting from 1 after a birth whose seq is not 0), no seq_gap, no rebirth, Press unseen until it changed
    (review /work/notes57/review_plc LOW 3). It is a gap, a rebirth asked; the birth answering it carries
    Press = 100. A node born at 255 whose data wraps to 0 each time is in sequence, nothing asked."""
    got: list = []
    async with _seq_host(mosquitto.port, got) as (src, asked, pub):
        for node in ("a", "b"):  # shown: their seq goes on from their births' (255 -> 0)
            pub.publish(f"spBv1.0/g/NBIRTH/{node}", _birth_press(0.0, 0.0, 0, 255), qos=1)
            pub.publish(f"spBv1.0/g/NDATA/{node}", _ndata(0, 0.0), qos=1)
            pub.publish(f"spBv1.0/g/NBIRTH/{node}", _birth_press(0.0, 0.0, 0, 255), qos=1)
        pub.publish("spBv1.0/g/NDATA/a", _ndata(1, 1.0), qos=1)  # its 0 (Press = 100) lost
        for seq in (0, 1):
            pub.publish("spBv1.0/g/NDATA/b", _ndata(seq, float(seq)), qos=1)
        await until(lambda: asked == ["a"], 30, "a rebirth asked for the gap 255 -> 1")
        assert src.stats.last_error == "seq_gap: g/a: seq 1 after 255"
        pub.publish("spBv1.0/g/NBIRTH/a", _birth_press(1.0, 100.0, 100), qos=1)
        await until(lambda: src.stats.received >= 10, 30, "the birth answering it read")
        await until(lambda: _press(got, "a")[-1:] == [100.0], 30, "Press = 100 read")
        await asyncio.sleep(0.3)  # a rebirth asked of "b" would be on its way
    assert asked == ["a"] and src.stats.errors_by_reason == {"seq_gap": 1}


async def test_a_node_counting_its_data_from_1_after_births_at_255_is_in_sequence_its_real_gaps_asked(
    mosquitto,
):
    """A node whose NBIRTHs carry seq 255 and whose data then counts from 1 (as after Sparkplug's NBIRTH at 0),
    restarting now and then. Each such birth was a seq_gap (its 1 taken as its data 0 lost), a rebirth asked
    of a node that lost nothing, a false alarm to the operator at every birth. Now its 1 is in sequence, at its
    first birth and after a birth at 7 that shows it counts from 1; a real loss is still a gap: its 1 lost after
    a birth (2 read), and a data message lost later (4 after 2), each asked a rebirth."""
    async with _seq_host(mosquitto.port) as (src, asked, pub):

        def send(kind: str, payload: bytes) -> None:
            pub.publish(f"spBv1.0/g/{kind}/a", payload, qos=1)

        for k, at in enumerate((255, 255, 7, 255)):  # its births, each followed by its data from 1
            send("NBIRTH", _nbirth(at, 100 * k))
            for seq in (1, 2, 3):
                send("NDATA", _ndata(seq, 100.0 * k + seq))
        await until(lambda: src.stats.received >= 16, 30, "every message read")
        await asyncio.sleep(0.3)  # a rebirth asked would be on its way
        # one rebirth, at its first birth (its kind not shown yet: its 0 may be lost), no gap counted
        assert asked == ["a"] and src.stats.errors_by_reason == {}
        assert src.sparkplug.birth_seq_not_zero == 4
        assert (
            "its next message in sequence at 256, at 0 or at 1"
            in (src.notices.status()["birth_seq_not_zero"]["message"])
        )
        send("NBIRTH", _nbirth(255, 400))
        send("NDATA", _ndata(2, 402.0))  # its 1 lost
        await until(lambda: len(asked) == 2, 30, "a rebirth asked for the gap 255 -> 2")
        assert src.stats.last_error == "seq_gap: g/a: seq 2 after 255"
        send("NBIRTH", _nbirth(255, 500))
        for seq in (1, 2, 4):  # 3 lost
            send("NDATA", _ndata(seq, 500.0 + seq))
        await until(lambda: len(asked) == 3, 30, "a rebirth asked for the gap 2 -> 4")
        assert src.stats.last_error == "seq_gap: g/a: seq 4 after 2"
    assert src.stats.errors_by_reason == {"seq_gap": 2}


async def test_a_nodes_first_birth_at_255_whose_data_0_is_lost_is_asked_a_rebirth_its_lost_value_read(
    mosquitto,
):
    """A node born at seq 255 whose seq goes on from its births' (255 -> 0), its kind not shown yet (the host's
    first birth of it), whose data 0 (Press = 100) is lost: its 1 was taken as data counting from 1, in sequence,
    nothing asked, Press unseen until it changed (review /work/notes58/review_proto L1). Its kind cannot be told
    from the seq: one rebirth is asked (not counted as a gap), whose birth carries Press = 100; that birth at
    another seq (2, its 3 next) shows the node goes on, so its next birth at 255 followed by 1 is a gap."""
    got: list = []
    async with _seq_host(mosquitto.port, got) as (src, asked, pub):

        def send(kind: str, payload: bytes) -> None:
            pub.publish(f"spBv1.0/g/{kind}/a", payload, qos=1)

        send("NBIRTH", _birth_press(0.0, 0.0, 0, 255))
        send("NDATA", _ndata(1, 1.0))  # its 0 (Press = 100) lost
        await until(lambda: asked == ["a"], 30, "a rebirth asked for the 1 after its first birth at 255")
        assert src.stats.errors_by_reason == {}
        assert "seq 1 after its NBIRTH at 255" in src.notices.status()["birth_seq_unsure"]["message"]
        send("NBIRTH", _birth_press(1.0, 100.0, 100, 2))  # the answer: Press = 100
        send("NDATA", _ndata(3, 103.0))  # its seq goes on from its birth's
        await until(lambda: _press(got, "a")[-1:] == [100.0], 30, "Press = 100 read")
        send("NBIRTH", _birth_press(3.0, 100.0, 200, 255))
        send("NDATA", _ndata(1, 201.0))  # its 0 lost again
        await until(lambda: len(asked) == 2, 30, "a rebirth asked for the gap 255 -> 1")
        assert src.stats.last_error == "seq_gap: g/a: seq 1 after 255"
    assert src.stats.errors_by_reason == {"seq_gap": 1}


async def test_a_node_counting_from_1_born_at_1_whose_1_is_lost_is_not_learnt_to_go_on(mosquitto):
    """A node whose data counts from 1 after each birth, born at seq 1 with its 1 lost: its 2 is also what a node
    going on from its births' sends, and was learnt so; each of its later births at 255 followed by its 1 was then
    a seq_gap and a rebirth asked of a node that lost nothing (review /work/notes58/review_proto L1). Its kind is
    learnt from births at 2 or more only: no gap. Its 2 after its birth at 1 was taken as in sequence, its lost 1
    unseen (review /work/notes59/review_data MEDIUM 6, LOW 1): it is asked the one rebirth a node of unknown kind
    is asked, and none after its births at 255."""
    async with _seq_host(mosquitto.port) as (src, asked, pub):

        def send(kind: str, payload: bytes) -> None:
            pub.publish(f"spBv1.0/g/{kind}/a", payload, qos=1)

        send("NBIRTH", _nbirth(1, 0))
        send("NDATA", _ndata(2, 2.0))  # its 1 lost
        await until(lambda: asked == ["a"], 30, "a rebirth asked for the 2 after its birth at 1")
        message = src.notices.status()["birth_seq_unsure"]["message"]
        assert "seq 2 after its NBIRTH at 1" in message and "with its 1 lost" in message
        for k in (1, 2, 3):
            send("NBIRTH", _nbirth(255, 100 * k))
            for seq in (1, 2, 3):
                send("NDATA", _ndata(seq, 100.0 * k + seq))
        await until(lambda: src.stats.received >= 14, 30, "every message read")
        await asyncio.sleep(0.3)  # a rebirth asked would be on its way
    assert src.stats.errors_by_reason == {}  # was 3 seq_gaps
    assert asked == ["a"]  # its lost 1 asked for (was not); none for its births at 255 (was 3)


async def test_a_node_known_to_count_from_1_whose_1_is_lost_after_a_birth_at_1_or_2_is_a_gap_asked(mosquitto):
    """A node whose data counts from 1 after its births, shown so at a birth at 5 (1, 2 next). Born at 1 with
    its 1 lost, its 2 (the birth's seq + 1) was taken as in sequence; born at 2 with its 1 lost, its 2 (the
    birth's seq) as a repeat that lost nothing: no rebirth asked, Press lost unseen until it changed (review
    /work/notes59/review_data MEDIUM 6). Each is a gap, a rebirth asked, whose birth carries Press."""
    got: list = []
    async with _seq_host(mosquitto.port, got) as (src, asked, pub):

        def send(kind: str, payload: bytes) -> None:
            pub.publish(f"spBv1.0/g/{kind}/a", payload, qos=1)

        send("NBIRTH", _birth_press(0.0, 0.0, 0, 5))
        send("NDATA", _ndata(1, 1.0))
        send("NDATA", _ndata(2, 2.0))
        send("NBIRTH", _birth_press(3.0, 0.0, 100, 1))
        send("NDATA", _ndata(2, 102.0))  # its 1 (Press = 100) lost
        await until(lambda: asked == ["a"], 30, "a rebirth asked for the 2 after its birth at 1")
        assert src.stats.last_error == "seq_gap: g/a: seq 2 after 1"
        send("NBIRTH", _birth_press(4.0, 100.0, 200, 5))  # the answer: Press = 100, its data from 1
        send("NDATA", _ndata(1, 201.0))
        await until(lambda: _press(got, "a")[-1:] == [100.0], 30, "Press = 100 read")
        send("NBIRTH", _birth_press(5.0, 100.0, 300, 2))
        send("NDATA", _ndata(2, 302.0))  # its 1 (Press = 200) lost
        await until(lambda: len(asked) == 2, 30, "a rebirth asked for the 2 after its birth at 2")
        assert src.stats.last_error == "seq_gap: g/a: seq 2 after 2"
        send("NBIRTH", _birth_press(6.0, 200.0, 400, 5))  # the answer: Press = 200
        await until(lambda: _press(got, "a")[-1:] == [200.0], 30, "Press = 200 read")
    assert src.stats.errors_by_reason == {"seq_gap": 2}


async def test_a_node_known_to_go_on_from_its_births_seq_whose_data_1_follows_a_birth_at_7_is_a_gap(
    mosquitto,
):
    """A node whose seq goes on from its births' (5 -> 6), shown at a birth at 5. After its birth at 7 a 1 is
    not its next message (8 is): it was taken as data counting from 1, in sequence, nothing asked (review
    /work/notes59/review_data MEDIUM 6). It is a gap, a rebirth asked; that 1 shows it now counts from 1, so its
    1 after the birth answering it is in sequence."""
    async with _seq_host(mosquitto.port) as (src, asked, pub):

        def send(kind: str, payload: bytes) -> None:
            pub.publish(f"spBv1.0/g/{kind}/a", payload, qos=1)

        send("NBIRTH", _nbirth(5, 0))
        send("NDATA", _ndata(6, 6.0))
        send("NBIRTH", _nbirth(7, 100))
        send("NDATA", _ndata(1, 101.0))
        await until(lambda: asked == ["a"], 30, "a rebirth asked for the 1 after its birth at 7")
        assert src.stats.last_error == "seq_gap: g/a: seq 1 after 7"
        send("NBIRTH", _nbirth(7, 200))
        send("NDATA", _ndata(1, 201.0))
        send("NDATA", _ndata(2, 202.0))
        await until(lambda: src.stats.received >= 7, 30, "every message read")
        await asyncio.sleep(0.3)  # a rebirth asked would be on its way
    assert asked == ["a"] and src.stats.errors_by_reason == {"seq_gap": 1}


async def test_a_nodes_first_data_at_its_nbirths_seq_is_a_gap_asked_not_a_repeat(mosquitto):
    """A node of unknown kind born at seq 7 whose first data is 7: no data message came before it since the birth,
    so it repeats nothing; a node counting from 1 lost its 1..6 (Press = 100 among them). It was counted a seq_gap
    and taken as a repeat, no rebirth asked, Press unseen until it changed. It is a gap, a rebirth asked, whose
    birth carries Press = 100. Data repeated later (7 again after 7) still asks nothing."""
    got: list = []
    async with _seq_host(mosquitto.port, got) as (src, asked, pub):

        def send(kind: str, payload: bytes) -> None:
            pub.publish(f"spBv1.0/g/{kind}/a", payload, qos=1)

        send("NBIRTH", _birth_press(0.0, 0.0, 0, 7))
        send("NDATA", _ndata(7, 7.0))  # its 1..6 (Press = 100) lost
        await until(lambda: asked == ["a"], 30, "a rebirth asked for the 7 after its birth at 7")
        assert src.stats.last_error == "seq_gap: g/a: seq 7 after 7"
        send("NBIRTH", _birth_press(1.0, 100.0, 100, 5))  # the answer: Press = 100
        send("NDATA", _ndata(1, 101.0))
        send("NDATA", _ndata(1, 101.0))  # a redelivery: a repeat, nothing lost
        await until(lambda: _press(got, "a")[-1:] == [100.0], 30, "Press = 100 read")
        await until(lambda: src.stats.received >= 5, 30, "every message read")
        await asyncio.sleep(0.3)  # a rebirth asked would be on its way
    assert asked == ["a"] and src.stats.errors_by_reason == {"seq_gap": 2}


async def test_a_node_known_to_count_from_1_is_not_relearnt_to_go_on_from_one_birth_whose_1_to_7_were_lost(
    mosquitto,
):
    """A node whose data counts from 1 after its births, shown at a birth at 5. Born at 7 with its 1..7 lost, its 8
    is what a node going on from its births' sends: it was relearnt so on that one message, and at its next birth
    at 1 whose 1 (Press = 100) was lost, its 2 was taken as in sequence, nothing asked, Press unseen. The 8 is a gap
    (asked) and teaches nothing; the 2 after the birth at 1 is a gap asked, whose birth carries Press = 100. Shown
    twice in a row (births at 7 followed by 8), the node is learnt to go on: its second 8 is in sequence."""
    got: list = []
    async with _seq_host(mosquitto.port, got) as (src, asked, pub):

        def send(kind: str, payload: bytes) -> None:
            pub.publish(f"spBv1.0/g/{kind}/a", payload, qos=1)

        send("NBIRTH", _birth_press(0.0, 0.0, 0, 5))
        send("NDATA", _ndata(1, 1.0))
        send("NDATA", _ndata(2, 2.0))
        send("NBIRTH", _birth_press(2.0, 0.0, 100, 7))
        send("NDATA", _ndata(8, 108.0))  # its 1..7 lost
        await until(lambda: asked == ["a"], 30, "a rebirth asked for the 8 after its birth at 7")
        send("NBIRTH", _birth_press(3.0, 100.0, 200, 1))
        send("NDATA", _ndata(2, 202.0))  # its 1 (Press = 100) lost
        await until(lambda: len(asked) == 2, 30, "a rebirth asked for the 2 after its birth at 1")
        assert src.stats.last_error == "seq_gap: g/a: seq 2 after 1"
        send("NBIRTH", _birth_press(4.0, 100.0, 300, 5))  # the answer: Press = 100, its data from 1 as before
        send("NDATA", _ndata(1, 301.0))
        await until(lambda: _press(got, "a")[-1:] == [100.0], 30, "Press = 100 read")
        for k in (5, 6):  # now it goes on from its births' twice in a row
            send("NBIRTH", _birth_press(float(k), 100.0, 100 * k, 7))
            send("NDATA", _ndata(8, 100.0 * k + 8))
        await until(lambda: src.stats.received >= 13, 30, "every message read")
        await asyncio.sleep(0.3)  # a rebirth asked would be on its way
    assert src.stats.errors_by_reason == {
        "seq_gap": 3
    }  # the second 8 after a birth at 7 is learnt in sequence
