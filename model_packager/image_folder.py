"""The images of a folder, for the training inputs' statistics of a package built from the user's own
model (``model-packager build --input-images DIR``): without them an agent never calls a far-off frame
(blurred, dark, another scene, a mono or white-balance change) UNSURE.

Read like the cameras and the trainer read images: PNG, JPEG, BMP, TIFF (any case), in sub-folders too,
decoded as BGR (grey ones widened; a 16-bit one refused: the agent's camera brings a machine-vision camera's
10-16-bit pixels to 8 bits by its ``pixel_bits``, which a folder of files cannot tell, and OpenCV's own
reading divides them by 256, so a Mono12 image's statistics would be those of a black frame). What the
agent's folder camera skips as unsupported_frame is refused too, naming the file and the camera's reason
(``image_file``): a TIFF of several pages or with a preview first, an image with transparent pixels (PNG,
BMP, TIFF, WebP: the colours beneath the alpha), a 12-bit or lossless JPEG. Hidden files and the ones a Mac or
Windows leaves (``._x.png``, ``.DS_Store``, ``Thumbs.db``) are not images. At most ``limit`` images,
taken evenly over the sorted list. ``ImageFolder`` is iterable more than once and decodes each image
as it is reached, so that a folder of 5-MP images is never held whole in memory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from model_packager.errors import PackageError

SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
LIMIT = 500  # enough for the statistics' percentiles; each image is decoded twice


class ImageFolder:
    def __init__(self, folder: str | Path, limit: int = LIMIT, option: str = "--input-images") -> None:
        root = Path(folder)
        if not root.is_dir():
            raise PackageError(f"{option} {root}: not a folder", code="usage")
        found = sorted(
            p
            for p in root.rglob("*")
            if p.suffix.lower() in SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
            and p.is_file()
        )
        if not found:
            raise PackageError(
                f"{option} {root}: no image in it (PNG, JPEG, BMP or TIFF); give the folder of the images "
                "the model was trained on, or a few hundred of them",
                code="usage",
            )
        self.total = len(found)
        if len(found) > limit:  # evenly over the sorted list (folders by day or by class stay represented)
            found = [found[i] for i in np.linspace(0, len(found) - 1, limit).round().astype(int)]
        self.paths = found
        self.option = option

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[np.ndarray]:
        import cv2

        from model_packager.image_file import not_one_image, transparent, undecodable_kind

        for p in self.paths:
            try:
                data = p.read_bytes()
            except OSError as exc:
                raise PackageError(
                    f"{self.option}: cannot read {p}: {exc.strerror or exc}", code="usage"
                ) from None
            # at its own depth, to see a 16-bit image (the same orientation and colour as IMREAD_COLOR); what
            # the agent's camera refuses (unsupported_frame) is refused with its reason: a TIFF of several pages
            # or with a preview first, the colours beneath transparent pixels, a 12-bit JPEG
            why = not_one_image(data)
            img = None
            if why is None and data:
                try:
                    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
                except cv2.error:  # its header past OpenCV's own limits: raised, not returned as None
                    raise PackageError(
                        f"{self.option}: {p}: its header declares more than OpenCV decodes (2^20 pixels a side, "
                        "2^30 in all); give the images the camera takes",
                        code="usage",
                    ) from None
                why = transparent(data) if img is not None and img.size else undecodable_kind(data)
            if why is not None:
                raise PackageError(f"{self.option}: {p}: {why}", code="usage")
            if img is None or img.size == 0:
                raise PackageError(
                    f"{self.option}: {p} is not an image this build can decode (damaged, or another format); "
                    "remove it or convert it",
                    code="usage",
                )
            if img.dtype != np.uint8:
                raise PackageError(
                    f"{self.option}: {p} has {'16-bit' if img.dtype == np.uint16 else img.dtype} pixels; give "
                    "the 8-bit images the model was trained on (`cloud-trainer dataset import --pixel-bits N` "
                    "writes a Mono12/Mono16 camera's files so, as the agent's camera reads them with "
                    "pixel_bits)",
                    code="usage",
                )
            yield img
