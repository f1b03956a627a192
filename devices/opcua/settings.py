"""Settings of the OPC UA source (``type: opcua``). Validation only: this module never imports asyncua.

One client session per source, one subscription (``publishing_interval_ms``) with one monitored
item per configured node. Security: None, or Basic256Sha256 (or Aes128_Sha256_RsaOaep / Aes256_Sha256_RsaPss) with Sign / SignAndEncrypt, which
needs the client certificate and key (PEM or DER) and, optionally, the server certificate to pin.
"""

from __future__ import annotations

import collections
import datetime as dt
import enum
import re
import socket
import urllib.parse
from collections.abc import Iterable
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

# the range of an OPC UA DateTime (Part 6, 5.2.2.5): earlier is sent as the null time, later as its maximum
# (the source's writes, and the config's write values at load)
DATETIME_RANGE = (
    dt.datetime(1601, 1, 1, tzinfo=dt.UTC),
    dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC),
)


NSU = re.compile(r"^nsu=([^;]+);(.+)$")


def namespace_uri(node_id: str) -> str | None:
    """The namespace URI an ``nsu=<uri>;...`` node id names, its percent-escapes decoded as UTF-8 bytes (OPC UA
    Part 6's text form, RFC 3986: ``urn:f%C3%A9`` is ``urn:fé``; each byte was taken as a character, ``urn:fÃ©``,
    a namespace no server has); None for another node id. ``ValueError`` naming the escapes when they are not
    UTF-8 (``%E9`` alone, Latin-1's é)."""
    m = NSU.match(node_id.strip())
    if m is None:
        return None
    try:
        return urllib.parse.unquote(m.group(1), errors="strict")
    except UnicodeDecodeError as e:
        bad = "".join(f"%{b:02X}" for b in e.object[e.start : e.end])
        # a namespace whose URI holds a '%' of its own (urn:a%E9b) was found as written before the escapes were
        # decoded: Part 6 writes that '%' as %25, which this says too
        raise ValueError(
            f"node {node_id!r}: the namespace URI's percent-escapes {bad} are no UTF-8 text; a URI's characters "
            f"are written as their UTF-8 bytes (é is %C3%A9), and a '%' of the URI itself as %25 (the namespace "
            f"{m.group(1)} is written nsu={m.group(1).replace('%', '%25')};...)"
        ) from None


# the namespace at index 0 is always OPC UA's own (Part 3, 8.2.2): nsu= of this URI is ns=0
_UA_NAMESPACE = "http://opcfoundation.org/UA/"


def node_key(node_id: str) -> tuple:
    """A node id as the server reads it, to tell two spellings of one node: ``(namespace, kind, identifier)``, the
    namespace ``("index", n)`` or, for ``nsu=<uri>;...``, ``("uri", uri)`` (its escapes decoded; OPC UA's own URI is
    index 0); the identifier parsed as asyncua parses it (``i=05`` is ``i=5``, a GUID in any case, spaces around a
    key). Which index a URI has is the server's to say (``node_classes``). A text asyncua does not parse is its own key."""
    from asyncua import ua

    text, ns = node_id.strip(), None
    if (m := NSU.match(text)) is not None:
        try:
            uri = namespace_uri(text) or m.group(1)
        except ValueError:
            uri = m.group(1)
        ns, text = (("index", 0) if uri == _UA_NAMESPACE else ("uri", uri)), m.group(2)
    try:
        n = ua.NodeId.from_string(text)
    except Exception:  # (asyncua raises ValueError, UaStringParsingError, IndexError for what it cannot read)
        return ("text", node_id)
    ident = n.Identifier
    return (ns or ("index", n.NamespaceIndex), type(ident).__name__, ident)


def node_classes(node_ids: Iterable[str]) -> dict[str, tuple]:
    """Each of ``node_ids`` (one server's) -> what tells it from the others (``node_key``): its spellings of one node
    alike. One identifier in a namespace named by URI and by an index other than 0 (``nsu=urn:plc;s=R``,
    ``ns=2;s=R``) may be one node, which the server's namespace array says, not known before the agent connects:
    they are taken as one (the identifier alone)."""
    keys = {n: node_key(n) for n in node_ids}
    by_uri = {k[1:] for k in keys.values() if k[0][0] == "uri"}
    mixed = by_uri & {k[1:] for k in keys.values() if k[0][0] == "index" and k[0][1] != 0}
    return {n: (k[1:] if k[1:] in mixed else k) for n, k in keys.items()}


def node_id_checked(node_id: str | None) -> str | None:
    """``node_id`` as the config gives it, its ``nsu=`` escapes checked (``namespace_uri``): a field validator."""
    if node_id is not None:
        namespace_uri(node_id)
    return node_id


class SecurityMode(enum.StrEnum):
    NONE = "None"
    SIGN = "Sign"
    SIGN_AND_ENCRYPT = "SignAndEncrypt"


class NonFinitePolicy(enum.StrEnum):
    BAD = "bad"  # pass the reading on with quality BAD (default: the consumer sees the sensor fault)
    SKIP = "skip"  # drop it (counted in stats.errors_by_reason['non_finite'])


class _Model(BaseModel):
    # .inf is no duration, size or interval: keepalive_check_s or session_timeout_s at .inf was taken, and the source
    # never connected, saying only "OverflowError: cannot convert float infinity to integer"
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class NodeSettings(_Model):
    node_id: str = Field(min_length=3, description="e.g. 'ns=2;s=Machine1.Vibration' or 'i=2258'")
    tag: str | None = Field(None, description="tag name of the readings; default: the node's browse name")
    sampling_interval_ms: float = Field(0.0, ge=0, description="0: as fast as the server samples")
    # a UInt32 in the request: a larger one was taken, and the source never connected (struct.error)
    queue_size: int = Field(1, ge=1, le=2**32 - 1, description="server-side queue per monitored item")
    sample_rate_from: str | None = Field(
        None,
        min_length=3,
        description="where the server states this waveform's sample rate: 'x_axis' (the node's "
        "XAxisDefinition property, OPC UA Part 8 YArrayItemType: the time axis' EURange over the samples) or the "
        "node id of a variable holding the rate in Hz (a vendor's SampleRate node; subscribed, so a change is seen)",
    )
    index: int | list[int] | None = Field(
        None,
        description="for a node holding a matrix (ArrayDimensions [3, 1024]: a tri-axial sensor's three "
        "axes): the row it gives as this tag's waveform (index: 1 -> row 1's 1024 samples; [0, 2] for a "
        "3-D array: one index per dimension but the last). A matrix read without index is skipped and "
        "counted (multi_dim), never passed on flattened; list the node again with another index and tag "
        "for each other row",
    )

    _node_ids_ok = field_validator("node_id", "sample_rate_from")(node_id_checked)

    @model_validator(mode="after")
    def _index_ok(self) -> NodeSettings:
        idx = [self.index] if isinstance(self.index, int) else (self.index or [])
        if isinstance(self.index, list) and not self.index:
            raise ValueError("index: an empty list picks nothing; give the row, e.g. index: 1")
        if any(i < 0 for i in idx):
            raise ValueError(f"index {self.index}: rows count from 0; negative indexes are not taken")
        return self


class HeartbeatSettings(_Model):
    """A watchdog output: while connected, the source writes this node every ``period_ms`` so that the
    PLC can tell a live agent from a dead one (and stop trusting its reject/alarm outputs)."""

    node_id: str = Field(min_length=3, description="a writable Boolean (toggle) or integer (counter) node")

    _node_id_ok = field_validator("node_id")(node_id_checked)
    period_ms: int = Field(1000, ge=100, le=3_600_000)
    kind: Literal["toggle", "counter"] = Field(
        "toggle",
        description="toggle: true/false; counter: 0, 1, ... 32767, 0 (wrapping at 127 / 255 on an SByte / Byte node)",
    )


SecurityPolicy = Literal["Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"]


class OpcUaSettings(_Model):
    produces: ClassVar[str] = "readings"  # tags, for signal pipelines, forwards and rules
    # a structure node (a PLC's UDT) gives a tag per member, "{tag}/{member}": config checks accept them
    member_tags: ClassVar[bool] = True
    type: Literal["opcua"] = "opcua"
    endpoint: str = Field(pattern=r"^opc\.tcp://", description="e.g. opc.tcp://127.0.0.1:4840/factory/")
    security_mode: SecurityMode = SecurityMode.NONE
    security_policy: SecurityPolicy = Field(
        "Basic256Sha256",
        description="Basic256Sha256, or the newer Aes128_Sha256_RsaOaep / Aes256_Sha256_RsaPss that recent PLC "
        "firmware may require",
    )
    certificate_file: str | None = Field(None, description="client certificate (PEM or DER)")
    private_key_file: str | None = None
    server_certificate_file: str | None = Field(None, description="pin the server certificate")
    username: str | None = None
    password: SecretStr | None = None
    nodes: list[NodeSettings] = Field(default_factory=list)
    publishing_interval_ms: float = Field(100.0, gt=0)
    queue_max_items: int = Field(
        10_000, ge=1, description="bounded hand-over queue; oldest dropped when full"
    )
    reconnect_initial_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    connect_timeout_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="how long each request waits for the server's answer, at most an hour: asyncua writes it "
        "into every request as a UInt32 of milliseconds, and past 49 days no request could be sent at all",
    )
    keepalive_check_s: float = Field(
        2.0,
        gt=0,
        description="how often the connection is checked (a read of the server state; the subscription's "
        "keep-alive): every third of the session timeout the server granted when that is under two checks",
    )
    session_timeout_s: float = Field(
        60.0,
        gt=0,
        description="the session timeout asked of the server: how long it keeps a session this source left "
        "behind when the connection was cut (a session in use is kept alive by the checks every "
        "keepalive_check_s); a PLC holds few sessions, and a longer timeout left one more per cut. The lifetime "
        "asked of the source's subscriptions is as long, or 3 keep-alives if longer (a keep-alive every "
        "keepalive_check_s, or every publishing interval granted if longer: 90 s at 30,000 ms), in the "
        "interval the server granted (a PLC may keep a left session's subscriptions past the session for their "
        "lifetime). Left at its default, at least twice keepalive_check_s",
    )

    @property
    def session_timeout(self) -> float:
        """The session timeout to ask for, in seconds: ``session_timeout_s``, and at least two checks."""
        return max(self.session_timeout_s, 2 * self.keepalive_check_s)

    non_finite: NonFinitePolicy = NonFinitePolicy.BAD
    timestamps: Literal["source", "server", "receive"] = Field(
        "source",
        description="the time a reading carries: the PLC's source timestamp (else the server's, else the "
        "receive time), the server's (else the receive time), or the receive time",
    )
    max_clock_skew_s: float = Field(
        300.0,
        ge=0,
        description="a timestamp further than this ahead of the gateway's clock, or behind it on a change "
        "(the first value after subscribing may be old), is not used: the next in line is, and it is "
        "counted as clock_skew; 0: never checked",
    )
    max_message_bytes: int = Field(
        16 * 1024 * 1024,
        ge=65_536,
        le=2**31 - 1,
        description="the largest message taken from the server (stated in the Hello, and held to whatever "
        "the server answers); a larger one closes the connection, counted as too_large, and the source "
        "reconnects. 16 MiB holds an array of 2 million doubles",
    )
    heartbeat: HeartbeatSettings | None = Field(None, description="watchdog node written while connected")
    watch_write_targets: bool = Field(
        True,
        strict=True,
        description="watch each write target's DataType, ArrayDimensions and UserAccessLevel with 3 monitored "
        "items a node, so that a PLC download that retypes or locks a node is noticed without a reconnect; "
        "made only after every tag got its item and within the server's stated monitored-item limits. false: "
        "none are made (a PLC with few monitored items), and a source that only writes holds no subscription; "
        "a retype is then caught by the server's type check at the write, else at the next reconnect",
    )

    @model_validator(mode="after")
    def _check(self) -> OpcUaSettings:
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must be >= reconnect_initial_s")
        # given explicitly, it must cover two checks; left at its default, it is raised to (``session_timeout``)
        if (
            "session_timeout_s" in self.model_fields_set
            and self.session_timeout_s < 2 * self.keepalive_check_s
        ):
            raise ValueError(
                f"session_timeout_s {self.session_timeout_s:g} is under twice keepalive_check_s "
                f"({self.keepalive_check_s:g}): the server could close the session between two checks; raise "
                "session_timeout_s"
            )
        if self.security_mode is not SecurityMode.NONE and not (
            self.certificate_file and self.private_key_file
        ):
            raise ValueError(
                f"security_mode {self.security_mode.value} needs certificate_file and private_key_file; "
                "add both or set security_mode: None"
            )
        if self.password is not None and self.username is None:
            raise ValueError("password given without username; add username")
        # counted once each: tags.count(t) for every tag took 25 s for a generated config of 30,000 nodes
        tags = collections.Counter(n.tag or n.node_id for n in self.nodes)
        dup = sorted(t for t, k in tags.items() if k > 1)
        if dup:
            raise ValueError(f"nodes: tag(s) {dup} appear more than once; give each node its own tag")
        by_node: dict[str, list[NodeSettings]] = {}
        for n in self.nodes:
            by_node.setdefault(n.node_id, []).append(n)
        for node_id, ns in by_node.items():
            if len(ns) > 1 and (
                any(n.index is None for n in ns) or len({str(n.index) for n in ns}) < len(ns)
            ):
                raise ValueError(
                    f"nodes: {node_id!r} is listed {len(ns)} times; list a node once, or, for the rows of a "
                    "matrix node, once per row, each with its own index and tag"
                )
        return self

    def cross_check(self, name: str, cfg: object, report) -> None:
        """Warnings (``edge-agent validate``) where the link to the PLC is weaker than it looks: a password
        over a channel without security, and a secured channel whose server certificate is not pinned
        (asyncua then takes whatever certificate the endpoint offers, so anyone answering at that
        address is trusted with the readings and the writes)."""
        if (said := endpoint_unparsed(self.endpoint)) is not None:
            report.warning(f"sources.{name}.endpoint", said)
        if self.password is not None and self.security_mode is SecurityMode.NONE:
            report.warning(
                f"sources.{name}.password",
                "with security_mode None the password may cross the network in clear text (unless the "
                "server's user token policy encrypts it); use security_mode SignAndEncrypt (with Sign the agent "
                "sends it only where the server's user token policy encrypts it)",
            )
        for i, (n, t) in enumerate(zip(self.nodes, self._default_tags(), strict=True)):
            if n.tag is None and t == n.node_id:
                report.warning(
                    f"sources.{name}.nodes[{i}].tag",
                    f"not set, and the browse name of {n.node_id!r} is likely {guess_tag(n.node_id)!r}, another "
                    f"node's tag: its readings will be tagged {n.node_id!r} so that the two are never mixed; "
                    "give it a tag of its own",
                )
        # the agent's own files, read on its machine only: the cloud's check of a tenant's fleet config
        # (local_checks off) reads no file of the service's disk (a path there told whether a file existed, and
        # /dev/zero filled the validator's memory)
        if self.security_mode is not SecurityMode.NONE and getattr(report, "local_checks", True):
            said = _own_certificate_said(self.certificate_file, self.private_key_file)
            if said:
                report.warning(f"sources.{name}.certificate_file", said)
        if self.security_mode is not SecurityMode.NONE and not self.server_certificate_file:
            report.warning(
                f"sources.{name}.server_certificate_file",
                "not set: the server's certificate is taken as the endpoint offers it, so any server at "
                f"{self.endpoint} is trusted; pin it with the certificate file exported from the PLC's OPC UA settings",
            )

    def known_tags(self) -> tuple[set[str], bool] | None:
        """The tags this source will produce, known offline, and whether some are guesses (browse names
        read from string NodeIds); None when a node's cannot be guessed (numeric, GUID, opaque ids)."""
        tags, guessed = set(), False
        for n, t in zip(self.nodes, self._default_tags(), strict=True):
            if t is None:
                return None
            guessed |= n.tag is None
            tags.add(t)
        return tags, guessed

    def _default_tags(self) -> list[str | None]:
        """Each node's tag as the source will name it, browse names guessed (``guess_tag``): a node whose
        browse name is another node's tag (configured, or the same name of a node before it) is tagged by
        its node id (``devices.opcua.client._claim_tag``)."""
        explicit = {n.tag for n in self.nodes if n.tag}
        owners: dict[str, str] = {}
        out: list[str | None] = []
        for n in self.nodes:
            t = n.tag or guess_tag(n.node_id)
            if n.tag is None and t is not None:
                t = n.node_id if t in explicit or owners.setdefault(t, n.node_id) != n.node_id else t
            out.append(t)
        return out


def guess_tag(node_id: str) -> str | None:
    """The browse name an OPC UA node most likely has: the last part of a string identifier
    (``ns=2;s=Line1.Press.Temp`` -> ``Temp``); None for numeric, GUID and opaque identifiers."""
    m = re.search(r";s=(.+)$", node_id) or (re.match(r"^s=(.+)$", node_id))
    if not m:
        return None
    last = re.split(r"[./\]:|]", m.group(1).replace('"', ""))[-1]
    return last or None


# the agent's own certificate expiring within this: said by ``validate`` ahead of the PLC refusing it
CERTIFICATE_WARN_DAYS = 30


# a certificate or key file is a few KiB (a chain of several certificates, tens): one larger is not one
CREDENTIAL_FILE_MAX_BYTES = 1024 * 1024


def _read_credential_file(path: str) -> bytes:
    """The bytes of a certificate or key file: a regular file of at most ``CREDENTIAL_FILE_MAX_BYTES`` (``OSError``
    naming the file otherwise). Opened without blocking and read within the bound, so a path to a named pipe, a
    device (/dev/zero) or a huge file neither hangs nor fills memory."""
    import errno
    import os
    import stat

    # looked at before it is opened (opening some devices acts: /dev/watchdog arms the watchdog), and again once
    # open (the path may have changed in between)
    before = os.stat(path).st_mode
    if not stat.S_ISREG(before) and not stat.S_ISDIR(before):
        raise OSError(errno.EINVAL, "not a regular file (a pipe, a device or a socket)", path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file (a pipe, a device or a socket)", path)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(CREDENTIAL_FILE_MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > CREDENTIAL_FILE_MAX_BYTES:
        raise OSError(
            errno.EFBIG, f"larger than {CREDENTIAL_FILE_MAX_BYTES} bytes: not a certificate or key file", path
        )
    return data


def read_certificate(path: str):
    """An X.509 certificate file, PEM or DER (``OSError``/``ValueError`` when it cannot be read)."""
    from cryptography import x509

    data = _read_credential_file(path)
    return (
        x509.load_pem_x509_certificate(data)
        if b"-----BEGIN" in data
        else x509.load_der_x509_certificate(data)
    )


def read_private_key(path: str):
    """A private key file without a passphrase, PEM or DER (``OSError``/``ValueError``/``TypeError`` when it
    cannot be read here, as a key with a passphrase)."""
    from cryptography.hazmat.primitives import serialization

    data = _read_credential_file(path)
    return (
        serialization.load_pem_private_key(data, None)
        if b"-----BEGIN" in data
        else serialization.load_der_private_key(data, None)
    )


def is_key_of(key, cert) -> bool:
    """Whether ``key`` is the private key of ``cert`` (their public keys are one)."""
    from cryptography.hazmat.primitives import serialization

    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key.public_key().public_bytes(*spki) == cert.public_key().public_bytes(*spki)


# what inet_aton reads as an IPv4 address: up to four parts, each a decimal, octal (0...) or hex (0x...) number
_INET_ATON = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}")


def plc_of(endpoint: str) -> tuple[str, int]:
    """The PLC an OPC UA endpoint reaches: its host, lowercased, and port (the watchdog hold judges a PLC whole,
    whichever source writes it). This host's own names are one (``localhost``, ``127.0.0.1``, ``::1``: an OPC UA
    server on the gateway, spelt two ways, let a gate through the other spelling's session go untold) and an address
    is read as one whatever its spelling (``::ffff:10.0.0.5`` is ``10.0.0.5``, and so is ``10.5`` to the resolver,
    as ``127.1`` is ``127.0.0.1``); a name and its address are not here (the agent resolves names as it runs:
    ``Agent._plc_group``). All of ``127.0.0.0/8`` is this host: a server listening on every address answers on each
    of them, so two such spellings may be one server, which the hold judges whole (it holds where either would). An
    endpoint the agent never connects to as written (``endpoint_unparsed``: a bracket not closed, no port) is a PLC
    of its own: ``(endpoint, 0)``. One with no host reaches this gateway's own server (asyncio connects to the
    loopback then): it is ``localhost``'s."""
    try:
        url = urllib.parse.urlsplit(endpoint)
        port, host = url.port, (url.hostname or "localhost").lower().rstrip(".")
    except ValueError:
        port = None
    if not port:
        return (endpoint, 0)
    return plc_at(host, port)


def plc_at(host: str, port: int) -> tuple[str, int]:
    """The PLC at ``host`` (a name or an address, as ``plc_of`` reads an endpoint's; an address a name resolves to)
    and ``port``, keyed as ``plc_of`` keys it."""
    import ipaddress

    host = host.lower().rstrip(".")
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        # an IPv4 address in a spelling the resolver takes and ipaddress refuses (``127.1``, ``0x7f.0.0.1``,
        # ``2130706433``, ``010.0.0.5``, octal: 8.0.0.5): the address the agent connects to, not a name
        if not _INET_ATON.fullmatch(host):
            return (
                "localhost" if host in ("localhost", "localhost.localdomain", "ip6-localhost") else host,
                port,
            )
        try:
            ip = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return (host, port)
    ip = getattr(ip, "ipv4_mapped", None) or ip
    return ("localhost" if ip.is_loopback or ip.is_unspecified else ip.compressed, port)


def endpoint_unparsed(endpoint: str) -> str | None:
    """Why the agent can never connect to ``endpoint`` as written (a host that does not parse: a bracket not closed,
    ``opc.tcp://[::1:4840/``, a name in brackets; a port out of range or not a number; no port, which asyncua
    reads as port 0), or None. A warning, not an error: such a config loaded before, and a gateway written so
    would no longer start at its upgrade (that source alone says it cannot connect; the rest is served)."""
    try:
        url = urllib.parse.urlsplit(endpoint)
        host, port = url.hostname, url.port
    except ValueError:
        # (its text not shown: the endpoint may be a gateway variable's, and this warning may go to the fleet)
        return (
            "does not parse as opc.tcp://host:port/path (a bracket not closed, a name in brackets, a port that is "
            "no number from 1 to 65535): this source never connects, its nodes never read nor written; write the "
            "PLC's address as opc.tcp://192.168.0.10:4840/ (an IPv6 address in brackets: opc.tcp://[fd00::10]:4840/)"
        )
    # (no host, a port: asyncio connects to the loopback; it reached a server on the gateway and beat there)
    if not host and port:
        return (
            "names no host: the agent connects to this gateway itself there (localhost), a server on it; write the "
            "PLC's address (opc.tcp://192.168.0.10:4840/; a server on the gateway: opc.tcp://127.0.0.1:4840/)"
        )
    if not host:
        return "names no host: this source never connects; write the PLC's address (opc.tcp://192.168.0.10:4840/)"
    if not port:
        return (
            "names no port: the agent connects to port 0 there, never to a server; write the server's port "
            "(OPC UA's usual one is 4840: opc.tcp://host:4840/)"
        )
    return None


def _own_certificate_said(cert_file: str | None, key_file: str | None) -> str | None:
    """What ``validate`` says of the agent's own certificate for the PLC: expired, not yet valid, expiring
    within ``CERTIFICATE_WARN_DAYS`` days, or ``key_file`` not its key (each makes the PLC refuse the
    agent), a key with a passphrase or a certificate file holding none (the source cannot connect with
    either). None when it is fine, or a file cannot be read here (validation names a missing file)."""
    if not cert_file:
        return None
    try:
        cert = read_certificate(cert_file)
    except OSError:
        return None
    except ValueError:
        return f"{cert_file} is not an X.509 certificate (PEM or DER): the source cannot connect with it"
    now = dt.datetime.now(dt.UTC)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now > end:
        return f"{cert_file} expired on {end:%Y-%m-%d}: the PLC refuses it; issue a new one and have the PLC trust it"
    if now < start:
        return (
            f"{cert_file} is valid only from {start:%Y-%m-%d %H:%M} UTC: the PLC refuses it until then; is this "
            "gateway's clock right?"
        )
    if key_file:
        try:
            key = read_private_key(key_file)
        except TypeError:  # cryptography: "Password was not given but private key is encrypted"
            return (
                f"private_key_file {key_file} is protected by a passphrase, which the source does not take: "
                "store the key without one (`openssl pkey -in KEY -out KEY.plain`)"
            )
        except (OSError, ValueError):
            key = None
        if key is not None and not is_key_of(key, cert):
            return (
                f"private_key_file {key_file} is not this certificate's key: the PLC cannot read the channel"
            )
    if end - now < dt.timedelta(days=CERTIFICATE_WARN_DAYS):
        return (
            f"{cert_file} expires on {end:%Y-%m-%d}, in {(end - now).days} days: the PLC refuses it then; issue a "
            "new one and have the PLC trust it before"
        )
    return None
