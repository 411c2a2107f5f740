"""Pure-PyTorch image pyramids (contract 4): the oracle for the compiled and Triton kernels.

Every op is separable, so each is written as ``A_h @ x @ A_w^T`` with the dense 1-D operator
matrices built straight from OpenCV's definitions. Adjoints are then plain transposes, which
makes this module the ground truth for the backward kernels as well.

1-D definitions (n = input length), weights w = [1, 4, 6, 4, 1] / 16, ``bi`` = OpenCV's
``borderInterpolate`` with BORDER_REFLECT_101:

- down: ``out[i] = sum_k w[k] * x[bi(2i + k - 2, n)]`` for i < ceil(n / 2).
- up to length m in {2n - 1, 2n, 2n + 1}: the zero-inserted signal u (u[2x] = x[x], u[odd] = 0)
  of length 2n, reflected with bi(., 2n) and filtered with 2w: ``out[t] = sum_k 2 w[k]
  u[bi(t + k - 2, 2n)]`` for t < min(m, 2n). For m = 2n + 1 OpenCV repeats a column/row:
  the last column copies column 2n - 1, the last row copies row 2n - 2 (pyramids.cpp,
  pyrUp_). OpenCV leaves that last column uninitialised when n = 1 (it reads stale memory);
  here it copies column 1 like every other width.
"""
from functools import lru_cache
from typing import List, Optional, Sequence, Tuple

import torch

_W = (1.0, 4.0, 6.0, 4.0, 1.0)


def reflect101(p: int, n: int) -> int:
    """OpenCV's borderInterpolate(p, n, BORDER_REFLECT_101)."""
    if n == 1:
        return 0
    while p < 0 or p >= n:
        p = -p if p < 0 else 2 * n - 2 - p
    return p


@lru_cache(maxsize=256)
def down_taps(n: int) -> Tuple[Tuple[Tuple[int, float], ...], ...]:
    rows = []
    for i in range((n + 1) // 2):
        taps = {}
        for k in range(5):
            j = reflect101(2 * i + k - 2, n)
            taps[j] = taps.get(j, 0.0) + _W[k] / 16.0
        rows.append(tuple(sorted(taps.items())))
    return tuple(rows)


@lru_cache(maxsize=256)
def up_taps(n: int, m: int, vertical: bool) -> Tuple[Tuple[Tuple[int, float], ...], ...]:
    rows = []
    for t in range(min(m, 2 * n)):
        taps = {}
        for k in range(5):
            p = reflect101(t + k - 2, 2 * n)
            if p % 2 == 0:
                taps[p // 2] = taps.get(p // 2, 0.0) + 2.0 * _W[k] / 16.0
        rows.append(tuple(sorted(taps.items())))
    if m == 2 * n + 1:
        rows.append(rows[2 * n - 2] if vertical else rows[2 * n - 1])
    return tuple(rows)


def transpose_taps(rows, n_in: int) -> Tuple[Tuple[Tuple[int, float], ...], ...]:
    """The tap rows of the adjoint operator (one row per input index, sorted by output index)."""
    out = [[] for _ in range(n_in)]
    for i, taps in enumerate(rows):
        for j, v in taps:
            out[j].append((i, v))
    return tuple(tuple(r) for r in out)


def _dense(rows, n_in: int, dtype, device) -> torch.Tensor:
    a = torch.zeros(len(rows), n_in, dtype=torch.float64)
    for i, taps in enumerate(rows):
        for j, v in taps:
            a[i, j] += v
    return a.to(dtype=dtype, device=device)


def down_matrix(n: int, dtype=torch.float64, device="cpu") -> torch.Tensor:
    """[ceil(n/2), n] matrix of pyr_down along one axis."""
    return _dense(down_taps(n), n, dtype, device)


def up_matrix(n: int, m: int, *, vertical: bool, dtype=torch.float64, device="cpu") -> torch.Tensor:
    """[m, n] matrix of pyr_up along one axis (``vertical`` picks OpenCV's row rule for m = 2n+1)."""
    if abs(m - 2 * n) != m % 2:
        raise ValueError(f"output length {m} must be 2*{n} or, when odd, 2*{n} +- 1")
    return _dense(up_taps(n, m, vertical), n, dtype, device)


def up_size(h: int, w: int, size: Optional[Sequence[int]]) -> Tuple[int, int]:
    return (2 * h, 2 * w) if size is None else (int(size[0]), int(size[1]))


def halving_sizes(h: int, w: int, levels: int) -> List[Tuple[int, int]]:
    """(H, W) of each level of a pyramid built by pyr_down: [(h, w), (ceil(h/2), ceil(w/2)), ...]."""
    sizes = [(h, w)]
    for _ in range(levels - 1):
        h, w = (h + 1) // 2, (w + 1) // 2
        sizes.append((h, w))
    return sizes


def _apply(x: torch.Tensor, ah: torch.Tensor, aw: torch.Tensor) -> torch.Tensor:
    return torch.matmul(torch.matmul(ah, x), aw.transpose(0, 1))


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    return _apply(x, down_matrix(h, x.dtype, x.device), down_matrix(w, x.dtype, x.device))


def pyr_up(x: torch.Tensor, size: Optional[Sequence[int]] = None) -> torch.Tensor:
    h, w = x.shape[-2:]
    oh, ow = up_size(h, w, size)
    return _apply(x, up_matrix(h, oh, vertical=True, dtype=x.dtype, device=x.device),
                  up_matrix(w, ow, vertical=False, dtype=x.dtype, device=x.device))


def pyr_down_backward(grad: torch.Tensor, input_size: Sequence[int]) -> torch.Tensor:
    h, w = input_size
    return _apply(grad, down_matrix(h, grad.dtype, grad.device).t(), down_matrix(w, grad.dtype, grad.device).t())


def pyr_up_backward(grad: torch.Tensor, input_size: Sequence[int]) -> torch.Tensor:
    h, w = input_size
    oh, ow = grad.shape[-2:]
    return _apply(grad, up_matrix(h, oh, vertical=True, dtype=grad.dtype, device=grad.device).t(),
                  up_matrix(w, ow, vertical=False, dtype=grad.dtype, device=grad.device).t())


def gaussian_pyramid(x: torch.Tensor, levels: int) -> List[torch.Tensor]:
    out = [x]
    for _ in range(levels - 1):
        out.append(pyr_down(out[-1]))
    return out


def laplacian_pyramid(x: torch.Tensor, levels: int) -> List[torch.Tensor]:
    g = gaussian_pyramid(x, levels)
    return [g[i] - pyr_up(g[i + 1], g[i].shape[-2:]) for i in range(levels - 1)] + [g[-1]]


def laplacian_reconstruct(pyramid: Sequence[torch.Tensor]) -> torch.Tensor:
    out = pyramid[-1]
    for lap in reversed(pyramid[:-1]):
        out = lap + pyr_up(out, lap.shape[-2:])
    return out


def roundtrip_bytes(shape: Sequence[int], levels: int, itemsize: int, tail_pixels: int = 4096) -> dict:
    """DRAM bytes of a Laplacian build (``laplacian_pyramid``) and reconstruction
    (``laplacian_reconstruct``) of a [B, C, H, W] tensor with ``levels`` levels.

    ``compulsory``: the least any implementation moves: the build reads x and writes every
    level; the reconstruction reads every level and writes x. ``passes``: what the CUDA kernels
    move if each pass reads each of its inputs once and writes its outputs once (L2 hits make
    it less). Per level pair (areas a_i, a_{i+1}): the build reads G_i once and writes G_{i+1}
    and L_i (2 a_i + a_{i+1}, one fused launch) while level i has more than ``tail_pixels``
    pixels per plane (kernels.pyramid.TAIL_PIXELS); the smaller pairs, all in one chain launch
    whose levels mostly stay in L2, run pyr_down and the residual as two steps (3 a_i +
    2 a_{i+1}); the reconstruction G_i = L_i + up(G_{i+1}) moves 2 a_i + a_{i+1}. Keys:
    build_compulsory, build_passes, reconstruct_compulsory, reconstruct_passes, compulsory,
    passes (the last two for the round trip).

    16 x 3 x 1024^2 float32, 4 levels: 937.4 MB compulsory, 1189.1 MB in passes (1.27x);
    16 x 3 x 256^2: 58.6 MB and 75.3 MB.

    Example:
        >>> b = roundtrip_bytes((16, 3, 1024, 1024), 4, 4)
        >>> round(b["compulsory"] / 1e6, 1), round(b["passes"] / 1e6, 1)
        (937.4, 1189.1)
    """
    b, c, h, w = shape
    areas = [hh * ww for hh, ww in halving_sizes(h, w, levels)]
    scale = b * c * itemsize
    pairs = range(levels - 1)
    build = sum(2 * areas[i] + areas[i + 1] if areas[i] > tail_pixels else 3 * areas[i] + 2 * areas[i + 1]
                for i in pairs)
    out = {
        "build_compulsory": (areas[0] + sum(areas)) * scale,
        "build_passes": build * scale,
        "reconstruct_compulsory": (sum(areas) + areas[0]) * scale,
        "reconstruct_passes": sum(2 * areas[i] + areas[i + 1] for i in pairs) * scale,
    }
    if levels == 1:  # each op is a copy
        out["build_passes"] = out["reconstruct_passes"] = 2 * areas[0] * scale
    out["compulsory"] = out["build_compulsory"] + out["reconstruct_compulsory"]
    out["passes"] = out["build_passes"] + out["reconstruct_passes"]
    return out
