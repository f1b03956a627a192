"""The fleet console: a read-only web page served by the fleet service for cloud admins.

Agents with their state and versions, deployments with per-agent step progress, every published
version's evaluation report (metrics, confusion matrix and curve images) and the uploaded samples,
browsable by reason and label state, and the agents' events (``/api/events``: newest first in pages of at most
``EVENTS_PAGE_MAX``, by agent, kind and time; ``ongoing`` for an active one not ended since; read through the
store's partial indexes over event rows, see ``SQLStore.events``). Stdlib HTTP server on its own thread, no build step, no
assets from the internet; JSON under ``/api/...`` for scripts. Bind it to 127.0.0.1 (default) or
put it behind the site's reverse proxy with authentication: it has no login of its own. Bounded
(``protocols.http_server``): 32 requests at once, 16 from one address, each connection shut down 30 s
after it was accepted.

Tenants: the console shows one tenant at a time. Started with ``tenant=`` (``cloud-trainer serve
--console-tenant acme``) it shows that tenant only, whatever the URL asks; without it, ``?tenant=ID``
on every ``/api`` call, report and blob URL picks one (default: ``default``; an id outside the tenant-id
rule is ``404``), which is for the platform operator's own loopback use, not for a port that tenants
reach. A blob (sample image) is served only if the tenant holds a sample with that digest, as the kind its bytes
are (``blob_type``, ``protocols.image_header.image_kind``), whatever extension the gateway gave it: an image of a
kind browsers show as that image (``/api/samples`` lists it ``view: image``) when its header declares at most
``VIEW_MAX_MEGAPIXELS``, else, and a TIFF or PNM, as a download named by its kind, anything else (a ``.npy`` window, bytes of no image kind) as ``application/octet-stream`` to save; every answer with
``X-Content-Type-Options: nosniff`` (``BoundedHandler``) and ``Cross-Origin-Resource-Policy: same-origin`` (a page
of another site cannot load a blob to learn whether a tenant holds it), a blob or registry file with a CSP that
sandboxes it (``BLOB_CSP``: a page a gateway uploaded, opened on its own, runs no script in the console's origin). A registry
URL is ``/registry/<package>/<file>`` or ``/registry/<package>/<version>/<file>``, each part
percent-decoded once and then checked (no '/', NUL, '..' or leading '.'): nothing else of the folder
(another tenant's ``.tenants/``, a publish's temporary ``.part`` folder) is reachable, whatever the
spelling, and a refusal never names a server path. A file goes out in 64-KB pieces, never read whole into
memory (a version folder holds the package itself).

The ``/api`` answers read the store that every tenant's agents write to (one lock for SQLite): a tenant's are
computed one at a time, with a rest of 4x their cost after each (``protocols.http_server.Answers``, the tenant
its group), at most ``ANSWER_WORKERS`` tenants' at once, and shared by tenant and URL for at least
``ANSWER_MIN_AGE_S``, so a script polling them in a loop holds the store at most a fifth of the time per tenant,
and one tenant's costly answer never makes another tenant's wait (with one computation at a time for all, one
agent's 6-s agents view made every tenant's console answer 503); a request with nothing to share waits at most
5 s, then ``503``.

Host names: a request is answered only under an IP address, ``localhost``, this machine's name, the bound host
or a name given in ``allowed_hosts`` (``cloud-trainer serve --console-allowed-host``, for a reverse proxy that
passes its own public name); any other ``Host`` is ``421``. Otherwise a page of any web site open in the
operator's browser could point its own name at 127.0.0.1 (DNS rebinding) and read, from its own origin, every
tenant's agents, deployments and sample images through ``?tenant=``.

JSON is strict (``protocols.json_codec.dumps``): a NaN or infinite metric in an evaluation report (an
AUROC with one class in the test split) or in an agent's health report is ``null``, never the bare
``NaN`` that browsers' ``JSON.parse`` refuse (the whole console stopped updating).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from model_packager.manifest import is_version
from protocols import json_codec
from protocols.http_server import (
    AnswerBusy,
    Answers,
    BoundedHandler,
    BoundedHTTPServer,
    host_allowed,
    known_host_names,
)

log = logging.getLogger(__name__)
PAGE = Path(__file__).with_name("console.html")
MAX_CONNECTIONS = 32  # half of them from one address (a reverse proxy's: give it its own limits too)
DEADLINE_S = 30.0  # for a connection, from accept to its last byte: sample images go out in it
EVENTS_PAGE = 50  # /api/events: events per page by default
EVENTS_PAGE_MAX = 200  # and at most (limit=)
ENDS_READ = 500  # newer events of an agent and kind read to tell whether an active one has ended
ENDS_LOOKUPS = 16  # (agent, kind) pairs of a page looked up so, at most, per answer
SAMPLES_SHOWN = 200  # /api/samples: the newest this many (the store reads no more)
FILE_PIECE_BYTES = 64 * 1024  # a registry file goes out in pieces of this size, never read whole
# a sample blob up to this is read whole (checked against its digest, then sent); a larger one (up to a message's
# 16 MB) is checked, then sent, in pieces of BLOB_PIECE_BYTES (an object store's GET each)
BLOB_WHOLE_BYTES = 1024 * 1024
BLOB_PIECE_BYTES = 1024 * 1024
ANSWER_MIN_AGE_S = 1.0  # /api answers are shared for at least this long (the page polls every 3 s)
CPU_SHARE = 0.2  # of one core (and of the store's time), at most, spent computing one tenant's /api answers
ANSWER_WORKERS = 2  # tenants' /api answers computed at once, at most (one at a time per tenant)
# /api/agents: an agent's newest gaps listed, at most (the rest counted in ``gaps_left_out``): 40,000 gaps of one
# agent's 20,000 epochs made its tenant's agents view megabytes, polled every 3 s
GAPS_SHOWN = 1000


# sent with every sample blob and registry file: whatever a (compromised) gateway uploaded, opened on its own it
# runs no script in the console's origin and loads nothing (an SVG or HTML page is sandboxed, a unique origin)
BLOB_CSP = "default-src 'none'; sandbox"
VIEWS_KEPT = 20_000  # sample views (by tenant and digest: a blob's bytes never change) kept between answers
# a listing's views come from reads of the blob store (an object store's GETs): made by a few reader threads, at
# most VIEWS_PENDING of them queued, and a listing waits at most VIEW_WAIT_S for its own; a stalled store (whose
# client waits minutes per read) leaves its samples download links, never the listing (nor, behind it in
# ``Answers``, every tenant's /api answers) waiting for it
VIEW_READERS = 8
# a sample is shown (and served) as an image only when its header declares at most this many pixels (the trainer's
# default bound), read from its first VIEW_HEAD_BYTES (a JPEG's frame header comes after its EXIF segments)
VIEW_MAX_MEGAPIXELS = 50.0
VIEW_HEAD_BYTES = 64 * 1024
VIEWS_PENDING = 1_000
VIEW_WAIT_S = 2.0


def shown_as_image(head: bytes) -> bool:
    """Whether a file beginning with ``head`` (``VIEW_HEAD_BYTES`` of it) is an image of a kind browsers show (PNG,
    JPEG, GIF, WebP, BMP: ``image_kind``, the bytes' kind whatever the extension the gateway gave) whose header
    declares at most ``VIEW_MAX_MEGAPIXELS``: a 2-MB PNG declaring 60000x60000 pixels, shown as an ``<img>``, asked
    the operator's browser to decode 3.6 gigapixels. One whose size its first bytes do not tell is not shown."""
    from protocols.image_header import BROWSER_KINDS, image_kind, image_size

    kind = image_kind(head)
    if kind not in BROWSER_KINDS:
        return False
    if kind == "GIF":  # its logical screen (image_size reads the kinds the trainer reads)
        size: tuple[str, int, int] | None = (
            kind,
            int.from_bytes(head[6:8], "little"),
            int.from_bytes(head[8:10], "little"),
        )
    else:
        size = image_size(head)
    return size is not None and size[1] * size[2] <= VIEW_MAX_MEGAPIXELS * 1e6


def sample_view(head: bytes | None) -> str:
    """How the page shows a sample whose bytes begin with ``head`` (``VIEW_HEAD_BYTES`` of them; None: its blob
    cannot be read): ``"image"`` (an ``<img>``) when ``shown_as_image``, else ``"file"`` (a link that downloads it):
    a TIFF, a PNM, a ``.npy`` window, data of no kind, a ``.png`` that is none of those, an image too large."""
    return "image" if head is not None and shown_as_image(head) else "file"


def blob_type(data: bytes, digest: str) -> tuple[str, str | None]:
    """``(Content-Type, attachment file name or None)`` of a sample blob, by its bytes (``image_kind``), never by
    the extension a gateway gave it: an image of a kind browsers show (PNG, JPEG, GIF, WebP, BMP) is served as
    that image, what ``sample_view`` shows as an ``<img>``, or, declaring more than ``VIEW_MAX_MEGAPIXELS`` (a
    decompression bomb), as an attachment named by its kind (``sample-<digest>.png``); a TIFF or PNM (no browser shows it: the page's
    download link) keeps its image type and is named ``sample-<digest>.<kind>`` (.tif, .pgm, .ppm, .pbm); anything
    else (a ``.npy`` window, bytes that are no image, a page a compromised gateway sent as ``.png``) is
    ``application/octet-stream`` to save, named ``.npy`` for a NumPy array and ``.bin`` for the rest."""
    from protocols.image_header import (
        BROWSER_KINDS,
        IMAGE_TYPES,
        KIND_SUFFIXES,
        KIND_TYPES,
        image_kind,
        kind_suffix,
    )

    kind = image_kind(data)
    if kind in BROWSER_KINDS:  # one too large to show (``shown_as_image``) is a download of its kind
        shown = shown_as_image(data)
        return KIND_TYPES[kind], None if shown else f"sample-{digest[:16]}{KIND_SUFFIXES[kind][0]}"
    suffix = kind_suffix(data)
    if (
        suffix is not None
    ):  # an image no browser shows, named by its kind: a file named by a bare digest opens in no viewer
        return IMAGE_TYPES[suffix][0], f"sample-{digest[:16]}{suffix}"
    suffix = ".npy" if data[:6] == b"\x93NUMPY" else ".bin"
    return "application/octet-stream", f"sample-{digest[:16]}{suffix}"  # a digest (hex): nothing to escape


class BadQuery(ValueError):
    """A query parameter of an ``/api`` URL the console cannot use: ``400`` with this text (it names the parameter)."""


def event_query(q: dict[str, str]) -> dict[str, Any]:
    """The ``/api/events`` parameters (``agent``, ``kind``, ``since``: seconds since the epoch, ``before``: the
    ``next`` of the page before, ``limit``: 1..``EVENTS_PAGE_MAX``, default ``EVENTS_PAGE``), checked."""
    from cloud_trainer.fleet.store import event_cursor

    out: dict[str, Any] = {"agent": q.get("agent") or None, "kind": q.get("kind") or None}
    for name in ("agent", "kind"):
        if out[name] is not None and (len(out[name]) > 256 or "\0" in out[name]):
            raise BadQuery(f"/api/events: {name} is not an id (at most 256 characters, no NUL)")
    try:
        since = float(q["since"]) if q.get("since") else None
    except ValueError:
        since = None
        bad = True
    else:
        bad = since is not None and not math.isfinite(since)
    if bad:
        raise BadQuery(f"/api/events: since {q['since'][:40]!r} is not a time (seconds since the epoch)")
    out["since"] = since
    limit = q.get("limit") or str(EVENTS_PAGE)
    if not (limit.isascii() and limit.isdigit() and 1 <= int(limit) <= EVENTS_PAGE_MAX):
        raise BadQuery(f"/api/events: limit {limit[:40]!r} is not an integer in 1..{EVENTS_PAGE_MAX}")
    out["limit"] = int(limit)
    out["before"] = q.get("before") or None
    if out["before"] is not None:
        try:
            event_cursor(out["before"])
        except ValueError as exc:
            raise BadQuery(f"/api/events: {exc}") from None
    return out


def sample_query(q: dict[str, str]) -> dict[str, Any]:
    """The ``/api/samples`` filters (``model``, ``reason``, ``label_state``), checked: one holding NUL (no store
    holds one) is ``BadQuery``; on PostgreSQL it was the store's failure, a ``500`` logged as the console's, where
    SQLite found nothing."""
    out = {name: q.get(name) for name in ("model", "reason", "label_state")}
    for name, value in out.items():
        if value is not None and "\0" in value:
            raise BadQuery(f"/api/samples: {name} holds NUL, which no sample's {name} does")
    return out


# the payload fields that name what an event is about: a ``write_failing`` names its action and node besides its
# source (a PLC's several write targets are several episodes); a ``rollback_unrecorded`` its package folder besides
# its slot (one episode per folder); a ``sensor_fault`` its fault besides its pipeline (the sensor check's and the
# stale waveform's episodes run side by side, each end repeating its start's fault). No other kind with ``active``
# carries action, node_id, package or fault
SUBJECT_FIELDS = ("source", "pipeline", "alarm", "slot", "action", "node_id", "package", "fault")


def event_subject(evt: dict) -> tuple:
    """What an event is about, within its agent and kind: the source, pipeline, alarm, slot, action, node, package
    folder or fault its payload names (an episode's start and end name the same)."""
    p = evt["payload"] if isinstance(evt["payload"], dict) else {}
    return tuple(json_codec.dumps(p.get(f), default=str) for f in SUBJECT_FIELDS)


class _ClientGone(ConnectionError):
    """The client closed or reset the connection while its answer was written (an ``OSError``: the server's
    ``handle_error`` counts it as aborted), told apart from a registry file that cannot be read."""


class Console:
    def __init__(
        self,
        server,
        host: str = "127.0.0.1",
        port: int = 0,
        tenant: str | None = None,
        allowed_hosts: list[str] | tuple[str, ...] = (),
    ) -> None:
        self.srv = server  # FleetServer: store, control, registry, blobs
        self.tenant = tenant
        self._views: dict[tuple[str, str | None], str] = {}  # (tenant, digest) -> sample_view (``view``)
        self._views_lock = threading.Lock()
        self._reading: dict[tuple[str, str], Future[None]] = {}  # views being read (``views``)
        self._reads: queue.SimpleQueue | None = None  # for the reader threads, started on the first read
        self._unreadable: set[tuple[str, str, str]] = (
            set()
        )  # (tenant, package, why) said in the log (``models``)
        names = known_host_names(host, allowed_hosts)
        self.answers: Answers[bytes] = Answers(
            min_age_s=ANSWER_MIN_AGE_S, cpu_share=CPU_SHARE, wait_s=5.0, workers=ANSWER_WORKERS
        )
        outer = self

        class Handler(BoundedHandler):
            timeout = DEADLINE_S

            def end_headers(self) -> None:
                # every answer, the stdlib's error pages too: a page of another site open in the operator's
                # browser cannot load one (an <img> of /blob/<digest>?tenant=T), so cannot learn from its
                # load or error whether a tenant holds a known image or package
                self.send_header("Cross-Origin-Resource-Policy", "same-origin")
                super().end_headers()

            def do_GET(self) -> None:
                if not host_allowed(self.headers.get("Host"), names):
                    return self._send(
                        421,
                        "text/plain; charset=utf-8",
                        b"the fleet console does not answer to that host name; start it with "
                        b"--console-allowed-host NAME to allow it\n",
                    )
                u = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(u.query).items()}
                t = outer.tenant or q.get("tenant") or "default"
                try:
                    if not outer.tenant:  # the operator's console: the URL picks it, within the id rule
                        from cloud_trainer.pki import check_tenant

                        check_tenant(t)
                    if u.path in ("/", "/index.html"):
                        return self._send(200, "text/html; charset=utf-8", PAGE.read_bytes())
                    if u.path == "/api/agents":
                        return self._json(t, lambda: outer.agents(t))
                    if u.path == "/api/deployments":  # the typed Deployment's documents (kind model | config)
                        return self._json(t, lambda: outer.deployments(t))
                    if u.path == "/api/models":
                        return self._json(t, lambda: outer.models(t))
                    if u.path == "/api/quotas":  # per-agent limits, usage and refusals (RESOURCE_EXHAUSTED)
                        return self._json(t, lambda: outer.quotas(t))
                    if u.path == "/api/events":  # newest first, paged (next), by agent, kind and time
                        query = event_query(q)  # a bad parameter is 400 naming it, before any store read
                        return self._json(t, lambda: outer.events(t, **query))
                    if u.path == "/api/samples":
                        filters = sample_query(q)  # a bad one is 400 naming it, before any store read
                        return self._json(
                            t,
                            lambda: outer.with_views(
                                t,
                                outer.srv.store.samples(  # the newest, oldest first (the page reverses)
                                    **filters, tenant=t, limit=SAMPLES_SHOWN
                                ),
                            ),
                        )
                    if u.path.startswith("/registry/"):
                        return self._file(
                            outer.srv.registry.for_tenant(t).root, u.path.removeprefix("/registry/")
                        )
                    if u.path.startswith("/blob/"):
                        digest = u.path.removeprefix("/blob/")
                        # None: not a sample of the tenant (its extension says nothing of how it is served)
                        if outer.srv.store.sample_ext(digest, tenant=t) is None:
                            raise KeyError(digest[:64])
                        return self._blob(outer.srv.blobs.for_tenant(t), digest)
                    self._send(404, "text/plain", b"not found\n")
                except _ClientGone:
                    raise
                except BadQuery as exc:
                    self._send(400, "text/plain; charset=utf-8", f"{exc}\n".encode())
                except AnswerBusy:
                    self._send(503, "text/plain", b"busy: try again in a second\n")
                except OSError:  # a registry file that went away or cannot be read: never its server path
                    self._send(404, "text/plain", b"not found\n")
                except (ValueError, KeyError) as exc:
                    self._send(404, "text/plain", f"not found: {exc}\n".encode())
                except Exception as exc:  # counted and logged; its text (a path, a database host) stays here
                    outer.httpd.note_failed(self.client_address, exc)
                    msg = f"console error ({type(exc).__name__}); the fleet service's log has the details\n"
                    self._send(500, "text/plain", msg.encode())

            def _file(self, root: Path, rel: str) -> None:
                """``<package>/<file>`` or ``<package>/<version>/<file>`` of the tenant's registry, each part
                percent-decoded (the page encodes them: a version's '+') and then checked, so that no spelling
                (``..``, ``%2e%2e``, ``%2f``, an absolute path, ``.TENANTS`` on a case-insensitive disk)
                reaches outside the package folders."""
                from cloud_trainer.registry import valid_package_name

                parts = [unquote(x, errors="strict") for x in rel.split("/")]
                if not (
                    2 <= len(parts) <= 3
                    and valid_package_name(parts[0])
                    and all(
                        x and x[0] != "." and "/" not in x and "\\" not in x and "\0" not in x for x in parts
                    )
                ):
                    return self._send(403, "text/plain", b"outside the registry\n")
                top = root.resolve()
                p = top.joinpath(*parts).resolve()  # a link inside a package folder must not lead out either
                if top not in p.parents or not p.is_file():
                    return self._send(404, "text/plain", b"not found\n")
                ctype = {
                    ".png": "image/png",
                    ".md": "text/plain; charset=utf-8",
                    ".json": "application/json",
                }.get(p.suffix, "application/octet-stream")
                with p.open("rb") as f:  # in pieces: a version folder holds the package, hundreds of MB
                    size = os.fstat(f.fileno()).st_size
                    self._head(200, ctype, size, {"Content-Security-Policy": BLOB_CSP})
                    left = size
                    while left > 0:
                        try:
                            piece = f.read(min(FILE_PIECE_BYTES, left))
                        except OSError as exc:  # the answer has begun: no 404 can follow; close it short
                            outer.httpd.note_failed(self.client_address, exc)
                            piece = b""
                        if not piece:  # unreadable, or the file shrank: the client sees a short answer
                            self.close_connection = True
                            return
                        self._write(piece)
                        left -= len(piece)

            def _blob(self, blobs, digest: str) -> None:
                """A sample's bytes, served only once they hash to its digest (``BlobCorrupt``: 404, nothing sent),
                typed by its first bytes (``blob_type``), not its extension. One over ``BLOB_WHOLE_BYTES`` (a
                sample is up to a message's 16 MB) is read twice in ``BLOB_PIECE_BYTES`` pieces, to check it and
                then to send it, never held whole: 32 requests at once held 32 copies in the memory every tenant's
                agents share."""
                from cloud_trainer.blobs import BlobCorrupt

                if blobs.size(digest) <= BLOB_WHOLE_BYTES:
                    data = blobs.get_bytes(digest)
                    head, total = data[:VIEW_HEAD_BYTES], len(data)
                else:
                    h, head, total = hashlib.sha256(), b"", 0
                    for piece in blobs.iter_chunks(digest, 0, BLOB_PIECE_BYTES):
                        head = head or piece[:VIEW_HEAD_BYTES]
                        h.update(piece)
                        total += len(piece)
                    data = None
                    if h.hexdigest() != digest:
                        raise BlobCorrupt(
                            f"blob {digest[:16]}…: its bytes hash to {h.hexdigest()[:16]}…: altered or truncated "
                            "in the store; upload it again"
                        )
                ctype, attachment = blob_type(head, digest)  # by its bytes, not its extension
                extra = {"Content-Security-Policy": BLOB_CSP}
                if attachment:
                    extra["Content-Disposition"] = f'attachment; filename="{attachment}"'
                if data is not None:
                    return self._send(200, ctype, data, extra)
                self._head(200, ctype, total, extra)
                left = total
                try:
                    for piece in blobs.iter_chunks(digest, 0, BLOB_PIECE_BYTES):
                        piece = piece[:left]
                        self._write(piece)
                        left -= len(piece)
                        if not left:
                            break
                except _ClientGone:
                    raise
                except Exception as exc:  # gone or unreadable since it was checked: the answer has begun
                    outer.httpd.note_failed(self.client_address, exc)
                if left:  # the client sees a short answer, never other bytes
                    self.close_connection = True

            def _json(self, tenant: str, compute: Callable[[], Any]) -> None:
                """The JSON of ``compute()``, shared by the requests for the same tenant and URL (``Answers``)."""
                body = outer.answers.get(
                    (tenant, self.path),
                    lambda: json_codec.dumps(compute(), default=str).encode(),
                    group=tenant,
                )
                self._send(200, "application/json", body)

            def _send(self, code: int, ctype: str, body: bytes, extra: dict[str, str] | None = None) -> None:
                self._head(code, ctype, len(body), extra)
                self._write(body)

            def _head(self, code: int, ctype: str, length: int, extra: dict[str, str] | None = None) -> None:
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(length))
                    self.send_header("Cache-Control", "no-store")
                    for k, v in (extra or {}).items():
                        self.send_header(k, v)
                    if code == 503:
                        self.send_header("Retry-After", "1")
                    self.end_headers()
                except OSError as exc:  # the client is gone: the server counts it (aborted), nothing more
                    raise _ClientGone(str(exc)) from exc

            def _write(self, data: bytes) -> None:
                try:
                    self.wfile.write(data)
                except OSError as exc:
                    raise _ClientGone(str(exc)) from exc

        self.httpd = BoundedHTTPServer((host, port), Handler, MAX_CONNECTIONS, DEADLINE_S)
        self.port = self.httpd.server_address[1]

    def with_views(self, tenant: str, samples: list[dict]) -> list[dict]:
        """``samples`` each with its ``view`` (``sample_view`` of its blob's first bytes: an ``<img>`` or a download
        link), kept once read (a digest's bytes never change). A sample not yet kept is read by the reader threads
        (``_read_views``), several at once, and waited for at most ``VIEW_WAIT_S`` in all; one not read by then
        (a stalled object store), or that cannot be read (a console without a blob store, a blob gone or not yet
        written), is ``"file"`` in this answer and read again for a later one."""
        blobs = getattr(self.srv, "blobs", None)
        waits = []
        with self._views_lock:
            for s in samples:
                digest = s.get("sha256")
                if blobs is None or not isinstance(digest, str) or (key := (tenant, digest)) in self._views:
                    continue
                read = self._reading.get(key)  # (the same digest twice, or a read an earlier answer began)
                if read is None and len(self._reading) < VIEWS_PENDING:
                    read = self._reading[key] = Future()
                    if self._reads is None:
                        self._reads = queue.SimpleQueue()
                        for n in range(VIEW_READERS):
                            threading.Thread(
                                target=self._read_views,
                                args=(self._reads,),
                                name=f"console-views-{n}",
                                daemon=True,
                            ).start()
                    self._reads.put((blobs, key, read))
                if read is not None:
                    waits.append(read)
        if waits:
            wait_futures(waits, timeout=VIEW_WAIT_S)
        with self._views_lock:
            return [{**s, "view": self._views.get((tenant, s.get("sha256")), "file")} for s in samples]

    def _read_views(self, reads: queue.SimpleQueue) -> None:
        """A reader thread: keeps the view of each ``(blobs, (tenant, digest), done)`` put, until None. A daemon
        thread: one stuck in a stalled store's read does not hold the process at exit."""
        while (job := reads.get()) is not None:
            blobs, key, done = job
            # not found, not a digest, an object store's error: None, read again for a later answer
            try:
                head = blobs.for_tenant(key[0]).read_range(key[1], 0, VIEW_HEAD_BYTES)
            except Exception:
                head = None
            with self._views_lock:
                if head is not None:
                    if len(self._views) >= VIEWS_KEPT:
                        self._views.pop(next(iter(self._views)))  # the oldest kept
                    self._views[key] = sample_view(head)
                self._reading.pop(key, None)
            done.set_result(None)

    def agents(self, tenant: str = "default") -> list[dict]:
        """The tenant's agents with their ingest counts and gaps: the newest ``GAPS_SHOWN`` of an agent's gaps, and
        how many older ones were left out (``gaps_left_out``); a slot running a withdrawn version carries the
        withdrawal's reason (``withdrawn``)."""
        from cloud_trainer.fleet import store as fleet_store

        st = self.srv.store
        quotas = getattr(self.srv, "quotas", None)
        withdrawn = self.withdrawals(tenant)
        out = []
        for a in st.agents(tenant=tenant):
            a["slots"] = [
                {**s, "withdrawn": why} if (why := withdrawn(s.get("package"), s.get("version"))) else s
                for s in a.get("slots") or []
            ]
            gaps = st.gaps(a["id"], tenant=tenant, newest=GAPS_SHOWN)  # (built from the newest epoch down)
            ingest = st.stats(a["id"], tenant=tenant)
            out.append(
                {
                    **a,
                    "ingest": ingest,
                    "gaps": list(gaps),
                    # older ones: how many, and whether older epochs hold more (not read)
                    "gaps_left_out": gaps.left_out or 0,
                    "gaps_more": gaps.left_out is None,
                    # its records stored at their receipt time (a clock more than a day ahead; this process's count),
                    # and the epochs it opened past the day's bound (a data folder not kept across restarts?)
                    "records_retimed": quotas.records_retimed.get((tenant, a["id"]), 0) if quotas else 0,
                    "epochs_past_bound": max(0, ingest.get("epochs_24h", 0) - fleet_store.EPOCHS_PER_WINDOW),
                }
            )
        return out

    def events(self, tenant: str, **query: Any) -> dict:
        """A page of the tenant's events, newest first: ``{"events", "next", "limit"}`` (``next``: ``before`` for the
        page after, null at the oldest). Each event has ``ongoing``: ``active`` true and no later event of its agent,
        kind and subject (``event_subject``) in the store, i.e. its end has not come. Looked up with one indexed read
        per agent and kind on the page (the newest ``ENDS_READ`` of them since its oldest active event), for at most
        ``ENDS_LOOKUPS`` of them per answer (the newest first): a page of many agents and kinds (an agent inventing
        kinds) costs at most that many reads. Where it cannot tell (past those bounds) an active event counts as
        ongoing: a console had better show an alarm that has ended than hide one that has not."""
        store = self.srv.store
        events, nxt = store.events(tenant=tenant, **query)
        pairs: dict[
            tuple[str, str], float
        ] = {}  # (agent, kind) of the active events -> the oldest one's time
        for e in events:
            if e["active"] is True:
                pairs[(e["agent"], e["kind"])] = e["t"]  # newest first: the last seen is the oldest
        newest: dict[tuple, tuple] = {}  # (agent, kind, subject) -> key of its newest event
        complete: set[tuple[str, str]] = set()  # pairs read back to their oldest active event
        for agent, kind in list(pairs)[:ENDS_LOOKUPS]:
            later, more = store.events(
                tenant=tenant, agent=agent, kind=kind, since=pairs[agent, kind], limit=ENDS_READ
            )
            for e in later:  # newest first: the first seen of a subject is its newest
                newest.setdefault((agent, kind, event_subject(e)), (e["t"], e["epoch"], e["seq"]))
            if more is None:
                complete.add((agent, kind))
        for e in events:
            key = newest.get((e["agent"], e["kind"], event_subject(e)))
            if e["active"] is not True:
                e["ongoing"] = False
            elif key is None and (e["agent"], e["kind"]) not in complete:  # not read that far: cannot tell
                e["ongoing"] = True
            else:  # a newer event of its subject ends it
                e["ongoing"] = key == (e["t"], e["epoch"], e["seq"])
        return {"events": events, "next": nxt, "limit": query.get("limit")}

    def quotas(self, tenant: str) -> dict:
        """The quota snapshot restricted to the tenant's agents, keyed by agent id (the counters are keyed by
        ``(tenant, agent)``: no agent id of another tenant, whatever it spells, reaches this tenant's), and its
        agents refused while the store still writes a batch of theirs (``store_writing``: writes, for how long)."""
        out = self.srv.quotas.snapshot(tenant) if hasattr(self.srv, "quotas") else {}
        if (fleet := getattr(self.srv, "fleet", None)) is not None and hasattr(fleet, "store_writing"):
            out["store_writing"] = fleet.store_writing(tenant)
        return out

    def withdrawals(self, tenant: str) -> Callable[[Any, Any], str | None]:
        """``(package, version)`` -> the reason that version of the tenant's was withdrawn, or None (not withdrawn,
        or its index unreadable: ``models`` says so); each package's asked once per answer, of
        ``Registry.withdrawals`` (its index read again only once it changed, one cache with the rollout tick's: read
        at every poll, an index of 20,000 versions cost ~90 ms of CPU an answer, bench/RESULTS.md). A withdrawal
        stops new downloads only: gateways that run the version keep it, and the console shows which."""
        from cloud_trainer.registry import valid_package_name

        reg = self.srv.registry.for_tenant(tenant) if getattr(self.srv, "registry", None) else None
        read: dict[str, dict[str, str]] = {}

        def why(package: Any, version: Any) -> str | None:
            if reg is None or not isinstance(package, str) or not valid_package_name(package):
                return None
            if package not in read:
                try:
                    read[package] = reg.withdrawals(package)
                except (OSError, ValueError):
                    read[package] = {}
            return read[package].get(str(version))

        return why

    def deployments(self, tenant: str) -> list[dict]:
        """The tenant's deployments (the typed ``Deployment``'s documents, kind model | config); a model rollout of a
        withdrawn version carries the withdrawal's reason (``withdrawn``): its agents kept on it are not healthy."""
        from cloud_trainer.fleet.deployment import Deployment

        withdrawn = self.withdrawals(tenant)
        out = []
        for d in self.srv.control.list(tenant=tenant) if self.srv.control else []:
            doc = Deployment.from_doc(d).doc()
            if doc.get("kind") != "config" and (why := withdrawn(doc.get("package"), doc.get("version"))):
                doc["withdrawn"] = why
            out.append(doc)
        return out

    def models(self, tenant: str = "default") -> list[dict]:
        """The tenant's published versions with their reports and files. A package whose index cannot be read (edited
        by hand into something else than a list of versions) is left out, said once in the log: it made the whole
        answer a 404 naming the index's path on the server (its ``RegistryError``), to the tenant's console."""
        reg = self.srv.registry.for_tenant(tenant)
        out = []
        for name in reg.names():
            try:
                entries = reg.list(name)
            except (OSError, ValueError) as exc:  # (RegistryError is a ValueError)
                self._say_unreadable(tenant, name, f"left out of /api/models: {exc}")
                continue
            for e in entries:
                version = e.get("version")
                # (an entry edited by hand: without a version, the whole answer was a 404; a version of "../.."
                # listed a folder of the server outside the tenant's package)
                if not isinstance(version, str) or not is_version(version):
                    self._say_unreadable(
                        tenant, name, f"an entry with no version such as 1.2.0 left out ({version!r})"
                    )
                    continue
                folder = reg.root / name / version
                rep = folder / "report.json"
                try:
                    report = json.loads(rep.read_text()) if rep.exists() else None
                except (OSError, ValueError) as exc:  # (cut short: the whole answer was a 404)
                    self._say_unreadable(tenant, name, f"{version}: report.json shown as none: {exc}")
                    report = None
                try:
                    files = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
                except OSError as exc:  # (a file where its folder should be: the whole answer was a 404)
                    self._say_unreadable(tenant, name, f"{version}: its files shown as none: {exc}")
                    files = []
                out.append({**e, "report": report, "files": files})
        return out

    def _say_unreadable(self, tenant: str, name: str, why: str) -> None:
        """Said once in the log: a package of the tenant's registry ``/api/models`` cannot show (``models``)."""
        said = (tenant, name, why[:300])
        if said not in self._unreadable:
            if len(self._unreadable) >= VIEWS_KEPT:
                self._unreadable.clear()
            self._unreadable.add(said)
            log.warning("console: tenant %s: package %s: %s", *said)

    def start(self) -> None:
        threading.Thread(target=self.httpd.serve_forever, name="console", daemon=True).start()

    def stop(self) -> None:
        """Stops serving and ends the thread that computes the answers and the threads that read the samples'
        views, each after what it does (a process that starts and stops consoles, a reload, keeps none behind)."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self.answers.close()
        with self._views_lock:
            reads, self._reads = self._reads, None
        if reads is not None:
            for _ in range(VIEW_READERS):
                reads.put(None)
