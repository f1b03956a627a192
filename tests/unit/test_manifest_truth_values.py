"""A signed manifest's number field given a truth value is refused naming the field.

pydantic's lax mode read ``true`` as 1 and ``false`` as 0: ``threshold: true`` (a YAML 1.1 ``yes`` in a
hand-written spec) was a threshold of 1.0, so the classifier never said NG (``1 - p(ok) > 1.0`` never holds), and
``golden.atol: true`` a golden tolerance of 1.0; both verified and installed."""

from __future__ import annotations

import pytest

from model_packager import ManifestError
from model_packager.package import _validate_manifest
from tests.support.models import vision_spec


def _spec(edit) -> dict:
    d = vision_spec()
    d["golden"] = {"inputs": "golden/inputs.npz", "expected": "golden/expected.npz"}
    edit(d)
    return d


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        (lambda d: d["outputs"][0].update(threshold=True), "manifest outputs[0] has threshold: true,"),
        (lambda d: d["outputs"][0].update(threshold=False), "manifest outputs[0] has threshold: false,"),
        (lambda d: d["golden"].update(atol=True), "manifest golden has atol: true,"),
        (lambda d: d["golden"].update(rtol=True), "manifest golden has rtol: true,"),
        (
            lambda d: d["preprocessing"].update(mean=[True, 0.0, 0.0]),
            "manifest preprocessing has mean: a list",
        ),
    ],
    ids=["threshold-true", "threshold-false", "atol-true", "rtol-true", "mean-item-true"],
)
def test_a_truth_value_for_a_number_is_refused_naming_the_field(edit, said):
    with pytest.raises(ManifestError) as ei:
        _validate_manifest(_spec(edit), "package p.edgepkg")
    msg = str(ei.value)
    assert said in msg and "a truth value where a number is expected" in msg, msg


def test_the_same_manifest_with_numbers_and_its_own_truth_values_still_reads():
    m = _validate_manifest(_spec(lambda d: d["golden"].update(atol=1e-3, rtol=0.01)), "package p.edgepkg")
    assert m.outputs[0].threshold == 0.5 and m.golden is not None and m.golden.atol == 1e-3
