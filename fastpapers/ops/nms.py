"""Non-maximum suppression (contract 1 in DESIGN.md).

``nms`` and ``batched_nms`` follow torchvision's semantics: a box is suppressed when its IoU
with a kept, higher-scoring box is strictly greater than ``iou_threshold``; areas have no +1;
the result holds int64 indices ordered by decreasing score, lower index first on ties.
``batched_nms`` suppresses each group exactly and independently (no coordinate offsets).

Drop-in for ``torchvision.ops.nms`` / ``batched_nms``: the same parameter names and the same
accepted inputs with the same results, namely

* any ``iou_threshold`` (a float; NaN is rejected): >= 1 keeps every box (an IoU never exceeds
  1), a negative one suppresses every box whose IoU with a kept box is not NaN, disjoint boxes
  included (IoU 0 > threshold);
* ±inf scores (masking): they sort like any other value; ±inf box coordinates give the same
  IoUs as in torchvision (often NaN: such a box then suppresses nothing); NaN boxes and scores
  are rejected;
* integer, float or bool group ids: boxes are in one group when their ids are equal
  (-0.0 == 0.0; NaN ids are rejected; complex ids are a type error). This is torchvision's
  per-group path; its coordinate-offset path (below 4,000 boxes on the CPU) lets groups whose
  float ids differ by less than 1 suppress each other, which we do not reproduce;
* float16 / bfloat16 on the CPU too (computed in float32 inside), and autocast on the CPU and
  CUDA (boxes and scores cast to float32, as torchvision does);
* quantized boxes and scores (computed on their dequantized values);
* ``batched_nms`` on a 1-D empty ``boxes`` returns an empty int64 tensor whatever the other
  arguments (torchvision's shortcut for "no detections").

Errors are :class:`OpValueError` / :class:`OpTypeError` (ValueError / TypeError and
RuntimeError, what torchvision callers catch), each naming the argument.

Checks. Shape, dtype and device checks read only metadata: they run in eager mode and while
``torch.compile`` traces (the same errors). Value checks (NaN boxes, scores or ids) need
the values on the host: they run on the CPU in eager mode, on CUDA only in checked mode
(:func:`fastpapers.ops.set_checks`), never while ``torch.compile`` traces. Without them the CUDA
kernels still never read or write out of bounds: a box with a NaN coordinate suppresses
nothing and is suppressed by nothing, NaN scores rank where ``torch.sort`` puts them, NaN ids
form groups of one box each.

Host synchronisation on CUDA: ``nms`` and ``batched_nms`` copy one number to the host, the
output length (inherent in a variable-length result); ``batched_nms`` above
``BATCHED_NO_SYNC_MAX`` boxes copies the mask size too. :func:`nms_padded` copies nothing: it
returns a fixed-size keep tensor and the count on the device (CUDA graphs, static shapes).

TorchScript: the public functions script (``torch.jit.script(nms)``); the eager-only checks are
skipped there and the op's own C++ checks apply. torch.fx: the functions are leaves
(``torch.fx.wrap``), also when reached through ``fastpapers.ops``.
"""
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .._ext import require_ext
from ._registry import when_built
from ._validate import (OpTypeError, OpValueError, check_float, check_number, check_same_device,
                        check_same_dtype, check_tensor, checks_enabled, value_checks)

__all__ = ["nms", "batched_nms", "nms_padded", "BATCHED_NO_SYNC_MAX"]

# batched_nms on CUDA reserves the mask for the worst case (one group: N * ceil(N / 64) words,
# N^2 / 8 bytes) when that is at most 64 MiB, and so needs no host copy of the group sizes;
# above it reads the exact size from the device (one more synchronisation) instead of
# reserving gigabytes. torchvision's batched_nms reserves the same N^2 / 8 bytes up to 20k boxes.
BATCHED_NO_SYNC_MAX = 23170


# ---------------------------------------------------------------------------------------
# Eager-only checks (skipped under TorchScript, where the C++ checks of the op apply).

def _value_checks(t: Tensor) -> bool:
    # The CUDA default (checks off) answered first: value_checks() asks torch.compile whether
    # it is tracing, ~6 us of host time per call that the unchecked CUDA path does not need.
    if t.device.type == "cuda" and not checks_enabled():
        return False
    return value_checks(t)


def _check_no_nan(name: str, t: Tensor, checks: bool):
    """NaN is the one undefined input (±inf is accepted, as torchvision does)."""
    if not checks or t.numel() == 0:
        return
    if t.device.type == "cpu":
        # One single-threaded numpy pass: torch.isnan(t).any() opens an OpenMP region above
        # 32k elements, and on the shared 2-core machine (load ~25) such a barrier took 148 ms
        # wall (39 ms CPU) for 20k boxes, against ~10 ms CPU for the whole NMS.
        a = t.detach()
        bad = np.isnan((a.float() if a.dtype in (torch.float16, torch.bfloat16) else a).numpy()).any()
    else:
        bad = bool(torch.isnan(t).any())  # CUDA: checked mode only (a synchronisation)
    if bad:
        raise OpValueError(f"{name} must not contain NaN")


def _check_boxes_scores(boxes, scores):
    check_tensor("boxes", boxes, ndim=2)
    if boxes.shape[1] != 4:
        raise OpValueError(f"boxes must have shape [N, 4] (x1, y1, x2, y2), got {tuple(boxes.shape)}")
    check_tensor("scores", scores, ndim=1)
    if scores.shape[0] != boxes.shape[0]:
        raise OpValueError(f"scores must have shape [N] with N = boxes.shape[0] = {boxes.shape[0]}, "
                           f"got {tuple(scores.shape)}")
    check_same_device(boxes=boxes, scores=scores)
    if boxes.device.type == "meta":
        raise OpValueError("boxes are meta tensors: the number of kept boxes depends on their values; "
                           "trace with FakeTensors (torch.compile) or use nms_padded, whose shapes are static")
    if not boxes.is_quantized:
        check_float("boxes", boxes, cpu_half=True)
        check_same_dtype(boxes=boxes, scores=scores)
        checks = _value_checks(boxes)
        _check_no_nan("boxes", boxes, checks)
        _check_no_nan("scores", scores, checks)


def _check_threshold(iou_threshold) -> None:
    v = check_number("iou_threshold", iou_threshold)
    if v != v:
        raise OpValueError("iou_threshold must be a number, got NaN")


@torch.jit.unused
def _check_nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> None:
    _check_boxes_scores(boxes, scores)
    _check_threshold(iou_threshold)
    require_ext("nms")


@torch.jit.unused
def _check_batched(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float,
                   score_threshold: Optional[float], max_per_group: Optional[int]) -> None:
    _check_boxes_scores(boxes, scores)
    check_tensor("idxs", idxs, ndim=1)
    if idxs.shape[0] != boxes.shape[0]:
        raise OpValueError(f"idxs must have shape [N] with N = boxes.shape[0] = {boxes.shape[0]}, "
                           f"got {tuple(idxs.shape)}")
    if idxs.dtype.is_complex:
        raise OpTypeError(f"idxs must have an integer, float or bool dtype (group ids), "
                          f"got {str(idxs.dtype).replace('torch.', '')}")
    check_same_device(boxes=boxes, idxs=idxs)
    if idxs.dtype.is_floating_point:
        _check_no_nan("idxs", idxs, _value_checks(idxs))
    _check_threshold(iou_threshold)
    if score_threshold is not None:
        if not isinstance(score_threshold, (int, float)) or isinstance(score_threshold, bool):
            raise OpTypeError(f"score_threshold must be a float or None, got {type(score_threshold).__name__}")
        if score_threshold != score_threshold:
            raise OpValueError("score_threshold must be a number or None, got NaN")
    if max_per_group is not None:
        if not isinstance(max_per_group, int) or isinstance(max_per_group, bool):
            raise OpTypeError(f"max_per_group must be an int or None, got {type(max_per_group).__name__}")
        if max_per_group < 0:
            raise OpValueError(f"max_per_group must be >= 0 or None (0 keeps nothing), got {max_per_group}")
    require_ext("batched_nms")


# ---------------------------------------------------------------------------------------
# torch.fx: torch.fx.wrap makes calls through this module's globals leaves; a call reached
# another way (fastpapers.ops.nms, a user's `from ... import`) sees Proxies and records the
# same leaf node itself, so the checks never see a Proxy.

@torch.jit.unused
def _fx_proxy(a: Tensor, b: Tensor, c: Optional[Tensor]) -> bool:
    proxy = torch.fx.Proxy
    return isinstance(a, proxy) or isinstance(b, proxy) or isinstance(c, proxy)


@torch.jit.unused
def _fx_leaf(name: str, args: Tuple[Tensor, Tensor, Optional[Tensor]], rest: Tuple[float, Optional[float],
                                                                                    Optional[int]]) -> Tensor:
    proxy = next(x for x in args if isinstance(x, torch.fx.Proxy))
    target = _LEAVES[name]
    if name == "batched_nms":
        call = (args[0], args[1], args[2], rest[0], rest[1], rest[2])
    else:
        call = (args[0], args[1], rest[0])
    out = proxy.tracer.create_proxy("call_function", target, call, {})
    out.node.meta["is_wrapped"] = True
    return out


def _dequantize(t: Tensor) -> Tensor:
    return t.dequantize() if t.is_quantized else t


def _group_keys(idxs: Tensor) -> Tensor:
    """int64 keys, equal exactly when the group ids are equal (no host synchronisation)."""
    if idxs.dtype == torch.bool:
        return idxs.to(torch.int64)
    if idxs.is_floating_point():
        # Float ids: the rank of each distinct value (float64 holds every float16, bfloat16
        # and float32 value exactly; -0.0 == 0.0 sort together; a NaN equals nothing, so each
        # NaN id is a group of its own). A sort rather than a view of the bits, which
        # TorchScript cannot express, and rather than torch.unique, which synchronises on CUDA.
        v, order = torch.sort(idxs.to(torch.float64))
        starts = torch.ones(v.shape, dtype=torch.int64, device=v.device)
        if v.numel() > 1:
            starts[1:] = (v[1:] != v[:-1]).to(torch.int64)
        return torch.empty_like(starts).scatter_(0, order, starts.cumsum(0))
    return idxs


# ---------------------------------------------------------------------------------------

@torch.fx.wrap
def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS.

    Args:
        boxes: (N, 4) boxes as (x1, y1, x2, y2).
        scores: (N,) scores, same dtype and device as ``boxes``.
        iou_threshold: a box is dropped when its IoU with a kept box is > threshold.

    Returns:
        (K,) int64 indices of the kept boxes, by decreasing score.

    Example:
        >>> import torch, fastpapers.ops as ops
        >>> b = torch.tensor([[0., 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]])
        >>> ops.nms(b, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist()
        [0, 2]
    """
    if not torch.jit.is_scripting():
        if _fx_proxy(boxes, scores, None):
            return _fx_leaf("nms", (boxes, scores, None), (iou_threshold, None, None))
        _check_nms(boxes, scores, iou_threshold)
    return torch.ops.fastpapers.nms(_dequantize(boxes), _dequantize(scores), float(iou_threshold))


@torch.fx.wrap
def nms_padded(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tuple[Tensor, Tensor]:
    """``nms`` with a fixed-size result and no device->host copy.

    Returns:
        keep: (N,) int64, the kept indices by decreasing score in ``keep[:count]``, -1 after.
        count: 0-d int64 on the boxes' device, the number of kept boxes.

    The shapes depend only on N, so it works inside CUDA graphs and under torch.compile
    without dynamic shapes.

    Example:
        >>> import torch, fastpapers.ops as ops
        >>> b = torch.tensor([[0., 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]])
        >>> keep, count = ops.nms_padded(b, torch.tensor([0.9, 0.8, 0.7]), 0.5)
        >>> keep.tolist(), int(count)
        ([0, 2, -1], 2)
    """
    if not torch.jit.is_scripting():
        if _fx_proxy(boxes, scores, None):
            return _fx_leaf("nms_padded", (boxes, scores, None), (iou_threshold, None, None))
        if isinstance(boxes, Tensor) and boxes.device.type == "meta":
            check_tensor("boxes", boxes, ndim=2)
            check_tensor("scores", scores, ndim=1)
        else:
            _check_nms(boxes, scores, iou_threshold)
    return torch.ops.fastpapers.nms_padded(_dequantize(boxes), _dequantize(scores), float(iou_threshold))


@torch.fx.wrap
def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float,
                score_threshold: Optional[float] = None, max_per_group: Optional[int] = None) -> Tensor:
    """NMS run independently within each group ``idxs`` (class, image, or both).

    Args:
        boxes: (N, 4) xyxy. scores: (N,). idxs: (N,) group ids (integer, float or bool; equal
            ids are one group).
        iou_threshold: a box is dropped when its IoU with a kept box of its group is > threshold.
        score_threshold: drop boxes whose score is not greater than this before suppression
            (compared in the scores' dtype, like ``scores > score_threshold``).
        max_per_group: keep at most this many boxes per group (the highest scoring); 0 keeps
            none.

    ``score_threshold`` and ``max_per_group`` are extras beyond torchvision's signature; pass
    them by keyword. (They are not keyword-only because TorchScript cannot compile
    keyword-only parameters with defaults.)

    Returns:
        (K,) int64 indices ordered by decreasing score.

    Example:
        >>> import torch, fastpapers.ops as ops
        >>> b = torch.tensor([[0., 0, 10, 10], [1, 1, 10, 10], [1, 1, 10, 10]])
        >>> ops.batched_nms(b, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 0, 1]), 0.5).tolist()
        [0, 2]
    """
    if not torch.jit.is_scripting():
        if _fx_proxy(boxes, scores, idxs):
            return _fx_leaf("batched_nms", (boxes, scores, idxs), (iou_threshold, score_threshold, max_per_group))
        if not (isinstance(boxes, Tensor) and boxes.dim() == 1 and boxes.numel() == 0):
            _check_batched(boxes, scores, idxs, iou_threshold, score_threshold, max_per_group)
    if boxes.dim() == 1 and boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    st: Optional[float] = None
    if score_threshold is not None:
        st = float(score_threshold)
    return torch.ops.fastpapers.batched_nms(_dequantize(boxes), _dequantize(scores), _group_keys(idxs),
                                            float(iou_threshold), st, max_per_group)


_LEAVES = {"nms": nms, "nms_padded": nms_padded, "batched_nms": batched_nms}


def _register_fakes():
    # Data-dependent output length: the fake kernel declares an unbacked size.
    def _fake(boxes, scores, *args, **kwargs):
        ctx = torch.library.get_ctx()
        k = ctx.new_dynamic_size()
        return boxes.new_empty((k,), dtype=torch.long)

    for name in ("nms", "batched_nms"):
        torch.library.register_fake(f"fastpapers::{name}")(_fake)

    @torch.library.register_fake("fastpapers::nms_padded")
    def _fake_padded(boxes, scores, iou_threshold):
        n = boxes.shape[0]
        return boxes.new_empty((n,), dtype=torch.long), boxes.new_empty((), dtype=torch.long)


when_built(_register_fakes)
