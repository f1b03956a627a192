"""Edge nodes flooding compressed Sparkplug payloads: the share of the agent's event loop they take, and what a
well-behaved compressed node beside them keeps.

Each flooding node sends, ``--rate`` times a second for ``--seconds`` seconds, an NDATA of about 8 KB on the wire
whose body inflates to just under 8 MiB (zeros in the payload's own ``body``: Tahu's wrapper, DEFLATE); a calm
node sends a small compressed NDATA ``--calm-rate`` times a second. Each message is handed to
``SparkplugHost.handle`` at its time, as the source's ``items()`` does in the loop; the time spent in it, over
the wall time, is the loop's share taken. Hosts compared in the same run, alternated, ``--runs`` times each,
medians: no budget (a budget no flood reaches), one budget for the whole source (the former behaviour, 16 MiB
a second for all nodes; the host's per-node budgets replaced by that one), and a budget per node (16 MiB a
second each, ``sparkplug.max_inflated_bytes_per_s``, and 4 times that for the source's nodes together). With
one flooding node, then ``--many`` at once (where the source's total is what holds them).

    nice -n 10 .venv/bin/python -m bench.sparkplug_inflate_flood_bench [--rate 100 --seconds 2 --runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
import zlib

from devices.mqtt.settings import SparkplugHostSettings
from devices.mqtt.sparkplug_host import SparkplugHost
from protocols import sparkplug as sp
from protocols.json_codec import CodecError

D = sp.DataType
PER_S = 16 * 1024 * 1024


def _ndata(seq: int, inflated: int) -> bytes:
    inner = sp._pb().Payload()
    inner.timestamp, inner.seq = int(time.time() * 1000), seq
    m = inner.metrics.add()
    m.alias, m.double_value = 1, float(seq)
    inner.body = b"\0" * inflated
    out = sp._pb().Payload()
    out.uuid, out.seq, out.body = sp.COMPRESSED_UUID, seq, zlib.compress(inner.SerializeToString(), 9)
    return out.SerializeToString()


def _run(
    mode: str,
    floods: int,
    rate: float,
    calm_rate: float,
    seconds: float,
    msgs: list[bytes],
    calm: list[bytes],
) -> tuple[float, int, int, int, int]:
    """(the loop's share taken, flood messages read, calm messages read, calm messages sent, inflate_budget)."""
    host = SparkplugHost(
        "b",
        SparkplugHostSettings(max_inflated_bytes_per_s=1 << 50 if mode == "none" else PER_S),
        lambda t, b: None,
        lambda r, d: None,
    )
    if mode == "source":  # the former behaviour: one budget for all the source's nodes
        shared = sp.InflateBudget(PER_S)
        host._budget = lambda key: shared  # type: ignore[method-assign]
    nodes = [f"flood{i}" for i in range(floods)] + ["calm"]
    birth = sp._pb().Payload()
    birth.timestamp, birth.seq = int(time.time() * 1000), 0
    m = birth.metrics.add()
    m.name, m.alias, m.datatype, m.double_value = "Temp", 1, D.DOUBLE, 0.0
    for node in nodes:
        host.handle(f"spBv1.0/g/NBIRTH/{node}", birth.SerializeToString(), time.time())
    # the messages in time order: each flooding node at ``rate``, the calm one at ``calm_rate``
    plan = sorted(
        [
            (i / rate + k / (rate * floods), f"flood{k}", msgs[i % len(msgs)])
            for k in range(floods)
            for i in range(int(rate * seconds))
        ]
        + [(i / calm_rate, "calm", calm[i % len(calm)]) for i in range(int(calm_rate * seconds))],
        key=lambda p: p[0],
    )
    busy, flood_read, calm_read, over = 0.0, 0, 0, 0
    start = time.perf_counter()
    for at, node, data in plan:
        if (wait := start + at - time.perf_counter()) > 0:
            time.sleep(wait)
        t0 = time.perf_counter()
        try:
            got = bool(host.handle(f"spBv1.0/g/NDATA/{node}", data, time.time()))
            if node == "calm":
                calm_read += got
            else:
                flood_read += got
        except CodecError as e:
            over += e.reason == "inflate_budget"
        busy += time.perf_counter() - t0
    return busy / (time.perf_counter() - start), flood_read, calm_read, int(calm_rate * seconds), over


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--calm-rate", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--many", type=int, default=5)
    a = ap.parse_args()
    from bench._machine import machine_line

    print(machine_line(), flush=True)
    msgs = [_ndata(s, 8 * 1024 * 1024 - 64) for s in range(1, 256)]
    calm = [_ndata(s, 64) for s in range(1, 256)]
    modes = {
        "none": "no budget",
        "source": "one budget for the source (former, 16 MiB a second)",
        "node": "a budget per node (16 MiB a second each, 64 MiB all together)",
    }
    lines = []
    for floods in (1, a.many):
        got: dict[str, list[tuple[float, int, int, int, int]]] = {k: [] for k in modes}
        for _ in range(a.runs):
            for k in modes:  # alternated
                got[k].append(_run(k, floods, a.rate, a.calm_rate, a.seconds, msgs, calm))
        n = int(a.rate * a.seconds) * floods
        lines += [
            f"### {floods} node{'s' if floods > 1 else ''} sending {a.rate:.0f} compressed NDATA a second each "
            f"({len(msgs[0])} bytes on the wire, inflating to 8 MiB) and a calm node {a.calm_rate:.0f} small "
            f"ones, for {a.seconds:.0f} s: the loop's share taken by SparkplugHost.handle ({a.runs} runs each, "
            "alternated, medians)",
            "",
            "| host | loop share | flood read | of | calm read | of | inflate_budget |",
            "|---|---|---|---|---|---|---|",
        ]
        for k, runs in got.items():
            med = [statistics.median(r[i] for r in runs) for i in range(5)]
            lines.append(
                f"| {modes[k]} | {med[0] * 100:.0f}% | {med[1]:.0f} | {n} | {med[2]:.0f} | {med[3]:.0f} | {med[4]:.0f} |"
            )
        lines.append("")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
