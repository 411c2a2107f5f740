"""Visual Genome through ``fastpapers densecap``: a tiny region_descriptions.json and a few
images written in a temporary folder (nothing downloads), the dataset adapter, and the errors
that name the flag at fault."""
import json
import os

import pytest
import torch
from PIL import Image

from fastpapers.cli import main
from fastpapers.data.dense_regions import VisualGenomeDense, read_vg_split
from fastpapers.data.shapes import ShapesDense
from fastpapers.viz import to_uint8

PHRASES = ["red circle on the left", "a green square", "blue thing", "small red circle", "the green square"]


def _write_vg(root, n_images=4):
    """``n_images`` 64 x 48 JPEGs from the shapes world with VG-format regions (x, y, width,
    height in pixels), plus one region of zero width that the adapter must drop."""
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    shapes = ShapesDense(n_images, size=48, min_objects=1, max_objects=2, seed=1)
    entries = []
    for i in range(n_images):
        image_id = 100 + i
        img = torch.nn.functional.interpolate(shapes[i]["image"][None], size=(48, 64))[0]
        Image.fromarray(to_uint8(img)).save(images / f"{image_id}.jpg", format="JPEG", quality=95)
        regions = []
        for k, b in enumerate(shapes[i]["boxes"].tolist()):
            x1, y1, x2, y2 = b[0] * 64 / 48, b[1], b[2] * 64 / 48, b[3]
            regions.append({"region_id": 10 * image_id + k, "image_id": image_id, "phrase": PHRASES[(i + k) % 5],
                            "x": x1, "y": y1, "width": x2 - x1, "height": y2 - y1})
        regions.append({"region_id": 10 * image_id + 9, "image_id": image_id, "phrase": "nothing",
                        "x": 5, "y": 5, "width": 0, "height": 10})
        entries.append({"id": image_id, "regions": regions})
    regions_json = root / "region_descriptions.json"
    regions_json.write_text(json.dumps(entries))
    split = root / "splits.json"
    split.write_text(json.dumps({"train": [100, 101, 102], "val": [], "test": [103]}))
    return str(regions_json), str(images), str(split)


def test_adapter_items_vocab_and_split(tmp_path):
    regions, images, split = _write_vg(tmp_path)
    ds = VisualGenomeDense(regions, images, size=32, image_ids=read_vg_split(split, "train"), max_words=3)
    assert ds.image_ids == [100, 101, 102] and len(ds) == 3
    item = ds[0]
    assert item["image"].shape == (3, 32, 32) and 0 <= float(item["image"].min()) <= float(item["image"].max()) <= 1
    # The zero-width region is gone; boxes are scaled from 64 x 48 to 32 x 32 and clipped.
    k = len(ds.region_captions[0])
    assert item["boxes"].shape == (k, 4) and item["captions"].shape[0] == k and item["visible"].tolist() == [1.0] * k
    assert (item["boxes"] >= 0).all() and (item["boxes"] <= 32).all()
    assert all("nothing" not in c for caps in ds.region_captions for c in caps)
    # Phrases are tokenised and cut at max_words; the vocabulary is built from them.
    assert ds.region_captions[0][0] == "red circle on"
    assert ds.vocab.decode(item["captions"][0]) == "red circle on"
    assert "on" in ds.vocab and "left" not in ds.vocab
    raw = json.loads(open(regions).read())[0]["regions"][0]
    want = torch.tensor([raw["x"] / 2, raw["y"] * 32 / 48, (raw["x"] + raw["width"]) / 2,
                         (raw["y"] + raw["height"]) * 32 / 48]).clamp(0, 32)
    torch.testing.assert_close(item["boxes"][0], want)
    # min_word_count turns rare words into <unk>; a given vocabulary is used as is.
    rare = VisualGenomeDense(regions, images, size=32, min_word_count=2)
    from collections import Counter
    counts = Counter(w for caps in rare.region_captions for c in caps for w in c.split())
    assert min(counts.values()) == 1 and max(counts.values()) >= 2
    assert set(rare.vocab.words) == {w for w, c in counts.items() if c >= 2}
    same = VisualGenomeDense(regions, images, size=32, vocab=ds.vocab)
    assert same.vocab is ds.vocab


def test_split_file_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": ["x"]}))
    with pytest.raises(ValueError, match="integer image ids"):
        read_vg_split(str(bad), "train")
    with pytest.raises(ValueError, match="'test'"):
        read_vg_split(str(bad), "test")
    with pytest.raises(FileNotFoundError, match="split file"):
        read_vg_split(str(tmp_path / "none.json"), "train")


def test_cli_train_eval_predict_on_visual_genome(tmp_path, capsys):
    regions, images, split = _write_vg(tmp_path)
    run = str(tmp_path / "run")
    vg = ["--vg-regions", regions, "--vg-images", images, "--vg-split", split]
    assert main(["densecap", "train", "--out", run, "--steps", "2", "--size", "48", "--batch-size", "2",
                 "--backbone", "shapes", "--vg-min-word-count", "1"] + vg) == 0
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    cfg = meta["config"]
    assert meta["paper"] == "densecap" and cfg["data"] == "vg" and cfg["backbone"] == "shapes"
    assert cfg["max_words"] >= 1 and cfg["images"] == 3 and cfg["vg_regions"] == os.path.abspath(regions)
    assert (tmp_path / "run" / "vocab.json").is_file()
    capsys.readouterr()
    assert main(["densecap", "eval", "--out", run, "--language", "token_f1"] + vg) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["images"] == 1 and r["language"] == "token_f1" and 0.0 <= r["map"] <= 1.0
    png = tmp_path / "pred.png"
    assert main(["densecap", "predict", f"{images}/103.jpg", "--out", run, "--png", str(png)]) == 0
    with Image.open(png) as im:
        assert im.size == (384, 384)


@pytest.mark.parametrize("case, flag", [
    ("missing_regions", "--vg-regions"), ("bad_json", "--vg-regions"), ("malformed", "--vg-regions"),
    ("missing_dir", "--vg-images"), ("missing_image", "--vg-images"), ("no_images_flag", "--vg-images"),
    ("missing_split", "--vg-split"), ("split_without_train", "--vg-split"), ("empty_split", "--vg-split"),
])
def test_cli_errors_name_the_flag(tmp_path, capsys, case, flag):
    regions, images, split = _write_vg(tmp_path, n_images=2)
    args = {"--vg-regions": regions, "--vg-images": images}
    if case == "missing_regions":
        args["--vg-regions"] = str(tmp_path / "none.json")
    elif case == "bad_json":
        (tmp_path / "bad.json").write_text("{not json")
        args["--vg-regions"] = str(tmp_path / "bad.json")
    elif case == "malformed":
        (tmp_path / "bad.json").write_text(json.dumps([{"id": 1, "regions": [{"x": 1}]}]))
        args["--vg-regions"] = str(tmp_path / "bad.json")
    elif case == "missing_dir":
        args["--vg-images"] = str(tmp_path / "nowhere")
    elif case == "missing_image":
        (tmp_path / "images" / "101.jpg").unlink()
    elif case == "no_images_flag":
        del args["--vg-images"]
    elif case == "missing_split":
        args["--vg-split"] = str(tmp_path / "none.json")
    elif case == "split_without_train":
        (tmp_path / "s.json").write_text(json.dumps({"test": [100]}))
        args["--vg-split"] = str(tmp_path / "s.json")
    elif case == "empty_split":
        (tmp_path / "s.json").write_text(json.dumps({"train": [999]}))
        args["--vg-split"] = str(tmp_path / "s.json")
    argv = ["densecap", "train", "--out", str(tmp_path / "run"), "--steps", "1", "--size", "32", "--backbone",
            "shapes"] + [x for kv in args.items() for x in kv]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert flag in err, err


def test_cli_eval_refuses_vg_on_a_shapes_model(tmp_path, capsys):
    regions, images, _ = _write_vg(tmp_path, n_images=1)
    run = str(tmp_path / "run")
    assert main(["densecap", "train", "--out", run, "--steps", "1", "--n-train", "2", "--size", "32",
                 "--batch-size", "1"]) == 0
    capsys.readouterr()
    assert main(["densecap", "eval", "--out", run, "--vg-regions", regions, "--vg-images", images]) == 2
    assert "shapes world" in capsys.readouterr().err
    assert main(["densecap", "train", "--out", run, "--hed-weights", "--steps", "1", "--size", "32"]) == 2
    assert "--hed-weights" in capsys.readouterr().err
