"""`model-packager`: keygen, build, verify, inspect.

Exit codes: 0 success; 1 the package was checked and refused (verify); 2 usage or input error.
Errors are one line on stderr naming the package or file and the reason.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from model_packager.errors import PackageError
from model_packager.image_file import CAMERA_MAX_MEGAPIXELS
from model_packager.text import printable


def _keygen(args) -> int:
    from model_packager.keys import generate_keypair

    prefix = Path(args.prefix)
    priv, pub = prefix.with_name(prefix.name + ".key"), prefix.with_name(prefix.name + ".pub")
    if priv.exists() and not args.force:
        print(f"model-packager keygen: {priv} exists; use --force to replace it", file=sys.stderr)
        return 2
    kid = generate_keypair(priv, pub)
    print(f"wrote {priv} (private, mode 0600) and {pub} (public); key id {kid}")
    return 0


def _parse_extra(items: list[str]) -> dict[str, Path]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            raise PackageError(f"--extra {item!r}: expected NAME=PATH", code="usage")
        out[name] = Path(path)
    return out


def _build(args) -> int:
    from model_packager.package import build_package

    images = None
    if args.whole_frames and not args.input_images:
        raise PackageError(
            "--whole-frames says what the --input-images are; give --input-images DIR", code="usage"
        )
    if args.input_images:
        from model_packager.image_folder import ImageFolder

        images = ImageFolder(args.input_images, max_megapixels=args.max_megapixels)
        taken = f" of {images.total}, taken evenly" if len(images) < images.total else ""
        print(f"input statistics from {len(images)} images{taken} in {args.input_images}")
    notes: list[str] = []
    path = build_package(
        args.model,
        Path(args.spec),
        args.out,
        signing_key=args.key,
        golden_inputs=args.golden,
        expected=args.expected,
        openvino=args.openvino,
        extra_files=_parse_extra(args.extra),
        fp32_model=args.fp32,
        input_images=images,
        notes=notes,
        whole_frames=args.whole_frames,
    )
    for note in notes:  # the golden set's blind spots: the package is built, its golden check is weaker
        print(printable(f"warning: {note}", 2000), file=sys.stderr)
    print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


def _verify(args) -> int:
    import tempfile

    from model_packager.cpu import describe as describe_cpu
    from model_packager.keys import load_trusted_keys
    from model_packager.package import golden_notes, open_package, run_golden, verify_package

    trusted = load_trusted_keys(args.trust)
    if not args.run:
        m = verify_package(args.package, trusted)
        print(
            f"OK {printable(m.package_id)}: signature by a trusted key, {len(m.files)} files, every hash and size match"
        )
        return 0
    with tempfile.TemporaryDirectory(prefix="mp-verify-") as tmp:
        opened = open_package(args.package, Path(tmp) / "pkg", trusted)
        print(
            f"OK {printable(opened.manifest.package_id)}: signature by trusted key {printable(opened.signer)}, "
            f"{len(opened.manifest.files)} files, every hash and size match"
        )
        results = run_golden(opened)
        g = opened.manifest.golden
        per_output = "".join(f", {k} atol {v:.3g}" for k, v in g.output_atol.items())
        par = opened.manifest.parity
        for engine, worst in results.items():
            if engine.endswith("/int8") and par is not None:
                bounds = ", ".join(f"{k} {v:.3g}" for k, v in par.output_atol.items())
                print(
                    printable(
                        f"   INT8 on {engine.split('/')[0]}: largest deviation from FP32 {worst:.3g} "
                        f"(bounds {bounds}) on this CPU: {describe_cpu()}",
                        1000,
                    )
                )
                continue
            print(
                printable(
                    f"   golden on {engine}: largest deviation {worst:.3g} "
                    f"(tolerance atol {g.atol}, rtol {g.rtol}{per_output})",
                    1000,
                )
            )
        if not results:
            print("   no engine installed to run the golden inputs on", file=sys.stderr)
            return 1
        for note in golden_notes(opened):
            print(printable(f"warning: {note}", 2000), file=sys.stderr)
    return 0


def _inspect(args) -> int:
    from model_packager.package import package_digest, read_manifest

    m = read_manifest(args.package)
    if args.json:
        doc = m.model_dump(mode="json", exclude_none=True)
        doc["package_digest"] = package_digest(args.package)
        print(json.dumps(doc, indent=2))
        return 0
    lines = [f"{m.package_id}  ({m.task.value})  UNVERIFIED: use `model-packager verify` before trusting it"]
    if m.description:
        lines.append(f"  {m.description}")
    lines.append(f"  created   {m.created_at or '-'}")
    for t in m.inputs:
        lines.append(f"  input     {t.name} {t.dtype.value} {t.shape} {t.layout or ''}".rstrip())
    for o in m.outputs:
        extra = []
        if o.labels:
            extra.append("labels " + ",".join(o.labels))
        if o.ok_label:
            extra.append(f"ok={o.ok_label}")
        if o.threshold is not None:
            extra.append(f"threshold {o.threshold}")
        if o.unit:
            extra.append(f"unit {o.unit}")
        lines.append(
            f"  output    {o.name} {o.dtype.value} {o.shape} [{o.role.value}] {'; '.join(extra)}".rstrip()
        )
    p = m.preprocessing
    if p.kind == "image":
        lines.append(
            f"  preproc   image {p.width}x{p.height} {p.color.value} {p.layout} mean {p.mean} std {p.std}"
        )
    else:
        lines.append(
            f"  preproc   signal {p.waveform}: {p.window_samples} samples @ {p.sample_rate_hz} Hz, "
            f"{p.n_bands} bands, time features {p.time_features}, scalars {p.scalars}"
        )
    q = m.quantization
    lines.append(
        f"  quant     {q.scheme}"
        + (f", {q.metric_name} fp32 {q.fp32_metric} int8 {q.int8_metric}" if q.metric_name else "")
    )
    for e in m.engines:
        ref = " from the FP32 reference" if e.form == "int8" else ""
        lines.append(
            f"  checked   {e.engine} {e.version}{' ' + e.form if e.form else ''}: max deviation "
            f"{e.max_abs_diff:.3g}{ref}" + (f" ({e.precision})" if e.precision else "")
        )
    if m.parity is not None:
        lines.append(
            "  parity    INT8 vs FP32 bounds "
            + ", ".join(f"{k} {v:.3g}" for k, v in m.parity.output_atol.items())
            + f"; agreement >= {m.parity.min_agreement:.0%}; built on "
            + " ".join(next((e.cpu_flags for e in m.engines if e.cpu_flags), []) or ["(CPU not recorded)"])
        )
    pv = m.provenance
    if pv.dataset_digest or pv.metrics:
        lines.append(f"  dataset   {pv.dataset_digest or '-'}  parent {pv.parent_version or '-'}")
        for k, v in pv.metrics.items():
            lines.append(f"  metric    {k} = {v:.4g}")
    for f in m.files:
        lines.append(f"  file      {f.path:<24} {f.size:>10} B  {f.sha256[:16]}…  {f.role.value}")
    # every field of an unverified manifest is escaped: one printed line per line above, whatever it holds
    print("\n".join(printable(line, 1000) for line in lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="model-packager", description="build, sign, verify and inspect .edgepkg"
    )
    sub = ap.add_subparsers(dest="verb", required=True)
    k = sub.add_parser("keygen", help="write an Ed25519 key pair PREFIX.key (0600) and PREFIX.pub")
    k.add_argument("prefix")
    k.add_argument("--force", action="store_true")
    b = sub.add_parser("build", help="check a spec against an ONNX model, add golden outputs, sign, write")
    b.add_argument("model")
    b.add_argument("spec", help="spec YAML (manifest without files)")
    b.add_argument("--key", required=True, help="Ed25519 private key (PEM)")
    b.add_argument("--out", default=".", help="output folder (default: .)")
    b.add_argument("--golden", help="golden inputs .npz keyed by input name (default: synthetic)")
    b.add_argument("--expected", help="expected outputs .npz (default: computed with ONNX Runtime)")
    b.add_argument("--openvino", action="store_true", help="also convert to OpenVINO IR and check it")
    b.add_argument(
        "--extra", action="append", default=[], metavar="NAME=PATH", help="add a file (e.g. report.json)"
    )
    b.add_argument(
        "--fp32",
        metavar="MODEL",
        help="the FP32 reference of an INT8 MODEL: both forms are packaged, the "
        "expected outputs come from it and the INT8 form's parity bounds are measured here (schema 2)",
    )
    b.add_argument(
        "--input-images",
        metavar="DIR",
        help="an image model's training images (a folder, sub-folders too; up to 500 are read): their "
        "statistics let the agent call frames far outside them UNSURE (blurred, dark, another scene, a "
        "colour change) instead of OK or NG",
    )
    b.add_argument(
        "--whole-frames",
        action="store_true",
        help="--input-images are the camera's whole frames even where one is exactly the size of the model's "
        "roi at [0, 0] (a roi covering the whole frame); without it such an image is refused, as a crop of "
        "the roi cannot be told from it",
    )
    b.add_argument(
        "--max-megapixels",
        type=float,
        default=CAMERA_MAX_MEGAPIXELS,
        help="--input-images: refuse an image whose header declares more pixels than this, before decoding "
        f"it (default {CAMERA_MAX_MEGAPIXELS:g}, the agent camera's max_megapixels: it skips larger frames; "
        "guards against decompression bombs)",
    )
    v = sub.add_parser("verify", help="exit 0 only if signed by a trusted key and every hash and size match")
    v.add_argument("package")
    v.add_argument(
        "--trust", action="append", required=True, help="trusted public key (.pub) or folder of them"
    )
    v.add_argument("--run", action="store_true", help="also run the golden inputs on every installed engine")
    i = sub.add_parser("inspect", help="a readable summary of a package (unverified)")
    i.add_argument("package")
    i.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    handler = {"keygen": _keygen, "build": _build, "verify": _verify, "inspect": _inspect}[args.verb]
    try:
        return handler(args)
    except PackageError as exc:
        print(f"model-packager {args.verb}: {printable(str(exc), 2000)}", file=sys.stderr)
        refused = args.verb == "verify" and exc.code not in ("not_found", "bad_key", "usage")
        return 1 if refused else 2
    except OSError as exc:
        print(f"model-packager {args.verb}: {printable(str(exc), 2000)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug, never an acceptance: one line, and verify counts it as a refusal
        print(
            f"model-packager {args.verb}: unexpected {type(exc).__name__}: {printable(str(exc), 2000)}",
            file=sys.stderr,
        )
        return 1 if args.verb == "verify" else 2


if __name__ == "__main__":
    sys.exit(main())
