"""The text-to-image recipe's data: (image, caption) pairs over the shapes world, with
colour-shape pairs held out of training (:data:`HELD_OUT`)."""
from __future__ import annotations

from typing import Optional

import torch


# Colour-shape pairs never seen in training: one per shape, so each colour and each shape
# still appears in training with other partners.
HELD_OUT = (("red", "triangle"), ("blue", "circle"), ("green", "star"), ("yellow", "cross"), ("purple", "square"))


class ShapesPairs(torch.utils.data.Dataset):
    """Text-to-image items over the shapes world's :class:`ShapesTextToImage` datasets.

    Item: image (3, S, S) in [-1, 1], caption (a string), label (class id of the caption's
    colour, shape and size: pairs of one class are never each other's "wrong text"), colour,
    kind, size, background (the style, never in the caption) and unseen (1 when the
    colour-shape pair was held out of training). ``random_caption`` draws one of an image's
    template captions per fetch (from the global RNG, which the Trainer seeds and restores);
    otherwise image i shows its caption i mod C.
    """

    def __init__(self, parts, *, random_caption: bool):
        from ..data.shapes import BACKGROUNDS, COLOURS, SHAPES, SIZES
        self.parts = list(parts)
        self.random_caption = random_caption
        self.num_classes = {"colour": len(COLOURS), "kind": len(SHAPES), "size": len(SIZES),
                            "background": len(BACKGROUNDS)}
        self._n = sum(len(p) for p, _ in self.parts)

    def __len__(self):
        return self._n

    def _locate(self, i):
        # Parts are interleaved so that any prefix mixes seen and unseen pairs.
        k = len(self.parts)
        part, unseen = self.parts[i % k]
        j = i // k
        if j >= len(part):
            raise IndexError(f"index {i} out of range for {self._n} items")
        return part, unseen, j

    def __getitem__(self, i):
        if not 0 <= i < self._n:
            raise IndexError(f"index {i} out of range for {self._n} items")
        part, unseen, j = self._locate(i)
        item = part[j]
        caps = part.captions[j]
        c = int(torch.randint(len(caps), ())) if self.random_caption else i % len(caps)
        colour, kind, size = int(item["colour"]), int(item["shape"]), int(item["size"])
        nk, ns = self.num_classes["kind"], self.num_classes["size"]
        return {"image": item["image"] * 2 - 1, "caption": caps[c], "label": (colour * nk + kind) * ns + size,
                "colour": colour, "kind": kind, "size": size, "background": int(item["style"]), "unseen": unseen}


def shapes_split(split: str, *, image_size: int = 32, n: Optional[int] = None, seed: int = 0,
                 zoom: int = 1) -> ShapesPairs:
    """``train``: pairs without the :data:`HELD_OUT` combinations (n defaults to 6000, random
    caption per fetch); ``test``: new images, half of seen pairs and half of held-out pairs
    (n defaults to 1000); ``all``: every combination, for the judge (n defaults to 6000).
    ``zoom`` = 2: object-centred crops of scenes drawn at twice the size (the paper crops CUB
    birds to their boxes in the same spirit); see :class:`ShapesTextToImage`."""
    from ..data.shapes import ShapesTextToImage
    kw = dict(size=image_size, seed=seed, zoom=zoom)
    if split == "train":
        return ShapesPairs([(ShapesTextToImage(n or 6000, split="train", held_out=HELD_OUT, **kw), 0)],
                           random_caption=True)
    if split == "test":
        n = n or 1000
        seen = ShapesTextToImage((n + 1) // 2, split="test", held_out=HELD_OUT, **kw)
        unseen = ShapesTextToImage(n // 2, split="heldout", held_out=HELD_OUT, **kw)
        parts = [(seen, 0), (unseen, 1)] if n > 1 else [(seen, 0)]
        return ShapesPairs(parts, random_caption=False)
    if split == "all":
        return ShapesPairs([(ShapesTextToImage(n or 6000, split="train", **kw), 0)], random_caption=True)
    raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")


def stack_items(data, keys, limit=None) -> dict:
    """The first ``limit`` items of ``data`` as {key: stacked tensor, or list of strings}."""
    n = len(data) if limit is None else min(limit, len(data))
    items = [data[i] for i in range(n)]
    out = {}
    for k in keys:
        vals = [it[k] for it in items]
        out[k] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else \
            (torch.tensor(vals) if not isinstance(vals[0], str) else vals)
    return out
