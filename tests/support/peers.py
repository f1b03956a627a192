"""Real peers the test session starts on 127.0.0.1 with free ports."""

from __future__ import annotations

import contextlib
import math
import os
import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A port free now, for a peer a test starts next. Drawn at random below the kernel's ephemeral range: a
    port the kernel handed out (``bind(0)``) is the one it hands next to another worker's outgoing connection
    or ``bind(0)``, and a peer then failed to start with "Address already in use" (seen in a full test run);
    below that range only another free_port() of this run can meet it, one chance in thousands."""
    lo, hi = _ephemeral_range()
    top = min(lo - 1, 65535)
    if top - 10000 >= 1024:
        rng = random.SystemRandom()
        for _ in range(64):
            port = rng.randint(top - 10000, top)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# how long a peer whose port listened at the wait's first look, where /proc cannot tell whose the listener is, is
# given to exit before the listener is taken for its own (mosquitto exits within milliseconds on a port taken)
HELD_GRACE_S = 1.0


def wait_port(
    port: int, timeout_s: float = 10.0, host: str = "127.0.0.1", proc: subprocess.Popen | None = None
) -> None:
    """Return once something listens on ``port``; ``TimeoutError`` after ``timeout_s``, or ``RuntimeError`` as
    soon as ``proc`` (the peer meant to listen) has exited."""
    deadline = time.monotonic() + timeout_s
    # the port listening before it was once found closed: maybe another listener's (a peer of another test drew the
    # port too), not ``proc``'s, which then exits ("Address already in use"); taken for it, the test talked to that
    # other peer. Looked at only then: /proc's tables cost ~5 ms a look. Where /proc cannot tell (``_listens`` None:
    # a root without CAP_SYS_PTRACE, as in a container, reads no fd of a broker that dropped to user mosquitto), the
    # peer is given HELD_GRACE_S to exit so
    held = proc is not None
    grace = math.inf
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited ({proc.returncode}) before listening on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                if not held or proc is None:
                    return
                mine = _listens(proc.pid, port, host)
                if mine or (mine is None and time.monotonic() >= grace):
                    return
                if mine is None:
                    grace = min(grace, time.monotonic() + HELD_GRACE_S)
        except OSError:
            held = False
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s}s")


def _listens(pid: int, port: int, host: str) -> bool | None:
    """Whether process ``pid`` holds a socket listening on TCP ``port`` (Linux's /proc; its tcp6 table read only
    when the tcp one has none of it); None: not known here (no /proc, the process's fds not readable, or the tables
    show no listener on the port at all: WSL1's are empty, a sandbox's may be another view). False only when they
    show one and none is the process's: taken so, a peer listening at the first look failed its start there."""
    try:
        fds = set()
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(FileNotFoundError):  # (closed meanwhile; not readable: not known)
                fds.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        seen = False
        for table in ("tcp6",) if ":" in host else ("tcp", "tcp6"):
            for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
                f = line.split()
                if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                    if f"socket:[{f[9]}]" in fds:
                        return True
                    seen = True
        return False if seen else None
    except (OSError, IndexError, ValueError):
        return None


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )


@dataclass
class Mosquitto:
    """A real Mosquitto broker on a free loopback port; restartable on the same port."""

    workdir: Path
    port: int = 0
    tls_port: int | None = None
    extra_conf: str = ""
    proc: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        if not self.port:
            self.port = free_port()

    @property
    def conf_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    def start(self, timeout_s: float = 30.0) -> Mosquitto:
        """Start it and wait until it listens: up to ``timeout_s`` (a loaded machine's fork and start took over the
        10 s once waited), failing at once if it exits (its log's end said). Stopped on failure: a broker left
        running after a timed-out wait outlived the test session."""
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto is not installed: run `make setup` (apt-get install mosquitto)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            f"max_queued_messages 100000\n{self.extra_conf}\n"
        )
        log_path = self.workdir / "mosquitto.log"
        with open(log_path, "ab") as log:  # the broker has its own copy of the descriptor
            self.proc = subprocess.Popen([binary, "-c", str(self.conf_path)], stdout=log, stderr=log)
        try:
            for port in (self.port, self.tls_port):
                if port:
                    wait_port(port, timeout_s, proc=self.proc)
        except (TimeoutError, RuntimeError) as e:
            self.stop()
            tail = log_path.read_bytes()[-400:].decode(errors="replace").strip()
            raise type(e)(f"mosquitto on port {self.port}: {e}; its log ends: {tail!r}") from e
        except BaseException:  # interrupted (Ctrl-C): not left running either
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()


async def opcua_server(port: int, path: str, namespace: str, object_name: str):
    """A bare asyncua server (no security) at ``opc.tcp://127.0.0.1:port/path/``, not yet started, with
    one object to hang variables on: (server, namespace index, object). Another vendor's PLC, in short:
    the test adds the nodes it needs and calls ``await server.start()``."""
    from asyncua import Server, ua

    srv = Server()
    await srv.init()
    srv.set_endpoint(f"opc.tcp://127.0.0.1:{port}/{path}/")
    srv.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await srv.register_namespace(namespace)
    return srv, idx, await srv.nodes.objects.add_object(idx, object_name)


async def text_node(parent, idx: int, name: str, max_bytes: int):
    """A writable String node ``name`` under ``parent`` stating its own MaxStringLength ``max_bytes`` (a Siemens
    STRING[max_bytes]: a batch or recipe name); (node, its MaxStringLength property)."""
    from asyncua import ua

    node = await parent.add_variable(ua.NodeId(name, idx), name, ua.Variant("", ua.VariantType.String))
    await node.set_writable()
    prop = await node.add_property(
        ua.NodeId(f"{name}.MaxStringLength", idx),
        ua.QualifiedName("MaxStringLength", 0),
        ua.Variant(max_bytes, ua.VariantType.UInt32),
    )
    return node, prop


async def two_namespaces_with_a_speed(port: int):
    """A PLC whose namespaces a restart may register in another order: urn:plc and urn:diag, each with a writable
    ``Speed`` (1.0 and -99.0), not yet started: (server, urn:plc's index, urn:diag's, urn:plc's Speed, urn:diag's)."""
    from asyncua import ua

    srv, plc, _ = await opcua_server(port, "plc", "urn:plc", "Line")
    diag = await srv.register_namespace("urn:diag")
    ours = await srv.nodes.objects.add_variable(ua.NodeId("Speed", plc), "Speed", 1.0)
    other = await srv.nodes.objects.add_variable(ua.NodeId("Speed", diag), "Speed", -99.0)
    await ours.set_writable()
    await other.set_writable()
    return srv, plc, diag, ours, other


async def take_node_away(srv, node) -> None:
    """A program download on ``srv``: the node's monitored items (its value's, and a write target's watched
    attributes') are told it is gone (BadNodeIdUnknown), not linked to a node made again under its id, and the
    node is deleted."""
    from asyncua import ua

    aspace = srv.iserver.aspace
    for attribute in aspace[node.nodeid].attributes.values():
        for handle, callback in list(attribute.datachange_callbacks.items()):
            await callback(handle, ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown)))
            aspace.delete_datachange_callback(handle)
    await srv.delete_nodes([node])


def node_ids_written(srv, idx: int) -> list:
    """The identifiers of the nodes in namespace ``idx`` that write requests reaching ``srv`` carried, in order,
    taken or refused (recorded before the server judges them): what the agent sent to the PLC."""
    from asyncua.common.callback import CallbackType

    sent: list = []

    async def on_write(event, _dispatcher) -> None:
        sent.extend(
            wv.NodeId.Identifier
            for wv in event.request_params.NodesToWrite
            if wv.NodeId.NamespaceIndex == idx
        )

    srv.subscribe_server_callback(CallbackType.PreWrite, on_write)
    return sent


def connections_to(port: int) -> int:
    """This process's open TCP connections (ESTABLISHED) to ``port`` on loopback, from /proc: a client's
    connections that outlive the client show here."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            f = line.split()
            if f[2].endswith(f":{port:04X}") and f[3] == "01":
                inodes.add(f"socket:[{f[9]}]")
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}") in inodes
        except OSError:  # closed meanwhile
            pass
    return n


def child_pids() -> set[int]:
    """This process's children now (from /proc: every thread's), to see that a stop left none behind."""
    me = os.getpid()
    out: set[int] = set()
    for t in os.listdir(f"/proc/{me}/task"):
        try:
            out |= {int(x) for x in Path(f"/proc/{me}/task/{t}/children").read_text().split()}
        except OSError:
            pass
    return out


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str):
    """A real small file system (tmpfs of ``size``, e.g. "1m") mounted on ``folder``: code under test meets
    ENOSPC (and, remounted read-only, EROFS) as on a gateway's disk. Needs root: skipped otherwise."""
    import pytest

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    folder.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
    )
    if r.returncode != 0:
        pytest.skip(f"mount not permitted here: {r.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(folder)], capture_output=True)
        subprocess.run(["umount", "-l", str(folder)], check=True)


@contextlib.contextmanager
def small_ext4(folder: Path, image: Path, free: int):
    """A real ext4 file system (4 KiB blocks, none reserved) mounted on ``folder`` from the image file ``image``, with
    ``free`` bytes free (the rest held by a file ``.filler`` in it): where a folder takes a block, unlike tmpfs.
    Needs root, mkfs.ext4 and a loop device: skipped otherwise."""
    import pytest

    if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
        pytest.skip("mounting an ext4 image needs root and mkfs.ext4")
    with open(image, "wb") as f:
        f.truncate(8 << 20)
    subprocess.run(
        ["mkfs.ext4", "-q", "-m", "0", "-b", "4096", "-F", str(image)], check=True, capture_output=True
    )
    folder.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-o", "loop", str(image), str(folder)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"mounting a loop device not permitted here: {r.stderr.decode().strip()}")
    try:
        st = os.statvfs(folder)
        with open(folder / ".filler", "wb") as f:
            os.posix_fallocate(f.fileno(), 0, st.f_bavail * st.f_frsize - free)
        os.sync()
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)
