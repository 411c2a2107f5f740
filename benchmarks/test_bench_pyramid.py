"""Laplacian pyramid build + reconstruct (4 levels): fastpapers vs kornia (16x3x256x256, and
16x3x1024x1024 on the GPU) and vs a per-channel cv2 loop (CPU).

What is compared: the cv2 loop computes exactly our semantics, so its pyramid and ours are
checked equal before timing. kornia's semantics differ (its pyrdown is blur + bilinear 2x2
average, its pyrup bilinear upsample + blur; DESIGN.md / peers.md), so its outputs are not
ours: what is checked is that each implementation's own round trip gives the input back and
that the two pyramids have the same shapes.

Why the two sides do the same work:
- Inputs: the same float32 contiguous (B, C, H, W) tensor on the device (for cv2, a numpy
  view of the same CPU memory, no copy).
- Outputs: both build all 4 levels (3 band-pass levels + the low-pass residual, each a
  separate tensor) and then collapse them back into a full-resolution image, returned.
- Precision: float32 throughout on both sides; no matrix products (TF32 does not enter).
- Synchronisation: each timed call ends with ``torch.cuda.synchronize()`` on both sides.
- Threads: torch on the CPU runs 2 intra-op threads (conftest); cv2 its own default pool,
  which on the 2-core benchmark machine is 2 threads too.
- Warm-up: outside the timed region (conftest.measure): Triton's compilation for ours.

Chip limit: bytes of ours' round trip over its median time, two counts (``traffic``):
"compulsory" (the least any implementation must move) and "passes" (every kernel pass of
ours reads its inputs once and writes its output once); fractions of the card's DRAM peak
(benchmarks/gpu/peaks.py). Without kornia installed (the lent GPU host, unless a wheel is
carried), the kornia cases time ours alone.
"""
import cv2
import numpy as np
import pytest
import torch

from benchmarks.conftest import DEVICE, measure, sync, tag
from fastpapers import ops
from fastpapers.reference.pyramid import halving_sizes
from fastpapers.reference.pyramid import roundtrip_bytes as reference_roundtrip_bytes

try:
    import kornia
except ImportError:  # the lent GPU host has none unless a wheel is carried (benchmarks/gpu/run.sh)
    kornia = None

SHAPE = (16, 3, 256, 256)
LEVELS = 4
KORNIA = "kornia build_laplacian_pyramid + pyrup/add"
WORK = "4-level Laplacian pyramid (4 tensors) + its reconstruction, float32"


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
    levels = [np.empty((a.shape[0], a.shape[1]) + s, a.dtype) for s in halving_sizes(*a.shape[2:], LEVELS)]
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


def traffic(shape, itemsize):
    """DRAM bytes of a build + reconstruct: the least any implementation moves, and what our
    kernels move pass by pass (fastpapers.reference.pyramid.roundtrip_bytes, which follows
    the launch structure)."""
    t = reference_roundtrip_bytes(shape, LEVELS, itemsize)
    return {"compulsory": t["compulsory"], "passes": t["passes"]}


def _roundtrip_case(benchmark, impl, x, peer_rounds, ours_rounds):
    if impl == "peer" and kornia is None:
        pytest.skip("kornia is not installed")
    torch.testing.assert_close(ours_roundtrip(x), x, rtol=1e-5, atol=1e-6)
    if kornia is not None:
        assert [p.shape for p in ops.laplacian_pyramid(x, LEVELS)] == [p.shape for p in kornia_pyramid(x)]
        torch.testing.assert_close(kornia_roundtrip(x), x, rtol=1e-5, atol=1e-6)
    fn = kornia_roundtrip if impl == "peer" else ours_roundtrip
    tag(benchmark, f"laplacian build+reconstruct {'x'.join(map(str, x.shape))}, {LEVELS} levels ({DEVICE})", impl,
        KORNIA, WORK + " (kornia: its bilinear pyrdown/pyrup semantics)")

    def run():
        out = fn(x)
        sync()
        return out

    measure(benchmark, run, rounds=peer_rounds if impl == "peer" else ours_rounds, warmup=2,
            nbytes=traffic(tuple(x.shape), x.element_size()) if impl == "ours" else None)


@pytest.mark.parametrize("impl", ["peer", "ours"])
def test_laplacian_roundtrip_vs_kornia(benchmark, impl):
    _roundtrip_case(benchmark, impl, _input(), 5, 30)


@pytest.mark.skipif(DEVICE != "cuda", reason="GPU bandwidth case")
@pytest.mark.parametrize("impl", ["peer", "ours"])
def test_laplacian_roundtrip_large_gpu(benchmark, impl):
    # 16x larger than the target case: the kernels' bandwidth once launches no longer matter.
    x = torch.rand(16, 3, 1024, 1024, device=DEVICE, generator=torch.Generator(DEVICE).manual_seed(0))
    _roundtrip_case(benchmark, impl, x, 5, 20)


@pytest.mark.skipif(DEVICE != "cpu", reason="the cv2 loop is a CPU peer")
@pytest.mark.parametrize("impl", ["peer", "ours"])
def test_laplacian_roundtrip_vs_cv2_loop(benchmark, impl):
    x = _input()
    a = x.numpy()
    for got, want in zip(ops.laplacian_pyramid(x, LEVELS), cv2_pyramid(a)):
        torch.testing.assert_close(got, torch.from_numpy(want), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours_roundtrip(x), torch.from_numpy(cv2_roundtrip(a)), rtol=1e-5, atol=1e-6)
    tag(benchmark, f"laplacian build+reconstruct {'x'.join(map(str, SHAPE))}, {LEVELS} levels, cv2 semantics (cpu)",
        impl, "cv2.pyrDown/pyrUp loop over channels", WORK + ", the same values on both sides")
    fn = (lambda: cv2_roundtrip(a)) if impl == "peer" else (lambda: ours_roundtrip(x))
    measure(benchmark, fn, rounds=30, warmup=2)
