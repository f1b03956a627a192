"""The freezing relay of ``tests.support.freeze_relay`` is the network between a client and its peer while it
flows: the tests of half-open connections (test_halfopen) rely on it passing everything else as a network
does, ends included, so that what they see is the freeze and not the relay."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

from tests.support.freeze_relay import FreezeRelay


def _serve_once(server: socket.socket, answer: bool) -> None:
    conn, _ = server.accept()
    with conn, contextlib.suppress(OSError):
        got = 0
        while data := conn.recv(65536):
            got += len(data)
        if answer:
            conn.sendall(b"read %d" % got)  # only once the client's end came, behind its bytes


def test_the_relay_passes_each_end_on_behind_what_went_before_and_the_other_way_goes_on() -> None:
    """The client sends, the path freezes, the client shuts its side and the path thaws: the server reads
    every byte, then the client's end, and its answer still reaches the client, whose side stays open until
    the server's own end. The relay shut both sides at the client's FIN: the client's side closed before
    the server's answer (a client that says its last words, shuts its side and awaits its peer's close got
    the relay's close before the peer had read them, the flaw tcp_cut's CutRelay had)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(60)
    relay = FreezeRelay(server.getsockname()[1])
    threading.Thread(target=_serve_once, args=(server, True), daemon=True).start()
    back = b""
    try:
        with socket.create_connection(("127.0.0.1", relay.port), timeout=60) as c:
            c.sendall(b"x" * 50_000)
            relay.freeze()
            c.sendall(b"y" * 50_000)  # held, with the end behind it
            c.shutdown(socket.SHUT_WR)
            relay.thaw()
            while data := c.recv(65536):
                back += data
    finally:
        relay.close()
        server.close()
    assert back == b"read 100000", back


def test_a_reset_of_one_side_ends_the_other() -> None:
    """The server resets its connection: the client sees its connection end instead of waiting for ever on
    an open socket (the relay gave up the pair at the reset without a word to the client)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(60)
    relay = FreezeRelay(server.getsockname()[1])

    def reset() -> None:
        conn, _ = server.accept()
        conn.recv(1)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # an RST, not a FIN

    threading.Thread(target=reset, daemon=True).start()
    ended = False
    try:
        with socket.create_connection(("127.0.0.1", relay.port), timeout=30) as c:
            c.sendall(b"x")
            try:
                ended = c.recv(65536) == b""
            except ConnectionResetError:
                ended = True
            except TimeoutError:
                ended = False
    finally:
        relay.close()
        server.close()
    assert ended, "the client's side stayed open after the server's reset"
