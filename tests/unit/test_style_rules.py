"""Rules of STYLE.md that a machine can check on the packages' source."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("edge_agent", "devices", "model_packager", "cloud_trainer", "protocols", "simulators")


def test_no_asyncio_wait_for_in_the_packages_asyncio_timeout_instead():
    # Python 3.11's wait_for can swallow a cancellation that races with its timeout: a stop() or a
    # shutdown could then hang; `async with asyncio.timeout(...)` has no such race
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            text = path.read_text()
            if "gen" in path.relative_to(ROOT).parts or "wait_for" not in text:
                continue
            for node in ast.walk(ast.parse(text, filename=str(path))):
                if (
                    isinstance(node, ast.Attribute)
                    and node.attr == "wait_for"
                    and isinstance(node.value, ast.Name)
                    and node.value.id == "asyncio"
                ):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, f"asyncio.wait_for used (use `async with asyncio.timeout(...)`): {found}"
