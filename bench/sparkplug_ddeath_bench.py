"""The cost of marking a Sparkplug node's devices' tags BAD: every device's DDEATH (a node going down device by
device, or a broken or hostile one sending them again and again), and every device's null Template (a UDT whose
PLC items are gone), each handed to ``SparkplugHost.handle`` as the source's ``items()`` does, against the
baseline of decoding the same payloads alone (``sp.decode``). A DDEATH marks its device's last values BAD and a
null Template its members'; those costs should be the device's own, so the ratio to decoding stays flat as the
node's devices grow; so should a null Template of the node's own (``node_null_template``: a node of as many
Templates as there are devices, each sent null once). Before, each walked the node's every last value: devices
each sending a DDEATH cost the square of the devices (10,000: 76 s of CPU for the DDEATHs, 29 s for the null
Templates, 2,100x and 460x decoding them); now 0.19-0.21 s, 2.4-4.8x decoding, from 1,000 to 10,000 devices
(Xeon, AVX-512).

    nice -n 10 .venv/bin/python -m bench.sparkplug_ddeath_bench [--runs 3 --devices 1000 3000 10000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from devices.mqtt.settings import SparkplugHostSettings
from devices.mqtt.sparkplug_host import SparkplugHost
from protocols import sparkplug as sp

D = sp.DataType
MEMBERS = 5  # each device: a Template instance "U" of this many members, and as many plain metrics


def _births(devices: int, now: int, case: str) -> list[tuple[str, bytes]]:
    if case == "node_null_template":  # the node's own metrics: as many Templates "U{i}" as devices elsewhere
        ms = [sp.Metric("bdSeq", None, D.INT64, 0)]
        for i in range(devices):
            members = [sp.Metric(f"s{j}", None, D.DOUBLE, 1.0) for j in range(MEMBERS)]
            ms.append(sp.Metric(f"U{i}", None, D.TEMPLATE, sp.Template(metrics=members, ref="Motor")))
        return [("spBv1.0/g/NBIRTH/n", sp.encode(sp.Payload(now, 0, ms)))]
    out = [("spBv1.0/g/NBIRTH/n", sp.encode(sp.Payload(now, 0, [sp.Metric("bdSeq", None, D.INT64, 0)])))]
    for i in range(devices):
        members = [sp.Metric(f"s{j}", None, D.DOUBLE, 1.0) for j in range(MEMBERS)]
        ms = [sp.Metric("U", None, D.TEMPLATE, sp.Template(metrics=members, ref="Motor"))]
        ms += [sp.Metric(f"m{j}", None, D.DOUBLE, 1.0) for j in range(MEMBERS)]
        out.append((f"spBv1.0/g/DBIRTH/n/d{i}", sp.encode(sp.Payload(now, (i + 1) % 256, ms))))
    return out


def _case(devices: int, case: str, now: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(devices):
        seq = (devices + 1 + i) % 256
        if case == "node_null_template":
            null = sp.Metric(f"U{i}", None, D.TEMPLATE, None, is_null=True)
            out.append(("spBv1.0/g/NDATA/n", sp.encode(sp.Payload(now, (1 + i) % 256, [null]))))
        elif case == "ddeath":
            out.append((f"spBv1.0/g/DDEATH/n/d{i}", sp.encode(sp.Payload(now, seq, []))))
        else:  # the device's Template with no value now: its members' last values BAD
            null = sp.Metric("U", None, D.TEMPLATE, None, is_null=True)
            out.append((f"spBv1.0/g/DDATA/n/d{i}", sp.encode(sp.Payload(now, seq, [null]))))
    return out


def _host_s(births: list[tuple[str, bytes]], msgs: list[tuple[str, bytes]], devices: int) -> float:
    host = SparkplugHost("b", SparkplugHostSettings(), lambda t, b: None, lambda r, d: None)
    now = time.time()
    for topic, data in births:
        host.handle(topic, data, now)
    t0 = time.perf_counter()
    bad = sum(len(host.handle(topic, data, now)) for topic, data in msgs)
    took = time.perf_counter() - t0
    assert bad == devices * MEMBERS * (2 if "DDEATH" in msgs[0][0] else 1), bad  # each marks what it should
    return took


def _decode_s(msgs: list[tuple[str, bytes]]) -> float:
    t0 = time.perf_counter()
    for _, data in msgs:
        sp.decode(data)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--devices", type=int, nargs="+", default=[1000, 3000, 10000])
    ap.add_argument("--cases", nargs="+", default=["ddeath", "null_template", "node_null_template"])
    a = ap.parse_args()
    from bench._machine import machine_line

    print(machine_line(), flush=True)
    rows = []
    now = int(time.time() * 1000)
    for case in a.cases:
        for n in a.devices:
            births, msgs = _births(n, now, case), _case(n, case, now)
            host = statistics.median(_host_s(births, msgs, n) for _ in range(a.runs))
            dec = statistics.median(_decode_s(msgs) for _ in range(a.runs))
            rows.append(
                {
                    "case": case,
                    "devices": n,
                    "last_values": n * (1 if case == "node_null_template" else 2) * MEMBERS,
                    "host_s": round(host, 4),
                    "decode_only_s": round(dec, 4),
                    "ratio_to_decode": round(host / dec, 1),
                    "per_message_us": round(host / n * 1e6, 1),
                }
            )
    print(json.dumps(rows))
    heads = [
        "case",
        "devices",
        "node's last values",
        "host (s)",
        "decode only (s)",
        "ratio",
        "per message (µs)",
    ]
    print("| " + " | ".join(heads) + " |")
    print("| --- |" + " ---: |" * (len(heads) - 1))
    for r in rows:
        print("| " + " | ".join(str(v) for v in r.values()) + " |")


if __name__ == "__main__":
    main()
