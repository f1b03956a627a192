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


def _rechunked(data: bytes, size: int) -> bytes:
    """A PNG whose image data is cut into IDAT chunks of ``size`` bytes (an encoder writing one a row, or small
    ones), a text chunk after it, as some tools write."""
    i, out, idat = 8, [data[:8]], b""
    while i < len(data):
        length, typ = struct.unpack_from(">I4s", data, i)
        body = data[i + 8 : i + 8 + length]
        if typ == b"IDAT":
            idat += body
        elif typ == b"IEND":
            out += [chunk(b"IDAT", idat[k : k + size]) for k in range(0, len(idat), size)]
            out += [chunk(b"tEXt", b"Comment\x00after the image data"), IEND]
        else:
            out.append(data[i : i + 12 + length])
        i += 12 + length
    return b"".join(out)


@pytest.mark.parametrize("module", ["protocols.image_header", "model_packager.image_file"])
def test_a_png_of_millions_of_empty_chunks_is_walked_within_a_bound_and_refused(module):
    """The walk that looks for a chunk past the file's end went chunk by chunk in Python, without a bound: a
    crafted PNG of 12-byte empty chunks (16 million in the 201 MB a frame may take) held the decode ~10 s, twice
    for one with alpha (the transparency check walks it too). At most 65,536 chunks (or one per 4 KiB of the
    file) are walked now; a PNG of more, which no encoder writes, is refused. Counted in line events, not timed."""
    import importlib

    from tests.support.line_events import line_events

    overrun = importlib.import_module(module)._png_chunk_overrun
    crafted = png(chunk(b"tEXt", b"") * 350_000, IDAT, IEND)  # 4 MB
    got: list = []
    lines = line_events(lambda: got.append(overrun(crafted)), 600_000)
    assert lines <= 600_000, f"over 600000 lines run for {len(crafted)} bytes"
    assert "more than 65536 chunks" in (got[0] or ""), got
    # a real PNG with its image data in thousands of small chunks and text after it is read as before
    rng = np.random.default_rng(5)
    img = rng.integers(0, 65536, (120, 100, 3), np.uint16)  # 16-bit colour
    real = _rechunked(cv2.imencode(".png", img)[1].tobytes(), 16)
    assert real.count(b"IDAT") > 4000
    assert overrun(real) is None


def test_a_png_of_thousands_of_small_image_data_chunks_still_decodes(decodes):
    rng = np.random.default_rng(6)
    img = rng.integers(0, 65536, (120, 100, 3), np.uint16)
    real = _rechunked(cv2.imencode(".png", img)[1].tobytes(), 16)
    assert np.array_equal(decode_image(real, cv2.IMREAD_UNCHANGED), img)
    with pytest.raises(ImageRejected, match="more than 65536 chunks"):
        decode_image(png(chunk(b"tEXt", b"") * 70_000, IDAT, IEND))
