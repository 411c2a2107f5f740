"""Gram matrix and fused multi-layer style loss (contract 3 in DESIGN.md; Gatys et al. 2015).

``gram_matrix(x, normalize)`` is X X^T / n for X = x.view(B, C, H*W), with n = C*H*W
('chw', jcjohnson/neural-style and fast-neural-style), H*W ('hw', Gatys' PyTorch port) or 1
('none'). ``style_loss`` sums, over layers, ``w_l * mse(gram(F_l), A_l)`` with mse the mean
(or the sum) of the squared difference over the [B, C, C] Gram — the same number as
``torch.bmm`` + ``F.mse_loss`` (the oracle in :mod:`fastpapers.reference.gram`).

Fused: the squared difference is reduced right after the product, and D = G/n - (A + A^T)/2
is kept (instead of G and the target) so that the backward is one matrix product per layer,
dF = (4 s / n) D F (s the layer's weight over the reduction count), where the peer's
autograd runs two products and adds them.
CPU: blocked upper-triangle GEMMs through torch's BLAS with the epilogue in C++
(csrc/ops/cpu/gram_kernel.cpp). CUDA: the products through cuBLAS (split-K for the long
reductions of the first VGG layers, the symmetric half product for large float32 ones), all
layers' epilogues in one Triton launch (kernels/gram.py), no host synchronisation.

Precision. float64 runs in float64 end to end. float16/bfloat16 (CUDA): the Gram is
accumulated and kept in float32 (no overflow, pytorch/pytorch#3651), the loss is returned
in float32 as autocast does for ``mse_loss``, D is stored in the features' dtype for the
tensor-core backward product. NaN/inf in the features are not scanned for (a full pass per
call on the hot path); they propagate to the loss as they do in the peer.
"""
import math
from typing import Optional, Sequence

import torch

from .._ext import require_ext
from ._registry import HAS_TRITON, when_built
from ._validate import (OpTypeError, OpValueError, check_float, check_same_device, check_same_dtype,
                        check_tensor)

__all__ = ["gram_matrix", "style_loss", "StyleLoss"]

NORMALIZE = ("chw", "hw", "none")
REDUCTIONS = ("mean", "sum")
_HALF = (torch.float16, torch.bfloat16)


def _check_choice(name, value, choices):
    if not isinstance(value, str):
        raise OpTypeError(f"{name} must be a string, one of {choices}, got {type(value).__name__}")
    if value not in choices:
        raise OpValueError(f"{name} must be one of {choices}, got {value!r}")


def _check_features(name, x):
    check_tensor(name, x)
    if x.dim() not in (3, 4):
        raise OpValueError(f"{name} must have shape [B, C, H, W] (or [B, C, N]), got {tuple(x.shape)}")
    check_float(name, x)


def _scale(x, normalize):
    if normalize == "none":
        return 1.0
    n = math.prod(x.shape[2:])
    denom = x.shape[1] * n if normalize == "chw" else n
    # An empty map has an all-zero Gram whatever the scale.
    return 1.0 / denom if denom > 0 else 1.0


def _check_weights(weights, n_layers):
    """The per-layer weights as a list of floats (all 1 for None), or a named error."""
    if weights is None:
        return [1.0] * n_layers
    if not isinstance(weights, (list, tuple)) or len(weights) != n_layers:
        raise OpValueError(f"weights must be a list of {n_layers} floats (one per layer), got {weights!r}")
    for i, w in enumerate(weights):
        if not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(w):
            raise OpTypeError(f"weights[{i}] must be a finite number, got {w!r}")
    return [float(w) for w in weights]


def _loss_dtype(dtype):
    return torch.float32 if dtype in _HALF else dtype


def gram_matrix(x: torch.Tensor, normalize: str = "chw") -> torch.Tensor:
    """Gram matrix of feature maps.

    Args:
        x: (B, C, H, W) (or (B, C, N)) features; float32/float64, float16/bfloat16 on CUDA.
        normalize: 'chw' divides by C*H*W, 'hw' by H*W, 'none' not at all.

    Returns:
        (B, C, C) Gram matrices, dtype of ``x``.

    Example:
        >>> import torch, fastpapers.ops as ops
        >>> x = torch.ones(1, 2, 3, 3)
        >>> ops.gram_matrix(x, normalize="hw").tolist()
        [[[1.0, 1.0], [1.0, 1.0]]]
    """
    _check_features("x", x)
    _check_choice("normalize", normalize, NORMALIZE)
    require_ext("gram_matrix")
    return torch.ops.fastpapers.gram_matrix(x, _scale(x, normalize))


def style_loss(features: Sequence[torch.Tensor], targets: Sequence[torch.Tensor],
               weights: Optional[Sequence[float]] = None, reduction: str = "mean", *,
               normalize: str = "chw") -> torch.Tensor:
    """Weighted sum over layers of the squared distance between Gram matrices and targets.

    Args:
        features: list of L tensors (B, C_l, H_l, W_l) (or (B, C_l, N_l)), one dtype/device.
        targets: list of L target Grams, (C_l, C_l) (shared by the batch) or (B, C_l, C_l),
            normalised like ``normalize`` (e.g. from ``gram_matrix``), dtype of the features.
        weights: L floats (default all 1).
        reduction: 'mean' averages each layer's squared difference over its B*C*C entries
            (``F.mse_loss``), 'sum' adds them.
        normalize: the Gram normalisation, as in :func:`gram_matrix`.

    Returns:
        Scalar loss, dtype of the features (float32 for float16/bfloat16 features).

    Example:
        >>> import torch, fastpapers.ops as ops
        >>> f = torch.ones(1, 2, 3, 3)
        >>> ops.style_loss([f], [torch.zeros(2, 2)], reduction="sum").item()  # 4 entries of 9/18
        1.0
    """
    if not isinstance(features, (list, tuple)):
        raise OpTypeError(f"features must be a list of tensors, got {type(features).__name__}")
    if not isinstance(targets, (list, tuple)):
        raise OpTypeError(f"targets must be a list of tensors, got {type(targets).__name__}")
    if len(features) == 0:
        raise OpValueError("features must hold at least one layer, got an empty list")
    if len(targets) != len(features):
        raise OpValueError(f"targets must have one entry per layer ({len(features)}), got {len(targets)}")
    _check_choice("reduction", reduction, REDUCTIONS)
    _check_choice("normalize", normalize, NORMALIZE)
    weights = _check_weights(weights, len(features))
    for i, (f, a) in enumerate(zip(features, targets)):
        _check_features(f"features[{i}]", f)
        check_tensor(f"targets[{i}]", a)
        check_same_device(**{"features[0]": features[0], f"features[{i}]": f, f"targets[{i}]": a})
        check_same_dtype(**{"features[0]": features[0], f"features[{i}]": f, f"targets[{i}]": a})
        b, c = f.shape[:2]
        if tuple(a.shape) not in ((c, c), (b, c, c)):
            raise OpValueError(f"targets[{i}] must have shape [C, C] = {(c, c)} or [B, C, C] = {(b, c, c)} "
                               f"for features[{i}] of shape {tuple(f.shape)}, got {tuple(a.shape)}")
    scales, coefs = [], []
    for f, w in zip(features, weights):
        b, c = f.shape[:2]
        count = b * c * c
        if reduction == "sum":
            coefs.append(float(w))
        else:  # mse_loss's mean over no element is NaN
            coefs.append(float(w) / count if count else math.nan)
        scales.append(_scale(f, normalize))
    require_ext("style_loss")
    if torch.compiler.is_compiling():
        loss, _ = torch.ops.fastpapers.style_loss(list(features), list(targets), scales, coefs)
        return loss
    return _StyleLoss.apply(scales, coefs, len(features), *features, *targets)[0]


class StyleLoss(torch.nn.Module):
    """Holds target Grams (computed once from style features) and returns ``style_loss``.

    Args:
        style_features: list of L tensors (B_s, C_l, H_l, W_l) (or (B_s, C_l, N_l)), the
            style image(s)' features at each layer, one B_s for every layer. With B_s = 1 the
            target Gram is shared by every element of the batch given to ``forward``; with
            B_s > 1 element b of that batch is compared with style image b, so the batch
            must be B_s (for one target blended from several style images, average their
            ``gram_matrix`` and call :func:`style_loss`).
        weights: L floats (default all 1).
        reduction, normalize: as in :func:`style_loss`.

    Example:
        >>> import torch, fastpapers.ops as ops
        >>> style = [torch.rand(1, 4, 8, 8)]
        >>> crit = ops.StyleLoss(style, weights=[1.0])
        >>> float(crit(style)) < 1e-12
        True
    """

    def __init__(self, style_features, weights=None, reduction="mean", normalize="chw"):
        super().__init__()
        if not isinstance(style_features, (list, tuple)):
            raise OpTypeError(f"style_features must be a list of tensors (one per layer), "
                              f"got {type(style_features).__name__}")
        if len(style_features) == 0:
            raise OpValueError("style_features must hold at least one layer, got an empty list")
        _check_choice("reduction", reduction, REDUCTIONS)
        _check_choice("normalize", normalize, NORMALIZE)
        self.weights = _check_weights(weights, len(style_features))
        self.reduction, self.normalize = reduction, normalize
        for i, f in enumerate(style_features):
            name = f"style_features[{i}]"
            _check_features(name, f)
            check_same_device(**{"style_features[0]": style_features[0], name: f})
            check_same_dtype(**{"style_features[0]": style_features[0], name: f})
            if f.shape[0] != style_features[0].shape[0]:
                raise OpValueError(f"{name} must hold as many style images as style_features[0] "
                                   f"({style_features[0].shape[0]}), got shape {tuple(f.shape)}")
            if f.shape[0] == 0:
                raise OpValueError(f"{name} must hold at least one style image, got shape {tuple(f.shape)}")
        self.n_layers = len(style_features)
        self.n_styles = style_features[0].shape[0]
        with torch.no_grad():
            for i, f in enumerate(style_features):
                g = gram_matrix(f.detach(), normalize)
                self.register_buffer(f"target{i}", g[0] if self.n_styles == 1 else g)

    def forward(self, features):
        if not isinstance(features, (list, tuple)):
            raise OpTypeError(f"features must be a list of tensors, got {type(features).__name__}")
        if len(features) != self.n_layers:
            raise OpValueError(f"features must have one entry per layer of style_features "
                               f"({self.n_layers}), got {len(features)}")
        targets = [getattr(self, f"target{i}") for i in range(self.n_layers)]
        for i, (f, a) in enumerate(zip(features, targets)):
            _check_features(f"features[{i}]", f)
            c = a.shape[-1]
            if f.shape[1] != c:
                raise OpValueError(f"features[{i}] must have {c} channels like style_features[{i}], "
                                   f"got shape {tuple(f.shape)}")
            if self.n_styles > 1 and f.shape[0] != self.n_styles:
                raise OpValueError(f"features[{i}] must have batch {self.n_styles}, one element per style "
                                   f"image in style_features[{i}], got shape {tuple(f.shape)}")
            if f.device != a.device:
                raise OpValueError(f"features[{i}] must be on the device of the target built from "
                                   f"style_features[{i}] ({a.device}), got {f.device}")
            if f.dtype != a.dtype:
                raise OpTypeError(f"features[{i}] must have the dtype of the target built from "
                                  f"style_features[{i}] ({a.dtype}), got {f.dtype}")
        return style_loss(features, targets, self.weights, self.reduction, normalize=self.normalize)


# --- autograd of style_loss (registered below, and the eager Function) ------------------

def _loss_setup(ctx, inputs, output):
    features, targets, scales, weights = inputs
    _, diffs = output
    ctx.n = len(features)
    ctx.scales, ctx.weights = list(scales), list(weights)
    # needs_input_grad is one flag for the whole targets list; keep one per target.
    ctx.target_needs = [t.requires_grad for t in targets]
    ctx.save_for_backward(*features, *targets, *diffs)
    # The diffs output is internal: without this, autograd hands the backward zero
    # [B, C, C] gradients for it, and folding them in costs more than the loss itself.
    ctx.set_materialize_grads(False)


def _loss_backward(ctx, grad, grad_diffs):
    n = ctx.n
    saved = ctx.saved_tensors
    features, targets, diffs = saved[:n], saved[n:2 * n], saved[2 * n:]
    if grad is None:  # only the diffs output was differentiated
        grad = diffs[0].new_zeros((), dtype=_loss_dtype(diffs[0].dtype))
    # d loss / d D_l = 2 s_l g D_l and D_l = (1/n_l) F F^T - sym(A_l), so
    # dF_l = (4 s_l g / n_l) D_l F_l: one product with the saved D.
    coefs = [4.0 * s * w for s, w in zip(ctx.scales, ctx.weights)]
    extra = grad_diffs is not None and any(gd is not None for gd in grad_diffs)
    if extra:
        # Only when a caller differentiates through the raw diffs output (opcheck does):
        # fold its gradient into the symmetric factor of the same single product.
        mats = []
        for d, gd, c, s in zip(diffs, grad_diffs, coefs, ctx.scales):
            e = d * (grad * c)
            if gd is not None:
                e = e + (gd + gd.transpose(1, 2)) * s
            mats.append(e)
        dfeat = torch.ops.fastpapers.style_loss_backward(torch.ones_like(grad), list(features), mats,
                                                        [1.0] * n)
    else:
        dfeat = torch.ops.fastpapers.style_loss_backward(grad, list(features), list(diffs), coefs)
    dtarget = []
    for i in range(n):
        if not ctx.target_needs[i]:
            dtarget.append(None)
            continue
        a, d, w = targets[i], diffs[i], ctx.weights[i]
        # G - A = D + (A^T - A)/2 for the symmetrised D.
        # In the loss dtype (float32 for half features, whose D is stored in half).
        ga = -2.0 * w * grad * (d.to(grad.dtype) + 0.5 * (a.transpose(-1, -2) - a).to(grad.dtype))
        if extra and grad_diffs[i] is not None:
            ga = ga - 0.5 * (grad_diffs[i] + grad_diffs[i].transpose(1, 2)).to(ga.dtype)
        if a.dim() == 2:
            ga = ga.sum(0)
        dtarget.append(ga.to(a.dtype))
    return list(dfeat), dtarget, None, None


class _StyleLoss(torch.autograd.Function):
    """Eager-mode autograd of ``style_loss``: the registered formulas (``_loss_setup``,
    ``_loss_backward``) behind a plain autograd.Function. The Function torch.library
    generates flattens and checks the argument lists on every call, which at the VGG relu5_1
    shape cost ~8% of the whole forward+backward (one thread); compiled graphs and opcheck
    still go through the registered op."""

    @staticmethod
    def forward(ctx, scales, weights, n, *tensors):
        inputs = (list(tensors[:n]), list(tensors[n:]), scales, weights)
        loss, diffs = torch.ops.fastpapers.style_loss(*inputs)
        _loss_setup(ctx, inputs, (loss, diffs))
        return (loss, *diffs)

    @staticmethod
    def backward(ctx, grad, *grad_diffs):
        dfeat, dtarget, _, _ = _loss_backward(ctx, grad, grad_diffs)
        return (None, None, None, *dfeat, *dtarget)


# --- registration: fake kernels, autograd, CUDA (Triton) ---------------------------------

def _register():
    lib = "fastpapers::"

    @torch.library.register_fake(lib + "gram_matrix")
    def _(x, scale):
        return x.new_empty((x.shape[0], x.shape[1], x.shape[1]))

    @torch.library.register_fake(lib + "gram_matrix_backward")
    def _(grad, x, scale):
        return x.new_empty(x.shape)  # contiguous, whatever x's layout (as the kernels return)

    @torch.library.register_fake(lib + "style_loss")
    def _(features, targets, scales, weights):
        diffs = [f.new_empty((f.shape[0], f.shape[1], f.shape[1])) for f in features]
        return features[0].new_empty((), dtype=_loss_dtype(features[0].dtype)), diffs

    @torch.library.register_fake(lib + "style_loss_backward")
    def _(grad, features, diffs, coefs):
        return [f.new_empty(f.shape) for f in features]

    def gram_setup(ctx, inputs, output):
        x, scale = inputs
        ctx.scale = scale
        ctx.save_for_backward(x)

    def gram_backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return torch.ops.fastpapers.gram_matrix_backward(grad, x, ctx.scale), None

    torch.library.register_autograd(lib + "gram_matrix", gram_backward, setup_context=gram_setup)

    # Double backward. gram_matrix_backward is s (g + g^T) X, linear in g and in X.
    def gram_bwd_setup(ctx, inputs, output):
        grad, x, scale = inputs
        ctx.scale = scale
        ctx.save_for_backward(grad, x)

    def gram_bwd_backward(ctx, u):
        grad, x = ctx.saved_tensors
        b, c = x.shape[:2]
        x3 = x.reshape(b, c, math.prod(x.shape[2:]))
        u3 = u.reshape(x3.shape)
        uxt = torch.bmm(u3, x3.transpose(1, 2))
        dgrad = (uxt + uxt.transpose(1, 2)) * ctx.scale
        dx = torch.bmm((grad + grad.transpose(1, 2)) * ctx.scale, u3).view(x.shape)
        return dgrad, dx, None

    torch.library.register_autograd(lib + "gram_matrix_backward", gram_bwd_backward,
                                    setup_context=gram_bwd_setup)

    torch.library.register_autograd(lib + "style_loss", _loss_backward, setup_context=_loss_setup)

    # Double backward. style_loss_backward is out_l = grad * c_l * D_l F_l; the gradient
    # reaching D_l flows back into style_loss through its diffs output.
    def loss_bwd_setup(ctx, inputs, output):
        grad, features, diffs, coefs = inputs
        ctx.n, ctx.coefs = len(features), list(coefs)
        ctx.save_for_backward(grad, *features, *diffs)

    def loss_bwd_backward(ctx, grad_outs):
        n = ctx.n
        saved = ctx.saved_tensors
        grad, features, diffs = saved[0], saved[1:1 + n], saved[1 + n:]
        dgrad = torch.zeros_like(grad)
        dfeat, ddiff = [], []
        for f, d, c, u in zip(features, diffs, ctx.coefs, grad_outs):
            b, ch = f.shape[:2]
            f3 = f.reshape(b, ch, math.prod(f.shape[2:]))
            u3 = torch.zeros_like(f3) if u is None else u.reshape(f3.shape).to(f3.dtype)
            dgrad = dgrad + c * (torch.bmm(d.to(f3.dtype), f3) * u3).sum().to(grad.dtype)
            dfeat.append((torch.bmm(d.transpose(1, 2).to(f3.dtype), u3) * (grad * c)).view(f.shape))
            ddiff.append((torch.bmm(u3, f3.transpose(1, 2)) * (grad * c)).to(d.dtype))
        return dgrad, dfeat, ddiff, None

    torch.library.register_autograd(lib + "style_loss_backward", loss_bwd_backward,
                                    setup_context=loss_bwd_setup)

    if HAS_TRITON:
        _register_cuda()


def _register_cuda():
    # cuBLAS products + one fused Triton epilogue (kernels/gram.py); nothing here reads a
    # tensor's values on the host.
    from ..kernels import gram as K

    @torch.library.impl("fastpapers::gram_matrix", "CUDA")
    def _(x, scale):
        return K.gram(x, scale)

    @torch.library.impl("fastpapers::gram_matrix_backward", "CUDA")
    def _(grad, x, scale):
        x3 = K.as_bcn(x)
        out = torch.empty_like(x3)
        if out.numel():
            out.baddbmm_(grad + grad.transpose(1, 2), x3, beta=0, alpha=scale)
        return out.view(x.shape)

    @torch.library.impl("fastpapers::style_loss", "CUDA")
    def _(features, targets, scales, weights):
        return K.style_loss(list(features), list(targets), list(scales), list(weights))

    @torch.library.impl("fastpapers::style_loss_backward", "CUDA")
    def _(grad, features, diffs, coefs):
        return K.style_loss_backward(grad, list(features), list(diffs), list(coefs))


when_built(_register)
