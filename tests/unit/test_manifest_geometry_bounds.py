"""A signed manifest whose preprocessing would take gigabytes per frame or window is refused at verify.

Preprocessing allocates its tensor for every frame: a manifest with a width of 30000 (a model whose
input dimensions are symbolic, so the graph check could not catch it), 64 x 64 tiles, or a window of
10^9 samples installed and swapped in, then every frame allocated gigabytes (a ``MemoryError`` on each,
or the kernel's out-of-memory killer taking the agent). Each is now refused at verify in one line
naming the field; the geometry a 1-5 MP camera and a tiling model need still passes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from model_packager import ManifestError, load_trusted_keys, open_package, verify_package
from model_packager.manifest import Manifest
from tests.support.models import make_keypair, make_package, signal_spec, vision_spec
from tests.unit.test_package_bad_input import members, resign, write


def _symbolic_hw(model_bytes: bytes) -> bytes:
    """The vision model with its input's height and width (and its heat map's) symbolic."""
    import onnx

    m = onnx.load_from_string(model_bytes)
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "H", "W"
    for o in m.graph.output:
        if o.name == "heatmap":
            od = o.type.tensor_type.shape.dim
            od[2].dim_param, od[3].dim_param = "h", "w"
    return m.SerializeToString()


def _edited(pkg: Path, key: Path, out: Path, pre: dict, *, symbolic: bool = False) -> Path:
    """``pkg`` with its manifest's preprocessing updated and signed again by ``key`` (a careless signer)."""
    ents = members(pkg)
    files = {m.name: d for m, d in ents}
    doc = yaml.safe_load(files["manifest.yaml"])
    replace = {}
    if symbolic:
        replace["model.onnx"] = _symbolic_hw(files["model.onnx"])
        doc["inputs"][0]["shape"] = ["batch", 3, "H", "W"]
        for o in doc["outputs"]:
            if o["name"] == "heatmap":
                o["shape"] = ["batch", 1, "h", "w"]
        for f in doc["files"]:
            if f["path"] in replace:
                data = replace[f["path"]]
                f["size"], f["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    doc["preprocessing"].update(pre)
    man = yaml.safe_dump(doc, sort_keys=False).encode()
    new = {"manifest.yaml": man, "manifest.sig": resign(man, key), **replace}
    out.parent.mkdir(parents=True, exist_ok=True)
    return write(out, [(m, new.get(m.name, d)) for m, d in ents])


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("geom")
    key, pub = make_keypair(tmp / "keys")
    return {
        "vision": make_package(tmp, kind="vision", key=key),
        "signal": make_package(tmp, kind="signal", key=key),
        "key": key,
        "trusted": load_trusted_keys([pub]),
    }


@pytest.mark.parametrize(
    ("kind", "pre", "symbolic", "field", "words"),
    [
        ("vision", {"width": 30000, "height": 30000}, True, "preprocessing.width is 30000", "at most 8192"),
        ("vision", {"tiles": [64, 64]}, False, "preprocessing:", "4096 tiles x 3 x 64 x 64"),
        ("vision", {"width": 4096, "height": 4096}, True, "preprocessing:", "3 x 4096 x 4096"),
        ("vision", {"roi": [0, 0, 100000, 100000]}, False, "preprocessing.roi is", "at most 65536"),
        ("signal", {"window_samples": 10**9}, False, "preprocessing.window_samples is", "1,048,576"),
        (
            "signal",
            {"window_samples": 1 << 20, "n_bands": 63, "condition": {"names": ["env_bpfo"]}},
            False,
            "preprocessing: window_samples 1048576 with condition features",
            "65,536",
        ),
    ],
)
def test_a_signed_manifest_whose_preprocessing_takes_gigabytes_is_refused_at_verify_naming_the_field(
    kit, tmp_path, kind, pre, symbolic, field, words
):
    name = "part-inspection-1.0.0" if kind == "vision" else "machine-health-1.0.0"
    bad = _edited(kit[kind], kit["key"], tmp_path / "bad" / f"{name}.edgepkg", pre, symbolic=symbolic)
    with pytest.raises(ManifestError) as ei:
        verify_package(bad, kit["trusted"])
    msg = str(ei.value)
    assert field in msg and words in msg, msg
    assert "\n" not in msg
    with pytest.raises(ManifestError):
        open_package(bad, tmp_path / "out", kit["trusted"])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("field", "value"), [("f_max_hz", -5.0), ("log_eps", -1.0), ("log_eps", 0.0)])
def test_a_signal_preprocessing_that_makes_every_window_nan_is_refused_at_verify(kit, tmp_path, field, value):
    """A negative band edge or log offset made every window's features NaN (or -inf on a silent band):
    installed, then every window failed at the engine, since the golden set holds features, not windows."""
    import numpy as np

    from model_packager.manifest import SignalPreprocessing
    from model_packager.preprocess import signal_features

    bad = _edited(
        kit["signal"], kit["key"], tmp_path / "bad" / "machine-health-1.0.0.edgepkg", {field: value}
    )
    with pytest.raises(ManifestError) as ei:
        verify_package(bad, kit["trusted"])
    assert f"preprocessing.{field} is {value}: must be > 0" in str(ei.value), ei.value
    ok = SignalPreprocessing(window_samples=2048, sample_rate_hz=1e4, f_max_hz=4000.0, log_eps=1e-9)
    assert np.isfinite(signal_features(np.zeros(2048), {}, ok)).all()  # a silent window reads finite


def test_the_geometry_of_a_5_mp_camera_and_a_tiling_model_still_verifies(kit, tmp_path):
    for pre in (
        {"width": 2592, "height": 1944},  # a 5 MP frame at full size, no resize
        {"tiles": [10, 8], "width": 256, "height": 256},  # 80 tiles of 256 px over a 5 MP frame
        {"roi": [100, 50, 2448, 2048], "width": 1224, "height": 1024},
    ):
        d = vision_spec()
        d["preprocessing"].update(pre)
        Manifest.model_validate(d)
    s = signal_spec(window_samples=1 << 20, sample_rate_hz=1e6)
    Manifest.model_validate(s)
    ok = _edited(
        kit["vision"], kit["key"], tmp_path / "ok" / "part-inspection-1.0.0.edgepkg", {"tiles": [8, 8]}
    )
    assert verify_package(ok, kit["trusted"]).preprocessing.n_tiles == 64
