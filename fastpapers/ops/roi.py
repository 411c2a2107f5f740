"""ROI sampling (contract 2 in DESIGN.md): ``roi_bilinear`` and ``roi_align``.

``roi_bilinear`` is DenseCap's sampler: one bilinear sample per output cell at
x = x1 + (q + 0.5)(x2 - x1)/ow, y = y1 + (p + 0.5)(y2 - y1)/oh (pixel (i, j) covers
[j, j+1) x [i, i+1) after scaling by ``spatial_scale``), zero outside the map. It equals
``F.grid_sample(align_corners=False, padding_mode='zeros')`` on ``F.affine_grid`` of
:func:`fastpapers.ops.boxes.box_to_affine`, and it is differentiable with respect to the
features and the box coordinates.

``roi_align`` has torchvision's semantics (``aligned``, ``sampling_ratio``, adaptive sampling
when ``sampling_ratio <= 0``) and is differentiable with respect to the input.

Both take ``rois`` as ``[K, 5]`` rows ``(batch index, x1, y1, x2, y2)``; ``roi_align`` also
takes a list of ``[L_i, 4]`` boxes, one tensor per image. The output is ``[K, C, oh, ow]``,
contiguous. On the CPU the backward is deterministic; on CUDA it is deterministic when
``torch.use_deterministic_algorithms(True)`` is set.
"""
from typing import List, Sequence, Tuple, Union

import torch

from .._ext import require_ext
from ._registry import when_built
from ._validate import check_finite, check_float, check_same_device, check_same_dtype, check_size_pair, check_tensor

__all__ = ["roi_bilinear", "roi_align"]

Rois = Union[torch.Tensor, Sequence[torch.Tensor]]


def _check_features(name: str, x):
    check_tensor(name, x, ndim=4)
    check_float(name, x)


def _check_scale(spatial_scale) -> float:
    if not isinstance(spatial_scale, (int, float)) or isinstance(spatial_scale, bool):
        raise TypeError(f"spatial_scale must be a float, got {type(spatial_scale).__name__}")
    if not (spatial_scale > 0 and spatial_scale != float("inf")):
        raise ValueError(f"spatial_scale must be a positive finite number, got {spatial_scale}")
    return float(spatial_scale)


def _check_rois(rois, x: torch.Tensor, input_name: str):
    check_tensor("rois", rois, ndim=2)
    if rois.shape[1] != 5:
        raise ValueError(f"rois must have shape [K, 5] (batch index, x1, y1, x2, y2), got {tuple(rois.shape)}")
    check_same_device(**{input_name: x, "rois": rois})
    check_same_dtype(**{input_name: x, "rois": rois})
    if torch.compiler.is_compiling() or rois.shape[0] == 0:
        return
    check_finite("rois", rois)
    b = rois[:, 0]
    n = x.shape[0]
    bad = (b < 0) | (b >= n) | (b != b.floor())
    if bool(bad.any()):
        k = int(bad.nonzero()[0, 0])
        raise ValueError(f"rois[:, 0] must hold integer batch indices in [0, {n}) for {input_name} with "
                         f"batch size {n}, got rois[{k}, 0] = {float(b[k])}")


def _boxes_to_rois(boxes: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """A list of [L_i, 4] boxes (one tensor per image) -> [sum L_i, 5] rois."""
    if len(boxes) == 0:
        raise ValueError("rois as a list must hold one [L, 4] tensor per image, got an empty list")
    parts = []
    for i, b in enumerate(boxes):
        check_tensor(f"rois[{i}]", b, ndim=2)
        if b.shape[1] != 4:
            raise ValueError(f"rois[{i}] must have shape [L, 4] (x1, y1, x2, y2), got {tuple(b.shape)}")
        parts.append(torch.cat([torch.full_like(b[:, :1], i), b], 1))
    return torch.cat(parts, 0)


def roi_bilinear(features: torch.Tensor, rois: torch.Tensor, output_size: Union[int, Tuple[int, int]],
                 spatial_scale: float = 1.0) -> torch.Tensor:
    """Bilinear ROI sampling (DenseCap), differentiable w.r.t. features and rois.

    Args:
        features: (N, C, H, W) float tensor (half precision on CUDA only).
        rois: (K, 5) rows (batch index, x1, y1, x2, y2) in image coordinates, same dtype and
            device as ``features``; boxes may extend past the map (zero there) and may have
            zero width or height.
        output_size: oh or (oh, ow).
        spatial_scale: map coordinates = image coordinates * spatial_scale.

    Returns:
        (K, C, oh, ow) samples.

    Example:
        >>> import torch, fastpapers.ops as ops
        >>> x = torch.arange(16.).reshape(1, 1, 4, 4)
        >>> ops.roi_bilinear(x, torch.tensor([[0., 0, 0, 4, 4]]), 2)[0, 0]
        tensor([[ 2.5000,  4.5000],
                [10.5000, 12.5000]])
    """
    _check_features("features", features)
    _check_rois(rois, features, "features")
    oh, ow = check_size_pair("output_size", output_size)
    scale = _check_scale(spatial_scale)
    require_ext("roi_bilinear")
    return torch.ops.fastpapers.roi_bilinear(features, rois, scale, oh, ow)


def roi_align(input: torch.Tensor, rois: Rois, output_size: Union[int, Tuple[int, int]],
              spatial_scale: float = 1.0, sampling_ratio: int = -1, aligned: bool = False) -> torch.Tensor:
    """RoIAlign with torchvision's semantics, differentiable w.r.t. ``input``.

    Args:
        input: (N, C, H, W) float tensor (half precision on CUDA only).
        rois: (K, 5) rows (batch index, x1, y1, x2, y2), or a list of N tensors (L_i, 4).
        output_size: oh or (oh, ow).
        spatial_scale: map coordinates = image coordinates * spatial_scale.
        sampling_ratio: samples per bin along each axis; <= 0 means ceil(roi size / output size)
            for each ROI.
        aligned: shift boxes by -0.5 pixel (pixel-centre alignment) and do not clamp their size
            to at least 1.

    Returns:
        (K, C, oh, ow).
    """
    _check_features("input", input)
    if isinstance(rois, (list, tuple)):
        rois = _boxes_to_rois(rois, input)
    _check_rois(rois, input, "input")
    oh, ow = check_size_pair("output_size", output_size)
    scale = _check_scale(spatial_scale)
    if not isinstance(sampling_ratio, int) or isinstance(sampling_ratio, bool):
        raise TypeError(f"sampling_ratio must be an int, got {type(sampling_ratio).__name__}")
    if not isinstance(aligned, bool):
        raise TypeError(f"aligned must be a bool, got {type(aligned).__name__}")
    require_ext("roi_align")
    return torch.ops.fastpapers.roi_align(input, rois, scale, oh, ow, sampling_ratio, aligned)


def _register():
    lib = "fastpapers::"

    @torch.library.register_fake(lib + "roi_bilinear")
    def _(input, rois, spatial_scale, pooled_height, pooled_width):
        return input.new_empty((rois.shape[0], input.shape[1], pooled_height, pooled_width))

    @torch.library.register_fake(lib + "roi_bilinear_backward_input")
    def _(grad, rois, spatial_scale, batch_size, channels, height, width):
        return grad.new_empty((batch_size, channels, height, width))

    @torch.library.register_fake(lib + "roi_bilinear_backward_rois")
    def _(grad, input, rois, spatial_scale):
        return rois.new_empty((rois.shape[0], 5))

    @torch.library.register_fake(lib + "roi_align")
    def _(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
        return input.new_empty((rois.shape[0], input.shape[1], pooled_height, pooled_width))

    @torch.library.register_fake(lib + "roi_align_backward")
    def _(grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width,
          sampling_ratio, aligned):
        return grad.new_empty((batch_size, channels, height, width))

    def _bilinear_setup(ctx, inputs, output):
        input, rois, spatial_scale, _, _ = inputs
        ctx.spatial_scale = spatial_scale
        ctx.input_shape = input.shape
        ctx.save_for_backward(input, rois)

    def _bilinear_backward(ctx, grad):
        input, rois = ctx.saved_tensors
        n, c, h, w = ctx.input_shape
        grad_input = grad_rois = None
        if ctx.needs_input_grad[0]:
            grad_input = torch.ops.fastpapers.roi_bilinear_backward_input(grad, rois, ctx.spatial_scale, n, c, h, w)
        if ctx.needs_input_grad[1]:
            grad_rois = torch.ops.fastpapers.roi_bilinear_backward_rois(grad, input, rois, ctx.spatial_scale)
        return grad_input, grad_rois, None, None, None

    torch.library.register_autograd(lib + "roi_bilinear", _bilinear_backward, setup_context=_bilinear_setup)

    def _align_setup(ctx, inputs, output):
        input, rois, spatial_scale, oh, ow, sampling_ratio, aligned = inputs
        ctx.args = (spatial_scale, oh, ow)
        ctx.tail = (sampling_ratio, aligned)
        ctx.input_shape = input.shape
        ctx.save_for_backward(rois)

    def _align_backward(ctx, grad):
        (rois,) = ctx.saved_tensors
        grad_input = None
        if ctx.needs_input_grad[0]:
            grad_input = torch.ops.fastpapers.roi_align_backward(grad, rois, *ctx.args, *ctx.input_shape, *ctx.tail)
        return grad_input, None, None, None, None, None, None

    torch.library.register_autograd(lib + "roi_align", _align_backward, setup_context=_align_setup)


when_built(_register)
