"""A swap that raises anything (not only ``PackageError``) is a refusal: the slot goes back to the state it
was in, the old model keeps serving on a real ONNX Runtime session, and the outcome names the stage and
reason in one printable line."""

from __future__ import annotations

import hashlib
import io
import tarfile
import time

import numpy as np
import pytest
import yaml

from devices.base import Frame
from edge_agent.models.config import HealthConfig, ModelConfig
from edge_agent.models.slot import ModelSlot
from tests.support.models import make_keypair, make_package
from tests.unit.test_package_hostile import _sig


@pytest.fixture(scope="module")
def pkgs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pkgs")
    key, pub = make_keypair(tmp / "keys")
    return {"v1": make_package(tmp, kind="vision", version="1.0.0", key=key, bias=6.0),
            "v2": make_package(tmp, kind="vision", version="1.1.0", key=key, seed=2, bias=6.0),
            "key": key, "pub": pub}


def _regolden(pkg, out, key):
    """The same package, signed by the trusted key, whose golden inputs have the wrong shape for the model:
    the engine itself raises during the smoke test."""
    with tarfile.open(pkg) as tar:
        ents = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    buf = io.BytesIO()
    np.savez(buf, image=np.zeros((2, 5, 7), np.float32))
    ents["golden/inputs.npz"] = buf.getvalue()
    doc = yaml.safe_load(ents["manifest.yaml"])
    for f in doc["files"]:
        if f["path"] == "golden/inputs.npz":
            f["size"], f["sha256"] = len(buf.getvalue()), hashlib.sha256(buf.getvalue()).hexdigest()
    ents["manifest.yaml"] = yaml.safe_dump(doc, sort_keys=False).encode()
    ents["manifest.sig"] = _sig(ents["manifest.yaml"], key)
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in ents.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


async def test_an_engine_exception_in_the_smoke_test_is_a_refusal_and_the_old_model_serves(tmp_path, pkgs):
    cfg = ModelConfig(package=str(pkgs["v1"]), engine="onnxruntime",
                      health=HealthConfig(window_s=1.0, min_items=5))
    events = []
    s = ModelSlot("vision", cfg, tmp_path / "data", [pkgs["pub"]], on_event=events.append)
    await s.start()
    bad = _regolden(pkgs["v2"], tmp_path / "part-inspection-1.1.0.edgepkg", pkgs["key"])
    outcome = await s.swap(bad)
    assert not outcome.ok and outcome.stage == "golden", outcome
    assert outcome.reason.isprintable()
    assert s.state == "active" and s.version == "1.0.0"
    assert events[-1]["kind"] == "swap_refused"
    img = np.zeros((64, 64, 3), np.uint8)
    assert s.infer(Frame("cam", 1, time.time(), img)).version == "1.0.0"
    ok = await s.swap(pkgs["v2"], watch=False)  # the slot is not wedged: a good package still swaps in
    assert ok.ok and s.version == "1.1.0"
    await s.stop()


async def test_an_unexpected_exception_while_verifying_is_a_refusal(tmp_path, pkgs, monkeypatch):
    cfg = ModelConfig(package=str(pkgs["v1"]), engine="onnxruntime")
    s = ModelSlot("vision", cfg, tmp_path / "data", [pkgs["pub"]])
    await s.start()

    def boom(*a, **kw):
        raise RecursionError("maximum recursion depth exceeded\x1b[2K")

    monkeypatch.setattr(s, "_install", boom)  # (the install itself runs in a child: see below)
    outcome = await s.swap(pkgs["v2"])
    assert not outcome.ok and outcome.stage == "verify" and "RecursionError" in outcome.reason
    assert "\x1b" not in outcome.reason
    assert s.state == "active" and s.version == "1.0.0"
    await s.stop()
