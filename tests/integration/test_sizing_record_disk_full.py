"""A slot's sizing record (``item_time.json``) on a real small disk (tmpfs) that is full: the write is skipped
(best effort) and leaves no temporary file in the slot's folder, where nothing would remove it; once there is
room it is written."""

from __future__ import annotations

import contextlib
import shutil

from edge_agent import sizing
from tests.support.peers import small_tmpfs


def test_a_sizing_record_the_full_disk_refuses_leaves_no_temporary_file(tmp_path):
    with small_tmpfs(tmp_path / "models", "256k") as root:
        slot = root / "default"
        slot.mkdir()
        filler = root / "filler"  # (the disk's other tenants)
        with contextlib.suppress(OSError):  # filled to the last byte
            filler.write_bytes(b"\0" * (shutil.disk_usage(root).free + 4096))
        sizing.record(slot, "pkg-1", "pkg-1.tar.gz", "onnx fp32", 12.5)  # not raised: sizing advice only
        assert sorted(p.name for p in slot.iterdir()) == []  # no .item_time.json.<pid>.tmp left
        assert sizing.recorded(slot) is None

        filler.unlink()
        sizing.record(slot, "pkg-1", "pkg-1.tar.gz", "onnx fp32", 12.5)
        assert sorted(p.name for p in slot.iterdir()) == [sizing.RECORD]
        assert (sizing.recorded(slot) or {})["item_ms"] == 12.5
