"""Text-to-image end to end through the recipe and the shared Trainer: stages, resume, sample,
transfer, eval, CLI, and the CLI's answers to bad input."""
import os

import pytest
import torch
from PIL import Image

from fastpapers import cli
from fastpapers.metrics import judge as J
from fastpapers.recipes import text2image as t2i_cmd
from tests.cli_table import assert_flag_refused, assert_refused, bad_files, corrupted_copy, run_cli
from tests.utils import assert_raises_naming

TINY = dict(image_size=32, nz=6, embed_dim=8, proj_dim=8, ngf=4, ndf=4, text_width=8)


@pytest.fixture(scope="module")
def pairs():
    return t2i_cmd.shapes_split("train", image_size=32, n=24, seed=0)


def _train(out, pairs, steps=2, resume=False, embed_steps=None, **kw):
    opts = dict(TINY)
    opts.update(kw)
    cfg = t2i_cmd.Config(steps=steps, embed_steps=embed_steps or steps, style_steps=steps, batch_size=8,
                         sample_every=2, checkpoint_every=1, log_every=1, **opts)
    return t2i_cmd.train(cfg, str(out), data=pairs, resume=resume, progress=False)


def _judge(out, data, **kw):
    return t2i_cmd.train_judge(t2i_cmd.JudgeConfig(**dict(dict(steps=2, batch_size=8), **kw)), str(out), data=data,
                               progress=False)





def _modules(path):
    return torch.load(path, map_location="cpu", weights_only=True)["modules"]


def test_dataset_items(pairs):
    item = pairs[0]
    assert item["image"].shape == (3, 32, 32)
    assert -1.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert isinstance(item["caption"], str) and item["caption"]
    for key in ("label", "colour", "kind", "size", "background", "unseen"):
        assert isinstance(int(item[key]), int)


def test_three_stages_resume_bit_exact(tmp_path, pairs):
    # The GAN and style stages train 3 steps straight, or 2 then 3 with --resume: the resumed
    # GAN continues from its checkpoint and the style stage, fitted to the older G, restarts.
    _train(tmp_path / "straight", pairs, steps=3, embed_steps=2)
    _train(tmp_path / "split", pairs, steps=2, embed_steps=2)
    _train(tmp_path / "split", pairs, steps=3, embed_steps=2, resume=True)
    for stage, nets in (("embed", ("text", "image")), ("gan", ("G", "D")), ("style", ("S",))):
        a = _modules(tmp_path / "straight" / stage / "checkpoint.pt")
        b = _modules(tmp_path / "split" / stage / "checkpoint.pt")
        for net in nets:
            for k in a[net]:
                assert torch.equal(a[net][k], b[net][k]), (stage, net, k)
    assert os.path.isfile(tmp_path / "straight" / "model.pt")
    assert os.path.isfile(tmp_path / "straight" / "gan" / "samples" / "sample_0000002.png")


def test_resume_accepts_a_run_saved_before_a_config_key_existed(tmp_path, pairs):
    # real_label was added later: a run whose run.json lacks it was trained with its
    # default (1.0) and resumes; asking that run for another value is refused.
    import json
    from fastpapers.train import atomic_save_json
    _train(tmp_path, pairs, steps=1, embed_steps=1)
    path = tmp_path / "run.json"
    meta = json.loads(path.read_text())
    del meta["config"]["real_label"]
    atomic_save_json(meta, str(path))
    _train(tmp_path, pairs, steps=2, embed_steps=1, resume=True)
    with pytest.raises(ValueError, match=r"other settings of \['real_label'\]"):
        _train(tmp_path, pairs, steps=3, embed_steps=1, resume=True, real_label=0.9)


def test_instance_noise_reaches_the_discriminator_and_is_logged(tmp_path, pairs):
    import json
    _train(tmp_path / "plain", pairs, steps=2, embed_steps=1)
    _train(tmp_path / "noisy", pairs, steps=2, embed_steps=1, instance_noise=0.5, noise_anneal_steps=4)
    a = _modules(tmp_path / "plain" / "gan" / "checkpoint.pt")["D"]
    b = _modules(tmp_path / "noisy" / "gan" / "checkpoint.pt")["D"]
    # Same seed, same data: only the noise on D's inputs can make the discriminators differ.
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())
    rows = [json.loads(line) for line in open(tmp_path / "noisy" / "gan" / "metrics.jsonl")]
    assert [r["noise_sigma"] for r in rows] == pytest.approx([0.5, 0.375])  # steps 0 and 1 of 4
    plain = [json.loads(line) for line in open(tmp_path / "plain" / "gan" / "metrics.jsonl")]
    assert all(r["noise_sigma"] == 0.0 for r in plain)


@pytest.mark.parametrize("key,value", [("real_label", 0.5), ("real_label", 1.2), ("instance_noise", -0.1),
                                       ("noise_anneal_steps", -3), ("noise_anneal_steps", 2.5), ("zoom", 3),
                                       ("zoom", 0), ("upsample", "bilinear"),
                                       ("wrong_text", "hard")])
def test_bad_training_tricks_are_refused_before_training(key, value):
    assert_raises_naming(ValueError, key, t2i_cmd.Config, **{key: value})


@pytest.mark.parametrize("variant", ["gan", "gan-cls", "gan-int"])
def test_variants_train(tmp_path, pairs, variant):
    _train(tmp_path, pairs, steps=1, variant=variant)
    assert t2i_cmd.load(str(tmp_path / "model.pt")).config.variant == variant


def test_near_wrong_texts_are_what_the_discriminator_is_shown(tmp_path, pairs, monkeypatch):
    from fastpapers.models import text2image as t2i
    calls = []
    real = t2i.near_mismatched_indices
    monkeypatch.setattr(t2i, "near_mismatched_indices", lambda attrs, *a: calls.append(attrs) or real(attrs, *a))
    _train(tmp_path, pairs, steps=2, variant="gan-cls", wrong_text="near", upsample="resize")
    assert len(calls) == 2 and calls[0].shape == (8, 3)
    assert t2i_cmd.load(str(tmp_path / "model.pt")).config.wrong_text == "near"


def test_sample_transfer_and_shared_text_encoder(tmp_path, pairs):
    _train(tmp_path / "a", pairs, steps=2)
    model = str(tmp_path / "a" / "model.pt")
    [path] = t2i_cmd.sample(model, ["small red star", "large blue circle"], str(tmp_path / "s.png"), n=3)
    # 2 rows x 3 samples of 32-pixel images with 2-pixel padding, upscaled 2x.
    assert Image.open(path).size == (2 * (3 * 34 + 2), 2 * (2 * 34 + 2))
    queries = torch.stack([pairs[i]["image"] for i in range(4)])
    [path] = t2i_cmd.transfer(model, ["small red star"], str(tmp_path / "t.png"), queries=queries)
    assert Image.open(path).size == (2 * (2 * 34 + 2), 2 * (4 * 34 + 2))

    _train(tmp_path / "b", pairs, steps=1, text_encoder=model, variant="gan")
    a = torch.load(model, weights_only=True)["text"]
    b = torch.load(tmp_path / "b" / "model.pt", weights_only=True)["text"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not os.path.exists(tmp_path / "b" / "embed")
    with pytest.raises(ValueError, match="text_encoder"):
        _train(tmp_path / "c", pairs, steps=1, text_encoder=model, embed_dim=10)


def test_judge_and_eval(tmp_path, pairs):
    _train(tmp_path / "run", pairs, steps=1)
    _judge(tmp_path / "judge", pairs)
    test = t2i_cmd.shapes_split("test", image_size=32, n=40, seed=1)
    res = t2i_cmd.evaluate(str(tmp_path / "run" / "model.pt"), str(tmp_path / "judge" / "checkpoint.pt"),
                           n=40, data=test)
    assert res["n"] == 40 and 0 < res["n_unseen"] < 40
    for k, v in res.items():
        if k.startswith(("generated/", "real/", "style/")):
            assert 0.0 <= v <= 1.0, k


def test_degrade_blurs_and_adds_noise_but_keeps_the_batch():
    torch.manual_seed(0)
    x = torch.stack([t2i_cmd.shapes_split("train", image_size=32, n=64, seed=0)[i]["image"] for i in range(64)])
    y = J.degrade(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    changed = (y - x).flatten(1).abs().amax(1) > 1e-6
    # Each image is left alone with probability 1/4: some are, most are not.
    assert 0 < int(changed.sum()) < 64
    # Blur alone lowers the gradient energy of a flat image with a sharp shape.
    torch.manual_seed(1)
    blurred = J.degrade(x, max_blur=1.5, max_noise=0.0)
    tv = lambda t: (t[..., 1:, :] - t[..., :-1, :]).pow(2).sum((1, 2, 3))  # noqa: E731
    moved = (blurred - x).flatten(1).abs().amax(1) > 1e-6
    assert moved.any() and (tv(blurred)[moved] < tv(x)[moved]).all()


def test_augmented_judge_trains_and_records_it(tmp_path, pairs):
    import json
    _judge(tmp_path / "j", pairs, augment=True)
    assert json.loads((tmp_path / "j" / "run.json").read_text())["config"]["augment"] is True
    judge = t2i_cmd.load_judge(str(tmp_path / "j" / "checkpoint.pt")).nets["judge"]
    assert set(judge(torch.zeros(2, 3, 32, 32))) == {"colour", "kind", "size", "background"}


def test_cli(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert cli.main(["text2image", "train", "--out", run, "--steps", "1", "--embed-steps", "1", "--style-steps", "1",
                     "--batch-size", "8", "--train-size", "16", "--width", "4", "--variant", "gan-cls"]) == 0
    model = os.path.join(run, "model.pt")
    png = str(tmp_path / "s.png")
    assert cli.main(["text2image", "sample", "--checkpoint", model, "--text", "small red star", "--out", png]) == 0
    assert os.path.isfile(png)
    png = str(tmp_path / "t.png")
    assert cli.main(["text2image", "transfer", "--checkpoint", model, "--text", "large green cross",
                     "--n", "2", "--out", png]) == 0
    assert os.path.isfile(png)
    capsys.readouterr()
    assert cli.main(["text2image", "sample", "--checkpoint", model, "--text", "red ★"]) == 2
    assert "texts[0]" in capsys.readouterr().err
    assert cli.main(["text2image", "sample", "--checkpoint", str(tmp_path / "none.pt"), "--text", "red"]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "none.pt" in err
    code, err = run_cli(["text2image", "train", "--out", run, "--steps", "0"], capsys)
    assert code == 2 and "--steps" in err
    # Words the captions never use are named, and nothing is drawn.
    code, err = run_cli(["text2image", "sample", "--checkpoint", model, "--text", "purple elephant",
                      "--out", str(tmp_path / "e.png")], capsys)
    assert code == 2 and "elephant" in err and "purple" not in err.split("never seen")[1].split("(")[0]
    assert not os.path.exists(tmp_path / "e.png")


def test_demo_uses_the_model_trained_in_the_default_folder(tmp_path, pairs, monkeypatch):
    from fastpapers.demos import text2image as demo
    _train(tmp_path / "runs" / "text2image", pairs, steps=1)
    monkeypatch.chdir(tmp_path)
    written = demo.run(str(tmp_path / "out"), device="cpu", seed=0)
    assert [os.path.basename(p) for p in written] == ["text2image_samples.png", "text2image_transfer.png"]
    assert all(os.path.isfile(p) for p in written)
    # Nothing was trained: the only files are the two PNGs.
    assert sorted(os.listdir(tmp_path / "out")) == ["text2image_samples.png", "text2image_transfer.png"]


def test_zoomed_run_is_evaluated_and_transferred_on_zoomed_data(tmp_path, monkeypatch):
    import json
    zoomed = t2i_cmd.shapes_split("train", image_size=32, n=24, seed=0, zoom=2)
    plain = t2i_cmd.shapes_split("train", image_size=32, n=24, seed=0)
    # Same scenes and captions, other pixels: the object is cropped out at twice the resolution.
    assert [zoomed[i]["label"] for i in range(24)] == [plain[i]["label"] for i in range(24)]
    assert zoomed.parts[0][0].captions == plain.parts[0][0].captions
    assert not torch.equal(zoomed[0]["image"], plain[0]["image"])
    _train(tmp_path / "run", zoomed, steps=1, zoom=2)
    model = str(tmp_path / "run" / "model.pt")
    assert t2i_cmd.load(model).config.zoom == 2
    _judge(tmp_path / "judge2", zoomed, steps=1, zoom=2)
    assert json.loads((tmp_path / "judge2" / "run.json").read_text())["config"]["zoom"] == 2
    res = t2i_cmd.evaluate(model, str(tmp_path / "judge2" / "checkpoint.pt"), n=10)
    assert res["n"] == 10
    # A judge of unzoomed images would read the wrong distribution: refused, naming zoom.
    _judge(tmp_path / "judge1", plain, steps=1)
    assert_raises_naming(ValueError, "zoom", t2i_cmd.evaluate, model, str(tmp_path / "judge1" / "checkpoint.pt"),
                         n=10)
    # Without queries, transfer draws them from the zoomed test split of the model's config.
    seen = {}
    real_split = t2i_cmd.shapes_split
    monkeypatch.setattr(t2i_cmd, "shapes_split", lambda *a, **kw: seen.update(kw) or real_split(*a, **kw))
    t2i_cmd.transfer(model, ["small red star"], str(tmp_path / "t.png"), n=2)
    monkeypatch.undo()
    assert seen["zoom"] == 2
    # Resuming with the other zoom is refused and names it.
    assert_raises_naming(ValueError, "zoom", _train, tmp_path / "run", zoomed, steps=2, resume=True, zoom=1)


def test_cli_zoom(tmp_path):
    run = str(tmp_path / "run")
    assert cli.main(["text2image", "train", "--out", run, "--steps", "1", "--embed-steps", "1", "--style-steps", "1",
                     "--batch-size", "8", "--train-size", "16", "--width", "4", "--zoom", "2",
                     "--upsample", "resize"]) == 0
    m = t2i_cmd.load(os.path.join(run, "model.pt"))
    assert m.config.zoom == 2 and m.config.upsample == "resize" and m.nets["G"].upsample == "resize"
    judge = str(tmp_path / "judge")
    assert cli.main(["text2image", "judge", "--out", judge, "--steps", "1", "--batch-size", "8", "--zoom", "2"]) == 0
    assert cli.main(["text2image", "eval", "--checkpoint", os.path.join(run, "model.pt"),
                     "--judge", os.path.join(judge, "checkpoint.pt"), "--n", "8"]) == 0


@pytest.fixture(scope="module")
def trained(tmp_path_factory, pairs):
    out = tmp_path_factory.mktemp("t2i") / "run"
    _train(out, pairs, steps=1)
    judge = out.parent / "judge"
    _judge(judge, pairs, steps=1)
    return out, judge


BAD_FILES = bad_files("model.pt", "run.json")


@pytest.mark.parametrize("verb", ["sample", "transfer", "eval"])
@pytest.mark.parametrize("name,how", BAD_FILES)
def test_cli_refuses_corrupt_run_files(trained, tmp_path, capsys, verb, name, how):
    run, judge = trained
    folder = corrupted_copy(run, tmp_path, name, how)
    model = str(folder / "model.pt")
    argv = {"sample": ["sample", "--checkpoint", model, "--text", "a red star", "--out", str(tmp_path / "x.png")],
            "transfer": ["transfer", "--checkpoint", model, "--text", "a red star", "--n", "2",
                         "--out", str(tmp_path / "x.png")],
            "eval": ["eval", "--checkpoint", model, "--judge", str(judge / "checkpoint.pt"), "--n", "4"]}[verb]
    assert_refused(["text2image"] + argv, name, capsys, one_line=True, absent=tmp_path / "x.png")


BAD_FLAGS = [
    (["train", "--steps", "0"], "--steps"), (["train", "--embed-steps", "0"], "--embed-steps"),
    (["train", "--style-steps", "-1"], "--style-steps"), (["train", "--batch-size", "0"], "--batch-size"),
    (["train", "--train-size", "0"], "--train-size"), (["train", "--width", "0"], "--width"),
    (["train", "--out", ""], "--out"), (["train", "--lr", "nan"], "--lr"), (["train", "--lr-d", "0"], "--lr-d"),
    (["train", "--real-label", "0.4"], "--real-label"), (["train", "--real-label", "nan"], "--real-label"),
    (["train", "--instance-noise", "-1"], "--instance-noise"),
    (["train", "--noise-anneal-steps", "-3"], "--noise-anneal-steps"), (["train", "--size", "48"], "--size"),
    (["train", "--zoom", "3"], "--zoom"), (["train", "--variant", "gan-x"], "--variant"),
    (["train", "--text-encoder", "missing/model.pt"], "missing"),
    (["sample", "--checkpoint", "x.pt", "--text", "red", "--n", "0"], "--n"),
    (["sample", "--checkpoint", "x.pt", "--text", "purple elephant"], "elephant"),
    (["transfer", "--checkpoint", "x.pt", "--text", "red", "--n", "0"], "--n"),
    (["judge", "--steps", "0"], "--steps"), (["judge", "--out", ""], "--out"),
    (["eval", "--checkpoint", "x.pt", "--judge", "j.pt", "--n", "0"], "--n"),
]


@pytest.mark.parametrize("argv,flag", BAD_FLAGS)
def test_cli_bad_flags_table(tmp_path, capsys, argv, flag):
    assert_flag_refused("text2image", argv, flag, capsys, tmp_path, out_verbs=("train", "judge"))


def test_bare_command_prints_its_verbs(capsys):
    assert cli.main(["text2image"]) == 2
    out = capsys.readouterr().out
    assert all(verb in out for verb in ("train", "sample", "transfer", "judge", "eval"))


def test_run_folders_of_the_older_format_still_load(trained, tmp_path):
    # Before run.json: config.json (model settings) beside model.pt; judge.json beside the
    # judge's checkpoint.pt.
    import json
    import shutil
    run, judge = trained
    old, old_judge = tmp_path / "old", tmp_path / "old_judge"
    shutil.copytree(run, old)
    shutil.copytree(judge, old_judge)
    cfg = json.loads((old / "run.json").read_text())["config"]
    keep = ("variant", "image_size", "nz", "embed_dim", "proj_dim", "ngf", "ndf", "text_width", "beta",
            "interp_weight", "instance_noise", "noise_anneal_steps", "upsample")  # no zoom, real_label yet
    (old / "config.json").write_text(json.dumps({k: cfg[k] for k in keep}))
    jcfg = json.loads((old_judge / "run.json").read_text())["config"]
    (old_judge / "judge.json").write_text(json.dumps({"heads": jcfg["heads"], "image_size": 32, "augment": False}))
    for folder in (old, old_judge):
        for f in ("run.json", "run.json.sha256"):
            os.remove(folder / f)
    m = t2i_cmd.load(str(old / "model.pt"))
    assert m.config.zoom == 1 and m.config.real_label == 1.0 and m.run.version == 0
    res = t2i_cmd.evaluate(str(old / "model.pt"), str(old_judge / "checkpoint.pt"), n=6,
                           data=t2i_cmd.shapes_split("test", image_size=32, n=6, seed=1))
    assert res["n"] == 6
