"""ROI sampling (contract 2 in DESIGN.md): ``roi_bilinear``, ``roi_align`` and ``RoIAlign``.

``roi_bilinear`` is DenseCap's sampler: one bilinear sample per output cell at
x = x1 + (q + 0.5)(x2 - x1)/ow, y = y1 + (p + 0.5)(y2 - y1)/oh (pixel (i, j) covers
[j, j+1) x [i, i+1) after scaling by ``spatial_scale``), zero outside the map. It equals
``F.grid_sample(align_corners=False, padding_mode='zeros')`` on ``F.affine_grid`` of
:func:`fastpapers.ops.boxes.box_to_affine`, and it is differentiable with respect to the
features and the box coordinates. Its rois are ``[K, 5]`` rows (batch index, x1, y1, x2, y2)
with whole-number batch indices.

``roi_align`` / ``RoIAlign`` are drop-ins for ``torchvision.ops.roi_align`` / ``RoIAlign``:
the same parameter names, ``boxes`` as a ``[K, 5]`` tensor or a list of ``[L_i, 4]`` tensors
(one per image), TorchScript-able, ``torch.fx.wrap``-ped, float16/bfloat16 on the CPU too
(computed in float32, returned in the input dtype), with autocast rules on CPU and CUDA
(float32 inside). Two documented differences: with ``sampling_ratio <= 0`` the adaptive grid
is ``min(ceil(roi size / output size), MAX_ADAPTIVE_GRID)`` samples per bin and axis
(torchvision's is unbounded: a box 1e12 wide takes it hours), and NaN or infinite boxes are
an error (torchvision returns garbage). A fractional batch index b selects image trunc(b), as
torchvision's int conversion does.

Checks. Shapes, dtypes and devices are always checked. Value checks (finite boxes, batch
indices in range) run on the CPU always — in the wrapper here and again in the C++ kernel, so
torch.compile'd graphs, TorchScript and direct ``torch.ops`` calls check the same values
(the kernel raises ``ValueError``) — and on CUDA only in checked mode
(:func:`fastpapers.ops.set_checks`), because they need a device->host copy. Without them the
CUDA kernels never read out of bounds: a ROI whose batch index is out of range or NaN gives a
zero output and no gradient, NaN/inf coordinates sample zeros.

The output is ``[K, C, oh, ow]``, contiguous. On the CPU the backward is deterministic; on
CUDA it is deterministic when ``torch.use_deterministic_algorithms(True)`` is set, and the
input gradient comes back channels-last (the layout the kernels accumulate in).
"""
import os
from typing import Dict, List, Tuple, Union

import torch
from torch import Tensor, nn
from torch.jit.annotations import BroadcastingList2

from .._ext import require_ext
from ._registry import when_built
from ._validate import (OpTypeError, OpValueError, check_float, check_same_device, check_same_dtype,
                        check_size_pair, check_tensor, value_checks)

__all__ = ["roi_bilinear", "roi_align", "RoIAlign", "MAX_ADAPTIVE_GRID", "RoisShapeError"]

# Cap of roi_align's adaptive sampling grid (per bin and axis); csrc/ops/cpu/roi_common.h
# and csrc/ops/cuda/roi_kernel.cu use the same constant.
MAX_ADAPTIVE_GRID = 1024


class RoisShapeError(OpValueError, AssertionError):
    """``boxes``/``rois`` of the wrong shape. Also an AssertionError: torchvision asserts on it."""


def _check_features(name: str, x, cpu_half: bool = False):
    check_tensor(name, x, ndim=4)
    check_float(name, x, cpu_half=cpu_half)


def _check_scale(spatial_scale) -> float:
    if not isinstance(spatial_scale, (int, float)) or isinstance(spatial_scale, bool):
        raise OpTypeError(f"spatial_scale must be a float, got {type(spatial_scale).__name__}")
    if not (spatial_scale > 0 and spatial_scale != float("inf")):
        raise OpValueError(f"spatial_scale must be a positive finite number, got {spatial_scale}")
    return float(spatial_scale)


_MEMORY: Dict[str, int] = {}


def _device_memory(device: torch.device) -> int:
    key = str(device)
    if key not in _MEMORY:
        if device.type == "cuda":
            _MEMORY[key] = torch.cuda.get_device_properties(device).total_memory
        elif device.type == "cpu":
            _MEMORY[key] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        else:
            _MEMORY[key] = 1 << 62
    return _MEMORY[key]


def _check_output_size(oh: int, ow: int, rois: Tensor, x: Tensor):
    """A named error for an output that cannot fit the device (not the allocator's message)."""
    if torch.compiler.is_compiling():
        return
    k, c = rois.shape[0], x.shape[1]
    nbytes = k * c * oh * ow * x.element_size()
    if nbytes > _device_memory(x.device):
        raise OpValueError(f"output_size ({oh}, {ow}) with {k} rois and {c} channels needs a {nbytes / 2**30:.1f} "
                           f"GiB output, more than the {x.device} memory ({_device_memory(x.device) / 2**30:.1f} GiB)")


def _check_rois(rois, x: Tensor, input_name: str, name: str, *, truncate: bool, mixed_dtypes: bool = False):
    check_tensor(name, rois, ndim=2)
    if rois.shape[1] != 5:
        raise RoisShapeError(f"{name} must have shape [K, 5] (batch index, x1, y1, x2, y2), got {tuple(rois.shape)}")
    check_same_device(**{input_name: x, name: rois})
    if mixed_dtypes:  # autocast casts both to float32
        check_float(name, rois, cpu_half=True)
    else:
        check_same_dtype(**{input_name: x, name: rois})
    if rois.shape[0] == 0 or not value_checks(rois):
        return
    if not bool(torch.isfinite(rois).all()):
        k, j = (~torch.isfinite(rois)).nonzero()[0].tolist()
        raise OpValueError(f"{name} must contain only finite values, got {name}[{k}, {j}] = {float(rois[k, j])}")
    b = rois[:, 0]
    n = x.shape[0]
    if truncate:  # image trunc(b), torchvision's int conversion
        bad = ~((b > -1) & (b < n))
        what = f"batch indices in [0, {n}) after truncation toward zero"
    else:
        bad = (b < 0) | (b >= n) | (b != b.floor())
        what = f"integer batch indices in [0, {n})"
    if bool(bad.any()):
        k = int(bad.nonzero()[0, 0])
        raise OpValueError(f"{name}[:, 0] must hold {what} for {input_name} with batch size {n}, "
                           f"got {name}[{k}, 0] = {float(b[k])}")


def _boxes_to_rois(boxes: List[Tensor], name: str = "boxes") -> Tensor:
    """A list of [L_i, 4] boxes (one tensor per image) -> [sum L_i, 5] rois."""
    if len(boxes) == 0:
        raise OpValueError(f"{name} as a list must hold one [L, 4] tensor per image, got an empty list")
    for i, b in enumerate(boxes):
        check_tensor(f"{name}[{i}]", b, ndim=2)
        if b.shape[1] != 4:
            raise RoisShapeError(f"{name}[{i}] must have shape [L, 4] (x1, y1, x2, y2), got {tuple(b.shape)}")
        if b.dtype != boxes[0].dtype or b.device != boxes[0].device:
            raise OpTypeError(f"{name}[{i}] must have the dtype and device of {name}[0] "
                              f"({boxes[0].dtype}, {boxes[0].device}), got {b.dtype}, {b.device}")
    return _cat_boxes(boxes)


def _cat_boxes(boxes: List[Tensor]) -> Tensor:
    parts = [torch.cat([torch.full_like(b[:, :1], i), b], 1) for i, b in enumerate(boxes)]
    return torch.cat(parts, 0)


def roi_bilinear(features: torch.Tensor, rois: torch.Tensor, output_size: Union[int, Tuple[int, int]],
                 spatial_scale: float = 1.0) -> torch.Tensor:
    """Bilinear ROI sampling (DenseCap), differentiable w.r.t. features and rois.

    Args:
        features: (N, C, H, W) float tensor (half precision on CUDA only).
        rois: (K, 5) rows (batch index, x1, y1, x2, y2) in image coordinates, same dtype and
            device as ``features``; boxes may extend past the map (zero there) and may have
            zero width or height. Batch indices are whole numbers in [0, N).
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
    _check_rois(rois, features, "features", "rois", truncate=False)
    oh, ow = check_size_pair("output_size", output_size)
    scale = _check_scale(spatial_scale)
    _check_output_size(oh, ow, rois, features)
    require_ext("roi_bilinear")
    return torch.ops.fastpapers.roi_bilinear(features, rois, scale, oh, ow)


@torch.fx.wrap
def roi_align(input: Tensor, boxes: Union[Tensor, List[Tensor]], output_size: BroadcastingList2[int],
              spatial_scale: float = 1.0, sampling_ratio: int = -1, aligned: bool = False) -> Tensor:
    """RoIAlign, a drop-in for ``torchvision.ops.roi_align``; differentiable w.r.t. ``input``.

    Args:
        input: (N, C, H, W) float tensor (float16/bfloat16 computed in float32).
        boxes: (K, 5) rows (batch index, x1, y1, x2, y2), or a list of N tensors (L_i, 4);
            same dtype and device as ``input``. A fractional batch index b selects image
            trunc(b); NaN or infinite coordinates are an error.
        output_size: oh or (oh, ow).
        spatial_scale: map coordinates = image coordinates * spatial_scale.
        sampling_ratio: samples per bin along each axis; <= 0 means
            min(ceil(roi size / output size), MAX_ADAPTIVE_GRID) for each ROI.
        aligned: shift boxes by -0.5 pixel (pixel-centre alignment) and do not clamp their size
            to at least 1.

    Returns:
        (K, C, oh, ow) in the input's dtype.

    Example:
        >>> import torch, fastpapers.ops as ops
        >>> x = torch.arange(16.).reshape(1, 1, 4, 4)
        >>> ops.roi_align(x, torch.tensor([[0., 0, 0, 4, 4]]), 1, sampling_ratio=2, aligned=True)
        tensor([[[[7.5000]]]])
    """
    if not torch.jit.is_scripting():
        return _roi_align_checked(input, boxes, output_size, spatial_scale, sampling_ratio, aligned)
    # TorchScript: no Python checks; the kernels check shapes, and the CPU kernel values.
    rois = boxes if isinstance(boxes, torch.Tensor) else _cat_boxes(boxes)
    return torch.ops.fastpapers.roi_align(input, rois, spatial_scale, output_size[0], output_size[1],
                                          sampling_ratio, aligned)


def _is_proxy(*args) -> bool:
    for a in args:
        if isinstance(a, torch.fx.Proxy) or (isinstance(a, (list, tuple)) and any(
                isinstance(b, torch.fx.Proxy) for b in a)):
            return True
    return False


@torch.jit.unused
def _roi_align_checked(input: Tensor, boxes: Union[Tensor, List[Tensor]], output_size: BroadcastingList2[int],
                       spatial_scale: float, sampling_ratio: int, aligned: bool) -> Tensor:
    if _is_proxy(input, boxes):
        # Symbolic tracing (torch.fx) of code that calls roi_align through another module's
        # name: record the op, check nothing (a Proxy has no shape or values).
        rois = boxes if not isinstance(boxes, (list, tuple)) else _cat_boxes(list(boxes))
        oh, ow = check_size_pair("output_size", output_size)
        return torch.ops.fastpapers.roi_align(input, rois, float(spatial_scale), oh, ow, sampling_ratio, aligned)
    _check_features("input", input, cpu_half=True)
    rois = _boxes_to_rois(list(boxes)) if isinstance(boxes, (list, tuple)) else boxes
    mixed = isinstance(rois, torch.Tensor) and input.device.type in ("cpu", "cuda") and \
        torch.is_autocast_enabled(input.device.type)
    _check_rois(rois, input, "input", "boxes", truncate=True, mixed_dtypes=mixed)
    oh, ow = check_size_pair("output_size", output_size)
    scale = _check_scale(spatial_scale)
    if not isinstance(sampling_ratio, int) or isinstance(sampling_ratio, bool):
        raise OpTypeError(f"sampling_ratio must be an int, got {type(sampling_ratio).__name__}")
    if not isinstance(aligned, bool):
        raise OpTypeError(f"aligned must be a bool, got {type(aligned).__name__}")
    _check_output_size(oh, ow, rois, input)
    require_ext("roi_align")
    return torch.ops.fastpapers.roi_align(input, rois, scale, oh, ow, sampling_ratio, aligned)


class RoIAlign(nn.Module):
    """Module form of :func:`roi_align`, a drop-in for ``torchvision.ops.RoIAlign``.

    Example:
        >>> import torch, fastpapers.ops as ops
        >>> pool = ops.RoIAlign((2, 2), spatial_scale=1.0, sampling_ratio=2)
        >>> pool(torch.ones(1, 3, 8, 8), [torch.tensor([[0., 0, 4, 4]])]).shape
        torch.Size([1, 3, 2, 2])
    """

    def __init__(self, output_size: BroadcastingList2[int], spatial_scale: float, sampling_ratio: int,
                 aligned: bool = False):
        super().__init__()
        check_size_pair("output_size", output_size)
        _check_scale(spatial_scale)
        if not isinstance(sampling_ratio, int) or isinstance(sampling_ratio, bool):
            raise OpTypeError(f"sampling_ratio must be an int, got {type(sampling_ratio).__name__}")
        if not isinstance(aligned, bool):
            raise OpTypeError(f"aligned must be a bool, got {type(aligned).__name__}")
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, input: Tensor, rois: Union[Tensor, List[Tensor]]) -> Tensor:
        return roi_align(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned})")


def _grad_input_like(grad: Tensor, shape) -> Tensor:
    # The CUDA kernels return the input gradient channels-last (roi_kernel.cu), the CPU ones
    # contiguous.
    fmt = torch.channels_last if grad.device.type == "cuda" else torch.contiguous_format
    return torch.empty(shape, dtype=grad.dtype, device=grad.device, memory_format=fmt)


def _register():
    lib = "fastpapers::"

    @torch.library.register_fake(lib + "roi_bilinear")
    def _(input, rois, spatial_scale, pooled_height, pooled_width):
        return input.new_empty((rois.shape[0], input.shape[1], pooled_height, pooled_width))

    @torch.library.register_fake(lib + "roi_bilinear_backward_input")
    def _(grad, rois, spatial_scale, batch_size, channels, height, width):
        return _grad_input_like(grad, (batch_size, channels, height, width))

    @torch.library.register_fake(lib + "roi_bilinear_backward_rois")
    def _(grad, input, rois, spatial_scale):
        return rois.new_empty((rois.shape[0], 5))

    @torch.library.register_fake(lib + "roi_align")
    def _(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
        return input.new_empty((rois.shape[0], input.shape[1], pooled_height, pooled_width))

    @torch.library.register_fake(lib + "roi_align_backward")
    def _(grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width,
          sampling_ratio, aligned):
        return _grad_input_like(grad, (batch_size, channels, height, width))

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
