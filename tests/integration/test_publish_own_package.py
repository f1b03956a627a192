"""`cloud-trainer publish PACKAGE.edgepkg --trust KEY`: a package built with `model-packager build` (a model
brought from another tool) into the registry the fleet deploys from. Before, only `cloud-trainer build` could
publish, so a model brought from elsewhere had no way to the fleet. It is verified first as an agent verifies it;
a hostile or untrusted one is refused in one line naming it and why, and the registry is left as it was."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cloud_trainer.cli import main
from cloud_trainer.registry import Registry
from tests.support.models import make_keypair, make_package
from tests.support.tar_craft import file_entry, splice


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("publish-own")
    key, pub = make_keypair(tmp / "keys")
    return tmp, key, pub, make_package(tmp, kind="signal", version="1.0.0", key=key)


def test_a_package_built_elsewhere_is_verified_and_published_for_the_fleet(kit, tmp_path, capsys):
    _, _, pub, pkg = kit
    reg = tmp_path / "registry"
    reg.mkdir()
    assert main(["publish", str(pkg), "--registry", str(reg), "--trust", str(pub)]) == 0
    out = capsys.readouterr().out
    assert (
        "published machine-health 1.0.0" in out
        and "cloud-trainer deploy machine-health --version 1.0.0" in out
    )
    entry = Registry(reg).get("machine-health", "1.0.0")
    assert entry is not None and entry["status"] == "published"
    assert (reg / "machine-health" / "1.0.0" / entry["package"]).read_bytes() == pkg.read_bytes()
    # the same version again: versions are immutable
    assert main(["publish", str(pkg), "--registry", str(reg), "--trust", str(pub)]) == 2
    assert "already in the registry" in capsys.readouterr().err


@pytest.mark.parametrize("hostile", ["escaping entry", "untrusted signer"])
def test_a_hostile_or_untrusted_package_is_refused_and_nothing_is_published(kit, tmp_path, capsys, hostile):
    tmp, _, pub, pkg = kit
    reg = tmp_path / "registry"
    reg.mkdir()
    if hostile == "escaping entry":
        bad = splice(pkg, tmp_path / pkg.name, file_entry("../../outside.txt", b"x"))
        said = "entry '../../outside.txt' has an unsafe path"
    else:
        _, other = make_keypair(tmp_path / "other")
        bad, pub = pkg, other
        said = "which is not among the trusted keys"
    assert main(["publish", str(bad), "--registry", str(reg), "--trust", str(pub)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "refused, nothing was published" in err and said in err, err
    assert sorted(p.name for p in reg.iterdir()) == []  # not even a lock or a name's folder
    assert not (tmp_path.parent / "outside.txt").exists()


def test_publish_refuses_a_registry_folder_that_does_not_exist(kit, tmp_path, capsys):
    _, _, pub, pkg = kit
    assert main(["publish", str(pkg), "--registry", str(tmp_path / "regsitry"), "--trust", str(pub)]) == 2
    assert "no such folder; nothing was published" in capsys.readouterr().err
    assert not (tmp_path / "regsitry").exists()


def test_publish_and_the_trainers_commands_default_to_the_registry_serve_deploys_from(
    kit, tmp_path, capsys, monkeypatch
):
    """`publish PKG` needed --registry, while build, evaluate, package and `publish vision|maintenance` defaulted to
    var/registry, which a service started with its defaults (--data var/cloud: <data>/registry) never read. They all
    default to var/cloud/registry now; with packages left in var/registry, a note says where they are, and the
    trainer's commands do nothing until --registry is given (a build went on: its gate compared the candidate with
    no published version, and its version started again)."""
    from cloud_trainer.registry import DEFAULT_REGISTRY

    _, _, pub, pkg = kit
    assert DEFAULT_REGISTRY == Path("var/cloud") / "registry"  # serve: <its --data default>/registry
    monkeypatch.chdir(tmp_path)
    (tmp_path / DEFAULT_REGISTRY).mkdir(parents=True)
    assert main(["publish", str(pkg), "--trust", str(pub)]) == 0
    assert Registry(tmp_path / DEFAULT_REGISTRY).get("machine-health", "1.0.0") is not None
    assert "note:" not in capsys.readouterr().err
    # a registry of the former default holding packages, the new one empty: said where they are
    former = tmp_path / "var" / "registry"
    former.mkdir()
    (tmp_path / DEFAULT_REGISTRY / "machine-health").rename(former / "machine-health")
    assert main(["publish", str(pkg), "--trust", str(pub)]) == 0
    assert "var/registry, the trainer's former default, holds packages: give --registry var/registry" in (
        capsys.readouterr().err
    )
    (tmp_path / DEFAULT_REGISTRY / "machine-health").rename(former / "machine-health-2")
    for verb in (
        "build",
        "evaluate",
        "package",
        "publish",
    ):  # refused before a dataset or a work folder is read
        argv = [verb, "maintenance", "--dataset" if verb == "build" else "--work", str(tmp_path / "none")]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(
            f"cloud-trainer {verb}: nothing was done: --registry defaults to {DEFAULT_REGISTRY}"
        )
        assert "give --registry var/registry" in err and "or --registry var/cloud/registry to begin" in err
    assert main(
        ["evaluate", "maintenance", "--work", str(tmp_path / "none"), "--registry", "var/cloud/registry"]
    )
    assert "nothing was done" not in capsys.readouterr().err  # (given: the work folder's absence said)


def test_publish_hashes_the_package_once_and_refuses_a_file_its_signature_does_not_cover(
    kit, tmp_path, capsys, monkeypatch
):
    """publish verified the file given (every file hashed) and then the registry's copy of it the same way: the
    package hashed whole twice. The file given is looked at (signature, structure) and the copy verified whole;
    a file its manifest does not list is refused there, nothing published."""
    from model_packager import package as packaging

    tmp, _, pub, pkg = kit
    hashed: list[str] = []
    stream = packaging._Reader.stream

    def counted(self, tar, m, sink):
        if m.name not in ("manifest.yaml", "manifest.sig"):  # (read at every look, unhashed)
            hashed.append(m.name)
        return stream(self, tar, m, sink)

    monkeypatch.setattr(packaging._Reader, "stream", counted)
    reg = tmp_path / "registry"
    reg.mkdir()
    assert main(["publish", str(pkg), "--registry", str(reg), "--trust", str(pub)]) == 0
    assert len(hashed) == len(set(hashed)) > 0, hashed  # each file once
    extra = splice(pkg, tmp_path / pkg.name, file_entry("notes.txt", b"not signed"))
    reg2 = tmp_path / "registry2"
    reg2.mkdir()
    assert main(["publish", str(extra), "--registry", str(reg2), "--trust", str(pub)]) == 1
    err = capsys.readouterr().err
    assert "refused, nothing was published" in err and "notes.txt is in the archive but not listed" in err, (
        err
    )
    assert Registry(reg2).list("machine-health") == []
    assert sorted(p.name for p in reg2.iterdir()) == []  # its name's folder and lock gone (both were left)


def test_the_former_default_registry_is_judged_per_package_name(kit, tmp_path, capsys, monkeypatch):
    """The trainer's commands do nothing while var/registry holds the package they build and var/cloud/registry
    does not: any package there (one published as docs/own-model.md shows) let a build of machine-health left in
    var/registry go on with no incumbent and its version afresh. A package's own name in the default is taken."""
    _, _, pub, pkg = kit
    monkeypatch.chdir(tmp_path)
    for reg, name in (("var/registry", "machine-health"), ("var/cloud/registry", "pump-anomaly")):
        (tmp_path / reg / name).mkdir(parents=True)
        (tmp_path / reg / name / "index.json").write_text("[]")
    argv = ["evaluate", "maintenance", "--work", str(tmp_path / "none")]
    assert main(argv) == 2
    assert "nothing was done: --registry defaults to" in capsys.readouterr().err
    assert main([*argv, "--name", "pump-anomaly"]) == 2
    assert "nothing was done" not in capsys.readouterr().err  # (taken: the work folder's absence said)
    work = tmp_path / "w"  # package and publish: the name the work folder's evaluation gave
    work.mkdir()
    (work / "report.json").write_text(json.dumps({"name": "pump-anomaly"}))
    assert main(["publish", "maintenance", "--work", str(work)]) == 2
    assert "nothing was done" not in capsys.readouterr().err
    # build and evaluate build --name or the family's package, whatever an earlier --name run's report.json says
    assert main(["evaluate", "maintenance", "--work", str(work)]) == 2
    assert "nothing was done: --registry defaults to" in capsys.readouterr().err
    assert main(["publish", str(pkg), "--trust", str(pub)]) == 0  # a note only, for machine-health's package
    assert "var/registry, the trainer's former default, holds packages" in capsys.readouterr().err


def test_publish_of_a_family_still_publishes_the_trainers_candidate(tmp_path, capsys):
    assert main(["publish", "vision", "--work", str(tmp_path / "work"), "--registry", str(tmp_path)]) == 2
    assert "run `cloud-trainer evaluate` with this work folder first" in capsys.readouterr().err
    assert json.dumps(sorted(p.name for p in tmp_path.iterdir())) == "[]"


def test_a_version_that_orders_the_same_as_a_published_one_is_refused(kit, tmp_path, capsys):
    """Build metadata does not order versions: published beside 1.0.0, another model was installed over 1.0.0 by a
    deploy (neither an upgrade nor an admin's rollback) and either could be "the latest"."""
    tmp, key, pub, pkg = kit
    reg = tmp_path / "registry"
    reg.mkdir()
    assert main(["publish", str(pkg), "--registry", str(reg), "--trust", str(pub)]) == 0
    other = make_package(tmp_path, kind="signal", version="1.0.0+hotfix", key=key)
    assert main(["publish", str(other), "--registry", str(reg), "--trust", str(pub)]) == 2
    err = capsys.readouterr().err
    assert "machine-health 1.0.0+hotfix orders the same as 1.0.0, already in the registry" in err, err
    assert [e["version"] for e in Registry(reg).list("machine-health")] == ["1.0.0"]


def _built_before(monkeypatch, tmp_path, key, version: str):
    """A package of ``version`` as a build before leading zeros were refused made it (the check is the build's)."""
    import model_packager.manifest

    with monkeypatch.context() as m:
        m.setattr(model_packager.manifest, "_building", lambda info: False)
        return make_package(tmp_path, kind="signal", version=version, key=key)


ZERO = "write 1 for '01'"


@pytest.mark.parametrize(
    "version,said",
    [
        ("01.0.0", ZERO),
        ("1.0.0-rc.01", ZERO),
        ("1.0.99999999999999999999", "each number of a version has at most 18 digits"),
        ("\uff11.0.0", "write '1.0.0': a version's numbers are written in the digits 0-9"),
    ],
)
def test_a_version_with_a_leading_zero_is_refused_at_build_and_at_publish(
    kit, tmp_path, capsys, monkeypatch, version, said
):
    """Semantic versions forbid leading zeros: 01.0.0 orders as 1.0.0. Alone in a registry it was built and
    published, and 1.0.0 published later was refused as its equal (or, published before it, deployed over it). A
    number past 18 digits is semantic, but no version order reads it: it was built and published, sorted below
    every version by the registry and refused by every agent it was deployed to."""
    from model_packager import ManifestError

    tmp, key, pub, _ = kit
    with pytest.raises(ManifestError, match=rf"version: '{re.escape(version)}': {re.escape(said)}"):
        make_package(tmp_path / "new", kind="signal", version=version, key=key)
    # the trainer's --version: at once, not after the training (the build refused it then)
    with pytest.raises(SystemExit) as ex:
        main(
            [
                "build",
                "vision",
                "--version",
                version,
                "--dataset",
                str(tmp_path / "ds"),
                "--work",
                str(tmp_path / "w"),
            ]
        )
    assert ex.value.code == 2 and f"'{version}': {said}" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()
    old = _built_before(monkeypatch, tmp_path / "old", key, version)
    reg = tmp_path / "registry"
    reg.mkdir()
    assert main(["publish", str(old), "--registry", str(reg), "--trust", str(pub)]) == 2
    err = capsys.readouterr().err
    lead = "its manifest's version" if said == ZERO else "manifest version:"
    assert f"machine-health {version}: {lead} '{version}': {said}" in err, err
    assert Registry(reg).list("machine-health") == []


def test_a_package_whose_golden_check_cannot_fail_is_refused_at_publish(kit, tmp_path, capsys):
    """``model-packager build`` refuses golden tolerances that pass any output (rtol 1 or more, atol past 1000);
    readers take them, so that a package signed before that check stays readable where it is installed. A package
    built so (before it, or signed by hand) was published, and the fleet deployed a model whose golden check could
    never fail. Refused at publish now, as a version with a leading zero is."""
    import yaml

    from tests.unit.test_package_hostile import _manifest, _sig, _with

    tmp, _, pub, pkg = kit
    doc = yaml.safe_load(_manifest(pkg))
    doc["golden"]["rtol"] = 1e308
    new = yaml.safe_dump(doc, sort_keys=False).encode()
    wide = _with(pkg, tmp_path / pkg.name, manifest=new, sig=_sig(new, tmp / "keys" / "signing.key"))
    reg = tmp_path / "registry"
    reg.mkdir()
    assert main(["publish", str(wide), "--registry", str(reg), "--trust", str(pub)]) == 2
    err = capsys.readouterr().err
    assert (
        "machine-health 1.0.0: manifest golden.rtol is 1e+308: must be below 1 where a package is built"
        in err
    )
    assert sorted(p.name for p in reg.iterdir()) == []


async def test_a_deploy_of_a_package_the_service_does_not_have_says_where_to_publish_it(
    kit, tmp_path, capsys
):
    """The service answers only "... is not in the registry" (the same for another tenant's package, no path of the
    server): a package published to another folder than `serve --registry` (the trainer's docs use var/registry,
    `serve --data var/cloud` deploys from var/cloud/registry) left the admin without a next step. Published with
    `cloud-trainer publish` to the service's registry, the same deploy is created."""
    import asyncio

    from cloud_trainer import admin_cli
    from cloud_trainer.fleet.service import FleetServer
    from tests.contract.test_fleet_commands import STATE_HEALTH
    from tests.support.fleet import make_pki
    from tests.support.peers import free_port

    _, _, pub, pkg = kit
    pki = make_pki(tmp_path / "pki", agents=("gw1",), admins=("alice",))
    reg = tmp_path / "registry"
    reg.mkdir()
    port = free_port()
    srv = FleetServer(
        tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key", registry=reg
    )
    await srv.start()
    base = ["--endpoint", f"127.0.0.1:{port}", "--pki", str(pki), "--admin", "alice"]
    deploy = ["machine-health", "--version", "1.0.0", "--slot", "health", "--agent", "gw1", *base]
    try:
        srv.store.heartbeat("gw1", {}, [], STATE_HEALTH, 0)
        with pytest.raises(SystemExit) as ei:
            await asyncio.to_thread(admin_cli.main_deploy, deploy)
        said = str(ei.value)
        assert (
            "machine-health 1.0.0 is not in the registry; publish it to the registry `cloud-trainer serve`"
            in said
        )
        assert "cloud-trainer publish PKG.edgepkg --trust KEY.pub --registry DIR" in said, said
        assert main(["publish", str(pkg), "--registry", str(reg), "--trust", str(pub)]) == 0
        assert await asyncio.to_thread(admin_cli.main_deploy, deploy) == 0
        assert [d["version"] for d in srv.control.list()] == ["1.0.0"]
    finally:
        await srv.stop()


async def test_a_version_paired_with_one_of_equal_order_in_a_registry_is_not_deployed_until_one_is_withdrawn(
    kit, tmp_path, capsys
):
    """A registry that holds 1.0.0 and 1.0.0+hotfix (published before such pairs were refused) served, and a deploy
    of either installed one model over the other at an agent (neither an upgrade nor a rollback). Now the deploy
    is refused naming both and what to do; once one is withdrawn the other deploys."""
    import asyncio
    import shutil

    from cloud_trainer import admin_cli
    from cloud_trainer.fleet.service import FleetServer
    from tests.contract.test_fleet_commands import STATE_HEALTH
    from tests.support.fleet import make_pki
    from tests.support.peers import free_port

    _, key, pub, pkg = kit
    reg, aside = tmp_path / "registry", tmp_path / "aside"
    reg.mkdir()
    aside.mkdir()
    assert main(["publish", str(pkg), "--registry", str(reg), "--trust", str(pub)]) == 0
    hotfix = make_package(tmp_path, kind="signal", version="1.0.0+hotfix", key=key)
    assert main(["publish", str(hotfix), "--registry", str(aside), "--trust", str(pub)]) == 0
    # the pair as a registry of before holds it: both folders, both entries
    shutil.copytree(aside / "machine-health" / "1.0.0+hotfix", reg / "machine-health" / "1.0.0+hotfix")
    Registry(reg)._write(
        "machine-health", [*Registry(reg).list("machine-health"), *Registry(aside).list("machine-health")]
    )
    pki = make_pki(tmp_path / "pki", agents=("gw1",), admins=("alice",))
    port = free_port()
    srv = FleetServer(
        tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key", registry=reg
    )
    await srv.start()
    base = ["--endpoint", f"127.0.0.1:{port}", "--pki", str(pki), "--admin", "alice"]
    try:
        srv.store.heartbeat("gw1", {}, [], STATE_HEALTH, 0)
        for version, twin in (("1.0.0+hotfix", "1.0.0"), ("1.0.0", "1.0.0+hotfix")):
            deploy = ["machine-health", "--version", version, "--slot", "health", "--agent", "gw1", *base]
            with pytest.raises(SystemExit) as ei:
                await asyncio.to_thread(admin_cli.main_deploy, deploy)
            said = str(ei.value)
            assert f"machine-health {version} orders the same as {twin}, also published" in said, said
            assert "withdraw all but one (cloud-trainer withdraw machine-health VERSION" in said, said
        assert srv.control.list() == []
        assert (
            main(["withdraw", "machine-health", "1.0.0+hotfix", "--reason", "a twin", "--registry", str(reg)])
            == 0
        )
        assert await asyncio.to_thread(admin_cli.main_deploy, deploy) == 0
        assert [d["version"] for d in srv.control.list()] == ["1.0.0"]
    finally:
        await srv.stop()


def test_the_registry_holds_the_file_verified_not_one_put_in_its_place_after_the_check(
    kit, tmp_path, capsys, monkeypatch
):
    """The package was verified, then read again to be copied: a file replaced in between (another writer to the
    admin's dist folder) was published unverified, signed by a key no agent trusts, and its version taken for
    good. The registry's copy is verified now."""
    import shutil

    import model_packager

    _, _, pub, pkg = kit
    rogue, _ = make_keypair(tmp_path / "rogue")
    other = make_package(tmp_path / "other", kind="signal", version="1.0.0", key=rogue)
    given = tmp_path / pkg.name
    shutil.copy(pkg, given)
    reg = tmp_path / "registry"
    reg.mkdir()
    verify = model_packager.verify_package
    checked: list = []

    def then_replaced(path, trusted, *a, **k):  # the first check passes, then the file is replaced
        m = verify(path, trusted, *a, **k)
        if not checked:
            shutil.copy(other, given)
        checked.append(path)
        return m

    monkeypatch.setattr(model_packager, "verify_package", then_replaced)
    assert main(["publish", str(given), "--registry", str(reg), "--trust", str(pub)]) == 1
    err = capsys.readouterr().err
    assert "refused, nothing was published" in err and "which is not among the trusted keys" in err, err
    assert Registry(reg).get("machine-health", "1.0.0") is None
    assert not list((reg / "machine-health").glob("*1.0.0*")), list((reg / "machine-health").iterdir())
