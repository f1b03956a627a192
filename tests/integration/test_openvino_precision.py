"""A package checked only on ONNX Runtime, served with ``engine: openvino`` on a CPU whose OpenVINO runs float
layers in bf16 by default (AVX-512 BF16, AMX: ~3 significant digits): its golden tolerance, set for f32, is
missed, and the slot was refused ("golden test failed on this CPU (amx)") though the model is fine at f32. The
slot now tries the same candidate at f32 before refusing, serves it there and says why. On a CPU whose
OpenVINO default is f32 there is nothing to retry: the test is skipped, saying so."""

from __future__ import annotations

import pytest

from edge_agent.models.config import ModelConfig
from edge_agent.models.slot import ModelSlot
from tests.support.models import make_keypair, make_package


def _default_precision() -> str:
    import openvino as ov

    return ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()


@pytest.mark.skipif(
    _default_precision() == "f32",
    reason="this CPU's OpenVINO runs float layers at f32 by default: no bf16 to miss",
)
async def test_a_package_its_tolerance_misses_in_bf16_is_served_by_openvino_at_f32(tmp_path):
    key, pub = make_keypair(tmp_path / "keys")
    pkg = make_package(tmp_path, kind="vision", key=key)  # golden checked on ONNX Runtime at f32 only
    slot = ModelSlot("vision", ModelConfig(package=str(pkg), engine="openvino"), tmp_path / "data", [pub])
    await (
        slot.start()
    )  # before: SlotError "golden test failed on this CPU ...: fp32 on openvino: ... deviates"
    try:
        assert slot.engine_name == "openvino"
        st = slot.status()
        sel = st["selection"]
        assert "at f32 (bf16, this CPU's default, missed the golden check)" in sel["summary"], sel
        chosen = next(t for t in sel["trials"] if t["ok"])
        assert (
            chosen["reason"].startswith("at f32: at this CPU's default precision (bf16)")
            and "deviates" in (chosen["reason"])
        ), chosen
    finally:
        await slot.stop()
