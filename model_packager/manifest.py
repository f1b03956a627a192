"""The model package manifest, schema version 1: the contract between trainer, packager and agent.

A package (``NAME-VERSION.edgepkg``) carries ``manifest.yaml`` (this model), a detached
Ed25519 signature over the manifest's exact bytes, the ONNX model, optionally an OpenVINO IR,
and golden inputs with expected outputs. The *spec* a trainer hands to ``build`` is the same
document without the parts ``build`` computes (``files``, ``golden.expected`` when absent,
``created_at``).

Preprocessing and postprocessing are declared here and executed by
``model_packager.preprocess`` on both sides (the trainer when it makes training inputs, the
agent at inference), so that the features a model sees at the edge are exactly those it was
trained on.
"""

from __future__ import annotations

import enum
import math
import re
import types
import typing
import unicodedata
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from model_packager.text import printable

SCHEMA_VERSION = 2
# Schema 1 packages (one model form, golden outputs of that form) are still read; schema 2 adds the
# optional FP32 reference model (``FileRole.MODEL_FP32``) and the ``parity`` bounds of the INT8 form.
READABLE_SCHEMAS = (1, 2)
PACKAGE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")  # also a safe folder name (the registry's)
# names an installed package folder holds beside the package's files (edge_agent.models.store)
RESERVED_PATHS = frozenset({".package-digest"})
_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")
_VERSION_PARTS = re.compile(
    r"^(\d{1,18})\.(\d{1,18})\.(\d{1,18})(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$"
)
MAX_VERSION_CHARS = 64
_PATH_MAX = 255


def is_version(v: str) -> bool:
    """Whether a manifest takes ``v`` as its ``version`` (semantic: ``1.2.0``, ``1.2.0-rc.1``)."""
    return len(v) <= MAX_VERSION_CHARS and _VERSION_RE.fullmatch(v) is not None


def leading_zero(version: str) -> str | None:
    """The numeric identifier of ``version`` written with a leading zero (``01`` of ``01.0.0`` or of ``1.0.0-rc.01``),
    which semantic versions forbid: it orders as the number without the zero (``01.0.0`` as ``1.0.0``, another
    version's equal). None when there is none (build metadata after ``+`` may hold such digits)."""
    core, _, pre = version.partition("+")[0].partition("-")
    for part in [*core.split("."), *(pre.split(".") if pre else [])]:
        if len(part) > 1 and part.isdigit() and part.startswith("0"):
            return part
    return None


def leading_zero_problem(version: str) -> str | None:
    """Why ``version`` is refused where a package is built or published (``leading_zero``), or None."""
    z = leading_zero(version)
    if z is None:
        return None
    return (
        f"{version!r}: write {int(z)} for {z!r}: semantic versions forbid leading zeros (it orders as {int(z)}: "
        "agents and deployments would take it for the version written without the zero)"
    )


def build_version_problem(version: str) -> str | None:
    """Why a build refuses ``version`` (a semantic version, ``is_version``), or None: a leading zero
    (``leading_zero_problem``), a number written in other digits than 0-9 (it orders as the number), or a number
    the version order cannot read (past 18 digits: ``1.0.99999999999999999999`` was built and published, sorted below
    every version by the registry, and refused by every agent)."""
    if (why := leading_zero_problem(version)) is not None:
        return why
    # (is_version's \d takes any script's digits: a fullwidth 1.0.0 orders as 1.0.0)
    if not version.isascii():
        core = re.split(r"[-+]", version, maxsplit=1)[0]  # (only its numbers can be: the rest is 0-9A-Za-z.-)
        plain = ".".join(str(int(n)) for n in core.split(".")) + version[len(core) :]
        return (
            f"{version[:MAX_VERSION_CHARS]!r}: write {plain!r}: a version's numbers are written in the digits 0-9 "
            f"(it orders as {plain}: agents and deployments would take it for that version)"
        )
    try:
        version_key(version)
    except ValueError:
        return (
            f"{version[:MAX_VERSION_CHARS]!r}: each number of a version has at most 18 digits (agents and the registry "
            "order versions by them)"
        )
    return None


def version_key(version: str) -> tuple:
    """A sort key for semantic versions (``1.10.0`` > ``1.9.0``; ``1.0.0-rc.1`` < ``1.0.0``; build
    metadata after ``+`` ignored). Raises ``ValueError`` for anything else."""
    m = (
        _VERSION_PARTS.fullmatch(version)
        if isinstance(version, str) and len(version) <= MAX_VERSION_CHARS
        else None
    )
    if m is None:
        raise ValueError(f"not a semantic version: {version[:MAX_VERSION_CHARS]!r}")
    core = (int(m[1]), int(m[2]), int(m[3]))
    if m[4] is None:
        return (*core, 1, ())
    pre = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in m[4].split("."))
    return (*core, 0, pre)


def check_relative_path(path: str) -> str:
    """A file name inside a package: relative, forward slashes, no '..' or '.' parts, no control
    characters, at most 255 characters. Used for every path a manifest names."""
    parts = path.split("/")
    if (
        not path
        or len(path) > _PATH_MAX
        or path.startswith("/")
        or "\\" in path
        or not path.isprintable()
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise ValueError(
            "must be a relative path inside the package (no '..', no leading '/', no control "
            f"characters, at most {_PATH_MAX} characters)"
        )
    return path


class _Model(BaseModel):
    # No NaN or infinity anywhere a number decides something: a comparison with NaN is always false,
    # so a NaN threshold never says NG and a NaN tolerance passes every golden test. Numbers that are
    # only on record (``Informative``) may be NaN, meaning undefined (an AUROC on one class).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_truth_value_for_a_number(cls, data: Any) -> Any:
        # pydantic's lax mode reads true as 1 and false as 0: ``threshold: true`` (a YAML 1.1 "yes" in a
        # hand-written spec) was a threshold of 1.0, a classifier that never says NG, and ``atol: true`` a
        # golden check of 1.0
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                v = data.get(field.alias or name)
                if _holds_truth_value(v) and _numbers_only(field.annotation):
                    raise ValueError(
                        f"has {name}: {_truth_text(v)}, a truth value where a number is expected"
                    )
        return data


def _holds_truth_value(v: Any) -> bool:
    if isinstance(v, bool):
        return True
    if isinstance(v, list | tuple):
        return any(_holds_truth_value(x) for x in v)
    if isinstance(v, dict):
        return any(_holds_truth_value(x) for x in v.values())
    return False


def _truth_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return "a list or mapping holding true or false"


def _numbers_only(annotation: Any) -> bool:
    """Whether every value the annotation takes is a number (int or float, in lists, tuples, mappings or
    ``None``): a field that takes a truth value, text or a model of its own is left to its own validation."""
    if annotation in (int, float):
        return True
    if annotation is type(None):
        return True
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:  # an ``Informative`` number is on record only, never compared: left as it was
        marks = [x for a in args[1:] for x in (a, *getattr(a, "metadata", ()))]
        return _numbers_only(args[0]) and not any(getattr(x, "allow_inf_nan", None) for x in marks)
    if origin is dict:
        return len(args) == 2 and _numbers_only(args[1])
    if origin in (list, tuple, typing.Union, types.UnionType):
        leaves = [a for a in args if a is not Ellipsis]
        return bool(leaves) and all(_numbers_only(a) for a in leaves)
    return False


def _non_negative(v: float) -> float:
    if v < 0:
        raise ValueError(f"is {v}: a tolerance or bound cannot be negative")
    return v


# validated, not declared as ``Field(ge=0)``: the published JSON schema (the v2 contract) stays as it is
NonNegative = Annotated[float, AfterValidator(_non_negative)]
Informative = Annotated[float, Field(allow_inf_nan=True)]  # on record only, never compared with


def _channels(color: ColorOrder) -> int:
    return 1 if color is ColorOrder.GRAY else 3


# Bounds on what one frame or window makes (checked by validators, not ``Field(le=...)``: the published
# JSON schema, the v2 contract, stays as it is). Preprocessing allocates its tensor for every frame: a
# signed manifest with a width of 100000, or 64 x 64 tiles of 224 px, made every frame allocate 10 GiB or
# 2.3 GiB (a MemoryError on each, or the kernel's out-of-memory killer taking the agent). The bounds are
# far above what a 1-5 MP camera and a tiling model need (5 MP full-size RGB: 15.1 M values; 80 tiles of
# 256 px: 15.7 M) and keep one frame's tensor at most 128 MiB at float32.
MAX_IMAGE_SIDE = 8192  # width or height of the model's input (as the camera's own resize bound)
MAX_TENSOR_VALUES = 1 << 25  # tiles x channels x height x width of one frame
MAX_ROI_END = 65536  # x + width, y + height: a box reaching past this fits no frame a camera delivers
MAX_WINDOW_SAMPLES = 1 << 20  # one signal window (105 s at 10 kHz, 1 s at 1 MHz): 0.3 s and 41 MB here
# with ``condition`` features (the speed search pads the spectrum 8x and takes a running median over it:
# ~1.8 KB a sample, measured 1.9 GB and 18 s for a window of 2^20, 114 MB and 1.9 s for 2^16)
MAX_CONDITION_WINDOW_SAMPLES = 1 << 16  # 2.6 s at 25.6 kHz, the longest record of a vibration analyser
MAX_BANDS = 1 << 16  # spectrum bands of one window
# a class label: in every result the agent makes (its label and probabilities' keys), published over MQTT, kept in
# the outbox, written to PLCs, shown on the status page; the trainer's labels are folder names (255 at most)
MAX_LABEL_CHARS = 255
# an output's unit (a remaining life's: s, min, h, d): named in the model's errors, logged and shown on /status
MAX_UNIT_CHARS = 32
# labels of one output: every result carries a probability per label (keyed by it); ImageNet's 1000 classes are
# the largest head an off-the-shelf classifier carries, a defect or fault classifier has tens
MAX_LABELS = 1000


class Task(enum.StrEnum):
    VISION_INSPECTION = "vision_inspection"  # image -> OK/NG (+ defect class, heat map)
    EQUIPMENT_MAINTENANCE = "equipment_maintenance"  # signal window -> anomaly, fault type, remaining life
    ANOMALY_DETECTION = "anomaly_detection"  # image -> anomaly score + map (trained on good images only)


class DType(enum.StrEnum):
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    INT64 = "int64"
    INT32 = "int32"
    UINT8 = "uint8"
    INT8 = "int8"


_FLOAT_MAX = {DType.FLOAT32: 3.4028234663852886e38, DType.FLOAT16: 65504.0}  # largest finite value


class TensorSpec(_Model):
    name: str
    dtype: DType
    shape: list[int | str]  # a str is a symbolic (dynamic) dimension, e.g. "batch"
    layout: str | None = None  # e.g. "NCHW", "NC"


class OutputRole(enum.StrEnum):
    CLASS_LOGITS = "class_logits"  # softmax applied by the postprocessor; needs labels
    CLASS_PROBS = "class_probs"  # already probabilities; needs labels
    HEATMAP = "heatmap"  # coarse defect map (N,1,h,w) or (N,h,w), higher = more defect-like
    ANOMALY_SCORE = "anomaly_score"  # (N,) or (N,1), higher = more anomalous; needs threshold
    REMAINING_LIFE = "remaining_life"  # (N,) or (N,1) in ``unit``
    # (N,1,H,W) or (N,H,W) in the anomaly score's units (the score is its maximum); needs threshold:
    # shown as map / (2 x threshold), so the threshold is mid-scale and a good part stays cool
    ANOMALY_MAP = "anomaly_map"
    RAW = "raw"  # passed through, no meaning for the verdict


class OutputSpec(TensorSpec):
    role: OutputRole = OutputRole.RAW
    labels: list[str] | None = None
    # CLASS_*: the label that means "good"; NG score = 1 - p(ok_label). ANOMALY_SCORE: score itself.
    ok_label: str | None = None
    # NG when score >= threshold (CLASS_* with ok_label, ANOMALY_SCORE).
    threshold: float | None = None
    unit: str | None = None  # REMAINING_LIFE: "s" or "h"
    description: str | None = None

    @field_validator("labels")
    @classmethod
    def _labels_fit_shape(cls, v: list[str] | None, info: ValidationInfo) -> list[str] | None:
        # one label per value of an item: the dimensions after the batch axis, when they are fixed
        shape, role = info.data.get("shape"), info.data.get("role")
        if v is not None and len(v) > MAX_LABELS:  # before each label is looked at: 10 million cost seconds
            raise ValueError(
                f"{len(v):,} labels: at most {MAX_LABELS} (ImageNet's classes; every result carries a probability "
                "per label, published, kept in the outbox and shown on the status page)"
            )
        for label in v or ():
            if not label or not label.isprintable():  # a label is a config's and a result's text, one line
                raise ValueError(
                    f"label {label!r} is empty or holds a control character (a newline, a tab): labels are "
                    "named in configs and results"
                )
            # in every result (label, probabilities): MQTT, outbox, PLC, page
            if len(label) > MAX_LABEL_CHARS:
                raise ValueError(
                    f"label {label[:40]!r}... is {len(label):,} characters: at most {MAX_LABEL_CHARS} (a "
                    "folder name's limit; each result names it)"
                )
        # each class its own name: probabilities are keyed by label, and ok_label must name one class
        # (a repeated one kept only its last class's probability: the other's parts went NG)
        seen: set[str] = set()
        for label in v or []:
            if label in seen and v is not None:
                raise ValueError(
                    f"label {label!r} is given {v.count(label)} times: each class needs its own label "
                    "(results, probabilities and ok_label name classes by label)"
                )
            seen.add(label)
        if v is None or role not in (OutputRole.CLASS_LOGITS, OutputRole.CLASS_PROBS) or not shape:
            return v
        per_item = shape[1:]
        if len(shape) > 1 and all(isinstance(d, int) and d > 0 for d in per_item):
            n = math.prod(per_item)
            if n != len(v):
                raise ValueError(
                    f"{len(v)} labels but the output has {n} values per item (shape {shape}); "
                    "give one label per class, in the model's order"
                )
        return v

    @field_validator("unit")
    @classmethod
    def _unit_one_word(cls, v: str | None) -> str | None:
        # a unit is named in a remaining life's error ("gives -1e+30 h"), which is logged and shown on /status as
        # it is: a newline or an escape sequence in it forged log lines, and it was up to the manifest's size
        if v is not None and (not v or not v.isprintable() or len(v) > MAX_UNIT_CHARS):
            shown = v[:40].encode("unicode_escape").decode("ascii")
            what = (
                "is empty"
                if not v
                else "holds a control character (a newline, an escape, a bidirectional override)"
                if not v.isprintable()
                else f"is {len(v):,} characters"
            )
            raise ValueError(
                f"unit '{shown}'{'...' if len(v) > 40 else ''} {what}: a unit is 1 to {MAX_UNIT_CHARS} printable "
                "characters (s, min, h or d; another is read as seconds)"
            )
        return v

    @field_validator("threshold")
    @classmethod
    def _threshold_meaning(cls, v: float | None, info: ValidationInfo) -> float | None:
        # a class output's NG score is 1 - p(ok_label), a probability; an anomaly score's scale is the
        # model's own (distances, log-likelihoods), so only finiteness applies to it
        if v is not None and info.data.get("role") in (OutputRole.CLASS_LOGITS, OutputRole.CLASS_PROBS):
            if not 0.0 <= v <= 1.0:
                raise ValueError(
                    f"is {v}: the NG score of a {info.data['role'].value} output is a probability "
                    "(1 - p(ok_label)), so its threshold lies in [0, 1]"
                )
        return v

    @model_validator(mode="after")
    def _check_role(self) -> OutputSpec:
        if self.role in (OutputRole.CLASS_LOGITS, OutputRole.CLASS_PROBS):
            if not self.labels:
                raise ValueError(f"output {self.name!r}: role {self.role.value} needs 'labels'")
            if self.ok_label is not None and self.ok_label not in self.labels:
                raise ValueError(f"output {self.name!r}: ok_label {self.ok_label!r} is not one of labels")
        if self.role in (OutputRole.ANOMALY_SCORE, OutputRole.ANOMALY_MAP) and self.threshold is None:
            raise ValueError(f"output {self.name!r}: role {self.role.value} needs 'threshold'")
        return self


class ColorOrder(enum.StrEnum):
    RGB = "rgb"
    BGR = "bgr"
    GRAY = "gray"


class ImagePreprocessing(_Model):
    """Frame (BGR uint8 HxWx3, or HxW grey) -> float32 tensor. Steps, in order: optional region of
    interest ``roi`` (a pixel box ``[x, y, width, height]`` of the frame), optional center crop to
    ``crop`` (fraction of the shorter side), optional ``tiles`` (``[columns, rows]``: a grid of
    equal tiles over the region, neighbours overlapping by ``tile_overlap`` of a tile), resize of
    the region (or of each tile) to width x height (``interpolation``), colour conversion, scale
    by ``scale``, subtract ``mean`` / divide by ``std`` per channel, transpose to ``layout``. The
    batch axis holds one row per tile (row-major), one row without tiles.

    A tiled model's verdict is the worst tile's (NG when any tile is NG; its label and
    probabilities), its heat map the tiles' maps stitched in place (``preprocess.interpret``).
    ``roi``, ``tiles`` and ``tile_overlap`` are new in schema 2 and optional: older manifests read
    as before."""

    # (not in the docstring, which is the published schema's text) the tensor takes the dtype of the
    # manifest's input: float32, float16, or uint8 = the pixels as they are, for a model that normalises
    # them itself (``Manifest._check_image_input``: scale 1, mean 0, std 1)
    kind: Literal["image"] = "image"
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    color: ColorOrder = ColorOrder.RGB
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    scale: float = 1.0 / 255.0
    mean: list[float] = [0.0, 0.0, 0.0]
    std: list[float] = [1.0, 1.0, 1.0]
    crop: float | None = Field(default=None, gt=0, le=1)
    interpolation: Literal["area", "linear", "nearest"] = "area"
    roi: list[int] | None = None  # [x, y, width, height] in frame pixels
    tiles: list[int] | None = None  # [columns, rows]
    tile_overlap: float = Field(default=0.0, ge=0, lt=0.5)

    @field_validator("width", "height")
    @classmethod
    def _side(cls, v: int) -> int:
        if v > MAX_IMAGE_SIDE:
            raise ValueError(
                f"is {v}: at most {MAX_IMAGE_SIDE} pixels (every frame is resized to it: gigabytes per frame)"
            )
        return v

    @field_validator("mean", "std")
    @classmethod
    def _per_channel(cls, v: list[float], info: ValidationInfo) -> list[float]:
        color = info.data.get("color")
        if color is None:
            return v
        c = _channels(color)
        # grey: one value, or the three of the colour default (the first applies, as it always has)
        if len(v) != c and not (c == 1 and len(v) == 3):
            raise ValueError(
                f"has {len(v)} value{'s' if len(v) != 1 else ''} but colour {color.value} has {c} "
                f"channel{'s' if c > 1 else ''}; give one value per channel"
            )
        if info.field_name == "std" and min(v) <= 0:
            raise ValueError(f"is {v}: every std must be > 0 (the tensor is divided by it)")
        return v

    @field_validator("roi")
    @classmethod
    def _check_roi(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (len(v) != 4 or v[0] < 0 or v[1] < 0 or v[2] <= 0 or v[3] <= 0):
            raise ValueError("roi is [x, y, width, height] in pixels: x, y >= 0 and width, height > 0")
        if v is not None and (v[0] + v[2] > MAX_ROI_END or v[1] + v[3] > MAX_ROI_END):
            raise ValueError(
                f"is {v}: x + width and y + height are at most {MAX_ROI_END} pixels (no frame is larger)"
            )
        return v

    @field_validator("tiles")
    @classmethod
    def _check_tiles(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (len(v) != 2 or not 1 <= v[0] <= 64 or not 1 <= v[1] <= 64):
            raise ValueError("tiles is [columns, rows], each 1..64")
        return v

    @model_validator(mode="after")
    def _tensor_bounded(self) -> ImagePreprocessing:
        values = self.n_tiles * _channels(self.color) * self.height * self.width
        if values > MAX_TENSOR_VALUES:
            made = f"{self.n_tiles} tiles x " if self.tiles else ""
            raise ValueError(
                f"tiles, width and height make {made}{_channels(self.color)} x {self.height} x {self.width} = "
                f"{values:,} values per frame, over {MAX_TENSOR_VALUES:,} ({MAX_TENSOR_VALUES * 4 >> 20} MiB "
                "as float32); use a smaller input or fewer tiles"
            )
        return self

    @property
    def n_tiles(self) -> int:
        return self.tiles[0] * self.tiles[1] if self.tiles else 1


class ConditionFeatures(_Model):
    """Condition-monitoring features (``model_packager.condition``) appended after the scalars:
    ``names`` in order, a subset of ``condition.FEATURES``. Shaft speed from the scalar input
    ``speed_scalar`` (rpm) or, absent, estimated from the spectrum in ``speed_range_rpm``; defect
    frequencies from ``bearing`` = [n_elements, ball_d_mm, pitch_d_mm, contact_angle_deg] (absent: found
    from the envelope's strongest non-integer-order line and its sidebands). ``relative``: the amplitude
    features (``condition.AMPLITUDE_FEATURES``: orders, high-frequency and velocity RMS) as log ratios to
    the window's own RMS, so a sensor's gain or mounting does not shift them (absent in older packages:
    absolute)."""

    names: list[str]
    speed_scalar: str | None = None
    speed_range_rpm: tuple[float, float] = (300.0, 6000.0)
    bearing: tuple[int, float, float, float] | None = None
    units: Literal["g", "m/s2"] = "g"
    relative: bool = False

    @model_validator(mode="after")
    def _known(self) -> ConditionFeatures:
        from model_packager.condition import FEATURES

        unknown = [n for n in self.names if n not in FEATURES]
        if unknown:
            raise ValueError(f"condition.names: unknown feature(s) {unknown}; known: {FEATURES}")
        return self


class SignalPreprocessing(_Model):
    """Window -> float32 feature vector (1, n_features).

    The window holds ``window_samples`` samples of the waveform tag ``waveform`` at
    ``sample_rate_hz``, plus the latest value of each tag in ``scalars``. Features, in order:
    ``n_bands`` log band energies of the Hann-windowed magnitude spectrum between 0 and
    ``f_max_hz`` (equal-width bands), then ``rms``, ``peak``, ``crest``, ``kurtosis`` of the
    time signal when ``time_features`` is set, then the scalars in the order listed, then the
    ``condition`` features when declared (shaft orders, envelope at bearing defect frequencies). Finally
    ``(x - mean) / std`` when mean/std are given (length = n_features).
    """

    kind: Literal["signal"] = "signal"
    waveform: str = "vibration"
    window_samples: int = Field(gt=0)
    sample_rate_hz: float = Field(gt=0)
    n_bands: int = Field(default=64, ge=0)  # 0: no bands (e.g. condition features only)
    f_max_hz: float | None = None  # default: Nyquist
    log_eps: float = 1e-6
    time_features: bool = True
    scalars: list[str] = []
    condition: ConditionFeatures | None = None  # absent in packages made before it: features unchanged
    mean: list[float] | None = None
    std: list[float] | None = None

    @field_validator("window_samples")
    @classmethod
    def _window_bounded(cls, v: int) -> int:
        if v > MAX_WINDOW_SAMPLES:
            raise ValueError(
                f"is {v}: at most {MAX_WINDOW_SAMPLES:,} samples (each window is buffered and transformed whole)"
            )
        return v

    @field_validator("f_max_hz", "log_eps")
    @classmethod
    def _positive(cls, v: float | None, info: ValidationInfo) -> float | None:
        # a negative band edge or log offset made every window's features NaN: every window failed at the
        # engine, after the golden set (which holds features, not windows) had passed
        if v is not None and v <= 0 and not (info.field_name == "f_max_hz" and v == 0):
            raise ValueError(f"is {v}: must be > 0 (every window's features would be NaN)")
        return v

    @field_validator("n_bands")
    @classmethod
    def _bands_bounded(cls, v: int) -> int:
        if v > MAX_BANDS:
            raise ValueError(f"is {v}: at most {MAX_BANDS:,} spectrum bands")
        return v

    @property
    def n_features(self) -> int:
        return (
            self.n_bands
            + (4 if self.time_features else 0)
            + len(self.scalars)
            + (len(self.condition.names) if self.condition else 0)
        )

    @model_validator(mode="after")
    def _check_norm(self) -> SignalPreprocessing:
        if self.n_features == 0:
            raise ValueError("no features: set n_bands > 0, time_features, scalars or condition")
        if self.condition is not None and self.window_samples > MAX_CONDITION_WINDOW_SAMPLES:
            raise ValueError(
                f"window_samples {self.window_samples} with condition features: at most "
                f"{MAX_CONDITION_WINDOW_SAMPLES:,} (their speed search takes ~1.8 KB a sample per window)"
            )
        for name in ("mean", "std"):
            v = getattr(self, name)
            if v is not None and len(v) != self.n_features:
                raise ValueError(f"{name} has {len(v)} values, expected n_features={self.n_features}")
        if self.std is not None and min(self.std) <= 0:
            raise ValueError("std: every value must be > 0 (the features are divided by it)")
        return self


Preprocessing = Annotated[ImagePreprocessing | SignalPreprocessing, Field(discriminator="kind")]


# Where a package is built, the golden check must be able to fail: ``golden.atol`` (and each
# ``output_atol``) at most 1000, on the output's own scale (trainers write 1e-3 for probabilities and
# 2e-3 x the threshold for anomaly scores, distances of order 1-100: 1000 is a threshold of 500,000), and
# ``rtol`` below 1. 1e30 was accepted and passed every output. Checked only with
# ``context={BUILDING: True}`` (``package.build_package``): readers leave signed packages as they were.
BUILDING = "building"
BUILD_CONTEXT = {BUILDING: True}
MAX_GOLDEN_ATOL = 1000.0
MAX_GOLDEN_RTOL = 1.0


def _building(info: ValidationInfo) -> bool:
    # never where a package is read: a package signed before the bound, already on a gateway, is
    # verified at every agent start and must stay readable (a bound at read time moved such packages
    # to .rejected/ at an agent upgrade, a manifest contract change without a version bump)
    return isinstance(info.context, dict) and bool(info.context.get(BUILDING))


def _digits(v: float) -> str:
    """``v`` in 12 digits, or in all it takes where 12 would show the bound it is just over (1000.0000000000002 read
    'is 1000: at most 1000')."""
    short = f"{v:.12g}"
    return short if float(short) == v else repr(float(v))


def _atol_problem(v: float) -> str | None:
    if v > MAX_GOLDEN_ATOL:
        return (
            f"is {_digits(v)}: at most {MAX_GOLDEN_ATOL:g} where a package is built (a tolerance this wide "
            "passes any output, so the golden check could never fail)"
        )
    return None


def _rtol_problem(v: float) -> str | None:
    if v >= MAX_GOLDEN_RTOL:
        return (
            f"is {_digits(v)}: must be below {MAX_GOLDEN_RTOL:g} where a package is built (a relative tolerance "
            "of 1 or more passes an output of 0 for any expected value, so the golden check could never fail)"
        )
    return None


def _golden_atol(v: float, info: ValidationInfo) -> float:
    if _building(info) and (why := _atol_problem(v)) is not None:
        raise ValueError(why)
    return v


def _golden_rtol(v: float, info: ValidationInfo) -> float:
    if _building(info) and (why := _rtol_problem(v)) is not None:
        raise ValueError(why)
    return v


def golden_tolerance_problem(golden: Golden, outputs: list[OutputSpec] | None = None) -> str | None:
    """``golden.rtol is 1e+308: ...``: the first golden tolerance a build refuses (one so wide that the golden check
    can never fail), or None. Readers take such a package (one signed before the bound stays readable where it is
    installed); the agent refuses to serve it, at its load (``edge_agent.models.select``). An atol past the bound
    below the threshold of each output it holds (``outputs``, each with one) is on their own scale, a check that can
    fail, and is no problem: an anomaly score's 2e-3 of a threshold of 1.07e6 (atol 2138), which the trainers wrote
    before they capped it at the bound, in packages gateways serve."""
    scale = {o.name: abs(o.threshold) for o in outputs or () if o.threshold is not None}
    held = [o.name for o in outputs or () if o.name not in golden.output_atol]  # those ``golden.atol`` holds

    def atol_problem(v: float, names: list[str]) -> str | None:
        on_scale = outputs is not None and all(v < scale.get(n, 0.0) for n in names)
        return None if on_scale else _atol_problem(v)

    for field, why in (
        ("golden.atol", atol_problem(golden.atol, held)),
        ("golden.rtol", _rtol_problem(golden.rtol)),
        *((f"golden.output_atol.{k}", atol_problem(a, [k])) for k, a in golden.output_atol.items()),
    ):
        if why is not None:
            return f"{field} {why}"
    return None


GoldenAtol = Annotated[float, AfterValidator(_non_negative), AfterValidator(_golden_atol)]
GoldenRtol = Annotated[float, AfterValidator(_non_negative), AfterValidator(_golden_rtol)]


class Golden(_Model):
    """Golden test: ``inputs`` and ``expected`` are .npz files inside the package, keyed by
    tensor name, batch-first; the engine must reproduce expected within atol + rtol*|expected|."""

    inputs: str = "golden/inputs.npz"
    expected: str = "golden/expected.npz"
    atol: GoldenAtol = 1e-3
    rtol: GoldenRtol = 1e-2
    # per-output atol where one output legitimately differs more between engines than the others
    # (an INT8 heat map vs the class scores); outputs not named here use ``atol``
    output_atol: dict[str, GoldenAtol] = {}

    @field_validator("inputs", "expected")
    @classmethod
    def _inside(cls, v: str) -> str:
        return check_relative_path(v)


class EngineCheck(_Model):
    engine: Literal["onnxruntime", "openvino"]
    version: str
    max_abs_diff: NonNegative  # largest deviation from expected on the golden inputs
    precision: str | None = None  # e.g. "f32" where OpenVINO's bf16 default was overridden
    form: Literal["int8", "fp32"] | None = None  # which model form was checked (None: the only one)
    cpu_flags: list[str] = []  # the build machine's relevant CPU features (INT8 arithmetic differs by CPU)


class Parity(_Model):
    """How far the INT8 form (``model.onnx``) may be from the FP32 reference outputs
    (``golden.expected``, made by the FP32 model) on the golden inputs, on any CPU.

    INT8 kernels differ by CPU: x86 without VNNI sums u8×s8 products in saturating 16-bit pairs,
    ARM and VNNI do not. The bounds are set at build time from the deviation measured there on
    every engine (``measured``), with headroom; an agent whose INT8 result breaks them serves the
    FP32 form instead. ``min_agreement``: the share of golden inputs whose class (argmax) and
    verdict (at the output's threshold) must match the FP32 reference."""

    output_atol: dict[str, NonNegative]
    min_agreement: float = Field(default=1.0, ge=0, le=1)
    measured: dict[str, NonNegative] = {}
    headroom: NonNegative | None = None  # output_atol = max(headroom x measured, floor)


class Quantization(_Model):
    scheme: str = "none"  # e.g. "int8-qdq-s8s8-per-channel-minmax", or "none" for FP32
    calibration_samples: int | None = None
    fp32_metric: Informative | None = None
    int8_metric: Informative | None = None
    metric_name: str | None = None
    accuracy_delta: Informative | None = None  # int8_metric - fp32_metric
    fp32_size_bytes: int | None = None
    int8_size_bytes: int | None = None
    speedup: Informative | None = None


class Provenance(_Model):
    dataset_digest: str | None = None
    trainer: str | None = None  # e.g. "cloud_trainer.vision 0.1.0"
    parent_version: str | None = None
    seed: int | None = None
    metrics: dict[str, Informative] = {}
    onnx_opset: int | None = None  # of the exported graph
    dynamic_batch: bool | None = None  # the batch dimension is symbolic
    notes: str | None = None


class StatRange(_Model):
    """One statistic of the training inputs: its quantiles and mean/std over the training images."""

    p01: float
    p50: float
    p99: float
    mean: float
    std: float = Field(ge=0)


class InputStats(_Model):
    """Statistics of the training inputs (raw frames, before the model's preprocessing), computed at
    build time by ``model_packager.inputstats``. The agent calls a frame far outside them ``UNSURE``
    (blurred, over/under-exposed, wrong scene, camera moved) rather than OK or NG. ``scene``: the
    mean of the training images' small grey thumbnails (``thumb`` x ``thumb``, zero-mean unit-norm),
    and ``scene_distance`` the distribution of their distances to it."""

    count: int = Field(gt=0)
    brightness: StatRange  # mean grey level, 0..255
    contrast: StatRange  # std of grey levels
    sharpness: StatRange  # log10 of the variance of the Laplacian
    scene_distance: StatRange
    thumb: int = Field(default=16, gt=0, le=64)
    scene: list[float]

    @model_validator(mode="after")
    def _check_scene(self) -> InputStats:
        if len(self.scene) != self.thumb * self.thumb:
            raise ValueError(f"scene has {len(self.scene)} values, expected thumb x thumb = {self.thumb**2}")
        return self


class LifePrior(_Model):
    """What run-to-failure history says about remaining life (``model_packager.life`` fits and uses it):
    the times from onset to failure and the health index at failure of past runs, and how wrong each
    piece of evidence was on them (cross-validated), which sets their weights. Optional: without it
    the agent's remaining life is the health index's trend alone."""

    durations_s: list[float] = Field(min_length=1, description="onset-to-failure times of past runs (s)")
    failure_levels: list[float] = Field(
        min_length=1, description="health index (growth) at failure of past runs"
    )
    error_elapsed: float = Field(
        0.5,
        gt=0,
        description="RMS log-time error of the elapsed-time evidence (cross-validated on the history)",
    )
    error_trend: float = Field(1.0, gt=0, description="the same for the trend evidence")
    runs: int = Field(0, ge=0, description="runs the prior was fitted on")
    source: str = Field("", description="where it comes from (dataset digest, fleet, hand)")

    @model_validator(mode="after")
    def _check(self) -> LifePrior:
        if min(self.durations_s) <= 0 or min(self.failure_levels) <= 1.0:
            raise ValueError(
                "life_prior: durations_s must be > 0 and failure_levels > 1 (growth over the baseline)"
            )
        return self

    @property
    def trend_weight(self) -> float:
        """Weight of the trend evidence in log-time (inverse-variance)."""
        a, b = self.error_elapsed**2, self.error_trend**2
        return a / (a + b)

    @classmethod
    def from_normal(
        cls, mean_s: float, sd_s: float, failure_level: float = 10.0, source: str = "declared"
    ) -> LifePrior:
        """A prior declared as a mean and spread of onset-to-failure time (no history at hand)."""
        from statistics import NormalDist

        nd = NormalDist(mean_s, max(sd_s, 1e-6 * mean_s))
        durs = [max(nd.inv_cdf((i + 0.5) / 50), 0.02 * mean_s) for i in range(50)]
        return cls(
            durations_s=durs,
            failure_levels=[failure_level],
            error_elapsed=0.5,
            error_trend=2.0,
            source=source,
        )


class FileRole(enum.StrEnum):
    MODEL = "model"  # ONNX; the INT8 form when the package also carries MODEL_FP32
    MODEL_FP32 = "model_fp32"  # the FP32 reference form (schema 2), served where INT8 is off on the CPU
    OPENVINO_XML = "openvino_xml"
    OPENVINO_BIN = "openvino_bin"
    GOLDEN = "golden"
    REPORT = "report"
    OTHER = "other"


class FileEntry(_Model):
    path: str  # relative, forward slashes, no '..'
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    role: FileRole = FileRole.OTHER

    @field_validator("path")
    @classmethod
    def _inside(cls, v: str) -> str:
        return check_relative_path(v)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _lone_surrogate(value: Any, at: str = "") -> tuple[str, str, int] | None:
    """(where, the text, the surrogate's index in it) of the first text of ``value`` (keys too, at any depth)
    holding a lone surrogate."""
    if isinstance(value, str):
        m = None if value.isascii() else _SURROGATE.search(value)
        return None if m is None else (at, value, m.start())
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and not k.isascii() and (m := _SURROGATE.search(k)) is not None:
                return (f"{at} key" if at else "key", k, m.start())
            if (found := _lone_surrogate(v, f"{at}.{k}" if at else str(k))) is not None:
                return found
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            if (found := _lone_surrogate(v, f"{at}[{i}]")) is not None:
                return found
    return None


class Manifest(_Model):
    schema_version: int = SCHEMA_VERSION
    name: str
    version: str
    task: Task
    description: str | None = None
    created_at: str | None = None  # ISO 8601 UTC
    inputs: list[TensorSpec] = Field(min_length=1)
    outputs: list[OutputSpec] = Field(min_length=1)
    preprocessing: Preprocessing
    golden: Golden = Golden()
    engines: list[EngineCheck] = []
    quantization: Quantization = Quantization()
    provenance: Provenance = Provenance()
    parity: Parity | None = None  # with a MODEL_FP32 file: the INT8 form's bounds against it
    input_stats: InputStats | None = None  # image models: the training inputs' statistics (UNSURE)
    life_prior: LifePrior | None = None  # maintenance models: run-to-failure history for remaining life
    files: list[FileEntry] = []

    @model_validator(mode="before")
    @classmethod
    def _valid_text(cls, data: Any) -> Any:
        # A package's text goes into results, MQTT, the outbox, the cloud's stores and its own manifest.yaml. A lone
        # surrogate (a spec's "\ud800", half of a UTF-16 pair) is no character: UTF-8 has no form for it, and the
        # manifest written with it (as a "\uD800" escape) was signed, then refused by every verify (libyaml).
        found = _lone_surrogate(data)
        if found is not None:
            where, text, i = found
            raise PydanticCustomError(
                "lone_surrogate",
                "{where} {text} holds a lone surrogate at character {at} (half of a UTF-16 pair: no character, "
                "no UTF-8 form); write the character itself",
                {"where": where, "text": f"'{printable(text, 40)}'", "at": i + 1},
            )
        return data

    @field_validator("schema_version")
    @classmethod
    def _known_schema(cls, v: int) -> int:
        if v not in READABLE_SCHEMAS:
            raise ValueError(
                f"unknown manifest schema_version {v}; this build reads {list(READABLE_SCHEMAS)}"
            )
        return v

    @model_validator(mode="after")
    def _check_image_input(self) -> Manifest:
        pre = self.preprocessing
        if not isinstance(pre, ImagePreprocessing):
            return self
        dtype = self.inputs[0].dtype
        if dtype not in (DType.FLOAT32, DType.FLOAT16, DType.UINT8):
            raise ValueError(
                f"inputs[0] {self.inputs[0].name!r} is {dtype.value}: an image input is float32, "
                "float16 or uint8 (the pixels as they are)"
            )
        c = _channels(pre.color)
        if dtype is DType.UINT8 and (
            pre.scale != 1.0 or any(m != 0.0 for m in pre.mean[:c]) or any(v != 1.0 for v in pre.std[:c])
        ):
            raise ValueError(
                f"inputs[0] is uint8 (pixels as they are): preprocessing needs scale 1, mean 0, std 1, "
                f"not {pre.scale:g}, {pre.mean[:c]}, {pre.std[:c]}"
            )
        # the tensor a pixel of 0 or 255 makes, (pixel * scale - mean) / std, must fit the input's float type:
        # a std of 1e-300 (or a scale of 1e300) made every frame's tensor Inf or NaN, and every frame an error
        # said to be the model's ("produced NaN/Inf"), the golden inputs (tensors) passing at install
        top = _FLOAT_MAX.get(dtype, math.inf)  # uint8: checked above
        for i in range(c):
            mean, std = pre.mean[i], pre.std[i]
            worst = max(abs(px * pre.scale - mean) / std for px in (0.0, 255.0))
            if not worst < top:
                raise ValueError(
                    f"preprocessing scale {pre.scale:g}, mean {mean:g} and std {std:g} make a pixel of channel {i} "
                    f"{worst:.3g}, past {dtype.value}'s largest value {top:.5g} (inputs[0]): every frame would "
                    "be Inf or NaN to the model"
                )
        return self

    @model_validator(mode="after")
    def _files_listed_once(self) -> Manifest:
        # a path listed twice was checked against its last entry when the package was opened and
        # against every entry when the installed folder was checked again: installed, then refused
        # as "altered" at the next start
        # A name that differs from another only by case or Unicode normalisation ('Model.onnx', 'café' written
        # as NFD) is one file on a disk that ignores either (FAT/exFAT media, a case-folding ext4 folder, macOS,
        # ZFS with normalization): extracting the second wrote over the first after both had been hashed, and the
        # model served was the other file's bytes
        # '.package-digest' beside the files is the agent's own record of the package it installed: the agent
        # wrote over a listed file of that name, and the next start set the package aside as altered
        seen: dict[str, str] = {}
        exact: set[str] = set()
        for i, f in enumerate(self.files):
            if f.path in exact:
                raise ValueError(f"files[{i}].path {f.path!r} is listed twice: list each file once")
            exact.add(f.path)
            if f.path.casefold() in RESERVED_PATHS:
                raise ValueError(
                    f"files[{i}].path {f.path!r} is reserved for the agent's own record; rename it"
                )
            same = unicodedata.normalize("NFC", f.path).casefold()
            if same in seen:
                raise ValueError(
                    f"files[{i}].path {f.path!r} differs from {seen[same]!r} only by case or Unicode "
                    "normalisation: one file on many disks; give files names that differ otherwise"
                )
            seen[same] = f.path
        return self

    @model_validator(mode="after")
    def _check_forms(self) -> Manifest:
        fp32 = self.file(FileRole.MODEL_FP32)
        if fp32 is not None and self.parity is None:
            raise ValueError("a package carrying a model_fp32 file needs 'parity' (the INT8 form's bounds)")
        if fp32 is not None and self.schema_version < 2:
            raise ValueError("a model_fp32 file needs schema_version 2")
        if self.parity is not None:
            names = {o.name for o in self.outputs}
            unknown = sorted(set(self.parity.output_atol) - names)
            if unknown:
                raise ValueError(f"parity.output_atol names {unknown}, which are not outputs {sorted(names)}")
        return self

    @property
    def has_fp32(self) -> bool:
        return self.file(FileRole.MODEL_FP32) is not None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not PACKAGE_NAME_RE.fullmatch(v):
            raise ValueError("name must be lowercase letters, digits, '-' or '_', at most 63 characters")
        return v

    @field_validator("version")
    @classmethod
    def _version(cls, v: str, info: ValidationInfo) -> str:
        if not is_version(v):
            raise ValueError("version must be semantic, e.g. 1.2.0")
        # where a package is built only: one of such a version built before stays readable where it is installed
        if _building(info) and (why := build_version_problem(v)) is not None:
            raise ValueError(why)
        return v

    @property
    def package_id(self) -> str:
        return f"{self.name}-{self.version}"

    def file(self, role: FileRole) -> FileEntry | None:
        return next((f for f in self.files if f.role is role), None)

    def output(self, role: OutputRole) -> OutputSpec | None:
        return next((o for o in self.outputs if o.role is role), None)
