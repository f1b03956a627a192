"""The trainer's whole-number options refuse 0 and negatives by name, before any stage runs."""

import pytest

from cloud_trainer.train.cli import _parser


@pytest.mark.parametrize(
    "option,value",
    [("--epochs", "0"), ("--epochs", "-3"), ("--size", "0"), ("--threads", "-1"), ("--epochs", "x")],
)
def test_a_whole_number_option_below_one_is_refused_naming_it(option, value, capsys):
    ap = _parser("build")
    with pytest.raises(SystemExit) as exit_:
        ap.parse_args(["vision", "--dataset", "d", option, value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and "at least 1" in err


def test_valid_numbers_are_taken_as_given():
    a = _parser("build").parse_args(["vision", "--dataset", "d", "--epochs", "1", "--size", "224"])
    assert (a.epochs, a.size) == (1, 224)
