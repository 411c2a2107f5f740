import h5py
import numpy as np
import pytest
import torch

from fastpapers import cli
from fastpapers.models import neural_style as ns
from fastpapers.reference import gram as ref


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def net():
    return ns.load_vgg(pooling="avg")


def test_hed_weights_are_converted_from_keras_hwio():
    net = ns.load_vgg(pooling="max")
    assert len(net.convs) == 13 and not any(p.requires_grad for p in net.parameters())
    with h5py.File(ns.hed_weights_path(), "r") as f:
        k = f["block3/layers/conv2d_1/vars/0"][()]  # HWIO, block3_conv2
        bias = f["block3/layers/conv2d_1/vars/1"][()]
    x = np.random.default_rng(0).standard_normal((1, 256, 6, 5)).astype(np.float32)
    # Keras 'same' 3x3 conv written out: y[o, i, j] = sum_{dh, dw, c} k[dh, dw, c, o] x[c, i+dh-1, j+dw-1].
    xp = np.pad(x[0], ((0, 0), (1, 1), (1, 1)))
    want = np.zeros((256, 6, 5), np.float64)
    for dh in range(3):
        for dw in range(3):
            want += np.einsum("co,chw->ohw", k[dh, dw].astype(np.float64), xp[:, dh:dh + 6, dw:dw + 5])
    want += bias[:, None, None]
    got = net.convs[5](torch.from_numpy(x))[0]
    torch.testing.assert_close(got.double(), torch.from_numpy(want), rtol=1e-4, atol=1e-3)


def test_caffe_preprocessing_round_trip(net):
    img = torch.rand(1, 3, 8, 9)
    x = net.preprocess(img)
    # BGR, 0-255, HED's mean subtracted.
    torch.testing.assert_close(x[0, 0], img[0, 2] * 255 - ns.HED_BGR_MEAN[0])
    torch.testing.assert_close(net.deprocess(x), img, rtol=1e-5, atol=1e-5)


def test_torchvision_vgg19_state_dict(tmp_path):
    from torchvision.models.vgg import cfgs, make_layers
    torch.manual_seed(0)
    features = make_layers(cfgs["E"])
    path = tmp_path / "vgg19.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    net = ns.load_vgg(str(path), pooling="max")
    assert net.arch == "vgg19" and net.preprocess_mode == "imagenet"
    x = torch.randn(1, 3, 32, 32)
    got = net(x, ["relu4_2", "relu5_1"])
    with torch.no_grad():
        torch.testing.assert_close(got["relu5_1"], features[:30](x))
        torch.testing.assert_close(got["relu4_2"], features[:23](x))
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, bad)
    with pytest.raises(ValueError, match="weights"):
        ns.load_vgg(str(bad))


def test_style_transfer_quality(net):
    # Small image, white-noise init (the paper), L-BFGS.
    content = ns.load_image("skimage:astronaut", 48)
    style = ns.load_image("skimage:brick", 48)
    cfg = ns.StyleConfig(size=48, iters=20, init="noise", seed=0)
    out = ns.stylize(content, [style], cfg, net=net)
    assert out.shape == content.shape and 0 <= out.min() and out.max() <= 1
    first, last = cfg.history[0]["style"], cfg.history[-1]["style"]
    assert last <= 0.1 * first, (first, last)
    assert ns.gram_distance(net, out, style) < ns.gram_distance(net, content, style)


def test_adam_content_init_lowers_the_objective(net):
    content = ns.load_image("skimage:chelsea", 32)
    style = ns.load_image("skimage:gravel", 32)
    cfg = ns.StyleConfig(size=32, iters=8, optimizer="adam", init="content", lr=5.0)
    ns.stylize(content, [style], cfg, net=net)
    assert cfg.history[-1]["total"] < cfg.history[0]["total"]
    # Starting from the content image, the content loss starts at zero.
    assert cfg.history[0]["content"] == 0.0


def test_style_blend_and_scale(net):
    content = torch.rand(3, 32, 32)
    s1, s2 = torch.rand(3, 40, 40), torch.rand(3, 24, 24)
    cfg = ns.StyleConfig(size=32)
    only1 = ns.NeuralStyle(net, content, [s1], cfg)
    mixed = ns.NeuralStyle(net, content, [s1, s2], ns.StyleConfig(size=32, style_blend=[3.0, 1.0]))
    only2 = ns.NeuralStyle(net, content, [s2], cfg)
    for a, b, m in zip(only1.style_targets, only2.style_targets, mixed.style_targets):
        torch.testing.assert_close(m, 0.75 * a + 0.25 * b)
    with pytest.raises(ValueError, match="style_blend"):
        ns.NeuralStyle(net, content, [s1, s2], ns.StyleConfig(size=32, style_blend=[1.0]))


def test_original_colors_keeps_content_chroma():
    content, result = torch.rand(3, 16, 16), torch.rand(3, 16, 16)
    out = ns.original_colors(content, result * 0.5 + 0.25)
    yiq_out, yiq_c, yiq_r = ns.rgb_to_yiq(out), ns.rgb_to_yiq(content), ns.rgb_to_yiq(result * 0.5 + 0.25)
    inside = ((ns.yiq_to_rgb(torch.cat([yiq_r[:1], yiq_c[1:]])) >= 0) &
              (ns.yiq_to_rgb(torch.cat([yiq_r[:1], yiq_c[1:]])) <= 1)).all(0)
    torch.testing.assert_close(yiq_out[1:, inside], yiq_c[1:, inside], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(yiq_out[0, inside], yiq_r[0, inside], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ns.yiq_to_rgb(ns.rgb_to_yiq(content)), content)


def test_style_targets_use_the_fused_gram(net):
    style = torch.rand(3, 32, 32)
    m = ns.NeuralStyle(net, torch.rand(3, 32, 32), [style], ns.StyleConfig(size=32))
    with torch.no_grad():
        feats = net(net.preprocess(style[None]), ns.STYLE_LAYERS)
    for n, t in zip(ns.STYLE_LAYERS, m.style_targets):
        torch.testing.assert_close(t, ref.gram_matrix(feats[n])[0], rtol=1e-4, atol=1e-4 * t.abs().max().item())


def test_cli_defaults_and_intermediate_saves(tmp_path, capsys):
    out = tmp_path / "x.png"
    rc = cli.main(["style", "--out", str(out), "--size", "24", "--iters", "2", "--save-every", "1",
                   "--original-colors", "--init", "content"])
    assert rc == 0
    assert out.exists() and (tmp_path / "x_0001.png").exists()
    from PIL import Image
    assert max(Image.open(out).size) == 24


def test_cli_bad_input(tmp_path, capsys):
    assert cli.main(["style", "--out", str(tmp_path / "y.png"), "--size", "8"]) == 2
    assert "--size" in capsys.readouterr().err
    assert cli.main(["style", "--out", str(tmp_path / "y.png"), "--content", str(tmp_path / "missing.png"),
                     "--iters", "1", "--size", "16"]) == 2
    assert "not found" in capsys.readouterr().err
    assert cli.main(["style", "--style", "skimage:brick", "skimage:grass", "--style-blend", "1",
                     "--out", str(tmp_path / "y.png")]) == 2
    assert "--style-blend" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["style", "--optimizer", "sgd"])
