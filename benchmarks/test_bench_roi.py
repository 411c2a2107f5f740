"""ROI sampling vs its peers: roi_align vs torchvision.ops.roi_align, roi_bilinear vs the
F.affine_grid + F.grid_sample composition it is specified by, with the one-image map passed
to grid_sample as an expanded view, not the oracle's per-roi copy (benchmarks/peers.py).

Case of DESIGN.md: C=512, a 38x50 map (a 600x800 image at stride 16), 7x7 output, sampling
ratio 2 for roi_align; 256 rois, and 2,000 (a Faster R-CNN proposal count, GPU only: the
CPU peer takes seconds per call there).

Why the two sides do the same work:
- Inputs: the same float32 contiguous (1, C, H, W) map and (K, 5) rois, made once on the
  device; both sides take them as given (our ROI checks run inside our timed call).
- Outputs: forward, the (K, C, 7, 7) samples under ``torch.no_grad()``; forward+backward,
  a fresh leaf copy of the map (and of the rois where the op is differentiable in them,
  roi_bilinear) on both sides, the output, then ``.backward(grad)`` with the same (K, C, 7, 7)
  gradient, so both materialise the output and the same input gradients. Checked equal
  (up to float32 summation order) before timing.
- Precision: float32 on both sides; no matrix products (TF32 does not enter).
- Synchronisation: each timed call ends with ``torch.cuda.synchronize()`` on both sides.
- Warm-up: outside the timed region (conftest.measure).

Chip limit: compulsory DRAM bytes of one call (the map, rois and output once; for the
backward the output gradient in and the input gradients out), over the median time.
"""
import pytest
import torch
import torchvision

from benchmarks.conftest import DEVICE, measure, sync, tag
from benchmarks.peers import grid_sample_rois
from fastpapers import ops

C, H, W, OUT, SCALE, SR = 512, 38, 50, 7, 1 / 16, 2


def _inputs(k, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, C, H, W, generator=g)
    xy = torch.rand(k, 2, generator=g) * torch.tensor([W / SCALE * 0.9, H / SCALE * 0.9])
    wh = torch.rand(k, 2, generator=g) * 300 + 16
    rois = torch.cat([torch.zeros(k, 1), xy, xy + wh], 1)
    grad = torch.randn(k, C, OUT, OUT, generator=g)
    return x.to(DEVICE), rois.to(DEVICE), grad.to(DEVICE)


def _align(impl):
    fn = torchvision.ops.roi_align if impl == "peer" else ops.roi_align
    return lambda x, rois: fn(x, rois, OUT, SCALE, SR)


def _bilinear(impl):
    fn = grid_sample_rois if impl == "peer" else ops.roi_bilinear
    return lambda x, rois: fn(x, rois, OUT, SCALE)


def _fwd_bwd(fn, x, rois, grad, rois_grad):
    xx = x.detach().requires_grad_()
    rr = rois.detach().requires_grad_(rois_grad)
    fn(xx, rr).backward(grad)
    return (xx.grad, rr.grad) if rois_grad else (xx.grad,)


def _check_equal(make, x, rois, grad, rois_grad):
    peer, ours = make("peer"), make("ours")
    # A sanity check at float32 benchmark scale (tests/test_roi.py holds the exact parity
    # checks): the grid_sample peer rounds its sample positions to float32, and gradients sum
    # hundreds of float32 terms in different orders.
    with torch.no_grad():
        torch.testing.assert_close(ours(x, rois), peer(x, rois), rtol=1e-4, atol=1e-4)
    for a, b in zip(_fwd_bwd(ours, x, rois, grad, rois_grad), _fwd_bwd(peer, x, rois, grad, rois_grad)):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


def _bytes(x, rois, grad, mode, rois_grad):
    size = lambda t: t.numel() * t.element_size()  # noqa: E731
    fwd = size(x) + size(rois) + size(grad)  # grad has the output's shape and dtype
    if mode == "forward":
        return fwd
    return fwd + size(grad) + size(rois) + size(x) + (size(rois) if rois_grad else 0)


CASES = {
    "roi_align": (_align, "torchvision.ops.roi_align", False, f"sr {SR}, "),
    "roi_bilinear": (_bilinear, "F.affine_grid + F.grid_sample (map expanded, no copy)", True, ""),
}


@pytest.mark.parametrize("impl", ["peer", "ours"])
@pytest.mark.parametrize("op,k", [("roi_align", 256), ("roi_align", 2000), ("roi_bilinear", 256)])
@pytest.mark.parametrize("mode", ["forward", "forward+backward"])
def test_roi(benchmark, op, k, mode, impl):
    if k > 256 and DEVICE != "cuda":
        pytest.skip("GPU-only size: the CPU peer takes seconds per call at 2,000 rois")
    make, peer_name, rois_grad, what = CASES[op]
    x, rois, grad = _inputs(k)
    if impl == "ours":
        _check_equal(make, x, rois, grad, rois_grad)
    fn = make(impl)
    grads = "map and rois" if rois_grad else "map"
    work = (f"(K, C, 7, 7) float32 samples of {k} rois" if mode == "forward" else
            f"samples of {k} rois + the {grads} gradient from a given output gradient")
    tag(benchmark, f"{op} {mode}, {k} rois, C={C}, {H}x{W}, {OUT}x{OUT}, {what}({DEVICE})", impl, peer_name, work)

    def run():
        if mode == "forward":
            with torch.no_grad():
                out = fn(x, rois)
        else:
            out = _fwd_bwd(fn, x, rois, grad, rois_grad)
        sync()
        return out

    slow = DEVICE == "cpu" and impl == "peer"
    measure(benchmark, run, rounds=3 if slow else 10, warmup=1 if slow else 2,
            nbytes=_bytes(x, rois, grad, mode, rois_grad))
