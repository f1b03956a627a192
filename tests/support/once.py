"""Builds made once per test run, whichever pytest-xdist worker asks first.

A module-scoped fixture is set up again by every worker that runs one of its module's tests (a module split
between workers, or part of it taken by a worker that ran out of work): a 15-s model build was then made two or
three times in one run. ``built_once`` runs a build in a folder of its own under the run's base temporary folder
(shared by the workers: ``tests/conftest.py``'s OPC UA shelf lives there too), under an ``fcntl`` lock, and keeps
its result beside it (pickled); a worker that asks later waits for the lock and gets that result. Limits: only for
builds no test changes (a test that changes what was built copies it first), and results that pickle (paths,
dicts, dataclasses); a build that fails leaves nothing, so the next worker to ask builds it again."""

from __future__ import annotations

import fcntl
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")


def run_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The base temporary folder every worker of this run shares (the run's own without xdist)."""
    root = tmp_path_factory.getbasetemp()
    return root.parent if root.name.startswith("popen-gw") else root


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], T]) -> T:
    """``build(folder)``'s result, the build run once per test run in ``folder`` (``once-<name>``)."""
    folder = run_root(tmp_path_factory) / f"once-{name}"
    done = folder.with_name(folder.name + ".pickle")
    with open(folder.with_name(folder.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if done.is_file():
                result: T = pickle.loads(done.read_bytes())
                return result
            shutil.rmtree(folder, ignore_errors=True)  # left by a build that failed
            folder.mkdir()
            result = build(folder)
            part = done.with_name(done.name + ".part")
            part.write_bytes(pickle.dumps(result))
            os.replace(part, done)  # whole or absent
            return result
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
