"""Shared training helpers: seeding, the fit loop with early stopping and progress, metrics, plots."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def seed_everything(seed: int, threads: int | None = None) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    # deterministic kernels, a warning where an operation has none: set_deterministic_debug_mode("warn") is
    # use_deterministic_algorithms(True, warn_only=True) without its import of torch's compiler (torch._inductor,
    # torch._dynamo: ~2 s of CPU at every training's start, for a flag only torch.compile reads; none is compiled)
    torch.set_deterministic_debug_mode("warn")
    if threads:
        torch.set_num_threads(threads)


def device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


_EAGER_CLASSES: dict[type, type | None] = {}


def optimizer(cls: type, params, **kwargs):
    """``cls(params, **kwargs)`` (``torch.optim.Adam``, ``AdamW``, ``LBFGS``...) whose methods run as torch
    runs them outside ``torch.compile``, without importing torch's compiler: torch wraps ``add_param_group``,
    ``zero_grad``, ``state_dict``... in ``torch._disable_dynamo`` and Adam's ``step`` in
    ``_use_grad_for_differentiable``, and each wrapper imports ``torch._dynamo`` at its first call (~2 s of
    CPU at every training's first optimizer) only to tell the compiler to leave the method alone; nothing
    is compiled here. The same update arithmetic runs (the methods' own bodies), so the weights are the same
    bit for bit. A torch whose wrappers are not the ones recognised here gets ``cls`` itself."""
    if cls not in _EAGER_CLASSES:
        try:
            _EAGER_CLASSES[cls] = _eager_class(cls)
        except Exception:  # another torch's internals: today's class, compiler import and all
            _EAGER_CLASSES[cls] = None
    return (_EAGER_CLASSES[cls] or cls)(params, **kwargs)


def _closure_var(fn, name: str):
    return fn.__closure__[fn.__code__.co_freevars.index(name)].cell_contents


def _eager_class(cls: type) -> type | None:
    """A subclass of ``cls`` of the same name whose methods wrapped by torch to keep the compiler out are
    their bodies; None when there is none to unwrap."""
    import functools

    import torch
    from torch._compile import _disable_dynamo
    from torch.optim.optimizer import Optimizer, _use_grad_for_differentiable

    def probe():
        pass

    # the wrappers' code objects, from torch itself: a method is unwrapped only when it is exactly one of them
    disabled = _disable_dynamo(probe).__code__
    use_grad = _use_grad_for_differentiable(probe).__code__
    hooked = Optimizer.profile_hook_step(probe).__code__
    if (
        not issubclass(cls, Optimizer)
        or "fn" not in disabled.co_freevars
        or "func" not in use_grad.co_freevars
    ):
        return None
    body: dict[str, object] = {}
    for name in dir(cls):
        attr = getattr(cls, name, None)
        if getattr(attr, "__code__", None) is disabled:
            body[name] = _closure_var(attr, "fn")
    step: Any = cls.step
    if getattr(step, "__code__", None) is hooked:  # Optimizer.__init__ of an earlier instance wrapped it
        step = _closure_var(step, "func")
    if getattr(step, "__code__", None) is use_grad:
        inner = _closure_var(step, "func")

        @functools.wraps(inner)
        def eager_step(self, *args, **kwargs):
            # what _use_grad_for_differentiable does outside the compiler (its graph breaks do nothing there)
            prev = torch.is_grad_enabled()
            try:
                torch.set_grad_enabled(self.defaults["differentiable"])
                return inner(self, *args, **kwargs)
            finally:
                torch.set_grad_enabled(prev)

        body["step"] = eager_step
    if not body:
        return None
    # the same name: the profiler's "Optimizer.step#Adam.step" and the repr stay the same
    return type(
        cls.__name__, (cls,), {**body, "__module__": cls.__module__, "__qualname__": cls.__qualname__}
    )


def fit(
    model,
    train_step: Callable,
    val_loss: Callable,
    batches: Callable,
    epochs: int,
    patience: int,
    lr: float,
    log=print,
    metric: Callable | None = None,
    select_on_metric: bool = False,
) -> dict:
    """Adam + early stopping on validation loss (or on the validation metric, higher is better, when
    ``select_on_metric``: steadier when the loss spikes); restores the best weights."""
    import copy

    import torch

    opt = optimizer(torch.optim.Adam, model.parameters(), lr=lr)
    # cosine decay: the last epochs are small steps, so the chosen weights are not a lucky spike
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    best, best_state, bad = math.inf, None, 0
    hist = []
    for epoch in range(1, epochs + 1):
        t = time.perf_counter()
        model.train()
        losses = [train_step(model, opt, b) for b in batches()]
        sched.step()
        model.eval()
        with torch.no_grad():
            vl = float(val_loss(model))
            m = metric(model) if metric else None
        dt = time.perf_counter() - t
        hist.append(
            {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": vl, "metric": m, "seconds": dt}
        )
        log(
            f"  epoch {epoch:>3}/{epochs}  train loss {np.mean(losses):.4f}  val loss {vl:.4f}"
            + (f"  val metric {m:.4f}" if m is not None else "")
            + f"  ({dt:.1f}s)"
        )
        score = -m if (select_on_metric and m is not None) else vl
        if score < best - 1e-5:
            best, best_state, bad = score, copy.deepcopy(model.state_dict()), 0
        else:
            bad += 1
            if bad >= patience:
                log(f"  early stop: no improvement for {patience} epochs")
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return {"epochs": hist, "best_val_loss": best}


def stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def confusion(y: np.ndarray, p: np.ndarray, k: int) -> np.ndarray:
    m = np.zeros((k, k), dtype=np.int64)
    np.add.at(m, (y, p), 1)
    return m


def f1_per_class(cm: np.ndarray) -> list[float]:
    out = []
    for i in range(cm.shape[0]):
        tp = cm[i, i]
        prec = tp / cm[:, i].sum() if cm[:, i].sum() else 0.0
        rec = tp / cm[i, :].sum() if cm[i, :].sum() else 0.0
        out.append(float(2 * prec * rec / (prec + rec)) if prec + rec else 0.0)
    return out


def auroc(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the ROC curve (rank statistic, ties averaged)."""
    y = np.asarray(y).astype(bool)
    pos, neg = y.sum(), (~y).sum()
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    ranks[order] = np.arange(1, len(s) + 1)
    # average ranks of ties
    ss = np.asarray(s)[order]
    i = 0
    while i < len(ss):
        j = i
        while j + 1 < len(ss) and ss[j + 1] == ss[i]:
            j += 1
        if j > i:
            ranks[order[i : j + 1]] = (i + j + 2) / 2
        i = j + 1
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def roc_points(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-np.asarray(s))
    y = np.asarray(y).astype(bool)[order]
    tps, fps = np.cumsum(y), np.cumsum(~y)
    return fps / max(1, (~y).sum()), tps / max(1, y.sum())


def pr_points(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-np.asarray(s))
    y = np.asarray(y).astype(bool)[order]
    tps = np.cumsum(y)
    prec = tps / np.arange(1, len(y) + 1)
    rec = tps / max(1, y.sum())
    return rec, prec


def plot_curve(path, xs, ys, title: str, xlabel: str, ylabel: str, diagonal: bool = False) -> None:
    """A small line plot as PNG, drawn with OpenCV (matplotlib is not a dependency)."""
    import cv2

    w, h, m = 420, 360, 50
    img = np.full((h, w, 3), 255, np.uint8)
    cv2.rectangle(img, (m, 20), (w - 20, h - m), (0, 0, 0), 1)
    for v in (0.25, 0.5, 0.75):
        x = int(m + v * (w - 20 - m))
        y = int(h - m - v * (h - m - 20))
        cv2.line(img, (x, 20), (x, h - m), (225, 225, 225), 1)
        cv2.line(img, (m, y), (w - 20, y), (225, 225, 225), 1)
    if diagonal:
        cv2.line(img, (m, h - m), (w - 20, 20), (180, 180, 180), 1)
    pts = np.stack([m + np.clip(xs, 0, 1) * (w - 20 - m), h - m - np.clip(ys, 0, 1) * (h - m - 20)], 1)
    cv2.polylines(img, [pts.astype(np.int32)], False, (200, 80, 0), 2, cv2.LINE_AA)
    cv2.putText(img, title, (m, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, xlabel, (w // 2 - 20, h - 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, ylabel, (4, h // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    for v in (0, 0.5, 1):
        cv2.putText(
            img,
            f"{v:g}",
            (int(m + v * (w - 20 - m)) - 6, h - m + 16),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.35,
            (0, 0, 0),
            1,
        )
        cv2.putText(
            img,
            f"{v:g}",
            (m - 24, int(h - m - v * (h - m - 20)) + 4),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.35,
            (0, 0, 0),
            1,
        )
    cv2.imwrite(str(path), img)


def plot_confusion(path, cm: np.ndarray, labels: list[str], title: str) -> None:
    import cv2

    k = len(labels)
    cell, m = 56, 110
    w, h = m + k * cell + 10, m + k * cell + 10
    img = np.full((h, w, 3), 255, np.uint8)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    for i in range(k):
        for j in range(k):
            v = norm[i, j]
            color = (
                (int(255 - 200 * v), int(255 - 120 * v), 255)
                if i != j
                else (int(255 - 150 * v), 255, int(255 - 150 * v))
            )
            x0, y0 = m + j * cell, m + i * cell
            cv2.rectangle(img, (x0, y0), (x0 + cell, y0 + cell), color, -1)
            cv2.rectangle(img, (x0, y0), (x0 + cell, y0 + cell), (160, 160, 160), 1)
            cv2.putText(
                img, str(int(cm[i, j])), (x0 + 8, y0 + 32), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1
            )
        cv2.putText(img, labels[i][:12], (4, m + i * cell + 32), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1)
        cv2.putText(
            img, labels[i][:7], (m + i * cell + 2, m - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 0, 0), 1
        )
    cv2.putText(
        img,
        title + " (rows: truth, columns: predicted)",
        (4, 16),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.4,
        (0, 0, 0),
        1,
    )
    cv2.imwrite(str(path), img)
