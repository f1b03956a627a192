"""The demo starts its simulators (then its agents) at once and waits for them to listen: a process that exits at
once is named at once with its code and log, whichever is still starting ahead of it; at the deadline every one
not listening is named; one whose port another program answered for is named when found dead."""

from __future__ import annotations

import socket
import sys
import time

import pytest

from simulators.launcher import Supervisor, ensure_running, service_port, wait_listening

HANG = "import time; time.sleep(60)"


def _start(sup: Supervisor, name: str, code: str):
    return sup.start(name, [sys.executable, "-c", code])


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
                [(service_port(), hung, "machine line1"), (service_port(), bad, "camera line2")], 60
            )
        assert time.monotonic() - t0 < 20  # not after the machine's 60 s
        assert "camera line2 exited with code 3" in str(err.value)
        assert "Address already in use" in str(err.value)  # the log's last lines, not only "see the logs"
    finally:
        sup.close()


def test_at_the_deadline_every_process_not_listening_is_named(tmp_path):
    sup = Supervisor(tmp_path)
    try:
        a, b = _start(sup, "a", HANG), _start(sup, "b", HANG)
        with socket.socket() as ready:
            ready.bind(("127.0.0.1", 0))
            ready.listen()
            starting = [(service_port(), a, "machine line1"), (ready.getsockname()[1], b, "camera line1")]
            starting.append((service_port(), b, "camera line2"))
            with pytest.raises(TimeoutError) as err:
                wait_listening(starting, 1)
        assert "machine line1" in str(err.value) and "camera line2" in str(err.value)
        assert "camera line1" not in str(err.value)  # it listens
    finally:
        sup.close()


def test_a_process_whose_port_another_program_answers_for_is_named_when_it_has_died(tmp_path):
    sup = Supervisor(tmp_path)
    with socket.socket() as other:  # another program took the port chosen for ours before ours bound it
        other.bind(("127.0.0.1", service_port()))
        other.listen()
        port = other.getsockname()[1]
        bind = f"import socket; socket.socket().bind(('127.0.0.1', {port}))"
        ours = _start(sup, "machine", bind)
        try:
            starting = [(port, ours, "machine line1")]
            wait_listening(starting, 10)  # the other program answers: it cannot be told from ours here
            ours.popen.wait(10)
            with pytest.raises(
                RuntimeError, match=r"(?s)machine line1 exited with code 1 after .*Address already"
            ):
                ensure_running(starting)
        finally:
            sup.close()
