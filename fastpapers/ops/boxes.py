"""Box helpers for the ROI sampler and DenseCap's localisation layer (pure PyTorch, any
device, differentiable).

Formats: ``xyxy`` = (x1, y1, x2, y2); ``xcycwh`` = (centre x, centre y, width, height).
The box transform is Faster R-CNN's (and DenseCap's ``ApplyBoxTransform`` /
``InvertBoxTransform``), in ``xcycwh``: x = xa + tx * wa, y = ya + ty * ha,
w = wa * exp(tw), h = ha * exp(th).
"""
import math
from typing import Optional, Sequence

import torch

from ._validate import OpTypeError, OpValueError, check_tensor

__all__ = ["xcycwh_to_xyxy", "xyxy_to_xcycwh", "box_to_affine", "apply_box_transform",
           "invert_box_transform"]

# torchvision's default clamp on tw/th before exp (BoxCoder's bbox_xform_clip).
DEFAULT_XFORM_CLIP = math.log(1000.0 / 16)


def _check_boxes(name, boxes):
    check_tensor(name, boxes, last_dim=4)
    if not boxes.dtype.is_floating_point:
        raise OpTypeError(f"{name} must have a floating dtype, got {str(boxes.dtype).replace('torch.', '')}")


def xcycwh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) centre/size boxes -> corner boxes."""
    _check_boxes("boxes", boxes)
    xc, yc, w, h = boxes.unbind(-1)
    return torch.stack([xc - 0.5 * w, yc - 0.5 * h, xc + 0.5 * w, yc + 0.5 * h], -1)


def xyxy_to_xcycwh(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) corner boxes -> centre/size boxes."""
    _check_boxes("boxes", boxes)
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([0.5 * (x1 + x2), 0.5 * (y1 + y2), x2 - x1, y2 - y1], -1)


def box_to_affine(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(K, 4) xyxy boxes in map coordinates -> (K, 2, 3) theta for ``F.affine_grid``
    (align_corners=False) such that ``F.grid_sample`` samples the box as ``roi_bilinear`` does:
    theta = [[(x2 - x1)/W, 0, (x1 + x2)/W - 1], [0, (y2 - y1)/H, (y1 + y2)/H - 1]].
    """
    _check_boxes("boxes", boxes)
    for name, v in (("height", height), ("width", width)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise OpTypeError(f"{name} must be a positive int, got {type(v).__name__} {v!r}")
        if v <= 0:
            raise OpValueError(f"{name} must be a positive int, got {v!r}")
    x1, y1, x2, y2 = boxes.unbind(-1)
    zero = torch.zeros_like(x1)
    row0 = torch.stack([(x2 - x1) / width, zero, (x1 + x2) / width - 1], -1)
    row1 = torch.stack([zero, (y2 - y1) / height, (y1 + y2) / height - 1], -1)
    return torch.stack([row0, row1], -2)


def _weights(weights: Sequence[float], like: torch.Tensor):
    if len(weights) != 4:
        raise OpValueError(f"weights must hold 4 numbers (wx, wy, ww, wh), got {len(weights)}")
    return [float(w) for w in weights]


def apply_box_transform(anchors: torch.Tensor, deltas: torch.Tensor, *, weights=(1.0, 1.0, 1.0, 1.0),
                        clamp: Optional[float] = None) -> torch.Tensor:
    """Faster R-CNN box transform: anchors (..., 4) xcycwh and deltas (..., 4) (tx, ty, tw, th)
    -> boxes (..., 4) xcycwh. ``weights`` divide the deltas (torchvision uses (10, 10, 5, 5)
    for the detection head); ``clamp`` bounds tw, th before exp (torchvision:
    ``DEFAULT_XFORM_CLIP``; DenseCap: none)."""
    _check_boxes("anchors", anchors)
    _check_boxes("deltas", deltas)
    wx, wy, ww, wh = _weights(weights, deltas)
    xa, ya, wa, ha = anchors.unbind(-1)
    tx, ty, tw, th = deltas.unbind(-1)
    tw, th = tw / ww, th / wh
    if clamp is not None:
        tw, th = tw.clamp(max=clamp), th.clamp(max=clamp)
    return torch.stack([xa + tx / wx * wa, ya + ty / wy * ha, wa * torch.exp(tw), ha * torch.exp(th)], -1)


def invert_box_transform(anchors: torch.Tensor, boxes: torch.Tensor, *, weights=(1.0, 1.0, 1.0, 1.0)) -> torch.Tensor:
    """Inverse of :func:`apply_box_transform`: the deltas that take ``anchors`` to ``boxes``
    (both (..., 4) xcycwh with positive sizes)."""
    _check_boxes("anchors", anchors)
    _check_boxes("boxes", boxes)
    wx, wy, ww, wh = _weights(weights, boxes)
    xa, ya, wa, ha = anchors.unbind(-1)
    x, y, w, h = boxes.unbind(-1)
    return torch.stack([wx * (x - xa) / wa, wy * (y - ya) / ha, ww * torch.log(w / wa), wh * torch.log(h / ha)], -1)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(A, 4) x (B, 4) xyxy -> (A, B) IoU, 0 where the union is empty (degenerate boxes)."""
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))
