"""Reading MQTT packets off a raw socket, for the tests' scripted brokers (a peer Mosquitto cannot be made to
answer as some brokers do: a stated Receive Maximum, a SUBACK refusal over MQTT 3.1.1, a lax topic check)."""

from __future__ import annotations

import socket


def read_packet(conn: socket.socket) -> tuple[int, bytes] | None:
    """The next packet's type (the fixed header's high nibble: 1 CONNECT, 3 PUBLISH, 8 SUBSCRIBE, 14
    DISCONNECT, ...) and its body after the remaining length; None when the peer closed the connection."""
    head = conn.recv(1)
    if not head:
        return None
    length, shift = 0, 0
    while True:
        b = conn.recv(1)[0]
        length |= (b & 127) << shift
        shift += 7
        if not b & 128:
            break
    body = b""
    while len(body) < length:
        body += conn.recv(length - len(body))
    return head[0] >> 4, body
