"""The training-input statistics a vision package carries, and the UNSURE check built on them."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edge_agent.pipelines import UnsureWatch
from model_packager.inputstats import check, summarize
from model_packager.manifest import InputStats, OutputSpec
from tests.support.plates import plate


@pytest.fixture(scope="module")
def stats() -> InputStats:
    return summarize(plate(1, i, None, 96)[0] for i in range(30))


def test_training_like_frames_pass_and_far_off_ones_say_why(stats):
    # in range: other good plates, a defective one, a 1280x1024 frame of the same scene, a grey frame
    for i in range(30, 40):
        assert check(stats, plate(1, i, None, 96)[0]) is None
    assert check(stats, plate(1, 50, "pit", 96)[0]) is None
    big = cv2.resize(plate(1, 51, None, 96)[0], (1280, 1024), interpolation=cv2.INTER_CUBIC)
    assert check(stats, cv2.GaussianBlur(big, (0, 0), 1.0)) is None  # the same sharpness at 128 px
    assert check(stats, cv2.cvtColor(plate(1, 52, None, 96)[0], cv2.COLOR_BGR2GRAY)) is None
    img = plate(1, 60, None, 96)[0]
    assert check(stats, cv2.GaussianBlur(img, (0, 0), 3)).startswith("blurred")
    assert check(stats, (img * 0.2).astype(np.uint8)).startswith("underexposed")
    assert check(stats, np.clip(img.astype(int) * 3, 0, 255).astype(np.uint8)).startswith("overexposed")
    foreign = cv2.resize(
        np.random.default_rng(0).integers(0, 255, (6, 6, 3), dtype=np.uint8),
        (96, 96),
        interpolation=cv2.INTER_NEAREST,
    )
    assert check(stats, foreign) is not None
    moved = np.roll(img, 30, axis=1)  # the camera moved: the scene no longer matches
    assert check(stats, moved).startswith("wrong scene")
    assert (
        check(stats, cv2.GaussianBlur(img, (0, 0), 3), tolerance=50) is None
    )  # tolerance widens every margin
    InputStats.model_validate(stats.model_dump(mode="json"))  # round-trips through the manifest


def test_anomaly_map_needs_a_threshold():
    with pytest.raises(ValueError, match="anomaly_map needs 'threshold'"):
        OutputSpec(name="m", dtype="float32", shape=["batch", 1, 8, 8], role="anomaly_map")


def test_drift_event_once_per_excursion():
    w = UnsureWatch("p", window=10, max_share=0.3)
    events = [w.add(None) for _ in range(10)]
    assert not any(events)
    events = [w.add("blurred: sharpness 1 < 2") for _ in range(3)]
    assert events[:2] == [None, None] and events[2]["kind"] == "input_drift"
    assert events[2]["reasons"] == {"blurred": 3} and events[2]["share"] == 0.3
    assert [w.add("blurred: x") for _ in range(5)] == [None] * 5  # still high: not raised again
    for _ in range(10):
        w.add(None)  # back to normal: re-armed
    assert [w.add("underexposed: x") for _ in range(3)][-1]["kind"] == "input_drift"


@pytest.fixture(scope="module")
def line():
    """Statistics of 30 frames of another part and line (tests/support/line_frames.py: a brass hex
    fitting on a dark belt), the manifest's and the local ones."""
    from model_packager.inputstats import LocalStats, summarize_local
    from tests.support import line_frames as L

    frames = [L.good(1, i) for i in range(30)]
    return summarize(frames), LocalStats.parse(json.dumps(summarize_local(frames)))


def test_camera_faults_the_global_statistics_miss_are_unsure_by_the_local_ones(line):
    from model_packager.inputstats import LocalStats, summarize_local
    from tests.support import line_frames as L

    stats, local = line
    # ordinary frames stay sure: other parts, a dimmer or brighter lamp, a noisier sensor, defects,
    # an MJPEG camera at q=75, a lamp a little warmer (2 %; the training frames' colour does not vary: 5 % is a
    # colour cast against them, test_a_frame_under_a_lamp_of_another_colour_is_unsure_by_its_cast)
    ordinary = [L.good(7, i) for i in range(6)] + [
        L.ordinary_light(7, i, lv) for i in range(2) for lv in range(3)
    ]
    ordinary += [L.good(7, 500, "dent"), L.good(7, 600, "scratch")]
    ordinary += [cv2.imdecode(cv2.imencode(".jpg", L.good(7, 9), [cv2.IMWRITE_JPEG_QUALITY, 75])[1], 1)]
    ordinary += [np.clip(L.good(7, 10) * np.array([0.98, 1.0, 1.02]), 0, 255).astype(np.uint8)]
    assert [check(stats, f, local=local) for f in ordinary] == [None] * len(ordinary)
    # faults that the model calls NG (a good part scrapped) and brightness, contrast, sharpness and the
    # scene did not see: each is UNSURE now, with its reason
    faults = {
        "less colour than training": L.mono(7, 1, 0),
        "colour cast": L.white_balance(7, 2, 0),
        "light banding": L.flicker(7, 2, 0),
        "blurred or covered in part": L.smudge(7, 4, 0),
    }
    for why, frame in faults.items():
        assert check(stats, frame) is None  # the manifest's statistics alone
        assert (check(stats, frame, local=local) or "").startswith(why), why
    assert check(stats, L.jpeg(7, 5, 0), local=local) is not None  # JPEG at q=20
    assert check(stats, L.mono(7, 1, 0), tolerance=50, local=local) is None  # tolerance widens them too
    # a model that sees grey images: its frames' colour is not checked (the slot reads its file so)
    grey_model = LocalStats.parse(
        json.dumps(summarize_local([L.good(1, i) for i in range(30)])), colour=False
    )
    assert check(stats, L.white_balance(7, 2, 0), local=grey_model) is None
    assert (check(stats, L.flicker(7, 2, 0), local=grey_model) or "").startswith("light banding")


def test_local_statistics_that_do_not_read_are_refused_by_name(line):
    from model_packager.inputstats import LocalStats, summarize_local
    from tests.support import line_frames as L

    good = summarize_local([L.good(1, i) for i in range(3)])
    for bad, why in (
        ({**good, "format": 1}, "format 1"),  # its saturation was another measure
        ({**good, "cells": good["cells"][:3]}, "cells"),
        ({**good, "stats": {**good["stats"], "hue": good["stats"]["banding"]}}, "unknown statistics"),
        ({**good, "stats": {"banding": {"p01": 1.0, "p50": 0.0, "p99": 0.5, "std": 0.1}}}, "p01 <= p50"),
    ):
        with pytest.raises(ValueError, match=why):
            LocalStats.parse(json.dumps(bad))


def _light(img: np.ndarray, kind: str) -> np.ndarray:
    """``img`` under a light made here: a gradient (15 % top to bottom, 25 % across), a lens's cos^4
    vignetting 35 % darker in the corners, or a lamp 20 % dimmer or brighter."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = (xx - w / 2) / (w / 2), (yy - h / 2) / (w / 2)
    cos4 = (1.0 / (1.0 + (u * u + v * v) * 0.45)) ** 2
    field = {
        "gradient 15 %": 1.0 + 0.15 * (yy / (h - 1) - 0.5),
        "gradient 25 %": 1.0 - 0.25 * (xx / (w - 1) - 0.5),
        "vignetting": 1.0 - 0.35 * (1.0 - cos4) / (1.0 - float(cos4.min())),
        "gain 0.8": np.full((h, w), 0.8, np.float32),
        "gain 1.2": np.full((h, w), 1.2, np.float32),
    }[kind]
    return np.clip(img * field[..., None], 0, 255).astype(np.uint8)


def test_good_frames_under_a_light_gradient_or_vignetting_are_unsure_and_say_so(line):
    # every statistic was blind to a light changing slowly over the frame (the scene thumbnail is the frame
    # less its 16-px blur, by design), and the anomaly model called most good frames of a uniform part under
    # one NG (docs/agent.md). The light over the frame against the training frames' now names it
    from model_packager.inputstats import LocalStats, summarize_local
    from tests.support import line_frames as L

    stats, local = line
    for i in range(3):
        good = L.good(7, i)
        assert check(stats, good, local=local) is None
        for kind in ("gradient 15 %", "gradient 25 %", "vignetting"):
            why = check(stats, _light(good, kind), local=local) or ""
            assert why.startswith("uneven light (gradient or vignetting): "), (kind, why)
    assert check(stats, _light(L.good(7, 0), "vignetting"), tolerance=50, local=local) is None
    # the shading travels outside ``stats``, where an agent before it refused a statistic it did not know; a
    # package built before it (no ``shading``) is checked as before
    data = summarize_local([L.good(1, i) for i in range(30)])
    assert set(data["stats"]) <= {"chroma_b", "chroma_r", "saturation", "clipped", "banding"}
    assert data["shading"]["cells"] == 8 and len(data["shading"]["ref"]) == 64
    former = LocalStats.parse(json.dumps({k: v for k, v in data.items() if k != "shading"}))
    assert former.shade is None
    assert check(stats, _light(L.good(7, 0), "vignetting"), local=former) is None
    with pytest.raises(ValueError, match="shading"):
        LocalStats.parse(json.dumps({**data, "shading": {**data["shading"], "ref": [1.0, 2.0]}}))
    # a build made to accept other light (its frames under it reached: ``also``) is not checked for it
    frames = [L.good(1, i) for i in range(10)]
    assert "shading" not in summarize_local(frames, also=[_light(f, "vignetting") for f in frames])


def test_a_frame_darker_or_brighter_than_training_is_unsure_by_its_exposure():
    # a lamp 20 % dimmer passed every statistic on a board (the brightness range mixes the board's content
    # with its light: it is wide), and the anomaly model called 65-95 % of good boards NG (docs/agent.md). The
    # shading fit's constant, the frame's light against the training's mean view of the same scene, is now
    # checked against the training frames' own (each against the others: a lamp of +-8 % here)
    from model_packager.inputstats import LocalStats, summarize_local
    from tests.support import products

    def board(i: int, lamp: float) -> np.ndarray:
        rng = np.random.default_rng([42, i])
        img = products._pcb(rng, (128, 128), None)[0] * lamp + rng.normal(0, 2.5, (128, 128, 3))
        return np.clip(img, 0, 255).astype(np.uint8)

    lamps = np.random.default_rng(1).uniform(0.92, 1.08, 30)
    training = [board(i, g) for i, g in enumerate(lamps)]
    stats, data = summarize(training), summarize_local(training)
    local = LocalStats.parse(json.dumps(data))
    for i in range(100, 104):
        assert check(stats, board(i, 1.0), local=local) is None
        assert check(stats, board(i, 0.95), local=local) is None  # within the training's own lamps
        assert check(stats, board(i, 1.05), local=local) is None
        dark = check(stats, board(i, 0.8), local=local) or ""
        assert dark.startswith("darker than training (exposure): exposure "), dark
        bright = check(stats, board(i, 1.2), local=local) or ""
        assert bright.startswith("brighter than training (exposure): exposure "), bright
        assert check(stats, board(i, 0.8), tolerance=50, local=local) is None  # tolerance widens it too
    # the brightness statistic alone (the manifest's) did not see it
    assert check(stats, board(100, 0.8)) is None
    # ``exposure`` travels in ``shading`` beside ``tilt`` and ``dome``: an agent before it reads those two
    # alone; a package built before it is checked as before (the light over the frame, not its exposure)
    assert {"cells", "ref", "tilt", "dome", "exposure"} <= set(data["shading"])
    former = LocalStats.parse(
        json.dumps({**data, "shading": {k: v for k, v in data["shading"].items() if k != "exposure"}})
    )
    assert check(stats, board(100, 0.8), local=former) is None
    uneven = check(stats, _light(board(100, 1.0), "vignetting"), local=former) or ""
    assert uneven.startswith("uneven light")


def test_a_frame_under_a_lamp_of_another_colour_is_unsure_by_its_cast():
    # the whole-frame chroma ranges mix the part's colours with the light's (a margin of 10 % at least), so a
    # lamp whose channels moved 8-10 % passed them, and the anomaly model called 15-20 % of good hides (and 20-38 %
    # of good caps) NG under a cast within +-8 % a channel (docs/agent.md "Colour cast"). Each channel's light
    # against the training's mean view of the same scene, blue and red less green, is now checked against the
    # training frames' own (each against the others)
    from model_packager.inputstats import LocalStats, summarize_local
    from tests.support import products

    def hide(i: int, bgr=(1.0, 1.0, 1.0)) -> np.ndarray:
        rng = np.random.default_rng([43, i])
        img = products._leather(rng, (128, 128), None)[0] * rng.uniform(0.95, 1.05)  # the lamp's own gain
        img = img * np.asarray(bgr, np.float32) + rng.normal(0, 2.5, (128, 128, 3))
        return np.clip(img, 0, 255).astype(np.uint8)

    training = [hide(i) for i in range(30)]
    stats, data = summarize(training), summarize_local(training)
    local = LocalStats.parse(json.dumps(data))
    for i in range(100, 104):
        assert check(stats, hide(i), local=local) is None
        for bgr, k in (
            ((0.91, 1.0, 1.0), "cast_b"),
            ((1.0, 1.0, 1.09), "cast_r"),
            ((1.08, 1.0, 0.92), "cast_b"),
        ):
            why = check(stats, hide(i, bgr), local=local) or ""
            assert why.startswith(f"colour cast (white balance): {k} "), (bgr, why)
            assert check(stats, hide(i, bgr), tolerance=50, local=local) is None  # tolerance widens it too
    # the chroma statistics alone (a package's before ``cast_b``/``cast_r``) did not see it: a package built
    # before them is checked as before
    former = {
        **data,
        "shading": {k: v for k, v in data["shading"].items() if k not in ("colour_ref", "cast_b", "cast_r")},
    }
    assert check(stats, hide(100, (0.91, 1.0, 1.0)), local=LocalStats.parse(json.dumps(former))) is None
    # a model that sees grey images is not affected by the light's colour
    grey_model = LocalStats.parse(json.dumps(data), colour=False)
    assert check(stats, hide(100, (0.91, 1.0, 1.0)), local=grey_model) is None
    # a line whose own white balance varies (+-3 % a channel): its range widens with it, its frames pass
    jitter = np.random.default_rng(5).uniform(0.97, 1.03, (34, 3))
    wobbly = [hide(i, jitter[i]) for i in range(30)]
    stats_w, local_w = summarize(wobbly), LocalStats.parse(json.dumps(summarize_local(wobbly)))
    for i in range(30, 34):
        assert check(stats_w, hide(100 + i, jitter[i]), local=local_w) is None
    # (the same frames against the steady line's statistics: 3 of the 4 are a cast)
    assert sum(check(stats, hide(100 + i, jitter[i]), local=local) is not None for i in range(30, 34)) == 3
    # grey frames (a mono camera) carry no colour to measure: no cast in their statistics
    grey = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in training]
    assert "cast_b" not in summarize_local(grey)["shading"]


def test_a_package_with_another_thumbnail_size_still_checks_the_scene():
    # a manifest may carry any thumb (1..64); the check used to compare only a 16x16 thumbnail and,
    # for another size, took the scene distance as 0: a moved camera was never named
    frames = [plate(1, i, None, 96)[0] for i in range(30)]
    stats = summarize(frames, thumb=8)
    assert stats.thumb == 8 and len(stats.scene) == 64
    assert check(stats, plate(1, 40, None, 96)[0]) is None
    assert check(stats, np.roll(plate(1, 41, None, 96)[0], 30, axis=1)).startswith("wrong scene")


def test_a_frame_the_camera_resized_to_a_size_the_training_frames_had_is_checked_at_it():
    """A camera's ``width`` and ``height`` that stretch its frames to the very size of the training frames:
    those were its own resized frames (the samples an agent uploads) or images made to its size (a dataset
    resized to a square, the camera set to match), stretched as its frames are. The camera's aspect made every
    frame of such a line UNSURE (``frame shape unlike training: 160x120 (resized to 96x96 ...)``); a size the
    training frames did not have is still checked by the camera's aspect."""
    from model_packager.inputstats import LocalStats, summarize_local

    frames = [plate(1, i, None, 96)[0] for i in range(3)]
    squashed = LocalStats(summarize_local(frames))  # trained on 96x96 images (a 4:3 view squashed, say)
    assert squashed.shape(frames[0], 1.0, (160, 120)) is None
    # trained on a 4:3 camera's own 160x120 frames: a 16:9 camera squeezed to another 4:3 size is not its view
    native = LocalStats(summarize_local(frames, shapes=[(120, 160)] * 3))
    why = native.shape(np.zeros((60, 80, 3), np.uint8), 1.0, (320, 180))
    assert why is not None and why.startswith(
        "frame shape unlike training (camera resolution, rotation or a partial frame): 320x180 (resized to "
        "80x60 by the camera's width and height), aspect 1.78"
    ), why
    assert native.shape(np.zeros((90, 120, 3), np.uint8), 1.0, (1280, 960)) is None  # 4:3 resized to 4:3


def test_a_camera_size_of_another_form_from_a_plugin_is_not_used():
    """A frame source plugin's ``Frame.camera_size`` in a form other than (width, height) made the check raise
    (a string, one value, three): ``bad_input`` on every frame, counted as the model's errors, which a fleet
    canary rolls back. Such a size is not used: the frame is checked by its own shape. A float size that is a
    whole number (OpenCV's ``cap.get``) is one."""
    from model_packager.inputstats import LocalStats, summarize_local

    native = LocalStats(
        summarize_local([plate(1, i, None, 96)[0] for i in range(2)], shapes=[(120, 160)] * 2)
    )
    small = np.zeros((60, 80, 3), np.uint8)  # 4:3, not a training size: a camera size would be read
    for odd in (("320", "180"), (320,), (320, 180, 3), "320x180", 320, (True, True), (float("inf"), 180)):
        assert native.shape(small, 1.0, odd) is None, odd  # type: ignore[arg-type]
    why = native.shape(small, 1.0, (320.0, 180.0))
    assert why is not None and "320x180 (resized to 80x60" in why, why
    assert native.shape(small, 1.0, (80, 60)) is None  # the frame's own size: not resized


def test_a_frames_camera_is_measured_against_the_training_frames_named_cameras():
    """Training frames whose camera is known (the samples an agent uploads name it: ``protocols.sample_camera``)
    record its proportions (``frame``'s ``camera``). Before, a frame resized to a training size was checked at
    that size whatever its camera, so a camera of other proportions put in place of one set to the training
    frames' size was judged; and a line whose camera squashed its 4:3 frames to 96x96 for training was UNSURE
    on every frame once set to another square (64x64). Frames of no named camera keep the check at their size."""
    from model_packager.inputstats import LocalStats, frame_shapes, summarize_local

    frames = [plate(1, i, None, 96)[0] for i in range(3)]
    own = LocalStats(summarize_local(frames, cameras=[(160, 120)] * 3))  # a 4:3 camera squashed to 96x96
    assert own.shape(frames[0], 1.0, (160, 120)) is None  # that camera at its size
    assert own.shape(frames[0], 1.0, (640, 480)) is None  # another size, the same aspect
    assert own.shape(np.zeros((64, 64, 3), np.uint8), 1.0, (160, 120)) is None  # another square
    assert own.shape(np.zeros((120, 160, 3), np.uint8), 1.0) is None  # the camera's frames not resized
    why = own.shape(frames[0], 1.0, (320, 180))  # a 16:9 camera set to the training frames' size
    assert why == (
        "frame shape unlike training (camera resolution, rotation or a partial frame): 320x180 (resized to 96x96 "
        "by the camera's width and height), aspect 1.78 outside 1.21-1.47 of the training frames' camera (160x120)"
    ), why
    assert (own.shape(frames[0], 1.0) or "").startswith(
        "frame shape unlike training (camera resolution, rotation"
    )
    # a roi model (its frame must be a training size): the camera put in place is named too
    roi = LocalStats(summarize_local(frames, cameras=[(160, 120)] * 3), roi=True)
    assert roi.shape(frames[0], 1.0, (160, 120)) is None
    assert "320x180 (resized to 96x96" in (roi.shape(frames[0], 1.0, (320, 180)) or "")
    # some 96x96 frames of no named camera (an outside dataset beside the samples): checked at that size
    mixed = LocalStats(summarize_local(frames, cameras=[(160, 120), None, None]))
    assert mixed.shape(frames[0], 1.0, (320, 180)) is None
    assert "(resized to 64x64" in (mixed.shape(np.zeros((64, 64, 3), np.uint8), 1.0, (320, 180)) or "")
    # no named camera: as before (the frame's own shape stands for its camera's), nothing new in the file
    assert "camera" not in frame_shapes([(96, 96)] * 3, [None] * 3)


def test_a_camera_size_that_is_no_cameras_is_left_out_and_the_build_says_the_cameras_it_records():
    """One training frame naming an implausible camera (a hand-made sample's ``999999x1``, a damaged one) widened
    the training cameras' aspect range for the whole model, silently: every wider camera was then sure. Such a
    size counts as none named (the frame's own size stands for it) and is said; the recorded cameras are counted
    and said, and so are the sizes of frames naming none (a camera resized to one of those is checked at it)."""
    from model_packager.inputstats import LocalStats, camera_lines, camera_problem, summarize_local

    assert camera_problem((8, 8)) is None and camera_problem((20_000, 2_000)) is None
    assert camera_problem((7, 96)) and camera_problem((20_001, 4000)) and camera_problem((1001, 100))
    frames = [plate(1, i, None, 96)[0] for i in range(4)]
    d = summarize_local(frames, cameras=[(160, 120), (160, 120), (999999, 1), None])
    frame = d["frame"]
    assert frame["camera"]["aspect"] == [1.0, 4 / 3]  # the 999999x1 sample's frame: by its own 96x96
    assert frame["camera"]["frames"] == {"160x120": 2} and frame["camera"]["unknown_frames"] == {"96x96": 2}
    assert frame["camera_ignored"] == {"999999x1": 1}
    why = LocalStats(d).shape(np.zeros((64, 64, 3), np.uint8), 1.0, (320, 180))  # a 16:9 camera: not its view
    assert "aspect 1.78 outside 0.905-1.47 of the training frames' camera (160x120)" in (why or ""), why
    lines = camera_lines(frame)
    assert lines[0].startswith("training frames' cameras: left out 999999x1 (1 frame): no camera's size")
    assert lines[1].startswith("training frames' cameras (frames): 160x120 (2); ")
    assert lines[2].startswith("training frames naming no camera: 96x96 (2): a frame resized to such a size")
    # every named one left out: no camera recorded, as for frames naming none, and still said
    alone = summarize_local(frames[:1], cameras=[(1, 1)])["frame"]
    assert "camera" not in alone and camera_lines(alone)[0].startswith(
        "training frames' cameras: left out 1x1"
    )
    # frames naming no camera: said unknown, their own size standing for it (a 96x96 square: re-import advised)
    (unknown,) = camera_lines(summarize_local(frames[:1])["frame"])
    assert unknown.startswith("training frames' cameras: unknown") and "96x96 (1)" in unknown, unknown


def test_a_small_glint_is_unsure_as_glare():
    # a specular hot spot (~6 % of the frame's width) on parts of another generator: the grey statistics
    # passed it (the model saw a white blob on a good part); the share of white pixels names it
    from model_packager.inputstats import LocalStats, summarize_local
    from tests.support.own_parts import make_part

    frames = [make_part(8, i, 128, None)[0] for i in range(30)]
    stats, local = summarize(frames), LocalStats(summarize_local(frames))
    yy, xx = np.mgrid[0:128, 0:128].astype(np.float32)
    spot = 350 * np.exp(-((xx - 70) ** 2 + (yy - 55) ** 2) / (2 * 7.7**2))
    good = make_part(8, 300, 128, None)[0]
    glint = np.clip(good + spot[..., None], 0, 255).astype(np.uint8)
    assert check(stats, good, local=local) is None
    assert check(stats, glint) is None
    assert (check(stats, glint, local=local) or "").startswith("glare or clipped highlights")


@pytest.mark.parametrize("hw", [(480, 640), (600, 800), (1080, 1920), (1944, 2592), (200, 200), (90, 120)])
def test_the_area_shrink_gives_opencvs_pixels(hw):
    """The check's own area shrink (two one-dimensional passes where OpenCV's is slow) gives the pixels
    ``cv2.resize(INTER_AREA)`` gives, which the packages' stored ranges were measured with: at most a float
    tie now and then off by one level."""
    import cv2

    from model_packager.inputstats import COLOUR, WORK, _area

    rng = np.random.default_rng(hw[0])
    frame = cv2.GaussianBlur(rng.integers(0, 256, (*hw, 3), dtype=np.uint8), (0, 0), 1.5)
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    for img, size in ((grey, WORK), (frame, COLOUR)):
        want = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
        got = _area(img, size, size)
        assert got.dtype == want.dtype and got.shape == want.shape
        diff = np.abs(got.astype(int) - want.astype(int))
        assert diff.max() <= 1 and np.count_nonzero(diff) <= diff.size // 1000, (hw, img.ndim, diff.max())


@pytest.mark.parametrize("thumb", [16, 8, 12])
def test_the_thumbnail_and_the_banding_taken_as_products_are_opencvs_values(thumb):
    """The check takes the scene thumbnail (the 64-px frame minus its blur, shrunk) and the banding's
    blurred profiles as matrix products, cheaper on such small images than OpenCV's calls; the statistics
    packages carry were measured with the calls. The same values to 1e-5 (a thumbnail is unit-norm, the
    scene margin's floor 0.08), at the package's own thumbnail size."""
    import cv2

    from model_packager.inputstats import LOW, _grey, _low, _thumb, local_stats
    from tests.support.own_parts import make_part

    rng = np.random.default_rng(thumb)
    frames = [
        cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (0, 0), 2.0),
        make_part(8, 3, 240, None)[0],
        np.full((120, 160, 3), 90, np.uint8),  # flat: a zero thumbnail
    ]
    for f in frames:
        g = _grey(f)
        lo = _low(g)
        want = cv2.resize(
            lo - cv2.GaussianBlur(lo, (0, 0), LOW / 8), (thumb, thumb), interpolation=cv2.INTER_AREA
        )
        want = want.ravel().astype(np.float64)
        want -= want.mean()
        n = np.linalg.norm(want)
        want = want / n if n > 1e-6 else want
        assert np.abs(_thumb(lo, thumb) - want).max() < 1e-5
        prof = np.hstack([cv2.reduce(g, 1, cv2.REDUCE_AVG), cv2.reduce(g, 0, cv2.REDUCE_AVG).reshape(-1, 1)])
        d = prof - cv2.GaussianBlur(prof, (1, 0), 0, sigmaY=8)
        e_rows, e_cols = (d * d).mean(0).tolist()
        want_banding = np.log10(e_rows + 1e-3) - np.log10(e_cols + 1e-3)
        assert abs(local_stats(f, g, lo)["banding"] - want_banding) < 1e-5


@pytest.mark.parametrize("hw", [(480, 640), (1024, 1280), (1944, 2592), (103, 640), (7, 9), (1, 70000)])
def test_the_checks_grey_frame_and_profiles_are_opencvs_to_the_bit(hw):
    """The check converts a frame to grey in bands of rows and takes the banding's row and column profiles of
    a uint8 frame's grey in NumPy (so that OpenCV keeps them in the calling thread, below): the same pixels as
    one ``cv2.cvtColor``, and every local statistic the same float as with ``cv2.reduce``'s profiles, on which
    the packages' stored ranges were measured."""
    from model_packager.inputstats import COLOUR, _area, _bgr_to_grey, _grey, _low, local_stats

    rng = np.random.default_rng(hw[1])
    frame = cv2.GaussianBlur(rng.integers(0, 256, (*hw, 3), dtype=np.uint8), (0, 0), 1.5)
    assert np.array_equal(_bgr_to_grey(frame), cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    deep = frame.astype(np.uint16) * 257  # another depth: converted in bands alike
    assert np.array_equal(_bgr_to_grey(deep), cv2.cvtColor(deep, cv2.COLOR_BGR2GRAY))
    if min(hw) < 8:
        return
    for f in (frame, (frame // 4).astype(np.uint8), np.full(frame.shape, 200, np.uint8)):
        g, c = _grey(f), _area(f, COLOUR, COLOUR)
        lo = _low(g)
        # a uint16 copy of the frame takes cv2.reduce's profiles; the same grey, colour and 64-px frames given
        assert local_stats(f, g, lo, c) == local_stats(f.astype(np.uint16), g, lo, c)


def test_the_check_leaves_opencvs_worker_threads_idle():
    """The UNSURE check runs beside the engine, one core each on a 2-core gateway. A call OpenCV hands to its
    worker thread (the frame's grey conversion, a ``reduce``) woke a third busy thread, which spun ~0.5 ms of
    CPU after each call on the engine's core: measured with the slot, 0.44-0.47 ms a 640x480 frame. In a fresh
    process, building the statistics and checking frames start no thread."""
    import subprocess
    import sys
    from pathlib import Path

    if not Path("/proc/self/task").is_dir():
        pytest.skip("counts the process's threads in /proc")
    code = """
import os
import cv2  # its import starts threads of its own
import numpy as np
from model_packager.inputstats import LocalStats, check, summarize, summarize_local
before = set(os.listdir("/proc/self/task"))
rng = np.random.default_rng(0)
frames = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(3)]
stats, local = summarize(frames), LocalStats(summarize_local(frames))
for f in frames + [f[:, :, 0] for f in frames]:
    check(stats, f, 1.0, local)
print(len(set(os.listdir("/proc/self/task")) - before))
"""
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "0", f"threads started by the check: {r.stdout.strip()}"
