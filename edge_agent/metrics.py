"""Prometheus metrics of one agent, on its own registry (never the process-global one).

Names follow Prometheus conventions (``_total`` counters, ``_seconds`` histograms, base units):
``edge_pipeline_results_total{pipeline,verdict}``, ``edge_pipeline_latency_seconds{pipeline,stage}``,
``edge_pipeline_dropped_total{pipeline}`` (all reasons), ``edge_pipeline_dropped_by_reason_total{pipeline,reason}``
(reason: queue, stale, bad_samples, windows_capped), ``edge_pipeline_errors_total{pipeline}``,
``edge_source_up{source}``, ``edge_source_publish_up{source}`` (an mqtt source's publish connection of its own),
``edge_source_halted{source}`` (1 while an OPC UA server says, or shows, its values
are not current: its tags BAD, its readings held), ``edge_source_received_total{source}``, ``edge_source_dropped_total{source}``,
``edge_source_errors_total{source}``, ``edge_camera_decoded_total{source}`` (images a camera decoded),
``edge_camera_skipped_total{source}`` (frames skipped undecoded for fps), ``edge_silent_drops_total{component,name,reason}``,
``edge_action_total{action,type,target,outcome}`` (outcome: ok, failed, retried, queued, ...),
``edge_alarm_active{alarm,pipeline}``, ``edge_forward_total{forward,outcome}``, ``edge_rule_active{rule}``,
``edge_model_info{slot,...}``, ``edge_events_total{kind}``, ``edge_status_http_connections_total{outcome}``,
``edge_outbox_dropped_records_total{kind,cause}`` (records the outbox dropped: budget, retention, refused,
write_failed, corrupt: not read back out of a corrupt store, backlog: handed over faster than the disk
commits them), and
the process collector's RSS and CPU. Counts kept by the components themselves are read at scrape
time by a collector and exposed as counters (never as gauges of a cumulative count).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        self.results = Counter(
            "edge_pipeline_results", "Inference results", ["pipeline", "verdict"], registry=r
        )
        self.latency = Histogram(
            "edge_pipeline_latency_seconds",
            "Latency per stage",
            ["pipeline", "stage"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.source_up = Gauge("edge_source_up", "1 when the source is connected", ["source"], registry=r)
        self.source_publish_up = Gauge(
            "edge_source_publish_up",
            "1 while an mqtt source's publish connection (publish_connection: separate) is connected",
            ["source"],
            registry=r,
        )
        self.source_halted = Gauge(
            "edge_source_halted",
            "1 while the source's server is halted (its values not current: not Running, clock frozen, stalled)",
            ["source"],
            registry=r,
        )
        self._agent = None
        r.register(_AgentCollector(self))
        self.model_info = Gauge(
            "edge_model_info",
            "Model running in each slot",
            ["slot", "package", "version", "engine"],
            registry=r,
        )
        self.events = Counter("edge_events", "Agent events (swaps, rollbacks, alarms)", ["kind"], registry=r)
        self.outbox_dropped = Counter(
            "edge_outbox_dropped_records",
            "Records dropped by the outbox (not events)",
            ["kind", "cause"],
            registry=r,
        )
        self._outbox_seen: dict[str, int] = {}

    def observe_latency(self, pipeline: str, lat) -> None:
        for stage, ms in (
            ("queue", lat.queue_ms),
            ("preprocess", lat.preprocess_ms),
            ("inference", lat.inference_ms),
            ("postprocess", lat.postprocess_ms),
        ):
            self.latency.labels(pipeline, stage).observe(ms / 1000.0)

    def result(self, res) -> None:
        self.results.labels(res.pipeline, res.verdict).inc()

    def event(self, evt) -> None:
        self.events.labels(evt["kind"]).inc()

    def model(self, slot) -> None:
        st = slot.status()
        self.model_info.clear()
        self.model_info.labels(st["slot"], st["package"] or "", st["version"] or "", st["engine"] or "").set(
            1
        )

    def source(self, name: str, src) -> None:
        self.source_up.labels(name).set(1 if getattr(src.state, "value", "") == "connected" else 0)
        if (pc := getattr(src, "publish_connection", None)) is not None:  # its source may be up without it
            self.source_publish_up.labels(name).set(1 if pc["state"] == "connected" else 0)
        if hasattr(src, "halted"):  # OPC UA: for as long as the halt lasts (``OpcUaSource.halted``)
            self.source_halted.labels(name).set(0 if src.halted is None else 1)

    def refresh(self, agent) -> None:
        self._agent = agent
        for name, src in agent.sources.items():
            self.source(name, src)
        if getattr(agent, "outbox", None) is not None:
            self.outbox(agent.outbox.dropped)
        self.model_info.clear()
        for slot in agent.slots.values():
            st = slot.status()
            self.model_info.labels(
                st["slot"], st["package"] or "", st["version"] or "", st["engine"] or ""
            ).set(1)

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


# edge_pipeline_dropped_by_reason's reasons: the key of each in a pipeline's status
_DROP_REASONS = (
    ("queue", "dropped_queue"),
    ("stale", "dropped_stale"),
    ("bad_samples", "bad_samples"),
    ("windows_capped", "windows_capped"),
)


class _AgentCollector:
    """Counters the components keep themselves (pipelines, sources, actions), read at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self):
        agent = self.m._agent
        if agent is None:
            return
        dropped = CounterMetricFamily(
            "edge_pipeline_dropped",
            "Items dropped by the queue policy or as bad samples",
            labels=["pipeline"],
        )
        by_reason = CounterMetricFamily(
            "edge_pipeline_dropped_by_reason",
            "Items dropped, by reason: queue (its policy), stale (older than queue.max_age_ms when inference "
            "would take them), bad_samples, windows_capped",
            labels=["pipeline", "reason"],
        )
        errors = CounterMetricFamily("edge_pipeline_errors", "Failed inferences", labels=["pipeline"])
        silent = CounterMetricFamily(
            "edge_silent_drops",
            "Items dropped without an error (tag missing, input mismatch, unread source, nothing decoded)",
            labels=["component", "name", "reason"],
        )
        for p in agent.pipelines:
            st = p.status()
            dropped.add_metric([p.name], st["dropped"])
            for reason, key in _DROP_REASONS:
                by_reason.add_metric([p.name, reason], st[key])
            errors.add_metric([p.name], sum(st["errors"].values()))
            for reason, d in st.get("silent_drops", {}).items():
                silent.add_metric(["pipeline", p.name, reason], d["count"])
        received = CounterMetricFamily("edge_source_received", "Items received", labels=["source"])
        sdropped = CounterMetricFamily(
            "edge_source_dropped", "Items dropped by the source's hand-over queue", labels=["source"]
        )
        serrors = CounterMetricFamily(
            "edge_source_errors", "Bad input and connection errors", labels=["source"]
        )
        decoded = CounterMetricFamily(
            "edge_camera_decoded",
            "Camera images decoded (an MJPEG part or snapshot only once a pipeline takes it)",
            labels=["source"],
        )
        skipped = CounterMetricFamily(
            "edge_camera_skipped",
            "Camera frames skipped undecoded to keep the source's fps",
            labels=["source"],
        )
        for name, src in agent.sources.items():
            if hasattr(src, "decoded"):
                decoded.add_metric([name], src.decoded)
                skipped.add_metric([name], src.skipped)
            received.add_metric([name], src.stats.received)
            sdropped.add_metric([name], src.stats.dropped)
            serrors.add_metric([name], src.stats.errors)
            notes = {
                **(src.notices.status() if hasattr(src, "notices") else {}),
                **agent.source_notices[name].status(),
            }
            for reason, d in notes.items():
                silent.add_metric(["source", name, reason], d["count"])
        actions = CounterMetricFamily(
            "edge_action",
            "Action outcomes by action and target",
            labels=["action", "type", "target", "outcome"],
        )
        for name, counts in list(agent.actions.stats.items()):
            a = agent.cfg.actions[name]
            target = (
                getattr(a, "node_id", None)
                or getattr(a, "target", None)
                or getattr(a, "topic", None)
                or getattr(a, "source", None)
                or ""
            )
            for outcome, n in list(counts.items()):
                actions.add_metric([name, a.type, str(target), outcome], n)
        alarms = GaugeMetricFamily(
            "edge_alarm_active", "1 while the alarm is raised", labels=["alarm", "pipeline"]
        )
        for st in list(agent.actions.alarm_state.values()):
            alarms.add_metric([st["alarm"], st["pipeline"]], 1 if st["active"] else 0)
        fwd = CounterMetricFamily(
            "edge_forward", "Readings forwarded without a model, by outcome", labels=["forward", "outcome"]
        )
        for f in getattr(agent, "forwarders", []):
            for outcome, n in list(f.stats.items()):
                fwd.add_metric([f.s.name, outcome], n)
        rules = GaugeMetricFamily(
            "edge_rule_active", "1 while the rule's threshold is passed", labels=["rule"]
        )
        for r in getattr(agent, "rules", []):
            rules.add_metric([r.s.name], 1 if r.active else 0)
        http = CounterMetricFamily(
            "edge_status_http_connections",
            "Connections to this endpoint: accepted, refused (503: too many at once), cut (over the deadline, "
            "or its place taken by a new connection), aborted (the client went away before its answer was "
            "complete) or failed (an error in serving it)",
            labels=["outcome"],
        )
        if (srv := getattr(agent, "http", None)) is not None:
            for outcome in ("accepted", "refused", "cut", "aborted", "failed"):
                http.add_metric([outcome], getattr(srv.httpd, outcome))
        yield from (
            dropped,
            by_reason,
            errors,
            silent,
            received,
            decoded,
            skipped,
            sdropped,
            serrors,
            actions,
            alarms,
            fwd,
            rules,
            http,
        )
