"""Image pyramids with OpenCV's float semantics (contract 4 in DESIGN.md).

``pyr_down`` is cv2.pyrDown: 5-tap binomial [1, 4, 6, 4, 1]/16 per axis, reflect-101 border,
the even pixels kept, so an H x W image becomes ceil(H/2) x ceil(W/2). ``pyr_up`` is cv2.pyrUp:
2H x 2W by default, or an explicit size one less or one more than 2x on an odd side. The
pyramids are built on them: ``gaussian_pyramid`` = [x, down(x), down(down(x)), ...],
``laplacian_pyramid`` = [G_0 - up(G_1), ..., G_{n-2} - up(G_{n-1}), G_{n-1}] (each up to the
size of the finer level) and ``laplacian_reconstruct`` inverts it exactly up to rounding.

Every op is differentiable; the backward of each is its exact adjoint, reflected borders
included, computed by its own kernels (``pyr_down_backward``, ``pyr_up_backward``, and for the
whole-pyramid ops ``pyr_down_levels_backward``, ``laplacian_pyramid_backward``,
``laplacian_reconstruct_backward``, which run a pyramid's levels in as few passes as the forward). On CPU
tensors the ops run the C++ kernels (the whole pyramid is built or collapsed plane by plane in
one call); on CUDA tensors, Triton kernels (kernels/pyramid.py): the build reads each large
level once for both the next Gaussian level and the residual, the reconstruction adds each
level in its pyr_up pass, and every small level (64 x 64 pixels and below) of a pyramid goes
in one launch. The CUDA path never synchronises with the host.

Errors (:class:`~fastpapers.ops.OpValueError` / :class:`~fastpapers.ops.OpTypeError`, both
also RuntimeErrors) name the argument and what was expected; the checks read shapes only, so
they are the same in eager mode, under torch.compile and on meta tensors, and the ops' fake
kernels repeat the size checks of the CPU and CUDA kernels for direct ``torch.ops`` calls.

Differences from the peers: kornia's ``pyrdown`` blurs then bilinearly resizes (a 2x2 average
of the blurred image, floor sizes) and its ``pyrup`` resizes bilinearly then blurs, so its
pyramids differ numerically from OpenCV's and from these. One deliberate difference from
OpenCV: ``pyr_up`` of a 1-pixel-wide image to width 3 copies column 1 into column 2 (the rule
OpenCV applies at every other width), where cv2.pyrUp leaves that column uninitialised.
"""
from typing import List, Optional, Sequence, Tuple

import torch

from .._ext import require_ext
from ._registry import HAS_TRITON, when_built
from ..reference.pyramid import halving_sizes
from ._validate import (MAX_SIDE, OpTypeError, OpValueError, check_float, check_int, check_same_device,
                        check_same_dtype)

__all__ = ["pyr_down", "pyr_up", "gaussian_pyramid", "laplacian_pyramid", "laplacian_reconstruct",
           "laplacian_level", "max_pyramid_levels"]

_NS = "fastpapers::"
# What the Python API accepts as a size: ints, and SymInts while torch.compile traces with
# dynamic shapes (bool is an int subclass and is rejected separately).
_INTS = (int, torch.SymInt)


def _check_image(name: str, x):
    if not isinstance(x, torch.Tensor):
        raise OpTypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise OpValueError(f"{name} must have shape [B, C, H, W] (4 dimensions), got shape {tuple(x.shape)}")
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise OpValueError(f"{name} must have H >= 1 and W >= 1, got shape {tuple(x.shape)}")
    check_float(name, x)


def _up_ok(n, m) -> bool:
    return m >= 1 and abs(m - 2 * n) == m % 2


def _check_up_size(name: str, in_hw, size) -> Tuple[int, int]:
    """``size`` as pyr_up's output size for an input of in_hw: a pair of ints (an int n means
    (n, n)), each side 2n or, when odd, 2n +- 1, and at most MAX_SIDE."""
    h, w = in_hw
    if isinstance(size, _INTS) and not isinstance(size, bool):
        pair = (size, size)
    elif isinstance(size, (tuple, list, torch.Size)) and len(size) == 2:
        pair = tuple(size)
    else:
        raise OpTypeError(f"{name} must be a pair of ints (height, width), got {size!r}")
    if not all(isinstance(v, _INTS) and not isinstance(v, bool) for v in pair):
        raise OpTypeError(f"{name} must be a pair of ints (height, width), got {size!r} "
                          f"({', '.join(type(v).__name__ for v in pair)})")
    oh, ow = pair
    if not (_up_ok(h, oh) and _up_ok(w, ow)):
        raise OpValueError(f"{name} must be (2H, 2W) = ({2 * h}, {2 * w}) for an input of {h}x{w}, or one less or "
                           f"one more on a side where it is odd; got ({oh}, {ow})")
    if oh > MAX_SIDE or ow > MAX_SIDE:
        raise OpValueError(f"{name} ({oh}, {ow}) exceeds the largest output side, {MAX_SIDE}, of any op "
                           f"(the input is {h}x{w})")
    return oh, ow


def _levels_of(height, width) -> int:
    levels = 1
    while max(height, width) > 1:
        height, width = (height + 1) // 2, (width + 1) // 2
        levels += 1
    return levels


def max_pyramid_levels(height: int, width: int) -> int:
    """Number of distinct pyramid levels of an image: halving (rounding up) until 1 x 1.

    Args:
        height, width: the image's size, positive ints.

    Example:
        >>> import fastpapers.ops as ops
        >>> ops.max_pyramid_levels(256, 256), ops.max_pyramid_levels(33, 20), ops.max_pyramid_levels(1, 1)
        (9, 7, 1)
    """
    check_int("height", height, min_value=1)
    check_int("width", width, min_value=1)
    return _levels_of(height, width)


def _check_levels(levels, x):
    if not isinstance(levels, int) or isinstance(levels, bool):
        raise OpTypeError(f"levels must be an int, got {type(levels).__name__} {levels!r}")
    h, w = x.shape[2], x.shape[3]
    top = _levels_of(h, w)
    if not 1 <= levels <= top:
        raise OpValueError(f"levels must be in [1, {top}] for a {h}x{w} image (level {top} is 1x1), got {levels}")


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    """Blur with the 5x5 binomial kernel (reflect-101 border) and keep the even pixels.

    Args:
        x: (B, C, H, W) float tensor.

    Returns:
        (B, C, ceil(H/2), ceil(W/2)), equal to cv2.pyrDown on each channel.

    Example:
        >>> import torch, fastpapers.ops as ops
        >>> ops.pyr_down(torch.ones(1, 1, 5, 4)).shape
        torch.Size([1, 1, 3, 2])
    """
    _check_image("x", x)
    require_ext("pyr_down")
    return torch.ops.fastpapers.pyr_down(x)


def pyr_up(x: torch.Tensor, size: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Upsample 2x and blur (OpenCV's pyrUp, computed in polyphase form).

    Args:
        x: (B, C, H, W) float tensor.
        size: output (height, width) as a pair of ints (an int n means (n, n)); default
            (2H, 2W). An odd side may be 2H - 1 or 2H + 1 (likewise for W), as cv2.pyrUp's
            dstsize; floats, strings and bools are rejected (OpTypeError), other sides and
            sides above 65536 too (OpValueError).

    Returns:
        (B, C, size[0], size[1]).
    """
    _check_image("x", x)
    h, w = x.shape[2], x.shape[3]
    oh, ow = _check_up_size("size", (h, w), (2 * h, 2 * w) if size is None else size)
    require_ext("pyr_up")
    return torch.ops.fastpapers.pyr_up(x, [oh, ow])


def laplacian_level(fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
    """``fine - pyr_up(coarse, fine's size)`` in one pass.

    Args:
        fine: (B, C, H, W). coarse: (B, C, h, w) with H in {2h - 1, 2h, 2h + 1} (odd only when
            not 2h), likewise W.
    """
    _check_image("fine", fine)
    _check_image("coarse", coarse)
    _check_pair("coarse", coarse, "fine", fine)
    require_ext("laplacian_level")
    return torch.ops.fastpapers.laplacian_level(fine, coarse)


def _check_pair(cname, coarse, fname, fine):
    check_same_device(**{fname: fine, cname: coarse})
    check_same_dtype(**{fname: fine, cname: coarse})
    if coarse.shape[:2] != fine.shape[:2]:
        raise OpValueError(f"{cname} must have the same B, C as {fname} {tuple(fine.shape[:2])}, "
                         f"got shape {tuple(coarse.shape)}")
    if not (_up_ok(coarse.shape[2], fine.shape[2]) and _up_ok(coarse.shape[3], fine.shape[3])):
        raise OpValueError(f"{cname} of size {tuple(coarse.shape[2:])} is not the next coarser level of {fname} "
                         f"{tuple(fine.shape[2:])}: expected ceil(H/2) x ceil(W/2) = "
                         f"({(fine.shape[2] + 1) // 2}, {(fine.shape[3] + 1) // 2}) or any size that pyr_up "
                         f"maps to {tuple(fine.shape[2:])}")


def gaussian_pyramid(x: torch.Tensor, levels: int) -> List[torch.Tensor]:
    """[x, pyr_down(x), pyr_down(pyr_down(x)), ...], ``levels`` tensors (the first is x itself).

    Args:
        x: (B, C, H, W). levels: 1 .. max_pyramid_levels(H, W).
    """
    _check_image("x", x)
    _check_levels(levels, x)
    require_ext("gaussian_pyramid")
    if levels == 1:
        return [x]
    return [x] + list(torch.ops.fastpapers.pyr_down_levels(x, levels - 1))


def laplacian_pyramid(x: torch.Tensor, levels: int) -> List[torch.Tensor]:
    """Laplacian pyramid: ``levels`` tensors, L_i = G_i - pyr_up(G_{i+1}, size of G_i), and the
    coarsest Gaussian level last.

    Args:
        x: (B, C, H, W). levels: 1 .. max_pyramid_levels(H, W).

    Example:
        >>> import torch, fastpapers.ops as ops
        >>> x = torch.rand(2, 3, 33, 20)
        >>> pyr = ops.laplacian_pyramid(x, 4)
        >>> [tuple(p.shape[2:]) for p in pyr]
        [(33, 20), (17, 10), (9, 5), (5, 3)]
        >>> bool((ops.laplacian_reconstruct(pyr) - x).abs().max() < 1e-5)
        True
    """
    _check_image("x", x)
    _check_levels(levels, x)
    require_ext("laplacian_pyramid")
    return list(torch.ops.fastpapers.laplacian_pyramid(x, levels))


def laplacian_reconstruct(pyramid: Sequence[torch.Tensor]) -> torch.Tensor:
    """Collapse a Laplacian pyramid: G_{n-1} = pyramid[-1], G_i = pyramid[i] + pyr_up(G_{i+1}).

    Args:
        pyramid: sequence of (B, C, H_i, W_i), finest first; each level must be a size that
            pyr_up maps to the one before (as laplacian_pyramid makes them).
    """
    if not isinstance(pyramid, (list, tuple)):
        raise OpTypeError(f"pyramid must be a list or tuple of tensors, got {type(pyramid).__name__}")
    if len(pyramid) == 0:
        raise OpValueError("pyramid must hold at least one level, got an empty sequence")
    for i, p in enumerate(pyramid):
        _check_image(f"pyramid[{i}]", p)
        if i:
            _check_pair(f"pyramid[{i}]", p, f"pyramid[{i - 1}]", pyramid[i - 1])
    require_ext("laplacian_reconstruct")
    return torch.ops.fastpapers.laplacian_reconstruct(list(pyramid))


# --- registration: fake kernels, autograd, CUDA (Triton) ---------------------------------


def _sizes(x) -> Tuple[int, int]:
    return x.shape[2], x.shape[3]


def _check_down_backward(grad, input_size):
    h, w = input_size
    if h < 1 or w < 1 or (h + 1) // 2 != grad.shape[2] or (w + 1) // 2 != grad.shape[3]:
        raise OpValueError(f"grad of shape {tuple(grad.shape)} is not pyr_down's output for input_size "
                           f"{tuple(input_size)}: expected H, W = ({(h + 1) // 2}, {(w + 1) // 2})")


def _no_context(ctx, inputs, output):
    pass


def _register():
    ops = torch.ops.fastpapers

    def empty(x, h, w):
        return x.new_empty((x.shape[0], x.shape[1], h, w))

    # The fake kernels (meta tensors, torch.compile) check what the CPU and CUDA kernels check,
    # from shapes alone, so a direct call of an op fails the same way on every device.
    torch.library.register_fake(_NS + "pyr_down")(lambda x: empty(x, (x.shape[2] + 1) // 2, (x.shape[3] + 1) // 2))

    @torch.library.register_fake(_NS + "pyr_up")
    def _(x, size):
        return empty(x, *_check_up_size("size", _sizes(x), list(size)))

    @torch.library.register_fake(_NS + "pyr_down_backward")
    def _(g, input_size):
        _check_down_backward(g, input_size)
        return empty(g, *input_size)

    @torch.library.register_fake(_NS + "pyr_up_backward")
    def _(g, input_size):
        _check_up_size("grad's size", input_size, _sizes(g))
        return empty(g, *input_size)

    @torch.library.register_fake(_NS + "laplacian_level")
    def _(fine, coarse):
        _check_pair("coarse", coarse, "fine", fine)
        return torch.empty_like(fine)

    @torch.library.register_fake(_NS + "pyr_up_add")
    def _(coarse, residual):
        _check_pair("coarse", coarse, "residual", residual)
        return torch.empty_like(residual)

    @torch.library.register_fake(_NS + "pyr_down_levels")
    def _(x, count):
        check_int("count", count, min_value=0)
        return [empty(x, h, w) for h, w in halving_sizes(x.shape[2], x.shape[3], count + 1)[1:]]

    @torch.library.register_fake(_NS + "laplacian_pyramid")
    def _(x, levels):
        check_int("levels", levels, min_value=1)
        return [empty(x, h, w) for h, w in halving_sizes(x.shape[2], x.shape[3], levels)]

    torch.library.register_fake(_NS + "laplacian_reconstruct")(lambda pyramid: torch.empty_like(pyramid[0]))
    torch.library.register_fake(_NS + "pyr_down_levels_backward")(lambda grads, input_size: empty(grads[0], *input_size))
    torch.library.register_fake(_NS + "laplacian_pyramid_backward")(lambda grads: grads[0].new_empty(grads[0].shape))

    @torch.library.register_fake(_NS + "laplacian_reconstruct_backward")
    def _(grad, heights, widths):
        return [empty(grad, h, w) for h, w in zip(heights, widths)]

    # Autograd: every backward is built from the adjoint ops, which are differentiable in turn
    # (the adjoint of an adjoint is the forward op), so double backward works too.
    def save_in_size(ctx, inputs, output):
        ctx.in_size = list(_sizes(inputs[0]))

    torch.library.register_autograd(
        _NS + "pyr_down", lambda ctx, g: ops.pyr_down_backward(g, ctx.in_size), setup_context=save_in_size)
    torch.library.register_autograd(
        _NS + "pyr_up", lambda ctx, g: (ops.pyr_up_backward(g, ctx.in_size), None), setup_context=save_in_size)
    torch.library.register_autograd(
        _NS + "pyr_down_backward", lambda ctx, g: (ops.pyr_down(g), None), setup_context=_no_context)
    torch.library.register_autograd(
        _NS + "pyr_up_backward", lambda ctx, g: (ops.pyr_up(g, ctx.in_size), None), setup_context=save_in_size)

    def level_setup(ctx, inputs, output):
        ctx.coarse_size = list(_sizes(inputs[1]))

    def level_backward(ctx, g):
        return g, -ops.pyr_up_backward(g, ctx.coarse_size)

    torch.library.register_autograd(_NS + "laplacian_level", level_backward, setup_context=level_setup)

    def add_setup(ctx, inputs, output):
        ctx.coarse_size = list(_sizes(inputs[0]))

    def add_backward(ctx, g):
        return ops.pyr_up_backward(g, ctx.coarse_size), g

    torch.library.register_autograd(_NS + "pyr_up_add", add_backward, setup_context=add_setup)

    # The whole-pyramid ops and their backward ops are adjoint pairs, so each is the other's
    # backward (their kernels fuse the per-level steps; see kernels/pyramid.py for CUDA).
    def levels_setup(ctx, inputs, output):
        ctx.in_size = list(_sizes(inputs[0]))

    torch.library.register_autograd(
        _NS + "pyr_down_levels", lambda ctx, grads: (ops.pyr_down_levels_backward(list(grads), ctx.in_size), None),
        setup_context=levels_setup)

    def levels_backward_setup(ctx, inputs, output):
        ctx.count = len(inputs[0])

    torch.library.register_autograd(
        _NS + "pyr_down_levels_backward", lambda ctx, g: (list(ops.pyr_down_levels(g, ctx.count)), None),
        setup_context=levels_backward_setup)

    torch.library.register_autograd(
        _NS + "laplacian_pyramid", lambda ctx, grads: (ops.laplacian_pyramid_backward(list(grads)), None),
        setup_context=_no_context)
    torch.library.register_autograd(
        _NS + "laplacian_pyramid_backward", lambda ctx, g: (list(ops.laplacian_pyramid(g, ctx.count)),),
        setup_context=levels_backward_setup)

    def rec_setup(ctx, inputs, output):
        ctx.heights = [p.shape[2] for p in inputs[0][1:]]
        ctx.widths = [p.shape[3] for p in inputs[0][1:]]

    def rec_backward(ctx, g):
        # out = L_0 + U_0 (L_1 + U_1 (...)): dL_0 = g, and the op gives dL_{i+1} = U_i^T dL_i.
        return ([g] + list(ops.laplacian_reconstruct_backward(g, ctx.heights, ctx.widths)),)

    torch.library.register_autograd(_NS + "laplacian_reconstruct", rec_backward, setup_context=rec_setup)

    def rec_backward_setup(ctx, inputs, output):
        ctx.size = list(_sizes(inputs[0]))

    def rec_double_backward(ctx, grads):
        # The adjoint of g -> [U_0^T g, U_1^T U_0^T g, ...] is d -> U_0 (d_1 + U_1 (d_2 + ...)).
        if len(grads) == 0:
            return None, None, None
        return ops.pyr_up(ops.laplacian_reconstruct(list(grads)), ctx.size), None, None

    torch.library.register_autograd(_NS + "laplacian_reconstruct_backward", rec_double_backward,
                                    setup_context=rec_backward_setup)

    if HAS_TRITON:
        _register_cuda()


def _register_cuda():
    # Every CUDA implementation is a launcher of kernels/pyramid.py: the same functions the
    # tests run under the Triton interpreter on CPU tensors.
    from ..kernels import pyramid as K

    # The size checks below read shapes only (no synchronisation); the launchers trust them.
    torch.library.impl(_NS + "pyr_down", "CUDA")(K.pyr_down)

    @torch.library.impl(_NS + "pyr_up", "CUDA")
    def _(x, size):
        return K.pyr_up(x, _check_up_size("size", _sizes(x), list(size)))

    @torch.library.impl(_NS + "pyr_down_backward", "CUDA")
    def _(grad, input_size):
        _check_down_backward(grad, input_size)
        return K.pyr_down_backward(grad, input_size)

    @torch.library.impl(_NS + "pyr_up_backward", "CUDA")
    def _(grad, input_size):
        _check_up_size("grad's size", input_size, _sizes(grad))
        return K.pyr_up_backward(grad, input_size)

    @torch.library.impl(_NS + "laplacian_level", "CUDA")
    def _(fine, coarse):
        _check_pair("coarse", coarse, "fine", fine)
        return K.pyr_up(coarse, _sizes(fine), other=fine, alpha=-1.0)

    @torch.library.impl(_NS + "pyr_up_add", "CUDA")
    def _(coarse, residual):
        _check_pair("coarse", coarse, "residual", residual)
        return K.pyr_up(coarse, _sizes(residual), other=residual, alpha=1.0)

    torch.library.impl(_NS + "pyr_down_levels", "CUDA")(K.gaussian_levels)
    torch.library.impl(_NS + "laplacian_pyramid", "CUDA")(K.laplacian_pyramid)
    torch.library.impl(_NS + "laplacian_reconstruct", "CUDA")(K.laplacian_reconstruct)
    torch.library.impl(_NS + "pyr_down_levels_backward", "CUDA")(K.pyr_down_levels_backward)
    torch.library.impl(_NS + "laplacian_pyramid_backward", "CUDA")(K.laplacian_pyramid_backward)
    torch.library.impl(_NS + "laplacian_reconstruct_backward", "CUDA")(K.laplacian_reconstruct_backward)


when_built(_register)
