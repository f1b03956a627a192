"""A training's seeding and optimizers run without loading torch's compiler, which nothing the trainer runs uses
(~2 s of CPU each at the start of every `cloud-trainer build`): the seeding turns torch's deterministic kernels on (a
warning where an operation has none); the optimizers (Adam, AdamW, L-BFGS), which torch's own classes import it at
their first use, give the weights torch's classes give, bit for bit; a torch whose internals are not the ones
recognised gets torch's classes themselves. One process for both: each new interpreter costs ~2.5 s of torch import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sys
import torch
from cloud_trainer.train import common
from cloud_trainer.train.common import seed_everything

seed_everything(0, threads=1)
print(torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
      torch.get_num_threads(), sorted(m for m in ("torch._inductor", "torch._dynamo") if m in sys.modules))

def net():
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(64, 2))


x, y = torch.randn(24, 3, 6, 6, generator=torch.Generator().manual_seed(1)), torch.arange(24) % 2


def loss(m):
    return torch.nn.functional.cross_entropy(m(x), y)


def train_step(m, opt, b):
    opt.zero_grad()
    out = loss(m)
    out.backward()
    opt.step()
    return out.item()


def fitted():  # the trainer's fit loop: Adam, cosine schedule, best weights restored
    m = net()
    common.fit(m, train_step, loss, lambda: [0, 1], epochs=6, patience=10, lr=1e-2, log=lambda s: None)
    return [p.detach().clone() for p in m.parameters()]


def adamw():  # the patch recipe's: AdamW with weight decay under a one-cycle schedule
    m = net()
    opt = common.optimizer(torch.optim.AdamW, m.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=8, pct_start=0.15)
    for _ in range(8):
        train_step(m, opt, None)
        sched.step()
    return [p.detach().clone() for p in m.parameters()]


def lbfgs():  # the patch classifier's head
    m = net()
    opt = common.optimizer(torch.optim.LBFGS, m.parameters(), max_iter=10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        out = loss(m)
        out.backward()
        return out

    opt.step(closure)
    return [p.detach().clone() for p in m.parameters()]


runs = [fitted(), adamw(), lbfgs()]
loaded = sorted(m for m in ("torch._dynamo", "torch._inductor") if m in sys.modules)
kinds = [type(common.optimizer(c, net().parameters())).__name__ for c in (torch.optim.Adam, torch.optim.AdamW)]
eager = common.optimizer
common.optimizer = lambda cls, params, **kw: cls(params, **kw)  # torch's classes, as before
same = [all(torch.equal(a, b) for a, b in zip(got, want)) for got, want in zip(runs, [fitted(), adamw(), lbfgs()])]
moved = [not torch.equal(a, b) for a, b in zip(runs[0], [p.detach() for p in net().parameters()])]


def changed(func):
    raise AttributeError("another torch")


# a torch whose optimizer wrappers are not the ones recognised: its own class
common.optimizer, common._EAGER_CLASSES = eager, {}
sys.modules["torch.optim.optimizer"]._use_grad_for_differentiable = changed
other = type(common.optimizer(torch.optim.Adam, net().parameters(), lr=0.1)) is torch.optim.Adam
print("loaded", loaded, "kinds", kinds, "same", same, "trained", all(moved), "fallback", other)
"""


def test_seeding_and_optimizers_of_a_training_give_torchs_results_without_loading_torchs_compiler():
    # its own process: another test of this worker may have loaded the compiler already
    r = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    seeding, optimizers = r.stdout.strip().split("\n")
    # before 8cd902f4: True True 1 ['torch._dynamo', 'torch._inductor'] (use_deterministic_algorithms)
    assert seeding == "True True 1 []", r.stdout
    # before: torch._dynamo and torch._inductor loaded by the first Adam of fit()
    want = "loaded [] kinds ['Adam', 'AdamW'] same [True, True, True] trained True fallback True"
    assert optimizers == want, r.stdout
