"""The files the gateway's trust rests on: the package keys it trusts and its data folder. A trusted key file,
or a folder of them, that every user of the machine can change (mode o+w, or a folder on the way to it that is,
unless that folder has the sticky bit as /tmp has) is refused wherever keys are loaded: at install, at the
start's check of an installed package (which is kept: the keys are at fault, not the package) and by
``edge-agent validate``; a symbolic link is judged by where it points too. A data folder anyone can change is
a warning. Real signed packages, the slot's real child-process install, real ONNX Runtime."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from edge_agent.config import ConfigError, parse_config
from edge_agent.models.config import ModelConfig
from edge_agent.models.slot import ModelSlot, SlotError
from edge_agent.models.store import ModelStore
from model_packager import SignatureError, load_trusted_keys
from tests.support.models import make_keypair, make_package


@pytest.fixture(scope="module")
def pkgs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trust")
    key, pub = make_keypair(tmp / "keys")
    return {"v1": make_package(tmp, kind="vision", version="1.0.0", key=key, seed=1), "pub": pub}


def _folder(tmp_path: Path, pub: Path, name: str, mode: int) -> Path:
    d = tmp_path / name
    d.mkdir()
    shutil.copy(pub, d / "fleet.pub")
    os.chmod(d / "fleet.pub", 0o644)
    os.chmod(d, mode)
    return d


def test_a_trusted_key_every_user_can_change_is_refused_naming_it(tmp_path, pkgs):
    safe = _folder(tmp_path, pkgs["pub"], "safe", 0o755)
    assert len(load_trusted_keys([safe])) == 1 and len(load_trusted_keys([safe / "fleet.pub"])) == 1
    sticky = _folder(tmp_path, pkgs["pub"], "sticky", 0o1777)  # as /tmp: others cannot replace the file
    assert len(load_trusted_keys([sticky / "fleet.pub"])) == 1

    open_dir = _folder(tmp_path, pkgs["pub"], "open", 0o777)  # anyone may add a key
    file_in_sticky = sticky / "fleet.pub"
    loose_file = _folder(tmp_path, pkgs["pub"], "loose", 0o755) / "fleet.pub"
    os.chmod(loose_file, 0o666)
    linked = _folder(tmp_path, pkgs["pub"], "linked", 0o755)  # a link to a key in a folder anyone may change
    os.unlink(linked / "fleet.pub")
    os.symlink(open_dir / "fleet.pub", linked / "fleet.pub")
    cases = [
        ([open_dir], open_dir),
        ([open_dir / "fleet.pub"], open_dir),
        ([sticky], sticky),  # a folder of keys: the sticky bit does not stop anyone adding one
        ([loose_file], loose_file),
        ([linked], open_dir),
        ([linked / "fleet.pub"], open_dir),
    ]
    assert len(load_trusted_keys([file_in_sticky])) == 1
    for paths, culprit in cases:
        with pytest.raises(SignatureError) as err:
            load_trusted_keys(paths)
        assert err.value.code == "unsafe_trusted_key", paths
        assert f"chmod o-w {culprit}`" in str(err.value), (paths, str(err.value))


async def test_the_start_refuses_writable_trusted_keys_and_keeps_the_installed_package(tmp_path, pkgs):
    keys = _folder(tmp_path, pkgs["pub"], "keys", 0o755)
    cfg = ModelConfig(package=str(pkgs["v1"]), name="part-inspection", engine="onnxruntime")
    store = ModelStore(tmp_path / "data" / "models" / "vision")  # installed and serving before
    folder = store.install(pkgs["v1"], load_trusted_keys([keys])).root
    store.set_current(folder, None)
    os.chmod(keys, 0o777)
    s = ModelSlot("vision", cfg, tmp_path / "data", [keys])
    with pytest.raises(SlotError, match=rf"trusted key folder {keys}: .*chmod o-w {keys}`"):
        await s.start()
    assert folder.is_dir() and not (folder.parent / ".rejected").exists()


def test_validate_refuses_writable_trusted_keys_and_warns_of_files_anyone_can_change(tmp_path, pkgs):
    keys = _folder(tmp_path, pkgs["pub"], "keys", 0o755)
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    doc = {
        "agent": {"id": "gw1", "data_dir": str(data)},
        "trusted_keys": [str(keys)],
        "models": {"vision": {"package": str(pkgs["v1"])}},
    }
    assert parse_config(doc, "line3.yaml").warnings == []
    os.chmod(data, 0o777)
    warned = parse_config(doc, "line3.yaml").warnings
    assert len(warned) == 1 and warned[0].startswith(f"line3.yaml: agent.data_dir: {data} can be changed"), (
        warned
    )
    drop = tmp_path / "drop"  # a package in a folder anyone may write: anyone may swap in another version
    drop.mkdir(mode=0o755)
    shutil.copy(pkgs["v1"], drop / "vision.edgepkg")
    os.chmod(drop, 0o777)
    os.chmod(data, 0o755)
    warned = parse_config(
        {**doc, "models": {"vision": {"package": str(drop / "vision.edgepkg")}}}, "line3.yaml"
    ).warnings
    assert len(warned) == 1 and warned[0].startswith("line3.yaml: models.vision.package: "), warned
    assert f"chmod o-w {drop}`" in warned[0], warned
    os.chmod(keys / "fleet.pub", 0o666)
    with pytest.raises(ConfigError) as err:
        parse_config(doc, "line3.yaml")
    (line,) = [e for e in err.value.errors if "trusted_keys" in e]
    assert line.startswith("line3.yaml: trusted_keys[0]: ") and f"chmod o-w {keys / 'fleet.pub'}`" in line, (
        line
    )
