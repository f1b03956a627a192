"""A strict reader for package archives: the only tar parser that sees untrusted bytes.

Python's ``tarfile`` is used to *write* packages, never to read them. Reading an archive that
came over the network happens before any signature can be checked (the signature covers the
manifest, which is itself inside the archive), so the parser is attack surface: CPython 3.11.7's
``tarfile`` reads whatever size a PAX or GNU long-name header claims (``MemoryError`` on 1 TiB),
parses PAX records with a regex whose cost grows with the square of the header (CVE-2024-6232),
and raises ``ValueError``/``UnicodeDecodeError`` on odd sparse maps or ``hdrcharset`` records.
This module accepts the small subset of tar that ``build_package`` writes and refuses everything
else with an ``UnsafeArchiveError`` carrying a one-line reason:

- 512-byte ustar headers (POSIX ``ustar\\0 00`` or GNU ``ustar  \\0`` magic) with a valid
  checksum and octal numeric fields (no base-256 numbers, no v7 headers);
- regular files only (type ``0`` or NUL); links, devices, folders, FIFOs, sparse files (type
  ``S`` or any ``GNU.sparse.*`` record), global PAX headers and multi-volume entries are refused;
- at most one PAX extended header (``x``, at most ``MAX_PAX_BYTES``, at most ``MAX_PAX_RECORDS``
  records, parsed in one linear pass) and at most one GNU long name (``L``, at most
  ``MAX_NAME_BYTES``) before each file; their size is checked *before* a byte of them is read;
- names are UTF-8 (``hdrcharset`` other than UTF-8 is refused), sizes are bounded by the
  caller's budget and by the file's actual length, and after the end-of-archive marker only zero
  bytes may follow (bytes appended to a genuine package are refused, not ignored).

Each check costs O(header); a whole pass is linear in the number of entries, independent of the
size of their data (data is skipped with ``seek``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import BinaryIO

from model_packager.errors import UnsafeArchiveError
from model_packager.text import printable

BLOCK = 512
MAX_PAX_BYTES = 16 * 1024  # our own PAX headers are < 1 KiB (a long path); 128 KiB is an attack
MAX_PAX_RECORDS = 64
MAX_NAME_BYTES = 1024
_REGULAR = (b"0", b"\x00")
_POSIX_MAGIC = b"ustar\x0000"
_GNU_MAGIC = b"ustar  \x00"
_UTF8_CHARSET = "ISO-IR 10646 2000 UTF-8"
# PAX keywords that carry nothing the package format uses; accepted and ignored (bounded above)
_IGNORED_KEYS = {"mtime", "atime", "ctime", "uid", "gid", "uname", "gname", "comment", "charset"}
_IGNORED_PREFIXES = ("SCHILY.", "LIBARCHIVE.")


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    offset_data: int  # where the member's bytes start in the archive file


# the first bytes of a compressed file, which a package (an uncompressed tar) never starts with: a package
# compressed on its way (a proxy, an archiver) is said so (a tar's first bytes are its first entry's name)
_PACKED = (
    (b"\x1f\x8b", "a gzip-compressed"),
    (b"BZh", "a bzip2-compressed"),
    (b"\xfd7zXZ\x00", "an xz-compressed"),
    (b"\x5d\x00\x00", "an lzma-compressed"),  # (.lzma: properties 0x5D, then its dictionary size)
    (b"\x28\xb5\x2f\xfd", "a zstd-compressed"),
    (b"\x04\x22\x4d\x18", "an lz4-compressed"),
    (b"\x1f\x9d", "a Unix compress (.Z)"),
    (b"7z\xbc\xaf\x27\x1c", "a 7z"),
    (b"PK\x03\x04", "a zip"),
    (b"PK\x05\x06", "an empty zip"),
)


def _packed(head: bytes) -> str | None:
    """``a gzip-compressed``: what compressed file ``head`` (a file's first bytes) starts, or None."""
    return next((kind for magic, kind in _PACKED if head.startswith(magic)), None)


class StrictTarReader:
    """Iterate over the regular-file members of an uncompressed tar, refusing anything else."""

    def __init__(self, f: BinaryIO, label: str, max_bytes: int) -> None:
        self.f = f
        self.label = printable(label)
        self.max_bytes = max_bytes
        f.seek(0, os.SEEK_END)
        self.length = f.tell()
        f.seek(0)

    def _fail(self, reason: str, code: str = "bad_header", at: int | None = None) -> UnsafeArchiveError:
        where = f" (header at byte {at})" if at is not None else ""
        return UnsafeArchiveError(f"package {self.label}: {reason}{where}; refused", code=code)

    def _read(self, pos: int, n: int, what: str) -> bytes:
        if pos + n > self.length:
            raise UnsafeArchiveError(
                f"package {self.label}: archive is truncated ({what} at byte {pos} needs {n} "
                f"bytes, the file has {self.length}); download it again",
                code="truncated",
            )
        self.f.seek(pos)
        data = self.f.read(n)
        if len(data) != n:
            raise UnsafeArchiveError(
                f"package {self.label}: archive is truncated ({what} at byte {pos}); download it again",
                code="truncated",
            )
        return data

    def _packed_fail(self, packed: str) -> UnsafeArchiveError:
        return self._fail(
            f"{packed} file, not a package archive (a package is an uncompressed tar): decompress it, or "
            "download it again"
        )

    # ---- header fields ----------------------------------------------------------------------
    def _octal(self, field: bytes, what: str, at: int) -> int:
        if field[:1] in (b"\x80", b"\xff"):
            raise self._fail(f"{what} uses a base-256 number, which packages never need", at=at)
        text = field.split(b"\x00", 1)[0].strip(b" ")
        if not text:
            return 0
        if not all(0x30 <= c <= 0x37 for c in text):
            raise self._fail(f"{what} field is not an octal number", at=at)
        return int(text, 8)

    def _name(self, raw: bytes, what: str, at: int) -> str:
        raw = raw.split(b"\x00", 1)[0]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self._fail(
                f"{what} is not UTF-8 ({printable(repr(raw[:60]))})", code="bad_name", at=at
            ) from None

    def _checksum(self, hdr: bytes, at: int) -> None:
        stored = self._octal(hdr[148:156], "checksum", at)
        blanked = hdr[:148] + b" " * 8 + hdr[156:]
        unsigned = sum(blanked)
        signed = sum(b - 256 if b > 127 else b for b in blanked)
        if stored not in (unsigned, signed):
            raise self._fail(
                "header checksum mismatch: not a package archive, or corrupt", code="bad_header", at=at
            )

    def _pax(self, data: bytes, at: int) -> dict[str, str]:
        """Parse ``"%d %s=%s\\n"`` records in one linear pass."""
        out: dict[str, str] = {}
        pos = 0
        raw_values: dict[str, bytes] = {}
        records = 0
        while pos < len(data):
            records += 1
            if records > MAX_PAX_RECORDS:
                raise self._fail(f"PAX header has more than {MAX_PAX_RECORDS} records", at=at)
            space = data.find(b" ", pos, pos + 8)
            if space < 0 or not data[pos:space].isdigit():
                raise self._fail("malformed PAX record (no length)", at=at)
            length = int(data[pos:space])
            end = pos + length
            if length < 5 or end > len(data) or data[end - 1 : end] != b"\n":
                raise self._fail("malformed PAX record (length does not match)", at=at)
            body = data[space + 1 : end - 1]
            eq = body.find(b"=")
            if eq <= 0:
                raise self._fail("malformed PAX record (no keyword)", at=at)
            try:
                key = body[:eq].decode("ascii")
            except UnicodeDecodeError:
                raise self._fail("PAX keyword is not ASCII", at=at) from None
            value = body[eq + 1 :]
            if key == "hdrcharset":
                if value != _UTF8_CHARSET.encode():
                    raise self._fail(
                        f"PAX hdrcharset {printable(repr(value[:40]))} is not UTF-8; names must be UTF-8",
                        code="bad_name",
                        at=at,
                    )
            elif key.startswith("GNU.sparse"):
                raise self._fail(
                    "sparse file (GNU.sparse PAX records); packages hold plain files", code="sparse", at=at
                )
            elif key == "linkpath":
                raise self._fail("PAX linkpath: packages hold regular files only", code="link", at=at)
            elif key in ("path", "size"):
                raw_values[key] = value
            elif key in _IGNORED_KEYS or key.startswith(_IGNORED_PREFIXES):
                pass
            else:
                raise self._fail(f"unknown PAX keyword {printable(repr(key[:40]))}", at=at)
            pos = end
        if "path" in raw_values:
            v = raw_values["path"]
            if len(v) > MAX_NAME_BYTES:
                raise self._fail(f"PAX path longer than {MAX_NAME_BYTES} bytes", code="bad_name", at=at)
            out["path"] = self._name(v, "PAX path", at)
        if "size" in raw_values:
            v = raw_values["size"]
            if not v.isdigit() or len(v) > 20:
                raise self._fail("PAX size is not a decimal number", at=at)
            out["size"] = str(int(v))
        return out

    # ---- iteration ----------------------------------------------------------------------------
    def __iter__(self):
        pos = 0
        pax: dict[str, str] | None = None
        long_name: str | None = None
        while True:
            if pos + BLOCK > self.length:
                if pos == 0 and (packed := _packed(self._read(0, self.length, "header"))) is not None:
                    raise self._packed_fail(packed)  # (one smaller than a tar's first header)
                raise UnsafeArchiveError(
                    f"package {self.label}: archive is truncated (no end-of-archive marker "
                    f"after byte {pos}); download it again",
                    code="truncated",
                )
            hdr = self._read(pos, BLOCK, "header")
            if hdr == bytes(BLOCK):
                if pax is not None or long_name is not None:
                    raise self._fail("extended header not followed by a file", at=pos)
                self._check_tail(pos + BLOCK)
                return
            try:
                self._checksum(hdr, pos)
            except UnsafeArchiveError:
                packed = _packed(hdr)
                if pos or packed is None:
                    raise
                # (said "checksum field is not an octal number (header at byte 0)")
                raise self._packed_fail(packed) from None
            magic = hdr[257:265]
            if magic not in (_POSIX_MAGIC, _GNU_MAGIC):
                raise self._fail("not a ustar header (old v7 or unknown tar format)", at=pos)
            kind = hdr[156:157]
            size = self._octal(hdr[124:136], "size", pos)
            data_at = pos + BLOCK
            padded = (size + BLOCK - 1) // BLOCK * BLOCK
            if kind == b"x":
                if pax is not None:
                    raise self._fail("two PAX headers for one entry", at=pos)
                if size > MAX_PAX_BYTES:
                    raise self._fail(
                        f"PAX header of {size} bytes (limit {MAX_PAX_BYTES})", code="header_too_large", at=pos
                    )
                pax = self._pax(self._read(data_at, size, "PAX header"), pos)
                pos = data_at + padded
                continue
            if kind == b"L":
                if long_name is not None:
                    raise self._fail("two GNU long names for one entry", at=pos)
                if size > MAX_NAME_BYTES:
                    raise self._fail(
                        f"GNU long name of {size} bytes (limit {MAX_NAME_BYTES})",
                        code="header_too_large",
                        at=pos,
                    )
                long_name = self._name(self._read(data_at, size, "GNU long name"), "GNU long name", pos)
                pos = data_at + padded
                continue
            if kind in (b"1", b"2", b"K"):
                raise self._fail(
                    f"entry {self._entry_name(hdr, pax, long_name, pos)!r} is a "
                    f"{'symbolic' if kind != b'1' else 'hard'} link; packages hold regular files only",
                    code="link",
                    at=pos,
                )
            if kind == b"S":
                raise self._fail("sparse file (GNU type S); packages hold plain files", code="sparse", at=pos)
            if kind == b"g":
                raise self._fail("global PAX header; packages never carry one", at=pos)
            name = self._entry_name(hdr, pax, long_name, pos)
            if kind not in _REGULAR:
                raise UnsafeArchiveError(
                    f"package {self.label}: entry {printable(repr(name))} is not a regular file "
                    f"(type {printable(repr(kind.decode('latin-1')))}); refused",
                    code="not_regular",
                )
            if pax is not None and "size" in pax:
                size = int(pax["size"])
                padded = (size + BLOCK - 1) // BLOCK * BLOCK
            if size > self.max_bytes:
                raise UnsafeArchiveError(
                    f"package {self.label}: entry {printable(repr(name))} claims {size} bytes, "
                    f"over the {self.max_bytes} byte limit (archive bomb?); refused",
                    code="too_large",
                )
            if data_at + size > self.length:
                raise UnsafeArchiveError(
                    f"package {self.label}: entry {printable(repr(name))} is truncated "
                    f"(needs {size} bytes at byte {data_at}, the file has {self.length}); "
                    "download it again",
                    code="truncated",
                )
            yield Member(name, size, data_at)
            pax = long_name = None
            pos = data_at + padded

    def _entry_name(self, hdr: bytes, pax: dict | None, long_name: str | None, at: int) -> str:
        if pax is not None and "path" in pax:
            return pax["path"]
        if long_name is not None:
            return long_name
        name = self._name(hdr[0:100], "entry name", at)
        if hdr[257:265] == _POSIX_MAGIC:
            prefix = self._name(hdr[345:500], "entry name prefix", at)
            if prefix:
                name = f"{prefix}/{name}"
        return name

    def _check_tail(self, pos: int) -> None:
        """After the first zero block only zeros (the second zero block and record padding)."""
        rest = self.length - pos
        if rest > 1 << 20:
            raise self._fail(f"{rest} bytes follow the end-of-archive marker", code="trailing_data")
        self.f.seek(pos)
        tail = self.f.read(rest)
        if tail.count(0) != len(tail):
            raise self._fail(
                "data follows the end-of-archive marker (appended to the package)", code="trailing_data"
            )
