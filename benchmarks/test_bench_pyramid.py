"""Laplacian pyramid build + reconstruct, 16x3x256x256, 4 levels: fastpapers vs kornia and vs a
cv2 loop (per channel).

The cv2 loop computes exactly our semantics, so its pyramid and ours are checked equal before
timing. kornia's semantics differ (its pyrdown is blur + bilinear 2x2 average, its pyrup
bilinear upsample + blur; DESIGN.md / peers.md), so its outputs are not ours: what is checked is
that each implementation's own round trip gives the input back, and the two pyramids have the
same shapes. The timings compare the same amount of work (4 levels built, then collapsed)."""
import cv2
import kornia
import numpy as np
import pytest
import torch

from benchmarks.conftest import tag
from fastpapers import ops

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SHAPE = (16, 3, 256, 256)
LEVELS = 4


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _input():
    return torch.rand(*SHAPE, generator=torch.Generator().manual_seed(0)).to(DEVICE)


def ours_roundtrip(x):
    return ops.laplacian_reconstruct(ops.laplacian_pyramid(x, LEVELS))


def kornia_pyramid(x):
    return kornia.geometry.transform.build_laplacian_pyramid(x, LEVELS)


def kornia_roundtrip(x):
    pyr = kornia_pyramid(x)
    out = pyr[-1]
    for lap in reversed(pyr[:-1]):
        out = kornia.geometry.transform.pyrup(out) + lap
    return out


def cv2_pyramid(a):
    """Per-channel cv2 Laplacian pyramid of a (B, C, H, W) float32 array: list of levels."""
    levels = [np.empty((a.shape[0], a.shape[1]) + s, a.dtype) for s in _level_sizes(a.shape[2:])]
    for b in range(a.shape[0]):
        for c in range(a.shape[1]):
            g = [a[b, c]]
            for _ in range(LEVELS - 1):
                g.append(cv2.pyrDown(g[-1]))
            for i in range(LEVELS - 1):
                levels[i][b, c] = g[i] - cv2.pyrUp(g[i + 1], dstsize=g[i].shape[::-1])
            levels[-1][b, c] = g[-1]
    return levels


def cv2_roundtrip(a):
    out = np.empty_like(a)
    for b in range(a.shape[0]):
        for c in range(a.shape[1]):
            g = [a[b, c]]
            for _ in range(LEVELS - 1):
                g.append(cv2.pyrDown(g[-1]))
            lap = [g[i] - cv2.pyrUp(g[i + 1], dstsize=g[i].shape[::-1]) for i in range(LEVELS - 1)] + [g[-1]]
            r = lap[-1]
            for i in range(LEVELS - 2, -1, -1):
                r = lap[i] + cv2.pyrUp(r, dstsize=lap[i].shape[::-1])
            out[b, c] = r
    return out


def _level_sizes(hw):
    h, w = hw
    sizes = [(h, w)]
    for _ in range(LEVELS - 1):
        h, w = (h + 1) // 2, (w + 1) // 2
        sizes.append((h, w))
    return sizes


@pytest.mark.parametrize("impl", ["peer", "ours"])
def test_laplacian_roundtrip_vs_kornia(benchmark, impl):
    x = _input()
    ours_pyr = ops.laplacian_pyramid(x, LEVELS)
    k_pyr = kornia_pyramid(x)
    assert [p.shape for p in ours_pyr] == [p.shape for p in k_pyr]
    torch.testing.assert_close(ours_roundtrip(x), x, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(kornia_roundtrip(x), x, rtol=1e-5, atol=1e-6)
    fn = kornia_roundtrip if impl == "peer" else ours_roundtrip
    tag(benchmark, f"laplacian build+reconstruct {'x'.join(map(str, SHAPE))}, {LEVELS} levels ({DEVICE})", impl,
        "kornia build_laplacian_pyramid + pyrup/add")

    def run():
        out = fn(x)
        _sync()
        return out

    benchmark.pedantic(run, rounds=5 if impl == "peer" else 30, warmup_rounds=1)


@pytest.mark.skipif(DEVICE != "cpu", reason="the cv2 loop is a CPU peer")
@pytest.mark.parametrize("impl", ["peer", "ours"])
def test_laplacian_roundtrip_vs_cv2_loop(benchmark, impl):
    x = _input()
    a = x.numpy()
    for got, want in zip(ops.laplacian_pyramid(x, LEVELS), cv2_pyramid(a)):
        torch.testing.assert_close(got, torch.from_numpy(want), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours_roundtrip(x), torch.from_numpy(cv2_roundtrip(a)), rtol=1e-5, atol=1e-6)
    tag(benchmark, f"laplacian build+reconstruct {'x'.join(map(str, SHAPE))}, {LEVELS} levels, cv2 semantics (cpu)",
        impl, "cv2.pyrDown/pyrUp loop over channels")
    fn = (lambda: cv2_roundtrip(a)) if impl == "peer" else (lambda: ours_roundtrip(x))
    benchmark.pedantic(fn, rounds=30, warmup_rounds=2)
