"""The shapes world: a seeded, vectorised generator of coloured-shape scenes with ground truth.

Every image is a flat background (its colour is the image's *style*, never named in any
caption) with 1..n objects, each a kind (circle, square, triangle, star, cross), a colour
(6 named), a size (small, large) and a position. Ground truth per image: boxes (xyxy,
pixels, tight around the drawn shape), attributes, the visible fraction of each object, a
caption per region ("small red triangle"), a scene caption with spatial relations ("a large
red circle above a small blue square"), the attribute-word set and the style label.

Drawing is vectorised in torch (point-in-shape tests on a supersampled pixel grid, grouped
by kind, composited back to front), so 10k 64x64 images take seconds; the same seed and
arguments give the same images and ground truth on every run.

Datasets: :class:`ShapesTextToImage` (one object per image, several template captions with
synonyms), :class:`ShapesCaptions` (2-3 objects, relational caption, attribute targets),
:class:`ShapesDense` (1-4 objects, one caption per region; use :func:`dense_collate`).
Splits: ``train``/``val``/``test`` never contain a held-out colour-shape combination;
``heldout`` puts one in every image (for measuring compositional generalisation). Every
generator and dataset takes ``kinds=("circle", "square", "triangle")`` to use fewer shapes.
"""
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .vocab import Vocabulary

SHAPES = ("circle", "square", "triangle", "star", "cross")
COLOURS: Dict[str, Tuple[float, float, float]] = {
    "red": (0.90, 0.12, 0.12), "green": (0.13, 0.70, 0.20), "blue": (0.16, 0.35, 0.96),
    "yellow": (0.96, 0.86, 0.10), "purple": (0.62, 0.22, 0.82), "orange": (0.98, 0.55, 0.08),
}
SIZES = ("small", "large")
# Style: background colours. Their names exist only for plots; no caption or vocabulary uses them.
BACKGROUNDS: Dict[str, Tuple[float, float, float]] = {
    "black": (0.05, 0.05, 0.05), "gray": (0.45, 0.45, 0.47), "cream": (0.93, 0.90, 0.80),
    "navy": (0.08, 0.14, 0.30),
}
# Object half-size as a fraction of the canvas side: small and large ranges.
_RADIUS = {"small": (0.09, 0.12), "large": (0.16, 0.21)}
# Tight extents of each kind in units of its radius: (umin, umax, vmin, vmax), v pointing down.
_EXTENT = {
    "circle": (-1.0, 1.0, -1.0, 1.0),
    "square": (-0.85, 0.85, -0.85, 0.85),
    "triangle": (-0.95, 0.95, -1.0, 0.8),
    "star": (-math.sin(2 * math.pi / 5), math.sin(2 * math.pi / 5), -1.0, -math.cos(4 * math.pi / 5)),
    "cross": (-1.0, 1.0, -1.0, 1.0),
}
_STAR_INNER = 0.45
_CROSS_ARM = 0.32
RELATIONS = ("above", "below", "left of", "right of")

# Template grammar for the single-object text-to-image captions. Colour words are never
# replaced by synonyms: colour and shape are what the model must learn from the text.
_TEMPLATES = ("a {size} {colour} {shape}", "a {colour} {shape}", "there is a {size} {colour} {shape}",
              "a picture of a {colour} {shape}", "this {shape} is {colour} and {size}",
              "a {colour} {shape} that is {size}")
_SIZE_SYNONYMS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
_SHAPE_SYNONYMS = {"circle": ("circle", "disc"), "square": ("square", "box"), "triangle": ("triangle",),
                   "star": ("star",), "cross": ("cross", "plus")}


def _inside(kind: str, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Point-in-shape test for unit-radius shapes centred at 0 (u right, v down)."""
    if kind == "circle":
        return u * u + v * v <= 1.0
    if kind == "square":
        return torch.maximum(u.abs(), v.abs()) <= _EXTENT["square"][1]
    if kind == "triangle":
        return (v <= 0.8) & (u.abs() <= 0.95 * (v + 1.0) / 1.8)
    if kind == "cross":
        a, b = u.abs(), v.abs()
        return ((a <= _CROSS_ARM) & (b <= 1.0)) | ((b <= _CROSS_ARM) & (a <= 1.0))
    if kind == "star":
        # Polar test: within each 36-degree half-sector the edge is the straight line from an
        # outer vertex (radius 1, angle 0) to an inner one (radius r2, angle alpha).
        alpha = math.pi / 5
        rho = torch.sqrt(u * u + v * v)
        phi = torch.remainder(torch.atan2(u, -v), 2 * alpha)
        phi = torch.minimum(phi, 2 * alpha - phi)
        r2 = _STAR_INNER
        edge = r2 * math.sin(alpha) / (torch.sin(phi) + r2 * torch.sin(alpha - phi))
        return rho <= edge
    raise ValueError(f"kind must be one of {SHAPES}, got {kind!r}")


def relation(box_a: Sequence[float], box_b: Sequence[float]) -> str:
    """Spatial relation of a to b from their box centres: the dominant axis decides."""
    ax, ay = (box_a[0] + box_a[2]) / 2, (box_a[1] + box_a[3]) / 2
    bx, by = (box_b[0] + box_b[2]) / 2, (box_b[1] + box_b[3]) / 2
    dx, dy = ax - bx, ay - by
    if abs(dy) >= abs(dx):
        return "above" if dy < 0 else "below"
    return "left of" if dx < 0 else "right of"


@dataclass
class ShapesBatch:
    """Images and ground truth of a generated batch. Per-object tensors are (N, K) with K the
    maximum object count; ``kind == -1`` marks an empty slot."""
    images: torch.Tensor        # (N, 3, S, S) float32 in [0, 1]
    kind: torch.Tensor          # (N, K) int64 index into SHAPES, -1 = no object
    colour: torch.Tensor        # (N, K) int64 index into COLOURS
    size: torch.Tensor          # (N, K) int64 index into SIZES
    boxes: torch.Tensor         # (N, K, 4) float32 xyxy in pixels
    visible: torch.Tensor       # (N, K) float32, drawn fraction of the object not covered by later ones
    count: torch.Tensor         # (N,) int64
    style: torch.Tensor         # (N,) int64 index into BACKGROUNDS

    def __len__(self) -> int:
        return self.images.shape[0]

    def objects(self, i: int) -> List[Tuple[str, str, str]]:
        """(size, colour, kind) words of image i's objects, in drawing order."""
        colours = list(COLOURS)
        return [(SIZES[int(s)], colours[int(c)], SHAPES[int(k)])
                for k, c, s in zip(self.kind[i].tolist(), self.colour[i].tolist(), self.size[i].tolist()) if k >= 0]

    def region_captions(self, i: int) -> List[str]:
        return [" ".join(o) for o in self.objects(i)]

    def object_boxes(self, i: int) -> torch.Tensor:
        return self.boxes[i, : int(self.count[i])]

    def caption(self, i: int) -> str:
        """Scene caption: consecutive objects linked by their spatial relation.
        One object: "a small red circle"; two: "a small red circle above a large blue
        square"; three: "... and the large blue square left of a small green star"."""
        objs = [" ".join(o) for o in self.objects(i)]
        boxes = self.object_boxes(i).tolist()
        text = "a " + objs[0]
        for j in range(1, len(objs)):
            rel = relation(boxes[j - 1], boxes[j])
            if j == 1:
                text += f" {rel} a {objs[1]}"
            else:
                text += f" and the {objs[j - 1]} {rel} a {objs[j]}"
        return text

    def attributes(self, i: int) -> List[str]:
        """The sorted set of attribute words (sizes, colours, kinds) in image i."""
        return sorted({w for o in self.objects(i) for w in o})

    def style_name(self, i: int) -> str:
        return list(BACKGROUNDS)[int(self.style[i])]


def combos(held_out: Sequence[Tuple[str, str]] = (), kinds: Optional[Sequence[str]] = None
           ) -> Tuple[List[Tuple[int, int]], List[Tuple[int, int]]]:
    """(allowed, held) lists of (colour index, kind index) pairs; held_out names (colour, shape)
    pairs, kinds restricts the shapes used (default: all of SHAPES)."""
    colours = list(COLOURS)
    kinds = list(SHAPES) if kinds is None else list(kinds)
    if not kinds or any(k not in SHAPES for k in kinds):
        raise ValueError(f"kinds must be a non-empty subset of {SHAPES}, got {kinds!r}")
    held = []
    for pair in held_out:
        if len(pair) != 2 or pair[0] not in COLOURS or pair[1] not in kinds:
            raise ValueError(f"held_out must hold (colour, shape) pairs with colour in {colours} and shape "
                             f"in {kinds}, got {pair!r}")
        held.append((colours.index(pair[0]), SHAPES.index(pair[1])))
    allowed = [(c, SHAPES.index(k)) for c in range(len(colours)) for k in kinds
               if (c, SHAPES.index(k)) not in held]
    if not allowed:
        raise ValueError("held_out leaves no (colour, shape) combination to draw")
    return allowed, held


def generate(n: int, *, size: int = 64, min_objects: int = 1, max_objects: int = 1, seed: int = 0,
             held_out: Sequence[Tuple[str, str]] = (), require_held_out: bool = False,
             max_overlap: float = 0.0, supersample: int = 2, device="cpu", chunk: int = 512,
             kinds: Optional[Sequence[str]] = None) -> ShapesBatch:
    """Generate ``n`` images of ``size`` x ``size`` with ``min_objects..max_objects`` objects.

    held_out: (colour, shape) pairs that never appear, or, with ``require_held_out``, of
    which exactly one object per image is drawn. kinds: the shapes to use (default all).
    max_overlap: largest IoU allowed between two objects' boxes (0 = no overlap; > 0 gives
    occlusion, reported in ``visible``). supersample: s x s samples per pixel for anti-aliased
    edges. chunk: images drawn at once (memory bound; no effect on the output).
    Deterministic in ``seed``.
    """
    for name, val, lo in [("n", n, 0), ("size", size, 8), ("min_objects", min_objects, 1),
                          ("supersample", supersample, 1), ("chunk", chunk, 1)]:
        if not isinstance(val, int) or val < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {val!r}")
    if not isinstance(max_objects, int) or max_objects < min_objects:
        raise ValueError(f"max_objects must be an int >= min_objects ({min_objects}), got {max_objects!r}")
    if not 0.0 <= max_overlap < 1.0:
        raise ValueError(f"max_overlap must be in [0, 1), got {max_overlap!r}")
    allowed, held = combos(held_out, kinds)
    if require_held_out and not held:
        raise ValueError("held_out must name at least one (colour, shape) pair when require_held_out is set")
    g = torch.Generator().manual_seed(int(seed))
    K = max_objects

    count = torch.randint(min_objects, max_objects + 1, (n,), generator=g)
    present = torch.arange(K)[None, :] < count[:, None]
    allowed_t = torch.tensor(allowed, dtype=torch.long)
    pick = torch.randint(len(allowed), (n, K), generator=g)
    colour, kind = allowed_t[pick, 0], allowed_t[pick, 1]
    if require_held_out:
        held_t = torch.tensor(held, dtype=torch.long)
        hpick = held_t[torch.randint(len(held), (n,), generator=g)]
        slot = (torch.rand(n, generator=g) * count).long()
        rows = torch.arange(n)
        colour[rows, slot], kind[rows, slot] = hpick[:, 0], hpick[:, 1]
    sz = torch.randint(len(SIZES), (n, K), generator=g)
    lo = torch.tensor([_RADIUS[s][0] for s in SIZES])[sz]
    hi = torch.tensor([_RADIUS[s][1] for s in SIZES])[sz]
    radius = (lo + (hi - lo) * torch.rand(n, K, generator=g)) * size
    style = torch.randint(len(BACKGROUNDS), (n,), generator=g)
    ext = torch.tensor([_EXTENT[k] for k in SHAPES])[kind]          # (n, K, 4): umin, umax, vmin, vmax

    # Placement, one slot at a time over all images: T candidate positions, keep the first whose
    # box overlaps earlier boxes by at most max_overlap (else the least-overlapping one).
    T = 64
    boxes = torch.zeros(n, K, 4)
    for k in range(K):
        r = radius[:, k, None]
        e = ext[:, k]
        x_lo, x_hi = -e[:, 0:1] * r, size + (-e[:, 1:2] * r)
        y_lo, y_hi = -e[:, 2:3] * r, size + (-e[:, 3:4] * r)
        cx = x_lo + (x_hi - x_lo) * torch.rand(n, T, generator=g)
        cy = y_lo + (y_hi - y_lo) * torch.rand(n, T, generator=g)
        cand = torch.stack([cx + e[:, 0:1] * r, cy + e[:, 2:3] * r, cx + e[:, 1:2] * r, cy + e[:, 3:4] * r], -1)
        if k:
            prev = boxes[:, None, :k]                                      # (n, 1, k, 4)
            c = cand[:, :, None]                                           # (n, T, 1, 4)
            iw = (torch.minimum(c[..., 2], prev[..., 2]) - torch.maximum(c[..., 0], prev[..., 0])).clamp(min=0)
            ih = (torch.minimum(c[..., 3], prev[..., 3]) - torch.maximum(c[..., 1], prev[..., 1])).clamp(min=0)
            inter = iw * ih
            area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
            iou = inter / (area(c) + area(prev) - inter)
            iou = torch.where(present[:, None, :k], iou, torch.zeros(()))
            worst = iou.amax(-1)                                           # (n, T)
            ok = worst <= max_overlap if max_overlap > 0 else inter.amax(-1) <= 0
            first = torch.where(ok.any(1), ok.float().argmax(1), worst.argmin(1))
        else:
            first = torch.zeros(n, dtype=torch.long)
        boxes[:, k] = cand[torch.arange(n), first]
    kind = torch.where(present, kind, torch.full_like(kind, -1))
    colour = torch.where(present, colour, torch.full_like(colour, -1))
    sz = torch.where(present, sz, torch.full_like(sz, -1))
    boxes = torch.where(present[..., None], boxes, torch.zeros(()))
    # Centre in the shape's own frame: box = centre + r * extent.
    cx = boxes[..., 0] - ext[..., 0] * radius
    cy = boxes[..., 1] - ext[..., 2] * radius

    device = torch.device(device)
    images = torch.empty(n, 3, size, size, device=device)
    visible = torch.zeros(n, K)
    palette = torch.tensor(list(COLOURS.values()), device=device)
    bgs = torch.tensor(list(BACKGROUNDS.values()), device=device)
    s = supersample
    # Each object is rasterised in a window just large enough for the largest object, placed
    # inside the canvas around the object's box: ~5x fewer point tests than the whole canvas.
    win = min(size, int(math.ceil(2 * _RADIUS["large"][1] * size)) + 2)
    x0 = boxes[..., 0].floor().clamp(0, size - win).long()
    y0 = boxes[..., 1].floor().clamp(0, size - win).long()
    sub = (torch.arange(win * s, device=device, dtype=torch.float32) + 0.5) / s
    offs = torch.arange(win, device=device)
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        m = sl.stop - sl.start
        cover = torch.zeros(m, K, size, size, device=device)
        kk = kind[sl].to(device)
        for ki, kname in enumerate(SHAPES):
            idx = (kk == ki).nonzero()
            if idx.numel() == 0:
                continue
            i0, k0 = idx[:, 0], idx[:, 1]
            gi = i0.cpu() + start
            ko = k0.cpu()
            r = radius[gi, ko].to(device)[:, None, None]
            ox, oy = x0[gi, ko].to(device), y0[gi, ko].to(device)
            u = (ox[:, None, None] + sub[None, None, :] - cx[gi, ko].to(device)[:, None, None]) / r
            v = (oy[:, None, None] + sub[None, :, None] - cy[gi, ko].to(device)[:, None, None]) / r
            local = _inside(kname, u, v).float()
            if s > 1:
                local = F.avg_pool2d(local[:, None], s)[:, 0]
            rows = (oy[:, None] + offs[None, :])[:, :, None]
            cols = (ox[:, None] + offs[None, :])[:, None, :]
            cover[i0[:, None, None], k0[:, None, None], rows, cols] = local
        img = bgs[style[sl].to(device)][:, :, None, None].expand(m, 3, size, size).clone()
        # Back to front: later objects cover earlier ones.
        on_top = torch.zeros(m, size, size, device=device)
        for k in range(K - 1, -1, -1):
            a = cover[:, k]
            area = a.sum((1, 2))
            visible[sl, k] = torch.where(area > 0, (a * (1 - on_top)).sum((1, 2)) / area.clamp(min=1e-12),
                                         torch.zeros((), device=device)).cpu()
            on_top = on_top + a * (1 - on_top)
        for k in range(K):
            a = cover[:, k, None]
            col = palette[colour[sl, k].clamp(min=0).to(device)][:, :, None, None]
            img = img * (1 - a) + col * a
        images[sl] = img
    return ShapesBatch(images=images, kind=kind, colour=colour, size=sz, boxes=boxes, visible=visible,
                       count=count, style=style)


def caption_variants(size_word: str, colour: str, shape: str, n: int, generator: torch.Generator) -> List[str]:
    """``n`` template captions with size and shape synonyms for one object."""
    out = []
    for _ in range(n):
        t = _TEMPLATES[int(torch.randint(len(_TEMPLATES), (1,), generator=generator))]
        sw = _SIZE_SYNONYMS[size_word][int(torch.randint(len(_SIZE_SYNONYMS[size_word]), (1,), generator=generator))]
        kw = _SHAPE_SYNONYMS[shape][int(torch.randint(len(_SHAPE_SYNONYMS[shape]), (1,), generator=generator))]
        out.append(t.format(size=sw, colour=colour, shape=kw))
    return out


def shapes_vocabulary() -> Vocabulary:
    """Every word the shapes world's captions can use (fixed: independent of split and seed)."""
    words = []
    for t in _TEMPLATES:
        words += [w for w in t.split() if not w.startswith("{")]
    words += ["a", "the", "and"] + [w for r in RELATIONS for w in r.split()]
    words += list(SIZES) + [w for syn in _SIZE_SYNONYMS.values() for w in syn]
    words += list(COLOURS) + list(SHAPES) + [w for syn in _SHAPE_SYNONYMS.values() for w in syn]
    return Vocabulary(sorted(set(words)))


_SPLIT_OFFSET = {"train": 0, "val": 1, "test": 2, "heldout": 3}


def _split_seed(split: str, seed: int) -> Tuple[int, bool]:
    if split not in _SPLIT_OFFSET:
        raise ValueError(f"split must be one of {sorted(_SPLIT_OFFSET)}, got {split!r}")
    return seed * 10 + _SPLIT_OFFSET[split], split == "heldout"


class _ShapesDataset(Dataset):
    def __init__(self, n, *, size, min_objects, max_objects, split, seed, held_out, max_overlap, vocab, kinds):
        gen_seed, require = _split_seed(split, seed)
        self.vocab = vocab or shapes_vocabulary()
        self.split = split
        self.batch = generate(n, size=size, min_objects=min_objects, max_objects=max_objects, seed=gen_seed,
                              held_out=held_out, require_held_out=require, max_overlap=max_overlap, kinds=kinds)
        # uint8 keeps 10k 64x64 images at 120 MB instead of 480 MB.
        self.images = (self.batch.images * 255 + 0.5).to(torch.uint8)
        self.batch.images = self.batch.images[:0]

    def __len__(self):
        return self.images.shape[0]

    def image(self, i):
        return self.images[i].float() / 255


class ShapesTextToImage(_ShapesDataset):
    """One object per image with ``captions_per_image`` template captions (synonyms included).

    ``zoom`` = 2 draws each scene at twice ``size`` and keeps the ``size`` x ``size`` window
    centred on the object (see :meth:`_crop_to_object`): shapes at twice the resolution.

    Item: ``image`` (3, S, S) in [0, 1]; ``captions`` (C, L) int64 token ids (``<bos>``..
    ``<eos>``, padded); ``shape``, ``colour``, ``size``, ``style`` int64 labels. The style
    (background) is never in the text. The caption strings are ``dataset.captions[i]``.
    """

    def __init__(self, n: int, *, size: int = 32, split: str = "train", seed: int = 0,
                 held_out: Sequence[Tuple[str, str]] = (), captions_per_image: int = 4,
                 vocab: Optional[Vocabulary] = None, kinds: Optional[Sequence[str]] = None, zoom: int = 1):
        if zoom not in (1, 2):
            raise ValueError(f"zoom must be 1 or 2 (at 3 a large shape no longer fits the crop), got {zoom!r}")
        super().__init__(n, size=size * zoom, min_objects=1, max_objects=1, split=split, seed=seed,
                         held_out=held_out, max_overlap=0.0, vocab=vocab, kinds=kinds)
        if zoom > 1:
            self._crop_to_object(size)
        g = torch.Generator().manual_seed(_split_seed(split, seed)[0] + 7)
        self.captions = [caption_variants(*self.batch.objects(i)[0], captions_per_image, g) for i in range(n)]
        flat = [c for caps in self.captions for c in caps]
        ids, _ = self.vocab.encode_batch(flat) if flat else (torch.zeros(0, 2, dtype=torch.long), None)
        self.tokens = ids.view(n, captions_per_image, -1)

    def _crop_to_object(self, size: int) -> None:
        """Keep a ``size`` x ``size`` window of each (zoom x larger) canvas centred on its object,
        shifted inwards where it would leave the canvas; boxes move with the window. This is
        the shapes world's version of the paper's object-centred CUB crops: every shape is
        drawn at zoom x the resolution, and its size word still tells small from large."""
        full = self.images.shape[-1]
        b = self.batch.boxes[:, 0]
        cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
        x0 = (cx - size / 2).round().clamp(0, full - size).long()
        y0 = (cy - size / 2).round().clamp(0, full - size).long()
        offs = torch.arange(size)
        rows = (y0[:, None] + offs[None, :])[:, None, :, None]
        cols = (x0[:, None] + offs[None, :])[:, None, None, :]
        n = self.images.shape[0]
        self.images = self.images[torch.arange(n)[:, None, None, None], torch.arange(3)[None, :, None, None],
                                  rows, cols].contiguous()
        shift = torch.stack([x0, y0, x0, y0], 1).to(self.batch.boxes.dtype)
        self.batch.boxes[:, 0] -= shift

    def __getitem__(self, i):
        b = self.batch
        return {"image": self.image(i), "captions": self.tokens[i], "shape": b.kind[i, 0], "colour": b.colour[i, 0],
                "size": b.size[i, 0], "style": b.style[i]}


class ShapesCaptions(_ShapesDataset):
    """Scenes of ``min_objects..max_objects`` shapes with a relational caption.

    Item: ``image`` (3, S, S); ``caption`` (L,) int64 ids; ``attributes`` (V,) float multi-hot
    over the vocabulary (the attribute words of the scene, for semantic attention); ``style``.
    Strings: ``dataset.captions[i]``, ``dataset.attribute_words[i]``.
    """

    def __init__(self, n: int, *, size: int = 64, min_objects: int = 2, max_objects: int = 3,
                 split: str = "train", seed: int = 0, held_out: Sequence[Tuple[str, str]] = (),
                 max_overlap: float = 0.0, vocab: Optional[Vocabulary] = None,
                 kinds: Optional[Sequence[str]] = None):
        super().__init__(n, size=size, min_objects=min_objects, max_objects=max_objects, split=split, seed=seed,
                         held_out=held_out, max_overlap=max_overlap, vocab=vocab, kinds=kinds)
        self.captions = [self.batch.caption(i) for i in range(n)]
        self.attribute_words = [self.batch.attributes(i) for i in range(n)]
        self.tokens, self.lengths = self.vocab.encode_batch(self.captions)
        self.attribute_targets = torch.zeros(n, len(self.vocab))
        for i, words in enumerate(self.attribute_words):
            self.attribute_targets[i, [self.vocab.id(w) for w in words]] = 1.0

    def __getitem__(self, i):
        return {"image": self.image(i), "caption": self.tokens[i], "attributes": self.attribute_targets[i],
                "style": self.batch.style[i]}


class ShapesDense(_ShapesDataset):
    """Canvases with ``min_objects..max_objects`` shapes, one caption per region (DenseCap).

    Item: ``image`` (3, S, S); ``boxes`` (k, 4) float xyxy pixels; ``captions`` (k, L) int64 ids
    ("<bos> small red triangle <eos>"); ``visible`` (k,). Batch with :func:`dense_collate`.
    """

    def __init__(self, n: int, *, size: int = 96, min_objects: int = 1, max_objects: int = 4,
                 split: str = "train", seed: int = 0, held_out: Sequence[Tuple[str, str]] = (),
                 max_overlap: float = 0.0, vocab: Optional[Vocabulary] = None,
                 kinds: Optional[Sequence[str]] = None):
        super().__init__(n, size=size, min_objects=min_objects, max_objects=max_objects, split=split, seed=seed,
                         held_out=held_out, max_overlap=max_overlap, vocab=vocab, kinds=kinds)
        self.region_captions = [self.batch.region_captions(i) for i in range(n)]
        flat = [c for caps in self.region_captions for c in caps]
        ids, _ = self.vocab.encode_batch(flat)
        self._tokens = ids.split([len(c) for c in self.region_captions])

    def __getitem__(self, i):
        k = int(self.batch.count[i])
        return {"image": self.image(i), "boxes": self.batch.boxes[i, :k].clone(), "captions": self._tokens[i],
                "visible": self.batch.visible[i, :k].clone()}


def dense_collate(items: List[dict]) -> dict:
    """Stack images; keep per-image ``boxes``/``captions``/``visible`` as lists (counts differ)."""
    return {"image": torch.stack([it["image"] for it in items]),
            "boxes": [it["boxes"] for it in items], "captions": [it["captions"] for it in items],
            "visible": [it["visible"] for it in items]}
