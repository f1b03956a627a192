"""https cameras that hang in TLS, over real sockets on 127.0.0.1 with a real TLS server (Python's ``ssl``, the
camera's certificate made here): one that dribbles its handshake a byte at a time, one whose chunked MJPEG
stream dribbles its chunk sizes. Each is reported and retried as a hung camera, and the process's other
cameras keep giving frames meanwhile."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Callable

import pytest

from devices.camera.capture import CameraSource
from devices.camera.settings import CameraSettings
from tests.integration.test_camera_foreign import SnapshotCamera
from tests.integration.test_camera_https_login import _cert
from tests.integration.test_camera_source import _jpeg
from tests.support.waits import until


class _TlsServer:
    """Accepts on 127.0.0.1 and runs ``handle(conn, n)`` for each connection on its own thread; ``done`` ends
    every dribble."""

    def __init__(self, handle: Callable[[socket.socket, int], None]) -> None:
        self.done = threading.Event()
        self.accepted = 0
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(16)
        self.port = self._server.getsockname()[1]

        def serve() -> None:
            while not self.done.is_set():
                try:
                    conn, _ = self._server.accept()
                except OSError:
                    return
                self.accepted += 1
                threading.Thread(
                    target=self._run, args=(handle, conn, self.accepted - 1), daemon=True
                ).start()

        threading.Thread(target=serve, daemon=True).start()

    @staticmethod
    def _run(handle: Callable[[socket.socket, int], None], conn: socket.socket, n: int) -> None:
        with conn:
            try:
                handle(conn, n)
            except OSError:
                pass

    def stop(self) -> None:
        self.done.set()
        self._server.close()


async def _meanwhile(hung: CameraSource, done: Callable[[], bool], what: str) -> int:
    """Runs ``hung`` beside another (plain http snapshot) camera until ``done()``; returns how many frames
    the other gave after it."""
    other_cam = SnapshotCamera(lambda n: (_jpeg(5), "image/jpeg"))
    other = CameraSource("other", CameraSettings(url=other_cam.url, fps=20))
    frames = {"hung": 0, "other": 0}

    async def count(src: CameraSource) -> None:
        async for _ in src.items():
            frames[src.name] += 1

    tasks = []
    try:
        for src in (hung, other):
            await src.start()
            tasks.append(asyncio.create_task(count(src)))
        await until(done, 8, what)
        other_then = frames["other"]
        await until(lambda: frames["other"] >= other_then + 3, 8, "frames from the other camera meanwhile")
    finally:
        for t in tasks:
            t.cancel()
        for src in (hung, other):
            await src.stop()
        other_cam.stop()
    return frames["hung"]


@pytest.mark.parametrize("scheme", ["https", "rtsps"])
async def test_a_tls_camera_that_dribbles_its_handshake_is_reported_as_hung_and_retried(tmp_path, scheme):
    """A device at an https (or rtsps) camera's address that accepts the connection and sends its TLS
    handshake a byte at a time (a hung camera, or a hostile device on the plant network): the open ended
    at open_timeout_s, but the line said the camera could not be reached ("is the camera on and the address
    right?"), sending the engineer to the cable, and the handshake had a whole open_timeout_s of its own
    after the connection. The connection and handshake (and an https camera's answer head) now share
    open_timeout_s; it is open_failed naming the stalled handshake, counted, and tried again, while the
    other cameras serve."""
    _cert(tmp_path, "cam")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cam.crt", tmp_path / "cam.key")

    def dribble(conn: socket.socket, n: int) -> None:  # a real handshake, its bytes one every 0.1 s
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing, server_side=True)
        while not server.done.is_set():
            try:
                tls.do_handshake()
                return
            except ssl.SSLWantReadError:
                for b in outgoing.read():
                    if server.done.wait(0.1):
                        return
                    conn.sendall(bytes([b]))
                data = conn.recv(65536)
                if not data:
                    return
                incoming.write(data)

    server = _TlsServer(dribble)
    hung = CameraSource(
        "hung",
        CameraSettings(
            url=f"{scheme}://127.0.0.1:{server.port}/stream",
            tls_ca_file=str(tmp_path / "cam.crt"),
            open_timeout_s=0.5,
            reconnect_initial_s=0.1,
            reconnect_max_s=0.2,
        ),
    )
    try:
        got = await _meanwhile(
            hung,
            lambda: hung.stats.errors_by_reason.get("open_failed", 0) >= 2 and server.accepted >= 2,
            "open_failed twice, tried again",
        )
    finally:
        server.stop()
    assert got == 0
    line = hung.stats.last_error or ""
    assert "accepts the connection but its TLS handshake does not complete within 0.5s" in line, line
    assert "cannot reach" not in line, line


async def test_a_chunked_https_mjpeg_stream_that_dribbles_its_chunk_sizes_is_reported_and_reopened(tmp_path):
    """An https MJPEG camera whose answer is chunked (HTTP/1.1 Transfer-Encoding: chunked) gave a part,
    then sent the next chunk's size line a byte at a time: http.client reads that line with as many reads
    as it takes, each given the whole read timeout, so the camera stayed 'connected' for as long as it
    dribbled, reported nothing and gave no frame. A part must now come whole within read_timeout_s, chunk
    sizes included: stream_lost, reopened, and the other cameras keep serving."""
    _cert(tmp_path, "cam")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cam.crt", tmp_path / "cam.key")
    jpeg = _jpeg(3)
    part = b"--fr\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n" % (len(jpeg), jpeg)

    def stream(conn: socket.socket, n: int) -> None:
        conn.settimeout(5)
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.recv(65536)
            tls.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=fr\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n" % (len(part), part)
            )
            while not server.done.wait(0.1):  # the next chunk's size, never ending its line
                tls.sendall(b"0")

    server = _TlsServer(stream)
    hung = CameraSource(
        "hung",
        CameraSettings(
            url=f"https://127.0.0.1:{server.port}/stream.mjpg",
            tls_ca_file=str(tmp_path / "cam.crt"),
            open_timeout_s=1,
            read_timeout_s=0.5,
            reconnect_initial_s=0.1,
            reconnect_max_s=0.2,
        ),
    )
    try:
        got = await _meanwhile(
            hung,
            lambda: hung.stats.errors_by_reason.get("stream_lost", 0) >= 2 and server.accepted >= 3,
            "stream_lost twice, reopened",
        )
    finally:
        server.stop()
    assert got >= 2  # a part from each connection before it hung
    assert "no frame for" in (hung.stats.last_error or ""), hung.stats.last_error
