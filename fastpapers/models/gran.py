"""Generating images with recurrent adversarial networks (GRAN, Im et al. 2016).

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
  paper's non-saturating loss for G (maximise log D(G(z))), from :mod:`fastpapers.models.gan`.

The GAM metric that compares two trained GRANs is :mod:`fastpapers.metrics.gam`.

Images are in [0, 1] (the canvas is a sigmoid); the discriminator maps them to [−1, 1].
Sizes: any square size whose halvings end on a base of 4 or 7 (16, 28, 32, 64, ...).
Deviation from the reference code: Adam step sizes and batch sizes are the caller's choice
(the reference uses lr 4e-5 for D and 1e-4 for G at batch 100 on CIFAR-10/LSUN).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from .gan import dcgan_init_, discriminator_loss, generator_loss

__all__ = ["GRANGenerator", "GRANDiscriminator", "discriminator_loss", "generator_loss"]


def base_and_levels(image_size: int) -> tuple[int, int]:
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
        base, levels = base_and_levels(image_size)
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
        base, levels = base_and_levels(image_size)
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
