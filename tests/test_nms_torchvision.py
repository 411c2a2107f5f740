"""fastpapers.ops.nms / batched_nms as drop-ins for torchvision's.

The first part restates what torchvision's own test suite (test/test_ops.py, TestNMS and its
opcheck variants) checks, run against our ops; the second covers every input torchvision
accepts beyond those tests (thresholds outside [0, 1], ±inf scores, float and bool group ids,
half precision, autocast, TorchScript, torch.fx), each compared with torchvision's result;
the third the CUDA paths' synchronisation (run on a GPU host).
"""
import warnings

import pytest
import torch
import torchvision

from fastpapers import ops
from fastpapers.ops.nms import BATCHED_NO_SYNC_MAX, nms_padded
from tests.utils import DEVICES, needs_cuda, random_boxes, unique_scores


# ---------------------------------------------------------------------------------------
# torchvision's TestNMS, in our words.

def _greedy_by_box_iou(boxes, scores, thr):
    """Textbook greedy NMS on torchvision.ops.box_iou: keep the best, drop IoU > thr, repeat."""
    order = torch.sort(scores, descending=True, stable=True).indices
    kept = []
    while order.numel():
        best = order[0]
        kept.append(int(best))
        rest = order[1:]
        iou = torchvision.ops.box_iou(boxes[rest], boxes[best][None])[:, 0]
        order = rest[iou <= thr]
    return torch.tensor(kept, dtype=torch.long)


def _boxes_with_one_pair_at(n, thr, g):
    """n random boxes where the last is box 0 stretched so that their IoU is just above thr."""
    boxes = torch.rand(n, 4, generator=g) * 100
    boxes[:, 2:] += boxes[:, :2]
    boxes[-1] = boxes[0]
    x1, _, x2, _ = boxes[0].tolist()
    target = thr + 1e-5
    boxes[-1, 2] += (x2 - x1) * (1 - target) / target
    return boxes, torch.rand(n, generator=g)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("thr", [0.2, 0.5, 0.8])
@pytest.mark.parametrize("seed", range(10))
def test_matches_textbook_greedy(device, thr, seed):
    boxes, scores = _boxes_with_one_pair_at(1000, thr, torch.Generator().manual_seed(seed))
    want = _greedy_by_box_iou(boxes, scores, thr)
    got = ops.nms(boxes.to(device), scores.to(device), thr).cpu()
    assert torch.equal(got, want)
    assert torch.equal(got, torchvision.ops.nms(boxes, scores, thr))


def test_shape_errors_are_runtime_errors():
    for boxes, scores in [(torch.rand(4), torch.rand(3)), (torch.rand(3, 5), torch.rand(3)),
                          (torch.rand(3, 4), torch.rand(3, 2)), (torch.rand(3, 4), torch.rand(4))]:
        with pytest.raises(RuntimeError):
            ops.nms(boxes, scores, 0.5)


@pytest.mark.parametrize("thr", [0.2, 0.5, 0.8])
@pytest.mark.parametrize("scale,zero_point", [(1, 0), (2, 50), (3, 10)])
def test_quantized_inputs_use_their_dequantized_values(thr, scale, zero_point):
    boxes, scores = _boxes_with_one_pair_at(1000, thr, torch.Generator().manual_seed(scale))
    qb = torch.quantize_per_tensor(boxes, scale=scale, zero_point=zero_point, dtype=torch.quint8)
    qs = torch.quantize_per_tensor(scores * 100, scale=scale, zero_point=zero_point, dtype=torch.quint8)
    want = ops.nms(qb.dequantize(), qs.dequantize(), thr)
    assert torch.equal(ops.nms(qb, qs, thr), want)
    assert torch.equal(torchvision.ops.nms(qb, qs, thr), want)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_keeps_what_float32_keeps(device, dtype):
    # Three large, strongly overlapping boxes: the decision does not depend on rounding.
    boxes = torch.tensor([[281.5, 190.25, 1190.0, 850.5], [283.0, 187.5, 1195.5, 849.0],
                          [278.0, 196.0, 1188.5, 852.0]], device=device)
    scores = torch.tensor([0.61, 0.77, 0.42], device=device)
    keep32 = ops.nms(boxes, scores, 0.2)
    assert torch.equal(ops.nms(boxes.to(dtype), scores.to(dtype), 0.2), keep32)
    # Computed in float32 inside: exactly the float32 result on the rounded values.
    b, s = random_boxes(700, device=device).to(dtype), unique_scores(700, device=device).to(dtype)
    for thr in (0.0, 0.4, 0.9):
        assert torch.equal(ops.nms(b, s, thr), ops.nms(b.float(), s.float(), thr))


@pytest.mark.parametrize("seed", range(10))
def test_batched_equals_torchvision_loop_and_offset_paths(seed):
    # Every box covers [1, 10]^2, so boxes of different groups overlap heavily: only a
    # correct per-group separation keeps them.
    g = torch.Generator().manual_seed(seed)
    boxes = torch.cat([torch.rand(1000, 2, generator=g), torch.rand(1000, 2, generator=g) + 10], 1)
    scores = torch.rand(1000, generator=g)
    idxs = torch.randint(0, 4, (1000,), generator=g)
    loop = torchvision.ops.boxes._batched_nms_vanilla(boxes, scores, idxs, 0.9)
    trick = torchvision.ops.boxes._batched_nms_coordinate_trick(boxes, scores, idxs, 0.9)
    got = ops.batched_nms(boxes, scores, idxs, 0.9)
    assert torch.equal(got, loop) and torch.equal(got, trick)


@pytest.mark.parametrize("device", DEVICES)
def test_batched_one_dimensional_empty(device):
    empty = torch.empty((0,), device=device)
    out = ops.batched_nms(empty, None, None, None)
    assert out.dtype == torch.int64 and out.shape == (0,) and out.device == empty.device
    assert torch.equal(out.cpu(), torchvision.ops.batched_nms(empty.cpu(), None, None, None))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_opcheck_all_utils(device, dtype):
    # schema, autograd registration, fake tensor, AOT dispatch with dynamic shapes.
    b = random_boxes(150, size=100.0, device=device).to(dtype)
    s = unique_scores(150, device=device).to(dtype)
    i = torch.randint(0, 4, (150,), device=device)
    torch.library.opcheck(torch.ops.fastpapers.nms.default, (b, s, 0.5))
    torch.library.opcheck(torch.ops.fastpapers.nms_padded.default, (b, s, 0.5))
    torch.library.opcheck(torch.ops.fastpapers.batched_nms.default, (b, s, i, 0.5, 0.3, 5))


# ---------------------------------------------------------------------------------------
# Inputs torchvision accepts: same results.

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", [40, 300, 2000])  # CPU: dense sweep, grid, grid with many cells
@pytest.mark.parametrize("thr", [-1.0, -0.25, -1e-30, 0.0, 1.0, 1.0 + 1e-7, 2.5, float("inf"), -float("inf")])
def test_thresholds_outside_unit_interval(device, n, thr):
    g = torch.Generator().manual_seed(n)
    boxes = random_boxes(n, size=300.0, generator=g)
    boxes[::9, 2] = boxes[::9, 0]  # zero width: IoU 0 with boxes of area, NaN with each other
    boxes[1::13, [1, 3]] = boxes[1::13, [3, 1]]  # inverted
    scores = unique_scores(n, generator=g)
    want = torchvision.ops.nms(boxes, scores, thr)
    assert torch.equal(ops.nms(boxes.to(device), scores.to(device), thr).cpu(), want)
    idxs = torch.randint(0, 3, (n,), generator=g)
    want = torchvision.ops.boxes._batched_nms_vanilla(boxes, scores, idxs, thr)
    assert torch.equal(ops.batched_nms(boxes.to(device), scores.to(device), idxs.to(device), thr).cpu(), want)


def test_threshold_meaning_at_the_ends():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 5, 5]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    assert ops.nms(boxes, scores, 1.0).tolist() == [0, 1, 2, 3]  # an IoU never exceeds 1
    assert ops.nms(boxes, scores, -0.5).tolist() == [0]  # IoU 0 > -0.5: disjoint boxes go too


@pytest.mark.parametrize("device", DEVICES)
def test_infinite_scores_and_boxes(device):
    g = torch.Generator().manual_seed(4)
    boxes = random_boxes(1500, size=400.0, generator=g)
    scores = unique_scores(1500, generator=g)
    scores[::7] = -float("inf")
    scores[3::11] = float("inf")
    boxes[::17, 2] = float("inf")
    boxes[5::29] = torch.tensor([-float("inf"), -float("inf"), float("inf"), float("inf")])
    for thr in (0.0, 0.5):
        want = torchvision.ops.nms(boxes, scores, thr)
        assert torch.equal(ops.nms(boxes.to(device), scores.to(device), thr).cpu(), want)
    # torchvision's batched_nms orders equal scores (the infinities tie) by an unstable sort:
    # merge its per-group results stably instead (equal scores: lower index first).
    idxs = torch.randint(0, 5, (1500,), generator=g)
    keep = torch.cat([torch.nonzero(idxs == k)[:, 0][torchvision.ops.nms(boxes[idxs == k], scores[idxs == k], 0.5)]
                      for k in range(5)])
    keep = torch.sort(keep).values
    want = keep[torch.sort(scores[keep], descending=True, stable=True).indices]
    assert torch.equal(ops.batched_nms(boxes.to(device), scores.to(device), idxs.to(device), 0.5).cpu(), want)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["float", "float16", "bool", "negative_zero", "inf"])
def test_float_and_bool_group_ids(device, kind):
    g = torch.Generator().manual_seed(8)
    n = 1200
    boxes = random_boxes(n, size=200.0, generator=g)
    scores = unique_scores(n, generator=g)
    raw = torch.randint(0, 6, (n,), generator=g)
    if kind == "float":
        idxs = raw.float() * 0.37 - 0.5  # fractional ids: distinct values are distinct groups
    elif kind == "float16":
        idxs = (raw.float() * 1000.0).half()
    elif kind == "bool":
        idxs = raw > 2
    elif kind == "negative_zero":
        idxs = torch.where(raw > 2, torch.tensor(0.0), torch.tensor(-0.0))  # -0.0 == 0.0: one group
    else:
        idxs = torch.where(raw > 3, torch.tensor(float("inf")), raw.float())
    want = torchvision.ops.boxes._batched_nms_vanilla(boxes, scores, idxs, 0.5)
    got = ops.batched_nms(boxes.to(device), scores.to(device), idxs.to(device), 0.5).cpu()
    assert torch.equal(got, want)
    if kind == "negative_zero":
        assert torch.equal(got, ops.nms(boxes, scores, 0.5))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cpu_autocast_runs_in_float32(dtype):
    b, s = random_boxes(500), unique_scores(500)
    idxs = torch.randint(0, 4, (500,))
    with torch.autocast("cpu", dtype=dtype):
        got = ops.nms(b, s, 0.5)
        got_half = ops.nms(b.to(dtype), s.to(dtype), 0.5)
        got_b = ops.batched_nms(b.to(dtype), s.to(dtype), idxs, 0.5)
    assert torch.equal(got, torchvision.ops.nms(b, s, 0.5))
    assert torch.equal(got_half, ops.nms(b.to(dtype).float(), s.to(dtype).float(), 0.5))
    assert torch.equal(got_b, ops.batched_nms(b.to(dtype).float(), s.to(dtype).float(), idxs, 0.5))


@pytest.mark.parametrize("device", DEVICES)
def test_torchscript(device):
    b, s = random_boxes(400, device=device), unique_scores(400, device=device)
    idxs = torch.randint(0, 3, (400,), device=device)
    assert torch.equal(torch.jit.script(ops.nms)(b, s, 0.5), ops.nms(b, s, 0.5))
    scripted = torch.jit.script(ops.batched_nms)
    # The oracle is torchvision's per-group loop: its offset path (used below 4,000 boxes on
    # the CPU) lets groups whose ids differ by less than 1 overlap, which no group semantics
    # intends.
    for ids in (idxs, idxs.float() * 0.5 - 0.25, idxs > 0):
        want = torchvision.ops.boxes._batched_nms_vanilla(b.cpu(), s.cpu(), ids.cpu(), 0.5)
        assert torch.equal(scripted(b, s, ids, 0.5).cpu(), want)
    assert torch.jit.script(nms_padded)(b, s, 0.5)[1].item() == ops.nms(b, s, 0.5).numel()

    @torch.jit.script
    def postprocess(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        keep = ops.batched_nms(boxes, scores, labels, 0.5, score_threshold=0.2, max_per_group=10)
        return keep[:5]

    assert torch.equal(postprocess(b, s, idxs), ops.batched_nms(b, s, idxs, 0.5, score_threshold=0.2,
                                                                 max_per_group=10)[:5])


class _Detector(torch.nn.Module):
    def forward(self, boxes, scores, labels):
        a = ops.nms(boxes, scores, 0.5)
        b = ops.batched_nms(boxes, scores, labels, 0.4, score_threshold=0.1)
        keep, count = nms_padded(boxes * 1.0, scores, 0.3)
        return a, b, keep, count


@pytest.mark.parametrize("device", DEVICES)
def test_fx_symbolic_trace_makes_leaves(device):
    gm = torch.fx.symbolic_trace(_Detector())
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert {getattr(t, "__name__", "") for t in targets} >= {"nms", "batched_nms", "nms_padded"}
    b, s = random_boxes(300, device=device), unique_scores(300, device=device)
    labels = torch.randint(0, 3, (300,), device=device)
    for x, y in zip(gm(b, s, labels), _Detector()(b, s, labels)):
        assert torch.equal(x, y)


@pytest.mark.parametrize("device", DEVICES)
def test_nms_padded(device):
    b, s = random_boxes(900, device=device), unique_scores(900, device=device)
    keep, count = nms_padded(b, s, 0.5)
    want = ops.nms(b, s, 0.5)
    assert keep.shape == (900,) and count.shape == () and count.device == b.device
    k = int(count)
    assert k == want.numel() and torch.equal(keep[:k], want) and bool((keep[k:] == -1).all())
    keep, count = nms_padded(b[:0], s[:0], 0.5)
    assert keep.shape == (0,) and int(count) == 0
    # Meta tensors: static shapes, so the meta kernel answers.
    keep, count = nms_padded(b.to("meta"), s.to("meta"), 0.5)
    assert keep.shape == (900,) and keep.device.type == "meta" and count.shape == ()


def test_compile_checks_metadata_like_eager():
    b, s = random_boxes(50), unique_scores(50)

    def f(boxes, scores):
        return ops.nms(boxes, scores, 0.5)

    compiled = torch.compile(f, fullgraph=True, backend="eager")
    for bad in [(b[:, :3], s), (b, s[:4]), (b, s.double())]:
        with pytest.raises(RuntimeError) as eager:
            f(*bad)
        with pytest.raises(RuntimeError) as comp:
            compiled(*bad)
        assert type(eager.value).__name__ in str(comp.value) or type(comp.value) is type(eager.value)

    def g(boxes, scores):
        keep, count = nms_padded(boxes, scores, 0.5)
        return keep * 2, count

    cg = torch.compile(g, fullgraph=True, backend="eager")
    k1, c1 = cg(b, s)
    k2, c2 = g(b, s)
    assert torch.equal(k1, k2) and torch.equal(c1, c2)


# ---------------------------------------------------------------------------------------
# CUDA: compare with torchvision, and count host synchronisations.

def _count_syncs(fn):
    """Number of synchronising CUDA calls fn makes (torch's sync debug mode, as warnings)."""
    torch.cuda.synchronize()
    old = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            out = fn()
        finally:
            torch.cuda.set_sync_debug_mode(old)
    return out, sum("synchroniz" in str(w.message) for w in caught)


@needs_cuda
@pytest.mark.parametrize("n", [1000, 5000, 20000])
@pytest.mark.parametrize("thr", [-0.1, 0.0, 0.5, 0.9, 1.5])
def test_cuda_matches_torchvision(n, thr):
    b = random_boxes(n, device="cuda")
    s = unique_scores(n, device="cuda")
    assert torch.equal(ops.nms(b, s, thr).cpu(), torchvision.ops.nms(b, s, thr).cpu())


@needs_cuda
def test_cuda_global_bitmap_path():
    # Above 4096 tiles (262,144 boxes) the scan's bitmap lives in global memory.
    g = torch.Generator().manual_seed(0)
    b, s = random_boxes(270_000, size=20_000.0, generator=g), unique_scores(270_000, generator=g)
    assert torch.equal(ops.nms(b.cuda(), s.cuda(), 0.5).cpu(), ops.nms(b, s, 0.5))
    i = torch.randint(0, 2, (270_000,), generator=g)  # batched: bitmap in global memory, per group
    assert torch.equal(ops.batched_nms(b.cuda(), s.cuda(), i.cuda(), 0.5, max_per_group=5000).cpu(),
                       ops.batched_nms(b, s, i, 0.5, max_per_group=5000))


@needs_cuda
@pytest.mark.parametrize("n,groups", [(3000, 7), (BATCHED_NO_SYNC_MAX + 500, 80), (40_000, 1)])
def test_cuda_batched_matches_cpu(n, groups):
    g = torch.Generator().manual_seed(n)
    b, s = random_boxes(n, generator=g), unique_scores(n, generator=g)
    i = torch.randint(0, groups, (n,), generator=g) * 1_000_003 - 7
    for kw in ({}, {"score_threshold": 0.3}, {"max_per_group": 3}, {"score_threshold": 0.6, "max_per_group": 50}):
        got = ops.batched_nms(b.cuda(), s.cuda(), i.cuda(), 0.5, **kw).cpu()
        assert torch.equal(got, ops.batched_nms(b, s, i, 0.5, **kw)), kw


@needs_cuda
@pytest.mark.parametrize("n", [1000, 20000])
def test_cuda_one_sync_per_call(n):
    b, s = random_boxes(n, device="cuda"), unique_scores(n, device="cuda")
    i = torch.randint(0, 80, (n,), device="cuda")
    ops.nms(b, s, 0.5), ops.batched_nms(b, s, i, 0.5)  # warm the allocator
    out, syncs = _count_syncs(lambda: ops.nms(b, s, 0.5))
    assert syncs == 1 and torch.equal(out.cpu(), torchvision.ops.nms(b, s, 0.5).cpu())
    out, syncs = _count_syncs(lambda: ops.batched_nms(b, s, i, 0.5, score_threshold=0.2, max_per_group=30))
    assert syncs == 1


@needs_cuda
def test_cuda_padded_never_syncs():
    b, s = random_boxes(5000, device="cuda"), unique_scores(5000, device="cuda")
    nms_padded(b, s, 0.5)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        keep, count = nms_padded(b, s, 0.5)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.equal(keep[:int(count)].cpu(), torchvision.ops.nms(b, s, 0.5).cpu())
    # And under a CUDA graph: replay on new values in the same buffers.
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        gkeep, gcount = nms_padded(b, s, 0.5)
    s.copy_(unique_scores(5000, device="cuda", generator=torch.Generator().manual_seed(9)))
    graph.replay()
    assert torch.equal(gkeep[:int(gcount)].cpu(), torchvision.ops.nms(b, s, 0.5).cpu())


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_cuda_autocast_and_checked_mode(dtype):
    b, s = random_boxes(800, device="cuda"), unique_scores(800, device="cuda")
    with torch.autocast("cuda"):
        got = ops.nms(b.to(dtype), s.to(dtype), 0.5)
    assert torch.equal(got.cpu(), ops.nms(b.to(dtype).float().cpu(), s.to(dtype).float().cpu(), 0.5))
    nan = b.clone()
    nan[3, 0] = float("nan")
    ops.nms(nan, s, 0.5)  # unchecked: runs, no error, no out-of-bounds access
    old = ops.set_checks(True)
    try:
        with pytest.raises(ValueError, match="boxes"):
            ops.nms(nan, s, 0.5)
    finally:
        ops.set_checks(old)
