"""NMS and batched NMS vs torchvision.ops.nms / batched_nms.

Why the two sides do the same work:
- Inputs: the same float32 (N, 4) xyxy boxes and (N,) scores (and int64 group ids), made once
  on the device, contiguous; neither side gets them pre-sorted or pre-validated (our finite
  checks on the CPU run inside our timed call; torchvision validates its own way).
- Outputs: both return the int64 indices of the kept boxes by decreasing score on the input's
  device; they are checked equal before timing.
- Precision: float32 on both sides; no matrix products, so TF32 does not enter.
- Synchronisation: each timed call ends with ``torch.cuda.synchronize()`` on both sides; any
  synchronisation inside an op (reading the kept count to size the output) is that op's own.
- Warm-up: outside the timed region (conftest.measure).

torchvision's batched_nms runs one nms per group when the boxes hold more than 4,000 (CPU) or
20,000 (CUDA) coordinates, and offsets the boxes per group otherwise: that is the peer's own
strategy, timed as a user gets it. 100k boxes is a GPU-only size (torchvision's CPU nms is
quadratic in time: about 30 s per call there).
"""
import pytest
import torch
import torchvision

from benchmarks.conftest import DEVICE, measure, sync, tag
from fastpapers import ops

IOU = 0.5


def _inputs(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 1000
    wh = torch.rand(n, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + wh], 1).to(DEVICE)
    scores = (torch.randperm(n, generator=g).float() / n).to(DEVICE)
    return boxes, scores


def _timed(fn, *args):
    def run():
        out = fn(*args)
        sync()
        return out
    return run


@pytest.mark.parametrize("impl", ["peer", "ours"])
@pytest.mark.parametrize("n", [1000, 5000, 20000, 100000])
def test_nms(benchmark, n, impl):
    if n > 20000 and DEVICE != "cuda":
        pytest.skip("GPU-only size: torchvision's CPU nms takes ~30 s per call at 100k boxes")
    boxes, scores = _inputs(n)
    if impl == "ours":
        assert torch.equal(ops.nms(boxes, scores, IOU).cpu(), torchvision.ops.nms(boxes, scores, IOU).cpu())
    fn = torchvision.ops.nms if impl == "peer" else ops.nms
    tag(benchmark, f"nms {n} boxes ({DEVICE})", impl, "torchvision.ops.nms",
        f"int64 kept indices of {n} float32 boxes, IoU > {IOU} suppressed")
    measure(benchmark, _timed(fn, boxes, scores, IOU), rounds=5 if n >= 20000 else 20, warmup=2)


def _grouped(images, per_image, classes, seed):
    n = images * per_image
    boxes, scores = _inputs(n, seed=seed)
    image = torch.arange(images, device=DEVICE).repeat_interleave(per_image)
    cls = torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(seed + 1)).to(DEVICE)
    return boxes, scores, image * classes + cls


# (images, boxes per image, classes): group id = image * classes + class.
GROUPED = {"16x5k boxes, 80 classes": (16, 5000, 80), "20k boxes, 80 classes": (1, 20000, 80)}


@pytest.mark.parametrize("impl", ["peer", "ours"])
@pytest.mark.parametrize("case", list(GROUPED))
def test_batched_nms(benchmark, case, impl):
    images, per_image, classes = GROUPED[case]
    boxes, scores, idxs = _grouped(images, per_image, classes, seed=1)
    if impl == "ours":
        assert torch.equal(ops.batched_nms(boxes, scores, idxs, IOU).cpu(),
                           torchvision.ops.batched_nms(boxes, scores, idxs, IOU).cpu())
    fn = torchvision.ops.batched_nms if impl == "peer" else ops.batched_nms
    tag(benchmark, f"batched_nms {case} ({DEVICE})", impl, "torchvision.ops.batched_nms",
        f"int64 kept indices, NMS IoU > {IOU} within each of {images * classes} groups")
    measure(benchmark, _timed(fn, boxes, scores, idxs, IOU), rounds=5, warmup=2)
