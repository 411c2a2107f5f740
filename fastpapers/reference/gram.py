"""Pure-PyTorch Gram matrix and style loss: the oracle and benchmark baseline (torch.bmm +
F.mse_loss, as in pytorch/examples' fast_neural_style and jcjohnson's GramMatrix.lua)."""
import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F


def gram_scale(x: torch.Tensor, normalize: str) -> float:
    """1/n for the normalisation: 'chw' -> 1/(C*H*W), 'hw' -> 1/(H*W), 'none' -> 1."""
    if normalize == "none":
        return 1.0
    n = 1
    for s in x.shape[2:]:
        n *= s
    denom = x.shape[1] * n if normalize == "chw" else n
    # An empty map has an all-zero Gram whatever the scale.
    return 1.0 / denom if denom > 0 else 1.0


def gram_matrix(x: torch.Tensor, normalize: str = "chw") -> torch.Tensor:
    b, c = x.shape[:2]
    f = x.reshape(b, c, math.prod(x.shape[2:]))
    return torch.bmm(f, f.transpose(1, 2)) * gram_scale(x, normalize)


def style_loss(features: Sequence[torch.Tensor], targets: Sequence[torch.Tensor],
               weights: Optional[Sequence[float]] = None, reduction: str = "mean",
               normalize: str = "chw") -> torch.Tensor:
    weights = [1.0] * len(features) if weights is None else weights
    total = 0.0
    for f, a, w in zip(features, targets, weights):
        g = gram_matrix(f, normalize)
        total = total + w * F.mse_loss(g, a.expand_as(g), reduction=reduction)
    return total
