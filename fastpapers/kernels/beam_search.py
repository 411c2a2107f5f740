"""Triton kernels of the fused beam-search step (CUDA path of ``fastpapers::beam_search_step``).

Two launches, after FasterTransformer's online-softmax beam kernels:

1. ``_tile_kernel``, grid (B*K rows, vocabulary tiles): each program reads one tile of one
   row once and writes the tile's max, its sum of exp(x - max) and its top-C logits (banned
   tokens count as -inf). Splitting the vocabulary across programs keeps the GPU busy when
   B*K is small (batch 1: 5 rows would otherwise be 5 programs).
2. ``_merge_kernel``, grid (B sentences): combines each row's tile normalisers into
   log-sum-exp, turns the K*tiles*C kept logits into log_softmax + beam score and selects
   the sentence's top-C, equal scores by lower flat index beam*V + token.

Everything is computed in float32 (inputs may be fp16/bf16/fp32).
"""
import torch
import triton
import triton.language as tl

__all__ = ["beam_search_step", "pick_tile"]


@triton.jit
def _tile_kernel(x_ptr, banned_ptr, part_m_ptr, part_s_ptr, part_val_ptr, part_idx_ptr,
                 V, stride_x, NB, n_tiles,
                 C: tl.constexpr, TILE: tl.constexpr):
    row = tl.program_id(0)
    tile = tl.program_id(1)
    offs = tile * TILE + tl.arange(0, TILE)
    valid = offs < V
    x = tl.load(x_ptr + row.to(tl.int64) * stride_x + offs, mask=valid, other=float("-inf")).to(tl.float32)
    m = tl.max(x, axis=0)
    # A tile of -inf logits (masked tokens) adds nothing; exp(-inf - -inf) would be NaN.
    e = tl.where(valid & (x > float("-inf")), tl.exp(x - m), 0.0)
    s = tl.sum(e, axis=0)
    part = row * n_tiles + tile
    tl.store(part_m_ptr + part, m)
    tl.store(part_s_ptr + part, s)
    # Processors run after log_softmax in transformers: banned tokens still count in the
    # normaliser above, and rank as -inf below.
    for b in range(NB):
        t = tl.load(banned_ptr + row * NB + b)
        x = tl.where(offs == t, float("-inf"), x)
    alive = valid
    big = 2147483647
    for c in tl.static_range(C):
        v = tl.max(tl.where(alive, x, float("-inf")), axis=0)
        i = tl.min(tl.where(alive & (x == v), offs, big), axis=0)
        alive = alive & (offs != i)
        tl.store(part_val_ptr + part * C + c, v)
        tl.store(part_idx_ptr + part * C + c, i)


@triton.jit
def _merge_kernel(part_m_ptr, part_s_ptr, part_val_ptr, part_idx_ptr, beam_ptr, out_val_ptr, out_idx_ptr,
                  V, K, n_tiles,
                  C: tl.constexpr, KP: tl.constexpr, TP: tl.constexpr, TCP: tl.constexpr):
    b = tl.program_id(0)
    k = tl.arange(0, KP)
    rows = b * K + k
    row_ok = k < K
    t = tl.arange(0, TP)
    ms = tl.load(part_m_ptr + rows[:, None] * n_tiles + t[None, :],
                 mask=row_ok[:, None] & (t[None, :] < n_tiles), other=float("-inf"))
    ss = tl.load(part_s_ptr + rows[:, None] * n_tiles + t[None, :],
                 mask=row_ok[:, None] & (t[None, :] < n_tiles), other=0.0)
    row_m = tl.max(ms, axis=1)
    row_m_safe = tl.where(row_m > float("-inf"), row_m, 0.0)
    row_s = tl.sum(tl.where(ss > 0.0, ss * tl.exp(ms - row_m_safe[:, None]), 0.0), axis=1)
    log_s = tl.log(tl.where(row_ok, row_s, 1.0))
    bsc = tl.load(beam_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
    j = tl.arange(0, TCP)
    j_ok = j < n_tiles * C
    ok = row_ok[:, None] & j_ok[None, :]
    raw = tl.load(part_val_ptr + rows[:, None] * (n_tiles * C) + j[None, :], mask=ok, other=float("-inf"))
    tok = tl.load(part_idx_ptr + rows[:, None] * (n_tiles * C) + j[None, :], mask=ok, other=2147483647)
    alive = ok & (tok < V)
    vals = ((raw - row_m_safe[:, None]) - log_s[:, None]) + bsc[:, None]
    flat = k[:, None].to(tl.int64) * V + tok.to(tl.int64)
    big = 9223372036854775807
    for c in tl.static_range(C):
        v = tl.max(tl.max(tl.where(alive, vals, float("-inf")), axis=1), axis=0)
        i = tl.min(tl.min(tl.where(alive & (vals == v), flat, big), axis=1), axis=0)
        alive = alive & (flat != i)
        tl.store(out_val_ptr + b * C + c, v)
        tl.store(out_idx_ptr + b * C + c, i)


def pick_tile(rows: int, vocab: int) -> int:
    """Tile width: small batches split the vocabulary finely so that rows x tiles fills an
    H100's 132 SMs several times over; at most 64 tiles per row keep the merge in registers."""
    full = triton.next_power_of_2(max(vocab, 1))
    tile = 1024 if rows < 256 else 4096
    tile = max(tile, triton.next_power_of_2(triton.cdiv(vocab, 64)))
    return min(tile, full)


def beam_search_step(logits: torch.Tensor, beam_scores: torch.Tensor, num_beams: int, num_candidates: int,
                     banned=None, tile=None):
    """Launch both kernels: logits [B*K, V], beam_scores [B*K] -> (scores [B, C] float32,
    flat indices [B, C] int64). ``banned`` is int64 [B*K, M] (-1 = unused) or None."""
    rows, vocab = logits.shape
    K, C = int(num_beams), int(num_candidates)
    B = rows // K
    dev = logits.device
    out_val = torch.empty((B, C), dtype=torch.float32, device=dev)
    out_idx = torch.empty((B, C), dtype=torch.int64, device=dev)
    if B == 0:
        return out_val, out_idx
    x = logits if logits.stride(1) == 1 else logits.contiguous()
    tile = pick_tile(rows, vocab) if tile is None else int(tile)
    n_tiles = triton.cdiv(vocab, tile)
    part_m = torch.empty((rows, n_tiles), dtype=torch.float32, device=dev)
    part_s = torch.empty_like(part_m)
    part_val = torch.empty((rows, n_tiles, C), dtype=torch.float32, device=dev)
    part_idx = torch.empty((rows, n_tiles, C), dtype=torch.int32, device=dev)
    if banned is None or banned.shape[1] == 0:
        ban, nb = torch.empty((rows, 1), dtype=torch.int64, device=dev), 0
    else:
        ban, nb = banned.contiguous(), banned.shape[1]
    _tile_kernel[(rows, n_tiles)](x, ban, part_m, part_s, part_val, part_idx, vocab, x.stride(0), nb, n_tiles,
                                  C=C, TILE=tile, num_warps=4 if tile <= 2048 else 8)
    _merge_kernel[(B,)](part_m, part_s, part_val, part_idx, beam_scores.contiguous(), out_val, out_idx,
                        vocab, K, n_tiles, C=C, KP=triton.next_power_of_2(K),
                        TP=triton.next_power_of_2(n_tiles), TCP=triton.next_power_of_2(n_tiles * C))
    return out_val, out_idx
