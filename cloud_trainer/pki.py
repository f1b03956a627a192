"""`cloud-trainer pki`: a small certificate authority for tests, demos and small deployments.

    cloud-trainer pki init   --dir var/pki                 # ca.pem, ca.key (the fleet CA)
    cloud-trainer pki server --dir var/pki [--host 127.0.0.1 --host fleet.example]   # server.pem/.key
    cloud-trainer pki agent  --dir var/pki --id gw-line1   # agents/gw-line1.pem/.key (CN = agent id, OU = agent)
    cloud-trainer pki admin  --dir var/pki --name alice    # admins/alice.pem/.key (OU = admin)

    # a city platform: one tenant per factory, and a platform operator
    cloud-trainer pki tenant   --dir var/pki --tenant acme              # tenants/acme/signing.key/.pub (packages)
    cloud-trainer pki tenant   --dir var/pki --tenant acme --rotate     # a new one; the old .pub to retired/
    cloud-trainer pki agent    --dir var/pki --tenant acme --id gw1     # tenants/acme/agents/gw1.pem/.key
    cloud-trainer pki admin    --dir var/pki --tenant acme --name bob   # tenants/acme/admins/bob.pem/.key
    cloud-trainer pki operator --dir var/pki --name ops                 # operators/ops.pem/.key (OU = operator)

    # a gateway stolen or scrapped, a key leaked: the fleet refuses that certificate from now on
    cloud-trainer pki revoke --dir var/pki --cert var/pki/tenants/acme/agents/gw1.pem [--reason stolen]
    cloud-trainer pki revoke --dir var/pki --serial 5f1c...             # when only the serial is known

Keys are ECDSA P-256, private key files mode 0600. The fleet service takes an agent's identity
from its certificate's CN, its role from the OU and its tenant from the organizationIdentifier
attribute (absent: the ``default`` tenant, which is what every certificate issued before tenants
were introduced belongs to), so an agent certificate can never act as another agent, as an admin,
or in another tenant. Only the fleet CA issues certificates, so the tenant in a certificate is the
platform's word, not the tenant's. Each tenant has its own Ed25519 package signing key
(``pki tenant``): its agents list only that public key in ``trusted_keys``, and the fleet service
refuses to deploy a package not signed by the tenant's key. A platform operator certificate has no
tenant: it creates tenants and reads usage counts, never a tenant's agents, models or records.
For larger fleets, use your own CA and issue the same fields.

Revocation: ``pki revoke`` appends the certificate's serial number to ``<pki>/revoked.txt`` (one serial in
hex per line, then a comment: whose, when, why). The fleet service re-reads that file when it changes
(``Revocations``, looked at at most once a second) and refuses every call of a revoked certificate
(``PERMISSION_DENIED``, saying so), also on a ``Connect`` or ``PushRecords`` stream already open, at its next
message (and on ``Connect``, before the next message the service sends). Replicas read the file of their own PKI folder: give them the same one.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import ipaddress
import logging
import os
import re
import sys
import threading
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from protocols.ids import AGENT_ID_RE

ROLE_AGENT, ROLE_ADMIN, ROLE_SERVER, ROLE_OPERATOR = "agent", "admin", "server", "operator"
DEFAULT_TENANT = "default"
TENANT_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
# AGENT_ID_RE: the agent config's ``agent.id`` rule (protocols.ids), an agent certificate's CN being its id


def check_tenant(tenant: str) -> str:
    if not TENANT_RE.fullmatch(tenant or ""):
        raise ValueError(
            f"tenant id {tenant!r}: use 1-63 lowercase letters, digits or '-', starting with a "
            "letter or digit"
        )
    return tenant


def check_agent_id(agent: str) -> str:
    if not AGENT_ID_RE.fullmatch(agent or ""):
        raise ValueError(
            f"agent id {agent[:80]!r}: use 1-63 letters, digits, '_', '.' or '-', starting with a letter or "
            "digit (the agent config's agent.id)"
        )
    return agent


log = logging.getLogger(__name__)
REVOKED_FILE = "revoked.txt"


@dataclasses.dataclass(frozen=True)
class Identity:
    """Who a client certificate speaks for: its CN, its role (OU) and its tenant; and the certificate's serial
    number (hex, for revocation; not part of who it is)."""

    name: str
    role: str
    tenant: str
    serial: str = dataclasses.field(default="", compare=False)
    # why the certificate speaks for no one (the service refuses it with this), or ""
    problem: str = dataclasses.field(default="", compare=False)


def _write_key(path: Path, key) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _name(cn: str, ou: str, tenant: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "factory-edge fleet")]
    if tenant is not None:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, check_tenant(tenant)))
    return x509.Name(
        [
            *attrs,
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def init_ca(d: Path, days: int = 3650) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = _name("factory-edge fleet CA", "ca")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    d.mkdir(parents=True, exist_ok=True)
    _write_key(d / "ca.key", key)
    (d / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return d / "ca.pem", d / "ca.key"


def _load_ca(d: Path):
    try:
        cert = x509.load_pem_x509_certificate((d / "ca.pem").read_bytes())
        key = serialization.load_pem_private_key((d / "ca.key").read_bytes(), None)
    except FileNotFoundError as exc:
        raise SystemExit(
            f"cloud-trainer pki: no CA in {d}; run `cloud-trainer pki init --dir {d}` first"
        ) from exc
    return cert, key


def issue(
    d: Path,
    cn: str,
    role: str,
    out: Path,
    hosts: list[str] | None = None,
    days: int = 825,
    tenant: str | None = None,
) -> tuple[Path, Path]:
    """A certificate for ``cn`` in ``role``; ``tenant`` (agents and admins) names the tenant it acts in."""
    if tenant is not None and role not in (ROLE_AGENT, ROLE_ADMIN):
        raise ValueError(f"a {role} certificate has no tenant")
    if role == ROLE_AGENT:
        check_agent_id(cn)
    ca_cert, ca_key = _load_ca(d)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, role, tenant))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if role == ROLE_SERVER:
        sans: list[x509.GeneralName] = []
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


# the subject attributes an identity is read from, each of which must appear at most once
_IDENTITY_FIELDS = (
    (NameOID.COMMON_NAME, "CN"),
    (NameOID.ORGANIZATIONAL_UNIT_NAME, "OU"),
    (NameOID.ORGANIZATION_IDENTIFIER, "organizationIdentifier"),
)


@functools.lru_cache(maxsize=65536)
def identity(pem: bytes) -> Identity:
    """Name, role and tenant of a PEM certificate (parsed once per distinct certificate: the fleet service
    asks on every call of a connection). Agents and admins without a tenant attribute are in the default
    tenant; a tenant attribute that is not a valid tenant id, or an agent certificate whose CN is not a valid
    agent id (``AGENT_ID_RE``), gives tenant '' (refused by the service).

    A subject that holds the CN, the OU or the tenant attribute more than once speaks for no one (role and
    tenant '', ``problem`` saying why): read by its first value, a certificate with organizationIdentifier
    beta then acme acted in beta, one with OU admin then agent as an admin. The fleet CA never writes one, but
    a CA of one's own that copies a request's subject and adds the platform's fields after it would."""
    cert = x509.load_pem_x509_certificate(pem)
    serial = f"{cert.serial_number:x}"
    repeated = [n for oid, n in _IDENTITY_FIELDS if len(cert.subject.get_attributes_for_oid(oid)) > 1]
    if repeated:
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        why = f"its subject holds {' and '.join(repeated)} more than once, so it names no single identity"
        return Identity(str(cns[0].value) if cns else "", "", "", serial, why)

    def attr(oid) -> str:
        v = cert.subject.get_attributes_for_oid(oid)
        return str(v[0].value) if v else ""

    role = attr(NameOID.ORGANIZATIONAL_UNIT_NAME)
    tenant = attr(NameOID.ORGANIZATION_IDENTIFIER)
    if role == ROLE_OPERATOR:
        tenant = ""
    elif not tenant:
        tenant = DEFAULT_TENANT
    elif not TENANT_RE.fullmatch(tenant):
        tenant = ""
    name = attr(NameOID.COMMON_NAME)
    if role == ROLE_AGENT and not AGENT_ID_RE.fullmatch(name):
        tenant = ""
    return Identity(name, role, tenant, serial)


def _serial(text: str) -> str:
    """A serial number written in hex (``0x``, colons and leading zeros allowed) in ``Identity.serial``'s form."""
    return f"{int(text.strip().lower().removeprefix('0x').replace(':', ''), 16):x}"


class Revocations:
    """The serial numbers in ``<pki>/revoked.txt``, re-read when the file changes (its size, time or inode), looked
    at at most every ``check_s``: a revocation reaches a running service without a restart. A line that is not a
    hex serial is skipped with a warning; a file that cannot be read keeps the serials read before."""

    def __init__(self, path: Path, check_s: float = 1.0) -> None:
        self.path = Path(path)
        self.check_s = check_s
        self._serials: frozenset[str] = frozenset()
        self._stamp: tuple | None = None
        self._checked = float("-inf")
        self._lock = threading.Lock()

    def revoked(self, serial: str) -> bool:
        if time.monotonic() - self._checked >= self.check_s:
            self._reload()
        return bool(serial) and serial in self._serials

    def _reload(self) -> None:
        with self._lock:
            if time.monotonic() - self._checked < self.check_s:
                return
            self._checked = time.monotonic()
            try:
                st = self.path.stat()
                stamp: tuple | None = (st.st_mtime_ns, st.st_size, st.st_ino)
            except FileNotFoundError:
                stamp = None
            except OSError as exc:
                log.warning("%s: cannot read it (%s); the revocations read before stay", self.path, exc)
                return
            if stamp == self._stamp:
                return
            serials = set()
            try:
                lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines() if stamp else []
            except OSError as exc:
                log.warning("%s: cannot read it (%s); the revocations read before stay", self.path, exc)
                return
            for n, line in enumerate(lines, 1):
                token = line.split("#", 1)[0].strip()
                if not token:
                    continue
                try:
                    serials.add(_serial(token.split()[0]))
                except ValueError:
                    log.warning(
                        "%s:%d: %r is not a certificate serial number in hex; skipped",
                        self.path,
                        n,
                        line[:80],
                    )
            self._serials, self._stamp = frozenset(serials), stamp


def revoke(d: Path, cert: Path | None = None, serial: str | None = None, reason: str = "") -> str:
    """Add a certificate (its file, or only its serial number) to ``<d>/revoked.txt``; returns the serial."""
    if cert is not None:
        who = identity(Path(cert).read_bytes())
        serial, whose = who.serial, f"{who.tenant or '-'}/{who.name} ({who.role})"
    elif serial:
        serial, whose = _serial(serial), "serial given"
    else:
        raise ValueError("give --cert FILE or --serial HEX")
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    note = " ".join(f"{whose} revoked {when} {reason}".split())
    d.mkdir(parents=True, exist_ok=True)
    with open(d / REVOKED_FILE, "a", encoding="utf-8") as f:
        f.write(f"{serial}  # {note}\n")
        f.flush()
        os.fsync(f.fileno())
    return serial


def tenant_dir(d: Path, tenant: str | None) -> Path:
    """Where a tenant's certificates and signing key live in the PKI folder (the folder itself: default)."""
    return d if tenant in (None, DEFAULT_TENANT) else d / "tenants" / check_tenant(tenant)


def signing_key_paths(d: Path, tenant: str) -> tuple[Path, Path]:
    """The tenant's package signing key pair (private, public) in the PKI folder."""
    t = d / "tenants" / check_tenant(tenant)
    return t / "signing.key", t / "signing.pub"


def init_tenant(d: Path, tenant: str) -> tuple[Path, str]:
    """The tenant's package signing key pair (kept if it exists); returns (public key path, key id)."""
    from model_packager.keys import generate_keypair, key_id, load_public_key

    private, public = signing_key_paths(d, tenant)
    if private.exists() and public.exists():
        return public, key_id(load_public_key(public))
    return public, generate_keypair(private, public)


def retired_keys_dir(d: Path, tenant: str) -> Path:
    """Where a tenant's retired package public keys are kept (``<kid>.pub``): packages they signed may still be
    deployed and rolled back to until the file is removed (a compromised key: remove it at once)."""
    return d / "tenants" / check_tenant(tenant) / "retired"


def rotate_tenant_key(d: Path, tenant: str) -> tuple[Path, str, str]:
    """A new package signing key for ``tenant``; the current public key is kept in ``retired/<kid>.pub`` and its
    private key removed (it never signs again). Returns (new public key path, new key id, retired key id)."""
    from model_packager.keys import generate_keypair, key_id, load_public_key

    private, public = signing_key_paths(d, tenant)
    if not public.exists():
        raise ValueError(f"tenant {tenant} has no package signing key to rotate ({public}); create one first")
    old = key_id(load_public_key(public))
    retired = retired_keys_dir(d, tenant)
    retired.mkdir(parents=True, exist_ok=True)
    os.replace(public, retired / f"{old}.pub")
    private.unlink(missing_ok=True)
    return public, generate_keypair(private, public), old


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cloud-trainer pki", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="verb", required=True)
    for verb in ("init", "server", "agent", "admin", "operator", "tenant", "revoke"):
        p = sub.add_parser(verb)
        p.add_argument("--dir", type=Path, default=Path("var/pki"))
        if verb == "revoke":
            p.add_argument("--cert", type=Path, default=None, help="the certificate file (.pem) to revoke")
            p.add_argument("--serial", default=None, help="or its serial number in hex")
            p.add_argument(
                "--reason", default="", help="a note kept beside it (stolen, scrapped, key leaked)"
            )
        if verb == "server":
            p.add_argument("--host", action="append", help="SAN (IP or DNS); default 127.0.0.1 and localhost")
        if verb in ("agent", "admin", "tenant"):
            p.add_argument(
                "--tenant",
                required=verb == "tenant",
                default=None,
                help="tenant id (default: the default tenant)",
            )
        if verb == "tenant":
            p.add_argument(
                "--rotate",
                action="store_true",
                help="replace the tenant's package signing key: the old public key is kept in "
                "tenants/T/retired/ (its packages stay deployable until you remove it), its private key removed",
            )
        if verb == "agent":
            p.add_argument("--id", required=True, help="agent id (certificate CN)")
        if verb in ("admin", "operator"):
            p.add_argument("--name", required=True)
    a = ap.parse_args(argv)
    if a.verb == "revoke":
        try:
            serial = revoke(a.dir, a.cert, a.serial, a.reason)
        except (OSError, ValueError) as exc:
            print(f"cloud-trainer pki revoke: {exc}", file=sys.stderr)
            return 2
        print(
            f"revoked certificate serial {serial} ({a.dir / REVOKED_FILE}); the fleet service refuses it within a second"
        )
        return 0
    tenant = getattr(a, "tenant", None)
    try:
        if tenant is not None:
            check_tenant(tenant)
    except ValueError as exc:
        print(f"cloud-trainer pki: --tenant: {exc}", file=sys.stderr)
        return 2
    try:
        if a.verb == "agent":
            check_agent_id(a.id)
    except ValueError as exc:
        print(f"cloud-trainer pki: --id: {exc}", file=sys.stderr)
        return 2
    if a.verb == "init":
        if (a.dir / "ca.key").exists():
            print(f"cloud-trainer pki: {a.dir}/ca.key exists; not replacing the fleet CA", file=sys.stderr)
            return 2
        cert, _ = init_ca(a.dir)
    elif a.verb == "server":
        cert, _ = issue(a.dir, "fleet-service", ROLE_SERVER, a.dir / "server", a.host)
    elif a.verb == "tenant":
        assert tenant is not None  # --tenant is required for this verb
        if a.rotate:
            try:
                pub, kid, old = rotate_tenant_key(a.dir, tenant)
            except ValueError as exc:
                print(f"cloud-trainer pki tenant: {exc}", file=sys.stderr)
                return 2
            print(
                f"tenant {tenant}: new package signing key {pub.with_suffix('.key')} (key id {kid}); key {old} "
                f"retired to {retired_keys_dir(a.dir, tenant) / (old + '.pub')}: the fleet still deploys and rolls "
                f"back to packages it signed until you remove that file. Add {pub} to every agent's trusted_keys "
                f"before publishing with the new key; remove {old}'s .pub from them once nothing signed by it is "
                "installed or wanted"
            )
            return 0
        pub, kid = init_tenant(a.dir, tenant)
        print(
            f"tenant {tenant}: package signing key {pub.with_suffix('.key')} (key id {kid}); its agents trust "
            f"only {pub}"
        )
        return 0
    elif a.verb == "agent":
        cert, _ = issue(a.dir, a.id, ROLE_AGENT, tenant_dir(a.dir, tenant) / "agents" / a.id, tenant=tenant)
    elif a.verb == "admin":
        cert, _ = issue(
            a.dir, a.name, ROLE_ADMIN, tenant_dir(a.dir, tenant) / "admins" / a.name, tenant=tenant
        )
    else:
        cert, _ = issue(a.dir, a.name, ROLE_OPERATOR, a.dir / "operators" / a.name)
    print(f"wrote {cert} and its key (mode 0600)")
    return 0
