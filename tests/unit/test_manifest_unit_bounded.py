"""An output's ``unit`` is one short printable word.

A remaining life's unit is named in the model's error when a live window gives a life beyond a century
(``gives -1e+30 h``), which the pipeline logs and ``/status`` shows as it is: a unit holding a newline and an
escape sequence forged a log line, and it could be as long as the manifest (256 KB). The manifest refuses such
a unit where it is built and wherever it is read, naming it escaped. The other free text (``description``s)
reaches only ``model-packager inspect``, which prints it escaped and cut."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from model_packager import PackageError, build_package
from model_packager.manifest import Manifest
from tests.support.models import golden_inputs, make_keypair, make_signal_onnx, signal_spec


def _with_unit(unit: str) -> dict:
    d = signal_spec()
    d["outputs"][2]["unit"] = unit
    return d


@pytest.mark.parametrize(
    ("unit", "said"),
    [
        ("h\n2026-12-01 12:00:00 INFO slot health: now running\x1b[2K", "unit 'h\\n2026-12-01 12:00:00 INFO"),
        ("h\u202e", "unit 'h\\u202e' holds a control character"),
        ("hours" * 40, "is 200 characters"),
        ("", "unit '' is empty"),
    ],
    ids=["forged-line", "bidi", "long", "empty"],
)
def test_a_unit_with_a_control_character_or_too_long_is_refused_naming_it(unit, said):
    with pytest.raises(ValidationError) as ei:
        Manifest.model_validate({**_with_unit(unit), "files": []})
    assert said in str(ei.value), str(ei.value)
    assert "a unit is 1 to 32 printable characters" in str(ei.value)


def test_a_unit_is_refused_at_build_and_a_known_or_other_short_one_still_reads(tmp_path):
    for unit in ("s", "min", "h", "d", "hours", "cycles to failure", "operating hours (estimated)"):
        Manifest.model_validate({**_with_unit(unit), "files": []})
    key, _ = make_keypair(tmp_path / "keys")
    with pytest.raises((PackageError, ValidationError, ValueError), match="unit 'h\\\\x1b"):
        build_package(
            make_signal_onnx(tmp_path / "src.onnx"),
            _with_unit("h\x1b[2J"),
            tmp_path / "out",
            signing_key=key,
            golden_inputs=golden_inputs("signal"),
        )
