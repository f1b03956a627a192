"""A training's seeding: torch's deterministic kernels on (a warning where an operation has none), without loading
torch's compiler, which nothing the trainer runs uses (~2 s of CPU at the start of every `cloud-trainer build`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sys
import torch
from cloud_trainer.train.common import seed_everything
seed_everything(0, threads=1)
print(torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
      torch.get_num_threads(), sorted(m for m in ("torch._inductor", "torch._dynamo") if m in sys.modules))
"""


def test_seeding_a_training_turns_on_deterministic_kernels_without_loading_torchs_compiler():
    # its own process: another test of this worker may have loaded the compiler already
    r = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    # before: True True 1 ['torch._dynamo', 'torch._inductor']
    assert r.stdout.split("\n")[0] == "True True 1 []", r.stdout
