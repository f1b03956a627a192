"""OPC UA source with Basic256Sha256 SignAndEncrypt, client certificates and username/password."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from devices.base import ConnectionState
from devices.opcua.client import OpcUaError, OpcUaNotConnected, OpcUaSource, browse_server
from devices.opcua.settings import OpcUaSettings, SecurityMode
from simulators.machine import MachineSecurity, MachineServer
from tests.support.certs import dated_certificate, locked_key
from tests.support.once import built_once
from tests.support.peers import free_port

# One RSA-2048 key per role, made once per test run: making one takes ~0.05-0.1 s of CPU, and this file made
# ten, one per certificate. Each certificate is still made here, with its own name, dates and extensions; only
# certificates of different roles must differ in key (the stranger's and the renewed server's are not the
# client's or the server's: the tests below rely on that). Read back here without cryptography's check of the
# key's numbers (~0.04 s of CPU a read): they are this run's own keys, as made. The source and the simulated
# PLC read them as they read any key (asyncua's loader, every check).
KEY_ROLES = ("server", "client", "stranger", "renewed", "own")


def _make_keys(folder: Path) -> dict[str, Path]:
    from cryptography.hazmat.primitives.asymmetric import rsa

    keys = {}
    for role in KEY_ROLES:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        keys[role] = folder / f"{role}.pem"
        keys[role].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return keys


@pytest.fixture(scope="session")
def rsa_keys(tmp_path_factory) -> dict[str, Path]:
    return built_once(tmp_path_factory, "opcua-security-rsa-keys", _make_keys)


def _cert(tmp: Path, stem: str, uri: str, server: bool, key_file: Path) -> tuple[Path, Path]:
    from asyncua.crypto.cert_gen import generate_self_signed_app_certificate

    key = serialization.load_pem_private_key(key_file.read_bytes(), None, unsafe_skip_rsa_key_validation=True)
    assert isinstance(key, rsa.RSAPrivateKey)
    sans = [
        x509.UniformResourceIdentifier(uri),
        x509.DNSName(socket.gethostname()),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    eku = [ExtendedKeyUsageOID.SERVER_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]
    cert = generate_self_signed_app_certificate(key, stem, {}, sans, eku, days=2)
    cp, kp = tmp / f"{stem}.der", tmp / f"{stem}.pem"
    cp.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    kp.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return cp, kp


@pytest.fixture(scope="module")
def certs(tmp_path_factory, rsa_keys) -> dict[str, tuple[Path, Path]]:
    tmp = tmp_path_factory.mktemp("opcua-pki")
    return {
        "server": _cert(tmp, "server", "urn:freeopcua:python:server", True, rsa_keys["server"]),
        "client": _cert(tmp, "client", "urn:factory-edge:agent", False, rsa_keys["client"]),
        "stranger": _cert(tmp, "stranger", "urn:factory-edge:stranger", False, rsa_keys["stranger"]),
    }


@pytest.fixture
async def secure_machine(certs):
    sec = MachineSecurity(
        cert_path=certs["server"][0],
        key_path=certs["server"][1],
        users={"op": "s3cret"},
        trusted_client_certs=(certs["client"][0],),
    )
    srv = MachineServer(free_port(), period_ms=50, window_samples=128, security=sec)
    await srv.start()
    yield srv
    await srv.stop()


def _settings(srv: MachineServer, certs, who: str = "client", password: str = "s3cret") -> OpcUaSettings:
    return OpcUaSettings(
        endpoint=srv.endpoint,
        security_mode="SignAndEncrypt",
        certificate_file=str(certs[who][0]),
        private_key_file=str(certs[who][1]),
        server_certificate_file=str(certs["server"][0]),
        username="op",
        password=password,
        nodes=[{"node_id": srv.node_id("Speed")}],
        publishing_interval_ms=50,
        reconnect_initial_s=0.2,
        reconnect_max_s=0.5,
        connect_timeout_s=3.0,
    )


async def _wait_state(src: OpcUaSource, states: set[ConnectionState], timeout_s: float = 8.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if src.state in states:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"state stayed {src.state}")


async def test_sign_and_encrypt_with_trusted_certificate_and_password_streams_readings(
    secure_machine, certs
) -> None:
    src = OpcUaSource("secure", _settings(secure_machine, certs))
    await src.start()
    try:
        first = await asyncio.wait_for(src.items().__anext__(), 30)
        assert first.tag == "Speed" and src.state is ConnectionState.CONNECTED
        await src.write(secure_machine.node_id("Reject"), True)
        for _ in range(1500):
            if secure_machine.reject_count:
                break
            await asyncio.sleep(0.02)
        assert secure_machine.reject_count == 1
    finally:
        await src.stop()


async def test_a_pem_key_and_certificates_named_key_and_crt_are_read_as_pem(
    secure_machine, certs, tmp_path
) -> None:
    """asyncua takes a file for PEM only when its name ends in ``.pem``: the agent's PEM key named ``agent.key``
    and certificates named ``.crt`` (openssl's and PLC tools' names) were read as DER, and the source never
    connected ("connect: ValueError: Could not deserialize key data"). Their format is now told by content."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    def pem_cert(der: Path, name: str) -> str:
        out = tmp_path / name
        out.write_bytes(
            x509.load_der_x509_certificate(der.read_bytes()).public_bytes(serialization.Encoding.PEM)
        )
        return str(out)

    key = tmp_path / "agent.key"
    key.write_bytes(certs["client"][1].read_bytes())  # PEM
    settings = _settings(secure_machine, certs).model_copy(
        update={
            "certificate_file": pem_cert(certs["client"][0], "agent.crt"),
            "private_key_file": str(key),
            "server_certificate_file": pem_cert(certs["server"][0], "plc.crt"),
        }
    )
    src = OpcUaSource("secure", settings)
    await src.start()
    try:
        first = await asyncio.wait_for(src.items().__anext__(), 30)
        assert first.tag == "Speed" and src.state is ConnectionState.CONNECTED, src.stats.last_error
    finally:
        await src.stop()


async def test_wrong_password_is_refused_with_a_clear_error(secure_machine, certs) -> None:
    src = OpcUaSource("secure", _settings(secure_machine, certs, password="guess"))
    await src.start()
    try:
        await _wait_state(src, {ConnectionState.BACKOFF})
        assert src.stats.errors_by_reason.get("auth", 0) >= 1, src.stats.last_error
        assert "username/password" in (src.stats.last_error or "")
    finally:
        await src.stop()


async def test_untrusted_client_certificate_is_refused_with_a_clear_error(secure_machine, certs) -> None:
    src = OpcUaSource("secure", _settings(secure_machine, certs, who="stranger"))
    await src.start()
    try:
        await _wait_state(src, {ConnectionState.BACKOFF})
        assert src.stats.errors_by_reason.get("certificate", 0) >= 1, src.stats.last_error
        assert "certificate" in (src.stats.last_error or "")
    finally:
        await src.stop()


@pytest.mark.parametrize(
    "policy, server_name",
    [("Aes128_Sha256_RsaOaep", "Aes128Sha256RsaOaep"), ("Aes256_Sha256_RsaPss", "Aes256Sha256RsaPss")],
)
async def test_a_plc_that_offers_only_an_aes_policy_is_read_and_written(certs, policy, server_name) -> None:
    """Recent PLC firmware can be set to the newer AES policies only; the agent connected with
    Basic256Sha256 alone before (the setting accepted no other value), and a client set to a policy the
    server does not offer got "timeout: no answer", not what to set."""
    sec = MachineSecurity(
        cert_path=certs["server"][0],
        key_path=certs["server"][1],
        users={"op": "s3cret"},
        trusted_client_certs=(certs["client"][0],),
        policy=server_name,
    )
    srv = MachineServer(free_port(), period_ms=50, window_samples=128, security=sec)
    await srv.start()
    # Basic256Sha256, and no security: the server offers neither (a short timeout: it does not answer them)
    plain = OpcUaSource("plain", _settings(srv, certs).model_copy(update={"connect_timeout_s": 1.0}))
    open_ = OpcUaSource("open", OpcUaSettings(endpoint=srv.endpoint, nodes=[], connect_timeout_s=1.0))
    src = OpcUaSource("aes", _settings(srv, certs).model_copy(update={"security_policy": policy}))
    await plain.start()
    await open_.start()
    await src.start()
    try:
        first = await asyncio.wait_for(src.items().__anext__(), 30)
        assert first.tag == "Speed" and src.state is ConnectionState.CONNECTED
        await src.write(srv.node_id("Reject"), True)
        for _ in range(1500):
            if srv.reject_count:
                break
            await asyncio.sleep(0.02)
        assert srv.reject_count == 1
        await _wait_state(plain, {ConnectionState.BACKOFF})
        # the server just does not answer that channel; the error says what it offers instead of "timeout"
        assert plain.stats.errors_by_reason.get("security_policy", 0) >= 1, plain.stats.last_error
        assert (
            f"does not offer Basic256Sha256 SignAndEncrypt; it offers: {policy} Sign, {policy} SignAndEncrypt"
            in (plain.stats.last_error or "")
        )
    finally:
        await plain.stop()
        await open_.stop()
        await src.stop()
        await srv.stop()


def _thumbprint(cert_file: Path) -> str:
    return x509.load_der_x509_certificate(cert_file.read_bytes()).fingerprint(hashes.SHA1()).hex().upper()


async def test_a_server_presenting_another_certificate_than_the_pinned_one_is_named_with_both_thumbprints(
    certs, tmp_path, rsa_keys
) -> None:
    """A server at the PLC's address presenting another certificate than the pinned ``server_certificate_file``
    (a machine in the middle, or the PLC after its certificate was renewed) cannot read the channel the agent
    encrypts for the pinned certificate's key: it does not answer (a real PLC refuses it,
    BadSecurityChecksFailed). The error was "timeout: no answer within 3.0s; check the endpoint and the
    server", which hid both the attack and the fix. It names the file, both certificates' thumbprints and the
    fix now; nothing is read or written, and the agent's other sources go on."""
    renewed = _cert(tmp_path, "renewed", "urn:freeopcua:python:server", True, rsa_keys["renewed"])
    sec = MachineSecurity(
        cert_path=renewed[0],
        key_path=renewed[1],
        users={"op": "s3cret"},
        trusted_client_certs=(certs["client"][0],),
    )
    srv = MachineServer(free_port(), period_ms=50, window_samples=128, security=sec)
    other = MachineServer(free_port(), period_ms=50, window_samples=128)
    await srv.start()
    await other.start()
    pinned = OpcUaSource("pinned", _settings(srv, certs))  # pins certs["server"]
    line2 = OpcUaSource(
        "line2",
        OpcUaSettings(
            endpoint=other.endpoint, nodes=[{"node_id": other.node_id("Speed")}], publishing_interval_ms=50
        ),
    )
    await pinned.start()
    await line2.start()
    try:
        for _ in range(600):
            if pinned.stats.errors_by_reason.get("certificate"):
                break
            await asyncio.sleep(0.05)
        said = pinned.stats.last_error or ""
        assert pinned.stats.errors_by_reason.get("certificate", 0) >= 1, said
        assert (
            f"presents another certificate (CN=renewed, SHA-1 thumbprint {_thumbprint(renewed[0])})" in said
        )
        assert f"server_certificate_file '{certs['server'][0]}' (CN=server, SHA-1 thumbprint " in said, said
        assert (
            _thumbprint(certs["server"][0]) in said and "save the PLC's new certificate to that file" in said
        )
        with pytest.raises(OpcUaNotConnected):
            await pinned.write(srv.node_id("Reject"), True)
        assert srv.writes == [] and pinned.stats.received == 0
        first = await asyncio.wait_for(line2.items().__anext__(), 30)  # the other source is served
        assert first.tag == "Speed" and line2.state is ConnectionState.CONNECTED
    finally:
        await pinned.stop()
        await line2.stop()
        await srv.stop()
        await other.stop()


def _own_cert(
    tmp: Path, stem: str, uri: str | None, days: tuple[int, int], key_file: Path
) -> tuple[Path, Path]:
    """A client certificate valid from ``days[0]`` to ``days[1]`` days from now, with ``uri`` in its
    subjectAltName (None: only host names, as a certificate made for a web server has)."""
    return dated_certificate(tmp, stem, days, uri, key_file=key_file)


@pytest.mark.parametrize(
    "case, uri, days, said",
    [
        (
            "untrusted",
            "urn:factory-edge:agent",
            (-1, 2),
            "the PLC does not trust the agent's certificate_file",
        ),
        ("expired", "urn:factory-edge:agent", (-10, -1), " expired on "),
        ("not_yet_valid", "urn:factory-edge:agent", (3, 10), " is valid only from "),
        ("no_uri", None, (-1, 2), "names no application URI"),
    ],
)
async def test_a_refused_agent_certificate_is_named_with_its_thumbprint_and_what_to_do_on_the_plc(
    certs, tmp_path, rsa_keys, case, uri, days, said
) -> None:
    """The agent's own certificate refused by the PLC: not yet trusted there (the first connect to a Siemens
    or Beckhoff PLC: BadCertificateUntrusted), expired or not yet valid (BadCertificateTimeInvalid), or naming
    no application URI to announce (BadCertificateUriInvalid). Each was "make the server trust certificate_file
    ... and check the server_certificate_file", which for an expired certificate or a missing URI sent the
    engineer to the wrong fix. The error names the file, its SHA-1 thumbprint (as the PLC lists it) and the
    fix; the source retries with its backoff, nothing read."""
    from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions

    own = _own_cert(tmp_path, case, uri, days, rsa_keys["own"])
    sec = MachineSecurity(cert_path=certs["server"][0], key_path=certs["server"][1], users={"op": "s3cret"})
    srv = MachineServer(free_port(), period_ms=50, window_samples=128, security=sec)
    await srv.start()
    trusted = {certs["client"][0].read_bytes()} if case == "untrusted" else {own[0].read_bytes()}

    async def plc(
        cert: x509.Certificate, app
    ) -> None:  # checks as a PLC does: dates, URI, then its trust list
        from asyncua import ua
        from asyncua.common.utils import ServiceError

        await CertificateValidator(CertificateValidatorOptions.BASIC_VALIDATION)(cert, app)
        if cert.public_bytes(serialization.Encoding.DER) not in trusted:
            raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)

    assert srv._server is not None
    srv._server.set_certificate_validator(plc)
    settings = _settings(srv, certs).model_copy(
        update={"certificate_file": str(own[0]), "private_key_file": str(own[1])}
    )
    src = OpcUaSource("secure", settings)
    await src.start()
    try:
        await _wait_state(src, {ConnectionState.BACKOFF})
        last = src.stats.last_error or ""
        assert src.stats.errors_by_reason.get("certificate", 0) >= 1, last
        assert said in last, last
        assert f"'{own[0]}' (CN={case}, SHA-1 thumbprint {_thumbprint(own[0])})" in last, last
        assert src.stats.received == 0
    finally:
        await src.stop()
        await srv.stop()


async def test_a_password_the_sign_endpoint_would_take_in_clear_text_is_not_sent(
    secure_machine, certs
) -> None:
    """``security_mode: Sign`` signs the channel but does not encrypt it: a PLC whose Sign endpoint's user token
    policy names no security policy takes the password as it is. asyncua sent it so, readable by anyone on the
    line, saying only "Sending plain-text password" (the login succeeded, readings flowed). The login is refused
    before the password is sent, naming the fix; the same server with SignAndEncrypt is read."""
    from asyncua import ua
    from asyncua.crypto import security_policies

    received: list[str] = []
    srv = secure_machine
    assert srv._server is not None
    for ep in srv._server.iserver.endpoints:  # as such a PLC offers it
        if ep.SecurityMode == ua.MessageSecurityMode.Sign:
            for token in ep.UserIdentityTokens:
                token.SecurityPolicyUri = security_policies.SecurityPolicyNone.URI
    users = srv._server.iserver.user_manager
    get_user = users.get_user

    def recording(iserver, username=None, password=None, certificate=None):
        received.append(password)
        return get_user(iserver, username, password, certificate)

    users.get_user = recording
    signed = OpcUaSource(
        "signed", _settings(srv, certs).model_copy(update={"security_mode": SecurityMode.SIGN})
    )
    encrypted = OpcUaSource("encrypted", _settings(srv, certs))
    await signed.start()
    await encrypted.start()
    try:
        first = await asyncio.wait_for(encrypted.items().__anext__(), 30)
        assert first.tag == "Speed"
        await _wait_state(signed, {ConnectionState.BACKOFF})
        last = signed.stats.last_error or ""
        assert signed.stats.errors_by_reason.get("auth", 0) >= 1, last
        assert "password unencrypted over the Basic256Sha256 Sign channel" in last, last
        assert "not sent: set security_mode SignAndEncrypt" in last and "s3cret" not in last, last
        assert signed.stats.received == 0
        assert received == ["s3cret"]  # the SignAndEncrypt source's login alone
    finally:
        await signed.stop()
        await encrypted.stop()


async def test_a_private_key_that_is_not_the_certificates_is_named_not_taken_for_a_timeout(
    secure_machine, certs
) -> None:
    """``private_key_file`` of another certificate (an earlier one's, after the certificate was renewed, or
    another gateway's): the server cannot read the channel signed with it and does not answer; the error was
    "timeout: no answer within 3.0s; check the endpoint and the server". It names both files now."""
    settings = _settings(secure_machine, certs).model_copy(
        update={"private_key_file": str(certs["stranger"][1])}
    )
    src = OpcUaSource("secure", settings)
    await src.start()
    try:
        await _wait_state(src, {ConnectionState.BACKOFF})
        last = src.stats.last_error or ""
        assert src.stats.errors_by_reason.get("certificate", 0) >= 1, last
        assert (
            f"private_key_file '{certs['stranger'][1]}' is not the key of certificate_file '{certs['client'][0]}'"
            in last
        ), last
        assert src.stats.received == 0
    finally:
        await src.stop()


async def test_a_key_with_a_passphrase_or_a_file_that_is_no_certificate_is_a_certificate_error_naming_it(
    secure_machine, certs, tmp_path
) -> None:
    """A ``private_key_file`` protected by a passphrase (which the source takes no setting for) was said as
    "auth: login refused for user 'op' (TypeError: Password was not given but private key is encrypted);
    check username/password"; a ``certificate_file`` that holds no certificate as "connect: ValueError: error
    parsing asn1 value", naming no file (so was a pinned ``server_certificate_file`` holding none); a path
    that is a folder as "cannot reach ...: is the server
    running?". Each is now a ``certificate`` error naming the file and what is wrong with it."""
    locked = locked_key(certs["client"][1], tmp_path / "locked.pem")
    junk = tmp_path / "junk.der"
    junk.write_bytes(b"not a certificate")
    cases = [
        ({"private_key_file": str(locked)}, f"private_key_file '{locked}' is protected by a passphrase"),
        ({"certificate_file": str(junk)}, f"certificate_file '{junk}' is not an X.509 certificate"),
        (
            {"certificate_file": str(tmp_path)},
            f"certificate_file '{tmp_path}' cannot be read (Is a directory)",
        ),
        (
            {"server_certificate_file": str(junk)},
            f"server_certificate_file '{junk}' is not an X.509 certificate",
        ),
    ]
    for update, said in cases:
        src = OpcUaSource("secure", _settings(secure_machine, certs).model_copy(update=update))
        await src.start()
        try:
            await _wait_state(src, {ConnectionState.BACKOFF})
            last = src.stats.last_error or ""
            assert src.stats.errors_by_reason == {"certificate": 1}, last
            assert said in last, last
        finally:
            await src.stop()


async def test_browse_and_validate_online_say_a_downgrade_a_foreign_certificate_and_a_wrong_key_in_one_line(
    certs, tmp_path, rsa_keys
) -> None:
    """``edge-agent browse`` and ``validate --online`` (one-off clients, which take ``OpcUaError`` as the
    answer): a server offering only None where SignAndEncrypt is set, without a pinned certificate, ended them
    in asyncua's ``UaError: No matching endpoints`` traceback; a server presenting another certificate than
    the pinned one was "no answer". Each is one OpcUaError naming what the source's error names."""
    renewed = _cert(tmp_path, "renewed", "urn:freeopcua:python:server", True, rsa_keys["renewed"])
    plain = MachineServer(free_port(), period_ms=50, window_samples=128)
    other = MachineServer(
        free_port(),
        period_ms=50,
        window_samples=128,
        security=MachineSecurity(renewed[0], renewed[1], users={"op": "s3cret"}),
    )
    await plain.start()
    await other.start()
    try:
        unpinned = _settings(plain, certs).model_copy(update={"server_certificate_file": None})
        with pytest.raises(OpcUaError) as refused:
            await browse_server(unpinned)
        assert "does not offer Basic256Sha256 SignAndEncrypt; it offers: None None" in str(refused.value)
        # a downgrade is not answered with "set security_mode ... to one of those" (that is: None, in clear)
        assert "offers no secured endpoint: turn security back on" in str(refused.value), refused.value
        assert "to one of those" not in str(refused.value)
        with pytest.raises(OpcUaError) as refused:
            await browse_server(_settings(other, certs).model_copy(update={"connect_timeout_s": 1.0}))
        assert "presents another certificate (CN=renewed, SHA-1 thumbprint" in str(refused.value), (
            refused.value
        )
        wrong_key = _settings(other, certs).model_copy(update={"private_key_file": str(certs["stranger"][1])})
        with pytest.raises(OpcUaError, match="is not the key of certificate_file"):
            await browse_server(wrong_key)
    finally:
        await plain.stop()
        await other.stop()


async def test_asyncuas_note_on_the_agents_certificate_is_logged_once_not_at_every_reconnect(
    certs, tmp_path, rsa_keys, caplog
) -> None:
    """asyncua checks the agent's certificate at every connect attempt and warns, each time, that it lacks
    the gateway's host name: a PLC away for a day (a reconnect every reconnect_max_s) gave thousands of
    such lines. It is logged once."""
    import logging

    own = _own_cert(
        tmp_path, "nohost", "urn:factory-edge:agent", (-1, 2), rsa_keys["own"]
    )  # "localhost" only
    settings = OpcUaSettings(
        endpoint=f"opc.tcp://127.0.0.1:{free_port()}/factory/",  # nothing listening: the PLC away
        security_mode="SignAndEncrypt",
        certificate_file=str(own[0]),
        private_key_file=str(own[1]),
        server_certificate_file=str(certs["server"][0]),
        nodes=[],
        reconnect_initial_s=0.05,
        reconnect_max_s=0.1,
        connect_timeout_s=1.0,
    )
    caplog.set_level(logging.WARNING, logger="asyncua")
    src = OpcUaSource("away", settings)
    await src.start()
    try:
        for _ in range(600):
            if src.stats.errors_by_reason.get("unreachable", 0) >= 3:
                break
            await asyncio.sleep(0.05)
        assert src.stats.errors_by_reason.get("unreachable", 0) >= 3, src.stats.errors_by_reason
    finally:
        await src.stop()
    notes = [r for r in caplog.records if "certificate does not contain the hostname" in r.getMessage()]
    assert len(notes) <= 1, [r.getMessage() for r in notes]


async def test_the_private_key_is_read_once_per_version_of_its_file_not_twice_at_every_connect(
    secure_machine, certs, tmp_path, monkeypatch
) -> None:
    """Each connect of a SignAndEncrypt source read its private key twice, each read checking the RSA key's
    numbers (~0.04 s of CPU): the source's own check that it is the certificate's key, then asyncua's
    ``load_private_key``, at every reconnect attempt while a PLC is away. It is read once per version of the
    file: connects read it no more, and a key file replaced (a renewed key) is read again."""
    from asyncua.crypto import uacrypto

    from devices.opcua import client as client_module

    reads: list[str] = []
    ours, theirs = client_module.read_private_key, uacrypto.load_private_key

    def counted(path):
        reads.append("ours")
        return ours(path)

    async def counted_theirs(*a, **k):
        reads.append("asyncua")
        return await theirs(*a, **k)

    monkeypatch.setattr(client_module, "read_private_key", counted)
    monkeypatch.setattr(uacrypto, "load_private_key", counted_theirs)
    key = tmp_path / "agent.pem"
    key.write_bytes(certs["client"][1].read_bytes())
    settings = _settings(secure_machine, certs).model_copy(update={"private_key_file": str(key)})
    for _ in range(2):
        src = OpcUaSource("secure", settings)
        await src.start()
        try:
            await _wait_state(src, {ConnectionState.CONNECTED})
        finally:
            await src.stop()
    assert reads == ["ours"], reads
    key.write_bytes(certs["client"][1].read_bytes() + b"\n")  # the key file rewritten
    src = OpcUaSource("secure", settings)
    await src.start()
    try:
        await _wait_state(src, {ConnectionState.CONNECTED})
    finally:
        await src.stop()
    assert reads == ["ours", "ours"], reads
