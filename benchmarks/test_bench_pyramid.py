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
from fastpapers.reference.pyramid import halving_sizes

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SHAPE = (16, 3, 256, 256)
LEVELS = 4
# Peak DRAM bandwidth (bytes/s) of the GPUs the targets name, by device-name substring (the
# first that matches): H100 NVL 3.9 TB/s, H100 PCIe 2.0 TB/s, H100 SXM (HBM3) 3.35 TB/s,
# H200 4.8 TB/s.
PEAK_BANDWIDTH = [("H100 NVL", 3.9e12), ("H100 PCIe", 2.0e12), ("H100", 3.35e12), ("H200", 4.8e12)]


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


def peak_bandwidth():
    if DEVICE != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((bw for key, bw in PEAK_BANDWIDTH if key in name), None)


def roundtrip_bytes(shape, levels, itemsize):
    """DRAM bytes of our build + reconstruct if every pass reads each of its inputs once and
    writes its output once: per level i (area a_i), build pyr_down (a_i in, a_{i+1} out) and
    residual (G_i, G_{i+1} in, L_i out), reconstruct (G_{i+1}, L_i in, G_i out)."""
    b, c, h, w = shape
    areas = [hh * ww for hh, ww in halving_sizes(h, w, levels)]
    per_plane = sum(5 * areas[i] + 3 * areas[i + 1] for i in range(levels - 1))
    return b * c * per_plane * itemsize


def compulsory_bytes(shape, levels, itemsize):
    """The least any build + reconstruct can move: x in, every level out, every level in, x out."""
    b, c, h, w = shape
    areas = [hh * ww for hh, ww in halving_sizes(h, w, levels)]
    return b * c * (2 * areas[0] + 2 * sum(areas)) * itemsize


def record_bandwidth(benchmark, shape, levels, itemsize):
    """extra_info for run.sh's bandwidth table: GB/s and fraction of the card's peak."""
    if benchmark.stats is None:  # --benchmark-disable: nothing was timed
        return
    peak = peak_bandwidth()
    seconds = benchmark.stats.stats.median
    for key, nbytes in (("passes", roundtrip_bytes(shape, levels, itemsize)),
                        ("compulsory", compulsory_bytes(shape, levels, itemsize))):
        benchmark.extra_info[f"bytes_{key}"] = nbytes
        benchmark.extra_info[f"gbps_{key}"] = nbytes / seconds / 1e9
        if peak:
            benchmark.extra_info[f"dram_fraction_{key}"] = nbytes / seconds / peak


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
    if impl == "ours":
        record_bandwidth(benchmark, SHAPE, LEVELS, x.element_size())


@pytest.mark.skipif(DEVICE != "cuda", reason="GPU bandwidth case")
@pytest.mark.parametrize("impl", ["peer", "ours"])
def test_laplacian_roundtrip_large_gpu(benchmark, impl):
    # 16x larger than the target case: the kernels' bandwidth once launches no longer matter.
    shape = (16, 3, 1024, 1024)
    x = torch.rand(*shape, device=DEVICE)
    torch.testing.assert_close(ours_roundtrip(x), x, rtol=1e-5, atol=1e-6)
    fn = kornia_roundtrip if impl == "peer" else ours_roundtrip
    tag(benchmark, f"laplacian build+reconstruct {'x'.join(map(str, shape))}, {LEVELS} levels ({DEVICE})", impl,
        "kornia build_laplacian_pyramid + pyrup/add")

    def run():
        out = fn(x)
        _sync()
        return out

    benchmark.pedantic(run, rounds=5 if impl == "peer" else 20, warmup_rounds=1)
    if impl == "ours":
        record_bandwidth(benchmark, shape, LEVELS, x.element_size())


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
