"""Every bad package the issue lists is refused with its own error and message, and opening it
writes nothing outside the target folder (and nothing at all inside it)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
import yaml

from model_packager import (
    IntegrityError,
    ManifestError,
    PackageError,
    SignatureError,
    SpecMismatchError,
    UnsafeArchiveError,
    build_package,
    generate_keypair,
    load_private_key,
    load_trusted_keys,
    open_package,
    verify_package,
)
from model_packager.keys import key_id
from tests.support.models import make_keypair, make_package, make_signal_onnx, make_vision_onnx, vision_spec


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pkg")
    pkg = make_package(tmp, kind="vision")
    return pkg, load_trusted_keys([tmp / "keys" / "signing.pub"]), tmp / "keys" / "signing.key"


def members(pkg: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(pkg) as tar:
        return [(m, tar.extractfile(m).read() if m.isreg() else b"") for m in tar.getmembers()]


def write(path: Path, entries: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            info = tarfile.TarInfo(info.name) if isinstance(info, str) else info
            if info.isreg():
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def entry(name: str, data: bytes = b"", **kw) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    for k, v in kw.items():
        setattr(info, k, v)
    return info, data


def resign(manifest_bytes: bytes, key_path: Path) -> bytes:
    import base64
    import json

    key = load_private_key(key_path)
    return json.dumps(
        {
            "algorithm": "ed25519",
            "key_id": key_id(key.public_key()),
            "signature": base64.b64encode(key.sign(manifest_bytes)).decode(),
        }
    ).encode()


def assert_refused(pkg: Path, trusted, tmp_path: Path, exc_type, code: str, words: str):
    before = set(tmp_path.rglob("*"))
    target = tmp_path / "out" / "pkg"
    with pytest.raises(exc_type) as ei:
        open_package(pkg, target, trusted)
    assert ei.value.code == code, str(ei.value)
    assert words in str(ei.value)
    assert pkg.name in str(ei.value)
    with pytest.raises(exc_type):
        verify_package(pkg, trusted)
    # nothing written: no target, no temporary leftovers, nothing elsewhere
    assert not target.exists()
    after = set(tmp_path.rglob("*"))
    assert after - before <= {tmp_path / "out"}, after - before


def test_good_package_opens_and_lists_files(good, tmp_path):
    pkg, trusted, _ = good
    opened = open_package(pkg, tmp_path / "t", trusted)
    assert opened.model_path.is_file() and opened.golden_inputs.is_file()
    assert sorted(
        p.relative_to(opened.root).as_posix() for p in opened.root.rglob("*") if p.is_file()
    ) == sorted([f.path for f in opened.manifest.files] + ["manifest.sig", "manifest.yaml"])


def test_flipped_byte_in_model_is_a_digest_mismatch(good, tmp_path):
    pkg, trusted, _ = good
    ents = members(pkg)
    for i, (m, data) in enumerate(ents):
        if m.name == "model.onnx":
            b = bytearray(data)
            b[len(b) // 2] ^= 0x01
            ents[i] = (m, bytes(b))
    bad = write(tmp_path / "flipped-1.0.0.edgepkg", ents)
    assert_refused(bad, trusted, tmp_path, IntegrityError, "digest_mismatch", "model.onnx digest mismatch")


def test_edited_manifest_breaks_the_signature(good, tmp_path):
    pkg, trusted, _ = good
    ents = members(pkg)
    for i, (m, data) in enumerate(ents):
        if m.name == "manifest.yaml":
            ents[i] = (m, data.replace(b"threshold: 0.5", b"threshold: 0.9"))
    bad = write(tmp_path / "edited-1.0.0.edgepkg", ents)
    assert_refused(bad, trusted, tmp_path, SignatureError, "bad_signature", "does not match manifest.yaml")


def test_signature_by_an_untrusted_key(good, tmp_path):
    pkg, trusted, _ = good
    other = tmp_path / "other.key"
    generate_keypair(other, tmp_path / "other.pub")
    ents = members(pkg)
    manifest = dict((m.name, d) for m, d in ents)["manifest.yaml"]
    ents = [(m, resign(manifest, other) if m.name == "manifest.sig" else d) for m, d in ents]
    bad = write(tmp_path / "untrusted-1.0.0.edgepkg", ents)
    assert_refused(bad, trusted, tmp_path, SignatureError, "untrusted_key", "not among the trusted keys")


def test_no_signature(good, tmp_path):
    pkg, trusted, _ = good
    bad = write(
        tmp_path / "unsigned-1.0.0.edgepkg", [(m, d) for m, d in members(pkg) if m.name != "manifest.sig"]
    )
    assert_refused(bad, trusted, tmp_path, SignatureError, "unsigned", "no signature")


def test_truncated_archive(good, tmp_path):
    pkg, trusted, _ = good
    data = pkg.read_bytes()
    bad = tmp_path / "truncated-1.0.0.edgepkg"
    bad.write_bytes(data[: len(data) // 2])
    assert_refused(bad, trusted, tmp_path, UnsafeArchiveError, "truncated", "truncated")


@pytest.mark.parametrize("name", ["../evil.txt", "golden/../../evil.txt", "/tmp/evil.txt"])
def test_entries_escaping_the_target_are_refused(good, tmp_path, name):
    pkg, trusted, _ = good
    bad = write(tmp_path / "escape-1.0.0.edgepkg", [*members(pkg), entry(name, b"x")])
    assert_refused(bad, trusted, tmp_path, UnsafeArchiveError, "path_escape", "unsafe path")
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_links_are_refused(good, tmp_path, kind):
    pkg, trusted, _ = good
    link = entry(
        "golden/link", type=kind, linkname="/etc/passwd" if kind == tarfile.SYMTYPE else "model.onnx"
    )
    bad = write(tmp_path / "link-1.0.0.edgepkg", [*members(pkg), link])
    assert_refused(bad, trusted, tmp_path, UnsafeArchiveError, "link", "link")


def test_archive_bomb_is_refused_by_the_size_limit(good, tmp_path):
    pkg, trusted, _ = good
    with pytest.raises(UnsafeArchiveError) as ei:
        verify_package(pkg, trusted, max_bytes=10_000)
    assert ei.value.code == "too_large"
    with pytest.raises(UnsafeArchiveError):
        open_package(pkg, tmp_path / "t", trusted, max_bytes=10_000)
    assert not (tmp_path / "t").exists() and not list(tmp_path.iterdir())


def test_duplicate_entry_names(good, tmp_path):
    pkg, trusted, _ = good
    ents = members(pkg)
    model = next(e for e in ents if e[0].name == "model.onnx")
    bad = write(tmp_path / "dupe-1.0.0.edgepkg", [*ents, (model[0], b"evil")])
    assert_refused(bad, trusted, tmp_path, UnsafeArchiveError, "duplicate_entry", "appears twice")


def test_unknown_schema_version(good, tmp_path):
    pkg, trusted, key = good
    ents = members(pkg)
    manifest = dict((m.name, d) for m, d in ents)["manifest.yaml"]
    doc = yaml.safe_load(manifest)
    doc["schema_version"] = 99
    new = yaml.safe_dump(doc, sort_keys=False).encode()
    ents = [
        (m, new if m.name == "manifest.yaml" else resign(new, key) if m.name == "manifest.sig" else d)
        for m, d in ents
    ]
    bad = write(tmp_path / "schema-1.0.0.edgepkg", ents)
    assert_refused(
        bad, trusted, tmp_path, ManifestError, "unknown_schema", "unknown manifest schema_version 99"
    )


def test_file_present_but_not_listed(good, tmp_path):
    pkg, trusted, _ = good
    bad = write(tmp_path / "unlisted-1.0.0.edgepkg", [*members(pkg), entry("notes.txt", b"hello")])
    assert_refused(
        bad, trusted, tmp_path, IntegrityError, "unlisted_file", "notes.txt is in the archive but not listed"
    )


def test_file_listed_but_absent(good, tmp_path):
    pkg, trusted, _ = good
    bad = write(
        tmp_path / "absent-1.0.0.edgepkg",
        [(m, d) for m, d in members(pkg) if m.name != "golden/expected.npz"],
    )
    assert_refused(bad, trusted, tmp_path, IntegrityError, "missing_file", "golden/expected.npz listed")


def test_model_whose_io_disagrees_with_its_manifest_is_refused_at_build(tmp_path):
    key, _ = make_keypair(tmp_path / "keys")
    model = make_vision_onnx(tmp_path / "m.onnx", width=64, height=64)
    spec = vision_spec(width=32, height=32)
    with pytest.raises(SpecMismatchError) as ei:
        build_package(model, spec, tmp_path / "out", signing_key=key)
    msg = str(ei.value)
    assert "manifest input 'image' dimension 2 is 32 but m.onnx has 64" in msg
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    spec = vision_spec()
    spec["inputs"][0]["name"] = "frame"
    with pytest.raises(
        SpecMismatchError, match=r"manifest inputs \['frame'\] but m.onnx has inputs \['image'\]"
    ):
        build_package(model, spec, tmp_path / "out", signing_key=key)


def test_model_swapped_for_another_signed_consistently_is_refused_at_open(good, tmp_path):
    """A signer who lists a signal model under a vision manifest: hashes match, I/O does not."""
    import hashlib

    pkg, trusted, key = good
    other = make_signal_onnx(tmp_path / "signal.onnx").read_bytes()
    ents = members(pkg)
    doc = yaml.safe_load(dict((m.name, d) for m, d in ents)["manifest.yaml"])
    for f in doc["files"]:
        if f["path"] == "model.onnx":
            f["size"], f["sha256"] = len(other), hashlib.sha256(other).hexdigest()
    new = yaml.safe_dump(doc, sort_keys=False).encode()
    ents = [
        (
            m,
            new
            if m.name == "manifest.yaml"
            else resign(new, key)
            if m.name == "manifest.sig"
            else other
            if m.name == "model.onnx"
            else d,
        )
        for m, d in ents
    ]
    bad = write(tmp_path / "mismatch-1.0.0.edgepkg", ents)
    assert_refused(
        bad,
        trusted,
        tmp_path,
        SpecMismatchError,
        "spec_mismatch",
        "manifest inputs ['image'] but model.onnx has inputs ['features']",
    )


def test_not_an_archive_and_missing_file(tmp_path, good):
    _, trusted, _ = good
    junk = tmp_path / "junk-1.0.0.edgepkg"
    junk.write_bytes(os.urandom(3000))
    with pytest.raises(UnsafeArchiveError, match="junk-1.0.0.edgepkg"):
        verify_package(junk, trusted)
    with pytest.raises(PackageError, match="does not exist"):
        verify_package(tmp_path / "nope.edgepkg", trusted)


def test_private_key_file_is_mode_0600(tmp_path):
    generate_keypair(tmp_path / "a.key", tmp_path / "a.pub")
    assert (tmp_path / "a.key").stat().st_mode & 0o777 == 0o600
    assert len(load_trusted_keys([tmp_path])) == 1


def test_golden_tolerance_per_output_overrides_the_package_atol():
    import numpy as np

    from model_packager.golden import compare

    exp = {"logits": np.array([[1.0, 2.0]]), "heatmap": np.array([[0.0, 5.0]])}
    got = {"logits": np.array([[1.0, 2.0005]]), "heatmap": np.array([[0.3, 5.0]])}
    worst, bad = compare(exp, got, 1e-3, 0.0)
    assert worst == pytest.approx(0.3) and bad == [
        "output 'heatmap' deviates by up to 0.3 (atol 0.001, rtol 0.0)"
    ]
    assert compare(exp, got, 1e-3, 0.0, {"heatmap": 0.5})[1] == []  # the heat map's own tolerance
    got["logits"] = np.array([[1.0, 2.1]])  # a wrong score is still caught by the package atol
    assert compare(exp, got, 1e-3, 0.0, {"heatmap": 0.5})[1] == [
        "output 'logits' deviates by up to 0.1 (atol 0.001, rtol 0.0)"
    ]
