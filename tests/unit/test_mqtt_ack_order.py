"""The MQTT source's acknowledgements of a persistent session's QoS 1 messages (``_Unacked``): sent once a
message is taken, in the order the messages came (MQTT 3.1.1 and 5, [MQTT-4.6.0-2]), even when the fair
hand-over lets a quiet topic's message overtake a flood's older ones; at the stop every taken one, and never
one left with the broker. The client is the injected seam: a recorder of ``ack`` calls."""

from __future__ import annotations

from devices.base import DeviceStats
from devices.mqtt.client import _BatchChannel, _Unacked


class Recorder:
    def __init__(self) -> None:
        self.acked: list[int] = []
        self.up = True

    def is_connected(self) -> bool:
        return self.up

    def ack(self, mid: int, qos: int) -> int:
        assert qos == 1
        self.acked.append(mid)
        return 0


def test_acknowledgements_go_in_arrival_order_once_each_message_is_taken() -> None:
    client = Recorder()
    unacked = _Unacked(client)  # type: ignore[arg-type]
    cells = [unacked.add(mid) for mid in (7, 8, 9, 10)]
    cells[1][1] = cells[2][1] = True  # taken ahead of the first (a quiet topic's, under a backlog)
    unacked.flush()
    assert client.acked == []  # 8 and 9 wait for 7
    cells[0][1] = True
    unacked.flush()
    assert client.acked == [7, 8, 9]
    unacked.add(11, taken=True)  # skipped (malformed, a copy) behind 10, still in the queue: waits too
    assert client.acked == [7, 8, 9]
    cells[3][1] = True
    unacked.flush()
    assert client.acked == [7, 8, 9, 10, 11]
    assert len(unacked) == 0


def test_at_the_stop_every_taken_message_is_acknowledged_and_none_left_with_the_broker() -> None:
    client = Recorder()
    unacked = _Unacked(client)  # type: ignore[arg-type]
    cells = [unacked.add(mid) for mid in (1, 2, 3, 4)]
    cells[1][1] = cells[3][1] = True
    unacked.flush(final=True)
    assert client.acked == [2, 4]  # 1 and 3 were never handed on: the broker delivers them at the next start
    assert len(unacked) == 2


def test_nothing_is_acknowledged_while_disconnected_and_all_of_it_once_back() -> None:
    client = Recorder()
    unacked = _Unacked(client)  # type: ignore[arg-type]
    cell = unacked.add(5)
    client.up = False  # paho drops what it holds at a reconnect: queued now, it would go before the CONNECT
    cell[1] = True
    unacked.flush()
    assert client.acked == []
    client.up = True
    unacked.flush()
    assert client.acked == [5]
    assert not unacked.pending(5)


def test_a_message_dropped_from_the_full_queue_is_acknowledged_in_its_turn() -> None:
    client = Recorder()
    unacked = _Unacked(client)  # type: ignore[arg-type]
    stats = DeviceStats()
    channel = _BatchChannel(2, stats)
    for mid in (1, 2, 3):  # the third pushes the flood's oldest out
        channel.put_threadsafe(("flood/a", b"{}", 0.0, False), unacked.add(mid))
    unacked.flush()
    assert client.acked == [1]  # counted as dropped, and not sent again by the broker at every start
    assert stats.dropped == 1
