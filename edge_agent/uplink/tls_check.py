"""Why a TLS handshake with the fleet failed, in plain words, when the cause is a certificate's dates.

gRPC reports a certificate outside its validity period as ``UNAVAILABLE: ... CERTIFICATE_VERIFY_FAILED:
certificate is not yet valid`` without saying which certificate, its dates or the clock it was judged by.
On a gateway the usual cause is the clock (a battery-less RTC after a power cut, an NTP step), sometimes
an expired certificate. ``explain`` looks at the CA file, the agent's own certificate and the
certificate the fleet service presents (read with a handshake that verifies nothing, only when the
error speaks of a certificate: the fleet closes the connection without a word on an expired client
certificate, so any UNAVAILABLE looks at the local files), and names each one
that is not valid at this gateway's clock, with its dates. Blocking (files, one connection with a short
timeout): call it from a worker thread, and only after a failure. Uses the standard library's ``ssl``
only (this process keeps out ``cryptography``).
"""

from __future__ import annotations

import os
import socket
import ssl
import tempfile
import time
from pathlib import Path

HINTS = ("CERTIFICATE_VERIFY_FAILED", "certificate", "CERTIFICATE")


def looks_like_certificate_failure(detail: str) -> bool:
    return any(h in detail for h in HINTS)


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def _decode(path: Path) -> dict | None:
    try:  # the standard library's own certificate decoder (what SSLSocket.getpeercert returns)
        return ssl._ssl._test_decode_cert(str(path))  # type: ignore[attr-defined]
    except (AttributeError, OSError, ssl.SSLError, ValueError):
        return None


def _name(cert: dict) -> str:
    for rdn in cert.get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                return str(v)
    return "?"


def fleet_identity(cert_file: Path) -> tuple[str, str] | None:
    """(tenant, agent id) the fleet service knows the holder of ``cert_file`` as (``cloud_trainer.pki.identity``'s
    reading: the subject's organizationIdentifier, ``default`` without one, and its CN); None when the file cannot
    be read as a certificate, or its subject holds either more than once (the fleet refuses such a certificate)."""
    cert = _decode(Path(cert_file))
    if cert is None:
        return None
    found: dict[str, list[str]] = {"organizationIdentifier": [], "commonName": []}
    for rdn in cert.get("subject", ()):
        for k, v in rdn:
            if k in found:
                found[k].append(str(v))
    tenants, names = found["organizationIdentifier"], found["commonName"]
    if len(tenants) > 1 or len(names) != 1:
        return None
    return (tenants[0] if tenants else "default", names[0])


def _judge(what: str, cert: dict | None, now: float) -> str | None:
    if cert is None:
        return None
    try:
        nb = ssl.cert_time_to_seconds(cert["notBefore"])
        na = ssl.cert_time_to_seconds(cert["notAfter"])
    except (KeyError, ValueError):
        return None
    if now < nb:
        state = "is not valid yet"
    elif now > na:
        state = "has expired"
    else:
        return None
    return f"{what} (CN={_name(cert)}) {state}: valid from {_utc(nb)} to {_utc(na)}"


def _server_cert(endpoint: str, cert_file: Path, key_file: Path, timeout_s: float) -> dict | None:
    host, _, port = endpoint.rpartition(":")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # only to read its dates: nothing is sent on this connection
    try:
        ctx.load_cert_chain(str(cert_file), str(key_file))
    except (OSError, ssl.SSLError):
        pass
    try:
        with (
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s) as sock,
            ctx.wrap_socket(sock) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ValueError):
        return None
    if not der:
        return None
    fd, tmp = tempfile.mkstemp(suffix=".pem")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(ssl.DER_cert_to_PEM_cert(der))
        return _decode(Path(tmp))
    finally:
        os.unlink(tmp)


def explain(
    endpoint: str,
    ca_file: Path,
    cert_file: Path,
    key_file: Path,
    now: float | None = None,
    timeout_s: float = 3.0,
    *,
    server: bool = True,
) -> str | None:
    """One line naming every certificate not valid at this gateway's clock, with its dates and the
    clock, and what to do; None when the dates are not the cause (or cannot be read). ``server``: also
    read the fleet service's certificate (one connection); else only the local files."""
    now = time.time() if now is None else now
    found = [
        _judge(f"the fleet CA certificate {ca_file}", _decode(ca_file), now),
        _judge(f"this agent's certificate {cert_file}", _decode(cert_file), now),
    ]
    if server:
        found.append(
            _judge(
                f"the certificate the fleet service at {endpoint} presents",
                _server_cert(endpoint, cert_file, key_file, timeout_s),
                now,
            )
        )
    bad = [f for f in found if f]
    if not bad:
        return None
    return (
        "; ".join(bad)
        + f"; this gateway's clock reads {_utc(now)}: if the clock is wrong, set it right (NTP, RTC), "
        "else issue a certificate valid now"
    )
