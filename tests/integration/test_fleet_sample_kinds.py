# ruff: noqa: F811  (pytest fixtures imported from test_fleet_tenants are parameters here)
"""Samples on the real fleet service (gRPC server with mTLS on 127.0.0.1, SQLite, the console's HTTP): an agent
uploads PNG frames and .npy windows (and the trainer's other image kinds); a sample of any other kind, or whose
extension is a path ('../'), is refused with INVALID_ARGUMENT naming the field, nothing of its batch stored. The
console serves each sample as its kind, with ``nosniff`` and a sandboxing CSP, a .npy window or bytes that are
not what their extension says as a download, and never one tenant's sample to another tenant's console."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
import urllib.error
import urllib.request

import cv2
import grpc
import numpy as np
import pytest

from cloud_trainer.fleet.console import Console
from protocols.gen import fleet_pb2 as pb
from protocols.gen import fleet_pb2_grpc as rpc
from tests.integration.test_fleet_tenants import _code, cloud, world  # noqa: F401  (fixtures)

IA = grpc.StatusCode.INVALID_ARGUMENT


def _record(seq: int, data: bytes, ext: str) -> pb.Record:
    return pb.Record(
        seq=seq,
        kind="sample",
        t=time.time(),
        payload=b'{"model": "part-inspection", "reason": "ng"}',
        sample=data,
        sample_sha256=hashlib.sha256(data).hexdigest(),
        sample_ext=ext,
    )


async def _push(ch, *records: pb.Record) -> list:
    return [
        a async for a in rpc.FleetStub(ch).PushRecords(iter([pb.RecordBatch(records=records)]), timeout=20)
    ]


def _get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, dict(r.headers.items()), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), b""


async def test_a_sample_of_no_known_kind_or_a_path_for_its_extension_is_refused_naming_the_field(cloud):
    srv, ch, _, _ = cloud
    gw = ch("acme", "gw-a")
    png = cv2.imencode(".png", np.zeros((4, 5, 3), np.uint8))[1].tobytes()
    before = srv.store.stats("gw-a", tenant="acme")["records"]
    for seq, ext in enumerate(
        (".bin", ".svg", ".html", "../../etc/x.png", "..", "png/../../x", ".png\x00", ".png\n", ".p\x1bng"),
        10,
    ):
        code, details = await _code(_push(gw, _record(seq, png, ext)))
        assert code == IA, (ext, code, details)
        assert f"sample seq {seq}): its sample_ext {ext!r}" in details, details
        assert "nothing of the batch was stored" in details, details
    assert srv.store.stats("gw-a", tenant="acme")["records"] == before
    assert srv.blobs.for_tenant("acme").exists(hashlib.sha256(png).hexdigest()) is False
    # what agents send: .png frames, .npy windows; the trainer's image kinds in any case, with or without the dot
    window = io.BytesIO()
    np.save(window, np.zeros(8, np.float32))
    ok = [
        (30, png, ".png"),
        (31, window.getvalue(), ".npy"),
        (32, png + b"\0", "PNG"),
        (33, png + b"\1", ".Jpg"),
    ]
    acks = await _push(gw, *(_record(seq, data, ext) for seq, data, ext in ok))
    assert sorted(acks[0].seqs) == [30, 31, 32, 33] and acks[0].stored == 4


async def test_the_console_serves_each_sample_as_its_kind_and_none_as_a_page_of_its_origin(cloud):
    srv, ch, _, _ = cloud
    frame = np.random.default_rng(1).integers(0, 255, (6, 7, 3), dtype=np.uint8)
    png = cv2.imencode(".png", frame)[1].tobytes()
    jpeg = cv2.imencode(".jpg", frame)[1].tobytes()
    window = io.BytesIO()
    np.save(window, np.arange(16, dtype=np.float32))
    page = b"<html><script>fetch('/api/agents?tenant=acme')</script></html>"  # from a compromised gateway
    uploads = {
        "png": (png, ".png"),
        "jpeg": (jpeg, ".jpg"),
        "npy": (window.getvalue(), ".npy"),
        "page": (page, ".png"),  # bytes that are no PNG under .png: no image at all
        "jpeg_as_png": (jpeg + b"\0", ".png"),  # a JPEG under .png: served as the JPEG it is
    }
    digests = {k: hashlib.sha256(d).hexdigest() for k, (d, _) in uploads.items()}
    acks = await _push(
        ch("beta", "gw-b"), *(_record(i, d, ext) for i, (d, ext) in enumerate(uploads.values(), 10))
    )
    assert acks[0].stored == len(uploads)
    consoles = {t: Console(srv, tenant=t) for t in ("acme", "beta")}
    for c in consoles.values():
        c.start()
    try:
        got = {
            k: await asyncio.to_thread(_get, consoles["beta"].port, f"/blob/{digests[k]}") for k in uploads
        }
        for k, (status, headers, body) in got.items():
            assert (status, body) == (200, uploads[k][0]), k
            assert headers["X-Content-Type-Options"] == "nosniff", k
            assert headers["Cross-Origin-Resource-Policy"] == "same-origin", k  # no probe from another site
            assert "sandbox" in headers["Content-Security-Policy"], k
            assert "default-src 'none'" in headers["Content-Security-Policy"], k
        assert got["png"][1]["Content-Type"] == "image/png" and "Content-Disposition" not in got["png"][1]
        for k in (
            "jpeg",
            "jpeg_as_png",
        ):  # by its bytes: a JPEG under .png is a JPEG (test_image_kinds_by_content)
            assert got[k][1]["Content-Type"] == "image/jpeg" and "Content-Disposition" not in got[k][1]
        for k, name in (("npy", ".npy"), ("page", ".bin")):
            assert got[k][1]["Content-Type"] == "application/octet-stream", k
            assert (
                got[k][1]["Content-Disposition"] == f'attachment; filename="sample-{digests[k][:16]}{name}"'
            )
        # another tenant's console: none of beta's samples, whatever the URL asks
        for k in uploads:
            for path in (f"/blob/{digests[k]}", f"/blob/{digests[k]}?tenant=beta"):
                status, _, body = await asyncio.to_thread(_get, consoles["acme"].port, path)
                assert (status, body) == (404, b""), (k, path)
        status, headers, _ = await asyncio.to_thread(_get, consoles["beta"].port, "/api/agents")
        assert status == 200 and headers["X-Content-Type-Options"] == "nosniff"
    finally:
        for c in consoles.values():
            c.stop()


async def test_a_sample_no_browser_shows_downloads_under_its_kind_not_as_a_bare_digest(cloud):
    """The page offers a TIFF or PNM sample as a download link (``download``, no name of its own): the file
    saved is named by the console's answer. It keeps its image type and is named ``sample-<digest>.<kind>``,
    as a .npy window is. Before, it had no name, and the browser saved it under the URL's bare digest, a file
    of no kind that no viewer opens."""
    srv, ch, _, _ = cloud
    frame = np.random.default_rng(2).integers(0, 255, (6, 7), dtype=np.uint8)
    uploads = {
        ".tif": (cv2.imencode(".tif", frame)[1].tobytes(), "image/tiff"),
        ".pgm": (cv2.imencode(".pgm", frame)[1].tobytes(), "image/x-portable-graymap"),
    }
    digests = {k: hashlib.sha256(d).hexdigest() for k, (d, _) in uploads.items()}
    acks = await _push(
        ch("beta", "gw-b"), *(_record(i, d, k) for i, (k, (d, _)) in enumerate(uploads.items(), 40))
    )
    assert acks[0].stored == len(uploads)
    c = Console(srv, tenant="beta")
    c.start()
    try:
        got = {k: await asyncio.to_thread(_get, c.port, f"/blob/{digests[k]}") for k in uploads}
    finally:
        c.stop()
    for k, (status, headers, body) in got.items():
        assert (status, body) == (200, uploads[k][0]), k
        assert headers["Content-Type"] == uploads[k][1], (k, headers)
        assert headers.get("Content-Disposition") == f'attachment; filename="sample-{digests[k][:16]}{k}"', (
            k,
            headers,
        )
        assert (
            "sandbox" in headers["Content-Security-Policy"] and headers["X-Content-Type-Options"] == "nosniff"
        )


def _labels(path, rows: dict[str, str]):
    import json

    path.write_text("".join(json.dumps({"sha256": s, "label": lab}) + "\n" for s, lab in rows.items()))
    return path


async def test_an_export_leaves_out_each_sample_training_would_refuse_in_one_line_and_records_its_limit(
    cloud, tmp_path
):
    """`cloud-trainer dataset` wrote every labelled sample as it was: a truncated frame, a window's bytes under
    .png, a 16-bit frame stopped `train` later, and a frame from a camera raised above the base's 25 Mpx was
    refused by training with advice about `dataset import`. Now each is left out and said in one line at the
    export; --max-megapixels takes the large frame and is recorded, so training reads it. A JPEG under .png is
    exported as the JPEG it is (test_export_samples_by_content), as the import and the console take it."""
    import yaml

    from cloud_trainer.train.data import DatasetError, load_parts
    from cloud_trainer.train.images import import_images
    from cloud_trainer.train.uploads import export

    srv, ch, _, _ = cloud
    src = tmp_path / "src"  # the user's own images, imported at the camera's default limit (25 Mpx)
    for c, n in (("pass", 20), ("Kratzer", 2)):
        (src / c).mkdir(parents=True)
        for i in range(n):
            img = np.random.default_rng(i + 100 * (c == "pass")).integers(0, 255, (10, 12, 3), dtype=np.uint8)
            (src / c / f"{i}.png").write_bytes(cv2.imencode(".png", img)[1].tobytes())
    import_images(src, tmp_path / "base", log=lambda m: None)
    frame = np.random.default_rng(7).integers(0, 255, (10, 12, 3), dtype=np.uint8)
    png = cv2.imencode(".png", frame)[1].tobytes()
    window = io.BytesIO()
    np.save(window, np.zeros(64, np.float32))
    uploads = [  # (name, bytes, ext, label)
        ("good", png, ".png", "pass"),
        ("truncated", png[: len(png) // 2], ".png", "Kratzer"),
        ("window", window.getvalue(), ".png", "pass"),
        ("jpeg", cv2.imencode(".jpg", frame)[1].tobytes(), ".png", "pass"),
        ("deep", cv2.imencode(".png", np.full((10, 12), 4000, np.uint16))[1].tobytes(), ".png", "pass"),
        ("large", cv2.imencode(".png", np.zeros((5100, 5000), np.uint8))[1].tobytes(), ".png", "Kratzer"),
    ]
    acks = await _push(
        ch("default", "gw1"), *(_record(i, d, e) for i, (_, d, e, _) in enumerate(uploads, 10))
    )
    assert acks[0].stored == len(uploads)
    sha = {name: hashlib.sha256(d).hexdigest() for name, d, _, _ in uploads}
    labels = _labels(tmp_path / "l.jsonl", {sha[n]: lab for n, _, _, lab in uploads})
    said: list[str] = []
    res = export(srv.data, "part-inspection", tmp_path / "ds", tmp_path / "base", labels, log=said.append)
    assert (res["exported"], res["refused"], res["max_megapixels"]) == (2, 4, 25.0)
    why = {
        "truncated": "image data is truncated or corrupt",
        "window": "not a PNG, JPEG, BMP, TIFF, WebP or PNM image",
        "deep": "16-bit pixels, and training reads 8-bit images",
        "large": "(25.5 Mpx), over the 25-Mpx limit; export with --max-megapixels N to take images this large",
    }
    left_out = [x for x in said if x.startswith("left out sample ")]
    assert len(left_out) == len(why) and len(said) == len(why) + 1  # and the JPEG exported as one, said
    assert f"{sha['jpeg'][:16]} (uploaded as .png, a JPEG: .jpg)" in said[-1]
    refused = [(seq, u) for seq, u in enumerate(uploads[1:], 11) if u[0] in why]
    for (seq, (name, _, _, label)), line in zip(refused, left_out, strict=True):
        head = (
            f"left out sample {sha[name][:16]} (agent gw1, seq {seq}, labelled {label!r}, uploaded as .png): "
        )
        assert line.startswith(head) and why[name] in line and "\n" not in line, line
    ds = load_parts(tmp_path / "ds")  # what was exported, training reads
    assert len(ds.images) == 22 + 2
    meta = yaml.safe_load((tmp_path / "ds" / "dataset.yaml").read_text())
    assert meta["max_megapixels"] == 25.0 and meta["fleet_export"] == {
        "model": "part-inspection",
        "tenant": "default",
    }
    assert meta["classes"] == ["pass", "Kratzer"]  # the base's, kept

    with pytest.raises(DatasetError, match="below the base dataset's 25"):
        export(srv.data, "part-inspection", tmp_path / "ds1", tmp_path / "base", max_megapixels=20)
    said.clear()
    res = export(
        srv.data, "part-inspection", tmp_path / "ds2", tmp_path / "base", log=said.append, max_megapixels=26
    )
    assert (res["exported"], res["refused"]) == (3, 3) and not any(sha["large"][:16] in x for x in said)
    assert yaml.safe_load((tmp_path / "ds2" / "dataset.yaml").read_text())["max_megapixels"] == 26.0
    ds = load_parts(tmp_path / "ds2")  # the large frame too: read by the limit the export recorded
    assert len(ds.images) == 22 + 3 and max(i.shape[0] * i.shape[1] for i in ds.images) == 5100 * 5000


def test_trainings_advice_on_an_image_over_a_fleet_exports_limit_names_the_export(tmp_path):
    """An image over the limit of a dataset `cloud-trainer dataset` wrote (a file put in by hand, a limit edited):
    the advice was `cloud-trainer dataset import --max-megapixels N`, which does not apply to an export."""
    import yaml

    from cloud_trainer.train.data import DatasetError, load_parts

    ds = tmp_path / "ds"
    (ds / "images").mkdir(parents=True)
    for i in range(2):
        img = np.full((20, 30, 3), 40 * i, np.uint8)
        (ds / "images" / f"{i}.png").write_bytes(cv2.imencode(".png", img)[1].tobytes())
    (ds / "labels.jsonl").write_text(
        "".join(
            f'{{"id": "{i}", "file": "images/{i}.png", "label": "{lab}"}}\n'
            for i, lab in enumerate(("ok", "scratch"))
        )
    )
    meta = {"max_megapixels": 0.0005, "fleet_export": {"model": "part-inspection", "tenant": "default"}}
    (ds / "dataset.yaml").write_text(yaml.safe_dump(meta))
    with pytest.raises(DatasetError) as err:
        load_parts(ds)
    assert "over the 0.0005-Mpx limit" in str(err.value)
    assert "`cloud-trainer dataset --max-megapixels N`" in str(err.value) and "dataset import" not in str(
        err.value
    )


async def test_the_console_shows_and_serves_each_sample_as_its_bytes_are_not_as_its_extension_says(cloud):
    """``/api/samples`` said ``view: image`` for every sample under .png (and .jpg, .bmp, .webp), whatever its bytes:
    the page drew an ``<img>`` for a JPEG, a .npy window, random bytes or a page a compromised gateway sent as
    ``.png``, and the blob was then served to save (a broken image), or the reverse for a PNG under .npy. The
    view and the Content-Type are both the bytes' kind now (``image_kind``): an ``<img>`` for what browsers show
    (PNG, JPEG, GIF, WebP, BMP) served as that image, a download for the rest (a PNM or TIFF under its own image
    type and name, anything else ``application/octet-stream``), every blob ``nosniff`` and sandboxed."""
    srv, ch, _, _ = cloud
    frame = np.random.default_rng(7).integers(0, 255, (6, 7, 3), dtype=np.uint8)
    window = io.BytesIO()
    np.save(window, np.arange(16, dtype=np.float32))
    gif = cv2.Animation()
    gif.frames, gif.durations = [frame], [100]
    ok, gif_bytes = cv2.imencodeanimation(".gif", gif)
    assert ok
    enc = {e: cv2.imencode(e, frame)[1].tobytes() for e in (".png", ".jpg", ".bmp", ".webp", ".ppm", ".tif")}
    uploads = [  # (bytes, extension the gateway gave, view, Content-Type, download name's suffix or None)
        (enc[".png"], ".png", "image", "image/png", None),
        (enc[".jpg"], ".png", "image", "image/jpeg", None),
        (gif_bytes.tobytes(), ".png", "image", "image/gif", None),
        (enc[".webp"], ".png", "image", "image/webp", None),
        (enc[".bmp"], ".jpg", "image", "image/bmp", None),
        (enc[".png"] + b"\1", ".npy", "image", "image/png", None),
        (window.getvalue(), ".png", "file", "application/octet-stream", ".npy"),
        (np.random.default_rng(8).bytes(300), ".png", "file", "application/octet-stream", ".bin"),
        (
            b"<html><script>alert(document.domain)</script></html>",
            ".png",
            "file",
            "application/octet-stream",
            ".bin",
        ),
        (
            b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>",
            ".jpg",
            "file",
            "application/octet-stream",
            ".bin",
        ),
        (enc[".ppm"], ".png", "file", "image/x-portable-pixmap", ".ppm"),
        (enc[".tif"], ".webp", "file", "image/tiff", ".tif"),
    ]
    acks = await _push(ch("beta", "gw-b"), *(_record(i, u[0], u[1]) for i, u in enumerate(uploads, 100)))
    assert acks[0].stored == len(uploads)
    c = Console(srv, tenant="beta")
    c.start()
    try:
        status, _, body = await asyncio.to_thread(_get, c.port, "/api/samples")
        assert status == 200
        views = {s["seq"]: s["view"] for s in json.loads(body)}
        blobs = [
            await asyncio.to_thread(_get, c.port, f"/blob/{hashlib.sha256(u[0]).hexdigest()}")
            for u in uploads
        ]
    finally:
        c.stop()
    for i, ((data, ext, view, ctype, suffix), (status, headers, body)) in enumerate(
        zip(uploads, blobs, strict=True)
    ):
        digest = hashlib.sha256(data).hexdigest()
        assert views[100 + i] == view, (i, ext, views[100 + i])
        assert (status, body) == (200, data), i
        assert headers["Content-Type"] == ctype, (i, headers)
        assert (
            headers["X-Content-Type-Options"] == "nosniff" and "sandbox" in headers["Content-Security-Policy"]
        )
        want = None if suffix is None else f'attachment; filename="sample-{digest[:16]}{suffix}"'
        assert headers.get("Content-Disposition") == want, (i, headers)


async def test_samples_whose_bytes_are_not_their_extensions_kind_are_stored_and_counted_not_refused(
    cloud, caplog
):
    """The fleet's ingest checked only a sample's extension and stored what came under it without a word: a JPEG
    or an HTML page under .png, a PNG under .npy. They are still stored (a lost record is worse, and the console
    and the export read the bytes), but counted per agent (``samples_misnamed`` at ``/api/quotas``) and logged
    once per minute per agent with the count; a PNG under .png, a JPEG under .jfif and a window under .npy are
    not counted."""
    import logging

    srv, ch, _, _ = cloud
    frame = np.random.default_rng(5).integers(0, 255, (6, 7, 3), dtype=np.uint8)
    png, jpeg = cv2.imencode(".png", frame)[1].tobytes(), cv2.imencode(".jpg", frame)[1].tobytes()
    window = io.BytesIO()
    np.save(window, np.arange(8, dtype=np.float32))
    sent = [
        (50, png, ".png"),
        (51, jpeg, ".jfif"),
        (52, window.getvalue(), ".npy"),
        (53, jpeg, ".png"),  # misnamed: a JPEG
        (54, png + b"\0", ".npy"),  # misnamed: a PNG
        (55, b"<html><script>alert(1)</script></html>", ".png"),  # misnamed: no image
    ]
    caplog.set_level(logging.WARNING, logger="cloud_trainer.fleet.service")
    acks = await _push(ch("acme", "gw-a"), *(_record(seq, data, ext) for seq, data, ext in sent))
    assert sorted(acks[0].seqs) == [s for s, _, _ in sent] and acks[0].stored == len(sent)  # none refused
    for _, data, _ in sent:
        assert srv.blobs.for_tenant("acme").exists(hashlib.sha256(data).hexdigest())
    assert srv.quotas.snapshot("acme")["samples_misnamed"] == {"gw-a": 3}
    assert "gw-a" not in srv.quotas.snapshot("default")["samples_misnamed"]  # one tenant's count only
    said = [r.getMessage() for r in caplog.records if "not what their extension says" in r.getMessage()]
    assert len(said) == 1 and "agent gw-a (tenant acme): 3 samples" in said[0], said
    assert "seq 53 under '.png' is a JPEG image" in said[0], said
    acks = await _push(
        ch("acme", "gw-a"), _record(56, jpeg + b"\1", ".bmp")
    )  # within the minute: counted only
    assert acks[0].stored == 1 and srv.quotas.snapshot("acme")["samples_misnamed"] == {"gw-a": 4}
    assert len([r for r in caplog.records if "not what their extension says" in r.getMessage()]) == 1
