"""A value a Float or Double node does not take is refused in words that fit what was written, on a real
asyncua server: ``value: true`` (no quotes) was told "write a number without quotes", sending the user looking
for quotes the YAML never had. A boolean is now told to be a number (true/false are a Boolean node's), and
a value of no kind (null, a mapping) is told to be a number; quoted text keeps "without quotes"."""

from __future__ import annotations

import pytest

from devices.opcua.client import AbstractType, OpcUaTypeMismatch, convert_value
from tests.integration.test_opcua_write_values import plc, plc_server  # noqa: F401  (the fixtures: a started server)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(
    ("node", "value", "said"),
    [
        ("Float", True, "write a number; true and false are a Boolean node's values"),
        ("Double", False, "write a number; true and false are a Boolean node's values"),
        ("Double", None, "write a number"),
        ("Double", "1.5", "write a number without quotes"),
    ],
    ids=["Float-true", "Double-false", "Double-null", "Double-quoted"],
)
async def test_a_refusal_says_what_to_write_in_words_that_fit_the_value_given(plc, node, value, said):  # noqa: F811
    src, nodes, sent = plc
    with pytest.raises(OpcUaTypeMismatch) as e:
        await src.write(f"ns=2;s={node}", value)
    assert str(e.value).endswith(said), e.value
    assert ("without quotes" in str(e.value)) == isinstance(value, str), e.value
    assert sent == []


def test_an_abstract_number_node_says_the_same():
    with pytest.raises(OpcUaTypeMismatch) as e:
        convert_value(AbstractType.Number, True, "ns=2;s=N")
    assert str(e.value).endswith("write a number; true and false are a Boolean node's values"), e.value
