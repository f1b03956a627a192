"""A golden set that cannot judge a form is said at build and at ``verify --run``; an INT8 form that flips a
golden verdict at build is signed only when the spec accepts it.

The agent refuses a form whose outputs flip a golden item's verdict, so that check is only as good as the
golden items: when every item is NG (the test CNN scores 0.995 against 0.5) a form that says NG for
everything keeps every verdict; an INT8-only package's items within ``golden.INT8_NEAR_THRESHOLD`` of the span
of the scores from the threshold are not held to theirs at all. Before, the build said neither. And a two-form package built
without ``parity.min_agreement`` recorded the agreement measured at build as its bound, so an INT8 form that
flipped golden items there was signed to flip them at every agent. Real ONNX Runtime sessions throughout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from cloud_trainer.train import onnx_tools
from model_packager import GoldenError, build_package, read_manifest
from model_packager.cli import main
from model_packager.golden import run_engine
from tests.integration.test_golden_verdicts import _scores_low
from tests.support.models import (
    golden_inputs,
    make_keypair,
    make_signal_onnx,
    make_vision_onnx,
    signal_spec,
    vision_spec,
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return make_keypair(tmp_path_factory.mktemp("golden-coverage-keys"))


def _cli_build(tmp_path: Path, model: Path, spec: dict, inputs: dict, key: Path, *more: str) -> Path:
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    np.savez(tmp_path / "golden.npz", **inputs)
    out = tmp_path / "out"
    argv = ["build", str(model), str(tmp_path / "spec.yaml"), "--key", str(key), "--out", str(out)]
    assert main([*argv, "--golden", str(tmp_path / "golden.npz"), *more]) == 0
    (pkg,) = out.glob("*.edgepkg")
    return pkg


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning: ")]


def test_build_and_verify_say_in_one_line_when_every_golden_item_is_on_one_side_of_the_threshold(
    tmp_path, keys, capsys
):
    key, pub = keys
    model = make_vision_onnx(tmp_path / "cnn.onnx")
    inputs = golden_inputs("vision")
    ng = 1.0 - _softmax(run_engine("onnxruntime", model, inputs)["logits"])[:, 0]
    assert (ng >= 0.5).all(), ng  # the premise: every golden item is NG ('ok' is label 0)

    pkg = _cli_build(tmp_path, model, vision_spec(), inputs, key)
    said = _warnings(capsys.readouterr().err)
    # before: nothing said
    (one_side,) = [w for w in said if "every one of its 4 golden items is NG" in w]
    assert "golden set cannot judge output 'logits'" in one_side and "threshold 0.5" in one_side, said
    assert "none OK: a form that says NG for everything keeps every golden verdict" in one_side, said
    assert any("no golden item has 'ok'," in w for w in said), said  # and the labels no item has

    assert main(["verify", str(pkg), "--trust", str(pub), "--run"]) == 0
    assert one_side in _warnings(capsys.readouterr().err)  # the same line at verify --run


def test_an_int8_only_build_names_the_golden_items_its_near_threshold_margin_exempts(tmp_path, keys, capsys):
    key, pub = keys
    fp32 = make_signal_onnx(tmp_path / "fp32.onnx")
    int8 = onnx_tools.quantize(
        fp32, tmp_path / "int8.onnx", golden_inputs("signal", n=64, seed=1)["features"], "features"
    )
    inputs = golden_inputs("signal")
    score = run_engine("onnxruntime", int8, inputs)["anomaly_score"][:, 0]
    threshold = 0.46  # item 0 NG, within 1 % above it; the others OK, more than 10 % below
    assert score[0] >= threshold > score[0] * 0.99 and (score[1:] < 0.9 * threshold).all(), score
    spec = {
        **signal_spec("machine-health", "1.0.0", anomaly_threshold=threshold),
        "quantization": {"scheme": onnx_tools.SCHEME},
    }

    pkg = _cli_build(tmp_path, int8, spec, inputs, key)
    said = _warnings(capsys.readouterr().err)
    # before: nothing said
    (near,) = [w for w in said if "near a threshold" in w]
    assert near.startswith(
        "warning: INT8-only package: golden item 0 (1 of 4 items) near a threshold (within 5% of the scale of its "
        "scores): not held to its verdict on other CPUs"
    ), said
    (ng_side,) = [w for w in said if "on the NG side" in w]
    assert (
        "'anomaly_score'" in ng_side and "its one NG golden item is within 0.023 of threshold 0.46" in ng_side
    )

    assert main(["verify", str(pkg), "--trust", str(pub), "--run"]) == 0
    assert near in _warnings(capsys.readouterr().err)


def test_a_two_form_build_whose_int8_form_flips_a_golden_verdict_is_refused_unless_the_spec_accepts_it(
    tmp_path, keys
):
    """The INT8 form's scores are 5 % low: golden item 0 is OK by it, NG by FP32 (3 of 4 agree)."""
    key, _ = keys
    fp32 = make_signal_onnx(tmp_path / "fp32.onnx")
    int8 = _scores_low(fp32, tmp_path / "int8.onnx", 0.95)
    inputs = golden_inputs("signal")
    spec = signal_spec("machine-health", "1.0.0", anomaly_threshold=0.505)

    def build(spec: dict, out: str) -> Path:
        return build_package(
            int8, spec, tmp_path / out, signing_key=key, golden_inputs=inputs, fp32_model=fp32
        )

    # before: signed with min_agreement 0.75, the agreement measured here, which no one chose
    with pytest.raises(GoldenError) as err:
        build(spec, "unchosen")
    msg = str(err.value)
    assert "agrees with FP32 on 75.0% of the golden inputs (needs 100.0%)" in msg, msg
    assert "golden item 0: OK (bearing_inner) here" in msg, msg
    assert "the spec sets no parity.min_agreement" in msg and "set parity.min_agreement" in msg, msg
    assert not list((tmp_path / "unchosen").glob("*.edgepkg"))

    # a tolerance the spec chooses is signed as chosen
    pkg = build({**spec, "parity": {"output_atol": {}, "min_agreement": 0.75}}, "chosen")
    assert read_manifest(pkg).parity.min_agreement == 0.75

    # an INT8 form that agrees everywhere is bound to agree everywhere, as before
    same = build_package(
        fp32,
        {**spec, "version": "1.0.1"},
        tmp_path / "same",
        signing_key=key,
        golden_inputs=inputs,
        fp32_model=fp32,
    )
    assert read_manifest(same).parity.min_agreement == 1.0


def test_an_agent_says_what_the_golden_set_cannot_judge_once_at_load_and_on_status(tmp_path, keys, caplog):
    """The slot reads the blind spots from the signed expected outputs at load: one WARNING line each, naming
    slot and package, and ``golden_notes`` in its /status entry. Before: nothing at the agent."""
    import asyncio
    import logging

    from edge_agent.models.config import ModelConfig
    from edge_agent.models.slot import ModelSlot

    key, pub = keys
    model = make_vision_onnx(tmp_path / "cnn.onnx")
    notes: list[str] = []
    pkg = build_package(
        model,
        vision_spec(),
        tmp_path / "out",
        signing_key=key,
        golden_inputs=golden_inputs("vision"),
        notes=notes,
    )
    assert any("every one of its 4 golden items is NG" in n for n in notes), notes  # the premise
    slot = ModelSlot("inspect", ModelConfig(package=str(pkg)), tmp_path / "agent", [pub])

    async def load() -> dict:
        await slot.start()
        try:
            return slot.status()
        finally:
            await slot.stop()

    with caplog.at_level(logging.WARNING, logger="edge_agent"):
        status = asyncio.run(load())
    assert status["golden_notes"] == notes
    said = [r.getMessage() for r in caplog.records if "golden" in r.getMessage()]
    assert said == [f"slot inspect: package {read_manifest(pkg).package_id}: {n}" for n in notes], said


def _softmax(v: np.ndarray) -> np.ndarray:
    z = np.exp(v - v.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)
