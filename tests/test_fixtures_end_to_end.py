"""The shipped real-format fixtures (COCO captions, Visual Genome regions, parallel text) load
in their loaders and train + evaluate each model for a few steps through the CLI."""
import json
import os

import pytest

from fastpapers.cli import main
from fastpapers.data import CocoCaptions, ParallelText, VisualGenomeRegions, fixtures

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return fixtures.write_photos(str(tmp_path_factory.mktemp("photos")))


def test_fixture_files_parse_in_their_loaders(photos):
    coco = CocoCaptions(fixtures.path("coco_captions_skimage.json"), photos, size=32)
    assert len(coco) == 8 and all(len(coco[i][1]) == 3 for i in range(len(coco)))
    img, caps = coco[0]
    assert tuple(img.shape) == (3, 32, 32) and "astronaut" in caps[0]
    vg = VisualGenomeRegions(fixtures.path("vg_regions_skimage.json"), photos)
    assert len(vg) == 8
    item = vg[0]
    h, w = item["image"].shape[1:]
    boxes = item["boxes"]
    # Every hand-drawn box lies inside its photo and has a positive area.
    assert bool(((boxes[:, 0] >= 0) & (boxes[:, 1] >= 0) & (boxes[:, 2] <= w) & (boxes[:, 3] <= h)).all())
    assert bool(((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all())
    pt = ParallelText(fixtures.path("parallel_de.txt"), fixtures.path("parallel_en.txt"))
    assert len(pt) == 40 and pt.source[0] == "ich habe einen hund" and pt.target[0] == "i have a dog"


def test_semantic_attention_on_coco_fixture(photos, tmp_path, capsys):
    run = str(tmp_path / "run")
    data = ["--data", fixtures.path("coco_captions_skimage.json"), "--images", photos, "--size", "32",
            "--val-fraction", "0.25"]
    assert main(["semantic_attention", "train", "--out", run, "--steps", "3", "--batch-size", "4", "--dim", "16",
                 "--attributes", "8", "--top-k", "3"] + data) == 0
    scores = str(tmp_path / "scores.json")
    assert main(["semantic_attention", "eval", "--checkpoint", run, "--beams", "2", "--max-length", "8",
                 "--no-meteor", "--out", scores] + data) == 0
    s = json.load(open(scores))
    assert 0.0 <= s["BLEU-1"] <= 1.0 and s["CIDEr"] >= 0.0


def test_densecap_on_visual_genome_fixture(photos, tmp_path, capsys):
    run = str(tmp_path / "run")
    vg = ["--vg-regions", fixtures.path("vg_regions_skimage.json"), "--vg-images", photos,
          "--vg-split", fixtures.path("vg_split_skimage.json")]
    assert main(["densecap", "train", "--out", run, "--steps", "2", "--size", "64", "--batch-size", "2",
                 "--backbone", "shapes", "--vg-min-word-count", "1"] + vg) == 0
    capsys.readouterr()
    assert main(["densecap", "eval", "--out", run, "--language", "token_f1"] + vg) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["images"] == 2 and 0.0 <= r["map"] <= 1.0


def test_mixer_on_parallel_text_fixture(tmp_path, capsys):
    run = str(tmp_path / "run")
    data = ["--data", fixtures.path("parallel_de.txt") + "," + fixtures.path("parallel_en.txt")]
    assert main(["mixer", "train", "--out", run, "--steps", "4", "--batch-size", "8", "--hidden", "16",
                 "--emb", "8", "--algo", "mixer", "--xent-steps", "2"] + data) == 0
    model = os.path.join(run, "model.pt")
    scores = str(tmp_path / "scores.json")
    assert main(["mixer", "eval", "--checkpoint", model, "--beam", "2", "--out", scores] + data) == 0
    s = json.load(open(scores))
    assert set(s) == {"greedy", "beam2"} and 0.0 <= s["greedy"]["bleu4"] <= 100.0
    src = tmp_path / "in.txt"
    src.write_text("ich habe einen hund\n\nder kaffee ist heiß\n")
    out = tmp_path / "out.txt"
    assert main(["mixer", "translate", "--checkpoint", model, "--input", str(src), "--out", str(out)]) == 0
    lines = out.read_text().split("\n")
    assert len(lines) == 4 and lines[1] == ""
