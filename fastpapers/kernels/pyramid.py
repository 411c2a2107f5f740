"""Triton kernels of the image-pyramid ops (contract 4).

Every pyramid op, forward or adjoint, is separable: ``out = A_rows @ x @ A_cols^T`` per plane,
with 1-D operators that have at most a handful of taps per output (5 for pyr_down, 2 or 3 for
pyr_up in polyphase form, a few more at reflected borders of the adjoints). Each operator is
passed as a padded tap table (index, weight) per output row/column, built from the reference's
definitions (fastpapers/reference/pyramid.py), so the kernels and the C++ CPU kernels apply the
very same taps. A program computes a BLOCK_H x BLOCK_W output tile in one pass, gathering its
KH x KW taps straight from the input (the taps of neighbouring outputs overlap, so the re-reads
hit L1/L2 and DRAM sees each input byte about once). Padding taps have weight 0 and index 0,
which is always in bounds. The optional epilogue ``out = other + sign * acc`` (sign -1 or +1)
fuses the Laplacian subtraction and the reconstruction addition into the pyr_up pass.

Three kernels share that tile body:

- ``_separable_kernel``: one operator over a whole batch, tiled; used by the single ops and by
  the large pyramid levels, where a launch has enough tiles to fill the GPU.
- ``_steps_kernel``: several independent operators in one launch. A table of step descriptors
  (source, destination and epilogue addresses, sizes, tap-table offsets, first program) maps
  each program to (step, plane, tile). The Laplacian residuals of all large levels, which only
  need the Gaussian levels, go out as one launch.
- ``_chain_kernel``: the small levels. Each level depends on the one before, and a level of a
  few hundred pixels per plane cannot fill the GPU, so one program per plane runs every small
  step in order (tiles looped inside the program), with a block-wide barrier between steps;
  its intermediate levels stay in L2. The whole coarse end of a pyramid is one launch instead
  of one or two per level.

Two more kernels stream rows instead of tiles, with no tap table (the reflect-101 indices are
computed once per program): a program walks down a strip of output columns, 16 output rows,
keeping the horizontally filtered input rows of its window in registers, so each output row
costs 2 new filtered input rows, and stores whole rows with vector stores:

- ``_down_rows_kernel``: pyr_down of a large level (``pyr_down``, ``gaussian_levels``): 10
  gathered loads per output row of the strip where the 5 x 5 tile body gathers 25.
- ``_down_lap_kernel``: a large Laplacian level pair in one pass: G_{i+1} = pyr_down(G_i) and
  L_i = G_i - pyr_up(G_{i+1}), G_i read once from DRAM (what the two passes pyr_down, residual
  read twice and G_{i+1} once more). It filters at the three coarse columns c - 1, c, c + 1
  pyr_up needs (15 gathered loads per fine row), keeps coarse rows s - 1, s, s + 1, and writes
  L_i's fine rows 2s, 2s + 1 with even and odd columns interleaved into vector stores.
  ptxas (sm_90a, float32, 128 columns, 4 warps): 96 registers, no spill.

Host side. Everything a launch needs that depends only on shapes and dtypes (grids, tiling,
constexprs, tap tables, and the steps / chain descriptor tables, which name their tensors by
slot; the addresses are the launch's arguments a0..a15) is a launch plan, built once per
(planes, sizes, dtype, device) and kept in a bounded dict; the descriptor table is uploaded
once per plan, so no call copies anything to the device and none synchronises. With the
kernel launch stubbed out, the Python of a 4-level 16 x 3 x 256^2 build + reconstruct on CPU
tensors takes ~90 us where it took ~300 us (best of 5 x 100, a shared 2-core host): it no
longer calls triton.cdiv (a ~4 us Python call) nor rebuilds tap tables, descriptor rows or
uploads per call. What remains is Triton's own launch overhead per kernel: a 4-level round
trip is 6 launches at 1024^2 (3 fused build passes, 3 reconstruction passes) and at 256^2
(2 fused + chain, chain + 2), where it was 7.

Bytes moved (``fastpapers.reference.pyramid.roundtrip_bytes(shape, levels, itemsize)`` gives
both): a round trip at 16 x 3 x 1024^2 float32, 4 levels, has 937.4 MB compulsory traffic and
1189.1 MB in passes (each pass reading its inputs once and writing its outputs once: fused
build 2 a_i + a_{i+1}, reconstruction 2 a_i + a_{i+1} per level pair), 1.27x the compulsory
bytes (the separate pyr_down + residual passes moved 1519.4 MB, 1.62x); at 16 x 3 x 256^2 58.6
and 75.3 MB. Passes at the full 4.8 TB/s of an H200 would take 0.248 ms = 3.78 TB/s = 79 % of
peak in compulsory terms, so the 70 % target needs the passes at >= 89 % of peak (or L2 hits
on the level just written: G_{i+1} of a 1024^2 batch is 50 MB, about the H200's L2). Measured
GB/s are owed to a GPU run. The reconstruction still writes each intermediate G_i (a fused
two-level reconstruction would cut another 2 sum_{i>=1} a_i).

The pyramid launchers (``gaussian_levels``, ``laplacian_pyramid``, ``laplacian_reconstruct``
and their adjoints ``pyr_down_levels_backward``, ``laplacian_pyramid_backward``,
``laplacian_reconstruct_backward``) split a pyramid at the first level of at most
``TAIL_PIXELS`` pixels per plane: larger levels go through ``_down_lap_kernel`` /
``_down_rows_kernel`` / ``_separable_kernel`` / ``_steps_kernel``, that level and the coarser
ones through one ``_chain_kernel`` launch (split into consecutive launches past 16 tensors). A
4-level 256 x 256 build is then 3 launches and its reconstruction 3; a full 9-level one 3 and
3 (were 16 and 8 with a launch per level and op). These launchers are what the CUDA registration in
fastpapers/ops/pyramid.py calls, and what the tests run under TRITON_INTERPRET=1;
:func:`counting` records each launch so a test can check how many a pyramid took.

Half and bfloat16 inputs accumulate in float32, float64 in float64; every level is stored in
the input dtype (as the one-launch-per-level path did). Weights are dyadic rationals (k/16,
k/8, and their sums at reflected borders), exact in float32.
"""
import contextlib
from functools import lru_cache
from typing import List, Sequence

import torch
import triton
import triton.language as tl

from ..reference import pyramid as _ref
from ..reference.pyramid import halving_sizes

# A level of at most this many pixels per plane, and every coarser one, is built by the chain
# kernel (one program per plane, 4 tiles of 32 x 32 at this size). 64 x 64 is a first guess at
# where one program per plane stops being cheaper than a launch per level; it was chosen without
# a GPU (none was available) and is to be tuned on one.
TAIL_PIXELS = 4096
# Pixels per tile of the chain kernel.
CHAIN_TILE = 1024

# A step descriptor is 13 int64: 0 source address, 1 destination address, 2 epilogue ("other")
# address or 0, 3 sign of the epilogue (-1, +1, or 0 for none), 4-5 input H, W, 6-7 output H,
# W, 8-9 offsets of the row and column tap tables, 10 tiles per row of tiles, 11 tiles per
# plane, 12 first program of the step (steps kernel).

_DTYPES = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32,
           torch.float64: tl.float64}

_log = None


@contextlib.contextmanager
def counting():
    """Record the kernel launches made inside the block: yields a list that receives one kernel
    name per launch ("separable", "steps" or "chain")."""
    global _log
    prev, _log = _log, []
    try:
        yield _log
    finally:
        _log = prev


def _launch(name, kernel, grid, *args, **kwargs):
    if _log is not None:
        _log.append(name)
    kernel[grid](*args, **kwargs)


@triton.jit
def _tile(x_base, out_base, other_base, sign, ri_ptr, rw_ptr, ci_ptr, cw_ptr, w_in, h_out, w_out, oh, ow,
          KH: tl.constexpr, KW: tl.constexpr, MAYBE_OTHER: tl.constexpr, ACC: tl.constexpr,
          CACHE: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """Output rows oh x columns ow of one plane: out = A_rows @ x @ A_cols^T, or
    other + sign * that when MAYBE_OTHER and sign != 0 (sign is -1.0, 0.0 or +1.0)."""
    mh = oh < h_out
    mw = ow < w_out
    acc = tl.zeros((BLOCK_H, BLOCK_W), dtype=ACC)
    for p in tl.static_range(KH):
        ih = tl.load(ri_ptr + oh * KH + p, mask=mh, other=0)
        wh = tl.load(rw_ptr + oh * KH + p, mask=mh, other=0.0).to(ACC)
        row = x_base + ih.to(tl.int64) * w_in
        part = tl.zeros((BLOCK_H, BLOCK_W), dtype=ACC)
        for q in tl.static_range(KW):
            iw = tl.load(ci_ptr + ow * KW + q, mask=mw, other=0)
            ww = tl.load(cw_ptr + ow * KW + q, mask=mw, other=0.0).to(ACC)
            v = tl.load(row[:, None] + iw[None, :], mask=mh[:, None] & mw[None, :], other=0.0,
                        cache_modifier=CACHE)
            part += v.to(ACC) * ww[None, :]
        acc += part * wh[:, None]
    offs = oh[:, None] * w_out + ow[None, :]
    mask = mh[:, None] & mw[None, :]
    if MAYBE_OTHER:
        has = sign != 0.0
        # has reaches the mask through an int: the interpreter cannot AND a bool block with a
        # bool scalar.
        omask = mask & ((offs * 0 + has.to(tl.int32)) != 0)
        o = tl.load(other_base + offs, mask=omask, other=0.0, cache_modifier=CACHE).to(ACC)
        acc = o + tl.where(has, sign, 1.0).to(ACC) * acc
    tl.store(out_base + offs, acc.to(out_base.dtype.element_ty), mask=mask)


@triton.jit
def _separable_kernel(x_ptr, out_ptr, other_ptr, ri_ptr, rw_ptr, ci_ptr, cw_ptr,
                      h_in, w_in, h_out, w_out, tiles_w, tiles_per_plane, alpha,
                      KH: tl.constexpr, KW: tl.constexpr, HAS_OTHER: tl.constexpr, ACC: tl.constexpr,
                      BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    pid = tl.program_id(0)
    plane = (pid // tiles_per_plane).to(tl.int64)
    tile = pid % tiles_per_plane
    oh = (tile // tiles_w) * BLOCK_H + tl.arange(0, BLOCK_H)
    ow = (tile % tiles_w) * BLOCK_W + tl.arange(0, BLOCK_W)
    out_off = plane * h_out * w_out
    _tile(x_ptr + plane * h_in * w_in, out_ptr + out_off, other_ptr + out_off, alpha, ri_ptr, rw_ptr, ci_ptr, cw_ptr,
          w_in, h_out, w_out, oh, ow, KH, KW, HAS_OTHER, ACC, "", BLOCK_H, BLOCK_W)


@triton.jit
def _pick(k, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15):
    """The address in slot k (0..15) of a launch's tensor addresses."""
    v = a0
    v = tl.where(k == 1, a1, v)
    v = tl.where(k == 2, a2, v)
    v = tl.where(k == 3, a3, v)
    v = tl.where(k == 4, a4, v)
    v = tl.where(k == 5, a5, v)
    v = tl.where(k == 6, a6, v)
    v = tl.where(k == 7, a7, v)
    v = tl.where(k == 8, a8, v)
    v = tl.where(k == 9, a9, v)
    v = tl.where(k == 10, a10, v)
    v = tl.where(k == 11, a11, v)
    v = tl.where(k == 12, a12, v)
    v = tl.where(k == 13, a13, v)
    v = tl.where(k == 14, a14, v)
    v = tl.where(k == 15, a15, v)
    return v


@triton.jit
def _step(d, plane, DT: tl.constexpr, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15):
    """Decode one 13-word step descriptor for image plane `plane`: the plane's source,
    destination and epilogue pointers (descriptor words 0-2 name slots of the launch's address
    arguments a0..a15), the epilogue sign, sizes, tap-table offsets and tiling."""
    h_in, w_in = tl.load(d + 4), tl.load(d + 5)
    h_out, w_out = tl.load(d + 6), tl.load(d + 7)
    out_off = plane * h_out * w_out
    src_addr = _pick(tl.load(d + 0), a0, a1, a2, a3, a4, a5, a6, a7,
                     a8, a9, a10, a11, a12, a13, a14, a15)
    src = src_addr.to(tl.pointer_type(DT)) + plane * h_in * w_in
    dst_addr = _pick(tl.load(d + 1), a0, a1, a2, a3, a4, a5, a6, a7,
                     a8, a9, a10, a11, a12, a13, a14, a15)
    dst = dst_addr.to(tl.pointer_type(DT)) + out_off
    # A step without epilogue has slot -1 there: point at dst instead (never read, sign 0).
    other_slot = tl.load(d + 2)
    other_addr = _pick(other_slot, a0, a1, a2, a3, a4, a5, a6, a7,
                       a8, a9, a10, a11, a12, a13, a14, a15)
    other = tl.where(other_slot >= 0, other_addr, dst_addr).to(tl.pointer_type(DT)) + out_off
    sign = tl.load(d + 3).to(tl.float32)
    return (src, dst, other, sign, w_in, h_out, w_out, tl.load(d + 8), tl.load(d + 9), tl.load(d + 10),
            tl.load(d + 11))


_SLOT_ARGS = [f"a{i}" for i in range(16)]


@triton.jit(do_not_specialize=_SLOT_ARGS)
def _steps_kernel(desc_ptr, n_steps, idx_ptr, wt_ptr,
                  a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15,
                  KH: tl.constexpr, KW: tl.constexpr, ACC: tl.constexpr,
                  DT: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    pid = tl.program_id(0)
    # The steps' programs are laid out one after the other; find this program's step.
    s = pid * 0
    for j in range(1, n_steps):
        s += (pid >= tl.load(desc_ptr + j * 13 + 12)).to(tl.int32)
    d = desc_ptr + s.to(tl.int64) * 13
    tiles = tl.load(d + 11)
    local = pid - tl.load(d + 12)
    plane = local // tiles
    tile = local % tiles
    src, dst, other, sign, w_in, h_out, w_out, ro, co, tiles_w, tiles = _step(
        d, plane, DT, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15)
    oh = ((tile // tiles_w) * BLOCK_H + tl.arange(0, BLOCK_H)).to(tl.int32)
    ow = ((tile % tiles_w) * BLOCK_W + tl.arange(0, BLOCK_W)).to(tl.int32)
    _tile(src, dst, other, sign, idx_ptr + ro, wt_ptr + ro, idx_ptr + co, wt_ptr + co, w_in, h_out, w_out, oh, ow,
          KH, KW, True, ACC, "", BLOCK_H, BLOCK_W)


@triton.jit(do_not_specialize=_SLOT_ARGS)
def _chain_kernel(desc_ptr, n_steps, idx_ptr, wt_ptr,
                  a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15,
                  KH: tl.constexpr, KW: tl.constexpr, ACC: tl.constexpr,
                  DT: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    plane = tl.program_id(0).to(tl.int64)
    for s in range(n_steps):
        src, dst, other, sign, w_in, h_out, w_out, ro, co, tiles_w, tiles = _step(
            desc_ptr + s * 13, plane, DT, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15)
        for tile in range(tiles):
            oh = ((tile // tiles_w) * BLOCK_H + tl.arange(0, BLOCK_H)).to(tl.int32)
            ow = ((tile % tiles_w) * BLOCK_W + tl.arange(0, BLOCK_W)).to(tl.int32)
            # ".cg" loads bypass L1: a step reads what other threads of this program wrote in
            # the step before, which the barrier below makes visible at L2.
            _tile(src, dst, other, sign, idx_ptr + ro, wt_ptr + ro, idx_ptr + co, wt_ptr + co, w_in, h_out, w_out,
                  oh, ow, KH, KW, True, ACC, ".cg", BLOCK_H, BLOCK_W)
        tl.debug_barrier()


@triton.jit
def _reflect101(p, n):
    """OpenCV's BORDER_REFLECT_101 index for p in [-2, n + 1] (one reflection suffices there
    for n >= 3; the second abs covers n = 2; n = 1 maps everything to 0)."""
    p = tl.abs(p)
    p = tl.where(p >= n, 2 * n - 2 - p, p)
    return tl.where(n == 1, 0, tl.abs(p))


@triton.jit
def _down_row(row_ptr, i0, i1, i2, i3, i4, m, ACC: tl.constexpr):
    """Horizontal [1, 4, 6, 4, 1] of one input row at the gathered columns i0..i4 (unscaled)."""
    v = tl.load(row_ptr + i0, mask=m, other=0.0).to(ACC) + tl.load(row_ptr + i4, mask=m, other=0.0).to(ACC)
    v += 4.0 * (tl.load(row_ptr + i1, mask=m, other=0.0).to(ACC) + tl.load(row_ptr + i3, mask=m, other=0.0).to(ACC))
    return v + 6.0 * tl.load(row_ptr + i2, mask=m, other=0.0).to(ACC)


@triton.jit
def _down_rows_kernel(x_ptr, out_ptr, h_in, w_in, h_out, w_out, tiles_w, row_blocks,
                      ACC: tl.constexpr, BLOCK_W: tl.constexpr, ROWS: tl.constexpr):
    """pyr_down streaming down a strip of BLOCK_W output columns, ROWS output rows per program.

    Output row r needs the horizontally filtered input rows 2r-2 .. 2r+2; the window of five
    slides by two rows per output row, so each program filters 2 new input rows per output row
    (10 gathered loads of BLOCK_W, not the 25 of a 5 x 5 tile body) and stores whole rows of
    BLOCK_W contiguous outputs. The column taps (reflect-101 at the borders) are computed once
    per program; no tap table is read."""
    pid = tl.program_id(0)
    per_plane = row_blocks * tiles_w
    plane = (pid // per_plane).to(tl.int64)
    rem = pid % per_plane
    r0 = (rem // tiles_w) * ROWS
    ow = (rem % tiles_w) * BLOCK_W + tl.arange(0, BLOCK_W)
    mw = ow < w_out
    c = 2 * tl.minimum(ow, w_out - 1)
    i0 = _reflect101(c - 2, w_in)
    i1 = _reflect101(c - 1, w_in)
    i2 = _reflect101(c, w_in)
    i3 = _reflect101(c + 1, w_in)
    i4 = _reflect101(c + 2, w_in)
    x_base = x_ptr + plane * h_in * w_in
    out_base = out_ptr + plane * h_out * w_out
    h0 = _down_row(x_base + _reflect101(2 * r0 - 2, h_in).to(tl.int64) * w_in, i0, i1, i2, i3, i4, mw, ACC)
    h1 = _down_row(x_base + _reflect101(2 * r0 - 1, h_in).to(tl.int64) * w_in, i0, i1, i2, i3, i4, mw, ACC)
    h2 = _down_row(x_base + _reflect101(2 * r0, h_in).to(tl.int64) * w_in, i0, i1, i2, i3, i4, mw, ACC)
    for i in range(0, tl.minimum(ROWS, h_out - r0)):
        r = r0 + i
        h3 = _down_row(x_base + _reflect101(2 * r + 1, h_in).to(tl.int64) * w_in, i0, i1, i2, i3, i4, mw, ACC)
        h4 = _down_row(x_base + _reflect101(2 * r + 2, h_in).to(tl.int64) * w_in, i0, i1, i2, i3, i4, mw, ACC)
        acc = (h0 + h4 + 4.0 * (h1 + h3) + 6.0 * h2) * (1.0 / 256.0)
        # The row address is computed, not carried through the loop, so that the compiler
        # keeps its alignment (w_out divisible by 16 at launch) and vectorises the store.
        tl.store(out_base + r.to(tl.int64) * w_out + ow, acc.to(out_ptr.dtype.element_ty), mask=mw)
        h0, h1, h2 = h2, h3, h4


@triton.jit
def _reflect_any(p, n):
    """BORDER_REFLECT_101 index of any p (reflect-101 is periodic with period 2n - 2)."""
    m = tl.maximum(2 * n - 2, 1)
    p = p % m
    p = tl.where(p < 0, p + m, p)
    p = tl.where(p >= n, m - p, p)
    return tl.where(n == 1, 0, p)


@triton.jit
def _h3(row_ptr, m0, m1, m2, m3, m4, z0, z1, z2, z3, z4, p0, p1, p2, p3, p4, mask, ACC: tl.constexpr):
    """One fine row filtered horizontally by pyr_down at the coarse columns c - 1, c, c + 1
    (unscaled), as three vectors."""
    return (_down_row(row_ptr, m0, m1, m2, m3, m4, mask, ACC), _down_row(row_ptr, z0, z1, z2, z3, z4, mask, ACC),
            _down_row(row_ptr, p0, p1, p2, p3, p4, mask, ACC))


@triton.jit
def _up_even_odd(gm, gz, gp):
    """A coarse row (at columns c - 1, c, c + 1) upsampled horizontally: fine columns 2c, 2c + 1."""
    return (gm + 6.0 * gz + gp) * 0.125, (gz + gp) * 0.5


@triton.jit
def _down_lap_kernel(g_ptr, g1_ptr, lap_ptr, h, w, nh, nw, tiles_w, row_blocks,
                     ACC: tl.constexpr, BLOCK_W: tl.constexpr, ROWS: tl.constexpr):
    """One Laplacian level pair in one pass: G_{i+1} = pyr_down(G_i) and L_i = G_i -
    pyr_up(G_{i+1}), G_i read once from DRAM.

    A program owns BLOCK_W coarse columns c and ROWS coarse rows. It streams down the fine rows
    as _down_rows_kernel does, at the three coarse columns c - 1, c, c + 1 that pyr_up needs
    (pyr_up's border rule: column -1 is column 1, column nw is nw - 1), and keeps three coarse
    rows s - 1, s, s + 1 (same rule for rows) to emit the fine rows 2s, 2s + 1 of L_i, whose
    even / odd columns are interleaved into contiguous vector stores. Coarse values are rounded
    to the storage dtype before pyr_up, so L_i is exactly G_i - pyr_up(stored G_{i+1}) and the
    reconstruction from the stored levels is consistent. Each coarse row costs 2 fine rows x 15
    gathered loads; the halo (coarse row s0 - 1 and the first fine rows) is recomputed per
    program."""
    DT = g1_ptr.dtype.element_ty
    pid = tl.program_id(0)
    per_plane = row_blocks * tiles_w
    plane = (pid // per_plane).to(tl.int64)
    rem = pid % per_plane
    s0 = (rem // tiles_w) * ROWS
    c_out = (rem % tiles_w) * BLOCK_W + tl.arange(0, BLOCK_W)
    mc = c_out < nw
    c = tl.minimum(c_out, nw - 1)
    cm = tl.where(c == 0, tl.minimum(1, nw - 1), c - 1)
    cp = tl.minimum(c + 1, nw - 1)
    m0, m1, m2, m3, m4 = (_reflect_any(2 * cm - 2, w), _reflect_any(2 * cm - 1, w), _reflect_any(2 * cm, w),
                          _reflect_any(2 * cm + 1, w), _reflect_any(2 * cm + 2, w))
    z0, z1, z2, z3, z4 = (_reflect_any(2 * c - 2, w), _reflect_any(2 * c - 1, w), _reflect_any(2 * c, w),
                          _reflect_any(2 * c + 1, w), _reflect_any(2 * c + 2, w))
    p0, p1, p2, p3, p4 = (_reflect_any(2 * cp - 2, w), _reflect_any(2 * cp - 1, w), _reflect_any(2 * cp, w),
                          _reflect_any(2 * cp + 1, w), _reflect_any(2 * cp + 2, w))
    g_base = g_ptr + plane * h * w
    # Fine rows 2r - 2 .. 2r for the first coarse row computed, r = s0 - 1 (garbage when
    # s0 = 0: that row is then replaced by row 1 below, pyr_up's rule).
    r = s0 - 1
    a_m, a_z, a_p = _h3(g_base + _reflect_any(2 * r - 2, h).to(tl.int64) * w, m0, m1, m2, m3, m4, z0, z1, z2, z3,
                        z4, p0, p1, p2, p3, p4, mc, ACC)
    b_m, b_z, b_p = _h3(g_base + _reflect_any(2 * r - 1, h).to(tl.int64) * w, m0, m1, m2, m3, m4, z0, z1, z2, z3,
                        z4, p0, p1, p2, p3, p4, mc, ACC)
    e_m, e_z, e_p = _h3(g_base + _reflect_any(2 * r, h).to(tl.int64) * w, m0, m1, m2, m3, m4, z0, z1, z2, z3,
                        z4, p0, p1, p2, p3, p4, mc, ACC)
    gm_m, gm_z, gm_p = e_m, e_m, e_m
    g0_m, g0_z, g0_p = e_m, e_m, e_m
    n_rows = tl.minimum(ROWS, nh - s0)
    # Step j computes coarse row r = s0 - 1 + j from the window (a, b, e) and 2 new fine rows;
    # from j = 2 on it emits coarse row s = r - 1.
    for j in range(0, n_rows + 2):
        r = s0 - 1 + j
        d_m, d_z, d_p = _h3(g_base + _reflect_any(2 * r + 1, h).to(tl.int64) * w, m0, m1, m2, m3, m4, z0, z1, z2,
                            z3, z4, p0, p1, p2, p3, p4, mc, ACC)
        f_m, f_z, f_p = _h3(g_base + _reflect_any(2 * r + 2, h).to(tl.int64) * w, m0, m1, m2, m3, m4, z0, z1, z2,
                            z3, z4, p0, p1, p2, p3, p4, mc, ACC)
        k = 1.0 / 256.0
        gp_m = ((a_m + f_m + 4.0 * (b_m + d_m) + 6.0 * e_m) * k).to(DT).to(ACC)
        gp_z = ((a_z + f_z + 4.0 * (b_z + d_z) + 6.0 * e_z) * k).to(DT).to(ACC)
        gp_p = ((a_p + f_p + 4.0 * (b_p + d_p) + 6.0 * e_p) * k).to(DT).to(ACC)
        a_m, a_z, a_p = e_m, e_z, e_p
        b_m, b_z, b_p = d_m, d_z, d_p
        e_m, e_z, e_p = f_m, f_z, f_p
        if j >= 2:
            s = r - 1
            # pyr_up's border rule: coarse row nh is row nh - 1, row -1 is row 1 (0 if nh = 1).
            last = s + 1 >= nh
            gp_m = tl.where(last, g0_m, gp_m)
            gp_z = tl.where(last, g0_z, gp_z)
            gp_p = tl.where(last, g0_p, gp_p)
            first = s == 0
            um_m = tl.where(first, gp_m, gm_m)
            um_z = tl.where(first, gp_z, gm_z)
            um_p = tl.where(first, gp_p, gm_p)
            tl.store(g1_ptr + plane * nh * nw + s.to(tl.int64) * nw + c_out, g0_z.to(DT), mask=mc)
            me, mo = _up_even_odd(um_m, um_z, um_p)
            ze, zo = _up_even_odd(g0_m, g0_z, g0_p)
            pe, po = _up_even_odd(gp_m, gp_z, gp_p)
            fine_col = 2 * (rem % tiles_w) * BLOCK_W + tl.arange(0, 2 * BLOCK_W)
            mf = fine_col < w
            row0 = 2 * s.to(tl.int64) * w + fine_col
            up0 = tl.reshape(tl.join((me + 6.0 * ze + pe) * 0.125, (mo + 6.0 * zo + po) * 0.125), (2 * BLOCK_W,))
            fine0 = tl.load(g_base + row0, mask=mf, other=0.0).to(ACC)
            tl.store(lap_ptr + plane * h * w + row0, (fine0 - up0).to(DT), mask=mf)
            m1row = mf & (2 * s + 1 < h)
            up1 = tl.reshape(tl.join((ze + pe) * 0.5, (zo + po) * 0.5), (2 * BLOCK_W,))
            fine1 = tl.load(g_base + row0 + w, mask=m1row, other=0.0).to(ACC)
            tl.store(lap_ptr + plane * h * w + row0 + w, (fine1 - up1).to(DT), mask=m1row)
        gm_m, gm_z, gm_p = g0_m, g0_z, g0_p
        g0_m, g0_z, g0_p = gp_m, gp_z, gp_p


def _acc(dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _warps(kh, kw):
    # ptxas for sm_90 (Triton 3.8, float32, 1024-output tile): with 5 x 5 taps and 4 warps the
    # tile body needs 255 registers and spills (72 bytes in _separable_kernel); with 8 warps
    # 184-188 and no spill, at the same 8 warps per SM. 3 x 3 taps fit 4 warps (96-123
    # registers). Static counts only: not yet timed on a GPU.
    return 8 if kh * kw > 9 else 4


# --- tap tables ----------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def _taps(kind: str, n: int, m: int, vertical: bool):
    """Tap rows of one 1-D operator, n and m being the forward op's input and output lengths:
    "down" (n -> ceil(n/2)), "up" (n -> m), and the adjoints "down_t" (ceil(n/2) -> n) and
    "up_t" (m -> n)."""
    if kind == "down":
        return _ref.down_taps(n)
    if kind == "up":
        return _ref.up_taps(n, m, vertical)
    if kind == "down_t":
        return _ref.transpose_taps(_ref.down_taps(n), n)
    return _ref.transpose_taps(_ref.up_taps(n, m, vertical), n)


def _padded(rows, k):
    idx = [[j for j, _ in r] + [0] * (k - len(r)) for r in rows]
    wt = [[w for _, w in r] + [0.0] * (k - len(r)) for r in rows]
    return idx, wt


def tap_table(rows, device) -> tuple:
    """Tap rows of a 1-D operator (per output: a sequence of (input index, weight)) ->
    (idx int32 [n_out, K], weight float32 [n_out, K]), padded with (0, 0.0)."""
    k = max([1] + [len(r) for r in rows])
    idx, wt = _padded(rows, k)
    return (torch.tensor(idx, dtype=torch.int32).reshape(len(rows), k).to(device),
            torch.tensor(wt, dtype=torch.float32).reshape(len(rows), k).to(device))


@lru_cache(maxsize=512)
def _op_table(kind, n, m, vertical, device):
    return tap_table(_taps(kind, n, m, vertical), device)


def op_tables(kind: str, in_hw, out_hw, device) -> tuple:
    """(rows, cols) tap tables of a 2-D op on ``device``; in_hw / out_hw are the forward op's
    input / output sizes (as in :func:`_taps`)."""
    return (_op_table(kind, in_hw[0], out_hw[0], True, device), _op_table(kind, in_hw[1], out_hw[1], False, device))


@lru_cache(maxsize=256)
def _packed_tables(ops: tuple, device):
    """All tap tables of a list of steps in two flat buffers. ops: per step (kind, in_hw, out_hw).
    Returns (idx int32, wt float32, [(row offset, col offset)] per step, KH, KW); every row
    table is padded to KH taps, every column table to KW."""
    rows = [_taps(kind, i[0], o[0], True) for kind, i, o in ops]
    cols = [_taps(kind, i[1], o[1], False) for kind, i, o in ops]
    kh = max(len(r) for t in rows for r in t)
    kw = max(len(r) for t in cols for r in t)
    idx, wt, offsets = [], [], []

    def append(table, k):
        i, w = _padded(table, k)
        idx.extend(v for row in i for v in row)
        wt.extend(v for row in w for v in row)

    for r, c in zip(rows, cols):
        ro = len(idx)
        append(r, kh)
        offsets.append((ro, len(idx)))
        append(c, kw)
    return (torch.tensor(idx, dtype=torch.int32).to(device), torch.tensor(wt, dtype=torch.float32).to(device),
            tuple(offsets), kh, kw)


# --- launchers -----------------------------------------------------------------------------


def separable(x: torch.Tensor, rows: tuple, cols: tuple, other: torch.Tensor = None, alpha: float = 1.0,
              out: torch.Tensor = None) -> torch.Tensor:
    """out[b, c] = A_rows @ x[b, c] @ A_cols^T (+ other and alpha: other + alpha * that, alpha
    being -1 or +1).

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
    key = (b * c, h_in, w_in, h_out, w_out, ri.shape[1], ci.shape[1], other is not None, x.dtype)
    plan = _SEPARABLE_PLANS.get(key)
    if plan is None:
        plan = _remember(_SEPARABLE_PLANS, key, _separable_plan(*key))
    grid, scalars, kwargs = plan
    _launch("separable", _separable_kernel, grid, x, out, out if other is None else other, ri, rw, ci, cw,
            *scalars, float(alpha), **kwargs)
    return out


# Launch plans: everything a launch needs that depends only on shapes and dtypes (grid,
# tiling, constexprs; for the step kernels also the packed tap tables and the descriptor rows
# without their addresses), built once per key. A launch then costs a dict lookup and the
# kernel call: building them per call (triton.cdiv alone is a ~4 us Python call) took ~300 us
# of Python per 4-level round trip, measured on the CPU with the kernel launch stubbed out.
_SEPARABLE_PLANS = {}
_STEP_PLANS = {}


# Each plan dict is emptied when it reaches this many entries (a program that sweeps shapes
# must not grow them without bound).
MAX_PLANS = 1024


def _remember(plans: dict, key, value):
    if len(plans) >= MAX_PLANS:
        plans.clear()
    plans[key] = value
    return value


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def _separable_plan(planes, h_in, w_in, h_out, w_out, kh, kw, has_other, dtype):
    # 16 x 64 tiles: rows of 64 contiguous outputs coalesce, and 1024 outputs per program
    # amortise the tap-table loads; tiny levels shrink the tile instead of masking most of it.
    block_w = min(64, _pow2(w_out))
    block_h = min(16, _pow2(h_out))
    tiles_w = _cdiv(w_out, block_w)
    tiles = tiles_w * _cdiv(h_out, block_h)
    kwargs = dict(KH=kh, KW=kw, HAS_OTHER=has_other, ACC=_acc(dtype), BLOCK_H=block_h, BLOCK_W=block_w,
                  num_warps=_warps(kh, kw))
    return (planes * tiles,), (h_in, w_in, h_out, w_out, tiles_w, tiles), kwargs


class _Step:
    """dst = A(src), or other + sign * A(src); A is the 2-D op ``kind`` (see :func:`_taps`)
    whose forward form maps in_hw to out_hw."""
    __slots__ = ("kind", "in_hw", "out_hw", "src", "dst", "other", "sign")

    def __init__(self, kind, in_hw, out_hw, src, dst, other=None, sign=0):
        self.kind, self.in_hw, self.out_hw = kind, tuple(in_hw), tuple(out_hw)
        self.src, self.dst, self.other, self.sign = src, dst, other, sign


def _down_step(src, dst):
    return _Step("down", _hw(src), _hw(dst), src, dst)


def _up_step(src, dst, other, sign):
    return _Step("up", _hw(src), _hw(dst), src, dst, other, sign)


# Tensors a steps / chain launch can address: its descriptor table names them by slot, and
# their addresses go as the kernel arguments a0..a15, so the table depends on shapes alone and
# is uploaded once per plan. A pyramid whose launch would need more tensors (more than ~8
# levels in one chain) is split into consecutive launches. At most len(_SLOT_ARGS).
SLOTS = 16


class _StepPlan:
    """What a steps / chain launch needs besides its tensors' addresses: kernel, grid, tap
    tables, the descriptor table on the device, constexprs."""
    __slots__ = ("kernel", "grid", "desc", "n_steps", "idx", "wt", "kwargs")


def _upload(rows, device) -> torch.Tensor:
    desc = torch.tensor(rows, dtype=torch.int64)
    if device.type == "cuda":
        # Pinned and asynchronous: a pageable copy would make the host wait for the GPU. Once
        # per plan; the upload is ordered on the stream current at that first call, and a
        # later call from another stream relies on that copy of a few hundred bytes having
        # finished. Not safe under CUDA-graph capture: a captured launch keeps the table's
        # address, which a later eviction of the plan frees.
        desc = desc.pin_memory().to(device, non_blocking=True)
    return desc


def _step_plan(name, planes, dtype, device, signature):
    """signature: per step (kind, in_hw, out_hw, dst_hw, src slot, dst slot, other slot or -1,
    sign)."""
    h = max(s[3][0] for s in signature)
    w = max(s[3][1] for s in signature)
    if name == "steps":
        block_h, block_w = min(16, _pow2(h)), min(64, _pow2(w))
    else:
        # The tile follows the largest level's shape (a 1 x N level gets a 1 x 1024 tile, not
        # 32 rows of masked lanes); coarser levels fit in fewer tiles.
        block_w = min(_pow2(w), CHAIN_TILE)
        block_h = min(_pow2(h), CHAIN_TILE // block_w)
    idx, wt, offsets, kh, kw = _packed_tables(tuple(sig[:3] for sig in signature), device)
    rows, first = [], 0
    for (kind, in_hw, out_hw, dst_hw, src, dst, other, sign), (ro, co) in zip(signature, offsets):
        tiles_w = _cdiv(dst_hw[1], block_w)
        tiles = tiles_w * _cdiv(dst_hw[0], block_h)
        src_hw = in_hw if kind in ("down", "up") else out_hw
        rows.append([src, dst, other, sign if other >= 0 else 0, src_hw[0], src_hw[1], dst_hw[0], dst_hw[1], ro, co,
                     tiles_w, tiles, first])
        first += planes * tiles
    plan = _StepPlan()
    plan.kernel, plan.grid = (_steps_kernel, (first,)) if name == "steps" else (_chain_kernel, (planes,))
    plan.desc, plan.n_steps, plan.idx, plan.wt = _upload(rows, device), len(rows), idx, wt
    plan.kwargs = dict(KH=kh, KW=kw, ACC=_acc(dtype), DT=_DTYPES[dtype], BLOCK_H=block_h, BLOCK_W=block_w,
                       num_warps=_warps(kh, kw))
    return plan


def _slot_groups(steps):
    """Split steps (in order) into runs that address at most SLOTS distinct tensors each; per
    run, (steps, their (src, dst, other) slots, the slots' addresses)."""
    groups, cur, slots, addresses = [], [], [], {}
    for s in steps:
        ptrs = [s.src.data_ptr(), s.dst.data_ptr()] + ([] if s.other is None else [s.other.data_ptr()])
        if cur and len(addresses) + sum(p not in addresses for p in set(ptrs)) > SLOTS:
            groups.append((cur, slots, list(addresses)))
            cur, slots, addresses = [], [], {}
        for ptr in ptrs:
            addresses.setdefault(ptr, len(addresses))
        cur.append(s)
        slots.append((addresses[ptrs[0]], addresses[ptrs[1]], addresses[ptrs[2]] if s.other is not None else -1))
    groups.append((cur, slots, list(addresses)))
    return groups


def _run(name, steps: List[_Step]):
    """Launch ``steps`` (all on contiguous tensors of one dtype and B x C planes) as one
    _steps_kernel (name "steps", independent steps, grid over every tile of every step) or one
    _chain_kernel (name "chain", in order, one program per plane); more launches of the same
    kernel, in order, where the steps address more than SLOTS tensors."""
    if not steps:
        return
    dst = steps[0].dst
    planes = dst.shape[0] * dst.shape[1]
    # The kernels read every step's tensors through one element type and one plane count.
    for s in steps:
        for t in (s.src, s.dst, s.other):
            if t is not None and (t.dtype != dst.dtype or t.shape[0] * t.shape[1] != planes):
                raise ValueError(f"pyramid levels must share one dtype and batch x channels: got "
                                 f"{tuple(t.shape)} {t.dtype}, expected {dst.dtype} with {planes} planes")
    if planes == 0:
        return
    device = dst.device
    for group, slots, addresses in _slot_groups(steps):
        signature = tuple((s.kind, s.in_hw, s.out_hw, _hw(s.dst)) + sl + (s.sign,) for s, sl in zip(group, slots))
        key = (name, planes, dst.dtype, device, signature, CHAIN_TILE)
        plan = _STEP_PLANS.get(key)
        if plan is None:
            plan = _remember(_STEP_PLANS, key, _step_plan(name, planes, dst.dtype, device, signature))
        addresses += [addresses[0]] * (len(_SLOT_ARGS) - len(addresses))
        _launch(name, plan.kernel, plan.grid, plan.desc, plan.n_steps, plan.idx, plan.wt, *addresses, **plan.kwargs)


def _run_steps(steps):
    _run("steps", steps)


def _run_chain(steps):
    _run("chain", steps)


def _hw(t):
    return t.shape[2], t.shape[3]


def _empty(x, hw):
    return x.new_empty((x.shape[0], x.shape[1]) + tuple(hw))


def first_small_level(sizes: Sequence) -> int:
    """Index of the first level of at most TAIL_PIXELS pixels (len(sizes) if none): it and the
    coarser levels go through the chain kernel."""
    for i, (h, w) in enumerate(sizes):
        if h * w <= TAIL_PIXELS:
            return i
    return len(sizes)


# Output rows per program of _down_rows_kernel: the window's first three filtered rows are an
# overhead of 3 / (2 * ROWS) loads per output row (9 % at 16).
DOWN_ROWS = 16
_DOWN_PLANS = {}


def _down_plan(planes, h, w, dtype):
    h_out, w_out = (h + 1) // 2, (w + 1) // 2
    # Strips of up to 256 columns: 4 warps hold 2 contiguous outputs per thread per row.
    block_w = min(256, _pow2(w_out))
    tiles_w = _cdiv(w_out, block_w)
    row_blocks = _cdiv(h_out, DOWN_ROWS)
    return ((planes * row_blocks * tiles_w,), (h, w, h_out, w_out, tiles_w, row_blocks),
            dict(ACC=_acc(dtype), BLOCK_W=block_w, ROWS=DOWN_ROWS, num_warps=4 if block_w >= 128 else 1))


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    """cv2.pyrDown of every plane: one launch of the row-streaming kernel."""
    x = x.contiguous()
    b, c, h, w = x.shape
    out = x.new_empty((b, c, (h + 1) // 2, (w + 1) // 2))
    if out.numel() == 0:
        return out
    key = (b * c, h, w, x.dtype, DOWN_ROWS)
    plan = _DOWN_PLANS.get(key)
    if plan is None:
        plan = _remember(_DOWN_PLANS, key, _down_plan(b * c, h, w, x.dtype))
    grid, scalars, kwargs = plan
    _launch("down", _down_rows_kernel, grid, x, out, *scalars, **kwargs)
    return out


def pyr_up(x: torch.Tensor, size, other: torch.Tensor = None, alpha: float = 1.0) -> torch.Tensor:
    return separable(x, *op_tables("up", _hw(x), tuple(size), x.device), other=other, alpha=alpha)


def pyr_down_backward(grad: torch.Tensor, input_size) -> torch.Tensor:
    return separable(grad, *op_tables("down_t", tuple(input_size), _hw(grad), grad.device))


def pyr_up_backward(grad: torch.Tensor, input_size) -> torch.Tensor:
    return separable(grad, *op_tables("up_t", tuple(input_size), _hw(grad), grad.device))


def gaussian_levels(x: torch.Tensor, count: int) -> List[torch.Tensor]:
    """[pyr_down(x), pyr_down(pyr_down(x)), ...], ``count`` tensors: one launch per large level,
    one for all the small ones."""
    x = x.contiguous()
    sizes = halving_sizes(x.shape[2], x.shape[3], count + 1)
    k = first_small_level(sizes)
    out = [x]
    for _ in range(min(k, count)):
        out.append(pyr_down(out[-1]))
    chain = []
    for i in range(len(out) - 1, count):
        out.append(_empty(x, sizes[i + 1]))
        chain.append(_down_step(out[i], out[i + 1]))
    _run_chain(chain)
    return out[1:]


# Coarse rows per program of _down_lap_kernel: the halo (1 coarse row, 3 fine rows) is an
# overhead of about 3.5 / (2 * ROWS) of the loads (11 % at 16).
LAP_ROWS = 16
_LAP_PLANS = {}


def _lap_plan(planes, h, w, dtype):
    nh, nw = (h + 1) // 2, (w + 1) // 2
    # Up to 128 coarse columns (256 fine) per program: 4 warps, one coarse column per thread,
    # whose two fine outputs are stored together.
    block_w = min(128, _pow2(nw))
    tiles_w = _cdiv(nw, block_w)
    row_blocks = _cdiv(nh, LAP_ROWS)
    return ((planes * row_blocks * tiles_w,), (h, w, nh, nw, tiles_w, row_blocks),
            dict(ACC=_acc(dtype), BLOCK_W=block_w, ROWS=LAP_ROWS,
                 num_warps=4 if block_w >= 128 else 2 if block_w >= 64 else 1))


def down_and_residual(g: torch.Tensor):
    """(pyr_down(g), g - pyr_up(pyr_down(g))) of a contiguous level in one launch."""
    b, c, h, w = g.shape
    coarse = g.new_empty((b, c, (h + 1) // 2, (w + 1) // 2))
    lap = torch.empty_like(g)
    if g.numel() == 0:
        return coarse, lap
    key = (b * c, h, w, g.dtype, LAP_ROWS)
    plan = _LAP_PLANS.get(key)
    if plan is None:
        plan = _remember(_LAP_PLANS, key, _lap_plan(*key[:4]))
    grid, scalars, kwargs = plan
    _launch("lap", _down_lap_kernel, grid, g, coarse, lap, *scalars, **kwargs)
    return coarse, lap


def laplacian_pyramid(x: torch.Tensor, levels: int) -> List[torch.Tensor]:
    """[G_0 - up(G_1), ..., G_{n-2} - up(G_{n-1}), G_{n-1}]. Each large level: one launch that
    reads G_i once and writes G_{i+1} and L_i; the small levels (their Gaussian levels and
    residuals) in one chain launch."""
    x = x.contiguous()
    if levels == 1:
        return [x.clone()]
    sizes = halving_sizes(x.shape[2], x.shape[3], levels)
    k = first_small_level(sizes)
    gauss, laps = [x], []
    for _ in range(min(k, levels - 1)):
        coarse, lap = down_and_residual(gauss[-1])
        gauss.append(coarse)
        laps.append(lap)
    laps += [_empty(x, hw) for hw in sizes[len(laps):-1]]
    chain = []
    for i in range(len(gauss) - 1, levels - 1):
        gauss.append(_empty(x, sizes[i + 1]))
        chain += [_down_step(gauss[i], gauss[i + 1]), _up_step(gauss[i + 1], laps[i], gauss[i], -1)]
    _run_chain(chain)
    return laps + [gauss[-1]]


def laplacian_reconstruct(pyramid: Sequence[torch.Tensor]) -> torch.Tensor:
    """G_{n-1} = pyramid[-1], G_i = pyramid[i] + pyr_up(G_{i+1}): the small levels in one chain
    launch, then one launch per large level."""
    pyramid = [p.contiguous() for p in pyramid]
    n = len(pyramid)
    if n == 1:
        return pyramid[0].clone()
    k = first_small_level([_hw(p) for p in pyramid])
    g = pyramid[-1]
    chain = []
    for i in range(n - 2, max(k, 0) - 1, -1):
        dst = torch.empty_like(pyramid[i])
        chain.append(_up_step(g, dst, pyramid[i], 1))
        g = dst
    _run_chain(chain)
    for i in range(min(k, n - 1) - 1, -1, -1):
        g = pyr_up(g, _hw(pyramid[i]), other=pyramid[i], alpha=1.0)
    return g


# --- adjoints of the whole-pyramid ops (their backward) ------------------------------------


def _down_t_step(src, dst, other=None, sign=0):
    """dst = D^T src (+ other with sign), D being pyr_down from dst's size to src's."""
    return _Step("down_t", _hw(dst), _hw(src), src, dst, other, sign)


def _up_t_step(src, dst, other=None, sign=0):
    """dst = U^T src (+ other with sign), U being pyr_up from dst's size to src's."""
    return _Step("up_t", _hw(dst), _hw(src), src, dst, other, sign)


def _down_t(src, size, other=None):
    return separable(src, *op_tables("down_t", tuple(size), _hw(src), src.device), other=other, alpha=1.0)


def pyr_down_levels_backward(grads: Sequence[torch.Tensor], input_size) -> torch.Tensor:
    """Adjoint of :func:`gaussian_levels`: with G_{i+1} = D_i G_i, dG_i = g_i + D_i^T dG_{i+1}
    from the coarsest level, and dx = D_0^T dG_1. The small levels (the start of this chain) in
    one chain launch, then one launch per large level."""
    grads = [g.contiguous() for g in grads]
    sizes = [tuple(input_size)] + [_hw(g) for g in grads]
    count = len(grads)
    k = first_small_level(sizes)
    acc = grads[-1]
    chain = []
    for i in range(count - 1, k - 1, -1):
        dst = _empty(acc, sizes[i])
        chain.append(_down_t_step(acc, dst, grads[i - 1] if i > 0 else None, 1 if i > 0 else 0))
        acc = dst
    _run_chain(chain)
    for i in range(min(k, count) - 1, -1, -1):
        acc = _down_t(acc, sizes[i], grads[i - 1] if i > 0 else None)
    return acc


def laplacian_pyramid_backward(grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """Adjoint of :func:`laplacian_pyramid`: dG_i = T_i + D_i^T dG_{i+1} from the coarsest
    level, with T_i = dL_i - U_{i-1}^T dL_{i-1} (T_0 = dL_0, dG_{n-1} = T_{n-1}). The T_i of the
    large levels are independent: one steps launch; the small levels (T_i and dG_i) one chain
    launch; then one launch per large level."""
    grads = [g.contiguous() for g in grads]
    n = len(grads)
    if n == 1:
        return grads[0].clone()
    sizes = [_hw(g) for g in grads]
    k = first_small_level(sizes)
    t = [grads[0]] + [_empty(grads[0], hw) for hw in sizes[1:]]
    acc = None
    chain = []
    for i in range(n - 1, k - 1, -1):
        if i > 0:
            chain.append(_up_t_step(grads[i - 1], t[i], grads[i], -1))
        if acc is None:
            acc = t[i]
        else:
            dst = _empty(acc, sizes[i])
            chain.append(_down_t_step(acc, dst, t[i], 1))
            acc = dst
    _run_steps([_up_t_step(grads[i - 1], t[i], grads[i], -1) for i in range(1, min(k, n))])
    _run_chain(chain)
    for i in range(min(k, n) - 1, -1, -1):
        acc = t[i] if acc is None else _down_t(acc, sizes[i], t[i])
    return acc


def laplacian_reconstruct_backward(grad: torch.Tensor, heights: Sequence[int],
                                   widths: Sequence[int]) -> List[torch.Tensor]:
    """Adjoint of :func:`laplacian_reconstruct` below level 0: [U_0^T g, U_1^T U_0^T g, ...] for
    levels of sizes heights[i] x widths[i] (level 1 first). One launch per large level, then the
    small ones in one chain launch."""
    sizes = [_hw(grad)] + list(zip(heights, widths))
    k = first_small_level(sizes)
    levels = [grad.contiguous()]
    for i in range(1, min(k, len(sizes))):
        levels.append(separable(levels[-1], *op_tables("up_t", sizes[i], sizes[i - 1], grad.device)))
    chain = []
    for i in range(max(k, 1), len(sizes)):
        levels.append(_empty(grad, sizes[i]))
        chain.append(_up_t_step(levels[i - 1], levels[i]))
    _run_chain(chain)
    return levels[1:]
