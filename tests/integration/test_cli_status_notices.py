"""`edge-agent status` against a real HTTP server on 127.0.0.1 serving a /status answer: a notice's later
causes (``devices.base.Notices``' "more") are printed under its first message, and how many are not shown."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from edge_agent.cli import main

STATUS = {
    "agent": {"id": "gw1", "site": "s", "line": "l", "uptime_s": 5.0, "max_rss_mb": 90},
    "sources": {
        "mq": {
            "type": "mqtt",
            "state": "connected",
            "received": 3,
            "dropped": 0,
            "errors": 0,
            "last_error": None,
            "silent_drops": {
                "unsupported_metric": {
                    "count": 2,
                    "message": "metric 'Blob' is a Bytes or File metric",
                    "more": ["metric 'Props' is a PropertySet"],
                    "causes": 5,  # how many causes its source saw: 3 past the kept ones
                }
            },
        }
    },
    "pipelines": [],
    "models": [],
    "alarms": [],
}


class _Status(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(STATUS).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_status_prints_each_cause_of_a_notice_not_only_the_first(capsys):
    """A Sparkplug node sending a Bytes metric and a PropertySet: `edge-agent status` showed the Bytes message
    alone, so the PropertySet (another cause, another fix) was never named there."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Status)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        assert main(["status", "--url", f"http://127.0.0.1:{server.server_address[1]}"]) == 0
    finally:
        server.shutdown()
        server.server_close()
    out = capsys.readouterr().out
    assert "metric 'Blob' is a Bytes or File metric" in out
    assert "metric 'Props' is a PropertySet" in out
    assert "... 3 more not shown (5 in all)" in out, out  # (an OPC UA type_changed's tags past the first 8)


def test_status_prints_the_nodes_of_a_source_that_get_no_values_with_why(capsys):
    """An OPC UA source's failing nodes (``node_errors`` on /status: the first 20 and how many in all) are printed
    under the source, each with why, and how many more there are; before, `edge-agent status` named none."""
    why = [
        f"node 'ns=2;s=M{i}' cannot be subscribed (BadNodeIdUnknown); check the node_id" for i in range(20)
    ]
    plc = dict(STATUS["sources"]["mq"], type="opcua", silent_drops={})
    plc["node_errors"] = {
        "count": 25,
        "nodes": [{"node_id": f"ns=2;s=M{i}", "why": w} for i, w in enumerate(why)],
    }
    status = dict(STATUS, sources={"plc": plc})

    class _Answer(_Status):
        def do_GET(self) -> None:
            body = json.dumps(status).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert main(["status", "--url", f"http://127.0.0.1:{server.server_address[1]}"]) == 0
    finally:
        server.shutdown()
        server.server_close()
    out = capsys.readouterr().out
    assert "25 node(s) get no values" in out and all(w in out for w in why) and "and 5 more" in out, out
