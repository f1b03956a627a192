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
- each worker reads every module of the project it has imported for Hypothesis's "local constants" (its
  ``pytest_collection_modifyitems``, then again as tests import more): it parses each module and keeps what
  it found in ``.hypothesis/constants/<source hash>``, but a fresh clone has none, and the workers parse the
  same modules at the same time (~1.8 CPU s of each worker's collection). Here every module of the project's
  packages is read once, by Hypothesis's own function, on every core, into the same cache.

Best effort: the rewrite uses pytest internals (``_pytest.assertion.rewrite``), the constants Hypothesis's
(``constants_from_module``); if they are not as expected, it says so and the workers do it as before. A cached
rewrite pytest cannot use (a changed source, another pytest) is one pytest rewrites as if it were absent; a
changed module has another hash."""

from __future__ import annotations

import compileall
import fnmatch
import multiprocessing
import os
import sys
import tomllib
import types
import warnings
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


def _constants(path: str) -> None:
    from hypothesis.internal.constants_ast import constants_from_module

    module = types.ModuleType("_warm_caches")  # read from its file, as Hypothesis reads an imported module's
    module.__file__ = path
    with warnings.catch_warnings():  # (pytest's config, read for the rewrite, left Hypothesis "initializing")
        warnings.filterwarnings("ignore", message="Slow code in plugin")
        constants_from_module(module)  # kept in the cache under the source's hash; a failure keeps nothing


def hypothesis_constants() -> int:
    """Read the local constants of every module of the project's packages into Hypothesis's cache (the
    modules its pytest plugin and providers read: not the tests' own, see ``is_local_module_file``); the
    number of modules."""
    try:
        import hypothesis  # noqa: F401
    except ImportError:  # no property tests to serve
        return 0
    files = sorted(str(f) for p in packages() if p.name != "support" for f in p.rglob("*.py"))
    with multiprocessing.get_context("fork").Pool(len(os.sched_getaffinity(0))) as pool:
        pool.map(_constants, files, chunksize=4)
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
    try:
        hypothesis_constants()
    except Exception as e:  # Hypothesis's internals not as expected: the workers read the modules as before
        print(
            f"warm_caches: Hypothesis's constants not read ahead ({type(e).__name__}: {e})", file=sys.stderr
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
