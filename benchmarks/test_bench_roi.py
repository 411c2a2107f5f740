"""ROI sampling vs its peers on identical inputs (results are checked equal before timing).

Case of DESIGN.md: K=256 rois, C=512, a 38x50 map (a 600x800 image at stride 16), 7x7 output,
sampling_ratio 2. roi_align is timed against torchvision.ops.roi_align; roi_bilinear against
the F.affine_grid + F.grid_sample composition it is specified by."""
import pytest
import torch
import torchvision

from benchmarks.conftest import tag
from fastpapers import ops
from fastpapers.reference import roi as ref

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
K, C, H, W, OUT, SCALE, SR = 256, 512, 38, 50, 7, 1 / 16, 2


def _inputs(device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, C, H, W, generator=g)
    xy = torch.rand(K, 2, generator=g) * torch.tensor([W / SCALE * 0.9, H / SCALE * 0.9])
    wh = torch.rand(K, 2, generator=g) * 300 + 16
    rois = torch.cat([torch.zeros(K, 1), xy, xy + wh], 1)
    grad = torch.randn(K, C, OUT, OUT, generator=g)
    return x.to(device), rois.to(device), grad.to(device)


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _align(impl):
    fn = torchvision.ops.roi_align if impl == "peer" else ops.roi_align
    return lambda x, rois: fn(x, rois, OUT, SCALE, SR)


def _bilinear(impl):
    fn = ref.roi_bilinear if impl == "peer" else ops.roi_bilinear
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
    torch.testing.assert_close(ours(x, rois), peer(x, rois), rtol=1e-4, atol=1e-4)
    for a, b in zip(_fwd_bwd(ours, x, rois, grad, rois_grad), _fwd_bwd(peer, x, rois, grad, rois_grad)):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


CASES = {
    "roi_align": (_align, "torchvision.ops.roi_align", False),
    "roi_bilinear": (_bilinear, "F.affine_grid + F.grid_sample", True),
}


@pytest.mark.parametrize("impl", ["peer", "ours"])
@pytest.mark.parametrize("op", list(CASES))
@pytest.mark.parametrize("mode", ["forward", "forward+backward"])
def test_roi(benchmark, op, mode, impl):
    make, peer_name, rois_grad = CASES[op]
    x, rois, grad = _inputs(DEVICE)
    if impl == "ours":
        _check_equal(make, x, rois, grad, rois_grad)
    fn = make(impl)
    what = "sr 2, " if op == "roi_align" else ""
    tag(benchmark, f"{op} {mode}, {K} rois, C={C}, {H}x{W}, {OUT}x{OUT}, {what}({DEVICE})", impl, peer_name)

    def run():
        if mode == "forward":
            with torch.no_grad():
                out = fn(x, rois)
        else:
            out = _fwd_bwd(fn, x, rois, grad, rois_grad)
        _sync()
        return out

    slow = DEVICE == "cpu" and impl == "peer"
    benchmark.pedantic(run, rounds=3 if slow else 10, warmup_rounds=1)
