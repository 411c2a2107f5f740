"""The trained weights that ship in fastpapers/weights/: manifest, hash checks, loading, demo."""
import os
import shutil

import pytest
import torch

from fastpapers import weights as W
from fastpapers.train.checkpoint import sha256_file

PAPERS = W.papers()


def test_some_weights_ship_and_stay_small():
    assert PAPERS, "fastpapers/weights/manifest.json lists no paper"
    total = 0
    for paper in PAPERS:
        entry = W.manifest()["papers"][paper]
        for key in ("command", "commit", "seed", "settings", "metrics", "files", "train_seconds"):
            assert key in entry, (paper, key)
        assert entry["command"] == f"python scripts/train_shipped_weights.py {paper}"
        size = sum(os.path.getsize(os.path.join(W.path(paper), f)) for f in entry["files"])
        assert size == entry["bytes"] and size < 5 * 2 ** 20, (paper, size)
        total += size
    assert total < 20 * 2 ** 20


@pytest.mark.parametrize("paper", PAPERS)
def test_manifest_sha256_matches_every_shipped_file(paper):
    folder = W.path(paper)
    files = W.manifest()["papers"][paper]["files"]
    # Every file of the folder is listed (nothing unchecked is read) and every listed one matches.
    assert sorted(os.listdir(folder)) == sorted(files)
    for name, digest in files.items():
        assert sha256_file(os.path.join(folder, name)) == digest, name
    assert W.verify(paper) == folder


@pytest.mark.parametrize("paper", PAPERS)
def test_a_corrupted_copy_is_refused_naming_the_file(paper, tmp_path):
    shutil.copytree(W.path(paper), tmp_path / paper)
    target = tmp_path / paper / max(W.manifest()["papers"][paper]["files"],
                                    key=lambda n: os.path.getsize(os.path.join(W.path(paper), n)))
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(W.WeightsError) as err:
        W.load(paper, root=str(tmp_path))
    msg = str(err.value)
    assert "\n" not in msg and str(target) in msg and "SHA-256" in msg


def test_a_missing_file_and_an_unknown_paper_are_named(tmp_path):
    paper = PAPERS[0]
    shutil.copytree(W.path(paper), tmp_path / paper)
    name = sorted(W.manifest()["papers"][paper]["files"])[0]
    os.remove(tmp_path / paper / name)
    with pytest.raises(W.WeightsError, match=f"{name} is missing"):
        W.verify(paper, root=str(tmp_path))
    with pytest.raises(W.WeightsError, match="no shipped weights for 'nosuchpaper'"):
        W.path("nosuchpaper")


def _check_output(paper, loaded):
    torch.manual_seed(0)
    if paper == "densecap":
        from fastpapers.data.shapes import ShapesDense
        test = ShapesDense(2, size=loaded.config.size, split="test", seed=0)
        res = loaded.nets["densecap"].predict(torch.stack([test[i]["image"] for i in range(2)]), max_detections=3)
        assert len(res) == 2
        for r in res:
            assert r["boxes"].shape == (len(r["captions"]), 4) and len(r["captions"]) >= 1
            assert all(isinstance(c, str) and c for c in r["captions"])
    elif paper == "semantic_attention":
        from fastpapers.recipes import semantic_attention as R
        test = R.shapes_corpus(2, size=loaded.artefacts["image_size"], split="test", seed=0)
        out = R.predict(loaded.nets["captioner"], test.float_images(), num_beams=2, max_length=20)
        assert len(out["sequences"]) == 2 and all(len(s) >= 1 for s in out["sequences"])
        assert out["attributes"].shape[0] == 2
    elif paper == "mixer":
        from fastpapers.data import AmbiguousTransduction
        from fastpapers.recipes import mixer as R
        test = AmbiguousTransduction(3, seed=10_000)
        src = R.collate_pairs([test[i] for i in range(3)])["source"]
        hyps = loaded.nets["model"].eval().translate(src, beam_size=3)
        assert len(hyps) == 3 and all(1 <= len(h) <= loaded.nets["model"].cfg.max_tgt_len + 1 for h in hyps)
    elif paper == "lapgan":
        with torch.no_grad():
            x = loaded.nets["lapgan"].eval().sample(4)
        size = loaded.config.size
        assert x.shape == (4, loaded.config.channels, size, size) and torch.isfinite(x).all()
    elif paper == "gran":
        from fastpapers.recipes import gran
        canvas, steps = gran.draw(loaded.nets["G"], 4, seed=0)
        size, t = loaded.config.image_size, loaded.config.timesteps
        assert canvas.shape == (4, loaded.config.channels, size, size) and torch.isfinite(canvas).all()
        assert steps.shape == (4, t, loaded.config.channels, size, size)
    else:
        pytest.fail(f"no output check for {paper}")


@pytest.mark.parametrize("paper", PAPERS)
def test_each_shipped_model_loads_and_produces_output_of_the_right_shape(paper):
    loaded = W.load(paper)
    # float16 storage is converted back: the model computes in float32.
    assert all(p.dtype == torch.float32 for net in loaded.nets.values() for p in net.parameters())
    _check_output(paper, loaded)


def test_demo_uses_the_shipped_weights_and_train_still_trains(tmp_path, capsys):
    from fastpapers.cli import main
    paper = "mixer" if "mixer" in PAPERS else PAPERS[0]
    step = {"semantic_attention": "caption"}.get(paper, paper)
    main(["demo", "--only", step, "--out", str(tmp_path / "a")])
    out = capsys.readouterr().out
    assert "loaded the shipped model" in out and os.listdir(tmp_path / "a")
    main(["demo", "--only", "mixer", "--train", "--out", str(tmp_path / "b")])
    out = capsys.readouterr().out
    assert "loaded the shipped model" not in out and "160 training steps" in out
    assert os.path.isfile(tmp_path / "b" / "mixer_decodes.png")
