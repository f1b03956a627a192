"""Remaining life: "not enough evidence" while the index is flat, monotone within a run, reset by a
repair, the run-to-failure prior from the package's manifest, and better than the naive constant and
the linear trend on runs the prior was not fitted on (made here, not by the bench's generator)."""

from __future__ import annotations

import argparse
import types

import numpy as np
import pytest

from edge_agent.maintenance.baseline import repaired_path
from edge_agent.maintenance.cli import baseline_main
from edge_agent.maintenance.life import NOT_ENOUGH, LifeTrend
from edge_agent.maintenance.monitor import Monitor
from edge_agent.maintenance.settings import BaselineSettings
from edge_agent.types import Result, Window
from model_packager.life import LifeRun, fit_life_prior
from model_packager.manifest import LifePrior, Manifest
from tests.support.life_runs import ONSET, degradation_runs
from tests.support.models import SIGNAL_RATE_HZ, SIGNAL_WINDOW, signal_spec


def test_a_flat_index_says_not_enough_evidence_even_when_high_and_anomalous():
    prior = LifePrior(durations_s=[3600, 7200, 10800], failure_levels=[6.0, 10.0])
    rng = np.random.default_rng(1)
    for lt in (LifeTrend(prior=prior), LifeTrend(failure_level=8.0)):
        healthy = [lt.update(60.0 * i, 1.0 + 0.05 * rng.normal(), False) for i in range(50)]
        step = [
            lt.update(60.0 * (50 + i), 4.0 + 0.1 * rng.normal(), True) for i in range(100)
        ]  # a step, no trend
        assert all(e.state == NOT_ENOUGH and e.remaining is None for e in healthy + step)
        assert step[-1].basis == ("history+trend" if lt.prior else "trend only")


def test_the_answer_never_rises_within_a_run_and_a_reset_starts_a_new_run():
    prior = fit_life_prior(degradation_runs(3, 8))
    run = degradation_runs(4, 1)[0]
    lt = LifeTrend(prior=prior)
    est = [lt.update(t, h, a) for t, h, a in zip(run.t, run.h, run.anomalous, strict=True)]
    given = [e for e in est if e.remaining is not None]
    assert len(given) > 0.5 * len(est) and all(e.state == "estimate" for e in given)
    rem = [e.remaining for e in given]
    assert all(b <= a for a, b in zip(rem, rem[1:], strict=False))
    assert all(e.low <= e.remaining <= e.high for e in given)
    lt.reset()  # a repair
    assert lt.update(run.t[-1] + 60, 1.0, False).state == NOT_ENOUGH and lt.last is None


def test_beats_the_constant_and_the_linear_trend_on_runs_it_was_not_fitted_on():
    train, test = degradation_runs(10, 12), degradation_runs(20, 8)
    prior = fit_life_prior(train)
    level = float(np.median([np.median(r.h[-5:]) for r in train]))
    const = float(np.mean([r.t[-1] - r.t[k] for r in train for k in range(len(r.t)) if r.h[k] > ONSET]))
    err = {"estimate": [], "constant": [], "linear": []}
    for r in test:
        lt = LifeTrend(prior=prior)
        for k in range(len(r.t)):
            e = lt.update(r.t[k], r.h[k], r.anomalous[k])
            if e.remaining is None:
                continue
            truth = r.t[-1] - r.t[k]
            b1, b0 = np.polyfit(r.t[: k + 1], r.h[: k + 1], 1)
            lin = np.clip((level - (b0 + b1 * r.t[k])) / b1, 0, 10 * const) if b1 > 0 else const
            for name, v in (("estimate", e.remaining), ("constant", const), ("linear", lin)):
                err[name].append(abs(v - truth))
    mae = {k: float(np.mean(v)) for k, v in err.items()}
    assert mae["estimate"] < 0.8 * mae["constant"] and mae["estimate"] < mae["linear"], mae


def test_the_trend_earns_weight_where_failure_levels_agree():
    varied = fit_life_prior(degradation_runs(30, 8))
    consistent = fit_life_prior(degradation_runs(30, 8, level_spread=(0.9, 1.1)))
    assert consistent.trend_weight > varied.trend_weight


def test_a_prior_needs_runs_that_reached_an_onset_and_a_declared_one_sensible_numbers():
    flat = [LifeRun(np.arange(50.0), np.ones(50), np.zeros(50, bool)) for _ in range(3)]
    with pytest.raises(ValueError, match="need at least 2"):
        fit_life_prior(flat)
    with pytest.raises(ValueError, match="failure_levels > 1"):
        LifePrior(durations_s=[10.0], failure_levels=[0.5])
    with pytest.raises(ValueError, match="life_after_alarm_s is \\[mean, sd\\]"):
        BaselineSettings(life_after_alarm_s=(0.0, 5.0))


class _Slot:
    def __init__(self, manifest) -> None:
        self.manifest = manifest


def test_the_package_prior_is_used_and_a_repair_from_the_command_line_resets_remaining_life(tmp_path):
    prior = fit_life_prior(degradation_runs(3, 6), source="historian runs")
    manifest = Manifest.model_validate({**signal_spec(), "life_prior": prior.model_dump()})
    assert (
        Manifest.model_validate_json(manifest.model_dump_json()).life_prior == prior
    )  # travels in the manifest
    events = []
    mon = Monitor(BaselineSettings(windows=20), _Slot(manifest), "health", tmp_path, events.append)
    st = mon.status()["life"]
    assert st["basis"] == "history+trend" and st["prior"]["source"] == "historian runs"
    bare = Monitor(
        BaselineSettings(windows=20), _Slot(Manifest.model_validate(signal_spec())), "h2", None, None
    )
    assert bare.status()["life"] == {"basis": "trend only", "prior": None}

    rng = np.random.default_rng(0)
    t = np.arange(SIGNAL_WINDOW) / SIGNAL_RATE_HZ

    def wave(seq):
        return Window(
            "plc",
            seq,
            seq * 10.0,
            seq * 10.0 + 0.2,
            0.05 * np.sin(2 * np.pi * 25 * t) + 0.02 * rng.normal(size=SIGNAL_WINDOW),
        )

    for i in range(20):
        mon.process(wave(i))
    assert mon.baseline.state == "ready"
    run = degradation_runs(4, 1)[0]
    for tt, h, a in zip(run.t, run.h, run.anomalous, strict=True):  # a fault's run, fed to the trend
        mon.life.update(tt, h, a)
    assert mon.life.last is not None
    cfg = types.SimpleNamespace(
        data_dir=tmp_path, pipelines=[types.SimpleNamespace(name="health", baseline=True)]
    )
    args = argparse.Namespace(
        action="repaired", pipeline="health", config="agent.yaml", reason="bearing replaced", json=False
    )
    assert baseline_main(args, lambda _: cfg) == 0
    assert repaired_path(tmp_path, "health").exists()
    v = mon.process(wave(21))
    assert mon.life.last is None and mon.life.onset is None and not repaired_path(tmp_path, "health").exists()
    assert any(e["kind"] == "life_reset" and e["reason"] == "bearing replaced" for e in events)
    res = Result("health", "plc", 21, 0.0, "machine-health", "1.0.0", "onnxruntime", "OK", 0.1)
    mon.apply(v, res)
    assert res.remaining_life is None and res.outputs["baseline"]["life"]["state"] == NOT_ENOUGH


def test_the_cloud_fits_the_prior_on_a_datasets_runs_to_failure_as_an_agent_would_see_them():
    from bench._bearing_signals import Machine
    from cloud_trainer.train.data import FAULTS, VibrationData
    from cloud_trainer.train.life import prior_from_dataset

    waves, fault, rul, run_id, t_s = [], [], [], [], []
    for r, (seed, kind, healthy) in enumerate(
        [(1, "bearing_outer", 24), (2, "imbalance", 24), (3, "misalignment", 5)]
    ):
        m = Machine(seed, rpm=1500.0 + 300 * r)
        sev = np.r_[np.zeros(healthy), np.linspace(0.05, 1.0, 24)]
        for k, s in enumerate(sev):
            waves.append(m.window(s, kind if s > 0 else "healthy"))
            fault.append(FAULTS.index(kind) if s > 0 else 0)
            t_s.append(10.0 * k)
            rul.append(10.0 * (len(sev) - 1 - k))
            run_id.append(r)
    data = VibrationData(
        np.asarray(waves, np.float32),
        np.asarray(fault),
        np.where(np.asarray(fault) == 0, 1.0, 0.5),  # as the historian import writes it
        np.asarray(rul),
        np.asarray(run_id),
        np.asarray(t_s),
        2048,
        10000.0,
        "sha256:test",
    )
    said = []
    d = prior_from_dataset(data, said.append)
    prior = LifePrior.model_validate(d)
    assert prior.runs == 2 and len(prior.durations_s) == 2  # the run with 5 healthy windows is left out
    assert all(0 < x <= 240 for x in prior.durations_s) and min(prior.failure_levels) > 2
    assert "2 runs to failure (1 without a healthy start left out)" in said[0]
    assert Manifest.model_validate({**signal_spec(), "life_prior": d}).life_prior == prior
