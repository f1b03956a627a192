"""32-bit floats as their own decimal: a PLC's REAL or a Sparkplug Float widened to a Python float carries
the binary tail of the 32-bit value (0.3 is 0.30000001192092896); ``float32_shown`` gives the short
decimal that is the same 32-bit value, as the device's own tools show it. Used by the OPC UA source and the
Sparkplug B host; arrays (waveforms) are left as they are."""

from __future__ import annotations

import struct

_F32 = struct.Struct("<f")
_pack, _unpack = _F32.pack, _F32.unpack


def float32_shown(value: float) -> float:
    """A 32-bit float (a PLC's REAL, a Sparkplug Float) as the decimal of at most 7 significant digits that
    is the same REAL, when there is one: what the PLC's HMI and engineering tool show, and what its own
    comparisons take. Widened as it is, the REAL 75.3 is 75.30000305175781: a rule ``gt: 75.3`` tripped on a
    value the PLC shows as 75.3, and ``lte: 0.3`` missed a setpoint of 0.3. Nothing is lost: the result is
    the same REAL again when written back. A value that needs 8 or 9 digits (a measured value's noise, where
    no one compares exactly) stays as it is, as do NaN and infinities. About 1 µs; 6 digits are tried first,
    where at most one decimal falls within a REAL's rounding interval, so this is the shortest such
    decimal (7 digits: the nearest, as shortest-repr printers choose)."""
    for form in ("%.6g", "%.7g"):
        shown = float(form % value)
        try:
            if _unpack(_pack(shown))[0] == value:
                return shown
        except OverflowError:  # at the type's very limit: its short form would pass it
            return value
    return value
