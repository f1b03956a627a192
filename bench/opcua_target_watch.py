"""What watching the write targets costs (``OpcUaSource._watch_targets``: a monitored item on each target's
DataType, ArrayDimensions and UserAccessLevel), against the former source in the same run (the watch
switched off on that instance), on a real asyncua server on 127.0.0.1 with ``--targets`` writable Int16
nodes and 20 subscribed tags changing every 100 ms:

- connect: ``start()`` until the targets are judged and watched (the source reports connected after);
- idle CPU: this process's CPU time (server, source and loop together) over ``--idle-s`` seconds while
  nothing is retyped: the watch's items send nothing then;
- write: the mean time of a write of each target in turn (unchanged: nothing is read per write);
- retype noticed: from the server's change of one target's DataType until the source drops its cached type
  (the project only: the former source never noticed).

    .venv/bin/python -m bench.opcua_target_watch [--targets 50] [--runs 3] [--idle-s 5]
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


async def trial(former: bool, targets: int, idle_s: float) -> dict[str, float]:
    from asyncua import ua

    from devices.opcua.client import OpcUaSource
    from devices.opcua.settings import OpcUaSettings
    from tests.support.peers import free_port, opcua_server

    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    nodes = []
    for i in range(targets):
        n = await obj.add_variable(ua.NodeId(f"Out{i}", idx), f"Out{i}", ua.Variant(0, ua.VariantType.Int16))
        await n.set_writable()
        nodes.append(n)
    tags = [
        await obj.add_variable(ua.NodeId(f"Tag{i}", idx), f"Tag{i}", ua.Variant(0.0, ua.VariantType.Double))
        for i in range(20)
    ]
    await srv.start()

    async def churn() -> None:
        k = 0
        while True:
            k += 1
            for t in tags:
                await t.write_value(float(k))
            await asyncio.sleep(0.1)

    churner = asyncio.create_task(churn())
    settings = OpcUaSettings(
        endpoint=f"opc.tcp://127.0.0.1:{port}/plc/",
        connect_timeout_s=5.0,
        nodes=[{"node_id": f"ns={idx};s=Tag{i}", "sampling_interval_ms": 100} for i in range(20)],
    )
    src = OpcUaSource("plc", settings)
    if former:

        async def no_watch(client) -> None:
            return None

        src._watch_targets = no_watch  # type: ignore[method-assign]
    ids = [f"ns={idx};s=Out{i}" for i in range(targets)]
    src.expect_writes([(i, 1) for i in ids])
    out: dict[str, float] = {}
    try:
        t0 = time.perf_counter()
        await src.start()
        while src.state.value != "connected":
            await asyncio.sleep(0.005)
        out["connect_ms"] = (time.perf_counter() - t0) * 1000
        out["items_watched"] = src.targets_watched
        await asyncio.sleep(1.0)  # the first notifications
        c0 = time.process_time()
        await asyncio.sleep(idle_s)
        out["idle_cpu_pct"] = (time.process_time() - c0) / idle_s * 100
        t0 = time.perf_counter()
        for node_id in ids:
            await src.write(node_id, 2)
        out["write_us"] = (time.perf_counter() - t0) / len(ids) * 1e6
        if not former:
            t0 = time.perf_counter()
            await srv.write_attribute_value(
                nodes[0].nodeid,
                ua.DataValue(ua.Variant(ua.NodeId(ua.ObjectIds.Float), ua.VariantType.NodeId)),
                ua.AttributeIds.DataType,
            )
            while ids[0] in src._types and src._types[ids[0]].data_type == "i=4":
                await asyncio.sleep(0.005)
            out["retype_noticed_ms"] = (time.perf_counter() - t0) * 1000
    finally:
        churner.cancel()
        await src.stop()
        await srv.stop()
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--idle-s", type=float, default=5.0)
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    runs: dict[str, list[dict[str, float]]] = {"former": [], "project": []}
    for _ in range(args.runs):
        for kind in ("former", "project"):
            runs[kind].append(await trial(kind == "former", args.targets, args.idle_s))
    med = {kind: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for kind, rs in runs.items()}
    OUT.mkdir(exist_ok=True)
    (OUT / "opcua_target_watch.json").write_text(
        json.dumps({"args": vars(args), "median": med, "runs": runs})
    )
    f, p = med["former"], med["project"]
    rows = [
        ("connect until targets judged (ms)", f["connect_ms"], p["connect_ms"]),
        ("monitored items for the targets", f["items_watched"], p["items_watched"]),
        ("idle CPU, server + source (%)", f["idle_cpu_pct"], p["idle_cpu_pct"]),
        ("write (us, mean over targets)", f["write_us"], p["write_us"]),
    ]
    md = [
        f"### OPC UA write-target watch ({args.targets} targets, 20 tags at 10 Hz; medians of {args.runs})",
        "",
        "| | former (no watch) | project | ratio |",
        "| --- | --- | --- | --- |",
    ]
    for name, a, b in rows:
        md.append(f"| {name} | {a:.1f} | {b:.1f} | {b / a:.2f} |" if a else f"| {name} | {a:g} | {b:g} | - |")
    md.append(f"| retype noticed (ms) | never | {p['retype_noticed_ms']:.0f} | - |")
    (OUT / "opcua_target_watch.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    asyncio.run(main())
