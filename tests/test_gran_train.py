"""GRAN end to end through the shared Trainer: a few steps, resume, sample, battle, CLI."""
import json
import os

import pytest
import torch

from fastpapers import cli
from fastpapers.commands import gran as gran_cmd

TINY = dict(nz=8, timesteps=2, image_size=16, ngf=8, ndf=8, hz_dim=8, hc_dim=8)


@pytest.fixture(scope="module")
def digits():
    g = torch.Generator().manual_seed(0)
    return torch.utils.data.TensorDataset(torch.rand(48, 1, 16, 16, generator=g), torch.zeros(48, dtype=torch.long))


def _train(out, steps, digits, resume=False):
    return gran_cmd.train(str(out), steps=steps, batch_size=8, data=digits, resume=resume, progress=False,
                          sample_every=2, checkpoint_every=2, log_every=1, **TINY)


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["modules"]


def test_train_resume_is_bit_exact_and_samples(tmp_path, digits):
    _train(tmp_path / "straight", 4, digits)
    _train(tmp_path / "split", 2, digits)
    _train(tmp_path / "split", 4, digits, resume=True)
    a, b = _weights(tmp_path / "straight" / "checkpoint.pt"), _weights(tmp_path / "split" / "checkpoint.pt")
    for net in ("G", "D"):
        for k in a[net]:
            assert torch.equal(a[net][k], b[net][k]), (net, k)
    assert os.path.isfile(tmp_path / "straight" / "samples" / "sample_0000004.png")
    with open(tmp_path / "straight" / "config.json") as f:
        assert json.load(f)["timesteps"] == 2

    written = gran_cmd.sample(str(tmp_path / "straight" / "checkpoint.pt"), str(tmp_path / "out"), n=5, rows=3)
    from PIL import Image
    steps_png = Image.open(written[1])
    # 3 rows x 2 steps of 16-pixel images with 2-pixel padding, upscaled 2x.
    assert steps_png.size == (2 * (2 * 18 + 2), 2 * (3 * 18 + 2))


def test_resume_with_another_config_is_refused(tmp_path, digits):
    _train(tmp_path, 1, digits)
    with pytest.raises(ValueError, match="config"):
        gran_cmd.train(str(tmp_path), steps=2, batch_size=8, data=digits, resume=True, progress=False,
                       **dict(TINY, timesteps=3))


def test_battle_between_two_runs(tmp_path, digits):
    _train(tmp_path / "a", 2, digits)
    _train(tmp_path / "b", 3, digits)
    test = torch.rand(20, 1, 16, 16)
    r = gran_cmd.battle(str(tmp_path / "a" / "checkpoint.pt"), str(tmp_path / "b" / "checkpoint.pt"), n=30, test=test)
    for v in (r.test_error_1, r.test_error_2, r.sample_error_1, r.sample_error_2):
        assert 0.0 <= v <= 1.0
    assert r.winner in ("model 1", "model 2", "tie", "invalid")
    self_battle = gran_cmd.battle(str(tmp_path / "a" / "checkpoint.pt"), str(tmp_path / "a" / "checkpoint.pt"),
                                  n=30, test=test)
    assert self_battle.r_test == 1.0


def test_cli_train_sample_battle_on_mnist(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert cli.main(["gran", "train", "--out", run, "--steps", "2", "--batch-size", "8", "--width", "8",
                     "--timesteps", "2", "--sample-every", "1"]) == 0
    ckpt = os.path.join(run, "checkpoint.pt")
    assert cli.main(["gran", "sample", "--checkpoint", ckpt, "--out", str(tmp_path / "s"), "--n", "4"]) == 0
    assert os.path.isfile(tmp_path / "s" / "steps.png")
    out = str(tmp_path / "battle.json")
    assert cli.main(["gran", "battle", "--checkpoint", ckpt, "--checkpoint", ckpt, "--n", "20", "--out", out]) == 0
    with open(out) as f:
        assert json.load(f)["r_sample"] == 1.0
    assert "winner" in capsys.readouterr().out


def test_cli_bad_input(tmp_path, capsys):
    assert cli.main(["gran", "train", "--out", str(tmp_path), "--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().err
    assert cli.main(["gran", "train", "--out", str(tmp_path), "--steps", "1", "--timesteps", "0"]) == 2
    assert "--timesteps" in capsys.readouterr().err
    assert cli.main(["gran", "sample", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "config" in capsys.readouterr().err
    assert cli.main(["gran", "battle", "--checkpoint", "a.pt"]) == 2
    assert "exactly twice" in capsys.readouterr().err


def test_battle_uses_batch_statistics_like_the_reference(tmp_path, digits):
    """The reference battle.py judges with batch statistics; running averages are not used.

    Run b is run a with its discriminator's running averages corrupted: with batch
    statistics the two discriminators are the same function, so they err alike on the test set.
    """
    import shutil

    from fastpapers.train import atomic_save
    _train(tmp_path / "a", 2, digits)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    path = tmp_path / "b" / "checkpoint.pt"
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    for k in ckpt["modules"]["D"]:
        if k.endswith("running_mean"):
            ckpt["modules"]["D"][k] += 50.0
    atomic_save(ckpt, str(path))  # rewritten as the library writes it, checksum included
    test = torch.rand(40, 1, 16, 16)
    a, b = str(tmp_path / "a" / "checkpoint.pt"), str(path)
    r = gran_cmd.battle(a, b, n=30, test=test)
    assert r.test_error_1 == r.test_error_2 and r.r_test == 1.0
    running = gran_cmd.battle(a, b, n=30, test=test, bn="running")
    assert running.test_error_1 != running.test_error_2  # the corruption matters in eval mode
    with pytest.raises(ValueError, match="bn"):
        gran_cmd.battle(a, b, n=30, test=test, bn="eval")
