"""The OPC UA source's count of the message under way, from the chunk headers as bytes pass: the
bound that holds whatever a server acknowledges (devices/opcua/client.py ``_MessageSize``)."""

from __future__ import annotations

import struct

import numpy as np

from devices.opcua.client import _MessageSize


def _chunk(kind: bytes, body: int) -> bytes:
    return b"MSG" + kind + struct.pack("<I", 8 + body) + b"\x01" * body


def _feed_in_pieces(stream: bytes, limit: int, seed: int) -> int:
    size, rng, i = _MessageSize(limit), np.random.default_rng(seed), 0
    while i < len(stream):
        step = int(rng.integers(1, 70_000))
        over = size.feed(stream[i : i + step])
        if over:
            return over
        i += step
    return 0


def test_messages_within_the_limit_pass_however_the_reads_split_them():
    # a 3-chunk message just under the limit, small finals, an aborted one, then the limit again
    big = _chunk(b"C", 65_000) + _chunk(b"C", 65_000) + _chunk(b"F", 69_976 - 24)
    stream = big + _chunk(b"F", 10) * 50 + _chunk(b"C", 60_000) + _chunk(b"A", 4) + big
    assert len(big) == 199_976  # under the limit of 200,000
    for seed in range(20):
        assert _feed_in_pieces(stream, 200_000, seed) == 0


def test_a_message_over_the_limit_is_caught_at_the_header_that_takes_it_over():
    stream = _chunk(b"F", 100) + _chunk(b"C", 150_000) + _chunk(b"F", 60_000)
    for seed in range(20):
        assert _feed_in_pieces(stream, 200_000, seed) == 150_008 + 60_008
    # a single chunk declaring 4 GiB is refused from its 8 header bytes
    assert _MessageSize(16 << 20).feed(b"OPNF" + struct.pack("<I", 0xFFFFFF00)) == 0xFFFFFF00
