"""Edge nodes in a rebirth storm (compressed NBIRTHs in a loop): the share of the agent's event loop they take,
and what a well-behaved compressed node beside them keeps, and a calm node's births (twice a second).

Each storming node sends, ``--rate`` times a second for ``--seconds`` seconds, a compressed NBIRTH of about 8 KB
on the wire whose body inflates to just under 8 MiB (Tahu's wrapper, DEFLATE); a calm node sends a small
compressed NDATA ``--calm-rate`` times a second. Each message is handed to ``SparkplugHost.handle`` at its time,
as the source's ``items()`` does in the loop; the time spent in it, over the wall time, is the loop's share
taken. Budgets at their default (16 MiB a second a node, 64 MiB all nodes together). The former code (births
inflated whatever the budget, charged to the node's budget and to the total data is read on) runs the same
measurement from a checkout of it (``--former``: a ``git worktree`` of the commit before, in a subprocess),
alternated with the current code, ``--runs`` times each, medians. With one storming node, then ``--many``.

    git worktree add /tmp/former <commit>
    nice -n 10 .venv/bin/python -m bench.sparkplug_rebirth_storm_bench --former /tmp/former [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import zlib

from devices.mqtt.settings import SparkplugHostSettings
from devices.mqtt.sparkplug_host import SparkplugHost
from protocols import sparkplug as sp
from protocols.json_codec import CodecError

D = sp.DataType


def _compressed(seq: int, inflated: int, *, birth: bool) -> bytes:
    inner = sp._pb().Payload()
    inner.timestamp, inner.seq = int(time.time() * 1000), seq
    m = inner.metrics.add()
    if birth:
        m.name, m.datatype = "Temp", D.DOUBLE
    m.alias, m.double_value = 1, float(seq)
    inner.body = b"\0" * inflated
    out = sp._pb().Payload()
    out.uuid, out.seq, out.body = sp.COMPRESSED_UUID, seq, zlib.compress(inner.SerializeToString(), 9)
    return out.SerializeToString()


def _run(storms: int, rate: float, calm_rate: float, seconds: float) -> list[float]:
    """[the loop's share taken, storm births read, calm messages read, calm messages sent, inflate_budget,
    calm births read, calm births sent]."""
    births = [_compressed(0, 8 * 1024 * 1024 - 64, birth=True)] * 4
    calm = [_compressed(s, 64, birth=False) for s in range(1, 256)]
    calm_birth = _compressed(0, 64, birth=True)
    host = SparkplugHost("b", SparkplugHostSettings(), lambda t, b: None, lambda r, d: None)
    host.handle("spBv1.0/g/NBIRTH/calm", _compressed(0, 64, birth=True), time.time())
    plan = sorted(
        [
            (i / rate + k / (rate * storms), f"NBIRTH/storm{k}", births[i % len(births)])
            for k in range(storms)
            for i in range(int(rate * seconds))
        ]
        + [(i / calm_rate, "NDATA/calm", calm[i % len(calm)]) for i in range(int(calm_rate * seconds))]
        # a second calm node, born again twice a second (its births: the births' total, as the storm's)
        + [(0.25 + i / 2, "NBIRTH/calm2", calm_birth) for i in range(int(2 * seconds))],
        key=lambda p: p[0],
    )
    busy, calm_read, over, born, calm_born = 0.0, 0, 0, host.births, 0
    start = time.perf_counter()
    for at, where, data in plan:
        if (wait := start + at - time.perf_counter()) > 0:
            time.sleep(wait)
        t0 = time.perf_counter()
        try:
            got = host.handle(f"spBv1.0/g/{where}", data, time.time())
            calm_read += where == "NDATA/calm" and bool(got)
            calm_born += where == "NBIRTH/calm2" and bool(got)
        except CodecError as e:
            over += e.reason == "inflate_budget"
        busy += time.perf_counter() - t0
    over += getattr(host, "births_skipped", 0)  # the current code counts a skipped birth without raising
    share = busy / (time.perf_counter() - start)
    return [
        share,
        host.births - born - calm_born,
        calm_read,
        int(calm_rate * seconds),
        over,
        calm_born,
        int(2 * seconds),
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--calm-rate", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--many", type=int, default=5)
    ap.add_argument("--former", help="a checkout of the former code (git worktree), run alternated with this")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # one run with this many storms, as JSON
    a = ap.parse_args()
    if a.one is not None:
        print(json.dumps(_run(a.one, a.rate, a.calm_rate, a.seconds)))
        return
    from bench._machine import machine_line

    print(machine_line(), flush=True)

    def former(storms: int) -> list[float]:
        args = [f"--rate={a.rate}", f"--calm-rate={a.calm_rate}", f"--seconds={a.seconds}", f"--one={storms}"]
        env = {**os.environ, "PYTHONPATH": a.former}
        out = subprocess.run(
            [sys.executable, os.path.abspath(__file__), *args],
            cwd=a.former,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    lines = []
    for storms in (1, a.many):
        got: dict[str, list[list[float]]] = {"former": [], "current": []}
        for _ in range(a.runs):  # alternated
            if a.former:
                got["former"].append(former(storms))
            got["current"].append(_run(storms, a.rate, a.calm_rate, a.seconds))
        n = int(a.rate * a.seconds) * storms
        lines += [
            f"### {storms} node{'s' if storms > 1 else ''} sending {a.rate:.0f} compressed NBIRTHs a second each "
            f"(inflating to 8 MiB) and a calm node {a.calm_rate:.0f} small compressed NDATA, for {a.seconds:.0f} "
            f"s: the loop's share taken by SparkplugHost.handle ({a.runs} runs each, alternated, medians)",
            "",
            "| host | loop share | storm births read | of | calm read | of | inflate_budget | calm births read | of |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        names = {
            "former": "former (--former: the checkout given)",
            "current": "births on a budget of their own, its last quarter kept from storming nodes",
        }
        for k, runs in got.items():
            if not runs:
                continue
            med = [statistics.median(r[i] if i < len(r) else 0 for r in runs) for i in range(7)]
            lines.append(
                f"| {names[k]} | {med[0] * 100:.0f}% | {med[1]:.0f} | {n} | {med[2]:.0f} | {med[3]:.0f} | {med[4]:.0f} "
                f"| {med[5]:.0f} | {med[6]:.0f} |"
            )
        lines.append("")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
