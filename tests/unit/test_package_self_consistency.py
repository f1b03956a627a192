"""A manifest that contradicts itself or its model is refused where it is built and wherever a signed
package is read (``verify_package``, ``open_package``, the agent's store), in one line naming the package
and the field: numbers that are not finite (a NaN threshold never says NG, a NaN tolerance passes every
golden test), a class threshold that is not a probability, a label count other than the output's values
per item, a mean/std per colour channel, preprocessing that makes tensors of another size than the
model's input. Each of these installed before, then failed (or answered OK) on every frame."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
import yaml

from model_packager import (
    GoldenError,
    ManifestError,
    SpecMismatchError,
    build_package,
    load_trusted_keys,
    verify_package,
)
from tests.support.models import (
    golden_inputs,
    make_keypair,
    make_package,
    make_signal_onnx,
    make_vision_onnx,
    signal_spec,
    vision_spec,
)
from tests.unit.test_package_hostile import _manifest, _sig, _with, refused_everywhere

NAN, INF = float("nan"), float("inf")


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("consistency")
    key, pub = make_keypair(tmp / "keys")
    return {
        "key": key,
        "trusted": load_trusted_keys([pub]),
        "vision": make_vision_onnx(tmp / "vision.onnx"),
        "signal": make_signal_onnx(tmp / "signal.onnx"),
        "good": make_package(tmp, kind="vision", key=key),
    }


def _build(kit, tmp_path, edit, kind="vision", model=None, inputs=None):
    spec = vision_spec() if kind == "vision" else signal_spec()
    edit(spec)
    return build_package(
        model or kit[kind],
        spec,
        tmp_path / "out",
        signing_key=kit["key"],
        golden_inputs=inputs if inputs is not None else golden_inputs(kind),
    )


def _resigned(kit, tmp_path, edit):
    """The good package with its manifest edited and signed again by the trusted key: what a trainer with
    a bug, or a spec edited by hand, would publish."""
    doc = yaml.safe_load(_manifest(kit["good"]))
    edit(doc)
    data = yaml.safe_dump(doc, sort_keys=False).encode()
    out = tmp_path / "part-inspection-1.0.0.edgepkg"
    return _with(kit["good"], out, manifest=data, sig=_sig(data, kit["key"]))


def _out0(**kw):
    return lambda d: d["outputs"][0].update(kw)


def _golden(**kw):
    return lambda d: d.setdefault("golden", {}).update(kw)


def _pre(**kw):
    return lambda d: d["preprocessing"].update(kw)


CONTRADICTIONS = {
    "nan-threshold": (_out0(threshold=NAN), "manifest outputs[0].threshold is nan"),
    "inf-threshold": (_out0(threshold=INF), "manifest outputs[0].threshold is inf"),
    "class-threshold-above-1": (_out0(threshold=1.5), "manifest outputs[0].threshold is 1.5"),
    "nan-atol": (_golden(atol=NAN), "manifest golden.atol is nan"),
    "inf-rtol": (_golden(rtol=INF), "manifest golden.rtol is inf"),
    "negative-atol": (_golden(atol=-1.0), "manifest golden.atol is -1.0"),
    "nan-output-atol": (_golden(output_atol={"heatmap": NAN}), "manifest golden.output_atol.heatmap is nan"),
    "7-labels-for-6-values": (
        _out0(labels=["ok", "a", "b", "c", "d", "e", "f"]),
        "manifest outputs[0].labels: 7 labels but the output has 6 values per item",
    ),
    "1-mean-for-rgb": (
        _pre(mean=[0.5], std=[0.25]),
        "manifest preprocessing.mean has 1 value but colour rgb has 3 channels",
    ),
    "zero-std": (_pre(std=[0.0, 0.25, 0.25]), "manifest preprocessing.std is [0.0, 0.25, 0.25]"),
    # every frame's tensor Inf or NaN (the golden inputs, tensors, passed): each frame an error said to be
    # the model's ("produced NaN/Inf")
    "std-1e-300": (
        _pre(std=[0.25, 1e-300, 0.25]),
        "std 1e-300 make a pixel of channel 1 5e+299, past float32's largest value 3.4028e+38",
    ),
    "scale-1e39": (_pre(scale=1e39), "scale 1e+39, mean 0.5 and std 0.25 make a pixel of channel 0 1.02e+42"),
    # a label is named in configs and results, one line each: a newline broke validate's error lines
    "label-with-a-newline": (
        _out0(labels=["ok", "scr\natch", "b", "c", "d", "e"]),
        "manifest outputs[0].labels: label 'scr\\natch' is empty or holds a control character",
    ),
    # a label is in every result (published, kept, written to PLCs): one of 200 KB made each frame's result
    # 400 KB (label and probabilities' key)
    "a-label-of-200-kb": (
        _out0(labels=["ok", "x" * 200_000, "b", "c", "d", "e"]),
        "manifest outputs[0].labels: label 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'... is 200,000 characters: "
        "at most 255",
    ),
    # every result carries a probability per label: 1,001 labels made each result as long, unbounded before
    "1001-labels": (
        _out0(labels=["ok", *(f"c{i}" for i in range(1000))]),
        "manifest outputs[0].labels: 1,001 labels: at most 1000",
    ),
    # a toolchain's class list with a name twice: probabilities keyed by label kept the last class's
    # only, so with ok_label repeated a part the model called class 0 "ok" at 0.99 was NG
    "a-label-twice": (
        _out0(labels=["ok", "scratch", "dent", "ok", "missing_hole", "stain"]),
        "manifest outputs[0].labels: label 'ok' is given 2 times: each class needs its own label",
    ),
}


# A tolerance so wide that the golden check could never fail (1e30 passes every output; an rtol of 1 passes an
# output of 0 for any expected value) is refused where a package is built, by the trainer or `model-packager
# build`. A package signed before that bound, already on gateways, is read and installed as it was: the bound is
# no manifest contract change (checked at read time, it moved such packages to .rejected/ at an agent upgrade).
TOO_WIDE = {
    "atol-1e30": (_golden(atol=1e30), "manifest golden.atol is 1e+30: at most 1000 where a package is built"),
    "output-atol-1e30": (
        _golden(output_atol={"heatmap": 1e30}),
        "manifest golden.output_atol.heatmap is 1e+30",
    ),
    "rtol-1": (_golden(rtol=1.0), "manifest golden.rtol is 1: must be below 1 where a package is built"),
    # just over the bound: its digits shown (it read "is 1000: at most 1000")
    "atol-1000.001": (_golden(atol=1000.001), "manifest golden.atol is 1000.001: at most 1000"),
    # closer than 12 digits tell: all its digits (it read "is 1000: at most 1000" again)
    "atol-1000+ulp": (
        _golden(atol=1000.0000000000002),
        "manifest golden.atol is 1000.0000000000002: at most 1000",
    ),
}


@pytest.mark.parametrize("case", [*CONTRADICTIONS, *TOO_WIDE], ids=str)
def test_build_refuses_a_manifest_that_contradicts_itself_naming_the_field(kit, tmp_path, case):
    edit, words = {**CONTRADICTIONS, **TOO_WIDE}[case]
    with pytest.raises(ManifestError) as ei:
        _build(kit, tmp_path, edit)
    msg = str(ei.value)
    assert msg.startswith("spec for part-inspection-1.0.0: ") and words in msg, msg
    assert "\n" not in msg and msg.isprintable()
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.edgepkg"))


@pytest.mark.parametrize("case", CONTRADICTIONS, ids=str)
def test_a_signed_manifest_that_contradicts_itself_is_refused_everywhere(kit, tmp_path, case):
    edit, words = CONTRADICTIONS[case]
    pkg = _resigned(kit, tmp_path, edit)
    err = refused_everywhere(pkg, kit["trusted"], tmp_path, ManifestError, "bad_manifest")
    assert str(err).startswith("package part-inspection-1.0.0.edgepkg: ") and words in str(err), err


def test_a_classifier_of_more_labels_than_a_real_one_needs_is_refused_naming_the_count(kit, tmp_path):
    # a model of 1,001 classes, its manifest as long: built on the former code (labels were unbounded in count)
    labels = ["ok", *(f"c{i}" for i in range(1000))]
    model = make_vision_onnx(tmp_path / "wide.onnx", labels=labels, heatmap=False)
    with pytest.raises(ManifestError) as ei:
        _build(kit, tmp_path, lambda d: d.update(vision_spec(labels=labels, heatmap=False)), model=model)
    assert "manifest outputs[0].labels: 1,001 labels: at most 1000" in str(ei.value), ei.value
    # ImageNet's 1000 are taken
    model = make_vision_onnx(tmp_path / "imagenet.onnx", labels=labels[:1000], heatmap=False)
    assert _build(
        kit,
        tmp_path / "1000",
        lambda d: d.update(vision_spec(labels=labels[:1000], heatmap=False)),
        model=model,
    )


def test_a_class_threshold_is_a_probability_and_an_anomaly_threshold_is_on_the_models_scale(kit, tmp_path):
    # an anomaly score is a distance or a log-likelihood: thresholds outside [0, 1] are its normal case
    for thr in (7.5, -2.0):
        pkg = _build(kit, tmp_path / str(thr), _out0(threshold=thr), kind="signal")
        assert verify_package(pkg, kit["trusted"]).outputs[0].threshold == thr
    for thr in (0.0, 1.0):  # the ends of [0, 1]: NG always, NG only at p(ok) == 0
        assert verify_package(_build(kit, tmp_path / str(thr), _out0(threshold=thr)), kit["trusted"])
    # the class output of the same signal package is a probability, and so is its threshold
    with pytest.raises(
        ManifestError, match=r"manifest outputs\[1\]\.threshold is -0\.1: .* lies in \[0, 1\]"
    ):
        _build(kit, tmp_path, lambda d: d["outputs"][1].update(threshold=-0.1), kind="signal")


def _fixed_batch(src, out, n: int):
    m = onnx.load(str(src))
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = n
    onnx.save(m, str(out))
    return out


def test_preprocessing_that_makes_another_size_than_the_models_input_is_refused(kit, tmp_path):
    with pytest.raises(SpecMismatchError) as ei:  # the tester's case: 32x32 frames into a 64x64 model
        _build(kit, tmp_path, _pre(width=32, height=32))
    msg = str(ei.value)
    assert msg.startswith("spec for part-inspection-1.0.0: manifest preprocessing makes tensors of shape")
    assert "preprocessing.height gives 32 where the model takes 64" in msg
    assert "preprocessing.width gives 32 where the model takes 64" in msg

    pkg = _resigned(kit, tmp_path, _pre(width=32, height=32))
    err = refused_everywhere(pkg, kit["trusted"], tmp_path, SpecMismatchError)
    assert "package part-inspection-1.0.0.edgepkg: " in str(err) and "preprocessing.width gives 32" in str(
        err
    )

    for edit, words in (
        (_pre(color="gray", mean=[0.5], std=[0.25]), "preprocessing.color gives 1 where the model takes 3"),
        (_pre(layout="NHWC"), "(axis 3, C)"),
    ):
        with pytest.raises(SpecMismatchError, match=words.replace("(", r"\(").replace(")", r"\)")):
            _build(kit, tmp_path, edit)


def test_the_size_is_compared_with_the_tensor_tiles_and_roi_make(kit, tmp_path):
    # each tile (of any roi) is resized to width x height: a tiled 64x64 model over a 300x200 box is right
    tiled = _pre(roi=[10, 10, 300, 200], tiles=[2, 2], tile_overlap=0.125)
    assert verify_package(_build(kit, tmp_path / "tiled", tiled), kit["trusted"])
    # ...but one row per tile: a model exported with a fixed batch of 1 cannot take 4 tiles
    one = _fixed_batch(kit["vision"], tmp_path / "batch1.onnx", 1)
    with pytest.raises(SpecMismatchError, match=r"preprocessing\.tiles gives 4 where the model takes 1"):
        _build(kit, tmp_path, tiled, model=one, inputs=golden_inputs("vision", n=1))
    assert _build(
        kit, tmp_path / "one", _pre(roi=[0, 0, 100, 80]), model=one, inputs=golden_inputs("vision", n=1)
    )


def test_signal_features_of_another_count_than_the_models_input_are_refused(kit, tmp_path):
    model = make_signal_onnx(tmp_path / "s60.onnx", n_features=60)  # the spec makes 64 bands + 4 = 68

    def edit(d):
        d["inputs"][0]["shape"] = ["batch", 60]

    inputs = {"features": golden_inputs("signal")["features"][:, :60]}
    with pytest.raises(SpecMismatchError, match="gives 68 where the model takes 60"):
        _build(kit, tmp_path, edit, kind="signal", model=model, inputs=inputs)


def test_labels_that_do_not_fit_a_symbolic_class_axis_are_refused_at_build(kit, tmp_path):
    # the manifest cannot tell the class count ("classes" is symbolic): the golden run's outputs can
    def edit(d):
        d["outputs"][0].update(shape=["batch", "classes"], labels=["ok", "a", "b", "c", "d", "e", "f"])

    with pytest.raises(GoldenError) as ei:
        _build(kit, tmp_path, edit)
    assert ei.value.code == "uninterpretable"
    assert "manifest outputs[0].labels has 7 labels but output 'logits' gives 6 values per item" in str(
        ei.value
    )


def test_a_file_listed_twice_is_refused_everywhere_not_installed_then_refused_at_the_next_start(
    kit, tmp_path
):
    """The same path twice with different digests: opening checked the file against the last entry and
    installed it; the check of the installed folder at every start compares every entry, so the next
    start set it aside as "altered or truncated" (and, with no local package, did not start)."""

    def twice(doc):
        model = next(f for f in doc["files"] if f["path"] == "model.onnx")
        doc["files"].insert(0, dict(model, role="other", size=5, sha256="0" * 64))

    pkg = _resigned(kit, tmp_path, twice)
    err = refused_everywhere(pkg, kit["trusted"], tmp_path, ManifestError, "bad_manifest")
    assert "files[1].path 'model.onnx' is listed twice" in str(err), err


@pytest.mark.parametrize(
    "name, like",
    [
        ("Model.onnx", "model.onnx"),
        ("golden/INPUTS.npz", "golden/inputs.npz"),
        ("notes/cafe\u0301.txt", None),
    ],
    ids=["case-of-the-model", "case-of-a-golden-file", "nfd-of-an-nfc-name"],
)
def test_file_names_that_are_one_file_on_a_case_or_normalising_disk_are_refused_everywhere(
    kit, tmp_path, name, like
):
    """Two listed files whose names differ only by case or Unicode normalisation are one file on FAT/exFAT
    media, a case-folding ext4 folder, macOS or ZFS with normalization: the extraction wrote the second over
    the first after both had been hashed, so the model served was the other file's bytes. Each such package,
    signed, also reached the archive entry by entry and was installed."""
    import hashlib

    data = b"not the model: another file's bytes"
    nfc = "notes/caf\u00e9.txt"

    def alike(doc):
        if like is None:  # the NFC name is in the package too
            doc["files"].append(
                {"path": nfc, "size": 1, "sha256": hashlib.sha256(b"x").hexdigest(), "role": "other"}
            )
        doc["files"].append(
            {"path": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "role": "other"}
        )

    doc = yaml.safe_load(_manifest(kit["good"]))
    alike(doc)
    man = yaml.safe_dump(doc, sort_keys=False).encode()
    extra = [(name, data)] + ([(nfc, b"x")] if like is None else [])
    pkg = _with(
        kit["good"],
        tmp_path / "part-inspection-1.0.0.edgepkg",
        manifest=man,
        sig=_sig(man, kit["key"]),
        extra=extra,
    )
    err = refused_everywhere(pkg, kit["trusted"], tmp_path, ManifestError, "bad_manifest", max_s=60)
    assert "only by case or Unicode normalisation" in str(err) and repr(name) in str(err), err
    if like == "model.onnx":  # and build refuses to write one
        with pytest.raises(ManifestError, match="only by case or Unicode normalisation"):
            build_package(
                kit["vision"],
                vision_spec(),
                tmp_path / "built",
                signing_key=kit["key"],
                golden_inputs=golden_inputs("vision"),
                extra_files={name: kit["vision"]},
            )


def test_a_file_named_like_the_agents_own_record_is_refused_where_built_and_read(kit, tmp_path):
    """The agent keeps ``.package-digest`` beside an installed package's files: a package listing a file of that
    name was installed, the agent wrote over it, and every later start set the package aside as altered (a
    gateway without a local package then did not start)."""
    import hashlib

    data = b"a toolchain's own notes"
    doc = yaml.safe_load(_manifest(kit["good"]))
    doc["files"].append(
        {
            "path": ".package-digest",
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "role": "other",
        }
    )
    man = yaml.safe_dump(doc, sort_keys=False).encode()
    out = tmp_path / "part-inspection-1.0.0.edgepkg"
    pkg = _with(kit["good"], out, manifest=man, sig=_sig(man, kit["key"]), extra=[(".package-digest", data)])
    err = refused_everywhere(pkg, kit["trusted"], tmp_path, ManifestError, "bad_manifest", max_s=60)
    assert "'.package-digest' is reserved for the agent's own record" in str(err), err


def _two_inputs(kit, tmp_path):
    """The signal model with a second input added to its anomaly score, and the spec naming both."""
    from onnx import TensorProto, helper

    m = onnx.load(str(kit["signal"]))
    for n in m.graph.node:
        n.output[:] = ["score_raw" if o == "anomaly_score" else o for o in n.output]
    m.graph.input.append(helper.make_tensor_value_info("aux", TensorProto.FLOAT, ["batch", 1]))
    m.graph.node.append(helper.make_node("Add", ["score_raw", "aux"], ["anomaly_score"]))
    path = tmp_path / "two.onnx"
    onnx.save(m, str(path))
    spec = signal_spec()
    spec["inputs"].append({"name": "aux", "dtype": "float32", "shape": ["batch", 1]})
    return path, spec


def test_a_model_of_two_inputs_is_refused_where_it_is_built_and_read(kit, tmp_path):
    """The agent feeds each item as one tensor to the first input: a two-input model passed its golden
    runs (which feed every input), installed, then failed every item ("Required inputs (['aux']) are
    missing")."""
    import hashlib

    from tests.unit.test_package_external_data import _resigned as with_files

    model, spec = _two_inputs(kit, tmp_path)
    inputs = {**golden_inputs("signal"), "aux": np.zeros((4, 1), np.float32)}
    words = "two.onnx takes 2 inputs ['aux', 'features']: the agent feeds each item as one tensor"
    with pytest.raises(SpecMismatchError, match=re.escape(words)):
        build_package(model, spec, tmp_path / "out", signing_key=kit["key"], golden_inputs=inputs)
    good = make_package(tmp_path, kind="signal", key=kit["key"])
    data = model.read_bytes()

    doc = yaml.safe_load(_manifest(good))
    doc["inputs"] = spec["inputs"]
    for f in doc["files"]:
        if f["path"] == "model.onnx":
            f["size"], f["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    man = yaml.safe_dump(doc, sort_keys=False).encode()
    pkg = with_files(good, kit["key"], {"model.onnx": data}, tmp_path / "machine-health-1.0.0.edgepkg")
    (tmp_path / "x").mkdir()
    pkg = _with(pkg, tmp_path / "x" / "machine-health-1.0.0.edgepkg", manifest=man, sig=_sig(man, kit["key"]))
    err = refused_everywhere(pkg, kit["trusted"], tmp_path, SpecMismatchError, "spec_mismatch")
    assert "model.onnx takes 2 inputs ['aux', 'features']" in str(err), err


def test_a_package_signed_with_a_wide_golden_tolerance_before_the_bound_still_installs(kit, tmp_path):
    from edge_agent.models.store import ModelStore

    pkg = _resigned(kit, tmp_path, _golden(atol=1e30, rtol=1.0, output_atol={"heatmap": 5000.0}))
    assert verify_package(pkg, kit["trusted"]).golden.atol == 1e30
    installed = ModelStore(tmp_path / "store").install(pkg, kit["trusted"])
    golden = installed.manifest.golden
    assert (golden.atol, golden.rtol, golden.output_atol) == (1e30, 1.0, {"heatmap": 5000.0})


def test_a_golden_atol_past_the_bound_on_its_outputs_own_scale_is_served(kit):
    """The anomaly trainer wrote golden.atol 2e-3 x the threshold, uncapped until it was capped at the build's bound:
    a threshold of 1.07e6 gave atol 2138, a check on a score of that scale, in packages gateways serve. The agent's
    load refused every atol past 1000 as passing any output, so an upgrade set such an installed package aside and
    failed its slot. One below the threshold of each output it holds is served; one that holds an output of a lower
    threshold, or of none, is still refused."""
    from edge_agent.models.select import tolerance_refusal

    m = verify_package(kit["good"], kit["trusted"])
    wide = m.golden.model_copy(update={"atol": 2138.0, "rtol": 0.02, "output_atol": {}})
    on_scale = [o.model_copy(update={"threshold": 1.07e6}) for o in m.outputs]
    assert tolerance_refusal(m.model_copy(update={"outputs": on_scale, "golden": wide})) is None
    for other in (0.5, None):  # (a probability's threshold; an output without one)
        outputs = [*on_scale[:-1], on_scale[-1].model_copy(update={"threshold": other})]
        why = tolerance_refusal(m.model_copy(update={"outputs": outputs, "golden": wide}))
        assert why is not None and "manifest golden.atol is 2138: at most 1000" in why, why
