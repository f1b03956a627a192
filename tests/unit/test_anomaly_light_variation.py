"""`cloud-trainer build anomaly --light-variation curved`: an opt-in for a line whose light varies. The
bank's relit copies of the good images (another lamp's gain, offset, gradient and colour) had no curvature,
so a good part under a lens's vignetting or an off-centre lamp spot was NG (38-100 % of good frames in
bench/anomaly_light_bench.py); the curved copies hold it, and a clear defect is still found.

`--light-variation lamp`: for a line whose lamps differ in colour or throw a spot. A `curved` build's copies
held only a slight colour tilt, and its features read each view's colour, so a good part under a warmer lamp,
or a lamp spot of another colour off to the side, was NG (bench/anomaly_light_bench.py: 12-38 % of good
frames under a spot, 12-25 % under a cast); a `lamp` build holds them, and a clear defect is still found.
The lights here are made in this file (independent per-channel gains; a Gaussian spot darkening away from
it), not in the trainer's forms (a shift along the Planckian locus; a cos^n lobe brightening)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from bench._machined_frames import frame as machined
from cloud_trainer.train import anomaly as A

W, H, SIZE = 320, 256, 64  # small frames of a turned face, seen whole at 64 px


def _face(index: int, light=None) -> np.ndarray:
    """A face-turned part (tool marks, grain, mottle) under the line's own light: lamp gain, a gentle
    gradient and up to 12 % vignetting, sensor noise, JPEG for half (bench/_machined_frames.py, seed 2);
    under ``light`` (a function of the full-size frame) when given."""
    img = machined(2, index, width=W, height=H)[0]
    return cv2.resize(img if light is None else light(img), (SIZE, SIZE), interpolation=cv2.INTER_AREA)


def _vignetted(index: int, depth: float = 0.35) -> np.ndarray:
    """The part under a lens's cos^4 fall-off, ``depth`` darker in the corners (a wider aperture, a hood
    opened: the bench's vignetting), seen at the model's size."""
    img = machined(2, index, width=W, height=H)[0]
    yy, xx = np.mgrid[:H, :W].astype(np.float32)
    u, v = (xx - W / 2) / (W / 2), (yy - H / 2) / (W / 2)
    cos4 = (1 / (1 + (u * u + v * v) * 0.45)) ** 2
    dark = np.clip(img * (1 - depth * (1 - cos4) / (1 - cos4.min()))[..., None], 0, 255).astype(np.uint8)
    return cv2.resize(dark, (SIZE, SIZE), interpolation=cv2.INTER_AREA)


def _gouged(img: np.ndarray) -> np.ndarray:
    """A clear defect: a dark gouge across the face."""
    out = img.copy()
    cv2.line(out, (18, 24), (42, 34), (40, 40, 40), 2)
    return out


@pytest.fixture(scope="module")
def builds():
    good = [_face(i) for i in range(20)]
    ds = A.AnomalyData(good, [f"g{i}" for i in range(20)])
    out = {}
    for light in ("linear", "curved", "lamp"):
        s = A.AnomalySettings(
            Path("."),
            Path("."),
            Path("."),
            Path("."),
            size=SIZE,
            bank_size=1024,
            threads=2,
            light_variation=light,
        )
        out[light] = A.fit(ds, s, log=lambda m: None)
    return out


def _ng(fitted: dict, frames: list[np.ndarray]) -> np.ndarray:
    """NG (True) per frame, at the build's stored threshold."""
    with torch.no_grad():
        scores = fitted["model"](torch.from_numpy(A.tensors(frames, fitted["pre"])))[0].numpy().ravel()
    return scores >= fitted["threshold"]


HELD = range(10_000, 10_006)  # held-out good parts


def test_a_good_part_under_a_vignette_is_ok_for_a_curved_light_build_and_ng_for_the_default(builds):
    parts = [_face(i) for i in HELD]
    assert not _ng(builds["linear"], parts).any()  # under the line's own light: OK for both
    assert not _ng(builds["curved"], parts).any()
    dark_corners = [_vignetted(i) for i in HELD]
    assert _ng(builds["linear"], dark_corners).all()  # the default's relit copies hold no curved light
    assert not _ng(builds["curved"], dark_corners).any()


def test_a_clear_defect_is_still_found_by_a_curved_light_build(builds):
    assert _ng(builds["linear"], [_gouged(_face(i)) for i in HELD]).all()
    assert _ng(builds["curved"], [_gouged(_face(i)) for i in HELD]).all()
    assert _ng(builds["curved"], [_gouged(_vignetted(i)) for i in HELD]).all()


def test_curved_and_lamp_light_only_darken_and_curved_copies_keep_the_defaults_draws():
    img = _face(0)
    rng = np.random.default_rng(3)
    for _ in range(20):
        for light in (A.curved_light, A.lamp_light):
            c = light(img, rng)
            assert c.shape == img.shape and c.dtype == np.uint8 and (c <= img).all()
    # the default copies' generator is not advanced by the curvature's draws
    pre = A.preprocessing(64)
    (default,) = A._relit_batches([img], pre, seed=0)
    (curved,) = A._relit_batches([img], pre, seed=0, curved=True)
    lrng = np.random.default_rng([0, 17])
    np.testing.assert_array_equal(default, A.tensors([A.relit_copy(img, lrng)], pre))
    assert not np.array_equal(default, curved)


def test_an_unknown_light_variation_is_refused_naming_the_setting():
    s = A.AnomalySettings(Path("."), Path("."), Path("."), Path("."), light_variation="flat")
    with pytest.raises(ValueError, match="light_variation 'flat'.*none, linear, curved"):
        A.fit(A.AnomalyData([_face(0)] * 20, [f"g{i}" for i in range(20)]), s)


@pytest.mark.parametrize(
    "given,expected",
    [([], "linear"), (["--light-variation", "curved"], "curved"), (["--light-variation", "lamp"], "lamp")],
)
def test_the_command_line_takes_the_light_variation_to_the_build(given, expected, tmp_path):
    from cloud_trainer.train.cli import _parser, _settings
    from cloud_trainer.train.families import load_family

    a = _parser("build").parse_args(["anomaly", "--dataset", "d", "--key", str(tmp_path / "k"), *given])
    st = load_family("anomaly").anomaly_settings(a, _settings(a))
    assert st.light_variation == expected


def test_a_wrong_light_variation_is_refused_naming_the_option(capsys):
    from cloud_trainer.train.cli import _parser

    with pytest.raises(SystemExit) as exit_:
        _parser("build").parse_args(["anomaly", "--dataset", "d", "--light-variation", "flat"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --light-variation" in err and "'flat'" in err and "curved" in err


def _warmer(img: np.ndarray) -> np.ndarray:
    """Another lamp's colour: blue 8 % down, red 8 % up (BGR gains, each channel on its own)."""
    return np.clip(img * np.asarray([0.92, 1.0, 1.08], np.float32), 0, 255).astype(np.uint8)


def _spot(img: np.ndarray) -> np.ndarray:
    """A lamp spot off to the upper left: a Gaussian (sigma 0.35 of the frame), 35 % darker far from it,
    its light 8 % warmer than the line's."""
    yy, xx = np.mgrid[:H, :W].astype(np.float32)
    g = np.exp(-((xx / W - 0.3) ** 2 + (yy / H - 0.3) ** 2) / (2 * 0.35**2))
    g = (g - g.min()) / (g.max() - g.min())
    field = (0.65 + 0.35 * g)[..., None] * np.asarray([0.92, 1.0, 1.08], np.float32)
    return np.clip(img * field, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("light", [_warmer, _spot], ids=["colour cast", "lamp spot"])
def test_a_good_part_under_another_lamp_is_ok_for_a_lamp_build_and_ng_for_a_curved_one(builds, light):
    parts = [_face(i) for i in HELD]
    assert not _ng(builds["lamp"], parts).any()  # under the line's own light: OK (and for curved, above)
    relit = [_face(i, light) for i in HELD]
    assert _ng(builds["curved"], relit).all()
    assert not _ng(builds["lamp"], relit).any()


def test_a_clear_defect_is_still_found_by_a_lamp_build_under_either_light(builds):
    for light in (None, _warmer, _spot):
        assert _ng(builds["lamp"], [_gouged(_face(i, light)) for i in HELD]).all()


def test_a_lamp_builds_copies_are_the_curved_ones_under_another_lamp():
    img = _face(0)
    pre = A.preprocessing(64)
    (lamp,) = A._relit_batches([img], pre, seed=0, lamp=True)
    lrng, crng, srng = (np.random.default_rng([0, k]) for k in (17, 19, 23))
    expected = A.lamp_light(A.curved_light(A.relit_copy(img, lrng), crng), srng)
    np.testing.assert_array_equal(lamp, A.tensors([expected], pre))


def test_lamp_colour_moves_blue_against_red_along_the_planckian_locus():
    warm, neutral, cool = A.lamp_colour(250.0), A.lamp_colour(200.0), A.lamp_colour(150.0)  # BGR, 4000-6700 K
    np.testing.assert_allclose(neutral, [1.0, 1.0, 1.0], atol=1e-6)
    assert warm[0] < 1.0 < warm[2] and cool[0] > 1.0 > cool[2]
