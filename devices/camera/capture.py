"""CameraSource: frames from a USB device, a network stream, a video file or an image folder.

OpenCV's blocking reads run on one reader thread per source (``VideoCapture.read`` and image
decoding release the GIL); frames are handed to the asyncio loop through the bounded
``Channel`` (oldest dropped when the pipeline falls behind, counted in ``stats.dropped``).

- Live sources (USB, streams) are read as fast as they deliver, and frames are *skipped* to
  keep ``fps`` (``self.skipped``; an MJPEG part is skipped before it is decoded, an OpenCV stream's frame is
  grabbed and not retrieved, so not converted to BGR: for H.264 FFmpeg still decodes it, as the next frames
  need it); a source that stalls
  for ``read_timeout_s`` or fails ``max_consecutive_failures`` reads in a row is reopened with bounded
  exponential backoff, which starts again from ``reconnect_initial_s`` only once a session has given a
  good frame (a camera that answers but sends nothing usable is asked ever less often). A stream that
  ends is treated as lost and reopened.
- An HTTP(S) MJPEG stream (``multipart/x-mixed-replace`` or ``multipart/mixed``) is read part by part by ``devices.camera.mjpeg``
  rather than by OpenCV, whose FFmpeg reader fills a cut-short JPEG in silently: each part is decoded as
  a folder's file is (``decode_image``, at its own depth: a 16-bit part is ``unsupported_frame`` or brought
  to 8 bits by ``pixel_bits``), so a cut or corrupt part is ``corrupt_frame`` and skipped, and a
  part longer than an image under ``max_megapixels`` can need (its Content-Length, or bytes without a
  boundary) is ``oversize_frame`` and the connection is dropped. A JPEG part or file damaged past its header
  (cut short and closed with an end marker, a lost chunk, restart markers out of order), which libjpeg only
  warns of and OpenCV decodes with its missing part filled in, is ``corrupt_frame`` too
  (``protocols.jpeg_check``). The URL's login is answered as the camera asks (Basic, Digest), an https
  camera is read only when its certificate is trusted (``tls_ca_file``, ``tls_fingerprint_sha256``, or the
  system's CAs; ``devices.camera.access``) and never by OpenCV. An ``rtsps://`` camera is trusted the same
  way before OpenCV's FFmpeg opens it, and FFmpeg then verifies its chain (``_open_rtsps``). Other URLs (RTSP, other HTTP content,
  files, USB) are OpenCV's. An HTTP(S) URL answering with one image (a snapshot URL) is asked again every
  1/``fps`` seconds (default 10), each answer read and decoded as an MJPEG part, none skipped.
- An MJPEG part, a snapshot answer or an image folder's file that looks like a whole image (its header
  read, within ``max_megapixels``, not plainly cut short) is handed on compressed
  (``UntakenFrame``) and decoded, with the checks above that need its pixels, only when it is taken: by a
  pipeline's inference thread (``untaken_items()``, what the agent reads), or by ``items()``. A frame that a
  full queue drops (the hand-over's, a pipeline's ``drop_oldest``) is never decoded; the drops are counted
  as before, the images decoded in ``self.decoded``. A part refused when taken counts towards the stream's
  reopening as a failed read does.
- Files and folders are paced at ``fps`` (default 10) with no skipping; at the end they are
  replayed when ``loop`` is set, else the source finishes (``items()`` ends, state STOPPED). A folder is
  replayed as it was at the start: images written to it later are counted and said (``folder_unread``).
- A watched drop folder (``watch``) reads each new or rewritten image once it has settled, and never one cut short
  (``protocols.image_complete``, every kind): that is read again while its upload may still be running, then
  counted as ``cut_short`` (``_watch_folder``).
- A frame of another size than the one before (a camera whose resolution was changed) is passed on, and
  the change is counted once as ``frame_size_changed`` naming both sizes (not once per frame); not for an
  image folder replayed (a dataset may mix sizes), but for a watched drop folder. OpenCV's FFmpeg reader scales
  a stream's or file's frames to the size it opened with: where FFmpeg's log says a new picture size midway
  (``ffmpeg_log._NEW_PICTURE``: MJPEG, H.264), a stream is reopened and a file's pass ends there, said as
  ``frame_size_changed``; no stretched frame is passed on (grey MJPEG frames too: a decoder's choice of a new
  picture's format is such a line). Where the decoder's context says the frame's own size (``DecoderErrors.decoded``:
  H.264, MJPEG), or swscale's (FFmpeg 8: ``DecoderErrors.picture``), a line at the size opened with is a new pixel
  format, read on; a decoder already at another size when a session's first frame is returned (H.264's delay: a
  camera's old size's frame first at a connect) has its next frame taken as one after the line; and after
  a reopen for another size a session opened again at the old size has its first frame skipped (the old size's last
  frame a camera serves at each connect); elsewhere a line early after a reopen at the same size is told from a size change by when it comes.
- ``frozen_after_s`` (default 10 s; ``null``: off): a live camera whose image is identical for that long is
  named once as ``frozen_frame``; its frames are still passed on, each with the time its image has been
  unchanged (``Frame.unchanged_s``), which a pipeline turns into ``UNSURE`` (never OK or NG).
- Every frame gets a strictly increasing ``seq`` (across reconnects and loops) and its capture
  time. A corrupt or empty frame (undecodable image, zero-size or blank read) is counted in
  ``stats.errors_by_reason`` (``corrupt_frame``, ``empty_frame``) and skipped; failures to open
  are ``open_failed``, a lost stream ``stream_lost``, each logged once per burst.
- A video file's or OpenCV stream's frame that FFmpeg's decoder reported errors for (and concealed) is
  ``corrupt_frame`` and skipped (``devices.camera.ffmpeg_log``: FFmpeg's log read, never printed raw; one decoding
  thread per capture, so that a frame's errors come on its reader's thread), and so are the P and B frames after
  it up to the next key frame (``_Predicted``: they carry its damage on), for at most the longer of the last
  key-frame interval seen and ``_PREDICTED_MAX_S`` of frames (intra refresh sends no key frame); a file's pass that ends short of the
  frames it declares, in count and in time, is ``cut_short``, once a pass.
- A folder's image is decoded only after its header's size is checked against ``max_megapixels``:
  a file declaring more (a "decompression bomb", or a camera set far above what the model needs) is
  skipped as ``oversize_frame`` without being decoded. A device, stream or video file whose declared
  frame size is over it is not read (``oversize_frame``, reopened after the backoff); OpenCV scales its
  later frames to that size. An AVI of uncompressed 24-bit rows stored bottom-up, which OpenCV's reader aborts the
  process on, is not opened (``unsupported_frame``, naming how to convert it; ``devices.camera.avi``).

Limits: no hardware-decoding options; frames are BGR uint8 (grey, CMYK and alpha images converted as
OpenCV's colour read does, a JPEG's EXIF orientation applied as the trainer's import applies it); a TIFF of
several pages, or with a preview first, an image with transparent pixels (PNG, TIFF, WebP, BMP), or a whole
file of a kind OpenCV cannot decode (a 12-bit JPEG) is ``unsupported_frame`` (``decode_image``,
``transparent_pixels``), as the import refuses them;
a colour camera's raw frames (a Bayer mosaic saved as grey files or parts) are demosaiced by ``bayer``, as
``cloud-trainer dataset import --bayer`` stores them, their EXIF orientation applied after it (not a USB device's or a video stream's frames, which
their driver or FFmpeg has already made colour)."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np

from devices.base import (
    Backoff,
    BurstLogger,
    Channel,
    ConnectionState,
    DeviceError,
    DeviceStats,
    Frame,
    Notices,
    wall_since,
)
from devices.camera import ffmpeg_log
from devices.camera.avi import crashing_layout
from devices.camera.settings import CameraKind, CameraSettings
from protocols.image_complete import cut_short, png_damaged
from protocols.image_header import (
    FORMATS,
    IMAGE_TYPES,
    SNIFF_BYTES,
    ImageRejected,
    decode_image,
    demosaic,
    eight_bit,
    exif_orientation,
    image_kind,
    image_size,
    kind_suffix,
    max_file_bytes,
    transparent_pixels,
)
from protocols.redact import escaped, mask_credentials

log = logging.getLogger(__name__)
_FFMPEG_OPTIONS_VAR = "OPENCV_FFMPEG_CAPTURE_OPTIONS"  # FFmpeg's options for OpenCV's next open
_FFMPEG_OPTIONS = threading.Lock()

__all__ = ["CameraError", "CameraSource", "UnusableFrame", "UntakenFrame"]

# the kinds the trainer's import reads (IMAGE_TYPES, as cloud_trainer.train.images.IMAGE_EXTS): .jpe and .jfif
# are JPEGs (Windows saves a browser's JPEG as .jfif), so an image trained on is one a folder camera reads
IMAGE_SUFFIXES = frozenset(IMAGE_TYPES)
DEFAULT_FILE_FPS = 10.0


class CameraError(DeviceError):
    pass


class _Unreadable(CameraError):
    """A video file refused before OpenCV opens it (``unsupported_frame``); tried again after the backoff."""


class _End(Exception):
    """A file or folder reached its end and does not loop."""


class _Skip(Exception):
    """A part that arrived within the ``fps`` period of the last frame: skipped undecoded."""


class _BadFrame(Exception):
    """One frame skipped (``reason``, ``detail``); the stream goes on."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


class _Delivered(_BadFrame):
    """A frame skipped and counted, but the stream delivers (no failed read towards its reopening)."""


class _Predicted(_Delivered):
    """A frame decoded from a damaged one (a P or B frame before the next key frame)."""


# CAP_PROP_FRAME_TYPE's answers (FFmpeg's picture type as an ASCII code): frames predicted from others
_PREDICTED_TYPES = frozenset((ord("P"), ord("B"), ord("S"), ord("b")))
_KEY_TYPE = ord("I")
# frames predicted from a damaged one are skipped up to the next key frame, but for no longer than the last key-frame
# interval seen, or this long of frames when none is known: a camera that refreshes its picture by intra refresh
# sends no key frame after its first, and its picture heals within a refresh period
_PREDICTED_MAX_S = 5.0
# sessions in a row opened at a camera's old size, their first frame skipped, their next one of the new size again
# (``CameraSource._old_size_at_connect``): a camera whose frames of the new size are never read, said on /status
_OLD_SIZE_AT_CONNECT = 3
# a stream reopened for FFmpeg's new-picture line and opened again at the size it had: the line again within this
# many of its first frames, at two such reopens in a row, shows a camera alternating pixel formats (such lines then no
# longer reopen it); a later one is a change of size, reopened for as any (one change of chroma subsampling, or an
# old size served once more, no longer stops a later change of size being seen), and so is an early one at the first
# such reopen (a glitch, then a real change of size that came within the reopened stream's first frames)
_FORMAT_AGAIN_FRAMES = 5
# a video file's frames after FFmpeg's new-picture line are held back (skipped, never scaled) for at most this many:
# the line again within them is its decoder back at the file's size (one damaged frame whose JPEG header declared
# another size: only the frames between are skipped); none, and the pass ends there (a file changing size)
_ODD_FRAMES_MAX = 3


class UnusableFrame(ValueError):
    """The image of a frame taken could not be decoded or used (counted at its camera, as before)."""


# a taken frame's image, ``unchanged_s`` and ``camera_size`` (``CameraSource._finish``)
_Finished = tuple[np.ndarray, float, tuple[int, int] | None]


class UntakenFrame(Frame):
    """A frame whose image is decoded only when a consumer takes it (``take()``, or the first read of
    ``image``), not when it arrives: one that a full queue drops (a pipeline's ``drop_oldest``, the camera's
    hand-over) costs no decoding. The camera's checks that need the pixels (a JPEG damaged past its header,
    the pixel depth, a blank frame, a frozen image, a change of size, the resize) run then, counted at the
    camera under the same reasons as before; ``take()`` is False for a frame they refuse, and ``image``
    raises ``UnusableFrame``. Taken from several threads at once (two pipelines on one camera), it is decoded
    once."""

    __slots__ = ("_finish", "_lock", "_ok", "_img", "_still_s", "_camera_size")

    def __init__(
        self, source: str, seq: int, captured_at: float, finish: Callable[[], _Finished | None]
    ) -> None:
        # every attribute through object.__setattr__: Frame is frozen, and its __setattr__ (slots=True) cannot
        # even pass on a subclass's own attributes on Python 3.11
        for name, value in (
            ("source", source),
            ("seq", seq),
            ("captured_at", captured_at),
            ("_finish", finish),
            ("_lock", threading.Lock()),
            ("_ok", None),
            ("_img", None),
            ("_still_s", 0.0),
            ("_camera_size", None),
        ):
            object.__setattr__(self, name, value)
        self._finish: Callable[[], _Finished | None] | None
        self._lock: threading.Lock
        self._ok: bool | None
        self._img: np.ndarray | None
        self._still_s: float
        self._camera_size: tuple[int, int] | None

    def take(self) -> bool:
        """Decode the frame (once) on the calling thread; False when its camera refused it (counted there)."""
        with self._lock:
            if self._ok is None:
                finish, put = self._finish, object.__setattr__
                assert finish is not None
                put(self, "_finish", None)  # the compressed bytes go with it
                put(self, "_ok", False)  # refused, should its decoding raise
                got = finish()
                if got is not None:
                    put(self, "_img", got[0])
                    put(self, "_still_s", got[1])
                    put(self, "_camera_size", got[2])
                put(self, "_ok", got is not None)
            return bool(self._ok)

    @property
    def image(self) -> np.ndarray:
        if not self.take() or self._img is None:
            raise UnusableFrame(
                f"frame {self.seq} of camera {self.source!r} could not be decoded (counted there)"
            )
        return self._img

    @property
    def unchanged_s(self) -> float:
        self.take()
        return self._still_s

    @property
    def camera_size(self) -> tuple[int, int] | None:
        self.take()
        return self._camera_size

    def __eq__(self, other: object) -> bool:  # never by the image: that would decode it
        return self is other

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        state = {None: "not taken", True: "taken", False: "refused"}[self._ok]
        return f"UntakenFrame(source={self.source!r}, seq={self.seq}, {state})"


def _quiet_opencv() -> None:
    """OpenCV's own warnings off (unless ``OPENCV_LOG_LEVEL`` says otherwise): its VIDEOIO warnings say nothing
    the open error does not, and libtiff's, which it prints for a TIFF of a private tag or of an alpha channel
    without its ExtraSamples tag (a vendor's or OpenCV's own TIFF, decoded well), were two lines on the agent's
    standard error at every frame of a folder camera, unbounded in its journal. A frame it cannot use is counted
    and named by the camera's counters (``corrupt_frame``, ``unsupported_frame``)."""
    import os

    import cv2

    if "OPENCV_LOG_LEVEL" not in os.environ:
        try:
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        except AttributeError:
            pass


# characters of a part that reads as text (a camera's error page) quoted in its corrupt_frame
_TEXT_SHOWN = 120


def _as_text(data: bytes) -> str:
    """What a part that is no image says, when it reads as text (a camera's error page or message in its
    stream: "503 too many clients", "sensor busy"), quoted (escaped: no line of the log forged); "" otherwise."""
    head = data[:_TEXT_SHOWN]
    if not head or any(b < 0x20 and b not in b"\t\r\n" or b > 0x7E for b in head):
        return ""
    more = "..." if len(data) > _TEXT_SHOWN else ""
    return f"; it reads as text: {head.decode('ascii')!r}{more}"


def _rejected_reason(exc: ImageRejected) -> str:
    """The error reason an image refused by ``_decode`` is counted under."""
    return "oversize_frame" if exc.oversize else "unsupported_frame" if exc.unsupported else "corrupt_frame"


def _decode(data: bytes, max_megapixels: float, mosaic: bool = False) -> np.ndarray:
    """An image file's or part's bytes decoded at their own depth (``decode_image``), and a JPEG damaged
    past its header refused (``ImageRejected``): libjpeg only warns of one, and OpenCV hands back an image
    with the missing part filled in, which a model would judge as a part. ``mosaic`` (a camera's ``bayer``):
    as stored, its EXIF orientation not applied (``demosaic`` applies it after demosaicing)."""
    import cv2

    from protocols.jpeg_check import damaged_jpeg

    flags = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH | (cv2.IMREAD_IGNORE_ORIENTATION if mosaic else 0)
    img = decode_image(data, flags, max_megapixels=max_megapixels)
    why = damaged_jpeg(data, img, flags)
    if why is not None:
        raise ImageRejected(why)
    clear, total = transparent_pixels(data)  # from the header alone but for a file declaring alpha
    if clear:  # OpenCV dropped the alpha: the colours beneath it are no part (the import refuses it too)
        raise ImageRejected(
            f"{clear} of its {total} pixels are transparent (an alpha channel, or a colour made transparent); "
            "the model would judge the colours stored beneath them: save the images without transparency",
            unsupported=True,
        )
    return img


# watch: a drop folder holding more files than this is said once (each poll lists and stats them all)
CROWDED_FILES = 10_000
# watch: a poll's wait is at least this many times what its listing cost, so that a crowded folder takes at most
# about a quarter of a core, not all of one (a frame waits a little longer instead)
_LISTING_SHARE = 3

_SNIFFED_FILES = 64  # files of a folder read for ``_images_by_content``: a folder of other data stays cheap

# watch: a file named as an image found cut short once settled is read again, at most every this many seconds (or
# settle_ms when longer), while it stays so: a network share's cached attributes (1 s on a CIFS mount, 3-60 s on
# NFS) or a copy that sized the file first can hide writes still coming; after CUT_SHORT_WAIT_S (or 4 x settle_ms
# when longer) cut short and unchanged, it is skipped (``cut_short``), never inspected, and read if it changes
_CUT_SHORT_RETRY_S = 0.25
CUT_SHORT_WAIT_S = 5.0

# a drop folder's file as listed: size, modification time (ns), inode, status-change time (ns); a file rewritten in
# place within the file system's time resolution, or its time set back (a copy keeping the original's time), keeps
# its size and modification time, but never its status-change time (which no program can set) nor, when replaced
# by a rename, its inode
_Key = tuple[int, int, int, int]
_WHOLE_PRINT, _PRINT_ENDS, _PRINT_SLICES = 128 * 1024, 8192, 64


def _fingerprint(data: bytes) -> int:
    """A CRC-32 of a file's bytes, sampled for one over 128 KiB (its first and last 8 KiB and 64 slices of 1 KiB
    between; the size is in the key beside it): tells a drop folder's file rewritten with other bytes from one
    whose status alone changed. A new capture differs in every slice (its sensor's noise, entropy-coded data);
    a CRC of all of a 5-MB BMP cost most of what decoding it costs (bench/camera_drop_bench.py)."""
    view = memoryview(data)
    return _sampled_crc(len(data), lambda at, k: view[at : at + k])


def _sampled_crc(n: int, read: Callable[[int, int], Any]) -> int:
    """``_fingerprint`` of ``n`` bytes, ``read(at, length)`` giving those it samples."""
    if n <= _WHOLE_PRINT:
        return zlib.crc32(read(0, n))
    crc = zlib.crc32(read(n - _PRINT_ENDS, _PRINT_ENDS), zlib.crc32(read(0, _PRINT_ENDS)))
    step = (n - 2 * _PRINT_ENDS - 1024) // _PRINT_SLICES
    for k in range(_PRINT_SLICES):
        crc = zlib.crc32(read(_PRINT_ENDS + k * step, 1024), crc)
    return crc


def _file_fingerprint(path: Path, size: int) -> int | None:
    """``_fingerprint`` of a file of ``size`` bytes, reading only the bytes it samples (80 KiB of a 5-MB BMP), or
    None: not a regular file of that size now, or unreadable. Judged by its stat before it is opened, as
    ``_file_head`` does (a pipe or device put in a read file's place is never opened), then opened non-blocking
    and checked on the open file (one swapped in between the two): never blocks on a pipe."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != size:
            return None
        return _sampled_crc(size, lambda at, k: os.pread(fd, k, at))
    except OSError:
        return None
    finally:
        os.close(fd)


def _file_head(path: Path) -> bytes | None:
    """The first ``SNIFF_BYTES`` of a regular file (what ``image_kind`` reads), or None: not a regular file, or
    unreadable. Opened non-blocking and checked on the open file: a named pipe (a tool's FIFO in the folder, or
    one put in a file's place after it was listed) would otherwise block the reader until a writer came."""
    try:
        # judged by its stat first: opening a pipe or a device is not harmless (a tool blocked opening its FIFO
        # to write is let go, then broken; a serial port's open resets the board behind it)
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    with open(fd, "rb") as f:
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            return f.read(SNIFF_BYTES)
        except OSError:
            return None


def _images_by_content(folder: Path) -> str:
    """``"; N files are images by content but not by name: ..."`` for a folder whose files the camera does not
    read by their names (a line camera's tool writing 'img_0001' or '.raw'), with the extension to give them,
    or ``""``; from the first bytes of at most ``_SNIFFED_FILES`` of them (``image_kind``)."""
    found = []
    try:
        names = sorted(e.name for e in os.scandir(folder) if not e.name.startswith(".") and e.is_file())
    except OSError:
        return ""
    for name in names[:_SNIFFED_FILES]:
        head = _file_head(folder / name)
        if head is None:
            continue
        kind, suffix = image_kind(head), kind_suffix(head)
        if kind is not None and suffix in IMAGE_SUFFIXES:
            found.append(f"{name!r} ({kind}: {suffix})")
    if not found:
        return ""
    n, more = len(found), " or more" if len(names) > _SNIFFED_FILES else ""
    what = "of its files are images" if n > 1 or more else "of its files is an image"
    return (
        f"; {n}{more} {what} by content but not by name: {', '.join(found[:3])}{', ...' if n > 3 else ''}; "
        f"give {'them their extensions' if n > 1 else 'it its extension'} to read {'them' if n > 1 else 'it'}"
    )


def _outside_its_dates(der: bytes) -> str | None:
    """``"expired on <date>"`` / ``"is not valid before <date>"`` for a certificate outside its dates
    now, else None (also when it cannot be read: the handshake has taken it)."""
    import datetime as dt

    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return None
    now = dt.datetime.now(dt.UTC)
    if now > cert.not_valid_after_utc:
        return f"expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    if now < cert.not_valid_before_utc:
        return f"is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
    return None


def _a_name_of(der: bytes) -> str | None:
    """A host name or address the certificate is for (its first subjectAltName DNS name or IP address, else
    its common name), for FFmpeg's host-name check of a pinned camera; None when it names none that FFmpeg's
    option string can carry ('|' and ';' separate its options)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return None
    names: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names += san.get_values_for_type(x509.DNSName)
        names += [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        pass
    names += [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return next((n for n in names if n and not any(c in n for c in "|;")), None)


def _ffmpeg_capture(url: str, params: list[int], enforced: str = "") -> Any:
    """``cv2.VideoCapture(url, CAP_FFMPEG, params)`` with FFmpeg options for this open, passed as OpenCV
    reads them at open (``OPENCV_FFMPEG_CAPTURE_OPTIONS``, set under a lock and put back after): never the
    environment's ``http_proxy`` (set on a gateway for the cloud, FFmpeg sent a camera's http requests, and
    the URL's login, to the proxy; the agent's own readers never use one), unless the variable already
    names one; ``enforced`` options last, over the variable's."""
    import cv2

    with _FFMPEG_OPTIONS:
        before = os.environ.get(_FFMPEG_OPTIONS_VAR)
        os.environ[_FFMPEG_OPTIONS_VAR] = "|".join(o for o in ("http_proxy;none", before, enforced) if o)
        try:
            return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
        finally:
            if before is None:
                os.environ.pop(_FFMPEG_OPTIONS_VAR, None)
            else:
                os.environ[_FFMPEG_OPTIONS_VAR] = before


def _why_not_open(url: str, timeout_s: float) -> str:
    """What the camera itself says, since OpenCV says only that it could not open the stream
    (and prints an unrelated VIDEOIO line): an HTTP status, a refused port, or that it answers but
    its stream cannot be decoded."""
    import socket
    import urllib.error
    import urllib.parse
    import urllib.request

    u = urllib.parse.urlsplit(url)
    if u.scheme in ("http", "https"):
        from devices.camera.mjpeg import http_hint

        headers = {"Range": "bytes=0-0"}
        # the camera itself, as the reader asks it: never an http_proxy of the environment (set for the cloud),
        # which would be handed the camera's login and answer for a camera it cannot reach (nor does
        # OpenCV's FFmpeg: _ffmpeg_capture)
        handlers: list[Any] = [urllib.request.ProxyHandler({})]
        if u.username is not None:  # urllib takes the URL's user:password@ for part of the host name
            # given only when the camera asks, as it asks (Basic, or Digest: the password never in clear text
            # to a Digest camera, as the reader sends it)
            url = urllib.parse.urlunsplit(u._replace(netloc=u.netloc.rpartition("@")[2]))
            logins = urllib.request.HTTPPasswordMgrWithDefaultRealm()
            logins.add_password(
                None, url, urllib.parse.unquote(u.username), urllib.parse.unquote(u.password or "")
            )
            handlers += [
                urllib.request.HTTPDigestAuthHandler(logins),
                urllib.request.HTTPBasicAuthHandler(logins),
            ]

        class _Stay(urllib.request.HTTPRedirectHandler):
            # a redirect is not followed: urllib would carry the Authorization header to any host it names
            def redirect_request(self, *args: Any, **kwargs: Any) -> None:
                return None

        try:
            req = urllib.request.Request(url, headers=headers)
            with urllib.request.build_opener(_Stay, *handlers).open(req, timeout=min(timeout_s, 3.0)) as r:
                ctype = r.headers.get("Content-Type", "?")
            return (
                f": the server answers (HTTP 200, {ctype}) but FFmpeg cannot read a video stream from it; "
                "check that the URL is the stream itself (MJPEG, H.264), not a web page"
            )
        except urllib.error.HTTPError as e:
            return f": the camera answers HTTP {e.code} {e.reason}; {http_hint(e.code)}"
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            return (
                f": cannot reach {u.hostname}:{u.port or (443 if u.scheme == 'https' else 80)} ({reason}); "
                "is the camera on and the address right?"
            )
    if u.scheme in ("rtsp", "rtsps", "rtmp") and u.hostname:
        port = u.port or {"rtsp": 554, "rtsps": 322, "rtmp": 1935}[u.scheme]
        try:
            socket.create_connection((u.hostname, port), timeout=min(timeout_s, 3.0)).close()
        except OSError as e:
            return f": cannot reach {u.hostname}:{port} ({e.strerror or e}); is the camera on and the address right?"
        return (
            f": {u.hostname}:{port} accepts connections but the stream does not open; check the path, "
            "user and password in the URL"
        )
    return ""


class CameraSource:
    def __init__(self, name: str, settings: CameraSettings) -> None:
        self.name = name
        self.settings = settings
        self.stats = DeviceStats()
        self.state = ConnectionState.STOPPED
        self.skipped = 0  # frames skipped to keep the target fps (live sources)
        self.decoded = 0  # images decoded (or, from OpenCV, retrieved and converted to BGR): the CPU spent
        # an MJPEG part or a snapshot answer is kept compressed until a pipeline takes it (UntakenFrame); False:
        # every one decoded as it arrives, as before (bench/camera_bench.py's baseline)
        self.decode_when_taken = True
        self._taking = threading.Lock()  # the checks of frames taken on several threads (frozen, size)
        self._session_no = 0  # which open a frame taken belongs to (its failures count towards that one)
        self._late_failures = 0  # frames taken in a row whose decoding failed, this session
        self._late_reason = ""
        self._late_good = False  # a frame taken this session decoded well (the backoff then starts again)
        self._late_ok_at = 0.0  # when the last frame taken decoded well, or the stream opened
        # the frames between the last two key frames a capture of this camera showed, kept across reopens: after
        # one, the skip after a damaged frame fell back to _PREDICTED_MAX_S until two key frames came again
        self._key_interval = 0
        self._backoff: Backoff | None = None
        self._channel = Channel(settings.queue_max_items, self.stats)
        self._burst = BurstLogger(log)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seq = 0
        self._opens = 0
        # watch: files read or left, by name: what they were when read (``_Key``) and a fingerprint of the bytes read (None:
        # not read, there at the start), so that one whose status alone changed (renamed away and back, its mode
        # or links changed) is not read twice, while one rewritten with the same size and time is read again
        self._dropped_in: dict[str, tuple[_Key, int | None]] | None = None
        # watch: files named as images found cut short, by name: as listed then, since when (monotonic), next read
        self._cut: dict[str, tuple[_Key, float, float]] = {}
        # watch: files of no image kind the camera reads (by name or bytes), or not named as one and there at the
        # start, by name: never read again while unchanged, never deleted (keep_files)
        self._not_images: dict[str, _Key] = {}
        # watch: names of the files there at the start (left alone), while their size, modification time and inode
        # stay as they were: a change of their status alone (a mode, a hard-link backup, an archive bit) is no part
        self._at_start: set[str] = set()
        # routine events said once and counted (``/status``, ``edge_silent_drops_total``): a drop folder's files
        # that are no image the camera reads (``file_skipped``, each reason and extension said once)
        self.notices = Notices(log)
        # why FFmpeg's log lines below error level enter Python (no machine-code filter here), for /status; None
        # while the camera has opened no video file or stream, or when they do not
        self.ffmpeg_log_in_python: str | None = None
        self._keep_failed = False  # watch: the folder refused a deletion (keep_files): none tried again
        self._http: Any = None  # the open MJPEG stream, for stop() to end a blocked read
        self._moved_to: str | None = None  # the other host a redirect of the URL last led to (said once)
        # the size an OpenCV stream was open at when FFmpeg said a new picture size and it was reopened for it; the
        # next open at that same size, and the line again in its first frames (``_FORMAT_AGAIN_FRAMES``), twice in a
        # row, show the lines come for changes of pixel format (an MJPEG camera alternating its chroma subsampling),
        # and such lines are then not taken for a change of size on this camera
        self._reopened_at: tuple[float, float] | None = None
        # the frame size swscale's context said that reopen was for (None: not said): a session opened again at the
        # size it was reopened from has its first frame skipped, the old size's last frame a camera serves first at
        # each connect (judged at each, a part seen again), or a frame of the new size scaled to the old
        self._reopened_to: tuple[int, int] | None = None
        # such sessions in a row whose first frame was skipped and whose next one was of that size again: the
        # camera's frames of that size are never read (OpenCV opens it at the old size each time); a notice at
        # ``_OLD_SIZE_AT_CONNECT`` (it passes no frame: its stale frame, judged before, was named frozen at least)
        self._old_size_connects = 0
        self._format_suspect = False  # the last such reopen had the line again in its first frames
        self._pictures_unsure = False
        self._frame_hw: tuple[int, int] | None = None  # the size frames come at (before any resize)
        self._replay = False  # an image folder replayed, not watched
        self._unread: set[str] = (
            set()
        )  # a replayed folder's images written after its start (never read; said)
        self._skip_until = 0.0  # live MJPEG: parts before this (monotonic) are within fps's period
        self._still: np.ndarray | None = None  # frozen_after_s: every 8th row of the image, unchanged since
        self._still_since = 0.0
        self._still_wall = 0.0  # the wall clock then (``frozen``'s since: one value, not one per read)
        self._frozen = False  # named as frozen_frame (once per freeze)
        # run first on the reader thread: decoding frames is bulk work, which the agent runs below its event
        # loop's priority (edge_agent.priority) so that rules and heartbeats go first on a saturated gateway
        self.reader_init: Callable[[], object] | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        if self._thread is not None:
            return
        self._channel.bind(asyncio.get_running_loop())
        self._stop.clear()
        self._dropped_in = None
        self._not_images = {}
        self._cut = {}
        self._at_start = set()
        self.state = ConnectionState.CONNECTING
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.name}", daemon=True)
        self._thread.start()

    async def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        http = self._http
        if http is not None:
            http.interrupt()
        t, self._thread = self._thread, None
        if t is not None:
            await asyncio.to_thread(t.join, timeout_s)
        self._channel.close()
        self.state = ConnectionState.STOPPED

    async def items(self) -> AsyncIterator[Frame]:
        """Frames until ``stop()`` or the end of a non-looping file or folder, each decoded (on a worker
        thread) as it is taken here; a frame its decoding refuses is counted and not yielded."""
        async for frame in self._channel:
            if isinstance(frame, UntakenFrame) and not await asyncio.to_thread(frame.take):
                continue
            yield frame

    async def untaken_items(self) -> AsyncIterator[Frame]:
        """As ``items()``, but MJPEG parts and snapshot answers come as ``UntakenFrame``: decoded by whoever
        takes them (the agent's pipelines, on their inference threads), so that a frame a full queue drops is
        never decoded."""
        async for frame in self._channel:
            yield frame

    # ---- reader thread ---------------------------------------------------------------------
    def _error(self, reason: str, detail: str) -> None:
        # every camera error reaches the status, the log and the fleet through here; a library's own text
        # (OpenCV, FFmpeg, urllib) may name the URL with its password, masked here like ours; a drop folder's file
        # name (whoever uploads chooses it) escaped, so that a line feed in it forges no line of the log
        detail = escaped(mask_credentials(detail))
        self.stats.error(reason, detail)
        self._burst.log(reason, "camera %r: %s: %s", self.name, reason, detail)

    def _run(self) -> None:
        if self.reader_init is not None:
            self.reader_init()
        _quiet_opencv()
        s = self.settings
        backoff = Backoff(s.reconnect_initial_s, s.reconnect_max_s)
        try:
            while not self._stop.is_set():
                try:
                    if s.watch:
                        self._watch_folder()
                    elif s.kind is CameraKind.PATH and Path(s.url).is_dir():
                        self._read_folder()
                    else:
                        self._read_capture(backoff)
                except _End:
                    log.info("camera %r: %s ended after %d frames", self.name, s.shown_url, self._seq)
                    return
                except Exception as exc:  # never take the process down; report, back off, retry
                    self._error("reader_failed", f"{type(exc).__name__}: {exc}")
                if self._stop.is_set():
                    return
                self.state = ConnectionState.BACKOFF
                self._stop.wait(backoff.next_delay())
        finally:
            self.state = ConnectionState.STOPPED
            self._channel.close()

    def _emit(self, image: np.ndarray | None, unchanged_s: float = 0.0) -> bool:
        if image is None or image.size == 0:
            self._error("empty_frame", f"{self.settings.shown_url}: empty frame skipped")
            return False
        image, camera_size = self._shaped(image)
        self._channel.put_threadsafe(
            Frame(self.name, self._seq, time.time(), image, unchanged_s, camera_size)
        )
        self._seq += 1
        return True

    def _emit_untaken(self, data: bytes, live: bool, what: str | None = None) -> None:
        """An MJPEG part, snapshot answer or folder's file (``what``: its path) handed on compressed:
        decoded when taken (``_finish``)."""
        session = self._session_no if what is None else -1  # a folder's file counts towards no stream
        name = self.settings.shown_url if what is None else what

        def finish() -> _Finished | None:
            return self._finish(data, live, session, name)

        self._channel.put_threadsafe(UntakenFrame(self.name, self._seq, time.time(), finish))
        self._seq += 1

    def _finish(self, data: bytes, live: bool, session: int, what: str) -> _Finished | None:
        """A part or file taken: decoded and checked as the reader checked it when it decoded every one (the
        same reasons counted, with the same messages; ``what``: the URL or the file), on the taker's thread.
        A stream's failures count towards the reader's reopening of it (``_late_failures``), a good part
        restarts the backoff."""
        s = self.settings
        with self._taking:  # taken on several threads at once
            self.decoded += 1
        try:  # at its own depth: a 12-bit camera's 16-bit PNG or TIFF part or file
            img = _decode(data, s.max_megapixels, s.bayer is not None)
        except ImageRejected as exc:
            self._refused(session, _rejected_reason(exc), f"{what}: {exc} ({len(data)} bytes), skipped")
            return None
        try:
            img = self._to_frame(img, data)
        except ImageRejected as exc:
            self._refused(session, "unsupported_frame", f"{what}: {exc}; skipped")
            return None
        if img.size == 0 or (live and not img.any()):  # a folder's black image is an image (as before)
            self._refused(
                session, "empty_frame", f"{s.shown_url}: {'blank' if live else 'empty'} frame skipped"
            )
            return None
        with self._taking:
            if session == self._session_no:
                self._late_failures = 0
                self._late_ok_at = time.monotonic()
                if not self._late_good:
                    self._late_good = True
                    if self._backoff is not None:
                        self._backoff.reset()
            unchanged_s = self._check_frozen(img, s.frozen_after_s) if live and s.frozen_after_s else 0.0
            image, camera_size = self._shaped(img)
            return image, unchanged_s, camera_size

    def _refused(self, session: int, reason: str, detail: str) -> None:
        with self._taking:
            if session == self._session_no:
                self._late_failures += 1
                self._late_reason = reason
        self._error(reason, detail)

    def _shaped(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int] | None]:
        """Grey to BGR, a change of size named, the resize; with the camera's size (width, height) when resized
        (``Frame.camera_size``: a frame of other proportions than ``width`` x ``height`` is stretched, and the
        UNSURE check's frame shape is the camera's), else None."""
        if image.ndim == 2:
            import cv2

            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        s = self.settings
        hw = (image.shape[0], image.shape[1])
        if hw != self._frame_hw:
            # named once per change (not per frame), across reconnects too; a folder replayed (a dataset) may
            # hold images of several sizes, a camera (its drop folder too) changing size is a fault
            if self._frame_hw is not None and not self._replay:
                (ph, pw), (h, w) = self._frame_hw, hw
                given = (
                    f"resized to {s.width}x{s.height} as before" if s.width else "passed on at the new size"
                )
                self._error(
                    "frame_size_changed",
                    f"{s.shown_url}: frames are now {w}x{h}, were {pw}x{ph} (the camera's resolution changed?); "
                    f"they are {given}, but a model's roi or tiles set for the former size no longer fit: set "
                    "the camera back, or retrain for the new size",
                )
            self._frame_hw = hw
        if s.width and s.height and (image.shape[1] != s.width or image.shape[0] != s.height):
            import cv2

            image = cv2.resize(image, (s.width, s.height), interpolation=cv2.INTER_AREA)
            return image, (hw[1], hw[0])
        return image, None

    def _pace(self, next_t: float, period: float) -> float:
        delay = next_t - time.monotonic()
        if delay > 0:
            self._stop.wait(delay)
        return max(next_t + period, time.monotonic() - period)

    def _read_folder(self) -> None:
        s = self.settings
        # hidden files left alone, as a drop folder leaves them: a Mac's copy puts a '._' AppleDouble file (no
        # image) beside every image, and a tool's temporary ('.upload.png') is no part
        files = sorted(
            p
            for p in Path(s.url).iterdir()
            if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        )
        if not files:
            raise CameraError(
                f"folder {s.shown_url} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
                + _images_by_content(Path(s.url))
            )
        self.state = ConnectionState.CONNECTED
        self._replay = True
        period = 1.0 / (s.fps or DEFAULT_FILE_FPS)
        next_t = time.monotonic()
        while not self._stop.is_set():
            for f in files:
                if self._stop.is_set():
                    return
                next_t = self._pace(next_t, period)
                img = self._read_image(f)
                if isinstance(img, bytes):
                    self._emit_untaken(img, live=False, what=str(f))
                elif img is not None:
                    self._emit(img)
            self._written_since(files)
            if not s.loop:
                raise _End

    def _written_since(self, files: list[Path]) -> None:
        """After each pass of a replayed folder: images that appeared in it since the start, which a replay never
        reads (it reads the folder as it was, a dataset), counted (notice ``folder_unread``) and said once. A
        folder a camera or an upload writes into, given without ``watch: true``, was replayed as it was at the
        start, old parts inspected again and again (driving the line's outputs for parts long gone), and its new
        parts never read, without a word."""
        s = self.settings
        try:
            now = {p.name for p in Path(s.url).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        except OSError:
            return
        # the names deleted since are forgotten: a folder a camera rotates (writes and deletes) had every name ever
        # written kept for as long as the agent ran (12,000 written, 203 in the folder: 12,000 held)
        self._unread &= now
        new = sorted(n for n in now - {f.name for f in files} - self._unread if not n.startswith("."))
        if not new:
            return
        self._unread.update(new)
        self.notices.note(
            "folder_unread",
            "camera %r: folder %s is replayed as it was at the start (watch: false): %d image file(s) written to "
            "it since (%s) are not read, and its old images are %s; for a folder a camera or an upload writes "
            "into, set watch: true (each new image read once, when whole)",
            self.name,
            s.shown_url,
            len(new),
            escaped(", ".join(new[:3])) + (", ..." if len(new) > 3 else ""),
            "read again at each pass (loop: true)" if s.loop else "read once",
            n=len(new),
        )

    def _watch_folder(self) -> None:
        """A drop folder: each image file that appears after the start is read once, in the order the
        files were last written, when it has not changed for ``settle_ms`` (a camera's software or an FTP
        upload writing it has finished; changed: its size, modification or status-change time). Files already
        there at the start are left alone: after a restart, inspecting old parts again would drive the PLC for
        parts long gone (also when their status alone changes: ``_at_start``). A file rewritten later is read
        again: a new size or modification time, or the same ones with other bytes (a camera overwriting
        'last.bmp' within its file system's time resolution, or a copy setting the time back: its status-change
        time or inode tells, the bytes decide); the record of files read is pruned as files leave the folder.

        A file named as an image whose bytes are an image cut short (``protocols.image_complete``: every kind)
        is never inspected: it is read again while it stays so (the upload may still be running, hidden by a
        share's cached attributes), and skipped once cut short and unchanged past ``CUT_SHORT_WAIT_S`` (or
        4 x ``settle_ms``), counted (``cut_short``) with its path; it is read if it changes. A PNG named as an image
        ending with its IEND chunk whose chunk chain breaks before it (``png_damaged``) waits the same (a rewrite
        in place paused looks so), then is counted as ``corrupt_frame``, saying where. A plain PNM whose last
        sample ends the file (no line end after it, which the format allows) has all its samples once its writer is
        done: it waits the same, then is read (``cut_short(settled=True)``), named as an image or not.

        The record outlives a lost folder (a network share that drops, a folder moved away and back):
        after the reader's backoff the images that arrived meanwhile are read, and those already read
        are not. An empty listing prunes nothing: an unmounted share's mount point lists empty, and
        every image on it would otherwise be read again when it comes back.

        A file not named as an image (a line camera's FTP upload names frames 'frame_0001', '.raw', '.dat') is
        judged by its first bytes (``image_kind``), once it has settled like any other and once per change: an
        image of a kind the camera reads is read; anything else (a named pipe, a device, a sidecar '.txt', a GIF)
        is skipped, said once per reason and extension and counted (notice ``file_skipped``), and never deleted;
        as is one whose bytes are an image cut short (an FTP client's 'frame.jpg.part', renamed when done)."""
        s = self.settings
        folder = Path(s.url)
        if not folder.is_dir():
            raise CameraError(f"watch: folder {s.shown_url} does not exist (or is not a folder)")
        settle = s.settle_ms / 1000.0
        poll = min(0.05, settle / 2) if settle else 0.05
        retry, wait = max(_CUT_SHORT_RETRY_S, settle), max(CUT_SHORT_WAIT_S, 4 * settle)

        def listing() -> dict[str, tuple[_Key, float, float]]:
            """name -> (key, modification time, last change: modification or status change)"""
            out = {}
            with os.scandir(folder) as it:
                for e in it:
                    if e.name.startswith("."):
                        continue
                    try:
                        st = e.stat()
                    except OSError:  # removed between the listing and the stat
                        continue
                    key = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
                    out[e.name] = (key, st.st_mtime, max(st.st_mtime, st.st_ctime))
            return out

        def named(name: str) -> bool:
            return Path(name).suffix.lower() in IMAGE_SUFFIXES

        if self._dropped_in is None:  # the first listing: what is there now is left alone
            first = listing()
            self._dropped_in = {n: (key, None) for n, (key, _, _) in first.items() if named(n)}
            self._not_images = {n: key for n, (key, _, _) in first.items() if not named(n)}
            self._at_start = set(first)
        done, others, cut = self._dropped_in, self._not_images, self._cut
        self.state = ConnectionState.CONNECTED
        crowded = False
        while not self._stop.is_set():
            now, cpu, mono = time.time(), time.thread_time(), time.monotonic()
            files = listing()
            if crowded and len(files) < CROWDED_FILES // 2:  # emptied: said again if it fills up again
                crowded = False
            elif not crowded and len(files) > CROWDED_FILES:  # not said again while it hovers about the mark
                crowded = True
                log.warning(
                    "camera %r: watch: folder %s is crowded: %d files (%d of them no image the camera reads, "
                    "which keep_files never deletes), each listed and stat'ed at every poll (%.0f ms of CPU "
                    "this time); polls are slowed to keep that to a quarter of a core, so frames wait longer; "
                    "move or delete what the camera does not need (sidecar files), or have the upload put it "
                    "elsewhere",
                    self.name,
                    s.shown_url,
                    len(files),
                    sum(1 for n in files if not named(n) and n not in done),
                    (time.thread_time() - cpu) * 1000,
                )
            for record in (done, others, cut) if files else ():
                for name in [n for n in record if n not in files]:
                    del record[name]
                    self._at_start.discard(name)
            ready = sorted(
                (mtime, name)
                for name, (key, mtime, changed) in files.items()
                if (name not in done or done[name][0] != key)
                and others.get(name) != key
                and now - changed >= settle
                and not (name in cut and cut[name][0] == key and mono < cut[name][2])  # read again later
            )
            # the listing's own cost: a crowded folder's polls are paced by it
            spent = time.thread_time() - cpu
            for _, name in ready:
                if self._stop.is_set():
                    return
                key = files[name][0]
                try:
                    self._dropped(folder / name, key, named(name), mono, retry, wait)
                except Exception as exc:  # never the reader's end: this file is counted, the others read
                    done[name] = (key, None)
                    self._error("corrupt_frame", f"{folder / name}: {type(exc).__name__}: {exc}; skipped")
            if s.keep_files is not None and len(done) > s.keep_files and not self._keep_failed:
                self._trim_drop_folder(folder, files, done, s.keep_files)
            self._stop.wait(max(poll, _LISTING_SHARE * spent))

    def _dropped(self, f: Path, key: _Key, named: bool, mono: float, retry: float, wait: float) -> None:
        """One settled file of a drop folder, new or changed since it was last judged (``key``: as listed):
        read and handed on, or kept for a later read (cut short), or skipped, and recorded."""
        assert self._dropped_in is not None
        done, others, cut, name = self._dropped_in, self._not_images, self._cut, f.name
        if name in self._at_start:
            was = done[name][0] if name in done else others.get(name)
            if was is not None and was[:3] == key[:3]:  # there at the start, its status alone changed: left
                if name in done:
                    done[name] = (key, None)
                else:
                    others[name] = key
                return
            self._at_start.discard(name)  # written since (or gone, and another of its name come)
        if not named and (no := self._no_image(f)):
            done.pop(name, None)  # an image by content rewritten as something else: kept, not trimmed
            others[name] = key
            self._skipped(f, *no)
            return
        before = done.get(name)
        if before is not None and before[1] is not None and before[0][:2] == key[:2] and name not in cut:
            # its size and time as when read, its status or inode not: its sampled bytes alone tell whether it was
            # rewritten, not a read of all of it (a hard-link backup or a chmod of a folder of 25-Mpx BMPs)
            if _file_fingerprint(f, key[0]) == before[1]:
                done[name] = (key, before[1])  # read before
                return
        data = self._file_bytes(f)
        if data is None:  # counted
            done[name] = (key, None)
            return
        limit = self.settings.max_megapixels
        declared = image_size(data)
        over = declared is not None and declared[1] * declared[2] > limit * 1e6  # refused as such, at once
        why = None if over else cut_short(data)
        # a plain PNM whose last sample ends the file (no line end after it, as the format allows) may still be
        # written ('25' of '255'): whole once unchanged for the wait, whatever its name; other cuts stay cut
        ends_in_digits = why is not None and data[:1] == b"P" and cut_short(data, settled=True) is None
        # a temporary upload file ('.part') stalled: left, its whole bytes read under the name given when done
        if why is not None and not named and not ends_in_digits:
            done.pop(name, None)
            others[name] = key
            self._skipped(
                f,
                "cut_short",
                f"an image by its bytes but cut short ({why}: an upload still under way, or its temporary "
                "file); judged again when it changes",
            )
            return
        if why is not None:
            first = cut.get(name)
            since = first[1] if first is not None and first[0] == key else mono
            if mono - since < wait:  # the upload may still be running: read again later, never inspected
                # and at the end of its wait, not up to a retry past it: files waiting keep the order written
                cut[name] = (key, since, min(mono + retry, since + wait))
                return
            del cut[name]
            if named and (damage := png_damaged(data)) is not None:
                # a PNG ending with its IEND whose chunk chain breaks at written bytes, unchanged for the wait: told
                # damaged with where it breaks. Never at the first look: a PNG rewritten in place (rsync --inplace,
                # a writer opening it r+b) and paused is the new bytes then the old file's tail, its IEND at the end
                # and the chain broken at written bytes. Only one named as an image: a copy tool's temporary file
                # ('.partial') is left above as any upload cut short, never recorded as read (keep_files)
                done[name] = (key, _fingerprint(data))
                self._error(
                    "corrupt_frame",
                    f"{f}: a PNG damaged in its chunk chain ({damage}); unchanged for {mono - since:.0f}s: a bit "
                    "flipped by storage or a copy, or a rewrite in place that stopped; skipped, never inspected "
                    "(read if it changes)",
                )
                return
            if not ends_in_digits:
                done[name] = (key, _fingerprint(data))
                self._error(
                    "cut_short",
                    # (a whole file damaged in its structure, a PNG chunk's length or type, reads as cut short)
                    f"{f}: {why}; unchanged for {mono - since:.0f}s: an upload that stalled, a writer that "
                    "stopped, or a damaged file; skipped, never inspected (read if it changes)",
                )
                return
        cut.pop(name, None)
        crc = _fingerprint(data)
        before = done.get(name)
        if before is not None and before[1] == crc and before[0][:2] == key[:2]:
            done[name] = (key, crc)  # its status alone changed (renamed away and back, its mode): read before
            return
        others.pop(name, None)
        done[name] = (key, crc)
        img = self._image_of(data, f)
        if isinstance(img, bytes):
            self._emit_untaken(img, live=False, what=str(f))
        elif img is not None:
            self._emit(img)

    def _no_image(self, f: Path) -> tuple[str, str] | None:
        """Why a drop folder's file not named as an image is not read, ``(kind of reason, reason)``, or None when
        its first bytes are an image of a kind the camera reads. One header read; a pipe or device is not read."""
        head = _file_head(f)
        if head is None:
            return "special", "not a regular file (a named pipe, a device or a folder) or unreadable"
        kind, suffix = image_kind(head), kind_suffix(head)
        if kind is None:
            return "not_image", f"no image by its name nor by its bytes (the camera reads {FORMATS})"
        if suffix not in IMAGE_SUFFIXES:
            return kind, f"a {kind} image by its bytes, which the camera does not read ({FORMATS})"
        return None

    def _skipped(self, f: Path, why: str, detail: str) -> None:
        """A drop folder's file skipped: counted (``file_skipped``), and said once per reason and extension (a
        camera's '.txt' sidecar beside every frame is one line, not one per part)."""
        self.notices.note(
            "file_skipped",
            "camera %r: watch: %s skipped: %s; other %s files like it are skipped without a word",
            self.name,
            escaped(str(f)),
            detail,
            f"'{escaped(f.suffix)}'" if f.suffix else "extension-less",
            cause=f"{why} {f.suffix.lower()}",
        )

    def _trim_drop_folder(self, folder: Path, files: dict, done: dict, keep: int) -> None:
        """Delete the oldest images of a drop folder past ``keep`` of those read (or there at the start; never
        one not yet read, nor one changed since). Without it the folder grew with every part for as long as
        the line ran, and each poll (20 a second) listed and stat'ed all of it: ~13 ms of CPU per 1,000
        files, a whole core at a few thousand, then a disk full."""
        known = sorted(
            (files[n][1], n) for n, (seen, _) in done.items() if n in files and files[n][0] == seen
        )
        for _, name in known[: max(0, len(done) - keep)]:
            try:
                (folder / name).unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:  # a read-only share: said once, the reader goes on without deleting
                self._keep_failed = True
                self._error(
                    "keep_files",
                    f"watch: cannot delete {folder / name} ({exc}); images are no longer deleted from the "
                    "folder (keep_files); make it writable, or set keep_files: null and empty it otherwise",
                )
                return
            del done[name]

    def _read_image(self, f: Path) -> np.ndarray | bytes | None:
        """One file of an image folder (``_file_bytes``, ``_image_of``); None when skipped (counted)."""
        data = self._file_bytes(f)
        return None if data is None else self._image_of(data, f)

    def _file_bytes(self, f: Path) -> bytes | None:
        """A folder's file's bytes, or None (counted): no regular file (a pipe named *.png would block the reader
        for good), unreadable, or larger than any image within ``max_megapixels`` needs (not read at all)."""
        limit = self.settings.max_megapixels
        try:
            st = f.stat()
            if not stat.S_ISREG(st.st_mode):
                self._error("corrupt_frame", f"{f}: not a regular file, skipped")
                return None
            size = st.st_size
            if size > max_file_bytes(limit):
                self._error("oversize_frame", f"{f}: {size} bytes, more than an image of {limit:g} Mpx needs")
                return None
            return f.read_bytes()
        except OSError as exc:
            self._error("corrupt_frame", f"{f}: unreadable ({exc})")
            return None

    def _image_of(self, data: bytes, f: Path) -> np.ndarray | bytes | None:
        """A folder's file's bytes as a frame, its size checked from the header before it is decoded (a small
        file declaring a huge image would otherwise take the gateway's memory); None when skipped. Its bytes,
        to be decoded when the frame is taken (``UntakenFrame``), when its header is readable, within
        ``max_megapixels``, and it is not plainly cut short; otherwise decoded now, which says why not."""
        from devices.camera.mjpeg import looks_whole

        limit = self.settings.max_megapixels
        declared = image_size(data)
        if (
            self.decode_when_taken
            and declared is not None
            and declared[1] * declared[2] <= limit * 1e6
            # settled: a drop folder's file is read once whole or unchanged past its wait, a replayed folder's as
            # it lies (a plain PNM whose last sample ends it is whole, not decoded at once on the camera's thread)
            and looks_whole(data, settled=True)
        ):
            return data
        self.decoded += 1
        try:  # at its own depth: a camera's 16-bit file is brought to 8 bits by pixel_bits, not by OpenCV
            img = _decode(data, limit, self.settings.bayer is not None)
        except ImageRejected as exc:
            self._error(_rejected_reason(exc), f"{f}: {exc} ({len(data)} bytes), skipped")
            return None
        try:
            return self._to_frame(img, data)
        except ImageRejected as exc:
            self._error("unsupported_frame", f"{f}: {exc}; skipped")
            return None

    def _to_frame(self, img: np.ndarray, data: bytes) -> np.ndarray:
        """A decoded image file or part (``data``) as the frame the model gets, as the trainer's import stores
        it: 8 bits by ``pixel_bits``, then a colour camera's raw (Bayer) mosaic demosaiced by ``bayer`` and
        turned by its EXIF orientation (``_decode`` left it as stored)."""
        s = self.settings
        img = eight_bit(img, s.pixel_bits)
        return img if s.bayer is None else demosaic(img, s.bayer, orientation=exif_orientation(data))

    def _open(self):
        import cv2

        s = self.settings
        ms = int(s.open_timeout_s * 1000)
        # FFmpeg's decoder errors read (ffmpeg_log): one decoding thread, so that a frame's errors are logged on
        # this reader's thread, in the grab() that returns it (FFmpeg's frame threads log a frame's errors on their
        # own threads, frames later)
        one_thread = [cv2.CAP_PROP_N_THREADS, 1] if ffmpeg_log.install() else []
        if s.kind is not CameraKind.USB and not one_thread:
            self.notices.note(  # said once by ffmpeg_log; counted here, a capture opened so
                "ffmpeg_errors_unread",
                "camera %r: FFmpeg's decoder errors are not read (%s): a frame it reports damaged (and fills in) "
                "is not told from a whole one",
                self.name,
                ffmpeg_log.not_read(),
                level=None,
            )
        elif s.kind is not CameraKind.USB:
            # said once by ffmpeg_log; shown beside the camera's state, not counted as a silent drop: nothing is
            # dropped, and on every ARM gateway each camera's count grew at each reopen
            self.ffmpeg_log_in_python = ffmpeg_log.filtered_in_python() or None
        if s.kind is CameraKind.USB:
            cap = cv2.VideoCapture(int(s.url.split(":", 1)[1]))
        elif s.kind is CameraKind.PATH:
            if not Path(s.url).exists():
                raise CameraError(f"video file {s.shown_url} does not exist")
            # a layout OpenCV's reader would abort the agent on after its first frame (devices.camera.avi)
            layout = crashing_layout(s.url)
            if layout is not None:
                raise _Unreadable(
                    f"{s.shown_url}: an AVI of {layout}, which OpenCV's video reader aborts the whole process on; "
                    f"not read: convert it, e.g. ffmpeg -i {s.shown_url} -c:v mjpeg -q:v 2 converted.avi "
                    "(or -c:v ffv1 to keep every pixel)"
                )
            cap = (
                cv2.VideoCapture(s.url, cv2.CAP_FFMPEG, one_thread) if one_thread else cv2.VideoCapture(s.url)
            )
            if one_thread and not cap.isOpened():  # a kind only another of OpenCV's readers opens
                cap.release()
                cap = cv2.VideoCapture(s.url)
        else:
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                ms,
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                int(s.read_timeout_s * 1000),
                *one_thread,
            ]
            if s.url.lower().startswith("rtsps://"):
                cap = self._open_rtsps(params)
            else:
                cap = _ffmpeg_capture(s.url, params)
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"cannot open {s.shown_url}{_why_not_open(s.url, s.open_timeout_s)}")
        return cap

    def _open_rtsps(self, params: list[int]) -> Any:
        """An ``rtsps://`` camera, which OpenCV's FFmpeg opens: FFmpeg checked no certificate at all, so any
        machine on the path could pose as the camera, take the URL's login and feed frames. Now the camera
        is trusted as an https one is (``access.Trust``: its chain and host name against ``tls_ca_file``
        or the system's CAs, or the pinned certificate) by a handshake of our own that sends nothing, and
        FFmpeg's own connection then verifies the chain (``tls_verify``) against that CA file, or against
        exactly the pinned certificate. FFmpeg 8 (OpenCV 5.1's) also checks the host name of the URL against
        the certificate, as FFmpeg 7 did not: a pinned camera, whose certificate rarely names the address it
        is reached at (a camera's own self-signed one), then never opened. With a pin, the identity is the
        certificate itself, so FFmpeg is given a name the pinned certificate carries to check
        (``verifyhost``); a CA-verified camera keeps the URL's host name, which the first handshake checked
        too."""
        import ssl
        import tempfile
        import urllib.parse

        from devices.camera.access import HandshakeTimeout, Trust, Untrusted, check_tls_camera, system_ca_file

        s = self.settings
        u = urllib.parse.urlsplit(s.url)
        host, port = u.hostname or "", u.port or 322
        trust = Trust(s.tls_ca_file, s.tls_fingerprint_sha256)
        try:
            der = check_tls_camera(host, port, trust, s.open_timeout_s)
        except Untrusted as exc:
            raise CameraError(f"cannot open {s.shown_url}: {exc}") from None
        except HandshakeTimeout:  # it answers, but TLS does not come: a hung camera, not a cable
            raise CameraError(
                f"cannot open {s.shown_url}: {host}:{port} accepts the connection but its TLS handshake does "
                f"not complete within {min(s.open_timeout_s, 5.0):g}s; is the camera hung or busy, and is this "
                "its rtsps port?"
            ) from None
        except OSError as exc:
            raise CameraError(
                f"cannot open {s.shown_url}: cannot reach {host}:{port} ({exc.strerror or exc}); is the camera "
                "on and the address right?"
            ) from None
        pinned = None
        if trust.pin is not None and (dates := _outside_its_dates(der)) is not None:
            # the pin is the identity for the agent's own check, but FFmpeg's OpenSSL checks the dates and
            # would refuse it with nothing better than "cannot open" at every try
            raise CameraError(
                f"cannot open {s.shown_url}: the pinned certificate {dates} (FFmpeg, which reads rtsps "
                "cameras, refuses it); renew the camera's certificate and pin the new one, or set the "
                "gateway's clock if it is wrong"
            )
        if trust.pin is not None:  # FFmpeg's only anchor: the pinned certificate itself
            fd, pinned = tempfile.mkstemp(prefix="camera-pin-", suffix=".pem")
            with os.fdopen(fd, "w") as f:
                f.write(ssl.DER_cert_to_PEM_cert(der))
            anchor: str | None = pinned
        else:
            anchor = s.tls_ca_file or system_ca_file()
        try:
            if anchor is None or "|" in anchor or ";" in anchor:
                raise CameraError(
                    f"cannot open {s.shown_url}: "
                    + (
                        "this machine has no CA file for FFmpeg to check the camera with; "
                        if anchor is None
                        else f"FFmpeg cannot take a CA file whose path holds '|' or ';' ({anchor}); "
                    )
                    + "set tls_ca_file (the CA that signed the camera's certificate, or the camera's own one)"
                )
            enforced = f"tls_verify;1|ca_file;{anchor}"
            if pinned is not None and (name := _a_name_of(der)) is not None:
                enforced += f"|verifyhost;{name}"
            return _ffmpeg_capture(s.url, params, enforced=enforced)
        finally:
            if pinned is not None:
                os.unlink(pinned)

    def _open_http(self) -> Any:
        """The camera's MJPEG stream read by ``devices.camera.mjpeg``, or None: not an HTTP(S) URL, or one
        that serves something else (OpenCV reads those)."""
        s = self.settings
        if s.kind is not CameraKind.STREAM or not s.url.lower().startswith(("http://", "https://")):
            return None
        from devices.camera.access import Trust
        from devices.camera.mjpeg import StreamError, open_stream

        try:
            return open_stream(
                s.url,
                s.open_timeout_s,
                s.read_timeout_s,
                max_file_bytes(s.max_megapixels),
                poll_period_s=1.0 / (s.fps or DEFAULT_FILE_FPS),  # a snapshot camera: paced as a file
                trust=Trust(s.tls_ca_file, s.tls_fingerprint_sha256),  # read anew at each open
            )
        except StreamError as exc:
            raise CameraError(f"cannot open {s.shown_url}: {exc.detail}") from None

    def _part_reader(self, stream: Any) -> Callable[[], np.ndarray | bytes | None]:
        """Reads one MJPEG part: its bytes, decoded only when the frame is taken (``UntakenFrame``), when it
        looks like a whole image of an allowed size; one that plainly is not is decoded now as a folder's
        file is (``_BadFrame``), as is every part with ``decode_when_taken`` off; the stream's own errors
        (oversize, lost) pass through."""
        from devices.camera.mjpeg import StreamError, looks_whole

        s = self.settings
        limit = s.max_megapixels

        def read() -> np.ndarray | bytes | None:
            data = stream.next_part()
            size = image_size(data)
            if size is not None and size[1] * size[2] > limit * 1e6:  # as a device declaring it: not read
                _, w, h = size
                raise StreamError(
                    "oversize_frame",
                    f"frames of {w}x{h} ({w * h / 1e6:.1f} Mpx) are over max_megapixels {limit:g}; set the "
                    "camera's resolution lower, or raise it",
                )
            if time.monotonic() < self._skip_until and size is not None and looks_whole(data):
                raise _Skip  # fps would skip it: not worth decoding (one that is plainly broken is counted)
            if self.decode_when_taken and size is not None and looks_whole(data):
                return data  # decoded if a pipeline takes it: a frame its queue drops costs no decoding
            self.decoded += 1
            try:  # at its own depth, as a folder's file: a 12-bit camera's 16-bit PNG or TIFF part
                img = _decode(data, limit, s.bayer is not None)
            except ImageRejected as exc:
                raise _BadFrame(
                    "unsupported_frame" if exc.unsupported else "corrupt_frame",
                    f"{s.shown_url}: {exc} ({len(data)} bytes{_as_text(data) if size is None else ''}), skipped",
                ) from None
            try:
                return self._to_frame(img, data)
            except ImageRejected as exc:
                raise _BadFrame("unsupported_frame", f"{s.shown_url}: {exc}; skipped") from None

        return read

    def _read_capture(self, backoff: Backoff) -> None:
        with ffmpeg_log.watching() as errors:  # FFmpeg's errors logged on this thread: damaged frames
            self._read_opened(backoff, errors)

    def _read_opened(self, backoff: Backoff, errors: ffmpeg_log.DecoderErrors) -> None:
        import cv2

        from devices.camera.mjpeg import StreamError

        s = self.settings
        cap = None
        try:
            stream = self._open_http()
            if stream is None:
                cap = self._open()
        except CameraError as exc:
            self.state = ConnectionState.BACKOFF
            self._error(
                "unsupported_frame" if isinstance(exc, _Unreadable) else "open_failed", f"{exc}; retrying"
            )
            return
        if self._opens:
            self.stats.reconnects += 1
        self._opens += 1
        if stream is not None:
            moved = getattr(stream, "redirected_to", None)
            if moved is not None and moved != self._moved_to:  # said once per place, not at every reopen
                log.warning(
                    "camera %r: %s redirects to another host: frames are read from %s; if that is not this "
                    "camera, check the camera's settings and the network (put the URL you mean in url)",
                    self.name,
                    s.shown_url,
                    moved,
                )
            self._moved_to = moved
            self._http = stream
            try:
                paced = getattr(stream, "paced", False)  # a snapshot camera, asked at fps: no frame skipped
                self._session(self._part_reader(stream), backoff, file_fps=None, paced=paced)
            finally:
                self._http = None
                stream.close()
            return
        assert cap is not None
        # a size a decoder said as the capture opened is a probing decoder's (FFmpeg's stream probe decodes each
        # stream's first frames, a second video stream's too; OpenCV's own decoder decodes nothing before the first
        # grab, where a decoder that says its size says it again): only the reading decoder's own count
        errors.decoded = None
        try:
            # the size declared when opened (CAP_PROP_FRAME_WIDTH, _HEIGHT): OpenCV's FFmpeg reader scales
            # every later frame to it, so a stream that grows midway still gives frames of this size (measured)
            w, h = cap.get(3), cap.get(4)
            declared = w * h
            if (
                declared > s.max_megapixels * 1e6
            ):  # refused before a frame is decoded; asked after the backoff
                self.state = ConnectionState.BACKOFF
                self._error(
                    "oversize_frame",
                    f"{s.shown_url}: frames of {w:.0f}x{h:.0f} ({declared / 1e6:.1f} Mpx) are over "
                    f"max_megapixels {s.max_megapixels:g}; set the camera's resolution lower, or raise it",
                )
                return

            live = s.kind in (CameraKind.USB, CameraKind.STREAM)
            # reopened for FFmpeg's line, at the size it had: the line may have come for a pixel format
            same_size_again = self._reopened_at == (w, h)
            after_change = self._reopened_at is not None
            self._reopened_at = None
            # reopened for frames of a size said, opened again at the size it had: its first frame not passed on
            stale_to = [self._reopened_to if same_size_again else None]
            skipped_for = stale_to[0]  # the size its first frame was skipped for (None: not skipped)
            self._reopened_to = None
            self._format_suspect &= same_size_again
            # the decoder's picture size as OpenCV gives its frames: turned a quarter where it applies a video's
            # rotation (a phone's: OpenCV opens it at the turned size, and its decoder says the stored one)
            turned = (
                cap.get(getattr(cv2, "CAP_PROP_ORIENTATION_AUTO", -1)) > 0
                and round(cap.get(getattr(cv2, "CAP_PROP_ORIENTATION_META", -1))) % 180 == 90
            )

            def decoded() -> tuple[int, int] | None:
                size = errors.decoded
                return (size[1], size[0]) if size is not None and turned else size

            frame_type = getattr(cv2, "CAP_PROP_FRAME_TYPE", None)  # OpenCV 4.9 and later
            damaged_at = [
                0
            ]  # the last frame decoded with errors, while the frames after it are predicted from it
            declared_fps = cap.get(5)  # CAP_PROP_FPS (a stream may say 0, or its clock's 90000)
            rate = declared_fps if 1.0 <= declared_fps <= 120.0 else DEFAULT_FILE_FPS
            # the last key frame's number, and the frames from the one before to it (as the last capture saw them)
            keys = [0, self._key_interval]
            shown_ms = [0.0]  # the last frame's time in the file (CAP_PROP_POS_MSEC reads 0 after the end)

            def judged() -> None:
                """The frame just decoded refused when FFmpeg reported errors decoding it (it concealed them: its
                missing part filled in), or when it is predicted from such a frame (a P or B frame before the
                next key frame: the damage is carried on without an error of its own), for at most the longer of
                the last key-frame interval seen and ``_PREDICTED_MAX_S`` of frames."""
                at = cap.get(1)  # CAP_PROP_POS_FRAMES: this frame's number, from 1
                shown_ms[0] = cap.get(0)  # CAP_PROP_POS_MSEC
                kind = cap.get(frame_type) if frame_type is not None else None
                if kind == _KEY_TYPE:
                    keys[:] = [int(at), int(at) - keys[0] if 0 < keys[0] < at else keys[1]]
                    self._key_interval = keys[1]
                if errors.count != before[0]:
                    n = errors.count - before[0]
                    damaged_at[0] = int(at)
                    raise _BadFrame(
                        "corrupt_frame",
                        f"{s.shown_url}: frame {at:.0f} is damaged: FFmpeg's decoder reported "
                        f"{n} error{'s' * (n > 1)} decoding it (the last: {errors.last!r}) and filled in what it "
                        "could not read; skipped",
                    )
                if damaged_at[0] and kind in _PREDICTED_TYPES:
                    most = max(keys[1], round(_PREDICTED_MAX_S * rate))
                    if at - damaged_at[0] <= most:
                        raise _Predicted(
                            "corrupt_frame",
                            f"{s.shown_url}: frame {at:.0f} is predicted from the damaged frame {damaged_at[0]}; "
                            "skipped until the next key frame",
                        )
                    self._burst.log(
                        "no_key_frame",
                        "camera %r: %s: no key frame in the %d frames after the damaged frame %d (a camera "
                        "refreshing its picture by intra refresh sends none): frames are passed on again from "
                        "frame %d",
                        self.name,
                        s.shown_url,
                        most,
                        damaged_at[0],
                        int(at),
                    )
                damaged_at[0] = 0

            before = [0]
            # FFmpeg's new-picture lines counted once this pass's first frame was retrieved (None: before it)
            pictures: list[int | None] = [None]
            retrieved = [0]  # frames retrieved this session
            resized_end = [False]  # a file's pass ended by a change of size (not cut short)
            # a file: frames held back since FFmpeg's line (``_ODD_FRAMES_MAX``), and the first one's number
            held = [0, 0.0]

            def stretched() -> bool:
                """The frame just retrieved is one of another size than the capture opened with, which OpenCV has
                scaled to that size (FFmpeg said a new picture size since the first frame: ``ffmpeg_log``): a
                stream is reopened (``StreamError``), to be read at its new size, where the frame-size and camera
                checks see it; a file's pass ends here (True), its later frames as stretched, unless the line
                comes again within ``_ODD_FRAMES_MAX`` frames (``_Skip`` meanwhile): its frames between are skipped."""
                retrieved[0] += 1
                if pictures[0] is None:
                    # where the decoder has begun another size already (H.264's delay: a camera's old size's frame,
                    # then its new size's key frame, decoded before the first is returned), the next frame is told
                    # as one after FFmpeg's line, never passed on stretched with nothing said
                    pictures[0] = errors.pictures - (decoded() not in (None, (w, h)))
                    if (to_size := stale_to[0]) is not None:
                        stale_to[0] = None
                        # not a failed read: counted one, ``max_consecutive_failures: 1`` reopened the camera at it
                        # (``stream_lost``), and the next session, not one after a change of size, passed it on
                        raise _Delivered(
                            "frame_size_changed",
                            f"{s.shown_url}: opened again at {w:.0f}x{h:.0f}, the size it had, after a change to "
                            f"frames of {to_size[0]}x{to_size[1]}: its first frame skipped (the old size's last frame, "
                            "which a camera may serve first at each connect: judged, it was a part seen again)",
                        )
                    return False
                new = errors.pictures != pictures[0]
                # the frame's own size: the decoder's, read from its context where it chose the new picture's format
                # (``ffmpeg_log._DECODER_LINES``: a grey MJPEG frame's, H.264's); else where swscale's context says it
                # (FFmpeg 8 and later), scaled to the size opened with (its layout read right); None: not said, the
                # line told by when it comes
                sizes = errors.picture if new else None
                own = sizes[0] if sizes is not None and sizes[1] == (w, h) else None
                if new and decoded() is not None:
                    own = decoded()
                if held[0]:  # a file's frames after the line: back at its size, or still another one
                    if new and own in (None, (w, h)):
                        pictures[0], n, held[0] = errors.pictures, held[0], 0
                        self._error(
                            "corrupt_frame",
                            f"{s.shown_url}: {n} frame{'s' * (n > 1)} from frame {held[1]:.0f} declared another "
                            "size than the file's (FFmpeg began a new picture size, then its first again): "
                            "skipped, never scaled",
                        )
                        return False
                    pictures[0] = errors.pictures  # (another size still, or another format of it)
                    if held[0] < _ODD_FRAMES_MAX:
                        held[0] += 1
                        raise _Skip
                    held[0] = 0
                elif not new:
                    return False
                # a new pixel format at the size opened with (chroma subsampling): read on
                elif own == (w, h):
                    pictures[0] = errors.pictures
                    return False
                elif own is None and self._pictures_unsure:
                    return False
                elif not live:
                    held[:] = [1, cap.get(1)]
                    pictures[0] = errors.pictures
                    raise _Skip
                # a change of size said as such is never taken for a change of format (a camera alternating sizes,
                # or serving its old size's last frame at each connect, reopened at each, the backoff growing)
                early = own is None and same_size_again and retrieved[0] <= _FORMAT_AGAIN_FRAMES
                if early and self._format_suspect:  # the second reopen in a row so: a format alternating
                    self._pictures_unsure = True
                    self.notices.note(  # a state shown on /status, not only a log line
                        "size_changes_unseen",
                        "camera %r: %s: opened again at %.0fx%.0f, the size it had, twice, and FFmpeg's line for a new "
                        "picture came again at frame %.0f: it came for a change of pixel format (chroma subsampling), "
                        "not of size; such lines no longer reopen this camera, and a change of size while it stays "
                        "open is not told (a camera alternating sizes every few frames looks the same; restart the "
                        "agent to look again)",
                        self.name,
                        s.shown_url,
                        w,
                        h,
                        cap.get(1),
                    )
                    return False
                self._format_suspect = early
                at = cap.get(1) if live else held[1]
                to = f" of {own[0]}x{own[1]}" if own else ""
                said = (
                    f"frames changed size at frame {at:.0f} while open (FFmpeg began a new picture "
                    f"size{to}); OpenCV scales every frame to the size it opened with ({w:.0f}x{h:.0f}), stretched"
                )
                if live:
                    self._reopened_at, self._reopened_to = (w, h), own
                    self._old_size_at_connect(own if retrieved[0] == 2 and own == skipped_for else None, w, h)
                    raise StreamError(
                        "frame_size_changed", f"{said}: reopening, to read them at their own size"
                    )
                resized_end[0] = True
                self._error(
                    "frame_size_changed",
                    f"{s.shown_url}: {said}: the rest of this pass is skipped, "
                    + ("replayed from its start" if s.loop else "never read")
                    + "; write the video at one size",
                )
                return True

            def read() -> np.ndarray | None:
                before[0] = errors.count
                if not self.decode_when_taken:  # the former path: every frame converted
                    ok, img = cap.read()
                    self.decoded += ok
                    if ok:
                        judged()
                        if stretched():
                            return None
                    return img if ok else None
                if not cap.grab():
                    return None
                judged()
                if live and time.monotonic() < self._skip_until:
                    # fps would skip it: grabbed (the stream moves on; FFmpeg has decoded an H.264 frame,
                    # which the next ones need) but not retrieved, so neither converted to BGR nor copied,
                    # nor for an MJPEG USB device or stream decoded at all
                    raise _Skip
                ok, img = cap.retrieve()
                self.decoded += ok
                if ok and stretched():
                    return None
                return img if ok else None

            def rewind() -> None:
                cap.set(1, 0)  # 1 = CAP_PROP_POS_FRAMES
                pictures[0] = None  # the first frame again: a new scaling context for its size
                held[0] = 0

            def at_end() -> None:
                if held[0]:  # the file ended while its frames after FFmpeg's line were held back
                    held[0] = 0
                    self._error(
                        "frame_size_changed",
                        f"{s.shown_url}: its last frames, from frame {held[1]:.0f}, are of another size than "
                        "its first (FFmpeg began a new picture size): skipped, never scaled",
                    )
                if resized_end[0]:  # ended at a change of size, said: not cut short
                    resized_end[0] = False
                    shown_ms[0] = 0.0
                    errors.last = ""
                    return
                # a file damaged midway, or cut short, ends without an error from OpenCV: said once per pass
                total, read_to = cap.get(7), cap.get(1)  # CAP_PROP_FRAME_COUNT, CAP_PROP_POS_FRAMES
                # the count may be estimated (from the duration and the rate, for a container that keeps none):
                # a file that ends within 5 % of it is not said; nor one whose last frame's time reaches the
                # length the count gives (a variable-rate file's count is estimated at its base rate, not its
                # average: a whole 20 s Matroska file of 240 frames declared 596)
                short = total > 0 and total - read_to > max(1.0, total * 0.05)
                if short and shown_ms[0] > 0:
                    # at the rate the count was estimated at: a timelapse's 0.5 fps, not the clamped ``rate``
                    fps = declared_fps if 0 < declared_fps < 1e6 else rate
                    declared_s, reached_s = total / fps, shown_ms[0] / 1000 + 1 / fps
                    short = declared_s - reached_s > max(1 / fps, declared_s * 0.05)
                shown_ms[0] = 0.0
                if short:
                    last = f" (FFmpeg's last error: {errors.last!r})" if errors.last else ""
                    self._error(
                        "cut_short",
                        f"{s.shown_url}: ended after {read_to:.0f} of the {total:.0f} frames its header "
                        f"declares: damaged or cut short{last}; "
                        + ("replayed from its start" if s.loop else "the rest is never read"),
                    )
                errors.last = ""  # each pass's own

            self._session(
                read,
                backoff,
                file_fps=cap.get(5),  # 5 = CAP_PROP_FPS
                rewind=rewind,
                at_end=at_end,
                calm_s=s.reconnect_max_s if after_change else 0.0,
            )
        finally:
            cap.release()

    def _old_size_at_connect(self, again: tuple[int, int] | None, w: float, h: float) -> None:
        """A live session reopened for frames of a size said: ``again``, that size, where the session was opened at
        the old size (``w`` x ``h``), its first frame skipped and its very next one of that size again. Such
        sessions ``_OLD_SIZE_AT_CONNECT`` times in a row: the camera's frames of that size are never read, said on
        ``/status`` (``old_size_at_connect``); it passes no frame, and nothing else says so."""
        if again is None:
            self._old_size_connects = 0
            return
        self._old_size_connects += 1
        if self._old_size_connects >= _OLD_SIZE_AT_CONNECT:
            self.notices.note(
                "old_size_at_connect",
                "camera %r: %s: its first frame at each connect is of %.0fx%.0f, the ones after it of %dx%d (a camera "
                "serving its old size's last frame first at every connect, or alternating sizes every frame), %d "
                "connects in a row: OpenCV opens it at the first frame's size, so its frames of %dx%d are never read "
                "and it passes no frame; restart the camera's stream, or set its resolution back",
                self.name,
                self.settings.shown_url,
                w,
                h,
                again[0],
                again[1],
                self._old_size_connects,
                again[0],
                again[1],
            )

    def _session(
        self,
        read: Callable[[], np.ndarray | bytes | None],
        backoff: Backoff,
        file_fps: float | None,
        rewind: Callable[[], None] | None = None,
        paced: bool = False,
        at_end: Callable[[], None] | None = None,
        calm_s: float = 0.0,
    ) -> None:
        """Frames from one open device, stream or file until it fails, ends or the source stops. The
        backoff starts again only after a good frame: a stream that opens and gives nothing usable is
        reopened ever less often. A stream opened again for a change of size (``calm_s``, its
        ``reconnect_max_s``) restarts it only after a good frame that long after the open: a camera flapping
        between sizes is reopened ever less often too, not at ``reconnect_initial_s`` for ever."""
        from devices.camera.mjpeg import StreamError

        s = self.settings
        live = s.kind in (CameraKind.USB, CameraKind.STREAM)
        self.state = ConnectionState.CONNECTED
        period = 1.0 / s.fps if s.fps and not paced else 0.0  # the rate live frames are thinned to
        file_period = 1.0 / (s.fps or file_fps or DEFAULT_FILE_FPS)
        # silence that means a lost stream; a snapshot camera's wait between requests is not silence
        silence_s = s.read_timeout_s + (1.0 / (s.fps or DEFAULT_FILE_FPS) if paced else 0.0)
        last_emit = 0.0
        next_t = time.monotonic()
        failures = 0
        good = False  # a good frame in this session (and so the backoff reset, but for ``calm_s``)
        calm_at = time.monotonic() + calm_s
        # the last frame the camera sent (good, or damaged and skipped), or the open: silence is counted from it
        last_ok = time.monotonic()
        last_good = last_ok  # the last good frame, or the open: what a lost stream's line says
        self._skip_until = 0.0
        with self._taking:  # frames of this open taken from now on count towards it
            self._session_no += 1
            self._late_failures, self._late_reason, self._late_good = 0, "", False
            self._late_ok_at = last_ok
            self._backoff = backoff

        def since() -> str:
            return "the last good frame" if good or self._late_good else "the stream opened"

        while not self._stop.is_set():
            if not live:
                next_t = self._pace(next_t, file_period)
            bad: _BadFrame | None = None
            try:
                img = read()
            except _Skip:
                self.skipped += 1
                last_ok = last_good = time.monotonic()  # the camera sends: not silent
                continue
            except _Delivered as exc:
                self._error(exc.reason, exc.detail)
                last_ok = time.monotonic()  # not silent, but no good frame: not last_good
                continue
            except _BadFrame as exc:
                img, bad = None, exc
            except StreamError as exc:
                if not self._stop.is_set():
                    self.state = ConnectionState.BACKOFF
                    self._error(exc.reason, f"{s.shown_url}: {exc.detail}")
                return
            except (OSError, EOFError) as exc:  # an MJPEG stream's socket: a timeout, a reset, its end
                if not self._stop.is_set():
                    silent = time.monotonic() - last_good
                    # where it broke (an HTTP camera's stream says): a camera that stalls or hangs up halfway
                    # through an image was told only as silent or closed, like one that stops between images
                    where = getattr(exc, "where", None)
                    if isinstance(exc, EOFError):
                        what = "the camera closed the stream" + (f" {where}" if where else "")
                    elif isinstance(exc, TimeoutError):
                        what = f"no frame for {silent:.1f}s since {since()}" + (
                            f": it stalled {where}" if where else ""
                        )
                    else:
                        what = f"read failed ({exc})" + (f" {where}" if where else "")
                    self.state = ConnectionState.BACKOFF
                    self._error("stream_lost", f"{s.shown_url}: {what}; reopening")
                return
            if self._late_failures >= s.max_consecutive_failures:
                # the frames taken (decoded when taken) failed, that many in a row: as failed reads
                self.state = ConnectionState.BACKOFF
                silent = time.monotonic() - self._late_ok_at
                self._error(
                    "stream_lost",
                    f"{s.shown_url}: no frame for {silent:.1f}s since "
                    f"{'the last good frame' if self._late_good else 'the stream opened'} "
                    f"({self._late_failures} failed reads); reopening (the last read: {self._late_reason})",
                )
                return
            if img is None and bad is not None and not live:  # a file's frame refused: the file goes on
                self._error(bad.reason, bad.detail)
                continue
            if img is None:
                if not live:
                    if at_end is not None:
                        at_end()
                    if s.loop and self._seq > 0 and rewind is not None:
                        rewind()
                        failures += 1
                        if failures > s.max_consecutive_failures:
                            raise CameraError(f"{s.shown_url}: cannot rewind")
                        continue
                    raise _End
                failures += 1
                now = time.monotonic()
                if failures >= s.max_consecutive_failures or now - last_ok > silence_s:
                    self.state = ConnectionState.BACKOFF
                    # why no frame came, when the last part said (unsupported_frame says more than silence)
                    last = f" (the last read: {bad.reason})" if bad is not None else ""
                    self._error(
                        "stream_lost",
                        f"{s.shown_url}: no frame for {now - last_good:.1f}s since {since()} ({failures} failed "
                        f"reads); reopening{last}",
                    )
                    return
                if bad is not None:
                    self._error(bad.reason, bad.detail)
                else:
                    self._error(
                        "corrupt_frame", f"{s.shown_url}: a frame could not be read or decoded, skipped"
                    )
                continue
            failures = 0
            last_ok = last_good = time.monotonic()
            if isinstance(img, bytes):  # a part kept compressed: checked and decoded when taken
                if live and period:
                    emit_at = self._thinned(last_emit, period)
                    if emit_at is None:
                        continue
                    last_emit = emit_at
                self._emit_untaken(img, live)
                continue
            if img.size == 0 or not img.any():
                self._error("empty_frame", f"{s.shown_url}: blank frame skipped")
                continue
            if not good:
                good = True
                if not calm_s:
                    backoff.reset()
            elif calm_s and last_good >= calm_at:  # opened again for a change of size, and calm since
                calm_s = 0.0
                backoff.reset()
            if live and period:
                emit_at = self._thinned(last_emit, period)
                if emit_at is None:
                    continue
                last_emit = emit_at
            unchanged_s = self._check_frozen(img, s.frozen_after_s) if live and s.frozen_after_s else 0.0
            self._emit(img, unchanged_s)

    def _thinned(self, last_emit: float, period: float) -> float | None:
        """This frame's emit time, or None when it comes within fps's ``period`` of the last one passed on
        (counted as skipped); parts up to the next period are then skipped unread (``_skip_until``)."""
        now = time.monotonic()
        if now - last_emit < period * 0.95:
            self.skipped += 1
            return None
        self._skip_until = now + period * 0.95
        return now

    @property
    def frozen(self) -> dict[str, Any] | None:
        """While the camera's image is frozen (named as ``frozen_frame``, until a frame taken shows it changed):
        since when (ISO 8601 and epoch seconds, UTC) and for how long; None otherwise. On ``/status`` beside the
        source's state, which stays ``connected``: the status page showed a hung camera resending its last image
        as a healthy one, the freeze said only by one error among its counts."""
        if not self._frozen:
            return None
        for_s = max(time.monotonic() - self._still_since, 0.0)
        # since when: the wall time recorded then, re-based once the wall clock was stepped (a gateway without a
        # battery-backed clock set by NTP after the image last changed showed a 1970 one, or one off by the step)
        since = self._still_wall = wall_since(self._still_wall, for_s)
        return {
            "since": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(since)),
            "since_t": round(since, 3),
            "for_s": round(for_s, 1),
        }

    def _check_frozen(self, img: np.ndarray, after_s: float) -> float:
        """A live camera's image identical, pixel for pixel on every 8th row, for ``after_s``: a hung camera
        resending its last image (a real sensor's noise changes even a still scene, everywhere; a part
        moving changes many rows). Named once per freeze, across reconnects (a hung camera may drop and
        resend); the frame is passed on all the same. Returns how long the image has been unchanged once
        that is ``after_s`` or more (the frame's ``unchanged_s``), else 0. Every 8th row: ~40 µs a 640x480
        frame instead of ~120 µs for the whole (and no whole copy), which makes the check cheap enough to
        be on by default."""
        now = time.monotonic()
        rows = img[::8]
        still = self._still
        if still is not None and still.shape == rows.shape and np.array_equal(still, rows):
            if now - self._still_since < after_s:
                return 0.0
            if not self._frozen:
                self._frozen = True
                self._error(
                    "frozen_frame",
                    f"{self.settings.shown_url}: the image has not changed for {after_s:g}s (frozen_after_s): "
                    "the camera may be hung, resending its last image; check it (a power cycle); its frames "
                    "are passed on as UNSURE until it changes",
                )
            return now - self._still_since
        if self._frozen:
            log.info(
                "camera %r: the image changes again after %.0fs frozen", self.name, now - self._still_since
            )
            self._frozen = False
        self._still, self._still_since = rows.copy(), now  # a copy: the frame passed on is the pipeline's
        self._still_wall = time.time()
        return 0.0
