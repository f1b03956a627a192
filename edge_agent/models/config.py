"""Settings of one model slot (``models.<slot>`` in the agent config).

A slot runs one package at a time. Its package comes from a local file (``package``, pinned: no
cloud needed) or from the fleet (``name``: the cloud's desired state picks the version, within
``version_policy``). Imports nothing heavy: validating a config must not load an engine.
"""

from __future__ import annotations

import enum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# The engine table: name -> (implementation "module:Class" in edge_agent.engines, the library it
# needs). One row per engine; the config's ``engine`` choices are built from it, so a name not in it
# is a config error, never a silent fallback. Order is the preference of ``auto`` (the first
# installed; the slot then measures every installed one and keeps the fastest that passes).
ENGINE_TYPES: dict[str, tuple[str, str]] = {
    "openvino": ("edge_agent.engines:OvEngine", "openvino"),
    "onnxruntime": ("edge_agent.engines:OrtEngine", "onnxruntime"),
}
# auto: every installed engine is tried (the fastest that passes its checks on this CPU serves)
# members come from the table, which mypy cannot read: members are named by value, EngineChoice("auto")
EngineChoice = enum.StrEnum(  # type: ignore[misc]
    "EngineChoice", [("AUTO", "auto"), *((k.upper(), k) for k in ENGINE_TYPES)]
)


class FormChoice(enum.StrEnum):
    """Which form of a two-form package (INT8 + its FP32 reference) a slot may serve."""

    AUTO = "auto"  # INT8 where it matches FP32 on this CPU (parity on the golden inputs), else FP32; fastest wins
    INT8 = "int8"  # INT8 only: a package whose INT8 form is off on this CPU is refused, never served
    FP32 = "fp32"  # the FP32 reference only (refused when the package carries none)


class VersionPolicy(enum.StrEnum):
    PINNED = "pinned"  # run exactly the local package / the version the admin named
    FOLLOW_FLEET = "follow_fleet"  # run what the cloud's desired state says (upgrades and admin rollbacks)


class GraphOptimization(enum.StrEnum):
    DISABLE = "disable"
    BASIC = "basic"
    EXTENDED = "extended"
    ALL = "all"


class OpenVinoHint(enum.StrEnum):
    LATENCY = "latency"
    THROUGHPUT = "throughput"


class HealthConfig(BaseModel):
    """After a swap, the new model is watched for ``window_s`` (and at least ``min_items``
    inferences); any bound broken rolls it back to the previous package."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_s: float = Field(default=30.0, gt=0)
    min_items: int = Field(default=20, ge=1)
    max_error_rate: float = Field(default=0.05, ge=0, le=1)  # failed inferences / all
    max_nonfinite_rate: float = Field(default=0.0, ge=0, le=1)  # NaN/Inf outputs / all
    max_latency_ratio: float = Field(default=3.0, gt=0)  # p50 inference latency new / old
    # ... and only when the p50 also grew by this much: 0.5 -> 1.5 ms on a busy 2-core gateway (another
    # agent verifying its own model beside it) is scheduling noise, not a model to roll back
    min_latency_increase_ms: float = Field(default=2.0, ge=0)
    max_verdict_rate_shift: float = Field(default=0.5, ge=0, le=1)  # |NG rate new - old|


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    package: str | None = None  # path to a local .edgepkg
    name: str | None = None  # package name in the fleet registry
    version_policy: VersionPolicy = VersionPolicy.PINNED
    engine: EngineChoice = EngineChoice("auto")
    form: FormChoice = FormChoice.AUTO
    threads: int = Field(default=1, ge=1, le=64)
    graph_optimization: GraphOptimization = GraphOptimization.ALL  # ONNX Runtime
    openvino_hint: OpenVinoHint = OpenVinoHint.LATENCY
    openvino_cache_dir: str | None = None
    # OpenVINO computes float layers at f32, the precision the package's thresholds and golden outputs were set at.
    # false: at the CPU's default, bf16 on AVX-512 BF16 and AMX CPUs, f16 on ARM (faster; scores shift by up to a few
    # hundredths, and an item near a threshold may get another verdict than at f32: docs/agent.md)
    openvino_f32: bool = True
    # one inference, at most: a model that passed its golden set but never finishes on some live input (a
    # Loop whose trip count an over-exposed frame sets) fails that item instead of holding its worker and a
    # core for good (edge_agent.engines: ONNX Runtime's run is stopped; OpenVINO's is left to finish)
    inference_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    health: HealthConfig = HealthConfig()
    # versions this slot never installs or serves, whoever signed them (a known defect): a signed package stays
    # valid for ever, and the fleet's withdrawal (cloud-trainer withdraw) cannot reach a gateway that already has
    # the version, keeps it as its previous one, or is pinned to a local file
    refused_versions: tuple[str, ...] = ()

    @field_validator("refused_versions")
    @classmethod
    def _semantic(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        # any version a package's manifest takes: one of a number past 18 digits (signed by hand, or built before
        # build refused it), which the order cannot read, is refused by its text
        from model_packager.manifest import is_version

        for i, version in enumerate(v):
            if not is_version(version):
                raise ValueError(f"[{i}] {version[:64]!r} is not a semantic version (such as 1.4.0)")
        return v

    def refuses(self, version: str) -> bool:
        """Whether ``version`` is one of ``refused_versions``, compared as versions: ``01.0.0`` (a package built
        before build refused leading zeros) and ``1.0.0+hotfix`` order as ``1.0.0``, and the agent takes one for
        the other (the registry's twins); compared as texts, refusing one served the other."""
        return refused_version(self.refused_versions, version)

    @model_validator(mode="after")
    def _source(self) -> ModelConfig:
        if not self.package and not self.name:
            raise ValueError(
                "give 'package' (a local .edgepkg file) or 'name' (a package in the fleet registry)"
            )
        return self


def refused_version(refused: tuple[str, ...], version: str) -> bool:
    """``ModelConfig.refuses`` for a slot's ``refused_versions`` (``refused``)."""
    from model_packager.manifest import version_key

    def key(v: str) -> tuple | None:
        try:
            return version_key(v)
        except ValueError:  # (a version the manifest took and the order does not: its text alone)
            return None

    if version in refused:
        return True
    mine = key(version)
    if mine is None:  # by its text, build metadata (``+...``) left out as the order leaves it out
        return version.partition("+")[0] in {v.partition("+")[0] for v in refused}
    return any(key(v) == mine for v in refused)
