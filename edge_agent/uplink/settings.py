"""Settings of the link to the cloud (``cloud:``). No heavy imports."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CloudSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint: str = Field(description="host:port of `cloud-trainer serve`")
    ca_file: str
    cert_file: str
    key_file: str
    server_name: str | None = Field(None, description="TLS name to check (default: the endpoint host)")
    batch_max_records: int = Field(500, ge=1)
    batch_max_bytes: int = Field(1_000_000, ge=1024)
    max_delay_ms: float = Field(
        200.0,
        ge=0,
        le=5000,
        description="once a record arrives after the outbox was drained, wait this long for more to fill its "
        "batch (unless batch_max_records arrive sooner, or an alarm or event is recorded: it goes at once); "
        "a backlog goes in full batches without waiting; at a trickle every record's ack waits about this "
        "long (at most 5000)",
    )
    stream_idle_s: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="keep the PushRecords stream open this long without records, so that records arriving a "
        "few a second go up as batches on one stream; 0: end it as soon as the outbox is drained",
    )
    compression: bool = True
    bandwidth_cap_bytes_per_s: int | None = Field(None, ge=1024)
    keepalive_s: float = Field(
        10.0,
        ge=5,
        le=3600,
        description="a gRPC keepalive ping on the connection this often, so that a path that died without a "
        "word (a NAT or firewall that timed the flow out, a switch rebooting) is noticed; at least 5 s, the "
        "fleet service's floor (a client pinging more often is sent GOAWAY too_many_pings)",
    )
    keepalive_timeout_s: float = Field(
        20.0,
        ge=1,
        le=600,
        description="a ping unanswered this long ends the connection and the agent reconnects (a dead path "
        "is noticed within keepalive_s + keepalive_timeout_s); a ping waits behind the batch being sent, so "
        "keep it above batch_max_bytes / the link's bytes per second on a slow link. A Connect stream on which "
        "the fleet service says nothing this long after a state report is ended and opened again too",
    )
    backoff_initial_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)
    heartbeat_s: float = Field(
        5.0,
        gt=0,
        description="how often the agent looks at its state (and, against a server "
        "without the Connect stream, calls Heartbeat)",
    )
    report_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="on the Connect stream: a state report at least this often, besides one at every change",
    )
    stream: bool = Field(
        True, description="use the Connect stream when the server offers it (else unary heartbeats)"
    )
    follow_desired_state: bool = Field(True, description="apply the fleet's desired model versions")
    accept_commands: bool = Field(
        True,
        description="run the fleet's one-off commands (e.g. baseline_relearn from "
        "`cloud-trainer baseline relearn`); false: ignore them",
    )
