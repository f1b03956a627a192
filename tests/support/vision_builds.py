"""The vision trainer's build of an imported image dataset as the integration tests run it (signed,
ONNX Runtime only, forced past the gate), and the signed package run on images as the agent runs it
(``image_tensor`` → ONNX Runtime → ``interpret``)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from tests.support.models import make_keypair


def vision_settings(tmp: Path, dataset: Path, **kw):
    """(BuildSettings, public key): the registry, work folder and keys under ``tmp``; ``kw`` overrides."""
    from cloud_trainer.train.pipeline import BuildSettings

    key, pub = make_keypair(tmp / "keys")
    base = dict(
        family="vision",
        dataset=dataset,
        registry=tmp / "reg",
        signing_key=key,
        workdir=tmp / "work",
        threads=1,
        openvino=False,
        compare_published=False,
        force=True,
    )
    return BuildSettings(**{**base, **kw}), pub


def build_stages(s, log) -> tuple[dict, dict, Path]:
    """Train, quantize, evaluate and package (no publish): (train metadata, report, package path)."""
    from cloud_trainer.train.pipeline import stage_evaluate, stage_package, stage_quantize, stage_train

    meta = stage_train(s, log=log)
    stage_quantize(s, log=log)
    rep = stage_evaluate(s, log=log)
    return meta, rep, stage_package(s, log=log)


def run_package(pkg: Path, pub: Path, tmp: Path, images: list[np.ndarray]):
    """(manifest, [(raw outputs, Interpretation)] per image) of the signed package on ONNX Runtime."""
    from model_packager import load_trusted_keys, open_package
    from model_packager.preprocess import image_tensor, interpret
    from model_packager.runtimes import ort_session

    opened = open_package(pkg, Path(tempfile.mkdtemp(dir=tmp)), load_trusted_keys([pub]))
    sess = ort_session(opened.model_path, threads=1)
    m = opened.manifest
    names = [o.name for o in sess.get_outputs()]
    out = []
    for img in images:
        raw = dict(
            zip(names, sess.run(names, {m.inputs[0].name: image_tensor(img, m.preprocessing)}), strict=True)
        )
        out.append((raw, interpret(m, raw, img.shape[:2])))
    return m, out
