"""An HTTP MJPEG camera's stream (``multipart/x-mixed-replace``, what IP cameras serve, or ``multipart/mixed``
as some firmware calls it) read part by part, so that the camera can check each part as the folder camera
checks a file: a part cut short is refused, not handed on with its missing half filled in (OpenCV's FFmpeg
reader does that silently), and no part can take more memory than an image under ``max_megapixels`` needs.

``open_stream`` sends the GET (HTTP/1.x through ``http.client``, Basic credentials from the URL) and gives
an ``MjpegStream`` when the answer is an MJPEG multipart stream, or None when the URL answers something else
(another content type, a redirect, a request for Digest credentials): the caller leaves those to OpenCV, as
before. A camera's certificate that does not verify (its own, self-signed) is not checked, as FFmpeg does not
check it, and the stream is read here all the same. ``MjpegStream.next_part`` returns the bytes of the next part; a
part longer than ``max_part_bytes`` (by its Content-Length, or bytes without a boundary) raises
``StreamError("oversize_frame")`` without being buffered further, and the caller drops the connection.

A URL that answers with one image (``Content-Type: image/...``, a camera's snapshot URL) gives a
``SnapshotStream`` instead: the same ``next_part``, each part a new GET, asked every ``poll_period_s``.

An answer without a Content-Type is told by its first bytes (a boundary, an image's signature); a body that
starts with another boundary than the declared one is read by its own. Line ends
between a part's header and its data are skipped. A part's Content-Length is read, but where it disagrees with the boundary (cameras whose firmware gets it
wrong) the boundary decides, as browsers read these streams (``MjpegStream._declared``).

Limits: reads run on the caller's thread with socket timeouts (a part must arrive within ``read_timeout_s``
of asking for it); ``interrupt()`` from another thread ends a blocked read. A part's Content-Type is not
checked: whatever the caller's decoder accepts is an image.
"""

from __future__ import annotations

import socket
import time
from typing import Any

__all__ = ["MjpegStream", "SnapshotStream", "StreamError", "http_hint", "looks_whole", "open_stream"]

_CHUNK = 256 * 1024
_MAX_LINE = 8 * 1024  # a part header line longer than this is not MJPEG
_MAX_HEADERS = 64
# what MJPEG cameras call their stream: the usual x-mixed-replace, and what some firmware sends instead (which
# FFmpeg also reads, but without refusing a part cut short)
_MULTIPART = frozenset({"multipart/x-mixed-replace", "multipart/mixed", "multipart/x-mixed"})


class StreamError(Exception):
    """Why the stream cannot be read (any more): ``reason`` is the camera's error key (``open_failed``,
    ``oversize_frame``, ``stream_lost``), ``detail`` the message after the URL."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def http_hint(code: int) -> str:
    if code == 404:
        return "check the path of the stream URL"
    if code in (401, 403):
        return "check the camera's user and password in the URL"
    return "check the camera"


def _request(
    u: Any, headers: dict[str, str], timeout_s: float, verify: bool = True
) -> tuple[Any, socket.socket, Any]:
    """One GET of the URL (split): ``(connection, socket, response)``. The socket is kept because
    http.client lets go of it once the answer is read (HTTP/1.0, close); an ``OSError`` raised before the
    connection stands carries ``connected = False``. ``verify=False``: the camera's certificate is not
    checked (as FFmpeg reads HTTPS)."""
    import http.client

    https = u.scheme.lower() == "https"
    host, port = u.hostname or "", u.port or (443 if https else 80)
    if https:
        import ssl

        context = ssl.create_default_context()
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    conn: Any = (
        http.client.HTTPSConnection(host, port, timeout=timeout_s, context=context)
        if https
        else http.client.HTTPConnection(host, port, timeout=timeout_s)
    )
    target = (u.path or "/") + (f"?{u.query}" if u.query else "")
    try:
        try:
            conn.connect()
        except OSError as exc:
            exc.connected = False  # type: ignore[attr-defined]
            raise
        sock = conn.sock
        conn.request("GET", target, headers=headers)
        return conn, sock, conn.getresponse()
    except BaseException:
        conn.close()
        raise


def open_stream(
    url: str, open_timeout_s: float, read_timeout_s: float, max_part_bytes: int, poll_period_s: float = 0.1
) -> MjpegStream | SnapshotStream | None:
    """The camera's MJPEG stream, or its snapshot URL (each GET answered with one image) asked every
    ``poll_period_s``; None when the URL serves something else (OpenCV's to read), or
    ``StreamError("open_failed")`` naming why it cannot be read at all."""
    import base64
    import http.client
    import ssl
    import urllib.parse

    u = urllib.parse.urlsplit(url)
    https = u.scheme.lower() == "https"
    host, port = u.hostname or "", u.port or (443 if https else 80)
    headers = {"Accept": "multipart/x-mixed-replace, */*", "Connection": "close"}
    if u.username is not None:
        user = urllib.parse.unquote(u.username)
        password = urllib.parse.unquote(u.password or "")
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    verify = True
    try:
        try:
            conn, sock, resp = _request(u, headers, open_timeout_s)
        except ssl.SSLCertVerificationError:
            # a camera's own (self-signed) certificate: read unchecked as FFmpeg reads it (it does not verify
            # certificates), but part by part, so that a part cut short is refused here too
            verify = False
            conn, sock, resp = _request(u, headers, open_timeout_s, verify=False)
    except http.client.LineTooLong:
        raise StreamError(
            "open_failed",
            f"the camera's answer has a status or header line over {getattr(http.client, '_MAXLINE', 65536)} "
            "bytes; no camera sends that, check the URL and what answers on that port",
        ) from None
    except http.client.HTTPException as exc:
        if "headers" in str(exc):  # more than http.client's 100 header lines: as above, not left to FFmpeg
            raise StreamError(
                "open_failed",
                f"the camera's answer has over {getattr(http.client, '_MAXHEADERS', 100)} header lines; no "
                "camera sends that, check the URL and what answers on that port",
            ) from None
        return None  # not HTTP as http.client speaks it: FFmpeg may still read it, or say why not
    except OSError as exc:
        if getattr(exc, "connected", True) and isinstance(exc, TimeoutError):  # a hung camera, not a cable
            raise StreamError(
                "open_failed",
                f"{host}:{port} accepts the connection but sends no answer within {open_timeout_s:g}s "
                "(open_timeout_s); is the camera hung or busy, and is this its HTTP port?",
            ) from None
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise StreamError(
            "open_failed", f"cannot reach {host}:{port} ({reason}); is the camera on and the address right?"
        ) from None
    ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if resp.status == 200 and not ctype:
        ctype = _sniff(resp)
    if resp.status == 200 and ctype in _MULTIPART:
        boundary = resp.headers.get_param("boundary")
        return MjpegStream(
            resp, sock, boundary if isinstance(boundary, str) else None, read_timeout_s, max_part_bytes
        )
    if resp.status == 200 and ctype.startswith("image/"):
        snap = SnapshotStream(
            u, headers, open_timeout_s, read_timeout_s, max_part_bytes, poll_period_s, verify
        )
        snap._pending = (conn, sock, resp)  # this answer is the first image
        return snap
    resp.close()
    conn.close()
    challenge = resp.headers.get("WWW-Authenticate", "").strip().lower()
    if resp.status == 401 and u.username is not None and (not challenge or challenge.startswith("basic")):
        # our Basic login refused: FFmpeg would send the same one again (and the diagnosis once more), and
        # cameras lock an account after a few failed logins
        raise StreamError(
            "open_failed",
            f"the camera answers HTTP 401 {resp.reason} to the user and password in the URL; "
            f"{http_hint(401)}",
        )
    if resp.status >= 400 and not (resp.status in (401, 407) and u.username is not None):
        raise StreamError(
            "open_failed", f"the camera answers HTTP {resp.status} {resp.reason}; {http_hint(resp.status)}"
        )
    return None  # another content type, a redirect, another kind of credentials: FFmpeg's to read


def _sniff(resp: Any) -> str:
    """The content type of an answer that names none (some cameras' firmware), from its first bytes: a
    multipart stream starts with its boundary ``--...``, an image with its signature; "" otherwise (and
    when nothing comes within the open timeout), left to FFmpeg as before."""
    try:
        head = resp.peek(64)[:64].lstrip(b"\r\n")
    except (OSError, ValueError):
        return ""
    if head.startswith(b"--"):
        return "multipart/x-mixed-replace"
    if head.startswith((b"\xff\xd8\xff", b"\x89PNG")):
        return "image/unnamed"
    return ""


class SnapshotStream:
    """A camera whose URL answers each GET with one image (``Content-Type: image/...``: ``/snapshot.jpg``,
    a Mono12 camera's ``/image.png``): asked again every ``poll_period_s`` (from the start of one request to
    the next), each answer a part. An answer longer than ``max_part_bytes`` (by its Content-Length or its
    bytes) is ``StreamError("oversize_frame")``; one not complete within ``read_timeout_s`` is
    ``TimeoutError``; another HTTP status on a later request is ``StreamError("stream_lost")``."""

    paced = True  # the caller takes every part: the pacing is here, not by skipping parts

    def __init__(
        self,
        u: Any,
        headers: dict[str, str],
        open_timeout_s: float,
        read_timeout_s: float,
        max_part_bytes: int,
        poll_period_s: float,
        verify: bool = True,
    ) -> None:
        import threading

        self._u, self._headers, self._verify = u, headers, verify
        self._open_timeout_s, self._timeout_s = open_timeout_s, read_timeout_s
        self._cap, self._period = max_part_bytes, poll_period_s
        self._pending: tuple[Any, socket.socket, Any] | None = None
        self._sock: socket.socket | None = None
        self._next_t = time.monotonic() + poll_period_s
        self._stopped = threading.Event()

    def close(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            conn, sock, resp = pending
            resp.close()
            conn.close()
            sock.close()

    def interrupt(self) -> None:
        """From another thread: a wait for the next request, or a blocked read, ends at once."""
        self._stopped.set()
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def next_part(self) -> bytes:
        import http.client

        if self._pending is None:
            if self._stopped.wait(max(0.0, self._next_t - time.monotonic())):
                raise EOFError("stopped")
            self._next_t = time.monotonic() + self._period
            try:
                self._pending = _request(self._u, self._headers, self._open_timeout_s, self._verify)
            except http.client.HTTPException as exc:
                raise EOFError(f"the camera's answer broke off ({type(exc).__name__})") from None
        conn, sock, resp = self._pending
        self._sock = sock
        try:
            if resp.status != 200:
                raise StreamError(
                    "stream_lost",
                    f"the camera answers HTTP {resp.status} {resp.reason} to a snapshot request; "
                    f"{http_hint(resp.status)}",
                )
            return self._body(resp, sock)
        finally:
            self.close()
            self._sock = None

    def _body(self, resp: Any, sock: socket.socket) -> bytes:
        import http.client

        declared = resp.length  # None without Content-Length
        if declared is not None and declared > self._cap:
            raise StreamError(
                "oversize_frame",
                f"an image of {declared} bytes (its Content-Length), over the {self._cap} bytes an image "
                "under max_megapixels can need; not read",
            )
        deadline = time.monotonic() + self._timeout_s
        buf = bytearray()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no whole image within read_timeout_s")
            sock.settimeout(left)  # a trickle cannot hold a read past the deadline
            try:
                chunk = resp.read1(_CHUNK)
            except http.client.HTTPException:
                break  # cut short: what came is decoded, and refused as truncated
            if not chunk:
                if self._stopped.is_set():  # interrupt() ended the read: not a cut-short image
                    raise EOFError("stopped")
                return bytes(buf)
            buf += chunk
            if len(buf) > self._cap:
                raise StreamError(
                    "oversize_frame",
                    f"an image over {self._cap} bytes, more than an image under max_megapixels can need; "
                    "dropped the connection",
                )
        return bytes(buf)


def looks_whole(data: bytes) -> bool:
    """A part that is plainly cut short (a JPEG without its end marker, a PNG without IEND) is told from a
    whole one without decoding it; other kinds are taken as whole."""
    if data[:2] == b"\xff\xd8":
        return data.rstrip(b"\r\n\x00 ").endswith(b"\xff\xd9")
    if data[:4] == b"\x89PNG":
        return data.rstrip(b"\r\n\x00 ").endswith(b"IEND\xaeB`\x82")
    return True


class MjpegStream:
    """The parts of one open multipart stream, in order (see the module's docstring)."""

    def __init__(
        self, resp: Any, sock: socket.socket, boundary: str | None, read_timeout_s: float, max_part_bytes: int
    ) -> None:
        import http.client

        self._resp, self._sock = resp, sock
        self._bad_http = http.client.HTTPException  # a chunked answer cut short, say: the stream's end
        self._timeout_s = read_timeout_s
        self._cap = max_part_bytes
        self._buf = bytearray()
        self._deadline = 0.0
        self._delim: bytes | None = None
        self._declared_boundary = b""
        if boundary:  # some cameras give the boundary with its leading dashes, most without
            b = self._declared_boundary = boundary.encode("latin-1")
            self._delim = b if b.startswith(b"--") else b"--" + b

    def close(self) -> None:
        try:
            self._resp.close()
        finally:
            self._sock.close()

    def interrupt(self) -> None:
        """From another thread: a blocked read ends at once (``OSError`` or end of stream)."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def next_part(self) -> bytes:
        """The next part's bytes; ``StreamError`` (oversize_frame, stream_lost), ``TimeoutError`` when no
        part arrives within ``read_timeout_s``, ``EOFError`` when the camera closes the stream."""
        self._deadline = time.monotonic() + self._timeout_s
        if self._delim is None:  # no boundary declared: the first line that looks like one is it
            line = b""
            while not line.startswith(b"--"):
                line = self._line().strip()
                if line and not line.startswith(b"--"):
                    raise StreamError(
                        "stream_lost",
                        "the camera declares a multipart stream without a boundary and its body does "
                        "not start with one; check that the URL is an MJPEG stream",
                    )
            self._delim = line
        else:
            if self._declared_boundary:
                self._body_boundary()
            self._skip_to_delimiter()
            if self._line().strip() == b"--":
                raise EOFError("the camera ended the stream (closing boundary)")
        length = None
        for _ in range(_MAX_HEADERS):
            line = self._line()
            if not line.strip():
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    length = None  # read to the boundary instead
        else:
            raise StreamError("stream_lost", f"a part with over {_MAX_HEADERS} header lines; not MJPEG")
        self._skip_blank_lines()
        if length is not None and length >= 0:
            if length > self._cap:
                raise StreamError(
                    "oversize_frame",
                    f"a part of {length} bytes (its Content-Length), over the {self._cap} bytes an image "
                    "under max_megapixels can need; dropped the connection",
                )
            return self._declared(length)
        return self._to_delimiter()

    def _declared(self, n: int) -> bytes:
        """A part of Content-Length ``n``, the boundary deciding where it ends when the two disagree, as a
        browser reads it: a camera whose Content-Length is too long would have the next part's boundary
        and start swallowed (that part lost, uncounted), one whose Content-Length is too short would have
        every part cut (each corrupt_frame, the camera unusable)."""
        assert self._delim is not None
        while len(self._buf) < n:
            self._fill()
        data = bytes(self._buf[:n])
        if data and looks_whole(data):  # as declared (a whole image: its bytes are not searched)
            del self._buf[:n]
            return data
        i = self._buf.find(self._delim, 0, n + len(self._delim))
        if i >= 0:  # too long: the next part's boundary is inside
            data = bytes(self._buf[:i])
            del self._buf[:i]
            return data[:-2] if data.endswith(b"\r\n") else data[:-1] if data.endswith(b"\n") else data
        del self._buf[:n]
        return data + self._to_delimiter(self._cap - n)  # too short: the rest is up to the boundary

    def _body_boundary(self) -> None:
        """Once, before the first part: the boundary the body starts with, where it is not the one the
        Content-Type declares (firmware that declares one string and writes another; FFmpeg reads these
        streams by the body's, and so does this). A body that starts with other text (a preamble) is read
        by the declared one."""
        declared, self._declared_boundary = self._declared_boundary, b""
        while True:
            head = self._buf.lstrip(b"\r\n")
            end = head.find(b"\n")
            if end >= 0:
                break
            if len(self._buf) > _MAX_LINE:
                return
            self._fill()
        line = bytes(head[:end]).strip()
        assert self._delim is not None
        if self._delim not in line and (line.startswith(b"--") or line == declared):
            self._delim = line

    def _skip_blank_lines(self) -> None:
        """Line ends between a part's header and its data (some firmware sends a second blank line): no
        image starts with one, and an image read from them on would be refused, every part."""
        while True:
            while self._buf[:1] in (b"\r", b"\n"):
                del self._buf[:1]
            if self._buf:
                return
            self._fill()

    # ---- buffer --------------------------------------------------------------------------------
    def _fill(self) -> None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no part within read_timeout_s")
        self._sock.settimeout(min(left, self._timeout_s))  # a trickle cannot hold a read past the deadline
        try:
            chunk = self._resp.read1(_CHUNK)
        except self._bad_http as exc:
            raise EOFError(f"the camera's answer broke off ({type(exc).__name__})") from None
        if not chunk:
            raise EOFError("the camera closed the stream")
        self._buf += chunk

    def _line(self) -> bytes:
        while True:
            i = self._buf.find(b"\n")
            if i >= 0:
                line = bytes(self._buf[: i + 1])
                del self._buf[: i + 1]
                return line
            if len(self._buf) > _MAX_LINE:
                raise StreamError("stream_lost", f"a part header line over {_MAX_LINE} bytes; not MJPEG")
            self._fill()

    def _exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._fill()
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def _skip_to_delimiter(self) -> None:
        """Past the next boundary (the line end after a part, or anything a camera puts between parts)."""
        assert self._delim is not None
        keep = len(self._delim) - 1
        skipped = 0
        while True:
            i = self._buf.find(self._delim)
            if i >= 0:
                del self._buf[: i + len(self._delim)]
                return
            n = len(self._buf) - keep
            if n > 0:
                skipped += n
                del self._buf[:n]
            if skipped > self._cap:
                raise StreamError(
                    "oversize_frame",
                    f"over {self._cap} bytes without a part boundary, more than an image under "
                    "max_megapixels can need; dropped the connection",
                )
            self._fill()

    def _to_delimiter(self, limit: int | None = None) -> bytes:
        """A part without Content-Length: its bytes up to the next boundary (left for the next part), at
        most ``limit`` of them (default: the part's cap)."""
        assert self._delim is not None
        limit = self._cap if limit is None else limit
        start = 0
        while True:
            i = self._buf.find(self._delim, start)
            if i >= 0:
                data = bytes(self._buf[:i])
                del self._buf[:i]
                return data[:-2] if data.endswith(b"\r\n") else data[:-1] if data.endswith(b"\n") else data
            if len(self._buf) > limit + len(self._delim) + 2:
                raise StreamError(
                    "oversize_frame",
                    f"a part over {self._cap} bytes without a boundary, more than an image under "
                    "max_megapixels can need; dropped the connection",
                )
            start = max(0, len(self._buf) - len(self._delim) + 1)
            self._fill()
