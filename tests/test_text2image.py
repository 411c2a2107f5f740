"""Text-to-image GAN (Reed et al. 2016): encoders, G/D shapes, GAN-CLS/INT losses, style encoder."""
import math

import pytest
import torch
import torch.nn as nn

from fastpapers.metrics import judge as J
from fastpapers.models import text2image as t2i
from tests.utils import assert_close, assert_raises_naming

LOG2 = math.log(2.0)


# ---- text encoding -------------------------------------------------------------------------

def test_encode_chars_pads_and_counts():
    ids, lengths = t2i.encode_chars(["Red star", "a big blue circle"])
    assert ids.shape == (2, 17) and lengths.tolist() == [8, 17]
    assert ids[0, 8:].eq(0).all() and ids[0, :8].gt(0).all()
    # Lower-casing: "R" and "r" encode the same.
    assert ids[0, 0] == t2i.encode_chars(["r"])[0][0, 0]


def test_encode_chars_truncates():
    ids, lengths = t2i.encode_chars(["abcdefgh"], max_len=5)
    assert ids.shape == (1, 5) and lengths.tolist() == [5]


def test_encode_chars_bad_input():
    assert_raises_naming(ValueError, "texts[1]", t2i.encode_chars, ["red star", "red ★"])
    assert_raises_naming(ValueError, "texts[0]", t2i.encode_chars, [""])
    assert_raises_naming(TypeError, "texts", t2i.encode_chars, "red star")
    assert_raises_naming(ValueError, "texts", t2i.encode_chars, [])
    assert_raises_naming(ValueError, "max_len", t2i.encode_chars, ["a"], max_len=0)


def test_text_encoder_shape_and_padding_invariance():
    enc = t2i.CharCNNRNN(embed_dim=24, conv_dim=16, hidden=20).eval()
    short = ["red star", "a small green cross"]
    alone = torch.cat([enc.embed([s]) for s in short])
    batched = enc.embed(short + ["a very long caption that forces much more padding on the others"])[:2]
    assert alone.shape == (2, 24)
    assert_close(batched, alone)


def test_text_encoder_distinguishes_captions():
    enc = t2i.CharCNNRNN(embed_dim=16, conv_dim=16, hidden=16)
    e = enc.embed(["red star", "blue star"])
    assert not torch.allclose(e[0], e[1])


# ---- joint embedding loss ------------------------------------------------------------------

def test_joint_embedding_loss_hand_made():
    eye = torch.eye(2)
    # Matching pairs score 1, mismatches 0: every hinge max(0, 1 + 0 - 1) is 0.
    assert t2i.joint_embedding_loss(eye, eye).item() == 0.0
    # Swapped texts: mismatches score 1, matches 0: each hinge is 1 + 1 - 0 = 2, both directions.
    swapped = eye.flip(0)
    assert t2i.joint_embedding_loss(eye, swapped).item() == pytest.approx(4.0)
    # Same class: no negatives at all.
    assert t2i.joint_embedding_loss(eye, swapped, labels=torch.tensor([3, 3])).item() == 0.0


def test_joint_embedding_loss_asymmetric_case():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    txt = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    labels = torch.tensor([0, 1, 0])
    margin = 0.5
    s = img @ txt.t()
    expected_i2t, expected_t2i = 0.0, 0.0
    for i in range(3):
        negs = [j for j in range(3) if labels[j] != labels[i]]
        expected_i2t += sum(max(0.0, margin + s[i, j] - s[i, i]) for j in negs) / len(negs)
        expected_t2i += sum(max(0.0, margin + s[j, i] - s[i, i]) for j in negs) / len(negs)
    expected = (expected_i2t + expected_t2i) / 3
    got = t2i.joint_embedding_loss(img, txt, labels, margin=margin)
    assert got.item() == pytest.approx(float(expected))


def test_joint_embedding_training_lowers_loss():
    torch.manual_seed(0)
    txt_enc = t2i.CharCNNRNN(embed_dim=8, conv_dim=8, hidden=8)
    img_enc = t2i.ImageEncoder(embed_dim=8, width=4)
    caps = ["red star", "blue circle", "green square", "yellow cross"]
    colours = torch.tensor([[1, -1, -1], [-1, -1, 1], [-1, 1, -1], [1, 1, -1]], dtype=torch.float32)
    imgs = colours[:, :, None, None].expand(-1, -1, 8, 8).contiguous()
    ids, lengths = t2i.encode_chars(caps)
    opt = torch.optim.Adam(list(txt_enc.parameters()) + list(img_enc.parameters()), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = t2i.joint_embedding_loss(img_enc(imgs), txt_enc(ids, lengths))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_joint_embedding_loss_bad_shapes():
    assert_raises_naming(ValueError, "img_emb", t2i.joint_embedding_loss, torch.zeros(3, 4), torch.zeros(3, 5))
    assert_raises_naming(ValueError, "labels", t2i.joint_embedding_loss, torch.zeros(3, 4), torch.zeros(3, 4),
                         torch.zeros(2, dtype=torch.long))


# ---- generator / discriminator ------------------------------------------------------------

@pytest.mark.parametrize("upsample", t2i.UPSAMPLE)
@pytest.mark.parametrize("size", [32, 64])
def test_generator_discriminator_shapes(size, upsample):
    g = t2i.Generator(embed_dim=12, nz=10, proj_dim=8, ngf=8, image_size=size, upsample=upsample)
    d = t2i.Discriminator(embed_dim=12, proj_dim=8, ndf=8, image_size=size)
    z, phi = torch.randn(3, 10), torch.randn(3, 12)
    x = g(z, phi)
    assert x.shape == (3, 3, size, size)
    assert x.abs().max() <= 1.0
    assert d(x, phi).shape == (3,)


@pytest.mark.parametrize("upsample", t2i.UPSAMPLE)
def test_gradients_reach_every_parameter(upsample):
    g = t2i.Generator(embed_dim=12, nz=10, proj_dim=8, ngf=8, image_size=32, upsample=upsample)
    d = t2i.Discriminator(embed_dim=12, proj_dim=8, ndf=8, image_size=32)
    z, phi = torch.randn(4, 10), torch.randn(4, 12)
    real = torch.rand(4, 3, 32, 32) * 2 - 1
    wrong = phi[t2i.mismatched_indices(torch.arange(4))]
    d_loss = t2i.discriminator_loss(d(real, phi), d(g(z, phi).detach(), phi), d(real, wrong))
    d_loss.backward()
    for name, p in d.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in g.parameters())
    phi_int = t2i.interpolate_embeddings(phi, phi.roll(1, 0))
    g_loss = t2i.generator_loss(d(g(z, phi), phi), d(g(z, phi_int), phi_int))
    g_loss.backward()
    for name, p in g.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_discriminator_sees_the_text():
    d = t2i.Discriminator(embed_dim=12, proj_dim=8, ndf=8, image_size=32).eval()
    x = torch.rand(2, 3, 32, 32)
    phi = torch.randn(2, 12)
    assert not torch.allclose(d(x, phi), d(x, phi.flip(0)))


def test_model_bad_input():
    g = t2i.Generator(embed_dim=12, nz=10, ngf=8, image_size=32)
    d = t2i.Discriminator(embed_dim=12, ndf=8, image_size=32)
    assert_raises_naming(ValueError, "z", g, torch.randn(2, 11), torch.randn(2, 12))
    assert_raises_naming(ValueError, "phi", g, torch.randn(2, 10), torch.randn(3, 12))
    assert_raises_naming(ValueError, "x", d, torch.randn(2, 3, 64, 64), torch.randn(2, 12))
    assert_raises_naming(ValueError, "image_size", t2i.Generator, image_size=48)
    assert_raises_naming(ValueError, "upsample", t2i.Generator, image_size=32, upsample="bilinear")


def test_resize_generator_makes_no_checkerboard_from_a_flat_code():
    # The paper's 4x4 stride-2 transposed convolutions give a 2-periodic pattern even when every
    # channel of their input is constant; nearest-neighbour resizing + a 3x3 conv cannot
    # (away from the border, a constant input gives a constant output).
    torch.manual_seed(0)
    for upsample, periodic in (("deconv", True), ("resize", False)):
        g = t2i.Generator(embed_dim=12, nz=10, proj_dim=8, ngf=8, image_size=32, upsample=upsample).eval()
        layer = [m for m in g.net if isinstance(m, (nn.ConvTranspose2d, nn.Conv2d))][-1]
        flat = torch.ones(1, layer.in_channels, 16, 16)
        if upsample == "resize":
            flat = nn.functional.interpolate(flat, scale_factor=2, mode="nearest")
        out = layer(flat)[0, :, 2:-2, 2:-2]
        spread = (out - out.mean((1, 2), keepdim=True)).abs().max().item()
        assert (spread > 1e-4) == periodic, upsample


# ---- losses on hand-made logits ------------------------------------------------------------

BIG = 50.0  # BCE of a logit this confident is below 1e-21: numerically zero.


def test_gan_cls_discriminator_loss_weights():
    rr, rw, fr = torch.full((4,), BIG), torch.zeros(4), torch.full((4,), -BIG)
    # Only the wrong-text term is uncertain: ½·log 2.
    assert t2i.discriminator_loss(rr, fr, rw).item() == pytest.approx(0.5 * LOG2)
    # Only the fake term uncertain: ½·log 2.
    assert t2i.discriminator_loss(rr, torch.zeros(4), torch.full((4,), -BIG)).item() == pytest.approx(0.5 * LOG2)
    # Everything at logit 0: log 2 + ½ log 2 + ½ log 2.
    z = torch.zeros(4)
    assert t2i.discriminator_loss(z, z, z).item() == pytest.approx(2 * LOG2)


def test_plain_gan_discriminator_loss():
    rr, fr = torch.full((4,), BIG), torch.zeros(4)
    assert t2i.discriminator_loss(rr, fr, cls_weight=0.0).item() == pytest.approx(LOG2)
    assert_raises_naming(ValueError, "real_wrong", t2i.discriminator_loss, rr, fr, None, 0.5)
    assert_raises_naming(ValueError, "cls_weight", t2i.discriminator_loss, rr, fr, rr, 1.5)


def test_one_sided_label_smoothing_moves_only_the_real_target():
    # With real_label 0.9 the real/right term is minimal at logit log(0.9/0.1), where its BCE is
    # the entropy of Bernoulli(0.9); the wrong-text and fake terms keep target 0.
    opt = torch.full((4,), math.log(9.0))
    h09 = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    neg = torch.full((4,), -BIG)
    assert t2i.discriminator_loss(opt, neg, neg, real_label=0.9).item() == pytest.approx(h09, rel=1e-6)
    # A logit pushed further is penalised (it is not with target 1).
    assert t2i.discriminator_loss(torch.full((4,), BIG), neg, neg, real_label=0.9).item() > 4.0
    assert t2i.discriminator_loss(torch.full((4,), BIG), neg, neg).item() < 1e-6
    # The gradient vanishes at the smoothed optimum.
    x = opt.clone().requires_grad_(True)
    t2i.discriminator_loss(x, neg, neg, real_label=0.9).backward()
    assert x.grad.abs().max().item() < 1e-6
    for bad in (0.5, 1.01, 0.0):
        assert_raises_naming(ValueError, "real_label", t2i.discriminator_loss, opt, neg, neg, 0.5, bad)


def test_instance_noise_schedule():
    assert t2i.instance_noise_sigma(0, 0.2, 100) == pytest.approx(0.2)
    assert t2i.instance_noise_sigma(50, 0.2, 100) == pytest.approx(0.1)
    assert t2i.instance_noise_sigma(100, 0.2, 100) == 0.0
    assert t2i.instance_noise_sigma(10_000, 0.2, 100) == 0.0
    assert t2i.instance_noise_sigma(10_000, 0.2, 0) == pytest.approx(0.2)  # constant
    assert t2i.instance_noise_sigma(3, 0.0, 100) == 0.0
    assert_raises_naming(ValueError, "sigma", t2i.instance_noise_sigma, 0, -0.1, 10)
    assert_raises_naming(ValueError, "anneal_steps", t2i.instance_noise_sigma, 0, 0.1, -1)


def test_generator_loss_with_interpolation():
    z = torch.zeros(5)
    assert t2i.generator_loss(z).item() == pytest.approx(LOG2)
    assert t2i.generator_loss(z, z).item() == pytest.approx(2 * LOG2)
    assert t2i.generator_loss(z, z, interp_weight=0.5).item() == pytest.approx(1.5 * LOG2)
    # Non-saturating: a confident "fake" verdict gives a large loss, not a vanishing one.
    assert t2i.generator_loss(torch.full((2,), -10.0)).item() == pytest.approx(10.0, abs=1e-3)


def test_interpolate_embeddings():
    a, b = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 4.0]])
    assert_close(t2i.interpolate_embeddings(a, b), torch.tensor([[1.0, 2.0]]))
    assert_close(t2i.interpolate_embeddings(a, b, beta=0.25), torch.tensor([[0.5, 3.0]]))
    assert_raises_naming(ValueError, "beta", t2i.interpolate_embeddings, a, b, 2.0)
    assert_raises_naming(ValueError, "partner", t2i.interpolate_embeddings, a, torch.zeros(2, 2))


def test_mismatched_indices_pick_another_class():
    labels = torch.tensor([0, 0, 1, 2, 2, 2, 1, 0])
    for seed in range(5):
        j = t2i.mismatched_indices(labels, torch.Generator().manual_seed(seed))
        assert (labels[j] != labels).all()
    single = t2i.mismatched_indices(torch.tensor([4, 4, 4]))
    assert single.tolist() == [1, 2, 0]


def test_near_mismatched_indices_differ_in_one_attribute_drawn_uniformly():
    # Every (colour, shape, size) of 3 x 3 x 2: each row has partners differing in each attribute.
    attrs = torch.tensor([[c, k, s] for c in range(3) for k in range(3) for s in range(2)])
    counts = torch.zeros(3)
    for seed in range(40):
        j = t2i.near_mismatched_indices(attrs, torch.Generator().manual_seed(seed))
        diff = attrs[j] != attrs
        assert (diff.sum(1) == 1).all()
        counts += diff.sum(0).float()
    # Each attribute is the differing one about a third of the time (18 rows x 40 draws).
    assert ((counts / counts.sum() - 1 / 3).abs() < 0.06).all(), counts


def test_near_mismatched_indices_fall_back_in_order():
    # Row 0 has no partner differing only in colour or size, but one differing only in shape
    # (row 1); whatever attribute is drawn, it must get row 1.
    attrs = torch.tensor([[0, 0, 0], [0, 1, 0], [1, 2, 1]])
    for seed in range(10):
        assert int(t2i.near_mismatched_indices(attrs, torch.Generator().manual_seed(seed))[0]) == 1
        # Row 2 differs from every row in more than one attribute: any other row will do.
        assert int(t2i.near_mismatched_indices(attrs, torch.Generator().manual_seed(seed))[2]) in (0, 1)
    alike = torch.tensor([[1, 2, 0]] * 3)
    assert t2i.near_mismatched_indices(alike).tolist() == [1, 2, 0]
    assert_raises_naming(ValueError, "attributes", t2i.near_mismatched_indices, torch.zeros(4, dtype=torch.long))


# ---- style encoder -------------------------------------------------------------------------

def test_style_encoder_learns_z_and_leaves_g_alone():
    torch.manual_seed(0)
    # Train-mode batch norm: a freshly initialised G in eval mode draws near-constant images.
    g = t2i.Generator(embed_dim=8, nz=6, proj_dim=8, ngf=8, image_size=32).train()
    s = t2i.StyleEncoder(nz=6, ndf=8, image_size=32)
    z, phi = torch.randn(16, 6), torch.randn(16, 8)
    opt = torch.optim.Adam(s.parameters(), lr=1e-2)
    first = None
    for _ in range(15):
        loss = t2i.style_encoder_loss(s, g, z, phi)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert all(p.grad is None for p in g.parameters())
    assert loss.item() < 0.3 * first


def test_style_transfer_uses_s_of_query():
    g = t2i.Generator(embed_dim=8, nz=6, ngf=8, image_size=32).eval()
    s = t2i.StyleEncoder(nz=6, ndf=8, image_size=32).eval()
    x, phi = torch.rand(3, 3, 32, 32) * 2 - 1, torch.randn(3, 8)
    out = t2i.style_transfer(g, s, x, phi)
    assert out.shape == (3, 3, 32, 32)
    assert_close(out, g(s(x), phi))
    assert_raises_naming(ValueError, "x", s, torch.rand(3, 3, 64, 64))


# ---- evaluation helpers --------------------------------------------------------------------

def test_pairwise_auc_hand_made():
    # Two tight clusters by label: every same-label pair is more similar than any other pair.
    v = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    assert J.pairwise_auc(v, torch.tensor([0, 0, 1, 1])) == 1.0
    # Labels across the clusters: same-label similarities {0, 0.22} against {0.99, 0.11, 0.11,
    # 0.99}; only 0.22 > 0.11 wins, twice out of 8 comparisons.
    assert J.pairwise_auc(v, torch.tensor([0, 1, 0, 1])) == pytest.approx(0.25)
    # Identical vectors: every similarity ties, AUC is exactly chance.
    assert J.pairwise_auc(torch.ones(5, 3), torch.tensor([0, 0, 1, 1, 1])) == 0.5


def test_pairwise_auc_matches_brute_force():
    g = torch.Generator().manual_seed(3)
    v = torch.randn(12, 4, generator=g)
    labels = torch.randint(0, 3, (12,), generator=g)
    vn = torch.nn.functional.normalize(v.double(), dim=1)
    pos, neg = [], []
    for i in range(12):
        for j in range(i + 1, 12):
            (pos if labels[i] == labels[j] else neg).append(float(vn[i] @ vn[j]))
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    assert J.pairwise_auc(v, labels) == pytest.approx(wins / (len(pos) * len(neg)))


def test_attribute_classifier_heads():
    c = J.AttributeClassifier({"colour": 6, "shape": 5}, width=4)
    out = c(torch.rand(2, 3, 32, 32))
    assert out["colour"].shape == (2, 6) and out["shape"].shape == (2, 5)
    assert_raises_naming(ValueError, "heads", J.AttributeClassifier, {"colour": 1})


@pytest.mark.parametrize("interp", [False, True])
def test_gan_cls_step_is_algorithm_1(interp):
    # One step, with updates that only record their order, equals the losses built by hand from
    # the same random draws: z, the wrong texts, then (GAN-INT) the partners and z'.
    torch.manual_seed(0)
    G, D = t2i.Generator(8, 6, 8, 4, 32), t2i.Discriminator(8, 8, 4, 32)
    x, phi, labels = torch.rand(4, 3, 32, 32) * 2 - 1, torch.randn(4, 8), torch.tensor([0, 0, 1, 1])
    calls = []
    torch.manual_seed(1)
    out = t2i.gan_cls_step(G, D, x, phi, lambda name, loss: calls.append(name), labels=labels, interp=interp)
    assert calls == ["D", "G"]
    torch.manual_seed(1)
    fake = G(torch.randn(4, 6), phi)
    s_w = D(x, phi[t2i.mismatched_indices(labels)])
    loss_d = t2i.discriminator_loss(D(x, phi), D(fake.detach(), phi), s_w, 0.5)
    s_int = None
    if interp:
        phi_int = t2i.interpolate_embeddings(phi[:2], phi[torch.randperm(4)[:2]], 0.5)
        s_int = D(G(torch.randn(2, 6), phi_int), phi_int)
    loss_g = t2i.generator_loss(D(fake, phi), s_int)
    assert_close(out["loss_d"], loss_d)
    assert_close(out["loss_g"], loss_g)
    with pytest.raises(ValueError, match="attributes"):
        t2i.gan_cls_step(G, D, x, phi, lambda *a: None, labels=labels, wrong_text="near")
