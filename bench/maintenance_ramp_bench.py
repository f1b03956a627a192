"""Healthy machines whose speed changes, and faults at a steady speed: the maintenance baseline's alarms.

Machines from ``bench/_ramp_machines.py`` (a mains motor, a gearbox, a VFD fan, a pump; each window can ramp
its shaft speed, a linear chirp) go through the agent's own code for a maintenance pipeline with
``baseline:``: the sensor rules (``edge_agent.maintenance.sensor.check``) on the window, then the
baseline (``states.build_baseline``) with the config's defaults (1e-4 false-alarm rate, 2 windows to
confirm), the bearing's geometry and, with ``--tag``, the speed tag (its value at the window's end, as a
pipeline's latest value). Windows come back to back (each window's first and last sample times are handed
over, as the pipeline does).

Per machine: commissioning over 360 windows whose load (and so speed) moves slowly over its middle
range (30-70 %); then 480 healthy windows: the speed held, and now and then (1 window in 10) a new load
anywhere in 0-100 % is reached by a ramp of +5 % or -8 % a window (the last window of a ramp less);
then each fault grown over 120 windows at a steady 50 % load from the baseline as commissioned. An alarm
is an episode of NG windows (UNSURE windows neither start nor end one). Reported per kind, medians over
the seeds: alarm episodes a 1,000 healthy windows, NG windows, UNSURE windows by reason (the speed
changing, a speed not commissioned), and per fault the window of the 120 its first NG came at.

    python -m bench.maintenance_ramp_bench [--seeds 1 2 3 4] [--kinds motor gearbox fan pump] [--no-tag]

To compare with a former version, from outside both checkouts: ``PYTHONPATH=<former>:<this> python -m
bench.maintenance_ramp_bench`` (the generator is this one's, the baseline the former's).
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import time

import numpy as np

from bench._ramp_machines import FAULTS, KINDS
from bench.maintenance_unseen_bench import episodes  # an alarm: a run of NG windows, UNSURE ones skipped
from edge_agent.maintenance import sensor
from edge_agent.maintenance.baseline import Baseline
from edge_agent.maintenance.settings import BaselineSettings, BearingSettings
from edge_agent.maintenance.states import build_baseline

SPANS = "span" in inspect.signature(Baseline.process).parameters  # a former version takes no times
N_COMMISSION, N_HEALTHY, N_FAULT = 360, 480, 120


def judge(b, x: np.ndarray, scalars: dict, span: tuple[float, float]) -> tuple[str, str]:
    f = sensor.check(x)
    if f is not None:
        return "UNSURE", f"sensor {f.kind}"
    v = b.process(x, scalars, span=span) if SPANS else b.process(x, scalars)
    if v.alarm or v.iso_alarm:
        return "NG", v.fault or "iso"
    if v.state != "ready":
        return "UNSURE", "learning"
    if v.sensor_kind:
        return "UNSURE", f"sensor {v.sensor_kind}"
    if v.stopped:
        return "UNSURE", "stopped"
    if getattr(v, "unsteady", None):
        return "UNSURE", "speed changing"
    if v.extrapolated:
        return "UNSURE", "speed not commissioned"
    return "OK", ""


def run(kind: str, seed: int, tag: bool) -> dict:
    m = KINDS[kind](seed)
    rng = np.random.default_rng(seed)
    s = BaselineSettings(
        windows=N_COMMISSION,
        speed_tag="Speed" if tag else None,
        bearing=BearingSettings(n_elements=m.bear[0], ball_d_mm=m.bear[1], pitch_d_mm=m.bear[2]),
    )
    b = build_baseline(s, m.fs, m.n, clock=lambda: 0.0)
    seq = 0

    def window(load: float, ramp: float = 0.0, f_at=None, fault: str = "healthy", sev: float = 0.0):
        nonlocal seq
        x, sc = m.window(rng, load, fault, sev, ramp, f_at)
        t0 = seq * m.n / m.fs
        seq += 1
        return judge(b, x, sc if tag else {}, (t0, t0 + (m.n - 1) / m.fs))

    for i in range(N_COMMISSION):
        window(0.3 + 0.4 * (0.5 + 0.5 * np.sin(i / 40)))
    commissioned = copy.deepcopy(b)
    verdicts: list[str] = []
    why: dict[str, int] = {}
    load, f = 0.5, m.speed_hz(0.5)
    while len(verdicts) < N_HEALTHY:
        steps = [(0.0, f)]
        if rng.uniform() < 0.1:  # a new load, reached by a ramp
            load = float(rng.uniform(0, 1))
            target, steps = m.speed_hz(load), []
            while abs(target / f - 1) > 1e-9:
                r = float(np.clip(target / f - 1, -0.08, 0.05))
                steps.append((r, f))
                f *= 1 + r
            f = target
        for r, at in steps[: N_HEALTHY - len(verdicts)]:
            v, w = window(load, r, at)
            verdicts.append(v)
            if v != "OK":
                why[f"{v} {w}".strip()] = why.get(f"{v} {w}".strip(), 0) + 1
    out = {
        "kind": kind,
        "seed": seed,
        "tag": tag,
        "episodes": episodes(verdicts),
        "ng": verdicts.count("NG"),
        "why": why,
    }
    for fault in FAULTS[kind]:
        b = copy.deepcopy(commissioned)
        first = None
        for i in range(N_FAULT):
            v, _ = window(0.5, 0.0, m.speed_hz(0.5), fault, ((i + 1) / N_FAULT) ** 1.5)
            if v == "NG" and first is None:
                first = i
        out[fault] = first
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4])
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    p.add_argument("--no-tag", action="store_true", help="no speed tag: the speed found in the spectrum")
    p.add_argument("--json", help="also write the runs here")
    a = p.parse_args(argv)
    from bench._machine import machine, machine_line

    print(machine_line(), flush=True)
    t0 = time.perf_counter()
    rows = [run(k, s, not a.no_tag) for k in a.kinds for s in a.seeds]
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"machine": machine(), "rows": rows}, fh, indent=1)
    print(
        f"speed tag: {not a.no_tag}; baseline takes window times: {SPANS}; {time.perf_counter() - t0:.0f} s"
    )
    print(
        "| machine | alarms a 1,000 healthy windows (median, each seed) | NG windows | UNSURE: speed changing |"
        " UNSURE: speed not commissioned | faults: first NG window of 120 (median over seeds) |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for k in a.kinds:
        rs = [r for r in rows if r["kind"] == k]
        eps = [round(1000 * r["episodes"] / N_HEALTHY, 1) for r in rs]
        ng = [r["ng"] for r in rs]
        ch = [r["why"].get("UNSURE speed changing", 0) for r in rs]
        nc = [r["why"].get("UNSURE speed not commissioned", 0) for r in rs]
        faults = []
        for fault in FAULTS[k]:
            firsts = [r[fault] for r in rs]
            found = [x for x in firsts if x is not None]
            faults.append(
                f"{fault} {np.median(found) if found else '-'} ({len(found)}/{len(firsts)} alarmed)"
            )
        print(
            f"| {k} | {np.median(eps):g} ({', '.join(map(str, eps))}) | {np.median(ng):g} ({', '.join(map(str, ng))}) | "
            f"{np.median(ch):g} | {np.median(nc):g} | {'; '.join(faults)} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
