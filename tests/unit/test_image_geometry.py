"""Image geometry from the manifest (region of interest, tiles, grey) applied by the one
``image_tensor`` both the trainer and the agent use, and a tiled model's verdict and heat map."""

from __future__ import annotations

import numpy as np
import pytest

from model_packager.manifest import ImagePreprocessing, Manifest
from model_packager.preprocess import PreprocessError, heatmap_on_frame, image_tensor, interpret, tile_boxes


def spec(**kw) -> ImagePreprocessing:
    return ImagePreprocessing(
        **{"width": 32, "height": 32, "mean": [0.5] * 3, "std": [0.25] * 3, "interpolation": "linear", **kw}
    )


def frame(h=1024, w=1280, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(90, 110, (h, w, 3), dtype=np.uint8)


def test_roi_is_a_pixel_box_of_the_frame():
    f = frame(200, 300)
    got = image_tensor(f, spec(roi=[40, 30, 100, 80]))
    assert np.array_equal(got, image_tensor(np.ascontiguousarray(f[30:110, 40:140]), spec()))
    with pytest.raises(
        PreprocessError,
        match=r"roi \[x=250, y=30, width=100, height=80\] reaches outside the "
        r"300x200 frame",
    ):
        image_tensor(f, spec(roi=[250, 30, 100, 80]))


def test_tiles_cover_the_frame_row_major_with_overlap():
    s = spec(tiles=[5, 4], tile_overlap=0.125)
    boxes = tile_boxes(1024, 1280, s)
    assert len(boxes) == 20 and boxes[0][:2] == (0, 0) and boxes[4][0] + boxes[4][2] == 1280
    assert boxes[-1][1] + boxes[-1][3] == 1024 and boxes[1][0] < boxes[0][2]  # neighbours overlap
    assert image_tensor(frame(), s).shape == (20, 3, 32, 32)


def test_a_2px_scratch_on_a_1280x1024_frame_survives_tiling_but_not_a_plain_resize():
    clean = np.full((1024, 1280, 3), 100, np.uint8)
    f = clean.copy()
    f[700:702, 900:1000] = 20  # a dark scratch 2 px wide, 100 px long
    full = 80 / 255 / 0.25  # its contrast, in the model's input units
    plain = spec(width=128, height=128, interpolation="area")
    tiled = spec(width=128, height=128, tiles=[5, 4])
    drop_plain = float((image_tensor(clean, plain) - image_tensor(f, plain)).max())
    d = (image_tensor(clean, tiled) - image_tensor(f, tiled)).max(axis=(1, 2, 3))
    hit = tile_boxes(1024, 1280, tiled)[int(d.argmax())]
    assert hit[0] <= 900 and hit[0] + hit[2] >= 1000 and hit[1] <= 700 <= hit[1] + hit[3]  # the right tile
    assert d.max() > 0.6 * full and d.max() > 3 * drop_plain  # tiled: most of its contrast; resized: a trace


def test_grey_models_take_one_channel_and_grey_frames():
    s = ImagePreprocessing(width=16, height=16, color="gray", mean=[0.5], std=[0.25])
    g = np.full((40, 30), 128, np.uint8)
    assert image_tensor(g, s).shape == (1, 1, 16, 16)
    assert np.allclose(image_tensor(np.dstack([g] * 3), s), image_tensor(g, s))
    assert image_tensor(g, spec()).shape == (1, 3, 32, 32)  # a grey frame for a colour model


def test_a_manifest_without_the_new_fields_reads_as_before():
    old = ImagePreprocessing.model_validate({"kind": "image", "width": 64, "height": 64})
    assert old.roi is None and old.tiles is None and old.n_tiles == 1 and old.interpolation == "area"
    with pytest.raises(ValueError, match=r"tiles is \[columns, rows\]"):
        spec(tiles=[0, 2])


def manifest(tiles) -> Manifest:
    from tests.support.models import vision_spec

    m = vision_spec(width=32, height=32, labels=("ok", "dent"))
    m["preprocessing"] = {**m["preprocessing"], "tiles": tiles}
    m["outputs"][1]["shape"] = ["batch", 1, 4, 4]
    m["files"] = []
    return Manifest.model_validate({**m, "schema_version": 2, "created_at": "2026-01-01T00:00:00Z"})


def test_a_tiled_model_is_ng_when_any_tile_is_and_its_heat_map_is_stitched_in_place():
    m = manifest([2, 2])
    logits = np.zeros((4, 2), np.float32)
    logits[:, 0] = 5.0
    logits[3] = [-3.0, 3.0]  # the bottom-right tile holds a dent
    heat = np.zeros((4, 1, 4, 4), np.float32)
    heat[3, 0, 2, 2] = 9.0
    res = interpret(m, {"logits": logits, "heatmap": heat})
    assert res.verdict == "NG" and res.tile == 3 and res.label == "dent" and res.score > 0.99
    assert res.heatmap.shape == (8, 8) and np.unravel_index(res.heatmap.argmax(), (8, 8)) == (6, 6)
    ok = interpret(m, {"logits": np.tile([[5.0, 0.0]], (4, 1)).astype(np.float32), "heatmap": heat * 0})
    assert ok.verdict == "OK"
    on_frame = interpret(m, {"logits": logits, "heatmap": heat}, frame_hw=(200, 400)).heatmap
    y, x = np.unravel_index(on_frame.argmax(), on_frame.shape)
    assert on_frame.shape == (128, 256) and x > 128 and y > 64  # bottom-right quarter of the frame
    with pytest.raises(PreprocessError, match="has 3 rows for the model's 4 tiles"):
        interpret(m, {"logits": logits[:3], "heatmap": heat[:3]})


def test_heat_map_of_a_roi_model_lands_on_the_roi():
    s = spec(roi=[100, 50, 100, 100])
    h = np.zeros((4, 4), np.float32)
    h[0, 0] = 1.0
    out = heatmap_on_frame([h], (200, 400), s)
    y, x = np.unravel_index(out.argmax(), out.shape)
    f = 256 / 400  # the map is at most 256 px wide
    assert out.shape == (128, 256) and 100 * f <= x < 125 * f and 50 * f <= y < 75 * f


@pytest.mark.parametrize("color", ["rgb", "bgr", "gray"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("frame_hw", [(48, 64), (30, 40)], ids=["resized", "model-size"])
def test_uint8_frames_normalise_to_the_per_pixel_formula_within_one_float32_step(color, layout, frame_hw):
    # (x * scale - mean) / std after a uint8 resize, in the manifest's channel order, computed exactly (double)
    # and compared in units of float32 spacing: any faster normalisation must stay within one rounding step
    import cv2

    spec = ImagePreprocessing(
        kind="image",
        width=40,
        height=30,
        color=color,
        layout=layout,
        interpolation="linear",
        mean=[0.485, 0.456, 0.406],
        std=[0.229, 0.224, 0.225],
    )
    frame = np.random.default_rng(3).integers(0, 256, (*frame_hw, 3), dtype=np.uint8)
    small = cv2.resize(frame, (40, 30), interpolation=cv2.INTER_LINEAR) if frame_hw != (30, 40) else frame
    chans = (
        [cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)]
        if color == "gray"
        else [small[:, :, i] for i in ((2, 1, 0) if color == "rgb" else (0, 1, 2))]
    )
    c = len(chans)
    std = np.asarray(spec.std[:c], np.float64)
    mean = np.asarray(spec.mean[:c], np.float64)
    want = np.stack([(ch.astype(np.float64) * spec.scale - mean[i]) / std[i] for i, ch in enumerate(chans)])[
        None
    ]
    terms = np.stack(
        [ch.astype(np.float64) * spec.scale / std[i] + mean[i] / std[i] for i, ch in enumerate(chans)]
    )
    if layout == "NHWC":
        want = want.transpose(0, 2, 3, 1)
    got = image_tensor(frame, spec)
    assert got.dtype == np.float32 and got.shape == want.shape
    if layout == "NHWC":
        terms = terms.transpose(1, 2, 0)
    step = np.spacing(terms[None].astype(np.float32)).astype(np.float64)  # float32 step of the larger term
    assert np.all(np.abs(got - want) <= 2 * step)  # float32 a and b, and one or two roundings
    assert not np.array_equal(got, np.zeros_like(got))  # written into the output, not a copy


@pytest.mark.parametrize("color", ["rgb", "bgr", "gray"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("geometry", [{}, {"roi": [4, 2, 50, 40]}, {"tiles": [2, 2], "tile_overlap": 0.2}])
@pytest.mark.parametrize("frame_hw", [(48, 64), (30, 40)], ids=["resized", "model-size"])
def test_a_uint8_input_gets_exactly_the_pixels_the_float_path_would_scale(color, layout, geometry, frame_hw):
    # a model that normalises its pixels itself (uint8 input) sees the same geometry, resize, colour and
    # layout as a float model: the float path with an identity normalisation gives the same numbers
    if "roi" in geometry and frame_hw == (30, 40):
        geometry = {"roi": [2, 1, 30, 25]}
    common = {
        "width": 40,
        "height": 30,
        "color": color,
        "layout": layout,
        "interpolation": "linear",
        **geometry,
    }
    identity = ImagePreprocessing(**common, scale=1.0, mean=[0.0] * 3, std=[1.0] * 3)
    img = np.random.default_rng(5).integers(0, 256, (*frame_hw, 3), dtype=np.uint8)
    got = image_tensor(img, identity, "uint8")
    want = image_tensor(img, identity)
    assert got.dtype == np.uint8 and got.shape == want.shape
    assert np.array_equal(got.astype(np.float32), want)
    half = image_tensor(img, spec(color=color, layout=layout, **geometry), "float16")
    assert half.dtype == np.float16
    assert np.allclose(half, image_tensor(img, spec(color=color, layout=layout, **geometry)), atol=4e-3)


def test_an_image_input_of_another_dtype_or_a_uint8_input_with_a_normalisation_is_refused_by_name():
    from model_packager.package import _validate_manifest
    from tests.support.models import vision_spec

    def manifest(dtype: str, **pre) -> dict:
        m = vision_spec(heatmap=False)
        m["inputs"][0]["dtype"] = dtype
        m["preprocessing"].update(pre)
        return m

    with pytest.raises(Exception, match=r"uint8 .*needs scale 1, mean 0, std 1, not 0\.00392157,"):
        _validate_manifest(manifest("uint8", mean=[0, 0, 0], std=[1, 1, 1]), "manifest.json")
    with pytest.raises(Exception, match=r"not 1, \[0\.5, 0\.5, 0\.5\], \[0\.25, 0\.25, 0\.25\]"):
        _validate_manifest(manifest("uint8", scale=1.0), "manifest.json")
    with pytest.raises(Exception, match="is int64: an image input is float32, float16 or uint8"):
        _validate_manifest(manifest("int64"), "manifest.json")
    ok = _validate_manifest(manifest("uint8", scale=1.0, mean=[0, 0, 0], std=[1, 1, 1]), "manifest.json")
    assert ok.inputs[0].dtype.value == "uint8"


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
@pytest.mark.parametrize("geometry", [{}, {"tiles": [2, 2], "tile_overlap": 0.2}])
def test_a_frames_tensor_allocates_the_tensor_and_nothing_else_per_frame(dtype, geometry):
    # the agent makes one tensor per frame on its inference thread, right after the previous model run: every
    # further buffer (the resized frame, its planes) was fresh, cold memory on every frame (issue 13's overhead)
    import tracemalloc

    norm = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]} if dtype == "float32" else {}
    s = ImagePreprocessing(
        width=224,
        height=224,
        color="rgb",
        layout="NCHW",
        interpolation="linear",
        **({"scale": 1.0, "mean": [0.0] * 3, "std": [1.0] * 3} if dtype == "uint8" else norm),
        **geometry,
    )
    frames = [np.random.default_rng(i).integers(0, 256, (480, 640, 3), dtype=np.uint8) for i in range(2)]
    want = image_tensor(frames[1], s, dtype).copy()
    image_tensor(frames[0], s, dtype)  # the first frame of a shape may set up what the next ones reuse
    tracemalloc.start()
    try:
        got = image_tensor(frames[1], s, dtype)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(got, want)  # the same tensor, a frame made in between
    assert peak <= got.nbytes + 16384, f"{peak - got.nbytes} bytes beside the {got.nbytes}-byte tensor"


def test_threads_making_tensors_at_once_each_get_their_own_frames_tensor():
    # a gateway runs a pipeline per camera, each on its own thread, all through the one image_tensor
    import threading

    s = ImagePreprocessing(
        width=64,
        height=48,
        color="rgb",
        layout="NCHW",
        interpolation="linear",
        mean=[0.5] * 3,
        std=[0.25] * 3,
    )
    frames = [np.random.default_rng(i).integers(0, 256, (120, 160, 3), dtype=np.uint8) for i in range(4)]
    want = [image_tensor(f, s) for f in frames]
    start = threading.Barrier(len(frames))
    wrong: list[int] = []

    def make(i: int) -> None:
        start.wait()
        for _ in range(300):
            if not np.array_equal(image_tensor(frames[i], s), want[i]):
                wrong.append(i)

    threads = [threading.Thread(target=make, args=(i,)) for i in range(len(frames))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong


def test_a_thread_keeps_no_more_than_a_few_mb_of_buffers_after_a_huge_models_frame_or_a_swap():
    # the per-thread buffers were kept for as long as the thread lived, up to eight sets of any size: one frame
    # through a 5000x5000 grey model (from a colour frame) left its 75-MB resize buffer held by the inference
    # thread, and models of other sizes swapped in left their sets beside the new one's
    import threading
    import tracemalloc

    def model(side: int, color: str = "rgb") -> ImagePreprocessing:
        return ImagePreprocessing(
            width=side,
            height=side,
            color=color,
            layout="NCHW",
            interpolation="linear",
            mean=[0.5] * 3,
            std=[0.25] * 3,
        )

    colour = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    held: dict[str, int] = {}

    def serve() -> None:  # an inference thread: its frames, then what it holds between two frames
        tracemalloc.start()
        try:
            image_tensor(colour, model(224))
            image_tensor(colour, model(5000, "gray"))  # one odd model (or frame) of 200 MB at its peak
            held["huge"] = tracemalloc.get_traced_memory()[0]
            for side in (1024, 1280, 1536):  # swaps to models of other input sizes
                image_tensor(colour, model(side))
            held["swaps"] = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()

    t = threading.Thread(target=serve)
    t.start()
    t.join()
    assert held["huge"] < 10 << 20, f"{held['huge'] / 1e6:.0f} MB held after a 5000x5000 model's frame"
    assert held["swaps"] < 10 << 20, f"{held['swaps'] / 1e6:.0f} MB held after three swaps"


def test_a_small_models_buffers_are_reused_beside_a_large_model_on_the_same_inference_thread():
    # one inference thread serves every model of the gateway; the 8-MiB cap dropped the oldest-made buffers first,
    # even the ones used every frame, and admitted a model's buffers one by one: a 224-px model beside a 1280-px one
    # (or one of 1180 px) allocated fresh buffers on every frame, the large one too and still held one of them
    import threading
    import tracemalloc

    def model(side: int) -> ImagePreprocessing:
        return ImagePreprocessing(
            width=side,
            height=side,
            color="rgb",
            layout="NCHW",
            interpolation="linear",
            mean=[0.5] * 3,
            std=[0.25] * 3,
        )

    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    small = model(224)
    allocated: dict[int, int] = {}

    def serve() -> None:  # an inference thread: frames of the two models in turn
        for side in (1280, 1180, 1106):
            large = model(side)
            image_tensor(frame, small)
            image_tensor(frame, large)
            allocated[side] = 0
            for _ in range(5):
                tracemalloc.start()
                try:
                    got = image_tensor(frame, small)
                    peak = tracemalloc.get_traced_memory()[1]
                finally:
                    tracemalloc.stop()
                allocated[side] += peak > got.nbytes + 16384  # buffers made beside the tensor
                image_tensor(frame, large)

    t = threading.Thread(target=serve)
    t.start()
    t.join()
    assert allocated == {1280: 0, 1180: 0, 1106: 0}, (
        "224-px frames that allocated buffers, of 5, per large model"
    )
