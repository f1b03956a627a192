"""The demo starts its simulators (then its agents) at once and waits for them to listen: a process that exits at
once is named at once with its code and log, whichever is still starting ahead of it; at the deadline every one
not listening is named. No port is taken for ours because another program answers on it: the simulators bind
port 0 and write the port they got to a file; a process given a port is ready once it listens there itself."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulators.launcher import Supervisor, ensure_running, service_port, wait_listening, write_port_file

HANG = "import time; time.sleep(60)"
# binds port 0, says which port it got (as `edge-sim machine --port 0 --port-file F` does), then serves
SERVE_PORT_0 = (
    "import socket, sys, time; from pathlib import Path; from simulators.launcher import write_port_file\n"
    "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
    "write_port_file(Path(sys.argv[1]), port=s.getsockname()[1]); time.sleep(60)"
)


def _start(sup: Supervisor, name: str, code: str, *args: str):
    return sup.start(name, [sys.executable, "-c", code, *args])


def test_an_exit_is_named_at_once_with_its_code_and_log_behind_one_that_never_listens(tmp_path):
    sup = Supervisor(tmp_path)
    try:
        hung = _start(sup, "machine", HANG)
        bad = _start(
            sup, "camera", "print('OSError: [Errno 98] Address already in use'); raise SystemExit(3)"
        )
        t0 = time.monotonic()
        with pytest.raises(RuntimeError) as err:
            wait_listening(
                [(tmp_path / "machine.json", hung, "machine line1"), (service_port(), bad, "camera line2")],
                60,
            )
        assert time.monotonic() - t0 < 20  # not after the machine's 60 s
        assert "camera line2 exited with code 3" in str(err.value)
        assert "Address already in use" in str(err.value)  # the log's last lines, not only "see the logs"
    finally:
        sup.close()


def test_port_files_give_the_ports_got_and_at_the_deadline_every_process_not_listening_is_named(tmp_path):
    sup = Supervisor(tmp_path)
    try:
        files = [tmp_path / "cam1.json", tmp_path / "cam2.json"]
        cams = [_start(sup, f"cam{i}", SERVE_PORT_0, str(f)) for i, f in enumerate(files)]
        got = wait_listening(
            [(f, c, f"camera {i}") for i, (f, c) in enumerate(zip(files, cams, strict=True))], 60
        )
        assert got == [json.loads(f.read_text())["port"] for f in files] and 0 not in got
        for port in got:  # each one listens on the port it said
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        a = _start(sup, "a", HANG)
        starting = [(tmp_path / "a.json", a, "machine line1"), (files[0], cams[0], "camera line1")]
        starting.append((service_port(), a, "camera line2"))
        with pytest.raises(TimeoutError) as err:
            wait_listening(starting, 1)
        assert "machine line1" in str(err.value) and "camera line2" in str(err.value)
        assert "camera line1" not in str(err.value)  # it listens
    finally:
        sup.close()


def test_a_process_whose_port_another_program_answers_on_is_not_taken_for_listening(tmp_path):
    """Another program took the port chosen for ours before ours could bind it: it answers there, but it is not
    ours; ours is named when it exits, with its log (ours binds only when told: no race with the first look)."""
    sup = Supervisor(tmp_path)
    with socket.socket() as other:
        other.bind(("127.0.0.1", service_port()))
        other.listen()
        port = other.getsockname()[1]
        go = tmp_path / "go"
        bind = (
            "import os, socket, time\n"
            f"while not os.path.exists({str(go)!r}): time.sleep(0.05)\n"
            f"socket.socket().bind(('127.0.0.1', {port}))"
        )
        ours = _start(sup, "machine", bind)
        try:
            with pytest.raises(TimeoutError, match="machine line1"):  # the other program answers: not ours
                wait_listening([(port, ours, "machine line1")], 1)
            go.touch()
            with pytest.raises(
                RuntimeError, match=r"(?s)machine line1 exited with code 1 before .*Address already"
            ):
                wait_listening([(port, ours, "machine line1")], 30)
        finally:
            sup.close()


def test_a_process_that_listens_itself_on_its_given_port_is_ready(tmp_path):
    sup = Supervisor(tmp_path)
    port = service_port()
    try:
        ours = _start(
            sup,
            "mosquitto",
            f"import socket, time; s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(60)",
        )
        assert wait_listening([(port, ours, "mosquitto")], 60) == [port]
    finally:
        sup.close()


class _Started(Exception):
    """The demo went on past its simulators' wait (to start the MQTT sensors)."""


def test_the_demo_keeps_a_port_file_its_simulator_wrote_before_the_demo_took_up_its_wait(
    tmp_path, monkeypatch
):
    """Each simulator here writes its port file as soon as it is started, before the demo's next statement (as one
    does when the demo is descheduled for a moment right after its start on a loaded machine): the demo reads every
    port at once, not after its whole start-up bound for a file it deleted under the simulator."""
    from simulators import demo as demo_mod
    from simulators.launcher import Narrator, Proc

    monkeypatch.setattr(demo_mod, "START_S", 60)  # a file lost: waited out, then an error
    monkeypatch.setattr(demo_mod, "start_mosquitto", lambda sup, n: 1883)
    demo = demo_mod.Demo(tmp_path, Narrator(stream=io.StringIO()), fast=False, short=True)
    written: dict[str, int] = {}
    children: list[subprocess.Popen] = []

    def start(name, argv, env=None):
        if name == "sensors":
            raise _Started
        path = Path(argv[argv.index("--port-file") + 1])
        written[path.stem] = 40000 + len(written)
        write_port_file(path, port=written[path.stem])
        proc = Proc(name, argv, tmp_path / f"{name}.log")
        proc.popen = subprocess.Popen([sys.executable, "-c", HANG])
        children.append(proc.popen)
        return proc

    monkeypatch.setattr(demo.sup, "start", start)
    t0 = time.monotonic()
    try:
        with pytest.raises(_Started):
            demo.step_factory_and_agents()
        assert time.monotonic() - t0 < 30  # not the start-up bound
        assert {k: demo.ports[k] for k in written} == written
        assert sorted(written) == ["cam-line1", "cam-line2", "cam2-line2", "opcua-line1", "opcua-line2"]
    finally:
        for child in children:
            child.kill()
            child.wait()
        demo.sup.close()


def test_a_process_that_exits_after_it_listened_is_named_with_its_code_and_log_not_a_port_held_by_another(
    tmp_path,
):
    sup = Supervisor(tmp_path)
    try:
        # listens and says so, then dies (crashed, killed) once told
        dies = SERVE_PORT_0.replace("time.sleep(60)", "import os") + (
            "\nwhile not os.path.exists(sys.argv[2]): time.sleep(0.02)"
            "\nprint('MemoryError: camera frame'); raise SystemExit(4)"
        )
        go = tmp_path / "go"
        cam = _start(sup, "camera", dies, str(tmp_path / "cam.json"), str(go))
        (port,) = wait_listening([(tmp_path / "cam.json", cam, "camera line1")], 60)
        ensure_running([(port, cam, "camera line1")])  # listening: running
        go.touch()
        assert cam.popen is not None and cam.popen.wait(30) == 4
        with pytest.raises(RuntimeError) as err:
            ensure_running([(port, cam, "camera line1")])
        assert f"camera line1 exited with code 4 after it listened on 127.0.0.1:{port}" in str(err.value)
        assert "MemoryError: camera frame" in str(err.value)  # the log's last lines say why
        assert "another program" not in str(err.value)  # it did listen itself: no port was taken from it
    finally:
        sup.close()


def test_a_camera_port_file_that_cannot_be_written_is_refused_in_one_line_naming_it(tmp_path, capsys):
    from simulators.camera import main

    where = tmp_path / "no-such-folder" / "cam.json"
    assert main(["--port", "0", "--port-file", str(where)]) == 2
    err = capsys.readouterr().err
    assert err == f"edge-sim camera: cannot write --port-file {where} (No such file or directory)\n"
