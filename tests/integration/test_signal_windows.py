"""Signal windows through the real agent and a real Mosquitto broker: a device that publishes one-second
blocks of vibration gets every window its samples allow (not one per message), each window stamped with
the time of its own first and last sample, all of them scored although the pipeline's queue holds two;
after an outage the windows start afresh instead of joining samples from both sides of it, and the
restart is counted on /status."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.agent import Agent
from edge_agent.config import parse_config
from tests.support.models import SIGNAL_RATE_HZ, SIGNAL_WINDOW, make_keypair, make_package
from tests.support.waits import until as wait_for

BLOCK = int(SIGNAL_RATE_HZ)  # one second of samples per message


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("windowpkgs")
    key, pub = make_keypair(tmp / "keys")
    return {"signal": make_package(tmp, kind="signal", key=key), "pub": pub}


class Results:
    def __init__(self, port: int) -> None:
        self.got: list[dict] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.c = paho.Client(CallbackAPIVersion.VERSION2)
        self.c.on_message = self._on
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.c.connect("127.0.0.1", port)
        self.c.subscribe("factory/+/+/+/results/#", 1)
        self.c.loop_start()
        assert self.subscribed.wait(10), "the results subscriber got no SUBACK"

    def _on(self, client, userdata, msg) -> None:
        with self.lock:
            self.got.append(json.loads(msg.payload))

    def all(self) -> list[dict]:
        with self.lock:
            return sorted(self.got, key=lambda m: m["seq"])

    def stop(self) -> None:
        self.c.disconnect()  # first: paho's thread ends once it is written, not at its next 1 s select
        self.c.loop_stop()


async def test_one_second_blocks_give_every_window_and_an_outage_starts_them_afresh(
    tmp_path, packages, mosquitto
):
    cfg = parse_config(
        {
            "agent": {"id": "gw1", "site": "plant", "line": "line1", "data_dir": str(tmp_path / "data")},
            "trusted_keys": [str(packages["pub"])],
            "http": {"enabled": False},
            "sources": {
                "daq": {
                    "type": "mqtt",
                    "port": mosquitto.port,
                    "subscriptions": [
                        {
                            "topic": "plant/pump1/vib",
                            "qos": 1,
                            "json_mapping": {"values": {"v": "vib"}, "tag_prefix_topic": False},
                        }
                    ],
                },
            },
            "models": {"health": {"package": str(packages["signal"]), "engine": "onnxruntime"}},
            "pipelines": [
                {
                    "name": "pump",
                    "source": "daq",
                    "model": "health",
                    "window": {"waveform": "vib"},  # the model's 2048 samples at its 10 kHz
                    "queue": {"size": 2, "policy": "drop_oldest"},
                    "actions": ["publish"],
                }
            ],
            "actions": {"publish": {"type": "mqtt_publish", "source": "daq", "qos": 1}},
        }
    )
    agent = Agent(cfg)
    results = Results(mosquitto.port)
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    rng = np.random.default_rng(0)
    t0 = round(time.time()) - 1000.0  # the device's clock, in the past (an outage of 600 s is replayed)

    def block(ts: float) -> None:
        x = np.round(rng.normal(0.0, 1.0, BLOCK), 4).tolist()
        pub.publish("plant/pump1/vib", json.dumps({"ts": ts, "v": x}), qos=1).wait_for_publish(5)

    try:
        await agent.start()
        # subscribed, not only connected: a block published between the two is not delivered to the agent
        await asyncio.wait_for(agent.sources["daq"].subscribed.wait(), 30)
        for k in range(3):  # three contiguous seconds, as the device sends them (one a second)
            block(t0 + k)
            done = (k + 1) * BLOCK // SIGNAL_WINDOW  # 4, 9, 14: windows run on across the blocks
            await wait_for(lambda d=done: len(results.all()) >= d, what=f"{done} results after block {k}")
        n = 3 * BLOCK // SIGNAL_WINDOW
        got = results.all()
        assert [m["seq"] for m in got] == list(range(n))  # every window scored: none dropped at the queue
        # captured_at is the window's last sample: windows follow one another by 2048 samples, across blocks
        expect = [t0 + (k * SIGNAL_WINDOW + SIGNAL_WINDOW - 1) / SIGNAL_RATE_HZ for k in range(n)]
        assert np.allclose([m["captured_at"] for m in got], expect, atol=1e-6)
        st = next(p for p in agent.status()["pipelines"] if p["pipeline"] == "pump")
        assert st["dropped_queue"] == 0 and st["windows"] == n

        block(t0 + 600.0)  # after a 10-minute outage: 1328 samples of before are not joined to it
        m = n + BLOCK // SIGNAL_WINDOW
        await wait_for(lambda: len(results.all()) >= m, what="results after the outage")
        after = results.all()[n:]
        expect = [t0 + 600.0 + (k * SIGNAL_WINDOW + SIGNAL_WINDOW - 1) / SIGNAL_RATE_HZ for k in range(m - n)]
        assert np.allclose([r["captured_at"] for r in after], expect, atol=1e-6)
        st = next(p for p in agent.status()["pipelines"] if p["pipeline"] == "pump")
        assert st["silent_drops"]["window_gap"]["count"] == 1
        assert "start afresh" in st["silent_drops"]["window_gap"]["message"]
    finally:
        pub.disconnect()  # first: paho's thread ends now, not at its next 1 s select
        pub.loop_stop()
        results.stop()
        await agent.stop()
