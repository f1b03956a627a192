"""The good-only anomaly family and the honest UNSURE verdict, end to end.

One small build (`cloud-trainer build anomaly` as a function) on images from a generator
independent of the project's simulator (tests/support/plates.py: another finish, light, part and
small defects, in the MVTec AD layout); its package then runs in a real agent that reads a folder
camera and publishes to a real Mosquitto: good frames OK, defective ones NG with the heat map on
the defect, blurred / dark / foreign frames UNSURE with a reason, never acted on, uploaded as
samples, and an ``input_drift`` event in the outbox once their share passes the bound."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from cloud_trainer.train import anomaly as A
from tests.support.models import make_keypair
from tests.support.once import built_once
from tests.support.plates import plate, write_plates

SIZE = 96
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The plates and the package built on them, once per run (``built_once``: every xdist worker running a
    test of this module gets the same); read by the tests, never changed."""
    return built_once(tmp_path_factory, "anomaly-family", _built)


def _built(tmp: Path) -> dict:
    key, pub = make_keypair(tmp / "keys")
    data = write_plates(tmp / "plates", n_train=30, n_good=10, n_ng=15, seed=4, size=SIZE)
    s = A.AnomalySettings(
        dataset=data,
        registry=tmp / "registry",
        signing_key=key,
        workdir=tmp / "work",
        size=SIZE,
        bank_size=512,
        folds=3,
        openvino=False,
        threads=2,
    )
    res = A.build(s, log=lambda m: None)
    return {"res": res, "pub": pub, "data": data}


def test_build_from_good_images_localises_independent_defects(built, tmp_path):
    rep = built["res"]["report"]
    m = rep["metrics"]["fp32"]
    assert rep["gate"]["passed"] and rep["good_images"] == 30
    assert m["image_auroc"] >= 0.95, m
    assert m["map_hit_rate"] >= 0.80, m  # the hottest region touches the defect
    assert m["ok_rejected"] <= 0.1 and m["ng_recall"] >= 0.5, m
    from model_packager import load_trusted_keys, open_package

    opened = open_package(Path(built["res"]["package"]), tmp_path / "open", load_trusted_keys([built["pub"]]))
    man = opened.manifest
    assert man.task.value == "anomaly_detection"
    # what its golden set cannot judge is in report.json, as the package's expected outputs say it (before:
    # no golden_notes)
    from model_packager.package import golden_notes

    assert rep["golden_notes"] == golden_notes(opened)
    assert [o.role.value for o in man.outputs] == ["anomaly_score", "anomaly_map"]
    assert man.input_stats is not None and man.input_stats.count == 30
    # the ONNX graph (image in; score and map out) through the manifest's own interpretation
    import onnxruntime as ort

    from model_packager.preprocess import image_tensor, interpret

    sess = ort.InferenceSession(str(opened.model_path), providers=["CPUExecutionProvider"])
    img, mask = plate(99, 5, "pit", SIZE)
    out = dict(
        zip(
            ["anomaly_score", "anomaly_map"],
            sess.run(None, {"image": image_tensor(img, man.preprocessing)}),
            strict=True,
        )
    )
    it = interpret(man, out)
    assert it.verdict == "NG" and it.heatmap.shape == (SIZE, SIZE)
    y, x = np.unravel_index(np.argmax(it.heatmap), it.heatmap.shape)
    ys, xs = np.nonzero(mask)
    assert abs(y - ys.mean()) <= 8 and abs(x - xs.mean()) <= 8
    good = interpret(
        man,
        dict(
            zip(
                ["anomaly_score", "anomaly_map"],
                sess.run(None, {"image": image_tensor(plate(99, 6, None, SIZE)[0], man.preprocessing)}),
                strict=True,
            )
        ),
    )
    assert good.verdict == "OK" and good.heatmap.max() < 0.5  # a good part stays cool on the page


def test_a_dataset_from_dataset_import_trains_like_its_source_folder(built, tmp_path):
    """`cloud-trainer dataset import --task anomaly` then `build anomaly` on its output: the same good
    images train, the same test images (with their masks) evaluate, as from the MVTec folder itself."""
    from cloud_trainer.train.images import import_images

    import_images(built["data"], tmp_path / "imported", task="anomaly", log=lambda m: None)
    src, imp = A.load_good(built["data"]), A.load_good(tmp_path / "imported")
    assert imp.layout == "imported" and len(imp.good) == len(src.good) == 30
    assert sorted(imp.test_kind) == sorted(src.test_kind) and int(imp.test_ng.sum()) == int(src.test_ng.sum())
    assert sum(m is not None for m in imp.test_masks) == sum(m is not None for m in src.test_masks) > 0
    few = tmp_path / "few"
    import_images(built["data"], few, task="anomaly", log=lambda m: None)
    lines = (few / "labels.jsonl").read_text().splitlines()
    (few / "labels.jsonl").write_text("\n".join(ln for ln in lines if '"split": "test"' in ln) + "\n")
    with pytest.raises(A.AnomalyDataError, match="0 good training image"):
        A.load_good(few)


def test_bad_datasets_are_refused_with_one_clear_line(tmp_path):
    few = tmp_path / "few"
    write_plates(few, n_train=5, n_good=0, n_ng=0)
    with pytest.raises(A.AnomalyDataError, match=r"5 good image\(s\).*at least 20"):
        A.load_good(few)
    bad = tmp_path / "bad"
    shutil.copytree(few / "train" / "good", bad)
    for i in range(20):
        shutil.copy(bad / "000.png", bad / f"x{i:02d}.png")
    (bad / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(A.AnomalyDataError, match="broken.jpg: not a PNG, JPEG, BMP, TIFF, WebP or PNM image"):
        A.load_good(bad)
    (bad / "broken.jpg").unlink()
    mv = tmp_path / "mv"
    shutil.copytree(bad, mv / "train" / "good")
    (mv / "test" / "good").mkdir(parents=True)
    (mv / "ground_truth" / "dent").mkdir(parents=True)
    cv2.imwrite(str(mv / "ground_truth" / "dent" / "007_mask.png"), np.zeros((8, 8), np.uint8))
    with pytest.raises(A.AnomalyDataError, match="007_mask.png: a mask without an image"):
        A.load_good(mv)
    # a 16-bit mask (a tool's defect pixels of 1) was read divided by 256: no defect, judged so, nothing said
    (mv / "test" / "dent").mkdir()
    shutil.copy(bad / "000.png", mv / "test" / "dent" / "007.png")
    m16 = np.zeros((8, 8), np.uint16)
    m16[2:5, 2:5] = 1
    cv2.imwrite(str(mv / "ground_truth" / "dent" / "007_mask.png"), m16)
    with pytest.raises(A.AnomalyDataError, match="007_mask.png: uint16 pixels; a mask is an 8-bit image"):
        A.load_good(mv)


def test_build_anomaly_on_the_command_line_refuses_a_bad_dataset_in_one_line_and_publishes_nothing(tmp_path):
    """`cloud-trainer build anomaly` goes to the family's own build (its `build_command` hook)."""
    key, _ = make_keypair(tmp_path / "keys")
    few = tmp_path / "few"
    write_plates(few, n_train=5, n_good=0, n_ng=0)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cloud_trainer.cli",
            "build",
            "anomaly",
            "--dataset",
            str(few),
            "--registry",
            str(tmp_path / "reg"),
            "--key",
            str(key),
            "--work",
            str(tmp_path / "work"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    assert (
        r.stderr.startswith("cloud-trainer build anomaly: dataset error: ") and r.stderr.count("\n") == 1
    ), r.stderr
    assert "5 good image(s)" in r.stderr and not r.stdout and not (tmp_path / "reg" / "part-anomaly").exists()


def test_backbone_weights_load_from_a_local_file_only(tmp_path):
    import torch

    with pytest.raises(A.AnomalyDataError, match="none.pth: no such file"):
        A.backbone(tmp_path / "none.pth", 32, 0)
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(A.AnomalyDataError, match="missing or of another shape.*ResNet-18 state dict"):
        A.backbone(tmp_path / "other.pth", 32, 0)
    state = {**A.backbone(None, 64, 1).state_dict(), "fc.weight": torch.zeros(10, 512)}  # torchvision keys
    torch.save(state, tmp_path / "resnet18.pth")
    net = A.backbone(tmp_path / "resnet18.pth", 32, 0)
    assert torch.equal(net.layer2[1].conv2.weight, state["layer2.1.conv2.weight"])


async def test_a_real_slot_says_unsure_for_a_mono_or_colour_cast_camera_not_ng(built, tmp_path):
    # the manifest's statistics are grey (brightness, contrast, sharpness, scene): a camera switched to
    # mono or to another white balance passed them, and the model scrapped every good part (NG). The
    # package's local statistics (colour, banding, sharpness by region) make such frames UNSURE
    import time

    from devices.base import Frame
    from edge_agent.models.config import ModelConfig
    from edge_agent.models.slot import ModelSlot
    from model_packager.inputstats import LOCAL_FILE

    s = ModelSlot(
        "vision",
        ModelConfig(package=built["res"]["package"], engine="onnxruntime"),
        tmp_path / "data",
        [built["pub"]],
    )
    await s.start()
    try:
        assert any(f.path == LOCAL_FILE for f in s.manifest.files)

        def verdict(img):
            it = s.infer(Frame("cam", 1, time.time(), img), unsure_tolerance=1.0).interpretation
            return it.verdict, it.reason or ""

        assert verdict(plate(99, 6, None, SIZE)[0])[0] == "OK"
        assert verdict(plate(99, 5, "pit", SIZE)[0])[0] == "NG"  # a defect is still NG
        good = plate(99, 7, None, SIZE)[0]
        mono = cv2.cvtColor(cv2.cvtColor(good, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        cast = np.clip(good * np.array([0.8, 1.0, 1.25]), 0, 255).astype(np.uint8)
        for img in (mono, cast):
            v, why = verdict(img)
            assert v == "UNSURE" and why.startswith(("colour cast", "less colour")), (v, why)
    finally:
        await s.stop()


def test_the_packages_statistics_call_good_plates_under_vignetting_unsure_not_its_own_or_defective_ones(
    built, tmp_path
):
    # the package's statistics were blind to a light falling off towards the corners (a lens's vignetting):
    # the scene thumbnail is the frame less its 16-px blur, by design. The light over the frame against the
    # training frames' (``shading`` in the package's local statistics) now names it
    from model_packager import load_trusted_keys, open_package
    from model_packager.inputstats import LOCAL_FILE, LocalStats, check

    opened = open_package(built["res"]["package"], tmp_path / "open", load_trusted_keys([built["pub"]]))
    stats = opened.manifest.input_stats
    assert stats is not None
    local = LocalStats.parse(opened.path(LOCAL_FILE).read_text(encoding="utf-8"))
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    r2 = ((xx - SIZE / 2) ** 2 + (yy - SIZE / 2) ** 2) / (SIZE / 2) ** 2
    cos4 = (1.0 / (1.0 + r2 * 0.45)) ** 2
    field = 1.0 - 0.35 * (1.0 - cos4) / (1.0 - float(cos4.min()))  # 35 % darker in the corners
    for i in range(4):
        good = plate(99, 20 + i, None, SIZE)[0]
        assert check(stats, good, local=local) is None
        lit = np.clip(good * field[..., None], 0, 255).astype(np.uint8)
        assert (check(stats, lit, local=local) or "").startswith("uneven light (gradient or vignetting)"), i
    for i, defect in enumerate(("pit", "scratch", "smudge") * 2):
        why = check(stats, plate(99, 30 + i, defect, SIZE)[0], local=local) or ""
        assert not why.startswith("uneven light"), (defect, why)


def _frames(folder: Path) -> dict[str, str]:
    """Frames the camera replays in name order, and what each one is."""
    folder.mkdir()
    kinds = {}
    rng = np.random.default_rng(0)
    plan = (
        [("good", None)] * 4
        + [("ng", "scratch"), ("ng", "scratch")]
        + [("blurred", None), ("dark", None), ("foreign", None)] * 2
    )
    for i, (kind, defect) in enumerate(plan):
        img, _ = plate(123, i, defect, SIZE)
        if kind == "blurred":
            img = cv2.GaussianBlur(img, (0, 0), 3)
        elif kind == "dark":
            img = (img * 0.15).astype(np.uint8)
        elif kind == "foreign":  # another scene: a checkerboard of random tiles
            img = cv2.resize(
                rng.integers(0, 255, (6, 6, 3), dtype=np.uint8), (SIZE, SIZE), interpolation=cv2.INTER_NEAREST
            )
        name = f"{i:03d}.png"
        cv2.imwrite(str(folder / name), img)
        kinds[name] = kind
    return kinds


async def test_agent_says_unsure_for_far_off_frames_and_raises_drift(built, tmp_path, mosquitto):
    from edge_agent.agent import Agent
    from edge_agent.config import parse_config
    from tests.integration.test_agent_runtime import Subscriber, wait_for

    kinds = _frames(tmp_path / "frames")
    cfg = parse_config(
        {
            "agent": {"id": "gw1", "site": "plant", "line": "line2", "data_dir": str(tmp_path / "data")},
            "trusted_keys": [str(built["pub"])],
            "http": {"port": 0},
            "sources": {
                "cam": {"type": "camera", "url": str(tmp_path / "frames"), "fps": 20},
                "broker": {"type": "mqtt", "port": mosquitto.port},
            },
            "models": {"anomaly": {"package": built["res"]["package"]}},
            "pipelines": [
                {
                    "name": "inspect2",
                    "source": "cam",
                    "model": "anomaly",
                    "actions": ["publish", "unsure_lamp"],
                    "queue": {"policy": "block"},
                    "unsure": {"window": 6, "max_share": 0.5},
                }
            ],
            "actions": {
                "publish": {"type": "mqtt_publish", "source": "broker", "qos": 1},
                "unsure_lamp": {
                    "type": "mqtt_publish",
                    "source": "broker",
                    "qos": 1,
                    "topic": "lamp/unsure",
                    "when": {"verdict": "UNSURE"},
                },
            },
            "outbox": {},
            "upload": {"unsure_fraction": 1.0, "ok_fraction": 0.0},
        }
    )
    sub = Subscriber(mosquitto.port, "#")
    agent = Agent(cfg)
    try:
        await agent.start()
        await wait_for(lambda: agent.pipelines[0].stats.results >= len(kinds), what="every frame's result")
        url = f"http://127.0.0.1:{agent.http.port}"
        metrics = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
        await asyncio.sleep(0.3)  # the last publishes
    finally:
        await agent.stop()
        sub.stop()
    recs = agent.outbox.pending(limit=500, max_bytes=50_000_000) if agent.outbox._db else None
    if recs is None:
        agent.outbox.open()
        recs = agent.outbox.pending(limit=500, max_bytes=50_000_000)
    results = [json.loads(r.payload) for r in recs if r.kind == "result"]
    by_kind: dict[str, list[dict]] = {}
    names = sorted(kinds)
    for r in results:
        by_kind.setdefault(kinds[names[r["seq"]]], []).append(r)
    assert {r["verdict"] for r in by_kind["good"]} == {"OK"}, by_kind["good"]
    assert {r["verdict"] for r in by_kind["ng"]} == {"NG"}
    for kind, word in (("blurred", "blurred"), ("dark", "underexposed"), ("foreign", "")):
        assert {r["verdict"] for r in by_kind[kind]} == {"UNSURE"}, (kind, by_kind[kind])
        assert all(word in r["reason"] for r in by_kind[kind])
    # never acted on as OK or NG: only an action whose condition names UNSURE fires for them
    published = [m for t, m in sub.messages if "/results/" in t]
    assert published and {m["verdict"] for m in published} <= {"OK", "NG"}
    assert [m["verdict"] for t, m in sub.messages if t == "lamp/unsure"] == ["UNSURE"] * 6
    samples = [json.loads(r.payload) for r in recs if r.kind == "sample"]
    assert sum(s["reason"] == "unsure" for s in samples) == 6
    events = [json.loads(r.payload) for r in recs if r.kind == "event"]
    drift = [e for e in events if e.get("kind") == "input_drift"]
    assert len(drift) == 1 and drift[0]["pipeline"] == "inspect2" and drift[0]["share"] >= 0.5
    assert 'edge_pipeline_results_total{pipeline="inspect2",verdict="UNSURE"} 6.0' in metrics


async def test_local_statistics_a_newer_trainer_wrote_leave_the_package_serving_on_input_stats(
    tmp_path, caplog
):
    # a package whose local statistics this agent cannot read (another format) serves, says so once, and
    # checks frames by the manifest's input_stats alone
    import json
    import logging
    import time

    from devices.base import Frame
    from edge_agent.models.config import ModelConfig
    from edge_agent.models.slot import ModelSlot
    from model_packager import build_package
    from model_packager.inputstats import LOCAL_FILE, summarize_local
    from tests.support.models import make_vision_onnx, vision_spec

    key, pub = make_keypair(tmp_path / "keys")
    frames = [plate(2, i, None, SIZE)[0] for i in range(12)]
    (tmp_path / LOCAL_FILE).write_text(json.dumps({**summarize_local(frames), "format": 99}))
    model = make_vision_onnx(tmp_path / "m.onnx", width=32, height=32, seed=3, labels=("ok", "dent"))
    spec = vision_spec(width=32, height=32, labels=("ok", "dent"), threshold=0.5)
    golden = {"image": np.random.default_rng(0).uniform(-2, 2, (2, 3, 32, 32)).astype(np.float32)}
    pkg = build_package(
        model,
        spec,
        tmp_path / "pkgs",
        signing_key=key,
        golden_inputs=golden,
        openvino=False,
        input_images=frames,
        extra_files={LOCAL_FILE: tmp_path / LOCAL_FILE},
    )
    s = ModelSlot("vision", ModelConfig(package=str(pkg), engine="onnxruntime"), tmp_path / "data", [pub])
    with caplog.at_level(logging.WARNING):
        await s.start()
    try:
        assert f"its {LOCAL_FILE} cannot be used (format 99" in caplog.text
        good = plate(2, 30, None, SIZE)[0]
        mono = cv2.cvtColor(cv2.cvtColor(good, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        it = [
            s.infer(Frame("cam", i, time.time(), f), unsure_tolerance=1.0).interpretation
            for i, f in enumerate((good, mono, cv2.GaussianBlur(good, (0, 0), 3)))
        ]
        assert [i.verdict == "UNSURE" for i in it] == [False, False, True]  # input_stats alone
        assert it[2].reason.startswith("blurred")
    finally:
        await s.stop()
