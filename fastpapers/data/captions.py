"""Image-caption corpora for the captioners: images with their reference captions, the
shapes-world scenes, a COCO captions JSON and a seeded held-out split."""
from dataclasses import dataclass
from typing import List, Sequence

import torch

__all__ = ["CaptionCorpus", "shapes_corpus", "coco_corpus", "split_corpus"]


@dataclass
class CaptionCorpus:
    """Images with their reference captions.

    ``images``: (N, C, H, W) float in [0, 1] or uint8 in [0, 255]; ``captions``: per image, a
    non-empty list of reference caption strings."""
    images: torch.Tensor
    captions: List[List[str]]

    def __post_init__(self):
        if not isinstance(self.images, torch.Tensor) or self.images.dim() != 4:
            raise ValueError(f"images must be an (N, C, H, W) tensor, got "
                             f"{getattr(self.images, 'shape', type(self.images).__name__)}")
        if len(self.captions) != self.images.shape[0]:
            raise ValueError(f"captions must hold one list per image ({self.images.shape[0]}), got {len(self.captions)}")
        if any(len(refs) == 0 for refs in self.captions):
            raise ValueError("captions must hold at least one reference caption per image")

    def __len__(self):
        return self.images.shape[0]

    def image(self, i) -> torch.Tensor:
        x = self.images[i]
        return x.float() / 255 if x.dtype == torch.uint8 else x.float()

    def float_images(self) -> torch.Tensor:
        return self.images.float() / 255 if self.images.dtype == torch.uint8 else self.images.float()

    def subset(self, index: Sequence[int]) -> "CaptionCorpus":
        index = list(index)
        return CaptionCorpus(self.images[index], [self.captions[i] for i in index])


def shapes_corpus(n: int, *, size: int = 48, split: str = "train", seed: int = 0) -> CaptionCorpus:
    """Shapes-world scenes of 2–3 shapes with their relational caption (one reference each);
    the splits are generated from different seeds, so "test" scenes are unseen in "train"."""
    from .shapes import ShapesCaptions

    ds = ShapesCaptions(n, size=size, min_objects=2, max_objects=3, split=split, seed=seed)
    return CaptionCorpus(ds.images, [[c] for c in ds.captions])


def coco_corpus(annotations: str, image_dir: str, *, size: int = 64) -> CaptionCorpus:
    """A COCO captions JSON and its image folder, every image resized to ``size`` × ``size``."""
    from .formats import CocoCaptions

    ds = CocoCaptions(annotations, image_dir, size=size)
    if len(ds) == 0:
        raise ValueError(f"{annotations} holds no image with a caption")
    images, caps = zip(*(ds[i] for i in range(len(ds))))
    return CaptionCorpus((torch.stack(images) * 255 + 0.5).to(torch.uint8), [list(c) for c in caps])


def split_corpus(corpus: CaptionCorpus, val_fraction: float, seed: int = 0):
    """(train, held-out) split of the images, a seeded permutation."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n = len(corpus)
    n_val = max(1, int(round(n * val_fraction)))
    if n_val >= n:
        raise ValueError(f"val_fraction {val_fraction} leaves no training image out of {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return corpus.subset(sorted(perm[n_val:])), corpus.subset(sorted(perm[:n_val]))
