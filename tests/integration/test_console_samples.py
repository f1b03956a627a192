"""The fleet console's samples and agents over real HTTP, on a real SQLite store: ``/api/samples`` is the newest 200
samples, oldest first (the page shows the last 60 of them, newest first), and the store reads no more than those
200 rows for it. It once read every sample row of the tenant and kept the last 200 in Python, holding the store's
lock (about 2 s at 300k samples, every 3 s while the page was open: every tenant's heartbeats waited behind it)."""

from __future__ import annotations

import hashlib
import json
import socket
import time
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest

from cloud_trainer.fleet import console as console_module
from cloud_trainer.fleet.console import Console
from cloud_trainer.fleet.store import SQLiteStore
from tests.support.s3 import CREDENTIALS, s3_bucket, s3_client, s3_server  # noqa: F401  (fixtures)


class CountingStore(SQLiteStore):
    """The real SQLite store, noting how many rows each read returned."""

    def __init__(self, path) -> None:
        super().__init__(path)
        self.read: list[int] = []

    def _rows(self, sql: str, args=()) -> list[tuple]:
        rows = super()._rows(sql, args)
        self.read.append(len(rows))
        return rows


def _sample(seq: int, model: str, reason: str) -> dict:
    return {
        "epoch": 0,
        "seq": seq,
        "kind": "sample",
        "t": 1_700_000_000.0 + seq,
        "payload": json.dumps({"model": model, "reason": reason, "verdict": "NG"}),
        "sample_sha256": f"{seq:064x}",
        "sample_ext": ".png",
    }


@pytest.fixture
def console(tmp_path):
    store = CountingStore(tmp_path / "fleet.db")
    seqs = list(range(1, 501))
    seqs = seqs[250:] + seqs[:250]  # arrival order is not time order
    store.ingest(
        "gw1",
        [_sample(s, "part-inspection" if s % 5 else "other", "ng" if s % 3 else "ok_random") for s in seqs],
    )
    store.ingest("gw1", [_sample(s, "part-inspection", "ng") for s in range(1, 300)], tenant="acme")
    c = Console(SimpleNamespace(store=store), tenant="default")
    c.start()
    yield c, store
    c.stop()
    store.close()


def _get(c: Console, path: str, timeout_s: float = 5):
    with urllib.request.urlopen(f"http://127.0.0.1:{c.port}{path}", timeout=timeout_s) as r:
        return json.loads(r.read())


def test_console_samples_are_the_newest_200_oldest_first_and_the_store_reads_no_more(console):
    c, store = console
    for query, keep in (
        ("?model=part-inspection", lambda s: s % 5),
        ("?model=part-inspection&reason=ng", lambda s: s % 5 and s % 3),
        ("", lambda s: True),
    ):
        store.read.clear()
        got = _get(c, "/api/samples" + query)
        want = [s for s in range(1, 501) if keep(s)][-200:]
        assert [s["seq"] for s in got] == want, query  # oldest first: the page reverses the last 60
        assert {s["agent"] for s in got} == {"gw1"}  # the default tenant's only
        assert store.read and max(store.read) <= 200, (query, store.read)


def _rec(seq: int, epoch: int = 0, kind: str = "result") -> dict:
    return {
        "epoch": epoch,
        "seq": seq,
        "kind": kind,
        "t": 1_700_000_000.0 + seq,
        "payload": '{"pad": "%s"}' % ("x" * 200),
    }


def test_console_agents_count_records_and_find_gaps_without_reading_every_record(tmp_path):
    """``/api/agents`` once counted each agent's records and looked for holes by reading every record row (about
    2.2 s per agent at 1M records, under the store's lock). Now the counts are kept at ingest (``record_counts``)
    and only an epoch with fewer records than its seq range is read for its holes: the work for an agent
    without holes no longer grows with its records (counted in SQLite's VM steps, not in seconds)."""
    store = SQLiteStore(tmp_path / "fleet.db")
    store.ingest("gw1", [_rec(s, kind="event" if s % 10 == 0 else "result") for s in range(1, 20_001)])
    store.ingest("gw2", [_rec(s) for s in (*range(1, 51), *range(61, 101))])  # a hole: 51..60
    store.ingest("gw2", [_rec(s, epoch=2) for s in range(1, 11)])
    store.heartbeat("gw1", {}, [], {}, 0)
    store.heartbeat("gw2", {}, [], {}, 0)
    c = Console(SimpleNamespace(store=store), tenant="default")
    c.start()
    steps = [0]

    def step() -> int:
        steps[0] += 1
        return 0

    try:
        store.db.set_progress_handler(step, 1000)  # called every 1000 VM instructions
        agents = {a["id"]: a for a in _get(c, "/api/agents")}
        store.db.set_progress_handler(None, 0)
    finally:
        c.stop()
    gw1, gw2 = agents["gw1"], agents["gw2"]
    assert gw1["ingest"]["records"] == 20_000 and gw1["ingest"]["by_kind"] == {"event": 2000, "result": 18000}
    assert (gw1["ingest"]["last_seq"], gw1["gaps"]) == (20_000, [])
    assert (gw2["ingest"]["records"], gw2["ingest"]["epoch"], gw2["ingest"]["last_seq"]) == (100, 2, 10)
    assert gw2["gaps"] == [
        {"epoch": 0, "first": 51, "last": 60, "cause": "unknown"},
        {"epoch": 0, "first": 101, "last": 0, "cause": "epoch_change"},
    ]
    assert steps[0] < 100, steps[0]  # reading gw1's 20,000 rows alone took thousands
    store.close()


def test_console_page_shows_samples_browsers_cannot_show_as_download_links_not_broken_images(tmp_path):
    """The page showed every sample as an `<img>`: a TIFF, a PNM or a `.npy` window (kinds no browser shows)
    was a broken image. `/api/samples` says how each is shown (`view`): `image` for PNG, JPEG, BMP and WebP
    (and GIF), `file` for any other kind, which the page offers as a link that downloads it; the kind is the
    bytes' in the blob store (test_fleet_sample_kinds: whatever extension the gateway gave), and a sample whose
    blob is not there is a link too."""
    import hashlib
    import io

    import cv2
    import numpy as np

    from cloud_trainer.blobs import LocalBlobStore
    from cloud_trainer.fleet.console import PAGE

    store, blobs = SQLiteStore(tmp_path / "fleet.db"), LocalBlobStore(tmp_path / "blobs")
    frame = np.random.default_rng(3).integers(0, 255, (6, 20, 3), np.uint8)
    window = io.BytesIO()
    np.save(window, np.zeros(8, np.float32))
    exts = [".png", ".JPG", ".jfif", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm", ".npy", ""]
    kinds = [".png", ".jpg", ".jpg", ".bmp", ".webp", ".tif", ".tif", ".pgm", ".ppm"]  # .jfif: a JPEG
    data = [
        cv2.imencode(k, np.ascontiguousarray(frame[:, : 20 - i, : 1 if k == ".pgm" else 3]))[1].tobytes()
        for i, k in enumerate(kinds)
    ]  # each its own digest
    data += [window.getvalue(), b"?"]
    rows = [
        {**_sample(i, "part-inspection", "ng"), "sample_ext": e, "sample_sha256": blobs.put_bytes(d)}
        for i, (e, d) in enumerate(zip(exts, data, strict=True), 1)
    ]
    rows.append(
        {
            **_sample(len(exts) + 1, "part-inspection", "ng"),
            "sample_sha256": hashlib.sha256(b"gone").hexdigest(),
        }
    )
    store.ingest("gw1", rows)
    c = Console(SimpleNamespace(store=store, blobs=blobs), tenant="default")
    c.start()
    try:
        got = {s["seq"]: s["view"] for s in _get(c, "/api/samples")}
        with urllib.request.urlopen(f"http://127.0.0.1:{c.port}/", timeout=5) as r:
            page = r.read().decode()
    finally:
        c.stop()
        store.close()
    assert [got[i] for i in range(1, len(exts) + 2)] == ["image"] * 5 + ["file"] * 7
    # the page draws an <img> only for view "image", a download link otherwise
    assert page == PAGE.read_text()
    assert 's.view === "image" ? `<img ${a} src="${u}">` : `<a ${a} href="${u}" download>' in page


def test_an_image_declaring_more_pixels_than_the_bound_is_a_download_not_an_img(tmp_path):
    """A 60000x60000 PNG (a decompression bomb: a few bytes of header) was shown as an `<img>`, and served as
    image/png: the operator's browser was asked to decode 3.6 gigapixels. An image whose header declares more than
    `VIEW_MAX_MEGAPIXELS` is `view: file` and its blob an attachment; one within it is shown as before."""
    import struct
    import zlib

    from cloud_trainer.blobs import LocalBlobStore

    def png(w: int, h: int) -> bytes:
        ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
        chunk = b"IHDR" + ihdr
        return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))

    def gif(w: int, h: int) -> bytes:
        return b"GIF89a" + struct.pack("<HH", w, h) + bytes(8)

    store, blobs = SQLiteStore(tmp_path / "fleet.db"), LocalBlobStore(tmp_path / "blobs")
    data = [png(60000, 60000), png(7000, 7000), png(640, 480), gif(65535, 65535)]
    rows = [
        {**_sample(i, "part-inspection", "ng"), "sample_ext": ".png", "sample_sha256": blobs.put_bytes(d)}
        for i, d in enumerate(data, 1)
    ]
    store.ingest("gw1", rows)
    c = Console(SimpleNamespace(store=store, blobs=blobs), tenant="default")
    c.start()
    try:
        got = {s["seq"]: s["view"] for s in _get(c, "/api/samples")}
        with urllib.request.urlopen(
            f"http://127.0.0.1:{c.port}/blob/{rows[0]['sample_sha256']}", timeout=5
        ) as r:
            bomb = (r.headers["Content-Type"], r.headers["Content-Disposition"])
        with urllib.request.urlopen(
            f"http://127.0.0.1:{c.port}/blob/{rows[2]['sample_sha256']}", timeout=5
        ) as r:
            small = (r.headers["Content-Type"], r.headers["Content-Disposition"])
    finally:
        c.stop()
        store.close()
    assert [got[i] for i in (1, 2, 3, 4)] == ["file", "image", "image", "file"]
    assert bomb == ("image/png", f'attachment; filename="sample-{rows[0]["sample_sha256"][:16]}.png"')
    assert small == ("image/png", None)


def test_console_samples_answer_while_the_object_store_stalls(tmp_path, monkeypatch, request):
    """``/api/samples`` reads each sample's first bytes from the blob store to say how the page shows it. Those
    reads were made one after another inside the one computation that every ``/api`` answer of every tenant
    waits its turn for, with the S3 client's own patience (60-s timeouts, 5 attempts each): an object store that
    stalled (a black-holed endpoint, an overloaded MinIO) kept the listing, and behind it every tenant's agents,
    deployments and models, from answering for hours, where the listing had never needed the blob store. The
    reads go to a few reader threads now and a listing waits a bounded time for them: under a stalled store it
    answers, each sample a download link until its bytes are read; a store that answers gives each its kind."""
    import cv2
    import numpy as np

    from cloud_trainer.blobs import S3BlobStore

    for k, v in CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    endpoint, bucket = request.getfixturevalue("s3_bucket")
    png = cv2.imencode(".png", np.zeros((4, 5, 3), np.uint8))[1].tobytes()
    blobs = S3BlobStore(bucket, client=s3_client(endpoint))
    store = SQLiteStore(tmp_path / "fleet.db")
    for tenant in ("default", "acme"):
        digest = blobs.for_tenant(tenant).put_bytes(png)
        rows = [{**_sample(i, "part-inspection", "ng"), "sample_sha256": digest} for i in (1, 2)]
        store.ingest("gw1", rows, tenant=tenant)
    # an S3 endpoint that takes connections and never answers, spoken to as the service does (its own client)
    stalled = socket.create_server(("127.0.0.1", 0), backlog=64)
    srv = SimpleNamespace(
        store=store, blobs=S3BlobStore(bucket, endpoint=f"http://127.0.0.1:{stalled.getsockname()[1]}")
    )
    # the listing waits 0.5 s for its reads here (VIEW_WAIT_S, 2 s in service), and so rests 4x less after it
    # (absent from the former code, which had no such wait)
    monkeypatch.setattr(console_module, "VIEW_WAIT_S", 0.5, raising=False)
    c = Console(srv)
    c.start()
    try:
        # 60 s: a loaded machine's bound (the listing waits 0.5 s for its reads); the former code waited out the S3
        # client's patience (5 attempts of 60 s) for each sample
        with urllib.request.urlopen(f"http://127.0.0.1:{c.port}/api/samples", timeout=60) as r:
            assert r.status == 200
            assert [s["view"] for s in json.loads(r.read())] == ["file", "file"]
        srv.blobs = blobs  # the store answers again: another tenant's listing reads its samples' kinds
        views: list[str] = []
        for n in range(120):  # each a new URL (not an answer shared from the last): a read done late is kept
            try:
                # 30 s: after the stalled listing (a costly answer) the console rests 4x its cost, and a request
                # with nothing to share waits up to 5 s for its turn, then up to 5 s of that rest
                views = [s["view"] for s in _get(c, f"/api/samples?tenant=acme&poll={n}", timeout_s=30)]
            except urllib.error.HTTPError as exc:  # 503: the console rests after a costly answer
                assert exc.code == 503
            if views == ["image", "image"]:
                break
            time.sleep(0.5)
        assert views == ["image", "image"]
    finally:
        c.stop()
        stalled.close()
        store.close()


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_large_sample_goes_out_in_pieces_not_read_whole_into_memory(tmp_path, monkeypatch, request, where):
    """Before: ``/blob/<digest>`` read the sample whole into memory (to check its digest, then to send it), and a
    sample is up to a message's 16 MB (a gateway's raw frame, a long signal window): a tenant's script asking for
    its own largest sample from 32 connections at once held 32 copies, about 0.5 GB, in the fleet service's
    memory, which every tenant's agents share. A sample over ``BLOB_WHOLE_BYTES`` is checked, then sent, in
    pieces now; its bytes are the same, and one whose bytes no longer hash to its digest is still 404, nothing
    of it sent."""
    import tracemalloc

    from cloud_trainer.blobs import LocalBlobStore, S3BlobStore

    if where == "s3":
        for k, v in CREDENTIALS.items():
            monkeypatch.setenv(k, v)
        endpoint, bucket = request.getfixturevalue("s3_bucket")
        blobs = S3BlobStore(bucket, client=s3_client(endpoint))
    else:
        blobs = LocalBlobStore(tmp_path / "blobs")
    size = (24 if where == "local" else 12) * 1024 * 1024
    data = b"\x93NUMPY" + bytes(range(256)) * (size // 256)
    good = blobs.put_bytes(data)
    bad = blobs.put_bytes(
        data + b"!"
    )  # then altered in the store (local: the file; S3: another object's bytes)
    if where == "local":
        blobs.path(bad).write_bytes(data + b"?")
    else:
        blobs.client.put_object(Bucket=bucket, Key=blobs.key(bad), Body=data + b"?")
    store = SQLiteStore(tmp_path / "fleet.db")
    store.ingest("gw1", [{**_sample(1, "m", "ng"), "sample_sha256": good, "sample_ext": ".npy"}])
    store.ingest("gw1", [{**_sample(2, "m", "ng"), "sample_sha256": bad, "sample_ext": ".npy"}])
    del data
    c = Console(SimpleNamespace(store=store, blobs=blobs), tenant="default")
    c.start()
    tracemalloc.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{c.port}/blob/{good}", timeout=30) as r:
            h, got = hashlib.sha256(), 0
            while piece := r.read(65536):  # the client keeps no more than a piece either
                h.update(piece)
                got += len(piece)
            ctype = r.headers["Content-Type"]
        peak = tracemalloc.get_traced_memory()[1]
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{c.port}/blob/{bad}", timeout=30)
    finally:
        tracemalloc.stop()
        c.stop()
        store.close()
    assert (h.hexdigest(), got, ctype) == (good, size + 6, "application/octet-stream")
    assert peak < size // 3, peak  # the former code: the size and more
    assert refused.value.code == 404
