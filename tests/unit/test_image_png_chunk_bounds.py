"""A PNG whose chunk declares more bytes than the file holds is refused before OpenCV sees it: libpng allocates
a text or palette chunk's declared length first, so 60 bytes declaring 4 GiB cost the decode 4 GiB of memory and
seconds of CPU (found by bench/parser_fuzz.py)."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from protocols.image_header import ImageRejected, decode_image, transparent_pixels


def chunk(typ: bytes, data: bytes, length: int | None = None) -> bytes:
    n = len(data) if length is None else length
    return struct.pack(">I", n) + typ + data + struct.pack(">I", zlib.crc32(typ + data))


def png(*chunks: bytes, colour_type: int = 6) -> bytes:
    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 1, 8, colour_type, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + ihdr + b"".join(chunks)


IDAT = chunk(b"IDAT", zlib.compress(b"\x00" + bytes([10, 20, 30, 0, 40, 50, 60, 255])))
IEND = chunk(b"IEND", b"")


@pytest.fixture
def decodes(monkeypatch):
    """The files OpenCV was asked to decode (the real decoder runs)."""
    seen: list[int] = []
    real = cv2.imdecode

    def spy(buf, flags):
        seen.append(len(buf))
        return real(buf, flags)

    monkeypatch.setattr(cv2, "imdecode", spy)
    return seen


@pytest.mark.parametrize("typ", [b"tEXt", b"tRNS", b"PLTE", b"iCCP"])
def test_a_png_chunk_declaring_4_gib_is_refused_naming_it_and_never_decoded(typ, decodes):
    data = png(chunk(typ, b"", length=0xFFFFFFFF)[:8] + bytes(8))
    with pytest.raises(
        ImageRejected, match=f"{typ.decode()}' chunk at byte 33 declares 4294967295 bytes"
    ) as e:
        decode_image(data)
    assert not e.value.oversize and not e.value.unsupported  # counted as corrupt_frame
    assert transparent_pixels(data) == (0, 0)
    assert decodes == []


def test_a_chunk_past_the_end_after_the_image_data_is_refused_too(decodes):
    data = png(IDAT, chunk(b"tEXt", b"", length=0x7FFFFFFF)[:8] + bytes(4))
    with pytest.raises(ImageRejected, match="'tEXt' chunk at byte 62 declares 2147483647 bytes"):
        decode_image(data)
    assert decodes == []


def test_whole_pngs_with_text_and_alpha_still_decode_and_count_their_transparent_pixels(decodes):
    data = png(chunk(b"tEXt", b"Comment\x00ok"), IDAT, IEND)
    img = decode_image(data)
    assert img.shape == (1, 2, 3) and img[0, 1].tolist() == [60, 50, 40]
    assert transparent_pixels(data) == (1, 2)  # the first pixel's alpha is 0
    ok, real = cv2.imencode(".png", np.zeros((3, 4, 3), np.uint8))
    assert decode_image(real.tobytes()).shape == (3, 4, 3)


@pytest.mark.parametrize("typ", [b"tEXt", b"tRNS"])
def test_the_packagers_input_images_refuse_it_as_the_camera_does_never_decoded(typ, decodes):
    """``model-packager build --input-images`` reads files as the camera does (its own copy of the checks)."""
    from model_packager.image_file import Refused, read_image, transparent

    data = png(chunk(typ, b"", length=0xFFFFFFFF)[:8] + bytes(8))
    with pytest.raises(Refused, match=f"{typ.decode()}' chunk at byte 33 declares 4294967295 bytes"):
        read_image(data)
    assert transparent(data) is None
    assert decodes == []
