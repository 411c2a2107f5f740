"""The shared flags and argparse types of fastpapers.commands._common."""
import argparse
import doctest

import pytest

from fastpapers.commands import _common
from fastpapers.commands._common import (add_common, add_training_flags, nonempty_path, nonneg_int, positive_float,
                                         positive_int, prob_float)


def _parser(**kw):
    p = argparse.ArgumentParser(prog="x", exit_on_error=False)
    add_common(p, out_default="runs/x")
    add_training_flags(p, **kw)
    return p


def test_doctests():
    assert doctest.testmod(_common).failed == 0


def test_defaults_and_values():
    a = _parser(steps=100, batch_size=8, checkpoint_every=50, sample_every=25, lr=2e-4).parse_args(
        ["--steps", "7", "--batch-size", "3", "--lr", "0.01", "--resume", "--out", "o"])
    assert (a.steps, a.batch_size, a.checkpoint_every, a.sample_every, a.lr, a.resume, a.out) == \
        (7, 3, 50, 25, 0.01, True, "o")
    assert not hasattr(_parser(steps=1, batch_size=1).parse_args([]), "lr")


@pytest.mark.parametrize("argv, flag, value", [
    (["--steps", "0"], "--steps", "'0'"), (["--steps", "-3"], "--steps", "'-3'"),
    (["--steps", "2.5"], "--steps", "'2.5'"), (["--batch-size", "x"], "--batch-size", "'x'"),
    (["--checkpoint-every", "-1"], "--checkpoint-every", "'-1'"),
    (["--sample-every", "1e3"], "--sample-every", "'1e3'"),
    (["--lr", "nan"], "--lr", "'nan'"), (["--lr", "inf"], "--lr", "'inf'"), (["--lr", "0"], "--lr", "'0'"),
    (["--lr", "-0.001"], "--lr", "'-0.001'"), (["--out", ""], "--out", "''"), (["--out", "  "], "--out", "'  '"),
])
def test_bad_values_name_the_flag(argv, flag, value, capsys):
    p = _parser(steps=10, batch_size=2, lr=1e-3)
    p.exit_on_error = True
    with pytest.raises(SystemExit) as info:
        p.parse_args(argv)
    assert info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument {flag}: expected" in last and f"got {value}" in last


def test_types_directly():
    assert positive_int("3") == 3 and nonneg_int("0") == 0 and positive_float("1e-3") == 1e-3
    assert prob_float("0") == 0.0 and prob_float("1") == 1.0 and nonempty_path("a") == "a"
    for fn, bad in [(prob_float, "1.5"), (prob_float, "-0.1"), (prob_float, "nan"), (nonneg_int, "-1"),
                    (positive_int, "")]:
        with pytest.raises(argparse.ArgumentTypeError, match="expected"):
            fn(bad)


def test_one_seed_everything():
    from fastpapers.train import checkpoint
    assert _common.seed_everything is checkpoint.seed_everything
