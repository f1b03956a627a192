"""A trusted key file or a package path that is no regular file is looked at before it is opened: a socket is
named as one (opening it said only 'No such device or address'), and a named pipe or a device is never opened
(opening a device has effects of its own: a serial line's DTR raised, a watchdog armed; opening a pipe releases
the writer waiting on it)."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

from model_packager import PackageError, SignatureError, load_trusted_keys, package_digest


@pytest.fixture
def short_dir():
    d = Path(tempfile.mkdtemp(prefix="kk", dir="/tmp"))  # a socket's path is at most 107 bytes
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_a_key_file_or_a_package_that_is_a_socket_is_named_as_one(short_dir):
    path = short_dir / "fleet.pub"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        with pytest.raises(SignatureError) as key_err:
            load_trusted_keys([path])
        with pytest.raises(PackageError) as pkg_err:
            package_digest(path)
    finally:
        sock.close()
    assert str(key_err.value) == (
        f"trusted key {path}: cannot read a PEM public key (a socket, not a regular file); refused"
    )  # formerly '(No such device or address)'
    assert str(pkg_err.value) == "package fleet.pub: cannot read it (a socket, not a file)"


def test_a_key_file_that_is_a_named_pipe_is_refused_without_being_opened(short_dir):
    """Opened to look at its type (without blocking), the pipe let the writer waiting on it go on, into a pipe
    nobody reads; a device so opened (a tty, /dev/watchdog) acted on it."""
    fifo = short_dir / "fleet.pub"
    os.mkfifo(fifo, 0o600)
    opened = threading.Event()

    def writer() -> None:
        fd = os.open(fifo, os.O_WRONLY)  # returns once something opens the pipe for reading
        opened.set()
        os.close(fd)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    time.sleep(0.3)  # the writer waiting in its open
    try:
        with pytest.raises(SignatureError, match=r"\(a named pipe, not a regular file\); refused"):
            load_trusted_keys([fifo])
        time.sleep(0.2)
        assert not opened.is_set(), "the key reader opened the named pipe"
    finally:
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # lets the writer go
        t.join(5)
        os.close(fd)
