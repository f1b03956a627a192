"""``edge-agent baseline status|relearn PIPELINE CONFIG``: on the agent's data folder.

``status`` reads ``<data_dir>/baseline/<pipeline>.json`` (what the running agent last saved: its
state, progress, date, threshold); ``relearn`` leaves a request beside it that the running agent
takes at its next window (or at its next start), recording a ``baseline_relearn`` event.
"""

from __future__ import annotations

import json
import sys
import time

from edge_agent.maintenance.baseline import atomic_write_json, baseline_path, relearn_path


def _when(t) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t)) if t else "-"


def baseline_main(args, load) -> int:
    cfg = load(args.config)
    if cfg is None:
        return 1
    pipes = {p.name: p for p in cfg.pipelines}
    p = pipes.get(args.pipeline)
    if p is None or p.baseline is None:
        have = sorted(n for n, q in pipes.items() if q.baseline is not None)
        print(f"{args.config}: pipeline {args.pipeline!r} has no baseline; pipelines with one: {have or 'none'} "
              "(add `baseline:` to a signal pipeline, see docs/maintenance.md)", file=sys.stderr)
        return 1
    path = baseline_path(cfg.data_dir, args.pipeline)
    if args.action == "relearn":
        req = relearn_path(cfg.data_dir, args.pipeline)
        atomic_write_json(req, {"reason": args.reason, "asked_at": time.time()})
        print(f"relearn asked for pipeline {args.pipeline}: the agent starts learning anew at its next window "
              f"({req})")
        return 0
    if not path.is_file():
        print(f"pipeline {args.pipeline}: no baseline saved yet in {path.parent} (the agent has not run it, or has "
              "seen fewer than its first 10-20 windows)")
        return 0
    d = json.loads(path.read_text())
    d.pop("rows", None)
    d.pop("speeds", None)
    n = d.get("windows", 0)
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    if d["state"] == "learning":
        print(f"pipeline {args.pipeline}: learning since {_when(d['started_at'])}: {n}/{d['target_windows']} "
              f"windows ({100 * min(1, n / d['target_windows']):.0f} %)" + (f" or {d['duration_s']:g} s"
                                                                         if d.get("duration_s") else ""))
    else:
        print(f"pipeline {args.pipeline}: ready, learned {_when(d['learned_at'])} on {n} windows; threshold "
              f"{d['threshold']:.3f} at a false-alarm rate of {d['false_alarm_rate']} per window "
              f"({d['confirm_windows']} in a row); speed bands {sorted(d['bands'])}")
    if relearn_path(cfg.data_dir, args.pipeline).exists():
        print("  a relearn is pending (taken at the next window)")
    return 0


def add_parser(sub) -> None:
    b = sub.add_parser("baseline", help="a signal pipeline's per-asset baseline: status, relearn")
    b.add_argument("action", choices=["status", "relearn"])
    b.add_argument("pipeline")
    b.add_argument("config")
    b.add_argument("--reason", default="asked from the command line")
    b.add_argument("--json", action="store_true")
