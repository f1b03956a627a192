"""A night-commissioned machine through a day shift's load, with and without ``baseline.load_tag``.

Machines from ``bench/_load_machines.py`` (gearboxes and damper-controlled fans whose mesh, blade-pass and
turbulence follow the load; not ``simulators/vibration.py``) go through the agent's sensor rules
(``edge_agent.maintenance.sensor.check``) and ``Baseline.process`` with the config's defaults, a temperature tag
and no speed tag. Commissioning: the night hour 02:00-03:00 (35 % load), one window per 10 s. Then from 06:00 to
06:00 the next day one window a minute (1,440), the day shift's load 40 % -> 90 %, a 45-minute stop at noon.

Cases, per kind and seed, each without the load tag (the former code's behaviour: without ``load_tag`` nothing
changed) and with it (the tag reads the load in %):

- ``healthy``: alarm episodes in the 24 h (an episode: a run of NG windows; UNSURE windows neither start nor end
  one);
- ``outer``, ``imbalance``: the fault grows over the day shift (06:00-22:00) while the load rises (an outer race
  to 0.4 g of impacts; the 1x from 1x to 4x), then holds: the hour of the first baseline alarm after 06:00;
- ``imbalance@35`` with a bad load tag: the machine held at the night's 35 % all day, its 1x growing 1x -> 4x over
  16 h, the tag reading ``true`` (35), ``frozen`` (90 all day, its value before a lost link), ``raw`` (the PLC's
  unscaled count, 27648 at 100 %: 9677) or ``nan``: the hour of the first baseline alarm, and the windows whose
  load the baseline held unreadable.

    python -m bench.maintenance_load_bench [--seeds 0 1 2 3] [--kinds gearbox fan] [--cases ...] [--json F]
        [--faults-tagged-only]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

from bench._load_machines import FS, Machine, N, load_profile
from edge_agent.maintenance.baseline import Baseline
from edge_agent.maintenance.sensor import check as sensor_check
from edge_agent.maintenance.settings import BaselineSettings

H = 3600.0
RAW_FULL_SCALE = 27648.0  # a Siemens analog input's count at 100 %
CASES = ("healthy", "outer", "imbalance", "true", "frozen", "raw", "nan")


def run(kind: str, seed: int, case: str, load_tag: bool) -> dict:
    m = Machine(kind, seed)
    rng = np.random.default_rng(seed + 1000)
    now = [2 * H]
    kw = {"load_tag": "Load"} if load_tag else {}
    b = Baseline(BaselineSettings(temperature_tag="Temp", **kw), FS, N, clock=lambda: now[0])
    t = 0.0
    while t < 2 * H:  # the housing's temperature settled from midnight
        m.housing_temp(t, load_profile(t, rng))
        t += 300
    steady = case in ("true", "frozen", "raw", "nan")

    def load_at(t: float) -> float:
        return load_profile(2 * H, rng) if steady and t >= 24 * H else load_profile(t, rng)

    def tags(t: float, L: float, running: bool) -> dict:
        d = {"_temperature": m.housing_temp(t, L, running)}
        if load_tag:
            read = 100 * L if running else 0.0
            if steady and t >= 24 * H:
                read = {"true": read, "frozen": 90.0, "raw": RAW_FULL_SCALE * L, "nan": math.nan}[case]
            d["_load"] = read
        return d

    t = 2 * H
    while b.state == "learning":
        now[0] = t
        L = load_at(t)
        w = m.window(L)
        if sensor_check(w, shaft_turns=m.speed_hz(L) * N / FS) is None:
            b.process(w, tags(t, L, True), span=(t, t + N / FS))
        t += 10.0
    day0, end = 30 * H, 54 * H
    stop = (36 * H, 36.75 * H)
    t = day0
    episodes = ng = 0
    first: float | None = None
    prev = False
    level_over = unreadable = 0
    while t < end:
        now[0] = t
        L = load_at(t)
        running = not (stop[0] <= t < stop[1])
        frac = min(1.0, (t - day0) / (16 * H))
        if case == "outer":
            w = m.window(L, outer_race=0.4 * frac, running=running)
        elif case == "healthy":
            w = m.window(L, running=running)
        else:
            w = m.window(L, imbalance=1.0 + 3.0 * frac, running=running)
        sc = tags(t, L, running)
        t += 60.0
        if sensor_check(w, shaft_turns=m.speed_hz(L) * N / FS) is not None:
            prev = False
            continue
        v = b.process(w, sc, span=(t - 60.0, t - 60.0 + N / FS))
        level_over += bool(v.level_over and not v.alarm)
        unreadable += v.load_unreadable is not None
        unsure = v.extrapolated or v.external_impulse or v.stopped or (v.level_over and not v.alarm)
        if v.alarm:
            ng += 1
            if not prev:
                episodes += 1
                first = (t - 60.0 - day0) / H if first is None else first
            prev = True
        elif not unsure:
            prev = False
    return {
        "kind": kind,
        "seed": seed,
        "case": case,
        "load_tag": load_tag,
        "episodes": episodes,
        "ng_windows": ng,
        "first_alarm_h": None if first is None else round(first, 2),
        "level_over_unsure": level_over,
        "load_unreadable_windows": unreadable,
        "threshold": round(b.threshold or 0.0, 2),
        "load_span": b.load_span,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--kinds", nargs="+", default=["gearbox", "fan"])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    ap.add_argument("--json", default=None)
    ap.add_argument(
        "--faults-tagged-only", action="store_true", help="the fault cases with the load tag only"
    )
    a = ap.parse_args()
    rows = []
    t0 = time.monotonic()
    for kind in a.kinds:
        for case in a.cases:
            for seed in a.seeds:
                both = case in ("healthy", "true") or (
                    case in ("outer", "imbalance") and not a.faults_tagged_only
                )
                for tag in (False, True) if both else (True,):
                    r = run(kind, seed, case, tag)
                    rows.append(r)
                    print(json.dumps(r), flush=True)
    print(f"# {time.monotonic() - t0:.0f} s", flush=True)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
