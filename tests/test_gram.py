import math
import os

import pytest
import torch

from fastpapers import ops
from fastpapers.kernels import gram as K
from fastpapers.ops import OpTypeError, OpValueError
from fastpapers.reference import gram as ref
from tests.utils import DEVICES, assert_close, assert_raises_naming, needs_cuda

NORMS = ["chw", "hw", "none"]
# Triton launchers on CPU tensors run only under the interpreter (tests/conftest.py sets it;
# a GPU run with TRITON_INTERPRET=0 compiles the kernels and leaves these to the CUDA tests).
interpreted = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="needs TRITON_INTERPRET=1")
# Host synchronisation and memory are properties of the compiled kernels, not of the
# interpreter (which copies CUDA tensors to the host).
compiled = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="needs compiled Triton kernels")


pytestmark = pytest.mark.usefixtures("one_thread")
REDS = ["mean", "sum"]

# --- error bounds from the arithmetic ---------------------------------------------------
# Every float32 bound below is the first-order worst-case rounding error of the computation
# (Higham, Accuracy and Stability of Numerical Algorithms, ch. 3): a length-k sum or dot
# product in floating point with unit roundoff u is off by at most gamma_k = k u / (1 - k u)
# times the sum of the absolute values of its terms, whatever the summation order, blocking
# or FMA use. So the bounds hold for any BLAS and any vector width (AVX2, AVX-512, none) and
# never depend on how lucky one implementation's rounding happens to be. The test asserts
# twice the first-order bound (the second-order terms are dropped).
UNIT = {torch.float64: 2.0 ** -53, torch.float32: 2.0 ** -24, torch.float16: 2.0 ** -11,
        torch.bfloat16: 2.0 ** -8}


def _gamma(k, u):
    return k * u / (1 - k * u)


def gram_bound(x, scale, dtype):
    """|computed scale * X X^T - exact| <= gamma_{N+2} * scale * |X||X|^T entrywise, for x
    held exactly in dtype (N products summed, then the scale and the symmetrisation)."""
    b, c = x.shape[:2]
    a = x.detach().double().abs().reshape(b, c, math.prod(x.shape[2:]))
    return _gamma(a.shape[2] + 2, UNIT[dtype]) * abs(scale) * torch.bmm(a, a.transpose(1, 2))


def style_bounds(feats, targets, weights, reduction, normalize, dtype):
    """First-order error bounds of style_loss computed in dtype: (loss, [d/d features],
    [d/d targets]), in float64. E bounds the Gram, Ed the difference G - A as computed; the
    loss adds the squares (B C^2 terms per layer, then the layers), the feature gradient is
    (4 s w / count) D F (C terms per entry), the target gradient -2 (w / count) (G - A),
    formed from D and A."""
    u = UNIT[dtype]
    loss_b, mags, dfeat, dtarget = 0.0, 0.0, [], []
    for f, a, w in zip(feats, targets, weights):
        s = ref.gram_scale(f, normalize)
        b, c = f.shape[:2]
        f64 = f.detach().double().reshape(b, c, math.prod(f.shape[2:]))
        a64 = a.detach().double()
        k = w / (b * c * c) if reduction == "mean" else w
        g = torch.bmm(f64, f64.transpose(1, 2)) * s
        d = (g - a64).abs()
        e = gram_bound(f, s, dtype)
        ed = e + u * (d + e)
        loss_b += abs(k) * (((2 * d + ed) * ed).sum() + _gamma(b * c * c + 3, u) * ((d + ed) ** 2).sum())
        mags += abs(k) * ((d + ed) ** 2).sum()
        ds = (g - 0.5 * (a64 + a64.transpose(-1, -2))).abs()
        eds = ed + 2 * u * (ds + ed)
        fa = f64.abs()
        dfeat.append((4 * s * abs(k) * (torch.bmm(eds, fa) + _gamma(c + 2, u) * torch.bmm(ds + eds, fa)))
                     .view(f.shape))
        # The op forms G - A as the stored symmetric D plus (A^T - A)/2.
        tb = 2 * abs(k) * (eds + 4 * u * (ds + a64.abs() + a64.abs().transpose(-1, -2)))
        if a.dim() == 2:
            tb = tb.sum(0) + _gamma(b, u) * 2 * abs(k) * (d + ed).sum(0)
        dtarget.append(tb)
    return loss_b + _gamma(len(feats) + 1, u) * mags, dfeat, dtarget


def assert_within(got, want, bound, what=""):
    """|got - want| <= 2 * bound entrywise (want exact, in float64)."""
    err = (got.detach().double() - want.detach().double()).abs()
    bad = err > 2 * bound
    assert not bad.any(), (what, err[bad].max().item(), bound[bad].min().item() if torch.is_tensor(bound) else bound)


def _layers(device, dtype, b, target_batched, requires_grad=True, gen=None):
    """Two layers with awkward sizes: odd C, odd H*W, one [B, C, C] target when asked."""
    shapes = [(b, 5, 3, 7), (b, 17, 4, 5)]
    feats = [torch.randn(s, dtype=torch.float64, generator=gen).to(device, dtype).requires_grad_(requires_grad)
             for s in shapes]
    targets = []
    for i, s in enumerate(shapes):
        c = s[1]
        shape = (b, c, c) if (target_batched and i == 1) else (c, c)
        targets.append(torch.randn(shape, dtype=torch.float64, generator=gen).to(device, dtype)
                       .requires_grad_(requires_grad))
    return feats, targets


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("normalize", NORMS)
@pytest.mark.parametrize("reduction", REDS)
@pytest.mark.parametrize("b,target_batched", [(1, False), (3, False), (3, True)])
def test_style_loss_matches_bmm_mse(device, dtype, normalize, reduction, b, target_batched):
    g = torch.Generator().manual_seed(b * 10 + target_batched)
    feats, targets = _layers(device, dtype, b, target_batched, gen=g)
    weights = [0.7, 3.0]
    got = ops.style_loss(feats, targets, weights, reduction, normalize=normalize)
    got_grads = torch.autograd.grad(got, feats + targets)
    # Oracle: torch.bmm + F.mse_loss in float64 on the same values.
    f64 = [t.detach().double().requires_grad_() for t in feats + targets]
    want = ref.style_loss(f64[:2], f64[2:], weights, reduction, normalize=normalize)
    want_grads = torch.autograd.grad(want, f64)
    assert got.dtype == dtype and got.shape == ()
    if dtype == torch.float64:
        assert_close(got, want, dtype)
        for a, e in zip(got_grads, want_grads):
            assert_close(a, e, dtype)
    else:
        loss_b, dfeat_b, dtarget_b = style_bounds(feats, targets, weights, reduction, normalize, dtype)
        assert_within(got, want, loss_b, "loss")
        for i, (a, e, bound) in enumerate(zip(got_grads, want_grads, dfeat_b + dtarget_b)):
            assert_within(a, e, bound, f"grad {i}")


def test_bounds_catch_reduced_precision():
    # The bounds are tight enough to reject a product in TF32 (10-bit mantissa) or bfloat16
    # inputs, the mistakes a GPU path can make.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 17, 4, 5, generator=g)
    want = ref.gram_matrix(x.double(), "hw")
    bound = gram_bound(x, 1 / 20, torch.float32)
    bits = x.view(torch.int32)
    tf32 = ((bits + 0x1000) & ~0x1FFF).view(torch.float32)
    for low in (tf32, x.bfloat16().float()):
        err = (ref.gram_matrix(low.double(), "hw") - want).abs()
        assert (err > 2 * bound).any()
    assert_within(ops.gram_matrix(x, "hw"), want, bound)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("normalize", NORMS)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 7), (3, 33, 9, 11), (2, 300, 4, 4), (2, 7, 13)])
def test_gram_matrix_matches_bmm(device, normalize, shape):
    x = torch.randn(shape, dtype=torch.float64).to(device)
    for dtype in (torch.float32, torch.float64):
        xd = x.to(dtype)
        want = ref.gram_matrix(xd.double(), normalize)  # exact for the values given
        got = ops.gram_matrix(xd, normalize)
        assert got.dtype == dtype and got.shape == want.shape
        if dtype == torch.float64:
            assert_close(got, want, dtype)
        else:
            assert_within(got, want, gram_bound(xd, ref.gram_scale(x, normalize), dtype))
    # Symmetric exactly: the lower triangle is a copy of the upper one.
    assert torch.equal(got, got.transpose(1, 2))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("c", [31, 64, 97, 300])
def test_style_loss_many_tiles(device, c):
    # C past one 32-wide tile: off-diagonal tiles, their mirrors, an odd and an even count of
    # tile rows (the epilogue pairs rows I and nt-1-I) and the row-blocked product (C >= 96).
    g = torch.Generator().manual_seed(c)
    x = torch.randn(2, c, 5, 3, dtype=torch.float64, generator=g)
    shared = torch.randn(c, c, dtype=torch.float64, generator=g)  # not symmetric
    batched = torch.randn(2, c, c, dtype=torch.float64, generator=g)
    for a in (shared, batched):
        x64 = x.clone().to(device).requires_grad_()
        want = ref.style_loss([x64], [a.to(device)], [0.5], "sum", normalize="hw")
        (want_g,) = torch.autograd.grad(want, x64)
        got = ops.style_loss([x64], [a.to(device)], [0.5], "sum", normalize="hw")
        (got_g,) = torch.autograd.grad(got, x64)
        assert_close(got, want, torch.float64)
        assert_close(got_g, want_g, torch.float64)
        _, (d,) = torch.ops.fastpapers.style_loss([x.to(device)], [a.to(device)], [1.0 / 15], [1.0])
        sym = ref.gram_matrix(x, "hw") - 0.5 * (a + a.transpose(-1, -2))
        assert_close(d.cpu(), sym.expand(2, c, c), torch.float64)
        assert torch.equal(d, d.transpose(1, 2))


def test_cpu_loss_same_with_one_and_two_threads_when_the_block_plan_is_the_same():
    # Two threads take the path where each thread runs its own row-block products (B*2 block
    # pairs >= 2 threads), on features that require grad as in training. With B=3 both thread
    # counts give the same row blocks, so the fixed summation order makes the results equal to
    # the bit; with few matrices the blocks are split per thread and only agree to rounding.
    x = torch.rand(3, 300, 6, 6, requires_grad=True)
    a = torch.rand(300, 300)
    n = torch.get_num_threads()
    runs = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            loss = ops.style_loss([x], [a])
            (grad,) = torch.autograd.grad(loss, x)
            runs.append((loss, grad, torch.ops.fastpapers.gram_matrix(x.detach(), 0.5)))
    finally:
        torch.set_num_threads(n)
    for one, two in zip(*runs):
        assert torch.equal(one, two)
    assert_close(runs[0][0], ref.style_loss([x], [a]))


@pytest.mark.parametrize("b,c", [(3, 300), (1, 97), (1, 40)])
def test_cpu_two_thread_paths(b, c):
    # (3, 300): a thread per (matrix, block pair); (1, 97) and (1, 40): too few blocks for
    # two threads, so the BLAS threads each product and the epilogue runs over tile rows.
    g = torch.Generator().manual_seed(c)
    x = torch.randn(b, c, 4, 5, dtype=torch.float64, generator=g, requires_grad=True)
    a = torch.randn(c, c, dtype=torch.float64, generator=g)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        got = ops.style_loss([x], [a], reduction="sum")
        (got_g,) = torch.autograd.grad(got, x)
        _, (d,) = torch.ops.fastpapers.style_loss([x.detach()], [a], [1.0], [1.0])
        gm = ops.gram_matrix(x.detach(), "none")
    finally:
        torch.set_num_threads(n)
    want = ref.style_loss([x], [a], reduction="sum")
    (want_g,) = torch.autograd.grad(want, x)
    assert_close(got, want, torch.float64)
    assert_close(got_g, want_g, torch.float64)
    assert_close(gm, ref.gram_matrix(x.detach(), "none"), torch.float64)
    assert torch.equal(d, d.transpose(1, 2)) and torch.equal(gm, gm.transpose(1, 2))


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_and_channels_last(device):
    x = torch.randn(2, 6, 9, 5, device=device).transpose(2, 3)
    y = torch.randn(2, 8, 7, 7, device=device).to(memory_format=torch.channels_last)
    a = [torch.randn(6, 6, device=device), torch.randn(8, 8, device=device).t()]
    assert_close(ops.gram_matrix(x), ref.gram_matrix(x))
    assert_close(ops.style_loss([x, y], a), ref.style_loss([x, y], a))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("normalize", NORMS)
def test_gradcheck_gram_matrix(seed, normalize):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 3, 2, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: ops.gram_matrix(t, normalize), (x,))
    if seed == 0:
        assert torch.autograd.gradgradcheck(lambda t: ops.gram_matrix(t, normalize), (x,))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("reduction", REDS)
@pytest.mark.parametrize("normalize", NORMS)
def test_gradcheck_style_loss(seed, reduction, normalize):
    g = torch.Generator().manual_seed(seed)
    # Small layers: gradcheck evaluates the loss twice per input element.
    feats = [torch.randn(2, 3, 2, 3, dtype=torch.float64, generator=g, requires_grad=True),
             torch.randn(2, 5, 3, 1, dtype=torch.float64, generator=g, requires_grad=True)]
    targets = [torch.randn(3, 3, dtype=torch.float64, generator=g, requires_grad=True),
               torch.randn(2, 5, 5, dtype=torch.float64, generator=g, requires_grad=True)]

    def fn(f0, f1, a0, a1):
        return ops.style_loss([f0, f1], [a0, a1], [0.5, 2.0], reduction, normalize=normalize)

    assert torch.autograd.gradcheck(fn, (*feats, *targets))
    if seed == 0:
        assert torch.autograd.gradgradcheck(fn, (*feats, *targets))


@needs_cuda
def test_cuda_gradcheck():
    # float64 on CUDA: cuBLAS products in float64 and the epilogue's float64 arithmetic,
    # C = 64 taking the half product and split-K paths when forced below.
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(2, 3, 2, 3, dtype=torch.float64, generator=g).cuda().requires_grad_(),
             torch.randn(1, 64, 4, 4, dtype=torch.float64, generator=g).cuda().requires_grad_()]
    targets = [torch.randn(3, 3, dtype=torch.float64, generator=g).cuda().requires_grad_(),
               torch.randn(1, 64, 64, dtype=torch.float64, generator=g).cuda().requires_grad_()]

    def fn(f0, f1, a0, a1):
        return ops.style_loss([f0, f1], [a0, a1], [0.5, 2.0], "sum", normalize="hw")

    assert torch.autograd.gradcheck(fn, (*feats, *targets))
    assert torch.autograd.gradgradcheck(fn, (*feats, *targets))
    assert torch.autograd.gradcheck(lambda t: ops.gram_matrix(t, "hw"), (feats[1],))
    x = feats[1].detach()
    for kw in ({"half": True}, {"split": 4}):
        assert_close(K.gram(x, 1 / 16, **kw), ref.gram_matrix(x, "hw"), torch.float64)


def test_loss_is_zero_at_its_target_and_falls_to_it():
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    a = ref.gram_matrix(x.detach())
    assert ops.style_loss([x], [a]).item() < 1e-12
    y = torch.randn(1, 4, 6, 6, requires_grad=True)
    target = ref.gram_matrix(torch.rand(1, 4, 6, 6))[0]
    opt = torch.optim.Adam([y], lr=0.05)
    first = None
    for _ in range(150):
        opt.zero_grad()
        loss = ops.style_loss([y], [target])
        first = loss.item() if first is None else first
        loss.backward()
        opt.step()
    assert loss.item() < 0.01 * first


@pytest.mark.parametrize("device", DEVICES)
def test_empty_inputs(device):
    x0 = torch.randn(0, 4, 3, 3, device=device, requires_grad=True)
    assert ops.gram_matrix(x0).shape == (0, 4, 4)
    assert ops.style_loss([x0], [torch.zeros(4, 4, device=device)], reduction="sum").item() == 0.0
    # mse_loss's mean over no element is NaN; so is ours.
    assert math.isnan(ops.style_loss([x0], [torch.zeros(4, 4, device=device)]).item())
    assert math.isnan(torch.nn.functional.mse_loss(torch.zeros(0), torch.zeros(0)).item())
    xc = torch.randn(2, 0, 3, 3, device=device)
    assert ops.gram_matrix(xc).shape == (2, 0, 0)
    xs = torch.randn(2, 3, 0, 4, device=device, requires_grad=True)
    a = torch.randn(3, 3, device=device)
    assert torch.equal(ops.gram_matrix(xs), torch.zeros(2, 3, 3, device=device))
    loss = ops.style_loss([xs], [a], reduction="sum")
    assert_close(loss, 2 * (a * a).sum())
    loss.backward()
    assert xs.grad.shape == xs.shape


def test_style_loss_module():
    style = [torch.rand(1, 4, 8, 8), torch.rand(1, 6, 4, 4)]
    crit = ops.StyleLoss(style, weights=[1.0, 2.0], reduction="sum", normalize="hw")
    x = [torch.rand(2, 4, 8, 8), torch.rand(2, 6, 4, 4)]
    want = ref.style_loss(x, [ref.gram_matrix(s, "hw")[0] for s in style], [1.0, 2.0], "sum", normalize="hw")
    assert_close(crit(x), want)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    x = torch.randn(2, 5, 3, 7, device=device, requires_grad=True)
    torch.library.opcheck(torch.ops.fastpapers.gram_matrix.default, (x, 0.25))
    feats = [torch.randn(2, 5, 3, 7, device=device, requires_grad=True),
             torch.randn(2, 17, 4, 5, device=device, requires_grad=True)]
    targets = [torch.randn(5, 5, device=device), torch.randn(2, 17, 17, device=device, requires_grad=True)]
    torch.library.opcheck(torch.ops.fastpapers.style_loss.default, (feats, targets, [0.1, 0.05], [1.0, 0.5]))
    torch.library.opcheck(torch.ops.fastpapers.gram_matrix_backward.default,
                          (torch.randn(2, 5, 5, device=device), x.detach(), 0.25))
    diffs = [torch.randn(2, 5, 5, device=device), torch.randn(2, 17, 17, device=device)]
    torch.library.opcheck(torch.ops.fastpapers.style_loss_backward.default,
                          (torch.tensor(1.5, device=device), [f.detach() for f in feats], diffs, [0.3, 0.2]))
    # Channels-last features: the outputs are contiguous, in the fake kernels too.
    xc = x.detach().to(memory_format=torch.channels_last)
    torch.library.opcheck(torch.ops.fastpapers.gram_matrix_backward.default,
                          (torch.randn(2, 5, 5, device=device), xc, 0.25))
    torch.library.opcheck(torch.ops.fastpapers.style_loss_backward.default,
                          (torch.tensor(1.5, device=device), [xc], diffs[:1], [0.3]))


def test_torch_compile_parity():
    feats, targets = _layers("cpu", torch.float32, 2, True)

    def f(f0, f1, a0, a1):
        loss = ops.style_loss([f0 * 2, f1], [a0, a1], [1.0, 0.5])
        return loss + ops.gram_matrix(f0, "hw").sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    got = compiled(*feats, *targets)
    want = f(*feats, *targets)
    assert_close(got, want)
    for a, e in zip(torch.autograd.grad(got, feats), torch.autograd.grad(want, feats)):
        assert_close(a, e)


def test_bad_inputs():
    x = torch.randn(2, 4, 3, 3)
    a = torch.randn(4, 4)
    assert_raises_naming(OpTypeError, "x", ops.gram_matrix, x.numpy())
    assert_raises_naming(OpValueError, "x", ops.gram_matrix, torch.randn(4, 3))
    assert_raises_naming(OpTypeError, "x", ops.gram_matrix, x.long())
    assert_raises_naming(OpTypeError, "x", ops.gram_matrix, x.half())  # half is CUDA only
    assert_raises_naming(OpValueError, "normalize", ops.gram_matrix, x, "c")
    assert_raises_naming(OpTypeError, "normalize", ops.gram_matrix, x, None)
    assert_raises_naming(OpTypeError, "features", ops.style_loss, x, [a])
    assert_raises_naming(OpTypeError, "targets", ops.style_loss, [x], a)
    assert_raises_naming(OpValueError, "features", ops.style_loss, [], [])
    assert_raises_naming(OpValueError, "targets", ops.style_loss, [x], [a, a])
    assert_raises_naming(OpValueError, "targets[0]", ops.style_loss, [x], [torch.randn(3, 3)])
    assert_raises_naming(OpValueError, "targets[0]", ops.style_loss, [x], [torch.randn(3, 4, 4)])
    assert_raises_naming(OpTypeError, "targets[0]", ops.style_loss, [x], [a.double()])
    assert_raises_naming(OpTypeError, "features[1]", ops.style_loss, [x, x.double()], [a, a.double()])
    assert_raises_naming(OpValueError, "features[0]", ops.style_loss, [torch.randn(4, 9)], [a])
    assert_raises_naming(OpValueError, "weights", ops.style_loss, [x], [a], [1.0, 2.0])
    assert_raises_naming(OpTypeError, "weights[0]", ops.style_loss, [x], [a], [float("nan")])
    assert_raises_naming(OpValueError, "reduction", ops.style_loss, [x], [a], None, "max")
    assert_raises_naming(OpValueError, "normalize", ops.style_loss, [x], [a], normalize="x")
    if torch.cuda.is_available():
        assert_raises_naming(OpValueError, "targets[0]", ops.style_loss, [x], [a.cuda()])


# --- StyleLoss ---------------------------------------------------------------------------

def test_style_loss_module_with_several_style_images_pairs_them_with_the_batch():
    style = [torch.rand(3, 4, 8, 8), torch.rand(3, 6, 4, 4)]
    crit = ops.StyleLoss(style, reduction="sum")
    x = [torch.rand(3, 4, 8, 8), torch.rand(3, 6, 4, 4)]
    want = ref.style_loss(x, [ref.gram_matrix(s) for s in style], reduction="sum")
    assert_close(crit(x), want)
    # Element b of the batch against style image b: each image's own features give zero.
    assert crit(style).item() < 1e-12
    assert crit([s.flip(0) for s in style]).item() > 1e-6
    assert_raises_naming(OpValueError, "style_features[0]", crit, [t[:2] for t in x])


def test_style_loss_module_errors_name_its_arguments():
    s = [torch.rand(1, 4, 8, 8), torch.rand(1, 6, 4, 4)]
    assert_raises_naming(OpTypeError, "style_features", ops.StyleLoss, s[0])
    assert_raises_naming(OpValueError, "style_features", ops.StyleLoss, [])
    assert_raises_naming(OpValueError, "style_features[1]", ops.StyleLoss, [s[0], torch.rand(2, 6, 4, 4)])
    assert_raises_naming(OpValueError, "style_features[1]", ops.StyleLoss, [s[0], torch.rand(6, 4)])
    assert_raises_naming(OpTypeError, "style_features[1]", ops.StyleLoss, [s[0], s[1].double()])
    assert_raises_naming(OpTypeError, "style_features[0]", ops.StyleLoss, [s[0].long()])
    assert_raises_naming(OpValueError, "style_features[0]", ops.StyleLoss, [torch.rand(0, 4, 8, 8)])
    assert_raises_naming(OpValueError, "weights", ops.StyleLoss, s, weights=[1.0])
    assert_raises_naming(OpTypeError, "weights[1]", ops.StyleLoss, s, weights=[1.0, "2"])
    assert_raises_naming(OpValueError, "reduction", ops.StyleLoss, s, reduction="max")
    assert_raises_naming(OpValueError, "normalize", ops.StyleLoss, s, normalize="c")
    crit = ops.StyleLoss(s)
    x = [torch.rand(2, 4, 8, 8), torch.rand(2, 6, 4, 4)]
    assert_raises_naming(OpTypeError, "features", crit, x[0])
    assert_raises_naming(OpValueError, "style_features", crit, x[:1])
    err = assert_raises_naming(OpValueError, "features[1]", crit, [x[0], torch.rand(2, 5, 4, 4)])
    assert "style_features[1]" in str(err)
    err = assert_raises_naming(OpTypeError, "features[0]", crit, [x[0].double(), x[1]])
    assert "style_features[0]" in str(err)
    # Any spatial size and batch works against one shared style image.
    assert math.isfinite(crit([torch.rand(5, 4, 3, 3), torch.rand(5, 6, 2, 7)]).item())


def test_meta_tensors_give_shapes_without_values():
    x = torch.randn(2, 4, 3, 3, device="meta", requires_grad=True)
    loss = ops.style_loss([x], [torch.randn(4, 4, device="meta")])
    assert loss.shape == () and loss.device.type == "meta"
    loss.backward()
    assert x.grad.shape == x.shape
    assert ops.gram_matrix(x.detach()).shape == (2, 4, 4)
    assert ops.StyleLoss([torch.randn(3, 4, 3, 3, device="meta")])([x.detach()[:1].expand(3, 4, 3, 3)]).shape == ()


# --- the CUDA path's pieces, run on CPU tensors (Triton under TRITON_INTERPRET=1) ---------

_COMPILE_FOR_SM90 = r"""
import sys
import torch
try:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile, make_backend
    from triton.runtime.jit import create_function_from_signature
except ImportError:
    sys.exit(77)
from fastpapers.kernels import gram as K

target = GPUTarget("cuda", 90, 32)
backend = make_backend(target)
kern = K._sym_epilogue_kernel
if not hasattr(kern, "_pack_args"):
    sys.exit(77)
binder = create_function_from_signature(kern.signature, kern.params, backend)
for dtype, gdtype, nl, has_target in [(torch.float32, torch.float32, 5, True), (torch.float16, torch.float32, 2, False),
                                      (torch.float64, torch.float64, 1, True)]:
    gs = tuple(torch.empty(2, 64, 64, dtype=gdtype) for _ in range(nl))
    ds = tuple(torch.empty(2, 64, 64, dtype=dtype) for _ in range(nl))
    as_ = tuple(torch.empty(64, 64, dtype=dtype) for _ in range(nl))
    args = (gs, as_, ds, torch.empty(64, dtype=gdtype), tuple(64 + i for i in range(nl)),
            tuple(32 * (i % 2) for i in range(nl)), tuple(0 if i % 2 else 4096 for i in range(nl)),
            tuple(range(0, 8 * (nl + 1), 8)), (0.5,) * nl, (1e-9,) * nl, (0.25,) * nl, (1e-10,) * nl)
    kw = dict(NL=nl, HAS_TARGET=has_target, IS_FP64=dtype == torch.float64, BLOCK=K.EPILOGUE_BLOCK,
              num_warps=4, debug=False, instrumentation_mode="")
    bound, spec, options = binder(*args, **kw)
    options, signature, constexprs, attrs = kern._pack_args(backend, kw, bound, spec, options)
    assert compile(ASTSource(kern, signature, constexprs, attrs), target=target, options=options.__dict__).asm["cubin"]
"""


def test_triton_epilogue_compiles_for_hopper():
    # The interpreter runs the kernel's Python; this compiles it for sm_90 (Triton's own
    # ptxas, no GPU needed), which catches what only the compiler checks (types across
    # branches, layouts of the transposed tiles, tuple arguments).
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", _COMPILE_FOR_SM90], env=env, cwd=root, capture_output=True,
                       text=True, timeout=600)
    if r.returncode == 77:
        pytest.skip("this Triton has no ahead-of-time compile entry points")
    assert r.returncode == 0, r.stderr[-3000:]


def _epilogue_case(dtype, gen, n_layers=3):
    """Products (not symmetric, as a GEMM's rounding may leave them), targets shared and per
    sample, C past one 32-wide tile and not a multiple of it."""
    b = 2
    cs = [37, 5, 70, 1, 33, 2, 40, 3, 9][:n_layers]
    grams, targets = [], []
    for i, c in enumerate(cs):
        grams.append(torch.randn(b, c, c, dtype=torch.float64, generator=gen).to(dtype))
        shape = (b, c, c) if i % 2 else (c, c)
        targets.append(torch.randn(shape, dtype=torch.float64, generator=gen).to(dtype))
    scales = [1.0 / 7 ** (i % 3) for i in range(n_layers)]
    weights = [0.5 + i / 3 for i in range(n_layers)]
    return grams, targets, scales, weights


def _epilogue_want(grams, targets, scales, weights):
    total, diffs = 0.0, []
    for g, a, s, w in zip(grams, targets, scales, weights):
        g, a = g.double(), a.double()
        gs = s * 0.5 * (g + g.transpose(1, 2))
        total = total + w * ((gs - a) ** 2).sum()
        diffs.append(gs - 0.5 * (a + a.transpose(-1, -2)))
    return total, diffs


@interpreted
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_layers", [3, K.MAX_LAYERS + 1])
@pytest.mark.parametrize("in_place", [False, True])
def test_triton_epilogue_launcher(dtype, n_layers, in_place):
    gen = torch.Generator().manual_seed(n_layers)
    grams, targets, scales, weights = _epilogue_case(dtype, gen, n_layers)
    want, want_d = _epilogue_want(grams, targets, scales, weights)
    work = [g.clone() for g in grams]
    outs = work if in_place else [torch.empty_like(g) for g in grams]
    part = K.sym_epilogue(work, outs, scales, targets, weights)
    assert part.dtype == dtype
    u = UNIT[dtype]
    mag = sum(w * ((s * g.double().abs() + a.double().abs()) ** 2).sum()
              for g, a, s, w in zip(grams, targets, scales, weights))
    assert abs(part.double().sum().item() - want.item()) <= 2 * _gamma(part.numel() + 2 * 70 * 70 + 8, u) * mag
    for d, e, g, a, s in zip(outs, want_d, grams, targets, scales):
        assert d.dtype == dtype and torch.equal(d, d.transpose(1, 2))
        assert_within(d, e, 4 * u * (s * g.double().abs() + a.double().abs()).max())


@interpreted
def test_triton_epilogue_float64_scalars_keep_float64_precision():
    # Scales and weights reach the kernel as float32 (hi, lo) pairs: 1/3 and 1/7 are not
    # float32 numbers, and a float32 weight would be off by ~3e-8 relative.
    gen = torch.Generator().manual_seed(1)
    g = torch.rand(1, 3, 3, dtype=torch.float64, generator=gen)
    g = g + g.transpose(1, 2)
    a = torch.zeros(3, 3, dtype=torch.float64)
    part = K.sym_epilogue([g.clone()], [torch.empty_like(g)], [1.0 / 7], [a], [1.0 / 3])
    want = ((g / 7) ** 2).sum() / 3
    assert abs(part.sum().item() - want.item()) <= 1e-14 * want.item()
    for v in (1.0 / 3, math.pi * 1e-9, 2.0 ** 70 / 3):
        hi, lo = K._split_f32(v)
        assert float(torch.tensor(hi, dtype=torch.float32)) == hi
        assert float(torch.tensor(lo, dtype=torch.float32)) == lo
        assert abs(hi + lo - v) <= 2.0 ** -47 * abs(v)


@interpreted
def test_triton_epilogue_without_target_symmetrises_and_casts():
    gen = torch.Generator().manual_seed(2)
    g = torch.randn(3, 45, 45, generator=gen)
    for out in (torch.empty(3, 45, 45), torch.empty(3, 45, 45, dtype=torch.float16)):
        assert K.sym_epilogue([g.clone()], [out], [0.25]) is None
        want = 0.125 * (g + g.transpose(1, 2))
        assert torch.equal(out, out.transpose(1, 2))
        mag = 0.125 * (g.abs() + g.abs().transpose(1, 2)).double()
        assert_within(out, want, UNIT[out.dtype] * want.abs() + 3 * UNIT[torch.float32] * mag)


@interpreted
def test_triton_epilogue_half_targets_and_outputs():
    # The float16 path: float32 partial sums (split-K) in, fp16 targets, fp16 D out; and the
    # unsplit one: the fp16 Gram overwritten in place by D.
    gen = torch.Generator().manual_seed(3)
    g32 = torch.randn(2, 40, 40, generator=gen) * 100
    a = (torch.randn(40, 40, generator=gen) * 30).half()
    d = torch.empty(2, 40, 40, dtype=torch.float16)
    part = K.sym_epilogue([g32], [d], [0.125], [a], [2.0])
    assert part.dtype == torch.float32 and d.dtype == torch.float16
    want, (want_d,) = _epilogue_want([g32], [a], [0.125], [2.0])
    mag = 2.0 * ((0.125 * g32.double().abs() + a.double().abs()) ** 2).sum()
    assert abs(part.sum().item() - want.item()) <= 2 * _gamma(40 * 40 + part.numel() + 4, 2.0 ** -24) * mag
    assert_within(d, want_d, UNIT[torch.float16] * (want_d.abs() + 1e-3))
    gh = (g32 * 0.125).half()
    gh = (gh + gh.transpose(1, 2)) * 0.5  # symmetric in fp16
    want, (want_d,) = _epilogue_want([gh.float()], [a], [1.0], [2.0])
    part = K.sym_epilogue([gh], [gh], [1.0], [a], [2.0])
    assert abs(part.sum().item() - want.item()) <= 2 * _gamma(40 * 40 + part.numel() + 4, 2.0 ** -24) * mag
    assert_within(gh, want_d, UNIT[torch.float16] * (want_d.abs() + 1e-3))


def test_split_count_plans():
    sm = 132
    for b, c, n, bytes_ in [(1, 64, 256 * 256, 4), (4, 64, 256 * 256, 4), (1, 128, 128 * 128, 2),
                            (1, 64, 512 * 512, 4), (1, 256, 64 * 64, 4), (4, 128, 16384, 2), (1, 64, 1000, 4),
                            (1, 64, 7919 * 2, 4)]:
        s = K.split_count(b, c, n, sm, bytes_)
        assert s >= 1 and n % s == 0
        if s > 1:
            assert n // s >= max(K.SPLIT_MIN_K, 2 * c)
            assert b * s * c * c * 4 <= b * c * n * bytes_ / 8  # partials <= 1/8 of the features
            assert b * s * math.ceil(c / 128) ** 2 <= 2 * sm + b * math.ceil(c / 128) ** 2
    assert K.split_count(1, 64, 256 * 256, sm) == 128  # VGG relu1_1 at 256^2: 128 chunks of 512
    assert K.split_count(4, 64, 256 * 256, sm) == 64
    assert K.split_count(1, 512, 32 * 32, sm) == 1  # relu4_1/relu5_1: cuBLAS's own plan
    assert K.split_count(1, 512, 16 * 16, sm) == 1
    assert K.split_count(2, 64, 7919 * 2, sm) == 2  # N = 2 * prime: the only divisor that fits


@interpreted
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("split", [None, 1, 4])
def test_device_path_on_cpu_tensors(dtype, split):
    # The CUDA forward and backward (products, split-K, one epilogue launch for every
    # layer, the one-product backward) run on CPU tensors too: torch's bmm there, Triton
    # interpreted.
    gen = torch.Generator().manual_seed(4)
    shapes = [(2, 37, 8, 8), (2, 5, 16, 4), (2, 70, 32), (2, 3, 0, 4), (0, 4, 2, 2)]
    feats = [torch.randn(s, dtype=torch.float64, generator=gen).to(dtype) for s in shapes]
    targets = [torch.randn((2, s[1], s[1]) if i % 2 else (s[1], s[1]), dtype=torch.float64, generator=gen)
               .to(dtype) for i, s in enumerate(shapes)]
    scales = [ref.gram_scale(f, "chw") for f in feats]
    weights = [0.3, 2.0, 1e-3, 1.5, 0.7]
    loss, diffs = K.style_loss(feats, targets, scales, weights, split=split)
    feats_g = [f.double().requires_grad_() for f in feats]
    want = ref.style_loss(feats_g, [t.double() for t in targets], weights, "sum", normalize="chw")
    want_g = torch.autograd.grad(want, feats_g)
    assert loss.dtype == dtype
    coefs = [4.0 * s * w for s, w in zip(scales, weights)]
    grads = K.style_loss_backward(torch.tensor(1.0, dtype=dtype), feats, diffs, coefs)
    if dtype == torch.float64:
        assert_close(loss, want, dtype)
        for a, e in zip(grads, want_g):
            assert_close(a, e, dtype)
    else:
        loss_b, dfeat_b, _ = style_bounds(feats, targets, weights, "sum", "chw", dtype)
        assert_within(loss, want, loss_b, "loss")
        for a, e, bound in zip(grads, want_g, dfeat_b):
            assert a.shape == e.shape
            assert_within(a, e, bound, "grad")
    for d in diffs:
        assert torch.equal(d, d.transpose(1, 2))
    for f in feats[:3]:
        got = K.gram(f, 0.5, split=split)
        assert torch.equal(got, got.transpose(1, 2)) and got.dtype == dtype
        assert_within(got, ref.gram_matrix(f.double(), "none") * 0.5, gram_bound(f, 0.5, dtype))


@interpreted
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_device_path_half_product_on_cpu_tensors(dtype):
    # The symmetric half product: three block products into one buffer whose lower-left
    # block stays unset (NaN here, so a read of it would show), read through its mirror.
    gen = torch.Generator().manual_seed(7)
    feats = [torch.randn(s, dtype=torch.float64, generator=gen).to(dtype) for s in
             [(2, 64, 6, 6), (1, 128, 40), (2, 37, 5, 5)]]  # C = 37: no halves, one full product
    targets = [torch.randn(2, 64, 64, dtype=torch.float64, generator=gen).to(dtype),
               torch.randn(128, 128, dtype=torch.float64, generator=gen).to(dtype),
               torch.randn(37, 37, dtype=torch.float64, generator=gen).to(dtype)]
    scales, weights = [ref.gram_scale(f, "hw") for f in feats], [0.5, 2.0, 1.0]
    g, ks, h = K.gram_products(K.as_bcn(feats[0]), 1 / 36, half=True)
    assert h == 32 and ks == 1.0
    g[:, 32:, :32] = math.nan
    out = torch.empty_like(g)
    K.sym_epilogue([g], [out], [1.0], halves=[h])
    assert torch.equal(out, out.transpose(1, 2))
    assert_within(out, ref.gram_matrix(feats[0].double(), "hw"), gram_bound(feats[0], 1 / 36, dtype))
    loss, diffs = K.style_loss(feats, targets, scales, weights, half=True)
    want = ref.style_loss([f.double() for f in feats], [t.double() for t in targets], weights, "sum",
                          normalize="hw")
    assert_within(loss, want, style_bounds(feats, targets, weights, "sum", "hw", dtype)[0])
    for f, t, s, d in zip(feats, targets, scales, diffs):
        want_d = ref.gram_matrix(f.double(), "none") * s - 0.5 * (t.double() + t.double().transpose(-1, -2))
        assert torch.equal(d, d.transpose(1, 2))
        assert_within(d, want_d, gram_bound(f, s, dtype) + 4 * UNIT[dtype] * want_d.abs())
    for f in feats:
        got = K.gram(f, 0.5, half=True)
        assert torch.equal(got, got.transpose(1, 2))
        assert_within(got, ref.gram_matrix(f.double(), "none") * 0.5, gram_bound(f, 0.5, dtype))
    assert K.use_half_product(4, 512, 4096, torch.float32)  # relu4_1 at 512^2
    assert not K.use_half_product(1, 512, 1024, torch.float32)  # 0.5 GFLOP: launch bound
    assert not K.use_half_product(4, 512, 4096, torch.bfloat16)
    assert not K.use_half_product(4, 128, 65536, torch.float32)


@interpreted
@pytest.mark.parametrize("split", [1, 4])
def test_device_path_on_cpu_tensors_fp16(split):
    # The float16 path: float32 Gram (of exact fp16 products), fp16 D; large activations
    # whose unnormalised Gram (~3e5) is past fp16's 65504.
    gen = torch.Generator().manual_seed(6)
    x = (torch.rand(2, 20, 1024, generator=gen) * 30).half()
    a = (ref.gram_matrix(torch.rand(1, 20, 1024, generator=gen, dtype=torch.float64) * 30, "hw")[0]).half()
    loss, (d,) = K.style_loss([x], [a], [1.0 / 1024], [1.0], split=split)
    assert loss.dtype == torch.float32 and d.dtype == torch.float16
    g = ref.gram_matrix(x.double(), "hw")
    want = ((g - a.double()) ** 2).sum()
    loss_b, _, _ = style_bounds([x], [a], [1.0], "sum", "hw", torch.float32)
    assert abs(loss.item() - want.item()) <= 2 * loss_b.item()
    want_d = g - 0.5 * (a.double() + a.double().T)
    assert_within(d, want_d, UNIT[torch.float16] * want_d.abs() + gram_bound(x, 1 / 1024, torch.float32))
    (grad,) = K.style_loss_backward(torch.tensor(1.0), [x], [d], [1e-7])
    want_g = 1e-7 * torch.bmm(want_d, x.double())
    assert grad.dtype == torch.float16 and torch.isfinite(grad).all()
    # 1e-7 * D (~1e-5) is subnormal in fp16 (digits lost); as the product's alpha the
    # coefficient meets the float32 accumulator instead.
    assert ((grad.double() - want_g).abs().max() / want_g.abs().max()).item() <= 4 * UNIT[torch.float16]


# --- CUDA (skipped without a GPU; they run on the next lent one) ---------------------------

def _vgg_layers(b, size, dtype, gen):
    """VGG-16/19 style layers relu1_1 .. relu5_1 at an input of size x size."""
    chans = [64, 128, 256, 512, 512]
    feats = [torch.rand(b, c, size >> i, size >> i, generator=gen).cuda().to(dtype).requires_grad_()
             for i, c in enumerate(chans)]
    targets = [ref.gram_matrix(torch.rand(1, c, size >> i, size >> i, generator=gen).cuda())[0].to(dtype)
               for i, c in enumerate(chans)]
    return feats, targets


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("b,size", [(1, 64), (2, 32)])
def test_cuda_half_error_at_most_twice_the_peer(dtype, b, size):
    # Against a float64 oracle on the same (half) values; errors summed over seeds so that
    # neither side's rounding luck on one draw decides. Sizes where the peer's fp16 Gram is
    # finite; relu1_1 at 64^2 takes the split-K path.
    errs = {"ours": [0.0] * 6, "peer": [0.0] * 6}
    for seed in range(4):
        gen = torch.Generator().manual_seed(seed)
        feats, targets = _vgg_layers(b, size, dtype, gen)
        f64 = [f.detach().double().requires_grad_() for f in feats]
        want = ref.style_loss(f64, [t.double() for t in targets])
        want_g = torch.autograd.grad(want, f64)
        for name, fn in (("ours", ops.style_loss), ("peer", ref.style_loss)):
            loss = fn(feats, targets)
            grads = torch.autograd.grad(loss, feats)
            assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads)
            errs[name][0] += abs(loss.double().item() - want.item())
            for i, (g, e) in enumerate(zip(grads, want_g)):
                errs[name][i + 1] += ((g.double() - e).abs().max() / e.abs().max()).item()
    for ours, peer in zip(errs["ours"], errs["peer"]):
        assert ours <= 2 * peer, errs


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_large_activations_do_not_overflow(dtype):
    # Activations up to 1200 over 64^2 positions: the unnormalised fp16 sum X X^T is far
    # past 65504 (pytorch/pytorch#3651); the normalised Gram is not.
    x = (torch.rand(1, 32, 64, 64, device="cuda") * 1200).to(dtype).requires_grad_()
    assert torch.isinf(torch.bmm(x.detach().view(1, 32, -1), x.detach().view(1, 32, -1).mT).half()).any()
    a = (ref.gram_matrix(x.detach().double()) * 0.5)[0].to(dtype)
    want_g = ref.gram_matrix(x.detach().double())
    for split in (None, 1):
        g = K.gram(x.detach(), 1.0 / x[0].numel(), split=split)
        assert torch.isfinite(g).all()
        assert_within(g, want_g, 4 * UNIT[dtype] * want_g.abs())
    loss = ops.style_loss([x], [a])
    (grad,) = torch.autograd.grad(loss, x)
    x64 = x.detach().double().requires_grad_()
    want = ref.style_loss([x64], [a.double()])
    (want_g,) = torch.autograd.grad(want, x64)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert abs(loss.item() - want.item()) <= 8 * UNIT[dtype] * want.item()
    assert ((grad.double() - want_g).abs().max() / want_g.abs().max()).item() <= 8 * UNIT[dtype]


@compiled
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_style_loss_never_synchronises(dtype):
    gen = torch.Generator().manual_seed(0)
    feats, targets = _vgg_layers(2, 64, dtype, gen)
    crit = ops.StyleLoss([t.detach()[:1].clone() for t in feats])

    def step():
        loss = ops.style_loss(feats, targets, [1.0, 0.5, 0.25, 0.5, 1.0]) + crit(feats)
        loss = loss + ops.gram_matrix(feats[2], "hw").square().sum()
        return torch.autograd.grad(loss, feats)

    step()  # compile the Triton kernel and warm cuBLAS outside the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        grads = step()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert all(torch.isfinite(g).all() for g in grads)


def _workspace(fn):
    """Peak bytes fn() allocates beyond its inputs and the gradients it returns."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    grads = fn()
    torch.cuda.synchronize()
    out = sum(g.numel() * g.element_size() for g in grads)
    return torch.cuda.max_memory_allocated() - base - out


@compiled
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("b,size", [(1, 256), (4, 256), (1, 512)])
def test_cuda_peak_memory_at_most_half_the_peer(dtype, b, size):
    # The peer holds G twice in its forward (bmm, then the scaled copy), keeps G for
    # mse_loss's backward, materialises dG and its scaled copy, and a second [B, C, H*W]
    # gradient for the two bmm backwards; the op holds one C x C matrix (G, overwritten by
    # D), split-K partials of at most 1/8 of the features and, for the first layers, grad*D.
    # Where C x C dominates (relu5_1 at 256^2: C = 512 > H*W = 256) both sides need at least
    # that one matrix and the peer two, so the ratio there is 1/2 plus the op's few scalars
    # (per-program partial sums and the loss: under 4 KiB).
    gen = torch.Generator().manual_seed(0)
    feats, targets = _vgg_layers(b, size, dtype, gen)
    layers = [[i] for i in range(5)] + [list(range(5))]
    for idx in layers:
        fs, ts = [feats[i] for i in idx], [targets[i] for i in idx]
        peak = {}
        for name, fn in (("ours", ops.style_loss), ("peer", ref.style_loss)):
            fn(fs, ts)  # warm-up (cuBLAS workspaces, Triton)
            peak[name] = _workspace(lambda: torch.autograd.grad(fn(fs, ts), fs))
        assert peak["ours"] <= 0.5 * peak["peer"] + 4096, (idx, peak)


@needs_cuda
def test_cuda_split_and_tf32_setting():
    # Split-K and one product agree within the float32 bound; with TF32 allowed by torch the
    # product may use it (the bound of a 10-bit mantissa then applies), and never without.
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 64, 64, 64, generator=gen).cuda()
    want = ref.gram_matrix(x.double(), "hw")
    for split in (None, 1, 8):
        assert_within(K.gram(x, 1 / 4096, split=split), want, gram_bound(x, 1 / 4096, torch.float32))
    old = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        got = ops.gram_matrix(x, "hw")
        # TF32 rounds each factor to a 10-bit mantissa (2 u per product), float32 accumulates.
        tf32 = 2 * 2.0 ** -11 + _gamma(4096 + 2, 2.0 ** -24)
        assert_within(got, want, tf32 * ref.gram_matrix(x.double().abs(), "hw"))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
