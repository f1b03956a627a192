"""The uplink's settings (``cloud:``) at load: a value out of range is one clear line naming field and file."""

from __future__ import annotations

import pytest

from edge_agent.config import ConfigError, parse_config


def test_a_max_delay_ms_above_its_bound_is_refused_naming_field_and_file() -> None:
    """max_delay_ms delays every alarm's and record's ack at a trickle: a site's 60000 (a minute) is refused."""
    cloud = {
        "endpoint": "127.0.0.1:1",
        "ca_file": "a",
        "cert_file": "b",
        "key_file": "c",
        "max_delay_ms": 60000,
    }
    with pytest.raises(ConfigError) as ei:
        parse_config({"agent": {"id": "gw1"}, "cloud": cloud}, "site.yaml")
    assert any(
        e.startswith("site.yaml: cloud.max_delay_ms:") and "5000" in e and "60000" in e
        for e in ei.value.errors
    ), ei.value.errors
