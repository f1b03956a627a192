"""The OPC UA source reads its certificate and key once (``_secured_by`` stands in for asyncua's private
``Client._set_security``) only where asyncua's method takes the arguments the stand-in does: the project takes
asyncua 1.1 up, whose ``_set_security`` and policies (no ``host_cert_chain``) differ; there every Sign or
SignAndEncrypt connect raised a TypeError naming no file or setting. Elsewhere asyncua reads the files itself."""

from __future__ import annotations

import asyncua

from devices.opcua import client as opc


def test_the_installed_asyncua_takes_the_stand_in():
    opc._set_security_replaceable.cache_clear()
    assert opc._set_security_replaceable()  # else the key is read twice per connect again: see d0c9f250


def test_an_asyncua_whose_set_security_differs_keeps_its_own(monkeypatch):
    async def older(
        self, policy, certificate, private_key, server_certificate=None, mode=None
    ):  # 1.1's shape
        raise AssertionError("not called here")

    monkeypatch.setattr(asyncua.Client, "_set_security", older)
    opc._set_security_replaceable.cache_clear()
    try:
        assert not opc._set_security_replaceable()
        c = asyncua.Client("opc.tcp://127.0.0.1:4840")
        opc._secured_by(c, None, None, None)
        assert c._set_security.__func__ is older  # asyncua's own, untouched
    finally:
        opc._set_security_replaceable.cache_clear()
