import math

import pytest
import torch

from fastpapers.data import (BACKGROUNDS, COLOURS, SHAPES, ShapesCaptions, ShapesDense, ShapesTextToImage,
                             Vocabulary, dense_collate, generate, shapes_vocabulary)
from fastpapers.data.shapes import _split_seed, relation
from tests.utils import needs_cuda


@pytest.fixture(scope="module")
def single():
    return generate(300, size=48, seed=11)


def _foreground(b, i):
    bg = torch.tensor(BACKGROUNDS[b.style_name(i)])[:, None, None]
    return (b.images[i] - bg).abs().amax(0) > 0.02


def test_same_seed_same_world_other_seed_other_world():
    a = generate(64, size=32, min_objects=1, max_objects=3, seed=5)
    b = generate(64, size=32, min_objects=1, max_objects=3, seed=5)
    c = generate(64, size=32, min_objects=1, max_objects=3, seed=6)
    for f in ("images", "kind", "colour", "size", "boxes", "visible", "count", "style"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert not torch.equal(a.images, c.images)
    # Chunked drawing is an implementation detail: it must not change the pixels.
    d = generate(64, size=32, min_objects=1, max_objects=3, seed=5, chunk=7)
    assert torch.equal(a.images, d.images)


def test_every_kind_colour_size_and_style_occurs(single):
    assert set(single.kind[:, 0].tolist()) == set(range(len(SHAPES)))
    assert set(single.colour[:, 0].tolist()) == set(range(len(COLOURS)))
    assert set(single.size[:, 0].tolist()) == {0, 1}
    assert set(single.style.tolist()) == set(range(len(BACKGROUNDS)))
    assert single.images.shape == (300, 3, 48, 48) and single.images.dtype == torch.float32
    assert 0 <= single.images.min() and single.images.max() <= 1


def test_boxes_are_tight_around_the_drawn_pixels(single):
    for i in range(len(single)):
        ys, xs = _foreground(single, i).nonzero(as_tuple=True)
        drawn = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
        box = single.boxes[i, 0]
        assert (drawn - box).abs().max() <= 1.0, (i, drawn, box, SHAPES[single.kind[i, 0]])


def test_centre_pixel_has_the_object_colour(single):
    palette = torch.tensor(list(COLOURS.values()))
    for i in range(len(single)):
        x1, y1, x2, y2 = single.boxes[i, 0].tolist()
        px = single.images[i, :, int((y1 + y2) / 2), int((x1 + x2) / 2)]
        torch.testing.assert_close(px, palette[single.colour[i, 0]], atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind, area", [("circle", math.pi / 4), ("square", 1.0), ("triangle", 0.5),
                                        ("cross", 1 - (1 - 0.32) ** 2),
                                        # 10 triangles (centre, outer vertex, inner vertex) over the box.
                                        ("star", 5 * 0.45 * math.sin(math.pi / 5)
                                         / (2 * math.sin(2 * math.pi / 5) * (1 - math.cos(4 * math.pi / 5))))])
def test_drawn_area_matches_the_geometry(kind, area):
    # Fraction of the bounding box the shape covers (anti-aliased coverage summed).
    b = generate(40, size=96, seed=3, kinds=[kind])
    assert set(b.kind[:, 0].tolist()) == {SHAPES.index(kind)}
    fracs = []
    for i in range(len(b)):
        bg = torch.tensor(BACKGROUNDS[b.style_name(i)])[:, None, None]
        col = torch.tensor(list(COLOURS.values()))[b.colour[i, 0]][:, None, None]
        # Coverage per pixel from the blend img = bg (1 - a) + col a, on the channel with most contrast.
        c = (col - bg).abs().flatten().argmax()
        a = ((b.images[i, c] - bg[c]) / (col[c] - bg[c])).clamp(0, 1)
        x1, y1, x2, y2 = b.boxes[i, 0].tolist()
        fracs.append(a.sum().item() / ((x2 - x1) * (y2 - y1)))
    assert sum(fracs) / len(fracs) == pytest.approx(area, rel=0.04)


def test_region_and_scene_captions():
    b = generate(50, size=64, min_objects=2, max_objects=3, seed=2)
    for i in range(len(b)):
        objs = b.objects(i)
        assert len(objs) == int(b.count[i]) and b.region_captions(i) == [" ".join(o) for o in objs]
        cap = b.caption(i)
        assert cap.startswith("a " + " ".join(objs[0]) + " ")
        boxes = b.object_boxes(i).tolist()
        assert f" {relation(boxes[0], boxes[1])} a {' '.join(objs[1])}" in cap
        assert b.attributes(i) == sorted({w for o in objs for w in o})
        # The style is never in the text.
        assert not set(cap.split()) & set(BACKGROUNDS)


def test_relation_uses_the_dominant_axis():
    assert relation([0, 0, 10, 10], [0, 30, 10, 40]) == "above"
    assert relation([0, 30, 10, 40], [0, 0, 10, 10]) == "below"
    assert relation([0, 0, 10, 10], [30, 5, 40, 15]) == "left of"
    assert relation([30, 5, 40, 15], [0, 0, 10, 10]) == "right of"


def test_overlap_control_and_visibility():
    clean = generate(200, size=64, min_objects=3, max_objects=3, seed=4)
    occluded = generate(200, size=64, min_objects=3, max_objects=3, seed=4, max_overlap=0.4)
    assert (clean.visible[:, :3] > 0.999).float().mean() > 0.97
    assert (occluded.visible[:, :3] < 0.999).any()
    # The last-drawn object is never covered.
    assert torch.all(occluded.visible[:, 2] > 0.999)


def test_held_out_combinations():
    held = [("red", "triangle"), ("blue", "circle")]
    codes = {(list(COLOURS).index(c), SHAPES.index(s)) for c, s in held}
    train = generate(400, size=32, min_objects=1, max_objects=3, seed=1, held_out=held)
    pairs = lambda b: [{(c, k) for c, k in zip(b.colour[i].tolist(), b.kind[i].tolist()) if k >= 0}  # noqa: E731
                       for i in range(len(b))]
    assert all(not (p & codes) for p in pairs(train))
    test = generate(200, size=32, min_objects=1, max_objects=3, seed=1, held_out=held, require_held_out=True)
    assert all(p & codes for p in pairs(test))


def test_vocabulary_covers_every_caption_and_omits_styles():
    vocab = shapes_vocabulary()
    assert not set(vocab.words) & set(BACKGROUNDS)
    ds = ShapesCaptions(60, size=32, seed=0)
    t2i = ShapesTextToImage(60, size=32, seed=0)
    for text in ds.captions + [c for caps in t2i.captions for c in caps]:
        assert vocab.unk_id not in vocab.encode(text), text


def test_text_to_image_dataset():
    ds = ShapesTextToImage(40, size=32, split="train", seed=0, captions_per_image=3, held_out=[("red", "star")])
    item = ds[7]
    assert item["image"].shape == (3, 32, 32) and item["captions"].shape[0] == 3
    words = [ds.vocab.decode(c).split() for c in item["captions"]]
    colour = list(COLOURS)[int(item["colour"])]
    assert all(colour in w for w in words)
    assert [ds.vocab.decode(c) for c in item["captions"]] == ds.captions[7]
    held = ShapesTextToImage(30, size=32, split="heldout", seed=0, held_out=[("red", "star")])
    assert all(list(COLOURS)[int(held[i]["colour"])] == "red" and SHAPES[int(held[i]["shape"])] == "star"
               for i in range(len(held)))
    other = ShapesTextToImage(40, size=32, split="val", seed=0, held_out=[("red", "star")])
    assert not torch.equal(other.images, ds.images)


def test_caption_and_dense_datasets():
    cap = ShapesCaptions(20, size=48, seed=1)
    it = cap[3]
    assert cap.vocab.decode(it["caption"]) == cap.captions[3]
    on = {cap.vocab.itos[j] for j in it["attributes"].nonzero().flatten().tolist()}
    assert on == set(cap.attribute_words[3])
    dense = ShapesDense(10, size=64, seed=2)
    batch = dense_collate([dense[i] for i in range(4)])
    assert batch["image"].shape == (4, 3, 64, 64)
    for i in range(4):
        k = int(dense.batch.count[i])
        assert batch["boxes"][i].shape == (k, 4) and batch["captions"][i].shape[0] == k
        assert [dense.vocab.decode(c) for c in batch["captions"][i]] == dense.region_captions[i]


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_objects"):
        generate(2, min_objects=3, max_objects=2)
    with pytest.raises(ValueError, match="held_out"):
        generate(2, held_out=[("mauve", "circle")])
    with pytest.raises(ValueError, match="size"):
        generate(2, size=4)
    with pytest.raises(ValueError, match="kinds"):
        generate(2, kinds=["hexagon"])
    with pytest.raises(ValueError, match="held_out"):
        generate(2, kinds=["circle"], held_out=[("red", "star")])
    with pytest.raises(ValueError, match="held_out"):
        generate(2, kinds=["circle"], held_out=[(c, "circle") for c in COLOURS])
    with pytest.raises(ValueError, match="split"):
        ShapesCaptions(2, split="dev")


def test_vocabulary_roundtrip(tmp_path):
    v = Vocabulary.build(["the cat sat", "the dog, the cat."])
    assert v.itos[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"] and v.words[0] == "the"
    ids = v.encode("The cat flew")
    assert ids[0] == v.bos_id and ids[-1] == v.eos_id and ids[3] == v.unk_id
    assert v.decode(ids) == "the cat <unk>"
    batch, lengths = v.encode_batch(["the cat", "dog"])
    assert batch.tolist()[1][-1] == v.pad_id and lengths.tolist() == [4, 3]
    assert v.decode_batch(batch) == ["the cat", "dog"]
    path = v.save(str(tmp_path / "v.json"))
    assert Vocabulary.load(path) == v
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json"):
        Vocabulary.load(str(tmp_path / "bad.json"))
    with pytest.raises(FileNotFoundError, match="none.json"):
        Vocabulary.load(str(tmp_path / "none.json"))


@needs_cuda
def test_cuda_drawing_matches_cpu():
    a = generate(50, size=40, min_objects=1, max_objects=4, seed=8, max_overlap=0.3)
    b = generate(50, size=40, min_objects=1, max_objects=4, seed=8, max_overlap=0.3, device="cuda")
    assert b.images.device.type == "cuda"
    torch.testing.assert_close(b.images.cpu(), a.images, rtol=0, atol=1e-5)
    torch.testing.assert_close(b.visible, a.visible, rtol=0, atol=1e-5)
    assert torch.equal(a.boxes, b.boxes) and torch.equal(a.kind, b.kind)


def test_text_to_image_zoom_crops_around_the_object():
    plain = ShapesTextToImage(50, size=32, seed=3)
    zoomed = ShapesTextToImage(50, size=32, seed=3, zoom=2)
    # The same scenes (seeded alike), drawn at 64 and cropped to 32 around the object.
    assert zoomed.images.shape == (50, 3, 32, 32)
    assert zoomed.captions == plain.captions
    assert torch.equal(zoomed.batch.kind, plain.batch.kind) and torch.equal(zoomed.batch.style, plain.batch.style)
    full = generate(50, size=64, seed=_split_seed("train", 3)[0])
    fg_full = torch.stack([_foreground(full, i) for i in range(50)]).sum((1, 2))

    def foreground(ds, i):
        bg = torch.tensor(BACKGROUNDS[ds.batch.style_name(i)])[:, None, None]
        return (ds.image(i) - bg).abs().amax(0) > 0.02

    for i in range(50):
        fg = foreground(zoomed, i)
        # No part of the object is cut off: the crop holds all its pixels ...
        assert abs(int(fg.sum()) - int(fg_full[i])) <= 2, i
        # ... and the shifted box still bounds them.
        x0, y0, x1, y1 = zoomed.batch.boxes[i, 0].tolist()
        ys, xs = fg.nonzero(as_tuple=True)
        assert xs.min() >= math.floor(x0) - 1 and xs.max() <= math.ceil(x1) and ys.min() >= math.floor(y0) - 1
        assert ys.max() <= math.ceil(y1), i
    # Each shape covers about 4x the pixels it covers without zoom.
    area = lambda ds: sum(int(foreground(ds, i).sum()) for i in range(50))  # noqa: E731
    assert 3.0 < area(zoomed) / area(plain) < 5.0


@pytest.mark.parametrize("zoom", [0, 3, 1.5])
def test_text_to_image_zoom_bad_value(zoom):
    with pytest.raises(ValueError, match="zoom"):
        ShapesTextToImage(4, size=32, zoom=zoom)
