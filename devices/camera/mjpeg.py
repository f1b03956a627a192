"""An HTTP MJPEG camera's stream (``multipart/x-mixed-replace``, what IP cameras serve, or ``multipart/mixed``
as some firmware calls it) read part by part, so that the camera can check each part as the folder camera
checks a file: a part cut short is refused, not handed on with its missing half filled in (OpenCV's FFmpeg
reader does that silently), and no part can take more memory than an image under ``max_megapixels`` needs.

``open_stream`` sends the GET (HTTP/1.x through ``http.client``) and gives an ``MjpegStream`` when the
answer is an MJPEG multipart stream, or None when an http URL answers something else (another content type):
the caller leaves those to OpenCV; but an answer of 200 whose body is text (a web page, an API's JSON) is
``StreamError("open_failed")`` quoting it (``_text_answer``), never read by FFmpeg as a video. The URL's login is answered as the camera asks (Basic, or Digest: MD5 or
SHA-256; ``devices.camera.access.Login``), at most three requests per open; a login refused is
``StreamError("open_failed")``, never handed to FFmpeg to try again. An https camera is read only when its
certificate is trusted (``access.Trust``: ``tls_ca_file``, ``tls_fingerprint_sha256``, else the system's
CAs), checked before anything is sent, and never left to FFmpeg, which does not check certificates. A
redirect is followed (3 at most) to the same host; with a login in the URL, one to another host is refused,
as is one from https to http. One to another host without a login is followed, and the stream's ``redirected_to``
names where (its URL, login masked) for the caller to say; None when the frames come from the URL's host.
``MjpegStream.next_part`` returns the bytes of the next part; a part longer than ``max_part_bytes`` (by its
Content-Length, or bytes without a boundary) raises ``StreamError("oversize_frame")`` without being buffered
further, and the caller drops the connection; so does one longer than the image its own header declares can need,
and one over 256 KB with no image header in them (``_image_bound``).

A URL that answers with one image (``Content-Type: image/...``, a camera's snapshot URL) gives a
``SnapshotStream`` instead: the same ``next_part``, each part a new GET, asked every ``poll_period_s``; a whole
JPEG or PNG is the answer as soon as it has come, whatever its Content-Length says.

An answer without a Content-Type is told by its first bytes (a boundary, an image's signature); a body that
starts with another boundary than the declared one is read by its own. Line ends
between a part's header and its data are skipped. A part's Content-Length is read, but where it disagrees with the boundary (cameras whose firmware gets it
wrong) the boundary decides, as browsers read these streams (``MjpegStream._declared``): a whole image that
has come before the bytes its Content-Length declares, ended by its end marker or a boundary, is the part.

Limits: reads run on the caller's thread with socket timeouts (a part must arrive within ``read_timeout_s``
of asking for it); ``interrupt()`` from another thread ends a blocked read. A part's Content-Type is not
checked: whatever the caller's decoder accepts is an image.
"""

from __future__ import annotations

import io
import socket
import time
from typing import Any

from devices.camera.access import HandshakeTimeout, Login, PinMismatch, Trust
from protocols.image_complete import ChainWalked, cut_short
from protocols.image_header import FORMATS, image_kind, image_size

__all__ = ["MjpegStream", "SnapshotStream", "StreamError", "http_hint", "looks_whole", "open_stream"]

_CHUNK = 256 * 1024
_MAX_LINE = 8 * 1024  # a part header line longer than this is not MJPEG
_MAX_HEADERS = 64
# a long part's image header (the size it declares) is looked for in its first this many bytes; a part whose image
# it gives can hold at most what an image of that size needs (8 bytes a pixel + 1 MB, as ``max_file_bytes``)
_HEAD_BYTES = 256 * 1024
# what an image's bound allows for its headers and metadata (``max_file_bytes``): a JPEG whose frame header is not
# in its first ``_HEAD_BYTES`` is looked for again once the part holds this much more
_META_BYTES = 2**20
_CAPPED = "more than an image under max_megapixels can need"
# a TIFF directory of 1,024 tags (the most the header readers take), a BigTIFF's: count, entries, next offset
_TIFF_DIRECTORY_BYTES = 8 + 1024 * 20 + 8
# what ends a JPEG and a PNG (IEND and its CRC): a part ending so may be whole before its Content-Length says
_END_MARKERS = (b"\xff\xd9", b"IEND\xaeB`\x82")
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


class _Until(io.RawIOBase):
    """A socket's reads, each bounded by what is left until ``deadline`` (monotonic; None: the socket's own
    timeout): http.client reads an answer's status line and headers with the socket's timeout on each read,
    so a camera that dribbles them (a byte, a header line, every few seconds: a hung web server, a busy
    one) held a request for as long as it went on, and a snapshot camera that hung so was never reported
    nor reopened. ``TimeoutError`` once the deadline has passed."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)  # socket.SocketIO: the socket's own reference counting
        self.deadline: float | None = None
        self.why = "the camera's answer did not come whole within open_timeout_s"

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int | None:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(self.why)
            self._sock.settimeout(left)
        return self._raw.readinto(b)

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


def _bound(resp: Any, deadline: float) -> None:
    """Every socket read of ``resp`` until ``deadline``, not only the first: one ``read1`` of a chunked
    answer reads the chunk's size line with as many reads as it takes (a byte each, from a camera that
    dribbles it), each given the socket's whole timeout, so a stream that sent its chunk sizes a byte at
    a time held the reader for as long as it went on."""
    raw = getattr(getattr(resp, "fp", None), "raw", None)
    if isinstance(raw, _Until):
        raw.deadline, raw.why = deadline, "no whole part within read_timeout_s"


def _bounded_answers(deadline: float) -> Any:
    """A ``response_class`` for ``http.client``: its response reads through ``_Until`` (``fp.raw``), bounded
    by ``deadline`` until the caller lifts it."""
    import http.client

    def answer(sock: socket.socket, *args: Any, **kw: Any) -> http.client.HTTPResponse:
        class _Sock:  # all HTTPResponse asks of a socket: its file
            @staticmethod
            def makefile(mode: str) -> io.BufferedReader:
                until = _Until(sock)
                until.deadline = deadline
                return io.BufferedReader(until)

        return http.client.HTTPResponse(_Sock(), *args, **kw)  # type: ignore[arg-type]

    return answer


def _request(
    u: Any, headers: dict[str, str], timeout_s: float, trust: Trust | None = None
) -> tuple[Any, socket.socket, Any]:
    """One GET of the URL (split): ``(connection, socket, response)``. The socket is kept because
    http.client lets go of it once the answer is read (HTTP/1.0, close); an ``OSError`` raised before the
    connection stands carries ``connected = False``. An https camera's certificate is checked by ``trust``
    (``devices.camera.access``) before the request is sent: ``ssl.SSLCertVerificationError`` or
    ``PinMismatch`` when it is not trusted. The TLS handshake (``HandshakeTimeout``) and then the answer's
    status line and headers must have come within ``timeout_s`` of the start (``_Until``), not merely each
    read within it; ``TimeoutError`` otherwise."""
    import http.client

    https = u.scheme.lower() == "https"
    host, port = u.hostname or "", u.port or (443 if https else 80)
    trust = trust or Trust()
    if https:
        try:
            context = trust.context()
        except (OSError, ValueError) as exc:
            raise StreamError(
                "open_failed",
                f"tls_ca_file {trust.ca_file} cannot be read as PEM certificates ({exc}); give the file of the "
                "CA that signed the camera's certificate (or of that certificate) in PEM form",
            ) from None
    conn: Any = (
        http.client.HTTPSConnection(host, port, timeout=timeout_s, context=context)
        if https
        else http.client.HTTPConnection(host, port, timeout=timeout_s)
    )
    deadline = time.monotonic() + timeout_s
    conn.response_class = _bounded_answers(deadline)
    try:
        try:
            http.client.HTTPConnection.connect(conn)  # TCP only: the handshake is below, on what is left
        except OSError as exc:
            exc.connected = False  # type: ignore[attr-defined]
            raise
        if https:
            _handshake(conn, context, host, deadline)
        sock = conn.sock
        if https:
            trust.check(sock)  # nothing sent yet: a camera that is not the pinned one never sees the login
        conn.request("GET", _target(u), headers=headers)
        resp = conn.getresponse()
        raw = getattr(resp.fp, "raw", None)
        if isinstance(raw, _Until):  # the head came in time: the body's reads set their own bounds
            raw.deadline = None
        sock.settimeout(timeout_s)
        return conn, sock, resp
    except BaseException:
        conn.close()
        raise


def _handshake(conn: Any, context: Any, host: str, deadline: float) -> None:
    """The TLS handshake on ``conn``'s connected socket, within what is left until ``deadline`` (the
    connection, the handshake and the answer's head share ``open_timeout_s``; the handshake was given a
    whole ``open_timeout_s`` of its own after the connection); ``HandshakeTimeout`` when it does not end
    by then (a hung camera, or a device that dribbles its handshake)."""
    left = deadline - time.monotonic()
    try:
        if left <= 0:
            raise TimeoutError("no time left for the handshake")
        conn.sock.settimeout(left)
        conn.sock = context.wrap_socket(conn.sock, server_hostname=host)
    except TimeoutError as exc:
        conn.sock.close()
        raise HandshakeTimeout(str(exc)) from None


def _target(u: Any) -> str:
    return (u.path or "/") + (f"?{u.query}" if u.query else "")


def _exchange(
    u: Any, login: Login | None, trust: Trust | None, timeout_s: float
) -> tuple[Any, socket.socket, Any]:
    """One GET, with the login answered as the camera asks (``Login``): at most three requests (the first,
    the answer to the camera's challenge, one renewed stale Digest nonce), so a camera that answers 401 to
    everything costs one failed login per attempt, never a loop. The last answer is returned, a final 401
    with ``login.refused`` saying why."""
    for attempt in range(3):
        headers = {"Accept": "multipart/x-mixed-replace, */*", "Connection": "close"}
        auth = login.authorization(_target(u)) if login is not None else None
        if auth is not None:
            headers["Authorization"] = auth
        conn, sock, resp = _request(u, headers, timeout_s, trust)
        if resp.status != 401 and login is not None:
            login.accepted()
        if resp.status != 401 or login is None or not login.answer(resp.headers):
            return conn, sock, resp
        if attempt == 2:
            login.refused = "asks for a login three times in a row (a new nonce each time, called stale)"
            return conn, sock, resp
        resp.close()
        conn.close()
        sock.close()
    raise AssertionError("unreachable")


def open_stream(
    url: str,
    open_timeout_s: float,
    read_timeout_s: float,
    max_part_bytes: int,
    poll_period_s: float = 0.1,
    trust: Trust | None = None,
) -> MjpegStream | SnapshotStream | None:
    """The camera's MJPEG stream, or its snapshot URL (each GET answered with one image) asked every
    ``poll_period_s``; None when an http URL serves something else (OpenCV's to read), or
    ``StreamError("open_failed")`` naming why it cannot be read at all. An https URL is never left to
    OpenCV's FFmpeg, which does not check certificates (``trust``: how this camera's is checked)."""
    import http.client
    import ssl
    import urllib.parse

    u = urllib.parse.urlsplit(url)
    trust = trust or Trust()
    login = None
    if u.username is not None:
        login = Login(
            urllib.parse.unquote(u.username),
            urllib.parse.unquote(u.password or ""),
            preemptive_basic=u.scheme.lower() == "https",  # a checked channel; over http: the camera asks
        )
    hops = 0
    asked = u
    try:
        while True:
            https = u.scheme.lower() == "https"
            host, port = u.hostname or "", u.port or (443 if https else 80)
            conn, sock, resp = _exchange(u, login, trust, open_timeout_s)
            location = resp.headers.get("Location")
            if resp.status not in (301, 302, 303, 307, 308) or not location:
                break
            resp.close()
            conn.close()
            sock.close()
            u = _redirected(u, location, login is not None, hops)
            hops += 1
    except (ssl.SSLCertVerificationError, PinMismatch) as exc:
        raise StreamError("open_failed", trust.refusal(exc, host, port, open_timeout_s)) from None
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
        # not HTTP as http.client speaks it: FFmpeg may still read it, or say why not
        _to_ffmpeg(u, "an answer that is not HTTP as this reader reads it")
        return None
    except OSError as exc:
        if isinstance(exc, HandshakeTimeout):  # it accepts, but TLS does not come (hung, or dribbling)
            raise StreamError(
                "open_failed",
                f"{host}:{port} accepts the connection but its TLS handshake does not complete within "
                f"{open_timeout_s:g}s (open_timeout_s); is the camera hung or busy, and is this its https port?",
            ) from None
        if getattr(exc, "connected", True) and isinstance(exc, TimeoutError):  # a hung camera, not a cable
            raise StreamError(
                "open_failed",
                f"{host}:{port} accepts the connection but sends no answer within {open_timeout_s:g}s "
                "(open_timeout_s); is the camera hung or busy, and is this its HTTP port?",
            ) from None
        if isinstance(exc, ssl.SSLError):  # it answers, but not with TLS this gateway speaks
            raise StreamError(
                "open_failed",
                f"{host}:{port} answers but the TLS handshake fails ({exc.reason or exc}); is this the camera's "
                "https port (not its http one)? A camera offering only TLS 1.0/1.1 or weak keys needs newer "
                "firmware",
            ) from None
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise StreamError(
            "open_failed", f"cannot reach {host}:{port} ({reason}); is the camera on and the address right?"
        ) from None
    ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
    try:
        if resp.status == 200 and not ctype:
            ctype = _sniff(resp)
        said = _text_answer(resp, ctype) if resp.status == 200 else None
    except StreamError:  # (its first chunk's size line over http.client's limit)
        resp.close()
        conn.close()
        raise
    if said is not None:
        resp.close()
        conn.close()
        raise StreamError(
            "open_failed",
            f"the camera answers HTTP 200 with {ctype or 'no content type'}, not an image or an MJPEG stream: "
            f"it reads as text: {said}; check that the URL is the camera's stream or snapshot URL (not a web "
            "page or an API's), and whether the camera is busy or asks to log in",
        )
    moved = None  # frames from another host than the URL's: said by the caller, not followed silently
    if (u.hostname or "").lower() != (asked.hostname or "").lower():
        from protocols.redact import mask_credentials

        moved = mask_credentials(urllib.parse.urlunsplit(u))
    if resp.status == 200 and ctype in _MULTIPART:
        boundary = resp.headers.get_param("boundary")
        stream = MjpegStream(
            resp, sock, boundary if isinstance(boundary, str) else None, read_timeout_s, max_part_bytes
        )
        stream.redirected_to = moved
        return stream
    if resp.status == 200 and ctype.startswith("image/"):
        snap = SnapshotStream(u, login, trust, open_timeout_s, read_timeout_s, max_part_bytes, poll_period_s)
        snap._pending = (conn, sock, resp)  # this answer is the first image
        snap.redirected_to = moved
        return snap
    resp.close()
    conn.close()
    if resp.status == 401 and login is not None:
        # the login refused, or one this reader cannot give: FFmpeg would send it again (and the diagnosis
        # once more), and cameras lock an account after a few failed logins
        sent = (
            f" ({login.shown}); {http_hint(401)}" if login.scheme is not None and login.blames_login else ""
        )
        raise StreamError(
            "open_failed", f"the camera answers HTTP 401 {resp.reason}: it {login.refused}{sent}"
        )
    if resp.status >= 400 and not (resp.status == 407 and u.username is not None):
        raise StreamError(
            "open_failed", f"the camera answers HTTP {resp.status} {resp.reason}; {http_hint(resp.status)}"
        )
    _to_ffmpeg(u, f"HTTP {resp.status}, {ctype or 'no content type'}")
    return None


def _redirected(u: Any, location: str, with_login: bool, hops: int) -> Any:
    """Where a redirect leads (split), or ``StreamError``: more than 3 hops, another scheme than http(s),
    https to plain http, or, with the URL's login, another host (the login is never sent there: the
    redirect may come from a device posing as the camera, or lead to a site that collects logins)."""
    import urllib.parse

    from protocols.redact import mask_credentials

    here = urllib.parse.urlunsplit(u._replace(netloc=u.netloc.rpartition("@")[2]))
    to = urllib.parse.urlsplit(urllib.parse.urljoin(here, location.strip()))
    shown = mask_credentials(urllib.parse.urlunsplit(to))
    if hops >= 3:
        why = "more than 3 redirects in a row"
    elif to.scheme.lower() not in ("http", "https"):
        why = f"a redirect to {shown}, which is not http(s)"
    elif u.scheme.lower() == "https" and to.scheme.lower() == "http":
        why = f"a redirect from https to plain http ({shown}), where the frames are not protected"
    elif with_login and (to.hostname or "").lower() != (u.hostname or "").lower():
        why = (
            f"a redirect to another host ({shown}); the login in the URL is not sent to another host. If that "
            "is the camera's stream, put that URL (with the login) in url"
        )
    else:
        return to
    raise StreamError("open_failed", f"the camera answers with {why}")


def _to_ffmpeg(u: Any, what: str) -> None:
    """None (an http URL is OpenCV's FFmpeg's to read), or for https ``StreamError``: FFmpeg would read it
    without checking the camera's certificate, the login included."""
    if u.scheme.lower() != "https":
        return None
    raise StreamError(
        "open_failed",
        f"the camera serves {what}, not an MJPEG stream or a single image; over https only those are read "
        "(OpenCV's FFmpeg, which reads other streams, does not check the camera's certificate): use the "
        "camera's MJPEG or snapshot URL, or its rtsp:// URL",
    )


def _sniff(resp: Any) -> str:
    """The content type of an answer that names none (some cameras' firmware), from its first bytes: a
    multipart stream starts with its boundary ``--...``, an image with its signature; "" otherwise (and
    when nothing comes within the open timeout), left to FFmpeg as before."""
    head = _peek(resp, 64).lstrip(b"\r\n")
    if head.startswith(b"--"):
        return "multipart/x-mixed-replace"
    if head.startswith((b"\xff\xd8\xff", b"\x89PNG")):
        return "image/unnamed"
    return ""


def _peek(resp: Any, n: int) -> bytes:
    """Up to ``n`` of an answer's first bytes, left to be read (b"" when none come within the open timeout, or
    the answer breaks off: its reading says so). A chunked answer whose first chunk-size line is over
    http.client's limit is ``open_failed``, as a header line over it is (it raised LineTooLong out of the
    camera's open)."""
    import http.client

    try:
        return bytes(resp.peek(n)[:n])
    except http.client.LineTooLong:
        raise StreamError(
            "open_failed",
            f"the camera's chunked answer has a chunk-size line over {getattr(http.client, '_MAXLINE', 65536)} "
            "bytes; no camera sends that, check the URL and what answers on that port",
        ) from None
    except (OSError, ValueError, http.client.HTTPException):
        return b""


# an answer's content types that may be text FFmpeg reads (a playlist or manifest naming the video's segments)
_STREAM_TEXTS = frozenset(
    {"application/vnd.apple.mpegurl", "application/x-mpegurl", "audio/mpegurl", "audio/x-mpegurl"}
    | {"application/dash+xml", "application/sdp"}
)
_TEXT_QUOTED = 120  # characters of a text answer quoted in its open_failed


def _text_answer(resp: Any, ctype: str) -> str | None:
    """The start of an answer that is neither an MJPEG stream nor an image but text, quoted (escaped: its line
    ends cannot forge a log line), or None. A camera's web page or an API's JSON (a login page, "busy", a wrong
    path of the camera's web server answered 200) was handed to OpenCV's FFmpeg, which read it as a video:
    ``corrupt_frame`` at every read and a ``stream_lost`` after every ten, never saying what the camera sent,
    and FFmpeg's own lines on the agent's standard error. A playlist FFmpeg reads (HLS's ``#EXTM3U``, a DASH or
    SDP description) is left to it, as is a multipart stream under another content type (its part headers are
    text: ``--boundary``); a video's bytes are not text."""
    if ctype in _MULTIPART or ctype.startswith(("image/", "video/")) or ctype in _STREAM_TEXTS:
        return None
    head = _peek(resp, _TEXT_QUOTED)
    if not head or head.lstrip().startswith((b"#EXTM3U", b"--")):  # a playlist; a multipart stream misnamed
        return None
    if b"--".startswith(head.strip()) and (resp.length is None or len(head) < resp.length):
        # too little come to judge: white space or the start of a boundary, its body not all come (an MJPEG stream
        # called text/plain or untyped whose first packet was the CRLF before its boundary was refused as a web page
        # quoting '\r\n'); a short text ('busy', of no Content-Length: chunked or ended by closing) is judged
        return None
    for cut in range(4):  # the last character's bytes may not all be in the head: cut only those
        try:
            text = head[: len(head) - cut].decode("utf-8")
            break
        except UnicodeDecodeError as e:
            if e.reason != "unexpected end of data":
                return None  # not UTF-8 ('\xff\xd8', a JPEG's first chunk, was cut to '' and quoted as text)
    else:
        return None
    if not text:
        return None
    if any((c < " " and c not in "\t\r\n\f") or c == "\x7f" for c in text):
        return None  # control characters: binary data, a video FFmpeg may read
    return repr(text) + ("..." if len(head) >= _TEXT_QUOTED else "")


class SnapshotStream:
    """A camera whose URL answers each GET with one image (``Content-Type: image/...``: ``/snapshot.jpg``,
    a Mono12 camera's ``/image.png``): asked again every ``poll_period_s`` (from the start of one request to
    the next), each answer a part. An answer longer than ``max_part_bytes`` (by its Content-Length or its
    bytes) is ``StreamError("oversize_frame")``; one not complete within ``read_timeout_s`` is
    ``TimeoutError``; another HTTP status on a later request is ``StreamError("stream_lost")``."""

    paced = True  # the caller takes every part: the pacing is here, not by skipping parts
    redirected_to: str | None = None  # open_stream: the other host a redirect led to (shown URL)

    def __init__(
        self,
        u: Any,
        login: Login | None,
        trust: Trust,
        open_timeout_s: float,
        read_timeout_s: float,
        max_part_bytes: int,
        poll_period_s: float,
    ) -> None:
        import threading

        self._u, self._login, self._trust = u, login, trust
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
            import ssl

            try:  # the same login (a Digest nonce is used again, counted) and the same certificate check
                self._pending = _exchange(self._u, self._login, self._trust, self._open_timeout_s)
            except http.client.HTTPException as exc:
                raise EOFError(f"the camera's answer broke off ({type(exc).__name__})") from None
            except (ssl.SSLCertVerificationError, PinMismatch) as exc:  # another device at its address now
                u = self._u
                raise StreamError(
                    "stream_lost",
                    self._trust.refusal(exc, u.hostname or "", u.port or 443, self._open_timeout_s),
                ) from None
        conn, sock, resp = self._pending
        self._sock = sock
        try:
            if resp.status != 200:
                refused = f" (it {self._login.refused})" if resp.status == 401 and self._login else ""
                own = bool(refused) and self._login is not None and not self._login.blames_login
                raise StreamError(
                    "stream_lost",
                    f"the camera answers HTTP {resp.status} {resp.reason} to a snapshot request{refused}"
                    + ("" if own else f"; {http_hint(resp.status)}"),
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
        limit, why = self._cap, _CAPPED
        check_at: int | None = _HEAD_BYTES  # where to look at the part's header (again)
        of = " bytes" if declared is None else f" of the {declared} bytes its Content-Length declares"
        walked = ChainWalked()  # a PNG's chunks judged whole so far: not walked again after each read
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                late = TimeoutError("no whole image within read_timeout_s")
                late.where = f"within an image ({len(buf)}{of} had come)"  # type: ignore[attr-defined]
                raise late
            sock.settimeout(left)  # a trickle cannot hold a read past the deadline
            _bound(resp, deadline)
            try:
                chunk = resp.read1(_CHUNK)
            except http.client.HTTPException:
                break  # cut short: what came is decoded, and refused as truncated
            except OSError as exc:  # where it broke, as an MJPEG stream says it (``MjpegStream.next_part``)
                exc.where = f"within an image ({len(buf)}{of} had come)"  # type: ignore[attr-defined]
                raise
            if not chunk:
                if self._stopped.is_set():  # interrupt() ended the read: not a cut-short image
                    raise EOFError("stopped")
                return bytes(buf)
            buf += chunk
            if check_at is not None and len(buf) >= check_at:  # held to what its header's image can need
                limit, why, check_at = _image_bound(buf, self._cap, check_at)
            if len(buf) > limit:
                raise StreamError(
                    "oversize_frame", f"an image over {limit} bytes, {why}; dropped the connection"
                )
            # a whole JPEG or PNG (its end marker after its data, by its structure) is the answer as soon as it
            # has come, as an MJPEG part is: a camera whose Content-Length overstates its image and that keeps the
            # connection open (its firmware ignoring our 'Connection: close') gave no frame at all, each answer
            # waited for read_timeout_s and was a stream_lost 'within an image' whose bytes had all come
            tail = bytes(buf[-16:]).rstrip(b"\r\n")
            if tail.endswith(_END_MARKERS) and cut_short(buf, walked=walked) is None:  # type: ignore[arg-type]
                return bytes(buf[: len(buf) - (len(buf[-16:]) - len(tail))])
        return bytes(buf)


def _image_bound(buf: bytearray, cap: int, head: int = _HEAD_BYTES) -> tuple[int, str, int | None]:
    """The most bytes the part (or snapshot answer) at ``buf``'s start can hold, why (for the message), and at
    how many bytes to look again (None: not again), by its first ``head`` bytes: what an image of the size its
    header declares can need (8 bytes a pixel + 1 MB), or ``cap``. Without a size there: a TIFF's directory may
    follow its pixels, so it is held to where its header puts that directory (looked at again once it has come;
    it had ``cap``: a TIFF's signature and junk took 205 MB), refused at once when that is past ``cap``, and once
    the directory is there and gives no size (looked for in every byte read up to its reach, not in the first
    ``head`` only: a whole TIFF with its directory past 256 KB was refused when one read brought it and 20 KB
    more); a JPEG's frame header may follow up to the 1 MB of metadata its bound allows, so it is looked for again
    at ``_HEAD_BYTES + _META_BYTES``; anything else (junk, text, a GIF) is no image this reader decodes, held to
    ``head`` (it was read up to ``cap``: 150-MB parts took 450 MB)."""
    start = bytes(buf[: min(head, _HEAD_BYTES + _META_BYTES)])  # a copy: the buffer grows and shrinks after
    tiff = image_kind(start) == "TIFF"
    if tiff:  # its size is in its image directory, which may follow its pixels: where its header says
        with memoryview(buf) as whole:
            at, reach = _tiff_directory(whole)
            with whole[: min(len(buf), reach)] as data:
                size = image_size(data)
    else:
        size = image_size(start)
    if size is not None:
        kind, w, h = size
        if 0 < 8 * w * h + 2**20 < cap:
            return 8 * w * h + 2**20, f"more than a {kind} of {w}x{h} pixels (its header) can need", None
        return cap, _CAPPED, None
    if tiff:
        if at > cap:
            past = f"past the {cap} bytes an image under max_megapixels can need"
            return head, f"a TIFF whose header puts its image directory at byte {at}, {past}", None
        if reach <= max(head, len(buf)):  # its directory has come
            return (
                max(head, reach),
                f"a TIFF whose image directory (at byte {at}, its header) gives no width and height",
                None,
            )
        return (
            reach,
            f"more than a TIFF whose image directory is at byte {at} (its header) can need to it",
            reach,
        )
    jpeg = start.startswith(b"\xff\xd8")  # as image_size tells one
    again = _HEAD_BYTES + _META_BYTES
    if cap <= head or (jpeg and cap <= again):
        return cap, _CAPPED, None
    if jpeg and head < again:
        return again, f"more than a JPEG whose frame header is not in its first {again} bytes can need", again
    if jpeg and _segments_read(start):
        # more metadata than that before its frame header, segment after segment as JPEG lays them out (a thermal
        # camera's radiometric JPEG carries its raw image and a photo in APP1 segments before it): the cap, as
        # before the 256-KB cut; only a JPEG whose segments stop reading as JPEG's is cut there
        return cap, _CAPPED, None
    if jpeg:
        return head, f"a JPEG whose segments stop reading as JPEG's within its first {head} bytes", None
    return head, f"with no {FORMATS} header in its first {head} bytes", None


def _tiff_directory(data: memoryview) -> tuple[int, int]:
    """Where a TIFF's first image directory is (its header's offset: after its pixels, as libtiff and OpenCV write
    it, or before them), and how far its part must reach to hold it: enough for the most tags the header
    readers take in one directory (``protocols.image_header``: 1,024), a classic TIFF's or a BigTIFF's."""
    import struct

    e = "<" if bytes(data[:1]) == b"I" else ">"
    big = bytes(data[2:4]) in (b"+\x00", b"\x00+")
    at = int(struct.unpack_from(e + ("Q" if big else "I"), data, 8 if big else 4)[0])
    return at, at + _TIFF_DIRECTORY_BYTES


def _segments_read(data: bytes) -> bool:
    """Whether ``data`` (a JPEG's start, SOI first) is marker segment after marker segment to its end (each an
    0xFF, a marker, and a length of at least 2 but for the markers that carry none), with no scan begun: what a
    JPEG holding a lot of metadata before its frame header looks like; junk after an SOI does not."""
    i, n = 2, len(data)
    while i < n:
        if data[i] != 0xFF:
            return False
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            return True
        marker = data[i]
        i += 1
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            continue
        if marker in (
            0x00,
            0xD8,
            0xD9,
            0xDA,
        ):  # stuffing, a second SOI, the end or a scan before any frame header
            return False
        if i + 2 > n:
            return True
        length = (data[i] << 8) | data[i + 1]
        if length < 2:
            return False
        i += length
    return True


def looks_whole(data: bytes, settled: bool = False) -> bool:
    """A part that is plainly cut short is told from a whole one without decoding it
    (``protocols.image_complete.cut_short``, every kind of image: a JPEG or PNG must end with its end
    marker, a BMP, TIFF, PNM or WebP hold what their headers say); an empty part is not whole. ``settled``: its
    writer is done (a folder's file, read after its wait), so a plain PNM whose last sample's digits end it is
    whole; a part told by its Content-Length is not (a length too short may cut its last number)."""
    return cut_short(data, exact_end=True, settled=settled) is None


class MjpegStream:
    """The parts of one open multipart stream, in order (see the module's docstring)."""

    redirected_to: str | None = None  # open_stream: the other host a redirect led to (shown URL)

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
        self._stage = "between"  # where the part being read is (``_where``): between, header, data
        self._length: int | None = None  # its Content-Length
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
        part arrives within ``read_timeout_s``, ``EOFError`` when the camera closes the stream. A
        ``TimeoutError``, ``EOFError`` or other ``OSError`` carries ``where`` the stream broke, for the message:
        between parts, within a part's header, or within a part and how many of its bytes had come (a camera
        that stalls or hangs up halfway through an image, told from one that falls silent between images)."""
        self._deadline = time.monotonic() + self._timeout_s
        self._stage, self._length = "between", None
        try:
            return self._next_part()
        except (OSError, EOFError) as exc:
            exc.where = self._where()  # type: ignore[union-attr]
            raise

    def _where(self) -> str:
        if self._stage == "between":
            return "between parts"
        if self._stage == "header":
            return "within a part's header"
        k, n = len(self._buf), self._length  # the buffer holds the part from its first byte
        if n is not None and k <= n:
            return f"within a part ({k} of the {n} bytes its Content-Length declares had come)"
        if (
            n is not None
        ):  # read on to its boundary past a Content-Length too short (found in review: "5675 of 100")
            return f"within a part ({k} bytes had come, past the {n} its Content-Length declares, no boundary yet)"
        if looks_whole(bytes(self._buf)):  # only the boundary that ends it is missing: silent between images
            return f"after a whole image ({k} bytes) whose part's closing boundary had not come"
        return f"within a part ({k} bytes of it had come, no boundary after them)"

    def _next_part(self) -> bytes:
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
        self._stage = "header"
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
        self._stage, self._length = "data", length if length is not None and length >= 0 else None
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
        if n > _HEAD_BYTES:  # longer than the image its header declares can need: the boundary decides
            ended = self._fill_to(_HEAD_BYTES)
            if ended is not None:
                return ended
            bound, _, _ = _image_bound(self._buf, self._cap)
            if n > bound:
                return self._to_delimiter(declared=n)
        ended = self._fill_to(n)
        if ended is not None:
            return ended
        # a boundary within what it declares: the part ends there if a whole image comes before it (a BMP, TIFF or
        # PNM is whole by its header with any bytes after it, so its Content-Length cannot tell; a JPEG or PNG must
        # end with its end marker to be whole as declared, so it is searched only when it does not: 11 ms for 24 MB)
        marked = self._buf.startswith((b"\xff\xd8", b"\x89PNG"))
        i = -1 if marked else self._buf.find(self._delim, 0, n + len(self._delim))
        if i >= 0:
            ended = self._whole_before(i)
            if ended is not None:
                return ended
        data = self._copy(n)
        if data and looks_whole(data):  # as declared
            del self._buf[:n]
            return data
        del data  # not held while the part is read on
        if marked:
            i = self._buf.find(self._delim, 0, n + len(self._delim))
        if i >= 0:  # too long: the next part's boundary is inside
            return self._up_to(i)
        # too short: the part runs on to the boundary, held as one without Content-Length is (to what its header's
        # image can need; the rest had the whole cap to itself: 1000 declared and 150 MB of junk took 150 MB)
        return self._to_delimiter(start=n, declared=n)

    def _fill_to(self, k: int) -> bytes | None:
        """Read until the buffer holds ``k`` bytes of the part, or until what has come is a whole image that a
        Content-Length too long overstates: a JPEG or PNG ending with its end marker (line ends after it aside),
        or one followed by a boundary (a camera that ends each part with it). That image is the part, handed on
        at once; bytes of it that come after are skipped as anything between parts is. Waiting for bytes the
        camera had not sent held each part until the next one came (a triggered camera's image until the next
        trigger), and a Content-Length too long by more than the camera sends within ``read_timeout_s`` gave no
        part at all, stream_lost on every open. Only the first boundary found is judged (one inside an image's
        data that does not end a whole image leaves the part to its Content-Length, as before), and an end
        marker only where the buffer ends with one, so a part crowded with either costs little."""
        assert self._delim is not None
        at: int | None = 0  # where to look for the boundary from; None: one found and judged
        # a PNG's chunks judged whole so far (the buffer only grows until a part is taken)
        walked = ChainWalked()
        while len(self._buf) < k:
            if at is not None:
                i = self._buf.find(self._delim, at)
                if i >= 0:
                    at = None
                    ended = self._whole_before(i)
                    if ended is not None:
                        return ended
                else:
                    at = max(0, len(self._buf) - len(self._delim) + 1)
            tail = bytes(self._buf[-16:])
            end = len(self._buf) - (len(tail) - len(tail.rstrip(b"\r\n")))
            ends = tail.rstrip(b"\r\n").endswith(_END_MARKERS)
            if ends and cut_short(self._buf, walked=walked) is None:  # type: ignore[arg-type]
                # (by its structure: a JPEG's end marker after its coded data, not an EXIF thumbnail's)
                data = self._copy(end)
                del self._buf[:end]
                return data
            self._fill()
        return None

    def _whole_before(self, i: int) -> bytes | None:
        """The part before the boundary at ``i`` taken out of the buffer when it is a whole image, by its end and by
        its structure (a JPEG's end marker after its coded data: a cut at an EXIF thumbnail's is not whole);
        else None, the buffer as it was."""
        data = self._up_to(i, take=False)
        if looks_whole(data) and cut_short(data) is None:
            del self._buf[:i]
            return data
        return None

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
        _bound(self._resp, self._deadline)
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

    def _copy(self, n: int) -> bytes:
        """The buffer's first ``n`` bytes, copied once: ``bytes(self._buf[:n])`` copies them twice (the slice,
        then its bytes), and a part's line end cut off after a third time (a 100-MB part held 3 or 4 times)."""
        with memoryview(self._buf) as view:
            return bytes(view[:n])

    def _up_to(self, i: int, take: bool = True) -> bytes:
        """The part before the boundary at ``i`` (without the line end before it), taken out of the buffer (or,
        ``take`` false, left in it)."""
        buf = self._buf
        end = i - 2 if buf.endswith(b"\r\n", 0, i) else i - 1 if buf.endswith(b"\n", 0, i) else i
        data = self._copy(end)
        if take:
            del buf[:i]
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

    def _to_delimiter(self, start: int = 0, declared: int | None = None) -> bytes:
        """A part without Content-Length (or whose ``declared`` one the boundary overrides): its bytes up to the
        next boundary (left for the next part), looked for from ``start`` on, at most the part's cap of them,
        or once ``_HEAD_BYTES`` of it are read, what its header allows (``_image_bound``: a 64x48 JPEG's header
        followed by 200 MB took 600 MB to read)."""
        assert self._delim is not None
        limit, why = self._cap, _CAPPED
        check_at: int | None = _HEAD_BYTES  # where to look at the part's header (again)
        said = "" if declared is None else f" (its Content-Length: {declared})"
        while True:
            i = self._buf.find(self._delim, start)
            if i >= 0:
                return self._up_to(i)
            if check_at is not None and len(self._buf) >= check_at:
                limit, why, check_at = _image_bound(self._buf, self._cap, check_at)
            if len(self._buf) > limit + len(self._delim) + 2:
                raise StreamError(
                    "oversize_frame",
                    f"a part over {limit} bytes without a boundary{said}, {why}; dropped the connection",
                )
            start = max(0, len(self._buf) - len(self._delim) + 1)
            self._fill()
