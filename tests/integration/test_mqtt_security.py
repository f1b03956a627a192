"""MqttSource over TLS with client certificates (certs made here with `cryptography`), username/password,
and refusals with clear errors: a broker certificate from an unknown CA, a wrong password."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import shutil
import subprocess
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

from devices.base import ConnectionState
from devices.mqtt.client import MqttSource
from devices.mqtt.settings import MqttSettings
from tests.support.peers import Mosquitto, free_port

# Run as root, Mosquitto drops to user "mosquitto", who cannot read pytest's 0700 tmp folders;
# "user root" keeps it (no effect when the tests run as an ordinary user).
KEEP_USER = "user root\n"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: Path, cert, key) -> None:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def make_ca(folder: Path, cn: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    _write(folder / cn, cert, key)
    return cert, key


def make_leaf(folder: Path, cn: str, ca, *, server: bool) -> None:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if server:
        b = b.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    _write(folder / cn, b.sign(ca_key, hashes.SHA256()), key)


@pytest.fixture
def tls_broker(tmp_path):
    pki = tmp_path / "pki"
    pki.mkdir()
    ca = make_ca(pki, "ca")
    make_leaf(pki, "server", ca, server=True)
    make_leaf(pki, "client", ca, server=False)
    make_ca(pki, "otherca")
    tls_port = free_port()
    conf = (
        f"listener {tls_port} 127.0.0.1\ncafile {pki / 'ca.crt'}\ncertfile {pki / 'server.crt'}\n"
        f"keyfile {pki / 'server.key'}\nrequire_certificate true\n{KEEP_USER}"
    )
    broker = Mosquitto(tmp_path / "mosq", tls_port=tls_port, extra_conf=conf).start()
    yield broker, pki
    broker.stop()


async def test_mutual_tls_subscription_receives_json(tls_broker):
    broker, pki = tls_broker
    tls = {
        "ca_file": str(pki / "ca.crt"),
        "cert_file": str(pki / "client.crt"),
        "key_file": str(pki / "client.key"),
    }
    src = MqttSource(
        "tls", MqttSettings(port=broker.tls_port, tls=tls, subscriptions=[{"topic": "t/#", "qos": 1}])
    )
    await src.start()
    try:
        await asyncio.wait_for(src.subscribed.wait(), 30)  # the SUBACK: nothing published is missed
        pub = paho.Client(CallbackAPIVersion.VERSION2)
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        pub.publish("t/1", json.dumps({"v": 3.5}), qos=1).wait_for_publish(2)
        pub.disconnect()  # first: paho's thread ends now, not at its next 1 s select
        pub.loop_stop()
        reading = await asyncio.wait_for(anext(src.items()), 30)
    finally:
        await src.stop()
    assert (reading.tag, reading.value) == ("t/1/v", 3.5)


async def test_broker_certificate_from_unknown_ca_is_refused_with_clear_error(tls_broker):
    broker, pki = tls_broker
    tls = {
        "ca_file": str(pki / "otherca.crt"),
        "cert_file": str(pki / "client.crt"),
        "key_file": str(pki / "client.key"),
    }
    src = MqttSource("tls", MqttSettings(port=broker.tls_port, tls=tls, subscriptions=[{"topic": "t/#"}]))
    await src.start()
    try:
        assert src.state is ConnectionState.BACKOFF
        assert src.stats.errors_by_reason.get("tls_failed") == 1
        assert "certificate verify failed" in src.stats.last_error and "tls.ca_file" in src.stats.last_error
    finally:
        await src.stop()


@pytest.fixture
def auth_broker(tmp_path):
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd not installed (package mosquitto)")
    pw = tmp_path / "passwd"
    pw.write_text("")
    subprocess.run([tool, "-b", str(pw), "edge", "s3cret"], check=True)
    broker = Mosquitto(tmp_path / "mosq", extra_conf=f"password_file {pw}\n{KEEP_USER}").start()
    yield broker
    broker.stop()


async def test_username_password_login_works_and_wrong_password_is_refused(auth_broker):
    ok = MqttSource("ok", MqttSettings(port=auth_broker.port, username="edge", password="s3cret"))
    bad = MqttSource("bad", MqttSettings(port=auth_broker.port, username="edge", password="nope"))
    await ok.start()
    await bad.start()
    try:
        await asyncio.wait_for(ok.connected.wait(), 30)
        for _ in range(1500):
            if bad.stats.errors_by_reason.get("connect_refused"):
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0)  # let the loop run the thread-safe error hand-over
    finally:
        await ok.stop()
        await bad.stop()
    assert bad.stats.errors_by_reason.get("connect_refused", 0) >= 1
    assert "check username/password" in bad.stats.last_error
