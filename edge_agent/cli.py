"""`edge-agent`: run, validate, status.

edge-agent validate CONFIG      all errors at once, one per line; exit 1 if any, 0 with a summary
    --online                    also ask the live OPC UA servers: every subscribed node exists, every
                                write target exists, is writable and its DataType takes the value;
                                and the MQTT brokers: each client id a source connects with is let in
                                (not while this config's agent runs: the broker would publish its will)
edge-agent run CONFIG           run until SIGTERM/SIGINT (graceful stop); --log-json for JSON logs; with
                                cloud: set, the fleet may give it a config (docs/fleet-control.md)
edge-agent validate --fleet F   a fleet config (no agent:, cloud:, http:), as the cloud checks it
edge-agent status [--url URL]   the running agent's sources, pipelines, models, drops, alarms
edge-agent tags CONFIG          every tag each source produces now: last value, type, quality, age;
                                and whether each tag a pipeline needs is among them
edge-agent baseline status|relearn PIPELINE CONFIG   a signal pipeline's per-asset baseline
edge-agent browse ENDPOINT [NODE]   an OPC UA server's variables: NodeId, path, type, array size,
                                access (r/w) and the default tag (browse name); --security options
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from protocols.redact import escaped

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _JsonFormatter(logging.Formatter):
    def format(self, r: logging.LogRecord) -> str:
        d = {"t": round(r.created, 3), "level": r.levelname.lower(), "logger": r.name, "msg": r.getMessage()}
        if r.exc_info:
            d["exc"] = self.formatException(r.exc_info)
        return json.dumps(d)


class _OneLineFormatter(logging.Formatter):
    """The text log's: each record's line with every character that is not printable written as its escape
    (``protocols.redact.escaped``), its traceback (ours) appended as it is. Messages quote text peers choose (an
    OPC UA server's browse names, which tag its nodes; a drop folder's file names; a library's message quoting a
    server): one holding a line feed forged a whole line of its own (time, level, logger), an ANSI escape drove the
    terminal of whoever tailed the log. The JSON log (``--log-json``) escapes them as JSON does."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escaped(super().formatMessage(record))


def log_handler(json_logs: bool) -> logging.Handler:
    """The handler ``edge-agent`` logs through: to standard error, in JSON lines or text lines."""
    h = logging.StreamHandler()
    h.setFormatter(_JsonFormatter() if json_logs else _OneLineFormatter(LOG_FORMAT))
    return h


def _setup_logging(json_logs: bool, level: str) -> None:
    logging.basicConfig(level=level, handlers=[log_handler(json_logs)])
    for noisy in ("asyncua", "opcua"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _load(path, count: bool = False):
    """The validated config, or None after printing every error (each names the file and field)."""
    from edge_agent.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        if count:
            print(f"{len(exc.errors)} error(s) in {path}", file=sys.stderr)
        return None


def _validate(args) -> int:
    if getattr(args, "fleet", False):  # a fleet config (what the cloud runs before a config rollout)
        from pathlib import Path

        from edge_agent.config import ConfigError, read_config_bytes
        from edge_agent.fleet_config import MAX_BYTES, check_fleet_config

        try:  # never waits on a named pipe, never reads more than a fleet config may hold
            data = read_config_bytes(Path(args.config), MAX_BYTES)
        except ConfigError as exc:
            print(exc.errors[0], file=sys.stderr)
            return 1
        errors = check_fleet_config(data, args.config)
        for line in errors:
            print(line, file=sys.stderr)
        if not errors:
            print(
                f"ok: {args.config}: a valid fleet config (agent:, cloud: and http: come from each agent's file)"
            )
        return 1 if errors else 0
    cfg = _load(args.config, count=True)
    if cfg is None:
        return 1
    from edge_agent.sizing import check_config, threads_warning

    # from the times the last run measured on this gateway (``run`` says it itself), and the threads asked for
    sizing = [w for w in (check_config(cfg), threads_warning(cfg)) if w]
    refused, unused = _package_problems(cfg, args.config)
    for w in [*cfg.warnings, *(f"{args.config}: pipelines: {w}" for w in sizing), *unused]:
        print(f"warning: {w}", file=sys.stderr)
    if refused:  # (the trusted keys cannot be loaded; a slot the agent's start would end on)
        for line in refused:
            print(line, file=sys.stderr)
        print(f"{len(refused)} error(s) in {args.config}", file=sys.stderr)
        return 1
    if getattr(args, "online", False):
        import asyncio

        errors = asyncio.run(_online_errors(cfg, args.config))
        for line in errors:
            print(escaped(line), file=sys.stderr)  # names the server gave may hold control characters
        if errors:
            print(
                f"{len(errors)} error(s) in {args.config} (checked against the live servers)", file=sys.stderr
            )
            return 1
    print(
        f"ok: {args.config}: agent {cfg.agent.id} ({cfg.agent.site}/{cfg.agent.line}); "
        f"{len(cfg.sources)} sources ({', '.join(f'{n}:{s.type}' for n, s in cfg.sources.items())}); "
        f"{len(cfg.models)} model slots; {len(cfg.pipelines)} pipelines; {len(cfg.actions)} actions"
    )
    return 0


def _package_problems(cfg, where) -> tuple[list[str], list[str]]:
    """Each slot's configured package verified as the agent's install verifies it (signature by a trusted key and
    its ``not-after``, every file's size and SHA-256, the graph against the manifest, ``refused_versions``, golden
    tolerances a swap refuses (``tolerance_refusal``); not the golden test, which needs the engines), and the
    package installed in the slot as a start verifies it again (one of such tolerances a start serves, said:
    ``tolerance_unchecked``):
    (errors, warnings). What the agent does then is what its start decides (``start_refusal``): a refused package
    with an installed one that passes is a warning (the slot starts on that one), as is one refused with nothing
    installed or the installed one refused too (the agent starts with the slot failed); a first install the disk
    has no room for ends the agent's start: an error, in the agent's words. So does a slot with no local package
    (``name`` alone) and no installed package that passes, where the data folder exists (run on another machine
    than the gateway, its slots are empty), unless it follows the agent's fleet: a warning, the slot starts failed
    until the fleet's deployment (``no_package_refusal``). Trusted keys that cannot be loaded are an error (every install is
    refused)."""
    from pathlib import Path

    from edge_agent.models.config import VersionPolicy
    from edge_agent.models.select import tolerance_refusal, tolerance_unchecked
    from edge_agent.models.slot import (
        FailedAtStart,
        no_package_refusal,
        not_refused,
        refused_by_config,
        start_refusal,
    )
    from edge_agent.models.store import ModelStore, room_refusal
    from model_packager import PackageError, load_trusted_keys, package_digest, verify_package
    from model_packager.text import printable

    here = Path(cfg.data_dir).is_dir()  # (systemd's StateDirectory= makes it before ExecStartPre)
    slots = {n: m for n, m in cfg.models.items() if m.package or here}
    # no data folder (a new gateway before its unit made it; or agent.data_dir mistyped, or the folder wiped): a
    # start there finds nothing installed in a slot with no local package. Said, not judged (run elsewhere than on
    # the gateway, its slots are empty): validate was silent, and a gateway the fleet had filled started with every
    # such slot failed, its pipelines judging nothing
    nowhere = [
        f"{where}: models.{n}: no data folder at {cfg.data_dir} (agent.data_dir; a new gateway, or a path mistyped "
        f"or wiped?): nothing is installed there: {printable(str(said), 1500)}: {_start_does(said)}"
        for n, m in cfg.models.items()
        if not here and not m.package
        for said in [no_package_refusal(n, m, None, None, fleet=cfg.cloud is not None)]
    ]
    if not slots:
        return [], nowhere
    try:
        trusted = load_trusted_keys([cfg.path(k) for k in cfg.trusted_keys])
    except PackageError as exc:  # (the slots with no local package: said all the same)
        return [f"{where}: trusted_keys: {printable(exc, 600)}"], nowhere
    errors, warnings = [], []
    for name, m in slots.items():
        root = Path(cfg.data_dir) / "models" / name
        installed = rejected = unchecked = None  # (unchecked: the installed package's digest, served so)
        served: str | None = None  # (what validate says of it)
        if root.is_dir():
            store = ModelStore(root, clean=False)  # (read only: a running agent's .part folders are its own)
            installed, _ = store.start_folder()  # what a start serves
            if installed:
                try:
                    opened = not_refused(store.verify(installed, trusted), name, m)
                except PackageError as exc:
                    rejected = str(exc)
                else:  # golden tolerances a swap refuses: the start serves it as installed, saying so
                    if (wide := tolerance_unchecked(opened.manifest)) is not None:
                        unchecked = opened.digest
                        served = (
                            f"{where}: models.{name}: the package installed in {root}, {installed} "
                            f"({opened.manifest.package_id}): {printable(wide, 600)}"
                        )
                        warnings.append(served)
        if not m.package:
            if not installed or rejected is not None:
                said = no_package_refusal(name, m, installed or None, rejected, fleet=cfg.cloud is not None)
                line = f"{where}: models.{name}: {printable(str(said), 1500)}"
                if isinstance(said, FailedAtStart):
                    warnings.append(f"{line}: {_start_does(said)}")
                else:
                    errors.append(line)
            continue
        pkg = cfg.path(m.package)
        why, retry = None, False
        digest = None  # (the configured package's, read once: a full read of the package)
        try:
            manifest = verify_package(pkg, trusted)
            if m.refuses(manifest.version):
                raise PackageError(refused_by_config(name, manifest.package_id))
            if (unfit := tolerance_refusal(manifest)) is not None and (
                unchecked is None or unchecked != (digest := package_digest(pkg))
            ):
                raise PackageError(unfit)  # (the installed package itself: served, said above)
        except PackageError as exc:
            why = str(exc)
        else:
            if installed and rejected is None:
                # (a pinned slot with another package installs it, the installed one not served: not said so)
                if (
                    served is not None
                    and m.version_policy is VersionPolicy.PINNED
                    and (digest or package_digest(pkg)) != unchecked
                ):
                    warnings.remove(served)
                continue  # (a pinned slot with another package installs it; else the installed one serves)
            short = room_refusal(root, pkg, manifest.files)
            if short is None:
                continue
            why, retry = str(short), True
        if installed and rejected is None:  # a pinned slot serves on it: ModelSlot._start_on
            warnings.append(
                f"{where}: models.{name}.package: {printable(str(pkg), 300)} is refused: {printable(why, 600)}; "
                f"the slot starts on the package installed in {root}, {installed}, which passes its checks here"
            )
            continue
        said = start_refusal(name, pkg, why, retry=retry, installed=installed or None, rejected=rejected)
        if isinstance(said, FailedAtStart):
            none = (
                f"the package installed in slot {name!r}, {installed}, is refused too ({printable(rejected, 600)}): "
                "the agent sets it aside and"
                if installed
                else f"no package is installed in slot {name!r} yet: the agent"
            )
            warnings.append(
                f"{where}: models.{name}.package: {printable(str(pkg), 300)} is refused: {printable(why, 600)}; "
                f"{none} starts with the slot failed (its pipelines judge nothing) and the rest serving; fix "
                f"models.{name}.package"
            )
        else:
            errors.append(
                f"{where}: models.{name}.package: {printable(str(said), 1500)}; the agent does not start"
            )
    return errors, nowhere + warnings


def _start_does(said: Exception) -> str:
    """What the agent's start does on a slot's refusal ``said`` (``no_package_refusal``'s)."""
    from edge_agent.models.slot import FailedAtStart

    if isinstance(said, FailedAtStart):
        return "the agent starts with the slot failed (its pipelines judge nothing)"
    return "the agent does not start"


def _tag_errors(
    cfg, where, source: str, tags: set[str], members: dict[str, list[str] | str | None]
) -> list[str]:
    """Tags the pipelines and rules of ``source`` need that its nodes, as the server names them, do not
    give; a structure's member (``{tag}/{member}``) by the members its node's value has now (``members``:
    ``check_server``'s; a node without a value now is not judged)."""
    import difflib

    wanted = []
    for i, p in enumerate(cfg.pipelines):
        if p.source == source and p.window is not None:
            wanted.append((f"pipelines[{i}].window.waveform", p.window.waveform))
            for j, (tag, inp) in enumerate(p.window.scalar_inputs.items()):
                field = f"scalars.{inp}" if isinstance(p.window.scalars, dict) else f"scalars[{j}]"
                wanted.append((f"pipelines[{i}].window.{field}", tag))
    wanted += [(f"rules[{i}].tag", r.tag) for i, r in enumerate(cfg.rules) if r.source == source]
    out = []
    for loc, tag in wanted:
        if tag in tags:
            continue
        node = next((t for t in tags if tag.startswith(t + "/")), None)
        if node is not None:  # a member of a structure node
            why = _member_error(tag, node, members.get(node, ...))
            if why:
                out.append(f"{where}: {loc}: source {source!r}: {why}")
            continue
        close = {t.lower(): t for t in tags}.get(tag.lower()) or next(
            iter(difflib.get_close_matches(tag, list(tags), n=1, cutoff=0.6)), None
        )
        hint = f"did you mean {close!r}?" if close else f"its nodes give {sorted(tags)}"
        out.append(
            f"{where}: {loc}: source {source!r} produces no tag {tag!r} (browse names read from the "
            f"server); {hint} (or set `tag:` on the node)"
        )
    return out


def _member_error(tag: str, node: str, members: object) -> str | None:
    """Why ``tag`` is not a member that node ``node`` gives (None: it is, or the node's value is unknown)."""
    import difflib

    if members is None:
        return (
            f"tag {node!r} is a structure that the server's type definitions do not describe, so {tag!r} "
            "cannot be read; subscribe to the member's own node (edge-agent browse lists it)"
        )
    if isinstance(members, str):  # the definitions could not be read now: not checked, not "undescribed"
        return (
            f"tag {node!r} is a structure whose type definitions could not be read ({members}), so "
            f"{tag!r} was not checked; run `edge-agent validate --online` again when the server answers"
        )
    if not isinstance(members, list) or tag in members:
        return None
    if not members:
        return f"tag {node!r} holds a single value, not a structure: it gives no member {tag!r}"
    close = next(iter(difflib.get_close_matches(tag, members, n=1, cutoff=0.6)), None)
    hint = f"did you mean {close!r}?" if close else f"its members are {members[:20]}"
    return f"structure {node!r} has no member {tag[len(node) + 1 :]!r} (read from the server); {hint}"


def _agent_holds(data_dir) -> str | None:
    """Why ``validate --online`` must not connect with the config's MQTT client ids: its agent runs (it holds
    ``data_dir``), or whether it runs cannot be told; None when no agent holds the folder. First a shared lock
    tried on the folder's lock file and released at once (``flock(LOCK_SH | LOCK_NB)``): refused while an agent
    holds it, in any container or pid namespace that shares the folder (an flock belongs to the open file).
    The kernel's list of locks (``/proc/locks``, ``DataDirLock.holder``) shows only the agents of this pid
    namespace; it is read where the lock file cannot be opened. No lock file: no agent has run on the folder.
    The lock is held for a moment, which an agent starting then waits out (``agent.LOCK_TRIES``)."""
    from pathlib import Path

    from edge_agent.agent import LOCK_FILE, DataDirLock

    lock = Path(data_dir) / LOCK_FILE
    tail = (
        ", and a connect with its client ids would take its connections over and make the broker publish its "
        "will; its /status shows each connection (publish_connection); stop it to try them"
    )
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if (pid := DataDirLock.holder(data_dir)) is not None:
            return f"this config's agent runs (pid {pid}, {data_dir}){tail}"
        import errno

        if exc.errno == errno.ELOOP:  # the agent follows it; validate opens no link (it may run as root)
            why, advice = (
                "a symbolic link, which validate does not follow",
                "stop the agent first, or make it a file",
            )
        elif exc.errno == errno.ENOTDIR:  # no agent can keep its outbox there either
            why, advice = f"{data_dir} is no folder", "set agent.data_dir to a folder"
        else:
            why = exc.strerror or str(exc)
            advice = "run validate as the agent's user (in its container), or stop the agent first"
        return (
            f"whether this config's agent runs cannot be told ({lock}: {why}), and a connect with its client ids "
            f"would take the connections of a running agent over; {advice}"
        )
    try:
        import fcntl

        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # an agent holds it: the pid it wrote, as its own pid namespace numbers it
            written = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            return f"this config's agent runs (pid {written}, {data_dir}){tail}"
        except OSError:  # (a file system without flock: the kernel's list)
            pid = DataDirLock.holder(data_dir)
            return None if pid is None else f"this config's agent runs (pid {pid}, {data_dir}){tail}"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


async def _online_errors(cfg, where) -> list[str]:
    """What the live OPC UA servers say about the config's nodes and write targets, and the MQTT brokers about
    each client id a source connects with."""
    errors: list[str] = []
    mqtt = [name for name, s in cfg.sources.items() if s.type == "mqtt"]
    if mqtt:
        # a connect with a client id the agent is connected with takes that connection over: the broker
        # publishes the agent's will (a retained "offline", a Sparkplug STATE offline) while it runs
        if (why := _agent_holds(cfg.data_dir)) is not None:
            print(
                f"warning: {where}: sources {', '.join(mqtt)}: the MQTT client ids were not tried: {why}",
                file=sys.stderr,
            )
            mqtt = []
    for name in mqtt:
        from devices.mqtt.client import check_connections

        checked = await check_connections(name, cfg.sources[name])
        errors += [f"{where}: sources.{name}.{f}: {why}" for f, why in checked]
    if any(s.type == "opcua" for s in cfg.sources.values()):
        errors += await _opcua_online_errors(cfg, where)
    return errors


async def _opcua_online_errors(cfg, where) -> list[str]:
    from devices.opcua.client import OpcUaError, check_server
    from edge_agent.actions import write_targets
    from edge_agent.config import write_value_note
    from edge_agent.opcua_pins import pin_file

    targets = write_targets(cfg)
    errors: list[str] = []
    for name, s in cfg.sources.items():
        if s.type != "opcua":
            continue
        # an ns= index is checked as the agent reads it: by the namespaces its data folder kept (never written)
        pins = pin_file(cfg.data_dir, name, cfg.sources, keep=False)
        mine = list(targets.get(name, []))
        if s.heartbeat is not None:
            mine.append(
                (
                    f"sources.{name}.heartbeat.kind",
                    s.heartbeat.node_id,
                    True if s.heartbeat.kind == "toggle" else 1,
                )
            )
        try:
            nodes, writes, tags, members = await check_server(
                s, [(nid, v, write_value_note(cfg, loc)) for loc, nid, v in mine], pins
            )
        except OpcUaError as exc:
            errors.append(f"{where}: sources.{name}.endpoint: {exc}")
            continue
        errors += [f"{where}: sources.{name}.nodes[{i}].node_id: {why}" for i, why in enumerate(nodes) if why]
        errors += _tag_errors(cfg, where, name, {t for t in tags if t}, members)
        seen = set()
        refused = {loc for (loc, _nid, _v), why in zip(mine, writes, strict=True) if why}
        for (loc, _nid, _v), why in zip(mine, writes, strict=True):
            if not why:
                continue
            if loc.endswith(".reset_value") and loc.removesuffix("reset_value") + "value" in refused:
                name = loc.removeprefix("actions.").rsplit(".", 1)[0]
                if getattr(cfg.actions.get(name), "reset_value", 0) is None:
                    # the implied reset (the opposite of a boolean value) of a value refused already: its
                    # "cannot write True" named a reset_value the config nowhere holds, for a value: false
                    continue
            if "cannot write" not in why:  # the node itself is wrong, not the value
                loc = loc.rsplit(".", 1)[0] + ".node_id"
            if (loc, why) not in seen:
                seen.add((loc, why))
                errors.append(f"{where}: {loc}: {why}")
    return errors


def _run(args) -> int:
    import asyncio

    from edge_agent.process_info import launched_at

    launched = launched_at()
    cfg = _load(args.config)
    if cfg is None:
        return 1
    from edge_agent.models.install import prefetch

    try:
        prefetch(cfg)  # a first start: packages verified in a child process while the agent's modules load
    except OSError as exc:  # its model store cannot be made (a data folder this user cannot write): one line
        _setup_logging(args.log_json or cfg.log_json, args.log_level)
        logging.getLogger("edge_agent").error("edge-agent: cannot start: %s", exc)
        return 1
    _setup_logging(args.log_json or cfg.log_json, args.log_level)
    for w in cfg.warnings:
        logging.getLogger("edge_agent").warning("%s", w)
    from edge_agent.agent import Agent
    from edge_agent.models.slot import SlotError
    from edge_agent.outbox.errors import OutboxError

    try:
        if cfg.cloud is not None and cfg.cloud.follow_desired_state:  # the fleet may give it a config
            from edge_agent.fleet_config import AgentHost

            asyncio.run(AgentHost(args.config, launched_at=launched, health_s=args.config_health_s).run())
        else:
            asyncio.run(Agent(cfg, launched_at=launched).run())
    except SlotError as exc:
        logging.getLogger("edge_agent").error("%s", exc)
        return 1
    except OSError as exc:  # e.g. a data folder on a read-only or full disk
        logging.getLogger("edge_agent").error("edge-agent: cannot start: %s", exc)
        return 1
    except OutboxError as exc:  # its disk cannot take the outbox: one line naming the folder and the cause
        logging.getLogger("edge_agent").error("%s", exc)
        return 1
    return 0


def _ms(v) -> str:
    return f"{v:.1f}" if v is not None else "-"


def _escaped_texts(v):
    """``v`` (the /status answer) with each text, key or value at any depth, on one line that says what it is
    (``escaped``): its messages quote names a peer chose (an OPC UA server's browse name as a tag, a drop folder's
    file name); printed raw, a line feed in one began a line of its own making, an ANSI escape drove the terminal."""
    if isinstance(v, str):
        return escaped(v)
    if isinstance(v, dict):
        return {_escaped_texts(k): _escaped_texts(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_escaped_texts(x) for x in v]
    return v


def _status(args) -> int:
    import urllib.request

    try:
        with urllib.request.urlopen(args.url.rstrip("/") + "/status", timeout=5) as r:
            st = json.loads(r.read())
    except OSError as exc:
        print(f"edge-agent status: no agent answers at {args.url} ({exc})", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    st = _escaped_texts(st)  # printed to a terminal: its texts quote names peers chose (tags, file names)
    a = st["agent"]
    print(
        f"agent {a['id']} ({a['site']}/{a['line']}), up {a['uptime_s']:.0f} s, max RSS {a['max_rss_mb']} MB"
    )
    if c := st.get("config"):  # which configuration runs: the local file or the fleet's
        print(
            f"config: {c['source']} {c.get('name', '')}"
            + (f" ({c['digest'][:12]})" if c.get("digest") else "")
            + f" {c.get('status', '')}"
            + (f"; {c['reason']}" if c.get("reason") else "")
        )
    print("\nsources:")
    for n, s in st["sources"].items():
        print(
            f"  {n:<12} {s['type']:<7} {s['state']:<11} received {s['received']:<8} dropped {s['dropped']:<6} "
            f"errors {s['errors']}" + (f"  last: {s['last_error']}" if s["last_error"] else "")
        )
        if pc := s.get("publish_connection"):  # publish_connection: separate: its own state
            print(
                f"  {'':<12} publish connection (client id {pc['client_id']}): {pc['state']}"
                + (f"  last: {pc['last_error']}" if pc["last_error"] else "")
            )
        if h := s.get("halted"):  # said until the server shows it is healthy, not once
            print(
                f"  {'':<12} halted: {h['reason']} since {h['since']} ({h['for_s']:.0f} s, "
                f"{h['checks']} checks found it still so); its readings are held, its tags BAD"
            )
        if hb := s.get("heartbeat_held"):  # the PLC's watchdog output left still: said while it lasts
            print(
                f"  {'':<12} heartbeat held: {hb['node']} unchanged since {hb['since']}, for the PLC's watchdog to "
                f"fall back to its safe state: {hb['reason']}"
            )
        if f := s.get("frozen"):  # a camera resending one image: said while it lasts
            print(
                f"  {'':<12} frozen: its image has not changed since {f['since']} ({f['for_s']:.0f} s); its "
                "frames are UNSURE; check the camera (a power cycle)"
            )
        if why := s.get("ffmpeg_log_in_python"):  # a state (the platform's), not a drop
            print(f"  {'':<12} FFmpeg's log lines are filtered in Python ({why}): each takes the GIL")
        # an OPC UA source's nodes that get no values, and its write targets whose writes will fail, each with why
        for key, what in (
            ("node_errors", "node(s) get no values"),
            ("target_errors", "write target(s) will fail"),
        ):
            if (ne := s.get(key)) and ne["count"]:
                print(f"  {'':<12} {ne['count']} {what}:")
                for e in ne["nodes"]:  # each why names its node
                    print(f"  {'':<14} {e['why']}")
                if ne["count"] > len(ne["nodes"]):
                    print(f"  {'':<14} and {ne['count'] - len(ne['nodes'])} more")
    print("\npipelines:")
    for p in st["pipelines"]:
        lat = p["latency_ms"]
        print(
            f"  {p['pipeline']:<12} {p['kind']:<6} {p['rate_per_s']:>6.2f}/s results {p['results']:<7} NG {p['ng']:<6} "
            f"dropped {p['dropped']:<5} errors {sum(p['errors'].values()):<4} latency ms p50 {_ms(lat['p50'])} "
            f"p95 {_ms(lat['p95'])} p99 {_ms(lat['p99'])}"
        )
    silent = [
        (f"source {n}", k, d)
        for n, s in st["sources"].items()
        for k, d in (s.get("silent_drops") or {}).items()
    ]
    silent += [
        (f"pipeline {p['pipeline']}", k, d)
        for p in st["pipelines"]
        for k, d in (p.get("silent_drops") or {}).items()
    ]
    if silent:
        print("\nsilent drops:")
        for where, k, d in silent:
            print(f"  {where:<20} {k:<22} {d['count']:<8} {d['message']}")
            for more in d.get("more") or ():  # the first message of each other cause (devices.base.Notices)
                print(f"  {'':<20} {'':<22} {'':<8} {more}")
            kept = 1 + len(d.get("more") or ())
            if isinstance(d.get("causes"), int) and d["causes"] > kept:  # past the kept ones: how many
                print(
                    f"  {'':<20} {'':<22} {'':<8} ... {d['causes'] - kept} more not shown ({d['causes']} in all)"
                )
    # the model failing on items (each an UNSURE result, counted under errors): an episode under way, and the
    # first message of each failure, with its count
    failing = [
        p for p in st["pipelines"] if p.get("model_failures") or (p.get("model_failing") or {}).get("active")
    ]
    if failing:
        print("\nmodel failures (those items UNSURE, not judged):")
        for p in failing:
            where = f"pipeline {p['pipeline']}"
            if (f := p.get("model_failing") or {}).get("active"):
                print(f"  {where:<20} {'FAILING':<31} {f.get('message')}")
            for k, msg in (p.get("model_failures") or {}).items():
                print(f"  {where:<20} {k:<22} {p['errors'].get(k, 0):<8} {msg}")
    if st.get("rules") or st.get("forward"):
        print("\ntags without a model:")
    for r in st.get("rules") or []:
        print(
            f"  rule {r['name']:<14} {r['tag']:<16} {'ACTIVE' if r['active'] else 'ok':<7} value {r['value']}"
        )
    for f in st.get("forward") or []:
        print(
            f"  forward {f['name']:<11} forwarded {f.get('forwarded', 0):<8} sent {f.get('sent', 0):<8} "
            f"failed {f.get('failed', 0)}"
        )
    print("\nmodels:")
    for m in st["models"]:
        if m["package"] is None:  # a slot failed at its start (its package refused, nothing installed)
            print(f"  {m['slot']:<12} no model ({m['state']}): {escaped(m.get('failed') or '')}")
            continue
        print(f"  {m['slot']:<12} {m['package']}-{m['version']} on {m['engine']} ({m['state']})")
    active = [x for x in st["alarms"] if x["active"]]
    print(
        "\nalarms: "
        + (
            ", ".join(
                f"{x['alarm']} on {x['pipeline']} since {time.strftime('%H:%M:%S', time.localtime(x['since']))}"
                for x in active
            )
            or "none active"
        )
    )
    return 0


async def _collect_tags(cfg, seconds: float):
    import asyncio

    from devices import SOURCE_TYPES, load_object
    from edge_agent.opcua_pins import pin_namespaces

    srcs = {n: load_object(SOURCE_TYPES[st.type][1])(n, st) for n, st in cfg.sources.items()}
    # an OPC UA ns= index whose namespace the agent's data folder kept otherwise is not read as another's node
    pin_namespaces(cfg.data_dir, srcs, cfg.sources, keep=False)
    last: dict[str, dict] = {n: {} for n in srcs}
    frames: dict[str, object] = {}

    async def pump(name, src) -> None:
        async for item in src.items():
            if hasattr(item, "tag"):
                last[name][item.tag] = item
            else:
                frames[name] = item

    for src in srcs.values():
        await src.start()
    tasks = [asyncio.create_task(pump(n, s)) for n, s in srcs.items()]
    await asyncio.sleep(seconds)
    for t in tasks:
        t.cancel()
    for src in srcs.values():
        await src.stop()
    return srcs, last, frames


def _tags(args) -> int:
    import asyncio

    cfg = _load(args.config)
    if cfg is None:
        return 1
    from edge_agent.status_board import tag_rows

    srcs, last, frames = asyncio.run(_collect_tags(cfg, args.seconds))
    out = {n: tag_rows(list(t.values())) for n, t in last.items()}
    missing = []
    for p in cfg.pipelines:
        if p.window is None:
            continue
        for field, tag in [("waveform", p.window.waveform)] + [
            ("scalars", t) for t in p.window.scalar_inputs
        ]:
            if tag not in last.get(p.source, {}):
                missing.append(
                    f"pipeline {p.name}: window.{field} tag {tag!r} not seen from source {p.source} "
                    f"in {args.seconds:g}s"
                )
    if args.json:
        from protocols import json_codec

        # strict JSON, as /api/tags: a BAD tag's NaN as null (json.dumps wrote NaN, which jq and browsers refuse)
        print(json_codec.dumps({"tags": out, "missing": missing}, indent=2, default=str))
        return 1 if missing else 0
    for name, src in srcs.items():
        st = src.stats
        print(
            f"{name} ({src.settings.type}): received {st.received}, errors {st.errors}"
            + (f", last error: {escaped(st.last_error)}" if st.last_error else "")
        )
        if name in frames:
            f = frames[name]
            print(f"  frames {f.image.shape if hasattr(f, 'image') else '?'} (seq {f.seq})")
        # tag names (browse names) and texts come from the device: control characters shown escaped
        rows = [
            {**r, "tag": escaped(str(r["tag"])), "value": _cell(r["value"], r["type"])} for r in out[name]
        ]
        if rows:
            w = max(len(r["tag"]) for r in rows)
            for r in rows:
                print(f"  {r['tag']:<{w}}  {r['value']:<40} {r['type']:<16} {r['quality']:<9} {r['age_s']}s")
        elif name not in frames:
            print(f"  no tags in {args.seconds:g}s")
    for m in missing:
        print(m, file=sys.stderr)
    return 1 if missing else 0


def _cell(value: object, typ: str) -> str:
    """A tag's value in the table: a number, or an array's summary, whole; text cut at 40 characters with `…`. It
    was cut so silently, a number too: 10**45 was shown as 10**39, an Int64 array's last item without its last
    digit (``[100000 values, last 922337203685477580``)."""
    text = escaped(str(value))
    if len(text) <= 40 or typ in ("int", "float") or typ.startswith("array<"):
        return text
    return text[:39] + "…"


def _browse(args) -> int:
    import asyncio

    from pydantic import ValidationError

    from devices.opcua.settings import OpcUaSettings

    try:
        settings = OpcUaSettings(
            endpoint=args.endpoint,
            security_mode=args.security_mode,
            security_policy=args.security_policy,
            certificate_file=args.certificate,
            private_key_file=args.private_key,
            server_certificate_file=args.server_certificate,
            username=args.username,
            password=args.password,
            connect_timeout_s=args.timeout_s,
        )
    except ValidationError as exc:
        for e in exc.errors():
            loc = ".".join(str(x) for x in e["loc"])
            print(
                f"edge-agent browse: {loc + ': ' if loc else ''}{e['msg'].removeprefix('Value error, ')}",
                file=sys.stderr,
            )
        return 2
    from devices.opcua.client import OpcUaError, browse_server

    skipped: list[str] = []
    try:
        rows = asyncio.run(browse_server(settings, args.node, args.depth, skipped))
    except OpcUaError as exc:
        print(f"edge-agent browse: {escaped(str(exc))}", file=sys.stderr)
        return 1
    for why in skipped[:20]:
        print(f"edge-agent browse: left out, cannot be read: {escaped(why)}", file=sys.stderr)
    if len(skipped) > 20:
        print(f"edge-agent browse: ... and {len(skipped) - 20} more left out", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    # names come from the server: a control character (an escape sequence, a carriage return) would
    # drive the terminal or forge lines, so each is shown escaped
    rows = [{**r, "node_id": escaped(r["node_id"]), "path": escaped(r["path"])} for r in rows]
    if not rows:
        print(
            f"no variables under {args.node or 'Objects'} (depth {args.depth}); try --depth or another NODE"
        )
        return 0
    w = max(len(r["node_id"]) for r in rows)
    print(
        f"{'node_id':<{w}}  {'type':<10} {'array':<6} {'access':<6} path (the last part is the default tag)"
    )
    for r in rows:
        arr = (str(r["array_size"]) if r["array_size"] else "yes") if r["array"] else ""
        print(f"{r['node_id']:<{w}}  {r['data_type']:<10} {arr:<6} {r['access']:<6} {r['path']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="edge-agent", description="the gateway inference runtime")
    sub = ap.add_subparsers(dest="verb", required=True)
    v = sub.add_parser("validate", help="check a config file; print every error")
    v.add_argument("config")
    v.add_argument(
        "--online",
        action="store_true",
        help="also check nodes and write targets on the live servers, and the MQTT brokers' logins",
    )
    v.add_argument(
        "--fleet",
        action="store_true",
        help="CONFIG is a fleet config (without agent:, cloud:, http:), "
        "as `cloud-trainer config deploy` sends; files and environment are each agent's, not checked",
    )
    r = sub.add_parser("run", help="run the agent until SIGTERM")
    r.add_argument("config")
    r.add_argument("--log-json", action="store_true")
    r.add_argument("--log-level", default="INFO")
    r.add_argument(
        "--config-health-s",
        type=float,
        default=10.0,
        help="a fleet config is healthy when every source connects within this many seconds",
    )

    s = sub.add_parser("status", help="ask a running agent")
    s.add_argument("--url", default="http://127.0.0.1:8090")
    s.add_argument("--json", action="store_true")
    t = sub.add_parser("tags", help="connect the sources for a while and list every tag they produce")
    t.add_argument("config")
    t.add_argument("--seconds", type=float, default=5.0)
    t.add_argument("--json", action="store_true")
    b = sub.add_parser("browse", help="list an OPC UA server's variables (NodeIds, types, access, tags)")
    b.add_argument("endpoint", help="opc.tcp://host:port/path")
    b.add_argument("node", nargs="?", default=None, help="start folder or object (default: Objects)")
    b.add_argument("--depth", type=int, default=4, help="folders deep (default 4)")
    b.add_argument("--security-mode", default="None", choices=["None", "Sign", "SignAndEncrypt"])
    b.add_argument(
        "--security-policy",
        default="Basic256Sha256",
        choices=["Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"],
    )
    b.add_argument("--certificate", help="client certificate")
    b.add_argument("--private-key")
    b.add_argument("--server-certificate")
    b.add_argument("--username")
    b.add_argument("--password")
    b.add_argument("--timeout-s", type=float, default=5.0)
    b.add_argument("--json", action="store_true")
    n = sub.add_parser(
        "namespaces",
        help="the OPC UA namespaces kept for each source's ns= indexes; --accept a server's new order",
    )
    n.add_argument("config")
    n.add_argument(
        "--accept", metavar="SOURCE", help="forget the source's kept namespaces: the next start pins"
    )
    from edge_agent.maintenance.cli import add_parser, baseline_main

    add_parser(sub)
    args = ap.parse_args(argv)
    if args.verb == "baseline":
        return baseline_main(args, _load)
    if args.verb == "namespaces":
        from edge_agent.opcua_pins import namespaces_main

        return namespaces_main(args, _load)
    return {"validate": _validate, "run": _run, "status": _status, "browse": _browse, "tags": _tags}[
        args.verb
    ](args)


if __name__ == "__main__":
    sys.exit(main())
