"""`cloud-trainer pki`: a small certificate authority for tests, demos and small deployments.

    cloud-trainer pki init   --dir var/pki                 # ca.pem, ca.key (the fleet CA)
    cloud-trainer pki server --dir var/pki [--host 127.0.0.1 --host fleet.example]   # server.pem/.key
    cloud-trainer pki agent  --dir var/pki --id gw-line1   # agents/gw-line1.pem/.key (CN = agent id, OU = agent)
    cloud-trainer pki admin  --dir var/pki --name alice    # admins/alice.pem/.key (OU = admin)

Keys are ECDSA P-256, private key files mode 0600. The fleet service takes an agent's identity
from its certificate's CN and its role from the OU, so an agent certificate can never act as
another agent or as an admin. For larger fleets, use your own CA and issue the same fields.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROLE_AGENT, ROLE_ADMIN, ROLE_SERVER = "agent", "admin", "server"


def _write_key(path: Path, key) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _name(cn: str, ou: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "factory-edge fleet"),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def init_ca(d: Path, days: int = 3650) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = _name("factory-edge fleet CA", "ca")
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    d.mkdir(parents=True, exist_ok=True)
    _write_key(d / "ca.key", key)
    (d / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return d / "ca.pem", d / "ca.key"


def _load_ca(d: Path):
    try:
        cert = x509.load_pem_x509_certificate((d / "ca.pem").read_bytes())
        key = serialization.load_pem_private_key((d / "ca.key").read_bytes(), None)
    except FileNotFoundError as exc:
        raise SystemExit(f"cloud-trainer pki: no CA in {d}; run `cloud-trainer pki init --dir {d}` first") from exc
    return cert, key


def issue(d: Path, cn: str, role: str, out: Path, hosts: list[str] | None = None, days: int = 825) -> tuple[Path, Path]:
    ca_cert, ca_key = _load_ca(d)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder().subject_name(_name(cn, role)).issuer_name(ca_cert.subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    if role == ROLE_SERVER:
        sans = []
        for h in hosts or ["127.0.0.1", "localhost"]:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                sans.append(x509.DNSName(h))
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    cert = b.sign(ca_key, hashes.SHA256())
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_key(out.with_suffix(".key"), key)
    out.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return out.with_suffix(".pem"), out.with_suffix(".key")


def identity(pem: bytes) -> tuple[str, str]:
    """(common name, role OU) of a PEM certificate."""
    cert = x509.load_pem_x509_certificate(pem)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ou = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    return (cn[0].value if cn else ""), (ou[0].value if ou else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cloud-trainer pki", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="verb", required=True)
    for verb in ("init", "server", "agent", "admin"):
        p = sub.add_parser(verb)
        p.add_argument("--dir", type=Path, default=Path("var/pki"))
        if verb == "server":
            p.add_argument("--host", action="append", help="SAN (IP or DNS); default 127.0.0.1 and localhost")
        if verb == "agent":
            p.add_argument("--id", required=True, help="agent id (certificate CN)")
        if verb == "admin":
            p.add_argument("--name", required=True)
    a = ap.parse_args(argv)
    if a.verb == "init":
        if (a.dir / "ca.key").exists():
            print(f"cloud-trainer pki: {a.dir}/ca.key exists; not replacing the fleet CA", file=sys.stderr)
            return 2
        cert, _ = init_ca(a.dir)
    elif a.verb == "server":
        cert, _ = issue(a.dir, "fleet-service", ROLE_SERVER, a.dir / "server", a.host)
    elif a.verb == "agent":
        cert, _ = issue(a.dir, a.id, ROLE_AGENT, a.dir / "agents" / a.id)
    else:
        cert, _ = issue(a.dir, a.name, ROLE_ADMIN, a.dir / "admins" / a.name)
    print(f"wrote {cert} and its key (mode 0600)")
    return 0
