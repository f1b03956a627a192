"""``edge-agent baseline status|relearn|repaired PIPELINE CONFIG``: on the agent's data folder.

``status`` reads ``<data_dir>/baseline/<pipeline>.json`` (what the running agent last saved: its
state, progress, date, threshold); ``relearn`` leaves a request beside it that the running agent
takes at its next window (or at its next start), recording a ``baseline_relearn`` event;
``repaired`` does the same for a repair: remaining life starts a new run (a ``life_reset`` event),
the baseline stays (relearn it too when the repair changed the machine's healthy signature).
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

from edge_agent.files import atomic_write_json, why_unread
from edge_agent.maintenance.baseline import baseline_path, read_baseline, relearn_path
from edge_agent.maintenance.states import index_path, state_path
from model_packager.text import undecoded_bytes


def _when(t) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t)) if t else "-"


def _check_pipeline(cfg, pipeline: str) -> None:
    pipes = {p.name: p for p in cfg.pipelines}
    p = pipes.get(pipeline)
    if p is None or p.baseline is None:
        have = sorted(n for n, q in pipes.items() if q.baseline is not None)
        raise ValueError(
            f"pipeline {pipeline!r} has no baseline; pipelines with one: {have or 'none'} (add "
            "`baseline:` to a signal pipeline, see docs/maintenance.md)"
        )


def _check_state(cfg, pipeline: str, state: str) -> None:
    b = next(p.baseline for p in cfg.pipelines if p.name == pipeline)
    if b.state_tag is None:
        raise ValueError(
            f"pipeline {pipeline!r}: --state {state!r}, but its baseline has no state_tag (one baseline for "
            "every state); leave --state out, or give baseline.state_tag (docs/maintenance.md)"
        )
    names = [st.name for st in b.states or ()]
    if names and state not in names:
        raise ValueError(
            f"pipeline {pipeline!r}: no process state {state!r} in baseline.states; states: {names}"
        )
    # without states each whole value is a state, named as the agent names it ('1', not '1.0' nor 'on'):
    # another name was a state no window ever has, learning for good while the real one stayed unjudged
    if not names and not re.fullmatch(r"-?(0|[1-9][0-9]*)", state):
        raise ValueError(
            f"pipeline {pipeline!r}: --state {state!r}: without baseline.states each whole value of state tag "
            f"{b.state_tag!r} is a state, named by its digits ('0', '1', '2'); give one, or name ranges in "
            "baseline.states"
        )


def request_relearn(cfg, pipeline: str, reason: str, state: str | None = None, **extra) -> Path:
    """Leave a relearn request for the pipeline (taken by the running agent at its next window, or at
    start): every process state, or with ``state`` that one (``baseline.state_tag``)."""
    _check_pipeline(cfg, pipeline)
    if state is not None:
        _check_state(cfg, pipeline, state)
        extra = {**extra, "state": state}
    req = relearn_path(cfg.data_dir, pipeline)
    atomic_write_json(req, {"reason": reason, "asked_at": time.time(), **extra})
    return req


def fleet_relearn(cfg, command) -> str:
    """The fleet's ``baseline_relearn`` command (``edge_agent.uplink.commands``): the same request as the CLI's."""
    who = f" by {command.issued_by}" if command.issued_by else ""
    # one process state (``cloud-trainer baseline relearn ... --state NAME``); a state this config does not
    # have is refused (ValueError: the command's failed result, with the states it has)
    state = getattr(command, "process_state", "") or None
    request_relearn(
        cfg,
        command.pipeline,
        f"fleet command {command.id}{who}" + (f": {command.reason}" if command.reason else ""),
        state,
        command=command.id,
    )
    if state is not None:
        return (
            f"relearn requested: process state {state} of pipeline {command.pipeline} starts learning anew at "
            "its next window; the other states stay as learned"
        )
    return f"relearn requested: pipeline {command.pipeline} starts learning anew at its next window"


def fleet_summary(status: dict) -> dict:
    """A baseline's status, short, for the state reports (the fleet's ``baseline status``)."""
    keep = (
        "state",
        "progress",
        "windows",
        "target_windows",
        "started_at",
        "learned_at",
        "threshold",
        "false_alarm_rate",
        "reason",
        "speed_bands",
        "state_tag",  # a baseline per process state: its tag, the states named in the config, those it has
        "state_names",
    )
    out = {k: status[k] for k in keep if k in status}
    if status.get("state_tag"):  # what `cloud-trainer baseline relearn --state` may name
        seen = set(status.get("process_states") or ()) | set(status.get("not_judged") or ())
        out["process_states"] = sorted(seen - {"(none)", "(other)"})
    return out


def _typed(text: str) -> str:
    """``--reason`` as valid text: a byte that is not UTF-8 (a terminal or script in another code page: Latin-1's
    0xFC for 'ü'), which Python hands over as a lone surrogate, written ``\\xfc``. Kept as it was, it reached the
    event and the outbox as a ``"\\udcfc"`` escape, which strict JSON readers (serde_json, jsonb) refuse."""
    return undecoded_bytes(text)


def baseline_main(args, load) -> int:
    cfg = load(args.config)
    if cfg is None:
        return 1
    if isinstance(getattr(args, "reason", None), str):  # relearn and repaired take one; status none
        args.reason = _typed(args.reason)
    if args.action == "relearn":
        try:
            req = request_relearn(cfg, args.pipeline, args.reason, args.state)
        except ValueError as exc:
            print(f"{args.config}: {exc}", file=sys.stderr)
            return 1
        what = f" (process state {args.state})" if args.state else ""
        print(
            f"relearn asked for pipeline {args.pipeline}{what}: the agent starts learning anew at its next "
            f"window ({req})"
        )
        return 0
    try:
        _check_pipeline(cfg, args.pipeline)
    except ValueError as exc:
        print(f"{args.config}: {exc}", file=sys.stderr)
        return 1
    path = baseline_path(cfg.data_dir, args.pipeline)
    # a baseline per process state keeps its index (and no <pipeline>.json): a repair there was refused
    # as "no baseline saved yet", and remaining life ran on from before the repair
    states = getattr(next(p.baseline for p in cfg.pipelines if p.name == args.pipeline), "state_tag", None)
    if args.action == "status" and states and index_path(path).is_file():
        return _states_status(args, path)
    if not (index_path(path) if states else path).is_file():
        print(
            f"pipeline {args.pipeline}: no baseline saved yet in {path.parent} (the agent has not run it, or has "
            "seen fewer than its first 10-20 windows)"
        )
        return 0
    if (
        args.action == "repaired"
    ):  # a saved baseline: the agent scores this pipeline, so it has a life to reset
        return note_repair(cfg, args.pipeline, args.reason)
    d, why = _read_saved(path)
    if d is None:  # as the agent takes it: learned anew
        print(
            f"pipeline {args.pipeline}: {path} is unreadable ({why}); the agent learns the baseline anew when "
            "it next loads it",
            file=sys.stderr,
        )
        return 1
    d.pop("rows", None)
    d.pop("speeds", None)
    n = d.get("windows", 0)
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    if d["state"] == "learning":
        print(
            f"pipeline {args.pipeline}: learning since {_when(d['started_at'])}: {n}/{d['target_windows']} "
            f"windows ({100 * min(1, n / d['target_windows']):.0f} %)"
            + (f" or {d['duration_s']:g} s" if d.get("duration_s") else "")
        )
    else:
        print(
            f"pipeline {args.pipeline}: ready, learned {_when(d['learned_at'])} on {n} windows; threshold "
            f"{d['threshold']:.3f} at a false-alarm rate of {d['false_alarm_rate']} per window "
            f"({d['confirm_windows']} in a row); speed bands {sorted(d['bands'])}"
        )
    if relearn_path(cfg.data_dir, args.pipeline).exists():
        print("  a relearn is pending (taken at the next window)")
    _repair_pending(cfg, args.pipeline)
    return 0


def _read_saved(path: Path) -> tuple[dict | None, str]:
    """A baseline file the agent saved, read bounded as the agent reads it (``read_baseline``): a named pipe
    there waited for ever, a link to ``/dev/zero`` filled the memory, a deep nesting or a damaged file raised
    a traceback. ``(None, why)`` for one that cannot be read or holds no JSON object (``why`` empty: none)."""
    try:
        d = read_baseline(path)
    except FileNotFoundError:
        return None, ""
    except (OSError, ValueError) as exc:
        return None, why_unread(exc)
    if not isinstance(d, dict):
        return None, f"a JSON {type(d).__name__}, not a baseline"
    return d, ""


def _states_status(args, path: Path) -> int:
    """``status`` of a pipeline with a ``state_tag``: commissioning, then each state's baseline."""
    d, why = _read_saved(index_path(path))
    if d is None:  # as the agent takes it: every state commissioned anew
        print(
            f"pipeline {args.pipeline}: {index_path(path)} is unreadable ({why}); the agent commissions every "
            "state anew when it next loads it",
            file=sys.stderr,
        )
        return 1
    per = {}
    for st in d.get("states", []):
        b, why = _read_saved(state_path(path, st))
        if b is None:  # left out, as before; the agent learns that state anew
            if why:
                print(
                    f"  {st}: {state_path(path, st)} is unreadable ({why}); the agent learns this state anew "
                    "when it next loads it",
                    file=sys.stderr,
                )
            continue
        per[st] = b
        for k in ("rows", "speeds", "temps", "floors"):
            per[st].pop(k, None)
    if args.json:
        print(json.dumps({**d, "process_states": per}, indent=2))
        return 0
    if d.get("commissioning"):
        print(
            f"pipeline {args.pipeline}: commissioning since {_when(d['started_at'])}: {d['windows']} windows"
        )
    else:
        print(
            f"pipeline {args.pipeline}: commissioned {_when(d.get('learned_at'))}; a baseline per process state"
        )
    for st, b in sorted(per.items()):
        if st in d.get("learning", {}):
            print(
                f"  {st}: learning ({d['learning'][st]}) since {_when(b['started_at'])}, {b['windows']} windows"
            )
        else:
            print(
                f"  {st}: ready, learned {_when(b['learned_at'])} on {b['windows']} windows; threshold "
                f"{b['threshold']:.3f}; {b.get('outliers', 0)} outlier windows left out"
            )
    for st, n in sorted(d.get("not_judged", {}).items()):
        print(f"  {st}: not learned, {n} windows not judged")
    return 0


def add_parser(sub) -> None:
    b = sub.add_parser("baseline", help="a signal pipeline's per-asset baseline: status, relearn, repaired")
    b.add_argument("action", choices=["status", "relearn", "repaired"])
    b.add_argument("pipeline")
    b.add_argument("config")
    b.add_argument("--reason", default="asked from the command line")
    b.add_argument("--json", action="store_true")
    b.add_argument("--state", help="relearn: only this process state (a baseline with state_tag)")


def note_repair(cfg, pipeline: str, reason: str) -> int:
    """``baseline repaired``: the running agent's remaining life starts a new run at its next window."""
    from edge_agent.maintenance.baseline import repaired_path

    req = repaired_path(cfg.data_dir, pipeline)
    atomic_write_json(req, {"reason": reason, "asked_at": time.time()})
    print(
        f"repair noted for pipeline {pipeline}: remaining life starts a new run at the agent's next window ({req})"
    )
    return 0


def _repair_pending(cfg, pipeline: str) -> None:
    from edge_agent.maintenance.baseline import repaired_path

    if repaired_path(cfg.data_dir, pipeline).exists():
        print("  a repair is noted (remaining life starts anew at the next window)")
