"""Non-maximum suppression (contract 1 in DESIGN.md).

``nms`` and ``batched_nms`` follow torchvision's semantics: a box is suppressed when its IoU
with a kept, higher-scoring box is strictly greater than ``iou_threshold``; areas have no +1;
the result holds int64 indices ordered by decreasing score, lower index first on ties.
``batched_nms`` suppresses each group exactly and independently (no coordinate offsets).
"""
from typing import Optional

import numpy as np
import torch

from .._ext import require_ext
from ._registry import when_built
from ._validate import check_finite, check_float, check_range, check_same_device, check_same_dtype, check_tensor

__all__ = ["nms", "batched_nms"]


def _check_finite(name, t):
    # On CPU one single-threaded numpy pass: torch.isfinite(t).all() opens an OpenMP region
    # above 32k elements, and on the shared 2-core machine (load ~25) its barrier took 148 ms
    # wall (39 ms CPU) for 20k boxes, against ~10 ms CPU for the whole NMS.
    if t.device.type == "cpu":
        if t.numel() and not np.isfinite(t.detach().numpy()).all():
            raise ValueError(f"{name} must contain only finite values (found NaN or inf)")
    else:
        check_finite(name, t)


def _check_boxes_scores(boxes, scores):
    check_tensor("boxes", boxes, ndim=2)
    if boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape [N, 4] (x1, y1, x2, y2), got {tuple(boxes.shape)}")
    check_tensor("scores", scores, ndim=1)
    if scores.shape[0] != boxes.shape[0]:
        raise ValueError(f"scores must have shape [N] with N = boxes.shape[0] = {boxes.shape[0]}, "
                         f"got {tuple(scores.shape)}")
    check_same_device(boxes=boxes, scores=scores)
    check_float("boxes", boxes)
    check_same_dtype(boxes=boxes, scores=scores)
    if not torch.compiler.is_compiling():
        _check_finite("boxes", boxes)
        _check_finite("scores", scores)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS.

    Args:
        boxes: (N, 4) boxes as (x1, y1, x2, y2).
        scores: (N,) scores, same dtype and device as ``boxes``.
        iou_threshold: in [0, 1]; a box is dropped when IoU > threshold.

    Returns:
        (K,) int64 indices of the kept boxes, by decreasing score.

    Example:
        >>> import torch, fastpapers.ops as ops
        >>> b = torch.tensor([[0., 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]])
        >>> ops.nms(b, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist()
        [0, 2]
    """
    _check_boxes_scores(boxes, scores)
    check_range("iou_threshold", iou_threshold, 0.0, 1.0)
    require_ext("nms")
    return torch.ops.fastpapers.nms(boxes, scores, float(iou_threshold))


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float, *,
                score_threshold: Optional[float] = None, max_per_group: Optional[int] = None) -> torch.Tensor:
    """NMS run independently within each group ``idxs`` (class, image, or both).

    Args:
        boxes: (N, 4) xyxy. scores: (N,). idxs: (N,) integer group ids.
        iou_threshold: in [0, 1].
        score_threshold: drop boxes whose score is not greater than this before suppression.
        max_per_group: keep at most this many boxes per group (the highest scoring).

    Returns:
        (K,) int64 indices ordered by decreasing score.
    """
    _check_boxes_scores(boxes, scores)
    check_tensor("idxs", idxs, ndim=1)
    if idxs.shape[0] != boxes.shape[0]:
        raise ValueError(f"idxs must have shape [N] with N = boxes.shape[0] = {boxes.shape[0]}, "
                         f"got {tuple(idxs.shape)}")
    if idxs.dtype.is_floating_point or idxs.dtype.is_complex or idxs.dtype == torch.bool:
        raise TypeError(f"idxs must have an integer dtype, got {str(idxs.dtype).replace('torch.', '')}")
    check_same_device(boxes=boxes, idxs=idxs)
    check_range("iou_threshold", iou_threshold, 0.0, 1.0)
    if score_threshold is not None and (not isinstance(score_threshold, (int, float))
                                        or isinstance(score_threshold, bool)):
        raise TypeError(f"score_threshold must be a float or None, got {type(score_threshold).__name__}")
    if max_per_group is not None:
        if not isinstance(max_per_group, int) or isinstance(max_per_group, bool):
            raise TypeError(f"max_per_group must be an int or None, got {type(max_per_group).__name__}")
        if max_per_group < 1:
            raise ValueError(f"max_per_group must be >= 1, got {max_per_group}")
    require_ext("batched_nms")
    return torch.ops.fastpapers.batched_nms(
        boxes, scores, idxs, float(iou_threshold),
        None if score_threshold is None else float(score_threshold), max_per_group)


def _register_fakes():
    # Data-dependent output length: the fake kernel declares an unbacked size.
    def _fake(boxes, scores, *args, **kwargs):
        ctx = torch.library.get_ctx()
        k = ctx.new_dynamic_size()
        return boxes.new_empty((k,), dtype=torch.long)

    for name in ("nms", "batched_nms"):
        torch.library.register_fake(f"fastpapers::{name}")(_fake)


when_built(_register_fakes)
