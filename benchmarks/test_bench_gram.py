"""Style loss forward+backward vs torch.bmm + F.mse_loss on VGG style-layer shapes, and one
full style-transfer iteration (network forward+backward + losses). Loss values and gradients
are checked equal before timing."""
import pytest
import torch

from benchmarks.conftest import tag
from fastpapers import ops
from fastpapers.reference import gram as ref

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
PEER = "torch.bmm + F.mse_loss"
# relu1_1 .. relu5_1 of VGG at an input of side S: (C, S / 2^k).
LAYERS = [(64, 1), (128, 2), (256, 4), (512, 8), (512, 16)]


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _features(b, side, layers, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats, targets = [], []
    for c, div in layers:
        s = side // div
        # ReLU features: non-negative.
        feats.append(torch.rand(b, c, s, s, generator=g).to(DEVICE).requires_grad_())
        targets.append(ref.gram_matrix(torch.rand(1, c, s, s, generator=g).to(DEVICE))[0])
    return feats, targets


def _step(fn, feats, targets):
    for f in feats:
        f.grad = None
    loss = fn(feats, targets)
    loss.backward()
    _sync()
    return loss


def _check(feats, targets):
    want = ref.style_loss(feats, targets)
    want_g = torch.autograd.grad(want, feats)
    got = ops.style_loss(feats, targets)
    got_g = torch.autograd.grad(got, feats)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=0)
    for a, e in zip(got_g, want_g):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4 * e.abs().max().item())


def _run(benchmark, case, impl, feats, targets, rounds):
    fn = ref.style_loss if impl == "peer" else ops.style_loss
    tag(benchmark, case, impl, PEER)
    benchmark.pedantic(_step, args=(fn, feats, targets), rounds=rounds, warmup_rounds=1)


@pytest.mark.parametrize("impl", ["peer", "ours"])
@pytest.mark.parametrize("b", [1, 4])
@pytest.mark.parametrize("layer", range(5))
def test_style_loss_layer_256(benchmark, layer, b, impl):
    c, div = LAYERS[layer]
    feats, targets = _features(b, 256, [LAYERS[layer]])
    _check(feats, targets)
    s = 256 // div
    _run(benchmark, f"style_loss fwd+bwd relu{layer + 1}_1 {b}x{c}x{s}x{s} ({DEVICE})", impl, feats, targets, 7)


@pytest.mark.parametrize("impl", ["peer", "ours"])
@pytest.mark.parametrize("b", [1, 4])
@pytest.mark.parametrize("side", [256, 512])
def test_style_loss_five_layers(benchmark, side, b, impl):
    feats, targets = _features(b, side, LAYERS)
    _check(feats, targets)
    _run(benchmark, f"style_loss fwd+bwd 5 VGG layers B={b} {side}x{side} ({DEVICE})", impl, feats, targets,
         3 if (side == 512 and b == 4) else 5)


@pytest.mark.parametrize("impl", ["peer", "ours"])
def test_style_transfer_iteration(benchmark, impl):
    from fastpapers.models import neural_style as ns
    net = ns.load_vgg().to(DEVICE)
    g = torch.Generator().manual_seed(0)
    style = torch.rand(1, 3, 256, 256, generator=g).to(DEVICE)
    with torch.no_grad():
        sf = net(net.preprocess(style), ns.STYLE_LAYERS)
        targets = [ref.gram_matrix(sf[n])[0] for n in ns.STYLE_LAYERS]
    x = net.preprocess(torch.rand(1, 3, 256, 256, generator=g).to(DEVICE)).requires_grad_()
    fn = ref.style_loss if impl == "peer" else ops.style_loss

    def step():
        x.grad = None
        f = net(x, ns.STYLE_LAYERS)
        loss = fn([f[n] for n in ns.STYLE_LAYERS], targets)
        loss.backward()
        _sync()
        return loss

    f = net(x, ns.STYLE_LAYERS)
    feats = [f[n] for n in ns.STYLE_LAYERS]
    torch.testing.assert_close(ops.style_loss(feats, targets), ref.style_loss(feats, targets), rtol=1e-4, atol=0)
    tag(benchmark, f"style transfer iteration VGG-16 256x256 ({DEVICE})", impl, "VGG + " + PEER)
    benchmark.pedantic(step, rounds=3, warmup_rounds=1)
