"""`edge-agent validate` verifies each slot's configured package as the agent's install does, and says what the agent
will do with one it refuses (signed by a key the gateway does not trust, damaged, a refused version): a `warning:`
line naming the slot, the file and the reason (it said ok, and the agent's start was the first to tell). The agent
starts all the same: on the package installed in the slot, or, with none (or the installed one refused too, set
aside), with the slot failed and the rest serving (tests/integration/test_slot_failed_at_start.py). Where the agent's
start still ends (a first install the disk has no room for), validate says so in the agent's own words and exits 1,
so that a unit's ExecStartPre stops a restart loop: it said a warning, exit 0."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edge_agent.cli import main
from edge_agent.models.config import ModelConfig
from edge_agent.models.slot import FailedAtStart, ModelSlot, SlotError
from edge_agent.models.store import ModelStore
from model_packager import load_trusted_keys
from tests.support.models import make_keypair, make_package


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("validate-packages")
    key, pub = make_keypair(tmp / "keys")
    _, other_pub = make_keypair(tmp / "other")
    return make_package(tmp, kind="vision", version="1.0.0", key=key, heatmap=False), pub, other_pub


def _config(tmp_path, pkg, pub, **slot) -> str:
    (tmp_path / "cam").mkdir(exist_ok=True)
    cfg = {
        "agent": {"id": "gw", "site": "s", "line": "l", "data_dir": str(tmp_path / "data")},
        "trusted_keys": [str(pub)],
        "http": {"enabled": False},
        "sources": {"cam": {"type": "camera", "url": str(tmp_path / "cam"), "fps": 1}},
        "models": {"vision": {"package": str(pkg), "engine": "onnxruntime", **slot}},
        "pipelines": [{"name": "inspect", "source": "cam", "model": "vision"}],
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.mark.parametrize("bad", ["untrusted key", "truncated", "refused version", "golden check cannot fail"])
def test_validate_names_a_package_the_agent_would_refuse(kit, tmp_path, capsys, bad):
    pkg, pub, other_pub = kit
    slot: dict = {}
    said = {
        "untrusted key": "which is not among the trusted keys",
        "truncated": "vision.edgepkg",
        "refused version": "refused_versions",
        # (published by a registry before publish refused it: verified, and refused at the slot's load)
        "golden check cannot fail": "manifest golden.rtol is 1e+308: must be below 1 where a package is built",
    }[bad]
    if bad == "untrusted key":
        pub = other_pub  # the package's signer is not among the gateway's keys (a rotation not arrived yet)
    elif bad == "truncated":
        data = pkg.read_bytes()
        pkg = tmp_path / "vision.edgepkg"
        pkg.write_bytes(data[: len(data) // 2])
    elif bad == "golden check cannot fail":
        from tests.unit.test_package_hostile import _manifest, _sig, _with

        doc = yaml.safe_load(_manifest(pkg))
        doc["golden"]["rtol"] = 1e308
        new = yaml.safe_dump(doc, sort_keys=False).encode()
        pkg = _with(pkg, tmp_path / "vision.edgepkg", manifest=new, sig=_sig(new, pub.parent / "signing.key"))
    else:
        slot["refused_versions"] = ["1.0.0"]
    path = _config(tmp_path, pkg, pub, **slot)
    assert main(["validate", path]) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "models.vision.package" in ln]
    assert len(lines) == 1 and lines[0].startswith(
        f"warning: {path}: models.vision.package: {pkg} is refused"
    ), err
    assert said in lines[0], lines
    assert "no package is installed in slot 'vision' yet: the agent starts with the slot failed" in lines[0]

    # a slot that holds an installed package starts on it while that one passes its checks: said, not refused. The
    # installed 1.0.0 is refused too where its signer is not trusted or its version is refused: the start sets it
    # aside and the slot starts failed, as with nothing installed (one whose golden check cannot fail is served)
    _install(pkg if bad != "truncated" else kit[0], tmp_path / "data", kit[1])  # (a wide one installs: read)
    assert main(["validate", path]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and said in err, err
    if bad == "golden check cannot fail":  # installed before the agent refused it: a start serves it, said
        assert "models.vision: the package installed in" in err and "models.vision.package" not in err, err
        assert "served as installed before this agent refused it" in err, err
    elif bad != "truncated":
        assert (
            "the package installed in slot 'vision', part-inspection-1.0.0-" in err
            and "is refused too" in err
            and "the agent sets it aside and starts with the slot failed" in err
        ), err
    else:
        assert "the slot starts on the package installed in" in err, err


def _install(pkg: Path, data: Path, pub: Path) -> None:
    """``pkg`` installed in slot vision as a start leaves it (state.json naming it)."""
    store = ModelStore(data / "models" / "vision")
    opened = store.install(pkg, load_trusted_keys([pub]))
    store.set_current(opened.root, None)


async def _start_raises(path: str, tmp_path: Path, pub: Path) -> SlotError:
    """What the agent's start of slot vision raises on the config at ``path``."""
    cfg = yaml.safe_load(Path(path).read_text())
    m, fleet = cfg["models"]["vision"], "cloud" in cfg
    slot = ModelSlot("vision", ModelConfig(**m), tmp_path / "data", load_trusted_keys([pub]), fleet=fleet)
    try:
        await slot.start()
    except SlotError as exc:
        return exc
    await slot.stop()
    raise AssertionError("the slot started")


async def test_validate_and_every_start_agree_where_the_installed_package_is_refused_too(
    kit, tmp_path, capsys
):
    """The installed package's version refused in the config, the configured one damaged: the start sets the
    installed one aside and cannot install the configured one. It ended the agent's start (and validate exited 1),
    while the next start, finding nothing installed, started with the slot failed: under a unit whose ExecStartPre
    runs validate the agent never started again. Every start now starts with the slot failed, and validate warns."""
    pkg, pub, _ = kit
    _install(pkg, tmp_path / "data", pub)
    damaged = tmp_path / "vision.edgepkg"
    damaged.write_bytes(pkg.read_bytes()[: pkg.stat().st_size // 2])
    path = _config(tmp_path, damaged, pub, refused_versions=["1.0.0"])
    assert main(["validate", path]) == 0
    err = capsys.readouterr().err
    (line,) = [ln for ln in err.splitlines() if "models.vision.package" in ln]
    assert "refused too (part-inspection-1.0.0 is a version this agent refuses" in line, line
    first = await _start_raises(path, tmp_path, pub)  # the installed folder set aside
    assert isinstance(
        first, FailedAtStart
    ) and "; nor on the installed package part-inspection-1.0.0-" in str(first), first
    assert main(["validate", path]) == 0
    assert isinstance(await _start_raises(path, tmp_path, pub), FailedAtStart)  # nothing installed now


async def test_validate_fails_where_a_first_install_has_no_room_on_the_disk(kit, tmp_path, capsys):
    """Nothing installed yet and the data folder's disk too small for the package unpacked: the start's install
    is refused for the disk (tried again at the next start), which ends the start, not a slot failed."""
    from tests.support.peers import small_tmpfs

    pkg, pub, _ = kit
    path = _config(tmp_path, pkg, pub)
    with small_tmpfs(tmp_path / "data" / "models", "16k") as models:
        assert main(["validate", path]) == 1
        err = capsys.readouterr().err
        (line,) = [ln for ln in err.splitlines() if "models.vision.package" in ln]
        said = f"model slot 'vision': cannot start on {pkg}: not enough free disk in {models / 'vision'}"
        assert (
            line.startswith(f"{path}: models.vision.package: {said}") and "the agent does not start" in line
        )
        exc = await _start_raises(path, tmp_path, pub)
        assert not isinstance(exc, FailedAtStart) and str(exc).startswith(said), exc


@pytest.mark.parametrize("disk", ["files in whole blocks", "a cut install's leftover"])
async def test_validate_judges_the_room_as_the_install_takes_it(kit, tmp_path, capsys, disk):
    """validate compared the files' byte sum with the free bytes: a disk with room for that sum but not for the
    files in whole blocks (with the manifest, its signature, .package-digest) passed, and every start ended, no
    room; and it counted in use the .part folder a cut install (kill -9, power cut) left, which the start removes
    first: exit 1 for good under ExecStartPre, where the agent starts."""
    from model_packager import verify_package
    from tests.support.peers import small_tmpfs

    pkg, pub, _ = kit
    sizes = [f.size for f in verify_package(pkg, load_trusted_keys([pub])).files]
    path = _config(tmp_path, pkg, pub)
    page = 4096
    if disk == "files in whole blocks":
        size = (-(-sum(sizes) // page) + 1) * page  # the sum fits, the blocks do not
    else:
        size = sum(-(-n // page) * page for n in sizes) + 6 * page  # fits once the leftover is removed
    with small_tmpfs(tmp_path / "data" / "models", str(size)) as models:
        if disk != "files in whole blocks":
            part = models / "vision" / ".incoming-0123456789abcdef.part"
            part.mkdir(parents=True)
            (part / "model.onnx").write_bytes(b"\0" * (size - 2 * page))
        fits = disk != "files in whole blocks"
        assert main(["validate", path]) == (0 if fits else 1), capsys.readouterr().err
        if not fits:
            assert "not enough free disk" in capsys.readouterr().err
            assert not isinstance(await _start_raises(path, tmp_path, pub), FailedAtStart)
            return
        m = yaml.safe_load(Path(path).read_text())["models"]["vision"]
        slot = ModelSlot("vision", ModelConfig(**m), tmp_path / "data", load_trusted_keys([pub]))
        await slot.start()  # the leftover removed, the package installed
        await slot.stop()


async def test_validate_counts_the_folders_an_install_makes_where_a_folder_takes_a_block(
    kit, tmp_path, capsys
):
    """On ext4 a folder takes a block (none on tmpfs): validate left out the slot's, the package's and its golden/
    folders, and passed where every start ended, no room (a window of 12 KiB for this package). Exact now: one block
    short is refused, and the start fails; with that block the start installs."""
    from model_packager import verify_package
    from tests.support.peers import small_ext4

    pkg, pub, _ = kit
    files = verify_package(pkg, load_trusted_keys([pub])).files
    path = _config(tmp_path, pkg, pub)
    page = 4096
    folders = 3  # models/vision, the package's, its golden/
    assert {f.path.split("/")[0] for f in files if "/" in f.path} == {"golden"}
    need = sum(-(-f.size // page) * page for f in files) + 3 * page + folders * page
    for free in (need - page, need):
        with small_ext4(tmp_path / "data" / "models", tmp_path / f"ext4-{free}.img", free):
            capsys.readouterr()
            code = main(["validate", path])
            if free < need:
                assert code == 1 and "not enough free disk" in capsys.readouterr().err
                assert "not enough free disk" in str(await _start_raises(path, tmp_path, pub))
                continue
            assert code == 0, capsys.readouterr().err
            m = yaml.safe_load(Path(path).read_text())["models"]["vision"]
            slot = ModelSlot("vision", ModelConfig(**m), tmp_path / "data", load_trusted_keys([pub]))
            await slot.start()  # (the block a folder: exactly what it takes)
            await slot.stop()


async def test_validate_fails_in_the_starts_words_where_a_slot_with_no_package_has_none_installed(
    kit, tmp_path, capsys
):
    """A slot named by its fleet package alone (no local package) with no installed package that passes: every start
    ends (no package installed yet; or the installed one refused, set aside), and validate said nothing, exit 0: a
    unit's ExecStartPre passed and systemd restarted the agent in a loop. It now exits 1 in the start's words where
    the data folder exists (without one, run on another machine than the gateway, it cannot tell: it passes)."""
    pkg, pub, _ = kit
    path = _config(tmp_path, pkg, pub)
    cfg = yaml.safe_load(Path(path).read_text())
    cfg["models"]["vision"] = {"name": "part-inspection", "version_policy": "follow_fleet"}
    Path(path).write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert (
        main(["validate", path]) == 0
    )  # no data folder here: it cannot tell, and says what a start there does
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if "models.vision" in ln]
    assert line.startswith(f"warning: {path}: models.vision: no data folder at {tmp_path / 'data'} "), line
    assert line.endswith(
        "no package installed yet and no local 'package' configured: the agent does not start "
        "without a model in each slot; configure models.vision.package (a fleet rollout replaces "
        "it later), or the agent's fleet (cloud:) with models.vision.version_policy: follow_fleet "
        "to take its deployment: the agent does not start"
    ), line
    # trusted keys that cannot be loaded beside a slot with a local package: an error, and that warning still said
    (tmp_path / "bad.pub").write_text("not a key")
    two = {**cfg, "trusted_keys": [str(tmp_path / "bad.pub")]}
    two["models"] = {**cfg["models"], "other": {"package": str(pkg), "engine": "onnxruntime"}}
    Path(path).write_text(yaml.safe_dump(two))
    assert main(["validate", path]) == 1
    err = capsys.readouterr().err
    assert f"{path}: trusted_keys: " in err and f"warning: {path}: models.vision: no data folder at" in err, (
        err
    )
    Path(path).write_text(yaml.safe_dump(cfg))
    (tmp_path / "data").mkdir()
    for refused in ([], None, ["1.0.0"]):
        if refused is None:  # a package that passes installed: it serves
            _install(pkg, tmp_path / "data", pub)
            capsys.readouterr()
            assert main(["validate", path]) == 0, capsys.readouterr().err
            continue
        cfg["models"]["vision"]["refused_versions"] = refused
        Path(path).write_text(yaml.safe_dump(cfg))
        capsys.readouterr()
        assert main(["validate", path]) == 1
        (line,) = [ln for ln in capsys.readouterr().err.splitlines() if "models.vision" in ln]
        assert line == f"{path}: models.vision: {await _start_raises(path, tmp_path, pub)}", line
        assert (
            "cannot be used (part-inspection-1.0.0 is a version" if refused else "no package installed"
        ) in line
    # the agent's start names the file and the field too
    from edge_agent.agent import Agent
    from edge_agent.config import load_config
    from edge_agent.models.slot import NoPackage

    capsys.readouterr()
    assert main(["validate", path]) == 1  # (the refused version was set aside by the start above: none now)
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if "models.vision" in ln]
    with pytest.raises(NoPackage) as ended:
        await Agent(load_config(path)).start()
    assert str(ended.value) == line, ended.value


async def test_validate_warns_where_a_slot_following_the_fleet_has_no_package_yet(kit, tmp_path, capsys):
    """The same slot on a gateway whose fleet is configured (``cloud:``, ``version_policy: follow_fleet``, as
    docs/gateway-install.md configures a new gateway): the agent starts with the slot failed, waiting for the
    fleet's deployment (test_slot_failed_at_start.py); validate says so in a warning, exit 0 (it exited 1, and a
    unit's ExecStartPre kept the new gateway from ever connecting). Pinned, the fleet never fills it: exit 1."""
    pkg, pub, _ = kit
    path = _config(tmp_path, pkg, pub)
    cfg = yaml.safe_load(Path(path).read_text())
    cfg["models"]["vision"] = {"name": "part-inspection", "version_policy": "follow_fleet"}
    pem = tmp_path / "pki.pem"
    pem.write_text("")
    cfg["cloud"] = {
        "endpoint": "127.0.0.1:1",
        "ca_file": str(pem),
        "cert_file": str(pem),
        "key_file": str(pem),
    }
    Path(path).write_text(yaml.safe_dump(cfg))
    # no data folder (a new gateway before its unit made it, a data_dir mistyped or wiped on one the fleet filled):
    # validate was silent, and the agent started with the slot failed, every item unjudged
    capsys.readouterr()
    assert main(["validate", path]) == 0
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if "models.vision" in ln]
    said = await _start_raises(path, tmp_path, pub)
    assert line == (
        f"warning: {path}: models.vision: no data folder at {tmp_path / 'data'} (agent.data_dir; a new gateway, or a "
        f"path mistyped or wiped?): nothing is installed there: {said}: the agent starts with the slot failed (its "
        "pipelines judge nothing)"
    ), line
    assert (tmp_path / "data").is_dir()  # (the start made it)
    for policy in ("follow_fleet", "pinned"):
        cfg["models"]["vision"]["version_policy"] = policy
        Path(path).write_text(yaml.safe_dump(cfg))
        capsys.readouterr()
        assert main(["validate", path]) == (0 if policy == "follow_fleet" else 1)
        (line,) = [ln for ln in capsys.readouterr().err.splitlines() if "models.vision" in ln]
        said = await _start_raises(path, tmp_path, pub)
        assert isinstance(said, FailedAtStart) == (policy == "follow_fleet"), said
        if policy == "follow_fleet":
            assert line.startswith(f"warning: {path}: models.vision: {said}: the agent starts"), line
            assert "no package yet: waiting for the fleet's deployment" in line, line
        else:
            assert line == f"{path}: models.vision: {said}", line
            assert "models.vision.version_policy: follow_fleet" in line, line


def test_validate_passes_a_package_the_agent_would_install(kit, tmp_path, capsys):
    pkg, pub, _ = kit
    assert main(["validate", _config(tmp_path, pkg, pub)]) == 0
    out = capsys.readouterr()
    assert "models.vision.package" not in out.err and out.out.startswith("ok:"), out


def test_validate_says_nothing_of_a_wide_installed_package_a_pinned_slot_replaces(
    kit, tmp_path, capsys, monkeypatch
):
    """A package installed before the agent refused its golden tolerances is served by a start only where the slot
    keeps it: a pinned slot configured with another package installs that one (ModelSlot._start_on). Validate named
    the installed one "served as installed" there, the start serving the configured package."""
    from tests.unit.test_package_hostile import _manifest, _sig, _with

    pkg, pub, _ = kit
    doc = yaml.safe_load(_manifest(pkg))
    doc["golden"]["rtol"] = 1e308
    new = yaml.safe_dump(doc, sort_keys=False).encode()
    wide = _with(pkg, tmp_path / "wide.edgepkg", manifest=new, sig=_sig(new, pub.parent / "signing.key"))
    _install(wide, tmp_path / "data", pub)
    assert main(["validate", _config(tmp_path, pkg, pub)]) == 0  # configured: the same version, checked
    out = capsys.readouterr()
    assert "served as installed" not in out.err and out.out.startswith("ok:"), out
    import model_packager

    read, digest = [], model_packager.package_digest
    monkeypatch.setattr(
        model_packager, "package_digest", lambda p, *a, **k: read.append(p) or digest(p, *a, **k)
    )
    assert main(["validate", _config(tmp_path, wide, pub)]) == 0  # configured: that installed one, served
    assert "served as installed" in capsys.readouterr().err
    assert read.count(wide) == 1, read  # (the configured package hashed once: a full read of it)
