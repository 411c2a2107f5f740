"""Peer compositions the benchmarks time, written the way a user of the peer library would.

``grid_sample_rois`` is the F.affine_grid + F.grid_sample composition that
``fastpapers.ops.roi_bilinear`` is specified by (fastpapers.reference.roi.roi_bilinear is
the oracle), except how the map reaches grid_sample: grid_sample pairs each grid with one
batch entry, so the oracle gathers a (K, C, H, W) copy of the map, one per roi
(``features[rois[:, 0]]``). For one image a user passes ``features.expand(K, ...)``, a view
(the same values, no copy); on the CPU at 256 rois, C=512, 38x50 that is 16 ms instead of
965 ms per forward (the copy is 1 GB). Several images keep the gather.

>>> import torch
>>> from fastpapers.reference import roi as ref
>>> f, r = torch.randn(1, 3, 8, 8), torch.tensor([[0.0, 1, 1, 6, 5], [0, 0, 2, 7, 7]])
>>> torch.equal(grid_sample_rois(f, r, 2, 1.0), ref.roi_bilinear(f, r, 2, 1.0))
True
"""
import torch
import torch.nn.functional as F

from fastpapers.ops.boxes import box_to_affine


def grid_sample_rois(features: torch.Tensor, rois: torch.Tensor, output_size, spatial_scale: float = 1.0):
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
    n, c, h, w = features.shape
    k = rois.shape[0]
    theta = box_to_affine(rois[:, 1:] * spatial_scale, h, w)
    grid = F.affine_grid(theta, [k, c, oh, ow], align_corners=False)
    x = features.expand(k, c, h, w) if n == 1 else features[rois[:, 0].long()]
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
