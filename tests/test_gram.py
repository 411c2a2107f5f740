import math

import pytest
import torch

from fastpapers import ops
from fastpapers.kernels import gram as K
from fastpapers.reference import gram as ref
from tests.utils import DEVICES, assert_close, assert_raises_naming, tol

NORMS = ["chw", "hw", "none"]


pytestmark = pytest.mark.usefixtures("one_thread")
REDS = ["mean", "sum"]


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
    peer = ref.style_loss(feats, targets, weights, reduction, normalize=normalize)
    peer_grads = torch.autograd.grad(peer, feats + targets)
    if dtype == torch.float64:
        assert_close(got, want, dtype)
        for a, e in zip(got_grads, want_grads):
            assert_close(a, e, dtype)
    else:
        # fp32: our error against the float64 oracle is at most twice the fp32 peer's (the
        # unnormalised Gram cancels against its target, so a fixed rtol is not meaningful).
        for a, p, e in zip((got, *got_grads), (peer, *peer_grads), (want, *want_grads)):
            _assert_error_at_most_twice_peer(a, p, e)


def _assert_error_at_most_twice_peer(ours, peer, exact):
    _, atol = tol(ours.dtype).values()
    err_ours = (ours.double() - exact).abs().max().item()
    err_peer = (peer.detach().double() - exact).abs().max().item()
    assert err_ours <= 2 * err_peer + atol, (err_ours, err_peer)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("normalize", NORMS)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 7), (3, 33, 9, 11), (2, 300, 4, 4), (2, 7, 13)])
def test_gram_matrix_matches_bmm(device, normalize, shape):
    x = torch.randn(shape, dtype=torch.float64).to(device)
    want = ref.gram_matrix(x, normalize)
    for dtype in (torch.float32, torch.float64):
        got = ops.gram_matrix(x.to(dtype), normalize)
        assert got.dtype == dtype and got.shape == want.shape
        if dtype == torch.float64:
            assert_close(got, want, dtype)
        else:
            _assert_error_at_most_twice_peer(got, ref.gram_matrix(x.to(dtype), normalize), want)
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


def test_opcheck():
    x = torch.randn(2, 5, 3, 7, requires_grad=True)
    torch.library.opcheck(torch.ops.fastpapers.gram_matrix.default, (x, 0.25))
    feats = [torch.randn(2, 5, 3, 7, requires_grad=True), torch.randn(2, 17, 4, 5, requires_grad=True)]
    targets = [torch.randn(5, 5), torch.randn(2, 17, 17, requires_grad=True)]
    torch.library.opcheck(torch.ops.fastpapers.style_loss.default, (feats, targets, [0.1, 0.05], [1.0, 0.5]))
    torch.library.opcheck(torch.ops.fastpapers.gram_matrix_backward.default,
                          (torch.randn(2, 5, 5), x.detach(), 0.25))
    diffs = [torch.randn(2, 5, 5), torch.randn(2, 17, 17)]
    torch.library.opcheck(torch.ops.fastpapers.style_loss_backward.default,
                          (torch.tensor(1.5), [f.detach() for f in feats], diffs, [0.3, 0.2]))


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
    assert_raises_naming(TypeError, "x", ops.gram_matrix, x.numpy())
    assert_raises_naming(ValueError, "x", ops.gram_matrix, torch.randn(4, 3))
    assert_raises_naming(TypeError, "x", ops.gram_matrix, x.long())
    assert_raises_naming(TypeError, "x", ops.gram_matrix, x.half())  # half is CUDA only
    assert_raises_naming(ValueError, "normalize", ops.gram_matrix, x, "c")
    assert_raises_naming(TypeError, "normalize", ops.gram_matrix, x, None)
    assert_raises_naming(TypeError, "features", ops.style_loss, x, [a])
    assert_raises_naming(TypeError, "targets", ops.style_loss, [x], a)
    assert_raises_naming(ValueError, "features", ops.style_loss, [], [])
    assert_raises_naming(ValueError, "targets", ops.style_loss, [x], [a, a])
    assert_raises_naming(ValueError, "targets[0]", ops.style_loss, [x], [torch.randn(3, 3)])
    assert_raises_naming(ValueError, "targets[0]", ops.style_loss, [x], [torch.randn(3, 4, 4)])
    assert_raises_naming(TypeError, "targets[0]", ops.style_loss, [x], [a.double()])
    assert_raises_naming(TypeError, "features[1]", ops.style_loss, [x, x.double()], [a, a.double()])
    assert_raises_naming(ValueError, "features[0]", ops.style_loss, [torch.randn(4, 9)], [a])
    assert_raises_naming(ValueError, "weights", ops.style_loss, [x], [a], [1.0, 2.0])
    assert_raises_naming(TypeError, "weights[0]", ops.style_loss, [x], [a], [float("nan")])
    assert_raises_naming(ValueError, "reduction", ops.style_loss, [x], [a], None, "max")
    assert_raises_naming(ValueError, "normalize", ops.style_loss, [x], [a], normalize="x")
    if torch.cuda.is_available():
        assert_raises_naming(ValueError, "targets[0]", ops.style_loss, [x], [a.cuda()])


# --- Triton launchers, run on CPU tensors under TRITON_INTERPRET=1 (tests/conftest.py) -----

@pytest.mark.parametrize("b,c,n", [(1, 5, 7), (2, 20, 33), (3, 37, 17)])
def test_triton_gram_launcher(b, c, n):
    x = torch.randn(b, c, n)
    for normalize in NORMS:
        scale = ref.gram_scale(x, normalize)
        got = K.gram(x, scale, block_c=16, block_k=16)
        assert_close(got, ref.gram_matrix(x, normalize))
        assert torch.equal(got, got.transpose(1, 2))


@pytest.mark.parametrize("batched", [False, True])
def test_triton_gram_loss_launcher(batched):
    b, c, n = 2, 37, 23
    x = torch.randn(b, c, n, dtype=torch.float64)
    a = torch.randn((b, c, c) if batched else (c, c), dtype=torch.float64)
    scale = 1.0 / (c * n)
    g = ref.gram_matrix(x, "chw")
    for dtype in (torch.float32, torch.float64):
        total, d = K.gram_loss(x.to(dtype), scale, a.to(dtype), block_c=16, block_k=16)
        assert d.dtype == dtype and total.dtype == dtype
        assert_close(total, ((g - a) ** 2).sum().to(dtype), dtype)
        sym = g - 0.5 * (a + a.transpose(-1, -2))
        assert_close(d, sym.to(dtype).expand(b, c, c), dtype)


def _grouped_case(dtype, gen):
    """Layers with different C and H*W, odd sizes, shared and per-sample targets, one layer
    with no position (D = -sym(A)) and one with no channel."""
    b = 2
    shapes = [(b, 37, 5, 7), (b, 5, 3, 3), (b, 20, 33), (b, 9, 0, 4), (b, 0, 3, 3)]
    xs, targets = [], []
    for i, s in enumerate(shapes):
        c = s[1]
        xs.append(torch.randn(s, dtype=torch.float64, generator=gen).to(dtype))
        shape = (b, c, c) if i % 2 else (c, c)
        targets.append(torch.randn(shape, dtype=torch.float64, generator=gen).to(dtype))
    scales = [1.0 / max(1, math.prod(x.shape[1:])) for x in xs]
    weights = [0.5, 2.0, 1.5, 0.25, 3.0]
    return xs, targets, scales, weights


def test_triton_grouped_loss_rejects_mixed_dtypes():
    x = torch.rand(1, 8, 3, 3)
    with pytest.raises(ValueError, match="layer 1"):
        K.gram_loss_grouped([x, x], [1.0, 1.0], [torch.rand(8, 8), torch.rand(8, 8, dtype=torch.float64)], [1.0, 1.0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_triton_grouped_loss_launcher(dtype):
    g = torch.Generator().manual_seed(5)
    xs, targets, scales, weights = _grouped_case(dtype, g)
    total, diffs = K.gram_loss_grouped(xs, scales, targets, weights, block_c=16, block_k=16)
    assert total.dtype == dtype
    want = 0.0
    for x, a, s, w, d in zip(xs, targets, scales, weights, diffs):
        b, c = x.shape[:2]
        gm = ref.gram_matrix(x.double(), "none") * s
        want = want + w * ((gm - a.double()) ** 2).sum()
        assert d.dtype == dtype and d.shape == (b, c, c)
        sym = gm - 0.5 * (a.double() + a.double().transpose(-1, -2))
        assert_close(d.double(), sym.expand(b, c, c), dtype)
        # The per-layer launcher gives the same D (the same tiles, launched alone).
        if b * c:
            _, d1 = K.gram_loss(x, s, a, block_c=16, block_k=16)
            assert torch.equal(d, d1)
    assert_close(total.double(), want, dtype)
    # mse's mean over a layer without entries is NaN, as in the peer.
    nan_total, _ = K.gram_loss_grouped(xs, scales, targets, weights[:4] + [math.nan], block_c=16, block_k=16)
    assert math.isnan(nan_total.item())


@pytest.mark.parametrize("case", ["overflow", "underflow"])
def test_triton_dgrad_half_keeps_d_in_float32(case):
    g = torch.Generator().manual_seed(3)
    b, c, n = 2, 64, 16
    if case == "overflow":
        # Dark features against a bright style: D ~ -A ~ -6e4, and 4 D is past fp16's 65504.
        x = (torch.rand(b, c, n, generator=g, dtype=torch.float64) * 1e-3).half()
        a = (torch.rand(c, c, generator=g, dtype=torch.float64) * 6e4).half()
        coef = 4.0
    else:
        # Bright features: D ~ 1e5 (float32), and coef D ~ 1e-8 is below fp16's smallest
        # subnormal (6e-8) while the gradient itself (~2e-4) is a normal fp16 number.
        x = (torch.rand(b, c, n, generator=g, dtype=torch.float64) * 600).half()
        a = torch.zeros(c, c, dtype=torch.float16)
        coef = 1e-13
    _, d = K.gram_loss(x, 1.0 / n, a, block_c=16, block_k=16)
    assert d.dtype == torch.float32
    d64 = ref.gram_matrix(x.double(), "hw") - 0.5 * (a.double() + a.double().T)
    want = coef * torch.bmm(d64, x.double())
    got = K.dgrad_half(torch.tensor(1.0), x, d, coef, block_m=16, block_n=16, block_k=16)
    assert got.dtype == torch.float16 and torch.isfinite(got).all()
    peak = want.abs().max()
    assert (got.double() - want).abs().max() / peak < 5e-3
    # What rounding coef * D to half before the product (the earlier backward) gives.
    naive = torch.bmm((d * coef).half().double(), x.double())
    assert not torch.isfinite(naive).all() or (naive - want).abs().max() / peak > 0.5


def test_triton_fp16_large_activations_do_not_overflow():
    # Activations up to 1200 over 1024 positions: the unscaled fp16 sum X X^T is far
    # past 65504 (pytorch/pytorch#3651), the prescaled product is not.
    b, c, n = 1, 20, 1024
    x = (torch.rand(b, c, n, dtype=torch.float64) * 1200).half()
    x64 = x.double()
    want = ref.gram_matrix(x64, "chw")
    naive = torch.bmm(x.float(), x.float().transpose(1, 2)).half()
    assert torch.isinf(naive).any()  # what an fp16 bmm + division produces
    got = K.gram(x, 1.0 / (c * n), block_c=16, block_k=64)
    assert got.dtype == torch.float16 and torch.isfinite(got).all()
    # Within the fp16 tolerance of the float64 result.
    assert_close(got.double(), want, torch.float16)
    a = (want[0] * 0.5).half()
    total, d = K.gram_loss(x, 1.0 / (c * n), a, block_c=16, block_k=64)
    assert total.dtype == torch.float32 and d.dtype == torch.float32
    assert math.isfinite(total.item())
    want_total = ((want - a.double()) ** 2).sum()
    assert_close(total.double(), want_total, torch.float16)


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=DEVICES[1].marks)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_style_loss(device, dtype):
    x = (torch.rand(2, 64, 32, 32, device=device) * 500).to(dtype).requires_grad_()
    a = (ref.gram_matrix(torch.rand(1, 64, 32, 32, device=device, dtype=torch.float64) * 400)[0]).to(dtype)
    loss = ops.style_loss([x], [a])
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    x64 = x.detach().double().requires_grad_()
    want = ref.style_loss([x64], [a.double()])
    torch.testing.assert_close(loss.double(), want, rtol=2e-2, atol=0)
    loss.backward()
    want.backward()
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=5e-2, atol=1e-2 * x64.grad.abs().max().item())
