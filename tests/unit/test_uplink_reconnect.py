"""The agent's Connect reconnections back off: a healthy stream that ends (a server restart) comes back within
heartbeat_s with full jitter, one that keeps failing waits twice as long each time up to backoff_max_s, and a
refusal on purpose (a quota, a certificate) waits the longest at once."""

from __future__ import annotations

from edge_agent.uplink.client import reconnect_delay
from edge_agent.uplink.settings import CloudSettings


def test_reconnect_ceiling_resets_after_a_healthy_stream_and_doubles_while_failing():
    s = CloudSettings(
        endpoint="h:1", ca_file="c", cert_file="c", key_file="k", heartbeat_s=5, report_s=30, backoff_max_s=60
    )
    assert reconnect_delay(5, lasted_s=3600, s=s) == 5  # a long-lived stream ended: spread over heartbeat_s
    ceilings, d = [], 5.0
    for _ in range(5):  # the server refuses or drops every new stream at once
        d = reconnect_delay(d, lasted_s=0.1, s=s)
        ceilings.append(d)
    assert ceilings == [10, 20, 40, 60, 60]
    assert reconnect_delay(60, lasted_s=31, s=s) == 5  # back to normal once a stream lived a report period
    assert reconnect_delay(5, lasted_s=0.1, s=s, refused=True) == 60
