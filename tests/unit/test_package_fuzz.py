"""Fuzzing the package reader (Hypothesis): mutated and crafted archive headers, and manifests signed by a
trusted key, never raise anything but ``PackageError`` and never take a second.

The suite runs a few hundred cases per property; ``bench/package_fuzz.py`` runs 10,000
(``PACKAGE_FUZZ_EXAMPLES``)."""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model_packager import PackageError, load_trusted_keys, read_manifest, verify_package
from tests.support import tar_craft as tc
from tests.support.models import make_package
from tests.unit.test_package_hostile import _sig

EXAMPLES = int(os.environ.get("PACKAGE_FUZZ_EXAMPLES", "150"))
BUDGET_S = 1.0  # CPU seconds of this thread a case may take (a bomb or a runaway parse burns CPU)
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=EXAMPLES <= 1000,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    pkg = make_package(tmp, kind="vision")
    with tarfile.open(pkg) as tar:
        members = [(m.name, tar.extractfile(m).read(), m.offset) for m in tar.getmembers()]
    return _Base(
        pkg=pkg,
        bytes=pkg.read_bytes(),
        members=members,
        end=tc.end_of_members(pkg),
        trusted=load_trusted_keys([tmp / "keys" / "signing.pub"]),
        key=tmp / "keys" / "signing.key",
        dir=tmp,
    )


class _Base(dict):
    def __repr__(self) -> str:  # Hypothesis prints the arguments of a failing case
        return f"<genuine package {self['pkg'].name}>"


STATS = {"cases": 0, "refused": 0, "accepted": 0, "max_case_s": 0.0, "codes": {}}


@pytest.fixture(scope="module", autouse=True)
def _write_stats():
    yield
    out = os.environ.get("PACKAGE_FUZZ_STATS")  # bench/package_fuzz.py reads it
    if out:
        Path(out).write_text(json.dumps(STATS, indent=1))


def only_package_errors(path: Path, trusted) -> None:
    # CPU, not wall: a loaded machine (CI -n 3, other jobs) stretched wall time past the budget
    t0 = time.thread_time()
    for call in (lambda: verify_package(path, trusted), lambda: read_manifest(path)):
        try:
            call()
            STATS["accepted"] += 1
        except PackageError as exc:
            assert str(exc).isprintable(), repr(str(exc))
            STATS["refused"] += 1
            STATS["codes"][exc.code] = STATS["codes"].get(exc.code, 0) + 1
    took = time.thread_time() - t0
    STATS["cases"] += 1
    STATS["max_case_s"] = max(STATS["max_case_s"], took)
    assert took < BUDGET_S, f"{took:.2f} s"


# ---- archive headers ---------------------------------------------------------------------------------------

KINDS = st.sampled_from([b"0", b"\x00", b"x", b"L", b"K", b"S", b"g", b"1", b"2", b"5", b"7", b"A", b"V"])
SIZES = st.one_of(
    st.integers(0, 600), st.integers(0, 1 << 20), st.sampled_from([1 << 33, 1 << 40, (1 << 33) - 1])
)
NAMES = st.one_of(
    st.binary(max_size=120),
    st.text(max_size=120).map(str.encode),
    st.sampled_from([b"model.onnx", b"manifest.yaml", b"../x", b"/etc/x", b"a/./b", b"golden/"]),
)
PAX_KEYS = st.sampled_from(
    [
        "path",
        "size",
        "hdrcharset",
        "linkpath",
        "comment",
        "mtime",
        "GNU.sparse.map",
        "GNU.sparse.numblocks",
        "GNU.sparse.major",
        "GNU.sparse.name",
        "SCHILY.xattr.a",
        "x",
    ]
)
PAX_VALUES = st.one_of(
    st.binary(max_size=60),
    st.sampled_from([b"BINARY", b"ISO-IR 10646 2000 UTF-8", b"1", b"-1", b"1099511627776", b"model.onnx"]),
)


@st.composite
def pax_data(draw) -> bytes:
    records = draw(st.lists(st.tuples(PAX_KEYS, PAX_VALUES), max_size=8))
    data = b"".join(tc.pax_record(k, v) for k, v in records)
    if draw(st.booleans()):  # a broken record too
        data += draw(st.binary(max_size=40))
    return data


@st.composite
def crafted_entry(draw) -> bytes:
    kind = draw(KINDS)
    data = draw(pax_data()) if kind == b"x" else draw(st.binary(max_size=700))
    size = len(data) if draw(st.booleans()) else draw(SIZES)
    h = tc.header(
        draw(NAMES),
        size,
        kind,
        magic=draw(st.sampled_from([tc.POSIX_MAGIC, tc.GNU_MAGIC, bytes(8), b"ustar\x00xx"])),
        base256_size=draw(st.booleans()) and size > 0,
        checksum=draw(st.integers(0, 9)) > 0,
        prefix=draw(st.binary(max_size=20)),
    )
    return h + tc.pad(data)


@FUZZ
@given(
    entries=st.lists(crafted_entry(), min_size=1, max_size=4),
    where=st.sampled_from(["end", "start", "tail"]),
    cut=st.none() | st.integers(0, 4000),
)
def test_crafted_headers_raise_only_package_errors_quickly(base, tmp_path_factory, entries, where, cut):
    crafted = b"".join(entries)
    data, end = base["bytes"], base["end"]
    if where == "end":
        out = data[:end] + crafted + bytes(1024)
    elif where == "start":
        out = crafted + data
    else:
        out = data + crafted
    if cut is not None:
        out = out[: max(0, len(out) - cut)]
    path = base["dir"] / "crafted-1.0.0.edgepkg"
    path.write_bytes(out)
    only_package_errors(path, base["trusted"])


@FUZZ
@given(
    flips=st.lists(st.tuples(st.integers(0, 3 * 512 + 511), st.integers(0, 255)), min_size=1, max_size=12),
    header=st.integers(0, 5),
    cut=st.none() | st.integers(0, 200_000),
)
def test_mutated_headers_of_a_genuine_package_raise_only_package_errors(base, flips, header, cut):
    data = bytearray(base["bytes"])
    offsets = [off for _, _, off in base["members"]]
    start = offsets[min(header, len(offsets) - 1)]
    for pos, value in flips:
        p = start + pos
        if p < len(data):
            data[p] = value
    if cut is not None:
        data = data[: max(0, len(data) - cut)]
    path = base["dir"] / "mutated-1.0.0.edgepkg"
    path.write_bytes(bytes(data))
    only_package_errors(path, base["trusted"])


# ---- manifests signed by a trusted key ------------------------------------------------------------------------

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(1 << 70), 1 << 70), st.floats(), st.text(max_size=30)
)
TREES = st.recursive(
    SCALARS,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4),
    max_leaves=20,
)
YAML_SNIPPETS = st.sampled_from(
    [
        b"[" * 5000,
        b"{a: " * 3000,
        b"&a [*a]",
        b"!!python/name:os.system",
        b"2024-13-45",
        b"!!binary zz",
        b"? [a]\n: b",
        b"*nope",
        b"\t",
        b"%YAML 9.9\n---",
        b"a: !!timestamp x",
        b"\xff",
        b"---\n---\n",
        b"<<: *a",
    ]
)


@st.composite
def manifest_bytes(draw, original: dict) -> bytes:
    how = draw(st.sampled_from(["mutate", "replace", "text", "snippet"]))
    if how == "text":
        return draw(st.binary(max_size=400))
    if how == "snippet":
        return draw(YAML_SNIPPETS) + draw(st.binary(max_size=20))
    doc = yaml.safe_load(yaml.safe_dump(original))
    for _ in range(draw(st.integers(1, 4))):
        node = doc
        path = draw(
            st.lists(
                st.sampled_from(
                    [
                        "files",
                        "golden",
                        "inputs",
                        "outputs",
                        "preprocessing",
                        0,
                        1,
                        "path",
                        "inputs",
                        "expected",
                        "name",
                        "version",
                        "shape",
                        "labels",
                    ]
                ),
                max_size=3,
            )
        )
        for p in path:
            nxt = (
                node[p]
                if isinstance(node, dict) and p in node
                else (node[p] if isinstance(node, list) and isinstance(p, int) and p < len(node) else None)
            )
            if not isinstance(nxt, dict | list):
                break
            node = nxt
        value = draw(TREES)
        if isinstance(node, dict):
            key = draw(st.sampled_from(list(node) + ["path", "inputs", "role"])) if node else "x"
            if how == "replace" and key in node:
                del node[key]
            else:
                node[key] = value
        elif node:
            node[draw(st.integers(0, len(node) - 1))] = value
    return yaml.safe_dump(doc, sort_keys=False).encode()


@FUZZ
@given(data=st.data())
def test_signed_manifests_raise_only_package_errors(base, data):
    members = {name: body for name, body, _ in base["members"]}
    original = yaml.safe_load(members["manifest.yaml"])
    manifest = data.draw(manifest_bytes(original))
    members["manifest.yaml"] = manifest
    members["manifest.sig"] = _sig(manifest, base["key"])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    path = base["dir"] / "signed-1.0.0.edgepkg"
    path.write_bytes(buf.getvalue())
    only_package_errors(path, base["trusted"])
