"""A frame sample's camera size (``protocols.sample_camera``) reaches the package a build makes of it.

The agent names its camera's size in each frame sample it uploads (a PNG text chunk): the frame itself may
have been resized by the camera's ``width`` and ``height`` to other proportions. ``dataset import`` keeps an
8-bit PNG's bytes, and the builds read the chunk of each training frame into the package's ``frame``
record (``inputstats.frame_shapes``), which the agent's frame-shape check measures a camera against."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

from protocols.sample_camera import camera_size, with_camera_size


def _sample(img: np.ndarray, camera: tuple[int, int] | None) -> bytes:
    png = cv2.imencode(".png", img)[1].tobytes()
    return png if camera is None else with_camera_size(png, camera)


def test_the_chunk_is_read_back_decoded_alike_and_a_damaged_one_is_unknown():
    img = np.random.default_rng(0).integers(0, 255, (96, 96, 3), np.uint8)
    data = _sample(img, (1920, 1080))
    assert camera_size(data) == (1920, 1080) and camera_size(memoryview(data)) == (1920, 1080)
    assert (cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) == img).all()
    assert camera_size(_sample(img, None)) is None and camera_size(b"") is None
    assert camera_size(cv2.imencode(".jpg", img)[1].tobytes()) is None
    # a bit flipped in the digits (1920 -> 1921), its CRC left: unknown, as libpng drops the chunk
    flipped = data.replace(b"camera_size\x001920x", b"camera_size\x001921x")
    assert flipped != data and camera_size(flipped) is None
    cut = data[: 33 + 8 + len(b"camera_size\x001920x1080")]  # nor one cut before its CRC
    assert camera_size(cut) is None
    png = _sample(img, None)
    for text in (b"0x1080", b"1920x", b"1920 x 1080", b"-1x5", b"1920x1080x3", b"9999999x2"):
        body = b"tEXtcamera_size\0" + text
        chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
        odd = png[:33] + chunk + png[33:]
        assert camera_size(odd) is None and cv2.imdecode(np.frombuffer(odd, np.uint8), 1) is not None, text

    # behind 65 other text chunks, or a 70 KB one (a photo tool's metadata): read as well (it was not looked for)
    def text(body: bytes) -> bytes:
        return struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))

    named = _sample(img, (1920, 1080))
    end = named.index(b"camera_size") - 8  # the camera's chunk, after IHDR
    for before in (65 * text(b"tEXtn\0x"), text(b"tEXtnote\0" + bytes(70_000))):
        assert camera_size(named[:end] + before + named[end:]) == (1920, 1080)


def _dataset(tmp_path: Path, n: int) -> Path:
    """A folder per class of squashed 96x96 samples of a 4:3 camera (160x120) imported by ``dataset import``."""
    from cloud_trainer.train.images import import_images
    from tests.support.plates import DEFECTS, plate

    src = tmp_path / "src"
    for label, defect in (("ok", None), ("scratch", DEFECTS[0])):
        (src / label).mkdir(parents=True)
        for i in range(n):
            img = cv2.resize(plate(3, i + (n if defect else 0), defect, 120)[0], (96, 96))
            (src / label / f"{i:02d}.png").write_bytes(_sample(img, (160, 120)))
    # an outside image of no named camera beside them
    cv2.imwrite(str(src / "ok" / "zz-outside.png"), cv2.resize(plate(3, 99, None, 120)[0], (96, 96)))
    out = tmp_path / "ds"
    import_images(src, out, good="ok", min_good=2, log=lambda m: None)
    return out


def test_imported_samples_keep_their_camera_and_both_families_record_it(tmp_path):
    from cloud_trainer.train import anomaly as A
    from cloud_trainer.train.data import load_parts
    from cloud_trainer.train.families.vision import VisionFamily

    out = _dataset(tmp_path, 3)
    parts = load_parts(out)
    assert sorted(parts.camera_sizes or [], key=str) == [(160, 120)] * 6 + [None]
    frame = VisionFamily().input_stats_local(parts, list(range(len(parts.images))))["frame"]
    assert frame["camera"] == {
        "aspect": [1.0, 4 / 3],
        "sizes": [[160, 120]],
        "unknown": [[96, 96]],
        "frames": {"160x120": 6},
        "unknown_frames": {"96x96": 1},
    }
    assert frame["aspect"] == [1.0, 1.0] and frame["sizes"] == [[96, 96]]  # as before, for older agents
    good = A.load_good(out, min_good=2)
    # one good image is held out for the test split (it has defects but no good one): 3 of the 4 train
    assert len(good.cameras) == len(good.shapes) == 3 and good.cameras.count((160, 120)) >= 2
    assert set(good.cameras) <= {(160, 120), None}


def test_a_squashed_datasets_declared_camera_is_recorded_for_its_images(tmp_path, capsys):
    """A user's dataset squashed to 96x96 from a 4:3 camera's frames names no camera: its own size stood for
    its camera's, so that camera set to another square (64x64) was UNSURE on every frame. ``dataset import
    --camera-size`` declares it; the build records it, and a camera of other proportions is still named."""
    import hashlib
    import json

    import pytest
    import yaml

    from cloud_trainer.train import anomaly as A
    from cloud_trainer.train.data import DatasetError, digest_part, load_parts
    from cloud_trainer.train.families.vision import VisionFamily
    from cloud_trainer.train.images import main
    from model_packager.inputstats import LocalStats
    from tests.support.plates import DEFECTS, plate

    src = tmp_path / "src"
    for label, defect in (("ok", None), ("scratch", DEFECTS[0])):
        (src / label).mkdir(parents=True)
        for i in range(3):
            img = plate(4, i + (3 if defect else 0), defect, 120)[0]
            cv2.imwrite(str(src / label / f"{i:02d}.jpg"), cv2.resize(img, (96, 96)))
    with pytest.raises(SystemExit):
        main([str(src), "--out", str(tmp_path / "bad"), "--camera-size", "640x0"])
    assert "'640x0' is not WIDTHxHEIGHT in pixels" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # no camera's size: it would widen the training cameras' range
        main([str(src), "--out", str(tmp_path / "bad"), "--camera-size", "999999x1"])
    assert "'999999x1' is no camera's size (a side under 8 or over 20000 px)" in capsys.readouterr().err
    out = tmp_path / "ds"
    assert (
        main([str(src), "--out", str(out), "--good", "ok", "--min-good", "2", "--camera-size", "640x480"])
        == 0
    )
    parts = load_parts(out)
    assert parts.camera_sizes == [(640, 480)] * 6
    assert A.load_good(out, min_good=2).cameras == [(640, 480)] * 2  # one held out for the test split
    local = LocalStats(VisionFamily().input_stats_local(parts, list(range(6))))
    assert local.shape(np.zeros((64, 64, 3), np.uint8), 1.0, (640, 480)) is None
    assert "of the training frames' camera (640x480)" in (local.shape(parts.images[0], 1.0, (320, 180)) or "")
    # the declared camera is in the digest (it changes the package); a dataset without it keeps its digest
    assert main([str(src), "--out", str(tmp_path / "plain"), "--good", "ok", "--min-good", "2"]) == 0
    capsys.readouterr()
    plain, h = load_parts(tmp_path / "plain"), hashlib.sha256()
    for row in map(json.loads, (tmp_path / "plain" / "labels.jsonl").read_text().splitlines()):
        digest_part(h, (tmp_path / "plain" / row["file"]).read_bytes(), row["label"])
    assert plain.digest == "sha256:" + h.hexdigest() != parts.digest
    meta = (out / "dataset.yaml").read_text()
    assert parts.digest == A.load_good(out, min_good=2).digest == yaml.safe_load(meta)["digest"]
    # one written by hand, no camera's size: refused, named
    (out / "dataset.yaml").write_text(meta.replace("camera_size:\n- 640\n- 480", "camera_size: [999999, 1]"))
    with pytest.raises(
        DatasetError, match=r"'camera_size' \[999999, 1\] is no camera's size \(a side under 8"
    ):
        load_parts(out)


def test_a_fleet_sample_naming_no_camera_is_not_taken_for_its_bases_declared_camera(tmp_path):
    """A fleet export on a base imported with ``--camera-size`` carries the base's ``dataset.yaml``. A sample an
    agent uploaded before samples named their camera came from its line's camera, which the base's declared one
    does not describe: it was taken for that camera (a line's 16:9 camera, whose samples trained the model, was
    then UNSURE on every frame); it stays unknown. A sample naming its camera keeps its own."""
    import json

    import yaml

    from cloud_trainer.blobs import LocalBlobStore
    from cloud_trainer.fleet.store import SQLiteStore
    from cloud_trainer.train import anomaly as A
    from cloud_trainer.train.data import load_parts
    from cloud_trainer.train.images import import_images
    from cloud_trainer.train.uploads import export
    from tests.support.plates import DEFECTS, plate

    src = tmp_path / "src"
    for label, defect in (("ok", None), ("scratch", DEFECTS[0])):
        (src / label).mkdir(parents=True)
        for i in range(2):
            img = plate(5, i + (2 if defect else 0), defect, 96)[0]
            cv2.imwrite(str(src / label / f"{i}.png"), img)
    import_images(src, tmp_path / "base", good="ok", min_good=2, camera_size=(640, 480), log=lambda m: None)
    store, blobs = SQLiteStore(tmp_path / "cloud" / "fleet.db"), LocalBlobStore(tmp_path / "cloud" / "blobs")
    records, labels = [], []
    for seq, camera in ((1, None), (2, (320, 180))):  # an older agent's sample, and one naming its camera
        sha = blobs.put_bytes(_sample(plate(6, seq, None, 96)[0], camera))
        labels.append(json.dumps({"sha256": sha, "label": "ok"}) + "\n")
        payload = {"model": "part-inspection", "verdict": "OK", "reason": "ok_random"}
        records.append(
            {"seq": seq, "kind": "sample", "t": 1e3 + seq, "sample_sha256": sha, "sample_ext": ".png"}
            | {"payload": json.dumps(payload)}
        )
    store.ingest("gw1", records)
    store.db.close()
    (tmp_path / "labels.jsonl").write_text("".join(labels))
    out = tmp_path / "ds"
    export(
        tmp_path / "cloud",
        "part-inspection",
        out,
        base=tmp_path / "base",
        labels_file=tmp_path / "labels.jsonl",
    )
    parts = load_parts(out)
    assert parts.camera_sizes == [(640, 480)] * 4 + [None, (320, 180)]
    # the export records the digest training computes, the base's declared camera in it
    assert parts.digest == yaml.safe_load((out / "dataset.yaml").read_text())["digest"]
    # one good image (seeded: the last) held out for the test split (it has defects but no good one)
    assert A.load_good(out, min_good=2).cameras == [(640, 480), (640, 480), None]
