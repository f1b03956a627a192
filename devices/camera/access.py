"""How the HTTP(S) camera reader (``devices.camera.mjpeg``) gets into a camera: whether its certificate is
trusted (``Trust``) and how its login is answered (``Login``: HTTP Basic, or Digest as RFC 7616 and 2617
describe it, which most Axis, Hikvision and Dahua cameras ask for).

Trust: an https camera is trusted when its certificate verifies against ``tls_ca_file`` (a CA, or the
camera's own certificate; its host name checked against the URL's) or the system's CAs when that is unset,
or, with ``tls_fingerprint_sha256``, when the certificate it presents is exactly the pinned one (its CA,
host name and dates then not checked: the pin is the identity). Checked right after the handshake, before
the request (and so the login) is sent. A camera that is not trusted is refused with one line naming the
setting to add and the fingerprint the camera presents now (from a second handshake that sends nothing).

Login: over plain http the first request carries no credentials, so that a Digest camera never sees the
password in clear (Basic over http is clear text); the camera's challenge decides: Digest (SHA-256 chosen
over MD5, qop ``auth`` or none, the ``-sess`` variants) or Basic. Over https, whose channel is checked, Basic
is sent at once, as before. A Digest nonce the camera calls stale (``stale=true``) is answered once more with
the new one; any other 401 after a login is final. Not supported (refused by name): ``auth-int`` only,
other algorithms (SHA-512-256), ``userhash``, NTLM and other schemes, a Digest challenge without a nonce.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import time
from typing import Any

__all__ = ["Login", "Trust", "fingerprint_text", "normal_fingerprint"]

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_SCHEME = re.compile(rf"[\s,]*({_TOKEN})(?=\s|,|$)")
_PARAM = re.compile(rf'\s*({_TOKEN})\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?')
_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


def normal_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint as written (``AB:CD:...``, with spaces, any case): 64 lowercase hex digits,
    or ``ValueError``."""
    hexed = re.sub(r"[\s:]", "", text).lower()
    if hexed.startswith("sha256"):  # "SHA256:AB:CD..." / "sha256 AB CD..." as some tools print it
        hexed = hexed[6:].lstrip("=")
    if not re.fullmatch(r"[0-9a-f]{64}", hexed):
        raise ValueError(
            "a certificate's SHA-256 fingerprint is 64 hex digits (32 bytes, colons allowed: AB:CD:...)"
        )
    return hexed


def fingerprint_text(hexed: str) -> str:
    """As browsers and ``openssl x509 -fingerprint -sha256`` show it: ``AB:CD:...``."""
    return ":".join(hexed[i : i + 2] for i in range(0, len(hexed), 2)).upper()


class Trust:
    """An https camera's certificate check (module docstring). ``context()`` for the handshake, ``check()``
    on the connected socket before anything is sent, ``refusal()`` for a handshake that failed."""

    def __init__(self, ca_file: str | None = None, fingerprint_sha256: str | None = None) -> None:
        self.ca_file = ca_file
        self.pin = normal_fingerprint(fingerprint_sha256) if fingerprint_sha256 else None
        self._context: Any = None

    def context(self) -> Any:
        """The client SSL context (made once); ``OSError``/``ssl.SSLError`` for a ``tls_ca_file`` that cannot
        be read."""
        import ssl

        if self._context is None:
            if self.ca_file is not None:
                ctx = ssl.create_default_context(cafile=self.ca_file)
                # the camera's own certificate given as tls_ca_file is a trust anchor of its own
                ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
            elif self.pin is not None:  # the pin is the identity: chain, name and dates not checked
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            else:
                ctx = ssl.create_default_context()
            self._context = ctx
        return self._context

    def check(self, sock: Any) -> None:
        """After the handshake, before the request: the pinned certificate, or ``ssl.SSLError`` (a
        ``PinMismatch``) naming the one presented."""
        if self.pin is None:
            return
        der = sock.getpeercert(binary_form=True) or b""
        got = hashlib.sha256(der).hexdigest()
        if got != self.pin:
            raise PinMismatch(got)

    def refusal(self, exc: Exception, host: str, port: int, timeout_s: float) -> str:
        """The one line for a handshake whose certificate is not trusted (nothing was sent)."""
        if isinstance(exc, PinMismatch):
            return (
                f"its certificate (SHA-256 {fingerprint_text(exc.got)}) is not the one pinned in "
                f"tls_fingerprint_sha256 ({fingerprint_text(self.pin or '')}): another device answers at "
                "this address, or the camera's certificate was renewed or reset; nothing was sent (no "
                "login, no frames). If the camera's own web page shows the new fingerprint, set "
                "tls_fingerprint_sha256 to it"
            )
        why = getattr(exc, "verify_message", "") or str(exc)
        seen = _presented(host, port, timeout_s)
        pin = f"tls_fingerprint_sha256: {fingerprint_text(seen)}" if seen else "tls_fingerprint_sha256"
        if self.ca_file is not None:
            return (
                f"its certificate does not verify against tls_ca_file {self.ca_file} ({why}); nothing was sent "
                f"(no login, no frames). Give the CA that signed it, or pin it with {pin} (the certificate it "
                "presents now: compare with the camera's web page)"
            )
        return (
            f"its certificate does not verify ({why}: a camera's own, self-signed one?), and the camera "
            "is not trusted otherwise; nothing was sent (no login, no frames), so that another machine on "
            f"the network cannot take the password or feed frames. Trust this camera: add {pin} (the "
            "certificate it presents now: compare with the camera's web page) or tls_ca_file (the CA that "
            "signed it, or the camera's certificate) to its settings"
        )


class HandshakeTimeout(TimeoutError):
    """The camera accepted the connection but its TLS handshake did not complete within the open timeout (a
    hung camera, or a device that dribbles its handshake): not a camera that cannot be reached."""


class PinMismatch(OSError):
    def __init__(self, got: str) -> None:
        super().__init__(f"certificate fingerprint {got} is not the pinned one")
        self.got = got


def _presented(host: str, port: int, timeout_s: float) -> str | None:
    """The SHA-256 of the certificate an https server presents (its handshake only; nothing is sent)."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=min(timeout_s, 3.0)) as raw:
            with ctx.wrap_socket(raw, server_hostname=host or None) as s:
                der = s.getpeercert(binary_form=True)
    except (OSError, ValueError):
        return None
    return hashlib.sha256(der).hexdigest() if der else None


def _challenges(values: list[str]) -> list[tuple[str, dict[str, str]]]:
    """``WWW-Authenticate`` header values as ``[(scheme lowercased, {param lowercased: value})]``; one
    header may hold several challenges (``Digest ..., Basic realm=...``)."""
    out: list[tuple[str, dict[str, str]]] = []
    for value in values:
        pos = 0
        while pos < len(value):
            m = _SCHEME.match(value, pos)
            if m is None:
                break
            params: dict[str, str] = {}
            pos = m.end()
            while True:
                p = _PARAM.match(value, pos)
                if p is None:
                    break
                v = p.group(2)
                if v.startswith('"'):
                    v = re.sub(r"\\(.)", r"\1", v[1:-1])
                params[p.group(1).lower()] = v
                pos = p.end()
            out.append((m.group(1).lower(), params))
    return out


def _no_nonce(digest: list[dict[str, str]]) -> str:
    """Why the camera's Digest challenges cannot be answered when none has a nonce (broken firmware): a
    login made with an empty nonce was refused, and the line blamed the user and password; "" otherwise."""
    if not digest or any(p.get("nonce") for p in digest):
        return ""
    how = 'empty (nonce="")' if any("nonce" in p for p in digest) else "missing"
    return (
        f"sends a Digest challenge without a nonce, which no login can answer: its nonce is {how}; the "
        "camera's firmware is at fault (update it, or set the camera to Basic over https)"
    )


class Login:
    """The URL's user and password, and how the camera asked for them (module docstring). One per camera
    connection sequence: a snapshot camera's later requests reuse the Digest nonce with a growing count."""

    def __init__(self, user: str, password: str, preemptive_basic: bool) -> None:
        self._user, self._password = user, password
        self.scheme: str | None = "basic" if preemptive_basic else None
        self._digest: dict[str, str] = {}
        self._nc = 0
        self._accepted = False  # an answer other than 401 to the current Digest nonce
        self.refused = ""  # why the last 401 is final, for the message
        self.blames_login = True  # False when ``refused`` names the camera's fault, not the user and password

    def accepted(self) -> None:
        """The camera answered the last request with something else than 401."""
        self._accepted = True

    @property
    def shown(self) -> str:
        if self.scheme == "digest":
            return f"Digest {self._digest.get('algorithm', 'MD5')}"
        return "Basic" if self.scheme == "basic" else "no login"

    def authorization(self, target: str, cnonce: str | None = None) -> str | None:
        if self.scheme == "basic":
            return "Basic " + base64.b64encode(f"{self._user}:{self._password}".encode()).decode()
        if self.scheme != "digest":
            return None
        d = self._digest
        algorithm = d["algorithm"]
        h = _HASHES[algorithm.removesuffix("-SESS")]

        def hx(s: str) -> str:
            return h(s.encode()).hexdigest()

        self._nc += 1
        nc = f"{self._nc:08x}"
        cnonce = cnonce or os.urandom(12).hex()
        ha1 = hx(f"{self._user}:{d['realm']}:{self._password}")
        if algorithm.endswith("-SESS"):
            ha1 = hx(f"{ha1}:{d['nonce']}:{cnonce}")
        ha2 = hx(f"GET:{target}")
        qop = d.get("qop_chosen")
        if qop:
            response = hx(f"{ha1}:{d['nonce']}:{nc}:{cnonce}:{qop}:{ha2}")
        else:
            response = hx(f"{ha1}:{d['nonce']}:{ha2}")

        def q(s: str) -> str:
            return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

        try:
            self._user.encode("latin-1")
            user = f"username={q(self._user)}"
        except UnicodeEncodeError:  # RFC 7616 3.4.4: the user name in UTF-8, percent-encoded
            from urllib.parse import quote

            user = f"username*=UTF-8''{quote(self._user, safe='')}"
        parts = [
            user,
            f"realm={q(d['realm'])}",
            f"nonce={q(d['nonce'])}",
            f"uri={q(target)}",
            f"algorithm={d['algorithm_given']}" if d.get("algorithm_given") else "",
            f"response={q(response)}",
            f"opaque={q(d['opaque'])}" if "opaque" in d else "",
            f"qop={qop}, nc={nc}, cnonce={q(cnonce)}" if qop else "",
        ]
        return "Digest " + ", ".join(p for p in parts if p)

    def answer(self, headers: Any) -> bool:
        """After a 401: True when asking again may succeed (the camera's first challenge, or a Digest nonce
        it calls stale); False, with ``refused`` saying why, when the 401 is final."""
        challenges = _challenges(headers.get_all("WWW-Authenticate") or [])
        self.blames_login = True
        digest = [p for s, p in challenges if s == "digest"]
        usable = [p for p in digest if self._usable(p)]
        if self.scheme == "digest":
            stale = [p for p in usable if p.get("stale", "").lower() == "true"]
            if stale:
                self._take(stale[0])
                return True
            fresh = [p for p in usable if p["nonce"] != self._digest.get("nonce")]
            if self._accepted and fresh:
                # a nonce that expired, answered without stale=true (some firmware): the login was accepted
                # with the former one, so the new one is taken once; a wrong password never gets here
                self._take(fresh[0])
                return True
            self.refused = _no_nonce(digest) or "refuses the user and password in the URL"
            self.blames_login = not _no_nonce(digest)
            return False
        if usable:  # Basic sent at first (https), or nothing yet: Digest as the camera asks
            usable.sort(key=lambda p: p.get("algorithm", "MD5").upper().startswith("SHA-256"), reverse=True)
            self._take(usable[0])
            return True
        if self.scheme is None and (not challenges or any(s == "basic" for s, _ in challenges)):
            self.scheme = "basic"  # a 401 without a challenge (some firmware): Basic, as before
            return True
        if self.scheme == "basic" and (not challenges or any(s == "basic" for s, _ in challenges)):
            self.refused = "refuses the user and password in the URL"
            return False
        no_nonce = _no_nonce(digest)
        if no_nonce:
            self.refused, self.blames_login = no_nonce, False
            return False
        asked = ", ".join(
            (s.upper() if s == "ntlm" else s.capitalize())
            + (f" {p.get('algorithm', 'MD5')} qop={p.get('qop', '-')}" if s == "digest" else "")
            for s, p in challenges
        )
        self.refused = (
            f"asks for a login this reader cannot give ({asked}); set the camera to Digest (MD5 or "
            "SHA-256, qop auth) or Basic"
        )
        return False

    @staticmethod
    def _usable(p: dict[str, str]) -> bool:
        algorithm = p.get("algorithm", "MD5").upper()
        qops = {q.strip().lower() for q in p.get("qop", "").split(",") if q.strip()}
        return (
            bool(p.get("nonce"))
            and algorithm.removesuffix("-SESS") in _HASHES
            and (not qops or "auth" in qops)
            and p.get("userhash", "false").lower() != "true"
        )

    def _take(self, p: dict[str, str]) -> None:
        algorithm = p.get("algorithm", "MD5").upper()
        qops = {q.strip().lower() for q in p.get("qop", "").split(",") if q.strip()}
        self.scheme = "digest"
        self._digest = {
            "realm": p.get("realm", ""),
            "nonce": p["nonce"],
            "algorithm": algorithm,
            "algorithm_given": p.get("algorithm", ""),
            "qop_chosen": "auth" if "auth" in qops else "",
        }
        if "opaque" in p:
            self._digest["opaque"] = p["opaque"]
        self._nc = 0
        self._accepted = False


class Untrusted(OSError):
    """A TLS camera whose certificate is not trusted: ``str()`` is the one line to show (nothing was sent)."""


def system_ca_file() -> str | None:
    """The system's CA bundle as one PEM file (FFmpeg takes a file, not OpenSSL's hashed folder)."""
    import ssl

    p = ssl.get_default_verify_paths()
    for f in (
        p.cafile,
        p.openssl_cafile,
        "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine
        "/etc/pki/tls/certs/ca-bundle.crt",  # RHEL, Fedora
        "/etc/ssl/cert.pem",
    ):
        if f and os.path.isfile(f):
            return f
    return None


def check_tls_camera(host: str, port: int, trust: Trust, timeout_s: float) -> bytes:
    """One handshake with a TLS camera, checked as ``Trust`` says (its chain and host name against
    ``tls_ca_file`` or the system's CAs, or the pin), then closed: nothing is sent. Returns the certificate
    presented (DER); ``Untrusted`` with the refusal line when it is not trusted; ``HandshakeTimeout`` when it
    accepts the connection but the handshake does not complete within the bound (the connection and the
    handshake together); ``OSError`` when the camera cannot be reached."""
    import ssl

    try:
        ctx = trust.context()
    except (OSError, ssl.SSLError) as exc:
        raise Untrusted(
            f"tls_ca_file {trust.ca_file} cannot be read as PEM certificates ({exc}); give the file of the CA "
            "that signed the camera's certificate, or the camera's own certificate"
        ) from None
    bound = min(timeout_s, 5.0)
    deadline = time.monotonic() + bound
    try:
        with socket.create_connection((host, port), timeout=bound) as raw:
            left = deadline - time.monotonic()  # the connection and the handshake share the bound
            if left <= 0:
                raise HandshakeTimeout(f"no TLS handshake within {bound:g}s")
            raw.settimeout(left)
            try:
                s = ctx.wrap_socket(raw, server_hostname=host)
            except TimeoutError:
                raise HandshakeTimeout(f"no TLS handshake within {bound:g}s") from None
            with s:
                trust.check(s)
                return s.getpeercert(binary_form=True) or b""
    except (ssl.SSLCertVerificationError, PinMismatch) as exc:
        raise Untrusted(trust.refusal(exc, host, port, timeout_s)) from None
