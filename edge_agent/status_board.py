"""What the local status page shows, kept as results arrive and rendered only when a page asks.

The agent hands every result to ``StatusBoard.keep``: frames are kept as raw arrays (the last one
per pipeline, the last 8 NG ones), signal windows as the last one per pipeline plus a 600-point
trend, results as the last 50. Encoding (PNG with the heat map blended in, the FFT of a window) is
done by the HTTP thread on request, never on the result path. ``tag_rows`` shapes the last reading
of each tag for ``/api/tags`` and ``edge-agent tags``. This module imports nothing of the agent
(the HTTP server and the agent both import it), and cv2 only when a frame is rendered.
"""

from __future__ import annotations

import collections
import itertools
import json
import time
from typing import Any, NamedTuple

from devices.base import Frame
from edge_agent.types import Result
from protocols import json_codec
from protocols.redact import display_escaped


class StatusBoard:
    def __init__(self, recent: int = 50, ng_frames: int = 8, trend_points: int = 600) -> None:
        self.recent: collections.deque[Result] = collections.deque(maxlen=recent)
        self.last_frames: dict[str, tuple] = {}  # pipeline -> (image, heatmap, result dict)
        self.ng_frames: collections.deque[tuple] = collections.deque(maxlen=ng_frames)
        self.last_windows: dict[str, Any] = {}
        self.trends: dict[str, collections.deque] = collections.defaultdict(
            lambda: collections.deque(maxlen=trend_points)
        )

    def keep(self, res: Result, item) -> None:
        """Called on the event loop for each result (cheap: references only, nothing encoded)."""
        self.recent.append(res)
        if isinstance(item, Frame):
            entry = (item.image, res.heatmap, res.to_json_dict())
            self.last_frames[res.pipeline] = entry
            if res.verdict == "NG":
                self.ng_frames.append(entry)
        else:
            self.last_windows[res.pipeline] = item
            self.trends[res.pipeline].append(
                (res.finished_at, res.anomaly_score, res.remaining_life, res.verdict, res.label)
            )

    def recent_json(self, n: int = 10) -> list[dict]:
        return [r.to_json_dict() for r in list(self.recent)[-n:]]

    def recent_ng_json(self, n: int = 10) -> list[dict]:
        return [r.to_json_dict() for r in list(self.recent) if r.verdict == "NG"][-n:]

    # ---- rendered on request (KeyError / IndexError: nothing there yet) ----------------------
    def frame_png(self, pipeline: str) -> bytes:
        img, heat, _ = self.last_frames[pipeline]
        return overlay_png(img, heat)

    def ng_png(self, index: int) -> bytes:
        img, heat, _ = list(self.ng_frames)[index]
        return overlay_png(img, heat)

    def ng_results(self) -> list[dict]:
        return [r for _, _, r in list(self.ng_frames)]

    def spectrum(self, pipeline: str) -> dict:
        return spectrum(self.last_windows[pipeline])

    def trend(self, pipeline: str) -> list:
        return list(self.trends.get(pipeline, ()))


SHOWN_CHARS = 1024  # a text, a list's JSON text or a byte string's base64 is shown up to this and `…`
SHOWN_BYTES = SHOWN_CHARS * 3 // 4  # the bytes whose base64 is that long
SHOWN_ITEMS = 64  # the items of a long list the tags view keeps: its JSON text is cut at SHOWN_CHARS anyway
SHOWN_NODE_ERRORS = 20  # a source's failing nodes named on /status, each with why; the others counted
SHOWN_NODE_ID_CHARS = 256  # a failing node's id is shown up to this and `…`


def node_errors_shown(errors: dict[str, str], n: int = SHOWN_NODE_ERRORS) -> dict:
    """A source's nodes that get no values (an OPC UA node id the server does not have, refused, left out for its
    size: ``OpcUaSource.node_errors``), or its write targets whose writes will fail (a node the server does not
    have, read-only, of a type that does not take the value: ``OpcUaSource.target_errors``) as ``/status`` shows
    them: how many, and the first ``n`` found at the last connect, each with why (its id cut at
    SHOWN_NODE_ID_CHARS, why at SHOWN_CHARS, a URL's password masked). Bounded: a config of 5,000 wrong node ids
    adds 20 of them to /status, not 5,000."""
    from protocols.redact import mask_credentials

    # one C call, under the GIL: the source's loop may change the dict meanwhile (this runs on the HTTP thread)
    first = list(itertools.islice(errors.items(), n))
    return {
        "count": len(errors),
        "nodes": [
            {"node_id": _cut(node_id, SHOWN_NODE_ID_CHARS), "why": _cut(mask_credentials(why), SHOWN_CHARS)}
            for node_id, why in first
        ],
    }


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n] + "…"


class Cut(NamedTuple):
    """The start of a long list or byte string that the tags view keeps in place of the value (an OPC UA
    ByteString of megabytes, 100,000 Int64 counters kept exact), with the value's type name: shown cut, as a
    long text is. Rules, forwards and pipelines get the value whole."""

    head: Any
    kind: str


def tag_rows(readings, now: float | None = None) -> list[dict]:
    """Last reading of each tag as a row: tag, value (arrays summarised), type, quality, age_s."""
    import numpy as np

    now = time.time() if now is None else now
    rows = []
    for r in sorted(readings, key=lambda r: r.tag):
        v = r.value
        if isinstance(v, np.ndarray):
            shown: object
            # an integer array's last item with every digit (an Int64 counter past 2**53): .4g wrote 9.223e+18
            shown, typ = "[]", f"array<{v.dtype}>"
            if v.size:
                last = v.flat[-1].item() if v.dtype.kind in "iu" else f"{float(v.flat[-1]):.4g}"
                shown = f"[{v.size} values, last {last}]"
        elif isinstance(v, bool | int | float | str) or v is None:
            shown, typ = v, type(v).__name__
        else:
            # as forwards and the outbox write it (bytes, an OPC UA ByteString, as base64 text: its repr was
            # "b'\\xe0\\x04...'", unlike the value the broker and the cloud got); a list or structure as its JSON
            # text; the start of a long one (``Cut``) cut at SHOWN_CHARS with `…`, as a long text is
            cut = isinstance(v, Cut)
            text = json_codec.dumps(v.head if cut else v)
            plain = json.loads(text)
            shown = text if isinstance(plain, list | dict) else plain
            typ = v.kind if cut else type(v).__name__
            if isinstance(shown, str) and (cut or len(shown) > SHOWN_CHARS):
                if cut and isinstance(plain, list):
                    shown = shown[:-1]  # its closing bracket: more items follow
                shown = shown[:SHOWN_CHARS] + "…"
        if isinstance(shown, str):
            shown = display_escaped(shown)
        rows.append(
            {
                # what turns or hides the text around it escaped (``protocols.redact.display_escaped``): a tag named
                # from the wire (a Sparkplug metric, node or device, an MQTT topic) or a text value holding a
                # bidirectional override showed turned around ('\u202eGN' as 'NG', a tag as another's name); the
                # rest of a name is its spelling (a Persian name's zero-width non-joiner, a Japanese one's
                # ideographic space), shown as it is. The reading itself, what pipelines and the outbox take, keeps
                # its name
                "tag": display_escaped(r.tag),
                "value": shown,
                "type": typ,
                "quality": r.quality.value,
                # why not GOOD: the server's status code's name, or the source's own reason
                "reason": getattr(r, "reason", None),
                "age_s": round(now - r.received_at, 1),
            }
        )
    return rows


def overlay_png(image, heatmap) -> bytes:
    """The frame with its defect heat map blended in (red = defect-like), as PNG."""
    import cv2
    import numpy as np

    img = image.copy()
    if heatmap is not None:
        h = cv2.resize(
            np.asarray(heatmap, np.float32), (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR
        )
        color = cv2.applyColorMap((np.clip(h, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
        img = cv2.addWeighted(img, 0.65, color, 0.35, 0)
    ok, png = cv2.imencode(".png", img)
    return png.tobytes()


def spectrum(window, n_bins: int = 256) -> dict:
    """Magnitude spectrum of a window's waveform (Hann window, mean removed), max-pooled to ``n_bins``."""
    import numpy as np

    x = np.asarray(window.waveform, dtype=np.float64)
    mag = np.abs(np.fft.rfft((x - x.mean()) * np.hanning(len(x)))) * 2 / len(x)
    k = max(1, len(mag) // n_bins)
    return {"bins": [float(v) for v in mag[: k * n_bins].reshape(-1, k).max(1)], "seq": window.seq}
