"""What reading a write target's type again once it is older than its hold costs (``_TYPE_HOLD_S``: a download
that lowers a limit in place, unnoticed, is then taken within that time), against a bare asyncua client's write of
the same value in the same run, on a real asyncua server on 127.0.0.1 with two targets: an Int16 node, and a
String node stating its own MaxStringLength (a PLC's STRING[40]: its type read Browses for the property):

- bare: ``node.write_value(Variant)`` on asyncua's own client (the baseline);
- cached: ``OpcUaSource.write`` with the node's type read earlier and younger than the hold (every write but the
  first of a hold); the source has no write targets told, so none is watched: the Read of its attributes before a
  write stands for ``_PRE_CHECK_HOLD_S`` for a value every integer and Boolean type stores alike (0 and 1: the
  Count is a pulse's high and reset; every other value, and every text, has its Read);
- checked each write: the same, that Read made before every write (``_PRE_CHECK_HOLD_S`` 0: the cost before it
  was held);
- read again: the same write with the type read again first (the hold shortened to 0: every write pays it);
- per write, spread: the extra of a read-again write spread over the writes of one hold, at 1 and 10 writes a
  second of that target (a second target doubles the reads, not the per-write share).

    .venv/bin/python -m bench.opcua_type_hold_bench [--writes 200] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


async def _median_us(write, n: int) -> float:
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        await write(i)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


async def trial(writes: int) -> dict[str, float]:
    from asyncua import Client, ua

    from devices.opcua import client as opcua_client
    from devices.opcua.client import OpcUaSource
    from devices.opcua.settings import OpcUaSettings
    from tests.support.peers import free_port, opcua_server, text_node

    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    count = await obj.add_variable(ua.NodeId("Count", idx), "Count", ua.Variant(0, ua.VariantType.Int16))
    await count.set_writable()
    await text_node(obj, idx, "Batch", 40)
    await srv.start()
    endpoint = f"opc.tcp://127.0.0.1:{port}/plc/"
    values = {"Count": lambda i: i % 2, "Batch": lambda i: f"B-2026-L3-{i:04d}"}
    variants = {"Count": ua.VariantType.Int16, "Batch": ua.VariantType.String}
    out: dict[str, float] = {}
    bare = Client(endpoint)
    src = OpcUaSource("plc", OpcUaSettings(endpoint=endpoint, connect_timeout_s=5.0))
    hold, share = opcua_client._TYPE_HOLD_S, opcua_client._TYPE_READ_SHARE
    try:
        await bare.connect()
        await src.start()
        while src.state.value != "connected":
            await asyncio.sleep(0.005)
        for name in ("Count", "Batch"):
            node_id, v = f"ns={idx};s={name}", values[name]
            node = bare.get_node(node_id)

            async def bare_write(i: int, node=node, v=v, vt=variants[name]) -> None:
                await node.write_value(ua.DataValue(ua.Variant(v(i), vt)))

            async def write(i: int, node_id=node_id, v=v) -> None:
                await src.write(node_id, v(i))

            await write(0)  # its type read and cached
            out[f"{name}_bare_us"] = await _median_us(bare_write, writes)
            out[f"{name}_cached_us"] = await _median_us(write, writes)
            pre = opcua_client._PRE_CHECK_HOLD_S  # type: ignore[attr-defined]
            opcua_client._PRE_CHECK_HOLD_S = 0.0  # type: ignore[attr-defined]
            try:
                out[f"{name}_checked_each_us"] = await _median_us(write, writes)
            finally:
                opcua_client._PRE_CHECK_HOLD_S = pre  # type: ignore[attr-defined]
            # every write reads its type again: no hold, and none for the read's own length (``_TYPE_READ_SHARE``)
            opcua_client._TYPE_HOLD_S, opcua_client._TYPE_READ_SHARE = 0.0, 1e9  # type: ignore[attr-defined]
            try:
                out[f"{name}_read_again_us"] = await _median_us(write, writes)
            finally:
                opcua_client._TYPE_HOLD_S, opcua_client._TYPE_READ_SHARE = hold, share  # type: ignore[attr-defined]
    finally:
        await src.stop()
        await bare.disconnect()
        await srv.stop()
    return out


async def main() -> None:
    from bench._machine import machine, machine_line

    ap = argparse.ArgumentParser()
    ap.add_argument("--writes", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    from devices.opcua.client import _TYPE_HOLD_S as hold

    runs = [await trial(args.writes) for _ in range(args.runs)]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    OUT.mkdir(exist_ok=True)
    rows = []
    for name, shown in (("Count", "Int16"), ("Batch", "String, own MaxStringLength")):
        bare, cached, again, each = (
            med[f"{name}_{k}_us"] for k in ("bare", "cached", "read_again", "checked_each")
        )
        extra = again - cached
        rows.append(
            {
                "node": shown,
                "bare_us": bare,
                "cached_us": cached,
                "checked_each_us": each,
                "read_again_us": again,
                "extra_per_read_us": extra,
                "spread_1_per_s_us": extra / hold,
                "spread_10_per_s_us": extra / (10 * hold),
            }
        )
    (OUT / "opcua_type_hold_bench.json").write_text(
        json.dumps(
            {"args": vars(args), "hold_s": hold, "machine": machine(), "median": med, "runs": runs}, indent=2
        )
    )
    md = [
        f"### OPC UA write target's type read again after its hold ({hold:g} s; medians of {args.runs} runs "
        f"x {args.writes} writes)",
        "",
        "| node | bare asyncua write (us) | write, type cached (us) | cached / bare | write, attributes Read before "
        "each (us) | that / bare | that / cached | write, type read again (us) | "
        "read again / bare | extra a write, 1 write/s (us) | extra a write, 10 writes/s (us) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        md.append(
            f"| {r['node']} | {r['bare_us']:.0f} | {r['cached_us']:.0f} | {r['cached_us'] / r['bare_us']:.2f} | "
            f"{r['checked_each_us']:.0f} | {r['checked_each_us'] / r['bare_us']:.2f} | "
            f"{r['checked_each_us'] / r['cached_us']:.2f} | {r['read_again_us']:.0f} | "
            f"{r['read_again_us'] / r['bare_us']:.1f} | {r['spread_1_per_s_us']:.1f} | {r['spread_10_per_s_us']:.2f} |"
        )
    md.append("")
    md.append(machine_line())
    (OUT / "opcua_type_hold_bench.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    asyncio.run(main())
