"""The shapes-world judge of generated images, and the pairwise ROC AUC of the style analysis.

:class:`AttributeClassifier` is the separately trained classifier that reads colour, shape,
size and background off an image (as an Inception network judges ImageNet samples): it is
trained on real images of every colour–shape pair and never sees a generator.
:func:`degrade` is the augmentation of its robust variant; :func:`predict` runs it in
batches; :func:`attribute_accuracy` scores predictions against the true attributes.
:func:`pairwise_auc` is the ROC analysis of Reed et al. 2016 (Sec. 6.2): do vectors of one
label lie closer (cosine) than vectors of different labels?

>>> import torch
>>> pairwise_auc(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]), torch.tensor([0, 0, 1, 1]))
1.0
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ATTRIBUTES", "AttributeClassifier", "degrade", "predict", "attribute_accuracy", "pairwise_auc"]

ATTRIBUTES = ("colour", "kind", "size", "background")


class AttributeClassifier(nn.Module):
    """The judge: a small CNN with one linear head per attribute.

    x: (B, 3, S, S) in [-1, 1] -> {attribute: logits (B, n_classes)}.
    """

    def __init__(self, heads: dict, width: int = 32):
        super().__init__()
        if not heads or not all(isinstance(n, int) and n >= 2 for n in heads.values()):
            raise ValueError(f"heads must map attribute names to class counts >= 2, got {heads}")
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, 1, 1), nn.BatchNorm2d(width), nn.ReLU(True), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, 1, 1), nn.BatchNorm2d(2 * width), nn.ReLU(True), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, 1, 1), nn.BatchNorm2d(4 * width), nn.ReLU(True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.heads = nn.ModuleDict({name: nn.Linear(4 * width, n) for name, n in heads.items()})

    def forward(self, x: torch.Tensor) -> dict:
        h = self.features(x)
        return {name: head(h) for name, head in self.heads.items()}


def degrade(images: torch.Tensor, max_blur: float = 1.5, max_noise: float = 0.3) -> torch.Tensor:
    """The robust judge's training augmentation: each image is, with probability ½, blurred by a
    Gaussian of σ ~ U(0.3, max_blur) pixels (one σ per batch) and, independently with
    probability ½, given N(0, s²) pixel noise, s ~ U(0, max_noise) per image. Images in [-1, 1]."""
    from torchvision.transforms.functional import gaussian_blur
    b = images.shape[0]
    sigma = 0.3 + (max_blur - 0.3) * torch.rand(()).item()
    blurred = gaussian_blur(images, [5, 5], [sigma, sigma])
    pick = (torch.rand(b, device=images.device) < 0.5)[:, None, None, None]
    out = torch.where(pick, blurred, images)
    scale = torch.rand(b, 1, 1, 1, device=images.device) * max_noise  # drawn first, then which images get it
    amount = scale * (torch.rand(b, 1, 1, 1, device=images.device) < 0.5)
    return out + amount * torch.randn_like(out)


@torch.no_grad()
def predict(judge: AttributeClassifier, images: torch.Tensor, batch_size: int = 256,
            attributes: Sequence[str] = ATTRIBUTES) -> Dict[str, torch.Tensor]:
    """{attribute: predicted class ids (N,) on the CPU}, the judge run over ``images`` in batches."""
    preds = {a: [] for a in attributes}
    for i in range(0, len(images), batch_size):
        logits = judge(images[i:i + batch_size])
        for a in attributes:
            preds[a].append(logits[a].argmax(1).cpu())
    return {a: torch.cat(v) for a, v in preds.items()}


def attribute_accuracy(pred: Dict[str, torch.Tensor], truth: Dict[str, torch.Tensor], mask: torch.Tensor,
                       attributes: Sequence[str] = ("colour", "kind", "size")) -> Dict[str, float]:
    """Accuracy per attribute over the rows in ``mask``, and ``all``: every attribute right."""
    hits = {a: pred[a][mask] == truth[a][mask] for a in attributes}
    res = {a: h.float().mean().item() for a, h in hits.items()}
    every = hits[attributes[0]]
    for a in attributes[1:]:
        every = every & hits[a]
    res["all"] = every.float().mean().item()
    return res


def pairwise_auc(vectors: torch.Tensor, labels: torch.Tensor) -> float:
    """ROC AUC of cosine similarity for "same label" over all pairs i < j (the paper's style ROC).

    vectors: (N, D), labels: (N,). AUC = P(sim(same pair) > sim(different pair)), ties ½.
    """
    if vectors.dim() != 2 or labels.shape != (vectors.shape[0],):
        raise ValueError(f"vectors must be (N, D) and labels (N,), got {tuple(vectors.shape)} and "
                         f"{tuple(labels.shape)}")
    v = F.normalize(vectors.double(), dim=1)
    sim = v @ v.t()
    iu = torch.triu_indices(len(v), len(v), 1)
    s = sim[iu[0], iu[1]]
    same = labels[iu[0]] == labels[iu[1]]
    pos, neg = s[same], s[~same]
    if pos.numel() == 0 or neg.numel() == 0:
        raise ValueError("labels must contain both same-label and different-label pairs")
    # Mann–Whitney U through ranks (average ranks for ties).
    allv = torch.cat([pos, neg])
    order = allv.argsort()
    ranks = torch.empty_like(allv)
    ranks[order] = torch.arange(1, len(allv) + 1, dtype=allv.dtype)
    uniq, inv, counts = torch.unique(allv, return_inverse=True, return_counts=True)
    if len(uniq) < len(allv):
        sums = torch.zeros(len(uniq), dtype=allv.dtype).index_add_(0, inv, ranks)
        ranks = (sums / counts)[inv]
    u = ranks[:pos.numel()].sum() - pos.numel() * (pos.numel() + 1) / 2
    return float(u / (pos.numel() * neg.numel()))
