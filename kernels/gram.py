"""Triton Gram matrix / fused style loss (contract 3 in DESIGN.md), the CUDA path of
``fastpapers.ops.gram_matrix`` and ``fastpapers.ops.style_loss``.

One kernel, ``_gram_tile_kernel``: each program computes one tile of X X^T on or above the
diagonal (the lower tiles are mirrors, so about half the products of a full GEMM), for one
batch element. Its epilogue either stores the tile and its mirror (the Gram matrix), or
subtracts the target and reduces the squared difference to one partial sum per program while
storing D = scale*G - (A + A^T)/2 — the only C x C matrix the backward needs. The full Gram
never reaches memory on the loss path.

Half precision: both factors are multiplied by sqrt(scale) = 1/sqrt(n) before the product
(in fp32, then rounded back for the tensor-core dot), so X X^T / n is formed directly; the
unscaled sum that overflows fp16 (pytorch/pytorch#3651) never exists. Accumulation is fp32
(fp64 for double inputs); D and the partial sums are fp32 for half inputs.
"""
import math

import torch
import triton
import triton.language as tl

HALF_DTYPES = (torch.float16, torch.bfloat16)


@triton.jit
def _gram_tile_kernel(X, A, OUT, PART, TI, TJ, C, N, num_tiles,
                      stride_xb, stride_xc, stride_ab, stride_ob, scale, root_scale,
                      HAS_TARGET: tl.constexpr, PRESCALE: tl.constexpr, IS_FP64: tl.constexpr,
                      BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr):
    t = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    ti = tl.load(TI + t)
    tj = tl.load(TJ + t)
    rows = ti * BLOCK_C + tl.arange(0, BLOCK_C)
    cols = tj * BLOCK_C + tl.arange(0, BLOCK_C)
    ks = tl.arange(0, BLOCK_K)
    xb = X + b * stride_xb
    if IS_FP64:
        acc = tl.zeros((BLOCK_C, BLOCK_C), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_C, BLOCK_C), dtype=tl.float32)
    for k0 in range(0, N, BLOCK_K):
        kk = k0 + ks
        a = tl.load(xb + rows[:, None] * stride_xc + kk[None, :],
                    mask=(rows[:, None] < C) & (kk[None, :] < N), other=0.0)
        bt = tl.load(xb + cols[:, None] * stride_xc + kk[None, :],
                     mask=(cols[:, None] < C) & (kk[None, :] < N), other=0.0)
        if PRESCALE:
            a = (a.to(tl.float32) * root_scale).to(X.dtype.element_ty)
            bt = (bt.to(tl.float32) * root_scale).to(X.dtype.element_ty)
            acc += tl.dot(a, tl.trans(bt))
        else:
            # fp32/fp64 without TF32, as torch.bmm does by default.
            acc += tl.dot(a, tl.trans(bt), input_precision="ieee")
    if not PRESCALE:
        acc = acc * scale
    valid = (rows[:, None] < C) & (cols[None, :] < C)
    off = rows[:, None] * C + cols[None, :]
    mirror_off = cols[None, :] * C + rows[:, None]
    # Diagonal tiles hold both (r, c) and (c, r): they keep r <= c and mirror it, so the
    # result is exactly symmetric, and count each entry of the full matrix once.
    off_diag = ti != tj
    upper = valid & (off_diag | (rows[:, None] <= cols[None, :]))
    strict = valid & (off_diag | (rows[:, None] < cols[None, :]))
    on_diag = valid & (rows[:, None] == cols[None, :])
    ob = OUT + b * stride_ob
    if HAS_TARGET:
        ab = A + b * stride_ab
        a1 = tl.load(ab + off, mask=valid, other=0.0).to(acc.dtype)
        a2 = tl.load(ab + mirror_off, mask=valid, other=0.0).to(acc.dtype)
        d1 = acc - a1  # entry (r, c) of scale*G - A
        d2 = acc - a2  # entry (c, r), from the same product
        sq = tl.where(strict, d1 * d1 + d2 * d2, 0.0) + tl.where(on_diag, d1 * d1, 0.0)
        tl.store(PART + b * num_tiles + t, tl.sum(tl.sum(sq, axis=1), axis=0))
        d = ((d1 + d2) * 0.5).to(OUT.dtype.element_ty)
        tl.store(ob + off, d, mask=upper)
        tl.store(ob + mirror_off, d, mask=strict)
    else:
        g = acc.to(OUT.dtype.element_ty)
        tl.store(ob + off, g, mask=upper)
        tl.store(ob + mirror_off, g, mask=strict)


def _upper_tiles(n_blocks, device):
    idx = torch.triu_indices(n_blocks, n_blocks, device=device).to(torch.int32)
    return idx[0].contiguous(), idx[1].contiguous()


def _launch(x, scale, target, block_c, block_k, num_warps):
    b, c = x.shape[:2]
    n = math.prod(x.shape[2:])
    x3 = x.reshape(b, c, n).contiguous()
    half = x.dtype in HALF_DTYPES
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    out_dtype = x.dtype if target is None or not half else torch.float32
    out = torch.empty((b, c, c), dtype=out_dtype, device=x.device)
    n_blocks = triton.cdiv(c, block_c)
    ti, tj = _upper_tiles(n_blocks, x.device)
    num_tiles = ti.numel()
    part = torch.zeros((b * num_tiles,), dtype=acc_dtype, device=x.device)
    if b == 0 or c == 0:
        return out.zero_(), part
    if target is None:
        a, stride_ab = out, 0  # unused: HAS_TARGET is False
    else:
        a = target.contiguous()
        stride_ab = c * c if a.dim() == 3 else 0
    _gram_tile_kernel[(num_tiles, b)](
        x3, a, out, part, ti, tj, c, n, num_tiles, x3.stride(0), x3.stride(1), stride_ab, c * c,
        float(scale), float(scale) ** 0.5,
        HAS_TARGET=target is not None, PRESCALE=half, IS_FP64=x.dtype == torch.float64,
        BLOCK_C=block_c, BLOCK_K=block_k, num_warps=num_warps)
    return out, part


def gram(x, scale, *, block_c=64, block_k=32, num_warps=4):
    """G[b] = scale * X[b] X[b]^T for x [B, C, ...] (CUDA, or CPU under TRITON_INTERPRET=1)."""
    return _launch(x, scale, None, block_c, block_k, num_warps)[0]


def gram_loss(x, scale, target, *, block_c=64, block_k=32, num_warps=4):
    """(sum((scale*G - A)^2), D = scale*G - (A + A^T)/2) for x [B, C, ...] and target
    [C, C] or [B, C, C]. The sum is fp32 (fp64 for double x); D is fp32 for half x."""
    out, part = _launch(x, scale, target, block_c, block_k, num_warps)
    return part.sum(), out
