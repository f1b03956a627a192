"""Prometheus metrics of one agent, on its own registry (never the process-global one).

Names follow Prometheus conventions (``_total`` counters, ``_seconds`` histograms, base units):
``edge_pipeline_results_total{pipeline,verdict}``, ``edge_pipeline_latency_seconds{pipeline,stage}``,
``edge_pipeline_dropped_total{pipeline}`` (gauge of the cumulative count, set at scrape),
``edge_source_up{source}``, ``edge_source_errors_total{source}``, ``edge_model_info{slot,...}``,
``edge_events_total{kind}``, ``edge_outbox_dropped_records_total{kind,cause}`` (records the outbox dropped:
budget, retention, write_failed), and the process collector's RSS and CPU.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest

_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class Metrics:
    def __init__(self, agent_id: str) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        self.results = Counter("edge_pipeline_results", "Inference results", ["pipeline", "verdict"], registry=r)
        self.latency = Histogram("edge_pipeline_latency_seconds", "Latency per stage", ["pipeline", "stage"],
                                 buckets=_BUCKETS, registry=r)
        self.dropped = Gauge("edge_pipeline_dropped", "Items dropped by the pipeline queue policy (cumulative)",
                             ["pipeline"], registry=r)
        self.errors = Gauge("edge_pipeline_errors", "Failed inferences (cumulative)", ["pipeline"], registry=r)
        self.source_up = Gauge("edge_source_up", "1 when the source is connected", ["source"], registry=r)
        self.source_received = Gauge("edge_source_received", "Items received (cumulative)", ["source"], registry=r)
        self.source_errors = Gauge("edge_source_errors", "Bad input and connection errors (cumulative)",
                                   ["source"], registry=r)
        self.model_info = Gauge("edge_model_info", "Model running in each slot", ["slot", "package", "version",
                                                                                  "engine"], registry=r)
        self.events = Counter("edge_events", "Agent events (swaps, rollbacks, alarms)", ["kind"], registry=r)
        self.outbox_dropped = Counter("edge_outbox_dropped_records", "Records dropped by the outbox (not events)",
                                      ["kind", "cause"], registry=r)
        self._outbox_seen: dict[str, int] = {}
        self.agent_id = agent_id

    def observe_latency(self, pipeline: str, lat) -> None:
        for stage, ms in (("queue", lat.queue_ms), ("preprocess", lat.preprocess_ms),
                          ("inference", lat.inference_ms), ("postprocess", lat.postprocess_ms)):
            self.latency.labels(pipeline, stage).observe(ms / 1000.0)

    def result(self, res) -> None:
        self.results.labels(res.pipeline, res.verdict).inc()

    def event(self, evt: dict) -> None:
        self.events.labels(evt.get("kind", "other")).inc()

    def model(self, slot) -> None:
        st = slot.status()
        self.model_info.clear()
        self.model_info.labels(st["slot"], st["package"] or "", st["version"] or "", st["engine"] or "").set(1)

    def source(self, name: str, src) -> None:
        self.source_up.labels(name).set(1 if getattr(src.state, "value", "") == "connected" else 0)
        self.source_received.labels(name).set(src.stats.received)
        self.source_errors.labels(name).set(src.stats.errors)

    def refresh(self, agent) -> None:
        for p in agent.pipelines:
            st = p.status()
            self.dropped.labels(p.name).set(st["dropped"])
            self.errors.labels(p.name).set(sum(st["errors"].values()))
        for name, src in agent.sources.items():
            self.source(name, src)
        if getattr(agent, "outbox", None) is not None:
            self.outbox(agent.outbox.dropped)
        self.model_info.clear()
        for slot in agent.slots.values():
            st = slot.status()
            self.model_info.labels(st["slot"], st["package"] or "", st["version"] or "", st["engine"] or "").set(1)

    def outbox(self, dropped: dict[str, int]) -> None:
        """``dropped``: the outbox's cumulative "<cause>:<kind>" counts; the counter advances by what is new."""
        for key, n in dict(dropped).items():
            delta = n - self._outbox_seen.get(key, 0)
            if delta > 0:
                cause, _, kind = key.partition(":")
                self.outbox_dropped.labels(kind or "any", cause).inc(delta)
                self._outbox_seen[key] = n

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
