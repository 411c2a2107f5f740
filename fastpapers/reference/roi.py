"""Pure-PyTorch ROI sampling: the oracles of the compiled kernels and benchmark baselines."""
import math

import torch
import torch.nn.functional as F

from ..ops.boxes import box_to_affine
from ..ops.roi import MAX_ADAPTIVE_GRID


def roi_bilinear(features: torch.Tensor, rois: torch.Tensor, output_size, spatial_scale: float = 1.0):
    """DESIGN.md's oracle: F.affine_grid + F.grid_sample (align_corners=False, zeros padding),
    differentiable with respect to the features and the boxes through autograd."""
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
    n, c, h, w = features.shape
    k = rois.shape[0]
    theta = box_to_affine(rois[:, 1:] * spatial_scale, h, w)
    grid = F.affine_grid(theta, [k, c, oh, ow], align_corners=False)
    x = features[rois[:, 0].long()]
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _bilinear_tv(img: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """torchvision's bilinear rule for one sample of img (C, H, W)."""
    _, h, w = img.shape
    if not (-1.0 <= y <= h and -1.0 <= x <= w):
        return img.new_zeros(img.shape[0])
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= h - 1:
        y0 = y1 = h - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= w - 1:
        x0 = x1 = w - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    hy, hx = 1 - ly, 1 - lx
    return hy * hx * img[:, y0, x0] + hy * lx * img[:, y0, x1] + ly * hx * img[:, y1, x0] + ly * lx * img[:, y1, x1]


def roi_align(input: torch.Tensor, rois: torch.Tensor, output_size, spatial_scale: float = 1.0,
              sampling_ratio: int = -1, aligned: bool = False):
    """torchvision's RoIAlign transcribed sample by sample (slow; small inputs only).
    Coordinates are computed in Python floats (double). The adaptive grid is capped at
    ``MAX_ADAPTIVE_GRID`` samples per bin and axis, as in the compiled kernels."""
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
    k = rois.shape[0]
    out = input.new_zeros((k, input.shape[1], oh, ow))
    off = 0.5 if aligned else 0.0
    for r in range(k):
        b, x1, y1, x2, y2 = rois[r].tolist()
        img = input[int(b)]  # int() truncates toward zero, as torchvision
        sx, sy = x1 * spatial_scale - off, y1 * spatial_scale - off
        rw, rh = x2 * spatial_scale - off - sx, y2 * spatial_scale - off - sy
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / oh, rw / ow
        gh = sampling_ratio if sampling_ratio > 0 else min(max(math.ceil(rh / oh), 0), MAX_ADAPTIVE_GRID)
        gw = sampling_ratio if sampling_ratio > 0 else min(max(math.ceil(rw / ow), 0), MAX_ADAPTIVE_GRID)
        count = max(gh * gw, 1)
        for p in range(oh):
            for q in range(ow):
                acc = input.new_zeros(input.shape[1])
                for iy in range(gh):
                    y = sy + p * bh + (iy + 0.5) * bh / gh
                    for ix in range(gw):
                        acc = acc + _bilinear_tv(img, y, sx + q * bw + (ix + 0.5) * bw / gw)
                out[r, :, p, q] = acc / count
    return out
