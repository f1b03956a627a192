"""A sizing record (``item_time.json``) names the CPU it was measured on, and one measured on another CPU is not
taken. A virtual machine's model name is often generic: "Intel(R) Xeon(R) Processor" on this Sapphire Rapids (AMX,
VNNI) as on an older guest without VNNI, where the same INT8 model takes about twice as long an item. The record's
CPU was architecture, model name and cores only: a data folder restored on a gateway of the same model name and
core count but without VNNI took this one's times as its own. The CPU is told apart by its instruction sets too;
"another CPU" is the real thing, the agent's code run under QEMU emulating a Nehalem (SSE4.2, no AVX), whose model
name QEMU leaves as this machine's."""

from __future__ import annotations

import shutil

import pytest

from edge_agent import sizing
from model_packager.cpu import cpu_flags
from tests.integration.test_int8_parity import nehalem_run


@pytest.mark.skipif(
    shutil.which("qemu-x86_64") is None, reason="qemu-user is not installed (make setup installs it)"
)
@pytest.mark.skipif(
    cpu_flags() == ("sse4_2",), reason="this CPU is what QEMU would emulate: nothing to tell apart"
)
@pytest.mark.timeout(600)  # may wait for the emulated run another worker has started
def test_a_sizing_record_of_a_cpu_of_the_same_model_name_without_its_instruction_sets_is_not_this_cpus(
    tmp_path_factory,
):
    # the record is made by ``sizing.record`` run under the emulated Nehalem in the process
    # test_int8_parity.py's SSE4.2 test runs there (made once per run: the emulated start is most of the time)
    _, folder = nehalem_run(tmp_path_factory)
    rec = sizing.recorded(folder)
    assert rec is not None and rec["item_ms"] == 18.0
    # before: both 'x86_64 Intel(R) Xeon(R) Processor x2' (the model name QEMU passes through)
    assert rec["cpu"] != sizing.cpu(), rec["cpu"]
    assert rec["cpu"].endswith("[sse4_2]"), rec["cpu"]
