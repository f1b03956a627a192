"""One interface over ONNX Runtime and OpenVINO for a verified, extracted package.

``create_engine(choice, opened, cfg)`` returns an ``Engine`` whose ``run(inputs) -> outputs``
is safe to call from several worker threads at once (ONNX Runtime sessions are; for OpenVINO
each thread gets its own infer request). Models are opened through ``model_packager.runtimes``
(the same reading as the package's golden checks and the trainer's); libraries are imported when
a slot needs them, never when a config is validated.

``auto`` lets the slot try every installed engine (OpenVINO runs the package's IR if present,
else its ONNX, INT8 QDQ included) and every form the package carries, and keep the first that passes
its checks on this CPU unless another is clearly faster (``edge_agent.models.slot``). OpenVINO computes float layers at f32 (INT8
layers stay INT8): its own default on CPUs with AVX-512 BF16 or AMX is bf16 (on ARM f16), which shifts scores by
up to a few hundredths, enough to give an item near a threshold another verdict than the one the package was
gated at. With ``openvino_f32: false`` (and a package not checked on OpenVINO at f32) the CPU's default is used;
a candidate that then misses its golden check is tried again at f32 (``select``), and serves there if it
passes, its trial saying why.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from typing import Any, Protocol

import numpy as np

from edge_agent.models.config import ENGINE_TYPES, EngineChoice, ModelConfig
from model_packager import OpenedPackage
from model_packager.runtimes import load as load_engine
from model_packager.runtimes import ort_session, ov_compile
from model_packager.text import one_line


class EngineError(RuntimeError):
    pass


class RunTimeout(EngineError):
    """A bounded run (``Engine.run_bounded``, or ``run`` past the slot's ``inference_timeout_s``) did not
    finish in its time."""


class _Watchdog:
    """Stops ONNX Runtime runs past their deadline (``RunOptions.terminate``, which the library checks
    between kernels and in every ``Loop`` iteration). One daemon thread per process, started with the first
    bounded run; it looks at the runs in flight every ``TICK_S`` while there are any and waits, without
    waking, while there are none: no wake-up per inference (a run costs a dict entry: ~1 µs)."""

    TICK_S = 0.25

    def __init__(self) -> None:
        self._runs: dict[int, tuple[float, Any, object]] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._idle = False

    def start(self, opts: Any, timeout_s: float, owner: object = None) -> int:
        key = id(opts)
        with self._cond:
            self._runs[key] = (time.monotonic() + timeout_s, opts, owner)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="inference-watchdog", daemon=True)
                self._thread.start()
            elif self._idle:  # (at most once a tick: the thread goes idle only at a tick)
                self._idle = False
                self._cond.notify()
        return key

    def end(self, key: int) -> None:
        with self._cond:
            self._runs.pop(key, None)

    def stop_all(self, owner: object) -> None:
        """Stop ``owner``'s runs in flight now (its engine closes: the agent stops)."""
        with self._cond:
            runs = [opts for _, opts, o in self._runs.values() if o is owner]
        for opts in runs:
            opts.terminate = True

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._runs:
                    self._idle = True
                    self._cond.wait()
                self._idle = False
            time.sleep(self.TICK_S)
            now = time.monotonic()
            with self._cond:
                late = [opts for deadline, opts, _ in self._runs.values() if deadline <= now]
            for opts in late:
                opts.terminate = True


_WATCHDOG = _Watchdog()


# OpenVINO cannot stop a running inference (``InferRequest.cancel`` does not end a ``Loop``): a request
# given up on runs on to its end here, never freed meanwhile (its destructor would wait for it), with the
# inputs it reads in place; the ones that have ended are let go at the next one given up
_ABANDONED: list[tuple[Any, object]] = []
_ABANDONED_LOCK = threading.Lock()


def _abandon(req: Any, inputs: object = None) -> None:
    """Keep ``req`` (and the ``inputs`` it reads) until its run ends; free those kept before that have ended."""
    with _ABANDONED_LOCK:
        _ABANDONED[:] = [kept for kept in _ABANDONED if not _ended(kept[0])]
        _ABANDONED.append((req, inputs))


def _ended(req: Any) -> bool:
    try:
        return bool(req.wait_for(0))
    except RuntimeError:  # "Infer Request was canceled": ended (stopped before it ran, or ran to its end)
        return True


class Engine(Protocol):
    name: str
    version: str
    form: str  # "int8" or "fp32": which of the package's forms it runs
    source: str  # the file of the package it opened (a bench opens the same one apart)
    timeout_s: float  # one ``run``, at most (``inference_timeout_s``, raised for a slow model: see select)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def run_bounded(self, inputs: dict[str, np.ndarray], timeout_s: float) -> dict[str, np.ndarray]:
        """``run``, raising ``RunTimeout`` when it has not finished after ``timeout_s`` (the smoke test:
        a model that never finishes must not hold a swap for good)."""
        ...

    def close(self) -> None: ...


def installed(name: str) -> bool:
    """Whether the library of engine ``name`` is installed (found, not imported)."""
    return importlib.util.find_spec(ENGINE_TYPES[name][1]) is not None


def openvino_available() -> bool:
    return installed("openvino")


def resolve_choice(choice: EngineChoice) -> str:
    if choice == "auto":
        return next((n for n in ENGINE_TYPES if installed(n)), "onnxruntime")
    if choice.value not in ENGINE_TYPES:
        raise EngineError(f"unknown engine {choice.value!r}; one of {sorted(ENGINE_TYPES)} or auto")
    if not installed(choice.value):
        raise EngineError(
            f"engine {choice.value!r} asked for but {ENGINE_TYPES[choice.value][1]} is not installed "
            f"(pip install '.[{choice.value}]'); use engine: auto or another engine"
        )
    return choice.value


def model_file(opened: OpenedPackage, form: str | None) -> str:
    """The ONNX file of ``form`` ("fp32": the FP32 reference; "int8" or None: ``model.onnx``)."""
    if form == "fp32":
        if opened.fp32_model_path is None:
            raise EngineError(
                f"package {opened.manifest.package_id} carries no FP32 form; use form: auto or int8"
            )
        return str(opened.fp32_model_path)
    return str(opened.model_path)


def openvino_file(opened: OpenedPackage, form: str | None) -> str:
    """The file OpenVINO opens (``ov_compile``) for ``form``: the package's IR, made of ``model.onnx`` (the INT8
    form), when it carries one; the FP32 form, and a package without an IR, as ONNX."""
    if form == "fp32" or opened.openvino_xml is None:
        return model_file(opened, form)
    return str(opened.openvino_xml)


class OrtEngine:
    name = "onnxruntime"

    def __init__(
        self, opened: OpenedPackage, cfg: ModelConfig, form: str | None = None, *, isolated: bool = False
    ) -> None:
        import onnxruntime as ort

        self.form = form or _only_form(opened)
        self.version = ort.__version__
        self.timeout_s = cfg.inference_timeout_s
        self._run_options = ort.RunOptions
        try:
            self.source = model_file(opened, form)  # the file it serves (a bench opens it apart)
            self.session = ort_session(
                self.source,
                threads=cfg.threads,
                single_stream=True,
                graph_optimization=cfg.graph_optimization.value,
                isolated=isolated,  # a model serves: the session is first made in a helper (memory)
                preflight_inputs=opened.golden_inputs,  # ... and runs the first golden item there
                preflight_run_s=cfg.inference_timeout_s,
            )
        except Exception as exc:
            raise EngineError(
                f"ONNX Runtime cannot load {opened.manifest.package_id}: {one_line(exc)}"
            ) from exc
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One inference, stopped past ``inference_timeout_s`` (``RunTimeout``): a model that never
        finishes on some input fails that item and frees its worker thread and core."""
        opts = self._run_options()
        opts.log_severity_level = 4  # a stopped run is said once, in the agent's log, not also on stderr
        key = _WATCHDOG.start(opts, self.timeout_s, self)
        try:
            out = self.session.run(self.output_names, inputs, opts)
        except Exception:
            if opts.terminate:
                raise RunTimeout(_unfinished_item(self.name, self.timeout_s, "stopped")) from None
            raise
        finally:
            _WATCHDOG.end(key)
        return dict(zip(self.output_names, out, strict=True))

    def run_bounded(self, inputs: dict[str, np.ndarray], timeout_s: float) -> dict[str, np.ndarray]:
        import onnxruntime as ort

        opts = ort.RunOptions()
        # ONNX Runtime checks the flag between kernels and in every Loop iteration: the run ends with an error
        timer = threading.Timer(timeout_s, setattr, (opts, "terminate", True))
        timer.daemon = True
        timer.start()
        try:
            out = self.session.run(self.output_names, inputs, opts)
        except Exception:
            if opts.terminate:
                raise RunTimeout(_unfinished(self.name, timeout_s, "stopped")) from None
            raise
        finally:
            timer.cancel()
        return dict(zip(self.output_names, out, strict=True))

    def close(self) -> None:
        # a run still in flight (one that never ends: the pipelines' stop has given up on it) is stopped, or
        # ONNX Runtime aborts the process when it exits with a run inside it
        _WATCHDOG.stop_all(self)
        self.session = None


class OvEngine:
    name = "openvino"

    def __init__(
        self, opened: OpenedPackage, cfg: ModelConfig, form: str | None = None, *, isolated: bool = False
    ) -> None:
        ov = load_engine("openvino")

        self.form = form or _only_form(opened)
        self.version = ov.__version__.split("-")[0]
        # f32 unless asked otherwise (openvino_f32: false), and always when the package was checked on OpenVINO at
        # f32 (its golden tolerance was met at that precision; bf16 may not meet it). INT8 layers still run as INT8.
        checked_f32 = any(e.engine == "openvino" and e.precision == "f32" for e in opened.manifest.engines)
        f32 = cfg.openvino_f32 or checked_f32
        core = ov.Core()
        if cfg.openvino_cache_dir:
            core.set_property({"CACHE_DIR": cfg.openvino_cache_dir})
        props = {"PERFORMANCE_HINT": cfg.openvino_hint.value.upper(), "INFERENCE_NUM_THREADS": cfg.threads}
        if f32:
            props["INFERENCE_PRECISION_HINT"] = "f32"
        src = self.source = openvino_file(opened, form)  # the file it serves (a bench opens it apart)
        try:
            # isolated (another model serves meanwhile): the model is first opened, compiled and run on its
            # first golden item in a low-priority helper process (memory: a graph that folds or allocates
            # gigabytes is refused there; and convert_model holds the GIL for up to seconds)
            self.compiled = ov_compile(
                src,
                props,
                core=core,
                isolated=isolated,
                preflight_inputs=opened.golden_inputs,
                preflight_run_s=cfg.inference_timeout_s,
            )
        except Exception as exc:
            raise EngineError(f"OpenVINO cannot load {opened.manifest.package_id}: {one_line(exc)}") from exc
        # the precision its float layers run at, as compiled: f32 when pinned, else this CPU's default (bf16 on
        # AVX-512 BF16 and AMX CPUs, f16 on ARM), whose ~3 significant digits can miss a golden tolerance that f32
        # meets (the slot then tries f32: select) and which the selection names
        self.precision = "f32" if f32 else _ov_precision(self.compiled)
        self.reduced_precision = self.precision != "f32"
        self.outputs = [(o, o.get_any_name()) for o in self.compiled.outputs]
        self._local = threading.local()
        self.timeout_s = cfg.inference_timeout_s

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One inference, given up past ``inference_timeout_s`` (``RunTimeout``): OpenVINO cannot stop a
        running inference, so the worker thread is freed and the request left to finish in the background
        (later inferences of the model may queue behind it and fail the same way: the health watch sees it)."""
        req = getattr(self._local, "request", None)
        if req is None:
            req = self._local.request = self.compiled.create_infer_request()
        # share_inputs avoids a copy in; outputs are copied out because the request reuses its buffers
        req.start_async(inputs, share_inputs=True)
        if not req.wait_for(max(1, int(self.timeout_s * 1000))):
            req.cancel()
            # kept, with the inputs it reads in place (share_inputs), until the end: freeing the request would
            # wait for the run, and freeing the inputs would have it read freed memory
            _abandon(req, inputs)
            self._local.request = None
            raise RunTimeout(_unfinished_item(self.name, self.timeout_s, "left to finish in the background"))
        return {name: np.array(req.get_tensor(port).data, copy=True) for port, name in self.outputs}

    def run_bounded(self, inputs: dict[str, np.ndarray], timeout_s: float) -> dict[str, np.ndarray]:
        req = self.compiled.create_infer_request()
        req.start_async(inputs)
        if not req.wait_for(max(1, int(timeout_s * 1000))):
            req.cancel()  # (ends a run waiting to start; one running goes on: kept, see _ABANDONED)
            _abandon(req)
            raise RunTimeout(_unfinished(self.name, timeout_s, "left to finish in the background"))
        res = req.results
        return {name: np.array(res[port], copy=True) for port, name in self.outputs}

    def close(self) -> None:
        self.compiled = None


def _ov_precision(compiled: Any) -> str:
    """The precision a compiled model runs its float layers at ("f32", "bf16", "f16"; "f32" if unknown), read
    from the compiled model: the CPU's default is not assumed to be bf16 (ARM's is f16)."""
    try:
        return str(compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())
    except Exception:  # an OpenVINO without the property: nothing to retry at f32
        return "f32"


def _unfinished_item(engine: str, timeout_s: float, what: str) -> str:
    return (
        f"{engine} did not finish this item within {timeout_s:g} s (inference_timeout_s; {what}): the model "
        "never ends on it (a Loop whose trip count the input sets) or is far too slow for this machine"
    )


def _unfinished(engine: str, timeout_s: float, what: str) -> str:
    return (
        f"{engine} did not finish one golden input within {timeout_s:g} s ({what}): a model that never "
        "ends (a Loop of a huge trip count) or far too slow for this machine"
    )


def _only_form(opened: OpenedPackage) -> str:
    """The form of a package's ``model.onnx``: int8 when quantized, else fp32."""
    return "int8" if opened.manifest.quantization.scheme.startswith("int8") else "fp32"


def candidate_engines(choice: EngineChoice | str) -> list[str]:
    """The engines a slot may try: the one asked for, or with ``auto`` every installed one (the
    slot measures each on its own CPU and keeps the fastest that passes its checks)."""
    choice = EngineChoice(choice)
    if choice == "auto":
        return [n for n in ENGINE_TYPES if installed(n)]
    return [resolve_choice(choice)]


def create_engine(
    choice: EngineChoice | str,
    opened: OpenedPackage,
    cfg: ModelConfig,
    form: str | None = None,
    *,
    isolated: bool = False,
) -> Engine:
    """An engine for ``form`` of the package ("int8", "fp32"; None: ``model.onnx`` as it is), built by
    the class its row in ``ENGINE_TYPES`` names. ``isolated``: a model already serves in this process
    (a swap), so work that would hold the GIL or the cores for long goes elsewhere (OpenVINO's
    conversion of an ONNX file runs in a low-priority helper process)."""
    from devices import load_object

    name = resolve_choice(EngineChoice(choice))
    return load_object(ENGINE_TYPES[name][0])(opened, cfg, form, isolated=isolated)
