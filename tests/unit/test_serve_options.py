"""``cloud-trainer serve``'s bounds on the agents' batches in flight (bd4662f): a value that would refuse every
batch (0 or less) or none (NaN) is refused at the start in one line naming the option, before anything is
opened."""

from __future__ import annotations

import pytest

from cloud_trainer.fleet.server import main as serve


@pytest.mark.parametrize(
    "opt, value",
    [
        ("--in-flight-bytes", "0"),
        ("--tenant-in-flight-bytes", "-1"),
        ("--in-flight-wait-s", "nan"),
        ("--in-flight-wait-s", "0"),
    ],
)
def test_a_bound_on_batches_in_flight_that_is_no_positive_number_is_refused_naming_it(
    tmp_path, capsys, opt, value
):
    rc = serve(["--data", str(tmp_path / "data"), "--pki", str(tmp_path / "pki"), "--port", "0", opt, value])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"{opt} " in err and "must be a number above 0" in err
    assert not (tmp_path / "data").exists()  # nothing opened
