"""``make test`` runs ``tests.support.warm_caches`` before pytest: it rewrites each test module's asserts once,
with pytest's own rewriter, where pytest looks for its cached rewrite. The run's workers then rewrite nothing,
even where Python may write no bytecode (``PYTHONDONTWRITEBYTECODE``, set on the CI machine: each of the three
workers rewrote all ~300 modules itself, ~10 s of CPU each before any test started), and a failing assert is
still explained as pytest explains it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

INI = """[tool.pytest.ini_options]
testpaths = ["checks"]
python_files = ["check_*.py"]
"""

# a rewrite made during the run is an error: the module's rewrite must come from the cache
# (this folder's modules only: pytest also rewrites its plugins' packages, hypothesis's among them, which
# warm_caches leaves to the workers)
CONFTEST = """from pathlib import Path

from _pytest.assertion import rewrite

_HERE = Path(__file__).resolve().parent
_rewrite = rewrite._rewrite_test


def _refuse(fn, config):
    if Path(fn).resolve().is_relative_to(_HERE):
        raise RuntimeError(f"rewritten during the run: {fn}")
    return _rewrite(fn, config)


rewrite._rewrite_test = _refuse
"""

CHECK = """def test_a_sum():
    total = 1 + 1
    assert total == 3
"""


def test_the_test_modules_rewritten_ahead_are_what_a_run_without_bytecode_writing_uses(tmp_path):
    (tmp_path / "pyproject.toml").write_text(INI)
    (tmp_path / "checks" / "deep").mkdir(parents=True)
    (tmp_path / "checks" / "conftest.py").write_text(CONFTEST)
    (tmp_path / "checks" / "deep" / "check_sums.py").write_text(CHECK)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    warm = subprocess.run(
        [sys.executable, "-c", "from tests.support.warm_caches import rewrite_test_modules as r; print(r())"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert warm.returncode == 0 and warm.stdout.split() == ["2"], (warm.stdout, warm.stderr[-2000:])
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stdout[-3000:]  # one test failed; no collection error
    assert "1 failed" in run.stdout and "assert 2 == 3" in run.stdout, run.stdout[-3000:]


def test_hypothesis_finds_the_constants_read_ahead_in_its_cache_and_parses_no_module_again(
    tmp_path, monkeypatch
):
    """The workers of a fresh clone each parsed every module of the project they imported for Hypothesis's local
    constants; warm_caches reads them once into Hypothesis's cache, where a worker's read of the module finds them."""
    import importlib.util

    from hypothesis import configuration
    from hypothesis.internal import constants_ast

    from tests.support import warm_caches

    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "limits.py").write_text("LIMIT = 987654321\nNAME = 'warmed-ahead'\n")
    monkeypatch.setattr(warm_caches, "packages", lambda: [tmp_path / "pkg", tmp_path / "support"])
    configuration.set_hypothesis_home_dir(tmp_path / "hyp")
    try:
        assert warm_caches.hypothesis_constants() == 1
        cached = list((tmp_path / "hyp" / "constants").iterdir())
        assert len(cached) == 1 and "987654321" in cached[0].read_text(), cached
        spec = importlib.util.spec_from_file_location("limits_warmed", tmp_path / "pkg" / "limits.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        parsed = []
        real = constants_ast._constants_from_source
        monkeypatch.setattr(
            constants_ast, "_constants_from_source", lambda src, **k: parsed.append(src) or real(src, **k)
        )
        found = constants_ast.constants_from_module(module)
        assert 987654321 in found and "warmed-ahead" in found, found
        assert parsed == [cached[0].read_bytes()]  # the cache's file, not the module's source
        assert list((tmp_path / "hyp" / "constants").iterdir()) == cached
    finally:
        configuration.set_hypothesis_home_dir(None)
