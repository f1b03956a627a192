"""Which engine and which form of a package a slot serves on *this* CPU: measured, not assumed.

A package may carry its model twice (manifest schema 2): INT8 (``model.onnx``) and its FP32
reference (``model.fp32.onnx``), with golden inputs, the FP32 outputs for them, and ``parity``
bounds for the INT8 form. INT8 arithmetic differs by CPU (x86 without VNNI sums u8×s8 products in
saturating 16-bit pairs; see ``model_packager.cpu``), so a package that was right where it was
built can be wrong on a gateway. Before a slot serves anything, every candidate (each engine the
config allows × each form the package carries) runs the golden inputs one at a time, as the agent
runs them:

- the FP32 form (or the only form of a one-form FP32 package), on every engine and precision, must reproduce
  the expected outputs within the golden tolerance *and* give the verdict they give on every golden item
  (``golden.verdict_problems``: the OK/NG side of each threshold and each classifier's label, as
  ``preprocess.interpret`` reads them; per tile for a tiled model). Values within the tolerance still
  flip an item near the threshold: the anomaly family's golden items sit 2 % from it;
- the form of an INT8-only package (no FP32 form; its golden outputs are the build machine's INT8 run) is
  held as an INT8 form is held to FP32 (``golden.int8_only_problems``): the verdict and labels of every golden
  item except a verdict near its threshold and a label near a tie of its top two values (``golden.int8_exempt``:
  within ``golden.INT8_NEAR_THRESHOLD`` of the span of that output's golden values, a lone outlying value left
  out of the span), which another CPU's INT8 kernels may put on either side (those that flip are said in the
  trial's ``notes`` and the summary; many flipping is refused), the spread of those outputs (a collapse to a constant keeps the verdicts of a
  one-sided golden set), signed ``parity`` bounds if any, and outputs without a verdict by what another CPU's INT8 noise may do
  to them (``golden.aux_problems``: a value per item within 5 % of its scale, a map not moved wholesale,
  collapsed, or its hot spot elsewhere);
- the INT8 form must stay within the parity bounds of the FP32 outputs and agree with their
  class and verdict on the share of golden inputs its ``parity.min_agreement`` sets (every one by
  default), the first item it disagrees on named with both verdicts;
- either way, each golden item's outputs must read as the manifest declares them (one label per
  class value, every declared output present): ``preprocess.interpret`` runs on them as on a frame.

Each golden run has ``GOLDEN_RUN_TIMEOUT_S``: a model that does not finish one golden input in it (a
``Loop`` of a huge trip count) fails its trial, and no other candidate is tried (ONNX Runtime, which can
stop such a run, is tried first; OpenVINO cannot stop one, and leaves it to end in the background).
Each candidate that passes is timed (median of batch-1 runs); the first that passes, in the order ONNX Runtime before
OpenVINO and INT8 before FP32 on each, serves unless another is faster by more than ``PREFER_MARGIN`` (15 %)
and by at least ``PREFER_MIN_SAVING_MS`` (0.1 ms) an item, so that noise in the timings does not give gateways of one CPU kind different forms of a package. An INT8 form
that fails its parity check never serves: the outcome names the CPU, the deviation and the form
chosen instead, and the slot reports it (event ``int8_deviation``, ``/status``, the heartbeat).
"""

from __future__ import annotations

import re
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

from edge_agent.engines import (
    Engine,
    EngineError,
    RunTimeout,
    candidate_engines,
    create_engine,
    openvino_file,
)
from edge_agent.models.config import FormChoice, ModelConfig
from model_packager import Manifest, ManifestError, OpenedPackage
from model_packager.cpu import cpu_flags, int8_path
from model_packager.golden import (
    exempt_flips_said,
    golden_problems,
    interpretation_problems,
    load_npz,
    parity,
    parity_problems,
    verdict_flips,
    verdict_problems,
)
from model_packager.manifest import golden_tolerance_problem
from model_packager.package import OV_XML, golden_notes
from model_packager.text import one_line

TIME_BUDGET_S = 0.25  # per passing candidate, for its latency measurement
# One golden input's run, at most: a model past it is refused (one that never ends would hold the swap for good)
GOLDEN_RUN_TIMEOUT_S = 60.0
SWAP_YIELD = 1.0  # during a swap, idle as long as each timed run took: the serving model keeps a core
# one inference's bound is at least this many times the chosen candidate's measured p50: a model that is
# slow on this gateway (seconds an item) is not failed item after item by inference_timeout_s's default
SLOW_MODEL_FACTOR = 20.0
MAX_TIMED_RUNS = 50
# another candidate serves instead of the first that passes (ONNX Runtime before OpenVINO, INT8 before FP32) only
# when it is faster by more than this share of the first's median: less is the timing runs' noise
PREFER_MARGIN = 0.15
# ...and saves at least this much an item: on sub-millisecond models a core shared with other work moves the
# timing runs' medians by more than the margin (0.22 against 0.18 ms, the same package on two agents of one
# demo), and 0.1 ms an item is 0.3 % of a core at 30 items a second: nothing worth a different form
PREFER_MIN_SAVING_MS = 0.1
# how a candidate served at f32 after its run at this CPU's reduced default precision (bf16 on AVX-512 BF16 and AMX
# CPUs, f16 on ARM) missed the golden check starts its reason: AT_F32.format(precision)
AT_F32 = "at f32: at this CPU's default precision ({}) "
_AT_F32 = re.compile(r"at f32: at this CPU's default precision \((\w+)\) ")


@dataclass
class Trial:
    engine: str
    form: str
    ok: bool
    reason: str | None = None
    deviation: float | None = None  # largest deviation from the expected (FP32) outputs
    agreement: float | None = None  # INT8: share of golden inputs whose class/verdict match FP32
    p50_ms: float | None = None
    loaded: bool = True
    # what the check let through and says: an INT8-only form's golden items near a threshold or a tie that
    # flipped on this CPU (``golden.exempt_flips_said``)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Selection:
    engine: Engine
    trials: list[Trial]
    cpu: str = field(default_factory=lambda: int8_path())
    cpu_flags: tuple[str, ...] = field(default_factory=cpu_flags)
    # the ways the package's golden set cannot judge a form (``golden.coverage_notes``), from its signed
    # expected outputs at load: the check above is only as good as its items
    golden_notes: list[str] = field(default_factory=list)
    # candidates that did not load while another serves (``engine: auto``), each said in one line: a package's
    # OpenVINO IR this OpenVINO cannot read is served on ONNX Runtime, said at every load, never silently
    not_loaded: list[str] = field(default_factory=list)
    # a package installed before this agent refused its golden tolerances (``tolerance_unchecked``), served where
    # it was installed: what the golden check cannot check, said at each load
    unchecked: str | None = None

    @property
    def chosen(self) -> Trial:
        return next(t for t in self.trials if t.engine == self.engine.name and t.form == self.engine.form)

    @property
    def int8_off(self) -> list[Trial]:
        """INT8 candidates that loaded but broke their parity bounds on this CPU."""
        return [t for t in self.trials if t.form == "int8" and t.loaded and not t.ok]

    def summary(self) -> str:
        c = self.chosen
        why = ""
        if self.int8_off:
            first_off = self.int8_off[0]
            where = (
                f"on {first_off.engine}: " if c.form == "int8" else ""
            )  # an INT8-only package: which engine
            why = f" (INT8 off on this CPU: {where}{first_off.reason})"
        elif len([t for t in self.trials if t.ok]) > 1:
            first = next(t for t in self.trials if t.ok)
            how = (
                f"none faster by over {PREFER_MARGIN:.0%} and {PREFER_MIN_SAVING_MS} ms than the first in order"
                if c is first
                else f"faster by over {PREFER_MARGIN:.0%} and {PREFER_MIN_SAVING_MS} ms than {first.form}/{first.engine}"
            )
            timed = ", ".join(
                f"{t.form}/{t.engine} {t.p50_ms:.2f} ms" for t in self.trials if t.ok and t.p50_ms is not None
            )
            why = f" ({timed}: {how})"
        # what kept the others from serving (INT8's said above): the golden item and both verdicts where a
        # verdict flipped, so that a line engineer sees why this form serves and not that one
        off = [
            f"{t.form} on {t.engine}: {t.reason}"
            for t in self.trials
            if t.loaded and not t.ok and t.form != "int8"
        ]
        if c.reason and (at_f32 := _AT_F32.match(c.reason)):
            reduced = at_f32.group(1)
            why = f" at f32 ({reduced}, this CPU's default, missed the golden check){why}"
            off.insert(0, f"{c.form} on {c.engine} in {reduced}: {c.reason[at_f32.end() :]}")
        elif c.engine == "openvino" and getattr(self.engine, "reduced_precision", False):
            # openvino_f32: false, and the CPU's default met the golden check: said, a verdict near a threshold
            # may differ from the package's at f32
            why = f" in {getattr(self.engine, 'precision', '?')} (this CPU's default: openvino_f32 is false){why}"
        if off:
            why += "; refused here: " + "; ".join(off)
        if c.notes:
            why += "; " + "; ".join(c.notes)
        if self.not_loaded:
            why += "; not loaded here: " + "; ".join(self.not_loaded)
        return f"{c.form} on {c.engine}{why}"

    def to_dict(self) -> dict:
        return {
            "engine": self.engine.name,
            "form": self.engine.form,
            "summary": self.summary(),
            "cpu": self.cpu,
            "cpu_flags": list(self.cpu_flags),
            "trials": [t.to_dict() for t in self.trials],
        }


ROWS_FED = "the model gives another number of rows than it is fed"  # the package's defect, on every CPU


class NothingPasses(RuntimeError):
    """Every candidate that loaded failed its golden or parity check on this CPU."""

    def __init__(self, message: str, trials: list[Trial]) -> None:
        super().__init__(message)
        self.trials = trials

    @property
    def package_defect(self) -> bool:
        """Every candidate that loaded was refused for a defect of the package's model (its rows), the same on
        every CPU: not a deviation of this one."""
        loaded = [t for t in self.trials if t.loaded]
        return bool(loaded) and all(ROWS_FED in (t.reason or "") for t in loaded)


def _forms(opened: OpenedPackage, choice: FormChoice) -> list[str | None]:
    if opened.fp32_model_path is None:
        if choice is FormChoice.FP32 and opened.manifest.quantization.scheme.startswith("int8"):
            raise EngineError(
                f"package {opened.manifest.package_id} carries no FP32 form (form: fp32 in the "
                "config); use form: auto or int8"
            )
        return [None]
    forms: dict[FormChoice, list[str | None]] = {
        FormChoice.AUTO: ["int8", "fp32"],
        FormChoice.INT8: ["int8"],
        FormChoice.FP32: ["fp32"],
    }
    return forms[choice]


def _item_rows(m, n: int) -> int:
    """Batch rows of one item as the agent runs it: a tiled image model's frame is one batch of its
    tiles. Golden inputs of whole frames (their count a multiple of the tiles) run a frame at a time: a
    model may read a tile's position from its row (the anomaly family's tile positions), and a tile run
    alone is always at the first. Other golden sets, one row at a time as before."""
    pre = m.preprocessing
    t = getattr(pre, "n_tiles", 1) if getattr(pre, "tiles", None) else 1
    return t if t > 1 and n % t == 0 else 1


def _run_golden(engine: Engine, inputs: dict[str, np.ndarray], rows: int = 1) -> dict[str, np.ndarray]:
    got: dict[str, list] = {}
    n = next(iter(inputs.values())).shape[0]
    for i in range(0, n, rows):  # one item at a time: the shape the agent runs
        one = {k: v[i : i + rows] for k, v in inputs.items()}
        for k, v in engine.run_bounded(one, GOLDEN_RUN_TIMEOUT_S).items():
            got.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in got.items()}


def _p50_ms(
    engine: Engine, one: dict[str, np.ndarray], budget_s: float = TIME_BUDGET_S, *, yield_share: float = 0.0
) -> float:
    """Median latency of batch-1 runs. ``yield_share``: after each run, leave the CPU idle for that
    share of the run's time (a swap: the serving threads keep their cores; each run is still timed
    alone, so the medians compare).

    Runs as the agent's (``engine.run``), bounded as the golden items were (``GOLDEN_RUN_TIMEOUT_S``), not by
    ``inference_timeout_s``: a model that takes longer than that an item on this CPU (a slow gateway) has passed
    its golden check, and its bound is raised from this p50 (``SLOW_MODEL_FACTOR``); timed under the configured
    bound, its timing run was given up and the whole selection failed."""
    bound = engine.timeout_s
    engine.timeout_s = max(bound, GOLDEN_RUN_TIMEOUT_S)
    try:
        for _ in range(3):
            engine.run(one)
        ts: list[float] = []
        end = time.perf_counter() + budget_s * (1 + yield_share)
        while len(ts) < MAX_TIMED_RUNS and (len(ts) < 5 or time.perf_counter() < end):
            t = time.perf_counter()
            engine.run(one)
            ts.append(time.perf_counter() - t)
            if yield_share:
                time.sleep(ts[-1] * yield_share)
    finally:
        engine.timeout_s = bound
    return statistics.median(ts) * 1000  # (np.median imports numpy.ma: 1.2 MB for one median)


def check(
    engine: Engine, opened: OpenedPackage, inputs: dict[str, np.ndarray], expected: dict[str, np.ndarray]
) -> Trial:
    """Run the golden inputs through ``engine`` and hold the result to its form's bounds."""
    m = opened.manifest
    n = next(iter(inputs.values())).shape[0]
    rows = _item_rows(m, n)
    got = _run_golden(engine, inputs, rows)
    if fed := [f"output {k!r} gives {v.shape[0]}" for k, v in got.items() if v.shape[0] != n]:
        # a model giving each row twice (or one row for several) was held to the golden values and said to
        # deviate "on this CPU": its batch size is the model's, on every CPU
        return Trial(
            engine.name,
            engine.form,
            False,
            f"package {m.package_id}: {ROWS_FED}: "
            f"{', '.join(fed)} rows for the {n} golden rows fed {rows} at a time; each output needs a row per "
            "row fed on its first axis",
        )
    if engine.form == "int8" and opened.fp32_model_path is not None:
        dev, agree = parity(m, expected, got)
        bad = parity_problems(m, dev, agree)
        if m.parity is None:  # no bounds signed: its verdicts must all be the FP32 reference's
            bad += verdict_problems(m, expected, got, rows)
        elif agree + 1e-9 < m.parity.min_agreement:
            bad += verdict_flips(m, expected, got, rows)[:1]  # the first item it disagrees on, both verdicts
        worst = max(dev.values(), default=0.0)
        bad = bad or _unreadable(m, got)
        return Trial(engine.name, "int8", not bad, "; ".join(bad) or None, worst, agree)
    # every form gives the verdicts the package was signed with, on every golden item: values within the
    # tolerance still flip an item near the threshold (one placed 2 % from it, for a form 2 % off); an
    # INT8-only package's form, whose golden outputs are the build machine's INT8 run, by its verdicts
    worst, bad = golden_problems(m, expected, got, rows)
    bad = bad or _unreadable(m, got)
    agreement = parity(m, expected, got)[1] if engine.form == "int8" else None
    trial = Trial(engine.name, engine.form, not bad, "; ".join(bad) or None, worst, agreement)
    if m.quantization.scheme.startswith("int8") and not m.has_fp32:
        trial.notes = exempt_flips_said(m, expected, got, rows)
    return trial


def _unreadable(m, got: dict[str, np.ndarray]) -> list[str]:
    """The engine's golden outputs read as every inference's will be (labels, output names, roles): a
    manifest that contradicts its model fails here, not on every frame after the switch."""
    return [f"package {m.package_id}: {p}" for p in interpretation_problems(m, got)]


def _at_f32(
    engine: Engine,
    trial: Trial,
    opened: OpenedPackage,
    cfg: ModelConfig,
    form: str | None,
    inputs: dict[str, np.ndarray],
    expected: dict[str, np.ndarray],
    isolated: bool,
) -> tuple[Engine, Trial]:
    """OpenVINO ran the model's float layers at this CPU's reduced default precision (bf16 on AVX-512 BF16 and
    AMX CPUs, f16 on ARM) and missed the golden check: the same candidate at f32, which the package's tolerance
    was set for. Passing, it serves at f32 and its trial says why (naming the precision that missed); failing,
    the reduced-precision outcome is kept and named."""
    engine.close()
    reduced, precision = trial.reason, getattr(engine, "precision", "reduced")
    try:
        engine = create_engine(
            "openvino", opened, cfg.model_copy(update={"openvino_f32": True}), form, isolated=isolated
        )
        again = check(engine, opened, inputs, expected)
    except Exception as exc:  # (an EngineError or a run that fails at f32: the first outcome stands)
        again = Trial("openvino", trial.form, False, f"at f32: {one_line(exc)}")
    if again.ok:
        again.reason = f"{AT_F32.format(precision)}{reduced}"
        return engine, again
    trial.reason = f"at this CPU's default precision ({precision}): {reduced}; at f32: {again.reason}"
    return engine, trial


def _choose(passing: list[tuple[Trial, Engine]]) -> tuple[Trial, Engine]:
    """The candidate that serves: the first in the order tried (ONNX Runtime, which can stop a run, before
    OpenVINO; INT8, the form the package was gated to serve, before FP32) unless another is faster by more
    than ``PREFER_MARGIN`` and by at least ``PREFER_MIN_SAVING_MS`` an item. Candidates within the margin differ by the timing runs' noise: picking the
    fastest among them gave two gateways of one CPU kind, or one gateway from one start to the next, another
    form of the same package (0.20 vs 0.21 ms), so slightly different scores for the same part."""
    first = passing[0]
    fastest = min(passing, key=lambda p: p[0].p50_ms or 0.0)
    fast, then = fastest[0].p50_ms or 0.0, first[0].p50_ms or 0.0
    if fast < (1.0 - PREFER_MARGIN) * then and then - fast >= PREFER_MIN_SAVING_MS:
        return fastest
    return first


def _tolerance_said(manifest: Manifest, then: str) -> str | None:
    """``manifest golden.rtol is 1e+308: ...; {then} (build it again: ...)`` where ``manifest`` has golden tolerances
    a build refuses (``golden_tolerance_problem``), else None."""
    why = golden_tolerance_problem(manifest.golden, manifest.outputs)
    if why is None:
        return None
    return f"manifest {why}; {then} (build it again: model-packager build refuses it)"


def tolerance_refusal(manifest: Manifest) -> str | None:
    """Why the agent installs no package of ``manifest``, checked at its load (``select``: at a swap, a new
    install) and by `edge-agent validate`: golden tolerances a build refuses; None where it may."""
    said = _tolerance_said(
        manifest, "not served: nothing of the model would be checked on this CPU before it judges parts"
    )
    return None if said is None else f"package {manifest.package_id}: {said}"


def tolerance_unchecked(manifest: Manifest) -> str | None:
    """``tolerance_refusal`` for a package already installed where a start finds it (one installed before this agent
    refused such tolerances): served, as it was, in these words (each load's WARNING); None where its tolerances
    pass. Set aside, its slot failed at an agent's upgrade where nothing else was installed."""
    return _tolerance_said(
        manifest,
        "served as installed before this agent refused it, its golden check unable to fail; a new install of it, "
        "or a swap to it but the way back to it from the version that replaced it, is refused",
    )


def select(
    opened: OpenedPackage, cfg: ModelConfig, *, isolated: bool = False, installed: bool = False
) -> Selection:
    """Load, check and time every candidate; keep the first that passes unless another is clearly faster
    (``_choose``). Raises ``EngineError``
    when no candidate loads and ``NothingPasses`` when none that loaded passes its check.
    ``isolated``: another model serves meanwhile (see ``create_engine``). A package whose golden tolerances are
    so wide that its golden check could never fail (``golden_tolerance_problem``; a build refuses them, a registry
    published such packages before it refused them too) is refused before any engine loads: ``ManifestError``;
    but for one a start finds ``installed``, served as it was (``Selection.unchecked``, said at each load)."""
    unchecked = tolerance_unchecked(opened.manifest) if installed else None
    if unchecked is None and (why := tolerance_refusal(opened.manifest)) is not None:
        raise ManifestError(why)
    inputs = load_npz(opened.golden_inputs)
    expected = load_npz(opened.golden_expected)
    one = {k: v[:1] for k, v in inputs.items()}
    trials: list[Trial] = []
    passing: list[tuple[Trial, Engine]] = []
    load_errors: list[str] = []
    candidates = [(form, name) for form in _forms(opened, cfg.form) for name in candidate_engines(cfg.engine)]
    # a lone candidate has nothing to be compared with: a few timed runs report its latency, and the
    # time budget (part of every start, before the first result) is not spent
    budget_s = TIME_BUDGET_S if len(candidates) > 1 else 0.0
    # ONNX Runtime first: it can stop a run that does not end (RunTimeout), OpenVINO cannot, and once one
    # candidate timed out no other is tried (the same graph would not end on it either)
    candidates.sort(key=lambda c: c[1] != "onnxruntime")
    timed_out: RunTimeout | None = None
    unloaded: list[str] = []  # candidates that did not load, said where another serves
    for form, name in candidates:
        if timed_out is not None:
            trials.append(Trial(name, form or "?", False, f"not tried: {timed_out}", loaded=False))
            continue
        try:
            engine = create_engine(name, opened, cfg, form, isolated=isolated)
        except EngineError as exc:
            load_errors.append(str(exc))
            trials.append(Trial(name, form or "?", False, str(exc), loaded=False))
            # (OpenVINO opens the package's IR for its INT8 form, where it carries one: ``openvino_file``)
            own_ir = name == "openvino" and openvino_file(opened, form) == str(opened.openvino_xml)
            ir = f"the package's OpenVINO IR ({OV_XML}) " if own_ir else ""
            unloaded.append(f"{form + ' on ' if form else ''}{name}: {ir}did not load: {one_line(exc)}")
            continue
        try:
            trial = check(engine, opened, inputs, expected)
        except RunTimeout as exc:
            timed_out = exc
            trial = Trial(name, engine.form, False, f"golden run failed: {exc}")
        except Exception as exc:  # an engine that cannot run its own golden inputs is not fit
            trial = Trial(name, engine.form, False, f"golden run failed: {one_line(exc)}")
        if not trial.ok and trial.deviation is not None and getattr(engine, "reduced_precision", False):
            engine, trial = _at_f32(engine, trial, opened, cfg, form, inputs, expected, isolated)
        if trial.ok:
            trial.p50_ms = _p50_ms(engine, one, budget_s, yield_share=SWAP_YIELD if isolated else 0.0)
            passing.append((trial, engine))
        else:
            engine.close()
        trials.append(trial)
    if not passing:
        if load_errors and len(load_errors) == len(trials):
            raise EngineError("; ".join(load_errors))
        raise NothingPasses(
            "; ".join(f"{t.form} on {t.engine}: {t.reason}" for t in trials if t.loaded), trials
        )
    best_trial, best = _choose(passing)
    for _, e in passing:
        if e is not best:
            e.close()
    floor_s = SLOW_MODEL_FACTOR * (best_trial.p50_ms or 0.0) / 1000
    if floor_s > best.timeout_s:
        best.timeout_s = floor_s
    # what the golden set cannot judge, read from the outputs already loaded: no model run, no per-item cost
    return Selection(
        best,
        trials,
        golden_notes=golden_notes(opened, inputs, expected),
        not_loaded=unloaded,
        unchecked=unchecked,
    )
