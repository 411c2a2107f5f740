"""DenseCap test-time forward (one image: backbone, localisation layer, RPN NMS 0.7 top 1000,
bilinear ROI sampling, recognition, final NMS 0.3, greedy captions) with our ops vs the same
weights with torchvision.ops.nms and the F.affine_grid + F.grid_sample composition.
Shapes-world model on a 192x192 canvas (24x24 cells x 9 anchors = 5184 proposals).

Why the two sides do the same work:
- Inputs: the same (1, 3, 192, 192) float32 image on the device and two copies of one model
  with the same seeded weights; the sides differ only in ``model.nms_fn`` and
  ``model.roi_fn`` (ours: fastpapers.ops.nms / roi_bilinear; peer: torchvision.ops.nms /
  the F.affine_grid + F.grid_sample composition with the image's map expanded to the rois,
  not copied per roi, benchmarks/peers.py).
- Outputs: ``model.predict`` (under no_grad) on both sides: boxes, scores, tokens and caption
  strings of the kept detections; checked equal before timing.
- Precision: float32; the convolutions and products follow the process's defaults
  (cuDNN TF32 allowed, matmul TF32 off) on both sides.
- Synchronisation: each timed call ends with ``torch.cuda.synchronize()`` on both sides
  (predict itself reads results on the host to build the caption strings, on both sides).
- Warm-up: outside the timed region (conftest.measure).
"""
import pytest
import torch
import torchvision

from benchmarks.conftest import DEVICE, measure, sync, tag
from benchmarks.peers import grid_sample_rois
from fastpapers.data.shapes import ShapesDense, shapes_vocabulary
from fastpapers.models.densecap import shapes_model

SIZE = 192


def _model(impl):
    torch.manual_seed(0)
    m = shapes_model(shapes_vocabulary(), rpn_top_n=1000, max_detections=20)
    # A trained RPN spreads its scores; random init at std 0.01 leaves them nearly tied, so
    # widen the score channels to make both NMS runs see well-separated scores.
    with torch.no_grad():
        m.rpn.head.weight.view(m.rpn.k, 5, -1)[:, 4].mul_(100)
    if impl == "peer":
        m.nms_fn = torchvision.ops.nms
        m.roi_fn = grid_sample_rois
    return m.to(DEVICE).eval()


def _image():
    return ShapesDense(1, size=SIZE, split="test", seed=0)[0]["image"][None].to(DEVICE)


@pytest.mark.parametrize("impl", ["peer", "ours"])
def test_densecap_forward(benchmark, impl):
    model, x = _model(impl), _image()
    if impl == "ours":
        a, b = model.predict(x)[0], _model("peer").predict(x)[0]
        torch.testing.assert_close(a["boxes"], b["boxes"], rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(a["scores"], b["scores"], rtol=1e-4, atol=1e-5)
        assert a["captions"] == b["captions"]
    tag(benchmark, f"densecap test-time forward, 1 image {SIZE}x{SIZE}, top 1000 ({DEVICE})", impl,
        "torchvision.ops.nms + F.affine_grid/F.grid_sample", "boxes, scores and greedy captions of one image")

    def run():
        out = model.predict(x)
        sync()
        return out

    measure(benchmark, run, rounds=5 if DEVICE == "cpu" else 10, warmup=2)
