"""CameraSource against cameras nobody here made, over real sockets on 127.0.0.1: MJPEG streams whose parts
are not 8-bit colour JPEGs, cameras that answer each GET with one image (snapshot URLs), cameras that change
their resolution midway, that accept a connection and never answer, that send far faster than ``fps``."""

from __future__ import annotations

import asyncio
import logging
import re
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from devices.camera.capture import CameraSource
from devices.camera.settings import CameraSettings
from tests.integration.test_camera_source import HostileMjpeg, _jpeg, take


def _mono12(seed: int, h: int = 48, w: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4096, (h, w), dtype=np.uint16)


async def _frames(url: str, n: int, timeout_s: float = 3.0, **settings) -> tuple[list, CameraSource]:
    src = CameraSource("cam", CameraSettings(url=url, **settings))
    try:
        await src.start()
        try:
            frames = await take(src, n, timeout_s)
        except TimeoutError:
            frames = []
    finally:
        await src.stop()
    return frames, src


async def test_an_mjpeg_streams_16_bit_parts_are_refused_by_name_or_read_by_pixel_bits(caplog):
    """A 12-bit mono camera streaming 16-bit PNG and TIFF parts: decoded as 8-bit colour they came out
    nearly black (4095 / 256 = 15) and were passed to the model as frames, pixel_bits or not. They are now
    read as a folder's files are: unsupported_frame naming pixel_bits, or with pixel_bits: 12 the top 8 of
    the 12 bits."""
    mono = [_mono12(1), _mono12(2)]
    parts = [cv2.imencode(".png", mono[0])[1].tobytes(), cv2.imencode(".tif", mono[1])[1].tobytes()]

    def serve(write, part):
        while True:
            for p in parts:
                part(p)

    cam = HostileMjpeg(serve)
    try:
        caplog.set_level(logging.WARNING)
        src = CameraSource("cam", CameraSettings(url=cam.url, reconnect_initial_s=5))
        refused = []

        async def take_all() -> None:
            async for f in src.items():
                refused.append(f)

        from tests.support.waits import until

        await src.start()
        taking = asyncio.create_task(take_all())
        try:  # the parts are found unusable as they are taken (decoded): ten in a row, and the stream is reopened
            await until(lambda: "reopening" in caplog.text, 30, "the stream reopened")
        finally:
            await src.stop()
            taking.cancel()
        assert refused == []
        assert src.stats.errors_by_reason.get("unsupported_frame", 0) >= 2
        text = caplog.text
        assert "unsupported_frame" in text and "16-bit pixels" in text and "with pixel_bits" in text
        # the reopen says why no frame came: not a silent camera, parts it could not use
        # (ten failed reads, or more when a loaded machine reaches the no-frame time first)
        assert re.search(
            r"\((1\d|[2-9]\d|\d{3,}) failed reads\); reopening \(the last read: unsupported_frame\)", text
        )
        frames, src = await _frames(cam.url, 4, pixel_bits=12)
    finally:
        cam.stop()
    assert len(frames) == 4 and not src.stats.errors_by_reason
    wanted = [(m >> 4).astype(np.uint8) for m in mono]
    for f in frames:
        assert f.image.shape == (48, 64, 3)
        assert any(np.array_equal(f.image[..., 0], w) for w in wanted)


async def test_a_camera_that_accepts_the_connection_but_never_answers_is_not_called_unreachable():
    """A hung camera (its web server's socket still accepting, nothing behind it) was reported as "cannot
    reach 127.0.0.1:port (timed out); is the camera on and the address right?", sending the line engineer to
    check cables and addresses that are fine. The message now says it connects and does not answer."""
    import socket

    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        url = f"http://admin:s3cret@127.0.0.1:{hung.getsockname()[1]}/stream.mjpg"
        src = CameraSource("cam", CameraSettings(url=url, open_timeout_s=0.3, reconnect_initial_s=5))
        try:
            await src.start()
            for _ in range(1500):
                if src.stats.errors_by_reason.get("open_failed"):
                    break
                await asyncio.sleep(0.02)
        finally:
            await src.stop()
    last = src.stats.last_error
    assert src.stats.errors_by_reason.get("open_failed") == 1
    assert "cannot reach" not in last and "accepts the connection but sends no answer within 0.3s" in last
    assert "s3cret" not in last and "admin:***@" in last


class SnapshotCamera:
    """An HTTP camera that answers each GET with one image (``/snapshot.png``, what many industrial cameras
    offer beside or instead of MJPEG): ``image(n)`` gives the n-th answer's bytes and content type."""

    def __init__(self, image) -> None:
        import threading
        import time
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.hits: list[float] = []
        me = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                me.hits.append(time.monotonic())
                body, ctype = image(len(me.hits) - 1)
                self.send_response(200)
                if ctype:
                    self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/snapshot.png"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


async def test_a_snapshot_camera_is_polled_at_fps_each_answer_a_frame_16_bit_ones_by_pixel_bits():
    """A camera answering each GET with one image (the simulator's /frame.jpg, a Mono12 camera's
    /snapshot.png) went to OpenCV's FFmpeg, which read one image per connection and then failed: every frame
    cost a reconnect and ten corrupt_frame errors plus a stream_lost, and 16-bit PNGs came out dark (FFmpeg
    scales them to 8 bits by the top bits of 16). Such a camera is now asked for an image every 1/fps seconds,
    each answer checked and decoded as an MJPEG part is: no error, one request per frame, pixel_bits used."""
    from simulators.camera import CameraServer
    from tests.support.peers import free_port

    sim = CameraServer(free_port(), fps=50, seed=4).start()
    try:
        jpegs, src = await _frames(sim.url.replace("/stream.mjpg", "/frame.jpg"), 4, fps=20)
    finally:
        sim.stop()
    assert len(jpegs) == 4 and not src.stats.errors_by_reason and src.stats.reconnects == 0
    assert all(f.image.shape == (128, 128, 3) for f in jpegs)

    mono = [_mono12(k) for k in range(3)]
    cam = SnapshotCamera(lambda n: (cv2.imencode(".png", mono[n % 3])[1].tobytes(), "image/png"))
    try:
        frames, src = await _frames(cam.url, 6, fps=25, pixel_bits=12)
        hits = list(cam.hits)
    finally:
        cam.stop()
    assert len(frames) == 6 and not src.stats.errors_by_reason and src.stats.reconnects == 0
    for k, f in enumerate(frames):  # every answer is a frame, in order: none fetched and thrown away
        assert np.array_equal(f.image[..., 1], (mono[k % 3] >> 4).astype(np.uint8))
    # asked at fps (25: every 40 ms), not as fast as the camera answers (~1 ms): over the 5 intervals, as
    # the server saw them (one request's arrival can be late by the machine's load and the next one's gap
    # then short: a lower bound over the span, which load can only lengthen)
    assert hits[5] - hits[0] >= 5 * 0.03, np.diff(hits[:6])


async def test_a_camera_that_changes_resolution_midway_keeps_serving_and_names_the_change_once(caplog):
    """A camera's resolution changed in its web page (320x256 -> 160x120): frames came at the new size with
    nothing said, and a model's roi or tiles set for the former size silently looked at something else (or
    failed on every frame in the pipeline). The source keeps serving the new frames and names the change
    once: one frame_size_changed error with both sizes, one log line, not one per frame."""
    big, small = _jpeg(1, 320, 256), _jpeg(2, 160, 120)

    def serve(write, part):
        for _ in range(3):
            part(big)
        while True:
            part(small)

    caplog.set_level(logging.INFO)
    cam = HostileMjpeg(serve)
    try:
        # a queue that holds every frame: a loaded machine's slow taker must not see the hand-over drop one
        frames, src = await _frames(cam.url, 12, queue_max_items=64)
    finally:
        cam.stop()
    assert [f.image.shape[:2] for f in frames] == [(256, 320)] * 3 + [(120, 160)] * 9
    assert src.stats.errors_by_reason == {"frame_size_changed": 1}
    assert "frames are now 160x120, were 320x256" in src.stats.last_error
    lines = [r for r in caplog.records if "frame_size_changed" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING


async def test_parts_that_fps_would_skip_are_not_decoded():
    """A camera sending far faster than ``fps`` (30 fps of 1.3-Mpx JPEGs for fps: 5) had every part decoded
    and only then thrown away: CPU of a 2-core gateway spent on frames nobody sees. Parts within the period
    are now skipped undecoded; evidence: corrupt parts that look whole, right after each good one (inside
    the period), are never decoded, so none is counted and the stream is never reopened for them. A part
    that is plainly broken (no JPEG header, cut before its end marker) is still counted as corrupt_frame."""
    good = _jpeg(4)
    cut = good[: len(good) // 2] + b"\xff\xd9"  # looks whole (ends as a JPEG does), fails when decoded
    assert cv2.imdecode(np.frombuffer(cut, np.uint8), cv2.IMREAD_COLOR) is None

    def serve(write, part):
        import time

        while True:
            part(good)
            for _ in range(5):
                part(cut)  # within 0.1 s of the good one: inside fps 4's period
            time.sleep(0.35)

    cam = HostileMjpeg(serve)
    try:
        frames, src = await _frames(cam.url, 3, fps=4, max_consecutive_failures=3)
    finally:
        cam.stop()
    assert len(frames) == 3 and len(cam.opened) == 1
    assert src.skipped >= 10
    assert "corrupt_frame" not in src.stats.errors_by_reason

    def serve_plain(write, part):
        import time

        while True:
            part(good)
            part(good[: len(good) // 2])  # cut before its end marker: counted without decoding the rest
            part(b"\xff\xd8\xff\xe0garbage-not-a-jpeg" + bytes(64))  # no readable header
            time.sleep(0.35)

    cam = HostileMjpeg(serve_plain)
    try:
        frames, src = await _frames(cam.url, 2, fps=4)
    finally:
        cam.stop()
    assert len(frames) == 2 and src.stats.errors_by_reason.get("corrupt_frame", 0) >= 2


async def test_a_frozen_camera_is_named_once_when_frozen_after_s_is_set(caplog):
    """A hung camera that keeps its stream open and resends its last image forever: every frame arrived
    "good", so nothing told the line engineer that the inspection had been looking at one part for an
    hour. With ``frozen_after_s`` set, an image that has not changed at all for that long is named once
    (frozen_frame, one WARNING), frames still passed on; when it changes again that is logged too. A camera
    whose image changes (a real sensor's noise, even on a still scene) is never called frozen."""
    same, changing = _jpeg(5), [_jpeg(k) for k in (6, 7, 8, 9)]
    state = {"frozen": True}

    def serve(write, part):
        # changing: a random one of four images each part, so that no subset of the parts a loaded machine's
        # taker gets (every second one, the hand-over's drops) can be one image for 0.2 s
        pick = np.random.default_rng(5)
        while True:
            part(same if state["frozen"] else changing[pick.integers(4)])

    caplog.set_level(logging.INFO)
    cam = HostileMjpeg(serve)
    src = CameraSource("cam", CameraSettings(url=cam.url, fps=40, frozen_after_s=0.2))
    try:
        await src.start()
        first = await take(src, 16, 3)  # ~0.4 s of one image
        assert src.stats.errors_by_reason == {"frozen_frame": 1}
        assert first[0].unchanged_s == 0 and first[-1].unchanged_s >= 0.2  # how long, once frozen
        assert "has not changed for 0.2s" in src.stats.last_error
        state["frozen"] = False
        await take(src, 8, 3)  # changing again
    finally:
        await src.stop()
        cam.stop()
    assert len(first) == 16  # frames are still passed on
    assert src.stats.errors_by_reason == {"frozen_frame": 1}  # named once, not per frame
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("frozen_frame" in m for m in msgs) == 1
    assert any("changes again after" in m for m in msgs)

    def serve_moving(write, part):
        n = 0
        while True:
            n += 1
            # a new image every part: a loaded machine's taker may get every second part only, and two images
            # alternating then read as one image for 0.2 s (frozen: seen under load)
            part(_jpeg(1000 + n))

    moving = HostileMjpeg(serve_moving)
    try:
        frames, src = await _frames(moving.url, 16, fps=40, frozen_after_s=0.2)
    finally:
        moving.stop()
    assert len(frames) == 16 and not src.stats.errors_by_reason
    assert all(f.unchanged_s == 0 for f in frames)


async def test_a_frozen_camera_is_shown_frozen_on_status_for_as_long_as_it_lasts(tmp_path, capsys):
    """A hung camera resending its last image stayed 'connected' on /status and green on the status page, the
    freeze said only by one frozen_frame among its error counts (and in the last error until another came). A
    real agent's /status now shows the camera frozen, since when and for how long, while it lasts, and no more
    once its image changes, and ``edge-agent status`` prints it."""
    from edge_agent.agent import Agent
    from edge_agent.cli import main
    from edge_agent.config import parse_config
    from tests.support.models import make_keypair, make_package
    from tests.support.waits import until

    key, pub = make_keypair(tmp_path / "keys")
    pkg = make_package(tmp_path, kind="vision", key=key)
    same = _jpeg(5)
    state = {"frozen": True}

    def serve(write, part):
        n = 0
        while True:
            n += 1
            part(same if state["frozen"] else _jpeg(1000 + n))  # a new image every part (see above)

    cam = HostileMjpeg(serve)
    agent = Agent(
        parse_config(
            {
                "agent": {"id": "gw", "site": "s", "line": "l", "data_dir": str(tmp_path / "data")},
                "trusted_keys": [str(pub)],
                "http": {"port": 0},
                "sources": {"cam": {"type": "camera", "url": cam.url, "fps": 20, "frozen_after_s": 0.3}},
                "models": {"vision": {"package": str(pkg), "engine": "onnxruntime"}},
                "pipelines": [{"name": "inspect", "source": "cam", "model": "vision"}],
            }
        )
    )
    await agent.start()
    try:
        await until(lambda: "frozen" in agent.status()["sources"]["cam"], 30, "the freeze on /status")
        shown = agent.status()["sources"]["cam"]
        assert shown["state"] == "connected" and shown["frozen"]["for_s"] >= 0.3, shown
        assert shown["frozen"]["since"].endswith("+00:00") and shown["frozen"]["since_t"] <= time.time() - 0.3
        await asyncio.sleep(0.3)
        assert agent.status()["sources"]["cam"]["frozen"]["for_s"] >= shown["frozen"]["for_s"] + 0.2
        assert agent.http is not None
        capsys.readouterr()
        said = await asyncio.to_thread(main, ["status", "--url", f"http://127.0.0.1:{agent.http.port}"])
        printed = capsys.readouterr().out
        assert said == 0 and f"frozen: its image has not changed since {shown['frozen']['since']}" in printed
        state["frozen"] = False
        await until(lambda: "frozen" not in agent.status()["sources"]["cam"], 30, "the freeze over")
    finally:
        await agent.stop()
        cam.stop()


async def test_a_camera_no_pipeline_reads_is_said_to_be_unchecked_as_it_is_never_called_frozen(tmp_path):
    """An HTTP camera no pipeline reads (set up before its model, or its pipeline removed) has its parts counted
    as unread and never decoded, so none of the checks of its pixels runs: frozen for as long as a real agent
    ran, /status never showed it frozen and counted no frozen_frame, while its notice said its data was
    "dropped after decoding". Nothing is judged from it, so a freeze there acts on nothing; the notice now says
    it is not checked, frozen included, and to add a pipeline."""
    from edge_agent.agent import Agent
    from edge_agent.config import parse_config
    from tests.support.waits import until

    same = _jpeg(5)

    def serve(write, part):
        while True:
            part(same)

    cam = HostileMjpeg(serve)
    agent = Agent(
        parse_config(
            {
                "agent": {"id": "gw", "site": "s", "line": "l", "data_dir": str(tmp_path / "data")},
                "http": {"port": 0},
                "sources": {"cam": {"type": "camera", "url": cam.url, "fps": 20, "frozen_after_s": 0.1}},
            }
        )
    )
    await agent.start()
    try:  # parts of one image for well over frozen_after_s
        await until(lambda: agent.source_items["cam"] >= 20, 30, "the camera's parts")
        shown = agent.status()["sources"]["cam"]
    finally:
        await agent.stop()
        cam.stop()
    assert "frozen" not in shown and not shown["errors_by_reason"] and shown["decoded"] == 0, shown
    said = shown["silent_drops"]["unread"]["message"]
    assert "undecoded: none is checked (damaged, blank, frozen), and it is never called frozen" in said, said
    assert "add a pipeline with source: cam" in said, said


async def test_an_unread_camera_that_decodes_as_it_reads_keeps_the_former_notice_a_folder_gets_the_new_one(
    tmp_path,
):
    """The unread notice's "undecoded ... never called frozen" was chosen by the source type alone, but a USB
    device's, an rtsp:// stream's and a video file's frames are decoded as they are read, and their frozen and
    blank checks run whatever reads them: for those it was false. They keep the former words ("dropped after
    decoding"); an HTTP camera (above) and a folder, whose images stay compressed, get the new ones."""
    import socket

    from edge_agent.agent import Agent
    from edge_agent.config import parse_config

    video = tmp_path / "line.avi"
    out = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(3):
        out.write(np.full((48, 64, 3), 40 * i, np.uint8))
    out.release()
    folder = tmp_path / "frames"
    folder.mkdir()
    assert cv2.imwrite(str(folder / "a.png"), np.full((48, 64, 3), 90, np.uint8))
    with (
        socket.socket() as sock
    ):  # a port nothing listens on: the stream's camera is down, its notice the same
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cams = {
        "usb": "usb:63",
        "rtsp": f"rtsp://127.0.0.1:{port}/line",
        "video": str(video),
        "folder": str(folder),
        "watched": str(folder),
    }
    agent = Agent(
        parse_config(
            {
                "agent": {"id": "gw", "site": "s", "line": "l", "data_dir": str(tmp_path / "data")},
                "http": {"port": 0},
                "sources": {
                    name: {
                        "type": "camera",
                        "url": url,
                        "fps": 5,
                        **({"watch": True} if name == "watched" else {}),
                    }
                    for name, url in cams.items()
                },
            }
        )
    )
    await agent.start()
    try:
        shown = agent.status()["sources"]
    finally:
        await agent.stop()
    said = {name: shown[name]["silent_drops"]["unread"]["message"] for name in cams}
    for name in ("usb", "rtsp", "video"):
        assert "its data is dropped after decoding (counted as 'unread')" in said[name], said[name]
        assert "frozen" not in said[name] and f"add a pipeline with source: {name}" in said[name], said[name]
    for name in ("folder", "watched"):
        assert (
            "undecoded: none is checked (damaged, blank, frozen), and it is never called frozen" in said[name]
        )


async def test_a_freeze_begun_before_ntp_set_the_clock_is_shown_since_its_true_start(monkeypatch):
    """A gateway without a battery-backed clock says 1970 when its camera freezes; NTP then sets the clock. The
    freeze's since was the wall time recorded when the image last changed: /status went on saying the camera was
    frozen since 1970 (or, after any step of the clock, since a time off by the step). Now since is re-based on
    the step, from how long the freeze has lasted by the monotonic clock; for_s is unchanged."""
    from tests.support.waits import until

    real = time.time
    behind = [real() - 100_000.0]  # 1970-01-02
    monkeypatch.setattr(time, "time", lambda: real() - behind[0])
    same = _jpeg(5)

    def serve(write, part):
        while True:
            part(same)

    cam = HostileMjpeg(serve)
    src = CameraSource("cam", CameraSettings(url=cam.url, fps=20, frozen_after_s=0.3))
    began = real()
    await src.start()
    taking = asyncio.create_task(take(src, 10_000))  # a JPEG part is checked when taken
    try:
        await until(lambda: src.frozen, 30, "the freeze")
        at_1970 = src.frozen
        assert at_1970 is not None and at_1970["since"].startswith("1970-01-02"), at_1970
        behind[0] = 0.0  # NTP has set the clock
        await asyncio.sleep(0.2)
        shown = src.frozen
        assert shown is not None and shown["for_s"] >= at_1970["for_s"], (at_1970, shown)
        assert began - 1 <= shown["since_t"] <= real() - 0.3, (began, shown)
        assert shown["since"] == time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(shown["since_t"]))
        await asyncio.sleep(0.2)
        assert src.frozen["since_t"] == shown["since_t"]  # moved once, by the step, not at every read
    finally:
        taking.cancel()
        await src.stop()
        cam.stop()


async def test_a_frozen_cameras_frames_are_unsure_never_ok(tmp_path):
    """A hung camera resending its last image (a good part's) was inspected as OK frame after frame: the
    parts passing under it went unseen, and only a WARNING said so. Its frames now come with the time the
    image has been unchanged, and the pipeline calls them UNSURE (never OK or NG, no action fires) until
    the image changes; frames before the freeze and after it keep the model's verdict."""
    from concurrent.futures import ThreadPoolExecutor

    from edge_agent.config import PipelineSettings
    from edge_agent.models.config import ModelConfig
    from edge_agent.models.slot import ModelSlot
    from edge_agent.pipelines import Pipeline
    from tests.support.models import make_keypair, make_package

    key, pub = make_keypair(tmp_path / "keys")
    pkg = make_package(tmp_path, kind="vision", key=key, bias=20.0)  # says "ok" to any frame
    slot = ModelSlot("inspect", ModelConfig(package=str(pkg), engine="onnxruntime"), tmp_path / "data", [pub])
    await slot.start()
    results = []

    async def on_result(res, item):
        results.append((item.unchanged_s, res))

    events: list = []
    pipe = Pipeline(
        PipelineSettings(
            name="inspect",
            source="cam",
            model="inspect",
            queue={"policy": "block"},
            unsure={"window": 5, "max_share": 0.6},
        ),
        slot,
        ThreadPoolExecutor(1),
        on_result,
        on_event=events.append,
    )
    pipe.prepare()
    pipe.start()
    same = _jpeg(5)
    state = {"frozen": True}

    def serve(write, part):
        n = 0
        while True:
            n += 1
            part(same if state["frozen"] else _jpeg(1000 + n))  # a new image every part (see above)

    cam = HostileMjpeg(serve)
    src = CameraSource("cam", CameraSettings(url=cam.url, fps=40, frozen_after_s=0.2))
    try:
        await src.start()
        for f in await take(src, 16, 3):  # ~0.4 s of one image
            await pipe.offer(f)
        state["frozen"] = False
        for f in await take(src, 12, 3):
            await pipe.offer(f)
        for _ in range(15000):
            if len(results) == 28:
                break
            await asyncio.sleep(0.002)
    finally:
        await src.stop()
        cam.stop()
        await pipe.stop()
        await slot.stop()
    assert len(results) == 28
    frozen = [r for u, r in results if u > 0]
    assert frozen and all(r.verdict == "UNSURE" and r.reason.startswith("camera frozen") for r in frozen)
    assert all(r.verdict == "OK" for u, r in results if u == 0)
    assert results[0][1].verdict == "OK" and results[-1][1].verdict == "OK"  # before the freeze, after it
    assert pipe.stats.unsure == len(frozen)
    assert [e["kind"] for e in events] == ["input_drift"]  # the share passed: one event, naming the cause
    assert "'camera frozen'" in events[0]["message"] and "power cycle" in events[0]["message"]


async def test_a_wrong_basic_password_costs_the_camera_one_login_per_attempt():
    """A camera refusing the URL's user and password (HTTP 401 with a Basic challenge) was asked again by
    OpenCV's FFmpeg and once more for the diagnosis: four failed logins per attempt, which locks the account
    on cameras that lock after a few failures. The refusal is now final for the attempt: one request, named
    (open_failed, HTTP 401, the password masked), retried after the backoff. Over plain http the first
    request carries no login (the camera's challenge says which kind it takes: tests/integration/
    test_camera_https_login.py), so each attempt is one request without and one with the Basic login."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            hits.append(self.headers.get("Authorization", ""))
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="camera"')
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://admin:wrong@127.0.0.1:{httpd.server_address[1]}/stream.mjpg"
    src = CameraSource("cam", CameraSettings(url=url, open_timeout_s=1, reconnect_initial_s=0.2))
    try:
        await src.start()
        for _ in range(1500):
            if src.stats.errors_by_reason.get("open_failed", 0) >= 2:
                break
            await asyncio.sleep(0.02)
        await src.stop()
        failed = src.stats.errors_by_reason.get("open_failed", 0)
    finally:
        httpd.shutdown()
        httpd.server_close()
    logins = [h for h in hits if h]
    assert failed >= 2 and len(logins) == failed and len(hits) == 2 * failed, (failed, hits)
    assert all(h.startswith("Basic ") for h in logins)
    assert "HTTP 401" in src.stats.last_error and "wrong" not in src.stats.last_error


async def test_stopping_during_a_slow_snapshot_answer_counts_no_corrupt_frame():
    """stop() ends a snapshot read at once; the bytes that had come were decoded as if the camera had cut
    the image short, and a corrupt_frame was counted on every stop that met a slow camera."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    good = _jpeg(9)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            try:
                for i in range(0, len(good), 16):  # a slow camera: the image over ~2 s
                    self.wfile.write(good[i : i + 16])
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    src = CameraSource("cam", CameraSettings(url=f"http://127.0.0.1:{httpd.server_address[1]}/snap.jpg"))
    try:
        await src.start()
        await asyncio.sleep(0.4)
        await src.stop()
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert src.stats.received == 0 and not src.stats.errors_by_reason


async def test_a_snapshot_cameras_one_bad_answer_is_a_corrupt_frame_not_a_lost_stream():
    """A snapshot camera asked less often than read_timeout_s allows for silence (fps 4 with a 0.1-s
    read_timeout_s; a slow inspection asking every few seconds with the default 5 s): one corrupt answer
    after a good one was taken for a silent stream ('no frame for 0.3s'), stream_lost and a reconnect. The
    wait between requests is not silence: it is a corrupt_frame, and the polling goes on."""
    good, cut = _jpeg(10), _jpeg(10)[:300]
    cam = SnapshotCamera(lambda n: (good if n % 2 == 0 else cut, "image/jpeg"))
    try:
        frames, src = await _frames(cam.url, 3, fps=4, read_timeout_s=0.1)
    finally:
        cam.stop()
    assert len(frames) == 3 and src.stats.reconnects == 0
    # the two cut answers between the three good ones, and a third where the source asked once more before its
    # stop (at fps 4 on a loaded machine): corrupt frames, never a lost stream
    errors = src.stats.errors_by_reason
    assert errors.keys() == {"corrupt_frame"} and 2 <= errors["corrupt_frame"] <= 3


async def test_a_snapshot_cameras_bomb_or_endless_answer_is_refused_bounded():
    """The size checks of an MJPEG part hold for a snapshot answer: a JPEG header declaring 60000x60000
    pixels is oversize_frame undecoded, and an answer with no Content-Length that never ends is cut off at
    the bytes an image under max_megapixels can need (the camera got to send little more than that)."""
    from protocols.image_header import max_file_bytes
    from tests.support.image_bombs import jpeg_declaring

    bomb = SnapshotCamera(lambda n: (jpeg_declaring(60000, 60000), "image/jpeg"))
    try:
        frames, src = await _frames(bomb.url, 1, timeout_s=0.6, reconnect_initial_s=0.1)
    finally:
        bomb.stop()
    assert frames == [] and src.stats.errors_by_reason.get("oversize_frame", 0) >= 1
    assert "60000x60000" in src.stats.last_error

    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    sent = [0]

    class Endless(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            junk = b"\xff\xd8" + bytes(2**20)
            try:
                while True:
                    self.wfile.write(junk)
                    sent[0] += len(junk)
            except OSError:
                pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/snap.jpg"
    try:
        frames, src = await _frames(url, 1, timeout_s=0.8, max_megapixels=0.5, reconnect_initial_s=5)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert frames == [] and src.stats.errors_by_reason == {"oversize_frame": 1}
    assert sent[0] < max_file_bytes(0.5) + 32 * 2**20


async def test_a_camera_answer_with_a_1_mb_header_line_is_refused_not_handed_to_ffmpeg():
    """An answer whose HTTP header holds a 1-MB line (or more than 100 header lines) made http.client give up,
    and the URL was handed to OpenCV's FFmpeg, which read the stream without the part checks (cut parts
    filled in, no size bound per part). Such an answer is no camera's: open_failed, named."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    good = _jpeg(11)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("X-Junk", "a" * 2**20)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n\r\n" + good + b"\r\n")
                    time.sleep(0.02)
            except OSError:
                pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/stream.mjpg"
    try:
        frames, src = await _frames(url, 1, timeout_s=1.0, reconnect_initial_s=5)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert frames == [] and src.stats.errors_by_reason == {"open_failed": 1}
    assert "header line over 65536 bytes; no camera sends that" in src.stats.last_error


def _camera_jpeg(seed: int, rst: int = 0, w: int = 160, h: int = 120) -> bytes:
    """A camera-like JPEG (shading and sensor noise), restart markers every ``rst`` MCUs if given."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    shade = np.stack([xx * 0.8 + 40, yy + 50, (xx + yy) * 0.4 + 30], -1)
    img = np.clip(shade + rng.normal(0, 6, shade.shape), 0, 255).astype(np.uint8)
    params = [cv2.IMWRITE_JPEG_QUALITY, 85, cv2.IMWRITE_JPEG_RST_INTERVAL, rst]
    return cv2.imencode(".jpg", img, params)[1].tobytes()


def _turned(jpeg: bytes, orientation: int) -> bytes:
    """The JPEG with an EXIF orientation tag (3: upside down, 6: turned a quarter), as cameras mounted on
    their side write; the decode applies it."""
    ifd = struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + bytes(4)
    app = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08" + ifd
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app) + 2) + app + jpeg[2:]


def _damaged(whole: bytes) -> list[bytes]:
    """What cameras and links do to a JPEG past its header, each closed with an end marker: cut short at
    half and at two thirds (a camera whose buffer overflowed); for one with restart markers also a lost
    200-byte chunk, a run of zeros (a buffer not filled) and one marker gone. libjpeg only warns of each;
    OpenCV decodes each to an image (checked here)."""
    n = len(whole)
    out = [whole[: n // 2] + b"\xff\xd9", whole[: n * 2 // 3] + b"\xff\xd9"]
    rst = whole.find(b"\xff\xd3")
    if rst > 0:
        out += [whole[: n // 2] + whole[n // 2 + 200 :], whole[: n // 2] + bytes(300) + whole[n // 2 + 300 :]]
        out.append(whole[:rst] + whole[rst + 2 :])
    for d in out:
        assert cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_COLOR) is not None
    return out


async def test_a_jpeg_damaged_past_its_header_is_a_corrupt_frame_never_a_frame(tmp_path, caplog):
    """A JPEG cut short and closed with an end marker (a camera whose buffer overflowed), or missing a chunk
    or a restart marker: libjpeg only warned, OpenCV handed back an image whose lower part was grey or
    garbled, and it was passed on and judged as a part. Each such part of an MJPEG stream and each such file
    of an image folder is now corrupt_frame and skipped, turned by an EXIF orientation or CMYK too; whole
    JPEGs go on, those that end in flat grey (what libjpeg fills in) among them, and the stream keeps its
    connection."""
    caplog.set_level(logging.WARNING)
    plain, marked, turned = _camera_jpeg(1), _camera_jpeg(2, rst=2), _turned(_camera_jpeg(3), 6)
    upside_down = _turned(_camera_jpeg(4), 3)
    cmyk = (Path(__file__).parent.parent / "support" / "cmyk_camera.jpg").read_bytes()  # ImageMagick's
    bad = _damaged(plain) + _damaged(marked) + _damaged(turned) + _damaged(upside_down) + _damaged(cmyk)
    grey = np.full((120, 160, 3), 128, np.uint8)  # a whole JPEG ending in flat grey 128, as the fill: kept
    grey[:40] = cv2.imdecode(np.frombuffer(plain, np.uint8), cv2.IMREAD_COLOR)[:40]
    grey_tail = cv2.imencode(".jpg", grey, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
    whole = [plain, marked, grey_tail, turned, upside_down, cmyk]
    want = [cv2.imdecode(np.frombuffer(w, np.uint8), cv2.IMREAD_COLOR) for w in whole]

    def serve(write, part):
        while True:
            for w, b in zip(whole, bad[: len(whole)], strict=True):
                part(w)
                part(b)
            for b in bad[len(whole) :]:
                part(b)

    cam = HostileMjpeg(serve)
    frames, src = await _frames(cam.url, 7, read_timeout_s=2, max_consecutive_failures=20)
    cam.stop()
    assert len(frames) == 7
    assert all(any(np.array_equal(f.image, w) for w in want) for f in frames)  # never a damaged one
    assert src.stats.errors_by_reason.get("corrupt_frame", 0) >= len(bad)
    assert any(
        "corrupt_frame" in r.getMessage() and "a JPEG whose coded data" in r.getMessage()
        for r in caplog.records
    )
    assert len(cam.opened) == 1  # a damaged part is skipped, the stream goes on

    folder = tmp_path / "shots"
    folder.mkdir()
    for k, data in enumerate(bad + whole):  # in name order: the damaged ones are read first
        (folder / f"{k:02d}.jpg").write_bytes(data)
    # a queue that holds them all: a frame the hand-over drops is never decoded, so never found damaged
    frames, src = await _frames(str(folder), len(whole), fps=200, queue_max_items=len(bad) + len(whole))
    # strictly increasing; a damaged file, found only when its frame is taken (decoded), has had its seq
    seqs = [f.seq for f in frames]
    assert all(a < b for a, b in zip(seqs, seqs[1:], strict=False))
    assert all(np.array_equal(f.image, w) for f, w in zip(frames, want, strict=True))
    assert src.stats.errors_by_reason.get("corrupt_frame", 0) == len(bad)


async def test_whole_jpegs_of_every_kind_cameras_send_are_frames_none_refused_as_damaged(tmp_path):
    """The damage checks must refuse no whole JPEG: progressive, restart markers, grey, 4:4:4 / 4:2:2 /
    4:2:0 / 4:1:1, odd sizes, bytes after the end marker, an APP segment holding marker-like bytes (an
    EXIF thumbnail), a flat grey 128 corner (what libjpeg fills damage with), a restart marker before the
    end marker (some hardware encoders)."""
    rng = np.random.default_rng(7)
    sampling = [getattr(cv2, f"IMWRITE_JPEG_SAMPLING_FACTOR_{s}") for s in ("444", "422", "420", "411")]
    files = []
    for k in range(16):
        h, w = int(rng.integers(9, 140)), int(rng.integers(9, 140))
        img = np.clip(rng.normal(100, 40, (h, w, 3)), 0, 255).astype(np.uint8)
        img[h // 2 :, w // 2 :] = 128
        src = img[:, :, 0] if k % 5 == 0 else img
        params = [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(40, 100)), cv2.IMWRITE_JPEG_PROGRESSIVE, k % 2]
        params += [cv2.IMWRITE_JPEG_RST_INTERVAL, [0, 1, 3, 7][k % 4], cv2.IMWRITE_JPEG_SAMPLING_FACTOR]
        params.append(sampling[k % 4])
        data = cv2.imencode(".jpg", src, params)[1].tobytes()
        if k % 3 == 0:
            data += b"\r\n\x00after the end"
        if k % 4 == 2:  # a restart marker before the end marker, as some hardware encoders write
            rst = len(re.findall(rb"\xff[\xd0-\xd7]", data[data.rfind(b"\xff\xda") :]))  # its last scan
            data = data[:-2] + bytes([0xFF, 0xD0 + rst % 8]) + data[-2:]
        if k % 4 == 1:
            app = b"Exif\x00\x00\xff\xd8\xff\xd0\xff\xd9\xff\xda"
            data = data[:2] + b"\xff\xe1" + (len(app) + 2).to_bytes(2, "big") + app + data[2:]
        files.append(data)
    folder = tmp_path / "kinds"
    folder.mkdir()
    for k, data in enumerate(files):
        (folder / f"{k:02d}.jpg").write_bytes(data)
    # a queue that holds them all: a slow taker (a loaded machine) saw the hand-over drop the oldest, never decoded
    frames, src = await _frames(str(folder), len(files), fps=200, queue_max_items=len(files))
    assert len(frames) == len(files), src.stats.last_error
    assert src.stats.errors_by_reason == {}


async def test_parts_whose_content_length_is_wrong_are_read_to_their_boundary_none_lost():
    """Cameras whose parts' Content-Length is off: one too long swallowed the next part's boundary, so that
    part was lost without a count; one too short (or 0) cut every part, each corrupt_frame, the camera
    unusable. The boundary now decides where a part ends when the two disagree, as a browser reads the
    stream: every part is a frame, in order, on one connection."""
    jpegs = [_camera_jpeg(k) for k in range(4)]
    want = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in jpegs]
    wrong = [100, -100, None, 5000]  # bytes off; None: Content-Length 0

    def serve(write, part):
        while True:
            for j, off in zip(jpegs, wrong, strict=True):
                part(j, length=0 if off is None else len(j) + off)

    cam = HostileMjpeg(serve)
    frames, src = await _frames(cam.url, 8, read_timeout_s=2, queue_max_items=1000)
    cam.stop()
    got = [next((k for k, w in enumerate(want) if np.array_equal(f.image, w)), None) for f in frames]
    assert got == [0, 1, 2, 3, 0, 1, 2, 3], src.stats.errors_by_reason
    assert src.stats.errors_by_reason == {}
    assert len(cam.opened) == 1


async def test_a_camera_calling_its_stream_multipart_mixed_has_its_parts_checked_too():
    """Some firmware calls its MJPEG stream multipart/mixed: it went to OpenCV's FFmpeg, which passed parts
    cut short on as frames (their missing half filled in), counting nothing. It is read part by part like
    multipart/x-mixed-replace: cut parts are corrupt_frame, whole ones frames decoded as files are."""
    jpegs = [_camera_jpeg(k) for k in range(4)]
    want = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in jpegs]

    def serve(write, part):
        while True:
            for j in jpegs:
                part(j)
                part(j[: len(j) // 2])

    cam = HostileMjpeg(serve, content_type="multipart/mixed; boundary=frame")
    frames, src = await _frames(cam.url, 8, read_timeout_s=2, queue_max_items=1000)
    cam.stop()
    got = [next((k for k, w in enumerate(want) if np.array_equal(f.image, w)), None) for f in frames]
    assert got == [0, 1, 2, 3, 0, 1, 2, 3]
    assert src.stats.errors_by_reason.get("corrupt_frame", 0) >= 7


async def test_a_blank_line_before_a_parts_data_does_not_make_every_part_corrupt():
    """Firmware that puts a second blank line between a part's header and its JPEG (with or without
    Content-Length): every part was read from the line end on, refused as "not a JPEG", and the camera
    never gave a frame (corrupt_frame, stream_lost, reconnects). Line ends before the data are skipped."""
    jpegs = [_camera_jpeg(k) for k in range(2)]
    want = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in jpegs]

    def serve(write, part):
        while True:
            for j in jpegs:
                write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n\r\n" % len(j) + j)
                write(b"\r\n--frame\r\nContent-Type: image/jpeg\r\n\r\n\n" + j + b"\r\n")
                time.sleep(0.01)

    cam = HostileMjpeg(serve)
    frames, src = await _frames(cam.url, 8, read_timeout_s=2, queue_max_items=1000)
    cam.stop()
    got = [next((k for k, w in enumerate(want) if np.array_equal(f.image, w)), None) for f in frames]
    assert got == [0, 0, 1, 1, 0, 0, 1, 1]
    assert src.stats.errors_by_reason == {}


async def test_a_stream_answer_without_content_type_is_read_part_by_part_not_by_ffmpeg():
    """A camera whose answer names no Content-Type went to OpenCV's FFmpeg, which passed parts cut short
    on as frames (their missing half filled in). The answer's first bytes say what it is: a body that
    starts with a boundary is read part by part, cut parts corrupt_frame; one that is an image is a snapshot
    URL's answer."""
    jpegs = [_camera_jpeg(k) for k in range(2)]
    want = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in jpegs]

    def serve(write, part):
        while True:
            for j in jpegs:
                part(j)
                part(j[: len(j) // 2])

    cam = HostileMjpeg(serve, content_type="")
    frames, src = await _frames(cam.url, 4, read_timeout_s=2, queue_max_items=1000)
    cam.stop()
    got = [next((k for k, w in enumerate(want) if np.array_equal(f.image, w)), None) for f in frames]
    assert got == [0, 1, 0, 1]
    assert src.stats.errors_by_reason.get("corrupt_frame", 0) >= 3

    # a snapshot URL answering images without a Content-Type: each answer a frame, a cut one corrupt_frame
    snap = SnapshotCamera(lambda n: (jpegs[n % 2] if n % 3 else jpegs[0][:900], ""))
    frames, src = await _frames(snap.url, 4, fps=50, read_timeout_s=2, queue_max_items=1000)
    snap.stop()
    assert all(any(np.array_equal(f.image, w) for w in want) for f in frames) and len(frames) == 4
    assert src.stats.errors_by_reason.get("corrupt_frame", 0) >= 1
    assert len(snap.hits) >= 5  # asked again for each image: read as a snapshot URL, not by FFmpeg


async def test_a_camera_whose_body_boundary_is_not_the_declared_one_gives_frames():
    """Firmware that declares one boundary in its Content-Type and writes another in the body (FFmpeg reads
    such streams by the body's): no part was ever found, and the camera, sending frames all along, was
    reported silent (stream_lost, reconnects); so was one writing the declared boundary without its two
    leading dashes. The boundary the body starts with is taken."""
    jpegs = [_camera_jpeg(k) for k in range(2)]
    want = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in jpegs]

    def serve(write, part):
        while True:
            for j in jpegs:
                part(j)

    def undashed(write, part):  # the declared boundary as it is, without the two dashes before it
        while True:
            for j in jpegs:
                write(b"frame\r\nContent-Type: image/jpeg\r\n\r\n" + j + b"\r\n")
                time.sleep(0.01)

    for serving, declared in ((serve, "myboundary"), (undashed, "frame")):
        cam = HostileMjpeg(serving, content_type=f"multipart/x-mixed-replace; boundary={declared}")
        frames, src = await _frames(cam.url, 4, read_timeout_s=1, queue_max_items=1000)
        cam.stop()
        got = [next((k for k, w in enumerate(want) if np.array_equal(f.image, w)), None) for f in frames]
        assert got == [0, 1, 0, 1], declared
        assert src.stats.errors_by_reason == {}
        assert len(cam.opened) == 1


async def test_an_https_camera_with_its_own_certificate_has_its_parts_checked_too(tmp_path):
    """Cameras serve HTTPS with their own (self-signed) certificate. Such a stream went to OpenCV's FFmpeg
    (which does not check certificates), and FFmpeg passed parts cut short on as frames, their missing half
    filled in, counting nothing. It is read part by part here, its certificate checked against tls_ca_file
    (a self-signed one with no tls setting is refused: tests/integration/test_camera_https_login.py): cut
    parts are corrupt_frame, whole ones frames."""
    from tests.integration.test_mqtt_security import make_ca, make_leaf

    make_leaf(tmp_path, "camera", make_ca(tmp_path, "camera-ca"), server=True)
    jpegs = [_camera_jpeg(k) for k in range(2)]
    want = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in jpegs]

    def serve(write, part):
        while True:
            for j in jpegs:
                part(j)
                part(j[: len(j) // 2])

    cam = HostileMjpeg(serve, tls=(tmp_path / "camera.crt", tmp_path / "camera.key"))
    frames, src = await _frames(
        cam.url, 4, read_timeout_s=2, queue_max_items=1000, tls_ca_file=str(tmp_path / "camera-ca.crt")
    )
    cam.stop()
    got = [next((k for k, w in enumerate(want) if np.array_equal(f.image, w)), None) for f in frames]
    assert got == [0, 1, 0, 1]
    assert src.stats.errors_by_reason.get("corrupt_frame", 0) >= 3


async def test_a_tiff_of_several_pages_or_with_a_preview_first_is_unsupported_not_read_as_the_part(tmp_path):
    """A camera's software saving an exposure series as one TIFF, or a tool saving a preview before the
    image: the folder camera read the first directory, so the series' other pages were lost unsaid and a
    5x4 preview was judged as the part. Both are now `unsupported_frame`, named, as `dataset import`
    refuses them; a one-page TIFF beside them is read."""
    from tests.unit.test_image_readers_agree import series_tif

    folder = tmp_path / "drop"
    folder.mkdir()
    part = np.random.default_rng(3).integers(0, 256, (40, 50, 3), np.uint8)
    assert cv2.imwrite(str(folder / "a.tif"), part)
    series_tif(folder / "b_series.tif")
    series_tif(folder / "c_preview.tif", preview_first=True)
    assert cv2.imwrite(str(folder / "d.png"), part[::-1])
    frames, src = await _frames(str(folder), 2, fps=200)
    assert [f.image.shape for f in frames] == [(40, 50, 3)] * 2
    assert np.array_equal(frames[0].image, part) and np.array_equal(frames[1].image, part[::-1])
    assert src.stats.errors_by_reason.get("unsupported_frame") == 2
    assert src.stats.errors_by_reason.get("corrupt_frame", 0) == 0


async def test_a_mono12_frame_shifted_to_the_top_of_16_bits_is_unsupported_under_pixel_bits_12(tmp_path):
    """A drop folder fed by software that saves Mono12 shifted up (x16): with pixel_bits: 12 each frame was
    94 % white (saturated) and judged as a part. It is now unsupported_frame saying to set 16; with 16 it
    is read as the trainer's --pixel-bits 16 import stores it."""
    folder = tmp_path / "drop"
    folder.mkdir()
    twelve = _mono12(7)
    assert cv2.imwrite(str(folder / "a.png"), twelve << 4)
    assert cv2.imwrite(str(folder / "b.png"), twelve)  # a file in the low 12 bits: read with 12
    frames, src = await _frames(str(folder), 1, fps=200, pixel_bits=12)
    assert len(frames) == 1 and np.array_equal(frames[0].image[..., 0], (twelve >> 4).astype(np.uint8))
    assert src.stats.errors_by_reason.get("unsupported_frame") == 1
    assert "more than 12 bits hold" in src.stats.last_error and "pixel_bits 16" in src.stats.last_error
    (folder / "b.png").unlink()
    frames, src = await _frames(str(folder), 1, fps=200, pixel_bits=16)
    assert np.array_equal(frames[0].image[..., 0], (twelve >> 4).astype(np.uint8))


async def test_a_colour_cameras_raw_bayer_frames_are_demosaiced_alike_by_the_camera_and_the_import(tmp_path):
    """A colour camera whose software saves its raw frames (BayerRG8: a mosaic in one grey channel) was read
    as a grey frame with a checkerboard, by the agent and by `dataset import` alike, and a colour model got
    it as such. `bayer: rggb` (and `--bayer rggb`) now demosaic it to the same colour frame on both sides; a
    colour image under the setting is refused, not demosaiced into garbage."""
    from cloud_trainer.train.data import DatasetError, load_parts
    from cloud_trainer.train.images import import_images
    from tests.unit.test_image_import import per_class

    colour = np.zeros((48, 64, 3), np.uint8)
    colour[:, :32] = (30, 40, 200)  # red on the left, blue on the right (BGR)
    colour[:, 32:] = (190, 60, 20)
    raw = np.empty((48, 64), np.uint8)  # the sensor's RGGB mosaic of it
    raw[0::2, 0::2] = colour[0::2, 0::2, 2]
    raw[0::2, 1::2] = colour[0::2, 1::2, 1]
    raw[1::2, 0::2] = colour[1::2, 0::2, 1]
    raw[1::2, 1::2] = colour[1::2, 1::2, 0]
    folder = tmp_path / "drop"
    folder.mkdir()
    assert cv2.imwrite(str(folder / "a.png"), colour)  # a colour image: not a mosaic (read first)
    assert cv2.imwrite(str(folder / "b.png"), raw)
    frames, src = await _frames(str(folder), 1, fps=200, bayer="rggb")
    assert len(frames) == 1 and src.stats.errors_by_reason.get("unsupported_frame") == 1
    got = frames[0].image
    assert np.abs(got[8:40, 4:28].astype(int) - colour[8:40, 4:28]).max() <= 2  # red where it was red
    assert np.abs(got[8:40, 36:60].astype(int) - colour[8:40, 36:60]).max() <= 2

    classes = per_class(tmp_path / "src", {"ok": 20, "dent": 2})
    for p in [q for q in classes.rglob("*") if q.is_file()]:  # the camera's other raw frames
        assert cv2.imwrite(str(p), cv2.imread(str(p), cv2.IMREAD_GRAYSCALE))
    assert cv2.imwrite(str(classes / "dent" / "raw.png"), raw)
    import_images(classes, tmp_path / "ds", bayer="rggb", log=lambda m: None)
    ds = load_parts(tmp_path / "ds")
    assert any(np.array_equal(im, got) for im in ds.images)  # the model's input on both sides
    assert cv2.imwrite(str(classes / "dent" / "colour.png"), colour)
    with pytest.raises(DatasetError, match=r"colour.png: a colour image, but --bayer says"):
        import_images(classes, tmp_path / "ds2", bayer="rggb", log=lambda m: None)


async def test_a_png_with_transparent_pixels_is_unsupported_an_opaque_alpha_channel_is_read(tmp_path):
    """A tool's cut-out (the background made transparent) dropped into a camera's folder was read with the
    alpha dropped, and the model judged the colours stored beneath it (here black), while `dataset import`
    refuses the same file. It is now unsupported_frame, named; an alpha channel opaque everywhere is read."""
    folder = tmp_path / "drop"
    folder.mkdir()
    rgba = np.zeros((40, 50, 4), np.uint8)
    rgba[10:30, 10:40] = (0, 200, 0, 255)
    assert cv2.imwrite(str(folder / "a_cut_out.png"), rgba)
    rgba[..., 3] = 255
    assert cv2.imwrite(str(folder / "b_opaque.png"), rgba)
    frames, src = await _frames(str(folder), 1, fps=200)
    assert len(frames) == 1 and np.array_equal(frames[0].image, rgba[..., :3])
    assert src.stats.errors_by_reason.get("unsupported_frame") == 1
    assert "1400 of its 2000 pixels are transparent" in src.stats.last_error


async def test_a_snapshot_camera_that_hangs_mid_answer_is_reported_and_reopened_while_others_serve():
    """A snapshot camera that hung mid-answer, dribbling its status line and headers (a byte every 0.2 s:
    a hung or swamped web server), held the reader for as long as it dribbled: http.client gave each read
    open_timeout_s, not the whole answer, so the camera stayed 'connected', was never reported nor reopened,
    and gave no frame. Its answer's head must now come whole within open_timeout_s: stream_lost, and it is
    asked again; a camera that stops halfway through its image is reported the same way; another camera of
    the same process keeps giving frames meanwhile."""
    import socket
    import threading

    good = _jpeg(11)
    requests: list[str] = []
    done = threading.Event()

    def answer(conn: socket.socket, n: int) -> None:
        with conn:
            try:
                conn.recv(65536)
                head = b"HTTP/1.0 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n" % len(good)
                if n < 2:  # two good answers first
                    conn.sendall(head + b"\r\n" + good)
                elif n % 2 == 0:  # hung while sending its headers: a byte now and then, never the end
                    conn.sendall(b"HTTP/1.0 200 OK\r\nX-Pad: ")
                    while not done.wait(0.2):
                        conn.sendall(b"a")
                else:  # hung halfway through its image
                    conn.sendall(head + b"\r\n" + good[: len(good) // 2])
                    done.wait(30)
            except OSError:
                pass

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            requests.append("hung-head" if len(requests) >= 2 and len(requests) % 2 == 0 else "answer")
            threading.Thread(target=answer, args=(conn, len(requests) - 1), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    hung = CameraSource(
        "hung",
        CameraSettings(
            url=f"http://127.0.0.1:{server.getsockname()[1]}/snap.jpg",
            fps=20,
            open_timeout_s=0.5,
            read_timeout_s=0.5,
            reconnect_initial_s=0.1,
            reconnect_max_s=0.2,
        ),
    )
    other_cam = SnapshotCamera(lambda n: (good, "image/jpeg"))
    other = CameraSource("other", CameraSettings(url=other_cam.url, fps=20))
    frames = {"hung": 0, "other": 0}

    async def count(src: CameraSource) -> None:
        async for _ in src.items():
            frames[src.name] += 1

    from tests.support.waits import until

    tasks = []
    try:
        for src in (hung, other):
            await src.start()
            tasks.append(asyncio.create_task(count(src)))
        await until(lambda: frames["hung"] >= 2, 30, "the camera's two good answers")
        # the dribbled head, then (asked again) the image cut halfway: each reported, each followed by a reopen
        await until(lambda: hung.stats.errors_by_reason.get("stream_lost", 0) >= 2, 8, "stream_lost twice")
        await until(lambda: len(requests) >= 5, 8, "the camera asked again after the second hang")
        other_then = frames["other"]
        await until(lambda: frames["other"] >= other_then + 3, 8, "frames from the other camera")
    finally:
        done.set()
        for t in tasks:
            t.cancel()
        for src in (hung, other):
            await src.stop()
        server.close()
        other_cam.stop()
    assert frames["hung"] == 2 and hung.stats.reconnects >= 2
    assert "no frame for" in (hung.stats.last_error or "")


def _exif(orientation: int, big_endian: bool = False) -> bytes:
    """An EXIF block (a TIFF header and one directory) holding only the Orientation tag, as cameras write it."""
    e = ">" if big_endian else "<"
    return (
        (b"MM\x00*" if big_endian else b"II*\x00")
        + struct.pack(e + "IH", 8, 1)
        + struct.pack(e + "HHIHH", 0x112, 3, 1, orientation, 0)
        + struct.pack(e + "I", 0)
    )


def oriented_files(img: np.ndarray, orientation: int) -> dict[str, bytes]:
    """``img`` saved by OpenCV as PNG (an eXIf chunk after its image data, where some tools put it), TIFF (its
    Orientation tag), JPEG (an Exif APP1 after the JFIF APP0, big-endian) and lossless WebP (an EXIF chunk in
    an extended header), each declaring ``orientation``."""
    png = cv2.imencode(".png", img)[1].tobytes()
    exif = _exif(orientation)
    chunk = struct.pack(">I", len(exif)) + b"eXIf" + exif + struct.pack(">I", zlib.crc32(b"eXIf" + exif))
    end = png.rindex(b"IEND") - 4
    tif = cv2.imencode(".tif", img, [cv2.IMWRITE_TIFF_COMPRESSION, 1])[1].tobytes()
    ifd = struct.unpack_from("<I", tif, 4)[0]
    n = struct.unpack_from("<H", tif, ifd)[0]
    entries = [tif[ifd + 2 + 12 * k : ifd + 14 + 12 * k] for k in range(n)]
    entries = sorted([*entries, struct.pack("<HHIHH", 274, 3, 1, orientation, 0)], key=lambda x: x[:2][::-1])
    at = len(tif) + len(tif) % 2
    tif = tif + b"\x00" * (at - len(tif)) + struct.pack("<H", n + 1) + b"".join(entries) + b"\x00" * 4
    tif = tif[:4] + struct.pack("<I", at) + tif[8:]
    jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 100])[1].tobytes()
    app1 = b"Exif\x00\x00" + _exif(orientation, big_endian=True)
    jfif_end = 4 + struct.unpack_from(">H", jpg, 4)[0]
    jpg = jpg[:jfif_end] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpg[jfif_end:]
    webp = cv2.imencode(".webp", img, [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes()
    h, w = img.shape[:2]

    def riff(kind: bytes, body: bytes) -> bytes:
        return kind + struct.pack("<I", len(body)) + body + b"\x00" * (len(body) % 2)

    vp8x = riff(b"VP8X", bytes([0x08, 0, 0, 0]) + struct.pack("<I", w - 1)[:3] + struct.pack("<I", h - 1)[:3])
    body = b"WEBP" + vp8x + webp[12:] + riff(b"EXIF", _exif(orientation))
    return {
        "png": png[:end] + chunk + png[end:],
        "tif": tif,
        "jpg": jpg,
        "webp": b"RIFF" + struct.pack("<I", len(body)) + body,
    }


def test_the_exif_orientation_read_is_the_one_opencvs_decode_applies():
    """``exif_orientation`` reads what OpenCV's decode turns a file by (a JPEG's Exif APP1, a PNG's eXIf, a
    TIFF's Orientation tag, a WebP's EXIF chunk), and ``orient`` turns as it does: each of the 8 orientations
    of each kind, decoded as stored and turned here, is OpenCV's own turned decode."""
    from protocols.image_header import decode_image, exif_orientation, orient

    img = np.random.default_rng(3).integers(0, 256, (6, 10, 3), np.uint8)
    for o in range(1, 9):
        for kind, data in oriented_files(img, o).items():
            assert exif_orientation(data) == o, (kind, o)
            turned = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            stored = decode_image(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
            assert np.array_equal(orient(stored, o), turned), (kind, o)
            if kind != "jpg":  # as written (a TIFF too, which OpenCV's decoder turns whatever the flags)
                assert np.array_equal(stored, img), (kind, o)
    assert exif_orientation(cv2.imencode(".png", img)[1].tobytes()) == 1
    assert exif_orientation(b"\xff\xd8\xff\xe1\x00") == 1  # cut short: none, never raised


async def test_a_raw_bayer_frame_with_an_exif_orientation_is_turned_after_demosaicing_by_camera_and_import(
    tmp_path,
):
    """A colour camera's raw mosaic saved with an EXIF orientation (the camera mounted turned, its software
    tagging the files) was turned by the decode before it was demosaiced: the pattern shifted, and a red part
    came out green (the centre pixel (0, 100, 0), not (0, 0, 200)), at the agent and in `dataset import` alike.
    The mosaic is now decoded as stored, demosaiced, then turned: the frame is the scene turned, on both
    sides."""
    from cloud_trainer.train.data import load_parts
    from cloud_trainer.train.images import import_images
    from protocols.image_header import orient

    scene = np.zeros((16, 24, 3), np.uint8)
    scene[:] = (200, 0, 0)  # a blue background (BGR)
    scene[4:12, 6:18] = (0, 0, 200)  # a red part
    raw = np.empty(scene.shape[:2], np.uint8)  # the sensor's RGGB mosaic of it
    raw[0::2, 0::2] = scene[0::2, 0::2, 2]
    raw[0::2, 1::2] = scene[0::2, 1::2, 1]
    raw[1::2, 0::2] = scene[1::2, 0::2, 1]
    raw[1::2, 1::2] = scene[1::2, 1::2, 0]
    straight = cv2.cvtColor(raw, cv2.COLOR_BayerRGGB2BGR)
    src = tmp_path / "src"
    (src / "ok").mkdir(parents=True)
    (src / "dent").mkdir()
    for o in (3, 6, 8):
        for kind in ("png", "tif"):
            data = oriented_files(raw, o)[kind]
            folder = tmp_path / f"drop{o}{kind}"
            folder.mkdir()
            (folder / f"raw.{kind}").write_bytes(data)
            frames, cam = await _frames(str(folder), 1, timeout_s=30.0, fps=200, bayer="rggb")
            assert not cam.stats.errors_by_reason, cam.stats.last_error
            want = orient(straight, o)
            got = frames[0].image
            assert np.array_equal(got, want), (o, kind, got[got.shape[0] // 2, got.shape[1] // 2])
            part = got[got.shape[0] // 2, got.shape[1] // 2]
            assert part[2] > 150 and part[:2].max() < 60, part  # red, where the part is
            (src / ("ok" if o != 8 else "dent") / f"raw{o}.{kind}").write_bytes(data)
    (src / "dent" / "raw1.png").write_bytes(oriented_files(raw, 1)["png"])
    import_images(src, tmp_path / "ds", bayer="rggb", min_good=1, log=lambda m: None)
    trained = {(im.shape, im.tobytes()) for im in load_parts(tmp_path / "ds").images}
    assert trained == {(orient(straight, o).shape, orient(straight, o).tobytes()) for o in (1, 3, 6, 8)}


class _HttpCamera:
    """An HTTP/1.1 camera on 127.0.0.1 whose every GET is answered by ``answer(handler)`` (it writes the status,
    headers and body itself, as broken firmware does)."""

    def __init__(self, answer) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                try:
                    answer(self)
                except OSError:
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


async def test_a_camera_answering_200_with_a_web_page_or_json_is_open_failed_quoting_it_others_serve():
    """A camera's URL answering 200 with text (its web page, "busy", an API's JSON: a wrong path, a camera asking
    to log in on its page) was handed to OpenCV's FFmpeg, which read the page as a video: a corrupt_frame at every
    read ('a frame could not be read or decoded'), a stream_lost after every ten, never what the camera sent, and
    FFmpeg's lines on standard error. It is open_failed, naming the content type and quoting the text, asked again
    after the backoff; a good camera beside it keeps serving."""
    from tests.support.waits import until

    page, api = b"<html><body><h1>503 Service busy</h1></body></html>", b'{"error": "sensor busy"}\n'

    def answer(h) -> None:
        if h.path.startswith("/good"):
            body, ctype = _jpeg(3), "image/jpeg"
        else:
            body, ctype = (page, "text/html") if h.path.endswith(".jpg") else (api, "")
        h.send_response(200)
        if ctype:
            h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(body)
        h.close_connection = True

    cam = _HttpCamera(answer)
    fast = {"reconnect_initial_s": 0.2, "reconnect_max_s": 0.5}
    bad = [
        CameraSource("page", CameraSettings(url=cam.base + "/snapshot.jpg", **fast)),
        CameraSource("api", CameraSettings(url=cam.base + "/api/snapshot", **fast)),
    ]
    good = CameraSource("good", CameraSettings(url=cam.base + "/good.jpg", fps=10))
    try:
        for src in (*bad, good):
            await src.start()
        frames = await take(good, 3)
        await until(lambda: all(s.stats.errors for s in bad), 30.0, "an error from each bad camera")
    finally:
        for src in (*bad, good):
            await src.stop()
        cam.stop()
    assert len(frames) == 3 and not good.stats.errors_by_reason
    for src, body in zip(bad, (page, api), strict=True):
        assert src.stats.received == 0
        assert set(src.stats.errors_by_reason) == {"open_failed"}, (src.name, src.stats.errors_by_reason)
        said = src.stats.last_error or ""
        assert (
            "answers HTTP 200 with " + ("text/html" if src.name == "page" else "no content type") in said
        ), said
        assert "it reads as text: " + repr(body.decode()) in said, said


async def test_a_snapshot_answer_whose_content_length_overstates_its_image_is_a_frame_when_the_image_has_come():
    """A snapshot camera whose Content-Length is longer than the image it sends and that keeps the connection open
    (firmware ignoring 'Connection: close') gave no frame at all: each answer waited read_timeout_s for bytes that
    never came, then was a stream_lost 'within an image' whose bytes had all come. A whole JPEG or PNG (its end
    marker after its data) is the answer as soon as it has come, as an MJPEG part is."""
    import threading

    images = [
        _jpeg(4),
        cv2.imencode(".png", cv2.imdecode(np.frombuffer(_jpeg(5), np.uint8), cv2.IMREAD_COLOR))[1],
    ]
    images[1] = images[1].tobytes()
    released = threading.Event()
    asked = [0]

    def answer(h) -> None:
        body = images[asked[0] % 2]
        asked[0] += 1
        h.send_response(200)
        h.send_header("Content-Type", "image/jpeg" if body[:2] == b"\xff\xd8" else "image/png")
        h.send_header("Content-Length", str(len(body) + 100))  # 100 bytes that never come
        h.end_headers()
        h.wfile.write(body + b"\r\n")
        h.wfile.flush()
        h.rfile.read(1)  # the connection held open until the reader closes it
        released.set()

    cam = _HttpCamera(answer)
    try:
        frames, src = await _frames(cam.base + "/snapshot.jpg", 4, timeout_s=20.0, fps=10, read_timeout_s=60)
    finally:
        cam.stop()
    assert len(frames) == 4, src.stats.last_error
    assert not src.stats.errors_by_reason and src.stats.reconnects == 0
    want = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR) for b in images]
    assert all(np.array_equal(f.image, want[k % 2]) for k, f in enumerate(frames))
    assert released.is_set()  # the reader closed each answer's connection once its image had come


async def test_an_mjpeg_stream_its_firmware_calls_text_plain_is_read_not_taken_for_a_web_page():
    """A stream whose firmware declares ``text/plain`` starts with text (its boundary and part headers, here over
    the 120 characters a text answer is judged by) and is read as before (by FFmpeg): only an answer that is text
    throughout its start and is no multipart stream is refused as a web page."""
    import time as _time

    part = _jpeg(6)

    def answer(h) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Connection", "close")
        h.end_headers()
        head = b"--frame\r\nContent-Type: image/jpeg\r\nX-Timestamp: 2026-12-05T13:16:00.000000Z\r\n"
        head += b"X-Frame-Counter: 000000000001\r\nContent-Length: %d\r\n\r\n" % len(part)
        while True:
            h.wfile.write(head + part + b"\r\n")
            _time.sleep(0.05)

    cam = _HttpCamera(answer)
    try:
        frames, src = await _frames(cam.base + "/video", 2, timeout_s=20.0, fps=5)
    finally:
        cam.stop()
    assert len(frames) == 2, src.stats.last_error
    assert "open_failed" not in src.stats.errors_by_reason


@pytest.mark.parametrize("ctype", ["text/plain", None])
async def test_an_mjpeg_stream_whose_first_packet_is_its_line_end_is_read_not_judged_as_text(ctype):
    """A stream called text/plain (or naming no type) whose firmware sends the CRLF before its first boundary with
    its HTTP header, the boundary later: its first packet, all the check saw, was '\\r\\n', and the camera was
    refused as a web page quoting it (0 frames, where FFmpeg reads it). Fewer than 16 bytes besides white space,
    its body not all come, are too little to judge: the stream is FFmpeg's, as before. Here the camera holds the
    reader's connection at that CRLF (FFmpeg's, told by its User-Agent, gets the parts)."""
    import time as _time

    part = _jpeg(7)

    def answer(h) -> None:
        h.send_response(200)
        if ctype:
            h.send_header("Content-Type", ctype)
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(b"\r\n")
        h.wfile.flush()
        if not (h.headers.get("User-Agent") or "").startswith("Lavf"):
            h.rfile.read(1)  # held until the reader lets go: all it sees is the line end
            return
        head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(part)
        while True:
            h.wfile.write(head + part + b"\r\n")
            _time.sleep(0.05)

    cam = _HttpCamera(answer)
    try:
        frames, src = await _frames(cam.base + "/video", 2, timeout_s=30.0, fps=5)
    finally:
        cam.stop()
    assert len(frames) == 2, src.stats.last_error
    assert "open_failed" not in src.stats.errors_by_reason, src.stats.last_error


async def test_a_chunked_answer_whose_first_chunk_size_line_is_over_the_limit_is_open_failed_saying_so():
    """The text check peeks at the answer's first bytes: a chunked answer whose chunk-size line runs over
    http.client's 65,536 bytes raised LineTooLong out of the camera's open. It is open_failed, saying so, as a
    header line over the limit is."""

    def answer(h) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/html")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        h.wfile.write(b"a" * 70_000)
        h.wfile.flush()
        h.rfile.read(1)

    cam = _HttpCamera(answer)
    src = CameraSource(
        "cam", CameraSettings(url=cam.base + "/video", reconnect_initial_s=0.2, reconnect_max_s=0.5)
    )
    try:
        await src.start()
        from tests.support.waits import until

        await until(lambda: src.stats.errors, 30.0, "an error from the camera")
    finally:
        await src.stop()
        cam.stop()
    assert set(src.stats.errors_by_reason) == {"open_failed"}, src.stats.errors_by_reason
    assert "chunk-size line over 65536 bytes" in (src.stats.last_error or ""), src.stats.last_error


@pytest.mark.parametrize("framing", ["close", "chunked"])
async def test_a_short_text_answer_of_no_content_length_is_open_failed_quoting_it(framing):
    """A camera answering 200 with a short text ('busy', 'Unauthorized', a small JSON) and no Content-Length (its
    body ended by closing the connection, or chunked) was quoted before 633e5fa5; that left every answer of fewer
    than 16 bytes besides white space whose length is not given to FFmpeg (the generic 'could not be opened').
    Only a head that is white space, or the start of a boundary's '--', is too little to judge now."""
    from tests.support.waits import until

    bodies = {"/busy": b"busy\n", "/auth": b"Unauthorized", "/json": b'{"err":"busy"}'}

    def answer(h) -> None:
        body = bodies[h.path]
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
        if framing == "chunked":
            h.wfile.write(
                head + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
            )
        else:
            h.wfile.write(head + b"\r\n" + body)
        h.wfile.flush()
        h.close_connection = True

    cam = _HttpCamera(answer)
    fast = {"reconnect_initial_s": 0.2, "reconnect_max_s": 0.5}
    srcs = [CameraSource(path[1:], CameraSettings(url=cam.base + path, **fast)) for path in bodies]
    try:
        for src in srcs:
            await src.start()
        await until(lambda: all(s.stats.errors for s in srcs), 30.0, "an error from each camera")
    finally:
        for src in srcs:
            await src.stop()
        cam.stop()
    for src, body in zip(srcs, bodies.values(), strict=True):
        assert set(src.stats.errors_by_reason) == {"open_failed"}, (src.name, src.stats.errors_by_reason)
        said = src.stats.last_error or ""
        assert "it reads as text: " + repr(body.decode()) in said, said


@pytest.mark.parametrize("ctype", ["application/octet-stream", None])
async def test_a_jpeg_stream_whose_first_chunk_is_its_ff_d8_is_read_not_judged_as_text(ctype):
    """A camera's raw JPEG stream (untyped or application/octet-stream, chunked) whose first chunk is the FF D8
    that starts its first image: the text check saw those 2 bytes alone, cut them until b'' decoded and refused
    the camera as text quoting '' (0 frames, where FFmpeg reads it). Only a character split at the end of the
    head is cut; bytes that are not UTF-8 are no text. Here the camera holds the check's connection at that first
    chunk (FFmpeg's, told by its User-Agent, gets the images)."""
    import time as _time

    part = _jpeg(8)

    def answer(h) -> None:
        h.send_response(200)
        if ctype:
            h.send_header("Content-Type", ctype)
        h.send_header("Transfer-Encoding", "chunked")
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(b"2\r\n\xff\xd8\r\n")
        h.wfile.flush()
        if not (h.headers.get("User-Agent") or "").startswith("Lavf"):
            h.rfile.read(1)  # held until the reader lets go: all it sees is FF D8
            return
        body = part[2:]
        while True:
            h.wfile.write(b"%x\r\n%s\r\n" % (len(body), body))
            body = part
            _time.sleep(0.01)  # FFmpeg probes some 125 images of a raw JPEG stream before its open returns

    cam = _HttpCamera(answer)
    try:
        frames, src = await _frames(cam.base + "/video", 2, timeout_s=60.0, fps=5, open_timeout_s=30.0)
    finally:
        cam.stop()
    assert len(frames) == 2, src.stats.last_error
    assert "open_failed" not in src.stats.errors_by_reason, src.stats.last_error


def test_a_snapshot_camera_trickling_a_png_of_many_chunks_has_each_chunk_walked_once_not_after_every_read():
    """A snapshot camera on 127.0.0.1 sending a PNG in pieces, 2,000 small text chunks each ending with IEND's
    bytes and sent apart: the reader asks after each read whether the answer is a whole image, and walked the
    whole chunk chain again each time (its CPU 0.6 -> 1.5 s a 5-s answer, a trickle that never ends). It goes on
    from the last whole chunk reached now: the answer's read counted in Python line events, not timed (~130,000,
    where ~9.5 million before), and the answer taken whole once its IEND has come."""
    import socket
    import threading

    from devices.camera.mjpeg import open_stream
    from tests.support.line_events import line_events

    png = cv2.imencode(".png", np.full((48, 64), 90, np.uint8))[1].tobytes()
    piece = struct.pack(">I", 4) + b"teXt" + png[-8:]  # 4 bytes of text ('IEND'), its CRC field IEND's CRC
    done = threading.Event()

    def answer(h) -> None:
        h.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each piece its own segment
        h.send_response(200)
        h.send_header("Content-Type", "image/png")
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(png[:33])  # its signature and header
        for _ in range(2000):
            h.wfile.write(piece)
            time.sleep(0.0002)
        h.wfile.write(png[33:])  # its image data and IEND
        done.wait(30)

    cam = _HttpCamera(answer)
    try:
        stream = open_stream(cam.base + "/snapshot.png", 5.0, 30.0, 200_000_000)
        got: list[bytes] = []
        budget = 1_000_000
        assert line_events(lambda: got.append(stream.next_part()), budget) <= budget
    finally:
        done.set()
        cam.stop()
    (data,) = got
    assert data == png[:33] + piece * 2000 + png[33:]  # the whole answer, taken once its IEND had come
