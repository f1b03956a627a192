"""Self-signed certificates with chosen dates, made in a test's folder (an agent's OPC UA certificate that is
expired, not yet valid, about to expire, or without an application URI)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path


def dated_certificate(
    folder: Path,
    stem: str,
    days: tuple[int, int],
    uri: str | None = None,
    pem: bool = False,
    key_file: Path | None = None,
) -> tuple[Path, Path]:
    """An RSA-2048 self-signed certificate for ``CN=stem``, valid from ``days[0]`` to ``days[1]`` days from now,
    its subjectAltName ``uri`` (when given) and ``localhost``; written as ``stem.der`` (``stem.pem`` with ``pem``)
    beside its unencrypted key ``stem.key`` (PEM). Returns both paths. The key is ``key_file``'s (an
    unencrypted PEM RSA key made earlier: making one costs ~0.05-0.1 s of CPU) or a new one."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    if key_file is None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        # a key of the test run's own, made by cryptography: not checked again (~0.04 s of CPU a read)
        loaded = serialization.load_pem_private_key(
            Path(key_file).read_bytes(), None, unsafe_skip_rsa_key_validation=True
        )
        assert isinstance(loaded, rsa.RSAPrivateKey), key_file
        key = loaded
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, stem)])
    now = dt.datetime.now(dt.UTC)
    sans: list[x509.GeneralName] = [x509.DNSName("localhost")]
    if uri:
        sans.insert(0, x509.UniformResourceIdentifier(uri))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + dt.timedelta(days=days[0]))
        .not_valid_after(now + dt.timedelta(days=days[1]))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )
    cp = folder / f"{stem}.{'pem' if pem else 'der'}"
    cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM if pem else serialization.Encoding.DER))
    kp = folder / f"{stem}.key"
    kp.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cp, kp


def locked_key(key_file: Path, dest: Path, passphrase: bytes = b"plant-secret") -> Path:
    """``key_file``'s key (unencrypted PEM) written to ``dest`` protected by ``passphrase`` (PKCS8 PEM)."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(Path(key_file).read_bytes(), None)
    dest.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase),
        )
    )
    return dest
