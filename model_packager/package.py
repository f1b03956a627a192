"""Build, verify and safely open ``NAME-VERSION.edgepkg`` packages.

A package is an uncompressed POSIX tar (INT8 ONNX weights barely compress, and an uncompressed
archive can be hashed at disk speed) holding, in this order:

    manifest.yaml        the manifest (``model_packager.manifest``), exact bytes signed
    manifest.sig         JSON {"algorithm": "ed25519", "key_id": ..., "signature": base64}
    model.onnx, [model.fp32.onnx], golden/inputs.npz, golden/expected.npz, [openvino/model.xml, .bin],
    [extras]

A package may carry two forms of one model (schema 2): ``model.onnx`` quantized to INT8 and
``model.fp32.onnx``, its FP32 reference. The golden expected outputs are then the FP32 model's, and
``parity`` bounds how far the INT8 form may deviate from them; INT8 arithmetic differs by CPU, so
the agent checks the INT8 form on its own CPU and serves FP32 where INT8 breaks those bounds.

Verification, before any byte is used: every entry is a regular file with a safe relative name
(no ``..``, no absolute path, no links or devices, no duplicates); the total declared size is
bounded (archive bomb); the signature over the manifest bytes is by a trusted key; every listed
file is present with its size and SHA-256, and nothing unlisted is present. ``open_package``
extracts into a temporary sibling of the target folder, re-hashing while writing, and renames it
into place only when everything matched, so a failed or interrupted open leaves no partial
package behind and writes nothing outside the target's parent.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import errno
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, BinaryIO

import yaml
from pydantic import ValidationError

from model_packager import golden as _golden
from model_packager.cpu import cpu_flags
from model_packager.cpu import describe as describe_cpu
from model_packager.errors import (
    GoldenError,
    IntegrityError,
    ManifestError,
    PackageError,
    SignatureError,
    UnsafeArchiveError,
)
from model_packager.manifest import BUILD_CONTEXT, EngineCheck, FileEntry, FileRole, Manifest
from model_packager.regular import kind as _kind
from model_packager.regular import open_regular, read_upto
from model_packager.safe_yaml import MAX_YAML_BYTES, load_bounded
from model_packager.tarread import BLOCK, MAX_NAME_BYTES, MAX_PAX_BYTES, Member, StrictTarReader
from model_packager.text import printable

if TYPE_CHECKING:  # imported where used: ``tarfile`` writes packages, ``keys`` brings cryptography, numpy
    import tarfile  # builds and runs golden files: verifying and opening a package need none of them

    import numpy as np

    from model_packager.keys import TrustedKeys

MANIFEST = "manifest.yaml"
SIGNATURE = "manifest.sig"
MODEL = "model.onnx"
MODEL_FP32 = "model.fp32.onnx"
PARITY_HEADROOM = 3.0  # INT8 bounds = this x the deviation measured on the build machine (at least a floor)
OV_XML, OV_BIN = "openvino/model.xml", "openvino/model.bin"
DEFAULT_MAX_BYTES = 2 * 1024**3  # 2 GiB of declared content
MAX_ENTRIES = 1000
MAX_MANIFEST_BYTES = MAX_YAML_BYTES
MAX_SIG_BYTES = 4096
_CHUNK = 1 << 20


@dataclass(frozen=True)
class OpenedPackage:
    manifest: Manifest
    root: Path
    model_path: Path
    openvino_xml: Path | None
    golden_inputs: Path
    golden_expected: Path
    signer: str  # key id
    digest: str  # SHA-256 of the .edgepkg file
    fp32_model_path: Path | None = None  # the FP32 reference form, when the package carries one

    def path(self, rel: str) -> Path:
        return self.root / rel


# ---------------------------------------------------------------------------------------- build


def _check_file(label: str, name: str, size: int, digest: str, entry, tail: str) -> None:
    """A file's size and SHA-256 against its manifest entry (read from the archive or an installed folder)."""
    if size != entry.size:
        raise IntegrityError(
            f"package {label}: {printable(name)} has {size} bytes, the manifest says {entry.size}: "
            f"altered or truncated{tail}",
            code="size_mismatch",
        )
    if digest != entry.sha256:
        raise IntegrityError(
            f"package {label}: {printable(name)} digest mismatch (expected {entry.sha256[:12]}…, "
            f"got {digest[:12]}…): altered or corrupted{tail}",
            code="digest_mismatch",
        )


def _sha256_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def read_bounded(path: str | Path, max_bytes: int) -> bytes:
    """The bytes of a text file given on a command line (a spec, a config to deploy), at most ``max_bytes + 1``
    of them, so that the caller refuses a larger one without reading it whole. Unlike a package, such a file
    may come through a pipe that something writes to: ``<(envsubst < spec.yaml)``, ``/dev/stdin`` of a script's
    pipeline; it is read to its end, however slowly it is written. A named pipe is opened without blocking,
    so one that nothing writes to is refused at once (``a named pipe that nothing wrote to``), never waited
    on; a folder, a device (``/dev/zero``) or a socket is ``OSError`` naming it, never opened nor read."""
    mode = os.stat(path).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
        raise OSError(errno.EINVAL, f"{_kind(mode)}, not a file")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode  # (replaced between the two)
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            raise OSError(errno.EINVAL, f"{_kind(mode)}, not a file")
        os.set_blocking(fd, True)  # a pipe with a writer is read to its end; one without reads as empty
        data = read_upto(fd, max_bytes)
    finally:
        os.close(fd)
    if not data and stat.S_ISFIFO(mode):
        raise OSError(errno.EINVAL, "a named pipe that nothing wrote to")
    return data


def _spec_dict(spec: Manifest | dict | str | Path) -> dict:
    if isinstance(spec, Manifest):
        return spec.model_dump(mode="json")
    if isinstance(spec, str | Path):
        try:
            # load_bounded refuses more, without reading a 1 GB file
            text = read_bounded(spec, MAX_YAML_BYTES)
        except OSError as exc:
            raise ManifestError(f"spec {spec}: cannot read YAML ({exc.strerror or exc})") from exc
        data = load_bounded(text, f"spec {spec}")
        if not isinstance(data, dict):
            raise ManifestError(f"spec {spec}: expected a mapping at the top level")
        return data
    return dict(spec)


def _validate_manifest(data: dict, where: str, *, building: bool = False) -> Manifest:
    """``building``: checks only a build makes (``manifest.BUILD_CONTEXT``), never where a package is read."""
    try:
        return Manifest.model_validate(data, context=BUILD_CONTEXT if building else None)
    except ValidationError as exc:
        lines = [printable(_field_error(err)) for err in exc.errors()]
        code = "unknown_schema" if any(e["loc"][:1] == ("schema_version",) for e in exc.errors()) else None
        raise ManifestError(f"{where}: " + "; ".join(lines), code=code) from exc


def build_refusal(manifest: Manifest) -> str | None:
    """Why ``build_package`` would refuse ``manifest`` now (a check it makes and a reader does not: golden tolerances
    so wide that the golden check can never fail, a version with a leading zero), or None: for a package built before
    the check, or by hand, at its publish. Readers take it (a package already on a gateway stays readable)."""
    try:
        _validate_manifest(manifest.model_dump(), "", building=True)
    except ManifestError as exc:
        return str(exc).removeprefix(": ")  # ("manifest golden.rtol is ...")
    return None


def _field_error(err) -> str:
    """``manifest outputs[0].threshold is nan: ...``: the field as the YAML reads, then what is wrong."""
    loc, prev = "", None
    for p in err["loc"]:
        if prev == "preprocessing" and p in ("image", "signal"):
            continue  # the ``kind`` pydantic tells the union's members by
        loc += f"[{p}]" if isinstance(p, int) else (f".{p}" if loc else str(p))
        prev = p
    loc = loc or "(top level)"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "lone_surrogate":  # said with its own place (a field, a key or an item at any depth)
        return f"manifest {msg}"
    if err["type"] == "finite_number":
        return f"manifest {loc} is {err['input']!r}: must be a finite number (NaN or infinity disables the check it is used in)"
    return f"manifest {loc} {msg}" if msg.startswith(("is ", "has ")) else f"manifest {loc}: {msg}"


def _batch(inputs: dict[str, np.ndarray]) -> int | None:
    """The rows the golden inputs feed at once (the model's first input's first axis)."""
    return _golden.batch_rows(inputs) or None


def _synthetic_inputs(manifest: Manifest, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    import numpy as np

    rng = np.random.default_rng(seed)
    out = {}
    for t in manifest.inputs:
        shape = [batch if not isinstance(d, int) or d <= 0 else d for d in t.shape]
        if t.shape and not isinstance(t.shape[0], int):
            shape[0] = batch
        if t.dtype.value == "uint8":  # pixels: the whole range, not a normal draw wrapped around
            out[t.name] = rng.integers(0, 256, shape, dtype=np.uint8)
        else:
            out[t.name] = rng.standard_normal(shape).astype(t.dtype.value)
    return out


class _HoldingRoi:
    """``build_package``'s input images, each checked to hold the model's ``roi`` as it is read: the agent
    measures each whole camera frame against their statistics, and for a model with a ``roi`` a frame of
    another size than theirs is UNSURE ("frame size unlike training"). Crops of the roi (the images such a
    model was trained on) were taken: the package was built, and every frame of the line was UNSURE. An image
    that cannot be a frame the roi is cut from is refused, named by its file where the images have ``paths``
    (``image_folder.ImageFolder``). An image exactly the roi's size, the roi at [0, 0], is a crop of it or a
    frame the roi covers whole: its pixels cannot tell, so it is refused unless ``whole_frames`` (the user's
    ``--whole-frames``) says the images are the camera's frames."""

    def __init__(
        self, images: Iterable[np.ndarray], roi: tuple[int, int, int, int], whole_frames: bool = False
    ) -> None:
        self.images, self.roi, self.whole_frames = images, roi, whole_frames

    def __iter__(self) -> Iterator[np.ndarray]:
        x, y, w, h = self.roi
        paths = getattr(self.images, "paths", None)
        option = getattr(self.images, "option", "input images")
        for n, img in enumerate(self.images):
            ih, iw = img.shape[:2]
            if x + w > iw or y + h > ih:
                name = paths[n] if paths is not None and n < len(paths) else f"image {n + 1}"
                raise PackageError(
                    f"{option}: {name}: {iw}x{ih} pixels, which do not hold the model's roi [x={x}, y={y}, "
                    f"width={w}, height={h}] (a frame of at least {x + w}x{y + h}); give the camera's whole "
                    "frames as it takes them, not crops of the roi: the agent measures each whole frame against "
                    "their statistics, and would call every frame of another size UNSURE",
                    code="usage",
                )
            if (x, y, w, h) == (0, 0, iw, ih) and not self.whole_frames:
                name = paths[n] if paths is not None and n < len(paths) else f"image {n + 1}"
                raise PackageError(
                    f"{option}: {name}: {iw}x{ih} pixels, exactly the model's roi [x=0, y=0, width={w}, "
                    f"height={h}]: a crop of the roi cannot be told from a whole frame the roi covers; give the "
                    "camera's whole frames as it takes them (the agent measures each whole frame against their "
                    "statistics, and would call every larger frame UNSURE), or, if the camera's frames are "
                    f"{iw}x{ih}, say so with --whole-frames",
                    code="usage",
                )
            yield img


def build_package(
    model: str | Path,
    spec: Manifest | dict | str | Path,
    out_dir: str | Path,
    *,
    signing_key: str | Path,
    golden_inputs: dict[str, np.ndarray] | str | Path | None = None,
    expected: dict[str, np.ndarray] | str | Path | None = None,
    openvino: bool = False,
    extra_files: Mapping[str, str | Path] | None = None,
    file_name: str | None = None,
    fp32_model: str | Path | None = None,
    check_parity_here: bool = True,
    input_images=None,
    notes: list[str] | None = None,
    whole_frames: bool = False,
) -> Path:
    """Check ``spec`` against the model, compute golden outputs when absent, optionally add an
    OpenVINO IR, sign, and write ``out_dir/NAME-VERSION.edgepkg`` atomically. Returns its path.

    With ``fp32_model`` (``model`` being its INT8 form) the package carries both: the expected
    outputs come from the FP32 model, and the INT8 form's ``parity`` bounds are measured on every
    installed engine here (unless the spec gives them), recorded with this machine's CPU features. ``check_parity_here=False`` skips refusing an INT8 form that breaks spec-given bounds on this
    machine (a package built where INT8 matched, installed where it does not: tests and drills).

    ``input_images`` (an image model's training frames, BGR or grey, any size; a sequence, or an
    iterable that can be read twice such as ``image_folder.ImageFolder``): their statistics go into the
    manifest's ``input_stats`` and their local ones (colour, banding, sharpness by region) into the
    signed ``input_stats_local.json`` (unless ``extra_files`` brings that file), which an agent uses to
    call far-off frames UNSURE. For a model with a ``roi``, each must hold it (``_HoldingRoi``); one exactly
    its size with the roi at [0, 0] is refused as a crop of it unless ``whole_frames`` says they are frames.

    ``notes``, when given, receives one line for each way the golden set cannot judge a form (no golden
    item on one side of a threshold, no item of a label; an INT8-only package's items exempt near its
    threshold or near a tie of its top two labels, named): ``golden.coverage_notes``. They are said, the
    package is still built; an INT8-only package whose golden set leaves a threshold or a classifier nothing
    to judge (``golden.unjudged``) is refused (``GoldenError`` ``golden_unjudged``)."""
    model = Path(model)
    out_dir = Path(out_dir)
    data = _spec_dict(spec)
    data.pop("files", None)
    local_stats = None
    if input_images is not None:
        from model_packager.inputstats import LOCAL_FILE, summarize, summarize_local

        pre = data.get("preprocessing")
        if not isinstance(pre, dict) or pre.get("kind") != "image":
            raise PackageError(
                f"spec for {data.get('name', '?')}-{data.get('version', '?')}: input images are for a model "
                "that takes images (preprocessing kind: image); this one does not",
                code="usage",
            )
        if iter(input_images) is input_images:  # a generator: read once, kept for the second pass
            input_images = list(input_images)
        roi = pre.get("roi")
        if isinstance(roi, list | tuple) and len(roi) == 4 and all(isinstance(v, int) for v in roi):
            input_images = _HoldingRoi(input_images, (roi[0], roi[1], roi[2], roi[3]), whole_frames)
        try:
            data["input_stats"] = summarize(input_images).model_dump(mode="json")
            if LOCAL_FILE not in (extra_files or {}):
                local_stats = summarize_local(input_images)
        except ValueError as exc:  # no image at all
            raise PackageError(f"input images: {exc}", code="usage") from None
    fp32 = Path(fp32_model) if fp32_model is not None else None
    if fp32 is not None:
        data["schema_version"] = max(2, int(data.get("schema_version") or 2))
        data.setdefault("parity", {"output_atol": {}})  # filled in below from measurements
    data.setdefault("created_at", dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat())
    where = f"spec for {data.get('name', '?')}-{data.get('version', '?')}"
    manifest = _validate_manifest(data, where, building=True)
    if not model.is_file():
        raise PackageError(f"{where}: model file {model} does not exist", code="missing_model")
    _golden.check_spec(model, manifest, where)
    if fp32 is not None:
        if not fp32.is_file():
            raise PackageError(f"{where}: FP32 model file {fp32} does not exist", code="missing_model")
        _golden.check_spec(fp32, manifest, f"{where} (FP32 form)")
    import tarfile

    import numpy as np

    from model_packager.keys import key_id, load_private_key

    key = load_private_key(signing_key)

    with tempfile.TemporaryDirectory(prefix=".build-", dir=out_dir if out_dir.exists() else None) as tmp_s:
        tmp = Path(tmp_s)
        if isinstance(golden_inputs, str | Path):
            inputs = _golden.load_npz(Path(golden_inputs))
        elif golden_inputs is None:
            inputs = _synthetic_inputs(manifest)
        else:
            inputs = {k: np.asarray(v) for k, v in golden_inputs.items()}
        ort_run = None  # the expected outputs when ONNX Runtime made them: the same session's run, kept
        rows = _golden.item_rows(manifest, inputs)
        int8_only = fp32 is None and manifest.quantization.scheme.startswith("int8")
        # also run as the agent runs each item, whoever gives the expected outputs: a model whose item's outputs
        # depend on the other items of its batch passed here and verify --run, and every agent refused it "on this
        # CPU" (with expected outputs given, this check was skipped)
        batched = _golden.run_batch_checked(
            manifest, fp32 or model, inputs, rows, int8_only=int8_only, where=where
        )
        if isinstance(expected, str | Path):
            exp = _golden.load_npz(Path(expected))
        elif expected is None:
            exp = ort_run = batched
        else:
            exp = {k: np.asarray(v) for k, v in expected.items()}
        (tmp / "golden").mkdir()
        # numpy's stub types **kwds as if they could be its allow_pickle flag
        np.savez(tmp / "golden" / "inputs.npz", **inputs)  # type: ignore[arg-type]
        np.savez(tmp / "golden" / "expected.npz", **exp)  # type: ignore[arg-type]

        files: list[tuple[str, Path, FileRole]] = [
            (MODEL, model, FileRole.MODEL),
            (manifest.golden.inputs, tmp / "golden" / "inputs.npz", FileRole.GOLDEN),
            (manifest.golden.expected, tmp / "golden" / "expected.npz", FileRole.GOLDEN),
        ]
        if fp32 is not None:
            files.insert(1, (MODEL_FP32, fp32, FileRole.MODEL_FP32))
        if int8_only and (bad := _golden.unjudged(manifest, exp, rows)):
            # its form is held to nothing there on another CPU: a collapse there would serve. Said before the
            # engines' runs, which hold the form to what the golden set judges: a set that judges nothing is
            # the first thing to fix
            raise GoldenError(
                f"{where}: golden set cannot judge the INT8-only form: " + "; ".join(bad),
                code="golden_unjudged",
            )
        checks = []
        int8_runs: dict[str, dict[str, np.ndarray]] = {}
        flags = list(cpu_flags())
        for engine in _golden.available_engines():
            if engine == "openvino" and not openvino:
                continue
            ov_xml = None
            if engine == "openvino":
                from model_packager.runtimes import load, ov_read

                ov = load("openvino")  # (without its usage telemetry: see runtimes)

                (tmp / "openvino").mkdir()
                ov_xml = tmp / OV_XML
                ov.save_model(ov_read(model), str(ov_xml), compress_to_fp16=False)
                files += [
                    (OV_XML, ov_xml, FileRole.OPENVINO_XML),
                    (OV_BIN, tmp / OV_BIN, FileRole.OPENVINO_BIN),
                ]
            # the form whose outputs are the golden expected ones must reproduce them closely
            if engine == "onnxruntime" and ort_run is not None:
                got = ort_run  # one ONNX Runtime session per build, not a second one for the same run
            else:
                got = _golden.run_engine(engine, fp32 or model, inputs, None if fp32 is not None else ov_xml)
            # ... and their verdicts: an agent refuses a form that flips one (golden items sit near the threshold)
            worst, bad = _golden.golden_problems(
                manifest,
                exp,
                got,
                _golden.item_rows(manifest, inputs),
                int8_only=fp32 is None and manifest.quantization.scheme.startswith("int8"),
            )
            if bad:
                raise GoldenError(
                    f"{where}: {engine} does not reproduce the golden outputs: " + "; ".join(bad)
                )
            bad = _golden.interpretation_problems(manifest, got, _batch(inputs))
            if bad:  # an agent would install it and fail every frame
                raise GoldenError(f"{where}: " + "; ".join(bad), code="uninterpretable")
            checks.append(
                EngineCheck(
                    engine=engine,
                    version=_golden.engine_version(engine),
                    max_abs_diff=worst,
                    precision="f32" if engine == "openvino" else None,
                    form="fp32" if fp32 is not None else None,
                    cpu_flags=flags,
                )
            )
            if fp32 is not None:  # the INT8 form: measured against the FP32 reference
                int8_runs[engine] = _golden.run_engine(engine, model, inputs, ov_xml)
        if notes is not None:
            notes += _golden.coverage_notes(manifest, exp, rows, int8_only=int8_only)
        if fp32 is not None:
            data["parity"] = _parity_bounds(
                manifest, data.get("parity") or {}, exp, int8_runs, where, check_parity_here, rows
            )
            manifest = _validate_manifest({**data, "files": []}, where)
            for engine, got in int8_runs.items():
                dev, _ = _golden.parity(manifest, exp, got)
                checks.append(
                    EngineCheck(
                        engine=engine,
                        version=_golden.engine_version(engine),
                        max_abs_diff=max(dev.values(), default=0.0),
                        form="int8",
                        precision="f32" if engine == "openvino" else None,
                        cpu_flags=flags,
                    )
                )
        if openvino and "openvino" not in _golden.available_engines():
            raise PackageError(
                f"{where}: --openvino asked for but openvino is not installed (pip install '.[openvino]')",
                code="openvino_missing",
            )
        for name, path in (extra_files or {}).items():
            _check_entry_name(name, where)
            role = FileRole.REPORT if name.startswith("report") else FileRole.OTHER
            files.append((name, Path(path), role))
        if local_stats is not None:
            from model_packager.inputstats import LOCAL_FILE

            (tmp / LOCAL_FILE).write_text(json.dumps(local_stats))
            files.append((LOCAL_FILE, tmp / LOCAL_FILE, FileRole.OTHER))

        names = [n for n, _, _ in files]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise PackageError(f"{where}: two files named {sorted(dupes)}", code="duplicate_entry")
        entries = []
        for name, path, role in files:
            digest, size = _sha256_file(path)
            entries.append(FileEntry(path=name, size=size, sha256=digest, role=role))
        data["files"] = [e.model_dump(mode="json") for e in entries]
        data["engines"] = [c.model_dump(mode="json", exclude_none=True) for c in checks] or data.get(
            "engines", []
        )
        manifest = _validate_manifest(data, where)
        manifest_bytes = yaml.safe_dump(
            manifest.model_dump(mode="json", exclude_none=True), sort_keys=False
        ).encode()
        sig = {
            "algorithm": "ed25519",
            "key_id": key_id(key.public_key()),
            "signature": base64.b64encode(key.sign(manifest_bytes)).decode(),
        }
        sig_bytes = (json.dumps(sig, indent=1) + "\n").encode()

        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / (file_name or f"{manifest.package_id}.edgepkg")
        fd, part = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=out_dir)
        try:
            with (
                os.fdopen(fd, "wb") as raw,
                tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar,
            ):
                _add_bytes(tar, MANIFEST, manifest_bytes)
                _add_bytes(tar, SIGNATURE, sig_bytes)
                for name, path, _ in files:
                    info = _info(name, path.stat().st_size)
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                tar.close()
                raw.flush()
                os.fsync(raw.fileno())
            os.replace(part, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(part)
            raise
    return target


def _parity_bounds(
    manifest: Manifest,
    given: dict,
    expected: dict[str, np.ndarray],
    runs: dict[str, dict[str, np.ndarray]],
    where: str,
    refuse: bool = True,
    rows: int = 1,
) -> dict:
    """The INT8 form's bounds against the FP32 reference: the spec's, or ``PARITY_HEADROOM`` times
    the largest deviation measured here on any engine (at least 1% of the output's range, and the
    golden atol). Refuses a package whose INT8 form already breaks its bounds on the build machine.
    ``min_agreement`` is the spec's, else 1.0: every golden verdict. (It was the agreement measured
    here, so an INT8 form that flipped golden items at build was signed to flip them at every agent, a
    tolerance nobody chose; a user who accepts some sets it in the spec.)"""
    import numpy as np

    measured: dict[str, float] = {}
    for engine, got in runs.items():
        dev, _ = _golden.parity(manifest, expected, got)
        for k, d in dev.items():
            if not np.isfinite(d):  # no bound can be set from it, nor written to a manifest
                raise GoldenError(
                    f"{where}: the INT8 form's output {k!r} on {engine} is missing, of another shape or "
                    "NaN/Inf where the FP32 form's is not; refused",
                    code="int8_parity",
                )
            measured[k] = max(measured.get(k, 0.0), d)
    chosen = given.get("min_agreement")
    bounds = dict(given.get("output_atol") or {})
    for k, d in measured.items():
        if k not in bounds:
            scale = float(np.nanmax(np.abs(expected[k]))) if np.size(expected[k]) else 0.0
            bounds[k] = round(max(PARITY_HEADROOM * d, 0.01 * scale, manifest.golden.atol), 6)
    out = {
        "output_atol": bounds,
        "min_agreement": 1.0 if chosen is None else chosen,
        "measured": {k: round(v, 6) for k, v in measured.items()},
        "headroom": PARITY_HEADROOM,
    }
    probe = _validate_manifest({**manifest.model_dump(mode="json"), "parity": out, "files": []}, where)
    for engine, got in runs.items() if refuse else ():
        dev, agree = _golden.parity(probe, expected, got)
        bad = _golden.parity_problems(probe, dev, agree)
        if bad and chosen is None and agree + 1e-9 < 1.0:
            bad += _golden.verdict_problems(probe, expected, got, rows)
            bad.append(
                "the spec sets no parity.min_agreement, so every golden verdict must agree with FP32: "
                "quantize again (docs/own-model.md), or set parity.min_agreement in the spec to the share "
                "you accept"
            )
        if bad:
            raise GoldenError(
                f"{where}: the INT8 form breaks its parity bounds on {engine} on the build machine "
                f"({describe_cpu()}): " + "; ".join(bad),
                code="int8_parity",
            )
    return out


def _info(name: str, size: int) -> tarfile.TarInfo:
    import tarfile

    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0  # reproducible archives: same inputs, same bytes
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_info(name, len(data)), io.BytesIO(data))


# --------------------------------------------------------------------------------------- verify


_NAME_MAX = 255


def _check_entry_name(name: str, where: str) -> None:
    p = PurePosixPath(name)
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or p.is_absolute()
        or ".." in p.parts
        or "\x00" in name
    ):
        raise UnsafeArchiveError(
            f"{where}: entry {printable(repr(name))} has an unsafe path (absolute or with '..'); refused",
            code="path_escape",
        )
    if (
        not name.isprintable()
        or len(name) > _NAME_MAX
        or "." in name.split("/")  # PurePosixPath drops '.' parts: p.parts never holds one
        or name.endswith("/")
        or "//" in name
    ):
        raise UnsafeArchiveError(
            f"{where}: entry {printable(repr(name))} has a name with control characters, "
            f"empty or '.' parts, or over {_NAME_MAX} characters; refused",
            code="bad_name",
        )


class _Archive:
    """An open package file and its strict parser (``model_packager.tarread``)."""

    def __init__(self, fileobj, reader: StrictTarReader) -> None:
        self.fileobj = fileobj
        self.reader = reader


class _Reader:
    """One pass over the archive's members with every structural check applied.

    Reading never goes through ``tarfile``: ``StrictTarReader`` accepts only the ustar/PAX subset
    that ``build_package`` writes, with every header bounded (see ``tarread``)."""

    def __init__(self, pkg: Path, max_bytes: int) -> None:
        self.pkg = pkg
        self.max_bytes = max_bytes
        self.label = printable(pkg.name)

    @contextlib.contextmanager
    def open(self) -> Iterator[_Archive]:
        try:
            f = open_regular(self.pkg)
        except FileNotFoundError as exc:
            raise PackageError(
                f"package {printable(str(self.pkg))} does not exist", code="not_found"
            ) from exc
        except OSError as exc:
            raise UnsafeArchiveError(
                f"package {self.label}: cannot read it ({printable(exc.strerror or exc)})", code="unreadable"
            ) from exc
        try:
            yield _Archive(f, StrictTarReader(f, self.pkg.name, self.max_bytes))
        finally:
            f.close()

    def members(self, tar: _Archive) -> Iterator[Member]:
        seen: set[str] = set()
        folders: set[str] = set()
        total = 0
        count = 0
        try:
            for m in tar.reader:
                count += 1
                if count > MAX_ENTRIES:
                    raise UnsafeArchiveError(
                        f"package {self.label}: more than {MAX_ENTRIES} entries; refused",
                        code="too_many_entries",
                    )
                _check_entry_name(m.name, f"package {self.label}")
                if m.name in seen:
                    raise UnsafeArchiveError(
                        f"package {self.label}: entry {printable(repr(m.name))} appears twice; refused",
                        code="duplicate_entry",
                    )
                parents = {"/".join(m.name.split("/")[:i]) for i in range(1, m.name.count("/") + 1)}
                if m.name in folders or parents & seen:  # "a" and "a/b" cannot both be files
                    raise UnsafeArchiveError(
                        f"package {self.label}: entry {printable(repr(m.name))} is both a file "
                        "and a folder of another entry; refused",
                        code="path_conflict",
                    )
                seen.add(m.name)
                folders |= parents
                total += m.size
                if total > self.max_bytes:
                    raise UnsafeArchiveError(
                        f"package {self.label}: content exceeds the {self.max_bytes} byte "
                        "limit (archive bomb?); refused",
                        code="too_large",
                    )
                yield m
        except OSError as exc:
            raise UnsafeArchiveError(
                f"package {self.label}: archive is unreadable ({printable(exc)}); download it again",
                code="truncated",
            ) from exc

    def read_all(self, tar: _Archive, m: Member, limit: int) -> bytes:
        if m.size > limit:
            raise UnsafeArchiveError(
                f"package {self.label}: {printable(m.name)} has {m.size} bytes, over the "
                f"{limit} byte limit for it; refused",
                code="too_large",
            )
        buf = io.BytesIO()
        self.stream(tar, m, buf)
        return buf.getvalue()

    def stream(self, tar: _Archive, m: Member, sink=None) -> tuple[str, int]:
        """Hash (and copy to ``sink``) one regular member, reading the archive file directly: an
        uncompressed tar stores it contiguously at ``offset_data``."""
        h = hashlib.sha256()
        n = 0
        buf = bytearray(_CHUNK)
        view = memoryview(buf)
        f = tar.fileobj
        try:
            f.seek(m.offset_data)
            while n < m.size:
                got = f.readinto(view[: min(_CHUNK, m.size - n)])
                if not got:
                    break
                h.update(view[:got])
                if sink is not None:
                    sink.write(view[:got])
                n += got
        except OSError as exc:
            raise UnsafeArchiveError(
                f"package {self.label}: entry {printable(repr(m.name))} is unreadable "
                f"({printable(exc)}); download it again",
                code="truncated",
            ) from exc
        if n != m.size:
            raise UnsafeArchiveError(
                f"package {self.label}: entry {printable(repr(m.name))} is truncated "
                f"({n} of {m.size} bytes); download it again",
                code="truncated",
            )
        return h.hexdigest(), n


_KEY_ID_RE = re.compile(r"^[0-9a-f]{16}$")


def _check_signature(
    label: str, manifest_bytes: bytes, sig_bytes: bytes | None, trusted: TrustedKeys, *, expiry: bool = True
) -> str:
    """The key id that signed ``manifest_bytes``. ``expiry``: a key whose trust ended (its file's ``not-after``)
    is refused (a package to install); False for a package installed while its key was trusted (its folder's
    check at a start: a gateway does not stop serving on a date)."""
    if sig_bytes is None:
        raise SignatureError(
            f"package {label}: no signature ({SIGNATURE} missing); refused: only signed packages "
            "are accepted",
            code="unsigned",
        )
    try:
        sig = json.loads(sig_bytes)
        if not isinstance(sig, dict):
            raise ValueError("not a JSON object")
        kid, b64, alg = sig.get("key_id"), sig.get("signature"), sig.get("algorithm")
        if not isinstance(alg, str) or alg != "ed25519":
            raise ValueError(f"algorithm {printable(repr(alg), 40)} is not 'ed25519'")
        if not isinstance(kid, str) or not _KEY_ID_RE.match(kid):
            raise ValueError(f"key_id {printable(repr(kid), 40)} is not 16 hex digits")
        if not isinstance(b64, str) or len(b64) > 200:
            raise ValueError("signature is not a base64 string")
        raw = base64.b64decode(b64, validate=True)
        if len(raw) != 64:
            raise ValueError(f"signature has {len(raw)} bytes, an Ed25519 signature has 64")
    except (ValueError, TypeError, RecursionError) as exc:
        raise SignatureError(
            f"package {label}: {SIGNATURE} is malformed ({printable(exc)}); refused", code="bad_signature"
        ) from None
    key = trusted.get(kid)
    if key is None:
        raise SignatureError(
            f"package {label}: signed by key {kid}, which is not among the trusted keys "
            f"{trusted.ids()}; add its .pub to the trusted keys if you trust it",
            code="untrusted_key",
        )
    ends = trusted.not_after.get(kid) if expiry else None
    if ends is not None and time.time() >= ends:
        when = dt.datetime.fromtimestamp(ends, dt.UTC).isoformat(timespec="seconds")
        where = trusted.sources.get(kid, "its key file")
        raise SignatureError(
            f"package {label}: signed by key {kid}, whose trust ended at {when} (not-after in "
            f"{printable(where)}); refused: have it signed with a current key, or move not-after on if the key "
            "is still safe",
            code="key_expired",
        )
    from cryptography.exceptions import InvalidSignature

    try:
        key.verify(raw, manifest_bytes)
    except InvalidSignature as exc:
        raise SignatureError(
            f"package {label}: the signature does not match manifest.yaml (manifest edited "
            f"after signing, or signature forged); refused",
            code="bad_signature",
        ) from exc
    return kid


_PARSED: dict[str, Manifest] = {}  # sha256 of manifest bytes -> its (frozen) Manifest; the last few only
_PARSED_LOCK = threading.Lock()


def _parse_manifest(label: str, data: bytes) -> Manifest:
    """The manifest of ``data``, parsed once: the same bytes (the config's check, then the install;
    verify, then open) give the same frozen ``Manifest`` without a second parse. Failures are not kept."""
    key = hashlib.sha256(data).hexdigest()
    with _PARSED_LOCK:
        m = _PARSED.get(key)
    if m is not None:
        return m
    m = _parse_manifest_bytes(label, data)
    with _PARSED_LOCK:
        if len(_PARSED) >= 8:
            _PARSED.pop(next(iter(_PARSED)))
        _PARSED[key] = m
    return m


def _parse_manifest_bytes(label: str, data: bytes) -> Manifest:
    doc = load_bounded(data, f"package {label}: manifest.yaml")
    if not isinstance(doc, dict):
        raise ManifestError(f"package {label}: manifest.yaml is not a mapping")
    manifest = _validate_manifest(doc, f"package {label}")
    listed = {f.path for f in manifest.files}
    for what, path in (
        ("golden.inputs", manifest.golden.inputs),
        ("golden.expected", manifest.golden.expected),
    ):
        if path not in listed:
            raise ManifestError(
                f"package {label}: {what} {printable(repr(path))} is not one of the listed files; refused",
                code="golden_not_listed",
            )
    return manifest


def _verify(
    pkg: Path,
    trusted: TrustedKeys,
    max_bytes: int,
    target: Path | None,
    check_model_spec: bool = True,
    hashes: bool = True,
) -> tuple[Manifest, str]:
    """Verify (and, with ``target``, extract into it). Returns (manifest, signer key id). ``hashes`` False (no
    ``target``): the first pass alone, structure, manifest and signature, no file hashed."""
    reader = _Reader(pkg, max_bytes)
    label = reader.label
    head: dict[str, bytes] = {}
    with reader.open() as tar:  # pass 1: structure, manifest and signature
        for m in reader.members(tar):
            if m.name in (MANIFEST, SIGNATURE):
                head[m.name] = reader.read_all(
                    tar, m, MAX_MANIFEST_BYTES if m.name == MANIFEST else MAX_SIG_BYTES
                )
    if MANIFEST not in head:
        raise ManifestError(f"package {label}: no manifest.yaml; not a model package", code="no_manifest")
    signer = _check_signature(label, head[MANIFEST], head.get(SIGNATURE), trusted)
    manifest = _parse_manifest(label, head[MANIFEST])
    if not hashes and target is None:
        return manifest, signer
    if target is not None:  # the extracted folder describes itself (and can be re-verified)
        (target / MANIFEST).write_bytes(head[MANIFEST])
        (target / SIGNATURE).write_bytes(head[SIGNATURE])
    listed = {f.path: f for f in manifest.files}
    model_entry = manifest.file(FileRole.MODEL)
    fp32_entry = manifest.file(FileRole.MODEL_FP32)
    # the graph of each form checked against the manifest: (entry, its bytes when not extracted)
    graphs = [(e, io.BytesIO()) for e in (model_entry, fp32_entry) if e is not None]
    seen: set[str] = set()
    with reader.open() as tar:  # pass 2: every listed file hashed (and written)
        for m in reader.members(tar):
            if m.name in (MANIFEST, SIGNATURE):
                continue
            entry = listed.get(m.name)
            if entry is None:
                raise IntegrityError(
                    f"package {label}: {printable(m.name)} is in the archive but not listed in the "
                    "manifest; "
                    "refused",
                    code="unlisted_file",
                )
            sink: BinaryIO | None = None
            if target is not None:
                dest = target / m.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                sink = open(dest, "wb")
            elif check_model_spec:  # a model form: kept to check its graph against the manifest
                sink = next((b for e, b in graphs if e.path == m.name), None)
            try:
                digest, size = reader.stream(tar, m, sink)
            finally:
                if sink is not None and target is not None:
                    sink.close()
            _check_file(label, m.name, size, digest, entry, "; download it again")
            seen.add(m.name)
    absent = sorted(set(listed) - seen)
    if absent:
        raise IntegrityError(
            f"package {label}: {printable(', '.join(absent))} listed in the manifest but absent from the "
            "archive; refused",
            code="missing_file",
        )
    if model_entry is None:
        raise ManifestError(f"package {label}: the manifest lists no file with role 'model'", code="no_model")
    if check_model_spec:
        for form, kept in graphs:
            _golden.check_spec(
                target / form.path if target is not None else Path(form.path),
                manifest,
                f"package {label}" + (" (FP32 form)" if form is fp32_entry else ""),
                data=kept.getvalue() if target is None else None,
            )
    return manifest, signer


def verify_package(
    pkg: str | Path,
    trusted: TrustedKeys,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    check_model_spec: bool = True,
    hashes: bool = True,
) -> Manifest:
    """Check signature, structure, every hash and size without extracting. Returns the manifest.

    ``check_model_spec`` also parses the ONNX graph (held in memory) against the manifest's I/O;
    it costs about one more pass over the model's bytes. ``hashes`` False: the signature, the manifest and the
    archive's structure only (every entry's name, type and the total size bound), no file hashed nor graph read:
    a first look at a file whose copy is verified whole next (``cloud-trainer publish``)."""
    return _verify(Path(pkg), trusted, max_bytes, None, check_model_spec, hashes)[0]


def verify_folder(folder: str | Path, trusted: TrustedKeys) -> tuple[Manifest, str]:
    """Check an extracted package folder again, as ``open_package`` left it: the signature over its
    ``manifest.yaml`` (``manifest.sig`` beside it) by a trusted key, and every listed file a regular
    file (no link) with its size and SHA-256. Returns (manifest, signer key id); raises
    ``SignatureError``/``IntegrityError``/``ManifestError`` naming the file. Costs one read of every
    file (disk speed: about 1 s per GB)."""
    root = Path(folder)
    label = printable(root.name)
    try:
        with open_regular(root / MANIFEST) as f:
            manifest_bytes = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise ManifestError(
            f"package {label}: cannot read manifest.yaml ({printable(exc.strerror or exc)})",
            code="no_manifest",
        ) from None
    if len(manifest_bytes) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"package {label}: manifest.yaml is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        with open_regular(root / SIGNATURE) as f:
            sig_bytes: bytes | None = f.read(MAX_SIG_BYTES)
    except FileNotFoundError:
        sig_bytes = None
    except OSError as exc:
        raise SignatureError(
            f"package {label}: cannot read {SIGNATURE} ({printable(exc.strerror or exc)})", code="unsigned"
        ) from None
    # installed while its key was trusted: a key's end stops new installs, not what serves
    signer = _check_signature(label, manifest_bytes, sig_bytes, trusted, expiry=False)
    manifest = _parse_manifest(label, manifest_bytes)
    for entry in manifest.files:
        _check_entry_name(entry.path, f"package {label}")
        path = root / entry.path
        if path.is_symlink() or not path.is_file() or not path.resolve().is_relative_to(root.resolve()):
            raise IntegrityError(
                f"package {label}: {printable(entry.path)} listed in the manifest is absent or not a regular "
                "file",
                code="missing_file",
            )
        digest, size = _sha256_file(path)
        _check_file(label, entry.path, size, digest, entry, "")
    return manifest, signer


def package_signer(pkg: str | Path, trusted: TrustedKeys) -> str:
    """The id of the key among ``trusted`` whose signature over ``manifest.yaml`` the package holds: the signature
    alone, whatever the key's not-after, no file hashed (``verify_package`` checks those). Raises
    ``SignatureError`` (unsigned, malformed, signed by a key not among ``trusted``, a signature that does not
    match), ``ManifestError`` (no manifest) or ``UnsafeArchiveError`` (the archive's structure)."""
    reader = _Reader(Path(pkg), DEFAULT_MAX_BYTES)
    head: dict[str, bytes] = {}
    with reader.open() as tar:
        for m in reader.members(tar):
            if m.name in (MANIFEST, SIGNATURE):
                head[m.name] = reader.read_all(
                    tar, m, MAX_MANIFEST_BYTES if m.name == MANIFEST else MAX_SIG_BYTES
                )
    if MANIFEST not in head:
        raise ManifestError(
            f"package {reader.label}: no manifest.yaml; not a model package", code="no_manifest"
        )
    return _check_signature(reader.label, head[MANIFEST], head.get(SIGNATURE), trusted, expiry=False)


def archive_limit(max_bytes: int = DEFAULT_MAX_BYTES) -> int:
    """The most bytes a package file of at most ``max_bytes`` of content takes: that content, and for each of its
    ``MAX_ENTRIES`` entries a header, one PAX header and one GNU long name at their bounds and the padding of each
    to a block, and the end of the archive (``tarfile`` writes it up to a 10-KiB record)."""
    per_entry = 4 * BLOCK + MAX_PAX_BYTES + MAX_NAME_BYTES + 3 * BLOCK
    return max_bytes + MAX_ENTRIES * per_entry + 20 * BLOCK


def package_digest(pkg: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """The SHA-256 of the package file ``pkg``, a regular file of at most ``archive_limit(max_bytes)`` bytes.
    ``PackageError`` naming it otherwise, at once: a package path made a named pipe waited for a writer, and one
    linked to ``/dev/zero`` was hashed without end (an agent's install held until its 600-s bound); one larger
    than a package can be is refused by its size, unread."""
    pkg = Path(pkg)
    label, limit = printable(pkg.name), archive_limit(max_bytes)
    too_large = (
        f"package {label}: larger than {limit} bytes, the most a package of {max_bytes} bytes takes; refused"
    )
    try:
        f = open_regular(pkg)
    except FileNotFoundError as exc:
        raise PackageError(f"package {printable(str(pkg))} does not exist", code="not_found") from exc
    except OSError as exc:
        raise UnsafeArchiveError(
            f"package {label}: cannot read it ({printable(exc.strerror or exc)})", code="unreadable"
        ) from exc
    with f:
        if os.fstat(f.fileno()).st_size > limit:
            raise UnsafeArchiveError(too_large, code="too_large")
        h, n = hashlib.sha256(), 0
        while n <= limit and (chunk := f.read(min(_CHUNK, limit + 1 - n))):
            h.update(chunk)
            n += len(chunk)
        if n > limit:  # (grown while read)
            raise UnsafeArchiveError(too_large, code="too_large")
    return h.hexdigest()


def open_package(
    pkg: str | Path,
    target_dir: str | Path,
    trusted: TrustedKeys,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    check_model_spec: bool = True,
) -> OpenedPackage:
    """Verify and extract into ``target_dir`` (which must not exist yet, or be empty).

    Extraction goes to a temporary sibling, hashed while written, and is renamed into place only
    when every check passed; on any failure nothing is left behind.
    """
    pkg, target = Path(pkg), Path(target_dir)
    if target.exists() and any(target.iterdir()):
        raise PackageError(
            f"package {printable(pkg.name)}: target folder {printable(str(target))} is not empty",
            code="target_not_empty",
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
    try:
        manifest, signer = _verify(pkg, trusted, max_bytes, tmp, check_model_spec)
        if target.exists():
            target.rmdir()
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return opened_from(manifest, target, signer, package_digest(pkg, max_bytes))


def opened_from(manifest: Manifest, root: Path, signer: str, digest: str) -> OpenedPackage:
    """The paths of a verified package's files under its extracted ``root``."""
    ov = manifest.file(FileRole.OPENVINO_XML)
    fp32 = manifest.file(FileRole.MODEL_FP32)
    model = manifest.file(FileRole.MODEL)
    assert model is not None  # verify refuses a package without its model
    return OpenedPackage(
        manifest=manifest,
        root=root,
        model_path=root / model.path,
        openvino_xml=root / ov.path if ov else None,
        golden_inputs=root / manifest.golden.inputs,
        golden_expected=root / manifest.golden.expected,
        signer=signer,
        digest=digest,
        fp32_model_path=root / fp32.path if fp32 else None,
    )


def read_manifest(pkg: str | Path) -> Manifest:
    """The manifest of a package, UNVERIFIED (for ``inspect``); structure checks still apply."""
    pkg = Path(pkg)
    reader = _Reader(pkg, DEFAULT_MAX_BYTES)
    with reader.open() as tar:
        for m in reader.members(tar):
            if m.name == MANIFEST:
                return _parse_manifest(reader.label, reader.read_all(tar, m, MAX_MANIFEST_BYTES))
    raise ManifestError(f"package {reader.label}: no manifest.yaml; not a model package", code="no_manifest")


def run_golden(
    opened: OpenedPackage, engines: tuple[str, ...] | list[str] = _golden.ENGINES
) -> dict[str, float]:
    """Run the golden inputs on every engine in ``engines`` that is installed and has a form to run;
    return the largest deviation per engine (and form, ``engine/int8``, when the package carries
    both); raise ``GoldenError`` when one is beyond tolerance or gives another verdict than the expected
    outputs on a golden item (``golden.golden_problems``; an INT8-only package's form by its verdicts,
    ``golden.int8_only_problems``). The INT8 form of a two-form package
    is held to its ``parity`` bounds against the FP32 reference: breaking them on this CPU is an
    error here, where the agent would fall back to FP32 and say so."""
    inputs = _golden.load_npz(opened.golden_inputs)
    expected = _golden.load_npz(opened.golden_expected)
    m = opened.manifest
    rows = _golden.item_rows(m, inputs)
    results: dict[str, float] = {}
    present = _golden.available_engines()
    for engine in engines:
        if engine not in present:
            continue
        ov_xml = opened.openvino_xml if engine == "openvino" else None
        ref_model = opened.fp32_model_path or opened.model_path
        if engine == "onnxruntime":
            # run as the agent runs each item too, as build does: a package built before build did (or with its
            # expected outputs given) whose item's outputs depend on the other items of its batch passed here,
            # and every agent refused it "on this CPU"
            got = _golden.run_batch_checked(
                m,
                ref_model,
                inputs,
                rows,
                int8_only=m.quantization.scheme.startswith("int8") and not m.has_fp32,
                where=f"package {m.package_id}",
            )
        else:
            got = _golden.run_engine(engine, ref_model, inputs, None if opened.fp32_model_path else ov_xml)
        worst, bad = _golden.golden_problems(m, expected, got, rows)
        if bad:
            raise GoldenError(
                f"package {m.package_id}: {engine} does not reproduce the golden outputs: " + "; ".join(bad)
            )
        bad = _golden.interpretation_problems(m, got, _batch(inputs))
        if bad:
            raise GoldenError(f"package {m.package_id}: " + "; ".join(bad), code="uninterpretable")
        results[engine] = worst
        if opened.fp32_model_path is not None:
            dev, agree = _golden.parity(
                m, expected, _golden.run_engine(engine, opened.model_path, inputs, ov_xml)
            )
            bad = _golden.parity_problems(m, dev, agree)
            if bad:
                raise GoldenError(
                    f"package {m.package_id}: the INT8 form on {engine} is off on this CPU "
                    f"({describe_cpu()}): " + "; ".join(bad),
                    code="int8_parity",
                )
            results[f"{engine}/int8"] = max(dev.values(), default=0.0)
    return results


def golden_notes(
    opened: OpenedPackage,
    inputs: dict[str, np.ndarray] | None = None,
    expected: dict[str, np.ndarray] | None = None,
) -> list[str]:
    """``golden.coverage_notes`` of an opened package: one line for each way its golden set cannot judge a
    form (``verify --run`` says them beside the runs, an agent at each load; the build said them when it was
    built). ``inputs``/``expected``: its golden files when already loaded (read from it otherwise)."""
    m = opened.manifest
    inputs = _golden.load_npz(opened.golden_inputs) if inputs is None else inputs
    expected = _golden.load_npz(opened.golden_expected) if expected is None else expected
    int8_only = m.quantization.scheme.startswith("int8") and not m.has_fp32
    return _golden.coverage_notes(m, expected, _golden.item_rows(m, inputs), int8_only=int8_only)
