"""False alarms a machine-day and fault detection on machine kinds no generator here made before.

Machines from ``bench/_unseen_machines.py`` (a reciprocating compressor, a screw compressor, a belt
drive, a machine-tool spindle, a conveyor at 25.6 kHz, a pump read through an 8-bit ADC with a DC offset
and clipping knocks, a fan beside a loud neighbour, a gearbox following the day's ambient) go through
the agent's own code for a maintenance pipeline with ``baseline:`` (docs/maintenance.md, "Offline, in
Python"): the sensor rules (``edge_agent.maintenance.sensor.check``) on the raw samples, the agent's
resampling to the model's 10 kHz where the sensor is faster, then ``Baseline.process`` with the
config's defaults (1e-4 false-alarm rate, 2 windows to confirm, ISO zone D), the speed tag and the
temperature tag where the kind has them, and the bearing's geometry.

Per machine: commissioning for one hour at one window per 10 s (360 windows), then healthy running for
``--days`` at one window per 90 s (what a machine-day of false alarms is counted on), then each fault
grown over 12 h (one window per 180 s) from the baseline as it stood at the end of the healthy days.
An alarm is a window whose verdict is NG (the baseline's confirmed alarm or the ISO rule); an episode
is a run of NG windows (UNSURE windows neither start nor end one). Reported: episodes a machine-day and
NG hours a day on the healthy machine, UNSURE shares (sensor faults, speeds not commissioned, stops),
and per fault whether and how long before the run's end it was alarmed, and the name given.

    python -m bench.maintenance_unseen_bench [--seeds 1 2] [--days 1] [--kinds recip screw ...] [--json out]
        [--state-tags spindle screw conveyor recip] [--outlier-mad 0]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from bench._machine import machine, machine_line
from bench._unseen_machines import FAULTS, KINDS, MACHINES, STATE_KINDS
from edge_agent.maintenance import sensor
from edge_agent.maintenance.settings import BaselineSettings, BearingSettings, ProcessState
from edge_agent.maintenance.states import build_baseline
from model_packager.condition import resample, resample_plan

FS_MODEL, N_MODEL = 10000.0, 2048
COMMISSION_S, COMMISSION_HOP_S = 3600.0, 10.0
HEALTHY_HOP_S = 90.0
FAULT_S, FAULT_HOP_S = 12 * 3600.0, 180.0


# the process states the bench's state tags name (``--state-tags``): their values as each kind gives them
STATES = {
    "spindle": [ProcessState(name="idle", max=0.5), ProcessState(name="cutting", min=0.5)],
    "screw": [ProcessState(name="unloaded", max=0.5), ProcessState(name="loaded", min=0.5)],
    "conveyor": [ProcessState(name="empty", max=0.5), ProcessState(name="loaded", min=0.5)],
    "recip": None,  # the unloader's step 0, 1, 2: each value a state
}


def settings(m, commission_s: float = COMMISSION_S, state_tag: bool = False, **extra) -> BaselineSettings:
    b = m.bearing
    return BaselineSettings(
        **extra,
        **({"state_tag": "State", "states": STATES[m.name]} if state_tag else {}),
        windows=int(commission_s / COMMISSION_HOP_S),
        speed_tag="Speed" if m.speed_tag else None,
        temperature_tag="Temp" if m.temperature_tag else None,
        bearing=BearingSettings(
            n_elements=b.n_elements,
            ball_d_mm=b.ball_d_mm,
            pitch_d_mm=b.pitch_d_mm,
            contact_angle_deg=b.contact_angle_deg,
        ),
        iso_class=m.iso_class,
    )


class Judge:
    """One window as the agent's maintenance pipeline takes it: sensor rules, resampling, baseline."""

    def __init__(self, m, commission_s: float = COMMISSION_S, state_tag: bool = False, **extra) -> None:
        self.m = m
        self.plan = resample_plan(m.fs, FS_MODEL)
        self.now = 0.0  # the machine's time (a state learned for state_learn_s counts it)
        self.b = build_baseline(
            settings(m, commission_s, state_tag, **extra), FS_MODEL, N_MODEL, clock=lambda: self.now
        )

    def __call__(self, x: np.ndarray, scalars: dict, t: float | None = None) -> tuple[str, str]:
        if t is not None:
            self.now = t
        f = sensor.check(x)
        if f is not None:
            return "UNSURE", f"sensor:{f.kind}"
        if self.plan != (1, 1):
            x = resample(x, *self.plan, N_MODEL)
        v = self.b.process(x, scalars)
        if v.alarm or v.iso_alarm:
            return "NG", (v.fault or "iso") if v.alarm else "iso"
        if v.not_learned:
            return "UNSURE", "state not learned"
        if v.state != "ready":
            return "UNSURE", "learning"
        if v.sensor_kind:
            return "UNSURE", f"sensor:{v.sensor_kind}"
        if v.stopped:
            return "UNSURE", "stopped"
        if v.extrapolated:
            return "UNSURE", "speed not commissioned"
        return "OK", ""


def episodes(verdicts: list[str]) -> int:
    n, inside = 0, False
    for v in verdicts:
        if v == "UNSURE":
            continue
        if v == "NG" and not inside:
            n += 1
        inside = v == "NG"
    return n


def run(
    kind: str, seed: int, days: float, commission_s: float = COMMISSION_S, state_kinds: tuple = (), **extra
) -> dict:
    m = MACHINES[kind](seed)
    rng = np.random.default_rng(seed + 7)
    j = Judge(m, commission_s, kind in state_kinds, **extra)
    t = 0.0
    while t < commission_s:
        x, sc = m.window(t, rng)
        j(x, sc, t)
        t += COMMISSION_HOP_S
    healthy: list[tuple[str, str]] = []
    end = commission_s + days * 86400
    while t < end:
        x, sc = m.window(t, rng)
        healthy.append(j(x, sc, t))
        t += HEALTHY_HOP_S
    verdicts = [v for v, _ in healthy]
    why: dict[str, int] = {}
    for v, r in healthy:
        if v != "OK":
            key = f"{v} {r}"
            why[key] = why.get(key, 0) + 1
    faults = {}
    for fault in FAULTS:
        jf = copy.deepcopy(j)
        n = int(FAULT_S / FAULT_HOP_S)
        frng = np.random.default_rng(seed * 100 + FAULTS.index(fault))
        first, name, got = None, None, []
        for i in range(n):
            sev = ((i + 1) / n) ** 1.5
            x, sc = m.window(t + i * FAULT_HOP_S, frng, fault, sev)
            v, r = jf(x, sc, t + i * FAULT_HOP_S)
            got.append(v)
            if v == "NG" and first is None:
                first, name = i, r
        faults[fault] = {
            "lead_h": None if first is None else round((n - first) * FAULT_HOP_S / 3600, 2),
            "sev_at_alarm": None if first is None else round(((first + 1) / n) ** 1.5, 3),
            "named": name,
            "unsure_share": round(got.count("UNSURE") / n, 3),
        }
    return {
        "kind": kind,
        "seed": seed,
        "speed_tag": m.speed_tag,
        "state_tag": kind in state_kinds,
        "rpm": round(float(getattr(m, "rpm", 0.0)), 1),
        "speed_learned_rpm": None if j.b.speed_hz is None else round(j.b.speed_hz * 60, 1),
        "orders": j.b.orders,
        "days": days,
        "episodes_per_day": round(episodes(verdicts) / days, 2),
        "ng_hours_per_day": round(verdicts.count("NG") * HEALTHY_HOP_S / 3600 / days, 2),
        "unsure_share": round(verdicts.count("UNSURE") / len(verdicts), 3),
        "not_ok": why,
        "faults": faults,
    }


def _run(args: tuple) -> dict:
    kind, seed, days, commission_s, state_kinds, extra = args
    return run(kind, seed, days, commission_s, state_kinds, **extra)


def table(rows: list[dict]) -> str:
    out = [
        "| machine | seed | speed (found) | alarms/day | NG h/day | UNSURE | why not OK (windows) | "
        + " | ".join(f"{f} lead h (name)" for f in FAULTS)
        + " |",
        "| --- | --- | --- | --- | --- | --- | --- | " + " | ".join("---" for _ in FAULTS) + " |",
    ]
    for r in rows:
        found = ("tag" if r["speed_tag"] else f"{r['speed_learned_rpm']}") + (
            ", state tag" if r.get("state_tag") else ""
        )
        cells = []
        for f in FAULTS:
            d = r["faults"][f]
            cells.append("missed" if d["lead_h"] is None else f"{d['lead_h']} ({d['named']})")
        why = ", ".join(f"{k}: {v}" for k, v in sorted(r["not_ok"].items(), key=lambda kv: -kv[1])[:3])
        out.append(
            f"| {r['kind']} | {r['seed']} | {r['rpm']:.0f} ({found}{'' if r['orders'] else ', no orders'}) | "
            f"{r['episodes_per_day']} | {r['ng_hours_per_day']} | {r['unsure_share']:.1%} | {why or '-'} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--days", type=float, default=1.0)
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--commission-h", type=float, default=COMMISSION_S / 3600, help="commissioning, hours")
    p.add_argument(
        "--state-tags",
        nargs="*",
        default=["spindle"],
        choices=STATE_KINDS,
        help="kinds given a baseline.state_tag (their process state); none: --state-tags alone",
    )
    p.add_argument("--outlier-mad", type=float, default=4.0, help="baseline.outlier_mad; 0: none left out")
    p.add_argument("--json", help="also write the JSON here")
    p.add_argument("--out", default="bench/out")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    extra = {"outlier_mad": a.outlier_mad or None}
    jobs = [
        (k, s, a.days, a.commission_h * 3600, tuple(a.state_tags), extra) for s in a.seeds for k in a.kinds
    ]
    with ProcessPoolExecutor(a.workers) as ex:
        rows = list(ex.map(_run, jobs))
    res = {"machine": machine(), "seconds": round(time.perf_counter() - t0, 1), "machines": rows}
    eps = [r["episodes_per_day"] for r in rows]
    res["median_alarms_per_day"] = float(np.median(eps))
    res["total_alarms_per_machine_day"] = round(sum(eps) / len(eps), 2)
    leads = [d["lead_h"] for r in rows for d in r["faults"].values()]
    res["faults_alarmed"] = f"{sum(x is not None for x in leads)}/{len(leads)}"
    res["median_lead_h"] = float(np.median([x for x in leads if x is not None])) if any(leads) else None
    text = json.dumps(res, indent=1, default=str)
    if a.json:
        Path(a.json).write_text(text)
    summary = (
        f"Healthy: {res['total_alarms_per_machine_day']} alarms a machine-day (median {res['median_alarms_per_day']}"
        f" over {len(rows)} machines, {a.days:g} day each); faults alarmed {res['faults_alarmed']}, median lead"
        f" {res['median_lead_h']} h of 12."
    )
    md = "\n".join(
        [
            "### Maintenance baseline on machine kinds no generator here made (`bench/maintenance_unseen_bench.py`)",
            "",
            f"Seeds {' '.join(map(str, a.seeds))}; {res['seconds']} s.",
            "",
            machine_line(),
            "",
            table(rows),
            "",
            summary,
        ]
    )
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "maintenance_unseen_bench.json").write_text(text)
    (out / "maintenance_unseen_bench.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
