"""`cloud-trainer dataset import --kind fleet`: the export of the fleet's labelled samples is written whole
or not at all, one sample at a time (not the whole store's images in memory at once), and what stops it
is one line naming the file or sample."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest

from cloud_trainer.blobs import LocalBlobStore
from cloud_trainer.fleet.store import SQLiteStore
from cloud_trainer.train.data import DatasetError, load_parts
from cloud_trainer.train.uploads import export
from simulators.parts import write_dataset
from tests.integration.test_uploads_dataset import ROOT, cloud, write_labels  # noqa: F401  (a fixture)


def _hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_an_export_that_fails_part_way_leaves_no_dataset_a_build_would_use(tmp_path, cloud):  # noqa: F811
    """A base dataset holding a broken link: the export used to copy the rest of the base into --out, stop
    with a shutil.Error traceback, and leave a dataset of the base alone, without the fleet's samples, that
    the next `build --dataset` trained on. Now it is one line naming the file, and --out is not made."""
    data, _, truth = cloud
    base = write_dataset(tmp_path / "base", count=6, seed=4, size=32, defect_rate=0.5)
    (base / "images" / "zz_gone.png").symlink_to("gone.png")  # inside the base, to nothing (a link out is
    # refused before any copy: tests/integration/test_uploads_base_paths_out.py)
    labels = write_labels(tmp_path / "l.jsonl", truth)
    with pytest.raises(DatasetError, match=r"the dataset could not be written .*zz_gone.png"):
        export(data, "part-inspection", tmp_path / "ds", base=base, labels_file=labels)
    assert not (tmp_path / "ds").exists() and _hidden(tmp_path) == []
    (base / "images" / "zz_gone.png").unlink()
    res = export(data, "part-inspection", tmp_path / "ds", base=base, labels_file=labels)
    assert res["exported"] == 12 and len(load_parts(tmp_path / "ds").images) == 6 + 12
    assert _hidden(tmp_path) == []


def test_a_corrupt_blob_is_one_line_naming_the_sample_and_nothing_is_written(tmp_path, cloud):  # noqa: F811
    data, _, truth = cloud
    sha = sorted(truth)[5]
    blob = next(p for p in (data / "blobs").rglob("*") if p.is_file() and sha in p.name)
    os.chmod(blob, 0o644)
    blob.write_bytes(blob.read_bytes()[:-10])  # truncated in the store
    with pytest.raises(DatasetError, match=rf"sample {sha[:16]} .*: .*altered or truncated"):
        export(
            data, "part-inspection", tmp_path / "ds", labels_file=write_labels(tmp_path / "l.jsonl", truth)
        )
    assert not (tmp_path / "ds").exists() and _hidden(tmp_path) == []


def test_the_export_holds_one_sample_in_memory_at_a_time(tmp_path):
    """It used to read every labelled sample's bytes into memory before writing the first: a fleet's
    100 000 uploads at 200 KB each wanted 20 GB. 40 samples of 256 KB here: the peak stays near one."""
    data = tmp_path / "cloud"
    store, blobs = SQLiteStore(data / "fleet.db"), LocalBlobStore(data / "blobs")
    records, labels = [], {}
    for seq in range(1, 41):
        noise = np.random.default_rng(seq).integers(0, 255, (300, 290, 3), dtype=np.uint8)
        body = cv2.imencode(".png", noise)[1].tobytes()  # ~256 KB, each its own (a real image: checked)
        sha = blobs.put_bytes(body)
        labels[sha] = "ok" if seq % 2 else "scratch"
        records.append(
            {
                "seq": seq,
                "kind": "sample",
                "t": 1000.0 + seq,
                "sample_sha256": sha,
                "sample_ext": ".png",
                "payload": json.dumps({"model": "part-inspection", "model_version": "1.0.0"}),
            }
        )
    store.ingest("gw1", records)
    store.db.close()
    lf = write_labels(tmp_path / "l.jsonl", labels)
    tracemalloc.start()
    try:
        res = export(data, "part-inspection", tmp_path / "ds", labels_file=lf)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert res["exported"] == 40 and len(list((tmp_path / "ds" / "images").iterdir())) == 40
    assert peak < 4 * 2**20, f"peak {peak / 2**20:.1f} MB for 40 samples of 0.25 MB"


_DIES_AT_THE_FOURTH_SAMPLE = """
import os, sys
from cloud_trainer.blobs import LocalBlobStore
from cloud_trainer.train import uploads
read = LocalBlobStore.get_bytes
def dying(self, digest, n=[0]):
    n[0] += 1
    if n[0] == 4:  # three samples written into the hidden folder
        os.kill(os.getpid(), int(sys.argv[1]))
    return read(self, digest)
LocalBlobStore.get_bytes = dying
sys.exit(uploads.main(sys.argv[2:]))
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_an_export_killed_part_way_leaves_nothing_once_run_again(tmp_path, cloud, sig):  # noqa: F811
    """SIGTERM (a job's timeout, a pod evicted) ended the export at once, its hidden folder left beside --out with
    the images written so far; SIGKILL (the out-of-memory killer) left one too, and every later export kept it. A
    stopped export removes it; a killed one's is removed by the next export to the same --out."""
    data, _, truth = cloud
    labels, out = write_labels(tmp_path / "l.jsonl", truth), tmp_path / "datasets" / "ds"
    args = ["--cloud-data", str(data), "--out", str(out), "--labels", str(labels)]
    done = subprocess.run(
        [sys.executable, "-c", _DIES_AT_THE_FOURTH_SAMPLE, str(int(sig)), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode in (-sig, 128 + sig) and "Traceback" not in done.stderr, done.stderr
    left = _hidden(out.parent)
    assert not out.exists() and len(left) == (sig == signal.SIGKILL), left  # only SIGKILL's is left
    said: list[str] = []
    res = export(data, "part-inspection", out, labels_file=labels, log=said.append)
    assert res["exported"] == 12 and os.listdir(out.parent) == ["ds"]
    assert all(any(name in m and "was killed" in m for m in said) for name in left), said


def test_an_export_stopped_after_recording_its_labels_says_they_are_recorded(
    tmp_path,
    cloud,  # noqa: F811
    monkeypatch,
    capsys,
):
    """The labels of ``--labels`` are recorded in the store before the dataset is written: an export refused or
    stopped (Ctrl-C) after that said "nothing was written"."""
    from cloud_trainer.train import uploads

    data, _, truth = cloud
    labels = write_labels(tmp_path / "l.jsonl", truth)
    note = f"no dataset was written; the 12 label(s) of {labels} are recorded in the store"
    sha = sorted(truth)[5]
    blob = next(p for p in (data / "blobs").rglob("*") if p.is_file() and sha in p.name)
    body = blob.read_bytes()
    os.chmod(blob, 0o644)
    blob.write_bytes(body[:-10])  # truncated in the store
    with pytest.raises(DatasetError) as ei:
        export(data, "part-inspection", tmp_path / "ds", labels_file=labels)
    assert "altered or truncated" in str(ei.value) and str(ei.value).endswith(f"; {note}")
    assert "nothing was written" not in str(ei.value)
    blob.write_bytes(body)

    def interrupted(self, digest):
        raise KeyboardInterrupt

    monkeypatch.setattr(LocalBlobStore, "get_bytes", interrupted)
    with pytest.raises(SystemExit) as ex:
        uploads.main(["--cloud-data", str(data), "--out", str(tmp_path / "ds"), "--labels", str(labels)])
    assert ex.value.code == 128 + signal.SIGINT and not (tmp_path / "ds").exists()
    assert capsys.readouterr().err.strip().endswith(f"before the end; {note}: run it again to import")

    # stopped in the store's read of the samples again, just after the labels are recorded: the same
    monkeypatch.undo()
    read = SQLiteStore.samples
    reads = [0]

    def read_again_stopped(self, *a, **kw):
        reads[0] += 1
        if reads[0] == 2:  # (the read after ``set_labels``)
            raise KeyboardInterrupt
        return read(self, *a, **kw)

    monkeypatch.setattr(SQLiteStore, "samples", read_again_stopped)
    with pytest.raises(SystemExit) as ex:
        uploads.main(["--cloud-data", str(data), "--out", str(tmp_path / "ds"), "--labels", str(labels)])
    assert reads[0] == 2 and ex.value.code == 128 + signal.SIGINT and not (tmp_path / "ds").exists()
    assert capsys.readouterr().err.strip().endswith(f"before the end; {note}: run it again to import")
