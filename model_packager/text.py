"""Printing names that came from a package or from the wire without letting them speak.

A name inside an archive, a manifest field or a string in a fleet message can hold control
characters: a newline that starts a forged ``OK ...`` line, a carriage return that overwrites the
line on a terminal, an ANSI escape sequence, a bidirectional override. ``printable`` replaces every
character that is not printable (``str.isprintable``: C0/C1 controls, DEL, format characters such
as U+202E, separators other than the space) with a visible ``\\xNN`` / ``\\uNNNN`` escape, and caps
the length, so that whatever is printed stays on one line and says what it is.

``one_line`` is for an engine library's error about a model (ONNX Runtime's and OpenVINO's messages
run over many lines and quote the model's own node and operator names): its lines joined with
`` / ``, the middle cut out when it is long (OpenVINO's summary is at the end), then ``printable``.
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


def undecoded_bytes(text: str) -> str:
    """``text`` with each byte that was not UTF-8 (which Python hands over as a lone surrogate, U+DC80-U+DCFF: a
    file name, an argument or an environment variable in another code page) written ``\\xfc``, as a refusal shows
    it; such a character left as it is goes out as a ``"\\udcfc"`` escape strict JSON readers refuse, or fails to
    encode."""
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else c for c in text)


def one_line(text: object, limit: int = 600) -> str:
    """``text`` on one printable line of about ``limit`` characters at most: lines joined with " / ",
    the middle left out when it is longer (the start says what failed, the end often sums it up)."""
    s = text if isinstance(text, str) else str(text)
    s = " / ".join(line.strip() for line in s.splitlines() if line.strip())
    if len(s) > limit:
        half = max(1, limit // 2)
        s = f"{s[:half]} … {s[-half:]}"
    return printable(s, limit + 3)
