"""The same package installed again over its installed folder (a fleet's rollback to the previous version, a
deployment sending bytes already installed): the folder was removed before the new copy moved in. A power cut
between left no folder, and the start removed the verified copy (a ``.part``) too: the slot had to download the
model again, or served another. The installed folder is now moved aside until the new copy is in place, and a start
puts it back. Shown with a real SIGKILL of a child process at the move."""

from __future__ import annotations

import signal
import subprocess
import sys

from edge_agent.models.store import ModelStore
from model_packager import load_trusted_keys
from tests.support.models import make_package

# the child: the package installed again, SIGKILLed as the new copy is moved in
_KILLED_AT_THE_MOVE = """
import os, signal, sys
from pathlib import Path
import edge_agent.models.store as s
from model_packager import load_trusted_keys
real = os.replace
def replace(src, dst):
    if Path(src).name.startswith(".incoming-"):
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst)
s.os.replace = replace
s.ModelStore(sys.argv[1], clean=False).install(Path(sys.argv[2]), load_trusted_keys([sys.argv[3]]))
"""


def test_a_kill_as_the_same_package_is_installed_again_leaves_its_folder_installed(tmp_path):
    pkg = make_package(tmp_path, kind="signal", version="1.0.0")
    trusted = tmp_path / "keys" / "signing.pub"
    store = ModelStore(tmp_path / "store")
    folder = store.install(pkg, load_trusted_keys([trusted])).root
    store.set_current(folder, None)
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_AT_THE_MOVE, str(store.root), str(pkg), str(trusted)], timeout=120
    )
    assert done.returncode == -signal.SIGKILL
    again = ModelStore(store.root)  # the slot's start
    assert again.current() == folder.name
    again.verify(folder.name, load_trusted_keys([trusted]))  # whole, as installed
    left = [
        p.name for p in store.root.iterdir() if p.name.endswith(".part") or p.name.startswith(".replaced-")
    ]
    assert left == []  # the new copy (cut short: not trusted) and the folder moved aside: gone
