"""NMS vs torchvision on identical inputs (results are checked equal before timing)."""
import pytest
import torch
import torchvision

from fastpapers import ops
from benchmarks.conftest import tag


def _inputs(n, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 1000
    wh = torch.rand(n, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + wh], 1).to(device)
    scores = (torch.randperm(n, generator=g).float() / n).to(device)
    return boxes, scores


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("impl", ["peer", "ours"])
@pytest.mark.parametrize("n", [1000, 5000, 20000])
def test_nms(benchmark, n, impl):
    boxes, scores = _inputs(n, DEVICE)
    assert torch.equal(ops.nms(boxes, scores, 0.5).cpu(), torchvision.ops.nms(boxes, scores, 0.5).cpu())
    fn = torchvision.ops.nms if impl == "peer" else ops.nms
    tag(benchmark, f"nms {n} boxes ({DEVICE})", impl, "torchvision.ops.nms")

    def run():
        out = fn(boxes, scores, 0.5)
        _sync(DEVICE)
        return out

    benchmark.pedantic(run, rounds=5 if n >= 20000 else 20, warmup_rounds=1)


@pytest.mark.parametrize("impl", ["peer", "ours"])
def test_batched_nms(benchmark, impl):
    # 16 images x 5k boxes x 80 classes: group id = image * 80 + class.
    n = 16 * 5000
    boxes, scores = _inputs(n, DEVICE, seed=1)
    image = torch.arange(16, device=DEVICE).repeat_interleave(5000)
    cls = torch.randint(0, 80, (n,), generator=torch.Generator().manual_seed(2)).to(DEVICE)
    idxs = image * 80 + cls
    assert torch.equal(ops.batched_nms(boxes, scores, idxs, 0.5).cpu(),
                       torchvision.ops.batched_nms(boxes, scores, idxs, 0.5).cpu())
    fn = torchvision.ops.batched_nms if impl == "peer" else ops.batched_nms
    tag(benchmark, f"batched_nms 16x5k boxes, 80 classes ({DEVICE})", impl, "torchvision.ops.batched_nms")

    def run():
        out = fn(boxes, scores, idxs, 0.5)
        _sync(DEVICE)
        return out

    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
