"""`cloud-trainer serve`: the fleet service (agents) and the admin service on one TLS port.

    cloud-trainer serve --data var/cloud --port 7443 --pki var/pki [--registry var/registry]
                        [--store postgresql://fleet@db/fleet]
                        [--blobs s3://bucket/prefix [--s3-endpoint http://minio:9000]]
                        [--console-port 8088 [--console-host 127.0.0.1] [--console-tenant T]
                         [--console-allowed-host NAME ...]]
                        [--step-timeout-s 900] [--keep-rollouts 20] [--replicas]
                        [--in-flight-bytes 268435456] [--tenant-in-flight-bytes 67108864] [--in-flight-wait-s 20]
                        [--record-bytes-per-day 17179869184] [--retain-days N]

Needs ``ca.pem``, ``server.pem`` and ``server.key`` in the PKI folder (``cloud-trainer pki``).
Clients must present a certificate from the same CA: agents (OU agent) and admins (OU admin) of a
tenant, and platform operators (OU operator). A tenant with a package signing key in
``<pki>/tenants/<tenant>/signing.pub`` gets only packages signed by it deployed.
Blobs (uploaded samples): the folder ``<data>/blobs`` by default; ``--blobs s3://BUCKET[/PREFIX]`` puts them in
an S3-compatible bucket (boto3, from the ``cloud`` extra), with credentials from the environment
(``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, or any boto3 credential source) and the endpoint from
``--s3-endpoint`` or ``AWS_ENDPOINT_URL_S3`` (nothing: AWS itself). See docs/blob-stores.md.
The port is this process's alone unless ``--replicas``: then other `serve` processes of the same store (the same
SQLite file, or the same PostgreSQL database) started with ``--replicas`` listen on it too and the kernel spreads
the agents over them (SO_REUSEPORT). A start on a port that a service of another store serves is refused with
one line naming that store and process, exit code 2 (``portguard``; docs/fleet-scale.md).
The console has no login: it listens on ``--console-host`` (127.0.0.1 by default, whatever ``--host`` the agents
reach), and one on any other address must be pinned to a tenant (``--console-tenant``), else the start is refused
(exit code 2): its ``?tenant=`` shows any tenant, which is for the platform operator on loopback. A
``--console-tenant`` that is no tenant id (an empty one pinned none) and an IPv6 console host (its HTTP server is
IPv4) are refused too. Before, it listened
on ``--host``: a service on 0.0.0.0 for its gateways showed every tenant's agents, events, sample images and
packages to anyone who reached the port.
Prints one line when it listens; stops cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import sys
from pathlib import Path

log = logging.getLogger("cloud_trainer.fleet.server")
GC_PAUSE_LOGGED_S = 0.1  # a collection this long is logged (every stream waits behind it)


def quiet_gc() -> None:
    """Fewer, cheaper garbage collections for a process holding thousands of streams.

    Measured with 2,000 agents on their streams (bench/fleet_stream_bench.py): CPython's default thresholds
    (700, 10, 10) ran 5 full collections in a 70-s run, one of them a 1.2-s pause of the asyncio loop (every
    stream's reports waited behind it: the report p99 and the late acknowledgements), plus ~670 young
    collections. What the process imported and built before serving (~10^5 objects: modules, protobuf
    descriptors, grpc) never becomes garbage: ``gc.freeze()`` takes it out of every later collection. The
    young generation's threshold is raised so that a burst of connections (a ramp, a reconnect storm) costs a
    few collections instead of hundreds; the per-stream objects are short cycles that are still found.
    """
    import gc
    import time

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    started = [0.0]

    def said_long(phase: str, info: dict) -> None:  # a long pause stalls every stream: say so in the log
        if phase == "start":
            started[0] = time.perf_counter()
        elif (took := time.perf_counter() - started[0]) >= GC_PAUSE_LOGGED_S:
            log.warning(
                "garbage collection (generation %d, %d objects freed) paused the service for %.2f s",
                info.get("generation", -1),
                info.get("collected", 0),
                took,
            )

    gc.callbacks.append(said_long)


def quiet_grpc_log() -> None:
    """grpc's own log at ERROR and above, unless ``GRPC_VERBOSITY`` is set (before grpc starts: read once).

    grpc logged every TLS handshake it refused (a client without a certificate of the fleet's CA: anyone who can
    reach the port) as one INFO line on the service's stderr: ~350 lines a second from one client looping on 2
    cores (bench/tenant_neighbour_bench.py), the service's log disk, every tenant's, filled by someone who has no
    certificate at all. ``GRPC_VERBOSITY=INFO`` shows them again when looking for a client that cannot connect."""
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def _unwritable(path: Path) -> str | None:
    """Why a file could not be created at ``path`` (e.g. its folder is missing); None if it can."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.touch()
        tmp.unlink()
    except OSError as e:
        return e.strerror or str(e)
    return None


def _loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable from this machine only."""
    import ipaddress

    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a name: whatever it resolves to, not known to be loopback
        return False


def main(argv: list[str] | None = None) -> int:
    from cloud_trainer.registry import DEFAULT_REGISTRY

    ap = argparse.ArgumentParser(prog="cloud-trainer serve")
    # (the registry's default, DEFAULT_REGISTRY, is <this>/registry: what build and publish publish to by default)
    ap.add_argument("--data", type=Path, default=DEFAULT_REGISTRY.parent)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7443, help="0: any free port (see --port-file)")
    ap.add_argument(
        "--port-file",
        type=Path,
        default=None,
        help='once listening, write {"port": N, "console_port": M} here (the ports got for port 0)',
    )
    ap.add_argument("--pki", type=Path, default=Path("var/pki"))
    ap.add_argument("--registry", type=Path, default=None, help="default: <data>/registry")
    ap.add_argument(
        "--store",
        default=None,
        metavar="URL",
        help="postgresql://user@host/db: records, samples and agents in PostgreSQL (migrated on start); "
        "default: the SQLite file <data>/fleet.db",
    )
    ap.add_argument(
        "--blobs",
        default=None,
        metavar="WHERE",
        help="s3://BUCKET[/PREFIX]: blobs in an S3-compatible bucket (credentials from the environment); "
        "or a folder; default: <data>/blobs",
    )
    ap.add_argument(
        "--s3-endpoint",
        default=None,
        metavar="URL",
        help="the S3-compatible server (e.g. http://minio:9000); default: $AWS_ENDPOINT_URL_S3, else AWS",
    )
    ap.add_argument(
        "--console-port", type=int, default=None, help="serve the fleet console on this HTTP port"
    )
    ap.add_argument(
        "--console-host",
        default=None,
        help="the address the console listens on (default 127.0.0.1, not --host: it has no login; put a reverse "
        "proxy with authentication in front); any other address needs --console-tenant",
    )
    ap.add_argument(
        "--console-tenant",
        default=None,
        help="the console shows this tenant only (default: the tenant "
        "named by ?tenant= in each URL, for operators on loopback)",
    )
    ap.add_argument(
        "--console-allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name the console answers under besides IP addresses, localhost and this machine's "
        "name (a reverse proxy's public name); any other Host is 421 (DNS rebinding)",
    )
    ap.add_argument(
        "--step-timeout-s",
        type=float,
        default=None,
        metavar="S",
        help="a rollout step whose agents have not all reported healthy this long after it began is marked "
        "stalled (status, console, a WARNING); it still waits for them; 0: never (default: 900)",
    )
    ap.add_argument(
        "--keep-rollouts",
        type=int,
        default=None,
        metavar="N",
        help="finished rollouts (completed, halted, aborted, removed) kept per tenant and model slot, the newest; "
        "older ones are deleted, but those an agent's desired state or a rollout still names; 0: all "
        "(default: 20)",
    )
    ap.add_argument(
        "--replicas",
        action="store_true",
        help="share the port with other `serve --replicas` processes of the same store (SO_REUSEPORT: the "
        "kernel spreads the agents over them); a service of another store on the port is refused either way; "
        "default: the port is this process's alone",
    )
    ap.add_argument(
        "--in-flight-bytes",
        type=int,
        default=None,
        metavar="N",
        help="agents' batches received and not yet answered, of every tenant together, at which the agents' "
        "next batches wait unread (refused unparsed, RESOURCE_EXHAUSTED, after --in-flight-wait-s); default: 256 MiB",
    )
    ap.add_argument(
        "--tenant-in-flight-bytes",
        type=int,
        default=None,
        metavar="N",
        help="the same, of one tenant's agents (so that one tenant never takes the others' share); default: 64 MiB",
    )
    ap.add_argument(
        "--record-bytes-per-day",
        type=int,
        default=None,
        metavar="N",
        help="bytes of records (their payloads; samples have their own budget) one agent may have stored per UTC "
        "day, then its batches are refused (RESOURCE_EXHAUSTED: they wait in its outbox); default: 16 GiB",
    )
    ap.add_argument(
        "--retain-days",
        default=None,
        metavar="N",
        help="delete agents' records, samples and sample files received more than N days ago (N of 1 or more; "
        "in the background, a few thousand records a step; stats and usage say what was retired, gaps never "
        "show it lost); default: keep everything (docs/fleet-scale.md)",
    )
    ap.add_argument(
        "--in-flight-wait-s",
        type=float,
        default=None,
        metavar="S",
        help="how long a batch waits for room before it is refused (RESOURCE_EXHAUSTED: the agent backs off); "
        "default: 20",
    )
    a = ap.parse_args(argv)
    console_moved = a.console_host is None and not _loopback(a.host)  # said once it listens (below)
    a.console_host = "127.0.0.1" if a.console_host is None else a.console_host
    for opt, v in (
        ("--in-flight-bytes", a.in_flight_bytes),
        ("--tenant-in-flight-bytes", a.tenant_in_flight_bytes),
        ("--in-flight-wait-s", a.in_flight_wait_s),
        ("--record-bytes-per-day", a.record_bytes_per_day),
    ):
        if v is not None and not (math.isfinite(v) and v > 0):  # 0 or less: every batch refused; NaN: none
            print(f"cloud-trainer serve: {opt} {v} must be a number above 0", file=sys.stderr)
            return 2
    if a.retain_days is not None:
        from cloud_trainer.fleet.store import RETAIN_DAYS_LEAST

        given = a.retain_days
        try:
            a.retain_days = float(given)
        except ValueError:
            a.retain_days = math.nan
        # 0: everything deleted at once; 0.0001: seconds after it came
        if not (math.isfinite(a.retain_days) and a.retain_days >= RETAIN_DAYS_LEAST):
            print(
                f"cloud-trainer serve: --retain-days {given[:40]!r} must be a number of days, "
                f"{RETAIN_DAYS_LEAST:g} or more (leave it out to keep everything)",
                file=sys.stderr,
            )
            return 2
    if a.console_tenant is not None:
        from cloud_trainer.pki import TENANT_RE

        if not TENANT_RE.fullmatch(a.console_tenant):  # "" (an unset variable's) pinned none: ?tenant= chose
            print(
                f"cloud-trainer serve: --console-tenant {a.console_tenant[:80]!r} is not a tenant id (1-63 "
                "lowercase letters, digits and '-', not starting with '-')",
                file=sys.stderr,
            )
            return 2
    # the console's HTTP server is IPv4: ::1 (loopback) died at the bind with a traceback
    if a.console_port is not None and ":" in a.console_host:
        print(
            f"cloud-trainer serve: --console-host {a.console_host}: the console listens on an IPv4 address or a "
            "name (127.0.0.1, the default)",
            file=sys.stderr,
        )
        return 2
    if a.console_port is not None and a.console_tenant is None and not _loopback(a.console_host):
        print(
            f"cloud-trainer serve: --console-host {a.console_host} without --console-tenant: the console has no "
            "login and shows any tenant its URL names (?tenant=); bind it to 127.0.0.1 (a reverse proxy with "
            "authentication in front) or pin it to one tenant with --console-tenant T",
            file=sys.stderr,
        )
        return 2
    if a.port_file is not None and (why := _unwritable(a.port_file)):  # one line now, not a traceback once up
        print(f"cloud-trainer serve: cannot write --port-file {a.port_file} ({why})", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for f in ("ca.pem", "server.pem", "server.key"):
        if not (a.pki / f).exists():
            print(
                f"cloud-trainer serve: {a.pki / f} is missing; create it with `cloud-trainer pki init|server "
                f"--dir {a.pki}`",
                file=sys.stderr,
            )
            return 2
    quiet_grpc_log()
    from cloud_trainer.fleet.guard import QuotaLimits, Quotas
    from cloud_trainer.fleet.portguard import PortTaken
    from cloud_trainer.fleet.service import FleetServer

    bounds = {
        k: v
        for k, v in (
            ("in_flight_bytes", a.in_flight_bytes),
            ("tenant_in_flight_bytes", a.tenant_in_flight_bytes),
            ("in_flight_wait_s", a.in_flight_wait_s),
            ("record_bytes_per_day", a.record_bytes_per_day),
        )
        if v is not None
    }

    async def run() -> None:
        registry = a.registry or a.data / "registry"
        srv = FleetServer(
            a.data,
            a.port,
            a.pki / "ca.pem",
            a.pki / "server.pem",
            a.pki / "server.key",
            a.host,
            registry,
            store=a.store,
            blobs=a.blobs,
            s3_endpoint=a.s3_endpoint,
            step_timeout_s=a.step_timeout_s,
            keep_rollouts=a.keep_rollouts,
            replicas=a.replicas,
            quotas=Quotas(QuotaLimits(**bounds)) if bounds else None,
            retain_days=a.retain_days,
        )
        await srv.start()
        quiet_gc()
        console = None
        if a.console_port is not None:
            from cloud_trainer.fleet.console import Console

            console = Console(
                srv,
                a.console_host,
                a.console_port,
                tenant=a.console_tenant,
                allowed_hosts=a.console_allowed_host,
            )
            console.start()
            if console_moved:  # a proxy elsewhere that reached it on --host before this release: told why not
                log.warning(
                    "the console listens on 127.0.0.1:%d only, not on --host %s (it has no login): a reverse proxy "
                    "on this machine reaches it there; for one elsewhere, --console-host ADDR --console-tenant T",
                    console.port,
                    a.host,
                )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        # only now: a supervisor that stops the service as soon as it says it listens gets a clean stop
        said = json.dumps({"port": srv.port, "console_port": console.port if console else None})
        if a.port_file is not None:  # whole or not at all: a supervisor waiting for it never reads half
            tmp = a.port_file.with_name(a.port_file.name + ".tmp")
            tmp.write_text(said)
            os.replace(tmp, a.port_file)
        print(
            f"fleet service listening on {a.host}:{srv.port} (data {a.data}, registry {registry})"
            + (f"; console http://{a.console_host}:{console.port}/" if console else ""),
            flush=True,
        )
        await stop.wait()
        if console:
            console.stop()
        await srv.stop()
        if a.port_file is not None:  # stopped cleanly: nothing listens on its ports any more (a file that
            # names other ports is a later start's)
            with contextlib.suppress(OSError):
                if a.port_file.read_text() == said:
                    a.port_file.unlink()

    try:
        asyncio.run(run())
    except (ConnectionError, ValueError) as exc:  # a store URL that is wrong or a database that is not there
        print(f"cloud-trainer serve: {exc}", file=sys.stderr)
        return 2
    except PortTaken as exc:  # another store's service on the port, or a port that is not free: it runs on
        print(f"cloud-trainer serve: {exc}", file=sys.stderr)
        return 2
    return 0
