"""What the uplink learned of a slow link (a batch's bytes at most, halved after a batch failed on its way) is kept
in the data folder and read back at the next start, grown back towards ``batch_max_bytes`` by the time since. Before,
a restarted agent (a crash loop, a configuration rollout) relearned the link at each start by failed batches, each
up to ``keepalive_timeout_s`` on the link and sent again."""

from __future__ import annotations

import json
import time

from edge_agent.outbox.settings import OutboxSettings
from edge_agent.outbox.store import Outbox
from edge_agent.uplink.client import FIT_FLOOR, LINK_FILE, LINK_RELAX_S, Uplink
from edge_agent.uplink.settings import CloudSettings


def _uplink(tmp_path, endpoint: str = "127.0.0.1:1") -> Uplink:
    s = CloudSettings(endpoint=endpoint, ca_file="c", cert_file="c", key_file="k", keepalive_timeout_s=2)
    return Uplink(s, Outbox(OutboxSettings(), tmp_path / "agent"))  # never started, the outbox never opened


def test_the_learned_bound_of_a_batch_is_kept_for_the_next_start_and_grows_back_with_time(tmp_path) -> None:
    (tmp_path / "agent").mkdir()
    up = _uplink(tmp_path)
    assert up._batch_bytes == 1_000_000  # nothing learned yet
    up._fit_link((40, 400_000, time.monotonic() - 1.5))  # a batch failed on its way after 1.5 s
    assert up._batch_bytes == 200_000
    assert _uplink(tmp_path)._batch_bytes in range(200_000, 200_100)  # the next start: from it
    assert _uplink(tmp_path, "other:1")._batch_bytes == 1_000_000  # another endpoint: not this link's
    kept = tmp_path / "agent" / LINK_FILE
    doc = json.loads(kept.read_text())
    kept.write_text(json.dumps({**doc, "at": doc["at"] - 2 * LINK_RELAX_S}))
    assert _uplink(tmp_path)._batch_bytes in range(800_000, 800_400)  # doubled for each LINK_RELAX_S since
    kept.write_text(json.dumps({**doc, "batch_bytes": 5, "at": doc["at"] + 10**9}))  # a clock stepped back
    assert _uplink(tmp_path)._batch_bytes == FIT_FLOOR  # never below the floor
    kept.write_text("{not json")
    assert _uplink(tmp_path)._batch_bytes == 1_000_000
    # acknowledged batches grow it back to the whole batch_max_bytes: nothing kept any more
    up._fit_link((1, 1_000_000, time.monotonic() - 0.5), acked=True)
    assert up._batch_bytes == 1_000_000 and not kept.exists()


def test_a_kept_bound_not_as_the_agent_writes_it_starts_at_batch_max_bytes(tmp_path) -> None:
    """The data folder is editable by anyone with the gateway's shell, and a damaged disk garbles files: a value the
    agent never writes reads as nothing kept. Before, ``1e400`` (JSON's infinity) or a 400-digit number raised
    OverflowError out of the uplink's construction, so out of the agent's start, at every start."""
    (tmp_path / "agent").mkdir()
    kept = tmp_path / "agent" / LINK_FILE
    now = time.time()
    for batch, at in (
        ("1e400", now),
        ("-1e400", now),
        ("1" + "0" * 400, now),
        ("20000", "9" * 400),
        ("20000", "NaN"),
        ("-5", now),
        ("true", now),
        ('"20000"', now),
    ):
        kept.write_text(f'{{"endpoint": "127.0.0.1:1", "batch_bytes": {batch}, "at": {at}}}')
        assert _uplink(tmp_path)._batch_bytes == 1_000_000, (batch, at)
    kept.write_text(f'{{"endpoint": "127.0.0.1:1", "batch_bytes": 20000, "at": {now}}}')
    assert _uplink(tmp_path)._batch_bytes in range(20_000, 20_100)  # (as written: read)
