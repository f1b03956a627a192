"""A NaN or infinite reading over MQTT (JSON and Sparkplug B) is the sensor's fault, passed on as a BAD
reading of its tag (``non_finite: bad``, the default, as the OPC UA source does), not skipped with the
tag's last value left GOOD; ``non_finite: skip`` keeps that former way. An agent against a real Mosquitto:
what its tags view (``/api/tags``) and a rule on the tag see."""

from __future__ import annotations

import json

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.agent import Agent
from edge_agent.config import ConfigError, parse_config
from edge_agent.status_board import tag_rows
from protocols import sparkplug as sp
from tests.support.waits import until as wait_for

D = sp.DataType
JUDGED = {"oven_hot": 1, "kiln_hot": 2}  # readings each rule judges: JSON's 85; the birth's 20 and 85


def config(tmp_path, port: int, **mqtt) -> dict:
    return {
        "agent": {"id": "gw1", "site": "plant", "line": "line1", "data_dir": str(tmp_path / "data")},
        "http": {"enabled": False},
        "sources": {
            "broker": {
                "type": "mqtt",
                "port": port,
                "subscriptions": [
                    {"topic": "line/#", "qos": 1},
                    {"topic": "spBv1.0/#", "codec": "sparkplug_b"},
                ],
                **mqtt,
            }
        },
        "rules": [
            {"name": "oven_hot", "source": "broker", "tag": "line/oven/temp", "above": 80.0},
            {"name": "kiln_hot", "source": "broker", "tag": "n1/temp", "above": 80.0},
        ],
    }


async def _hot_then_nan(agent: Agent, port: int) -> tuple[dict, dict]:
    """Both sensors read 85 (the rules trip), then NaN (an open thermocouple); the tags view and the rules
    once the NaN messages were handled (a counter in the same message says when)."""
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    src = agent.sources["broker"]
    try:
        await agent.start()
        await wait_for(lambda: src.subscribed.is_set(), what="the SUBACK")
        birth = [
            sp.Metric("bdSeq", None, D.INT64, 0),
            sp.Metric("temp", 1, D.DOUBLE, 20.0),
            sp.Metric("count", 2, D.INT64, 0),
        ]
        pub.publish("spBv1.0/g/NBIRTH/n1", sp.encode(sp.Payload(1000, 0, birth)), qos=1)
        for seq, temp in ((1, 85.0), (2, float("nan"))):
            pub.publish("line/oven", json.dumps({"temp": temp, "n": seq}), qos=1)  # NaN: Python writes NaN
            data = [sp.Metric(None, 1, D.DOUBLE, temp), sp.Metric(None, 2, D.INT64, seq)]
            pub.publish("spBv1.0/g/NDATA/n1", sp.encode(sp.Payload(1000 + seq, seq, data)), qos=1)

        def rows() -> dict:
            return {r["tag"]: r for r in tag_rows(list(agent.tags["broker"].values()))}

        await wait_for(
            lambda: (
                rows().get("line/oven/n", {}).get("value") == 2
                and rows().get("n1/count", {}).get("value") == 2
            ),
            what="the NaN messages handled",
        )
        return rows(), {r["name"]: r for r in agent.status()["rules"]}
    finally:
        pub.disconnect()  # first: paho's thread ends now, not at its next 1 s select
        pub.loop_stop()
        await agent.stop()


async def test_a_nan_after_a_good_value_makes_the_tag_bad_and_a_rule_does_not_judge_the_stale_value(
    tmp_path, mosquitto
):
    """Before, the NaN was counted and skipped: both tags kept 85 as GOOD (shown so, and a window or rule
    went on as if the sensor were fine). Now each tag reads BAD and its rule sees a reading it cannot judge
    (counted as ignored) instead of nothing."""
    agent = Agent(parse_config(config(tmp_path, mosquitto.port)))
    rows, rules = await _hot_then_nan(agent, mosquitto.port)
    for tag in ("line/oven/temp", "n1/temp"):
        assert rows[tag]["quality"] == "bad", rows[tag]
    for rule, judged in JUDGED.items():
        # the good values were judged (85: NG), the NaN was not: no result on the stale value
        assert (rules[rule]["readings"], rules[rule]["ignored"]) == (judged, 1), rules[rule]
    assert agent.sources["broker"].stats.errors_by_reason["non_finite"] == 2


async def test_non_finite_skip_keeps_the_last_value_and_counts_the_nan(tmp_path, mosquitto):
    agent = Agent(parse_config(config(tmp_path, mosquitto.port, non_finite="skip")))
    rows, rules = await _hot_then_nan(agent, mosquitto.port)
    for tag in ("line/oven/temp", "n1/temp"):
        assert (rows[tag]["quality"], rows[tag]["value"]) == ("good", 85.0), rows[tag]
    for rule, judged in JUDGED.items():
        assert (rules[rule]["readings"], rules[rule]["ignored"], rules[rule]["active"]) == (judged, 0, True)
    assert agent.sources["broker"].stats.errors_by_reason["non_finite"] == 2


@pytest.mark.parametrize("value", ["drop", "BAD", True])
def test_an_unknown_non_finite_policy_is_refused_naming_the_file_and_field(tmp_path, value):
    with pytest.raises(ConfigError) as exc:
        parse_config(config(tmp_path, 1883, non_finite=value), "plant.yaml")
    (err,) = exc.value.errors
    assert err.startswith("plant.yaml: sources.broker.non_finite:") and "'bad'" in err and "'skip'" in err, (
        err
    )
