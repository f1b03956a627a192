"""A package, spec or extracted manifest path that is not a regular file is named, never waited on or read
whole: a named pipe (``model-packager inspect``, an agent slot's ``package:``, ``model-packager build``'s spec)
was opened blocking and waited for a writer for good; ``/dev/zero`` as a spec, or an extracted folder's
``manifest.yaml`` replaced by a pipe, was read until memory ran out or hung the agent's start."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from model_packager import ManifestError, PackageError, build_package, read_manifest, verify_folder
from model_packager.cli import main as packager_main


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
    for spec, what in ((pipe, "a named pipe"), (Path("/dev/zero"), "a device")):
        with pytest.raises(ManifestError, match=rf"^spec {spec}: cannot read YAML \({what}, not a file\)$"):
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
    with pytest.raises(SystemExit, match=r"cannot read .*line3\.yaml \(a named pipe, not a file\)$"):
        main_config(["deploy", str(pipe)])
    with pytest.raises(
        SystemExit, match=r"big\.yaml: larger than 262144 bytes; an agent configuration is at most"
    ):
        main_config(["deploy", str(big)])
