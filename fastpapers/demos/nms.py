"""NMS demo: a scene of overlapping scored detections, suppressed, timed against torchvision."""
import os
import time

import torch

ORDER = 10
TITLE = "NMS: overlapping detections before/after, timed against torchvision"


def _median_time(fn, reps=5):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def run(out_dir, *, device, seed):
    from .. import ops
    from ..viz import draw_boxes, hstack

    g = torch.Generator().manual_seed(seed)
    # Ten objects, each detected ~30 times with jittered boxes and noisy scores.
    centers = torch.rand(10, 2, generator=g) * 200 + 28
    sizes = torch.rand(10, 2, generator=g) * 40 + 20
    k = 30
    jitter = torch.randn(10, k, 4, generator=g) * 4
    base = torch.cat([centers - sizes / 2, centers + sizes / 2], 1)
    boxes = (base[:, None, :] + jitter).reshape(-1, 4)
    boxes = torch.cat([boxes[:, :2].minimum(boxes[:, 2:]), boxes[:, :2].maximum(boxes[:, 2:])], 1)
    scores = torch.rand(boxes.shape[0], generator=g)
    boxes, scores = boxes.to(device), scores.to(device)
    keep = ops.nms(boxes, scores, 0.5)

    canvas = torch.full((3, 256, 256), 0.95)
    before = draw_boxes(canvas, boxes.cpu(), width=1)
    after = draw_boxes(canvas, boxes[keep].cpu(), [f"{s:.2f}" for s in scores[keep].tolist()])
    path = os.path.join(out_dir, "nms_before_after.png")
    hstack([before, after]).save(path)

    import torchvision
    # 5k boxes: torchvision takes ~80 ms per call there on a 2-core CPU (1.4 s at 20k), which
    # keeps the step a few seconds; the benchmarks time 20k.
    nb, ns = _big_inputs(5000, device, g)
    assert torch.equal(ops.nms(nb, ns, 0.5).cpu(), torchvision.ops.nms(nb, ns, 0.5).cpu())
    t_ours = _median_time(lambda: ops.nms(nb, ns, 0.5))
    t_peer = _median_time(lambda: torchvision.ops.nms(nb, ns, 0.5), reps=3)
    print(f"   {boxes.shape[0]} boxes -> {keep.numel()} kept; 5k random boxes: "
          f"fastpapers {t_ours * 1e3:.1f} ms, torchvision {t_peer * 1e3:.1f} ms ({t_peer / t_ours:.1f}x)")
    return [path]


def _big_inputs(n, device, g):
    xy = torch.rand(n, 2, generator=g) * 1000
    wh = torch.rand(n, 2, generator=g) * 100
    return torch.cat([xy, xy + wh], 1).to(device), torch.rand(n, generator=g).to(device)
