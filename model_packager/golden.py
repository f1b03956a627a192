"""Model-side checks of a package: the ONNX graph against the manifest, golden runs on each engine.

``check_spec`` compares the manifest's inputs/outputs with the ONNX graph (names, dtypes, ranks,
fixed dimensions; a symbolic dimension on either side matches any size) and refuses a model that
keeps tensors in another file (ONNX external data). ``run_engine`` runs a
model on ONNX Runtime or OpenVINO (imported lazily); ``compare`` measures the largest deviation
from the expected outputs and whether it is within ``atol + rtol * |expected|`` (NaN matches NaN,
so that a golden file of a model that emits NaN still verifies; the agent's health check is what
rejects such a model). ``verdict_problems`` holds a run to the verdicts of the expected outputs on
every golden item (and tile), read with the package's own interpretation: values within the tolerance
still flip an item near the threshold, so build, ``verify --run`` and the agent's check at load refuse
a form that does. The form of an INT8-only package (no FP32 form) is held by its verdicts instead of its
values (``int8_only_problems``): its golden outputs are the build machine's INT8 run, which another CPU's
INT8 kernels do not reproduce to the tolerance; its outputs without a verdict (heat maps, remaining life) are
held to what that INT8 noise may do to them (``aux_problems``).
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from model_packager import runtimes as _runtimes
from model_packager.errors import GOLDEN_NO_MEMORY, GOLDEN_UNREADABLE, GoldenError, SpecMismatchError
from model_packager.manifest import (
    MAX_LABEL_CHARS,
    ColorOrder,
    DType,
    ImagePreprocessing,
    Manifest,
    OutputSpec,
    TensorSpec,
)
from model_packager.text import printable

if TYPE_CHECKING:  # numpy is imported by the functions that use it: verifying a package needs none of them
    import numpy as np

# ONNX TensorProto element types -> manifest dtypes
_ONNX_DTYPES = {
    1: DType.FLOAT32,
    10: DType.FLOAT16,
    7: DType.INT64,
    6: DType.INT32,
    2: DType.UINT8,
    3: DType.INT8,
}
# the other element types, by name: a model from elsewhere may take or give them (a bool label and mask beside an
# anomaly score, a float64 input from a scikit-learn or TensorFlow export), and "onnx-type-9" named no type
_ONNX_OTHER_TYPES = {
    4: "uint16",
    5: "int16",
    8: "string",
    9: "bool",
    11: "float64",
    12: "uint32",
    13: "uint64",
    14: "complex64",
    15: "complex128",
    16: "bfloat16",
}
ENGINES = _runtimes.ENGINES
batch_rows = _runtimes.batch_rows
# The newest ONNX a package's model may use: what every ONNX Runtime the agent runs on implements (ONNX 1.16's
# IR version 10 and opset 21, ONNX Runtime 1.18 onwards; the agent needs 1.20 or later). OpenVINO runs newer
# ones ONNX Runtime refuses (opset 99): such a package served on an OpenVINO gateway, failed on the others.
MAX_IR_VERSION, MAX_OPSET = 10, 21
# The other operator sets ONNX Runtime knows, at the newest version it implements (ONNX 1.16's ai.onnx.ml 5;
# its own domains at 1): a model declaring a newer one fails to load there ("Current official support for
# domain ai.onnx.ml is till opset 5") while OpenVINO runs it. The ONNX Runtime quantizer declares all of them
# (an INT8 model: ai.onnx.ml 5, com.microsoft 1, ...). Other domains are declared freely (neither engine
# looks at them) but no node may use one unless a local function of the model defines it.
MAX_DOMAIN_OPSETS = {
    "ai.onnx": MAX_OPSET,
    "ai.onnx.ml": 5,
    "ai.onnx.training": 1,
    "ai.onnx.preview.training": 1,
    "ai.onnx.preview": 1,
    "com.microsoft": 1,
    "com.microsoft.experimental": 1,
    "com.microsoft.nchwc": 1,
    "org.pytorch.aten": 1,
}
# the operator domains an engine runs nodes of (ONNX's own, its ML operators, ONNX Runtime's contrib operators)
ENGINE_DOMAINS = ("ai.onnx", "ai.onnx.ml", "com.microsoft")
# outputs of a model's graph: each result carries every one of up to 16 values, and every run compares each with
# its golden one; a classifier, a detector or a multi-task model has a few, 64 leaves room
MAX_OUTPUTS = 64


_OPENVINO_IR = (
    ": it is an OpenVINO IR (model.xml/.bin); a package carries the ONNX model, and build --openvino adds the IR "
    "made from it: give the ONNX model the IR was converted from"
)


def _is_openvino_ir(path: Path, data: bytes | None) -> bool:
    """Whether ``path`` is one file of an OpenVINO IR pair: its XML (``<net`` near the start), or a ``.bin`` beside
    an ``.xml`` of its name. Given to ``build`` in place of an ONNX model, it was refused as a protobuf that breaks
    the wire format, which named no fix."""
    if path.suffix.lower() == ".bin":
        return path.with_suffix(".xml").is_file()
    return data is not None and b"<net " in data[:1024]


def _graph_io(
    model_path: Path, data: bytes | None = None, where: str = ""
) -> tuple[dict[str, tuple[str, list]], dict[str, tuple[str, list]]]:
    # read without the onnx package (model_packager.onnx_graph): the agent runs this at install
    from model_packager.onnx_graph import NOT_TENSOR, graph_io, versions, walk

    try:
        if data is None:
            data = model_path.read_bytes()
        g_in, g_out = graph_io(data)
        outside, used, functions = walk(data)
        ir, opsets = versions(data)
    except (OSError, ValueError) as exc:
        raise SpecMismatchError(
            f"{where}{printable(model_path.name)}: not a readable ONNX model ({printable(exc)})"
            + (_OPENVINO_IR if _is_openvino_ir(model_path, data) else ""),
            code="bad_model",
        ) from exc
    if outside:
        # A package carries one self-contained model file: the side file would be missing wherever
        # the package is opened (the model could never load), and a location outside the package
        # names a file of the machine that opens it (the engines refuse those; so does the package).
        name, location = outside[0]
        more = f" (and {len(outside) - 1} more)" if len(outside) > 1 else ""
        raise SpecMismatchError(
            f"{where}{printable(model_path.name)}: tensor {printable(repr(name), 80)}{more} keeps its data in "
            f"another file ({printable(repr(location), 120)}); a package holds one self-contained model: "
            "save it with its weights inside (torch.onnx.export(..., external_data=False), or "
            "onnx.save_model(onnx.load(PATH), OUT, save_as_external_data=False))",
            code="external_data",
        )
    newer = [(d, v) for d, v in opsets.items() if v > MAX_DOMAIN_OPSETS.get(d, v)]
    if ir > MAX_IR_VERSION or newer:
        # refused whichever engine the agent runs: a package behaves the same on every gateway
        found = (
            f"IR version {ir}" if ir > MAX_IR_VERSION else f"opset {newer[0][1]} ({printable(newer[0][0])})"
        )
        at_most = ", ".join(
            f"{d} {v}" for d, v in MAX_DOMAIN_OPSETS.items() if d != "ai.onnx" and d in dict(newer)
        )
        raise SpecMismatchError(
            f"{where}{printable(model_path.name)}: ONNX {found} is newer than what every gateway's ONNX Runtime runs "
            f"(IR version {MAX_IR_VERSION}, opset {MAX_OPSET}{', ' + at_most if at_most else ''} at most); "
            "export it at an older one "
            f"(torch.onnx.export(..., opset_version=18); onnx.version_converter.convert_version(model, "
            f"{MAX_OPSET}) and model.ir_version = {MAX_IR_VERSION})",
            code="onnx_version",
        )
    unknown = {d: op for d, op in used.items() if d not in ENGINE_DOMAINS and d not in functions}
    if unknown:
        # a custom operator (a plugin's, a research repository's): no engine the agent runs implements it, and
        # the agent loads no operator library, so every gateway failed to load the package after it verified
        domain, op = next(iter(unknown.items()))
        more = (
            f" (and {len(unknown) - 1} more domain{'s' if len(unknown) > 2 else ''})"
            if len(unknown) > 1
            else ""
        )
        raise SpecMismatchError(
            f"{where}{printable(model_path.name)}: node '{printable(op, 80)}' is of operator domain "
            f"'{printable(domain, 80)}'{more} (opset {opsets.get(domain, 'not declared')}), which no engine the "
            f"agent runs implements (domains {', '.join(ENGINE_DOMAINS)}) and no local function of the model "
            "defines: export it with standard ONNX operators",
            code="onnx_domain",
        )

    def describe(values: dict[str, tuple[int, list]]) -> dict[str, tuple[str, list]]:
        return {
            name: (
                str(
                    _ONNX_DTYPES.get(elem)
                    or NOT_TENSOR.get(elem)
                    or _ONNX_OTHER_TYPES.get(elem)
                    or f"onnx-type-{elem}"
                ),
                dims,
            )
            for name, (elem, dims) in values.items()
        }

    return describe(g_in), describe(g_out)


def check_spec(model_path: Path, manifest: Manifest, label: str = "", data: bytes | None = None) -> None:
    """Raise ``SpecMismatchError`` naming both sides when the manifest's I/O disagrees with the graph
    (read from ``model_path``, or from ``data`` when given)."""
    from model_packager.onnx_graph import NOT_TENSOR

    where = f"{label}: " if label else ""
    g_in, g_out = _graph_io(model_path, data, where)
    if len(g_out) > MAX_OUTPUTS:  # before each is looked at
        raise SpecMismatchError(
            f"{where}{printable(model_path.name)} has {len(g_out):,} outputs: at most {MAX_OUTPUTS} (each result "
            "carries every output of up to 16 values); leave intermediate tensors out of the graph's outputs"
        )
    problems: list[str] = []
    for side, specs, graph in (("input", manifest.inputs, g_in), ("output", manifest.outputs, g_out)):
        names = [s.name for s in specs]
        missing = [n for n in names if n not in graph]
        extra = [n for n in graph if n not in names]
        if missing or (extra and side == "input"):
            problems.append(f"manifest {side}s {names} but {model_path.name} has {side}s {sorted(graph)}")
            continue
        for s in specs:
            problems += _compare_tensor(side, s, graph[s.name], model_path.name)
        for n in graph if side == "output" else ():
            # each result carries every output of up to 16 values keyed by its name (declared or not): published
            # over MQTT, kept in the outbox, shown on the status page; held to a label's rules
            if not n.isprintable() or len(n) > MAX_LABEL_CHARS:
                problems.append(
                    f"{model_path.name} output {n[:40]!r}{'...' if len(n) > 40 else ''} is {len(n):,} characters"
                    f"{'' if n.isprintable() else ' and holds a control character (a newline, a tab)'}: an "
                    f"output's name is at most {MAX_LABEL_CHARS} printable characters (each result names its "
                    "outputs); rename it in the graph"
                )
        for n in extra if side == "output" else ():
            # every output comes back from each run and is compared with the golden one: a text tensor failed
            # the build with "could not convert string to float", a sequence passed it and failed every
            # agent's golden check (its items stacked on another axis)
            kind = graph[n][0]
            if kind == "string" or kind in NOT_TENSOR.values():
                problems.append(
                    f"{model_path.name} output {n!r} is a "
                    f"{'text tensor' if kind == 'string' else kind}, not a tensor of numbers the agent "
                    "reads: leave it out of the graph's outputs (a scikit-learn classifier's label and ZipMap: "
                    "convert it with integer classes and options={'zipmap': False})"
                )
    if not problems and len(g_in) > 1:
        # the agent feeds each frame or window as one tensor, to the first input: the golden run (which
        # feeds every input) passed, then every item failed with "Required inputs are missing"
        problems.append(
            f"{model_path.name} takes {len(g_in)} inputs {sorted(g_in)}: the agent feeds each item as one "
            f"tensor (the preprocessing's) to the model's one input, and would fail every item; give the "
            "model one input (the others as constants, or computed inside it)"
        )
    if not problems:
        problems += _preprocessing_problems(manifest, g_in[manifest.inputs[0].name][1], model_path.name)
    if problems:
        raise SpecMismatchError(where + "; ".join(printable(p, 1000) for p in problems))


def preprocessed_shape(manifest: Manifest) -> tuple[list[int], list[str]]:
    """The shape of the tensor ``preprocess`` makes of one frame or window, and the manifest field that
    sets each axis. Images: one batch row per tile, each tile (or the whole region) resized to
    ``width`` x ``height``, whatever the ``roi``, ``crop`` or frame size; signals: ``(1, n_features)``."""
    pre = manifest.preprocessing
    if isinstance(pre, ImagePreprocessing):
        c = 1 if pre.color is ColorOrder.GRAY else 3
        rows = (
            pre.n_tiles,
            "preprocessing.tiles" if pre.tiles else "one row per frame (no preprocessing.tiles)",
        )
        axes = {"C": (c, "preprocessing.color"), "H": (pre.height, "preprocessing.height")}
        axes["W"] = (pre.width, "preprocessing.width")
        order = [rows, *(axes[a] for a in pre.layout[1:])]
    else:
        order = [
            (1, "batch (one window)"),
            (pre.n_features, "the preprocessing's features (n_bands, time_features, scalars, condition)"),
        ]
    return [n for n, _ in order], [f for _, f in order]


def _preprocessing_problems(manifest: Manifest, graph_dims: list, model_name: str) -> list[str]:
    """The tensor the preprocessing makes against the fixed dimensions of the model's first input (the
    one the agent feeds): a mismatch would fail every frame at the engine, after the smoke test passed."""
    spec = manifest.inputs[0]
    shape, fields = preprocessed_shape(manifest)
    layout = getattr(manifest.preprocessing, "layout", "NC")
    if len(graph_dims) != len(shape):
        return [
            f"manifest preprocessing makes tensors of shape {shape} ({layout}) but {model_name} input "
            f"{spec.name!r} has shape {graph_dims}"
        ]
    bad = []
    for i, (made, field, g, m) in enumerate(zip(shape, fields, graph_dims, spec.shape, strict=True)):
        fixed = g if isinstance(g, int) and g > 0 else m if isinstance(m, int) and m > 0 else None
        if fixed is not None and fixed != made:
            bad.append(f"{field} gives {made} where the model takes {fixed} (axis {i}, {layout[i]})")
    if not bad:
        return []
    return [
        f"manifest preprocessing makes tensors of shape {shape} ({layout}) but {model_name} input "
        f"{spec.name!r} takes {graph_dims}: " + ", ".join(bad) + "; every frame would fail"
    ]


def _compare_tensor(side: str, spec: TensorSpec, graph: tuple[str, list], model_name: str) -> list[str]:
    g_dtype, g_dims = graph
    out = []
    if spec.dtype.value != g_dtype:
        taken = {d.value for d in DType}
        out.append(
            f"manifest {side} {spec.name!r} dtype {spec.dtype.value} but {model_name} {side} is {g_dtype}"
            + (
                ""
                if g_dtype in taken
                else f", which no manifest takes ({', '.join(sorted(taken))}): cast it in the graph"
                + (
                    ", or leave the output out of the manifest (it then has no part in the verdict)"
                    if side == "output"
                    else ""
                )
            )
        )
    if len(spec.shape) != len(g_dims):
        out.append(
            f"manifest {side} {spec.name!r} shape {spec.shape} but {model_name} {side} has shape {g_dims}"
        )
    else:
        for i, (a, b) in enumerate(zip(spec.shape, g_dims, strict=True)):
            if isinstance(a, int) and isinstance(b, int) and b != 0 and a != b:
                out.append(
                    f"manifest {side} {spec.name!r} dimension {i} is {a} but {model_name} has {b}"
                    f" (shape {spec.shape} vs {g_dims})"
                )
    return out


def interpretation_problems(
    manifest: Manifest, outputs: dict[str, np.ndarray], batch: int | None = None
) -> list[str]:
    """What keeps the model's ``outputs`` (a golden run, batch-first) from being read as the manifest
    declares, item by item, as the agent reads each inference (``preprocess.interpret``): an output
    it does not produce, a label count other than the values per item, anything ``interpret`` raises.
    Empty: every item gives a verdict. (A tiled model's rows are read one by one: each is a tile.)
    ``batch``: the rows the golden inputs fed at once (build, ``verify --run``), which every output must give."""
    import numpy as np

    from model_packager.manifest import OutputRole
    from model_packager.preprocess import interpret

    arrays = {k: np.asarray(v) for k, v in outputs.items()}
    bad = []
    for j, o in enumerate(manifest.outputs):
        v = arrays.get(o.name)
        if v is None:
            bad.append(f"manifest outputs[{j}] names {o.name!r}, which the model does not produce")
        elif o.role in (OutputRole.CLASS_LOGITS, OutputRole.CLASS_PROBS) and v.ndim and o.labels:
            per_item = v[:1].size
            if per_item != len(o.labels):
                bad.append(
                    f"manifest outputs[{j}].labels has {len(o.labels)} labels but output {o.name!r} gives "
                    f"{per_item} values per item"
                )
    # the agent runs each item alone and stacks its outputs row by row (build runs the golden batch at once):
    # an output without a row per item (a scalar, a reduction over the batch) was built, then refused by
    # every agent's golden check ("output 'mx' shape [24], expected [6]")
    # ... and as many rows as were fed: a model giving every output twice (or its first row only) was built, then
    # refused by every agent ("deviates by up to 5.09", "shape [4, 1], expected [1, 1]")
    rows = batch or next(
        (v.shape[0] for o in manifest.outputs if (v := arrays.get(o.name)) is not None and v.ndim), None
    )
    for name, v in arrays.items():
        if rows is not None and (v.ndim == 0 or v.shape[0] != rows):
            bad.append(
                f"output {name!r} has shape {list(v.shape)} for a golden batch of {rows} rows: each output needs "
                "a row per item on its first axis (the agent runs items one by one and stacks their outputs); "
                "give it a batch axis, or leave it out of the graph's outputs"
            )
    if bad:
        return bad
    pre = manifest.preprocessing
    one = (
        manifest.model_copy(update={"preprocessing": pre.model_copy(update={"tiles": None})})
        if isinstance(pre, ImagePreprocessing) and pre.tiles
        else manifest
    )
    n = min((v.shape[0] for v in arrays.values() if v.ndim), default=0)
    for i in range(n):
        try:
            interpret(one, {k: v[i : i + 1] for k, v in arrays.items() if v.ndim})
        except Exception as exc:  # whatever interpret raises here, it would raise on every frame
            return [
                f"the manifest's outputs cannot be read from the model's (golden item {i}): "
                f"{type(exc).__name__}: {printable(exc)}"
            ]
    return []


def available_engines() -> list[str]:
    return _runtimes.available()


def engine_version(engine: str) -> str:
    return _runtimes.version(engine)


def run_engine(
    engine: str, model_path: Path, inputs: dict[str, np.ndarray], openvino_xml: Path | None = None
) -> dict[str, np.ndarray]:
    """Run one batch through ``engine`` (CPU, FP32 precision) and return outputs by name."""
    if engine not in ENGINES:
        raise GoldenError(f"unknown engine {engine!r}; expected one of {ENGINES}", code="unknown_engine")
    with _run_errors(model_path):
        return _runtimes.run(engine, model_path, inputs, openvino_xml=openvino_xml)


@contextlib.contextmanager
def _run_errors(model_path: Path) -> Iterator[None]:
    """An engine's run of ``model_path`` that did not finish in time, or whose rows the model does not take at
    once, raised as the ``GoldenError`` that names it."""
    try:
        yield
    except _runtimes.RunTimeout as exc:
        raise GoldenError(str(exc), code="golden_timeout") from None
    except _runtimes.RowsNotTaken as exc:
        raise GoldenError(f"{printable(model_path.name)}: {exc}", code="golden_rows") from None


def run_engine_alone_too(
    engine: str, model_path: Path, inputs: dict[str, np.ndarray], rows: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """``run_engine`` of the golden batch at once, and in ``rows`` rows at a time (an item, or a tiled frame's
    tiles: how the agent runs each item) in the same session; None for the second when one item is the batch."""
    with _run_errors(model_path):
        got = _runtimes.runs(
            engine, model_path, inputs, (None, rows) if batch_rows(inputs) > rows else (None,)
        )
    return got[0], got[1] if len(got) > 1 else None


def batch_dependence(
    manifest: Manifest, batched: dict, alone: dict, rows: int, n: int, *, int8_only: bool
) -> str | None:
    """What differs (beyond the golden tolerance) between the golden batch of ``n`` rows run at once and run
    ``rows`` rows at a time, as the agent runs each item (a tiled frame's tiles together): a model whose item's
    outputs depend on the other items run with it. Built, it passed build and ``verify --run`` (which run the batch
    at once), and every agent refused it, saying its golden test failed "on this CPU"."""
    import numpy as np

    # an output without a row per fed row (a scalar, a reduction over the batch, each row twice) is named so by
    # interpretation_problems
    rowed = [
        k
        for k, v in batched.items()
        if np.ndim(v) and v.shape[0] == n and k in alone and np.shape(alone[k]) == v.shape
    ]
    # held as an agent holds its run to the golden outputs (an INT8-only form by its verdicts)
    _, bad = golden_problems(
        manifest, {k: batched[k] for k in rowed}, {k: alone[k] for k in rowed}, rows, int8_only=int8_only
    )
    if not bad:
        return None
    what = "item" if rows == 1 else f"frame ({rows} tiles)"
    return (
        f"the outputs of a golden {what} depend on the other {what.split()[0]}s run with it: run alone, as the agent "
        f"runs each one, against the golden batch of {n} rows at once, {'; '.join(bad)}; a BatchNorm or Dropout "
        "exported in training mode, or an operation across the batch axis, does this: export the model in eval "
        "mode (PyTorch: model.eval() before torch.onnx.export)"
    )


def run_batch_checked(
    manifest: Manifest,
    model_path: Path,
    inputs: dict[str, np.ndarray],
    rows: int,
    *,
    int8_only: bool,
    where: str,
) -> dict[str, np.ndarray]:
    """ONNX Runtime's outputs of the golden batch run at once (``run_engine_alone_too``); ``GoldenError``
    ``batch_dependent``, naming ``where`` and the model, where its items run alone, as the agent runs each one,
    give other outputs (``batch_dependence``). Build and ``run_golden`` (``verify --run``) both hold a model to it."""
    batched, alone = run_engine_alone_too("onnxruntime", model_path, inputs, rows)
    if alone is not None and (
        dependent := batch_dependence(manifest, batched, alone, rows, batch_rows(inputs), int8_only=int8_only)
    ):
        raise GoldenError(f"{where}: {model_path.name}: {dependent}", code="batch_dependent")
    return batched


def compare(
    expected: dict[str, np.ndarray],
    got: dict[str, np.ndarray],
    atol: float,
    rtol: float,
    output_atol: dict[str, float] | None = None,
) -> tuple[float, list[str]]:
    """Largest absolute deviation over all outputs, and a description of each out-of-tolerance output."""
    import numpy as np

    worst = 0.0
    bad = []
    for name, exp in expected.items():
        if name not in got:
            bad.append(f"output {name!r} missing")
            continue
        e = np.asarray(exp, dtype=np.float64)
        g = np.asarray(got[name], dtype=np.float64)
        if e.shape != g.shape:
            bad.append(f"output {name!r} shape {list(g.shape)}, expected {list(e.shape)}")
            continue
        both_nan = np.isnan(e) & np.isnan(g)
        diff = np.where(both_nan, 0.0, np.abs(e - g))
        diff = np.nan_to_num(diff, nan=np.inf)
        if diff.size:
            worst = max(worst, float(diff.max()))
        a = (output_atol or {}).get(name, atol)
        if np.any(diff > a + rtol * np.abs(np.nan_to_num(e))):
            bad.append(f"output {name!r} deviates by up to {float(diff.max()):.3g} (atol {a}, rtol {rtol})")
    return worst, bad


# A golden file's arrays may hold at most this many times its own size, or this many bytes: numpy
# allocates what an array's header declares, and a compressed .npz of zeros expands ~1000 to 1 (a
# 600-KB file, 600 MB in memory), enough to get the agent killed for memory during a swap's smoke test.
# Golden files are written uncompressed (``np.savez``): their arrays are about their size.
MAX_GOLDEN_EXPANSION = 16
MAX_GOLDEN_EXPANDED_FLOOR = 64 * 1024 * 1024
# A golden file holds one array per model input, or per output (a graph has at most MAX_OUTPUTS), yet its zip
# directory was read whole and every array in it loaded: a 69-MB file of 300,000 one-value arrays took 30 s of CPU
# and 283 MB in the serving agent (the golden check of a swap runs there), a package of 2 GiB of them enough to get
# it killed for memory. Its directory is bounded before zipfile reads it, and then the count of its arrays.
MAX_GOLDEN_ARRAYS = 1024
MAX_GOLDEN_DIRECTORY_BYTES = 512 * 1024  # (about 11,000 entries of the shortest names: read in ~0.06 s)


def _directory_bytes(path: Path) -> int | None:
    """The size of an .npz's zip directory, from its end record as ``zipfile`` itself finds it (its own finder: no
    second reader of the format to disagree with it), or None: no end record (``np.load`` says what the file is), or
    a Python whose ``zipfile`` no longer has the finder (the count of arrays is still bounded, once read)."""
    import zipfile

    find = getattr(zipfile, "_EndRecData", None)
    if find is None:
        return None
    with open(path, "rb") as f:
        end = find(f)
    return None if end is None else int(end[getattr(zipfile, "_ECD_SIZE", 5)])


def _declared_bytes(z) -> int:
    """The bytes the arrays of an open ``NpzFile`` declare in their headers (nothing allocated)."""
    import numpy as np

    fmt = np.lib.format
    total = 0
    for member in z.zip.namelist():
        with z.zip.open(member) as f:
            version = fmt.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = fmt.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = fmt.read_array_header_2_0(f)
            else:
                raise ValueError(f"{member}: .npy format version {version} is not read here")
        n = 1
        for d in shape:
            n *= d
        total += n * dtype.itemsize
    return total


# read errors of the machine at that moment, not of the file: too many open files (the process's, the system's),
# no memory or buffers, an I/O error, an interrupted or would-block read
# a passing error of this machine reading a file verified intact: out of file descriptors, an I/O error. Not memory:
# numpy allocates a declared array before reading it, so a golden set larger than the gateway's free memory fails
# every time (retried, it was fetched and installed again every minute, never refused), as a model too large for
# the gateway is refused
_PASSING_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.EIO})


def load_npz(path: Path) -> dict[str, np.ndarray]:
    import numpy as np

    name = printable(Path(path).name)
    try:
        directory = _directory_bytes(Path(path))
        if directory is not None and directory > MAX_GOLDEN_DIRECTORY_BYTES:
            raise GoldenError(
                f"golden file {name}: its zip directory is {directory:,} bytes (at most "
                f"{MAX_GOLDEN_DIRECTORY_BYTES:,}: it lists far more than the {MAX_GOLDEN_ARRAYS} arrays a golden file "
                "may hold, one per model input or output); refused unread",
                code="golden_too_large",
            )
        with np.load(path, allow_pickle=False) as z:
            if len(z.files) > MAX_GOLDEN_ARRAYS:
                raise GoldenError(
                    f"golden file {name}: {len(z.files):,} arrays, at most {MAX_GOLDEN_ARRAYS} (one per model input "
                    "or output); refused unread",
                    code="golden_too_large",
                )
            size = Path(path).stat().st_size
            declared = _declared_bytes(z)
            if declared > max(MAX_GOLDEN_EXPANDED_FLOOR, MAX_GOLDEN_EXPANSION * size):
                raise GoldenError(
                    f"golden file {name}: its arrays declare {declared / 1e6:,.0f} MB in a file of "
                    f"{size / 1e6:,.1f} MB; refused (a decompression bomb: a golden file may expand at most "
                    f"{MAX_GOLDEN_EXPANSION}x, or to {MAX_GOLDEN_EXPANDED_FLOOR >> 20} MB); write it "
                    "uncompressed (numpy.savez)",
                    code="golden_too_large",
                )
            return {k: z[k] for k in z.files}
    except (OSError, MemoryError) as exc:
        if isinstance(exc, MemoryError) or exc.errno == errno.ENOMEM:
            raise GoldenError(
                f"golden file {name}: its arrays need more memory than this gateway has free; refused (the golden "
                "set must fit beside the model: fewer or smaller golden inputs)",
                code=GOLDEN_NO_MEMORY,
            ) from None
        if exc.errno in _PASSING_ERRNOS:
            # the machine's, not the file's (out of file descriptors, an I/O error): the same bytes read at
            # another moment. Taken for a bad package, a start set aside the fleet's verified version
            raise GoldenError(
                f"golden file {name}: cannot be read now ({printable(exc) or type(exc).__name__}); a passing "
                "error of this machine, not of the file",
                code=GOLDEN_UNREADABLE,
            ) from None
        raise GoldenError(  # (bz2's "Invalid data stream": the file's content)
            f"golden file {name}: not a readable .npz of arrays ({printable(exc)})",
            code="bad_golden",
        ) from None
    except GoldenError:
        raise
    except Exception as exc:  # whatever else reading it raises is the file's content
        # (ValueError, EOFError, KeyError, zipfile.BadZipFile, NotImplementedError; a damaged deflate or LZMA
        # member's zlib.error / lzma.LZMAError and a damaged .npy header's tokenize.TokenError, raised as they are:
        # past a narrower list, they ended a swap as 'unexpected error' with the folder kept and a start, the agent)
        raise GoldenError(
            f"golden file {name}: not a readable .npz of arrays ({printable(exc)})",
            code="bad_golden",
        ) from None


# ------------------------------------------------------------------------- INT8 against FP32


def decisions(specs: Sequence[OutputSpec], outputs: dict[str, np.ndarray]) -> np.ndarray:
    """Per item, the decisions a verdict is made of (class argmax, NG at threshold), as a
    (items, k) integer array, so that two runs agree on an item when its whole row is equal."""
    import numpy as np

    from model_packager.manifest import OutputRole

    cols = []
    for o in specs:
        if o.name not in outputs:
            continue
        v = np.asarray(outputs[o.name], dtype=np.float64)
        n = v.shape[0]
        if o.role in (OutputRole.CLASS_LOGITS, OutputRole.CLASS_PROBS):
            v = v.reshape(n, -1)
            cols.append(v.argmax(1))
            if o.ok_label is not None and o.threshold is not None and o.labels:
                if o.role is OutputRole.CLASS_LOGITS:
                    z = np.exp(v - v.max(1, keepdims=True))
                    v = z / z.sum(1, keepdims=True)
                cols.append((1.0 - v[:, o.labels.index(o.ok_label)]) >= o.threshold)
        elif o.role is OutputRole.ANOMALY_SCORE and o.threshold is not None:
            cols.append(v.reshape(n, -1)[:, 0] >= o.threshold)
    if not cols:
        return np.zeros((0, 0), dtype=np.int64)
    return np.stack([np.asarray(c, dtype=np.int64) for c in cols], axis=1)


def parity(
    manifest: Manifest, reference: dict[str, np.ndarray], got: dict[str, np.ndarray]
) -> tuple[dict[str, float], float]:
    """(largest absolute deviation per output, share of items whose decisions agree) of ``got``
    (an INT8 run) against ``reference`` (the FP32 outputs), on the same golden inputs."""
    return output_parity(manifest.outputs, reference, got)


def output_parity(
    specs: Sequence[OutputSpec], reference: dict[str, np.ndarray], got: dict[str, np.ndarray]
) -> tuple[dict[str, float], float]:
    """``parity`` by the outputs' specs alone (their roles, labels and thresholds), on any items: the
    trainer judges an INT8 form on its whole held-out set with it before a manifest exists."""
    import numpy as np

    dev = {}
    declared = {s.name for s in specs}
    for name, ref in reference.items():
        if name not in declared:  # a graph output the manifest does not declare is never read: not bounded
            continue
        if name in got and np.shape(got[name]) == np.shape(ref):
            d = np.abs(np.asarray(got[name], np.float64) - np.asarray(ref, np.float64))
            dev[name] = float(np.nan_to_num(d, nan=np.inf).max()) if d.size else 0.0
        else:
            dev[name] = float("inf")
    a, b = decisions(specs, reference), decisions(specs, got)
    if a.size == 0 or a.shape != b.shape:
        agree = 1.0 if a.shape == b.shape else 0.0
    else:
        agree = float(np.mean(np.all(a == b, axis=1)))
    return dev, agree


def parity_problems(manifest: Manifest, dev: dict[str, float], agree: float) -> list[str]:
    """What breaks the manifest's ``parity`` bounds (empty: the INT8 form is fit to serve)."""
    p = manifest.parity
    if p is None:
        return []
    bad = [
        f"output {k!r} deviates from FP32 by {d:.3g} (bound {p.output_atol[k]:.3g})"
        for k, d in dev.items()
        if k in p.output_atol and not d <= p.output_atol[k]
    ]
    if agree + 1e-9 < p.min_agreement:
        bad.append(
            f"class/verdict agrees with FP32 on {agree:.1%} of the golden inputs (needs "
            f"{p.min_agreement:.1%})"
        )
    return bad


# ------------------------------------------------------------------------- verdicts, every form


def _row_reader(manifest: Manifest) -> Manifest:
    """The manifest that reads one batch row alone: a tiled model's row is one tile."""
    pre = manifest.preprocessing
    if isinstance(pre, ImagePreprocessing) and pre.tiles:
        return manifest.model_copy(update={"preprocessing": pre.model_copy(update={"tiles": None})})
    return manifest


def item_rows(manifest: Manifest, inputs: dict[str, np.ndarray]) -> int:
    """Batch rows of one golden item: a tiled model's frame is one row per tile when the golden inputs are
    whole frames (their count a multiple of the tiles), else 1 (a row is an item)."""
    pre = manifest.preprocessing
    t = pre.n_tiles if isinstance(pre, ImagePreprocessing) and pre.tiles else 1
    n = next(iter(inputs.values())).shape[0] if inputs else 0
    return t if t > 1 and n % t == 0 else 1


def _unit(manifest: Manifest) -> str:
    """What a batch row of a golden run is: a tile (of a frame) for a tiled model, else an item."""
    pre = manifest.preprocessing
    return "tile" if isinstance(pre, ImagePreprocessing) and pre.tiles and pre.n_tiles > 1 else "item"


def _row_name(manifest: Manifest, i: int, rows: int) -> str:
    """Batch row ``i`` as a message names it: golden item 3; golden item 3, tile 1 (frames run a frame at a
    time, ``rows`` tiles each); golden tile 7 (a tiled model's golden set of single tiles)."""
    if rows > 1:
        return f"golden item {i // rows}, tile {i % rows}"
    return f"golden {_unit(manifest)} {i}"


def _rows_counted(manifest: Manifest, n: int, rows: int) -> str:
    """``n`` batch rows as a message counts them: 16 golden items; 64 golden tiles (16 frames of 4 tiles)."""
    unit = _unit(manifest)
    per = f" ({n // rows} frames of {rows} tiles)" if rows > 1 else ""
    return f"{n} golden {unit}{'s' if n != 1 else ''}{per}"


def row_verdicts(manifest: Manifest, outputs: dict[str, np.ndarray]) -> list[tuple[str, ...]] | None:
    """Per batch row of a golden run (an item, or a tile of a tiled model), what the agent makes of it
    with the package's own interpretation (``preprocess.interpret``): its verdict (the OK/NG side of
    every threshold), and the top label of each classifier output. None when the rows cannot be read
    (``interpretation_problems`` says why)."""
    import numpy as np

    from model_packager.preprocess import interpret

    one = _row_reader(manifest)
    arrays = {k: np.asarray(v) for k, v in outputs.items() if np.ndim(v)}
    n = min((v.shape[0] for v in arrays.values()), default=0)
    rows: list[tuple[str, ...]] = []
    for i in range(n):
        try:
            r = interpret(one, {k: v[i : i + 1] for k, v in arrays.items()})
        except Exception:  # unreadable: said by interpretation_problems, not here
            return None
        labels = [r.label or ""] + [max(p, key=p.__getitem__) for p in r.extra.values() if p]
        rows.append((r.verdict, *labels))
    return rows


def _score(manifest: Manifest, outputs: dict[str, np.ndarray], i: int) -> str:
    """Row ``i``'s score against the threshold it was judged at, for a message (empty: none)."""
    import numpy as np

    from model_packager.preprocess import interpret

    try:
        r = interpret(
            _row_reader(manifest), {k: np.asarray(v)[i : i + 1] for k, v in outputs.items() if np.ndim(v)}
        )
    except Exception:
        return ""
    thr = next((o.threshold for o in manifest.outputs if o.threshold is not None), None)
    return f", score {r.score:.6g}" + (f" against threshold {thr:.6g}" if thr is not None else "")


def _say(verdict: tuple[str, ...]) -> str:
    labels = [lab for lab in verdict[1:] if lab]
    return verdict[0] + (f" ({', '.join(labels)})" if labels else "")


def verdict_flips(
    manifest: Manifest,
    expected: dict[str, np.ndarray],
    got: dict[str, np.ndarray],
    rows: int = 1,
    exempt: Mapping[int, Collection[int]] | None = None,
) -> list[str]:
    """Each golden item (a tile of it when ``rows`` > 1: a tiled model run a frame at a time) whose
    verdict or label from ``got`` differs from the one the package's ``expected`` outputs give, named
    with both verdicts and scores, however small the deviation of the values: an item near the
    threshold flips on a deviation the golden tolerance lets through. ``exempt``: per batch row, the
    fields of its ``row_verdicts`` tuple not held (0 the verdict, 1 + j the label of classifier output j:
    ``int8_exempt``). Empty: every verdict agrees (or the outputs cannot be compared, which ``compare`` and
    ``interpretation_problems`` say)."""
    want, have = row_verdicts(manifest, expected), row_verdicts(manifest, got)
    if want is None or have is None or len(want) != len(have):
        return []
    exempt = exempt or {}
    out = []
    for i, (w, h) in enumerate(zip(want, have, strict=True)):
        free = exempt.get(i, ())
        if all(a == b or k in free for k, (a, b) in enumerate(zip(w, h, strict=True))):
            continue
        where = _row_name(manifest, i, rows)
        out.append(
            f"{where}: {_say(h)} here{_score(manifest, got, i)}, where the package's golden outputs give "
            f"{_say(w)}{_score(manifest, expected, i)}"
        )
    return out


def verdict_problems(
    manifest: Manifest,
    expected: dict[str, np.ndarray],
    got: dict[str, np.ndarray],
    rows: int = 1,
    exempt: Mapping[int, Collection[int]] | None = None,
) -> list[str]:
    """``verdict_flips`` as one problem (the first item named, the others counted), or none."""
    flips = verdict_flips(manifest, expected, got, rows, exempt)
    if not flips:
        return []
    unit = "tile" if rows > 1 else _unit(manifest)
    more = (
        f" (and {len(flips) - 1} more golden {unit}{'s' if len(flips) > 2 else ''})" if len(flips) > 1 else ""
    )
    return [f"verdict differs from the package's on {flips[0]}{more}"]


# ------------------------------------------------------------------------- INT8-only packages

# An INT8-only package (no FP32 form: a user's own quantized model, docs/own-model.md) has golden outputs from
# the build machine's INT8 run, and INT8 kernels differ by CPU: measured under QEMU emulating a Haswell (AVX2,
# no VNNI), a sound model's class logits moved by up to 0.1 on ONNX Runtime (0.34 on OpenVINO), far past the
# golden tolerance while its verdicts held. An INT8 output's noise follows its quantization step, that is the
# range of its values, not the threshold's distance from 0 (a threshold may be 0). So a golden item is not held
# to its verdict where its expected score sits within this share of the scale of that output's scores (the
# range of the golden scores and the threshold together, or |threshold| where more: golden items nearly alike
# span far less than the quantization range) from the threshold, nor to a classifier's label
# where its top two values (logits or probabilities) are within this share of the range of that output's
# values: the INT8 noise of another CPU may put it on either side.
# A lone golden value far from all the others (``_inliers``) is left out of those ranges: it says nothing of
# the noise near the threshold, and once widened every other item's margin until nothing was held.
INT8_NEAR_THRESHOLD = 0.05
# A form whose scores (or class values) across the golden items span less than this share of the span of the
# golden outputs has collapsed (a constant output keeps every verdict of a one-sided golden set).
INT8_COLLAPSE = 0.25
# The golden items exempt near a threshold or a tie may flip on another CPU, staying within the margin: when at
# least this many flip past the margin and they are more than half of the exempt ones, the form moved them (a
# collapse, a shift), which INT8 noise does not do.
INT8_MANY_EXEMPT_FLIPS = 3
# A golden value is left out of the span the margins are shares of when its gap to the nearest other value (or
# the threshold) is more than this many times the span of all the others: one item scoring 100 where the
# others score 0.1 to 0.5 says nothing of the INT8 noise near a threshold of 0.3 (``_inliers``).
INT8_OUTLIER_GAP = 2.0
# Outputs no verdict is read from (heat maps, anomaly maps, remaining life, raw) of an INT8-only package are not
# held to the golden tolerance either: under QEMU emulating a Haswell, OpenVINO's run of a sound INT8 CNN moved
# its heat map by up to 15 % of the span of its golden values on single cells (1.67), a sound signal model's
# remaining life by 1.1 % (0.073), where the golden tolerance allows 0.001 + 1 %. An INT8 output's noise follows
# its quantization step, a share of its range, and quantizers make that range hold 0 (zero is exact in ONNX
# Runtime's and most tools' schemes): so the scale of such an output is the span of its golden values and 0
# together (``aux_scale``). A value per item (remaining life) may move by this share of that scale; a map (any
# output of several values per item) may have single cells move by more, but no item's median cell by more than
# this share (measured: 0.9 % at most on the sound CNN, 11 to 17 % on a saturating one): past it, the map moved
# wholesale.
INT8_AUX_MOVED = 0.05
# A map's hottest region is lost when, on a golden item whose map has a peak (its hottest cell more than twice
# this share of the scale above the item's median cell), neither the golden hottest cell is within this share of
# the form's hottest, nor the form's hottest cell within it of the golden hottest: the hot spot went elsewhere
# (the sound CNN under emulation: 4.7 % of the scale at most, for the nearer of the two).
INT8_AUX_PEAK = 0.10
# On such an item the hot spot must also keep this share of its height (its hottest cell above its median cell),
# beyond twice ``INT8_AUX_PEAK`` of the scale (its hottest cell and its median moved by the noise): an anomaly
# map whose background is 0 scaled down to 30 % kept its median cell, its hot spot's place and 30 % of its span,
# and was served with every defect drawn at a third of its height.
INT8_AUX_PEAK_KEPT = 0.5


def verdict_outputs(manifest: Manifest) -> set[str]:
    """The outputs a verdict or label is read from (classifiers, thresholded anomaly scores)."""
    from model_packager.manifest import OutputRole

    return {
        o.name
        for o in manifest.outputs
        if o.role in (OutputRole.CLASS_LOGITS, OutputRole.CLASS_PROBS)
        or (o.role is OutputRole.ANOMALY_SCORE and o.threshold is not None)
    }


def _threshold_scores(
    manifest: Manifest, outputs: dict[str, np.ndarray]
) -> list[tuple[OutputSpec, float, np.ndarray]]:
    """Per output with a threshold, the score of each batch row it is judged at (a classifier's NG score
    ``1 - p(ok_label)``, an anomaly score): NG at or above the threshold, as ``decisions`` reads it."""
    import numpy as np

    from model_packager.manifest import OutputRole

    out = []
    for o in manifest.outputs:
        if o.threshold is None or o.name not in outputs:
            continue
        v = np.asarray(outputs[o.name], dtype=np.float64)
        v = v.reshape(v.shape[0], -1) if v.ndim else v.reshape(1, 1)
        if o.role in (OutputRole.CLASS_LOGITS, OutputRole.CLASS_PROBS):
            if o.ok_label is None or not o.labels or v.shape[1] != len(o.labels):
                continue
            if o.role is OutputRole.CLASS_LOGITS:
                z = np.exp(v - v.max(1, keepdims=True))
                v = z / z.sum(1, keepdims=True)
            out.append((o, float(o.threshold), 1.0 - v[:, o.labels.index(o.ok_label)]))
        elif o.role is OutputRole.ANOMALY_SCORE:
            out.append((o, float(o.threshold), v[:, 0]))
    return out


def _class_values(
    manifest: Manifest, outputs: dict[str, np.ndarray]
) -> list[tuple[int, OutputSpec, np.ndarray]]:
    """Per classifier output, (its field in a ``row_verdicts`` tuple, spec, values as (rows, classes)): the
    first classifier's label is field 1, the others' follow in manifest order."""
    import numpy as np

    from model_packager.manifest import OutputRole

    out = []
    field = 1
    for o in manifest.outputs:
        if o.role not in (OutputRole.CLASS_LOGITS, OutputRole.CLASS_PROBS) or not o.labels:
            continue
        v = np.asarray(outputs.get(o.name, ()), dtype=np.float64)
        if v.ndim and v.size and v[:1].size == len(o.labels) and len(o.labels) > 1:
            out.append((field, o, v.reshape(v.shape[0], -1)))
        field += 1
    return out


def _span(*values: np.ndarray | float) -> float:
    """max - min of the finite values given (0 when there are none)."""
    import numpy as np

    v = np.concatenate([np.asarray(x, np.float64).reshape(-1) for x in values])
    v = v[np.isfinite(v)]
    return float(v.max() - v.min()) if v.size else 0.0


def _inliers(values: np.ndarray, anchor: float | None = None) -> np.ndarray:
    """The finite ``values``, sorted, less the outlying ones at either end: a value is outlying when its gap
    to the nearest of the others (and ``anchor``, a threshold) is more than ``INT8_OUTLIER_GAP`` times the span
    of those others with the anchor. At most one value at each end and a quarter of the values are left out, so
    a golden set of a few clusters (OK items here, NG items there) keeps every cluster: only a lone item far
    from all the others is left out. (Leaving out one after the other, NG scores spread far apart, a scratch 5
    and a missing part 20, were both left out: the margin shrank to 5 % of the threshold, below the quantization
    step of an output whose range they span, and a sound form a step off on another CPU was refused.)"""
    import numpy as np

    v = np.sort(np.asarray(values, np.float64).reshape(-1))
    v = v[np.isfinite(v)]
    near = [] if anchor is None else [float(anchor)]
    lo, hi = 0, len(v) - 1
    for _ in range(min(2, len(v) // 4)):
        if hi - lo < 2:
            break
        top_gap = v[hi] - max([v[hi - 1], *(a for a in near if a <= v[hi])])
        bot_gap = min([v[lo + 1], *(a for a in near if a >= v[lo])]) - v[lo]
        top = hi == len(v) - 1 and top_gap > INT8_OUTLIER_GAP * _span(v[lo:hi], *near)
        bot = lo == 0 and bot_gap > INT8_OUTLIER_GAP * _span(v[lo + 1 : hi + 1], *near)
        if top and (top_gap >= bot_gap or not bot):
            hi -= 1
        elif bot:
            lo += 1
        else:
            break
    return v[lo : hi + 1]


def threshold_margin(score: np.ndarray, threshold: float, share: float = INT8_NEAR_THRESHOLD) -> float:
    """How near its threshold a golden score is too near to hold an INT8-only form to its verdict: ``share``
    of the scale of the scores, the span of the golden scores and the threshold together (a threshold of 0 has
    its margin too), or |threshold| where that is more: golden items nearly alike span far less than the
    output's quantization range, and at 5 % of their span a sound form the former margin (5 % of |threshold|)
    served was refused on another CPU for its INT8 noise. A lone outlying score (``_inliers``) is left out of
    the span: one item scoring 100 where the others score 0.1 to 0.5 widened every item's margin to 5, and a
    form that flipped every other item's verdict served."""
    return share * max(abs(float(threshold)), _span(_inliers(score, threshold), threshold))


def tie_margin(values: np.ndarray, share: float = INT8_NEAR_THRESHOLD) -> float:
    """How near a tie a classifier's top two values (rows, classes) are too near to hold an INT8-only form to
    the label: ``share`` of the span of its values (one quantization range for the whole output), lone
    outlying values (``_inliers``) left out."""
    return share * _span(_inliers(values))


def _tie_gaps(values: np.ndarray) -> np.ndarray:
    """Per row, its top value less its second (in the output's own units, logits or probabilities)."""
    import numpy as np

    top2 = np.sort(values, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def int8_exempt(
    manifest: Manifest, outputs: dict[str, np.ndarray], share: float = INT8_NEAR_THRESHOLD
) -> dict[int, set[int]]:
    """Per batch row (an item, or a tile of a tiled model) of the golden ``outputs``, the fields of its
    ``row_verdicts`` tuple an INT8-only form is not held to: 0, its verdict, when its score at some threshold
    is within ``threshold_margin`` of it; 1 + j, the label of classifier output j, when that output's top two
    values are within ``share`` of the span of its values. Rows with none are left out."""
    import numpy as np

    out: dict[int, set[int]] = {}
    for _, thr, score in _threshold_scores(manifest, outputs):
        for i in np.flatnonzero(np.abs(score - thr) <= threshold_margin(score, thr, share)):
            out.setdefault(int(i), set()).add(0)
    for field, _, v in _class_values(manifest, outputs):
        for i in np.flatnonzero(_tie_gaps(v) <= tie_margin(v, share)):
            out.setdefault(int(i), set()).add(field)
    return out


def near_threshold_rows(
    manifest: Manifest, outputs: dict[str, np.ndarray], share: float = INT8_NEAR_THRESHOLD
) -> list[int]:
    """Batch rows (items, or tiles of a tiled model) of ``outputs`` whose verdict an INT8-only form is not held
    to: a score within ``threshold_margin`` of its threshold (``int8_exempt``, field 0)."""
    return sorted(i for i, f in int8_exempt(manifest, outputs, share).items() if 0 in f)


def near_tie_rows(
    manifest: Manifest, outputs: dict[str, np.ndarray], share: float = INT8_NEAR_THRESHOLD
) -> list[int]:
    """Batch rows of ``outputs`` whose label an INT8-only form is not held to on some classifier output: its
    top two values within ``share`` of the span of that output's values (``int8_exempt``, fields from 1)."""
    return sorted(i for i, f in int8_exempt(manifest, outputs, share).items() if f - {0})


def _rows_said(rows: Sequence[int], per_item: int, unit: str = "item") -> str:
    """Batch rows as a message names them: golden items, golden tiles (``unit``) of a tiled model, or items and
    their tiles when frames run a frame at a time (``per_item`` tiles each)."""
    said = [f"{i // per_item} tile {i % per_item}" if per_item > 1 else str(i) for i in rows[:8]]
    more = f" and {len(rows) - 8} more" if len(rows) > 8 else ""
    return f"golden {unit}{'' if len(rows) == 1 else 's'} " + ", ".join(said) + more


def unjudged(manifest: Manifest, expected: dict[str, np.ndarray], rows: int = 1) -> list[str]:
    """For an INT8-only package, each decision its golden set leaves nothing to judge: a thresholded output
    whose every golden item is within the margin of its threshold, a classifier whose every item's top two
    values are within the margin of a tie. The build refuses such a package: its form is held to nothing
    there on another CPU. Empty: every decision has golden items it is held to."""
    import numpy as np

    unit = "tile" if rows > 1 else _unit(manifest)
    out = []
    for o, thr, score in _threshold_scores(manifest, expected):
        m = threshold_margin(score, thr)
        if score.size and (np.abs(score - thr) <= m).all():
            out.append(
                f"output {o.name!r}: every one of its {score.size} golden {unit}s scores within {m:.3g} of "
                f"threshold {thr:.6g} ({INT8_NEAR_THRESHOLD:.0%} of the scale of its scores), where an INT8-only "
                "package's verdicts are not held: nothing is left to judge its form on another CPU; add golden "
                "inputs that are clearly OK and clearly NG (--golden)"
            )
    for _, o, v in _class_values(manifest, expected):
        m = tie_margin(v)
        if v.shape[0] and (_tie_gaps(v) <= m).all():
            out.append(
                f"output {o.name!r}: every one of its {v.shape[0]} golden {unit}s has its top two values within "
                f"{m:.3g} of each other ({INT8_NEAR_THRESHOLD:.0%} of the span of its values), where an INT8-only "
                "package's labels are not held: nothing is left to judge its labels on another CPU; add golden "
                "inputs that are clearly of one class (--golden)"
            )
    return out


def coverage_notes(
    manifest: Manifest, expected: dict[str, np.ndarray], rows: int = 1, *, int8_only: bool = False
) -> list[str]:
    """One line for each way the golden set cannot judge a form: no golden item on one side of a threshold
    (every item NG, say, so a form that calls everything NG keeps every verdict), no item whose top label is
    one of a classifier's labels, and for an INT8-only package (``int8_only``) no item on a side outside the
    margin of its threshold (``threshold_margin``), where verdicts are not held; then the items exempt near a
    threshold or near a tie of a classifier's top two labels (``int8_exempt``), named, and whether they are
    most of the golden set. Empty: every threshold has judged items on both sides and every label an item.
    These are said, not refused (``unjudged`` is refused): a package is not wrong for them (an anomaly model
    trained on good parts alone may have no NG view that its INT8 form keeps), its golden check is only
    weaker; ``rows``: batch rows per item."""
    import numpy as np

    from model_packager.manifest import OutputRole

    notes = []
    unit = "tile" if rows > 1 else _unit(manifest)
    n_rows = min((len(v) for v in expected.values() if np.ndim(v)), default=0)
    for o, thr, score in _threshold_scores(manifest, expected):
        ng = score >= thr
        margin = threshold_margin(score, thr)
        near = np.abs(score - thr) <= margin
        n = len(score)
        for side, other, on_side in (("NG", "OK", ng), ("OK", "NG", ~ng)):
            if n and on_side.all():
                notes.append(
                    f"golden set cannot judge output {o.name!r}: every one of its {n} golden {unit}s is {side} "
                    f"at threshold {thr:.6g} (scores {score.min():.6g} to {score.max():.6g}), none {other}: a "
                    f"form that says {side} for everything keeps every golden verdict; add golden inputs "
                    f"that are {other} (--golden)"
                )
                break
        else:
            if int8_only:
                for side, on_side in (("OK", ~ng), ("NG", ng)):
                    if n and not (on_side & ~near).any():
                        k = int(on_side.sum())
                        notes.append(
                            f"golden set cannot judge the INT8-only form's output {o.name!r} on the {side} side: "
                            + (
                                f"its one {side} golden {unit} is"
                                if k == 1
                                else f"its {k} {side} golden {unit}s are all"
                            )
                            + f" within {margin:.3g} of threshold {thr:.6g} ({INT8_NEAR_THRESHOLD:.0%} of the "
                            "scale of its scores), where an INT8-only package's verdicts are not held; add golden inputs "
                            f"that are clearly {side} (--golden)"
                        )
    for o in manifest.outputs:
        if o.role not in (OutputRole.CLASS_LOGITS, OutputRole.CLASS_PROBS) or not o.labels:
            continue
        v = np.asarray(expected.get(o.name, ()))
        if not v.ndim or not v.size or v[:1].size != len(o.labels):
            continue
        top = set(v.reshape(v.shape[0], -1).argmax(1).tolist())
        missing = [lab for k, lab in enumerate(o.labels) if k not in top]
        if missing:
            listed = ", ".join(repr(lab) for lab in missing[:8]) + (
                f" and {len(missing) - 8} more" if len(missing) > 8 else ""
            )
            notes.append(
                f"golden set cannot judge output {o.name!r} on {len(missing)} of its {len(o.labels)} labels: no "
                f"golden {unit} has {listed} as its top label, so a form that never gives "
                f"{'it' if len(missing) == 1 else 'them'} keeps every golden label; add golden inputs of "
                f"{'that class' if len(missing) == 1 else 'those classes'} (--golden)"
            )
    if not int8_only:
        return notes
    near_thr, near_tie = near_threshold_rows(manifest, expected), near_tie_rows(manifest, expected)
    share = f"{INT8_NEAR_THRESHOLD:.0%}"
    for said, where, what in (
        (
            near_thr,
            f"near a threshold (within {share} of the scale of its scores)",
            ("its verdict", "their verdicts"),
        ),
        (
            near_tie,
            f"near a tie of their top two labels (within {share} of the span of the output)",
            ("its label", "their labels"),
        ),
    ):
        if said:
            one = len(said) == 1
            notes.append(
                f"INT8-only package: {_rows_said(said, rows, 'item' if rows > 1 else unit)} ({len(said)} of {n_rows} {unit}s) {where}: not held "
                f"to {what[0] if one else what[1]} on other CPUs (their INT8 noise may put "
                f"{'it' if one else 'them'} on either side)"
            )
    exempt = set(near_thr) | set(near_tie)
    if n_rows and 2 * len(exempt) > n_rows:
        notes.append(
            f"golden set can hardly judge the INT8-only form: {len(exempt)} of its {n_rows} golden {unit}s are "
            "exempt near a threshold or a tie, so another CPU's INT8 run is held on the few others alone; add "
            "golden inputs that are clearly OK, clearly NG and clearly of one class (--golden)"
        )
    return notes


def _held_by_margin(
    manifest: Manifest, name: str, expected: dict[str, np.ndarray], got: dict[str, np.ndarray]
) -> bool:
    """Whether every batch row of ``got`` gives output ``name``'s verdicts and labels of ``expected`` with the
    margin to spare: each score on its golden side of its threshold and farther from it than
    ``threshold_margin``, each label the golden one with its top two values farther apart than ``tie_margin``.
    Such a run keeps every decision beyond another CPU's INT8 noise, however its values moved."""
    import numpy as np

    wants = {o.name: (thr, s) for o, thr, s in _threshold_scores(manifest, expected)}
    for o, thr, have in _threshold_scores(manifest, got):
        if o.name != name or o.name not in wants or np.shape(wants[o.name][1]) != np.shape(have):
            continue
        want = wants[o.name][1]
        m = threshold_margin(want, thr)
        if not (((have >= thr) == (want >= thr)) & (np.abs(have - thr) > m)).all():
            return False
    want_v = {o.name: v for _, o, v in _class_values(manifest, expected)}
    for _, o, have in _class_values(manifest, got):
        if o.name != name or o.name not in want_v or want_v[o.name].shape != have.shape:
            continue
        want = want_v[o.name]
        if not ((have.argmax(1) == want.argmax(1)) & (_tie_gaps(have) > tie_margin(want))).all():
            return False
    return True


def collapse_problems(
    manifest: Manifest, expected: dict[str, np.ndarray], got: dict[str, np.ndarray], rows: int = 1
) -> list[str]:
    """Each output a verdict or label is read from whose values in ``got``, across the golden items (tiles of a
    tiled model), no longer look like the golden outputs in a way another CPU's INT8 noise cannot explain:

    - collapsed: they span less than ``INT8_COLLAPSE`` of what the golden outputs span (per class value for a
      classifier, the widest): a form that went constant keeps every verdict of a golden set all on one side;
    - spread out: they span more than 1 / ``INT8_COLLAPSE`` times what the golden outputs span;
    - moved wholesale: the median item's values moved past the output's margin (every score plus a constant,
      every label rotated; a logit's row less its mean, which its softmax ignores).

    Each value may move by the output's margin (``threshold_margin`` of a score, ``tie_margin`` of a
    classifier's values), so golden items nearly alike (their spread a few quantization steps) are never a
    collapse; a spread-out or moved output is refused only where some item's verdict or label does not hold by
    that margin (``_held_by_margin``): a form far off whose every decision holds with room to spare is said by
    the outputs' deviation, not refused."""
    import numpy as np

    from model_packager.manifest import OutputRole

    margins = {
        o.name: threshold_margin(score, thr) for o, thr, score in _threshold_scores(manifest, expected)
    }
    out = []
    for name in sorted(verdict_outputs(manifest)):
        if name not in expected or name not in got or np.shape(expected[name]) != np.shape(got[name]):
            continue
        want, have = (np.asarray(x[name], np.float64) for x in (expected, got))
        if want.ndim == 0 or want.shape[0] < 2:
            continue
        want, have = want.reshape(want.shape[0], -1), have.reshape(have.shape[0], -1)
        span_w = max(_span(want[:, k]) for k in range(want.shape[1]))
        span_h = max(_span(have[:, k]) for k in range(have.shape[1]))
        role = next(o.role for o in manifest.outputs if o.name == name)
        noise = margins.get(name, 0.0) if role is OutputRole.ANOMALY_SCORE else tie_margin(want)
        counted = _rows_counted(manifest, want.shape[0], rows)
        if span_w > 0 and span_h < INT8_COLLAPSE * span_w and span_h < span_w - 2 * noise:
            out.append(
                f"output {name!r} collapsed: its values span {span_h:.3g} across the {counted} here where the "
                f"package's golden outputs span {span_w:.3g} (needs at least {INT8_COLLAPSE:.0%} of it)"
            )
            continue
        if noise <= 0 or _held_by_margin(manifest, name, expected, got):
            continue
        if span_h > span_w / INT8_COLLAPSE and span_h > span_w + 2 * noise:
            out.append(
                f"output {name!r} spread out: its values span {span_h:.3g} across the {counted} here where the "
                f"package's golden outputs span {span_w:.3g} (at most {1 / INT8_COLLAPSE:.0f} times it), and "
                f"not every verdict holds by the margin another CPU's INT8 noise may cross ({noise:.3g})"
            )
            continue
        if role is OutputRole.CLASS_LOGITS:
            want, have = want - want.mean(1, keepdims=True), have - have.mean(1, keepdims=True)
        moved = float(np.median(np.nan_to_num(np.abs(have - want), nan=np.inf).max(1)))
        if moved > noise:
            out.append(
                f"output {name!r} moved wholesale: across the {counted} here its values differ from the "
                f"package's golden outputs by {moved:.3g} for the median one, past the margin another CPU's INT8 "
                f"noise may move them ({noise:.3g}), and not every verdict holds by that margin"
            )
    return out


def exempt_flip_rows(
    manifest: Manifest,
    expected: dict[str, np.ndarray],
    got: dict[str, np.ndarray],
    exempt: Mapping[int, Collection[int]] | None = None,
    *,
    beyond_margin: bool = False,
) -> list[int]:
    """Batch rows whose verdict or label in ``got`` differs from ``expected``'s only in fields ``exempt`` frees
    (``int8_exempt`` of ``expected`` by default): a verdict near its threshold, a label near a tie, flipped.
    ``beyond_margin``: only those that landed farther than the margin on the other side (a score past
    ``threshold_margin`` of its threshold, a label's top two values past ``tie_margin``), where another CPU's
    INT8 noise, which moves a value by less than the margin, does not put them: golden items nearly alike flip
    together on a CPU whose kernels round them one way, but stay within the margin of the threshold."""
    import numpy as np

    want, have = row_verdicts(manifest, expected), row_verdicts(manifest, got)
    if want is None or have is None or len(want) != len(have):
        return []
    exempt = int8_exempt(manifest, expected) if exempt is None else exempt
    far: dict[int, np.ndarray] = {}
    if beyond_margin:
        n = len(want)
        far[0] = np.zeros(n, bool)
        wants = {o.name: s for o, _, s in _threshold_scores(manifest, expected)}
        for o, thr, h in _threshold_scores(manifest, got):
            w = wants.get(o.name)
            if w is not None and w.shape == h.shape == (n,):
                far[0] |= ((h >= thr) != (w >= thr)) & (np.abs(h - thr) > threshold_margin(w, thr))
        want_v = {o.name: v for _, o, v in _class_values(manifest, expected)}
        for field, o, h in _class_values(manifest, got):
            w = want_v.get(o.name)
            if w is not None and w.shape == h.shape and h.shape[0] == n:
                far[field] = (h.argmax(1) != w.argmax(1)) & (_tie_gaps(h) > tie_margin(w))
    out = []
    for i, (wv, hv) in enumerate(zip(want, have, strict=True)):
        differ = {k for k, (a, b) in enumerate(zip(wv, hv, strict=True)) if a != b}
        if not differ or not differ <= set(exempt.get(i, ())):
            continue
        if beyond_margin and not any(k in far and far[k][i] for k in differ):
            continue
        out.append(i)
    return out


def exempt_flips_said(
    manifest: Manifest, expected: dict[str, np.ndarray], got: dict[str, np.ndarray], rows: int = 1
) -> list[str]:
    """One line naming the golden items (tiles) near a threshold or a tie whose verdict or label flipped in
    ``got``, when any: allowed (another CPU's INT8 noise may put them on either side) while few
    (``int8_only_problems`` refuses many), but said, so that a user sees what the check let through."""
    exempt = int8_exempt(manifest, expected)
    flipped = exempt_flip_rows(manifest, expected, got, exempt)
    if not flipped:
        return []
    unit = "item" if rows > 1 else _unit(manifest)
    return [
        f"{len(flipped)} of the {len(exempt)} golden {unit}s exempt near a threshold or a tie flipped here "
        f"({_rows_said(flipped, rows, unit)}): allowed, another CPU's INT8 noise may put them on either side"
    ]


def aux_scale(values: np.ndarray) -> float:
    """The scale of an INT8-only package's output no verdict is read from: the span of its golden ``values``
    and 0 together (an INT8 output's quantization range holds 0), lone outlying values (``_inliers``) left
    out. ``INT8_AUX_MOVED`` and ``INT8_AUX_PEAK`` are shares of it."""
    return _span(_inliers(values, 0.0), 0.0)


def aux_problems(
    manifest: Manifest, expected: dict[str, np.ndarray], got: dict[str, np.ndarray], rows: int = 1
) -> tuple[float, list[str]]:
    """Hold an INT8-only package's outputs no verdict is read from (heat maps, anomaly maps, remaining life,
    raw; every output ``verdict_outputs`` leaves out) to what another CPU's INT8 noise may do to them, not to
    the golden tolerance, which the build machine's INT8 run alone meets. Per output, with its tolerance
    (``golden.output_atol``, else ``atol``, and ``rtol``) as a floor:

    - one value per golden item (remaining life): each within ``INT8_AUX_MOVED`` of the output's scale
      (``aux_scale``) of its golden value: a collapse or a shift moves the items past it;
    - several values per golden item (a map): no item's median cell moved by more than ``INT8_AUX_MOVED`` of
      the scale (moved wholesale), no item's map spanning less than ``INT8_COLLAPSE`` of its golden span
      (collapsed: a flat map), and on each item whose golden map has a peak its hottest region kept
      (``INT8_AUX_PEAK``); single cells may move more, as INT8 noise moves them;
    - finite values where the golden ones are.

    (largest absolute deviation, problems)"""
    import numpy as np

    g = manifest.golden
    aux = {k: v for k, v in expected.items() if k not in verdict_outputs(manifest)}
    worst, bad = compare(aux, got, g.atol, g.rtol, g.output_atol)
    out = [b for b in bad if b.endswith("missing") or " shape " in b]
    unit = "item" if rows > 1 else _unit(manifest)
    for name, exp in aux.items():
        if name not in got or np.shape(exp) != np.shape(got[name]):
            continue  # said by compare
        want, have = np.asarray(exp, np.float64), np.asarray(got[name], np.float64)
        if want.ndim == 0 or want.size == 0:
            out += compare({name: exp}, {name: got[name]}, g.atol, g.rtol, g.output_atol)[1]
            continue
        want, have = want.reshape(want.shape[0], -1), have.reshape(have.shape[0], -1)
        odd = np.flatnonzero((~np.isfinite(have) & np.isfinite(want)).any(1))
        if odd.size:
            first = have[odd[0]][~np.isfinite(have[odd[0]]) & np.isfinite(want[odd[0]])][0]
            out.append(
                f"output {name!r} gives {first} on {_rows_said(odd.tolist(), rows, unit)} here, where the "
                "package's golden outputs give finite values"
            )
            continue
        scale = aux_scale(want)
        floor = (g.output_atol or {}).get(name, g.atol)
        moved = max(floor, INT8_AUX_MOVED * scale)
        noise = f"{INT8_AUX_MOVED:.0%} of {scale:.3g}, the span of its golden values and 0"
        if want.shape[1] == 1:
            both_nan = np.isnan(want) & np.isnan(have)
            diff = np.nan_to_num(np.where(both_nan, 0.0, np.abs(have - want)), nan=np.inf)[:, 0]
            tol = np.maximum(floor + g.rtol * np.abs(np.nan_to_num(want[:, 0])), INT8_AUX_MOVED * scale)
            far = np.flatnonzero(diff > tol)
            if far.size:
                out.append(
                    f"output {name!r} differs from the package's golden outputs by up to {float(diff.max()):.3g} "
                    f"on {_rows_said(far.tolist(), rows, unit)} here, past what another CPU's INT8 noise moves it "
                    f"({noise})"
                )
                continue
            # Golden values far from 0 (remaining life 9,200 to 10,000 h) span less than twice the margin of
            # their 0-inclusive scale: a constant in their middle kept every item within it. Across the items
            # the values' span may shrink by the margin (half of it at each end, twice the noise measured).
            ok = np.isfinite(want[:, 0]) & np.isfinite(have[:, 0])
            span_w, span_h = _span(want[ok, 0]), _span(have[ok, 0])
            if span_w > moved and span_h < INT8_COLLAPSE * span_w and span_h < span_w - moved:
                out.append(
                    f"output {name!r} collapsed: its values span {span_h:.3g} across the golden items here where "
                    f"the package's golden outputs span {span_w:.3g} (needs at least {INT8_COLLAPSE:.0%} of it)"
                )
            continue
        out += _map_problems(name, want, have, scale, moved, noise, rows, unit)
    return worst, out


def _map_problems(
    name: str,
    want: np.ndarray,
    have: np.ndarray,
    scale: float,
    moved: float,
    noise: str,
    rows: int,
    unit: str,
) -> list[str]:
    """``aux_problems`` of an output of several values per golden item (rows, cells): moved wholesale,
    collapsed, its hottest region lost (each said once, with the items). Cells whose golden value is not a
    number are left out."""
    import numpy as np

    keep = np.flatnonzero(np.isfinite(want).any(1))
    mask = np.isfinite(want[keep])
    w = np.where(mask, want[keep], np.nan)
    h = np.where(mask, have[keep], np.nan)
    out = []
    med = np.nanmedian(np.abs(h - w), axis=1)
    off = keep[med > moved]
    if off.size:
        out.append(
            f"output {name!r} moved wholesale on {_rows_said(off.tolist(), rows, unit)}: its median cell differs "
            f"from the package's golden outputs by up to {float(med.max()):.3g}, past what another CPU's INT8 noise "
            f"moves it ({moved:.3g}, {noise})"
        )
    span_w = np.nanmax(w, axis=1) - np.nanmin(w, axis=1)
    span_h = np.nanmax(h, axis=1) - np.nanmin(h, axis=1)
    flat = (span_w > 2 * moved) & (span_h < INT8_COLLAPSE * span_w) & (span_h < span_w - 2 * moved)
    if flat.any():
        i = int(np.flatnonzero(flat)[0])
        out.append(
            f"output {name!r} collapsed on {_rows_said(keep[flat].tolist(), rows, unit)}: its values span "
            f"{span_h[i]:.3g} across the map here where the package's golden map spans {span_w[i]:.3g} (needs "
            f"at least {INT8_COLLAPSE:.0%} of it)"
        )
    peak = max(moved, INT8_AUX_PEAK * scale)
    r = np.arange(len(keep))
    top_w, top_h = np.nanmax(w, axis=1), np.nanmax(h, axis=1)
    at_w, at_h = np.nanargmax(w, axis=1), np.nanargmax(h, axis=1)
    height_w, height_h = top_w - np.nanmedian(w, axis=1), top_h - np.nanmedian(h, axis=1)
    has_peak = height_w > 2 * peak
    lost = has_peak & ~flat & (h[r, at_w] < top_h - peak) & (w[r, at_h] < top_w - peak)
    if lost.any():
        out.append(
            f"output {name!r} lost its hottest region on {_rows_said(keep[lost].tolist(), rows, unit)}: the "
            f"golden map's hottest cell is more than {peak:.3g} ({INT8_AUX_PEAK:.0%} of {scale:.3g}) below this "
            "map's hottest here, and this map's hottest cell that far below the golden one's (the hot spot is "
            "elsewhere)"
        )
    # the hot spot in its place but lower than the noise lowers it (its hottest cell and its median moved)
    low = (
        has_peak
        & ~flat
        & ~lost
        & (height_h < INT8_AUX_PEAK_KEPT * height_w)
        & (height_h < height_w - 2 * peak)
    )
    if low.any():
        i = int(np.flatnonzero(low)[0])
        out.append(
            f"output {name!r} flattened its hot spot on {_rows_said(keep[low].tolist(), rows, unit)}: its hottest "
            f"cell stands {height_h[i]:.3g} above its median cell here where the golden map's stands "
            f"{height_w[i]:.3g} (needs at least {INT8_AUX_PEAK_KEPT:.0%} of it)"
        )
    return out


def int8_only_problems(
    manifest: Manifest, expected: dict[str, np.ndarray], got: dict[str, np.ndarray], rows: int = 1
) -> tuple[float, list[str]]:
    """Hold an INT8-only package's run (any CPU, any engine) to its golden outputs as an INT8 form is held to
    FP32: the verdict and labels of every golden item (a verdict within the margin of a threshold, a label
    within the margin of a tie excepted: ``int8_exempt``; but when ``INT8_MANY_EXEMPT_FLIPS`` or more of those
    flip past the margin and they are more than half of them, the form is refused: ``exempt_flips_said`` says
    the others), the spread of the outputs they are read from
    (``collapse_problems``), finite values where the golden ones are (``not_number_problems``) and the
    manifest's ``parity`` bounds when it signs some; outputs no verdict is read from (heat maps, remaining
    life, raw) by what another CPU's INT8 noise may do to them (``aux_problems``). (largest deviation,
    problems)"""
    graded = verdict_outputs(manifest)
    worst, bad = aux_problems(manifest, expected, got, rows)
    dev, agree = parity(manifest, expected, got)
    worst = max([worst, *dev.values()])
    bad += [f"output {k!r} missing" for k in graded if k in expected and k not in got]
    if manifest.parity is not None:
        bad += parity_problems(manifest, dev, agree)
    exempt = int8_exempt(manifest, expected)
    bad += verdict_problems(manifest, expected, got, rows, exempt)
    far = exempt_flip_rows(manifest, expected, got, exempt, beyond_margin=True)
    if len(far) >= INT8_MANY_EXEMPT_FLIPS and 2 * len(far) > len(exempt):
        unit = "item" if rows > 1 else _unit(manifest)
        bad.append(
            f"{len(far)} of the {len(exempt)} golden {unit}s exempt near a threshold or a tie flipped here past "
            f"the margin ({_rows_said(far, rows, unit)}): more than half of them, where another CPU's INT8 noise "
            "flips a few and leaves them within the margin (a form whose outputs moved)"
        )
    bad += collapse_problems(manifest, expected, got, rows)
    bad += not_number_problems(manifest, expected, got, rows)
    return worst, bad


def not_number_problems(
    manifest: Manifest, expected: dict[str, np.ndarray], got: dict[str, np.ndarray], rows: int = 1
) -> list[str]:
    """Each output a verdict or label is read from that gives NaN or an infinity in ``got`` on golden items
    (tiles) whose golden values are numbers. The verdict of such an item reads as OK (NaN is below every
    threshold, the first label wins a NaN argmax) and the median the collapse check takes hides a few of them:
    a form that gave NaN for an OK golden item served."""
    import numpy as np

    out = []
    for name in sorted(verdict_outputs(manifest)):
        if name not in expected or name not in got or np.shape(expected[name]) != np.shape(got[name]):
            continue
        want, have = (np.asarray(x[name], np.float64) for x in (expected, got))
        if want.ndim == 0:
            continue
        want, have = want.reshape(want.shape[0], -1), have.reshape(have.shape[0], -1)
        odd = np.flatnonzero((~np.isfinite(have) & np.isfinite(want)).any(1))
        if odd.size:
            unit = "item" if rows > 1 else _unit(manifest)
            first = have[odd[0]][~np.isfinite(have[odd[0]])][0]
            out.append(
                f"output {name!r} gives {first} on {_rows_said(odd.tolist(), rows, unit)} here, where the "
                "package's golden outputs give finite values (a NaN reads as OK, below every threshold)"
            )
    return out


def golden_problems(
    manifest: Manifest,
    expected: dict[str, np.ndarray],
    got: dict[str, np.ndarray],
    rows: int = 1,
    *,
    int8_only: bool | None = None,
) -> tuple[float, list[str]]:
    """A run of the package's form against its golden outputs (not an INT8 form against FP32): the values
    within the tolerance and every golden item's verdict; for an INT8-only package (no FP32 form, INT8
    scheme; ``int8_only`` says so where the manifest does not list its files yet), ``int8_only_problems``.
    (largest deviation, problems)"""
    if int8_only is None:
        int8_only = manifest.quantization.scheme.startswith("int8") and not manifest.has_fp32
    if int8_only:
        return int8_only_problems(manifest, expected, got, rows)
    g = manifest.golden
    worst, bad = compare(expected, got, g.atol, g.rtol, g.output_atol)
    return worst, bad + verdict_problems(manifest, expected, got, rows)
