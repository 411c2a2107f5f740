"""Visual Genome region descriptions as DenseCap training and evaluation items.

:class:`VisualGenomeDense` wraps :class:`~fastpapers.data.formats.VisualGenomeRegions` and gives
the items :class:`~fastpapers.data.shapes.ShapesDense` gives (batch them with
:func:`~fastpapers.data.shapes.dense_collate`), so the DenseCap trainer and evaluator run on
either unchanged:

- ``image`` (3, size, size) in [0, 1] (the image is resized to a square, as the shapes world is;
  the reference keeps the aspect ratio with a longest side of 720 px);
- ``boxes`` (k, 4) xyxy in the resized image's pixels, clipped to it;
- ``captions`` (k, L) token ids ``<bos> .. <eos>``, phrases cut at ``max_words`` words (the
  reference's preprocessing keeps phrases of at most 15 tokens);
- ``visible`` (k,) ones; ``region_captions[i]``: the phrases, for the mAP's references.

Regions with a width or height <= 0 are dropped; images left with no region are dropped.
"""
import os
from typing import Iterable, List, Optional

import torch
from torch.utils.data import Dataset

from .formats import VisualGenomeRegions, _read_json
from .vocab import Vocabulary, tokenize

__all__ = ["VisualGenomeDense", "read_vg_split"]


def read_vg_split(path: str, split: str) -> List[int]:
    """The image ids of ``split`` in a split file shaped like the reference's
    ``info/densecap_splits.json``: ``{"train": [ids], "val": [ids], "test": [ids]}``."""
    data = _read_json(path, "Visual Genome split")
    if not isinstance(data, dict) or split not in data:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"Visual Genome split file {path} must map '{split}' to a list of image ids, got keys {keys}")
    try:
        return [int(i) for i in data[split]]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Visual Genome split file {path}: '{split}' must be a list of integer image ids "
                         f"({exc})") from exc


class VisualGenomeDense(Dataset):
    """Visual Genome regions for DenseCap (see the module docstring).

    Args:
        regions_json: ``region_descriptions.json``. image_dir: the folder of ``<image_id>.jpg``.
        size: the square side images are resized to.
        vocab: the vocabulary to encode with; ``None`` builds one from these phrases, keeping
            words seen at least ``min_word_count`` times (the reference uses 15 on all of VG).
        image_ids: keep only these images (e.g. one split of :func:`read_vg_split`).
    """

    def __init__(self, regions_json: str, image_dir: str, *, size: int, vocab: Optional[Vocabulary] = None,
                 image_ids: Optional[Iterable[int]] = None, max_words: int = 15, min_word_count: int = 1,
                 image_name: str = "{}.jpg"):
        if not isinstance(size, int) or size < 16:
            raise ValueError(f"size must be an int >= 16, got {size!r}")
        if not isinstance(max_words, int) or max_words < 1:
            raise ValueError(f"max_words must be an int >= 1, got {max_words!r}")
        self.regions = VisualGenomeRegions(regions_json, image_dir, size=size, image_name=image_name)
        self.size = size
        self.max_words = max_words
        keep = None if image_ids is None else set(int(i) for i in image_ids)
        items = []
        for image_id, boxes, phrases in self.regions.items:
            if keep is not None and image_id not in keep:
                continue
            good = [(b, " ".join(tokenize(p)[:max_words])) for b, p in zip(boxes, phrases)
                    if b[2] > b[0] and b[3] > b[1]]
            if good:
                items.append((image_id, [b for b, _ in good], [p for _, p in good]))
        self.regions.items = items
        self.region_captions = [phrases for _, _, phrases in items]
        self.vocab = vocab if vocab is not None else Vocabulary.build(
            (p for caps in self.region_captions for p in caps), min_count=min_word_count)
        self._tokens = [self.vocab.encode_batch(caps)[0] for caps in self.region_captions]

    @property
    def image_ids(self) -> List[int]:
        return [image_id for image_id, _, _ in self.regions.items]

    def check_images(self) -> None:
        """Raise FileNotFoundError naming the first image file that is missing (before a long
        run finds it at its first visit)."""
        for image_id in self.image_ids:
            path = os.path.join(self.regions.image_dir, self.regions.image_name.format(image_id))
            if not os.path.isfile(path):
                raise FileNotFoundError(f"Visual Genome image file not found: {path} (image id {image_id})")

    def __len__(self):
        return len(self.regions)

    def __getitem__(self, i):
        item = self.regions[i]
        boxes = item["boxes"].clamp(0, self.size)
        return {"image": item["image"], "boxes": boxes, "captions": self._tokens[i],
                "visible": torch.ones(boxes.shape[0])}
