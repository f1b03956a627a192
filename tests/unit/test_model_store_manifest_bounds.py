"""An installed package's folder in the agent's data folder is a disk anyone with the gateway's shell can
edit. ``ModelStore.reopen`` (a package read back after its check in a child process, and the previous one of
a probation resumed after a restart, unchecked) read its ``manifest.yaml`` whole: a named pipe there waited
for ever (the agent's loop with it), a file of gigabytes or a link to ``/dev/zero`` filled the memory. It is
read bounded now, as ``verify_folder`` reads it: such a manifest is refused, said with its path, and the
store serves its other packages."""

from __future__ import annotations

import logging
import os
import threading

import pytest

from edge_agent.models.store import ModelStore
from model_packager import load_trusted_keys
from model_packager.package import MAX_MANIFEST_BYTES
from tests.support.models import make_package


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pkg")
    pkg_a = make_package(tmp, kind="vision", version="1.0.0")
    pkg_b = make_package(tmp, kind="vision", version="1.1.0", key=tmp / "keys" / "signing.key")
    trusted = load_trusted_keys([tmp / "keys" / "signing.pub"])
    store = ModelStore(tmp / "store")
    return store, store.install(pkg_a, trusted).root.name, store.install(pkg_b, trusted).root.name


def test_a_manifest_larger_than_a_manifest_may_be_is_refused_with_its_path(installed, caplog):
    store, a, b = installed
    manifest = store.root / a / "manifest.yaml"
    kept = manifest.read_bytes()
    try:
        with open(manifest, "ab") as f:  # sparse: past the bound without writing it
            f.truncate(MAX_MANIFEST_BYTES + 1)
        with caplog.at_level(logging.WARNING, logger="edge_agent.models.store"):
            assert store.reopen(a) is None
        assert f"model store: {manifest}: larger than {MAX_MANIFEST_BYTES} bytes" in caplog.text
        assert store.reopen(b).manifest.version == "1.1.0"  # the other package serves on
    finally:
        manifest.write_bytes(kept)
    assert store.reopen(a).manifest.version == "1.0.0"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are a POSIX file kind")
def test_a_manifest_that_is_a_named_pipe_is_refused_not_waited_for(installed, caplog):
    store, a, b = installed
    manifest = store.root / a / "manifest.yaml"
    kept = manifest.read_bytes()
    manifest.unlink()
    os.mkfifo(manifest)
    try:
        got: list = []
        with caplog.at_level(logging.WARNING, logger="edge_agent.models.store"):
            t = threading.Thread(target=lambda: got.append(store.reopen(a)), daemon=True)
            t.start()
            t.join(60)  # a bound for a hang, not a time measured: the read takes milliseconds
            hung = t.is_alive()
            if hung:  # the former code: blocked opening the pipe; a writer that opens and closes it frees it
                with open(manifest, "wb"):
                    pass
                t.join()
        assert not hung, "reopen waited on the named pipe"
        assert got == [None]
        assert f"model store: {manifest}: a named pipe, not a file" in caplog.text
        assert store.reopen(b).manifest.version == "1.1.0"
    finally:
        manifest.unlink()
        manifest.write_bytes(kept)
