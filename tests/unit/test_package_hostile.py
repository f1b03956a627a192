"""Hostile packages (issue 16's table): each crafted archive or manifest is refused with a typed
``PackageError`` and a one-line reason, fast, on every path (``verify_package``, ``open_package``,
``read_manifest``, the agent's ``ModelStore.install`` and ``model-packager verify``), and never
parsed before its signature where the path installs it."""

from __future__ import annotations

import base64
import json
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from edge_agent.models.store import ModelStore
from model_packager import (
    ManifestError,
    PackageError,
    SignatureError,
    UnsafeArchiveError,
    build_package,
    load_private_key,
    load_trusted_keys,
    open_package,
    read_manifest,
    verify_package,
)
from model_packager.cli import main as packager_main
from model_packager.keys import key_id
from model_packager.manifest import version_key
from tests.support import tar_craft as tc
from tests.support.models import golden_inputs, make_package, make_vision_onnx, vision_spec

TIB = 1 << 40


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pkg")
    pkg = make_package(tmp, kind="vision")
    return pkg, load_trusted_keys([tmp / "keys" / "signing.pub"]), tmp / "keys" / "signing.key"


def refused_everywhere(
    pkg: Path,
    trusted,
    tmp_path: Path,
    exc_type=UnsafeArchiveError,
    code: str | None = None,
    *,
    max_s: float = 1.0,
) -> PackageError:
    """Every reading path refuses ``pkg`` with ``exc_type`` (and ``code``), each within ``max_s`` of this thread's
    CPU (the paths read in the calling thread; a bomb or a runaway parse burns CPU), and within ``max_s`` or 30 s of
    wall time, whichever is longer (a loaded machine stretches wall time, not CPU; a hang still fails)."""
    errors = []
    calls = [
        lambda: verify_package(pkg, trusted),
        lambda: open_package(pkg, tmp_path / "out" / "pkg", trusted),
        lambda: ModelStore(tmp_path / "store").install(pkg, trusted),
    ]
    for call in calls:
        t0, cpu0 = time.perf_counter(), time.thread_time()
        with pytest.raises(exc_type) as ei:
            call()
        cpu, wall = time.thread_time() - cpu0, time.perf_counter() - t0
        assert cpu < max_s and wall < max(max_s, 30.0), f"took {cpu:.2f} s of CPU, {wall:.1f} s"
        msg = str(ei.value)
        assert "\n" not in msg and msg.isprintable(), msg
        if code is not None:
            assert ei.value.code == code, msg
        errors.append(ei.value)
    assert not (tmp_path / "out" / "pkg").exists()
    assert [p.name for p in (tmp_path / "store").iterdir()] == []  # nothing left in the slot's store
    return errors[0]


# ---- rows 1-2: headers claiming 1 TiB ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", [b"x", b"L"])
def test_pax_or_gnu_long_name_header_claiming_1_tib_is_refused_without_reading_it(good, tmp_path, kind):
    pkg, trusted, _ = good
    crafted = tc.header(
        "././@LongLink", TIB, kind, magic=tc.GNU_MAGIC if kind == b"L" else tc.POSIX_MAGIC, base256_size=True
    )
    bad = tc.splice(pkg, tmp_path / "tib-1.0.0.edgepkg", crafted)
    err = refused_everywhere(bad, trusted, tmp_path, code="bad_header")
    assert "base-256" in str(err)


@pytest.mark.parametrize("kind", [b"x", b"L"])
def test_extended_header_larger_than_its_limit_is_refused_by_its_size_field(good, tmp_path, kind):
    pkg, trusted, _ = good
    crafted = tc.header("././@LongLink", 8 * 1024**3 - 1, kind)  # the largest octal size field
    bad = tc.splice(pkg, tmp_path / "big-1.0.0.edgepkg", crafted)
    refused_everywhere(bad, trusted, tmp_path, code="header_too_large")


def test_regular_file_claiming_1_tib_is_refused_as_too_large(good, tmp_path):
    pkg, trusted, _ = good
    bad = tc.splice(pkg, tmp_path / "huge-1.0.0.edgepkg", tc.header("model2.onnx", TIB, base256_size=True))
    refused_everywhere(bad, trusted, tmp_path, code="bad_header")
    bad = tc.splice(
        pkg,
        tmp_path / "huge2-1.0.0.edgepkg",
        tc.pax_entry(tc.pax_record("size", str(TIB)), then=("model2.onnx", b"")),
    )
    refused_everywhere(bad, trusted, tmp_path, code="too_large")


# ---- rows 3-5: garbage GNU sparse maps --------------------------------------------------------------------


@pytest.mark.parametrize(
    "records",
    [
        [("GNU.sparse.map", "garbage,1,x")],
        [("GNU.sparse.numblocks", "zz"), ("GNU.sparse.offset", "-1"), ("GNU.sparse.numbytes", "1")],
        [
            ("GNU.sparse.major", "1"),
            ("GNU.sparse.minor", "0"),
            ("GNU.sparse.name", "a"),
            ("GNU.sparse.realsize", "q"),
        ],
    ],
    ids=["map", "numblocks", "v1.0"],
)
def test_garbage_sparse_maps_are_refused_as_sparse(good, tmp_path, records):
    pkg, trusted, _ = good
    pax = b"".join(tc.pax_record(k, v) for k, v in records)
    bad = tc.splice(pkg, tmp_path / "sparse-1.0.0.edgepkg", tc.pax_entry(pax))
    refused_everywhere(bad, trusted, tmp_path, code="sparse")


def test_gnu_sparse_entry_type_is_refused(good, tmp_path):
    pkg, trusted, _ = good
    bad = tc.splice(
        pkg,
        tmp_path / "sparse-1.0.0.edgepkg",
        tc.file_entry("s.bin", b"x" * 10, kind=b"S", magic=tc.GNU_MAGIC),
    )
    refused_everywhere(bad, trusted, tmp_path, code="sparse")


# ---- row 6: hdrcharset, names that are not UTF-8 -----------------------------------------------------------


@pytest.mark.parametrize("kind", [b"3", b"4", b"6", b"5", b"7"])
def test_device_fifo_folder_and_contiguous_entries_are_refused_as_not_regular_files(good, tmp_path, kind):
    """A character or block device, a FIFO, a folder or a contiguous file spliced after the signed members (the
    signature stays valid): refused on every path before anything is written (links: test_package_bad_input)."""
    pkg, trusted, _ = good
    bad = tc.splice(pkg, tmp_path / "bad.edgepkg", tc.header("dev0", 0, kind))
    refused_everywhere(bad, trusted, tmp_path, UnsafeArchiveError, "not_regular")


def test_pax_hdrcharset_other_than_utf8_is_refused(good, tmp_path):
    pkg, trusted, _ = good
    pax = tc.pax_record("hdrcharset", "BINARY") + tc.pax_record("path", b"\xff\xfe.bin")
    bad = tc.splice(pkg, tmp_path / "charset-1.0.0.edgepkg", tc.pax_entry(pax))
    refused_everywhere(bad, trusted, tmp_path, code="bad_name")


def test_entry_name_that_is_not_utf8_is_refused(good, tmp_path):
    pkg, trusted, _ = good
    bad = tc.splice(pkg, tmp_path / "latin-1.0.0.edgepkg", tc.file_entry(b"caf\xe9.bin"))
    refused_everywhere(bad, trusted, tmp_path, code="bad_name")


@pytest.mark.parametrize("name", ["./extra.bin", "a/./b.bin", "a/."])
def test_entry_name_with_a_dot_part_is_refused_as_a_bad_name(good, tmp_path, name):
    # PurePosixPath drops '.' parts, so the name check never saw them: such an entry was refused only later,
    # as a file the manifest does not list, and not for its name
    pkg, trusted, _ = good
    bad = tc.splice(pkg, tmp_path / "dot-1.0.0.edgepkg", tc.file_entry(name))
    err = refused_everywhere(bad, trusted, tmp_path, code="bad_name")
    assert "'.' parts" in str(err)


# ---- row 7: a 128 KiB PAX header -------------------------------------------------------------------------------


def test_128_kib_pax_header_is_refused_fast(good, tmp_path):
    pkg, trusted, _ = good
    pax = b"".join(tc.pax_record("comment", "x" * 1100) for _ in range(120))
    assert len(pax) >= 128 * 1024
    bad = tc.splice(pkg, tmp_path / "pax128-1.0.0.edgepkg", tc.pax_entry(pax, then=None))
    refused_everywhere(bad, trusted, tmp_path, code="header_too_large", max_s=0.5)


def test_too_many_pax_records_or_an_unknown_keyword_are_refused(good, tmp_path):
    pkg, trusted, _ = good
    many = b"".join(tc.pax_record("comment", "x") for _ in range(100))
    refused_everywhere(
        tc.splice(pkg, tmp_path / "many-1.0.0.edgepkg", tc.pax_entry(many)),
        trusted,
        tmp_path,
        code="bad_header",
    )
    odd = tc.pax_record("evil.keyword", "1")
    refused_everywhere(
        tc.splice(pkg, tmp_path / "odd-1.0.0.edgepkg", tc.pax_entry(odd)),
        trusted,
        tmp_path,
        code="bad_header",
    )


def test_bytes_appended_after_the_end_of_archive_marker_are_refused(good, tmp_path):
    pkg, trusted, _ = good
    bad = tmp_path / "appended-1.0.0.edgepkg"
    bad.write_bytes(pkg.read_bytes() + tc.file_entry("evil.bin", b"evil"))
    refused_everywhere(bad, trusted, tmp_path, code="trailing_data")


@pytest.mark.parametrize(
    ("packed", "said"),
    [
        ("gzip", "a gzip-compressed"),
        ("zip", "a zip"),
        ("xz", "an xz-compressed"),
        ("lzma", "an lzma-compressed"),
        ("lz4", "an lz4-compressed"),
        ("7z", "a 7z"),
        ("Z", "a Unix compress (.Z)"),
        ("small gzip", "a gzip-compressed"),
    ],
)
def test_a_compressed_package_is_refused_as_compressed(good, tmp_path, packed, said):
    """A package compressed on its way (a proxy, an archiver) was refused as "checksum field is not an octal number
    (header at byte 0)": what the file is, and what to do, are said now; lz4, 7z, lzma and Unix compress (.Z) files
    still got the generic words, and a compressed file smaller than a tar's header "archive is truncated"."""
    import gzip
    import lzma
    import zipfile

    pkg, trusted, _ = good
    bad = tmp_path / "packed-1.0.0.edgepkg"
    data = pkg.read_bytes()
    if packed == "zip":
        with zipfile.ZipFile(bad, "w", zipfile.ZIP_DEFLATED) as z:
            z.write(pkg, pkg.name)
    else:
        # (no lz4, 7z or compress in Python's library: their magic bytes, then the package, as such a file starts)
        bad.write_bytes(
            {
                "gzip": lambda: gzip.compress(data),
                "xz": lambda: lzma.compress(data),
                "lzma": lambda: lzma.compress(data, format=lzma.FORMAT_ALONE),
                "lz4": lambda: b"\x04\x22\x4d\x18\x64\x40\xa7" + data,
                "7z": lambda: b"7z\xbc\xaf\x27\x1c\x00\x04" + data,
                "Z": lambda: b"\x1f\x9d\x90" + data,
                "small gzip": lambda: gzip.compress(b"tiny"),
            }[packed]()
        )
    err = refused_everywhere(bad, trusted, tmp_path, code="bad_header")
    assert f"{said} file, not a package archive" in str(err), err


@pytest.mark.parametrize("names", [("golden/inputs.npz/x",), ("manifest.yaml/x",), ("a/b", "a")])
def test_an_entry_that_is_both_a_file_and_a_folder_is_refused(good, tmp_path, names):
    pkg, trusted, _ = good
    bad = tc.splice(pkg, tmp_path / "conflict-1.0.0.edgepkg", b"".join(tc.file_entry(n) for n in names))
    refused_everywhere(bad, trusted, tmp_path, code="path_conflict")


def test_bad_checksum_and_v7_headers_are_refused(good, tmp_path):
    pkg, trusted, _ = good
    refused_everywhere(
        tc.splice(pkg, tmp_path / "sum-1.0.0.edgepkg", tc.header("a.bin", 0, checksum=False)),
        trusted,
        tmp_path,
        code="bad_header",
    )
    refused_everywhere(
        tc.splice(pkg, tmp_path / "v7-1.0.0.edgepkg", tc.header("a.bin", 0, magic=bytes(8))),
        trusted,
        tmp_path,
        code="bad_header",
    )


def test_long_names_written_by_tarfile_are_still_read(tmp_path):
    """A PAX ``path`` record (name over 100 bytes) is part of the subset we read."""
    from tests.support.models import make_keypair

    key, pub = make_keypair(tmp_path / "keys")
    model = make_vision_onnx(tmp_path / "m.onnx")
    report = tmp_path / "r.json"
    report.write_text("{}")
    long_name = "reports/" + "r" * 120 + ".json"
    pkg = build_package(
        model,
        vision_spec(),
        tmp_path / "out",
        signing_key=key,
        golden_inputs=golden_inputs("vision"),
        extra_files={long_name: report},
    )
    with tarfile.open(pkg) as tar:
        assert long_name in tar.getnames()
    m = verify_package(pkg, load_trusted_keys([pub]))
    assert long_name in [f.path for f in m.files]


# ---- row 8: manifest.sig fields of the wrong type --------------------------------------------------------------


def _with(
    pkg: Path,
    out: Path,
    *,
    manifest: bytes | None = None,
    sig: bytes | None = None,
    extra: list[tuple[str, bytes]] = (),
) -> Path:
    with tarfile.open(pkg) as tar:
        ents = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        import io

        for m, data in ents:
            if m.name == "manifest.yaml" and manifest is not None:
                data = manifest
            if m.name == "manifest.sig" and sig is not None:
                data = sig
            m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
        for name, data in extra:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


def _sig(manifest: bytes, key_path: Path, **override) -> bytes:
    key = load_private_key(key_path)
    doc = {
        "algorithm": "ed25519",
        "key_id": key_id(key.public_key()),
        "signature": base64.b64encode(key.sign(manifest)).decode(),
    }
    doc.update(override)
    return json.dumps(doc).encode()


def _manifest(pkg: Path) -> bytes:
    with tarfile.open(pkg) as tar:
        return tar.extractfile("manifest.yaml").read()


@pytest.mark.parametrize(
    "override",
    [
        {"key_id": ["a", "b"]},
        {"key_id": {"x": 1}},
        {"key_id": 7},
        {"signature": 12},
        {"signature": ["AA=="]},
        {"algorithm": ["ed25519"]},
        {"signature": base64.b64encode(b"short").decode()},
    ],
    ids=lambda o: f"{next(iter(o))}-{type(next(iter(o.values()))).__name__}",
)
def test_signature_fields_of_the_wrong_type_are_refused(good, tmp_path, override):
    pkg, trusted, key = good
    bad = _with(pkg, tmp_path / "sig-1.0.0.edgepkg", sig=_sig(_manifest(pkg), key, **override))
    err = refused_everywhere(bad, trusted, tmp_path, SignatureError, "bad_signature")
    assert "manifest.sig is malformed" in str(err)


@pytest.mark.parametrize("sig", [b"[1, 2]", b"\xff\xfe", b"[" * 2000 + b"]" * 2000, b"null"])
def test_signature_file_that_is_not_a_json_object_is_refused(good, tmp_path, sig):
    pkg, trusted, _ = good
    bad = _with(pkg, tmp_path / "sig-1.0.0.edgepkg", sig=sig)
    refused_everywhere(bad, trusted, tmp_path, SignatureError, "bad_signature")


# ---- rows 9-10: 20,000-deep YAML, unsigned and signed -----------------------------------------------------------

DEEP = b"a: " + b"[" * 20_000 + b"]" * 20_000 + b"\n"
LAUGHS = (
    "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
).encode()


def test_deep_yaml_unsigned_is_refused_by_its_signature_before_any_parse(good, tmp_path):
    pkg, trusted, _ = good
    bad = _with(pkg, tmp_path / "deep-1.0.0.edgepkg", manifest=DEEP)  # the old signature no longer matches
    refused_everywhere(bad, trusted, tmp_path, SignatureError, "bad_signature")
    with pytest.raises(ManifestError) as ei:  # the unverified reader (inspect) is bounded too
        read_manifest(bad)
    assert ei.value.code == "yaml_limits" and "deeper than" in str(ei.value)


@pytest.mark.parametrize(
    "doc",
    [
        DEEP,
        LAUGHS,
        b"x" * 300_000,
        b"created_at: 2024-13-45\n",
        b"\xff\xfe: 1\n",
        b"!!python/object:os.system {}\n",
    ],
    ids=["deep", "laughs", "huge", "bad-timestamp", "not-utf8", "python-tag"],
)
def test_hostile_yaml_signed_by_a_trusted_key_is_refused(good, tmp_path, doc):
    pkg, trusted, key = good
    bad = _with(pkg, tmp_path / "yaml-1.0.0.edgepkg", manifest=doc, sig=_sig(doc, key))
    refused_everywhere(bad, trusted, tmp_path, PackageError)
    with pytest.raises(PackageError):
        read_manifest(bad)


@pytest.mark.parametrize("shape", ["whole", "field"])
def test_a_signed_manifest_holding_itself_through_an_alias_is_refused_naming_its_line(good, tmp_path, shape):
    """A manifest whose alias lies inside the node its anchor names (``x: &x [*x]``, or the whole document
    anchored and named within) is a value that holds itself: every reading path walked it until
    ``RecursionError``, a traceback instead of a ``PackageError`` (the agent's install included)."""
    pkg, trusted, key = good
    text = _manifest(pkg)
    doc = b"&m\n" + text + b"self: *m\n" if shape == "whole" else text + b"extra: &x [1, *x]\n"
    line = text.count(b"\n") + 2 if shape == "whole" else text.count(b"\n") + 1
    bad = _with(pkg, tmp_path / "self-1.0.0.edgepkg", manifest=doc, sig=_sig(doc, key))
    err = refused_everywhere(bad, trusted, tmp_path, ManifestError, "yaml_limits", max_s=60.0)  # hang guard
    assert f"YAML alias *{'m' if shape == 'whole' else 'x'} at line {line}, column " in str(err), str(err)
    assert str(err).endswith(" (a value that holds itself); refused"), str(err)
    with pytest.raises(ManifestError) as ei:
        read_manifest(bad)
    assert ei.value.code == "yaml_limits"


def test_the_pure_python_loader_refuses_a_value_holding_itself_too(monkeypatch):
    """Where PyYAML was built without libyaml, the bounded pure-Python loader checks the same."""
    from model_packager import safe_yaml

    monkeypatch.setattr(safe_yaml, "_CLoader", None)
    with pytest.raises(ManifestError) as ei:
        safe_yaml.load_bounded("a: 1\nb: &b {c: [*b]}\n", "manifest.yaml")
    assert str(ei.value) == (
        "manifest.yaml: YAML alias *b at line 2, column 12 lies inside the &b it names (a value that holds "
        "itself); refused"
    )
    assert safe_yaml.load_bounded("a: &a [1]\nb: *a\n", "manifest.yaml") == {"a": [1], "b": [1]}


def _alias_chain(anchors: int, brackets: int = 30) -> bytes:
    """An alias chain with no cycle: each anchor nests the one before ``brackets`` levels deeper."""
    s = "extra:\n  a0: &a0 [1]\n"
    for i in range(1, anchors):
        s += f"  a{i}: &a{i} " + "[" * brackets + f"*a{i - 1}" + "]" * brackets + "\n"
    return s.encode()


def test_a_signed_manifest_whose_alias_chain_nests_too_deep_once_expanded_is_refused_naming_its_line(
    good, tmp_path
):
    """40 anchors in ``extra:``, each nesting the one before 30 levels deeper: every line within the 32 levels
    a manifest may nest, the value 1,200 deep; verify_package and read_manifest raised ``RecursionError``."""
    pkg, trusted, key = good
    text = _manifest(pkg)
    doc = text + _alias_chain(40)
    bad = _with(pkg, tmp_path / "deep-1.0.0.edgepkg", manifest=doc, sig=_sig(doc, key))
    err = refused_everywhere(bad, trusted, tmp_path, ManifestError, "yaml_limits", max_s=60.0)  # hang guard
    line = text.count(b"\n") + 3
    assert (
        f"YAML nested deeper than 32 levels once aliases are expanded (alias *a0 at line {line}, column "
        in str(err)
    ), str(err)
    with pytest.raises(ManifestError) as ei:
        read_manifest(bad)
    assert ei.value.code == "yaml_limits"


@pytest.mark.parametrize("c_loader", [True, False], ids=["libyaml", "pure-python"])
def test_both_loaders_refuse_an_alias_chain_too_deep_once_expanded_and_read_a_shallow_one(
    monkeypatch, c_loader
):
    from model_packager import safe_yaml

    if not c_loader:
        monkeypatch.setattr(safe_yaml, "_CLoader", None)
    with pytest.raises(ManifestError) as ei:
        safe_yaml.load_bounded(_alias_chain(3, 20), "manifest.yaml")
    assert str(ei.value) == (
        "manifest.yaml: YAML nested deeper than 32 levels once aliases are expanded (alias *a1 at line 4, "
        "column 31); refused"
    )
    shallow = safe_yaml.load_bounded(_alias_chain(3, 9), "manifest.yaml")["extra"]["a2"]
    for _ in range(18):
        (shallow,) = shallow
    assert shallow == [1]


@pytest.mark.parametrize("c_loader", [True, False], ids=["libyaml", "pure-python"])
@pytest.mark.parametrize("spelt", ["*p{}", "[*p{}]"], ids=["alias", "list"])
def test_both_loaders_read_a_chain_of_presets_each_merging_the_one_before(monkeypatch, c_loader, spelt):
    """A merged mapping is flattened into the one that merges it, yet the expanded-depth check counted it (and
    the list holding it) as a level: a manifest's chain of 31 such presets (16 in the list form) was refused as
    nested deeper than 32 levels, though the value is 3 deep."""
    from model_packager import safe_yaml

    if not c_loader:
        monkeypatch.setattr(safe_yaml, "_CLoader", None)
    chain = "p0: &p0 {k0: 0}\n" + "".join(
        f"p{i}: &p{i} {{<<: {spelt.format(i - 1)}, k{i}: {i}}}\n" for i in range(1, 40)
    )
    assert safe_yaml.load_bounded(chain, "manifest.yaml")["p39"] == {f"k{i}": i for i in range(40)}
    deep = "deep: &deep " + "{a: " * 30 + "1" + "}" * 30 + "\n"  # 31 levels, 32 under a key
    assert safe_yaml.load_bounded(deep + f"x: {{<<: {spelt.format('')}}}\n".replace("*p", "*deep"), "m")
    with pytest.raises(ManifestError, match="nested deeper than 32 levels once aliases are expanded"):
        safe_yaml.load_bounded(deep + f"x: {{y: {{<<: {spelt.format('')}}}}}\n".replace("*p", "*deep"), "m")


def test_an_anchor_defined_twice_in_a_manifest_is_refused_as_such_not_as_a_value_holding_itself():
    from model_packager import safe_yaml

    with pytest.raises(ManifestError) as ei:
        safe_yaml.load_bounded("a: 1\nb: &b [1]\nc: &b [*b]\n", "manifest.yaml")
    assert (
        str(ei.value)
        == "manifest.yaml: YAML anchor &b defined twice (lines 2 and 3); give each its own name; refused"
    )


# ---- text that is not valid Unicode ----------------------------------------------------------------------------

# a lone surrogate in each kind of text a manifest holds: free text, a label, an output's name, a metric's key
SURROGATES = {
    "description": lambda d: d.update(description="Pr\u00fcfteil \ud800"),
    "provenance.notes": lambda d: d["provenance"].update(notes="from Pr\udcfcfteile"),
    "outputs[0].labels[1]": lambda d: d["outputs"][0]["labels"].__setitem__(1, "kratzer\udce4"),
    "outputs[1].name": lambda d: d["outputs"][1].update(name="heatmap\ud800"),
    "provenance.metrics key": lambda d: d["provenance"].update(metrics={"acc\ud800": 1.0}),
}


@pytest.mark.parametrize("field", list(SURROGATES))
def test_a_signed_manifest_holding_a_lone_surrogate_escape_is_refused_naming_its_line_and_why(
    good, tmp_path, capsys, field
):
    # "\ud800" in manifest.yaml (as yaml.safe_dump writes a lone surrogate): refused everywhere as before, but said
    # "not valid YAML (while parsing a quoted scalar)": neither where nor what
    pkg, trusted, key = good
    doc = yaml.safe_load(_manifest(pkg))
    SURROGATES[field](doc)
    new = yaml.safe_dump(doc, sort_keys=False).encode()
    assert b"\\uD" in new  # the escape, signed
    line = next(i for i, text in enumerate(new.decode().splitlines(), 1) if "\\uD" in text)
    bad = _with(pkg, tmp_path / "text-1.0.0.edgepkg", manifest=new, sig=_sig(new, key))
    err = refused_everywhere(bad, trusted, tmp_path, ManifestError, "bad_yaml")
    assert f"manifest.yaml: not valid YAML at line {line}, column " in str(err), err
    assert (
        "found invalid Unicode character escape code (a \\uD800-\\uDFFF escape is half of a UTF-16 pair"
        in str(err)
    )
    assert packager_main(["verify", str(bad), "--trust", next(iter(trusted.sources.values()))]) == 1
    assert f"not valid YAML at line {line}, column " in capsys.readouterr().err


@pytest.mark.parametrize("field", list(SURROGATES))
def test_a_spec_holding_a_lone_surrogate_is_refused_at_build_naming_the_field_and_nothing_is_written(
    good, tmp_path, field
):
    # a spec handed over as data (the trainer's way: a description naming its dataset folder, once in bytes that are
    # not UTF-8): before, the package was built and signed with a manifest.yaml that every verify then refused
    _, _, key = good
    spec = vision_spec()
    SURROGATES[field](spec)
    out = tmp_path / "out"
    with pytest.raises(ManifestError) as ei:
        build_package(
            make_vision_onnx(tmp_path / "m.onnx"),
            spec,
            out,
            signing_key=key,
            golden_inputs=golden_inputs("vision"),
        )
    assert f"manifest {field} '" in str(ei.value), ei.value
    assert "holds a lone surrogate at character" in str(ei.value) and "write the character itself" in str(
        ei.value
    )
    assert str(ei.value).isprintable()
    assert not out.exists() or not any(out.iterdir())


# ---- manifest paths confined to the package --------------------------------------------------------------------


@pytest.mark.parametrize(
    "field,value",
    [
        ("golden.inputs", "../../outside.npz"),
        ("golden.expected", "/etc/passwd"),
        ("files.0.path", "../model.onnx"),
        ("files.0.path", "model.onnx\nOK forged"),
        ("golden.inputs", "golden/unlisted.npz"),
    ],
)
def test_manifest_paths_outside_the_package_are_refused(good, tmp_path, field, value):
    pkg, trusted, key = good
    doc = yaml.safe_load(_manifest(pkg))
    where = doc
    *parents, last = field.split(".")
    for p in parents:
        where = where.setdefault(p, {}) if not p.isdigit() else where[int(p)]
    where[last] = value
    new = yaml.safe_dump(doc, sort_keys=False).encode()
    bad = _with(pkg, tmp_path / "paths-1.0.0.edgepkg", manifest=new, sig=_sig(new, key))
    refused_everywhere(bad, trusted, tmp_path, ManifestError)


# ---- row 11: control characters in names never reach the terminal ----------------------------------------------

FORGED = (
    "x\x1b[2K\r\nOK part-inspection-1.0.0: signature by a trusted key, 3 files, every hash and size match"
)


@pytest.mark.parametrize("where", ["entry", "pax-path", "file-name"])
def test_control_characters_in_names_cannot_forge_verify_output(good, tmp_path, capsys, where):
    pkg, trusted, _ = good
    if where == "entry":
        bad = tc.splice(pkg, tmp_path / "ctl-1.0.0.edgepkg", tc.file_entry(FORGED[:99]))
    elif where == "pax-path":
        bad = tc.splice(pkg, tmp_path / "ctl-1.0.0.edgepkg", tc.pax_entry(tc.pax_record("path", FORGED)))
    else:
        bad = tmp_path / ("ctl\x1b[31m\rOK-1.0.0.edgepkg")
        bad.write_bytes(pkg.read_bytes() + b"junk")
    pub = next(iter(trusted.sources.values()))
    rc = packager_main(["verify", str(bad), "--trust", pub])
    out, err = capsys.readouterr()
    assert rc == 1 and out == ""
    assert err.count("\n") == 1 and err.rstrip("\n").isprintable(), repr(err)
    assert "\\x1b" in err and "\x1b" not in err and "\r" not in err
    refused_everywhere(bad, trusted, tmp_path)


def test_inspect_escapes_every_field_of_an_unverified_manifest(good, tmp_path, capsys):
    pkg, _, key = good
    doc = yaml.safe_load(_manifest(pkg))
    doc["description"] = "fine\n\x1b[2KOK forged"
    new = yaml.safe_dump(doc, sort_keys=False).encode()
    bad = _with(pkg, tmp_path / "desc-1.0.0.edgepkg", manifest=new, sig=_sig(new, key))
    assert packager_main(["inspect", str(bad)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\nOK" not in out and "fine\\x0a\\x1b[2KOK forged" in out


# ---- versions -----------------------------------------------------------------------------------------------------


def test_version_order_is_semantic():
    assert (
        version_key("1.10.0") > version_key("1.9.0") > version_key("1.9.0-rc.2") > version_key("1.9.0-rc.1")
    )
    assert version_key("1.0.0+build.5") == version_key("1.0.0")
    for bad in ("1.0", "v1.0.0", "1.0.0\n", "1.0.0/../x", "", "9" * 80 + ".0.0"):
        with pytest.raises(ValueError):
            version_key(bad)
