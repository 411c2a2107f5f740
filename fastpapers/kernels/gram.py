"""Triton Gram matrix / fused style loss (contract 3 in DESIGN.md), the CUDA path of
``fastpapers.ops.gram_matrix`` and ``fastpapers.ops.style_loss``.

Every program computes one tile of X X^T on or above the diagonal (the lower tiles are
mirrors, so about half the products of a full GEMM), for one batch element.

- ``_gram_tile_kernel`` (``gram``): stores the tile and its mirror — the Gram matrix.
- ``_grouped_loss_kernel`` (``gram_loss_grouped``): the tiles of every layer of a style loss
  in one launch. A tile table lists (layer, batch element, tile row, tile column); a layer
  table holds each layer's pointers, sizes and scales. The epilogue subtracts the target,
  reduces the weighted squared difference to one partial sum per program and stores
  D = scale*G - (A + A^T)/2, the only C x C matrix the backward needs. The full Gram never
  reaches memory on the loss path.
- ``_scaled_dgrad_kernel`` (``dgrad_half``): the half-precision backward dF = alpha * D F with
  D kept in float32: each D[b] is divided by its largest magnitude before the rounding to
  the tensor-core dtype and the factor is applied to the float32 accumulator, so neither a
  large D (overflow) nor a small alpha * D (underflow) is rounded away in fp16.

Half precision forward: both factors are multiplied by sqrt(scale) = 1/sqrt(n) before the
product (in fp32, then rounded back for the tensor-core dot), so X X^T / n is formed
directly; the unscaled sum that overflows fp16 (pytorch/pytorch#3651) never exists.
Accumulation is fp32 (fp64 for double inputs); D and the partial sums are fp32 for half inputs.
"""
import math

import torch
import triton
import triton.language as tl

HALF_DTYPES = (torch.float16, torch.bfloat16)


@triton.jit
def _tile_product(xb, rows, cols, C, N, stride_xc, root_scale, PRESCALE: tl.constexpr,
                  IS_FP64: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr):
    """acc[r, c] = sum_k x[rows[r], k] x[cols[c], k] (times scale when PRESCALE)."""
    ks = tl.arange(0, BLOCK_K)
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
            a = (a.to(tl.float32) * root_scale).to(xb.dtype.element_ty)
            bt = (bt.to(tl.float32) * root_scale).to(xb.dtype.element_ty)
            acc += tl.dot(a, tl.trans(bt))
        else:
            # fp32/fp64 without TF32, as torch.bmm does by default.
            acc += tl.dot(a, tl.trans(bt), input_precision="ieee")
    return acc


@triton.jit
def _gram_tile_kernel(X, OUT, TI, TJ, C, N, stride_xb, stride_xc, stride_ob, scale, root_scale,
                      PRESCALE: tl.constexpr, IS_FP64: tl.constexpr,
                      BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr):
    t = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    ti = tl.load(TI + t)
    tj = tl.load(TJ + t)
    rows = ti * BLOCK_C + tl.arange(0, BLOCK_C)
    cols = tj * BLOCK_C + tl.arange(0, BLOCK_C)
    acc = _tile_product(X + b * stride_xb, rows, cols, C, N, stride_xc, root_scale,
                        PRESCALE, IS_FP64, BLOCK_C, BLOCK_K)
    if not PRESCALE:
        acc = acc * scale
    valid = (rows[:, None] < C) & (cols[None, :] < C)
    # Diagonal tiles hold both (r, c) and (c, r): they keep r <= c and mirror it, so the
    # result is exactly symmetric.
    off_diag = ti != tj
    upper = valid & (off_diag | (rows[:, None] <= cols[None, :]))
    strict = valid & (off_diag | (rows[:, None] < cols[None, :]))
    ob = OUT + b * stride_ob
    g = acc.to(OUT.dtype.element_ty)
    tl.store(ob + rows[:, None] * C + cols[None, :], g, mask=upper)
    tl.store(ob + cols[None, :] * C + rows[:, None], g, mask=strict)


@triton.jit
def _grouped_loss_kernel(X0, D0, LAYERS, SCALES, TILES, PART,
                         PRESCALE: tl.constexpr, IS_FP64: tl.constexpr,
                         BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr):
    # X0 and D0 (layer 0's features and D) only carry the element types of the pointers
    # read from the layer table.
    t = tl.program_id(0)
    layer = tl.load(TILES + 4 * t)
    b = tl.load(TILES + 4 * t + 1).to(tl.int64)
    ti = tl.load(TILES + 4 * t + 2)
    tj = tl.load(TILES + 4 * t + 3)
    # Layer table rows: x, target and D pointers, C, N, the target's batch stride.
    row = LAYERS + layer * 6
    x = tl.load(row + 0).to(tl.pointer_type(X0.dtype.element_ty))
    a = tl.load(row + 1).to(tl.pointer_type(X0.dtype.element_ty))
    d = tl.load(row + 2).to(tl.pointer_type(D0.dtype.element_ty))
    C = tl.load(row + 3)
    N = tl.load(row + 4)
    stride_ab = tl.load(row + 5)  # C*C for a [B, C, C] target, 0 for a shared [C, C] one
    scale = tl.load(SCALES + layer * 3)
    root_scale = tl.load(SCALES + layer * 3 + 1).to(tl.float32)
    weight = tl.load(SCALES + layer * 3 + 2)
    rows = ti * BLOCK_C + tl.arange(0, BLOCK_C)
    cols = tj * BLOCK_C + tl.arange(0, BLOCK_C)
    acc = _tile_product(x + b * C * N, rows, cols, C, N, N, root_scale,
                        PRESCALE, IS_FP64, BLOCK_C, BLOCK_K)
    if not PRESCALE:
        acc = acc * scale.to(acc.dtype)
    valid = (rows[:, None] < C) & (cols[None, :] < C)
    off = rows[:, None] * C + cols[None, :]
    mirror_off = cols[None, :] * C + rows[:, None]
    # Diagonal tiles hold both (r, c) and (c, r): they keep r <= c and mirror it, so D is
    # exactly symmetric, and count each entry of the full matrix once.
    off_diag = ti != tj
    upper = valid & (off_diag | (rows[:, None] <= cols[None, :]))
    strict = valid & (off_diag | (rows[:, None] < cols[None, :]))
    on_diag = valid & (rows[:, None] == cols[None, :])
    ab = a + b * stride_ab
    a1 = tl.load(ab + off, mask=valid, other=0.0).to(acc.dtype)
    a2 = tl.load(ab + mirror_off, mask=valid, other=0.0).to(acc.dtype)
    d1 = acc - a1  # entry (r, c) of scale*G - A
    d2 = acc - a2  # entry (c, r), from the same product
    sq = tl.where(strict, d1 * d1 + d2 * d2, 0.0) + tl.where(on_diag, d1 * d1, 0.0)
    tl.store(PART + t, tl.sum(tl.sum(sq, axis=1), axis=0) * weight.to(acc.dtype))
    dd = ((d1 + d2) * 0.5).to(D0.dtype.element_ty)
    db = d + b * C * C
    tl.store(db + off, dd, mask=upper)
    tl.store(db + mirror_off, dd, mask=strict)


@triton.jit
def _scaled_dgrad_kernel(D, F, OUT, SIGMA, GRAD, coef, C, N,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pm = tl.program_id(0)
    pn = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    rows = pm * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pn * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    sigma = tl.load(SIGMA + b)
    # An all-zero D: any divisor gives the (zero) gradient.
    inv = tl.where(sigma > 0, 1.0 / sigma, 1.0)
    db = D + b * C * C
    fb = F + b * C * N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, C, BLOCK_K):
        kk = k0 + ks
        dt = tl.load(db + rows[:, None] * C + kk[None, :], mask=(rows[:, None] < C) & (kk[None, :] < C), other=0.0)
        ft = tl.load(fb + kk[:, None] * N + cols[None, :], mask=(kk[:, None] < C) & (cols[None, :] < N), other=0.0)
        acc += tl.dot((dt * inv).to(F.dtype.element_ty), ft)
    alpha = tl.load(GRAD).to(tl.float32) * coef * sigma
    mask = (rows[:, None] < C) & (cols[None, :] < N)
    tl.store(OUT + b * C * N + rows[:, None] * N + cols[None, :], (acc * alpha).to(OUT.dtype.element_ty), mask=mask)


def _upper_tiles(n_blocks, device="cpu"):
    idx = torch.triu_indices(n_blocks, n_blocks, device=device).to(torch.int32)
    return idx[0], idx[1]


def _upload(t, device):
    """Host-built table -> device without making the host wait for the queued GPU work: a
    plain pageable copy blocks until the stream drains, a pinned non-blocking one does not
    (the pinned buffer is kept by PyTorch's host allocator until the copy has run)."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def _as_bcn(x):
    b, c = x.shape[:2]
    return x.reshape(b, c, math.prod(x.shape[2:])).contiguous()


def gram(x, scale, *, block_c=64, block_k=32, num_warps=4):
    """G[b] = scale * X[b] X[b]^T for x [B, C, ...] (CUDA, or CPU under TRITON_INTERPRET=1)."""
    b, c = x.shape[:2]
    x3 = _as_bcn(x)
    out = torch.empty((b, c, c), dtype=x.dtype, device=x.device)
    if b == 0 or c == 0:
        return out
    ti, tj = _upper_tiles(triton.cdiv(c, block_c), x.device)
    _gram_tile_kernel[(ti.numel(), b)](
        x3, out, ti, tj, c, x3.shape[2], x3.stride(0), x3.stride(1), c * c, float(scale), float(scale) ** 0.5,
        PRESCALE=x.dtype in HALF_DTYPES, IS_FP64=x.dtype == torch.float64,
        BLOCK_C=block_c, BLOCK_K=block_k, num_warps=num_warps)
    return out


def gram_loss_grouped(xs, scales, targets, weights, *, block_c=64, block_k=32, num_warps=4):
    """Style loss over several layers in one launch.

    xs: L tensors [B, C_l, ...] of one dtype and device; targets: [C_l, C_l] or [B, C_l, C_l];
    scales, weights: L floats. Returns (sum_l weights[l] * sum((scales[l]*G_l - A_l)^2),
    [D_l = scales[l]*G_l - (A_l + A_l^T)/2]). The loss is fp32 (fp64 for double xs); the D_l
    are fp32 for half xs.
    """
    dtype, device = xs[0].dtype, xs[0].device
    # The kernel reads every layer's features and target through layer 0's element type.
    for i, (x, a) in enumerate(zip(xs, targets)):
        if x.dtype != dtype or a.dtype != dtype or x.device != device or a.device != device:
            raise ValueError(f"gram_loss_grouped: layer {i} has features {x.dtype} on {x.device} and target "
                             f"{a.dtype} on {a.device}; expected every tensor {dtype} on {device}")
    half = dtype in HALF_DTYPES
    acc_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    d_dtype = torch.float32 if half else dtype
    x3s = [_as_bcn(x) for x in xs]
    a_s = [a.contiguous() for a in targets]
    diffs = [torch.empty((x.shape[0], x.shape[1], x.shape[1]), dtype=d_dtype, device=device) for x in x3s]
    # Layers with the longest products first, so the slow tiles do not trail the launch.
    order = sorted(range(len(xs)), key=lambda i: -x3s[i].shape[2])
    layer_rows, scale_rows, tiles = [], [], []
    empty_weight = 0.0
    for slot, i in enumerate(order):
        x3, a = x3s[i], a_s[i]
        b, c, n = x3.shape
        if b == 0 or c == 0:
            # No tile: the layer adds weight * 0 (NaN for mse's mean over no element).
            empty_weight += 0.0 * weights[i]
        layer_rows.append([x3.data_ptr(), a.data_ptr(), diffs[i].data_ptr(), c, n,
                           c * c if a.dim() == 3 else 0])
        scale_rows.append([float(scales[i]), float(scales[i]) ** 0.5, float(weights[i])])
        if b and c:
            ti, tj = _upper_tiles(triton.cdiv(c, block_c))
            nt = ti.numel()
            tiles.append(torch.stack([torch.full((b * nt,), slot, dtype=torch.int32),
                                      torch.arange(b, dtype=torch.int32).repeat_interleave(nt),
                                      ti.repeat(b), tj.repeat(b)], dim=1))
    part = torch.zeros((0,), dtype=acc_dtype, device=device)
    if tiles:
        table = _upload(torch.cat(tiles), device)
        part = torch.empty((table.shape[0],), dtype=acc_dtype, device=device)
        layers = _upload(torch.tensor(layer_rows, dtype=torch.int64), device)
        sc = _upload(torch.tensor(scale_rows, dtype=torch.float64), device)
        _grouped_loss_kernel[(table.shape[0],)](
            x3s[order[0]], diffs[order[0]], layers, sc, table, part,
            PRESCALE=half, IS_FP64=dtype == torch.float64,
            BLOCK_C=block_c, BLOCK_K=block_k, num_warps=num_warps)
    return part.sum() + empty_weight, diffs


def gram_loss(x, scale, target, *, block_c=64, block_k=32, num_warps=4):
    """One layer of ``gram_loss_grouped`` with weight 1: (sum((scale*G - A)^2), D)."""
    total, (d,) = gram_loss_grouped([x], [scale], [target], [1.0], block_c=block_c, block_k=block_k,
                                    num_warps=num_warps)
    return total, d


def dgrad_half(grad, x, d, coef, *, block_m=64, block_n=64, block_k=32, num_warps=4):
    """grad * coef * D[b] X[b] for half x [B, C, ...] and float32 D [B, C, C], in x's dtype,
    accumulated in float32 (CUDA, or CPU under TRITON_INTERPRET=1)."""
    b, c = x.shape[:2]
    x3 = _as_bcn(x)
    n = x3.shape[2]
    out = torch.empty_like(x3)
    if out.numel() == 0:
        return out.view(x.shape)
    d = d.float().contiguous()
    sigma = d.abs().amax(dim=(1, 2))
    _scaled_dgrad_kernel[(triton.cdiv(c, block_m), triton.cdiv(n, block_n), b)](
        d, x3, out, sigma, grad, float(coef), c, n,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=num_warps)
    return out.view(x.shape)
