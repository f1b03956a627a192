"""What a trainer family is: the stage hooks ``cloud_trainer.train.pipeline`` calls.

The pipeline (train → export → INT8 → evaluate → gate → package → publish) is the same for every
family; what differs (the dataset reader, the model and its training, the metrics, the threshold,
the gate's own checks, the plots and the model's inputs and outputs in the manifest) is a method
of the family's class, so the pipeline holds no ``if family == ...``. A family that has a build of
its own (the good-only anomaly family) lists only ``build`` in ``verbs`` and overrides
``build_command``. This module imports nothing heavy; a family's module must not import torch or
onnx at import either (its hooks do, when it trains): the CLI reads the table to build its choices.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

STAGE_VERBS = ("train", "quantize", "evaluate", "package", "publish", "build")


class StageError(RuntimeError):
    """A stage was run out of order or on a work folder from another build."""


@dataclass
class Evaluation:
    """A family's evaluation of the held-out test split, the gate's input."""

    metrics: dict  # form ("fp32", "int8", "int8_openvino") -> that form's metrics
    threshold: float  # the operating threshold the metrics were taken at; goes into the manifest
    extra: dict = field(default_factory=dict)  # the family's own report fields (operating point, ...)
    context: dict = field(default_factory=dict)  # what scoring the published version needs (e.g. mean life)


class TrainerFamily:
    """One trainer family. Subclasses set the class attributes and implement the hooks; each
    hook's docstring says when the pipeline calls it. ``s`` is always the build's
    ``pipeline.BuildSettings``."""

    name: ClassVar[str]  # the family's key in TRAINER_FAMILIES, as typed on the command line
    package_name: ClassVar[str]  # the registry name of its packages, e.g. "part-inspection"
    verbs: ClassVar[tuple[str, ...]] = STAGE_VERBS  # the `cloud-trainer` verbs that accept it
    default_epochs: ClassVar[int]  # --epochs when not given (0: the family has no epochs)
    patch_default_epochs: ClassVar[int] = (
        0  # a patch recipe's --epochs when not given (0: the family has none)
    )
    default_floors: ClassVar[dict[str, float]] = {}  # the gate's floors; --floor METRIC=VALUE overrides one
    primary: ClassVar[list[str]] = []  # metrics held against FP32 (int8_margin) and the published version
    floor_hint: ClassVar[str] = ""  # appended to the list of metrics named in an unknown --floor's error
    # options of `cloud-trainer build` only this family reads: another family's build refuses them, never ignores
    own_options: ClassVar[tuple[str, ...]] = ()
    INPUT: ClassVar[str]  # the model's input name
    OUTPUTS: ClassVar[list[str]]  # its output names, in order

    # ---- a family with a build of its own ----

    def build_command(self, a: Any, s: Any) -> int | None:
        """``cloud-trainer build <family>`` with the parsed arguments ``a`` and their settings ``s``:
        the exit code, or None to run the shared stage pipeline (every family listing the stage verbs)."""
        return None

    # ---- train ----

    def preprocessing(self, s: Any) -> Any | None:
        """The input geometry chosen from the settings before the dataset is read (a manifest
        preprocessing model), or None when the family derives it from the data while training."""
        return None

    def load_dataset(self, folder: Path, preprocessing: dict | None = None) -> Any:
        """The dataset in ``folder`` (with a ``digest``); ``preprocessing`` is the manifest's (as a dict),
        at ``train`` from ``preprocessing()``, later from ``train.json``. Raise ``DatasetError``."""
        raise NotImplementedError

    def train(self, s: Any, ds: Any, pre: Any | None, log: Callable[[str], None]) -> dict:
        """Train on ``ds``: {"model" (a torch module), "pre" (the manifest preprocessing), "x", "y",
        "split" (train, val, test row indices), "history"} and whatever ``train_arrays`` saves."""
        raise NotImplementedError

    def train_arrays(self, out: dict) -> dict:
        """Arrays of ``train``'s output saved into ``train.npz`` beside x, y and the split, for the
        later stages (e.g. health and remaining life)."""
        return {}

    def input_stats(self, ds: Any, rows: Any) -> dict | None:
        """Statistics of the training inputs for the manifest (the agent's UNSURE check), or None."""
        return None

    def input_stats_local(self, ds: Any, rows: Any) -> dict | None:
        """The training inputs' local statistics (``model_packager.inputstats.LOCAL_FILE``), or None."""
        return None

    def train_meta(self, ds: Any, log: Callable[[str], None]) -> dict:
        """More of ``train.json`` learned from the dataset beside the model, carried into the manifest when
        the package is made (e.g. the maintenance family's remaining-life prior)."""
        return {}

    # ---- evaluate and gate ----

    def evaluate(
        self, s: Any, meta: dict, a: dict, outs: dict, fp32: Path, int8: Path, dataset: Callable[[], Any]
    ) -> Evaluation:
        """Metrics of every form on the test split. ``meta`` is ``train.json``, ``a`` the arrays of
        ``train.npz``, ``outs`` each form's outputs on ``x[test]``; ``dataset()`` reads the dataset
        again (once per evaluation, digest checked) for a family that needs more than the arrays."""
        raise NotImplementedError

    def gate_reasons(self, cand: dict) -> list[str]:
        """The family's own gate checks on the candidate's (INT8) metrics, beyond the floors, the INT8
        margin and the published version: one reason per failed check."""
        return []

    def incumbent_metrics(
        self, opened: Any, ds: Any, te: Any, y: Any, threshold_fallback: float, context: dict
    ) -> dict:
        """The published version (``opened``, a verified package) scored on this build's test rows
        ``te`` through its own preprocessing; ``context`` is the candidate's ``Evaluation.context``."""
        raise NotImplementedError

    # ---- report and package ----

    def labels(self, report: dict) -> list[str]:
        """The class names of the confusion matrix in the report."""
        raise NotImplementedError

    def plot_curve(self, path: Path, y: Any, out: dict, a: dict, te: Any) -> None:
        """The report's curve (``roc.png``) of the INT8 outputs ``out`` on the test rows ``te``."""
        raise NotImplementedError

    def package_io(self, meta: dict, n_features: int, threshold: float) -> tuple[list, list, str, str]:
        """The manifest's (inputs, outputs, task, name of the metric the quantization is judged on)."""
        raise NotImplementedError
