"""The camera's own size, carried in a frame sample's PNG (a ``tEXt`` chunk ``camera_size``, e.g. ``1920x1080``).

A camera whose ``width`` and ``height`` resize its frames hands the pipeline a resized frame, and the sample an
agent uploads is that frame: a model trained on such samples cannot tell from their pixels the camera's own
proportions (a 4:3 camera squashed to 96x96 and a square one give the same 96x96 samples). The agent writes the
camera's size into each frame sample (``with_camera_size``; the frame's own size where the camera gave it as it
is), the fleet keeps the sample's bytes, ``cloud-trainer dataset`` and ``dataset import`` keep an 8-bit PNG's
bytes, and a build reads it back (``camera_size``) to record the training frames' camera proportions in the
package, against which the agent's UNSURE check measures a frame's camera. The chunk sits right after ``IHDR``
(before the image data), where ``camera_size`` looks for it; decoders ignore text chunks."""

from __future__ import annotations

import re
import struct
import zlib

from protocols.image_header import png_chunk_crc_ok, png_chunks

__all__ = ["KEYWORD", "camera_size", "size_text", "with_camera_size"]

KEYWORD = b"camera_size"
_PNG = b"\x89PNG\r\n\x1a\n"
_TEXT = re.compile(r"([1-9][0-9]{0,5})x([1-9][0-9]{0,5})")


def size_text(text: str) -> tuple[int, int] | None:
    """``WIDTHxHEIGHT`` (``640x480``, whole numbers 1 to 999999) as (width, height), else None: the one reading of
    a camera size written as text (the chunk's, ``--camera-size``'s, a dataset's ``camera_size``)."""
    m = _TEXT.fullmatch(text)
    return (int(m[1]), int(m[2])) if m else None


def with_camera_size(png: bytes, size: tuple[int, int]) -> bytes:
    """``png`` (an encoder's output, ``IHDR`` first) with a ``camera_size`` text chunk after its ``IHDR``."""
    if not png.startswith(_PNG) or png[12:16] != b"IHDR":
        raise ValueError("not a PNG whose first chunk is IHDR")
    w, h = size
    body = b"tEXt" + KEYWORD + b"\0" + f"{int(w)}x{int(h)}".encode()
    chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
    end = 8 + 12 + struct.unpack_from(">I", png, 8)[0]  # after IHDR
    return png[:end] + chunk + png[end:]


def camera_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """The (width, height) a PNG's ``camera_size`` text chunk names, or None: not a PNG, no such chunk before the
    image data, or one that is not ``WIDTHxHEIGHT`` of whole numbers > 0 (a damaged or hand-made one: unknown,
    never a guess; one whose CRC does not match). Only chunk headers are read up to it (``png_chunks``)."""
    named = KEYWORD + b"\0"
    for typ, at, length in png_chunks(data):
        if typ == b"tEXt" and length >= len(named) and bytes(data[at : at + len(named)]) == named:
            # its CRC checked, as libpng drops a damaged chunk: a bit flipped in the digits names another camera
            if not png_chunk_crc_ok(data, at, length):
                return None
            text = bytes(data[at + len(named) : at + length])
            return size_text(text.decode("latin-1"))  # (every byte a character: no digit but ASCII's)
    return None
