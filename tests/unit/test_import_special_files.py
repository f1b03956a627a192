"""`dataset import` in a user's own folder that holds more than files: a named pipe (a camera tool's or a logger's
FIFO) beside the images. The import reads the first bytes of every file not named as an image, to say which are
images by content (``images._image_kind``); it opened a FIFO to read it, which waits for a writer that never
comes, and the import hung for good without a word. Only regular files are read for their kind now."""

from __future__ import annotations

import os
import threading

import pytest

from cloud_trainer.train.images import import_images
from tests.unit.test_image_import import per_class


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are a POSIX file kind")
def test_a_named_pipe_in_the_folder_is_left_out_not_waited_for(tmp_path):
    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2}, exts=(".png",))
    fifo = src / "ok" / "camera.pipe"
    os.mkfifo(fifo)
    notes: list[str] = []
    done: list[dict] = []
    t = threading.Thread(target=lambda: done.append(import_images(src, tmp_path / "ds", log=notes.append)))
    t.daemon = True
    t.start()
    t.join(120)  # a bound for a hang, not a time measured: the import takes a second or two
    hung = t.is_alive()
    if hung:  # the former code: blocked opening the pipe; a writer that opens and closes it frees it
        with open(fifo, "wb"):
            pass
        t.join()
    assert not hung, "the import waited on the named pipe"
    assert done and done[0]["counts"] == {"ok": 20, "dent": 2}
    assert "ok/camera.pipe" in "\n".join(notes)  # said as a file that is no image by its name


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are a POSIX file kind")
def test_a_source_that_is_a_pipe_or_a_file_is_named_for_what_it_is_not_called_missing(tmp_path):
    """``dataset import`` given a named pipe or a file where a folder is wanted, and a vibration run that is a
    named pipe or a folder, said "no such folder" / "no such file" of a path the engineer sees with ls."""
    from cloud_trainer.train.data import DatasetError
    from cloud_trainer.train.signals import read_recording

    os.mkfifo(tmp_path / "frames")
    (tmp_path / "frames.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    os.mkfifo(tmp_path / "run1.csv")
    (tmp_path / "run2.csv").mkdir()
    for src, said in (
        (tmp_path / "frames", "a named pipe, not a folder"),
        (tmp_path / "frames.zip", "a file, not a folder"),
        (tmp_path / "nothing", "no such folder"),
    ):
        with pytest.raises(DatasetError) as exc:
            import_images(src, tmp_path / "ds")
        assert str(exc.value) == f"{src}: {said}"
    for run, said in (
        (tmp_path / "run1.csv", "a named pipe, not a file"),
        (tmp_path / "run2.csv", "a folder, not a file"),
        (tmp_path / "run3.csv", "no such file"),
    ):
        with pytest.raises(DatasetError) as exc:
            read_recording(run)
        assert str(exc.value) == f"{run}: {said}"
