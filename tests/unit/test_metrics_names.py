"""The metric names the module docstring promises are the names a scrape shows (and no more)."""

from __future__ import annotations

import re
import types

from prometheus_client import generate_latest

import edge_agent.metrics as metrics_module
from edge_agent.metrics import Metrics


def test_the_docstring_lists_exactly_the_exported_metric_names():
    m = Metrics()
    agent = types.SimpleNamespace(
        pipelines=[],
        sources={},
        slots={},
        outbox=None,
        forwarders=[],
        rules=[],
        actions=types.SimpleNamespace(stats={}, alarm_state={}),
    )
    m.refresh(agent)
    m.result(types.SimpleNamespace(pipeline="p", verdict="OK"))
    m.event({"kind": "started"})
    m.outbox({"budget:result": 2})
    m.observe_latency(
        "p", types.SimpleNamespace(queue_ms=1, preprocess_ms=1, inference_ms=1, postprocess_ms=1)
    )
    m.source_up.labels("cam").set(1)
    text = generate_latest(m.registry).decode()
    exported = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE edge_")}
    exported = {n for n in exported if not n.endswith("_created")}  # prometheus_client's own companions
    documented = set(re.findall(r"``(edge_[a-z_]+)", metrics_module.__doc__ or ""))
    assert documented == exported
