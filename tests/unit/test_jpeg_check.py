"""The damaged-JPEG checks (``protocols.jpeg_check`` and the packager's copy) on crafted files: walked within a
bound, counted in Python line events (not timed), and still telling real damage."""

from __future__ import annotations

import importlib

import cv2
import numpy as np
import pytest

from tests.support.line_events import line_events

MODULES = ["protocols.jpeg_check", "model_packager.image_file"]


def _jpeg(image: np.ndarray, restart_rows: int = 0) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, 90]
    if restart_rows:
        params += [cv2.IMWRITE_JPEG_RST_INTERVAL, restart_rows]
    ok, buf = cv2.imencode(".jpg", image, params)
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize("module", MODULES)
def test_a_decodable_jpeg_with_millions_of_fill_bytes_in_its_header_is_walked_within_a_bound(module):
    """libjpeg steps over 0xFF fill bytes before a marker in C, so a JPEG with 2 MB of them in its header decodes;
    the damage check after the decode then stepped over them a byte at a time in Python (~0.15 s for 2 MB, ~15 s
    of the camera's or the inference thread for the 201 MB a frame may take)."""
    check = importlib.import_module(module).coded_damage
    real = _jpeg(np.full((32, 48, 3), 90, np.uint8), restart_rows=1)
    for crafted in (
        real[:2] + b"\xff" * 2_000_000 + real[2:],
        real[:2] + b"\xff\xfe\x00\x02" * 500_000 + real[2:],
    ):
        assert cv2.imdecode(np.frombuffer(crafted, np.uint8), cv2.IMREAD_COLOR) is not None
        got: list = []
        lines = line_events(lambda c=crafted, g=got: g.append(check(c)), 200_000)
        assert lines <= 200_000, f"over 200000 lines run for {len(crafted)} bytes"
        assert got == [None]


@pytest.mark.parametrize("module", MODULES)
def test_restart_markers_out_of_order_are_still_told_behind_fill_bytes(module):
    check = importlib.import_module(module).coded_damage
    rng = np.random.default_rng(3)
    real = _jpeg(rng.integers(0, 256, (64, 64, 3), np.uint8), restart_rows=1)
    assert check(real) is None
    first = real.find(b"\xff\xd0")
    assert first > 0
    swapped = real[:first] + b"\xff\xd1" + real[first + 2 :]  # RST1 where RST0 belongs
    padded = swapped[:2] + b"\xff" * 1000 + bytes(1000) + swapped[2:]
    assert "RST1 where RST0 belongs" in (check(padded) or "")


@pytest.mark.parametrize("module", MODULES)
def test_the_grey_fill_check_steps_back_over_millions_of_fill_bytes_before_the_end_within_a_bound(module):
    """A flat grey image (each corner block the grey libjpeg fills in) with 2 MB of 0xFF fill bytes before its end
    marker decodes; the check stepped back over them a byte at a time in Python. It is whole: not refused."""
    grey_filled = importlib.import_module(module).grey_filled
    real = _jpeg(np.full((32, 48, 3), 128, np.uint8))
    crafted = real[:-2] + b"\xff" * 2_000_000 + real[-2:]
    image = cv2.imdecode(np.frombuffer(crafted, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and (image == 128).all()
    got: list = []
    lines = line_events(lambda: got.append(grey_filled(crafted, image, cv2.IMREAD_COLOR)), 200_000)
    assert lines <= 200_000, f"over 200000 lines run for {len(crafted)} bytes"
    assert got == [False]


@pytest.mark.parametrize("module", MODULES)
def test_coded_data_looked_through_in_windows_says_what_it_said_whole(module, monkeypatch):
    """The restart markers are found a window of coded data at a time (a whole file's at once took 11 bytes of
    memory for each byte of a file of FF 00 pairs): windows of a few bytes, markers split across two of them, tell
    the same order, damage and end as one window over the whole file."""
    mod = importlib.import_module(module)
    rng = np.random.default_rng(5)
    # one MCU wide (16 px): 28 restart markers in ~7 kB, each window size walked over every byte of it (64 px wide
    # made 99 in 24 kB for the same cases, 3.5 times the time at a window of 1 byte)
    real = _jpeg(rng.integers(0, 256, (464, 16, 3), np.uint8), restart_rows=1)
    rst = [k for k in range(len(real) - 1) if real[k] == 0xFF and 0xD0 <= real[k + 1] <= 0xD7]
    assert len(rst) > 24
    wrong = real[: rst[10]] + b"\xff\xd5" + real[rst[10] + 2 :]  # RST5 where RST2 belongs
    lost = real[: rst[3]] + real[rst[5] :]  # two intervals gone
    cut = real[: rst[20]] + b"\xff\xd9"
    files = [real, wrong, lost, cut, real[:-2], real[:2] + b"\xff" * 50 + real[2:]]
    whole = [mod.coded_damage(f) for f in files]
    assert whole[0] is None and "RST5 where RST2 belongs" in whole[1] and "cut short" in whole[4], whole
    assert "RST5 where RST3 belongs" in whole[2] and "missing" in whole[3], whole
    for window in (1, 2, 3, 7, 64):
        monkeypatch.setattr(mod, "_CODED_WINDOW", window)
        assert [mod.coded_damage(f) for f in files] == whole, window


def _many_scans_then_a_long_one(progressive: bool, scans: int, pairs: int) -> bytes:
    """A JPEG with a restart interval whose coded image is followed by ``scans`` tiny extra scans, the last one's
    coded data ``pairs`` FF 00 pairs long: OpenCV decodes it."""
    image = cv2.GaussianBlur(
        np.random.default_rng(0).integers(0, 255, (64, 64, 3)).astype(np.uint8), (5, 5), 0
    )
    params = [cv2.IMWRITE_JPEG_RST_INTERVAL, 1] + ([cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if progressive else [])
    ok, buf = cv2.imencode(".jpg", image, params)
    assert ok
    real = buf.tobytes()

    def seg(marker: int, payload: bytes) -> bytes:
        return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload

    if progressive:  # a DC refinement scan of the first component
        extra = seg(0xDA, bytes([1, 1, 0x00, 0, 0, 0x10])) + b"\x00"
    else:
        extra = seg(0xDA, bytes([3, 1, 0x00, 2, 0x11, 3, 0x11, 0, 63, 0])) + b"\x00"
    return real[:-2] + extra * scans + b"\xff\x00" * pairs + b"\xff\xd9"


@pytest.mark.parametrize(
    ("module", "check", "progressive"),
    [(m, "coded_damage", p) for m in MODULES for p in (False, True)]
    + [(m, "jpeg_scans_over", True) for m in ("protocols.image_header", "model_packager.image_file")],
)
def test_a_jpeg_of_many_tiny_scans_before_a_long_one_is_looked_through_about_once(
    module, check, progressive, monkeypatch
):
    """The coded data was looked through a whole 1-MB window for every scan however near its end marker: a
    1-MB baseline JPEG of 4,000 tiny extra scans before 1 MB of FF 00 pairs took 20 s of the folder camera
    for each frame (75 ms before). The window now starts small and doubles: bytes looked through are counted."""
    crafted = _many_scans_then_a_long_one(
        progressive, 50 if progressive else 200, 500_000
    )  # 64 scans at most
    assert cv2.imdecode(np.frombuffer(crafted, np.uint8), cv2.IMREAD_COLOR) is not None
    looked = [0]
    flatnonzero = np.flatnonzero

    def counting(a):
        looked[0] += np.asarray(a).size
        return flatnonzero(a)

    monkeypatch.setattr(np, "flatnonzero", counting)
    said = getattr(importlib.import_module(module), check)(crafted)
    assert looked[0] <= 4 * len(crafted), f"{looked[0]} bytes looked through for a file of {len(crafted)}"
    # its last tiny scan, closed by the end marker, holds none of its restart markers
    if check == "coded_damage":
        assert said is not None and "0 restart markers in scan" in said, said
    else:
        assert said is None


@pytest.mark.parametrize("module", MODULES)
def test_a_progressive_jpeg_cut_within_its_last_scan_and_closed_is_told_by_its_restart_markers(module):
    """A progressive JPEG cut short within its last scan and closed with an end marker sends every scan, so the check
    that its scans send every coefficient (``jpeg_scans_over``) passes it, and libjpeg decodes the rest of that scan
    as nothing: the lower part of the image without its last refinement, taken as a frame. Its restart markers were
    counted in a baseline image's first scan only; every scan's are counted now, each against the MCUs (or, for one
    component, the blocks) it codes. Whole files of every shape (grey and colour, 4:2:0, 4:2:2 and 4:4:4, odd sizes,
    baseline and progressive, intervals of 1-7 MCUs) are not refused."""
    from protocols.image_header import jpeg_scans_over

    check = importlib.import_module(module).coded_damage
    rng = np.random.default_rng(5)
    sampling = (
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
    )
    caught = 0
    for h, w in ((9, 7), (77, 251), (240, 320)):
        small = rng.integers(0, 256, (max(2, h // 8), max(2, w // 8), 3), np.uint8)
        colour = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        for image in (colour, cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)):
            for progressive, restart, factor in (
                (p, r, f) for p in (0, 1) for r in (1, 2, 7) for f in sampling
            ):
                params = [cv2.IMWRITE_JPEG_PROGRESSIVE, progressive, cv2.IMWRITE_JPEG_RST_INTERVAL, restart]
                ok, buf = cv2.imencode(".jpg", image, params + [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, factor])
                whole = buf.tobytes()
                assert check(whole) is None, (h, w, image.ndim, progressive, restart, factor)
                if not progressive or h < 200:
                    continue
                last, end = whole.rfind(b"\xff\xda"), whole.rfind(b"\xff\xd9")
                cut = whole[: last + (end - last) // 2] + b"\xff\xd9"  # half its last scan, then closed
                assert jpeg_scans_over(cut) is None  # every scan there: the scan count passes it
                assert cv2.imdecode(np.frombuffer(cut, np.uint8), cv2.IMREAD_COLOR) is not None
                said = check(cut)
                assert said is not None and "restart markers in scan" in said, said
                caught += 1
    assert caught == 2 * 3 * 3


def _with_component_ids(data: bytes, ids: tuple[int, ...]) -> bytes:
    """``data`` (a baseline JPEG) with its frame header's component ids made ``ids``, its scan's pointed at them."""
    out = bytearray(data)
    i = 2
    while True:
        marker, length = out[i + 1], (out[i + 2] << 8) | out[i + 3]
        if marker in (0xC0, 0xC1, 0xC2):
            for c in range(out[i + 9]):
                out[i + 10 + 3 * c] = ids[c]
        if marker == 0xDA:
            for c in range(out[i + 4]):
                out[i + 5 + 2 * c] = ids[c]
            return bytes(out)
        i += 2 + length


@pytest.mark.parametrize("module", MODULES)
def test_a_jpeg_whose_frame_repeats_a_component_id_is_not_refused_for_its_restart_markers(module):
    """A frame header repeating a component id (1,1,1 or 0,0,0: against T.81, yet libjpeg-turbo and OpenCV decode
    it, the same image) kept one component's sampling of the three (a table by id): a 4:2:0 JPEG with restart
    markers, whole, was refused as 299 restart markers where 1,199 belong. Its components are kept in frame
    order now; the restart count is not checked only for a one-component scan whose id names components of
    different samplings (their order still is)."""
    check = importlib.import_module(module).coded_damage
    rng = np.random.default_rng(1)
    image = cv2.resize(rng.integers(0, 256, (30, 40, 3), np.uint8), (320, 240), interpolation=cv2.INTER_CUBIC)
    ok, buf = cv2.imencode(
        ".jpg",
        image,
        [
            cv2.IMWRITE_JPEG_RST_INTERVAL,
            1,
            cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
            cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420,
        ],
    )
    assert ok
    real = buf.tobytes()
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    assert check(real) is None
    for ids in ((1, 1, 1), (0, 0, 0)):
        repeated = _with_component_ids(real, ids)
        again = cv2.imdecode(np.frombuffer(repeated, np.uint8), cv2.IMREAD_COLOR)
        assert again is not None and np.array_equal(again, decoded), ids
        assert check(repeated) is None, ids
        first = repeated.find(b"\xff\xd0")
        swapped = repeated[:first] + b"\xff\xd1" + repeated[first + 2 :]  # RST1 where RST0 belongs
        assert "RST1 where RST0 belongs" in (check(swapped) or ""), ids
        # cut short at its 150th restart marker and closed: its one interleaved scan counts MCUs whatever the
        # ids, so it is still refused (the count skipped for every scan passed it, half grey, as good)
        at = -1
        for _ in range(150):
            at = repeated.find(b"\xff", at + 1)
            while not 0xD0 <= repeated[at + 1] <= 0xD7:
                at = repeated.find(b"\xff", at + 1)
        cut = repeated[:at] + b"\xff\xd9"
        assert "restart markers in scan 1 where its size and restart interval make 299" in (
            check(cut) or ""
        ), ids
