"""Config errors name a field the user can find, on one line. A key YAML 1.1 reads as a boolean or a number
inside a source's or pipeline's settings (``on: 1``, ``16: t``) was said by a path the file nowhere holds,
``pipelines[0][1]: Keys should be strings`` (pydantic puts a bool key in the path as 1), and one at the top
level as ``True: unknown option True; did you mean 'rules'?``. A name written with a YAML escape (``"cam\\x1b[2J"``,
``"a\\nb"``) went into its error as the character itself: printed, it cleared the terminal or forged a line of
its own. Each key not text is said at its settings' path now, with what YAML read it as, and every error is one
printable line, the character shown as its escape."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent import cli
from edge_agent.config import ConfigError, load_config

AGENT = "agent:\n  id: hostile\n"
BOOL = "the boolean true (YAML reads on, off, yes and no so)"


def _errors(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    return exc.value.errors


@pytest.mark.parametrize(
    "written, path, read",
    [
        ("pipelines:\n  - {name: p, source: s, model: m, on: 1}\n", "pipelines[0]", BOOL),
        ("pipelines:\n  - {name: p, source: s, model: m, 16: 1}\n", "pipelines[0]", "the number 16"),
        ("models:\n  m: {package: x.edgepkg, 0.5: 1}\n", "models.m", "the number 0.5"),
        (
            "sources:\n  b:\n    type: mqtt\n    host: 127.0.0.1\n    subscriptions:\n      - topic: t/#\n"
            "        json_mapping: {values: {16: temperature}}\n",
            "sources.b.subscriptions[0].json_mapping.values",
            "the number 16",
        ),
        ("yes: 1\n", "the top level", BOOL),
    ],
)
def test_a_key_yaml_reads_as_no_text_inside_settings_is_said_at_their_path(tmp_path, written, path, read):
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(AGENT + written)
    assert f"{cfg}: {path}: a key must be text; YAML read one here as {read}: quote it, or correct it" in (
        _errors(cfg)
    )


@pytest.mark.parametrize(
    "name, shown",
    [
        ("cam\\e]0;pwned\\a\\e[2J", "cam\\x1b]0;pwned\\x07\\x1b[2J"),
        ("cam\\nOK: config valid", "cam\\x0aOK: config valid"),
    ],
)
def test_a_name_holding_a_control_character_is_said_on_one_line_with_its_escape(
    tmp_path, capsys, name, shown
):
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(AGENT + f'sources:\n  "{name}": {{type: kamera}}\n')
    expected = f"{cfg}: sources.{shown}.type: unknown source type 'kamera'; did you mean 'camera'?"
    assert _errors(cfg) == [expected]
    assert cli.main(["validate", str(cfg)]) == 1
    printed = capsys.readouterr()
    assert expected in (printed.out + printed.err).splitlines()
    assert "\x1b" not in printed.out + printed.err and "\x07" not in printed.out + printed.err
