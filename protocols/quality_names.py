"""Why a reading is not GOOD, in words: the ``reason`` a BAD or UNCERTAIN reading from an MQTT device carries.

A device that says its quality in words (``"BadNotConnected"``, Ignition's ``"Bad_Stale"``, an OPC UA PubSub
StatusCode's ``Symbol``) is taken at its word (``text``); a number is named by its convention: an OPC UA
StatusCode by the standard's name (``BadSensorFailure``; its info bits left out; a code OPC UA does not
define as ``Bad_0x81230000``, as the OPC UA source names it), an OPC DA quality by OPC DA's name
(``BadSensorFailure``, ``UncertainLastUsableValue``; its limit bits left out), any other number as
``quality_<n>``. Only a reading that is not GOOD is named, so a GOOD one costs nothing.

The OPC UA names are read, once (by each thread that names its first code while another reads them), from
the table asyncua ships (``asyncua/ua/status_codes.py``, a plain generated module) without importing asyncua
itself (364 ms and 18 MB an MQTT-only gateway does not need); without asyncua every code is named by its level
and number. Names are cached per code in a bounded table (the codes come from the device).
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

MAX_TEXT = 64  # a device's own word is kept to this many characters (it reaches every forwarded reading)
_CACHE_MAX = 1024

# OPC DA 2.05 quality (QQSSSSLL: quality, substatus; the limit bits LL left out), by its name in the standard
_OPCDA = {
    0x00: "BadNonSpecific",
    0x04: "BadConfigurationError",
    0x08: "BadNotConnected",
    0x0C: "BadDeviceFailure",
    0x10: "BadSensorFailure",
    0x14: "BadLastKnownValue",
    0x18: "BadCommFailure",
    0x1C: "BadOutOfService",
    0x20: "BadWaitingForInitialData",
    0x40: "UncertainNonSpecific",
    0x44: "UncertainLastUsableValue",
    0x50: "UncertainSensorNotAccurate",
    0x54: "UncertainEUExceeded",
    0x58: "UncertainSubNormal",
}

_opcua_table: dict[int, Any] | None = None
_opcua_names: dict[int, str] = {}


def _table() -> dict[int, Any]:
    """asyncua's code -> (name, doc) table, read from its file alone; {} without asyncua."""
    global _opcua_table
    table = _opcua_table
    if table is None:
        # set once read, never a placeholder before: a thread naming a code meanwhile reads the table too
        # (the same), where it found an empty one and named (and cached) the code by level and number
        table = _opcua_table = _read_table()
    return table


def _read_table() -> dict[int, Any]:
    try:
        spec = importlib.util.find_spec("asyncua")  # a top-level package: found, not imported
        where = spec.submodule_search_locations if spec is not None else None
        if where:
            path = os.path.join(list(where)[0], "ua", "status_codes.py")
            mod_spec = importlib.util.spec_from_file_location("_edge_opcua_status_codes", path)
            if mod_spec is not None and mod_spec.loader is not None:
                mod = importlib.util.module_from_spec(mod_spec)
                mod_spec.loader.exec_module(mod)
                table = getattr(mod, "code_to_name_doc", None)
                if isinstance(table, dict):
                    return table
    except Exception:  # another asyncua's layout: codes named by level and number
        pass
    return {}


def opcua(code: int) -> str:
    """The name of a non-Good OPC UA StatusCode (unsigned or a signed 32-bit int)."""
    code &= 0xFFFFFFFF
    got = _opcua_names.get(code)
    if got is not None:
        return got
    top = code & 0xFFFF0000
    level = "Uncertain" if code >> 30 == 1 else "Bad" if code >> 30 else "Good"
    entry = _table().get(top)
    name = (
        entry[0]
        if entry and isinstance(entry[0], str) and entry[0] not in ("Good", "Bad", "Uncertain")
        else None
    )
    got = name or f"{level}_0x{code:08X}"
    if len(_opcua_names) < _CACHE_MAX:
        _opcua_names[code] = got
    return got


def opcda(q: int) -> str:
    """The name of a non-good OPC DA quality (0-0xFFFF), else ``quality_<n>``. Its upper byte is the vendor's
    (OPC DA 2.05): the name, as the level, is read from the lower byte's quality and substatus bits."""
    name = _OPCDA.get(q & 0xFC) if 0 <= q <= 0xFFFF else None
    return name or f"quality_{q}"


def text(s: str) -> str:
    """A device's own word for its quality, kept short and on one line."""
    s = s.strip()
    if len(s) > MAX_TEXT or not s.isprintable():
        s = "".join(c if c.isprintable() else "?" for c in s[:MAX_TEXT])
    return s or "quality_empty"
