"""A TCP relay on a free loopback port that a test can cut: the network between a client and its peer
(a switch restarted, a cable pulled) without stopping the peer.

``hold_upstream()`` stops passing what the client sends (a dead link's packets are lost: a broker never
gets the PUBACK of the messages it delivered), ``cut()`` closes every relayed connection (both sides see
the connection end); connections made afterwards are relayed normally.

Otherwise the relay is the network: one side's orderly end (its FIN) reaches the other behind every byte
sent before it, and the other way goes on until that side ends too (a half-close), so a client that sends
its DISCONNECT, shuts its side and awaits the broker's close (``MqttSource.stop()``) gets the broker's own
close, after the broker has read everything. A reset ends both ways."""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.support.peers import free_port


class CutRelay:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.host, self.upstream_port = host, upstream_port
        self.port = free_port()
        self._server = socket.create_server((host, self.port))
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._held = False
        self.connections = 0  # accepted so far
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection((self.host, self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._pairs.append((client, upstream))
                self.connections += 1
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if from_client and self._held:
                    continue  # lost on the dead link
                dst.sendall(data)
        except OSError:  # a reset (or the cut): both ways end
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            return
        if from_client and self._held:
            return  # the end is lost on the dead link too
        # passed on behind what went before; the other way goes on until its own end. Shutting both here
        # closes the client's side at its FIN: the client takes that for the broker's close while a broker
        # slow to read (a loaded machine) has not yet read the last PUBACKs nor the DISCONNECT
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def hold_upstream(self) -> None:
        """From now on, what the client sends on its current connections goes nowhere."""
        self._held = True

    def cut(self) -> None:
        """End every relayed connection; the next ones are relayed both ways again."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
            for a, b in pairs:
                for s in (a, b):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)
                    s.close()
            self._held = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._server.close()
