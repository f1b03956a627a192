"""The images of a folder, for the training inputs' statistics of a package built from the user's own
model (``model-packager build --input-images DIR``): without them an agent never calls a far-off frame
(blurred, dark, another scene, a mono or white-balance change) UNSURE.

Read like the agent's folder camera and the trainer read images: PNG, JPEG, BMP, TIFF, WebP, PNM (any case), in
sub-folders too, decoded as BGR (grey ones widened; a 16-bit one refused: the agent's camera brings a
machine-vision camera's 10-16-bit pixels to 8 bits by its ``pixel_bits``, which a folder of files cannot
tell, and OpenCV's own reading divides them by 256, so a Mono12 image's statistics would be those of a black
frame). What the agent's folder camera skips is refused too, naming the file and the camera's reason
(``image_file.read_image``): a file whose header declares more than ``max_megapixels`` (the camera's setting,
default 25), refused before it is decoded, or larger than such an image needs, not read at all; a damaged
one (a JPEG cut short or with coded data missing, a PNG cut short or failing its CRC, a TIFF whose strips
point at its header or at each other: ``corrupt_frame`` at the camera); a TIFF of several pages or with a
preview first, an image with transparent pixels (PNG, BMP, TIFF, WebP: the colours beneath the alpha), a
12-bit or lossless JPEG (``unsupported_frame``). Hidden files and the ones a Mac or Windows leaves
(``._x.png``, ``.DS_Store``, ``Thumbs.db``) are not images, and the folders a copy from a Mac, a Windows
drive or a NAS adds (``__MACOSX/``, ``$RECYCLE.BIN/``, a Synology NAS's ``@eaDir/`` of JPEG thumbnails of every
image, ...: ``SYSTEM_FOLDERS``) are not read, as ``cloud-trainer dataset import`` reads none. At most ``limit`` images, taken evenly over the
sorted list. ``ImageFolder`` is iterable more than once and decodes each image as it is reached, so that a
folder of 5-MP images is never held whole in memory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from model_packager.errors import PackageError
from model_packager.image_file import CAMERA_MAX_MEGAPIXELS, SNIFF_BYTES, image_kind

# the agent's folder camera's (devices.camera.capture.IMAGE_SUFFIXES)
SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".tif", ".tiff", ".webp"}
    | {".pgm", ".ppm", ".pbm", ".pnm"}  # PNM
)
LIMIT = 500  # enough for the statistics' percentiles; each image is decoded twice
# folders that operating systems and NAS boxes add to a copy of the user's folders, never the model's inputs
# (compared in lower case): the trainer's import skips the same (cloud_trainer.train.images.SYSTEM_FOLDERS, which
# this package may not import; tests/integration/test_own_images_folders.py holds the two lists equal). Read,
# a NAS's thumbnails (@eaDir/<image>/SYNOPHOTO_THUMB_*.jpg) and deleted images went into the statistics.
SYSTEM_FOLDERS = frozenset(
    {"__macosx", "@eadir", "#recycle", "#snapshot", "$recycle.bin", "system volume information", "lost+found"}
)


def _skipped(rel: Path) -> bool:
    """A path below the folder that is no image of it: hidden (a leading dot), or below a system folder."""
    return any(part.startswith(".") for part in rel.parts) or any(
        part.lower() in SYSTEM_FOLDERS for part in rel.parts[:-1]
    )


_SNIFFED_FILES = 64  # files read for ``_images_by_content``: a folder of other data stays cheap


def _images_by_content(root: Path) -> str:
    """``" by name; N files are images by content: ..."`` for a folder whose files are images only by their
    bytes (``image_file.image_kind``: 'img_0001', '.raw'), as the agent's camera says it, or ``""``."""
    found = []
    try:
        files = sorted(p for p in root.rglob("*") if not _skipped(p.relative_to(root)))
    except OSError:
        return ""
    files = [p for p in files[: 4 * _SNIFFED_FILES] if p.is_file()][:_SNIFFED_FILES]
    for p in files:
        try:
            with open(p, "rb") as f:
                kind = image_kind(f.read(SNIFF_BYTES))
        except OSError:
            continue
        if kind is not None and kind != "GIF":
            found.append(f"{p.relative_to(root).as_posix()!r} ({kind})")
    if not found:
        return ""
    n = len(found)
    return (
        f" by name; {n} file{'s are images' if n > 1 else ' is an image'} by content: {', '.join(found[:3])}"
        f"{', ...' if n > 3 else ''}: give {'them their extensions' if n > 1 else 'it its extension'}"
    )


class ImageFolder:
    def __init__(
        self,
        folder: str | Path,
        limit: int = LIMIT,
        option: str = "--input-images",
        max_megapixels: float = CAMERA_MAX_MEGAPIXELS,
    ) -> None:
        if not max_megapixels > 0:
            raise PackageError(
                f"--max-megapixels must be a positive number of megapixels, got {max_megapixels}",
                code="usage",
            )
        self.max_megapixels = max_megapixels
        root = Path(folder)
        if not root.is_dir():
            raise PackageError(f"{option} {root}: not a folder", code="usage")
        found = sorted(
            p
            for p in root.rglob("*")
            if p.suffix.lower() in SUFFIXES and not _skipped(p.relative_to(root)) and p.is_file()
        )
        if not found:
            raise PackageError(
                f"{option} {root}: no image in it (PNG, JPEG, BMP, TIFF, WebP or PNM)"
                + _images_by_content(root)
                + "; give the folder of the images the model was trained on, or a few hundred of them",
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
        from model_packager.image_file import Refused, max_file_bytes, read_image

        limit = self.max_megapixels
        # where the camera's limit is the reason, how to read larger images on purpose
        larger = (
            "; if images this large are meant, give --max-megapixels N, and set the agent's camera "
            "max_megapixels as high (it skips larger frames)"
        )
        for p in self.paths:
            try:
                size = p.stat().st_size
                if size > max_file_bytes(limit):  # not even read, as the agent's camera does not read it
                    raise PackageError(
                        f"{self.option}: {p}: {size} bytes, more than an image of {limit:g} Mpx needs{larger}",
                        code="usage",
                    )
                data = p.read_bytes()
            except OSError as exc:
                raise PackageError(
                    f"{self.option}: cannot read {p}: {exc.strerror or exc}", code="usage"
                ) from None
            # at its own depth, to see a 16-bit image (the same orientation and colour as IMREAD_COLOR); what
            # the agent's camera skips is refused with its reason (``image_file.read_image``)
            try:
                img = read_image(data, limit)
            except Refused as exc:
                if exc.oversize:
                    fix = larger
                elif exc.unsupported:  # its reason says what to do
                    fix = ""
                else:
                    fix = "; the agent's camera skips it as corrupt_frame: replace or remove it"
                raise PackageError(f"{self.option}: {p}: {exc}{fix}", code="usage") from None
            if img.dtype != np.uint8:
                raise PackageError(
                    f"{self.option}: {p} has {'16-bit' if img.dtype == np.uint16 else img.dtype} pixels; give "
                    "the 8-bit images the model was trained on (`cloud-trainer dataset import --pixel-bits N` "
                    "writes a Mono12/Mono16 camera's files so, as the agent's camera reads them with "
                    "pixel_bits)",
                    code="usage",
                )
            yield img
