"""`cloud-trainer train|quantize|evaluate|package|publish|build`.

``build anomaly`` trains the good-only anomaly family (``cloud_trainer.train.anomaly``) from a folder of
good images or an MVTec AD root, in one command only. The families and the verbs each accepts come
from ``cloud_trainer.train.families.TRAINER_FAMILIES``.

``build`` runs the whole pipeline in one command (dataset → train → export → INT8 → evaluate →
gate → package → publish). The stage verbs run one stage each on a shared work folder
(``--work``, default ``var/builds/<family>``), in that order: ``train`` (and export FP32),
``quantize``, ``evaluate`` (exit 3 when the gate fails), ``package`` (refused after a failed gate
unless ``--force``), ``publish``. Exit codes: 0 done, 2 bad input or a stage run out of order,
3 rejected by the gate.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path


def _parser(prog: str) -> argparse.ArgumentParser:
    from cloud_trainer.train.families import family_names, load_family

    ap = argparse.ArgumentParser(prog=f"cloud-trainer {prog}")
    ap.add_argument("family", choices=family_names(prog))
    ap.add_argument(
        "--work", type=Path, help="work folder shared by the stages (default: var/builds/<family>)"
    )
    if prog in ("train", "build"):
        ap.add_argument(
            "--dataset", required=True, type=Path, help="simulator dataset folder (edge-sim dataset ...)"
        )
        ap.add_argument("--seed", type=int, default=0)
        epochs = ", ".join(
            f"{k} {load_family(k).default_epochs}"
            + (
                f" ({load_family(k).patch_default_epochs} for its patch recipe)"
                if load_family(k).patch_default_epochs
                else ""
            )
            for k in family_names(prog)
            if load_family(k).default_epochs
        )
        ap.add_argument("--epochs", type=_positive, default=None, help=f"default: {epochs} (early stopping)")
        ap.add_argument(
            "--size",
            type=_positive,
            default=128,
            help="input size in pixels (vision: per tile when tiled; anomaly)",
        )
        ap.add_argument(
            "--roi",
            type=_ints(4, "X,Y,WIDTH,HEIGHT"),
            help="vision and anomaly: look only at this pixel box of each frame (e.g. 320,160,640,640)",
        )
        ap.add_argument(
            "--tiles",
            type=_ints(2, "COLUMNSxROWS", "x"),
            help="vision and anomaly: cut the frame (or roi) into a grid of tiles, each at --size (e.g. 4x3); "
            "an image is NG when any tile is (vision: needs masks; anomaly: good images only)",
        )
        ap.add_argument("--gray", action="store_true", help="vision: grey input (one channel)")
        ap.add_argument(
            "--signal-features",
            choices=["condition", "bands"],
            default="condition",
            help="maintenance: condition (orders, envelope, relative levels; default) or bands (64 "
            "fixed spectral bands, tied to one machine's speed)",
        )
        ap.add_argument(
            "--bearing",
            type=_floats("N_ELEMENTS,BALL_D_MM,PITCH_D_MM[,CONTACT_ANGLE_DEG]"),
            help="maintenance: the bearing's geometry (default: the dataset's bearing, else none)",
        )
        ap.add_argument(
            "--speed-tag",
            help="maintenance: scalar input carrying the shaft speed in rpm (the dataset "
            "gives speed_rpm per window); default: speed estimated from the spectrum",
        )
        ap.add_argument("--threads", type=_positive, default=None)
        ap.add_argument(
            "--degrade", action="store_true", help="deliberately damage the candidate (gate demo)"
        )
        ap.add_argument(
            "--recipe",
            default="auto",
            choices=["auto", "patch", "patch-texture", "cnn"],
            help="vision: patch = a small patch net learnt on your good images with synthetic "
            "defects drawn on them, thresholded on your defect images; patch-texture = fixed "
            "texture features' good-patch memory bank (the former patch recipe); cnn = the "
            "compact CNN from scratch (needs thousands); auto (default) = patch for datasets "
            "imported from your own images, cnn for the simulator's (docs/trainer.md)",
        )
        ap.add_argument(
            "--init-from",
            type=Path,
            help="vision: fine-tune from a parent's weights (its work folder, "
            "its registry folder, or a model.pt)",
        )
    if prog in ("train", "build"):
        ap.add_argument(
            "--false-reject-rate",
            type=float,
            default=0.01,
            help="anomaly, and vision's patch recipes: share of good parts the threshold may reject "
            "(default 0.01; more catches more defects where good and defect parts look alike)",
        )
    if prog == "build":
        ap.add_argument(
            "--backbone-weights",
            type=Path,
            help="anomaly: a local ResNet-18 state dict (.pth) for "
            "the CNN features; never downloaded (default: fixed texture features)",
        )
        ap.add_argument(
            "--features",
            default=None,  # texture+context (the anomaly family's default): None tells it was not given
            choices=["texture+context", "texture", "cnn", "texture+cnn", "texture+context+cnn"],
            help="anomaly: patch features (default texture+context; see docs/trainer.md)",
        )
        ap.add_argument(
            "--light-variation",
            default=None,  # linear (the anomaly family's default): None tells it was not given
            choices=["none", "linear", "curved", "lamp"],
            help="anomaly: the light the bank also holds each good image under: linear (default: another "
            "lamp's gain, offset, gradient and colour), curved (also vignetting or an off-centre lamp spot: "
            "for a line whose light varies; a higher threshold), lamp (curved, also a bright spot and "
            "another lamp's colour, and each view's colours balanced to grey: for lamps of other colours "
            "or spots), none (no relit copies; docs/trainer.md)",
        )
    if prog in ("quantize", "build"):
        ap.add_argument(
            "--calibration", type=_positive, default=200, help="calibration samples from the validation split"
        )
    if prog in ("evaluate", "build", "package", "publish"):
        from cloud_trainer.registry import DEFAULT_REGISTRY  # (pydantic: not for `dataset`)

        ap.add_argument(
            "--registry",
            type=Path,
            default=None,  # DEFAULT_REGISTRY, unless the user's packages are in the former default (``_run``)
            help=f"default {DEFAULT_REGISTRY}: the registry `cloud-trainer serve` deploys from with its default --data",
        )
    if prog in ("evaluate", "build"):
        ap.add_argument(
            "--version", type=_package_version, help="default: next minor version in the registry"
        )
        ap.add_argument(
            "--name",
            type=_package_name,
            default=None,
            help="the package's name in the registry, for a second product's model (default: vision "
            "part-inspection, maintenance machine-health, anomaly part-anomaly)",
        )
        ap.add_argument(
            "--floor", action="append", default=[], metavar="METRIC=VALUE", help="override a gate floor"
        )
        ap.add_argument(
            "--int8-margin",
            type=float,
            default=0.01,
            help="how much of a primary metric INT8 may lose to FP32; beyond it the FP32 model is served",
        )
        ap.add_argument(
            "--require-int8",
            action="store_true",
            help="refuse a candidate whose INT8 form loses more than --int8-margin (default: serve FP32)",
        )
        ap.add_argument(
            "--int8-min-agreement",
            type=float,
            default=0.99,
            help="share of held-out items whose class and verdict INT8 must give as FP32 does; below it the "
            "FP32 model is served",
        )
        ap.add_argument(
            "--int8-max-deviation",
            type=float,
            default=0.05,
            help="how far INT8 may move an output from FP32 on any held-out item, as a share of its scale "
            "(an anomaly score: its threshold; others: their range); beyond it the FP32 model is served",
        )
        ap.add_argument("--tolerance", type=float, default=0.01, help="allowed loss vs the published version")
    if prog in ("package", "build", "evaluate"):
        ap.add_argument("--key", type=Path, default=Path("var/keys/fleet.key"), help="Ed25519 signing key")
    if prog in ("package", "build"):
        ap.add_argument("--no-openvino", action="store_true", help="do not add an OpenVINO IR to the package")
    if prog in ("package", "publish", "build"):
        ap.add_argument(
            "--force", action="store_true", help="go on even if the gate failed (recorded as forced)"
        )
    return ap


def _positive(text: str) -> int:
    """A whole number of at least 1 (``--epochs 0`` trained the default number of epochs, a negative
    one exported an untrained model; ``--size 0``, ``--threads -1`` failed deep in the recipe)."""
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number of at least 1")
    return v


def _quiet_opencv() -> None:
    """OpenCV's warnings off for the command (unless ``OPENCV_LOG_LEVEL`` says otherwise): libtiff's about a TIFF
    it decodes well (a vendor's private tag; an alpha channel without its ExtraSamples tag, as OpenCV writes BGRA
    TIFFs) were two lines for every image read, hundreds burying the build's own lines. A file that cannot be
    used is refused in one line naming it."""
    import os

    import cv2

    if "OPENCV_LOG_LEVEL" not in os.environ:
        try:
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        except AttributeError:
            pass


def _package_version(text: str) -> str:
    """``--version``: refused at once, as ``--name`` is (the manifest refused it once the build had trained)."""
    from model_packager.manifest import build_version_problem, is_version

    if not is_version(text):
        raise argparse.ArgumentTypeError(f"{text!r}: a package version is semantic, e.g. 1.2.0 or 1.2.0-rc.1")
    if (why := build_version_problem(text)) is not None:  # (refused by the build once it had trained)
        raise argparse.ArgumentTypeError(why)
    return text


def _package_name(text: str) -> str:
    """``--name``: refused at once, in one line, when the registry and the manifest would refuse it (it was
    refused by a traceback once the build had trained)."""
    from model_packager.manifest import PACKAGE_NAME_RE

    if PACKAGE_NAME_RE.fullmatch(text) is None:
        raise argparse.ArgumentTypeError(
            f"{text!r}: a package name is lowercase letters, digits, '-' and '_' (at most 63, the first a letter "
            "or digit), e.g. 'flange-inspection'"
        )
    return text


def _ints(n: int, form: str, sep: str = ","):
    def parse(text: str) -> list[int]:
        try:
            vals = [int(v) for v in text.lower().split(sep)]
        except ValueError:
            vals = []
        if len(vals) != n or any(v < 0 for v in vals):
            raise argparse.ArgumentTypeError(f"{text!r}: expected {form} (whole numbers)")
        return vals

    return parse


def _floats(form: str):
    def parse(text: str) -> list[float]:
        try:
            vals = [float(v) for v in text.split(",")]
        except ValueError:
            vals = []
        if len(vals) not in (3, 4):
            raise argparse.ArgumentTypeError(f"{text!r}: expected {form}")
        return vals

    return parse


def _settings(a):
    from cloud_trainer.train.families import load_family
    from cloud_trainer.train.pipeline import BuildSettings

    floors = {}
    for f in getattr(a, "floor", []):
        k, _, v = f.partition("=")
        try:
            floors[k] = float(v)
        except ValueError:
            raise SystemExit(f"cloud-trainer: --floor {f!r}: expected METRIC=NUMBER") from None
    key = getattr(a, "key", Path("var/keys/fleet.key"))
    if hasattr(a, "no_openvino") and not key.exists():  # only the stages that sign need one
        from model_packager import generate_keypair

        generate_keypair(key, key.with_suffix(".pub"))
        print(
            f"created signing key {key} (and {key.with_suffix('.pub')} for agents to trust)", file=sys.stderr
        )
    epochs = getattr(a, "epochs", None) or load_family(a.family).default_epochs
    return BuildSettings(
        family=a.family,
        dataset=getattr(a, "dataset", None),
        registry=getattr(a, "registry", None),
        signing_key=key,
        workdir=_workdir(a),
        seed=getattr(a, "seed", 0),
        epochs=epochs,
        epochs_given=getattr(a, "epochs", None) is not None,
        size=getattr(a, "size", 128),
        roi=getattr(a, "roi", None),
        tiles=getattr(a, "tiles", None),
        color="gray" if getattr(a, "gray", False) else "rgb",
        threads=getattr(a, "threads", None),
        floors=floors,
        int8_margin=getattr(a, "int8_margin", 0.01),
        require_int8=getattr(a, "require_int8", False),
        int8_min_agreement=getattr(a, "int8_min_agreement", 0.99),
        int8_max_deviation=getattr(a, "int8_max_deviation", 0.05),
        version=getattr(a, "version", None),
        calibration=getattr(a, "calibration", 200),
        openvino=not getattr(a, "no_openvino", False),
        degrade=getattr(a, "degrade", False),
        tolerance=getattr(a, "tolerance", 0.01),
        force=getattr(a, "force", False),
        init_from=getattr(a, "init_from", None),
        signal_features=getattr(a, "signal_features", "condition"),
        bearing=getattr(a, "bearing", None),
        speed_tag=getattr(a, "speed_tag", None),
        recipe=getattr(a, "recipe", "auto"),
        false_reject_rate=getattr(a, "false_reject_rate", 0.01),
        name=getattr(a, "name", None),
    )


def _others_option(a: argparse.Namespace) -> str | None:
    """Why ``build`` refuses an option another family alone reads (``TrainerFamily.own_options``), or None."""
    from cloud_trainer.train.families import TRAINER_FAMILIES, load_family

    for other in TRAINER_FAMILIES:
        if other == a.family:
            continue
        for opt in load_family(other).own_options:
            if getattr(a, opt.lstrip("-").replace("-", "_"), None) is not None:
                return (
                    f"cloud-trainer build {a.family}: {opt} is the {other} family's option, not taken by the "
                    f"{a.family} family (cloud-trainer build {other} reads it)"
                )
    return None


def _workdir(a: argparse.Namespace) -> Path:
    """The work folder the stages share: ``--work``, default ``var/builds/<family>``."""
    return a.work or Path("var/builds") / a.family


def _registry_name(a: argparse.Namespace) -> str:
    """The package name a verb judges or publishes in the registry: ``build`` and ``evaluate`` build ``--name``, else
    the family's (a ``report.json`` an earlier ``--name`` run left in the work folder names another); ``package`` and
    ``publish`` the name the work folder's evaluation gave (``report.json``), else the family's."""
    from cloud_trainer.registry import valid_package_name
    from cloud_trainer.train.families import load_family

    if hasattr(a, "name"):  # (build, evaluate)
        return str(a.name) if a.name else load_family(a.family).package_name
    try:
        report = json.loads((_workdir(a) / "report.json").read_text())
        name = report.get("name") if isinstance(report, dict) else None
    except (OSError, ValueError):
        name = None
    return name if isinstance(name, str) and valid_package_name(name) else load_family(a.family).package_name


def _run(verb: str, argv: list[str]) -> int:
    from cloud_trainer.registry import DEFAULT_REGISTRY, RegistryError, registry_note
    from cloud_trainer.train import pipeline as P
    from cloud_trainer.train.data import DatasetError, path_text
    from cloud_trainer.train.families import load_family
    from model_packager.errors import PackageError

    a = _parser(verb).parse_args(argv)
    if hasattr(a, "registry") and a.registry is None:
        if (note := registry_note(DEFAULT_REGISTRY, _registry_name(a))) is not None:
            # a note alone, and the build went on: its gate compared the candidate with no published version (they
            # are in the former default), its version started again, and it was published where serve did not read
            print(
                f"cloud-trainer {verb}: nothing was done: {note.removeprefix('note: ')}, or --registry "
                f"{DEFAULT_REGISTRY} to begin a new registry there (the gate compares a candidate with the versions "
                "published in the registry it is given, and its version follows theirs)",
                file=sys.stderr,
            )
            return 2
        a.registry = DEFAULT_REGISTRY
    _quiet_opencv()
    if a.work is not None and path_text(a.work) != str(a.work):
        # ONNX Runtime and OpenCV take a file's path as UTF-8 text: one holding another byte ended the build in
        # a TypeError traceback (ONNX Runtime) or a crash of the process (OpenCV, writing the report's plots)
        print(
            f"cloud-trainer {verb}: --work {path_text(a.work)}: the path holds a byte that is not UTF-8 (a name "
            "written in an older system's code page); give a work folder whose path is UTF-8",
            file=sys.stderr,
        )
        return 2
    if verb == "build" and (
        refused := _others_option(a)
    ):  # another family's own option: refused, never ignored
        print(refused, file=sys.stderr)
        return 2
    s = _settings(a)
    own = load_family(a.family).build_command(a, s)  # a family with a build of its own (verbs: build only)
    if own is not None:
        return own
    try:
        if verb == "train":
            meta = P.stage_train(s)
            out = {
                "trained": s.family,
                "model": str(s.workdir / "model.fp32.onnx"),
                "dataset_digest": meta["dataset_digest"],
            }
        elif verb == "quantize":
            out = {"quantized": str(P.stage_quantize(s))}
        elif verb == "evaluate":
            rep = P.stage_evaluate(s)
            print(
                json.dumps(
                    {
                        "evaluated": rep["version"],
                        "gate_passed": rep["gate"]["passed"],
                        "reasons": rep["gate"]["reasons"],
                        "report": str(s.workdir / "report.md"),
                    }
                )
            )
            return 0 if rep["gate"]["passed"] else 3
        elif verb == "package":
            out = {"package": str(P.stage_package(s))}
        elif verb == "publish":
            res = P.stage_publish(s)
            out = {
                "published": res["entry"]["version"],
                "name": res["entry"]["name"],
                "package": res["package"],
            }
        else:
            res = P.build(s)
            out = {
                "published": res["entry"]["version"],
                "name": res["entry"]["name"],
                "package": res["package"],
                "digest": res["entry"]["digest"],
            }
    except DatasetError as exc:  # it may name a file as a labels.jsonl row wrote it: one printable line
        print(f"cloud-trainer {verb}: dataset error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except (P.StageError, RegistryError) as exc:
        print(f"cloud-trainer {verb}: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except PackageError as exc:
        print(package_refused(verb, exc), file=sys.stderr)
        return 2
    except P.GateFailed as exc:
        # the default floors are the fleet's (vision NG recall 0.98): a line whose model misses one says what it
        # accepts, or publishes knowingly; said with the names of the floors missed
        below = [r.split(" ", 1)[0] for r in exc.reasons if " is below the floor " in r]
        floors = " ".join(f"--floor {m}=VALUE" for m in below)
        # --floor is an option of the stages that judge (evaluate, build); package and publish read their report
        way = (
            f"sets its own floor ({floors})"
            if verb in ("build", "evaluate")
            else f"evaluates again with {floors}"
        )
        hint = (
            f"; a line that accepts it {way} or publishes anyway with --force (recorded as forced)"
            if below
            else ""
        )
        print(
            f"cloud-trainer {verb}: candidate rejected by the evaluation gate: {exc}; nothing "
            f"{'published' if verb in ('build', 'publish') else 'packaged'} (report: {exc.report}){hint}",
            file=sys.stderr,
        )
        return 3
    print(json.dumps(out))
    return 0


main_train = partial(_run, "train")
main_quantize = partial(_run, "quantize")
main_evaluate = partial(_run, "evaluate")
main_package = partial(_run, "package")
main_publish = partial(_run, "publish")
main_build = partial(_run, "build")


# `cloud-trainer dataset import --kind KIND`: one row per kind of source (module:function taking the
# argv after the kind, returning an exit code; DatasetError is reported as one line, exit 2)
IMPORT_KINDS: dict[str, tuple[str, str]] = {
    "images": ("cloud_trainer.train.images:main", "a folder per class or an MVTec AD folder of images"),
    "fleet": ("cloud_trainer.train.uploads:main", "the fleet's labelled uploaded samples (--cloud-data)"),
    "vibration": (
        "cloud_trainer.train.signals:main_import",
        "historian recordings: CSV, WAV or NPZ, one file per run (--labels)",
    ),
}


def _guess_kind(source: Path | None) -> str | None:
    if source is None:
        return None
    if (source / "fleet.db").is_file():
        return "fleet"
    from cloud_trainer.train.images import holds_images

    return "images" if source.is_dir() and holds_images(source) else None


def _source(args: list[str]) -> Path | None:
    """The first positional argument (every option of the importers takes a value)."""
    skip = False
    for r in args:
        if skip:
            skip = False
        elif r.startswith("-"):
            skip = "=" not in r
        else:
            return Path(r)
    return None


def main_dataset(argv: list[str]) -> int:
    """``cloud-trainer dataset import [--kind K] SOURCE --out DIR ...``; ``cloud-trainer dataset
    --out DIR ...`` (no ``import``) is the fleet export it always was."""
    import importlib

    from cloud_trainer.train.data import DatasetError

    if not argv or argv[0] != "import":
        module, _, func = IMPORT_KINDS["fleet"][0].partition(":")
        return int(getattr(importlib.import_module(module), func)(argv) or 0)
    ap = argparse.ArgumentParser(prog="cloud-trainer dataset import", add_help=False)
    ap.add_argument("--kind", choices=sorted(IMPORT_KINDS))
    ap.add_argument("-h", "--help", action="store_true")
    a, rest = ap.parse_known_args(argv[1:])
    source = _source(rest)
    kind = a.kind or _guess_kind(source)
    if a.help and kind is None:
        print(
            "usage: cloud-trainer dataset import [--kind KIND] SOURCE --out DIR [options]\n\nkinds:\n"
            + "\n".join(f"  {k:<8} {h}" for k, (_, h) in IMPORT_KINDS.items())
            + "\n\ncloud-trainer dataset import --kind KIND --help: that kind's options"
        )
        return 0
    if kind is None:
        print(
            f"cloud-trainer dataset import: {source or 'no source given'}: cannot tell what to import (no "
            f"images found); name it with --kind ({', '.join(IMPORT_KINDS)})",
            file=sys.stderr,
        )
        return 2
    if kind == "fleet" and source is not None:  # the source is the fleet service's data folder
        rest = ["--cloud-data" if r == str(source) else r for r in rest]
        rest.insert(rest.index("--cloud-data") + 1, str(source))
    module, _, func = IMPORT_KINDS[kind][0].partition(":")
    try:
        return int(getattr(importlib.import_module(module), func)(rest + (["--help"] if a.help else [])) or 0)
    except DatasetError as exc:
        print(f"cloud-trainer dataset import: {one_line(str(exc))}", file=sys.stderr)
        return 2


def one_line(text: str) -> str:
    """``text`` as one line of printable text: a file name may hold a newline, a terminal escape or bytes
    that are not UTF-8 (kept by Python as U+DC80-U+DCFF); each such character is shown escaped (``\\n``,
    ``\\x1b``, ``\\xe9`` for the byte 0xE9), the rest as it is (accents, any script)."""

    def shown(c: str) -> str:
        if c.isprintable():
            return c
        if 0xDC80 <= ord(c) <= 0xDCFF:  # an undecodable byte of a file name (surrogateescape)
            return f"\\x{ord(c) - 0xDC00:02x}"
        return repr(c)[1:-1]

    return "".join(map(shown, text))


def package_refused(verb: str, exc: Exception) -> str:
    """The one line a ``PackageError`` of the packager (a golden check an engine failed, a manifest field refused)
    ends a stage with; it ended ``build`` in a traceback."""
    done = "published" if verb in ("build", "build anomaly", "publish") else "packaged"
    code = getattr(exc, "code", "package_error")
    return (
        f"cloud-trainer {verb}: the model package was refused ({code}): {one_line(str(exc))}; nothing {done}"
    )
