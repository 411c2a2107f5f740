"""Triton kernels of the fused beam-search step (CUDA path of ``fastpapers::beam_search_step``).

Two launches, after FasterTransformer's online-softmax beam kernels:

1. ``_tile_kernel``, grid (B*K rows, vocabulary tiles): each program reads one tile of one
   row once and writes the tile's max, its sum of exp(x - max) and its top-C logits (banned
   tokens count as -inf). Splitting the vocabulary across programs keeps the GPU busy when
   B*K is small (batch 1: 5 rows would otherwise be 5 programs).
2. ``_merge_kernel``, grid (B sentences): combines each row's tile normalisers into
   log-sum-exp, turns the K*tiles*C kept logits into log_softmax + beam score and selects
   the sentence's top-C, equal scores by lower flat index beam*V + token. A sentence with a
   bad row (NaN/+inf logits, no finite logit, NaN/+inf beam score) gets NaN scores; its
   indices stay in [0, K*V), so a caller that gathers with them never reads out of bounds.

Everything is computed in float32 (inputs may be fp16/bf16/fp32). The launcher keeps its
Python short (the H200 profile measured 0.31 ms of host time per call around 0.064 ms of
kernels): launch geometry cached per problem shape, one scratch buffer for the tile maxima,
sums and values, no host->device uploads.
"""
import torch
import triton
import triton.language as tl

__all__ = ["beam_search_step", "pick_tile"]


@triton.jit(do_not_specialize=["NB"])
def _tile_kernel(x_ptr, banned_ptr, work_ptr, part_idx_ptr,
                 V, stride_x, NB, n_tiles, n_parts,
                 C: tl.constexpr, TILE: tl.constexpr):
    row = tl.program_id(0)
    tile = tl.program_id(1)
    offs = tile * TILE + tl.arange(0, TILE)
    valid = offs < V
    x = tl.load(x_ptr + row.to(tl.int64) * stride_x + offs, mask=valid, other=float("-inf")).to(tl.float32)
    m = tl.max(x, axis=0)
    # A tile of -inf logits (masked tokens) adds nothing; exp(-inf - -inf) would be NaN. A NaN
    # or +inf logit makes the sum NaN, which the merge turns into the sentence's NaN mark.
    e = tl.where(valid & (x > float("-inf")), tl.exp(x - m), 0.0)
    e = tl.where(x != x, x, e)
    s = tl.sum(e, axis=0)
    part = row * n_tiles + tile
    # work: [n_parts] tile maxima, [n_parts] tile sums, [n_parts, C] kept logits.
    tl.store(work_ptr + part, m)
    tl.store(work_ptr + n_parts + part, s)
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
        tl.store(work_ptr + 2 * n_parts + part * C + c, v)
        tl.store(part_idx_ptr + part * C + c, i)


@triton.jit
def _merge_kernel(work_ptr, part_idx_ptr, beam_ptr, out_val_ptr, out_idx_ptr,
                  V, K, n_tiles, n_parts, last_flat,
                  C: tl.constexpr, KP: tl.constexpr, TP: tl.constexpr, TCP: tl.constexpr):
    b = tl.program_id(0)
    k = tl.arange(0, KP)
    rows = b * K + k
    row_ok = k < K
    t = tl.arange(0, TP)
    tmask = row_ok[:, None] & (t[None, :] < n_tiles)
    ms = tl.load(work_ptr + rows[:, None] * n_tiles + t[None, :], mask=tmask, other=float("-inf"))
    ss = tl.load(work_ptr + n_parts + rows[:, None] * n_tiles + t[None, :], mask=tmask, other=0.0)
    row_m = tl.max(ms, axis=1)
    row_m_safe = tl.where(row_m > float("-inf"), row_m, 0.0)
    # Tiles with sum 0 (all -inf) add 0; a NaN sum or a +inf max (inf - inf) stays NaN.
    row_s = tl.sum(tl.where(ss != 0.0, ss * tl.exp(ms - row_m_safe[:, None]), 0.0), axis=1)
    log_s = tl.log(tl.where(row_ok, row_s, 1.0))
    bsc = tl.load(beam_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
    inf = float("inf")
    bad_row = row_ok & ((row_s != row_s) | (row_s <= 0.0) | (row_s == inf) | (row_m == inf)
                        | (bsc != bsc) | (bsc == inf))
    bad = tl.max(bad_row.to(tl.int32), axis=0) > 0
    j = tl.arange(0, TCP)
    j_ok = j < n_tiles * C
    ok = row_ok[:, None] & j_ok[None, :]
    raw = tl.load(work_ptr + 2 * n_parts + rows[:, None] * (n_tiles * C) + j[None, :], mask=ok,
                  other=float("-inf"))
    tok = tl.load(part_idx_ptr + rows[:, None] * (n_tiles * C) + j[None, :], mask=ok, other=2147483647)
    alive = ok & (tok < V)
    vals = ((raw - row_m_safe[:, None]) - log_s[:, None]) + bsc[:, None]
    flat = k[:, None].to(tl.int64) * V + tok.to(tl.int64)
    big = 9223372036854775807
    for c in tl.static_range(C):
        v = tl.max(tl.max(tl.where(alive, vals, float("-inf")), axis=1), axis=0)
        i = tl.min(tl.min(tl.where(alive & (vals == v), flat, big), axis=1), axis=0)
        alive = alive & (flat != i)
        tl.store(out_val_ptr + b * C + c, tl.where(bad, float("nan"), v))
        # NaN values match nothing: the index is then clamped into [0, K*V).
        tl.store(out_idx_ptr + b * C + c, tl.minimum(i, last_flat))


def pick_tile(rows: int, vocab: int) -> int:
    """Tile width: small batches split the vocabulary finely so that rows x tiles fills an
    H100's 132 SMs several times over; at most 64 tiles per row keep the merge in registers."""
    full = triton.next_power_of_2(max(vocab, 1))
    tile = 1024 if rows < 256 else 4096
    tile = max(tile, triton.next_power_of_2(triton.cdiv(vocab, 64)))
    return min(tile, full)


class _Plan:
    """Launch geometry of one (rows, V, K, C, tile) problem, computed once."""
    __slots__ = ("B", "n_tiles", "n_parts", "work", "grid1", "grid2", "kw1", "kw2")

    def __init__(self, rows, vocab, K, C, tile):
        tile = pick_tile(rows, vocab) if tile is None else int(tile)
        self.B = rows // K
        self.n_tiles = triton.cdiv(vocab, tile)
        self.n_parts = rows * self.n_tiles
        self.work = self.n_parts * (2 + C)
        self.grid1 = (rows, self.n_tiles)
        self.grid2 = (self.B,)
        self.kw1 = dict(C=C, TILE=tile, num_warps=4 if tile <= 2048 else 8)
        self.kw2 = dict(C=C, KP=triton.next_power_of_2(K), TP=triton.next_power_of_2(self.n_tiles),
                        TCP=triton.next_power_of_2(self.n_tiles * C))


_PLANS = {}
_NO_BANS = {}


def beam_search_step(logits: torch.Tensor, beam_scores: torch.Tensor, num_beams: int, num_candidates: int,
                     banned=None, tile=None):
    """Launch both kernels: logits [B*K, V], beam_scores [B*K] -> (scores [B, C] float32,
    flat indices [B, C] int64). ``banned`` is int64 [B*K, M] (-1 = unused) or None."""
    rows, vocab = logits.shape
    key = (rows, vocab, num_beams, num_candidates, tile)
    plan = _PLANS.get(key)
    if plan is None:
        plan = _PLANS[key] = _Plan(rows, vocab, int(num_beams), int(num_candidates), tile)
    dev = logits.device
    out_val = torch.empty((plan.B, num_candidates), dtype=torch.float32, device=dev)
    out_idx = torch.empty((plan.B, num_candidates), dtype=torch.int64, device=dev)
    if plan.B == 0:
        return out_val, out_idx
    x = logits if logits.stride(1) == 1 else logits.contiguous()
    work = torch.empty(plan.work, dtype=torch.float32, device=dev)
    part_idx = torch.empty(plan.n_parts * num_candidates, dtype=torch.int32, device=dev)
    if banned is None or banned.shape[1] == 0:
        ban = _NO_BANS.get(dev)
        if ban is None:
            ban = _NO_BANS[dev] = torch.full((1,), -1, dtype=torch.int64, device=dev)
        nb = 0
    else:
        ban, nb = banned.contiguous(), banned.shape[1]
    _tile_kernel[plan.grid1](x, ban, work, part_idx, vocab, x.stride(0), nb, plan.n_tiles, plan.n_parts,
                             **plan.kw1)
    _merge_kernel[plan.grid2](work, part_idx, beam_scores.contiguous(), out_val, out_idx, vocab, num_beams,
                              plan.n_tiles, plan.n_parts, num_beams * vocab - 1, **plan.kw2)
    return out_val, out_idx
