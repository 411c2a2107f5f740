"""Style distance of neural style transfer: how far an image's Gram matrices are from a style
image's, through the same feature network and fused style loss the optimisation uses."""
from typing import Sequence

import torch

from .. import ops

__all__ = ["gram_distance"]


def gram_distance(net, img: torch.Tensor, style: torch.Tensor, layers: Sequence[str]) -> float:
    """Style loss (sum over ``layers`` of the mean squared Gram difference) between two
    (3, H, W) RGB images in [0, 1], through the feature network ``net``
    (:class:`fastpapers.models.vgg.VGGFeatures`)."""
    with torch.no_grad():
        a = net(net.preprocess(img[None]), layers)
        b = net(net.preprocess(style[None]), layers)
        return float(ops.style_loss([a[n] for n in layers], [ops.gram_matrix(b[n])[0] for n in layers]))
