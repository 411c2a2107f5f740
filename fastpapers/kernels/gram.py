"""CUDA path of ``fastpapers.ops.gram_matrix`` and ``fastpapers.ops.style_loss`` (contract 3
in DESIGN.md): the products go to cuBLAS, one Triton kernel fuses what comes after them.

Products (``gram_products``). G = X X^T for X [B, C, N] is one cuBLAS product,
``baddbmm(beta=0, alpha=scale)``: the normalisation rides on cuBLAS's alpha, applied to the
float32 accumulator before the result is rounded. float32 uses TF32 exactly when
``torch.backends.cuda.matmul`` allows it (torch decides; nothing is forced here); float64 runs
in float64; bfloat16 runs on tensor cores, accumulates in float32 and writes the normalised
Gram. The Gram is kept in the features' dtype (as the peer's is) and the epilogue overwrites
it with D: the forward's only C x C buffer. float16 is the exception: its products (tensor
cores, float32 accumulation) write a float32 Gram (``out_dtype``), so the unnormalised sum
that overflows fp16 (pytorch/pytorch#3651) is never rounded to fp16, not even in cuBLAS's
split-K partials, and no prescaling pass over X is needed; D is then a second, fp16 buffer.
Split-K: a VGG Gram has a tiny output and a huge reduction (relu1_1 at 256^2: C=64,
N=65536), and cuBLAS's heuristic runs it on a handful of CTAs (H200, fp32 4x64x65536: 16
CTAs of 32x32 tiles, 2.0 ms for 2.1 GFLOP, ~1 TFLOP/s). ``split_count`` cuts N into S chunks
so that each batch element's product is one strided-batched GEMM of S small matrices (a
view, no copy: chunk s of row c is at c*N + s*L), all of them filling the SMs about twice;
the partial Grams are summed by one reduction (float32 partials, capped at 1/8 of X's
bytes; half chunks are accumulated in float32 with ``out_dtype``).
Symmetric half product (``use_half_product``): X = [X1; X2] by rows, the three blocks X1 X1^T,
X1 X2^T, X2 X2^T (3/4 of the FLOPs) written by three cuBLAS calls into one buffer. It pays
where the products are compute bound and long: float32/float64 (CUDA cores, ~C/2 FLOP per
byte of X against the H200's ridge of ~14), C >= 256 and >= 2 GFLOP per product. Then
forward + backward cost 1.75 products instead of 2, and 3 for the peer's autograd (two
backward products plus an add over [B, C, N]): 1.7x at equal GEMM efficiency, where the full
product would cap the op at 1.5x. It does not pay for bf16/fp16 (tensor cores: a VGG product
is a few microseconds, memory or launch bound) nor for small problems (two more launches cost
more than a quarter of a product that takes < 40 us), nor together with split-K (small C).

Epilogue (``sym_epilogue``, one launch for up to ``MAX_LAYERS`` layers). Each program owns
one tile pair (I, J), I <= J, of one Gram: it reads the tiles G[I, J] and G[J, I]
(coalesced, the mirror transposed in registers), symmetrises and scales them, and
- without a target (gram_matrix) stores s*(G + G^T)/2 in the output dtype;
- with a target A (style loss) forms d1 = sG - A and d2 = sG - A^T, writes the weighted
  sum of squares of the tile pair to one partial per program (summed after, in a fixed
  order, so the loss is deterministic) and stores D = sG - (A + A^T)/2 over both tiles. D
  is symmetric, so the backward is one product per layer, dF = c D F.
Scalars reach the kernel as float32 arguments; for float64 each is passed as a (hi, lo)
float32 pair whose sum carries ~48 bits, so no table has to be copied to the device.
Everything is launched asynchronously: no host synchronisation, no host-built tables.
"""
import math
import struct

import torch
import triton
import triton.language as tl

HALF_DTYPES = (torch.float16, torch.bfloat16)
MAX_LAYERS = 8  # layers per epilogue launch (the kernel is specialised on the count)
EPILOGUE_BLOCK = 32  # the epilogue's tile side
SPLIT_MIN_K = 512  # shortest chunk of the reduction a split-K product is cut into
HALF_PRODUCT_MIN_FLOP = 2e9  # ~40 us of float32 FMA on an H200: past the cost of two launches

try:  # torch >= 2.8: bmm with a float32 result for float16/bfloat16 inputs
    torch.ops.aten.bmm.dtype
    _HAS_OUT_DTYPE = True
except (AttributeError, RuntimeError):  # pragma: no cover - older torch
    _HAS_OUT_DTYPE = False


@triton.jit
def _tile_pair(G, A, D, PART, pid, t, C, H, stride_ab, s_hi, s_lo, w_hi, w_lo,
               HAS_TARGET: tl.constexpr, IS_FP64: tl.constexpr, BLOCK: tl.constexpr):
    nt = tl.cdiv(C, BLOCK)
    b = (t // (nt * nt)).to(tl.int64)
    r = t % (nt * nt)
    ti = r // nt
    tj = r % nt
    if IS_FP64:
        scale = tl.cast(s_hi, tl.float64) + tl.cast(s_lo, tl.float64)
        weight = tl.cast(w_hi, tl.float64) + tl.cast(w_lo, tl.float64)
    else:
        scale = tl.cast(s_hi, tl.float32)
        weight = tl.cast(w_hi, tl.float32)
    total = scale * 0.0
    if ti <= tj:
        rows = ti * BLOCK + tl.arange(0, BLOCK)
        cols = tj * BLOCK + tl.arange(0, BLOCK)
        mask = (rows[:, None] < C) & (cols[None, :] < C)
        mmask = (cols[:, None] < C) & (rows[None, :] < C)
        off = rows[:, None] * C + cols[None, :]  # tile (I, J), row-major
        moff = cols[:, None] * C + rows[None, :]  # tile (J, I), row-major
        gb = G + b * C * C
        # H > 0: G holds only the blocks [:H, :H], [:H, H:] and [H:, H:] of a half product
        # (H a multiple of BLOCK): a tile pair across the halves has its one copy in [:H, H:].
        same = (H == 0) | ((ti * BLOCK < H) == (tj * BLOCK < H))
        g1 = tl.load(gb + off, mask=mask, other=0.0).to(scale.dtype)
        g2 = tl.trans(tl.load(gb + moff, mask=mmask & same, other=0.0)).to(scale.dtype)  # G[cols[j], rows[i]]
        gs = tl.where(same, (g1 + g2) * (scale * 0.5), g1 * scale)
        if HAS_TARGET:
            ab = A + b * stride_ab
            a1 = tl.load(ab + off, mask=mask, other=0.0).to(gs.dtype)
            a2 = tl.trans(tl.load(ab + moff, mask=mmask, other=0.0)).to(gs.dtype)
            d1 = gs - a1  # entry (r, c) of sG - A
            d2 = gs - a2  # entry (c, r)
            sq = d1 * d1
            if ti != tj:
                sq += d2 * d2
            total = tl.sum(tl.sum(sq, axis=1), axis=0) * weight
            dd = (d1 + d2) * 0.5
        else:
            dd = gs
        out = dd.to(D.dtype.element_ty)
        db = D + b * C * C
        # G may be D (in place): every load of this program's two tiles happened above.
        tl.store(db + off, out, mask=mask)
        if ti != tj:
            tl.store(db + moff, tl.trans(out), mask=mmask)
    if HAS_TARGET:
        tl.store(PART + pid, total)


@triton.jit
def _sym_epilogue_kernel(Gs, As, Ds, PART, Cs, Hs, ABs, starts, s_hi, s_lo, w_hi, w_lo,
                         NL: tl.constexpr, HAS_TARGET: tl.constexpr, IS_FP64: tl.constexpr,
                         BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    for l in tl.static_range(NL):
        if (pid >= starts[l]) & (pid < starts[l + 1]):
            _tile_pair(Gs[l], As[l], Ds[l], PART, pid, pid - starts[l], Cs[l], Hs[l], ABs[l],
                       s_hi[l], s_lo[l], w_hi[l], w_lo[l], HAS_TARGET, IS_FP64, BLOCK)


def _f32(v):
    try:
        return struct.unpack("f", struct.pack("f", v))[0]
    except OverflowError:  # past float32's range: the kernel sees +-inf as it would anyway
        return math.copysign(math.inf, v)


def _split_f32(v):
    """v as float32 hi + lo, |v - hi - lo| <= 2^-48 |v| (for float64 scalars)."""
    hi = _f32(v)
    return hi, (_f32(v - hi) if math.isfinite(hi) else 0.0)


def sym_epilogue(grams, outs, scales, targets=None, weights=None, *, halves=None, block=EPILOGUE_BLOCK,
                 num_warps=4):
    """Fused epilogue over L layers (CUDA, or CPU under TRITON_INTERPRET=1).

    grams: L contiguous [B, C_l, C_l] products of one dtype (an out may be the same tensor;
    the arithmetic is float32, float64 for float64 grams); outs: L contiguous [B, C_l, C_l]
    results; scales: L floats s_l.
    Without targets: outs[l] = s_l (G + G^T)/2 and None is returned.
    With targets ([C_l, C_l] or [B, C_l, C_l], any float dtype) and weights (L floats):
    outs[l] = s_l (G + G^T)/2 - (A + A^T)/2 and the partial sums are returned, one per
    program, whose sum is sum_l weights[l] * sum((s_l (G + G^T)/2 - A_l)^2) (G symmetric:
    the loss of the peer). halves[l] = H > 0 says grams[l] is a half product (see
    ``gram_products``) whose lower-left block is not read.
    """
    has_target = targets is not None
    device = grams[0].device
    acc = torch.float64 if grams[0].dtype == torch.float64 else torch.float32
    layers = [i for i, g in enumerate(grams) if g.numel()]
    counts = [grams[i].shape[0] * triton.cdiv(grams[i].shape[1], block) ** 2 for i in layers]
    part = torch.empty((sum(counts),), dtype=acc, device=device) if has_target else None
    if has_target and targets:
        targets = [a if a.is_contiguous() else a.contiguous() for a in targets]
    done = 0
    for g0 in range(0, len(layers), MAX_LAYERS):
        ids = layers[g0:g0 + MAX_LAYERS]
        cnt = counts[g0:g0 + MAX_LAYERS]
        starts = [0]
        for c in cnt:
            starts.append(starts[-1] + c)
        gs = tuple(grams[i] for i in ids)
        ds = tuple(outs[i] for i in ids)
        if has_target:
            as_ = tuple(targets[i] for i in ids)
            abs_ = tuple(targets[i].shape[1] ** 2 if targets[i].dim() == 3 else 0 for i in ids)
            w = [_split_f32(float(weights[i])) for i in ids]
        else:
            as_, abs_ = gs, tuple(0 for _ in ids)
            w = [(1.0, 0.0)] * len(ids)
        s = [_split_f32(float(scales[i])) for i in ids]
        _sym_epilogue_kernel[(starts[-1],)](
            gs, as_, ds, part[done:] if has_target else gs[0], tuple(grams[i].shape[1] for i in ids),
            tuple(halves[i] if halves else 0 for i in ids), abs_,
            tuple(starts), tuple(v[0] for v in s), tuple(v[1] for v in s),
            tuple(v[0] for v in w), tuple(v[1] for v in w),
            NL=len(ids), HAS_TARGET=has_target, IS_FP64=acc == torch.float64, BLOCK=block,
            num_warps=num_warps)
        done += starts[-1]
    return part


_SM_COUNT = {}


def _sm_count(device):
    if device.type != "cuda":
        return 132  # the CPU (interpreter) runs plan as for an H100/H200
    idx = device.index if device.index is not None else torch.cuda.current_device()
    n = _SM_COUNT.get(idx)
    if n is None:
        n = _SM_COUNT[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return n


def split_count(b, c, n, n_sm, elem_size=4):
    """Chunks S of the reduction for G = X X^T ([B, C, N]): 1 when the B*ceil(C/128)^2
    output tiles already fill the SMs, else enough chunks for about two waves, each at
    least max(SPLIT_MIN_K, 2C) long, S dividing N (so every chunk is a strided view), and
    the float32 partials (B*S*C*C) at most 1/8 of the features' bytes."""
    tiles = b * triton.cdiv(c, 128) ** 2
    if tiles >= n_sm or n < 2 * SPLIT_MIN_K:
        return 1
    s = min(triton.cdiv(2 * n_sm, tiles), n // max(SPLIT_MIN_K, 2 * c), (n * elem_size) // (32 * c))
    while s > 1 and n % s:
        s -= 1
    return max(s, 1)


def _bmm_f32(a, b, out=None):
    """a @ b with a float32 result; float16/bfloat16 through tensor cores (CUDA). Elsewhere
    (CPU tensors under the interpreter, torch < 2.8) the same products in float32: the
    products of half numbers are exact in float32, as on tensor cores."""
    if _HAS_OUT_DTYPE and a.device.type == "cuda":
        return torch.bmm(a, b, out_dtype=torch.float32, out=out)
    r = torch.bmm(a.float(), b.float())
    return r if out is None else out.copy_(r)


def use_half_product(b, c, n, dtype):
    """Whether the forward product should be the symmetric half product: float32/float64
    (compute bound on CUDA cores: C/2 FLOP per byte of X at C >= 256, past the H200's ~14),
    C a multiple of 2 * EPILOGUE_BLOCK, and large enough (>= HALF_PRODUCT_MIN_FLOP) that the
    GPU, not the two extra launches, sets the time. Then forward + backward cost 1.75
    products instead of 2 (the peer's autograd: 3)."""
    return (dtype in (torch.float32, torch.float64) and c >= 256 and c % (2 * EPILOGUE_BLOCK) == 0
            and 2 * b * c * c * n >= HALF_PRODUCT_MIN_FLOP)


def gram_products(x3, scale, *, split=None, half=None):
    """(G, s, H) with s*G = scale * X X^T for a contiguous x3 [B, C, N].

    Half product (H = C/2 > 0, ``use_half_product``): three cuBLAS products write the
    blocks X1 X1^T, X1 X2^T and X2 X2^T of X = [X1; X2] into one [B, C, C] buffer (strided
    outputs, ld = C), 3/4 of the full product's FLOPs; the lower-left block is left unset
    and the epilogue reads its mirror.

    One product (S = 1): G in x3's dtype, scaled by cuBLAS (alpha, applied to the float32
    accumulator before the rounding), s = 1; except float16, whose G is float32 unscaled
    (s = scale): cuBLAS may keep split-K partial sums in the output type when torch allows
    reduced-precision reductions (its default), and unnormalised fp16 partials can overflow.
    Split-K (S > 1): G float32 (float64 for float64 x3), the sum of the S chunk products;
    float16/bfloat16 chunks are accumulated and kept in float32 unscaled (s = scale),
    float32/float64 ones carry the scale (s = 1).
    """
    b, c, n = x3.shape
    low = x3.dtype in HALF_DTYPES
    acc = torch.float64 if x3.dtype == torch.float64 else torch.float32
    if b * c == 0 or n == 0:
        return torch.zeros((b, c, c), dtype=x3.dtype, device=x3.device), 1.0, 0
    if half is None:
        half = use_half_product(b, c, n, x3.dtype)
    if half and not low and c % (2 * EPILOGUE_BLOCK) == 0:
        h = c // 2
        g = torch.empty((b, c, c), dtype=x3.dtype, device=x3.device)
        x1, x2 = x3[:, :h], x3[:, h:]
        g[:, :h, :h].baddbmm_(x1, x1.mT, beta=0, alpha=scale)
        g[:, :h, h:].baddbmm_(x1, x2.mT, beta=0, alpha=scale)
        g[:, h:, h:].baddbmm_(x2, x2.mT, beta=0, alpha=scale)
        return g, 1.0, h
    if split is None:
        split = split_count(b, c, n, _sm_count(x3.device), x3.element_size())
    if split <= 1:
        if x3.dtype == torch.float16:
            return _bmm_f32(x3, x3.mT), float(scale), 0
        g = torch.empty((b, c, c), dtype=x3.dtype, device=x3.device)
        return g.baddbmm_(x3, x3.mT, beta=0, alpha=scale), 1.0, 0
    length = n // split
    part = torch.empty((b, split, c, c), dtype=acc, device=x3.device)
    for i in range(b):
        xs = x3[i].view(c, split, length).transpose(0, 1)  # [S, C, L], strides (L, N, 1)
        if low:
            _bmm_f32(xs, xs.mT, out=part[i])
        else:
            part[i].baddbmm_(xs, xs.mT, beta=0, alpha=scale)
    return part.sum(1), (float(scale) if low else 1.0), 0


def as_bcn(x):
    """x [B, C, ...] as a contiguous [B, C, N] (a view when x is contiguous)."""
    b, c = x.shape[:2]
    x3 = x.reshape(b, c, math.prod(x.shape[2:]))
    return x3 if x3.is_contiguous() else x3.contiguous()


def gram(x, scale, *, split=None, half=None):
    """G[b] = scale * X[b] X[b]^T for x [B, C, ...], in x's dtype, exactly symmetric."""
    x3 = as_bcn(x)
    b, c = x3.shape[:2]
    g, ks, h = gram_products(x3, scale, split=split, half=half)
    if b * c == 0:
        return g.to(x.dtype)
    out = g if g.dtype == x.dtype else torch.empty((b, c, c), dtype=x.dtype, device=x.device)
    sym_epilogue([g], [out], [ks], halves=[h])
    return out


def style_loss(features, targets, scales, weights, *, split=None, half=None):
    """(sum_l weights[l] * sum((scales[l] G_l - A_l)^2), [D_l]) for features [B, C_l, ...]
    of one dtype and device and targets [C_l, C_l] or [B, C_l, C_l] of that dtype; D_l =
    scales[l] G_l - (A_l + A_l^T)/2 in the features' dtype. The loss is float32 for
    float16/bfloat16 features. Forward of the op; ``style_loss_backward`` is its backward."""
    dtype, device = features[0].dtype, features[0].device
    for i, (x, a) in enumerate(zip(features, targets)):
        if x.dtype != dtype or a.dtype != dtype or x.device != device or a.device != device:
            raise ValueError(f"style_loss: layer {i} has features {x.dtype} on {x.device} and target "
                             f"{a.dtype} on {a.device}; expected every tensor {dtype} on {device}")
    grams, kscales, outs, halves = [], [], [], []
    empty = None
    for x, s, w in zip(features, scales, weights):
        g, ks, h = gram_products(as_bcn(x), s, split=split, half=half)
        grams.append(g)
        halves.append(h)
        kscales.append(ks)
        outs.append(g if g.dtype == dtype else torch.empty(g.shape, dtype=dtype, device=device))
        if g.numel() == 0:  # no entry: w * 0, NaN for mse's mean over no element
            empty = (empty or 0.0) + 0.0 * w
    part = sym_epilogue(grams, outs, kscales, targets, weights, halves=halves)
    loss = part.sum()
    return (loss if empty is None else loss + empty), outs


def style_loss_backward(grad, features, diffs, coefs):
    """dF_l = grad * coefs[l] * D_l F_l: one cuBLAS product per layer, the coefficient as
    its alpha (applied to the float32 accumulator, so a tiny coefficient does not underflow
    fp16). The device scalar grad (no host read) multiplies D_l (one launch for all such
    layers) where D_l is at most 1/8 of dF_l (C <= N/8: the first VGG layers), else dF_l in
    place: the temporary is then never more than 1/8 of the gradient, and the deep layers,
    whose C x C matrices rival their features, allocate nothing beyond dF_l."""
    outs, small, small_idx = [], [], []
    x3s = [as_bcn(f) for f in features]
    for i, (x3, d) in enumerate(zip(x3s, diffs)):
        d = d if d.dtype == x3.dtype else d.to(x3.dtype)
        if 8 * x3.shape[1] <= x3.shape[2]:
            small.append(d)
            small_idx.append(i)
        outs.append(d)
    if small:
        for i, dg in zip(small_idx, torch._foreach_mul(small, grad)):
            outs[i] = dg
    result = []
    for i, (f, x3, d, c) in enumerate(zip(features, x3s, outs, coefs)):
        out = torch.empty_like(x3)
        if out.numel():
            out.baddbmm_(d, x3, beta=0, alpha=float(c))
            if i not in small_idx:
                out.mul_(grad)
        result.append(out.view(f.shape))
    return result
