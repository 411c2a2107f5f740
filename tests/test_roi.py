import pytest
import torch
import torchvision

from fastpapers import ops
from fastpapers.ops import boxes as B
from fastpapers.reference import roi as ref
from tests.utils import DEVICES, assert_close, assert_raises_naming, tol

DTYPES = [torch.float32, torch.float64]


def make_rois(k, n, h, w, *, scale=1.0, dtype=torch.float64, device="cpu", seed=0, margin=0.3, max_wh=0.8):
    """Random rois [K, 5] in image coordinates (map / scale), spilling past the map by `margin`."""
    g = torch.Generator().manual_seed(seed)
    size = torch.tensor([w, h], dtype=torch.float64) / scale
    xy = (torch.rand(k, 2, dtype=torch.float64, generator=g) * (1 + 2 * margin) - margin) * size
    wh = torch.rand(k, 2, dtype=torch.float64, generator=g) * max_wh * size
    b = torch.randint(0, n, (k, 1), generator=g).to(torch.float64)
    return torch.cat([b, xy, xy + wh], 1).to(dtype=dtype, device=device)


def oracle_grads(fn, x, rois, grad_out, *args):
    xr = x.detach().clone().requires_grad_()
    rr = rois.detach().clone().requires_grad_()
    out = fn(xr, rr, *args)
    out.backward(grad_out)
    return out.detach(), xr.grad, rr.grad


def special_rois(n, h, w, dtype, device):
    """Boxes partly and fully outside the map, zero width, zero height, a point, flipped."""
    rows = [
        [0, -5.3, -4.1, 3.7, 2.2],        # partly outside, top-left
        [n - 1, w - 2.6, h - 1.4, w + 6.1, h + 3.3],  # partly outside, bottom-right
        [0, -20.5, -9.0, -12.25, -3.5],   # fully outside, above-left
        [n - 1, w + 1.5, 0.5, w + 9.0, h - 0.5],  # fully outside, right
        [0, 2.3, 1.1, 2.3, 5.7],          # zero width
        [n - 1, 1.3, 3.6, 6.2, 3.6],      # zero height
        [0, 3.3, 2.7, 3.3, 2.7],          # a point
        [n - 1, 6.4, 5.2, 1.9, 0.7],      # flipped (x2 < x1, y2 < y1)
        [0, -0.75, -0.6, w + 0.4, h + 0.9],  # covers the whole map
    ]
    return torch.tensor(rows, dtype=dtype, device=device)


# ----------------------------------------------------------------------------- roi_bilinear


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output_size", [(7, 7), (1, 1), (3, 5), (6, 2)])
def test_roi_bilinear_matches_oracle(device, dtype, output_size):
    n, c, h, w = 3, 6, 11, 17
    x = torch.randn(n, c, h, w, dtype=torch.float64)
    rois = torch.cat([make_rois(20, n, h, w, scale=0.5), special_rois(n, h / 0.5, w / 0.5, torch.float64, "cpu")])
    # The oracle runs in float64 on the very values the op sees.
    x, rois = x.to(dtype).double(), rois.to(dtype).double()
    want = ref.roi_bilinear(x, rois, output_size, 0.5)
    got = ops.roi_bilinear(x.to(device, dtype), rois.to(device, dtype), output_size, 0.5)
    assert got.shape == (rois.shape[0], c, *output_size) and got.dtype == dtype and got.is_contiguous()
    # float32 is checked against the float64 oracle: our sample positions are exact, the
    # float32 oracle's are not.
    assert_close(got.cpu().double(), want, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_roi_bilinear_grads_match_oracle(device, dtype):
    n, c, h, w = 2, 5, 9, 13
    x = torch.randn(n, c, h, w, dtype=torch.float64)
    rois = torch.cat([make_rois(16, n, h, w), special_rois(n, h, w, torch.float64, "cpu")])
    go = torch.randn(rois.shape[0], c, 4, 6, dtype=torch.float64)
    x, rois, go = x.to(dtype).double(), rois.to(dtype).double(), go.to(dtype).double()
    _, gx_want, gr_want = oracle_grads(ref.roi_bilinear, x, rois, go, (4, 6))
    _, gx, gr = oracle_grads(ops.roi_bilinear, x.to(device, dtype), rois.to(device, dtype), go.to(device, dtype),
                             (4, 6))
    assert_close(gx.cpu().double(), gx_want, dtype)
    assert_close(gr.cpu().double(), gr_want, dtype)
    assert (gr[:, 0] == 0).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roi_bilinear_gradcheck(device, seed):
    torch.manual_seed(seed)
    x = torch.randn(2, 2, 6, 7, dtype=torch.float64, device=device, requires_grad=True)
    # Finite differences need samples away from integer coordinates (the sampler's kinks);
    # these sizes keep every sample of the special boxes off them.
    rois = torch.cat([make_rois(5, 2, 6, 7, scale=2.0, seed=seed),
                      special_rois(2, 3.0, 3.5, torch.float64, "cpu")[[0, 1, 4, 5, 7]]]).to(device)
    # Only the box coordinates are perturbed: the batch index column is not a real variable.
    index, boxes = rois[:, :1], rois[:, 1:].clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b: ops.roi_bilinear(a, torch.cat([index, b], 1), (3, 4), 2.0), (x, boxes))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("c", [1, 512])
def test_roi_bilinear_channels(device, c):
    x = torch.randn(2, c, 5, 6, dtype=torch.float64)
    rois = make_rois(7, 2, 5, 6)
    go = torch.randn(7, c, 3, 3, dtype=torch.float64)
    want = oracle_grads(ref.roi_bilinear, x, rois, go, 3)
    got = oracle_grads(ops.roi_bilinear, x.to(device), rois.to(device), go.to(device), 3)
    for a, b in zip(got, want):
        assert_close(a.cpu(), b)


@pytest.mark.parametrize("device", DEVICES)
def test_roi_bilinear_layouts(device):
    base = torch.randn(3, 8, 10, 12, dtype=torch.float64, device=device)
    rois = make_rois(9, 3, 10, 12, device=device)
    want = ops.roi_bilinear(base, rois, (4, 5))
    cl = base.contiguous(memory_format=torch.channels_last)
    sliced = torch.randn(3, 16, 10, 24, dtype=torch.float64, device=device)[:, ::2, :, ::2]
    sliced.copy_(base)
    assert not sliced.is_contiguous() and not sliced.is_contiguous(memory_format=torch.channels_last)
    for x in (cl, sliced):
        assert torch.equal(ops.roi_bilinear(x, rois, (4, 5)), want)
    rr = torch.randn(9, 10, dtype=torch.float64, device=device)[:, ::2]
    rr.copy_(rois)
    assert torch.equal(ops.roi_bilinear(base, rr, (4, 5)), want)


@pytest.mark.parametrize("device", DEVICES)
def test_roi_bilinear_empty(device):
    x = torch.randn(2, 4, 5, 6, device=device, requires_grad=True)
    rois = torch.zeros(0, 5, device=device, requires_grad=True)
    out = ops.roi_bilinear(x, rois, (2, 3))
    assert out.shape == (0, 4, 2, 3)
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x)) and rois.grad.shape == (0, 5)


def test_roi_bilinear_known_values():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    out = ops.roi_bilinear(x, torch.tensor([[0.0, 0, 0, 4, 4]]), 2)
    assert out[0, 0].tolist() == [[2.5, 4.5], [10.5, 12.5]]
    # A box entirely left of the map samples zeros; one straddling the left edge blends with zero.
    out = ops.roi_bilinear(x, torch.tensor([[0.0, -4, 0, -2, 4], [0.0, -0.5, 0, 0.5, 4]]), (4, 1))
    assert out[0].abs().sum() == 0
    assert_close(out[1, 0, :, 0], 0.5 * x[0, 0, :, 0])


# ----------------------------------------------------------------------------- roi_align


def assert_no_worse_than_peer(got, peer, truth):
    """A float32 result against the float64 truth: within TOL[float32], or else no further from
    it than twice the peer's own float32 result (both sum in float32, in different orders)."""
    got, peer = got.detach().cpu().double(), peer.detach().cpu().double()
    if torch.allclose(got, truth, **tol(torch.float32)):
        return
    err, peer_err = (got - truth).abs().max(), (peer - truth).abs().max()
    assert err <= 2 * peer_err, f"max error {err:.3g} vs the peer's {peer_err:.3g}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 2, 3])
@pytest.mark.parametrize("output_size", [(7, 7), (1, 1), (2, 5)])
def test_roi_align_matches_torchvision(device, dtype, aligned, sampling_ratio, output_size):
    n, c, h, w = 2, 5, 12, 15
    x = torch.randn(n, c, h, w, dtype=dtype, device=device, requires_grad=True)
    rois = torch.cat([make_rois(16, n, h, w, scale=0.25, max_wh=1.2),
                      special_rois(n, h * 4.0, w * 4.0, torch.float64, "cpu")]).to(device, dtype)
    args = (output_size, 0.25, sampling_ratio, aligned)
    want = torchvision.ops.roi_align(x, rois, *args)
    got = ops.roi_align(x, rois, *args)
    go = torch.randn_like(want)
    (gx_want,) = torch.autograd.grad(want, x, go)
    (gx,) = torch.autograd.grad(got, x, go)
    if dtype == torch.float64:
        assert_close(got, want)
        assert_close(gx, gx_want)
        return
    # float32: torchvision in float64 on the same values is the truth; its sample positions
    # are computed in the input dtype, so rois stay float32-valued.
    x64 = x.detach().double().requires_grad_()
    truth = torchvision.ops.roi_align(x64, rois.double(), *args)
    (g_truth,) = torch.autograd.grad(truth, x64, go.double())
    assert_no_worse_than_peer(got, want, truth.cpu())
    assert_no_worse_than_peer(gx, gx_want, g_truth.cpu())


def test_roi_align_matches_reference():
    x = torch.randn(2, 3, 7, 9, dtype=torch.float64)
    rois = torch.cat([make_rois(6, 2, 7, 9), special_rois(2, 7, 9, torch.float64, "cpu")])
    for sr, al in ((-1, False), (2, True)):
        assert_close(ops.roi_align(x, rois, (3, 2), 1.0, sr, al), ref.roi_align(x, rois, (3, 2), 1.0, sr, al))


@pytest.mark.parametrize("device", DEVICES)
def test_roi_align_box_list(device):
    x = torch.randn(3, 4, 9, 11, device=device)
    boxes = [make_rois(l, 1, 9, 11, seed=l, dtype=torch.float32, device=device)[:, 1:] for l in (4, 0, 3)]
    got = ops.roi_align(x, boxes, (2, 3), 1.0, 2)
    want = torchvision.ops.roi_align(x, boxes, (2, 3), 1.0, 2)
    assert got.shape == (7, 4, 2, 3)
    assert_close(got, want)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("c", [1, 512])
def test_roi_align_channels_and_layouts(device, c):
    x = torch.randn(2, c, 6, 8, device=device)
    rois = make_rois(10, 2, 6, 8, dtype=torch.float32, device=device, max_wh=1.0)
    want = torchvision.ops.roi_align(x, rois, 3, 1.0, -1)
    assert_close(ops.roi_align(x, rois, 3, 1.0, -1), want)
    cl = x.contiguous(memory_format=torch.channels_last)
    assert_close(ops.roi_align(cl, rois, 3, 1.0, -1), want)
    t = x.transpose(2, 3).contiguous().transpose(2, 3)
    assert not t.is_contiguous()
    assert_close(ops.roi_align(t, rois, 3, 1.0, -1), want)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", [0, 1])
def test_roi_align_gradcheck(device, seed):
    torch.manual_seed(seed)
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64, device=device, requires_grad=True)
    rois = make_rois(6, 2, 5, 6, seed=seed, device=device)
    for sr, al in ((-1, False), (2, True)):
        assert torch.autograd.gradcheck(lambda a: ops.roi_align(a, rois, (3, 2), 1.0, sr, al), (x,))


@pytest.mark.parametrize("device", DEVICES)
def test_roi_align_empty(device):
    x = torch.randn(2, 4, 5, 6, device=device, requires_grad=True)
    out = ops.roi_align(x, torch.zeros(0, 5, device=device), (2, 3))
    assert out.shape == (0, 4, 2, 3)
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


# ----------------------------------------------------------------------------- both ops


def test_backward_is_deterministic_across_thread_counts():
    x = torch.randn(2, 40, 9, 10, dtype=torch.float32)
    rois = make_rois(64, 2, 9, 10, dtype=torch.float32, max_wh=1.0)
    go = torch.randn(64, 40, 3, 3)
    results = []
    old = torch.get_num_threads()
    try:
        for threads in (1, 2, 1):
            torch.set_num_threads(threads)
            xa = x.clone().requires_grad_()
            ops.roi_align(xa, rois, 3, 1.0, -1).backward(go)
            xb = x.clone().requires_grad_()
            rb = rois.clone().requires_grad_()
            ops.roi_bilinear(xb, rb, 3).backward(go)
            results.append((xa.grad, xb.grad, rb.grad))
    finally:
        torch.set_num_threads(old)
    for r in results[1:]:
        for a, b in zip(r, results[0]):
            assert torch.equal(a, b)


@pytest.mark.parametrize("fn", ["roi_bilinear", "roi_align"])
def test_bad_inputs(fn):
    op = getattr(ops, fn)
    name = "features" if fn == "roi_bilinear" else "input"
    rname = "rois" if fn == "roi_bilinear" else "boxes"
    x = torch.randn(2, 3, 5, 6)
    rois = make_rois(4, 2, 5, 6, dtype=torch.float32)
    # Every error is both ours (ValueError/TypeError) and what torchvision code catches.
    err = assert_raises_naming(ValueError, name, op, x[0], rois, 2)
    assert isinstance(err, RuntimeError) and isinstance(err, ops.OpValueError)
    err = assert_raises_naming(TypeError, name, op, x.long(), rois.long(), 2)
    assert isinstance(err, RuntimeError) and isinstance(err, ops.OpTypeError)
    assert_raises_naming(TypeError, name, op, x.tolist(), rois, 2)
    assert_raises_naming(ValueError, rname, op, x, rois[:, :4], 2)
    assert_raises_naming(TypeError, rname, op, x, rois.double(), 2)
    out_of_range = rois.clone()
    out_of_range[1, 0] = 2
    err = assert_raises_naming(ValueError, rname, op, x, out_of_range, 2)
    assert "[0, 2)" in str(err) and f"{rname}[1, 0] = 2.0" in str(err)
    negative = rois.clone()
    negative[0, 0] = -1
    assert_raises_naming(ValueError, rname, op, x, negative, 2)
    for bad in (float("nan"), float("inf")):
        nan = rois.clone()
        nan[2, 3] = bad
        err = assert_raises_naming(ValueError, rname, op, x, nan, 2)
        assert isinstance(err, RuntimeError) and "finite" in str(err)
    assert_raises_naming(ValueError, "output_size", op, x, rois, (0, 2))
    for size in ("7", "77", 7.9, (2, 2.5), True):
        assert_raises_naming(TypeError, "output_size", op, x, rois, size)
    assert_raises_naming(ValueError, "spatial_scale", op, x, rois, 2, 0.0)
    assert_raises_naming(TypeError, "spatial_scale", op, x, rois, 2, "1")
    if fn == "roi_align":
        assert_raises_naming(TypeError, "sampling_ratio", op, x, rois, 2, 1.0, 2.0)
        assert_raises_naming(TypeError, "aligned", op, x, rois, 2, 1.0, 2, 1)
        assert_raises_naming(ValueError, "boxes[1]", op, x, [rois[:, 1:], rois[:, 1:4]], 2)
        assert_raises_naming(ValueError, "boxes", op, x, [], 2)
    else:
        fractional = rois.clone()
        fractional[0, 0] = 0.5
        assert_raises_naming(ValueError, "rois", op, x, fractional, 2)


@pytest.mark.parametrize("fn", ["roi_bilinear", "roi_align"])
def test_huge_output_size_is_a_named_error(fn):
    # 65536 x 65536 bins of 4 channels: 64 GiB per ROI, more than any device holds, so the
    # error names output_size instead of reaching the allocator.
    x = torch.randn(1, 4, 5, 6)
    rois = make_rois(8, 1, 5, 6, dtype=torch.float32)
    err = assert_raises_naming(ValueError, "output_size", getattr(ops, fn), x, rois, (65536, 65536))
    assert "GiB" in str(err)
    assert_raises_naming(ValueError, "output_size", getattr(ops, fn), x, rois, (65537, 2))


def test_roi_align_fractional_batch_index_truncates_like_torchvision():
    x = torch.randn(3, 4, 9, 11, dtype=torch.float64)
    rois = make_rois(6, 1, 9, 11)
    rois[:, 0] = torch.tensor([0.5, -0.5, 1.99, 2.7, -0.999, 1.0], dtype=torch.float64)
    got = ops.roi_align(x, rois, (2, 3), 1.0, 2)
    assert_close(got, torchvision.ops.roi_align(x, rois, (2, 3), 1.0, 2))
    whole = rois.clone()
    whole[:, 0] = whole[:, 0].trunc()
    assert torch.equal(got, ops.roi_align(x, whole, (2, 3), 1.0, 2))


def test_roi_align_adaptive_grid_is_capped():
    # sampling_ratio <= 0 asks for ceil(bin size) samples per bin and axis, at most
    # MAX_ADAPTIVE_GRID: a bin wider than that is sampled exactly as sampling_ratio =
    # MAX_ADAPTIVE_GRID samples it (torchvision, uncapped, would take 2100 x 2100 here).
    cap = ops.roi.MAX_ADAPTIVE_GRID
    x = torch.randn(1, 2, 30, 40, dtype=torch.float64)
    wide = torch.tensor([[0, -1000.0, -1000.0, 1100.0, 1100.0]], dtype=torch.float64)
    got = ops.roi_align(x, wide, 1, 1.0, 0)
    assert torch.equal(got, ops.roi_align(x, wide, 1, 1.0, cap))
    assert_close(got, torchvision.ops.roi_align(x, wide, 1, 1.0, cap))
    # Under the cap (900 samples per axis) the result is torchvision's adaptive one.
    under = torch.tensor([[0, -400.0, -400.0, 500.0, 500.0]], dtype=torch.float64)
    assert_close(ops.roi_align(x, under, 1, 1.0, 0), torchvision.ops.roi_align(x, under, 1, 1.0, 0))


def test_roi_align_huge_box_returns_quickly():
    # A box 1e12 wide would ask for ~1e11 samples per bin; capped, it is a few thousand.
    x = torch.randn(1, 8, 12, 15)
    rois = torch.tensor([[0, -5e11, 0, 5e11, 9], [0, 0, -5e11, 10, 5e11], [0, -1e12, -1e12, 1e12, 1e12]])
    for aligned in (False, True):
        out = ops.roi_align(x, rois, 2, 1.0, 0, aligned)
        assert out.shape == (3, 8, 2, 2) and torch.isfinite(out).all()
        xg = x.clone().requires_grad_()
        ops.roi_align(xg, rois, 2, 1.0, -1, aligned).sum().backward()
        assert torch.isfinite(xg.grad).all()


@pytest.mark.parametrize("fn", ["roi_bilinear", "roi_align"])
def test_compiled_and_eager_check_the_same_values(fn):
    # Under torch.compile the wrapper's value checks cannot run (values are unknown while
    # tracing); the CPU kernel runs the same checks, so a compiled call raises ValueError
    # for the same inputs (plain ValueError: the kernel's C++ check).
    op = getattr(ops, fn)
    compiled = torch.compile(op, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 3, 5, 6)
    rois = make_rois(4, 2, 5, 6, dtype=torch.float32)
    assert_close(compiled(x, rois, 2), op(x, rois, 2))
    cases = [(1, 0, 2.0, "batch ind"), (1, 0, -1.0, "batch ind"), (2, 3, float("nan"), "finite"),
             (0, 1, float("inf"), "finite")]
    if fn == "roi_bilinear":
        cases.append((0, 0, 0.5, "batch ind"))
    for k, j, v, what in cases:
        bad = rois.clone()
        bad[k, j] = v
        for f in (op, compiled):
            with pytest.raises(ValueError, match=what):
                f(x, bad, 2)
    if fn == "roi_align":  # fractional indices are accepted by both, with the same result
        frac = rois.clone()
        frac[:, 0] += 0.5
        assert_close(compiled(x, frac, 2), op(x, frac, 2))


@pytest.mark.parametrize("fn", ["roi_bilinear", "roi_align"])
def test_meta_tensors(fn):
    x = torch.randn(2, 3, 5, 6, device="meta")
    rois = torch.randn(4, 5, device="meta")
    assert getattr(ops, fn)(x, rois, (2, 3)).shape == (4, 3, 2, 3)


def test_kernel_rejects_out_of_range_batch_index():
    # The compiled kernel checks too, so a call that skips the Python checks cannot read
    # out of bounds.
    x = torch.randn(2, 3, 5, 6)
    rois = torch.tensor([[2.0, 0, 0, 3, 3]])
    with pytest.raises(ValueError, match="batch ind"):
        torch.ops.fastpapers.roi_bilinear(x, rois, 1.0, 2, 2)
    with pytest.raises(ValueError, match="batch ind"):
        torch.ops.fastpapers.roi_align(x, rois, 1.0, 2, 2, -1, False)
    with pytest.raises(ValueError, match="finite"):
        torch.ops.fastpapers.roi_align(x, torch.tensor([[0.0, float("nan"), 0, 3, 3]]), 1.0, 2, 2, -1, False)


def test_opcheck():
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64)
    rois = make_rois(5, 2, 6, 7)
    go = torch.randn(5, 3, 2, 3, dtype=torch.float64)
    F = torch.ops.fastpapers
    xr, rr = x.clone().requires_grad_(), rois.clone().requires_grad_()
    torch.library.opcheck(F.roi_bilinear.default, (xr, rr, 0.5, 2, 3))
    torch.library.opcheck(F.roi_bilinear_backward_input.default, (go, rois, 0.5, 2, 3, 6, 7))
    torch.library.opcheck(F.roi_bilinear_backward_rois.default, (go, x, rois, 0.5))
    torch.library.opcheck(F.roi_align.default, (xr, rois, 0.5, 2, 3, -1, False))
    torch.library.opcheck(F.roi_align.default, (xr, rois, 0.5, 2, 3, 2, True))
    torch.library.opcheck(F.roi_align_backward.default, (go, rois, 0.5, 2, 3, 2, 3, 6, 7, 2, True))


def test_torch_compile_parity():
    x = torch.randn(2, 4, 8, 9, dtype=torch.float64)
    rois = make_rois(6, 2, 8, 9)

    def f(feat, r):
        a = ops.roi_bilinear(feat, r, (3, 2))
        b = ops.roi_align(feat, r, 2, 1.0, 2, True)
        return a.sum((2, 3)) * b.mean((2, 3))

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    x1, r1 = x.clone().requires_grad_(), rois.clone().requires_grad_()
    x2, r2 = x.clone().requires_grad_(), rois.clone().requires_grad_()
    out1, out2 = compiled(x1, r1), f(x2, r2)
    assert_close(out1, out2)
    out1.sum().backward()
    out2.sum().backward()
    assert_close(x1.grad, x2.grad)
    assert_close(r1.grad, r2.grad)


# ----------------------------------------------------------------------------- boxes


def test_box_format_round_trip():
    b = make_rois(20, 1, 30, 40, dtype=torch.float64)[:, 1:]
    assert_close(B.xcycwh_to_xyxy(B.xyxy_to_xcycwh(b)), b)
    c = B.xyxy_to_xcycwh(torch.tensor([[1.0, 2.0, 5.0, 10.0]]))
    assert c.tolist() == [[3.0, 6.0, 4.0, 8.0]]


def test_box_to_affine_matches_roi_bilinear():
    x = torch.randn(1, 2, 9, 12, dtype=torch.float64)
    boxes = make_rois(5, 1, 9, 12)[:, 1:]
    theta = B.box_to_affine(boxes, 9, 12)
    grid = torch.nn.functional.affine_grid(theta, [5, 2, 4, 3], align_corners=False)
    want = torch.nn.functional.grid_sample(x.expand(5, -1, -1, -1), grid, align_corners=False)
    rois = torch.cat([torch.zeros(5, 1, dtype=torch.float64), boxes], 1)
    assert_close(ops.roi_bilinear(x, rois, (4, 3)), want)
    # The whole map maps to the identity transform.
    eye = B.box_to_affine(torch.tensor([[0.0, 0.0, 12.0, 9.0]]), 9, 12)
    assert torch.equal(eye, torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]]))


def test_box_transform_inverse():
    g = torch.Generator().manual_seed(0)
    anchors = torch.cat([torch.rand(50, 2, generator=g) * 100, torch.rand(50, 2, generator=g) * 30 + 1], 1).double()
    deltas = torch.randn(50, 4, generator=g).double() * 0.5
    boxes = B.apply_box_transform(anchors, deltas)
    assert_close(B.invert_box_transform(anchors, boxes), deltas)
    w = (10.0, 10.0, 5.0, 5.0)
    assert_close(B.invert_box_transform(anchors, B.apply_box_transform(anchors, deltas, weights=w), weights=w), deltas)
    # Hand-computed: x = xa + tx * wa, w = wa * exp(tw).
    one = B.apply_box_transform(torch.tensor([[10.0, 20.0, 4.0, 8.0]]), torch.tensor([[0.5, -0.25, 0.0, 0.0]]))
    assert one.tolist() == [[12.0, 18.0, 4.0, 8.0]]
    big = B.apply_box_transform(anchors[:1], torch.tensor([[0.0, 0.0, 50.0, 50.0]], dtype=torch.float64),
                                clamp=B.DEFAULT_XFORM_CLIP)
    assert_close(big[0, 2:], anchors[0, 2:] * 1000.0 / 16)


def test_box_helpers_bad_inputs():
    assert_raises_naming(ValueError, "boxes", B.xyxy_to_xcycwh, torch.zeros(3, 5))
    assert_raises_naming(TypeError, "boxes", B.xcycwh_to_xyxy, torch.zeros(3, 4, dtype=torch.long))
    assert_raises_naming(ValueError, "height", B.box_to_affine, torch.zeros(3, 4), 0, 5)
    assert_raises_naming(TypeError, "width", B.box_to_affine, torch.zeros(3, 4), 4, 5.0)
    err = assert_raises_naming(TypeError, "boxes", B.xcycwh_to_xyxy, torch.zeros(3, 4, dtype=torch.long))
    assert isinstance(err, RuntimeError)
    assert_raises_naming(ValueError, "deltas", B.apply_box_transform, torch.zeros(3, 4), torch.zeros(3, 3))
    assert_raises_naming(ValueError, "weights", B.apply_box_transform, torch.zeros(3, 4), torch.zeros(3, 4),
                         weights=(1.0, 1.0))


# ----------------------------------------------------------------------------- CUDA only


@pytest.mark.parametrize("device", [p for p in DEVICES if p != "cpu"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_no_worse_than_peer(device, dtype):
    # Low precision: our error against float64 is at most twice the peer's own in that dtype.
    x = torch.randn(2, 16, 12, 15, device=device)
    rois = make_rois(24, 2, 12, 15, device=device)
    x_lp, rois_lp = x.to(dtype), rois.to(dtype)
    x64, rois64 = x_lp.double(), rois_lp.double()
    cases = [(lambda a, r: ops.roi_bilinear(a, r, (4, 6)), lambda a, r: ref.roi_bilinear(a, r, (4, 6)))]
    if dtype == torch.float16:  # torchvision's CUDA roi_align has no bfloat16 kernel
        cases.append((lambda a, r: ops.roi_align(a, r, 5, 1.0, 2, True),
                      lambda a, r: torchvision.ops.roi_align(a, r, 5, 1.0, 2, True)))
    for ours, peer in cases:
        truth = peer(x64, rois64)
        err = (ours(x_lp, rois_lp).double() - truth).abs().max()
        peer_err = (peer(x_lp, rois_lp).double() - truth).abs().max()
        assert err <= 2 * peer_err, f"{dtype}: error {err:.3g} vs the peer's {peer_err:.3g}"


@pytest.mark.parametrize("device", [p for p in DEVICES if p != "cpu"])
def test_cuda_deterministic_backward(device):
    x = torch.randn(2, 37, 11, 13, dtype=torch.float64, device=device)
    rois = make_rois(40, 2, 11, 13, device=device, max_wh=1.0)
    go = torch.randn(40, 37, 3, 4, dtype=torch.float64, device=device)

    def grads():
        xa = x.clone().requires_grad_()
        ops.roi_align(xa, rois, (3, 4), 1.0, -1).backward(go)
        xb, rb = x.clone().requires_grad_(), rois.clone().requires_grad_()
        ops.roi_bilinear(xb, rb, (3, 4)).backward(go)
        return xa.grad, xb.grad, rb.grad

    default = grads()
    torch.use_deterministic_algorithms(True)
    try:
        first, second = grads(), grads()
    finally:
        torch.use_deterministic_algorithms(False)
    for a, b, c in zip(first, second, default):
        assert torch.equal(a, b)
        assert_close(a, c)
    cpu = [g.cpu() for g in default]
    xa = x.cpu().clone().requires_grad_()
    ops.roi_align(xa, rois.cpu(), (3, 4), 1.0, -1).backward(go.cpu())
    assert_close(xa.grad, cpu[0])


@pytest.mark.parametrize("device", [p for p in DEVICES if p != "cpu"])
def test_cuda_no_host_sync(device):
    # The CUDA path (checks off, the default) never waits for the device: no .item(), no
    # nonzero, no device->host copy, forward or backward, for both ops and both box formats.
    x = torch.randn(2, 64, 20, 25, device=device, requires_grad=True)
    rois = make_rois(50, 2, 20 * 2, 25 * 2, dtype=torch.float32, device=device)
    rr = rois.clone().requires_grad_()
    go = torch.randn(50, 64, 7, 7, device=device)
    boxes = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    pool = ops.RoIAlign(7, 0.5, 2)
    torch.cuda.synchronize()
    old = ops.set_checks(False)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for sr in (2, 0):
            ops.roi_align(x, rois, 7, 0.5, sr).backward(go)
        pool(x, boxes).sum().backward()
        ops.roi_bilinear(x, rr, 7, 0.5).backward(go)
        ops.roi_bilinear(x, rr, (3, 4), 0.5).sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
        ops.set_checks(old)
    torch.cuda.synchronize()
    assert torch.isfinite(x.grad).all() and torch.isfinite(rr.grad).all()


@pytest.mark.parametrize("device", [p for p in DEVICES if p != "cpu"])
@pytest.mark.parametrize("fn", ["roi_bilinear", "roi_align"])
def test_cuda_unchecked_bad_values_are_safe_and_checked_mode_names_them(device, fn):
    # Checks off: a ROI whose batch index is out of range or NaN, or whose box is NaN/inf,
    # reads nothing (zero output, no gradient); the others are unaffected; a huge box is
    # bounded by the adaptive-grid cap and agrees with the CPU. Checks on: the named errors.
    op = getattr(ops, fn)
    nan, inf = float("nan"), float("inf")
    x = torch.randn(2, 40, 9, 10, dtype=torch.float64, device=device)
    good = make_rois(4, 2, 9, 10, device=device)
    bad = torch.tensor([[2, 1, 1, 5, 5], [-1, 1, 1, 5, 5], [nan, 1, 1, 5, 5], [0, nan, 1, 5, 5], [1, 1, 1, inf, 5],
                        [0, -inf, -inf, inf, inf], [1e9, 1, 1, 5, 5]], dtype=torch.float64, device=device)
    huge = torch.tensor([[0, -5e11, 0, 5e11, 9], [1, 0, -5e11, 10, 5e11]], dtype=torch.float64, device=device)
    rois = torch.cat([good, bad, huge])
    args = (3, 1.0, 0) if fn == "roi_align" else (3,)
    xg = x.clone().requires_grad_()
    old = ops.set_checks(False)
    try:
        out = op(xg, rois, *args)
        out.backward(torch.ones_like(out))
    finally:
        ops.set_checks(old)
    n_good = good.shape[0]
    assert (out[n_good:n_good + bad.shape[0]] == 0).all()
    keep = torch.cat([good, huge])
    xc = x.cpu().requires_grad_()
    want = op(xc, keep.cpu(), *args)
    want.backward(torch.ones_like(want))
    assert_close(torch.cat([out[:n_good], out[n_good + bad.shape[0]:]]).cpu(), want)
    assert_close(xg.grad.cpu(), xc.grad)
    old = ops.set_checks(True)
    try:
        for row in range(bad.shape[0]):
            with pytest.raises(ops.OpValueError):
                op(x, torch.cat([good, bad[row:row + 1]]), *args)
    finally:
        ops.set_checks(old)


@pytest.mark.parametrize("device", [p for p in DEVICES if p != "cpu"])
@pytest.mark.parametrize("deterministic", [False, True])
def test_cuda_gradient_layout_and_expanded_grad(device, deterministic):
    # The CUDA input gradient comes back channels-last (no transposing copy) and an expanded
    # output gradient (out.sum().backward()) is read through its strides; values equal the CPU's.
    x = torch.randn(2, 37, 11, 13, dtype=torch.float64, device=device)
    rois = make_rois(40, 2, 11, 13, device=device, max_wh=1.0)
    torch.use_deterministic_algorithms(deterministic)
    try:
        for fn, args in ((ops.roi_align, ((3, 4), 1.0, -1)), (ops.roi_bilinear, ((3, 4),))):
            xg = x.clone().requires_grad_()
            fn(xg, rois, *args).sum().backward()
            xc = x.cpu().requires_grad_()
            fn(xc, rois.cpu(), *args).sum().backward()
            assert_close(xg.grad.cpu(), xc.grad)
            y = x.clone().requires_grad_()
            (g,) = torch.autograd.grad(fn(y * 1, rois, *args).sum(), y)
            assert_close(g.cpu(), xc.grad)
    finally:
        torch.use_deterministic_algorithms(False)


@pytest.mark.parametrize("device", [p for p in DEVICES if p != "cpu"])
@pytest.mark.parametrize("c", [60, 64, 132, 192])
def test_cuda_forward_channel_blocks_match_torchvision(device, c):
    # float32 forward reads 4 channels per lane when C % 4 == 0 and C >= 64 (128 channels per
    # block, a partial last block for 132 and 192), 1 otherwise (60), and 1 when the
    # channels-last input is not 16-byte aligned; all agree with torchvision and the CPU.
    n, h, w = 2, 9, 11
    flat = torch.randn(1 + n * h * w * c, device=device)
    x = flat[:-1].view(n, h, w, c).permute(0, 3, 1, 2)
    shifted = flat[1:].view(n, h, w, c).permute(0, 3, 1, 2)  # channels-last, 4-byte offset
    rois = make_rois(30, n, h, w, dtype=torch.float32, device=device, max_wh=1.0)
    for sr, aligned in ((2, False), (0, True)):
        for t in (x, shifted):
            got = ops.roi_align(t, rois, (3, 4), 1.0, sr, aligned)
            assert_close(got, torchvision.ops.roi_align(t, rois, (3, 4), 1.0, sr, aligned))
            assert_close(got.cpu(), ops.roi_align(t.cpu(), rois.cpu(), (3, 4), 1.0, sr, aligned))
        assert_close(ops.roi_bilinear(x, rois, (3, 4)).cpu(), ops.roi_bilinear(x.cpu(), rois.cpu(), (3, 4)))
