"""The import rules of DESIGN.md hold: who may import whom among our packages.

edge_agent and cloud_trainer meet only on the wire; devices never import the agent; nothing
imports simulators except tests, bench and the demo launcher.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"edge_agent", "cloud_trainer", "protocols", "model_packager", "devices", "simulators"}
ALLOWED = {
    "protocols": set(),
    "model_packager": set(),
    "devices": {"protocols"},
    "edge_agent": {"devices", "protocols", "model_packager"},
    "cloud_trainer": {"protocols", "model_packager"},
    "simulators": {"protocols"},
}
# The demo launcher orchestrates every part of the loop; it may import the others.
EXEMPT = {Path("simulators/demo.py")}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & OURS


def _sources(package: str):
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel not in EXEMPT:
            yield rel


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_design_allows(package):
    bad = []
    for rel in _sources(package):
        for imported in _imports(ROOT / rel) - ALLOWED[package] - {package}:
            bad.append(f"{rel} imports {imported}")
    assert not bad, "imports across the lines drawn in DESIGN.md:\n" + "\n".join(bad)


def test_agent_never_imports_torch():
    offenders = [
        str(rel)
        for rel in _sources("edge_agent")
        if "torch" in {n.split(".")[0] for n in _all_import_names(ROOT / rel)}
    ]
    assert not offenders, f"the agent must never import torch: {offenders}"


def _all_import_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names
