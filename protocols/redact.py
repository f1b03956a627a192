"""Credentials kept out of anything shown or sent: the one place that formats a URL for display.

A camera or server URL often carries its login (``rtsp://admin:12345@192.168.1.10/stream``,
``http://user:pass@cam/mjpeg``, ``opc.tcp://user:pass@plc:4840``). ``mask_credentials`` replaces the
password of every such URL in a text with ``***`` and keeps the user name and the host, which help the
engineer find the device: ``rtsp://admin:***@192.168.1.10/stream``. It is meant for messages, status,
logs and errors, including texts a library wrote (OpenCV, FFmpeg, urllib put the URL in theirs).
"""

from __future__ import annotations

import re

MASK = "***"

# scheme://user:password@ ; the password runs to the last '@' before the host (an '@' in an unencoded
# password stays masked), never past the end of the authority ('/', '?', '#') or of the word
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s/?#@:]*):(?P<password>[^\s/?#]*)@")


def mask_credentials(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` in it replaced by ``***``."""
    if "://" not in text:
        return text
    return _USERINFO.sub(lambda m: f"{m.group('head')}:{MASK}@", text)
