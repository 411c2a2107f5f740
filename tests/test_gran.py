"""GRAN (Im et al. 2016): recurrent canvas, encoder/decoder wiring, losses and the GAM battle."""
import math

import pytest
import torch

from fastpapers.metrics import gam
from fastpapers.models import gran
from tests.utils import assert_close, assert_raises_naming

LOG2 = math.log(2.0)


def small_g(**kw):
    opts = dict(nz=8, steps=3, image_size=16, ngf=8, hz_dim=6, hc_dim=5)
    opts.update(kw)
    return gran.GRANGenerator(**opts)


@pytest.mark.parametrize("size,channels", [(16, 1), (28, 1), (32, 3)])
def test_shapes(size, channels):
    g = small_g(image_size=size, channels=channels)
    d = gran.GRANDiscriminator(image_size=size, channels=channels, ndf=8)
    x, steps = g(g.sample_z(4), return_steps=True)
    assert x.shape == (4, channels, size, size)
    assert steps.shape == (4, 3, channels, size, size)
    assert ((x > 0) & (x < 1)).all()
    assert d(x).shape == (4,)


def test_canvas_is_sigmoid_of_summed_steps():
    g = small_g().eval()
    z = g.sample_z(5)
    deltas = g.deltas(z)
    canvas, running = g(z, return_steps=True)
    assert_close(canvas, torch.sigmoid(deltas.sum(1)))
    assert_close(running[:, 0], torch.sigmoid(deltas[:, 0]))
    assert_close(running[:, 1], torch.sigmoid(deltas[:, 0] + deltas[:, 1]))
    assert_close(running[:, -1], canvas)


def test_encoder_reads_previous_step_output():
    torch.manual_seed(1)
    g = small_g().eval()
    z = g.sample_z(3)
    before = g.deltas(z)
    with torch.no_grad():
        for p in g.enc.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    after = g.deltas(z)
    # Step 1 starts from h_c = 0 and never runs g; later steps read ΔC_{t-1} through g.
    assert_close(after[:, 0], before[:, 0])
    assert not torch.allclose(after[:, 1], before[:, 1])


def test_single_step_has_no_encoder():
    g = small_g(steps=1)
    assert g.enc is None
    x = g(g.sample_z(2))
    assert x.shape == (2, 1, 16, 16)


def test_same_z_every_step_vs_new_z_per_step():
    g = small_g().eval()
    assert g.sample_z(2).shape == (2, 8)
    assert_raises_naming(ValueError, "z", g.deltas, torch.randn(2, 3, 8))
    gn = small_g(new_z_per_step=True).eval()
    z = gn.sample_z(2)
    assert z.shape == (2, 3, 8)
    z2 = z.clone()
    z2[:, 2] = torch.randn(2, 8)
    d1, d2 = gn.deltas(z), gn.deltas(z2)
    # Changing only the last step's noise leaves the first two steps alone.
    assert_close(d1[:, :2], d2[:, :2])
    assert not torch.allclose(d1[:, 2], d2[:, 2])
    assert_raises_naming(ValueError, "z", gn.deltas, torch.randn(2, 8))


def test_gradients_reach_every_parameter():
    g = small_g()
    d = gran.GRANDiscriminator(image_size=16, ndf=8)
    real = torch.rand(6, 1, 16, 16)
    fake = g(g.sample_z(6))
    gran.discriminator_loss(d(real), d(fake.detach())).backward()
    for name, p in d.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    gran.generator_loss(d(fake)).backward()
    for name, p in g.named_parameters():
        # The last step's output is never encoded, but every step before it is, so every
        # encoder weight takes part in the canvas.
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_losses_hand_made():
    z = torch.zeros(3)
    assert gran.discriminator_loss(z, z).item() == pytest.approx(2 * LOG2)
    assert gran.discriminator_loss(torch.full((3,), 50.0), z).item() == pytest.approx(LOG2)
    assert gran.generator_loss(z).item() == pytest.approx(LOG2)
    assert gran.generator_loss(torch.full((2,), -10.0)).item() == pytest.approx(10.0, abs=1e-3)


def test_bad_sizes():
    assert_raises_naming(ValueError, "image_size", gran.GRANGenerator, image_size=18)
    assert_raises_naming(ValueError, "image_size", gran.GRANDiscriminator, image_size=15)
    assert_raises_naming(ValueError, "steps", gran.GRANGenerator, steps=0)
    d = gran.GRANDiscriminator(image_size=16, ndf=8)
    assert_raises_naming(ValueError, "x", d, torch.rand(2, 1, 28, 28))


# ---- GAM -----------------------------------------------------------------------------------

def brightness_disc(threshold):
    """Calls an image real when its mean intensity is above threshold."""
    return lambda x: (x.mean(dim=(1, 2, 3)) - threshold) * 100


def images(values):
    return torch.tensor(values, dtype=torch.float32)[:, None, None, None].expand(-1, 1, 4, 4)


def test_gam_toy_discriminators():
    test = images([0.9, 0.8, 0.7, 0.6, 0.45])        # real data
    samples1 = images([0.9, 0.55, 0.3, 0.2])          # from G1
    samples2 = images([0.65, 0.5, 0.35, 0.1])         # from G2
    d1, d2 = brightness_disc(0.5), brightness_disc(0.4)
    r = gam.gam_battle(d1, samples1, d2, samples2, test)
    # D1 calls 0.45 fake: 1/5 test error. D2 calls everything in test real: 0 errors.
    assert r.test_error_1 == pytest.approx(0.2) and r.test_error_2 == 0.0
    assert r.r_test == math.inf and not r.valid and r.winner == "invalid"
    # D1 on G2 samples: only 0.65 passes as real (0.5 is not > 0.5): error 1/4.
    # D2 on G1 samples: 0.9 and 0.55 pass: error 2/4.
    assert r.sample_error_1 == pytest.approx(0.25) and r.sample_error_2 == pytest.approx(0.5)
    assert r.r_sample == pytest.approx(0.5)
    # With a test set both judge equally, the battle is valid and model 1 wins (r_sample < 1).
    easy_test = images([0.9, 0.8, 0.7, 0.35, 0.3])
    r = gam.gam_battle(d1, samples1, d2, samples2, easy_test)
    assert r.test_error_1 == pytest.approx(0.4) and r.test_error_2 == pytest.approx(0.4)
    assert r.r_test == 1.0 and r.valid and r.winner == "model 1"
    # Swapping the roles swaps the verdict.
    r = gam.gam_battle(d2, samples2, d1, samples1, easy_test)
    assert r.r_sample == pytest.approx(2.0) and r.winner == "model 2"


def test_gam_identical_models_tie():
    d = brightness_disc(0.5)
    s = images([0.9, 0.2, 0.6])
    test = images([0.7, 0.3])
    r = gam.gam_battle(d, s, d, s, test)
    assert r.r_test == 1.0 and r.r_sample == 1.0 and r.winner == "tie"


def test_gam_on_trained_modules_runs_in_batches():
    torch.manual_seed(0)
    g1, g2 = small_g(steps=1).eval(), small_g(steps=3).eval()
    d1 = gran.GRANDiscriminator(image_size=16, ndf=8).eval()
    d2 = gran.GRANDiscriminator(image_size=16, ndf=8).eval()
    with torch.no_grad():
        s1, s2 = g1(g1.sample_z(7)), g2(g2.sample_z(7))
    test = torch.rand(9, 1, 16, 16)
    full = gam.gam_battle(d1, s1, d2, s2, test, batch_size=100)
    split = gam.gam_battle(d1, s1, d2, s2, test, batch_size=2)
    assert full == split
    for v in (full.test_error_1, full.test_error_2, full.sample_error_1, full.sample_error_2):
        assert 0.0 <= v <= 1.0


def test_gam_bad_input():
    d = brightness_disc(0.5)
    s = images([0.5])
    assert_raises_naming(ValueError, "samples2", gam.gam_battle, d, s, d, torch.zeros(0, 1, 4, 4), s)
    assert_raises_naming(ValueError, "test_images", gam.gam_battle, d, s, d, s, torch.zeros(3, 4))
    assert_raises_naming(ValueError, "tolerance", gam.gam_battle, d, s, d, s, s, tolerance=-1)


def test_batch_statistics_judges_with_the_batch_and_leaves_disc_alone():
    torch.manual_seed(0)
    d = gran.GRANDiscriminator(image_size=16, ndf=8)
    x = torch.rand(6, 1, 16, 16)
    with torch.no_grad():
        d(torch.rand(6, 1, 16, 16) * 0.1)  # running averages now describe another kind of input
    d.eval()
    before = {k: v.clone() for k, v in d.state_dict().items()}
    judge = gam.batch_statistics(d)
    with torch.no_grad():
        running = d(x)
        d.train()
        expected = d(x)
        d.eval()
    d.load_state_dict(before)  # undo the running-average update of the reference forward
    got = judge(x)
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, running)
    judge(x)
    assert not d.training
    for k, v in d.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert_raises_naming(TypeError, "disc", gam.batch_statistics, lambda x: x)
