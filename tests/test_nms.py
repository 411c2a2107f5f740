import pytest
import torch
import torchvision

from fastpapers import ops
from fastpapers.reference import nms as ref
from tests.utils import DEVICES, assert_raises_naming, needs_cuda, random_boxes, unique_scores

DTYPES = [torch.float32, torch.float64]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 2, 1000, 5000])
@pytest.mark.parametrize("thr", [0.0, 0.5, 1.0])
def test_nms_matches_torchvision(device, dtype, n, thr):
    boxes = random_boxes(n, dtype=dtype, device=device)
    scores = unique_scores(n, dtype=dtype, device=device)
    got = ops.nms(boxes, scores, thr)
    want = torchvision.ops.nms(boxes, scores, thr)
    assert got.dtype == torch.long and got.device == boxes.device
    assert torch.equal(got.cpu(), want.cpu())


@pytest.mark.parametrize("device", DEVICES)
def test_nms_matches_reference(device):
    boxes = random_boxes(300, device=device, size=200.0)
    scores = unique_scores(300, device=device)
    assert torch.equal(ops.nms(boxes, scores, 0.3).cpu(), ref.nms(boxes, scores, 0.3).cpu())


@pytest.mark.parametrize("device", DEVICES)
def test_identical_boxes_keep_one(device):
    boxes = torch.tensor([[1.0, 2.0, 5.0, 7.0]], device=device).repeat(50, 1)
    scores = unique_scores(50, device=device)
    got = ops.nms(boxes, scores, 0.5)
    assert got.tolist() == [int(scores.argmax())]


@pytest.mark.parametrize("device", DEVICES)
def test_equal_scores_lower_index_first(device):
    boxes = torch.tensor([[0.0, 0, 1, 1], [10, 10, 11, 11], [0, 0, 1, 1]], device=device)
    scores = torch.tensor([0.5, 0.5, 0.5], device=device)
    assert ops.nms(boxes, scores, 0.5).tolist() == [0, 1]


@pytest.mark.parametrize("device", DEVICES)
def test_zero_area_and_negative_coordinates(device):
    g = torch.Generator().manual_seed(3)
    boxes = random_boxes(400, size=50.0, generator=g) - 25.0
    boxes[::7, 2] = boxes[::7, 0]  # zero width
    boxes[::11] = boxes[0]  # repeated boxes
    boxes = boxes.to(device)
    scores = unique_scores(400, device=device, generator=g)
    for thr in (0.0, 0.3, 0.7, 1.0):
        assert torch.equal(ops.nms(boxes, scores, thr).cpu(), torchvision.ops.nms(boxes, scores, thr).cpu())


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_inputs(device):
    base = random_boxes(600, device=device)
    boxes = torch.cat([base, base], 1)[:, ::2]
    assert not boxes.is_contiguous()
    scores = unique_scores(1200, device=device)[::2]
    assert torch.equal(ops.nms(boxes, scores, 0.5).cpu(), torchvision.ops.nms(boxes.contiguous(),
                                                                           scores.contiguous(), 0.5).cpu())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,groups", [(0, 1), (1, 1), (2000, 1), (3000, 7), (5000, 80)])
def test_batched_nms_matches_torchvision(device, dtype, n, groups):
    boxes = random_boxes(n, dtype=dtype, device=device)
    scores = unique_scores(n, dtype=dtype, device=device)
    idxs = torch.randint(0, groups, (n,), device=device)
    got = ops.batched_nms(boxes, scores, idxs, 0.5)
    want = torchvision.ops.batched_nms(boxes, scores, idxs, 0.5)
    assert torch.equal(got.cpu(), want.cpu())


@pytest.mark.parametrize("device", DEVICES)
def test_batched_nms_options_match_reference(device):
    boxes = random_boxes(1500, device=device, size=300.0)
    scores = unique_scores(1500, device=device)
    idxs = torch.randint(0, 9, (1500,), device=device) * 1000 - 4000  # negative and large ids
    got = ops.batched_nms(boxes, scores, idxs, 0.4, score_threshold=0.2, max_per_group=5)
    want = ref.batched_nms(boxes, scores, idxs, 0.4, score_threshold=0.2, max_per_group=5)
    assert torch.equal(got.cpu(), want.cpu())
    assert (scores[got] > 0.2).all()


def _bad_input_table():
    b = random_boxes(5)
    s = unique_scores(5)
    i = torch.zeros(5, dtype=torch.long)
    nan_b = b.clone()
    nan_b[2, 1] = float("nan")
    nan_s = s.clone()
    nan_s[0] = float("nan")
    nan_i = torch.zeros(5)
    nan_i[3] = float("nan")
    nms, bnms = ops.nms, ops.batched_nms
    return [  # (error class, named argument, function, args, kwargs)
        (ValueError, "boxes", nms, (b[:, :3], s, 0.5), {}),
        (ValueError, "boxes", nms, (b[None], s, 0.5), {}),
        (ValueError, "scores", nms, (b, s[:4], 0.5), {}),
        (ValueError, "scores", nms, (b, s[:, None], 0.5), {}),
        (TypeError, "scores", nms, (b, s.double(), 0.5), {}),
        (TypeError, "boxes", nms, (b.long(), s.long(), 0.5), {}),
        (TypeError, "boxes", nms, (b.tolist(), s, 0.5), {}),
        (TypeError, "iou_threshold", nms, (b, s, "0.5"), {}),
        (TypeError, "iou_threshold", nms, (b, s, True), {}),
        (ValueError, "iou_threshold", nms, (b, s, float("nan")), {}),
        (ValueError, "boxes", nms, (nan_b, s, 0.5), {}),
        (ValueError, "scores", nms, (b, nan_s, 0.5), {}),
        (ValueError, "boxes", nms, (b.to("meta"), s.to("meta"), 0.5), {}),
        (ValueError, "idxs", bnms, (b, s, i[:4], 0.5), {}),
        (TypeError, "idxs", bnms, (b, s, i.to(torch.complex64), 0.5), {}),
        (ValueError, "idxs", bnms, (b, s, nan_i, 0.5), {}),
        (ValueError, "max_per_group", bnms, (b, s, i, 0.5), {"max_per_group": -1}),
        (TypeError, "max_per_group", bnms, (b, s, i, 0.5), {"max_per_group": 2.0}),
        (TypeError, "score_threshold", bnms, (b, s, i, 0.5), {"score_threshold": "0.1"}),
        (ValueError, "score_threshold", bnms, (b, s, i, 0.5), {"score_threshold": float("nan")}),
        (ValueError, "iou_threshold", bnms, (b, s, i, float("nan")), {}),
    ]


@pytest.mark.parametrize("case", range(len(_bad_input_table())))
def test_bad_inputs(case):
    exc, name, fn, args, kwargs = _bad_input_table()[case]
    err = assert_raises_naming(exc, name, fn, *args, **kwargs)
    # Both what fastpapers raised before and what torchvision callers catch.
    assert isinstance(err, RuntimeError)


def test_raw_op_rejects_bad_group_ids_and_negative_max():
    b, s = random_boxes(6), unique_scores(6)
    for bad in (torch.zeros(6, dtype=torch.bool), torch.zeros(6), torch.zeros(6, dtype=torch.complex64)):
        assert_raises_naming(TypeError, "idxs", torch.ops.fastpapers.batched_nms, b, s, bad, 0.5, None, None)
    assert_raises_naming(ValueError, "max_per_group", torch.ops.fastpapers.batched_nms, b, s,
                         torch.zeros(6, dtype=torch.long), 0.5, None, -2)


@pytest.mark.parametrize("device", DEVICES)
def test_max_per_group_zero_keeps_nothing(device):
    b, s = random_boxes(40, device=device), unique_scores(40, device=device)
    i = torch.randint(0, 3, (40,), device=device)
    for fn in (lambda: ops.batched_nms(b, s, i, 0.5, max_per_group=0),
               lambda: torch.ops.fastpapers.batched_nms(b, s, i, 0.5, None, 0)):
        out = fn()
        assert out.dtype == torch.long and out.device == b.device and out.numel() == 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", [64, 300])  # dense sweep and grid
def test_opcheck(device, n):
    b = random_boxes(n, size=100.0, device=device)
    s = unique_scores(n, device=device)
    torch.library.opcheck(torch.ops.fastpapers.nms.default, (b, s, 0.5))
    idxs = torch.randint(0, 3, (n,), device=device)
    torch.library.opcheck(torch.ops.fastpapers.batched_nms.default, (b, s, idxs, 0.5, None, None))
    torch.library.opcheck(torch.ops.fastpapers.batched_nms.default, (b, s, idxs, 0.5, 0.25, 4))
    torch.library.opcheck(torch.ops.fastpapers.nms_padded.default, (b, s, 0.5))
    torch.library.opcheck(torch.ops.fastpapers.nms.default, (b.half(), s.half(), -0.5))
    torch.library.opcheck(torch.ops.fastpapers.batched_nms.default, (b.bfloat16(), s.bfloat16(), idxs, 1.5, 0.5, 0))


def test_torch_compile_parity():
    b = random_boxes(200, size=200.0)
    s = unique_scores(200)

    def f(boxes, scores):
        keep = ops.nms(boxes * 2.0, scores, 0.5)
        return boxes[keep].sum(1)

    compiled = torch.compile(f, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(b, s), f(b, s))


def _tv_nms_per_group(boxes, scores, idxs, thr):
    """torchvision.ops.nms run group by group (no coordinate offsets), merged by score."""
    keep = []
    for gid in torch.unique(idxs):
        sel = torch.nonzero(idxs == gid).flatten()
        keep.append(sel[torchvision.ops.nms(boxes[sel], scores[sel], thr)])
    keep = torch.sort(torch.cat(keep)).values
    return keep[torch.sort(scores[keep], stable=True, descending=True).indices]


def _adversarial(kind, g):
    """Layouts aimed at the CPU grid: each must still match torchvision exactly."""
    if kind == "giant_plus_tiny":
        b = random_boxes(1500, size=1000.0, max_wh=8.0, generator=g)
        b[::300] = torch.tensor([-50.0, -50.0, 1100.0, 1100.0])  # a few boxes covering everything
    elif kind == "one_cell":
        b = random_boxes(1200, size=1.0, max_wh=0.6, generator=g) + 7.0
    elif kind == "wide_thin":
        y = torch.rand(1500, 1, dtype=torch.float64, generator=g) * 500
        x = torch.rand(1500, 1, dtype=torch.float64, generator=g) * 20
        h = torch.rand(1500, 1, dtype=torch.float64, generator=g) * 2 + 0.1
        b = torch.cat([x, y, x + 900, y + h], 1)
    elif kind == "wide_and_tall":  # half wide, half tall: most boxes span many cells
        b = random_boxes(1600, size=500.0, max_wh=3.0, generator=g)
        b[::2, 2] += 400.0
        b[1::2, 3] += 400.0
    elif kind == "some_large":  # 10% large boxes among tiny ones: too many for the big list
        b = random_boxes(1500, size=600.0, max_wh=8.0, generator=g)
        b[::10, 2:] += 150.0
    elif kind == "far_apart_huge":  # clusters 1e6 apart: the grid is capped and cells shared
        b = random_boxes(1500, size=60.0, max_wh=20.0, generator=g)
        shift = torch.randint(0, 4, (1500, 1), generator=g).to(torch.float64) * 1e6
        b = b + shift.repeat(1, 4)
    elif kind == "degenerate_mix":  # zero-area, inverted and repeated boxes inside a dense field
        b = random_boxes(1500, size=300.0, generator=g)
        b[::5, 3] = b[::5, 1]
        b[1::7, [0, 2]] = b[1::7, [2, 0]]
        b[::13] = b[3]
    else:
        raise AssertionError(kind)
    return b.float()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["giant_plus_tiny", "one_cell", "wide_thin", "wide_and_tall", "some_large",
                                  "far_apart_huge", "degenerate_mix"])
@pytest.mark.parametrize("thr", [0.0, 0.3, 0.7, 1.0])
def test_nms_adversarial_layouts(device, kind, thr):
    g = torch.Generator().manual_seed(sum(map(ord, kind)))
    boxes = _adversarial(kind, g).to(device)
    scores = unique_scores(boxes.shape[0], device=device, generator=g)
    assert torch.equal(ops.nms(boxes, scores, thr).cpu(), torchvision.ops.nms(boxes, scores, thr).cpu())


@pytest.mark.parametrize("device", DEVICES)
def test_threshold_compared_like_torchvision(device):
    # IoU 30/100 is 0.30000001 in float: above 0.3, so torchvision suppresses it; an
    # inter > thr * union test (30 > 30.000002) would keep it.
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 3]], device=device)
    scores = torch.tensor([0.9, 0.8], device=device)
    assert torchvision.ops.nms(boxes.cpu(), scores.cpu(), 0.3).tolist() == [0]
    assert ops.nms(boxes, scores, 0.3).tolist() == [0]
    # 0.7 rounds down in float: IoU exactly 0.7f is below 0.7 and must not suppress.
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 7]], device=device)
    assert ops.nms(boxes, scores, 0.7).tolist() == torchvision.ops.nms(boxes.cpu(), scores.cpu(), 0.7).tolist()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", [3, 64, 200, 256, 257, 700])
def test_small_and_boundary_sizes(device, n):
    # Covers the dense sweep (<= 256 boxes), its compaction and the switch to the grid.
    g = torch.Generator().manual_seed(n)
    boxes = random_boxes(n, size=120.0, max_wh=60.0, generator=g).to(device)
    scores = unique_scores(n, device=device, generator=g)
    for thr in (0.0, 0.2, 0.5, 0.9):
        assert torch.equal(ops.nms(boxes, scores, thr).cpu(), torchvision.ops.nms(boxes, scores, thr).cpu())


@pytest.mark.parametrize("device", DEVICES)
def test_many_ties_follow_index_order(device):
    g = torch.Generator().manual_seed(5)
    boxes = random_boxes(2000, size=400.0, generator=g).to(device)
    scores = (torch.randint(0, 10, (2000,), generator=g).float() / 10).to(device)
    assert torch.equal(ops.nms(boxes, scores, 0.5).cpu(), ref.nms(boxes, scores, 0.5).cpu())
    idxs = torch.randint(0, 3, (2000,), generator=g).to(device)
    assert torch.equal(ops.batched_nms(boxes, scores, idxs, 0.5).cpu(),
                       ref.batched_nms(boxes, scores, idxs, 0.5).cpu())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("ids", ["one_group", "sparse_huge", "negative"])
def test_batched_nms_group_ids(device, ids):
    g = torch.Generator().manual_seed(11)
    n = 2500
    boxes = random_boxes(n, size=400.0, generator=g)
    scores = unique_scores(n, generator=g)
    if ids == "one_group":  # one big group: the grid path inside batched_nms
        idxs = torch.full((n,), 7, dtype=torch.long)
    elif ids == "sparse_huge":  # ids far apart: hashed, not offset into a table
        idxs = torch.randint(0, 5, (n,), generator=g) * (2 ** 50) - 2 ** 52
    else:
        idxs = -torch.randint(1, 40, (n,), generator=g).to(torch.int32)
    boxes, scores, idxs = boxes.to(device), scores.to(device), idxs.to(device)
    want = _tv_nms_per_group(boxes.cpu(), scores.cpu(), idxs.cpu().long(), 0.5)
    assert torch.equal(ops.batched_nms(boxes, scores, idxs, 0.5).cpu(), want)
    got = ops.batched_nms(boxes, scores, idxs, 0.5, score_threshold=0.3, max_per_group=40)
    assert torch.equal(got.cpu(), ref.batched_nms(boxes.cpu(), scores.cpu(), idxs.cpu(), 0.5, score_threshold=0.3,
                                                  max_per_group=40))


@pytest.mark.parametrize("device", DEVICES)
def test_batched_nms_non_contiguous(device):
    base = random_boxes(1800, device=device, size=500.0)
    boxes = torch.cat([base, base], 1)[:, ::2]
    scores = unique_scores(3600, device=device)[::2]
    idxs = torch.randint(0, 12, (3600,), device=device)[::2]
    assert not boxes.is_contiguous() and not scores.is_contiguous() and not idxs.is_contiguous()
    want = torchvision.ops.batched_nms(boxes.contiguous(), scores.contiguous(), idxs.contiguous(), 0.4)
    assert torch.equal(ops.batched_nms(boxes, scores, idxs, 0.4).cpu(), want.cpu())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("device", [pytest.param("cuda", marks=needs_cuda)])
def test_batched_nms_low_precision_large_ids(device, dtype):
    # Offsets of ~1e5 * max coordinate collapse in fp16 (the offset trick keeps duplicates);
    # grouping by sort is exact: the result equals the float32 run on the same values. The
    # rounded scores tie, so the oracle is the reference (stable order), not torchvision.
    g = torch.Generator().manual_seed(2)
    boxes = random_boxes(3000, size=500.0, generator=g).to(dtype)
    scores = unique_scores(3000, generator=g).to(dtype)
    idxs = torch.randint(0, 6, (3000,), generator=g) * 100_003 + 50_000
    for kw in ({}, {"score_threshold": 0.5, "max_per_group": 7}):
        got = ops.batched_nms(boxes.to(device), scores.to(device), idxs.to(device), 0.5, **kw)
        assert got.dtype == torch.long
        assert torch.equal(got.cpu(), ref.batched_nms(boxes.float(), scores.float(), idxs, 0.5, **kw))
    assert torch.equal(ops.batched_nms(boxes.to(device), scores.to(device), idxs.to(device), 0.5).cpu(),
                       ops.batched_nms(boxes.float(), scores.float(), idxs, 0.5))


def test_torch_compile_batched_parity():
    b = random_boxes(400, size=300.0)
    s = unique_scores(400)
    idxs = torch.randint(0, 5, (400,))

    def f(boxes, scores, idxs):
        keep = ops.batched_nms(boxes, scores, idxs, 0.5, score_threshold=0.1, max_per_group=20)
        return scores[keep] * 2.0

    compiled = torch.compile(f, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(b, s, idxs), f(b, s, idxs))
