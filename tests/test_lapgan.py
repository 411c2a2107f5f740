import json
import os

import pytest
import torch
from torch.utils.data import TensorDataset

from fastpapers import ops
from fastpapers.cli import main
from fastpapers.models.lapgan import (LAPGAN, count_parameters, gan_optimizers, gan_step_fn, lapgan_optimizers,
                                      lapgan_step_fn, matched_gan, sample_strip)
from fastpapers.train import Trainer
from tests.cli_table import assert_flag_refused, assert_refused, bad_files, corrupted_copy
from tests.utils import assert_close


def _data(n=32, size=16, classes=10):
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.rand(n, 1, size, size, generator=g), torch.randint(0, classes, (n,), generator=g))


def test_level_targets_are_the_laplacian_pyramid():
    model = LAPGAN(size=16, levels=3)
    x = torch.rand(5, 1, 16, 16) * 2 - 1
    t = model.level_targets(x)
    assert [tuple(e["real"].shape) for e in t] == [(5, 1, 16, 16), (5, 1, 8, 8), (5, 1, 4, 4)]
    pyr = ops.laplacian_pyramid(x, 3)
    for e, level in zip(t, pyr):
        assert_close(e["real"], level)
    # cond_k is the upsampled coarser Gaussian level: h_k + cond_k rebuilds level k exactly.
    gauss = ops.gaussian_pyramid(x, 3)
    for k in range(2):
        assert_close(t[k]["cond"], ops.pyr_up(gauss[k + 1], (gauss[k].shape[2], gauss[k].shape[3])))
    assert_close(ops.laplacian_reconstruct([e["real"] for e in t]), x)


@pytest.mark.parametrize("num_classes", [0, 10])
def test_module_shapes(num_classes):
    model = LAPGAN(size=16, levels=3, num_classes=num_classes)
    onehot = torch.eye(10)[torch.arange(4) % 10] if num_classes else None
    assert model.sizes == [16, 8, 4]
    base = model.generate_level(2, 4, onehot=onehot)
    assert base.shape == (4, 1, 4, 4) and base.abs().max() <= 1
    cond = ops.pyr_up(base, (8, 8))
    res = model.generate_level(1, 4, cond=cond, onehot=onehot)
    assert res.shape == (4, 1, 8, 8)
    assert model.discriminators[1](res, cond, onehot).shape == (4,)
    assert model.discriminators[2](base, onehot).shape == (4,)


def test_sampling_is_coarse_to_fine_and_seeded():
    model = LAPGAN(size=16, levels=3, num_classes=10).eval()
    labels = torch.arange(6) % 10
    with torch.no_grad():
        out, levels = model.sample(6, labels, return_levels=True, generator=torch.Generator().manual_seed(3))
        again = model.sample(6, labels, generator=torch.Generator().manual_seed(3))
    assert out.shape == (6, 1, 16, 16)
    assert [lv.shape[-1] for lv in levels] == [16, 8, 4]
    assert torch.equal(out, again)
    assert torch.equal(out, levels[0])
    with pytest.raises(ValueError, match="labels"):
        model.sample(2)
    strip = sample_strip(levels)
    assert strip.shape == (18, 1, 16, 16)
    assert torch.equal(strip[2], levels[0][0])


def test_bad_levels():
    with pytest.raises(ValueError, match="levels"):
        LAPGAN(size=16, levels=6)
    with pytest.raises(ValueError, match="levels"):
        LAPGAN(size=16, levels=1)
    with pytest.raises(ValueError, match="conv_kernel"):
        LAPGAN(size=16, levels=3, conv_kernel=4)


def _params(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("num_classes", [0, 10])
def test_one_training_step_updates_every_level(tmp_path, num_classes):
    torch.manual_seed(0)
    model = LAPGAN(size=16, levels=3, num_classes=num_classes)
    before = _params(model)
    tr = Trainer({"lapgan": model}, lapgan_optimizers(model), lapgan_step_fn(model), data=_data(), batch_size=8,
                 out_dir=str(tmp_path), checkpoint_every=0, progress=False, log_every=1)
    metrics = tr.fit(1)
    for k in range(3):
        assert {f"loss_d{k}", f"loss_g{k}"} <= set(metrics)
        for part in (model.generators[k], model.discriminators[k]):
            for name, p in part.named_parameters():
                full = [n for n, q in model.named_parameters() if q is p][0]
                assert not torch.equal(p.detach(), before[full]), f"level {k} parameter {name} did not move"


def test_resume_is_bit_exact(tmp_path):
    def run(out, steps_then):
        torch.manual_seed(0)
        model = LAPGAN(size=8, levels=2)
        for steps in steps_then:
            # A fresh trainer per chunk, as a killed and restarted process would build.
            tr = Trainer({"lapgan": model}, lapgan_optimizers(model), lapgan_step_fn(model),
                         data=_data(size=8), batch_size=8, out_dir=str(out), seed=5, checkpoint_every=0,
                         progress=False)
            tr.fit(steps, resume=True)
        return _params(model)

    straight = run(tmp_path / "a", [4])
    resumed = run(tmp_path / "b", [2, 4])
    assert straight.keys() == resumed.keys()
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k


def test_matched_gan_has_the_same_parameter_count(tmp_path):
    for cfg in (dict(size=16, levels=3), dict(size=32, levels=4, num_classes=10)):
        lap = LAPGAN(**cfg)
        gan = matched_gan(lap)
        assert abs(count_parameters(gan) - count_parameters(lap)) / count_parameters(lap) < 0.01
    tr = Trainer({"gan": gan}, gan_optimizers(gan), gan_step_fn(gan), data=_data(size=32), batch_size=8,
                 out_dir=str(tmp_path), checkpoint_every=0, progress=False,
                 log_every=1)
    assert {"loss_d", "loss_g"} <= set(tr.fit(1))


def test_cli_train_sample_eval(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["lapgan", "train", "--out", str(out), "--size", "8", "--levels", "2", "--steps", "3",
                 "--batch-size", "16", "--class-cond", "--sample-every", "0"]) == 0
    ckpt = out / "checkpoint.pt"
    assert ckpt.is_file()
    cfg = json.loads((out / "run.json").read_text())
    assert cfg["paper"] == "lapgan" and cfg["config"]["num_classes"] == 10 and cfg["config"]["size"] == 8
    assert main(["lapgan", "train", "--out", str(out), "--size", "8", "--levels", "2", "--steps", "5",
                 "--batch-size", "16", "--class-cond", "--sample-every", "0", "--resume"]) == 0
    assert "trained 5 steps" in capsys.readouterr().out
    png = tmp_path / "s.png"
    assert main(["lapgan", "sample", "--checkpoint", str(ckpt), "--out", str(png), "--n", "20", "--strip"]) == 0
    assert png.is_file() and (tmp_path / "s_strip.png").is_file()
    res = tmp_path / "parzen.json"
    assert main(["lapgan", "eval", "--checkpoint", str(ckpt), "--samples", "50", "--out", str(res)]) == 0
    score = json.loads(res.read_text())
    assert score["sigma"] > 0 and score["log_likelihood"] == score["log_likelihood"]
    # Bad input: a one-line reason and exit status 2.
    assert main(["lapgan", "sample", "--checkpoint", str(ckpt), "--class", "12"]) == 2
    assert main(["lapgan", "sample", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert main(["lapgan", "train", "--out", str(out), "--size", "8", "--levels", "9"]) == 2


def test_cli_compare_smoke(tmp_path):
    out = tmp_path / "cmp"
    assert main(["lapgan", "compare", "--out", str(out), "--size", "8", "--levels", "2", "--cpu-seconds", "0.01",
                 "--batch-size", "16", "--samples", "50"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res) == {"lapgan", "gan"}
    assert abs(res["lapgan"]["parameters"] - res["gan"]["parameters"]) < 0.01 * res["lapgan"]["parameters"]
    assert res["lapgan"]["steps"] == res["gan"]["steps"] == 25
    for name in ("lapgan_samples.png", "gan_samples.png", "lapgan_strip.png", "test_images.png"):
        assert (out / name).is_file()


# ---- the recipe, legacy folders, and the CLI's answers to bad input ----------------------------

@pytest.fixture(scope="module")
def lapgan_run(tmp_path_factory):
    from fastpapers.recipes import lapgan as recipe
    out = tmp_path_factory.mktemp("lapgan") / "run"
    recipe.train(recipe.Config(size=8, levels=2, steps=2, batch_size=16, sample_every=0, conv_hidden=8), str(out),
                 progress=False)
    return out


def test_recipe_load_and_evaluate(lapgan_run, tmp_path):
    from fastpapers.recipes import lapgan as recipe
    loaded = recipe.load(str(lapgan_run))
    assert loaded.config.size == 8 and loaded.config.channels == 1 and loaded.run.paper == "lapgan"
    res = recipe.evaluate(loaded, samples=20)
    assert res["sigma"] > 0 and res["log_likelihood"] == res["log_likelihood"]
    [png] = recipe.sample(str(lapgan_run / "checkpoint.pt"), str(tmp_path / "s.png"), n=4)
    assert os.path.isfile(png)
    with pytest.raises(ValueError, match=r"conv_kernel \(--conv-kernel\)"):
        recipe.Config(conv_kernel=4)


def test_a_folder_of_the_older_format_loads_and_converts(lapgan_run, tmp_path):
    import shutil
    from fastpapers.recipes import lapgan as recipe
    from fastpapers.train.rundir import RunFolderError, convert_legacy
    old = tmp_path / "old"
    shutil.copytree(lapgan_run, old)
    cfg = json.loads((old / "run.json").read_text())["config"]
    model = {k: cfg[k] for k in recipe.MODEL_KEYS}
    (old / "lapgan.json").write_text(json.dumps({"model": model, "data": None, "seed": 0}))
    for f in ("run.json", "run.json.sha256"):
        os.remove(old / f)
    loaded = recipe.load(str(old / "checkpoint.pt"))  # read in place: nothing is written
    assert loaded.config.model_config() == model and not loaded.config.class_cond
    assert not (old / "run.json").exists()
    with pytest.raises(RunFolderError, match="convert_legacy"):  # resuming it needs a run.json
        recipe.train(recipe.Config(**{k: v for k, v in cfg.items() if k not in ("channels", "num_classes")}),
                     str(old), resume=True, progress=False)
    convert_legacy(str(old), "lapgan")
    again = recipe.load(str(old))
    assert again.config.model_config() == model and again.run.version == 1


BAD_FILES = bad_files("checkpoint.pt", "run.json")


@pytest.mark.parametrize("verb", ["sample", "eval"])
@pytest.mark.parametrize("name,how", BAD_FILES)
def test_cli_refuses_corrupt_run_files(lapgan_run, tmp_path, capsys, verb, name, how):
    folder = corrupted_copy(lapgan_run, tmp_path, name, how)
    argv = ["lapgan", verb, "--checkpoint", str(folder / "checkpoint.pt")]
    if verb == "sample":
        argv += ["--out", str(tmp_path / "s.png")]
    assert_refused(argv, name, capsys, one_line=True, absent=tmp_path / "s.png")


BAD_FLAGS = [
    (["train", "--steps", "0"], "--steps"), (["train", "--batch-size", "-1"], "--batch-size"),
    (["train", "--out", ""], "--out"), (["train", "--lr", "nan"], "--lr"), (["train", "--size", "0"], "--size"),
    (["train", "--levels", "0"], "--levels"), (["train", "--size", "8", "--levels", "9"], "--levels"),
    (["train", "--conv-kernel", "4"], "--conv-kernel"), (["train", "--conv-hidden", "0"], "--conv-hidden"),
    (["train", "--sample-every", "-2"], "--sample-every"), (["train", "--data", ""], "--data"),
    (["sample", "--checkpoint", "x.pt", "--n", "0"], "--n"),
    (["eval", "--checkpoint", "x.pt", "--samples", "0"], "--samples"),
    (["compare", "--cpu-seconds", "0"], "--cpu-seconds"), (["compare", "--cpu-seconds", "inf"], "--cpu-seconds"),
    (["compare", "--threads", "0"], "--threads"), (["compare", "--out", ""], "--out"),
]


@pytest.mark.parametrize("argv,flag", BAD_FLAGS)
def test_cli_bad_flags_table(tmp_path, capsys, argv, flag):
    assert_flag_refused("lapgan", argv, flag, capsys, tmp_path, out_verbs=("train", "compare"))


def test_bare_command_prints_its_verbs(capsys):
    assert main(["lapgan"]) == 2
    out = capsys.readouterr().out
    assert all(verb in out for verb in ("train", "sample", "eval", "compare"))


@pytest.mark.parametrize("content", ['{"levels": 3, "wrong_key": 1}', '{"model": {"levels": 3,', "", "[1, 2]"])
def test_cli_names_a_bad_legacy_config_file(lapgan_run, tmp_path, capsys, content):
    import shutil
    old = tmp_path / "old"
    shutil.copytree(lapgan_run, old)
    for f in ("run.json", "run.json.sha256"):
        os.remove(old / f)
    (old / "lapgan.json").write_text(content)
    assert_refused(["lapgan", "sample", "--checkpoint", str(old / "checkpoint.pt"), "--out", str(tmp_path / "s.png")],
                   "lapgan.json", capsys, one_line=True, absent=tmp_path / "s.png")
