"""The install child (``python -m edge_agent.models.install``) as a gateway's start and swap run it: what it
spends beyond its checks (pydantic's plugin scan), and its answer and exit status, written before it ends without
the interpreter's teardown. (Its installs and refusals: tests/integration/test_model_slot_refusals.py and the
slot's tests.)"""

from __future__ import annotations

import json
import subprocess
import sys

from edge_agent.models import install


def test_the_child_looks_up_no_pydantic_plugins_unless_the_environment_says(monkeypatch):
    """pydantic read the metadata of every installed distribution for plugins at the child's first manifest class
    (~10-30 ms of each start and swap with ~110 distributions); a plugin only observes validations, and nobody
    watches the child's. A setting of the user's own is kept."""
    monkeypatch.delenv("PYDANTIC_DISABLE_PLUGINS", raising=False)
    assert install._child_env()["PYDANTIC_DISABLE_PLUGINS"] == "__all__"
    monkeypatch.setenv("PYDANTIC_DISABLE_PLUGINS", "logfire")
    assert install._child_env()["PYDANTIC_DISABLE_PLUGINS"] == "logfire"


def test_the_child_writes_its_answer_and_exit_status_before_it_ends(tmp_path):
    """It ends with ``os._exit`` (no teardown of the interpreter): its answer is written first, even to a file
    (block-buffered), and its exit status still says that a package was refused."""
    from model_packager import generate_keypair

    generate_keypair(tmp_path / "signing.key", tmp_path / "signing.pub")
    out = tmp_path / "answers.jsonl"
    with open(out, "w") as f:
        rc = subprocess.run(
            [sys.executable, "-m", "edge_agent.models.install", "--key", str(tmp_path / "signing.pub")]
            + [str(tmp_path / "store"), str(tmp_path / "absent.edgepkg")],
            stdout=f,
            stderr=subprocess.PIPE,
            env=install._child_env(),
            timeout=120,
        ).returncode
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    assert (
        len(answers) == 1
        and not answers[0]["ok"]
        and answers[0]["error"].endswith("absent.edgepkg does not exist")
    )
    assert rc == 1
