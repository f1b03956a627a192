"""A node flooding compressed Sparkplug payloads: the share of the agent's event loop it takes.

An edge node sends, ``--rate`` times a second for ``--seconds`` seconds, an NDATA of about 8 KB on the wire
whose body inflates to just under 8 MiB (zeros in the payload's own ``body``: Tahu's wrapper, DEFLATE). Each
is handed to ``SparkplugHost.handle`` at its time, as the source's ``items()`` does in the loop; the time spent
in it, over the wall time, is the loop's share taken. With the source's default inflate budget
(``sparkplug.max_inflated_bytes_per_s``, 16 MiB a second) against none (the former behaviour: a budget
no flood reaches), alternated, ``--runs`` times each; medians.

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


def _ndata(seq: int) -> bytes:
    inner = sp._pb().Payload()
    inner.timestamp, inner.seq = int(time.time() * 1000), seq
    m = inner.metrics.add()
    m.alias, m.double_value = 1, float(seq)
    inner.body = b"\0" * (8 * 1024 * 1024 - 64)
    out = sp._pb().Payload()
    out.uuid, out.seq, out.body = sp.COMPRESSED_UUID, seq, zlib.compress(inner.SerializeToString(), 9)
    return out.SerializeToString()


def _run(per_s: int, rate: float, seconds: float, msgs: list[bytes]) -> tuple[float, int, int]:
    """(the loop's share taken, messages read, messages counted inflate_budget)."""
    errors: dict[str, int] = {}
    host = SparkplugHost(
        "b",
        SparkplugHostSettings(max_inflated_bytes_per_s=per_s),
        lambda t, b: None,
        lambda r, d: errors.__setitem__(r, errors.get(r, 0) + 1),
    )
    birth = sp._pb().Payload()
    birth.timestamp, birth.seq = int(time.time() * 1000), 0
    m = birth.metrics.add()
    m.name, m.alias, m.datatype, m.double_value = "Temp", 1, D.DOUBLE, 0.0
    host.handle("spBv1.0/g/NBIRTH/n", birth.SerializeToString(), time.time())
    busy, read, over = 0.0, 0, 0
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        due = start + i / rate
        if (wait := due - time.perf_counter()) > 0:
            time.sleep(wait)
        t0 = time.perf_counter()
        try:
            read += bool(host.handle("spBv1.0/g/NDATA/n", msgs[i % len(msgs)], time.time()))
        except CodecError as e:
            over += e.reason == "inflate_budget"
        busy += time.perf_counter() - t0
    return busy / (time.perf_counter() - start), read, over


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    msgs = [_ndata(s) for s in range(1, 256)]
    modes = {"no budget (former)": 1 << 50, "default budget (16 MiB a second)": 16 * 1024 * 1024}
    got: dict[str, list[tuple[float, int, int]]] = {k: [] for k in modes}
    for _ in range(a.runs):
        for k, per_s in modes.items():  # alternated
            got[k].append(_run(per_s, a.rate, a.seconds, msgs))
    n = int(a.rate * a.seconds)
    lines = [
        f"### A node sending {a.rate:.0f} compressed NDATA a second ({len(msgs[0])} bytes each on the wire, "
        f"inflating to 8 MiB) for {a.seconds:.0f} s: the loop's share taken by SparkplugHost.handle "
        f"({a.runs} runs each, alternated, medians)",
        "",
        "| host | loop share | read | inflate_budget | of |",
        "|---|---|---|---|---|",
    ]
    for k, runs in got.items():
        share = statistics.median(r[0] for r in runs)
        read = statistics.median(r[1] for r in runs)
        over = statistics.median(r[2] for r in runs)
        lines.append(f"| {k} | {share * 100:.0f}% | {read:.0f} | {over:.0f} | {n} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
