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
