"""Triton kernels of the image-pyramid ops (contract 4).

Every pyramid op, forward or adjoint, is separable: ``out = A_rows @ x @ A_cols^T`` per plane,
with 1-D operators that have at most a handful of taps per output (5 for pyr_down, 2 or 3 for
pyr_up in polyphase form, a few more at reflected borders of the adjoints). One kernel covers
them all: the launcher passes each 1-D operator as a padded tap table (index, weight) per output
row/column, and each program computes a BLOCK_H x BLOCK_W output tile in one pass, gathering
its KH x KW taps straight from the input (the taps of neighbouring outputs overlap, so the
re-reads hit L1/L2 and DRAM sees each input byte about once). Padding taps have weight 0 and
index 0, which is always in bounds. The optional epilogue ``out = other + alpha * acc`` fuses
the Laplacian subtraction (alpha = -1) and the reconstruction addition (alpha = +1) into the
pyr_up pass.

Half and bfloat16 inputs accumulate in float32, float64 in float64. Weights are dyadic
rationals (k/16, k/8), exact in float32.
"""
import torch
import triton
import triton.language as tl


@triton.jit
def _separable_kernel(x_ptr, out_ptr, other_ptr, ri_ptr, rw_ptr, ci_ptr, cw_ptr,
                      h_in, w_in, h_out, w_out, tiles_w, tiles_per_plane, alpha,
                      KH: tl.constexpr, KW: tl.constexpr, HAS_OTHER: tl.constexpr, ACC: tl.constexpr,
                      BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    pid = tl.program_id(0)
    plane = pid // tiles_per_plane
    tile = pid % tiles_per_plane
    oh = (tile // tiles_w) * BLOCK_H + tl.arange(0, BLOCK_H)
    ow = (tile % tiles_w) * BLOCK_W + tl.arange(0, BLOCK_W)
    mh = oh < h_out
    mw = ow < w_out
    x_base = x_ptr + plane.to(tl.int64) * h_in * w_in
    acc = tl.zeros((BLOCK_H, BLOCK_W), dtype=ACC)
    for p in tl.static_range(KH):
        ih = tl.load(ri_ptr + oh * KH + p, mask=mh, other=0)
        wh = tl.load(rw_ptr + oh * KH + p, mask=mh, other=0.0).to(ACC)
        row = x_base + ih.to(tl.int64) * w_in
        part = tl.zeros((BLOCK_H, BLOCK_W), dtype=ACC)
        for q in tl.static_range(KW):
            iw = tl.load(ci_ptr + ow * KW + q, mask=mw, other=0)
            ww = tl.load(cw_ptr + ow * KW + q, mask=mw, other=0.0).to(ACC)
            v = tl.load(row[:, None] + iw[None, :], mask=mh[:, None] & mw[None, :], other=0.0)
            part += v.to(ACC) * ww[None, :]
        acc += part * wh[:, None]
    offs = plane.to(tl.int64) * h_out * w_out + oh[:, None] * w_out + ow[None, :]
    mask = mh[:, None] & mw[None, :]
    if HAS_OTHER:
        acc = tl.load(other_ptr + offs, mask=mask, other=0.0).to(ACC) + alpha * acc
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


def tap_table(rows, device) -> tuple:
    """Tap rows of a 1-D operator (per output: a sequence of (input index, weight)) ->
    (idx int32 [n_out, K], weight float32 [n_out, K]), padded with (0, 0.0)."""
    k = max([1] + [len(r) for r in rows])
    idx = [[j for j, _ in r] + [0] * (k - len(r)) for r in rows]
    wt = [[w for _, w in r] + [0.0] * (k - len(r)) for r in rows]
    return (torch.tensor(idx, dtype=torch.int32).reshape(len(rows), k).to(device),
            torch.tensor(wt, dtype=torch.float32).reshape(len(rows), k).to(device))


def separable(x: torch.Tensor, rows: tuple, cols: tuple, other: torch.Tensor = None, alpha: float = 1.0,
              out: torch.Tensor = None) -> torch.Tensor:
    """out[b, c] = A_rows @ x[b, c] @ A_cols^T (+ other and alpha: other + alpha * that).

    x: (B, C, H, W) contiguous; rows / cols: tap tables from :func:`tap_table` for the vertical
    and horizontal operators; other: (B, C, H_out, W_out) or None.
    """
    ri, rw = rows
    ci, cw = cols
    b, c, h_in, w_in = x.shape
    h_out, w_out = ri.shape[0], ci.shape[0]
    x = x.contiguous()
    if out is None:
        out = torch.empty((b, c, h_out, w_out), dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    if other is not None:
        other = other.contiguous()
    # 16 x 64 tiles: rows of 64 contiguous outputs coalesce, and 1024 outputs per program
    # amortise the tap-table loads; tiny levels shrink the tile instead of masking most of it.
    block_w = min(64, triton.next_power_of_2(w_out))
    block_h = min(16, triton.next_power_of_2(h_out))
    tiles_w = triton.cdiv(w_out, block_w)
    tiles = tiles_w * triton.cdiv(h_out, block_h)
    grid = (b * c * tiles,)
    _separable_kernel[grid](
        x, out, out if other is None else other, ri, rw, ci, cw,
        h_in, w_in, h_out, w_out, tiles_w, tiles, float(alpha),
        KH=ri.shape[1], KW=ci.shape[1], HAS_OTHER=other is not None,
        ACC=tl.float64 if x.dtype == torch.float64 else tl.float32,
        BLOCK_H=block_h, BLOCK_W=block_w, num_warps=4)
    return out
