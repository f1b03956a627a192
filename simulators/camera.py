"""A conveyor camera: generated parts (``simulators.parts``) as an HTTP MJPEG stream, a video file
or a folder of images.

``CameraServer`` produces one part per frame at ``fps`` on a thread and serves, on 127.0.0.1:

    /stream.mjpg   multipart/x-mixed-replace MJPEG (what IP cameras serve; OpenCV's FFmpeg opens it)
    /frame.jpg     the latest frame
    /truth         JSON: the last frames' {seq, part_id, label, t} (t = epoch seconds it was shown),
                   so that a demo can compare verdicts with the truth, matching by time

Each client gets every frame produced while it is connected (it waits on a condition), in order.
``edge-sim camera --port P [--fps 5] [--seed 0] [--defect-rate 0.2]`` runs the server;
``--video FILE --frames N`` writes an MJPG .avi and ``--folder DIR --frames N`` PNG files instead.

Limits: JPEG quality is fixed (90); no RTSP (see FIELD-NOTES for a GStreamer RTSP server).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from simulators.parts import PartGenerator

BOUNDARY = "frameboundary"


class CameraServer:
    def __init__(
        self,
        port: int = 0,
        fps: float = 5.0,
        seed: int = 0,
        defect_rate: float = 0.2,
        width: int = 128,
        height: int = 128,
        host: str = "127.0.0.1",
        truth_keep: int = 20_000,
        surface: str = "brushed",
    ) -> None:
        self.fps = float(fps)
        self.gen = PartGenerator(seed, width, height, defect_rate, surface=surface)
        self.truth: collections.deque = collections.deque(maxlen=truth_keep)
        self.seq = -1
        self.jpeg = b""
        self.cond = threading.Condition()
        self._stop = threading.Event()
        self._garbage_next = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args) -> None:  # quiet: a demo prints its own story
                pass

            def do_GET(self) -> None:
                if self.path.startswith("/stream.mjpg"):
                    server._stream(self)
                elif self.path.startswith("/frame.jpg"):
                    with server.cond:
                        data = server.jpeg
                    self._send(200, "image/jpeg", data)
                elif self.path.startswith("/truth"):
                    with server.cond:
                        rows = list(server.truth)
                    self._send(200, "application/json", json.dumps(rows).encode())
                else:
                    self._send(404, "text/plain", b"try /stream.mjpg, /frame.jpg or /truth\n")

            def _send(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://{host}:{self.port}/stream.mjpg"
        self._threads: list[threading.Thread] = []

    # -- lifecycle --
    def start(self) -> CameraServer:
        self._stop.clear()
        self._produce_one()
        for target in (self._producer, self.httpd.serve_forever):
            t = threading.Thread(target=target, daemon=True, name=f"camera-{target.__name__}")
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        with self.cond:
            self.cond.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()
        for t in self._threads:
            t.join(5)
        self._threads.clear()

    def inject_garbage(self) -> None:
        """Send one corrupt JPEG next (for the adapter's bad-frame tests)."""
        self._garbage_next = True

    # -- production --
    def _produce_one(self) -> None:
        import cv2

        part = self.gen.next()
        ok, jpg = cv2.imencode(".jpg", part.image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        data = jpg.tobytes()
        if self._garbage_next:
            self._garbage_next = False
            data = b"\xff\xd8\xff\xe0garbage-not-a-jpeg" + bytes(64)
        with self.cond:
            self.seq += 1
            self.jpeg = data
            self.truth.append(
                {"seq": self.seq, "part_id": part.part_id, "label": part.label, "t": time.time()}
            )
            self.cond.notify_all()

    def _producer(self) -> None:
        period = 1.0 / self.fps
        next_t = time.monotonic() + period
        while not self._stop.is_set():
            delay = next_t - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            next_t += period
            self._produce_one()

    def _stream(self, h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        h.send_header("Cache-Control", "no-cache")
        h.end_headers()
        last = -1
        try:
            while not self._stop.is_set():
                with self.cond:
                    while self.seq == last and not self._stop.is_set():
                        self.cond.wait(1.0)
                    last, data = self.seq, self.jpeg
                h.wfile.write(
                    f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                    + data
                    + b"\r\n"
                )
                h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # the client left


def write_video(path: Path, frames: int, fps: float, seed: int, defect_rate: float, size: int) -> Path:
    import cv2

    gen = PartGenerator(seed, size, size, defect_rate)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (size, size))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}; use a .avi name (MJPG)")
    truth = []
    for _ in range(frames):
        p = gen.next()
        writer.write(p.image)
        truth.append({"index": p.index, "part_id": p.part_id, "label": p.label})
    writer.release()
    path.with_suffix(".truth.json").write_text(json.dumps(truth))
    return path


def write_folder(folder: Path, frames: int, seed: int, defect_rate: float, size: int) -> Path:
    import cv2

    gen = PartGenerator(seed, size, size, defect_rate)
    folder.mkdir(parents=True, exist_ok=True)
    truth = []
    for _ in range(frames):
        p = gen.next()
        cv2.imwrite(str(folder / f"{p.index:06d}.png"), p.image)
        truth.append({"index": p.index, "part_id": p.part_id, "label": p.label})
    (folder / "truth.json").write_text(json.dumps(truth))
    return folder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="edge-sim camera", description="conveyor camera of generated parts")
    ap.add_argument(
        "--port", type=int, default=8081, help="HTTP port for /stream.mjpg (default 8081; 0: any free port)"
    )
    ap.add_argument(
        "--port-file", type=Path, help='once listening, write {"port": N} here (the port got for --port 0)'
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--fps", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--defect-rate", type=float, default=0.2)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--surface", default="brushed", help="the parts' finish: brushed (default) or cast")
    ap.add_argument("--video", type=Path, help="write an MJPG .avi instead of serving")
    ap.add_argument("--folder", type=Path, help="write PNG images into this folder instead of serving")
    ap.add_argument("--frames", type=int, default=100, help="frames to write with --video/--folder")
    a = ap.parse_args(argv)
    if a.video:
        print(f"wrote {write_video(a.video, a.frames, a.fps, a.seed, a.defect_rate, a.size)}")
        return 0
    if a.folder:
        print(f"wrote {write_folder(a.folder, a.frames, a.seed, a.defect_rate, a.size)}")
        return 0
    if a.port_file:
        from simulators.launcher import port_file_unwritable

        if why := port_file_unwritable(a.port_file):
            print(f"edge-sim camera: cannot write --port-file {a.port_file} ({why})", file=sys.stderr)
            return 2
    server = CameraServer(
        a.port, a.fps, a.seed, a.defect_rate, a.size, a.size, a.host, surface=a.surface
    ).start()
    import signal

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # a supervisor's stop is a clean stop, as Ctrl-C is
    try:  # from here: a stop while the port file is written or the line printed still stops the server
        if a.port_file:
            from simulators.launcher import write_port_file

            write_port_file(a.port_file, port=server.port)
        print(f"camera: {server.url} ({a.fps} fps, defect rate {a.defect_rate}); truth at /truth", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        if a.port_file:  # nothing listens on the port it names any more
            from simulators.launcher import remove_port_file

            remove_port_file(a.port_file, port=server.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
