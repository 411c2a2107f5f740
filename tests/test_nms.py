import pytest
import torch
import torchvision

from fastpapers import ops
from fastpapers.reference import nms as ref
from tests.utils import DEVICES, assert_raises_naming, random_boxes, unique_scores

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


def test_bad_inputs():
    b = random_boxes(5)
    s = unique_scores(5)
    assert_raises_naming(ValueError, "boxes", ops.nms, b[:, :3], s, 0.5)
    assert_raises_naming(ValueError, "boxes", ops.nms, b[None], s, 0.5)
    assert_raises_naming(ValueError, "scores", ops.nms, b, s[:4], 0.5)
    assert_raises_naming(TypeError, "scores", ops.nms, b, s.double(), 0.5)
    assert_raises_naming(TypeError, "boxes", ops.nms, b.long(), s.long(), 0.5)
    assert_raises_naming(TypeError, "boxes", ops.nms, b.tolist(), s, 0.5)
    assert_raises_naming(ValueError, "iou_threshold", ops.nms, b, s, 1.5)
    assert_raises_naming(ValueError, "iou_threshold", ops.nms, b, s, -0.1)
    nan = b.clone()
    nan[2, 1] = float("nan")
    assert_raises_naming(ValueError, "boxes", ops.nms, nan, s, 0.5)
    inf = s.clone()
    inf[0] = float("inf")
    assert_raises_naming(ValueError, "scores", ops.nms, b, inf, 0.5)
    assert_raises_naming(ValueError, "idxs", ops.batched_nms, b, s, torch.zeros(4, dtype=torch.long), 0.5)
    assert_raises_naming(TypeError, "idxs", ops.batched_nms, b, s, torch.zeros(5), 0.5)
    assert_raises_naming(ValueError, "max_per_group", ops.batched_nms, b, s, torch.zeros(5, dtype=torch.long),
                         0.5, max_per_group=0)


def test_opcheck():
    b = random_boxes(64, size=100.0)
    s = unique_scores(64)
    torch.library.opcheck(torch.ops.fastpapers.nms.default, (b, s, 0.5))
    torch.library.opcheck(torch.ops.fastpapers.batched_nms.default,
                          (b, s, torch.randint(0, 3, (64,)), 0.5, None, None))


def test_torch_compile_parity():
    b = random_boxes(200, size=200.0)
    s = unique_scores(200)

    def f(boxes, scores):
        keep = ops.nms(boxes * 2.0, scores, 0.5)
        return boxes[keep].sum(1)

    compiled = torch.compile(f, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(b, s), f(b, s))
