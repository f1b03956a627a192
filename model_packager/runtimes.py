"""The one place a model file is opened on an inference engine (ONNX Runtime or OpenVINO).

The agent's engines (``edge_agent.engines``), the package's golden checks (``golden.run_engine``,
at build and verify) and the trainer's checks (``cloud_trainer.train.onnx_tools``) all open models
here, so that a model is read the same way wherever its outputs are compared. That matters for
OpenVINO: ``Core.read_model`` of an ONNX file and ``convert_model`` of it (which is how a package's
IR is made) can round an INT8 graph differently (measured: heat-map outputs 0.39 apart on one
model). So ``ov_read`` reads an IR (``.xml``) with ``read_model`` and converts anything else with
``convert_model``, everywhere. Both libraries are imported when a model is opened, never at import
(``load``), and OpenVINO without its model-conversion API (``openvino.tools.ovc``: ~10 MB resident and
~120 modules, the TensorFlow frontend among them) until a file other than an IR is converted.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import time
from pathlib import Path
from typing import Any

ENGINES = ("onnxruntime", "openvino")
_ORT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def _utf8_path(path: str | Path, engine: str) -> None:
    """``PackageError`` when ``path`` holds a byte that is not UTF-8 (a folder named in another code page, which
    Python keeps as U+DC80-U+DCFF): both engines take a model's path as UTF-8 text only, and said so in words
    that named neither the path's byte nor the fix (ONNX Runtime: "incompatible constructor arguments", OpenVINO:
    "'utf-8' codec can't decode byte 0xfc")."""
    text = str(path)
    if any(0xDC80 <= ord(c) <= 0xDCFF for c in text):
        from model_packager.errors import PackageError
        from model_packager.text import printable

        shown = "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else c for c in text)
        raise PackageError(
            f"{printable(shown, 500)}: the path holds a byte that is not UTF-8 (a folder named in another code "
            f"page), and {engine} takes a model's path as UTF-8 only; copy the model to a folder whose path is UTF-8",
            code="usage",
        )


def available() -> list[str]:
    """The engines installed here (found, not imported)."""
    return [e for e in ENGINES if importlib.util.find_spec(e) is not None]


_OVC = "openvino.tools.ovc"
_LOAD_LOCK = threading.Lock()
# OpenVINO's conversion API sends usage telemetry to Google Analytics unless a consent file in the
# user's home says no (openvino_telemetry, installed with the wheel: opt-out, not opt-in): on import of
# ``openvino.tools.ovc`` and on each conversion it resolves www.google-analytics.com and posts from a
# thread, so a gateway converting a package (or a trainer building one) would call outside the plant,
# and without DNS wait on the lookup. The API falls back to its own stub when the telemetry package
# cannot be imported: a None entry makes that import fail, in every process that opens a model here.
_TELEMETRY = "openvino_telemetry"


def _no_telemetry() -> None:
    if sys.modules.get(_TELEMETRY, "") == "":  # never imported (an imported one is left as it is)
        sys.modules[_TELEMETRY] = None  # type: ignore[assignment]


def load(engine: str) -> Any:
    """The engine's library, imported (OpenVINO without ``openvino.tools.ovc``; see ``_convert``)."""
    if engine == "openvino":
        _no_telemetry()
    if engine != "openvino" or "openvino" in sys.modules:
        return importlib.import_module(engine)
    with _LOAD_LOCK:
        # openvino/__init__ imports the conversion API inside ``try: ... except ImportError`` (it is an
        # optional part of the wheel): a None entry makes that import fail, so it is skipped
        skip = _OVC not in sys.modules
        if skip:
            sys.modules[_OVC] = None  # type: ignore[assignment]
        try:
            import openvino as ov
        finally:
            if skip and sys.modules.get(_OVC, "") is None:
                del sys.modules[_OVC]
        if not hasattr(ov, "convert_model"):
            ov.convert_model = _convert  # the library's own name, for any caller that uses it
    return ov


def _convert(*args: Any, **kwargs: Any) -> Any:
    load("openvino")
    with _LOAD_LOCK:  # (not while ``load`` holds the conversion API's entry at None)
        from openvino.tools.ovc import convert_model  # imported on the first conversion
    return convert_model(*args, **kwargs)


def version(engine: str) -> str:
    lib = load(engine)
    return lib.__version__ if engine == "onnxruntime" else lib.__version__.split("-")[0]


def ort_session(
    path: str | Path,
    *,
    threads: int | None = None,
    single_stream: bool = False,
    graph_optimization: str | None = None,
    isolated: bool = False,
    preflight_inputs: str | Path | None = None,
    preflight_run_s: float = 60.0,
) -> Any:
    """An ONNX Runtime CPU session. ``threads``: intra-op threads (None: the library's default);
    ``single_stream``: one inter-op thread, sequential execution (the agent's per-item calls);
    ``graph_optimization``: disable | basic | extended | all (None: the library's default).

    ``isolated`` (another model serves in this process): the session is first created in a helper
    process (``ort_preflight``), and one whose creation takes more memory than the machine can spare,
    or kills the helper, raises ``ModelTooLarge`` here instead of getting this process killed; with
    ``preflight_inputs`` the helper also runs their first item (at most ``preflight_run_s``)."""
    _utf8_path(path, "ONNX Runtime")
    if isolated:
        ort_preflight(path, graph_optimization, preflight_inputs, preflight_run_s)
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads is not None:
        opts.intra_op_num_threads = threads
    if single_stream:
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if graph_optimization is not None:
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _ORT_LEVELS[graph_optimization])
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ov_read(
    path: str | Path,
    core: Any = None,
    *,
    isolated: bool = False,
    config: dict | None = None,
    preflight_inputs: str | Path | None = None,
    preflight_run_s: float = 60.0,
) -> Any:
    """An ``openvino.Model``: an IR (``.xml``) read as it is, any other file converted the way a
    package's IR is made (``convert_model``).

    ``isolated`` (another model serves in this process): the model is first opened in a helper process
    at a lower CPU priority (``_OV_HELPER``): converted there (an ONNX file: the helper writes the IR,
    weights uncompressed, so the graph is the one ``convert_model`` gives, for this process to read),
    compiled with ``config``, and with ``preflight_inputs`` its first golden item run (at most
    ``preflight_run_s``), measuring the memory that takes: ``ModelTooLarge`` when it is more than this
    machine can spare or the helper was killed, ``RuntimeError`` when the library crashed it (see
    ``ort_preflight``; conversion folds constants, a 647-byte graph into gigabytes). And
    ``convert_model`` holds the GIL for most of its 0.3-3 s (measured: another thread of the
    process waited up to 450 ms at a time), so in a serving agent a swap would starve the pipelines;
    the helper's work waits on nothing of ours. When no helper could run or the library refused the
    model there, it is opened here (the library's own error then says why)."""
    _utf8_path(path, "OpenVINO")
    if isolated:
        model = _ov_open_in_helper(
            Path(path), core or load("openvino").Core(), config or {}, preflight_inputs, preflight_run_s
        )
        if model is not None:
            return model
    if str(path).endswith(".xml"):
        return (core or load("openvino").Core()).read_model(str(path))
    return _convert(str(path))


class HelperStopped(RuntimeError):
    """The conversion was given up: the helpers of the calling thread were stopped (``Helpers.stop``)."""


class Helpers:
    """The conversion helper processes started by threads working for one owner (a model slot): the
    thread runs its loading inside ``with helpers.used():``, and ``stop()``, from any thread, kills
    those running and refuses any later one (the conversion raises ``HelperStopped``, never falls back
    to converting in this process). So an owner that stops does not wait for a conversion (up to
    ``HELPER_TIMEOUT_S`` for a stuck one) and leaves no helper behind."""

    def __init__(self) -> None:
        self._procs: set[Any] = set()
        self._lock = threading.Lock()
        self.stopped = False

    def used(self) -> Any:
        import contextlib

        @contextlib.contextmanager
        def scope():
            before = getattr(_THREAD, "helpers", None)
            _THREAD.helpers = self
            try:
                yield self
            finally:
                _THREAD.helpers = before

        return scope()

    def _add(self, proc: Any) -> bool:
        with self._lock:
            if not self.stopped:
                self._procs.add(proc)
            return not self.stopped

    def _discard(self, proc: Any) -> None:
        with self._lock:
            self._procs.discard(proc)

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
            procs = list(self._procs)
        for proc in procs:  # the thread waiting on it reaps it, and raises HelperStopped
            try:
                proc.kill()
            except OSError:  # already gone
                pass


_THREAD = threading.local()  # .helpers: the Helpers of this thread's loading (``Helpers.used``)

# The conversion helper's niceness: the serving threads keep most of the CPU while it converts (a nice-0
# thread weighs 1024 against its 335). Not niceness 19 and SCHED_IDLE, as first made: at SCHED_IDLE (a
# weight of 3) a gateway whose cores were busy serving gave it a few ms a second, its ~1 s of CPU outlasted
# HELPER_TIMEOUT_S, and the conversion then ran in the agent's own process, holding the GIL for seconds
# (the very stall the helper is for) after a 300-s wait. Measured with two busy processes on the 2 cores:
# no result in 30 s at SCHED_IDLE; 1.1 s idle. The same choice as the memory preflight's (PREFLIGHT_NICE).
HELPER_NICE = 5
HELPER_TIMEOUT_S = 300.0
# How both helpers (the OpenVINO one here, ONNX Runtime's preflight below) begin, before the interpreter does
# anything heavy: first in line for the out-of-memory killer, and ``peak()``, their peak resident memory in KiB
# (VmHWM is this image's own: ru_maxrss keeps the forking parent's peak across exec). Their priority is set by
# the process that starts them (``_lower_priority``), once: a helper that also lowered itself by HELPER_NICE
# ran 10 steps below the agent (110 against 1024), a third of the share HELPER_NICE was chosen for.
_HELPER_PRELUDE = """try:
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")
except OSError:
    pass
def peak():
    try:
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
"""
# The helper (at its priority from its start: ``_lower_priority``): first in line for the out-of-memory
# killer before the interpreter does anything heavy, then only openvino is imported (none of our packages: nothing to find on the path,
# nothing more to load). It prints its peak resident memory above what it had with openvino imported
# after each step (open, compile, first golden item); a run that does not end in time is left (the exit
# ends it: OpenVINO cannot stop a run).
_OV_HELPER = f"""import json, os, resource, sys
sys.modules["{_TELEMETRY}"] = None  # no usage telemetry sent from the plant (see _no_telemetry)
{_HELPER_PRELUDE}import openvino as ov
before = peak()
src, xml, config = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
core = ov.Core()
if src.endswith(".xml"):
    model = core.read_model(src)
else:
    model = ov.convert_model(src)
    ov.save_model(model, xml, compress_to_fp16=False)
print(peak() - before, flush=True)
compiled = core.compile_model(model, "CPU", config)
print(peak() - before, flush=True)
if len(sys.argv) > 5:  # then the first golden input, as the smoke test runs it, bounded in time
    import numpy as np
    with np.load(sys.argv[4], allow_pickle=False) as z:
        feed = {{k: z[k][:1] for k in z.files}}
    req = compiled.create_infer_request()
    try:
        req.start_async(feed)
        ended = req.wait_for(max(1, int(float(sys.argv[5]) * 1000)))
    except Exception as exc:  # the smoke test says why; an allocation refused is said here
        ended = True
        if "alloc" in str(exc).lower():
            print("bad_alloc", file=sys.stderr, flush=True)
    print(peak() - before, flush=True)
    if not ended:
        os._exit(0)
"""


def _lower_priority(pid: int, nice: int = HELPER_NICE) -> None:
    """The helper ``nice`` steps below this process's main thread (an agent's event loop), at most 19, whichever
    thread started it: a helper begins at the niceness of the thread that started it, which in an agent is a
    model's loading thread, already lowered (``edge_agent.priority``). Never above that thread's priority
    either. Set here, right after the start, and only here: set to ``nice`` itself (not a step relative to
    anything) and then lowered by the helper's own ``os.nice(nice)``, it ended 10 steps below the agent
    (or, where the start ran as root in a process already nice, above its own loading thread's priority).
    Never SCHED_IDLE: see HELPER_NICE."""
    import os

    try:
        want = min(19, os.getpriority(os.PRIO_PROCESS, os.getpid()) + nice)  # (the main thread's id: the pid)
        if os.getpriority(os.PRIO_PROCESS, pid) < want:
            os.setpriority(os.PRIO_PROCESS, pid, want)
    except (OSError, AttributeError):
        pass


class ModelTooLarge(RuntimeError):
    """Creating the model's session takes more memory than this machine can spare (``ort_preflight``)."""


PREFLIGHT_MEMORY_SHARE = 0.8  # of MemAvailable, at most, for what creating one session takes at its peak
# Creating a session folds the graph's constant parts: a 647-byte model whose ConstantOfShape nodes
# fold to 800 MB each took 4.6 GB and 26 s (5 of them) before its first run. The helper measures what
# creating it takes (peak RSS above the helper's own), at a low priority and first in line for the
# kernel's out-of-memory killer, so that the process that serves is not the one killed. Niceness 5, not
# SCHED_IDLE: every ONNX Runtime swap waits on this one, and at SCHED_IDLE (a
# weight of 3 against 1024 for each serving thread) a gateway whose cores were busy gave it a few ms a
# second: its ~0.3 s of CPU took minutes, and past HELPER_TIMEOUT_S a good model was refused. Measured
# with three busy processes on the 2 cores: 0.6 s at niceness 0, 2.2 s at 5, 27 s at 10 (the serving
# threads keep most of the CPU for those 2 s); a helper stopped at the time bound refuses nothing unless
# it had taken most of the memory by then.
PREFLIGHT_NICE = HELPER_NICE  # not SCHED_IDLE: see _ORT_HELPER
_ORT_HELPER = f"""import os, resource, sys
{_HELPER_PRELUDE}import onnxruntime as ort
opts = ort.SessionOptions()
opts.log_severity_level = 3
opts.intra_op_num_threads = 1
if sys.argv[2]:
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, sys.argv[2])
before = peak()
sess = ort.InferenceSession(sys.argv[1], opts, providers=["CPUExecutionProvider"])
print(peak() - before, flush=True)
if len(sys.argv) > 4:  # then the first golden input, as the smoke test runs it, bounded in time
    import threading
    import numpy as np
    with np.load(sys.argv[3], allow_pickle=False) as z:
        feed = {{k: z[k][:1] for k in z.files}}
    ro = ort.RunOptions()
    ro.log_severity_level = 4
    timer = threading.Timer(float(sys.argv[4]), setattr, (ro, "terminate", True))
    timer.daemon = True
    timer.start()
    try:
        sess.run(None, feed, ro)
    except Exception as exc:  # the smoke test says why; an allocation refused is said here
        if "alloc" in str(exc).lower():
            print("bad_alloc", file=sys.stderr, flush=True)
    timer.cancel()
    print(peak() - before, flush=True)
"""


def _vm_hwm(pid: int) -> int | None:
    """A running process's peak resident memory (KiB), None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def mem_available() -> int | None:
    """Bytes the kernel says can be allocated without swapping (``MemAvailable``), None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def ort_preflight(
    path: str | Path,
    graph_optimization: str | None = None,
    inputs: str | Path | None = None,
    run_timeout_s: float = 60.0,
) -> int | None:
    """Create the ONNX Runtime session of ``path`` in a helper process (see ``_ORT_HELPER``), and with
    ``inputs`` (a golden ``.npz``, already checked against decompression bombs) run its first item there
    (stopped after ``run_timeout_s``), and return the bytes that took at the peak: a graph can allocate
    far more on its first run than at creation (a ``ConstantOfShape`` sized from the input's shape is not
    folded), and the smoke test runs it in the serving process. Raise ``ModelTooLarge`` when that is more than
    ``PREFLIGHT_MEMORY_SHARE`` of what this machine has available, or the helper was killed (the
    out-of-memory killer) or had taken that much when stopped at ``HELPER_TIMEOUT_S``; ``RuntimeError``
    when creating it crashed the helper. None: not measured (no helper could run, it did not finish in
    time on a busy machine, or the library refused the model: creating the session here then raises the
    library's own error).
    The helpers of the calling thread's owner (``Helpers``) are stopped with it."""
    level = _ORT_LEVELS[graph_optimization] if graph_optimization is not None else ""
    run = [str(inputs), f"{run_timeout_s:g}"] if inputs is not None else []
    what = f"creating the session of {Path(path).name}" + (
        " and running its first golden input" if inputs else ""
    )
    done = _run_helper("ONNX Runtime", Path(path), [_ORT_HELPER, str(path), level, *run], what)
    return done.need if done is not None and done.ok else None


class _HelperDone:
    """A preflight helper that ended by itself: ``ok`` (exit 0), ``need`` (bytes at its peak, None when
    it did not say), ``why`` (its last line on stderr, or what stopped it)."""

    def __init__(self, ok: bool, need: int | None, why: str) -> None:
        self.ok, self.need, self.why = ok, need, why


def _run_helper(engine: str, path: Path, argv: list[str], what: str) -> _HelperDone | None:
    """Run a preflight helper (``python -c argv[0] argv[1:]``, at ``PREFLIGHT_NICE``, stopped with the
    calling thread's ``Helpers``) that prints its peak memory (KiB) above its start after each step, and
    judge it: ``ModelTooLarge`` when the last peak is more than ``PREFLIGHT_MEMORY_SHARE`` of what this
    machine has available, the helper was killed (the out-of-memory killer) or refused an allocation, or
    it had taken that much when stopped at ``HELPER_TIMEOUT_S``; ``RuntimeError`` when the library crashed
    it (the same would take this process down); ``HelperStopped``. None: no helper could run.
    A helper stopped at the time bound otherwise (a slow, busy machine) ends ``ok=False``."""
    import signal
    import subprocess

    helpers: Helpers | None = getattr(_THREAD, "helpers", None)
    stopped = HelperStopped(f"{engine}: loading {path.name} was stopped (its caller stops)")
    if helpers is not None and helpers.stopped:
        raise stopped
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    except OSError:
        return None
    _lower_priority(proc.pid, PREFLIGHT_NICE)
    if helpers is not None and not helpers._add(proc):
        proc.kill()
    timed_out = False
    hwm: int | None = None  # KiB, the helper's peak when it was stopped at the timeout
    try:
        out, err = proc.communicate(timeout=HELPER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        hwm = _vm_hwm(proc.pid)
        proc.kill()
        out, err = proc.communicate()
        timed_out = True
    finally:
        if helpers is not None:
            helpers._discard(proc)
    if helpers is not None and helpers.stopped:
        raise stopped
    avail = mem_available()
    if timed_out:
        # still folding after that long with most of the memory taken: the model; else a slow machine,
        # and the model is opened in the caller as it was before any helper
        if hwm is not None and avail is not None and hwm * 1024 > PREFLIGHT_MEMORY_SHARE * avail:
            raise ModelTooLarge(
                f"{what} did not end within {HELPER_TIMEOUT_S:.0f} s and had taken "
                f"{hwm * 1024 / 1e6:,.0f} MB by then, more than {PREFLIGHT_MEMORY_SHARE:.0%} of the "
                f"{avail / 1e6:,.0f} MB available"
            )
        return _HelperDone(False, None, f"no result after {HELPER_TIMEOUT_S:.0f} s")
    if proc.returncode == -signal.SIGKILL or "MemoryError" in err or "bad_alloc" in err:
        raise ModelTooLarge(
            f"{what} ran out of memory in a helper process (killed or refused "
            "an allocation): the model would take more memory than this machine has"
        )
    if proc.returncode < 0:  # a crash of the library on this model would take this process down
        raise RuntimeError(f"{what} crashed a helper process (signal {-proc.returncode}); refused")
    why = (err.strip().splitlines() or ["no message"])[-1]
    if proc.returncode != 0:  # an error the library raises: opening it here says it with its whole message
        return _HelperDone(False, None, why)
    try:
        need: int | None = int(out.split()[-1]) * 1024  # KiB
    except (ValueError, IndexError):
        need = None
    if need is not None and avail is not None and need > PREFLIGHT_MEMORY_SHARE * avail:
        raise ModelTooLarge(
            f"{what} takes {need / 1e6:,.0f} MB at its peak, more than the "
            f"{PREFLIGHT_MEMORY_SHARE * avail / 1e6:,.0f} MB this machine can spare now "
            f"({PREFLIGHT_MEMORY_SHARE:.0%} of {avail / 1e6:,.0f} MB available)"
        )
    return _HelperDone(True, need, why)


def _ov_open_in_helper(
    path: Path, core: Any, config: dict, inputs: str | Path | None, run_timeout_s: float
) -> Any:
    """``ov_read``'s helper (``_OV_HELPER``): the model it opened (the IR it wrote, or ``path`` when that is
    an IR), or None when no helper could run or the library refused the model there."""
    import json
    import logging
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ov-convert-") as d:
        xml = Path(d) / "model.xml"
        run = [str(inputs), f"{run_timeout_s:g}"] if inputs is not None else []
        done = _run_helper(
            "OpenVINO",
            path,
            [
                _OV_HELPER,
                str(path),
                str(xml),
                json.dumps({k: str(v) for k, v in config.items() if v is not None}),
                *run,
            ],
            f"opening {path.name} on OpenVINO" + (" and running its first golden input" if inputs else ""),
        )
        if done is not None and done.ok and (path.suffix == ".xml" or xml.is_file()):
            return core.read_model(str(path) if path.suffix == ".xml" else str(xml))
        logging.getLogger(__name__).warning(
            "OpenVINO: opening %s in a helper process failed (%s); opening it in this process",
            path.name,
            done.why if done is not None else "no helper could start",
        )
        return None


def ov_compile(
    path: str | Path,
    config: dict | None = None,
    *,
    core: Any = None,
    device: str = "CPU",
    isolated: bool = False,
    preflight_inputs: str | Path | None = None,
    preflight_run_s: float = 60.0,
) -> Any:
    """A compiled OpenVINO model of ``path`` (see ``ov_read``, and ``isolated`` there) with ``config``
    (properties)."""
    core = core or load("openvino").Core()
    model = ov_read(
        path,
        core,
        isolated=isolated,
        config=config,
        preflight_inputs=preflight_inputs,
        preflight_run_s=preflight_run_s,
    )
    return core.compile_model(model, device, config or {})


RUN_TIMEOUT_S = 300.0  # one golden batch (build, verify --run): a model that never ends is refused


class RunTimeout(RuntimeError):
    """``run`` did not finish within ``RUN_TIMEOUT_S``."""


class RowsNotTaken(ValueError):
    """The golden inputs' rows do not divide into the batch the model's first input fixes."""


def run(engine: str, path: str | Path, inputs: dict, *, openvino_xml: str | Path | None = None) -> dict:
    """One batch through ``engine`` (CPU; OpenVINO at f32 precision, as golden parity needs),
    outputs by name. On OpenVINO the package's IR is run when given, else ``path``. Raises
    ``RunTimeout`` when the run has not finished within ``RUN_TIMEOUT_S`` (ONNX Runtime's is stopped;
    OpenVINO cannot stop one, which runs on in the background)."""
    return runs(engine, path, inputs, (None,), openvino_xml=openvino_xml)[0]


def runs(
    engine: str,
    path: str | Path,
    inputs: dict,
    ways: tuple[int | None, ...],
    *,
    openvino_xml: str | Path | None = None,
) -> list[dict]:
    """``run`` once per way, in one session and one ``RUN_TIMEOUT_S``: None runs the batch at once (in the rows the
    model fixes, if it does), a number that many rows at a time (the agent's: an item, or a tiled frame's tiles)."""
    import numpy as np

    unfinished = RunTimeout(
        f"{engine} did not finish the golden inputs of {Path(path).name} within {RUN_TIMEOUT_S:g} s: a model "
        "that never ends (a Loop of a huge trip count) or far too slow for this machine"
    )
    if engine == "onnxruntime":
        import onnxruntime as ort

        sess = ort_session(path)
        names = [o.name for o in sess.get_outputs()]
        opts = ort.RunOptions()
        timer = threading.Timer(RUN_TIMEOUT_S, setattr, (opts, "terminate", True))
        timer.daemon = True
        timer.start()
        try:
            rows = _fixed_rows(sess.get_inputs()[0].shape, inputs)
            return [
                _in_rows(
                    lambda part: dict(zip(names, sess.run(names, part, opts), strict=True)), inputs, w or rows
                )
                for w in ways
            ]
        except Exception:
            if opts.terminate:
                raise unfinished from None
            raise
        finally:
            timer.cancel()
    if engine == "openvino":
        # OpenVINO runs FP32 models in bf16 on CPUs with AVX-512 BF16; golden parity needs f32.
        compiled = ov_compile(openvino_xml or path, {"INFERENCE_PRECISION_HINT": "f32"})
        deadline = time.monotonic() + RUN_TIMEOUT_S
        # one request for every part of every way (each made its own: a request holds its input and output
        # tensors, allocated at its first run); the outputs are copied out before the next run writes over them
        req = compiled.create_infer_request()

        def one(part: dict) -> dict:
            req.start_async(part)
            if not req.wait_for(max(1, int((deadline - time.monotonic()) * 1000))):
                req.cancel()
                _ABANDONED.append(req)  # (freeing it would wait for the run to end)
                raise unfinished
            result = req.results
            return {out.get_any_name(): np.array(result[out]) for out in compiled.outputs}

        shape = compiled.inputs[0].get_partial_shape()
        first = shape[0] if shape.rank.is_static and len(shape) else None
        rows = _fixed_rows([first.get_length() if first is not None and first.is_static else None], inputs)
        return [_in_rows(one, inputs, w or rows) for w in ways]
    raise ValueError(f"unknown engine {engine!r}; expected one of {ENGINES}")


_ABANDONED: list = []  # OpenVINO requests given up on by ``run``


def batch_rows(inputs: dict) -> int:
    """The rows the golden inputs feed at once (the first input with a shape: its first axis), 0 for none."""
    return next((int(v.shape[0]) for v in inputs.values() if getattr(v, "shape", ())), 0)


def _fixed_rows(shape: Any, inputs: dict) -> int | None:
    """The rows the model takes at once when its first input fixes its batch axis at fewer than the golden batch
    holds (a PyTorch export without a dynamic batch takes 1), else None (the whole batch in one run). The agent
    feeds one item at a time; build fed the golden batch at once, and such a model failed there with ONNX
    Runtime's "Got invalid dimensions for input ... Got: 2 Expected: 1"."""
    first = shape[0] if shape else None
    rows = batch_rows(inputs)
    if isinstance(first, int) and first > 0 and rows % first:
        # (a tiled model of 4 tiles, 3 or 6 golden rows): ONNX Runtime's "Got invalid dimensions ... Got: 3
        # Expected: 4" named no fix, and the agent, which runs such rows one at a time, fails them too
        raise RowsNotTaken(
            f"the golden inputs have {rows} rows, but the model's first input takes {first} at a time (its batch "
            f"axis is fixed): give a multiple of {first} rows (a tiled model: whole frames, one row per tile)"
        )
    return first if isinstance(first, int) and 0 < first < rows else None


def _in_rows(run_one: Any, inputs: dict, rows: int | None) -> dict:
    """``run_one`` over ``inputs`` ``rows`` batch rows at a time (all at once for None), outputs stacked."""
    if rows is None:
        return run_one(inputs)
    import numpy as np

    n = batch_rows(inputs)
    parts = [run_one({k: v[i : i + rows] for k, v in inputs.items()}) for i in range(0, n, rows)]
    return {
        k: np.concatenate([p[k] for p in parts]) if np.ndim(parts[0][k]) else parts[0][k] for k in parts[0]
    }
