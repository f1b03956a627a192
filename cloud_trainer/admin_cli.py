"""`cloud-trainer agents|deployments|status|deploy|rollback|config`: the admin's view and controls, over the
Admin gRPC service with an admin client certificate (``cloud-trainer pki admin``).

    cloud-trainer agents      [--endpoint 127.0.0.1:7443 --pki var/pki --admin admin]
    cloud-trainer deployments
    cloud-trainer status
    cloud-trainer deploy part-inspection --version 1.1.0 --slot vision --selector site=plant1 \
                         --strategy canary --steps 1 50% 100% --wait 30
    cloud-trainer deploy --pause|--resume|--abort DEPLOYMENT_ID
    cloud-trainer rollback part-inspection --version 1.0.0 --slot vision [--agent gw1 ...]
    cloud-trainer baseline relearn AGENT PIPELINE [--state NAME] [--reason TEXT] [--wait 30]
    cloud-trainer baseline status AGENT [PIPELINE]   # as the agent last reported it, and the commands sent
    cloud-trainer config deploy line1-fleet.yaml --selector site=plant1 --strategy canary --steps 1 50% 100%
    cloud-trainer config list | remove ID | pause ID | resume ID | abort ID

Deployments are read as the typed ``Deployment`` (``cloud_trainer.fleet.deployment``) from the service's
typed ``DeploymentInfo`` fields (or a v2 service's JSON).

Tenants: ``--tenant acme`` takes the admin certificate from ``<pki>/tenants/acme/admins/`` (what
``cloud-trainer pki admin --tenant acme`` writes); every answer is that tenant's only, because the
service reads the tenant from the certificate, never from the command line. Platform operators:

    cloud-trainer tenants [--operator ops]                  # usage per tenant (counts only)
    cloud-trainer tenants --create acme [--display-name "ACME Gears"]
                          [--max-agents N] [--max-records-per-day N] [--max-sample-bytes-per-day N]  (0: no limit)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from model_packager.text import printable, undecoded_bytes


def _common(prog: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=f"cloud-trainer {prog}")
    ap.add_argument("--endpoint", default="127.0.0.1:7443")
    ap.add_argument("--pki", type=Path, default=Path("var/pki"))
    if prog == "tenants":
        ap.add_argument(
            "--operator", default="operator", help="operator certificate name in <pki>/operators/"
        )
    else:
        ap.add_argument(
            "--admin", default="admin", help="admin certificate name in <pki>/admins/ (or the tenant's)"
        )
        ap.add_argument(
            "--tenant",
            default=None,
            help="the admin's tenant: its certificate is in <pki>/tenants/<tenant>/admins/",
        )
    ap.add_argument("--json", action="store_true")
    return ap


def _shown(text: str) -> str:
    """``text`` with each byte that is not UTF-8 (which Python hands over from the command line as a lone
    surrogate, U+DC80-U+DCFF) written ``\\xfc``, as a refusal shows it and a name may hold it."""
    return undecoded_bytes(text)


def _parse(ap: argparse.ArgumentParser, argv: list[str], files: tuple[str, ...] = ()) -> argparse.Namespace:
    """``ap.parse_args(argv)``, refusing in one line a text argument holding a byte that is not UTF-8 (a terminal
    or script in another code page: Latin-1's 0xFC for 'ü'). Sent on, it ended the command in a
    UnicodeEncodeError traceback (protobuf's text is UTF-8), nothing sent. ``files``: arguments that name a file,
    which may be named in any bytes."""
    a = ap.parse_args(argv)
    for action in ap._actions:
        value = getattr(a, action.dest, None) if action.dest not in files else None
        for text in value if isinstance(value, list) else [value]:
            _utf8_only(ap, (action.option_strings or [action.dest])[0], text)
    return a


def _utf8_only(ap: argparse.ArgumentParser, name: str, text: object) -> None:
    if isinstance(text, str) and _shown(text) != text:
        ap.exit(
            2,
            printable(
                f"{ap.prog}: {name} '{_shown(text)}' holds a byte that is not UTF-8 (a terminal or script in "
                "another code page); write it in UTF-8",
                1000,
            )
            + "\n",
        )


def _cert(a) -> tuple[Path, str]:
    from cloud_trainer.pki import tenant_dir

    if getattr(a, "operator", None):
        return (
            a.pki / "operators" / f"{a.operator}.pem",
            f"cloud-trainer pki operator --dir {a.pki} --name {a.operator}",
        )
    try:
        folder = tenant_dir(a.pki, a.tenant)
    except ValueError as exc:
        raise SystemExit(f"cloud-trainer: --tenant: {exc}") from exc
    hint = f"cloud-trainer pki admin --dir {a.pki} --name {a.admin}" + (
        f" --tenant {a.tenant}" if a.tenant else ""
    )
    return folder / "admins" / f"{a.admin}.pem", hint


# what the service says of a package name or version it does not have (the same words for another tenant's): which
# registry it deploys from is its own (``serve --registry``, default <data>/registry), never told to a client
NOT_IN_REGISTRY = (
    "; publish it to the registry `cloud-trainer serve` deploys from (its --registry, default <data>/registry; a "
    "tenant's: <registry>/.tenants/T): `cloud-trainer publish PKG.edgepkg --trust KEY.pub --registry DIR` for a "
    "package built with model-packager, `cloud-trainer build ... --registry DIR` for the trainer's"
)


def _call(a, method: str, request):
    import grpc

    from protocols.gen import fleet_pb2_grpc as rpc

    cert, hint = _cert(a)
    if not cert.exists():
        raise SystemExit(f"cloud-trainer: no certificate {cert}; create one with `{hint}`")
    creds = grpc.ssl_channel_credentials(
        (a.pki / "ca.pem").read_bytes(), cert.with_suffix(".key").read_bytes(), cert.read_bytes()
    )
    with grpc.secure_channel(a.endpoint, creds) as ch:
        try:
            return getattr(rpc.AdminStub(ch), method)(request, timeout=15)
        except grpc.RpcError as exc:
            note = _dates_note(cert, hint) if exc.code() == grpc.StatusCode.UNAVAILABLE else ""
            if (exc.details() or "").endswith(" is not in the registry"):
                note = NOT_IN_REGISTRY
            raise SystemExit(
                f"cloud-trainer: {method} failed: {exc.code().name}: {printable(exc.details() or '', 1000)}{note}"
            ) from exc


def _dates_note(cert: Path, hint: str) -> str:
    """Why the fleet service closed the connection, when the certificate says it (``""`` otherwise): one outside its
    dates is refused in the TLS handshake, which tells the client nothing but "Socket closed"."""
    import datetime as dt

    from cryptography import x509

    try:
        c = x509.load_pem_x509_certificate(cert.read_bytes())
    except (OSError, ValueError):
        return ""
    now = dt.datetime.now(dt.UTC)
    if now > c.not_valid_after_utc:
        return (
            f"; the certificate {cert} expired {c.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, and the fleet service "
            f"refuses it without a word: issue a new one with `{hint}`"
        )
    if now < c.not_valid_before_utc:
        return (
            f"; the certificate {cert} is valid only from {c.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (is this "
            "machine's clock right?), and the fleet service refuses it without a word"
        )
    return ""


def _table(rows: list[list], headers: list[str]) -> str:
    # cells hold what agents reported (slot states, reasons): escaped, so that no control character or
    # terminal escape sequence reaches the admin's terminal
    cells = [[printable(c, 300) for c in r] for r in rows]
    w = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w[i]) for i, h in enumerate(headers)), "  ".join("-" * x for x in w)]
    lines += ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)) for r in cells]
    return "\n".join(lines)


def _slot_cell(s) -> str:
    """A slot as ``agents`` lists it, with the reason its agent gave (its last swap refused or rolled back): a pinned
    slot whose new local package was refused serves the one installed before, and was listed as ``(active)`` alone,
    the refusal only in ``--json``."""
    why = f"; {printable(s.reason, 160)}" if s.reason else ""
    # a slot failed at its agent's start (its package refused, nothing installed) serves no model: it read "vision=-"
    model = f"{s.package}-{s.version}" if s.package else "no model"
    return f"{s.slot}={model} ({s.status}{why})"


def main_agents(argv: list[str]) -> int:
    from protocols.gen import fleet_pb2 as pb

    a = _parse(_common("agents"), argv)
    reply = _call(a, "ListAgents", pb.ListAgentsRequest())
    if a.json:
        from google.protobuf.json_format import MessageToDict

        print(json.dumps(MessageToDict(reply), indent=1))
        return 0
    rows = []
    for ag in reply.agents:
        slots = ", ".join(_slot_cell(s) for s in ag.slots)
        age = time.time() - ag.last_seen if ag.last_seen else float("nan")
        c = ag.config
        config = f"{c.source} {c.digest[:12]} {c.status}".replace("  ", " ").strip() if c.source else "-"
        rows.append(
            [
                ag.id,
                ",".join(f"{k}={v}" for k, v in sorted(ag.labels.items())),
                f"{age:.0f}s ago",
                ag.records,
                slots,
                config,
            ]
        )
    print(
        _table(rows, ["agent", "labels", "last seen", "records", "slots", "config"])
        if rows
        else "no agents registered"
    )
    return 0


def _deployment_rows(deps: list) -> list[list]:
    rows = []
    for d in deps:
        counts: dict[str, int] = {}
        for t in d.targets.values():
            counts[t.status] = counts.get(t.status, 0) + 1
        rows.append(
            [
                d.id,
                d.what(),
                d.slot or ("(agent config)" if d.kind == "config" else ""),
                d.strategy,
                f"{d.step + 1}/{len(d.steps)} {d.steps[d.step]}",
                d.state + (" (stalled)" if d.stalled and d.state == "running" else ""),
                " ".join(f"{k}:{v}" for k, v in sorted(counts.items())),
                d.reason,
            ]
        )
    return rows


def _deployments(a) -> list:
    from cloud_trainer.fleet.deployment import Deployment
    from protocols.gen import fleet_pb2 as pb

    return [
        Deployment.from_proto(d) for d in _call(a, "ListDeployments", pb.ListDeploymentsRequest()).deployments
    ]


def _print_deployments(a, deps: list) -> None:
    if a.json:
        print(json.dumps([d.doc() for d in deps], indent=1))
        return
    print(
        _table(
            _deployment_rows(deps), ["id", "what", "slot", "strategy", "step", "state", "agents", "reason"]
        )
        if deps
        else "no deployments"
    )
    # what a config's healthy report says beside it (a PLC's heartbeat its new fleet-fed slot holds until the
    # package serves): shown only in --json and the console, the table read the config as healthy, nothing said
    said = [
        [d.id, agent, t.reason]
        for d in deps
        if d.kind == "config"
        for agent, t in sorted(d.targets.items())
        if t.status == "healthy" and t.reason
    ]
    if said:
        print(_table(said, ["id", "agent", "healthy, its report says"]))


def main_deployments(argv: list[str]) -> int:
    a = _parse(_common("deployments"), argv)
    _print_deployments(a, _deployments(a))
    return 0


def main_status(argv: list[str]) -> int:
    from protocols.gen import fleet_pb2 as pb

    a = _parse(_common("status"), argv)
    agents = _call(a, "ListAgents", pb.ListAgentsRequest()).agents
    deps = _deployments(a)
    stats = _call(a, "IngestStats", pb.IngestStatsRequest())
    versions: dict[str, int] = {}
    for ag in agents:
        for s in ag.slots:
            versions[f"{s.package}-{s.version}"] = versions.get(f"{s.package}-{s.version}", 0) + 1
    print(
        f"agents: {len(agents)}; records stored: {stats.records}; samples: {stats.samples}; "
        f"replays deduplicated: {stats.duplicates}"
        + (
            f"; retired by retention: {stats.retired_records} records, {stats.retired_samples} samples"
            if stats.retired_records
            else ""
        )
    )
    print(
        printable("running: " + (", ".join(f"{k} on {v}" for k, v in sorted(versions.items())) or "-"), 2000)
    )
    active = [d for d in deps if d.state in ("running", "paused")]
    print(f"deployments: {len(deps)} ({len(active)} in progress)")
    for d in active:
        if d.stalled:  # its step's deadline passed with agents not yet healthy: the rollout waits for them
            late = [str(x) for x in d.stalled.get("agents") or []]
            print(
                printable(
                    f"STALLED {d.id} ({d.what()}) step {d.step + 1}/{len(d.steps)}: no healthy report from "
                    f"{', '.join(late[:10])}{f' and {len(late) - 10} more' if len(late) > 10 else ''}; "
                    f"{d.reason}",
                    2000,
                )
            )
    if deps:
        print(
            _table(
                _deployment_rows(deps[:5]),
                ["id", "what", "slot", "strategy", "step", "state", "agents", "reason"],
            )
        )
    return 0


def _rollout_options(ap: argparse.ArgumentParser) -> None:
    """Targets, strategy and gate: the same for a model and an agent configuration."""
    ap.add_argument("--agent", action="append", default=[])
    ap.add_argument("--selector", action="append", default=[], metavar="LABEL=GLOB")
    ap.add_argument("--strategy", choices=["canary", "all_at_once"], default="canary")
    ap.add_argument("--steps", nargs="+", default=["1", "100%"])
    ap.add_argument("--wait", type=float, default=30.0, help="seconds between healthy steps")
    ap.add_argument("--max-error-rate", type=float, default=None)


def _create(a, **fields):
    """CreateDeployment with the rollout options of ``a``; the typed answer."""
    from cloud_trainer.fleet.deployment import Deployment
    from protocols.gen import fleet_pb2 as pb

    req = pb.CreateDeploymentRequest(
        agents=a.agent,
        selector=dict(s.split("=", 1) for s in a.selector),
        strategy=a.strategy,
        steps=a.steps,
        wait_s=a.wait,
        **fields,
    )
    req.gate.SetInParent()
    if a.max_error_rate is not None:
        req.gate.max_error_rate = a.max_error_rate
    return Deployment.from_proto(_call(a, "CreateDeployment", req))


def _control_call(a, dep_id: str, action: str):
    from cloud_trainer.fleet.deployment import Deployment
    from protocols.gen import fleet_pb2 as pb

    return Deployment.from_proto(
        _call(a, "ControlDeployment", pb.ControlRequest(deployment_id=dep_id, action=action))
    )


def main_deploy(argv: list[str]) -> int:
    ap = _common("deploy")
    ap.add_argument("package", nargs="?")
    ap.add_argument("--version", default="")
    ap.add_argument("--slot", default="")
    _rollout_options(ap)
    for act in ("pause", "resume", "abort"):
        ap.add_argument(f"--{act}", metavar="DEPLOYMENT_ID")
    a = _parse(ap, argv)
    for act in ("pause", "resume", "abort"):
        if getattr(a, act):
            d = _control_call(a, getattr(a, act), act)
            print(f"deployment {d.id}: {d.state}")
            return 0
    if not a.package or not a.slot:
        print(
            "cloud-trainer deploy: give a package name and --slot (or --pause/--resume/--abort ID)",
            file=sys.stderr,
        )
        return 2
    d = _create(a, package=a.package, version=a.version, slot=a.slot, kind="model")
    print(
        f"deployment {d.id}: {d.package} {d.version} to {len(d.targets)} agents, "
        f"{d.strategy} steps {d.steps}; state {d.state}"
    )
    return 0


def main_config(argv: list[str]) -> int:
    """`cloud-trainer config deploy FILE ...`: roll an agent configuration out like a model;
    `config list`; `config remove DEPLOYMENT_ID` (its agents go back to their local file);
    `config pause|resume|abort DEPLOYMENT_ID`."""
    ap = _common("config")
    ap.add_argument("action", choices=["deploy", "list", "remove", "pause", "resume", "abort"])
    ap.add_argument(
        "target", nargs="?", help="deploy: the YAML file; remove/pause/resume/abort: a deployment id"
    )
    ap.add_argument("--name", default=None, help="a name for the config (default: the file's name)")
    _rollout_options(ap)
    a = _parse(ap, argv, files=("target",))
    if a.action != "deploy":  # a deployment id, not a file
        _utf8_only(ap, "target", a.target)
    if a.action == "list":
        _print_deployments(a, [d for d in _deployments(a) if d.kind == "config"])
        return 0
    if not a.target:
        print(
            f"cloud-trainer config {a.action}: give {'a YAML file' if a.action == 'deploy' else 'a deployment id'}",
            file=sys.stderr,
        )
        return 2
    if a.action != "deploy":
        d = _control_call(a, a.target, a.action)
        print(f"config deployment {d.id}: {d.state}" + (f" ({d.reason})" if d.reason else ""))
        return 0
    from cloud_trainer.fleet.agent_config import MAX_BYTES
    from model_packager.package import read_bounded

    path = Path(a.target)
    try:  # <(envsubst < x) is read; a named pipe nothing writes to is not waited on; one byte over is enough
        data = read_bounded(path, MAX_BYTES)
    except OSError as exc:
        raise SystemExit(f"cloud-trainer config deploy: cannot read {path} ({exc.strerror})") from exc
    if len(data) > MAX_BYTES:
        raise SystemExit(
            f"cloud-trainer config deploy: {path}: larger than {MAX_BYTES} bytes; an agent configuration is at "
            "most that"
        )
    name = a.name or _shown(path.stem)  # a file named in another code page: its name as a refusal shows it
    d = _create(a, kind="config", config_yaml=data, config_name=name)
    print(
        f"config deployment {d.id}: {name} ({d.digest[:12]}) to {len(d.targets)} agents, {d.strategy} steps "
        f"{d.steps}; state {d.state}"
    )
    return 0


def main_rollback(argv: list[str]) -> int:
    from protocols.gen import fleet_pb2 as pb

    ap = _common("rollback")
    ap.add_argument("package")
    ap.add_argument("--version", required=True)
    ap.add_argument("--slot", required=True)
    ap.add_argument("--agent", action="append", default=[])
    a = _parse(ap, argv)
    from cloud_trainer.fleet.deployment import Deployment

    d = Deployment.from_proto(
        _call(
            a,
            "Rollback",
            pb.RollbackRequest(package=a.package, version=a.version, slot=a.slot, agents=a.agent),
        )
    )
    print(f"rollback {d.id}: {d.package} {d.version} to {len(d.targets)} agents; state {d.state}")
    return 0


def main_tenants(argv: list[str]) -> int:
    """A platform operator's view: tenants and their usage (counts), and creating a tenant."""
    from protocols.gen import fleet_pb2 as pb

    ap = _common("tenants")
    ap.add_argument("--create", metavar="TENANT", help="register a tenant (idempotent)")
    ap.add_argument("--display-name", default="")
    quotas = ("max_agents", "max_records_per_day", "max_sample_bytes_per_day", "max_record_bytes_per_day")
    for q in quotas:
        ap.add_argument(
            "--" + q.replace("_", "-"),
            type=int,
            default=None,
            metavar="N",
            help="with --create: the tenant's quota (0: no limit; left out: unchanged)",
        )
    a = _parse(ap, argv)
    limits = {q: getattr(a, q) for q in quotas if getattr(a, q) is not None}
    if limits and not a.create:
        ap.error("quotas are set with --create TENANT (idempotent: it changes an existing tenant's quotas)")
    if a.create:
        t = _call(
            a, "CreateTenant", pb.CreateTenantRequest(tenant=a.create, display_name=a.display_name, **limits)
        )
        print(
            f"tenant {t.tenant} registered (quotas: agents {t.max_agents or 'no limit'}, records per day "
            f"{t.max_records_per_day or 'no limit'}, sample bytes per day {t.max_sample_bytes_per_day or 'no limit'}, "
            f"record bytes per day {t.max_record_bytes_per_day or 'no limit'})"
            f"; issue its keys and certificates with `cloud-trainer pki tenant|agent|admin --dir {a.pki} "
            f"--tenant {t.tenant}`"
        )
        return 0
    reply = _call(a, "ListTenants", pb.ListTenantsRequest())
    if a.json:
        from google.protobuf.json_format import MessageToDict

        print(json.dumps(MessageToDict(reply, always_print_fields_with_no_presence=True), indent=1))
        return 0

    def of(n: int, limit: int) -> str:
        return f"{n}/{limit}" if limit else str(n)

    rows = [
        [
            t.tenant,
            t.display_name,
            of(t.agents, t.max_agents),
            t.records,
            of(t.records_today, t.max_records_per_day),
            of(t.record_bytes_today, t.max_record_bytes_per_day),
            t.samples,
            of(t.sample_bytes_today, t.max_sample_bytes_per_day),
            t.deployments,
            t.packages,
            t.package_bytes,
            t.retired_records,
            t.retired_samples,
        ]
        for t in reply.tenants
    ]
    print(
        _table(
            rows,
            [
                "tenant",
                "name",
                "agents",
                "records",
                "records today",
                "record bytes today",
                "samples",
                "sample bytes today",
                "deployments",
                "packages",
                "package bytes",
                "retired records",  # (deleted by retention: serve --retain-days)
                "retired samples",
            ],
        )
    )
    return 0


def _when(t) -> str:
    if not t:
        return "-"
    if not _is_number(t):  # a gateway's report is not to be trusted: show what it said
        return f"{t!r} (invalid)"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))
    except (OverflowError, OSError, ValueError):
        return f"{t!r} (invalid)"


def _is_number(v) -> bool:
    if not isinstance(v, int | float) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an integer past a float's range: JSON bounds no number's digits
        return False


def _num(v, spec: str, scale: float = 1.0) -> str:
    """A number a gateway reported, formatted; anything else (text, a list, NaN, an integer of 400 digits) shown
    as it came, marked invalid, so a hostile or broken report cannot end the command in a traceback."""
    return format(v * scale, spec) if _is_number(v) and _is_number(v * scale) else f"{v!r} (invalid)"


def _baseline_line(pipeline: str, b) -> str:
    if not isinstance(b, dict):
        return f"{pipeline}: {b!r} (invalid)"
    if b.get("state") == "learning":
        return (
            f"{pipeline}: learning since {_when(b.get('started_at'))}: {b.get('windows', 0)}/"
            f"{b.get('target_windows', '?')} windows ({_num(b.get('progress') or 0, '.0f', 100)} %)"
            + (f"; reason: {b['reason']}" if b.get("reason") else "")
        )
    if b.get("state") == "ready":
        thr = b.get("threshold")
        return (
            f"{pipeline}: ready, learned {_when(b.get('learned_at'))} on {b.get('windows', 0)} windows; threshold "
            f"{_num(thr, '.3f')} at a false-alarm rate of {b.get('false_alarm_rate')} per window"
            if thr is not None
            else f"{pipeline}: ready, learned {_when(b.get('learned_at'))}"
        )
    return f"{pipeline}: {b.get('state', 'unknown')}"


def main_baseline(argv: list[str]) -> int:
    """A pipeline's per-asset baseline on one agent: its state as the agent reported it, and relearn from the
    fleet (a command in the agent's desired state, run once by the agent, recorded as events on both sides)."""
    from protocols.gen import fleet_pb2 as pb

    ap = _common("baseline")
    ap.description = (
        "relearn: the agent starts learning the pipeline's healthy statistics anew at its next "
        "window (commissioning again, e.g. after a repair or a change of the machine); the command "
        "waits in the agent's desired state while it is offline. status: each baseline as the agent "
        "last reported it (every 30 s at most) and the commands sent to it."
    )
    ap.add_argument("action", choices=["status", "relearn"])
    ap.add_argument("agent")
    ap.add_argument("pipeline", nargs="?", help="required for relearn; status: all pipelines with a baseline")
    ap.add_argument("--reason", default="", help="recorded with the command and in the agent's event")
    ap.add_argument(
        "--state",
        default="",
        metavar="NAME",
        help="relearn: only this process state of the pipeline (its baseline.state_tag; a name of "
        "baseline.states, or without them the whole value); the other states stay as learned. A state the "
        "agent did not report is refused",
    )
    ap.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="relearn: wait this long for the agent's result (default: do not wait)",
    )
    a = _parse(ap, argv)
    if a.action == "relearn":
        if not a.pipeline:
            print("cloud-trainer baseline relearn: give the agent and the pipeline", file=sys.stderr)
            return 2
        cmd = json.loads(
            _call(
                a,
                "SendCommand",
                pb.SendCommandRequest(
                    agent=a.agent,
                    kind="baseline_relearn",
                    pipeline=a.pipeline,
                    reason=a.reason,
                    process_state=a.state,
                ),
            ).json
        )
        if a.state and cmd.get("process_state") != a.state:
            # a cloud of a release before --state skips the field it does not know (protobuf) and sends the
            # agent a relearn of every state; a command sent has no undo: said, never printed as sent
            raise SystemExit(
                printable(
                    f"cloud-trainer: command {cmd['id']}: the cloud at {a.endpoint} is of a release before "
                    f"--state and did not take it: the agent relearns EVERY process state of {a.pipeline}, "
                    f"not only {a.state}; upgrade the cloud before relearning one state",
                    1000,
                )
            )
        what = f" (process state {a.state})" if a.state else ""
        print(
            printable(
                f"command {cmd['id']}: baseline_relearn of {a.pipeline}{what} on {a.agent} sent; the agent "
                "runs it when it next gets its desired state",
                1000,
            )
        )
        deadline = time.monotonic() + a.wait
        while a.wait > 0:
            found = [
                json.loads(c.json)
                for c in _call(a, "ListCommands", pb.ListCommandsRequest(agent=a.agent)).commands
            ]
            cur = next((c for c in found if c["id"] == cmd["id"]), None)
            if cur is not None and cur["state"] != "pending":
                print(printable(f"command {cur['id']}: {cur['state']}: {cur['detail']}", 1000))
                return 0 if cur["state"] == "done" else 1
            if time.monotonic() >= deadline:
                print(
                    f"command {cmd['id']}: still pending after {a.wait:g} s (the agent is offline or busy); it "
                    f"stays in the agent's desired state: see `cloud-trainer baseline status {a.agent}`"
                )
                return 1
            time.sleep(0.5)
        return 0
    agent = next((x for x in _call(a, "ListAgents", pb.ListAgentsRequest()).agents if x.id == a.agent), None)
    if agent is None:
        print(f"cloud-trainer baseline: agent {a.agent!r} is not registered", file=sys.stderr)
        return 1
    health = json.loads(agent.health_json or "{}")
    baselines = {
        p: h["baseline"]
        for p, h in sorted(health.items())
        if isinstance(h, dict) and "baseline" in h and (not a.pipeline or p == a.pipeline)
    }
    cmds = [
        json.loads(c.json) for c in _call(a, "ListCommands", pb.ListCommandsRequest(agent=a.agent)).commands
    ]
    cmds = [
        c for c in cmds if c["kind"] == "baseline_relearn" and (not a.pipeline or c["pipeline"] == a.pipeline)
    ]
    if a.json:
        print(
            json.dumps(
                {"agent": a.agent, "reported_at": agent.last_seen, "baselines": baselines, "commands": cmds},
                indent=1,
            )
        )
        return 0
    print(f"agent {a.agent}, as reported {_when(agent.last_seen)}:")
    for p, b in baselines.items():
        print("  " + printable(_baseline_line(p, b), 1000))
    if not baselines:
        print(
            f"  no baseline reported{' for pipeline ' + a.pipeline if a.pipeline else ''} (the agent's "
            "pipelines with `baseline:` report theirs with their health)"
        )
    if cmds:
        print(
            _table(
                [
                    [
                        c["id"],
                        c["pipeline"] + (f" ({c['process_state']})" if c.get("process_state") else ""),
                        _when(c["issued_at"]),
                        c["issued_by"],
                        c["state"],
                        c["detail"],
                    ]
                    for c in cmds[:10]
                ],
                ["command", "pipeline", "sent", "by", "state", "detail"],
            )
        )
    return 0
