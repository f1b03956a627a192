"""The typed deployment: one definition for the rollout control loop, the Admin service, the admin CLI and
the console.

A deployment rolls one thing out to a set of agents, canary step after canary step, health-gated:

- ``kind: model``: a published package version into one model slot (``package``, ``version``, ``digest``,
  ``slot``);
- ``kind: config``: an agent configuration (``config_yaml``: YAML without the agents' own ``agent:`` and
  ``cloud:`` sections, validated by the agent's own validator before it is accepted); ``package`` holds
  its name, ``version`` and ``digest`` its SHA-256.

A rollback is explicit: ``rollback`` (an admin asked for this version, lower ones included) and, on a
desired state, ``DesiredSlot.rollback`` / ``DesiredConfig.rollback``. The v2 mark (a deployment id ending in
``:rollback``) is still written on desired model slots for v2 agents, and nowhere else.

On the wire the Admin service answers with typed ``DeploymentInfo`` fields (``to_proto``); its ``json`` field
carries the same document for v2 admin tools. ``from_proto`` reads either.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Kind = Literal["model", "config"]
State = Literal["running", "paused", "completed", "halted", "aborted", "removed"]


class Gate(BaseModel):
    """Health gate bounds: a step fails for an agent whose report exceeds one of them."""

    model_config = ConfigDict(extra="forbid")
    max_error_rate: float | None = Field(None, ge=0, le=1)


class Target(BaseModel):
    model_config = ConfigDict(extra="allow")  # health and last_report: what the agent sent, kept as it came
    status: str = "waiting"
    reason: str = ""
    step: int | None = None
    updated: float | None = None


class Previous(BaseModel):
    """What an agent ran before (a model slot's package version, or a fleet config), restored on rollback."""

    model_config = ConfigDict(extra="ignore")
    package: str = ""
    version: str = ""
    digest: str = ""
    deployment_id: str = ""  # kind config: the deployment whose config it was


class Deployment(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    tenant: str = "default"
    kind: Kind = "model"
    created: float
    package: str
    version: str
    digest: str
    size: int = 0
    slot: str = ""
    strategy: str = "canary"
    steps: list[str] = Field(default_factory=lambda: ["1", "100%"])
    wait_s: float = 0.0
    gate: Gate = Field(default_factory=Gate)
    state: State = "running"
    step: int = 0
    step_started: float | None = None
    step_healthy_at: float | None = None
    reason: str = ""
    previous: dict[str, Previous] = Field(default_factory=dict)
    rollback: bool = False
    targets: dict[str, Target] = Field(default_factory=dict)
    config_yaml: str = ""  # kind config: the document itself
    # the label selector it was created with (none: agents named by id): agents that join the group while it
    # runs become targets, reached by its last step
    selector: dict[str, str] = Field(default_factory=dict)
    # the current step passed its deadline with these agents not yet healthy: {step, since, agents, timeout_s}
    stalled: dict | None = None
    joins_checked: float | None = None  # when the control last looked for agents that joined the group

    @classmethod
    def from_doc(cls, doc: dict | str) -> Deployment:
        return cls.model_validate_json(doc) if isinstance(doc, str) else cls.model_validate(doc)

    def doc(self) -> dict:
        """The stored form (and the v2 JSON answer): plain JSON types."""
        return self.model_dump(mode="json")

    def to_proto(self, pb):
        """The Admin service's answer: typed fields, and the JSON document for v2 admin tools (without the
        config's bytes, which an admin already has)."""
        doc = self.doc()
        doc.pop("config_yaml", None)
        gate = pb.HealthGate()
        if self.gate.max_error_rate is not None:
            gate.max_error_rate = self.gate.max_error_rate
        return pb.DeploymentInfo(
            json=json.dumps(doc),
            id=self.id,
            kind=self.kind,
            package=self.package,
            version=self.version,
            digest=self.digest,
            slot=self.slot,
            strategy=self.strategy,
            steps=self.steps,
            wait_s=self.wait_s,
            gate=gate,
            state=self.state,
            step=self.step,
            reason=self.reason,
            rollback=self.rollback,
            created=self.created,
            size=self.size,
            targets=[
                pb.DeploymentTarget(
                    agent=a,
                    status=t.status,
                    reason=t.reason,
                    step=-1 if t.step is None else t.step,
                    updated=t.updated or 0,
                )
                for a, t in sorted(self.targets.items())
            ],
        )

    @classmethod
    def from_proto(cls, info) -> Deployment:
        """A ``DeploymentInfo`` from a v3 service (typed fields) or a v2 one (only ``json``). What has no typed
        field (``stalled``, ``selector``) comes from the JSON document."""
        if not info.id:
            return cls.from_doc(info.json or "{}")
        try:
            extra = json.loads(info.json) if info.json else {}
        except ValueError:
            extra = {}
        extra = extra if isinstance(extra, dict) else {}
        return cls(
            stalled=extra.get("stalled") if isinstance(extra.get("stalled"), dict) else None,
            selector=extra.get("selector") if isinstance(extra.get("selector"), dict) else {},
            id=info.id,
            kind=info.kind or "model",
            created=info.created,
            package=info.package,
            version=info.version,
            digest=info.digest,
            size=info.size,
            slot=info.slot,
            strategy=info.strategy,
            steps=list(info.steps),
            wait_s=info.wait_s,
            gate=Gate(
                max_error_rate=info.gate.max_error_rate if info.gate.HasField("max_error_rate") else None
            ),
            state=info.state or "running",
            step=info.step,
            reason=info.reason,
            rollback=info.rollback,
            targets={
                t.agent: Target(
                    status=t.status,
                    reason=t.reason,
                    step=None if t.step < 0 else t.step,
                    updated=t.updated or None,
                )
                for t in info.targets
            },
        )

    def what(self) -> str:
        """One short name of what is rolled out: ``package-version`` or ``config NAME (digest)``."""
        if self.kind == "config":
            return f"config {self.package} ({self.digest[:12]})"
        return f"{self.package}-{self.version}"


def gate_from_request(request) -> dict:
    """The gate of a ``CreateDeploymentRequest``: typed ``gate`` (v3) or ``gate_json`` (v2), as a dict."""
    if request.HasField("gate"):
        g = request.gate
        return {"max_error_rate": g.max_error_rate} if g.HasField("max_error_rate") else {}
    return {}
