"""A command to a metric whose birth says DateTime is checked at send time (``command_value``). A config's
``9.007199254740993e+15`` (a ``WholeFloat``: 9007199254740992.0 to YAML) is no time, and the refusal names it as
the config writes it: the former code said "9007199254740992.0 is no time", a number the config does not show
(review /work/notes58/review_proto/findings.md L2). The load-time check (``datatype: DateTime``) already named it."""

from __future__ import annotations

import pytest

from devices.base import WholeFloat
from devices.mqtt.sparkplug_host import command_value
from protocols import sparkplug as sp


def test_a_datetime_metrics_refusal_names_the_configs_text_not_its_float():
    written = WholeFloat(9007199254740992.0, 9007199254740993, "9.007199254740993e+15")
    with pytest.raises(ValueError) as refused:
        command_value(sp.DataType.DATETIME, written, "Due")
    assert "9.007199254740993e+15 is no time" in str(refused.value)
    assert "9007199254740992" not in str(refused.value)
