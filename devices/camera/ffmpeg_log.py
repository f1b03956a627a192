"""FFmpeg's decoder errors, read from the libavutil that OpenCV's FFmpeg reader uses (``av_log_set_callback``).

OpenCV hands back a frame that FFmpeg's decoder concealed (a damaged MJPEG frame of a video file, an MPEG-4 or
H.264 frame with lost slices: grey or smeared blocks) as a good one, and reports no error for it; FFmpeg says so
only in its log, which it printed raw on the agent's standard error (no camera, no time; it broke ``--log-json``).
With the callback installed, FFmpeg's error-level lines (``AV_LOG_ERROR`` and worse) are counted on the reader
thread that decoded them (``watching()``: a camera's reader opens its capture with one decoding thread, so that
a frame's errors are logged on that thread, in the ``grab()`` that returns it) and nothing of FFmpeg's is printed;
the camera skips the frame (``corrupt_frame``); but for the few error-level lines after which FFmpeg decodes the
picture whole (``_NOT_DAMAGE``). Lines below error level are dropped, as OpenCV's own setting (``AV_LOG_ERROR``)
dropped them, but the few that say the picture's size changed while the capture is open (``_NEW_PICTURE``), counted
on the reader's thread as ``pictures``: OpenCV scales every later frame to the size it opened with, so the camera
reopens a stream (or ends a file's pass) rather than pass stretched frames on. Swscale's line says no size, but
its logging context does where libswscale makes it public (9, FFmpeg 8, and later: ``SwsContext``'s ``src_w``,
``src_h``, ``dst_w``, ``dst_h``): read as ``picture``, so that a new scaling context for a new pixel format at the same
size (an MJPEG camera changing its chroma subsampling) is told from one for a new size (``_scaled_sizes``).

A decoder's lines for a new picture (``_DECODER_LINES``: H.264's reinit, and the DEBUG line of any decoder choosing
a new picture's format, which ``_native_filter`` lets through: an MJPEG decoder's only line when grey frames change
size, where swscale says nothing) have their context's picture size read (``DecoderErrors.decoded``, through
libavutil's ``av_opt_get_image_size``: the picture's own size, not H.264's coded size padded to 16).
Only the format string, the logging context's name (the codec's) and such sizes are read, never the ``va_list``:
nothing depends on how a CPU passes one. When the callback cannot be installed (no libavutil of OpenCV's found: a wheel
that links FFmpeg statically, as on Windows; or ``OPENCV_FFMPEG_LOGLEVEL`` / ``OPENCV_FFMPEG_DEBUG`` set, which
ask for FFmpeg's own log), that is said once and FFmpeg's log is set quiet (unless those variables are set);
damaged frames are then not told from whole ones, but a file that ends short of the frames its header declares
still is (``cut_short``, the camera's end-of-pass check).

The callback is FFmpeg's for the whole process, and FFmpeg calls it at every level, on whichever thread logs:
``av_vlog`` has no level test, ``av_log_set_level`` is read by FFmpeg's own callback only (checked on the wheel's
FFmpeg 9.0). A ctypes callback takes the GIL before its first line, and FFmpeg's MJPEG decoder logs 29 debug lines
a frame (34 in bench/ffmpeg_log_bench.py): with a busy Python thread beside the reader, a 5 MP frame was once
measured at 2x as long (the cost depends on the scheduler; later runs showed none). So where it can, the callback
is installed behind a few machine instructions (``_native_filter``: Linux on x86-64) that return on a debug or trace
line (above ``AV_LOG_VERBOSE``) without entering Python; elsewhere (or when the system refuses executable memory) Python filters,
which is said once (INFO; WARNING when executable memory is refused) and shown by each camera that opens a
capture so (``ffmpeg_log_in_python`` beside its state on ``/status``: nothing is dropped; a callback not installed
at all is counted in its silent drops, ``ffmpeg_errors_unread``).
Error, warning, information and verbose lines still take the GIL, on whichever thread logs them. So any other FFmpeg capture in a process where
a camera has opened one must be opened with one decoding thread (``CAP_PROP_N_THREADS`` 1, as the cameras' are) or
closed with ``release()``: a capture with FFmpeg's frame threads dropped without it can hang the process (OpenCV's
dealloc holds the GIL while FFmpeg waits for its worker threads, one of them waiting for the GIL in the callback:
with the filter, only if a worker logs an error then; without it, on any line)."""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_AV_LOG_ERROR = 16  # libavutil/log.h: PANIC 0, FATAL 8, ERROR 16, WARNING 24, INFO 32, VERBOSE 40, DEBUG 48
_AV_LOG_VERBOSE = 40  # lines up to this level reach the callback (``_native_filter``); above: dropped unseen
_OWN_LOG_VARS = ("OPENCV_FFMPEG_LOGLEVEL", "OPENCV_FFMPEG_DEBUG")  # OpenCV then prints FFmpeg's log itself
_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_ITEM_NAME = ctypes.CFUNCTYPE(ctypes.c_char_p, ctypes.c_void_p)
_CONVERSION = re.compile(rb"%[-+ #0]*(?:\d+|\*)?(?:\.(?:\d+|\*))?(?:hh|h|ll|l|L|z|j|t)?([diouxXeEfgGcsp%])")
_SHOWN = 160  # characters of a message kept
# error-level lines after which FFmpeg decodes the picture whole: not a damaged frame (h264_refs.c: a
# reference-marking command naming a picture no longer held is skipped, the line some IP cameras' H.264 streams log
# over and over; h2645_sei.c: a supplemental message running past its unit is dropped)
_NOT_DAMAGE = frozenset((b"mmco: unref short failure\n", b"SEI type %d size %d truncated at %d\n"))
# lines below error level that say the decoded picture's size (or format) changed while the capture is open: OpenCV's
# FFmpeg reader scales every frame to the size it opened with, so a stream whose size changes midway gives stretched
# frames at the old size, with nothing else to tell. Swscale warns of a full-range (JPEG) pixel format each time OpenCV
# makes a new scaling context, which it does for the first frame and for a frame of another size (an MJPEG stream:
# measured, WARNING); FFmpeg's H.264 decoder logs a reinit when a new sequence parameter set changes the size (VERBOSE
# in FFmpeg 6 and later, INFO before; measured: twice at the open, then at the change)
_SWS_LINE = b"deprecated pixel format used, make sure you did set range correctly\n"
_REINIT_LINE = b"Reinit context to %dx%d, pix_fmt: %s\n"
# a decoder (libavcodec's ``ff_get_format``: MJPEG, H.264, most others) choosing the pixel format of a new picture
# size or format, a DEBUG line: the only one an MJPEG decoder logs when a grey (one-component) JPEG changes size,
# as swscale warns only of a colour (full-range YUV) one. It reaches the callback past ``_native_filter``
_GET_FORMAT_LINE = b"Format %s chosen by get_format().\n"
_NEW_PICTURE = frozenset((_SWS_LINE, _REINIT_LINE, _GET_FORMAT_LINE))
# lines logged by a decoder's context (an ``AVCodecContext``), whose size (``video_size``: its ``width`` and
# ``height``, the picture's own, not the coded size padded to 16) is the new picture's when they are logged
_DECODER_LINES = frozenset((_REINIT_LINE, _GET_FORMAT_LINE))
# libswscale 9 (FFmpeg 8) made ``SwsContext`` public, its layout then part of the ABI: on a 64-bit build (two
# pointers, an unsigned, two doubles, four ints before them) ``src_w, src_h, dst_w, dst_h`` are at these bytes. Only
# the majors whose layout was checked (9; 10, FFmpeg 8's OpenCV 5 wheel): a major bump may change the layout
# (FFmpeg's ABI rule), so a later one keeps the timing rule, as an FFmpeg before 8 does, until it is checked
_SWS_PUBLIC_MAJORS = frozenset((9, 10))
_SWS_SIZES_AT = 56
_sws_public: list[bool] = [False]  # the installed libswscale's context is read (``_install``)
_opt_image_size: list[Any] = []  # libavutil's ``av_opt_get_image_size`` (``_install``)


class DecoderErrors:
    """FFmpeg's error-level lines logged on one thread: how many, and the last one (its text); and how many lines said
    a new picture size or format (``_NEW_PICTURE``: the first frame's, then each change), with the last one's
    ``picture``: the frame's own size and the size it is scaled to ((width, height), (width, height)), where swscale's
    context says them, else None (H.264's line; an FFmpeg before 8); and ``decoded``: the size of the last new
    picture a decoder said (``_DECODER_LINES``, read from its context), None before one or where it is not read."""

    __slots__ = ("count", "last", "pictures", "picture", "decoded")

    def __init__(self) -> None:
        self.count = 0
        self.last = ""
        self.pictures = 0
        self.picture: tuple[tuple[int, int], tuple[int, int]] | None = None
        self.decoded: tuple[int, int] | None = None


_by_thread: dict[int, DecoderErrors] = {}
_elsewhere = DecoderErrors()  # logged on a thread no camera reads on (said, rate-limited)
_said_elsewhere = [0.0]
_installed: list[object] = []  # the callback, kept alive for the life of the process
_filtered: list[object] = []  # the machine code in front of it, where it is (``_native_filter``)
_tried = threading.Lock()
_outcome: list[str] = []  # "" installed, else why not (once per process)
# why the lines are filtered in Python, not by ``_native_filter`` ("": they are not)
_in_python: list[str] = []


def _text(avcl: int | None, fmt: bytes | None) -> str:
    """``"mjpeg: error count: <n>"``: the format string with its conversions named, not filled (the values are in
    the ``va_list``, which is not read), after the logging context's name (``AVClass.item_name``)."""
    what = _CONVERSION.sub(
        lambda m: b"%" if m.group(1) == b"%" else b"<s>" if m.group(1) == b"s" else b"<n>", fmt or b""
    )
    text = what.decode("utf-8", "replace").strip()
    name = ""
    try:
        cls = (
            ctypes.c_void_p.from_address(avcl).value if avcl else None
        )  # av_log's context: an AVClass * first
        fn = ctypes.c_void_p.from_address(cls + ctypes.sizeof(ctypes.c_void_p)).value if cls else None
        got = _ITEM_NAME(fn)(avcl) if fn else None  # AVClass: class_name, then item_name
        name = got.decode("ascii", "replace") if got else ""
    except (ValueError, OSError):
        name = ""
    text = "".join(c if c.isprintable() else "?" for c in text)[:_SHOWN]
    return f"{name}: {text}" if name else text


def _scaled_sizes(avcl: int | None) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The sizes a swscale context logging a line scales from and to, where its layout is public (``_sws_public``)
    and the context is swscale's (its class named ``SWScaler``) with sizes FFmpeg allows; else None."""
    if not (_sws_public[0] and avcl):
        return None
    try:
        cls = ctypes.c_void_p.from_address(avcl).value
        if not cls or ctypes.c_char_p.from_address(cls).value != b"SWScaler":
            return None
        sw, sh, dw, dh = (ctypes.c_int * 4).from_address(avcl + _SWS_SIZES_AT)
    except (ValueError, OSError):
        return None
    if not all(0 < v <= 65535 for v in (sw, sh, dw, dh)):
        return None
    return (sw, sh), (dw, dh)


def _decoder_size(avcl: int | None) -> tuple[int, int] | None:
    """The picture size of the decoder context logging a line (its ``video_size`` option, read through libavutil's
    option table: no layout of ours), where it reads and FFmpeg allows it; else None."""
    if not (_opt_image_size and avcl):
        return None
    w, h = ctypes.c_int(0), ctypes.c_int(0)
    try:
        if _opt_image_size[0](avcl, b"video_size", 0, ctypes.byref(w), ctypes.byref(h)) != 0:
            return None
    except (ValueError, OSError):
        return None
    return (w.value, h.value) if 0 < w.value <= 65535 and 0 < h.value <= 65535 else None


def _on_log(avcl: int | None, level: int, fmt: bytes | None, _args: int | None) -> None:
    if level > _AV_LOG_ERROR:
        if fmt in _NEW_PICTURE and (level <= _AV_LOG_VERBOSE or fmt == _GET_FORMAT_LINE):
            errors = _by_thread.get(threading.get_ident())
            if errors is not None:
                errors.pictures += 1
                if fmt == _SWS_LINE:
                    errors.picture = _scaled_sizes(avcl)
                else:
                    errors.picture = None
                    errors.decoded = _decoder_size(avcl)
        return
    if fmt in _NOT_DAMAGE:
        return
    try:
        errors = _by_thread.get(threading.get_ident(), _elsewhere)
        errors.count += 1
        errors.last = _text(avcl, fmt)
        if errors is _elsewhere:
            now = time.monotonic()
            if now - _said_elsewhere[0] >= 30.0:
                _said_elsewhere[0] = now
                log.warning("FFmpeg (on no camera's reader thread): %s", errors.last)
    except Exception:  # never raise into FFmpeg
        pass


def _libavutil() -> str | None:
    """The path of the libavutil OpenCV's FFmpeg reader uses (``_ffmpeg_library``)."""
    return _ffmpeg_library("libavutil")


def _ffmpeg_library(name: str) -> str | None:
    """The path of FFmpeg's library ``name`` that OpenCV's FFmpeg reader uses: the one loaded in this process
    (Linux), else the one bundled in OpenCV's wheel beside ``cv2`` (``opencv_python*.libs``, ``cv2/.dylibs``); None
    when there is not exactly one."""
    import cv2

    found: set[str] = set()
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rsplit(None, 1)[-1] if "/" in line else ""
                if Path(path).name.startswith(name):
                    found.add(path)
    except OSError:
        pass
    if not found:
        here = Path(cv2.__file__).resolve().parent
        for pattern in (f"../opencv*.libs/{name}*", f".dylibs/{name}*"):
            found.update(str(p) for p in here.glob(pattern))
    if len(found) > 1:  # another FFmpeg beside OpenCV's (PyAV's): keep the one in OpenCV's wheel, if one
        found = {p for p in found if "opencv" in p.lower() or "/cv2/" in p}
    return found.pop() if len(found) == 1 else None


def install() -> bool:
    """Install the callback (once per process; before OpenCV's first FFmpeg open, so that OpenCV's own setting
    does not replace it); False, said once, when it cannot be, FFmpeg's log then set quiet."""
    with _tried:
        if not _outcome:
            _outcome.append(_install())
            if _outcome[0]:
                log.warning(
                    "FFmpeg's decoder errors cannot be read (%s): a video file's or stream's frame that FFmpeg "
                    "reports damaged (and fills in) is not told from a whole one and may be judged; a file "
                    "that ends short of the frames it declares is still said (cut_short)",
                    _outcome[0],
                )
            elif _in_python[0]:
                log.log(
                    logging.WARNING if _in_python[0].startswith("executable memory") else logging.INFO,
                    "FFmpeg's log lines are filtered in Python (%s): each of a video decoder's lines takes the GIL "
                    "(an MJPEG frame logs some 30), and a capture with FFmpeg's frame threads dropped without "
                    "release() in this process can hang it",
                    _in_python[0],
                )
        return not _outcome[0]


def not_read() -> str:
    """Why FFmpeg's decoder errors are not read (said once, at ``install()``), "" when they are (or before
    ``install()``): a camera counts it where its state is shown."""
    return _outcome[0] if _outcome else ""


def filtered_in_python() -> str:
    """Why FFmpeg's lines below error level enter Python (said once, at ``install()``), "" when machine code
    returns on them or when no callback is installed: a camera shows it beside its state."""
    return _in_python[0] if _in_python else ""


def _install() -> str:
    own = [v for v in _OWN_LOG_VARS if v in os.environ]
    if own:
        return f"{' and '.join(own)} set: FFmpeg's own log is printed as asked"
    try:
        path = _libavutil()
        if path is None:
            raise OSError("no libavutil of OpenCV's found: its FFmpeg may be linked in statically")
        lib = ctypes.CDLL(path)
        callback = _CALLBACK(_on_log)
        lib.av_log_set_callback.argtypes = [_CALLBACK]
        lib.av_log_set_callback.restype = None
        # (libavutil 51 and later: every FFmpeg OpenCV builds with); looked up on its own, so that a libavutil
        # without it loses only the decoder's picture size (``decoded`` None: the timing rule), not FFmpeg's errors
        opt = getattr(lib, "av_opt_get_image_size", None)
        if opt is not None:
            opt.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
            opt.restype = ctypes.c_int
        native, why = _native_filter(callback)
        lib.av_log_set_callback(native or callback)
    except (OSError, AttributeError) as exc:
        os.environ["OPENCV_FFMPEG_LOGLEVEL"] = "-8"  # AV_LOG_QUIET: no raw line on the agent's stderr
        return f"{exc}; FFmpeg's log set quiet"
    _installed.append(callback)
    if opt is not None:
        _opt_image_size.append(opt)
    _in_python.append(why)
    _sws_public[0] = _swscale_public()
    if native is not None:
        _filtered.append(native)
    atexit.register(_put_back, lib)
    return ""


# x86-64 System V (the level in esi, the format string in rdx; rcx, the ``va_list``, untouched): endbr64 (a no-op but
# where indirect branch tracking asks for it); a line up to AV_LOG_VERBOSE jumps to the callback (jmp [rip+1], as if
# FFmpeg had called it); a line above it only when its format string is ``_GET_FORMAT_LINE`` (compared byte by byte
# up to its end, never read past the line's own end), else ret. Then the callback's address, then that string.
# Debug and trace lines (an MJPEG decoder's some 30 a frame) return here but a decoder's choice of a new picture's
# format (once at the open, then at a change); warnings, information and verbose lines (none a frame for the MJPEG
# and MPEG-4 streams measured: a stream's open, a new picture size) reach ``_on_log``, which keeps errors and
# ``_NEW_PICTURE``
_X86_64_FILTER = (
    bytes((0xF3, 0x0F, 0x1E, 0xFA))  # endbr64
    + bytes((0x83, 0xFE, _AV_LOG_VERBOSE, 0x7E, 0x24))  # cmp esi, AV_LOG_VERBOSE; jle call
    + bytes((0x48, 0x85, 0xD2, 0x74, 0x25))  # test rdx, rdx; jz ret
    + bytes((0x48, 0x8D, 0x05, 0x27, 0x00, 0x00, 0x00))  # lea rax, [rip+39] (the string)
    + bytes((0x45, 0x31, 0xD2))  # xor r10d, r10d
    + bytes((0x46, 0x0F, 0xB6, 0x1C, 0x10))  # loop: movzx r11d, byte [rax+r10]
    + bytes((0x46, 0x3A, 0x1C, 0x12, 0x75, 0x10))  # cmp r11b, byte [rdx+r10]; jne ret
    + bytes((0x45, 0x85, 0xDB, 0x74, 0x05))  # test r11d, r11d; jz call (both ended: the same string)
    + bytes((0x49, 0xFF, 0xC2, 0xEB, 0xEB))  # inc r10; jmp loop
    + bytes((0xFF, 0x25, 0x01, 0x00, 0x00, 0x00, 0xC3))  # call: jmp [rip+1]; ret
)


def _native_filter(callback: Any) -> tuple[Any, str]:
    """``callback`` behind machine code that returns on a line above ``AV_LOG_VERBOSE`` without taking the GIL (the
    first test ``_on_log`` makes), and ""; or None and why it is not made: not Linux on x86-64, or executable memory
    refused (SELinux ``execmem``, systemd's ``MemoryDenyWriteExecute=``, PaX): Python then filters. The page is
    mapped writable, filled, then made read-only and executable, and kept for the life of the process (FFmpeg's own
    callback is put back at exit)."""
    import platform
    import sys

    if sys.platform != "linux" or platform.machine() != "x86_64" or ctypes.sizeof(ctypes.c_void_p) != 8:
        # (a 32-bit Python on a 64-bit kernel says x86_64 too)
        bits = 8 * ctypes.sizeof(ctypes.c_void_p)
        return None, f"no machine-code filter for {sys.platform} {platform.machine()} ({bits}-bit Python)"
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_long,
        ]
        libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        page = 4096
        read, write, execute, private_anonymous = 1, 2, 4, 0x02 | 0x20
        at = libc.mmap(None, page, read | write, private_anonymous, -1, 0)
        if at in (None, ctypes.c_void_p(-1).value):
            return None, f"executable memory not made: mmap: {os.strerror(ctypes.get_errno())}"
        target = ctypes.cast(callback, ctypes.c_void_p).value or 0
        code = _X86_64_FILTER + target.to_bytes(8, "little") + _GET_FORMAT_LINE + b"\0"
        ctypes.memmove(at, code, len(code))
        if libc.mprotect(at, page, read | execute) != 0:
            errno = ctypes.get_errno()
            libc.munmap(ctypes.c_void_p(at), ctypes.c_size_t(page))
            return None, (
                f"executable memory refused: mprotect: {os.strerror(errno)} (SELinux execmem, systemd's "
                "MemoryDenyWriteExecute= or PaX)"
            )
    except (OSError, AttributeError) as exc:
        return None, f"executable memory not made: {exc}"
    return _CALLBACK(at), ""


def _swscale_public() -> bool:
    """Whether OpenCV's libswscale makes its context public in a layout checked (``_SWS_PUBLIC_MAJORS``) on a 64-bit
    build."""
    try:
        path = _ffmpeg_library("libswscale")
        version = ctypes.CDLL(path).swscale_version() if path else 0
    except (OSError, AttributeError):
        return False
    return version >> 16 in _SWS_PUBLIC_MAJORS and ctypes.sizeof(ctypes.c_void_p) == 8


def _put_back(lib: ctypes.CDLL) -> None:
    """At exit, before the interpreter's teardown frees the callback, FFmpeg's own callback put back, quiet: a
    capture the teardown releases logs as FFmpeg closes it, and that call into the freed callback was a
    segmentation fault."""
    lib.av_log_set_level(-8)  # AV_LOG_QUIET
    lib.av_log_set_callback(ctypes.cast(lib.av_log_default_callback, _CALLBACK))


@contextmanager
def watching() -> Iterator[DecoderErrors]:
    """FFmpeg's errors logged on this thread while in the block (none counted when the callback is not installed)."""
    errors = DecoderErrors()
    me = threading.get_ident()
    _by_thread[me] = errors
    try:
        yield errors
    finally:
        _by_thread.pop(me, None)
