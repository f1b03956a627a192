"""A user's images that name no camera (a folder imported without ``--camera-size``): their own size stands for their
camera's, and where they all share one size the agent checks a frame resized to it at that size, so a camera of
other proportions squashed to it is not told. Nothing said so: the import now notes a folder whose images all share
a size no camera sensor has (a 96x96 square), and the build says, and the package's frame record holds, that the
training frames' camera is unknown."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from protocols.sample_camera import with_camera_size


def _folder(root: Path, size: tuple[int, int], named: tuple[int, int] | None = None) -> Path:
    """A folder per class (ok, scratch) of three images each of ``size`` (width, height); ``named``: saved as an
    agent's samples are, PNG naming that camera."""
    from tests.support.plates import DEFECTS, plate

    for label, defect in (("ok", None), ("scratch", DEFECTS[0])):
        (root / label).mkdir(parents=True)
        for i in range(3):
            img = cv2.resize(plate(4, i + (3 if defect else 0), defect, 120)[0], size)
            if named is None:
                cv2.imwrite(str(root / label / f"{i:02d}.jpg"), img)
            else:
                png = cv2.imencode(".png", img)[1].tobytes()
                (root / label / f"{i:02d}.png").write_bytes(with_camera_size(png, named))
    return root


def _imported(tmp_path: Path, name: str, size, *args: str, named=None) -> list[str]:
    """``dataset import`` of a folder of ``size`` images by the CLI; the notes it said about the camera."""
    from cloud_trainer.train.images import import_images

    said: list[str] = []
    src = _folder(tmp_path / f"{name}-src", size, named)
    camera = tuple(int(v) for v in args[0].split("x")) if args else None
    import_images(src, tmp_path / name, good="ok", min_good=2, log=said.append, camera_size=camera)
    return [m for m in said if "--camera-size" in m]


def test_a_folder_of_one_size_no_sensor_has_is_noted_at_import_and_the_build_says_its_camera_unknown(
    tmp_path,
):
    from cloud_trainer.train.data import load_parts
    from cloud_trainer.train.families.vision import VisionFamily
    from model_packager.inputstats import LocalStats, camera_lines, sensor_shape_problem

    # machine-vision sensors of less common proportions too: Sony IMX425 and IMX420 (1.457), IMX540 (1.156), IMX546
    # (within 1 % of square)
    sensors = ((640, 480), (480, 640), (2448, 2048), (1280, 1024), (752, 480), (1920, 1080), (2048, 2048))
    for size in (*sensors, (1608, 1104), (3216, 2208), (5328, 4608), (2856, 2848), (1104, 1608)):
        assert sensor_shape_problem(size) is None, size
    for size in ((96, 96), (224, 224), (300, 100), (100, 98)):
        assert sensor_shape_problem(size), size

    (note,) = _imported(tmp_path, "squashed", (96, 96))
    assert note.startswith("dataset import: all 6 images are 96x96, a square of 96 px a side"), note
    assert (
        "a camera of other proportions whose width and height resize its frames to 96x96 is not told" in note
    )
    # the camera declared, a sensor's shape, or images that name their camera (an agent's samples): nothing to say
    assert _imported(tmp_path, "declared", (96, 96), "640x480") == []
    assert _imported(tmp_path, "vga", (160, 120)) == []
    assert _imported(tmp_path, "samples", (96, 96), named=(160, 120)) == []

    parts = load_parts(tmp_path / "squashed")
    frame = VisionFamily().input_stats_local(parts, list(range(6)))["frame"]
    assert frame["camera_unknown"] == {"96x96": 6} and "camera" not in frame
    (line,) = camera_lines(frame)
    assert line.startswith("training frames' cameras: unknown (no image names one, as"), line
    assert "96x96 (6)" in line and "import them again with --camera-size WIDTHxHEIGHT" in line, line
    # the agent's check is the one for a package naming no camera: the frame's own size stands for its camera's
    local = LocalStats(VisionFamily().input_stats_local(parts, list(range(6))))
    assert local.shape(np.zeros((96, 96, 3), np.uint8), 1.0, (320, 180)) is None
    # images of a sensor's shape naming no camera: said unknown, with no advice to re-import
    vga = VisionFamily().input_stats_local(load_parts(tmp_path / "vga"), list(range(6)))["frame"]
    (line,) = camera_lines(vga)
    assert "160x120 (6)" in line and "--camera-size WIDTHxHEIGHT" not in line, line
