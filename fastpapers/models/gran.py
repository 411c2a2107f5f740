"""Generating images with recurrent adversarial networks (GRAN, Im et al. 2016) and the GAM metric.

Components, following the paper and its reference code (jiwoongim/GRAN ``recGenI32.py``,
``battle.py``):

- :class:`GRANGenerator` — the canvas is C = σ(Σ_t ΔC_t). The noise is projected once,
  h_z = tanh(BN(Linear(z))); at step t the decoder f maps [h_z, h_{c,t−1}] to ΔC_t (linear →
  base×base feature map → deconvolutions with batch norm + ReLU, the last one linear), and the
  encoder g reads that step's output back into h_{c,t} (convolutions with batch norm →
  BN-linear → tanh), with h_{c,0} = 0. The encoder reads each step's output ΔC_t, not the
  running canvas, as in the reference code. Options: the same z at every step (the paper's
  default) or a fresh z per step; T steps configurable (T = 1 is a DCGAN with a sigmoid output).
- :class:`GRANDiscriminator` — a DCGAN-style convolutional discriminator giving a logit.
- :func:`discriminator_loss`, :func:`generator_loss` — the standard GAN loss for D and the
  paper's non-saturating loss for G (maximise log D(G(z))).
- :func:`gam_battle` — the generative adversarial metric: each model's discriminator judges
  the other model's samples and the test set. With ε the classification error rate,
  r_test = ε(D1; test) / ε(D2; test) and r_sample = ε(D1; G2 samples) / ε(D2; G1 samples).
  Model 1 wins when r_sample < 1 (its discriminator is fooled less by the opponent's samples
  than the opponent's discriminator by its own), model 2 when r_sample > 1; the verdict is
  valid only when r_test ≈ 1 (both discriminators judge real test data equally well).
  :func:`batch_statistics` evaluates a discriminator with the batch-norm statistics of the
  batch it judges, as during training and in the reference ``battle.py`` (whose batch-norm
  layers always normalise with the current batch); a module in eval mode would instead use
  running averages over the alternating real and fake training batches, a mixture that
  matches neither kind of input.

Images are in [0, 1] (the canvas is a sigmoid); the discriminator maps them to [−1, 1].
Sizes: any square size whose halvings end on a base of 4 or 7 (16, 28, 32, 64, ...).
Deviation from the reference code: Adam step sizes and batch sizes are the caller's choice
(the reference uses lr 4e-5 for D and 1e-4 for G at batch 100 on CIFAR-10/LSUN).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .text2image import dcgan_init_


def _base_and_levels(image_size: int) -> tuple[int, int]:
    """Halve image_size while it stays even and above 4: 16 -> (4, 2), 28 -> (7, 2), 32 -> (4, 3)."""
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8, got {image_size!r}")
    base, levels = image_size, 0
    while base % 2 == 0 and base > 4:
        base //= 2
        levels += 1
    if base > 7 or levels == 0:
        raise ValueError(f"image_size must halve down to a 4x4..7x7 base (e.g. 16, 28, 32, 64), got {image_size}")
    return base, levels


class GRANGenerator(nn.Module):
    """Recurrent generator.

    forward(z) with z (B, nz) — or (B, T, nz) when ``new_z_per_step`` — returns the canvas
    (B, C, S, S) in (0, 1); ``return_steps=True`` also returns the running canvases
    σ(Σ_{s≤t} ΔC_s) for t = 1..T as (B, T, C, S, S).
    """

    def __init__(self, nz: int = 100, steps: int = 3, image_size: int = 16, channels: int = 1, ngf: int = 64,
                 hz_dim: int = 100, hc_dim: int = 100, new_z_per_step: bool = False):
        super().__init__()
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        base, levels = _base_and_levels(image_size)
        self.nz, self.steps, self.image_size, self.channels = nz, steps, image_size, channels
        self.hc_dim, self.new_z_per_step = hc_dim, new_z_per_step
        self.base = base
        top = ngf * 2 ** (levels - 1)
        self.top = top
        self.noise = nn.Sequential(nn.Linear(nz, hz_dim, bias=False), nn.BatchNorm1d(hz_dim), nn.Tanh())
        # Decoder f: [h_z, h_c] -> ΔC_t.
        self.dec_fc = nn.Sequential(nn.Linear(hz_dim + hc_dim, top * base * base, bias=False),
                                    nn.BatchNorm1d(top * base * base), nn.ReLU(True))
        dec, ch = [], top
        for _ in range(levels - 1):
            dec += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        dec += [nn.ConvTranspose2d(ch, channels, 4, 2, 1)]
        self.dec = nn.Sequential(*dec)
        # Encoder g: ΔC_t -> h_c, the mirror image of f. With T = 1 no step reads it back.
        self.enc = self._encoder(channels, ngf, levels, base, hc_dim) if steps > 1 else None
        dcgan_init_(self)

    @staticmethod
    def _encoder(channels: int, ngf: int, levels: int, base: int, hc_dim: int) -> nn.Sequential:
        ch = ngf
        enc = [nn.Conv2d(channels, ch, 4, 2, 1, bias=False), nn.BatchNorm2d(ch), nn.ReLU(True)]
        for _ in range(levels - 1):
            enc += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch * 2), nn.ReLU(True)]
            ch *= 2
        enc += [nn.Flatten(), nn.Linear(ch * base * base, hc_dim, bias=False), nn.BatchNorm1d(hc_dim), nn.Tanh()]
        return nn.Sequential(*enc)

    def sample_z(self, n: int, generator: Optional[torch.Generator] = None, device=None) -> torch.Tensor:
        shape = (n, self.steps, self.nz) if self.new_z_per_step else (n, self.nz)
        z = torch.randn(shape, generator=generator)
        return z.to(device) if device is not None else z

    def deltas(self, z: torch.Tensor) -> torch.Tensor:
        """The per-step outputs ΔC_1..ΔC_T as (B, T, C, S, S)."""
        if self.new_z_per_step:
            if z.dim() != 3 or z.shape[1:] != (self.steps, self.nz):
                raise ValueError(f"z must be (B, {self.steps}, {self.nz}) with new_z_per_step, got {tuple(z.shape)}")
            b = z.shape[0]
            hz_steps = self.noise(z.reshape(b * self.steps, self.nz)).reshape(b, self.steps, -1)
        else:
            if z.dim() != 2 or z.shape[1] != self.nz:
                raise ValueError(f"z must be (B, {self.nz}), got shape {tuple(z.shape)}")
            b = z.shape[0]
            hz_steps = self.noise(z)[:, None, :].expand(-1, self.steps, -1)
        hc = z.new_zeros(b, self.hc_dim)
        out = []
        for t in range(self.steps):
            h = self.dec_fc(torch.cat([hz_steps[:, t], hc], 1)).view(b, self.top, self.base, self.base)
            delta = self.dec(h)
            out.append(delta)
            if t + 1 < self.steps:
                hc = self.enc(delta)
        return torch.stack(out, 1)

    def forward(self, z: torch.Tensor, return_steps: bool = False):
        d = self.deltas(z)
        canvas = torch.sigmoid(d.sum(1))
        if return_steps:
            return canvas, torch.sigmoid(d.cumsum(1))
        return canvas


class GRANDiscriminator(nn.Module):
    """DCGAN discriminator: images (B, C, S, S) in [0, 1] -> logits (B,)."""

    def __init__(self, image_size: int = 16, channels: int = 1, ndf: int = 64):
        super().__init__()
        base, levels = _base_and_levels(image_size)
        self.image_size, self.channels = image_size, channels
        layers, ch = [nn.Conv2d(channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)], ndf
        for _ in range(levels - 1):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch * 2),
                       nn.LeakyReLU(0.2, inplace=True)]
            ch *= 2
        layers += [nn.Conv2d(ch, 1, base, 1, 0)]
        self.net = nn.Sequential(*layers)
        dcgan_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, c = self.image_size, self.channels
        if x.dim() != 4 or x.shape[1:] != (c, s, s):
            raise ValueError(f"x must be (B, {c}, {s}, {s}), got shape {tuple(x.shape)}")
        return self.net(x * 2 - 1).flatten()


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """−log D(x) − log(1 − D(G(z))), averaged."""
    return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss −log D(G(z))."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


# --------------------------------------------------------------------------------------------
# GAM: generative adversarial metric
# --------------------------------------------------------------------------------------------

def batch_statistics(disc: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``disc`` as a judge that normalises with each call's own batch statistics.

    It runs a copy in training mode, so neither ``disc`` nor its running averages change.
    Give each call a batch of one kind (all test images, or all samples of one model), as
    D saw them in training.
    """
    if not isinstance(disc, nn.Module):
        raise TypeError(f"disc must be an nn.Module, got {type(disc).__name__}")
    judge = copy.deepcopy(disc).train()

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return judge(x)
    return run


@dataclass
class BattleResult:
    """Outcome of one GAM battle between model 1 and model 2 (error rates in [0, 1])."""
    test_error_1: float     # ε(D1; test): fraction of test images D1 calls fake
    test_error_2: float     # ε(D2; test)
    sample_error_1: float   # ε(D1; G2 samples): fraction of model 2's samples D1 calls real
    sample_error_2: float   # ε(D2; G1 samples)
    r_test: float
    r_sample: float
    valid: bool
    winner: str             # "model 1", "model 2", "tie", or "invalid"

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _ratio(a: float, b: float) -> float:
    # 0/0: both discriminators are perfect, which is a draw, not a division error.
    if b == 0:
        return 1.0 if a == 0 else math.inf
    return a / b


@torch.no_grad()
def _error_rate(disc: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, is_real: bool,
                batch_size: int) -> float:
    wrong = 0
    for i in range(0, images.shape[0], batch_size):
        logits = disc(images[i:i + batch_size])
        said_real = logits > 0
        wrong += int((~said_real if is_real else said_real).sum())
    return wrong / images.shape[0]


def gam_battle(disc1: Callable[[torch.Tensor], torch.Tensor], samples1: torch.Tensor,
               disc2: Callable[[torch.Tensor], torch.Tensor], samples2: torch.Tensor,
               test_images: torch.Tensor, *, tolerance: float = 0.2, batch_size: int = 500) -> BattleResult:
    """One GAM battle (Im et al. 2016, Sec. 4).

    disc1, disc2: images -> logits (a positive logit means "real"): eval-mode modules, or
    ``batch_statistics(d)`` to normalise with the judged set's own statistics as the reference
    battle does (what ``fastpapers gran battle`` uses by default). samples1, samples2: images drawn from G1 and G2. test_images: held-out real
    data. r_test = ε(D1; test)/ε(D2; test) and r_sample = ε(D1; samples2)/ε(D2; samples1).
    The battle is valid when |r_test − 1| ≤ tolerance; then model 1 wins if r_sample < 1,
    model 2 if r_sample > 1. A ratio 0/0 counts as 1 and x/0 as infinity.
    """
    for name, t in (("samples1", samples1), ("samples2", samples2), ("test_images", test_images)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4 or t.shape[0] == 0:
            raise ValueError(f"{name} must be a non-empty (N, C, H, W) tensor, got "
                             f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    te1 = _error_rate(disc1, test_images, True, batch_size)
    te2 = _error_rate(disc2, test_images, True, batch_size)
    se1 = _error_rate(disc1, samples2, False, batch_size)
    se2 = _error_rate(disc2, samples1, False, batch_size)
    r_test, r_sample = _ratio(te1, te2), _ratio(se1, se2)
    valid = abs(r_test - 1.0) <= tolerance
    if not valid:
        winner = "invalid"
    elif r_sample < 1:
        winner = "model 1"
    elif r_sample > 1:
        winner = "model 2"
    else:
        winner = "tie"
    return BattleResult(te1, te2, se1, se2, r_test, r_sample, valid, winner)
