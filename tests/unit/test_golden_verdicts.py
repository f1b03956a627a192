"""``golden.verdict_flips``: the golden items (and tiles) whose verdict or label another run gives
differently from the package's golden outputs, however small the deviation of the values, as the agent's
check at load reads them (``edge_agent.models.select.check``; ``tests/integration/test_golden_verdicts.py``
holds the agent and the build to it on real packages)."""

from __future__ import annotations

import numpy as np

from model_packager.golden import compare, item_rows, verdict_flips, verdict_problems
from model_packager.manifest import Manifest
from tests.support.models import vision_spec


def _tiled_anomaly() -> Manifest:
    spec = vision_spec("sheet-anomaly", width=32, height=32, heatmap=False)
    spec["outputs"] = [
        {
            "name": "anomaly_score",
            "dtype": "float32",
            "shape": ["batch", 1],
            "role": "anomaly_score",
            "threshold": 0.3,
        }
    ]
    spec["preprocessing"]["tiles"] = [2, 1]
    return Manifest.model_validate({**spec, "files": []})


def test_a_tile_that_flips_is_named_though_its_frames_verdict_is_ng_either_way():
    m = _tiled_anomaly()
    inputs = {"image": np.zeros((4, 3, 32, 32), np.float32)}  # two frames of two tiles
    assert item_rows(m, inputs) == 2
    expected = {"anomaly_score": np.array([[0.1], [0.2], [0.5], [0.2995]], np.float32)}
    got = {"anomaly_score": np.array([[0.1], [0.2], [0.5], [0.3005]], np.float32)}
    assert compare(expected, got, 1e-3, 1e-2)[1] == []  # within the golden tolerance
    # frame 1 is NG on both (its tile 0), but its tile 1 crossed the threshold: another part of the sheet
    flips = verdict_flips(m, expected, got, item_rows(m, inputs))
    assert flips == [
        "golden item 1, tile 1: NG here, score 0.3005 against threshold 0.3, where the package's golden "
        "outputs give OK, score 0.2995 against threshold 0.3"
    ], flips


def test_a_classifiers_label_and_its_ng_side_are_compared_and_the_first_item_named():
    m = Manifest.model_validate({**vision_spec(labels=("ok", "scratch", "dent")), "files": []})
    heat = np.zeros((3, 1, 32, 32), np.float32)
    # item 0: NG score 1 - p(ok) just under 0.5 here, just over it in the other run; item 2: top label differs
    expected = {"logits": np.array([[1.0, 1.002, -9.0], [3.0, 0.0, 0.0], [0.0, 2.0, 1.999]], np.float32)}
    got = {"logits": np.array([[1.002, 1.0, -9.0], [3.0, 0.0, 0.0], [0.0, 1.999, 2.0]], np.float32)}
    expected["heatmap"] = got["heatmap"] = heat
    assert compare(expected, got, 1e-3, 1e-2)[1] == []
    flips = verdict_flips(m, expected, got)
    assert [f.split(":")[0] for f in flips] == ["golden item 0", "golden item 2"], flips
    assert flips[0].startswith("golden item 0: OK (ok) here, score 0.499"), flips
    assert "golden outputs give NG (scratch), score 0.500" in flips[0], flips
    assert flips[1].startswith("golden item 2: NG (dent) here") and "give NG (scratch)" in flips[1], flips
    (one,) = verdict_problems(m, expected, got)
    assert one.startswith("verdict differs from the package's on golden item 0: ") and one.endswith(
        "(and 1 more golden item)"
    ), one
    assert verdict_flips(m, expected, expected) == []
