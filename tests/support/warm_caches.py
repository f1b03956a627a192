"""Compile the project once before a parallel test run, instead of in every process of the run.

``make test`` runs ``python -m tests.support.warm_caches`` before pytest. Where ``PYTHONDONTWRITEBYTECODE`` is
set (the CI machine sets it, as containers often do) Python writes no ``.pyc``, and a fresh clone has none to
read. Without this step:

- each of the run's three xdist workers, and each Python process a test starts (the CLIs, the agent, trainer
  runs), compiles every project module it imports from source (~0.2-0.5 s of CPU for the agent's or the
  packager's imports). Here the project's packages and ``tests/support`` are compiled with ``compileall``:
  Python reads a ``.pyc`` beside the source even where it writes none (checked against the source's mtime
  and size).
- each worker rewrites the asserts of all ~300 test modules itself (~10 s of CPU per worker, while xdist
  starts no test before every worker has collected). pytest keeps its rewrite beside each module
  (``__pycache__/*-pytest-<version>.pyc``, checked against the source's hash) but writes it only where Python
  may write bytecode, and even then the workers of a fresh clone rewrite the same modules at the same time.
  Here each module is rewritten once, by pytest's own rewriter, on every core.

Best effort: the rewrite uses pytest internals (``_pytest.assertion.rewrite``); if they are not as expected,
it says so and the workers rewrite as before. A cached rewrite pytest cannot use (a changed source, another
pytest) is one pytest rewrites as if it were absent."""

from __future__ import annotations

import compileall
import fnmatch
import multiprocessing
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

_config: Any = None  # pytest's config, inherited by the forked rewriting processes


def packages() -> list[Path]:
    """The project's packages (pyproject's package list) and the tests' helpers."""
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    return [ROOT / p.rstrip("*") for p in found["include"]] + [ROOT / "tests" / "support"]


def compile_packages() -> bool:
    return all([compileall.compile_dir(p, quiet=1, workers=0) for p in packages()])  # each one, failed or not


def _rewrite(path: str) -> None:
    from _pytest.assertion import rewrite

    fn = Path(path)
    pyc = rewrite.get_cache_dir(fn) / (fn.name[:-3] + rewrite.PYC_TAIL)
    if rewrite._read_pyc(fn, pyc) is not None:
        return  # rewritten before, from this source
    try:
        source_hash, code = rewrite._rewrite_test(fn, _config)
    except (OSError, SyntaxError, ValueError):
        return  # pytest says what is wrong with it when it collects the module
    pyc.parent.mkdir(parents=True, exist_ok=True)
    part = pyc.with_name(f"{pyc.name}.{os.getpid()}")
    with open(part, "wb") as f:
        rewrite._write_pyc_fp(f, source_hash, code)
    os.replace(part, pyc)  # whole or absent, as pytest writes it


def rewrite_test_modules() -> int:
    """Rewrite every test module and conftest.py pytest would rewrite; the number of modules."""
    global _config
    from _pytest.config import _prepareconfig

    _config = _prepareconfig(["-p", "no:cacheprovider", "--noconftest"])  # the ini and options, nothing run
    if _config.getoption("assertmode") != "rewrite":
        return 0
    patterns = _config.getini("python_files")
    files = sorted(
        str(f)
        for top in _config.getini("testpaths")  # none: nothing done (pytest would walk the whole folder)
        for f in (_config.rootpath / top).rglob("*.py")
        if f.name == "conftest.py" or any(fnmatch.fnmatch(f.name, p) for p in patterns)
    )
    with multiprocessing.get_context("fork").Pool(len(os.sched_getaffinity(0))) as pool:
        pool.map(_rewrite, files, chunksize=4)
    return len(files)


def main() -> int:
    os.chdir(ROOT)
    if not compile_packages():
        print(
            "warm_caches: some modules did not compile; their processes compile them as before",
            file=sys.stderr,
        )
    try:
        rewrite_test_modules()
    except Exception as e:  # pytest internals not as expected: the workers rewrite as before
        print(f"warm_caches: test modules not rewritten ahead ({type(e).__name__}: {e})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
