"""save_sample on a disk that fills up and is freed again (a real 1 MB tmpfs): an image that cannot be written
is a failure of the action, never a result saved without its image, and saving goes on once there is room."""

from __future__ import annotations

import contextlib
import errno
import shutil
import subprocess

import numpy as np
import pytest

from devices.base import Frame
from edge_agent import actions
from edge_agent.config import parse_config
from edge_agent.types import Result
from tests.support.peers import small_tmpfs


def _keep(tmp_path, folder, **keep):
    """An agent's runner and its ``keep`` action: save_sample into ``folder``."""
    cfg = parse_config(
        {
            "agent": {"id": "a", "site": "s", "line": "l", "data_dir": str(tmp_path / "data")},
            "actions": {"keep": {"type": "save_sample", **keep, "dir": str(folder)}},
            "http": {"enabled": False},
        },
        "t.yaml",
        str(tmp_path),
    )
    return actions.ActionRunner(cfg, {}), cfg.actions["keep"]


def test_a_full_disk_fails_the_sample_whole_and_saving_resumes_once_freed(tmp_path):
    with small_tmpfs(tmp_path / "samples", "1m") as folder:
        ctx, action = _keep(tmp_path, folder, max_per_hour=100_000)
        image = np.random.default_rng(0).integers(0, 256, (128, 128, 3), np.uint8)  # ~49 kB as a PNG

        def save(seq: int) -> None:
            res = Result("p", "cam", seq, 0.0, "m", "1.0.0", "onnxruntime", "NG", 0.9)
            actions._save(ctx, "keep", action, res, Frame("cam", seq, 0.0, image))

        saved = 0
        with pytest.raises(OSError):
            for seq in range(100):
                save(seq)
                saved += 1
        assert 5 < saved < 100
        stems = lambda ext: {p.name[: -len(ext)] for p in folder.glob(f"*{ext}")}  # noqa: E731
        assert stems(".json") == stems(".png") and len(stems(".png")) == saved  # no result without its image
        for p in sorted(folder.glob("*.png"))[:5]:  # the line engineer frees some room
            p.unlink()
        save(1000)
        assert (
            len(list(folder.glob("*-00001000-NG.png"))) == 1
            and len(list(folder.glob("*-00001000-NG.json"))) == 1
        )


def test_an_image_the_full_disk_refuses_is_said_by_the_agent_alone_with_its_cause(tmp_path, capfd):
    with small_tmpfs(tmp_path / "samples", "256k") as folder:
        ctx, action = _keep(tmp_path, folder)
        image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), np.uint8)  # ~197 kB as a PNG
        with contextlib.suppress(OSError):
            (folder / "filler").write_bytes(b"\0" * (shutil.disk_usage(folder).free - 4096))
        capfd.readouterr()
        res = Result("p", "cam", 1, 0.0, "m", "1.0.0", "onnxruntime", "NG", 0.9)
        with pytest.raises(OSError) as failed:
            actions._save(ctx, "keep", action, res, Frame("cam", 1, 0.0, image))
        assert failed.value.errno == errno.ENOSPC and "No space left" in str(failed.value)
        assert str(folder) in str(failed.value)
        # formerly libpng wrote "libpng error: Write Error" to the agent's stderr at every sample, past its log
        assert capfd.readouterr().err == ""
        assert sorted(p.name for p in folder.iterdir()) == ["filler"]


def test_a_read_only_sample_folder_is_said_with_its_cause_not_the_clean_up_s(tmp_path):
    """On a read-only disk the clean-up's own unlink fails too (EROFS, even for a file never made): it used to be
    raised in place of the failure that says which sample was not written and why."""
    from edge_agent.types import Window

    with small_tmpfs(tmp_path / "samples", "256k") as folder:
        ctx, action = _keep(tmp_path, folder)
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        res = Result("p", "cam", 1, 0.0, "m", "1.0.0", "onnxruntime", "NG", 0.9)
        frame = Frame("cam", 1, 0.0, np.zeros((16, 16, 3), np.uint8))
        with pytest.raises(OSError) as failed:
            actions._save(ctx, "keep", action, res, frame)
        assert failed.value.errno == errno.EROFS
        assert str(failed.value).startswith(f"[Errno 30] sample {folder}/p-")
        assert str(failed.value).endswith("-NG.png not written (Read-only file system)")
        window = Window("vib", 2, 0.0, 1.0, np.zeros(64))
        with pytest.raises(OSError) as failed:
            actions._save(ctx, "keep", action, res, window)
        assert failed.value.errno == errno.EROFS
        assert str(failed.value).startswith(f"[Errno 30] sample {folder}/p-")
        assert str(failed.value).endswith("-NG.npy not written (Read-only file system)")
