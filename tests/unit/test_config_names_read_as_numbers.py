"""A name YAML 1.1 reads as a number in another form than it shows: a source written ``0x10:`` is the int 16
to it (``1_000:`` 1000, ``0b11:`` 3, ``010:`` 8), and was refused as ``sources.16: a name must be text; YAML
read this one as the number 16``, a path and a number the file nowhere holds. Such a key is now refused by the
name as written, with its line and the quoting to use; a value where text is wanted (``source: 0x10``, the
source quoted where it is defined) says that YAML read a number and to quote it, as ``model: on`` says."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config import ConfigError, load_config

AGENT = "agent:\n  id: hostile\n"


def _errors(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    return exc.value.errors


@pytest.mark.parametrize(
    "section, written, n",
    [
        ("sources", "0x10", 16),
        ("sources", "1_000", 1000),
        ("models", "0b11", 3),
        ("actions", "010", 8),
        ("models", "1.50", 1.5),
    ],
)
def test_a_name_yaml_reads_as_another_number_is_refused_as_written_with_its_line(
    tmp_path, section, written, n
):
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(AGENT + f"{section}:\n  {written}: {{type: alarm}}\n")
    assert _errors(cfg) == [
        f"{cfg}: {section}.{written}: the key {written} (line 4) is read by YAML as the number {n}, not as it "
        f"shows; quote it ('{written}') to keep it as written"
    ]


def test_a_nested_key_is_named_by_its_path_as_written(tmp_path):
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(AGENT + "sources:\n  cam:\n    type: camera\n    0x1F: 3\n")
    assert _errors(cfg) == [
        f"{cfg}: sources.cam.0x1F: the key 0x1F (line 6) is read by YAML as the number 31, not as it shows; "
        "quote it ('0x1F') to keep it as written"
    ]


def test_a_number_where_a_name_is_wanted_says_yaml_read_a_number_and_to_quote_it(tmp_path):
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        AGENT + "sources:\n  '0x10': {type: mqtt, host: 127.0.0.1}\n"
        "pipelines:\n  - {name: p, source: 0x10, model: vision}\n"
    )
    assert (
        f"{cfg}: pipelines[0].source: Input should be a valid string (found 16); YAML reads an unquoted number "
        "as a number, in any form it takes (0x10 as 16, 1_000 as 1000, 010 as 8): quote the text as written"
    ) in _errors(cfg)


def test_a_quoted_name_and_a_number_written_as_it_reads_are_not_taken_for_misreads(tmp_path):
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(AGENT + "sources:\n  '0x10': {type: mqtt, host: 127.0.0.1}\n  16: {type: mqtt}\n")
    errors = _errors(cfg)
    assert not any("0x10" in e for e in errors), errors
    assert any(
        e.startswith(f"{cfg}: sources.16: a name must be text; YAML read this one as the number 16")
        for e in errors
    )
