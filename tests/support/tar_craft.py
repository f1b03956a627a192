"""Hand-made tar bytes for attack tests: headers that ``tarfile`` would never write (base-256 sizes of
1 TiB, garbage sparse maps, huge PAX headers, names with control characters), spliced into a genuine
signed package just before its end-of-archive marker, so that the signature stays valid."""

from __future__ import annotations

import tarfile
from pathlib import Path

BLOCK = 512
POSIX_MAGIC = b"ustar\x0000"
GNU_MAGIC = b"ustar  \x00"


def _octal(n: int, width: int) -> bytes:
    return (b"%0*o" % (width - 1, n)) + b"\x00"


def _base256(n: int, width: int) -> bytes:
    return bytes([0x80]) + n.to_bytes(width - 1, "big")


def header(
    name: bytes | str,
    size: int = 0,
    kind: bytes = b"0",
    *,
    magic: bytes = POSIX_MAGIC,
    base256_size: bool = False,
    checksum: bool = True,
    prefix: bytes = b"",
) -> bytes:
    if isinstance(name, str):
        name = name.encode()
    h = bytearray(BLOCK)
    h[0 : len(name[:100])] = name[:100]
    h[100:108] = _octal(0o644, 8)
    h[108:116] = _octal(0, 8)
    h[116:124] = _octal(0, 8)
    h[124:136] = _base256(size, 12) if base256_size else _octal(size, 12)
    h[136:148] = _octal(0, 12)
    h[156:157] = kind
    h[257:265] = magic
    h[345 : 345 + len(prefix)] = prefix
    h[148:156] = b" " * 8
    if checksum:
        h[148:156] = b"%06o\x00 " % sum(h)
    return bytes(h)


def pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


def pax_record(key: str | bytes, value: str | bytes) -> bytes:
    key = key.encode() if isinstance(key, str) else key
    value = value.encode() if isinstance(value, str) else value
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(str(n).encode()) + len(body) != n:
        n = len(str(n).encode()) + len(body)
    return str(n).encode() + body


def pax_entry(records: bytes, *, then: tuple[bytes | str, bytes] | None = ("extra.bin", b"x")) -> bytes:
    """A PAX extended header holding ``records``, followed by the file it describes."""
    out = header("././@PaxHeader", len(records), b"x") + pad(records)
    if then is not None:
        name, data = then
        out += header(name, len(data)) + pad(data)
    return out


def file_entry(name: bytes | str, data: bytes = b"x", **kw) -> bytes:
    return header(name, len(data), **kw) + pad(data)


def end_of_members(pkg: Path) -> int:
    """Byte offset of the end-of-archive marker of a package written by ``tarfile``."""
    with tarfile.open(pkg) as tar:
        last = tar.getmembers()[-1]
    return last.offset_data + (last.size + BLOCK - 1) // BLOCK * BLOCK


def splice(pkg: Path, out: Path, crafted: bytes, *, tail: bytes | None = None) -> Path:
    """``pkg``'s members, then ``crafted``, then an end-of-archive marker (or ``tail``)."""
    data = pkg.read_bytes()
    end = end_of_members(pkg)
    out.write_bytes(data[:end] + crafted + (bytes(2 * BLOCK) if tail is None else tail))
    return out
