"""``cloud-trainer build`` (and ``train``) reading TIFFs that OpenCV decodes well but libtiff warns of (an alpha
channel without its ExtraSamples tag, as OpenCV writes BGRA TIFFs; a vendor's private tag) printed two OpenCV
warning lines for every image, hundreds burying the build's own lines (``dataset import`` kept them off already).
The trainer's commands turn OpenCV's warnings off now (``OPENCV_LOG_LEVEL`` set by the user is kept)."""

from __future__ import annotations

import cv2
import numpy as np

from cloud_trainer.cli import main as cloud_main


def test_build_anomaly_reading_tiffs_libtiff_warns_of_prints_none_of_its_warnings(
    tmp_path, capfd, opencv_warnings_on
):
    good = tmp_path / "part"
    good.mkdir()
    rng = np.random.default_rng(5)
    for k in range(20):
        img = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
        cv2.imwrite(
            str(good / f"{k:02d}.tif"), cv2.cvtColor(img, cv2.COLOR_BGR2BGRA)
        )  # alpha opaque everywhere
    capfd.readouterr()
    # a --roi reaching out of the images: refused once the first image is read (a cheap build)
    code = cloud_main(
        ["build", "anomaly", "--dataset", str(good), "--work", str(tmp_path / "w"), "--roi", "0,0,64,64"]
        + ["--registry", str(tmp_path / "reg"), "--key", str(tmp_path / "k.key"), "--no-openvino"]
    )
    err = capfd.readouterr().err
    assert code == 2 and "00.tif: --roi 0,0,64,64 reaches outside this 32x24 image" in err, err
    assert "TIFF_Warning" not in err and "WARN:" not in err, err
