"""The fleet console: a read-only web page served by the fleet service for cloud admins.

Agents with their state and versions, deployments with per-agent step progress, every published
version's evaluation report (metrics, confusion matrix and curve images) and the uploaded samples,
browsable by reason and label state. Stdlib HTTP server on its own thread, no build step, no
assets from the internet; JSON under ``/api/...`` for scripts. Bind it to 127.0.0.1 (default) or
put it behind the site's reverse proxy with authentication: it has no login of its own. Bounded
(``protocols.http_server``): 32 requests at once, 16 from one address, each connection shut down 30 s
after it was accepted.

Tenants: the console shows one tenant at a time. Started with ``tenant=`` (``cloud-trainer serve
--console-tenant acme``) it shows that tenant only, whatever the URL asks; without it, ``?tenant=ID``
on every ``/api`` call, report and blob URL picks one (default: ``default``), which is for the platform
operator's own loopback use, not for a port that tenants reach. A blob (sample image) is served only
if the tenant holds a sample with that digest.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from protocols.http_server import BoundedHTTPServer

PAGE = Path(__file__).with_name("console.html")
MAX_CONNECTIONS = 32  # half of them from one address (a reverse proxy's: give it its own limits too)
DEADLINE_S = 30.0  # for a connection, from accept to its last byte: sample images go out in it


class Console:
    def __init__(self, server, host: str = "127.0.0.1", port: int = 0, tenant: str | None = None) -> None:
        self.srv = server  # FleetServer: store, control, registry, blobs
        self.tenant = tenant
        outer = self

        class Handler(BaseHTTPRequestHandler):
            timeout = DEADLINE_S

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                u = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(u.query).items()}
                t = outer.tenant or q.get("tenant") or "default"
                try:
                    if u.path in ("/", "/index.html"):
                        return self._send(200, "text/html; charset=utf-8", PAGE.read_bytes())
                    if u.path == "/api/agents":
                        return self._json(outer.agents(t))
                    if u.path == "/api/deployments":  # the typed Deployment's documents (kind model | config)
                        from cloud_trainer.fleet.deployment import Deployment

                        return self._json(
                            [
                                Deployment.from_doc(d).doc()
                                for d in (outer.srv.control.list(tenant=t) if outer.srv.control else [])
                            ]
                        )
                    if u.path == "/api/models":
                        return self._json(outer.models(t))
                    if u.path == "/api/quotas":  # per-agent limits, usage and refusals (RESOURCE_EXHAUSTED)
                        return self._json(outer.quotas(t))
                    if u.path == "/api/samples":
                        return self._json(
                            outer.srv.store.samples(
                                model=q.get("model"),
                                reason=q.get("reason"),
                                label_state=q.get("label_state"),
                                tenant=t,
                            )[-200:]
                        )
                    if u.path.startswith("/registry/"):
                        return self._file(
                            outer.srv.registry.for_tenant(t).root, u.path.removeprefix("/registry/")
                        )
                    if u.path.startswith("/blob/"):
                        digest = u.path.removeprefix("/blob/")
                        if not outer.srv.store.has_sample(digest, tenant=t):
                            raise KeyError(digest[:64])
                        return self._send(200, "image/png", outer.srv.blobs.for_tenant(t).get_bytes(digest))
                    self._send(404, "text/plain", b"not found\n")
                except (FileNotFoundError, ValueError, KeyError) as exc:
                    self._send(404, "text/plain", f"not found: {exc}\n".encode())
                except Exception as exc:
                    self._send(500, "text/plain", f"console error: {exc}\n".encode())

            def _file(self, root: Path, rel: str) -> None:
                p = (root / rel).resolve()
                if root.resolve() not in p.parents or ".tenants" in p.relative_to(root.resolve()).parts:
                    return self._send(403, "text/plain", b"outside the registry\n")
                ctype = {
                    ".png": "image/png",
                    ".md": "text/plain; charset=utf-8",
                    ".json": "application/json",
                }.get(p.suffix, "application/octet-stream")
                self._send(200, ctype, p.read_bytes())

            def _json(self, obj) -> None:
                self._send(200, "application/json", json.dumps(obj, default=str).encode())

            def _send(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

        self.httpd = BoundedHTTPServer((host, port), Handler, MAX_CONNECTIONS, DEADLINE_S)
        self.port = self.httpd.server_address[1]

    def agents(self, tenant: str = "default") -> list[dict]:
        st = self.srv.store
        return [
            {**a, "ingest": st.stats(a["id"], tenant=tenant), "gaps": st.gaps(a["id"], tenant=tenant)}
            for a in st.agents(tenant=tenant)
        ]

    def quotas(self, tenant: str) -> dict:
        """The quota snapshot restricted to the tenant's agents, keyed by agent id (the counters are keyed by
        ``(tenant, agent)``: no agent id of another tenant, whatever it spells, reaches this tenant's)."""
        return self.srv.quotas.snapshot(tenant) if hasattr(self.srv, "quotas") else {}

    def models(self, tenant: str = "default") -> list[dict]:
        reg = self.srv.registry.for_tenant(tenant)
        out = []
        for name in reg.names():
            for e in reg.list(name):
                folder = reg.root / name / e["version"]
                rep = folder / "report.json"
                report = json.loads(rep.read_text()) if rep.exists() else None
                out.append(
                    {
                        **e,
                        "report": report,
                        "files": sorted(p.name for p in folder.iterdir()) if folder.exists() else [],
                    }
                )
        return out

    def start(self) -> None:
        threading.Thread(target=self.httpd.serve_forever, name="console", daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
