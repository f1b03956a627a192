"""A signed package carrying another model, swapped into a started slot: how the agent meets a package built
by a packager that did not check (its signature valid, its golden outputs recorded from the model itself)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from edge_agent.models.config import ModelConfig
from edge_agent.models.slot import ModelSlot
from tests.unit.test_package_external_data import _resigned


def with_model(good: Path, key: Path, model: Path, expected: dict[str, np.ndarray], out_dir: Path) -> Path:
    """``good`` with ``model`` as its model.onnx and ``expected`` as its golden outputs, signed again by ``key``,
    written into ``out_dir`` under ``good``'s name."""
    buf = io.BytesIO()
    np.savez(buf, **expected)
    out_dir.mkdir(parents=True, exist_ok=True)
    return _resigned(
        good,
        key,
        {"model.onnx": model.read_bytes(), "golden/expected.npz": buf.getvalue()},
        out_dir / good.name,
    )


async def swap_once(name: str, first: Path, pkg: Path, engine: str, data: Path, trusted):
    """A slot started on ``first``, ``pkg`` swapped in (no health watch): the outcome and the version that
    serves after it."""
    s = ModelSlot(name, ModelConfig(package=str(first), engine=engine), data, trusted)
    await s.start()
    try:
        return await s.swap(pkg, watch=False), s.version
    finally:
        await s.stop()
