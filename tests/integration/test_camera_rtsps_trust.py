"""An ``rtsps://`` camera, which OpenCV's FFmpeg reads: FFmpeg checked no certificate, so a machine on the
plant network posing as the camera (a self-signed certificate, any name) got the RTSP request with the
URL's login and could feed frames. It is now trusted as an https camera is (its chain and host name, or
the pinned certificate) before FFmpeg opens it, and FFmpeg's own connection verifies the chain against
that CA or exactly the pinned certificate. The "camera" here is a TLS server on 127.0.0.1 that records,
per connection, whether the handshake passed and what was sent after it (no RTSP server runs here: what
matters is who gets the request)."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

from devices.camera.capture import CameraSource
from devices.camera.settings import CameraSettings
from tests.integration.test_camera_https_login import _cert, _colons, _refusals
from tests.support.peers import free_port


class TlsCamera:
    """Accepts TLS connections; ``certs`` gives the certificate for each connection in turn (the last one
    for the rest). Records (handshake passed, bytes received) per connection."""

    def __init__(self, certs: list[tuple[Path, Path]]) -> None:
        self.port = free_port()
        self.seen: list[tuple[bool, bytes]] = []
        self._contexts = []
        for crt, key in certs:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(crt, key)
            self._contexts.append(ctx)
        self._sock = socket.create_server(("127.0.0.1", self.port))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        n = 0
        while not self._stop.is_set():
            try:
                raw, _ = self._sock.accept()
            except OSError:
                continue
            ctx = self._contexts[min(n, len(self._contexts) - 1)]
            n += 1
            raw.settimeout(2)
            try:
                with ctx.wrap_socket(raw, server_side=True) as s:
                    try:
                        data = s.recv(2048)
                    except OSError:
                        data = b""
                    self.seen.append((True, data))
            except OSError:  # the client refused the certificate
                self.seen.append((False, b""))
                raw.close()

    @property
    def sent(self) -> list[bytes]:
        return [d for ok, d in self.seen if d]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


def _source(cam: TlsCamera, **kw) -> CameraSource:
    url = f"rtsps://admin:Pa55-w0rd!@127.0.0.1:{cam.port}/Streaming/Channels/101"
    return CameraSource("gate", CameraSettings(url=url, open_timeout_s=1, reconnect_initial_s=0.1, **kw))


async def test_a_self_signed_rtsps_camera_is_refused_before_ffmpeg_sends_the_login(tmp_path):
    _, _, fp = _cert(tmp_path, "cam")
    cam = TlsCamera([(tmp_path / "cam.crt", tmp_path / "cam.key")])
    src = _source(cam)
    try:
        await _refusals(src)
    finally:
        cam.stop()
    assert cam.sent == []  # no RTSP request, no login
    assert (
        f"tls_fingerprint_sha256: {_colons(fp)}" in src.stats.last_error
        and "Pa55" not in src.stats.last_error
    )


async def test_a_pinned_rtsps_camera_is_opened_and_ffmpeg_refuses_another_certificate_behind_the_check(
    tmp_path,
):
    _, _, fp = _cert(tmp_path, "cam", hosts=("camera.local",))  # the pin decides, not the name
    _cert(tmp_path, "impostor")
    cam = TlsCamera([(tmp_path / "cam.crt", tmp_path / "cam.key")])
    try:
        await _refusals(_source(cam, tls_fingerprint_sha256=_colons(fp)))  # no RTSP server: still fails
    finally:
        cam.stop()
    assert any(d.startswith(b"OPTIONS rtsps://") for d in cam.sent)  # FFmpeg went on to the pinned camera
    # the check's connection meets the camera, FFmpeg's own one a machine posing as it: FFmpeg refuses it
    cam = TlsCamera(
        [(tmp_path / "cam.crt", tmp_path / "cam.key"), (tmp_path / "impostor.crt", tmp_path / "impostor.key")]
    )
    try:
        await _refusals(_source(cam, tls_fingerprint_sha256=_colons(fp)))
    finally:
        cam.stop()
    assert cam.seen[0] == (True, b"") and cam.seen[1][0] is False, cam.seen
    assert not any(d.startswith(b"OPTIONS") for d in cam.sent)


async def test_a_pinned_rtsps_camera_whose_certificate_expired_is_refused_saying_so(tmp_path):
    """The pin is the identity for the agent's check, but FFmpeg checks the dates: an expired pinned
    certificate failed at every try with the generic "does not open"; now the line says it expired."""
    _, _, fp = _cert(tmp_path, "cam", expired=True)
    cam = TlsCamera([(tmp_path / "cam.crt", tmp_path / "cam.key")])
    src = _source(cam, tls_fingerprint_sha256=_colons(fp))
    try:
        await _refusals(src)
    finally:
        cam.stop()
    assert "pinned certificate expired on" in src.stats.last_error and "renew" in src.stats.last_error
    assert cam.sent == []  # FFmpeg was not asked to open it


async def test_an_rtsps_camera_is_checked_against_tls_ca_file_with_its_host_name(tmp_path):
    ca = _cert(tmp_path, "plant-ca", is_ca=True)
    _cert(tmp_path, "cam", ca=ca[:2])  # for 127.0.0.1
    _cert(tmp_path, "other", hosts=("othercam.local",), ca=ca[:2])  # the plant CA's, for another camera
    cam = TlsCamera([(tmp_path / "cam.crt", tmp_path / "cam.key")])
    try:
        await _refusals(_source(cam, tls_ca_file=str(tmp_path / "plant-ca.crt")))
    finally:
        cam.stop()
    assert any(d.startswith(b"OPTIONS rtsps://") for d in cam.sent)
    cam = TlsCamera([(tmp_path / "other.crt", tmp_path / "other.key")])
    src = _source(cam, tls_ca_file=str(tmp_path / "plant-ca.crt"))
    try:
        await _refusals(src)
    finally:
        cam.stop()
    assert cam.sent == [] and "does not verify against tls_ca_file" in src.stats.last_error


async def test_ffmpeg_never_sends_a_cameras_request_and_login_to_the_environments_http_proxy(monkeypatch):
    """A gateway with http_proxy set for the cloud: an http camera serving a video container (left to
    OpenCV's FFmpeg) had FFmpeg send its request, with the URL's login, to the proxy. It goes to the camera."""
    import http.server

    proxy = socket.create_server(("127.0.0.1", 0))
    proxy.settimeout(0.1)
    got: list[bytes] = []
    camera_paths: list[str] = []

    class Cam(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            camera_paths.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "video/x-msvideo")
            self.end_headers()
            self.wfile.write(b"RIFF\0\0\0\0AVI LIST")  # not a video FFmpeg can read: the open fails

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Cam)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.getsockname()[1]}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    url = f"http://admin:Pa55-w0rd!@127.0.0.1:{server.server_address[1]}/video.avi"
    src = CameraSource("gate", CameraSettings(url=url, open_timeout_s=1, reconnect_initial_s=0.1))
    try:
        await _refusals(src)
        try:
            conn, _ = proxy.accept()
            got.append(conn.recv(200))
            conn.close()
        except OSError:
            pass
    finally:
        server.shutdown()
        proxy.close()
    assert got == []  # nothing went to the proxy
    assert camera_paths.count("/video.avi") >= 2  # the reader's request, then FFmpeg's, at the camera
