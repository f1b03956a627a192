"""The UNSURE check's cheaper computation gives what the former one gave.

``model_packager.inputstats`` takes the area shrinks of a camera frame from exact integer sums where it
can prove that the former float passes round every pixel the same way (``_exact_plan``), takes the colour
shrink beside the grey conversion, and keeps the scene thumbnail's matrices. The statistics packages carry
were measured with the former computation, kept here as the reference (``_ref_*``: the former code, in
its straightforward form); every statistic, thumbnail, summary and verdict must be the same, on frames of
every kind the check accepts.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable

import cv2
import numpy as np
import pytest

from model_packager import inputstats as S

# ---- the former computation (model_packager/inputstats.py before the exact path) ----------------------


def _ref_row_weights(H: int, h: int) -> np.ndarray:
    d = math.gcd(H, h)
    p, q = h // d, H // d
    wts = np.zeros((p, q), np.float64)
    for j in range(p):
        a, b = j * q / p, (j + 1) * q / p
        for i in range(int(a), min(q, math.ceil(b))):
            wts[j, i] = (min(b, i + 1) - max(a, i)) * p / q
    return wts.astype(np.float32)


def _ref_rows(img: np.ndarray, h: int) -> np.ndarray | None:
    H = img.shape[0]
    d = math.gcd(H, h)
    p, q = h // d, H // d
    flat = img.reshape(H, -1)
    if p == 1 and q <= 257:
        out = flat.reshape(h, q, -1).sum(1, dtype=np.uint16).astype(np.float32)
        out *= np.float32(1 / q)
    elif p <= 8 and q <= 64:
        out = np.matmul(_ref_row_weights(H, h), flat.astype(np.float32).reshape(H // q, q, -1)).reshape(h, -1)
    else:
        return None
    return out.reshape(h, *img.shape[1:])


def _ref_area(img: np.ndarray, w: int, h: int) -> np.ndarray:
    H, W = img.shape[:2]
    if img.dtype != np.uint8 or H <= h or W <= w:
        return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    if H % h == 0 and W % w == 0 and H // h <= 257 and 255 * (H // h) * (W // w) < 1 << 22:
        n = (H // h) * (W // w)
        s = img.reshape(h, H // h, -1).sum(1, dtype=np.uint16).reshape(h, W, *img.shape[2:])
        s = np.rint(cv2.resize(s.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) * (W // w))
        return np.clip(np.rint(s * np.float32(1 / n)), 0, 255).astype(np.uint8)
    f = _ref_rows(img, h)
    if f is None:
        f = cv2.resize(img.astype(np.float32), (w, H), interpolation=cv2.INTER_AREA)
        f = cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA)
    elif W != w:
        f = cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA)
    return np.clip(np.rint(f), 0, 255).astype(np.uint8)


def _ref_grey(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.shape[2] == 3 else img[:, :, 0]
    return _ref_area(img, S.WORK, S.WORK).astype(np.float32)


def _ref_matrix(kind: str, n: int, arg) -> np.ndarray:
    eye = np.eye(n, dtype=np.float32)
    if kind == "blur":
        m = cv2.GaussianBlur(eye, (1, 0), 0, sigmaY=arg)
    else:
        m = cv2.resize(eye, (n, arg), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(m, np.float64)


def _ref_thumb(lo: np.ndarray, thumb: int) -> np.ndarray:
    n = lo.shape[0]
    a = _ref_matrix("area", n, thumb)
    ab = a @ _ref_matrix("blur", n, S.LOW / 8)
    x = lo.astype(np.float64)
    x -= x.mean()
    t = ((a @ x) @ a.T - (ab @ x) @ ab.T).ravel()
    t -= t.mean()
    n2 = np.linalg.norm(t)
    return t / n2 if n2 > 1e-6 else t


def _ref_frame_stats(image: np.ndarray, thumb: int = S.THUMB):
    g = _ref_grey(image)
    lap = cv2.Laplacian(g, cv2.CV_32F)
    mean, std = cv2.meanStdDev(g)
    _, lap_std = cv2.meanStdDev(lap)
    st = {
        "brightness": float(mean[0, 0]),
        "contrast": float(std[0, 0]),
        "sharpness": float(np.log10(float(lap_std[0, 0]) ** 2 + 1e-3)),
    }
    lo = cv2.resize(g, (S.LOW, S.LOW), interpolation=cv2.INTER_AREA)
    return st, _ref_thumb(lo, thumb)


def _ref_local_stats(image: np.ndarray) -> dict:
    g = _ref_grey(image)
    lo = cv2.resize(g, (S.LOW, S.LOW), interpolation=cv2.INTER_AREA)
    out: dict = {}
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 3:
        c = _ref_area(img, S.COLOUR, S.COLOUR)
        bm, gm, rm, _ = cv2.mean(c)
        ch = cv2.split(c)
        spread = cv2.mean(
            cv2.subtract(cv2.max(cv2.max(ch[0], ch[1]), ch[2]), cv2.min(cv2.min(ch[0], ch[1]), ch[2]))
        )
        out["chroma_b"] = math.log((bm + 8) / (gm + 8))
        out["chroma_r"] = math.log((rm + 8) / (gm + 8))
        out["saturation"] = spread[0] / ((bm + gm + rm) / 3 + 8)
    elif img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1):
        out["saturation"] = 0.0
    out["clipped"] = int(np.count_nonzero(g >= 250.0)) / g.size
    prof = np.hstack([cv2.reduce(g, 1, cv2.REDUCE_AVG), cv2.reduce(g, 0, cv2.REDUCE_AVG).reshape(-1, 1)])
    d = prof - _ref_matrix("blur", prof.shape[0], 8) @ prof
    e_rows, e_cols = (d * d).mean(0).tolist()
    out["banding"] = math.log10(e_rows + 1e-3) - math.log10(e_cols + 1e-3)
    lap = cv2.Laplacian(lo, cv2.CV_32F)
    cells = cv2.resize(cv2.multiply(lap, lap), (S.GRID, S.GRID), interpolation=cv2.INTER_AREA)
    out["cells"] = [math.log10(v + 1e-3) for v in cells.ravel().tolist()]
    return out


def _ref_check(stats, image, tolerance: float, local: S.LocalStats | None) -> str | None:
    st, t = _ref_frame_stats(image, stats.thumb)
    st["scene_distance"] = float(np.linalg.norm(t - np.asarray(stats.scene, np.float64)))
    for k, (lo, hi) in S.bounds(stats, tolerance).items():
        v = st[k]
        if v < lo:
            return f"{S.REASONS[(k, 'low')]}: {k} {v:.3g} < {lo:.3g}"
        if v > hi:
            return f"{S.REASONS[(k, 'high')]}: {k} {v:.3g} > {hi:.3g}"
    if local is None:
        return None
    b, cells_low = local.bounds(tolerance)
    ls = _ref_local_stats(image)
    for k, (low, hi) in b.items():
        if k not in ls:
            continue
        v = ls[k]
        if v < low:
            return f"{S.LOCAL_REASONS[(k, 'low')]}: {k} {v:.3g} < {low:.3g}"
        if v > hi:
            return f"{S.LOCAL_REASONS[(k, 'high')]}: {k} {v:.3g} > {hi:.3g}"
    c = np.asarray(ls["cells"]) - cells_low
    i = int(np.argmin(c))
    if c[i] < 0:
        v, low = ls["cells"][i], cells_low[i]
        return (
            f"{S.LOCAL_REASONS[('cells', 'low')]}: sharpness {v:.3g} < {low:.3g} in region "
            f"{i // S.GRID + 1},{i % S.GRID + 1} of {S.GRID}x{S.GRID}"
        )
    return None


# ---- the frames ------------------------------------------------------------------------------------------


def _scene(h: int, w: int, seed: int) -> np.ndarray:
    """A textured colour scene with a light gradient and a part, as a camera sees one."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 60 + 120 * (xx / max(w, 1)) + 40 * np.sin(yy / max(h, 1) * 6.0)
    img = np.stack([base * 0.9, base, base * 1.1], -1) + rng.normal(0, 12, (h, w, 3))
    cy, cx, r = h / 2, w / 2, min(h, w) / 4
    img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] += (40, -20, 10)
    return np.clip(img, 0, 255).astype(np.uint8)


# (height, width): the bench's and cameras' sizes (several on the exact path, others not), odd and tiny
# ones, huge aspect ratios, a 1x1 frame
SIZES = [
    (480, 640),
    (240, 320),
    (960, 1280),
    (384, 640),
    (256, 256),
    (720, 1280),
    (1080, 1920),
    (600, 800),
    (224, 224),
    (128, 128),
    (127, 131),
    (481, 641),
    (130, 4000),
    (3000, 140),
    (2, 2000),
    (17, 9),
    (1, 1),
]
SMALL = 640 * 480  # the sizes that get a noise frame too


@functools.cache
def _scene_once(h: int, w: int, seed: int) -> np.ndarray:
    return _scene(h, w, seed)


@functools.cache
def _noise() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)  # one generator, drawn in SIZES' order
    return {
        f"{h}x{w} noise": rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES if h * w <= SMALL
    }


def _makers() -> dict[str, Callable[[], np.ndarray]]:
    """Each frame's name and how to make it. The frames are made when a test first asks for them, not when
    the module is collected: every xdist worker collects the module, and most run none of its tests."""
    makers: dict[str, Callable[[], np.ndarray]] = {}
    for k, (h, w) in enumerate(SIZES):
        colour = functools.partial(_scene_once, h, w, k)
        makers[f"{h}x{w} colour"] = colour
        makers[f"{h}x{w} grey"] = lambda colour=colour: cv2.cvtColor(colour(), cv2.COLOR_BGR2GRAY)
        if h * w <= SMALL:
            makers[f"{h}x{w} noise"] = lambda name=f"{h}x{w} noise": _noise()[name]
    f = functools.partial(_scene_once, 480, 640, 99)
    makers["480x640 constant"] = lambda: np.full((480, 640, 3), 117, np.uint8)
    makers["480x640 white"] = lambda: np.full((480, 640, 3), 255, np.uint8)
    makers["480x640 black grey"] = lambda: np.zeros((480, 640), np.uint8)
    makers["480x640 one channel"] = lambda: cv2.cvtColor(f(), cv2.COLOR_BGR2GRAY)[:, :, None]
    makers["480x640 four channels"] = lambda: cv2.cvtColor(f(), cv2.COLOR_BGR2BGRA)
    makers["480x640 a crop (strided)"] = lambda: _scene(600, 800, 5)[60:540, 80:720]
    makers["480x640 float32"] = lambda: f().astype(np.float32)
    makers["480x640 float32 grey"] = lambda: cv2.cvtColor(f(), cv2.COLOR_BGR2GRAY).astype(np.float32) / 3
    makers["480x640 blurred"] = lambda: cv2.GaussianBlur(f(), (0, 0), 4)
    makers["480x640 dark"] = lambda: (f() * 0.15).astype(np.uint8)
    return makers


MAKERS = _makers()


@functools.cache
def _frame(name: str) -> np.ndarray:
    """The frame named ``name``, made once per process (the tests share it, as they shared the former list)."""
    return MAKERS[name]()


def _close(a: float, b: float) -> bool:
    return a == b or abs(a - b) <= 1e-6 * max(abs(a), abs(b)) or abs(a - b) <= 1e-12


def _same_stats(got: dict, want: dict, what: str) -> None:
    assert got.keys() == want.keys(), what
    for k, v in want.items():
        if isinstance(v, list):
            same = len(got[k]) == len(v) and all(_close(x, y) for x, y in zip(got[k], v, strict=True))
            assert same, (what, k)
        else:
            assert _close(got[k], v), (what, k, got[k], v)


@pytest.mark.parametrize("name", list(MAKERS))
def test_every_statistic_of_a_frame_is_the_former_computations(name):
    frame = _frame(name)
    for thumb in (S.THUMB, 12):
        st, t = S.frame_stats(frame, thumb)
        want_st, want_t = _ref_frame_stats(frame, thumb)
        _same_stats(st, want_st, name)
        assert t.shape == want_t.shape and np.abs(t - want_t).max() <= 1e-9, name
    _same_stats(S.local_stats(frame), _ref_local_stats(frame), name)
    img = np.asarray(frame)
    for size in (S.WORK, S.COLOUR, S.LOW):  # the shrinks themselves, where the former ones ran on them
        if img.dtype == np.uint8 and (img.ndim == 2 or img.shape[2] in (1, 3)):
            got, want = S._area(img, size, size), _ref_area(img, size, size)
            assert got.dtype == want.dtype and np.array_equal(got, want), (name, size)


@pytest.fixture(scope="module")
def package_stats():
    train = [_scene(480, 640, 100 + i) for i in range(12)]
    return S.summarize(train), S.summarize_local(train)


def test_a_package_built_now_carries_the_former_statistics(package_stats):
    """``summarize`` and ``summarize_local`` (run at packaging time) give the ranges the former
    computation gave: packages built before stay valid and new ones mean the same."""
    stats, local = package_stats
    train = [_scene(480, 640, 100 + i) for i in range(12)]
    rows = [_ref_frame_stats(f) for f in train]
    thumbs = np.asarray([t for _, t in rows])
    scene = thumbs.mean(0)
    assert np.abs(np.asarray(stats.scene) - np.round(scene, 6)).max() <= 2e-6
    for k in ("brightness", "contrast", "sharpness"):
        v = np.asarray([st[k] for st, _ in rows])
        r = getattr(stats, k)
        assert _close(r.p01, float(np.percentile(v, 1))) and _close(r.p50, float(np.percentile(v, 50)))
        assert _close(r.p99, float(np.percentile(v, 99))) and _close(r.std, float(v.std())), k
    ref_local = [_ref_local_stats(f) for f in train]
    for k, r in local["stats"].items():
        v = np.asarray([x[k] for x in ref_local])
        assert _close(r["p50"], float(np.percentile(v, 50))) and _close(r["std"], float(v.std())), k
    cells = np.asarray([x["cells"] for x in ref_local])
    for i, r in enumerate(local["cells"]):
        assert _close(r["p01"], float(np.percentile(cells[:, i], 1))), i


@pytest.mark.parametrize("tolerance", [1.0, 0.3])
def test_every_frame_gets_the_former_verdict_and_reason(package_stats, tolerance):
    stats, local_data = package_stats
    # the statistics' computations, on frames of 17 sizes: without the training frames' shape, which would
    # answer first for every frame not 4:3 (``test_unsure_frame_shape.py``), nor the light's colour against the
    # training's view of the scene (``shading``'s cast: a frame of other proportions is another view of it)
    data = {k: v for k, v in local_data.items() if k != "frame"}
    data["shading"] = {
        k: v for k, v in data["shading"].items() if k not in ("colour_ref", "cast_b", "cast_r")
    }
    local = S.LocalStats.parse(json.dumps(data))
    reasons = set()
    for name in MAKERS:
        frame = _frame(name)
        for loc in (local, None):
            got = S.check(stats, frame, tolerance, loc)
            assert got == _ref_check(stats, frame, tolerance, loc), (name, got)
            reasons.add((got or "None").split(":")[0])
    # the frames reach the local statistics and several reasons, not only the first failing global one
    assert "None" in reasons and len(reasons) >= 4, reasons


def test_the_bench_frames_shrinks_take_the_exact_path_and_ties_do_not():
    """A 640x480 frame (the bench's, a common camera's) is shrunk from exact integer sums, grey to
    WORK px and colour to COLOUR px; a shape whose exact mean can fall on a tie (an even D: 1280x720 to
    128 px) or whose passes are OpenCV's own (1080 rows) keeps the former passes."""
    assert S._exact_plan(480, 640, 1, S.WORK, S.WORK) is not None
    assert S._exact_plan(480, 640, 3, S.COLOUR, S.COLOUR) is not None
    assert S._exact_plan(720, 1280, 1, S.WORK, S.WORK) is None
    assert S._exact_plan(1080, 1920, 1, S.WORK, S.WORK) is None
