"""What the GAN papers share: DCGAN initialisation, the logit BCE, the standard GAN losses and
the DCGAN Adam settings.

Used by GAN-CLS (:mod:`~fastpapers.models.text2image`), GRAN (:mod:`~fastpapers.models.gran`)
and LAPGAN (:mod:`~fastpapers.models.lapgan`). Discriminators return logits; every loss here
takes logits (``binary_cross_entropy_with_logits`` is the numerically stable form of
−log σ(s) and −log(1 − σ(s))).

>>> import torch
>>> s = torch.tensor([0.0])
>>> round(bce(s, 1.0).item(), 4)          # log 2: D undecided
0.6931
>>> round(discriminator_loss(s, s).item(), 4)
1.3863
"""
from __future__ import annotations

from typing import Callable, Iterable, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["dcgan_init_", "bce", "discriminator_loss", "generator_loss", "dcgan_adam", "adversarial_step"]


def dcgan_init_(module: nn.Module) -> nn.Module:
    """DCGAN initialisation (conv/linear weights N(0, 0.02), batch-norm scale N(1, 0.02))."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module


def bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Mean binary cross-entropy of ``logits`` against the constant ``target`` (1 = real)."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(target)))


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """−log D(x) − log(1 − D(G(z))), each averaged over its batch."""
    return bce(real_logits, 1.0) + bce(fake_logits, 0.0)


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss −log D(G(z)) (Goodfellow et al. 2014, Sec. 3)."""
    return bce(fake_logits, 1.0)


def dcgan_adam(params: Iterable[torch.nn.Parameter], lr: float = 2e-4) -> torch.optim.Adam:
    """Adam with β1 = 0.5, β2 = 0.999, the DCGAN setting every GAN here trains with."""
    return torch.optim.Adam(params, lr, betas=(0.5, 0.999))


def adversarial_step(disc: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
                     update: Callable[[str, torch.Tensor], object], *, d: str = "D",
                     g: str = "G") -> Tuple[torch.Tensor, torch.Tensor]:
    """One alternating GAN update (Goodfellow et al. 2014, Algorithm 1 with k = 1).

    ``disc`` maps images to logits (with any condition already bound), ``fake`` = G(z) with its
    graph. D's loss sees ``fake`` detached; ``update(d, loss_d)`` steps D, then G's loss is
    computed through the updated D and ``update(g, loss_g)`` steps G (``Trainer.step`` is such
    an ``update``). Returns (loss_d, loss_g).
    """
    loss_d = discriminator_loss(disc(real), disc(fake.detach()))
    update(d, loss_d)
    loss_g = generator_loss(disc(fake))
    update(g, loss_g)
    return loss_d, loss_g
