"""Credentials kept out of anything shown or sent: the one place that formats a URL for display.

A camera or server URL often carries its login (``rtsp://admin:12345@192.168.1.10/stream``,
``http://user:pass@cam/mjpeg``, ``opc.tcp://user:pass@plc:4840``). ``mask_credentials`` replaces the
password of every such URL in a text with ``***`` and keeps the user name and the host, which help the
engineer find the device: ``rtsp://admin:***@192.168.1.10/stream``; a password given as a URL parameter
(``?usr=admin&pwd=***``, ``/user=admin&password=***&channel=1``) is masked the same way. It is meant for
messages, status, logs and errors, including texts a library wrote (OpenCV, FFmpeg, urllib put the URL in
theirs). ``mask_logins`` masks the user name too (``rtsp://***@192.168.1.10/stream``, ``?usr=***&pwd=***``): for
texts that leave the gateway for the cloud, which a login never does. ``escaped`` writes each character of a text
that is not printable as its escape (``\\n``, ``\\x1b``, ``\\u202e``): a name that came from outside (a file
in a camera's drop folder) holding a line feed forged a line of the log, an ANSI escape drove the terminal.
"""

from __future__ import annotations

import functools
import re
import unicodedata

MASK = "***"

# scheme://user:password@ ; the password runs to the last '@' before the host (an '@' in an unencoded
# password stays masked), never past the end of the authority ('/', '?', '#') or of the word
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s/?#@:]*):(?P<password>[^\s/?#]*)@")


# a password given as a URL parameter, as many cameras take it: Foscam's ``?usr=admin&pwd=...``, XMEye and
# other NVRs' ``rtsp://host/user=admin&password=...&channel=1``, Hikvision's ``?auth=<base64 user:pass>``,
# tokens; the value runs to the next parameter or the end of the URL
_PARAM = re.compile(
    r"(?i)(?P<head>[?&;/](?:pwd|passwd|password|pass|psw|auth|token|access_token|api_key|apikey|secret)=)"
    r"(?P<value>[^&;#\s]+?)(?=:?(?:[&;#\s]|$))"
)


def mask_credentials(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` in it replaced by ``***``, and the
    value of a password parameter (``pwd=``, ``password=``, ``auth=``, ``token=`` ...) in a URL too."""
    if "://" not in text:
        return text
    text = _USERINFO.sub(lambda m: f"{m.group('head')}:{MASK}@", text)
    return _PARAM.sub(lambda m: f"{m.group('head')}{MASK}", text)


# a URL's whole login (user name and password) and a user name given as a URL parameter: what ``mask_logins`` hides
_LOGIN = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://)[^\s/?#]*@")
_USER_PARAM = re.compile(
    r"(?i)(?P<head>[?&;/](?:usr|user|username|user_name|login|uid)=)(?P<value>[^&;#\s]+?)(?=:?(?:[&;#\s]|$))"
)


def mask_logins(text: str) -> str:
    """``mask_credentials(text)`` with each URL's user name masked too: ``scheme://***@host``, ``usr=***``. For texts
    sent to the cloud (an agent's events and state reports): a login never leaves the gateway; the host stays (the
    tenant's admin finds the device by it)."""
    if "://" not in text:
        return text
    text = _LOGIN.sub(lambda m: f"{m.group('head')}{MASK}@", mask_credentials(text))
    return _USER_PARAM.sub(lambda m: f"{m.group('head')}{MASK}", text)


def _escape(c: str) -> str:
    return c.encode("unicode_escape", "backslashreplace").decode()


def escaped(text: str) -> str:
    """``text`` on one line that says what it is: each character ``str.isprintable`` refuses (a line feed, a
    carriage return, an ANSI escape, a bidirectional override, a byte of another code page) as its escape."""
    if text.isprintable():  # the common case, at C speed
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


# what turns or hides the text around it on a page or a terminal: C0 and C1 controls (an ANSI escape, a line feed),
# the bidirectional marks, embeddings, overrides and isolates, the line and paragraph separators, lone surrogates;
# and what shows nothing and spells nothing (Unicode's default-ignorable characters but the joiners and a variation
# selector): a zero-width space, word joiner or byte-order mark ('\ufeffTemp' showed as the 'Temp' a config names),
# a soft hyphen, the invisible operators, the interlinear annotation marks, the tag characters (U+E0000..: an ASCII
# text of their own that shows nothing), Khmer's inherent vowels, deprecated format controls, the Hangul fillers
# of the compatibility block (a name of U+3164 alone shows as empty)
_MISLEADING = re.compile(
    "[\x00-\x1f\x7f-\x9f\xad\u061c\u17b4\u17b5\u200b\u200e\u200f\u2028-\u202e\u2060-\u206f\u3164\ufeff\uffa0\ufff0-\ufffb"
    "\ud800-\udfff\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e00ff\U000e01f0-\U000e0fff]"
)
# a base takes one variation selector (an emoji's U+FE0F, an ideograph's U+E0100..): each after the first shows
# nothing and carries a byte of a text of its own
_SELECTORS = "\ufe00-\ufe0f\U000e0100-\U000e01ef"
_SELECTOR_AFTER_SELECTOR = re.compile(f"(?<=[{_SELECTORS}])[{_SELECTORS}]")
# combining marks on one base past this many (Unicode's UTS #39 flags more than 4) are a flood drawn over the rows
# above and below; Vietnamese, Hebrew's points and Indic vowel signs stack fewer
_MARKS_SHOWN = 4


@functools.cache
def _runs_of_marks() -> re.Pattern[str]:
    """More than ``_MARKS_SHOWN`` characters in a row that are each a combining mark (Mn, Me) of the Basic
    Multilingual Plane or any character past it (told apart in ``_past_the_shown``): built on the first name that is
    not ASCII (a walk of 65,536 code points, once, about 10 ms), then matched at C speed: 3 us for a name of 48 CJK
    characters. A class of every plane's marks is matched by a walk of its ranges, and a loop of
    ``unicodedata.category`` over each character, 4 times slower."""
    spans: list[list[int]] = []
    for cp in range(0x10000):
        if unicodedata.category(chr(cp)) in ("Mn", "Me"):
            if spans and spans[-1][1] == cp - 1:
                spans[-1][1] = cp
            else:
                spans.append([cp, cp])
    marks = "".join(f"{chr(a)}-{chr(b)}" for a, b in spans)
    return re.compile(f"(?:[{marks}]|[\U00010000-\U0010ffff]){{{_MARKS_SHOWN + 1},}}")


def _past_the_shown(run: re.Match[str]) -> str:
    out, marks = [], 0
    for c in run.group():
        marks = marks + 1 if unicodedata.category(c) in ("Mn", "Me") else 0
        out.append(_escape(c) if marks > _MARKS_SHOWN else c)
    return "".join(out)


def display_escaped(text: str) -> str:
    """``text`` as ``escaped`` writes it, but only for what turns or hides the text around it (``'\\u202eGN'`` shown
    as 'NG', an ANSI escape driving a terminal, a flood of combining marks) or shows nothing and spells nothing (a
    zero-width space, a byte-order mark, a tag character, a second variation selector): a name's other characters
    ``str.isprintable`` refuses are its spelling (a no-break or ideographic space, the zero-width (non-)joiner of
    Persian, Indic scripts and emoji sequences), shown as they are."""
    if text.isascii() and text.isprintable():  # the common case, at C speed
        return text
    text = _MISLEADING.sub(lambda m: _escape(m.group()), text)
    if text.isascii():
        return text
    text = _SELECTOR_AFTER_SELECTOR.sub(lambda m: _escape(m.group()), text)
    return _runs_of_marks().sub(_past_the_shown, text)
