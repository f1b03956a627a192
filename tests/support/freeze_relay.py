"""A TCP relay on a free loopback port that a test can freeze: a connection that dies without a word (a
NAT or firewall that timed out an idle flow, a switch rebooting, a cable pulled beyond a switch, a VPN
re-keying). Neither side gets a FIN or an RST; both keep their socket ESTABLISHED.

``freeze()``: the relay stops forwarding both ways and reads nothing more from either socket, so what a side
writes stays in the kernel's buffers (as packets would on a dead link, retransmitted until it comes back).
New connections made while frozen are accepted by the kernel but not relayed (a client sees its connect
succeed and then silence, like a flow through a NAT that lost its state).
``thaw()``: everything held flows again, in order, on the same connections.
``drop()``: the connections of the moment are abandoned for good, silently (their sockets stay open and
read nothing until ``close()``); connections made afterwards are relayed normally, as a new NAT mapping is.

``up_bytes_per_s``: the relay forwards what the client sends at most this fast (a slow uplink: a cellular
modem at 20-50 KB/s); what the client writes meanwhile waits in the kernel's buffers, and is acknowledged
as it goes on, as on such a link.

Otherwise the relay is the network: one side's orderly end (its FIN) reaches the other behind every byte
sent before it, and the other way goes on until that side ends too (a half-close); a reset ends both ways.
While frozen, an end waits with the bytes before it and is passed on at the thaw.

``cut()`` of ``tests.support.tcp_cut`` closes the connections (both sides see it end): this is the other case."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time

from tests.support.peers import free_port


class _Pair:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client, self.upstream = client, upstream
        self.dead = False  # dropped: never forwarded again


class FreezeRelay:
    def __init__(
        self, upstream_port: int, host: str = "127.0.0.1", up_bytes_per_s: float | None = None
    ) -> None:
        self.host, self.upstream_port = host, upstream_port
        self.up_bytes_per_s = up_bytes_per_s
        self.port = free_port()
        self._server = socket.create_server((host, self.port))
        if up_bytes_per_s:
            # a small receive buffer (the accepted sockets inherit it): the relay acknowledges what it is about
            # to forward, not megabytes ahead, so the client's bytes are acknowledged at the link's pace, as the
            # far end of a slow link does (a big buffer would acknowledge the whole message at once)
            self._server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self._pairs: list[_Pair] = []
        self._dropped: list[_Pair] = []  # kept open (and silent) until close()
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = False
        self.connections = 0  # relayed so far
        threading.Thread(target=self._accept, daemon=True, name="freeze-relay-accept").start()

    def __enter__(self) -> FreezeRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def frozen(self) -> bool:
        return not self._flowing.is_set()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            # frozen: the kernel completed the handshake, nothing goes further until thawed
            while not self._flowing.wait(0.1):
                if self._closed:
                    client.close()
                    return
            try:
                upstream = socket.create_connection((self.host, self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            pair = _Pair(client, upstream)
            with self._lock:
                self._pairs.append(pair)
                self.connections += 1
            threading.Thread(target=self._pump, args=(pair, client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(pair, upstream, client), daemon=True).start()

    def _may_flow(self, pair: _Pair) -> bool:
        """Wait until data may pass (not frozen); False once the pair is dropped or the relay closed."""
        while not pair.dead and not self._closed:
            if self._flowing.wait(0.05):
                return not pair.dead and not self._closed
        return False

    def _pump(self, pair: _Pair, src: socket.socket, dst: socket.socket) -> None:
        rate = self.up_bytes_per_s if src is pair.client else None
        # a slow uplink: small reads, each forwarded no sooner than the rate allows (idle time earns nothing)
        chunk = max(1, int(rate / 50)) if rate else 65536
        next_t = 0.0
        try:
            while self._may_flow(pair):
                # poll, so that a freeze stops the reading at once (the bytes stay in src's kernel buffer)
                ready, _, _ = select.select([src], [], [], 0.05)
                if not ready or not self._may_flow(pair):
                    continue
                data = src.recv(chunk)
                if not data:
                    break
                if rate:
                    next_t = max(next_t, time.monotonic()) + len(data) / rate
                    time.sleep(max(0.0, next_t - time.monotonic()))
                if not self._may_flow(pair):  # frozen or dropped between the poll and now: held, or lost
                    return
                dst.sendall(data)
        except (OSError, ValueError):  # a reset (or the relay closed): both ways end
            if not pair.dead:
                for s in (src, dst):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)
            return
        if not pair.dead:
            # a side's orderly end, passed on behind what went before; the other way goes on until its own
            # end (a half-close, as a live network passes it). Shutting both here closed the other side at
            # once: a client that sends its last words, shuts its side and awaits its peer's close got the
            # relay's before the peer had read them (the flaw tcp_cut's CutRelay had)
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def freeze(self) -> None:
        """Stop forwarding both ways on every connection, keeping both sockets open and reading nothing."""
        self._flowing.clear()

    def thaw(self) -> None:
        """Forward again on every connection not dropped (what was held flows, in order)."""
        self._flowing.set()

    def drop(self) -> None:
        """Abandon the current connections silently; new ones are relayed (the relay is thawed)."""
        with self._lock:
            for p in self._pairs:
                p.dead = True
            self._dropped += self._pairs
            self._pairs = []
        self._flowing.set()

    def close(self) -> None:
        self._closed = True
        self._flowing.set()
        with contextlib.suppress(OSError):
            self._server.close()
        with self._lock:
            pairs, self._pairs, self._dropped = self._pairs + self._dropped, [], []
        for p in pairs:
            p.dead = True
            for s in (p.client, p.upstream):
                with contextlib.suppress(OSError):
                    s.close()
