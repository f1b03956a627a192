"""The agent's text log writes every record on one line, whatever text a peer chose: a node configured without a tag
is tagged with its BrowseName, which the OPC UA server chooses, and a browse name holding a line feed wrote a whole
forged line into the log (``... opcua source plc: tag evil`` then ``2026-12-07 01:00:00,000 CRITICAL
edge_agent.agent: FORGED ...``), an ANSI escape in it drove the terminal of whoever tailed the log; the source's
``last_error`` on ``/status`` (the tag) did the same in what ``edge-agent status`` prints. Each character that is not
printable is written as its escape now (``\\n``, ``\\x1b``), by the log's formatter and by ``edge-agent status``,
whatever the path the text took."""

from __future__ import annotations

import copy
import io
import logging
import math
import threading
from http.server import ThreadingHTTPServer

from asyncua import ua

from devices.opcua.client import OpcUaSource
from edge_agent.cli import log_handler, main
from tests.integration import test_cli_status_notices as status_answer
from tests.integration.test_opcua_halt_recovery import _Collect, _settings
from tests.support.peers import free_port, opcua_server
from tests.support.waits import until

FORGED = "2026-12-07 01:00:00,000 CRITICAL edge_agent.agent: FORGED"


async def test_a_browse_name_with_a_line_feed_or_an_escape_forges_no_line_of_the_log_nor_of_edge_agent_status(
    capsys, monkeypatch
) -> None:
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "Line")
    await obj.add_variable(ua.NodeId("V", idx), ua.QualifiedName(f"evil\n{FORGED}\x1b[31m", idx), 1.0)
    await srv.start()
    written = io.StringIO()
    handler = log_handler(json_logs=False)  # the handler `edge-agent run` logs through, without --log-json
    handler.setStream(written)
    logger = logging.getLogger("devices.opcua")
    logger.addHandler(handler)
    src = OpcUaSource("plc", _settings(port, nodes=[{"node_id": f"ns={idx};s=V"}]))  # no tag: its browse name
    out = None
    try:
        await src.start()
        out = _Collect(src)
        await until(lambda: out.got, 30, "the first value")
        await srv.write_attribute_value(
            ua.NodeId("V", idx), ua.DataValue(ua.Variant(math.nan, ua.VariantType.Double))
        )
        await until(lambda: "NaN" in written.getvalue(), 30, "the line naming the tag")
    finally:
        logger.removeHandler(handler)
        if out is not None:
            out.cancel()
        await src.stop()
        await srv.stop()
    lines = written.getvalue().splitlines()
    assert not [line for line in lines if line.startswith(FORGED)], lines  # no line of the server's making
    assert "\x1b" not in written.getvalue(), lines  # no terminal control
    said = [line for line in lines if "NaN" in line]
    assert len(said) == 1 and f"tag evil\\n{FORGED}\\x1b[31m holds NaN" in said[0], lines

    # what `edge-agent status` prints of the source's /status answer (served on 127.0.0.1), its last error the tag
    st = copy.deepcopy(status_answer.STATUS)
    st["sources"]["mq"]["last_error"] = src.stats.last_error
    assert "\n" in src.stats.last_error  # /status keeps the text as it is (JSON escapes it)
    monkeypatch.setattr(status_answer, "STATUS", st)
    server = ThreadingHTTPServer(("127.0.0.1", 0), status_answer._Status)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        capsys.readouterr()
        assert main(["status", "--url", f"http://127.0.0.1:{server.server_address[1]}"]) == 0
    finally:
        server.shutdown()
        server.server_close()
    printed = capsys.readouterr().out
    assert "\x1b" not in printed and not [ln for ln in printed.splitlines() if ln.startswith(FORGED)], printed
    assert f"last: non_finite: evil\\n{FORGED}\\x1b[31m" in printed, printed
