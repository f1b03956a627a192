"""Printing names that came from a package or from the wire without letting them speak.

A name inside an archive, a manifest field or a string in a fleet message can hold control
characters: a newline that starts a forged ``OK ...`` line, a carriage return that overwrites the
line on a terminal, an ANSI escape sequence, a bidirectional override. ``printable`` replaces every
character that is not printable (``str.isprintable``: C0/C1 controls, DEL, format characters such
as U+202E, separators other than the space) with a visible ``\\xNN`` / ``\\uNNNN`` escape, and caps
the length, so that whatever is printed stays on one line and says what it is.
"""

from __future__ import annotations

MAX_PRINTED = 200


def printable(text: object, limit: int = MAX_PRINTED) -> str:
    s = text if isinstance(text, str) else str(text)
    if len(s) > limit:
        s = s[:limit] + "…"
    if s.isprintable():
        return s
    out = []
    for ch in s:
        if ch.isprintable():
            out.append(ch)
        else:
            o = ord(ch)
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
    return "".join(out)
