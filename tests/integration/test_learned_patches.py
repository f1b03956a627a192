"""The patch recipe's learnt features (``cloud_trainer.train.learned_patches``, the default for an
imported dataset): the synthetic defects it learns from land on the part with their masks, and a
build through every stage gives a signed package with the classifier contract that the agent's
path (``image_tensor`` → ONNX Runtime → ``interpret``) runs: the good class first, the threshold
in the manifest, the heat map at 1/4 of the input, the threshold placed from held-out images.

Flanges from ``tests/support/own_parts.py`` with seeds of this test only (the bench's evaluation
seeds are 23, 37 and 53). How well the net separates defects is the bench's to measure
(bench/vision_own_images_bench.py, bench/RESULTS.md): the net needs minutes of training, this test
a few seconds (a short run: few steps, small batches)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cloud_trainer.train import learned_patches as lp
from tests.support.own_parts import DEFECTS, make_part

SEED = 61


def test_synthetic_defects_change_only_their_mask_and_land_on_the_part():
    rng = np.random.default_rng(0)
    on_part = []
    for i in range(24):
        img, _ = make_part(SEED, i, 120)
        out, mask = lp.synthetic_defect(img, rng)
        assert out.shape == img.shape and out.dtype == np.uint8 and mask.shape == img.shape[:2]
        changed = np.abs(out.astype(int) - img.astype(int)).max(2) > 4  # visibly
        assert mask.any() and changed.any()
        grown = cv2.dilate(mask, np.ones((5, 5), np.uint8)) > 0
        assert changed[~grown].mean() < 0.002  # nothing drawn outside the (blurred) mask
        on_part.append(img[mask > 0].mean() > img.mean())
    assert np.mean(on_part) >= 0.9


def test_the_face_level_light_moves_the_parts_face_and_leaves_its_relief_and_the_background(monkeypatch):
    """Another lamp can light a part's face dimmer or brighter while its chamfers, grain and the belt keep
    their light (bench/RESULTS.md, issue 13: the face-level light); the net's training crops see that
    light, not only a gain of the whole crop: the face's level moves by the factor, the relief on it and
    the background do not, and the training's crops go through it."""
    img, _ = make_part(SEED, 0, 120)
    threshold = lp.face_threshold(img)
    grey = img.astype(np.float32).mean(2)
    face = cv2.erode((grey > threshold).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    background = grey <= threshold
    assert face.mean() > 0.1 and background.mean() > 0.1

    def relief(g: np.ndarray) -> np.ndarray:
        return g - cv2.GaussianBlur(g, (0, 0), 2.0)

    for gain in (0.5, 1.5):
        lit = lp.face_light(img, threshold, gain, 4.0)
        assert lit.shape == img.shape and lit.dtype == np.uint8
        lit_grey = lit.astype(np.float32).mean(2)
        assert np.array_equal(lit[background], img[background])
        assert abs(lit_grey[face].mean() / grey[face].mean() - gain) < 0.1
        assert relief(lit_grey)[face].std() == pytest.approx(relief(grey)[face].std(), rel=0.1)
    grey_lit = lp.face_light(img[:, :, 1], threshold, 0.5, 4.0)  # a grey camera's frame as well
    assert grey_lit.shape == img.shape[:2] and grey_lit[face].mean() < 0.6 * img[:, :, 1][face].mean()

    calls = []
    light = lp.face_light
    monkeypatch.setattr(lp, "face_light", lambda *a: calls.append(a[2]) or light(*a))
    monkeypatch.setattr(lp, "BATCH", 16)
    from cloud_trainer.train.vision import preprocessing

    lp.fit_net([img], preprocessing(64), seed=0, steps=1, log=lambda *_: None, init=None)
    assert 2 <= len(calls) <= 14  # FACE_LIGHT_RATE of the 16 crops
    assert all(1 - lp.FACE_LIGHT_GAIN <= g <= 1 + lp.FACE_LIGHT_GAIN for g in calls)


def test_a_region_of_the_parts_face_alone_is_not_face_lit(monkeypatch):
    """An roi inside the part, or a tile of it, holds the face's grain and no background: an Otsu split would
    cut the grain in two and light its brighter half apart from its darker (a relief several times its own
    taught as good). Such a region, and a flat one, gets no face light; a whole frame still does (above)."""
    img, _ = make_part(SEED, 0, 240)
    grey = img.astype(np.float32).mean(2)
    inside = cv2.erode((grey > lp.face_threshold(img)).astype(np.uint8), np.ones((33, 33), np.uint8))
    ys, xs = np.nonzero(inside)
    y, x = ys[len(ys) // 2] - 16, xs[len(xs) // 2] - 16
    face_only = img[y : y + 32, x : x + 32]
    assert face_only.astype(np.float32).mean(2).std() > 2  # the face's grain, not a flat patch
    assert lp.face_threshold(face_only) is None
    assert lp.face_threshold(face_only[:, :, 1]) is None
    assert lp.face_threshold(np.full((8, 8, 3), 128, np.uint8)) is None
    assert lp.face_threshold(np.zeros((1, 1), np.uint8)) is None
    # a face whose noise is a grey level or less is two adjacent levels after 8-bit rounding, which the split
    # holds whole: a smooth face, one clipped at white, a colour one whose channels' mean the split rounds
    rng = np.random.default_rng(0)
    assert lp.face_threshold(np.where(rng.random((32, 32)) < 0.5, 160, 161).astype(np.uint8)) is None
    white = np.repeat(np.where(rng.random((32, 32, 1)) < 0.3, 254, 255), 3, 2).astype(np.uint8)
    assert lp.face_threshold(white) is None
    smooth = np.round(np.array([150.0, 160.0, 170.0]) + rng.normal(0, 0.5, (32, 32, 3))).astype(np.uint8)
    assert lp.face_threshold(smooth) is None

    calls = []
    light = lp.face_light
    monkeypatch.setattr(lp, "face_light", lambda *a: calls.append(a[2]) or light(*a))
    monkeypatch.setattr(lp, "BATCH", 16)
    from cloud_trainer.train.vision import preprocessing

    lp.fit_net([face_only], preprocessing(32), seed=0, steps=1, log=lambda *_: None, init=None)
    assert calls == []


def folders(root: Path, n_good: int, n_defect: int) -> Path:
    k = 0
    for label, n in [("good", n_good)] + [(d, n_defect) for d in DEFECTS]:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img, _ = make_part(SEED, k, 120, None if label == "good" else label)
            cv2.imwrite(str(root / label / f"{i:03d}.png"), img)
            k += 1
    return root


def test_the_default_recipe_for_imported_images_packages_the_learnt_net_with_the_classifier_contract(
    tmp_path, monkeypatch
):
    from cloud_trainer.train import onnx_tools, pipeline
    from cloud_trainer.train.images import import_images
    from tests.support.vision_builds import build_stages, run_package, vision_settings

    monkeypatch.setattr(pipeline, "_engines", lambda: ["onnxruntime"])  # the latency table is test_trainer's
    monkeypatch.setattr(onnx_tools, "latency_ms", lambda *a, **k: 1.0)
    monkeypatch.setattr(lp, "BATCH", 8)  # a short run: 60 steps of 8 crops
    quiet = lambda *_: None  # noqa: E731
    import_images(folders(tmp_path / "src", 24, 3), tmp_path / "ds", log=quiet)
    s, pub = vision_settings(tmp_path, tmp_path / "ds", size=64, epochs=1, false_reject_rate=0.05)
    meta, rep, pkg = build_stages(s, quiet)
    assert meta["recipe"] == "patch" and meta["classes"] == ["good", *sorted(DEFECTS)]
    cal = rep["operating_point"]["calibration"]
    assert cal["false_reject_rate"] == 0.05 and "95.0% quantile" in cal["rule"]  # --false-reject-rate
    assert cal["scorer"].startswith("learnt patch net") and cal["steps"] == lp.STEPS_PER_EPOCH
    assert cal["net_start"].startswith("the shipped weights")
    assert cal["held_out_good_images"] >= 3 and cal["defect_images"] > 0
    assert cal["net_good_images"] + cal["held_out_good_images"] == cal["good_images"]
    images = [make_part(SEED + 1, i, 120, defect)[0] for i, defect in enumerate([None, "stain"])]
    m, runs = run_package(pkg, pub, tmp_path, images)
    assert m.outputs[0].labels == meta["classes"] and m.outputs[0].ok_label == "good"
    assert m.outputs[0].threshold == 0.5 and m.quantization.scheme.startswith("none")
    assert m.outputs[1].role.value == "heatmap" and m.outputs[1].shape == ["batch", 1, 16, 16]
    for out, res in runs:
        assert res.verdict in ("OK", "NG") and res.heatmap is not None and res.heatmap.shape == (16, 16)
        assert np.isfinite(out["logits"]).all() and out["logits"].shape == (1, len(meta["classes"]))


def test_the_shipped_starting_weights_already_find_synthetic_defects_on_parts_they_never_saw(tmp_path):
    """The net's starting weights (learnt on the simulator's good parts, bench/pretrain_patch_net.py) load
    into the colour and the grey net, are refused for another net, and, untrained on these flanges, put
    the map's peak on a synthetic defect drawn on them."""
    import torch

    from cloud_trainer.train.vision import preprocessing, tensors

    got = lp.pretrained_state(lp.PRETRAINED, 3)
    assert got is not None and "simulator" in got[1]
    PatchNet, _ = lp._modules()
    net = PatchNet(lp.WIDTH, 3)
    net.load_state_dict(got[0])
    grey = lp.pretrained_state(lp.PRETRAINED, 1)
    assert grey is not None and tuple(grey[0]["body.0.0.weight"].shape[1:]) == (1, 3, 3)
    lp.save_state(PatchNet(8, 3), tmp_path / "narrow.npz", {"trained_on": "a narrower net"})
    assert lp.pretrained_state(tmp_path / "narrow.npz") is None
    assert lp.pretrained_state(tmp_path / "absent.npz") is None
    pre = preprocessing(128)
    rng = np.random.default_rng(5)
    found = []
    for i in range(12):
        img, _ = make_part(SEED + 2, i, 200)
        bad, mask = lp.synthetic_defect(img, rng)
        with torch.no_grad():
            logit = net.eval()(torch.from_numpy(tensors([bad], pre)))[1][0, 0].numpy()
        cells = lp._cells([mask], pre)[0, 0].numpy() > 0
        grown = cv2.dilate(cells.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        found.append(bool(grown[np.unravel_index(logit.argmax(), logit.shape)]))
    assert np.mean(found) >= 0.75, found


def test_the_served_map_is_the_mean_over_the_inputs_turns_and_mirrors():
    """The defect map the graph serves is averaged over the input's views: with 8, its symmetries (4
    mirrors on a non-square input), so the same part turned or mirrored gives the same map turned back;
    with 2, the frame and its mirror image; a single view's map (the default, ``lp.VIEWS``) differs from
    either (the averaging is there)."""
    import torch

    torch.manual_seed(0)
    PatchNet, Classifier = lp._modules()
    net = PatchNet(8, 3).eval()
    for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # not the identity
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
    head = (np.zeros((4 * 8 + 3, 1)), np.zeros(1), 0.0, 1.0)
    served, single = Classifier(net, *head, views=8).eval(), Classifier(net, *head, views=1).eval()
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32))
    with torch.no_grad():
        m = served.inputs(x)[:, -1:]
        assert not torch.allclose(m, single.inputs(x)[:, -1:], atol=1e-4)
        for turned, back in [
            (torch.rot90(x, 1, (2, 3)), lambda t: torch.rot90(t, -1, (2, 3))),
            (torch.flip(x, (3,)), lambda t: torch.flip(t, (3,))),
            (x.transpose(2, 3), lambda t: t.transpose(2, 3)),
        ]:
            assert torch.allclose(back(served.inputs(turned)[:, -1:]), m, atol=1e-5)
        default = Classifier(net, *head, views=2).eval()  # the frame and its mirror image
        md = default.inputs(x)[:, -1:]
        assert torch.allclose(torch.flip(default.inputs(torch.flip(x, (3,)))[:, -1:], (3,)), md, atol=1e-5)
        assert not torch.allclose(md, single.inputs(x)[:, -1:], atol=1e-4)
        wide = x[:, :, :16]  # 16 x 32: the mirrors only
        mw = served.inputs(wide)[:, -1:]
        assert mw.shape == (2, 1, 4, 8)
        assert torch.allclose(
            torch.flip(served.inputs(torch.flip(wide, (2, 3)))[:, -1:], (2, 3)), mw, atol=1e-5
        )
