"""HTTP(S) cameras as real IP cameras serve them, over real sockets on 127.0.0.1: HTTPS with the camera's own
certificate (made here with `cryptography`), a pinned or CA-checked certificate, one that changes, expires
or names another host; Digest logins (RFC 7616: MD5, SHA-256, qop auth, stale nonces) on MJPEG streams and
snapshot URLs; redirects to another host; cameras that answer 401 forever. Every log line, the status text
and the errors must keep the password out, and a camera that is not trusted must never see the login."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import logging
import os
import re
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from devices.camera.capture import CameraSource
from devices.camera.settings import CameraSettings
from tests.integration.test_camera_source import _jpeg, take
from tests.support.waits import until

USER, PASSWORD = "admin", "Pa55-w0rd!"
SECRETS = (PASSWORD, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())
_KEY = ec.generate_private_key(ec.SECP256R1())  # one key for every certificate here: fast


def _cert(
    folder: Path,
    name: str,
    *,
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
    expired: bool = False,
    ca: tuple | None = None,
    is_ca: bool = False,
):
    """A certificate (self-signed, or signed by ``ca`` = (cert, key)) written to ``name``.crt/.key;
    returns (cert, key, SHA-256 of its DER as hex)."""
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    sans = [x509.IPAddress(ipaddress.ip_address(h)) if h[0].isdigit() else x509.DNSName(h) for h in hosts]
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca[0].subject if ca else subject)
        .public_key(_KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=30))
        .not_valid_after(now - dt.timedelta(days=1) if expired else now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if not is_ca:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = b.sign(ca[1] if ca else _KEY, hashes.SHA256())
    (folder / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / f"{name}.key").write_bytes(
        _KEY.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    return cert, _KEY, hashlib.sha256(der).hexdigest()


def _colons(hexed: str) -> str:
    return ":".join(hexed[i : i + 2] for i in range(0, 64, 2)).upper()


class Camera:
    """An IP camera on 127.0.0.1 (or ``host``): an MJPEG stream (``snapshot=False``) of ``parts`` in turn,
    or a snapshot URL answering each GET with the next one. ``auth``: None, "basic", or a Digest algorithm
    ("MD5", "SHA-256", "MD5-sess"), checked as RFC 7616 says; ``stale_every``: a Digest nonce is good for
    that many requests, then answered 401 stale=true; ``always_401``: every request refused (stale=true
    if ``always_stale``). ``redirect``: every GET answered 302 to that URL. ``nonce``: the challenge's
    nonce parameter as it is sent (``'nonce=""'``, or ``""`` for none), a fresh one by default. Records each
    request's Authorization header (``requests``)."""

    def __init__(
        self,
        parts: list[bytes],
        *,
        tls: tuple[Path, Path] | None = None,
        host: str = "127.0.0.1",
        snapshot: bool = False,
        auth: str | None = None,
        stale_every: int = 0,
        always_401: bool = False,
        always_stale: bool = False,
        redirect: str | None = None,
        ctype: str = "image/jpeg",
        say_stale: bool = True,
        nonce: str | None = None,
    ) -> None:
        self.requests: list[str] = []
        self.nonces: dict[str, int] = {}
        me = self
        k = [0]
        bad_nonce = None if nonce is None else nonce + (", " if nonce else "")

        def challenge(stale: bool) -> str:
            nonce = os.urandom(16).hex()
            me.nonces[nonce] = 0
            algo = auth or "MD5"
            given = f'nonce="{nonce}", ' if bad_nonce is None else bad_nonce
            return f'Digest realm="cam@plant", qop="auth", algorithm={algo}, {given}opaque="op4que"' + (
                ", stale=true" if stale else ""
            )

        def digest_ok(header: str) -> str:
            """'ok', 'stale' or 'bad'."""
            if not header.startswith("Digest "):
                return "bad"
            p = {
                m.group(1): m.group(2) if m.group(2) is not None else m.group(3)
                for m in re.finditer(r'(\w+)=(?:"([^"]*)"|([^,\s]+))', header[7:])
            }
            algo = p.get("algorithm", "MD5").upper()
            h = hashlib.sha256 if algo.startswith("SHA-256") else hashlib.md5

            def hx(s: str) -> str:
                return h(s.encode()).hexdigest()

            if p.get("username") != USER or p.get("realm") != "cam@plant" or p.get("opaque") != "op4que":
                return "bad"
            ha1 = hx(f"{USER}:cam@plant:{PASSWORD}")
            if algo.endswith("-SESS"):
                ha1 = hx(f"{ha1}:{p.get('nonce')}:{p.get('cnonce')}")
            ha2 = hx(f"GET:{p.get('uri')}")
            want = hx(f"{ha1}:{p.get('nonce')}:{p.get('nc')}:{p.get('cnonce')}:auth:{ha2}")
            if p.get("qop") != "auth" or p.get("response") != want:
                return "bad"
            used = me.nonces.get(p["nonce"])
            if used is None:
                return "bad"
            me.nonces[p["nonce"]] = used + 1
            if stale_every and used >= stale_every:
                return "stale"
            return "ok"

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args) -> None:
                pass

            def refuse(self, stale: bool = False) -> None:
                self.send_response(401)
                if auth == "basic":
                    self.send_header("WWW-Authenticate", 'Basic realm="cam@plant"')
                else:
                    self.send_header("WWW-Authenticate", challenge(stale))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                got = self.headers.get("Authorization", "")
                me.requests.append(got)
                if redirect:
                    self.send_response(302)
                    self.send_header("Location", redirect)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if always_401:
                    return self.refuse(stale=always_stale)
                if auth == "basic" and got != "Basic " + SECRETS[1]:
                    return self.refuse()
                if auth and auth != "basic":
                    verdict = digest_ok(got)
                    if verdict != "ok":
                        return self.refuse(stale=verdict == "stale" and say_stale)
                try:
                    if snapshot:
                        data = parts[k[0] % len(parts)]
                        k[0] += 1
                        self.send_response(200)
                        self.send_header("Content-Type", ctype)
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                        return
                    self.send_response(200)
                    self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                    self.end_headers()
                    while True:
                        for data in parts:
                            self.wfile.write(
                                b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                % len(data)
                                + data
                                + b"\r\n"
                            )
                            time.sleep(0.01)
                except OSError:
                    pass

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            scheme = "https"
        self.port = self.httpd.server_address[1]
        path = "/snapshot.jpg" if snapshot else "/stream.mjpg"
        self.url = f"{scheme}://{USER}:{PASSWORD}@{host}:{self.port}{path}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _no_secret_shown(src: CameraSource, caplog) -> None:
    """The password (and the Basic header's base64 of it) in no log line, nor the status text."""
    shown = [r.getMessage() for r in caplog.records] + [str(src.stats.last_error)]
    for text in shown:
        for secret in SECRETS:
            assert secret not in text, text


async def _refusals(src: CameraSource, n: int = 1, reason: str = "open_failed") -> None:
    await src.start()
    try:
        await until(lambda: src.stats.errors_by_reason.get(reason, 0) >= n, 30, f"{n} {reason}")
    finally:
        await src.stop()


@pytest.fixture
def log_all(caplog):
    caplog.set_level(logging.DEBUG)
    return caplog


async def test_a_self_signed_https_camera_is_refused_naming_its_fingerprint_and_never_sees_the_login(
    tmp_path, log_all
):
    """A camera's own (self-signed) certificate did not verify, and the camera was then read with the check
    off, the URL's Basic login sent: any machine on the plant network posing as the camera got the password
    and could feed frames. Such a camera is now refused before any request (one line naming the camera,
    the setting to add and the fingerprint it presents), no frame taken."""
    _, _, fp = _cert(tmp_path, "cam")
    cam = Camera([_jpeg(1)], tls=(tmp_path / "cam.crt", tmp_path / "cam.key"))
    src = CameraSource("press3", CameraSettings(url=cam.url, open_timeout_s=1, reconnect_initial_s=0.1))
    try:
        await _refusals(src)
    finally:
        cam.stop()
    assert cam.requests == [] and src.stats.received == 0
    line = src.stats.last_error
    assert f"tls_fingerprint_sha256: {_colons(fp)}" in line and "tls_ca_file" in line, line
    assert any("camera 'press3'" in r.getMessage() and _colons(fp) in r.getMessage() for r in log_all.records)
    _no_secret_shown(src, log_all)


async def test_a_pinned_camera_is_read_and_one_presenting_another_certificate_is_refused(tmp_path, log_all):
    """tls_fingerprint_sha256 trusts exactly one certificate (a self-signed one, its name and CA not
    checked): that camera gives frames, part by part (a cut part is corrupt_frame). A device presenting
    another certificate at the same address (the camera swapped, or a machine posing as it) is refused
    before any request, the line naming both fingerprints."""
    _, _, fp = _cert(tmp_path, "cam", hosts=("camera.local",))  # no name for 127.0.0.1: the pin decides
    _, _, other = _cert(tmp_path, "impostor")
    whole = _jpeg(3)
    cam = Camera([whole, whole[: len(whole) // 2]], tls=(tmp_path / "cam.crt", tmp_path / "cam.key"))
    src = CameraSource("cam", CameraSettings(url=cam.url, tls_fingerprint_sha256=_colons(fp)))
    try:
        await src.start()
        frames = await take(src, 2, 5)
        await until(lambda: src.stats.errors_by_reason.get("corrupt_frame", 0) >= 1, 30, "corrupt_frame")
    finally:
        await src.stop()
        cam.stop()
    want = cv2.imdecode(np.frombuffer(whole, np.uint8), cv2.IMREAD_COLOR)
    assert all(np.array_equal(f.image, want) for f in frames)

    impostor = Camera([whole], tls=(tmp_path / "impostor.crt", tmp_path / "impostor.key"))
    src = CameraSource(
        "cam",
        CameraSettings(
            url=impostor.url, tls_fingerprint_sha256=fp, open_timeout_s=1, reconnect_initial_s=0.1
        ),
    )
    try:
        await _refusals(src)
    finally:
        impostor.stop()
    assert impostor.requests == [] and src.stats.received == 0
    assert _colons(other) in src.stats.last_error and _colons(fp) in src.stats.last_error
    _no_secret_shown(src, log_all)


@pytest.mark.parametrize("case", ["good", "expired", "other_host", "other_ca", "not_pem"])
async def test_a_camera_checked_by_tls_ca_file_is_read_only_with_a_valid_certificate_for_its_address(
    tmp_path, log_all, case
):
    """tls_ca_file: the camera's certificate must chain to that file, name the URL's host and be within its
    dates; an expired one, one for another name, or one from another CA is refused with the reason, before
    any request."""
    ca = _cert(tmp_path, "plant-ca", is_ca=True)
    other_ca = _cert(tmp_path, "other-ca", is_ca=True)
    _cert(
        tmp_path,
        "cam",
        ca=(other_ca if case == "other_ca" else ca)[:2],
        expired=case == "expired",
        hosts=("10.9.9.9",) if case == "other_host" else ("127.0.0.1",),
    )
    if case == "not_pem":
        (tmp_path / "plant-ca.crt").write_bytes(b"\x30\x82 a DER file, or the key")
    cam = Camera([_jpeg(2)], tls=(tmp_path / "cam.crt", tmp_path / "cam.key"), snapshot=True)
    settings = CameraSettings(
        url=cam.url, tls_ca_file=str(tmp_path / "plant-ca.crt"), open_timeout_s=1, reconnect_initial_s=0.1
    )
    src = CameraSource("cam", settings)
    try:
        if case == "good":
            await src.start()
            await take(src, 2, 5)
            await src.stop()
        else:
            await _refusals(src)
    finally:
        cam.stop()
    if case == "good":
        assert cam.requests and all(r == "Basic " + SECRETS[1] for r in cam.requests)
        assert src.stats.errors == 0
    else:
        assert cam.requests == [] and src.stats.received == 0
        expect = {
            "expired": "expired",
            "other_host": "mismatch",
            "other_ca": "unable to get local issuer",
            "not_pem": "cannot be read as PEM",
        }
        assert expect[case] in src.stats.last_error and "tls_ca_file" in src.stats.last_error
    _no_secret_shown(src, log_all)


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256", "MD5-sess"])
async def test_a_digest_camera_is_read_part_by_part_its_password_never_sent(log_all, algorithm):
    """Digest logins (most Axis, Hikvision and Dahua cameras) were left to OpenCV's FFmpeg, which passed a
    part cut short on as a frame, its missing half filled in; and the URL's password went first as Basic,
    in clear text, to a camera that asks for Digest to keep it off the wire. The reader now answers the
    camera's Digest challenge itself: cut parts are corrupt_frame, whole ones frames, no Basic sent."""
    whole = _jpeg(4)
    cam = Camera([whole, whole[: len(whole) // 2]], auth=algorithm)
    src = CameraSource("cam", CameraSettings(url=cam.url, read_timeout_s=2))
    try:
        await src.start()
        frames = await take(src, 2, 5)
        await until(lambda: src.stats.errors_by_reason.get("corrupt_frame", 0) >= 1, 30, "corrupt_frame")
    finally:
        await src.stop()
        cam.stop()
    want = cv2.imdecode(np.frombuffer(whole, np.uint8), cv2.IMREAD_COLOR)
    assert all(np.array_equal(f.image, want) for f in frames)
    assert not any(r.startswith("Basic") for r in cam.requests), cam.requests
    assert cam.requests[0] == "" and cam.requests[1].startswith("Digest ")
    assert set(src.stats.errors_by_reason) == {"corrupt_frame"}
    _no_secret_shown(src, log_all)


@pytest.mark.parametrize("say_stale", [True, False])
async def test_a_digest_snapshot_camera_renews_a_stale_nonce_and_keeps_giving_frames(log_all, say_stale):
    """A snapshot camera (one image a GET) behind Digest, whose nonce goes stale every 3 requests: each
    request answers with the nonce and a growing count, a stale nonce is renewed (one more request), and no
    frame is lost to it (no error counted). Also where the camera's firmware answers an expired nonce without
    stale=true (a plain 401 with a new nonce): that was a stream_lost and a reopen at every expiry."""
    cam = Camera([_jpeg(5), _jpeg(6)], auth="SHA-256", snapshot=True, stale_every=3, say_stale=say_stale)
    src = CameraSource("cam", CameraSettings(url=cam.url, fps=100))
    try:
        await src.start()
        frames = await take(src, 10, 5)
    finally:
        await src.stop()
        cam.stop()
    assert len(frames) == 10 and src.stats.errors == 0, src.stats.errors_by_reason
    assert len(cam.nonces) >= 3  # renewed along the way
    assert not any(r.startswith("Basic") for r in cam.requests)
    _no_secret_shown(src, log_all)


@pytest.mark.parametrize("stale", [False, True])
async def test_a_camera_answering_401_to_every_login_costs_a_bounded_number_of_requests(log_all, stale):
    """A wrong password (401 again after the Digest answer) or a camera calling every nonce stale: one clear
    open_failed line per attempt and at most 3 requests (the first, the login, one renewed nonce), where a
    loop would lock the account or pin the camera; nothing left to FFmpeg to try again."""
    cam = Camera([_jpeg(1)], auth="MD5", always_401=True, always_stale=stale)
    src = CameraSource("cam", CameraSettings(url=cam.url, open_timeout_s=1, reconnect_initial_s=0.1))
    try:
        await _refusals(src, 2)
    finally:
        cam.stop()
    attempts = src.stats.errors_by_reason["open_failed"]
    assert len(cam.requests) <= 3 * (attempts + 1), (attempts, len(cam.requests))
    assert not any("Lavf" in r for r in cam.requests)
    assert "HTTP 401" in src.stats.last_error and "Digest MD5" in src.stats.last_error
    _no_secret_shown(src, log_all)


async def test_a_redirect_to_another_host_is_refused_and_the_login_never_sent_there(log_all):
    """A camera (or a device posing as one) redirecting to another host: OpenCV's FFmpeg was handed the URL
    and the diagnosis behind it (urllib) followed the redirect carrying the Basic login to that host. A
    redirect to another host is now refused by name, the login sent nowhere else; one to the same host is
    followed."""
    thief = Camera([_jpeg(1)], host="127.0.0.2")
    thief_url = thief.url.replace(f"{USER}:{PASSWORD}@", "")
    cam = Camera([_jpeg(1)], auth="basic", redirect=thief_url)
    src = CameraSource("cam", CameraSettings(url=cam.url, open_timeout_s=1, reconnect_initial_s=0.1))
    try:
        await _refusals(src, 2)
    finally:
        cam.stop()
        thief.stop()
    assert thief.requests == []
    assert "another host" in src.stats.last_error and "127.0.0.2" in src.stats.last_error
    _no_secret_shown(src, log_all)

    real = Camera([_jpeg(7)], auth="basic", snapshot=True)
    hop = Camera([_jpeg(1)], redirect=real.url.replace(f"{USER}:{PASSWORD}@", ""))
    src = CameraSource("cam", CameraSettings(url=hop.url))
    try:
        await src.start()
        await take(src, 1, 5)
        await src.stop()
    finally:
        hop.stop()
        real.stop()


def test_tls_settings_are_checked_and_named(tmp_path):
    """A fingerprint that is not 64 hex digits, or TLS settings on a camera that is not https, are config
    errors naming the field and the file, not a camera that silently never opens."""
    from edge_agent.config import ConfigError, load_config

    cfg = tmp_path / "agent.yaml"
    for settings, field in (
        ("url: https://cam/s.mjpg\n    tls_fingerprint_sha256: 'AB:CD'", "tls_fingerprint_sha256"),
        ("url: rtsp://cam/s\n    tls_fingerprint_sha256: '" + "ab" * 32 + "'", "sources.cam"),
    ):
        cfg.write_text(
            f"agent: {{id: a, site: s, line: l}}\nsources:\n  cam:\n    type: camera\n    {settings}\n"
        )
        with pytest.raises(ConfigError) as e:
            load_config(cfg)
        assert str(cfg) in str(e.value) and field in str(e.value), str(e.value)
    for extra, warned in (("", True), ("\n    tls_fingerprint_sha256: '" + "ab" * 32 + "'", False)):
        # an upgrade's validate names the https camera that will be refused if self-signed
        cfg.write_text(
            "agent: {id: a, site: s, line: l}\nsources:\n  cam:\n    type: camera\n"
            f"    url: https://cam/s.mjpg{extra}\n"
        )
        found = [w for w in load_config(cfg).warnings if "sources.cam.url" in w]
        assert bool(found) == warned and all("tls_fingerprint_sha256" in w for w in found), found
    ok = CameraSettings(url="https://cam/s.mjpg", tls_fingerprint_sha256="SHA256:" + "AB:" * 31 + "AB")
    assert ok.tls_fingerprint_sha256 == "ab" * 32
    with pytest.raises(ValidationError):
        CameraSettings(url="rtsp://cam/s", tls_ca_file="ca.pem")


def test_digest_answers_match_rfc_7616s_examples():
    """The two worked examples of RFC 7616 section 3.9.1 (MD5 and SHA-256, qop auth)."""
    from email.message import Message

    from devices.camera.access import Login

    for algorithm, want in (
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ):
        login = Login("Mufasa", "Circle of Life", preemptive_basic=False)
        headers = Message()
        headers["WWW-Authenticate"] = (
            f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, '
            'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
            'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
        )
        assert login.answer(headers)
        auth = login.authorization("/dir/index.html", cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")
        assert auth is not None and f'response="{want}"' in auth and "nc=00000001" in auth, auth
    # a user name outside latin-1 cannot go in a header as it is (http.client refused it: reader_failed at
    # every attempt); RFC 7616's username* carries it
    login = Login("检查员", "pw", preemptive_basic=False)
    assert login.answer(headers)
    assert "username*=UTF-8''%E6%A3%80%E6%9F%A5%E5%91%98" in (login.authorization("/") or "")


@pytest.mark.parametrize(
    "url",
    [
        f"http://127.0.0.1:1/cgi-bin/CGIProxy.fcgi?cmd=snapPicture2&usr={USER}&pwd={PASSWORD}",
        f"rtsp://127.0.0.1:1/user={USER}&password={PASSWORD}&channel=1&stream=0.sdp",
    ],
)
async def test_a_password_given_as_a_url_parameter_is_masked_in_every_line(log_all, url):
    """Many cameras take the login as URL parameters (Foscam's ``?usr=&pwd=``, NVRs' ``/user=&password=``):
    only ``user:password@`` was masked, so such a camera's password was in every open_failed line, the
    status and the log. Its value is masked now, the rest of the URL kept."""
    src = CameraSource("cam", CameraSettings(url=url, open_timeout_s=1, reconnect_initial_s=5))
    await _refusals(src)
    assert "=***" in src.stats.last_error, src.stats.last_error
    _no_secret_shown(src, log_all)


async def test_a_digest_camera_serving_what_only_ffmpeg_reads_never_gets_the_password_in_clear(
    log_all, monkeypatch
):
    """An http URL behind Digest that serves something else than MJPEG or an image (a video container) is
    OpenCV's FFmpeg's to read, and when FFmpeg cannot, the diagnosis asks the camera once more: it sent the
    login as Basic at once, the password in clear text to a camera that asks for Digest to keep it off the
    wire, and through the environment's http_proxy (set on a gateway for the cloud), which got the login.
    It now asks the camera itself and answers its challenge as the camera asks."""
    proxy = Camera([b"x"], snapshot=True)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.port}")

    cam = Camera([b"\x00\x00\x00\x18ftypisom" + bytes(64)], auth="MD5", snapshot=True, ctype="video/mp4")
    src = CameraSource(
        "cam", CameraSettings(url=cam.url.replace(".jpg", ".mp4"), open_timeout_s=1, reconnect_initial_s=5)
    )
    try:
        await _refusals(src)
    finally:
        cam.stop()
        proxy.stop()
    assert not any(proxy.requests), proxy.requests  # no login (FFmpeg itself does use http_proxy)
    assert len(cam.requests) >= 3 and not any(r.startswith("Basic") for r in cam.requests), cam.requests
    assert "HTTP 200, video/mp4" in src.stats.last_error, src.stats.last_error  # the diagnosis got in
    _no_secret_shown(src, log_all)


async def test_an_https_snapshot_camera_builds_its_tls_context_once_per_connection_not_per_frame(
    tmp_path, monkeypatch
):
    """Each snapshot request of an https camera built a new SSL context, loading every CA of the system
    (~120 ms of CPU here; twice for a self-signed camera): at fps 10 a camera took 0.44 CPU-seconds a second
    and gave 7.5 frames a second. The context is made once per open now and serves every request."""
    made = []
    real = ssl.create_default_context
    monkeypatch.setattr(ssl, "create_default_context", lambda *a, **k: made.append(1) or real(*a, **k))
    ca = _cert(tmp_path, "plant-ca", is_ca=True)
    _cert(tmp_path, "cam", ca=ca[:2])
    cam = Camera([_jpeg(2)], tls=(tmp_path / "cam.crt", tmp_path / "cam.key"), snapshot=True)
    src = CameraSource(
        "cam", CameraSettings(url=cam.url, fps=100, tls_ca_file=str(tmp_path / "plant-ca.crt"))
    )
    try:
        await src.start()
        await take(src, 6, 5)
    finally:
        await src.stop()
        cam.stop()
    assert len(cam.requests) >= 6 and len(made) == 1, (len(cam.requests), len(made))


async def test_a_login_this_reader_cannot_give_is_refused_by_name_after_one_request(log_all):
    """A camera asking for Digest SHA-512-256 (or auth-int only, NTLM): named at once, with what to set on
    the camera, after one request without a login; not handed to FFmpeg (which cannot give it either)."""
    cam = Camera([_jpeg(1)], auth="SHA-512-256")
    src = CameraSource("cam", CameraSettings(url=cam.url, open_timeout_s=1, reconnect_initial_s=5))
    try:
        await _refusals(src)
    finally:
        cam.stop()
    assert cam.requests == [""]
    assert "cannot give (Digest SHA-512-256 qop=auth)" in src.stats.last_error, src.stats.last_error
    _no_secret_shown(src, log_all)


@pytest.mark.parametrize("nonce", ['nonce=""', ""], ids=["empty", "absent"])
async def test_a_digest_challenge_without_a_nonce_is_named_not_called_a_wrong_password(log_all, nonce):
    """A camera whose Digest challenge has an empty nonce (``nonce=""``, broken firmware) was sent a login
    with that empty nonce, refused it, and the line said the camera refused the user and password in the
    URL (a good password blamed, a locked account risked); with no nonce at all the line said the reader
    cannot give a Digest MD5 qop=auth login and to set the camera to one. Named now, after one request."""
    cam = Camera([_jpeg(1)], auth="MD5", nonce=nonce)
    src = CameraSource("cam", CameraSettings(url=cam.url, open_timeout_s=1, reconnect_initial_s=5))
    try:
        await _refusals(src)
    finally:
        cam.stop()
    assert cam.requests == [""], cam.requests
    err = src.stats.last_error or ""
    assert "Digest challenge without a nonce" in err and ("empty" in err) == bool(nonce), err
    assert "user and password" not in err and "cannot give" not in err, err
    _no_secret_shown(src, log_all)


async def test_an_https_url_on_a_cameras_plain_http_port_says_the_handshake_failed_not_unreachable(log_all):
    """An https:// URL pointing at the camera's http port (a common slip): the handshake fails, and the line
    said the camera could not be reached, sending the engineer to the cable; it now says the port answers
    but not with TLS."""
    cam = Camera([_jpeg(1)], snapshot=True)
    src = CameraSource(
        "cam",
        CameraSettings(url=cam.url.replace("http://", "https://"), open_timeout_s=1, reconnect_initial_s=5),
    )
    try:
        await _refusals(src)
    finally:
        cam.stop()
    assert "TLS handshake fails" in src.stats.last_error and "cannot reach" not in src.stats.last_error
    _no_secret_shown(src, log_all)
