"""`edge-sim machine`: an OPC UA server (asyncua) that serves one simulated rotating machine.

Every ``period_ms`` of wall time the machine advances ``period_ms * time_scale`` of machine time
(``simulators.vibration.MachineSim``) and publishes a vibration window and its scalars. Address
space, namespace ``urn:factory-edge:sim`` (index 2), string NodeIds under Objects/<name>:

=========================  ========  ============================================================
NodeId                     type      meaning
=========================  ========  ============================================================
ns=2;s=<name>              Object    the machine
ns=2;s=<name>.Vibration    Double[]  acceleration window (g), ``window_samples`` long
ns=2;s=<name>.Temperature  Double    bearing housing temperature, °C
ns=2;s=<name>.Speed        Double    shaft speed, rpm
ns=2;s=<name>.Load         Double    load fraction 0..1
ns=2;s=<name>.RunState     String    running | failed
ns=2;s=<name>.Reject       Boolean   writable; each write logged, writes of true counted
ns=2;s=<name>.Alarm        Boolean   writable; each write logged and counted
ns=2;s=<name>.RejectCount  Int32     number of ``true`` writes to Reject
ns=2;s=<name>.Truth        Object    ground truth (for evaluation only; a real PLC has none)
ns=2;s=<name>.Truth.FaultType      String  one of ``vibration.FAULTS``
ns=2;s=<name>.Truth.HealthIndex    Double  1 (new) .. 0 (failed)
ns=2;s=<name>.Truth.TimeToFailure  Double  seconds of machine time; -1 when no failure is coming
=========================  ========  ============================================================

A failed machine stays failed (RunState ``failed``, health 0). Limits: one machine per server;
security (Basic256Sha256 Sign / SignAndEncrypt, username/password, trusted client certificates)
is for tests and demos, with certificates the caller provides.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from asyncua import Server, ua
from asyncua.common.callback import CallbackType
from asyncua.common.utils import ServiceError
from asyncua.crypto.permission_rules import User, UserRole

from simulators.vibration import MachineSim, Scenario, VibrationError

NAMESPACE_URI = "urn:factory-edge:sim"
log = logging.getLogger("simulators.machine")


@dataclass(frozen=True)
class MachineSecurity:
    """Server certificate and key (PEM or DER), users (name -> password), trusted client certificates.

    With ``trusted_client_certs`` set, only those client certificates may open a secure channel.
    ``allow_anonymous`` keeps anonymous logins (otherwise a username is required).
    """

    cert_path: Path
    key_path: Path
    users: dict[str, str] = field(default_factory=dict)
    trusted_client_certs: tuple[Path, ...] | None = None
    allow_anonymous: bool = False
    sign_only_too: bool = True  # also offer Sign (not only SignAndEncrypt)
    # or Aes128Sha256RsaOaep / Aes256Sha256RsaPss (ua.SecurityPolicyType names)
    policy: str = "Basic256Sha256"


class _Users:
    def __init__(self, users: dict[str, str], allow_anonymous: bool) -> None:
        self.users, self.allow_anonymous = users, allow_anonymous

    def get_user(self, iserver, username=None, password=None, certificate=None):  # asyncua UserManager
        if username is None:
            return User(role=UserRole.User) if self.allow_anonymous else None
        if self.users.get(username) == password:
            return User(role=UserRole.User, name=username)
        log.warning("login refused for user %r (wrong password or unknown user)", username)
        return None


class MachineServer:
    """The machine as an in-process OPC UA server: ``await start()``, ``.endpoint``, ``await stop()``."""

    def __init__(
        self,
        port: int,
        name: str = "Machine1",
        seed: int = 0,
        scenario: Scenario | None = None,
        period_ms: int = 200,
        time_scale: float = 1.0,
        security: MachineSecurity | None = None,
        host: str = "127.0.0.1",
        window_samples: int = 2048,
        sample_rate_hz: float = 10000.0,
    ) -> None:
        if period_ms < 1 or time_scale <= 0:
            raise VibrationError(f"period_ms must be >= 1 and time_scale > 0 (got {period_ms}, {time_scale})")
        self.port, self.name, self.host = port, name, host
        self.period_ms, self.time_scale, self.security = period_ms, time_scale, security
        self.sim = MachineSim(seed, scenario, window_samples, sample_rate_hz)
        self.reject_count = 0
        self.alarm_count = 0
        self.writes: list[tuple[str, object]] = []  # (tag, value) of every client write, newest last
        self.last_state = None
        self._forced_status: dict[str, ua.StatusCode] = {}
        self._server: Server | None = None
        self._task: asyncio.Task | None = None
        self._ids: dict[str, ua.NodeId] = {}

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}/factory/"

    def _advertise(self, server: Server) -> None:
        """Put the bound port into the endpoint the server describes (its endpoints were made before it bound)."""
        from urllib.parse import urlparse

        server.endpoint = urlparse(self.endpoint)
        for edp in server.iserver.endpoints:
            edp.EndpointUrl = self.endpoint
            edp.Server.DiscoveryUrls = [self.endpoint]

    def node_id(self, tag: str) -> str:
        """String form of a tag's NodeId, e.g. ``node_id('Vibration') == 'ns=2;s=Machine1.Vibration'``."""
        return f"ns=2;s={self.name}.{tag}"

    def force_status(self, tag: str, status: str | None) -> None:
        """Publish ``tag`` with this status code name (e.g. 'BadSensorFailure') from now on; None clears."""
        if status is None:
            self._forced_status.pop(tag, None)
        else:
            self._forced_status[tag] = ua.StatusCode(getattr(ua.StatusCodes, status))

    async def inject(self, tag: str, value: float, source_time_s: float | None = None) -> None:
        """Test hook: publish one Double value on ``tag`` now (e.g. NaN, or an old source timestamp)."""
        import datetime as _dt

        ts = _dt.datetime.fromtimestamp(source_time_s if source_time_s is not None else time.time(), _dt.UTC)
        await self._write(tag, float(value), ua.VariantType.Double, ts)

    async def start(self) -> None:
        server = Server(
            user_manager=_Users(self.security.users, self.security.allow_anonymous) if self.security else None
        )
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name(f"factory-edge machine {self.name}")
        if self.security:
            policy = self.security.policy
            policies = [ua.SecurityPolicyType[f"{policy}_SignAndEncrypt"]]
            if self.security.sign_only_too:
                policies.append(ua.SecurityPolicyType[f"{policy}_Sign"])
            server.set_security_policy(policies)
            await server.load_certificate(str(self.security.cert_path))
            await server.load_private_key(str(self.security.key_path))
            tokens = [ua.UserNameIdentityToken]
            if self.security.allow_anonymous:
                tokens.append(ua.AnonymousIdentityToken)
            server.set_identity_tokens(tokens)
            if self.security.trusted_client_certs is not None:
                server.set_certificate_validator(self._trust_validator(self.security.trusted_client_certs))
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = await server.register_namespace(NAMESPACE_URI)
        if idx != 2:  # documented NodeIds say ns=2
            raise VibrationError(f"namespace {NAMESPACE_URI} got index {idx}, expected 2")
        obj = await server.nodes.objects.add_object(
            ua.NodeId(self.name, idx), ua.QualifiedName(self.name, idx)
        )
        n = self.sim.window_samples

        async def var(parent, tag: str, value, vtype: ua.VariantType, writable: bool = False):
            nid = ua.NodeId(f"{self.name}.{tag}", idx)
            node = await parent.add_variable(
                nid, ua.QualifiedName(tag.split(".")[-1], idx), ua.Variant(value, vtype)
            )
            if writable:
                await node.set_writable()
            self._ids[tag] = nid
            return node

        await var(obj, "Vibration", [0.0] * n, ua.VariantType.Double)
        for tag in ("Temperature", "Speed", "Load"):
            await var(obj, tag, 0.0, ua.VariantType.Double)
        await var(obj, "RunState", "running", ua.VariantType.String)
        await var(obj, "Reject", False, ua.VariantType.Boolean, writable=True)
        await var(obj, "Alarm", False, ua.VariantType.Boolean, writable=True)
        await var(obj, "RejectCount", 0, ua.VariantType.Int32)
        truth = await obj.add_object(ua.NodeId(f"{self.name}.Truth", idx), ua.QualifiedName("Truth", idx))
        await var(truth, "Truth.FaultType", "healthy", ua.VariantType.String)
        await var(truth, "Truth.HealthIndex", 1.0, ua.VariantType.Double)
        await var(truth, "Truth.TimeToFailure", -1.0, ua.VariantType.Double)
        server.subscribe_server_callback(CallbackType.PostWrite, self._on_write)
        await server.start()
        if self.port == 0 and server.bserver is not None:  # the port the kernel handed out, advertised
            self.port = server.bserver.port
            self._advertise(server)
        self._server = server
        await self._publish(0.0)
        self._task = asyncio.create_task(self._run(), name=f"machine-{self.name}")

    def _trust_validator(self, paths: tuple[Path, ...]):
        from cryptography import x509

        trusted = set()
        for p in paths:
            data = Path(p).read_bytes()
            cert = (
                x509.load_pem_x509_certificate(data)
                if b"-----BEGIN" in data
                else x509.load_der_x509_certificate(data)
            )
            trusted.add(cert.fingerprint(cert.signature_hash_algorithm))

        async def validate(cert, app_description) -> None:
            if cert.fingerprint(cert.signature_hash_algorithm) not in trusted:
                log.warning(
                    "client certificate %s refused: not in the trusted list", cert.subject.rfc4514_string()
                )
                raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)

        return validate

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop()

    async def _on_write(self, event, dispatcher) -> None:
        results = event.response_params or []
        for i, wv in enumerate(event.request_params.NodesToWrite):
            tag = next((t for t, nid in self._ids.items() if nid == wv.NodeId), None)
            if tag not in ("Reject", "Alarm"):
                continue
            ok = i < len(results) and results[i].is_good()
            value = wv.Value.Value.Value if wv.Value and wv.Value.Value else None
            log.info("%s.%s written: %r (%s)", self.name, tag, value, "ok" if ok else "refused")
            if not ok:
                continue
            self.writes.append((tag, value))
            if tag == "Reject" and value is True:
                self.reject_count += 1
                await self._write("RejectCount", self.reject_count, ua.VariantType.Int32)
            elif tag == "Alarm":
                self.alarm_count += 1

    async def _write(self, tag: str, value, vtype: ua.VariantType, ts=None) -> None:
        assert self._server is not None
        status = self._forced_status.get(tag, ua.StatusCode(ua.StatusCodes.Good))
        dv = ua.DataValue(ua.Variant(value, vtype), StatusCode=status, SourceTimestamp=ts, ServerTimestamp=ts)
        await self._server.write_attribute_value(self._ids[tag], dv)

    async def _publish(self, dt_s: float) -> None:
        x, st = self.sim.step(dt_s)
        self.last_state = st
        import datetime as _dt

        ts = _dt.datetime.now(_dt.UTC)
        D, S = ua.VariantType.Double, ua.VariantType.String
        await self._write("Vibration", x.tolist(), D, ts)
        await self._write("Temperature", st.temperature_c, D, ts)
        await self._write("Speed", st.speed_rpm, D, ts)
        await self._write("Load", st.load, D, ts)
        await self._write("RunState", "failed" if st.failed else "running", S, ts)
        await self._write("Truth.FaultType", st.fault, S, ts)
        await self._write("Truth.HealthIndex", st.health, D, ts)
        ttf = -1.0 if st.time_to_failure_s is None else st.time_to_failure_s
        await self._write("Truth.TimeToFailure", ttf, D, ts)

    async def _run(self) -> None:
        period = self.period_ms / 1000.0
        next_t = time.monotonic() + period
        while True:
            await asyncio.sleep(max(0.0, next_t - time.monotonic()))
            next_t += period
            try:
                await self._publish(period * self.time_scale)
            except Exception:  # the server keeps serving even if one update fails
                log.exception("machine %s: update failed", self.name)


_SEVERAL = (
    "edge-sim machine: --port 0 on --host {host} listens on several addresses, each on a port of its own, so no one "
    "port can be advertised or written; give one address (e.g. --host 127.0.0.1) or a --port"
)


def _addresses(host: str) -> int:
    """How many addresses a server bound to ``host`` listens on (as asyncio's ``create_server`` resolves it); 1 when
    the name does not resolve (the start then says why)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return 1
    return len({info[4][0] for info in infos})


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="edge-sim machine", description="OPC UA server of one simulated machine"
    )
    ap.add_argument("--port", type=int, default=4840, help="0: any free port (see --port-file)")
    ap.add_argument(
        "--port-file", type=Path, help='once listening, write {"port": N} here (the port got for --port 0)'
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--name", default="Machine1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--scenario",
        type=Path,
        help="YAML with phases (default: healthy 60 s, then bearing_outer degrading to failure over 600 s)",
    )
    ap.add_argument("--period-ms", type=int, default=200)
    ap.add_argument("--time-scale", type=float, default=1.0, help="machine seconds per wall second")
    a = ap.parse_args(argv)
    if a.port_file:
        from simulators.launcher import port_file_unwritable

        if why := port_file_unwritable(a.port_file):
            print(f"edge-sim machine: cannot write --port-file {a.port_file} ({why})", file=sys.stderr)
            return 2
    if a.port == 0 and _addresses(a.host) > 1:  # told at once, before the server starts
        print(_SEVERAL.format(host=a.host), file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("asyncua", "asyncua.server"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        scenario = Scenario.from_yaml(a.scenario) if a.scenario else None
        srv = MachineServer(a.port, a.name, a.seed, scenario, a.period_ms, a.time_scale, host=a.host)
    except VibrationError as e:
        print(f"edge-sim machine: {e}")
        return 2

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await srv.start()
        except OSError as e:
            print(f"edge-sim machine: cannot listen on {a.host}:{a.port} ({e.strerror}); pick another --port")
            return 1
        if srv.port == 0:  # port 0 on a name of several addresses: the kernel gave each its own port
            await srv.stop()
            print(_SEVERAL.format(host=a.host), file=sys.stderr)
            return 2
        if a.port_file:
            from simulators.launcher import write_port_file

            write_port_file(a.port_file, port=srv.port)
        print(
            f"machine {a.name} listening on {srv.endpoint} (NodeIds {srv.node_id('Vibration')} ...)",
            flush=True,
        )
        await stop.wait()
        await srv.stop()
        if a.port_file:  # stopped cleanly: nothing listens on the port it names any more
            from simulators.launcher import remove_port_file

            remove_port_file(a.port_file, port=srv.port)
        return 0

    return asyncio.run(run())
