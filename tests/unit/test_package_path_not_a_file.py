"""A package, spec or extracted manifest path that is not a regular file is named, never waited on or read
whole: a named pipe (``model-packager inspect``, an agent slot's ``package:``, ``model-packager build``'s spec)
was opened blocking and waited for a writer for good; ``/dev/zero`` as a spec, or an extracted folder's
``manifest.yaml`` replaced by a pipe, was read until memory ran out or hung the agent's start."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import yaml

from model_packager import ManifestError, PackageError, build_package, read_manifest, verify_folder
from model_packager.cli import main as packager_main
from tests.support.models import make_keypair, make_vision_onnx, vision_spec


@pytest.mark.timeout(60)  # the former code waited on the pipe for good: a hang guard, not a timing
def test_a_named_pipe_given_as_a_package_is_named_not_waited_for(tmp_path, capsys):
    pipe = tmp_path / "vision-1.0.0.edgepkg"
    os.mkfifo(pipe)
    with pytest.raises(
        PackageError, match=r"^package vision-1\.0\.0\.edgepkg: cannot read it \(a named pipe, not a file\)"
    ):
        read_manifest(pipe)
    assert packager_main(["inspect", str(pipe)]) != 0
    assert "cannot read it (a named pipe, not a file)" in capsys.readouterr().err


@pytest.mark.timeout(60)
def test_a_device_or_a_named_pipe_given_as_a_spec_is_named_not_read(tmp_path):
    pipe = tmp_path / "spec.yaml"
    os.mkfifo(pipe)
    for spec, what in (
        (pipe, "a named pipe that nothing wrote to"),
        (Path("/dev/zero"), "a device, not a file"),
    ):
        with pytest.raises(ManifestError, match=rf"^spec {spec}: cannot read YAML \({what}\)$"):
            build_package(tmp_path / "model.onnx", spec, tmp_path, signing_key=tmp_path / "k.key")


@pytest.mark.timeout(60)
def test_an_extracted_manifest_replaced_by_a_named_pipe_is_refused_not_waited_for(tmp_path):
    folder = tmp_path / "vision-1.0.0"
    folder.mkdir()
    os.mkfifo(folder / "manifest.yaml")
    with pytest.raises(ManifestError, match=r"cannot read manifest\.yaml \(a named pipe, not a file\)"):
        verify_folder(folder, trusted=None)  # type: ignore[arg-type]  # refused before any key is needed


@pytest.mark.timeout(60)
def test_config_deploy_names_a_named_pipe_or_a_file_over_the_services_bound_before_connecting(tmp_path):
    from cloud_trainer.admin_cli import main_config

    pipe, big = tmp_path / "line3.yaml", tmp_path / "big.yaml"
    os.mkfifo(pipe)
    big.write_text("sources: {}\n# " + "x" * 256 * 1024 + "\n")
    with pytest.raises(
        SystemExit, match=r"cannot read .*line3\.yaml \(a named pipe that nothing wrote to\)$"
    ):
        main_config(["deploy", str(pipe)])
    with pytest.raises(
        SystemExit, match=r"big\.yaml: larger than 262144 bytes; an agent configuration is at most"
    ):
        main_config(["deploy", str(big)])


def _pipe_written_in_pieces(*pieces: bytes) -> tuple[Path, threading.Thread]:
    """A pipe as ``<(envsubst < x)`` gives one (``/dev/fd/63``), its writer sending ``pieces`` one by one."""
    r, w = os.pipe()

    def write() -> None:
        try:
            for piece in pieces:
                os.write(w, piece)
        except BrokenPipeError:  # the reader stopped one byte past its bound
            pass
        finally:
            os.close(w)

    writer = threading.Thread(target=write)
    writer.start()
    return Path(f"/proc/self/fd/{r}"), writer


@pytest.mark.timeout(120)  # a hang guard, not a timing
def test_a_spec_from_process_substitution_is_read_as_before(tmp_path):
    """``model-packager build model.onnx <(envsubst < spec.yaml)``: 9badc83 refused the pipe as not a file."""
    key, _ = make_keypair(tmp_path / "keys")
    model = make_vision_onnx(tmp_path / "model.onnx")
    text = yaml.safe_dump(vision_spec("piped-spec", "1.2.3")).encode()
    spec, writer = _pipe_written_in_pieces(text[:40], text[40:])
    try:
        pkg = build_package(model, spec, tmp_path / "out", signing_key=key)
    finally:
        writer.join()
        os.close(int(spec.name))
    assert pkg.name == "piped-spec-1.2.3.edgepkg"
    assert read_manifest(pkg).version == "1.2.3"


@pytest.mark.timeout(60)
def test_config_deploy_reads_a_config_from_process_substitution_within_the_services_bound(tmp_path):
    """``cloud-trainer config deploy <(envsubst < line3.yaml)`` and ``... | config deploy /dev/stdin``: 9badc83
    refused the pipe as not a file; it is read, and one over the bound is refused by its size."""
    from cloud_trainer.admin_cli import main_config

    config = b"agent:\n  id: gw-line3\n" + b"sources: {}\n" * 3
    piped, writer = _pipe_written_in_pieces(config[:10], config[10:])
    try:  # read, the command goes on to its admin certificate
        with pytest.raises(SystemExit, match=r"no certificate"):
            main_config(["deploy", str(piped), "--name", "line3", "--pki", str(tmp_path / "pki")])
    finally:
        writer.join()
        os.close(int(piped.name))
    big, writer = _pipe_written_in_pieces(*[b"# " + b"x" * 65534] * 5)
    try:
        with pytest.raises(SystemExit, match=r"larger than 262144 bytes; an agent configuration is at most"):
            main_config(["deploy", str(big), "--name", "line3", "--pki", str(tmp_path / "pki")])
    finally:
        writer.join()
        os.close(int(big.name))


def test_a_model_in_a_folder_named_in_bytes_that_are_not_utf8_is_refused_naming_the_path_and_the_fix(
    tmp_path, capsys
):
    # a model copied from a Windows share into Pr\xfcf/ (Latin-1): neither engine takes such a path. Before,
    # `model-packager build` said "unexpected TypeError: __init__(): incompatible constructor arguments ...", and
    # OpenVINO "'utf-8' codec can't decode byte 0xfc in position ..."
    from model_packager.runtimes import ov_compile

    key, _ = make_keypair(tmp_path / "keys")
    made = tmp_path / "made"
    made.mkdir()
    make_vision_onnx(made / "model.onnx")
    (made / "spec.yaml").write_text(yaml.safe_dump(vision_spec()))
    folder = made.rename(tmp_path / os.fsdecode(b"Pr\xfcf"))
    argv = ["build", str(folder / "model.onnx"), str(folder / "spec.yaml"), "--key", str(key)]
    assert packager_main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (
        f"model-packager build: {tmp_path}/Pr\\xfcf/model.onnx: the path holds a byte that is not UTF-8 (a folder "
        "named in another code page), and ONNX Runtime takes a model's path as UTF-8 only; copy the model to a folder "
        "whose path is UTF-8\n"
    )
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    with pytest.raises(
        PackageError, match=r"Pr\\xfcf/model\.onnx: .*, and OpenVINO takes a model's path as UTF-8"
    ):
        ov_compile(folder / "model.onnx")
