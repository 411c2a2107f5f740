"""Generative adversarial text-to-image synthesis (Reed et al. 2016): GAN-CLS, GAN-INT, style encoder.

Components, following the paper and its reference code (reedscot/icml2016 ``main_cls_int.lua``):

- :class:`CharCNNRNN` — the text encoder φ(t): one-hot characters, temporal convolutions with
  max-pooling, a GRU over the pooled sequence, the hidden states averaged over time, then a
  linear map to the embedding. It is trained together with :class:`ImageEncoder` through the
  symmetric joint-embedding hinge loss :func:`joint_embedding_loss` (Reed et al. 2016b,
  "Learning deep representations of fine-grained visual descriptions"); afterwards its
  embeddings are fixed and the GAN never updates it.
- :class:`Generator` — z (100-d) and φ(t) compressed by a linear layer + leaky ReLU to 128-d,
  concatenated, then a DCGAN deconvolution stack with batch norm up to 64×64 (or 32×32), tanh.
- :class:`Discriminator` — stride-2 convolutions with spatial batch norm and leaky ReLU down to
  4×4; there the compressed φ(t) (linear + batch norm + leaky ReLU) is replicated spatially and
  depth-concatenated, then a 1×1 convolution and a 4×4 convolution give the score (a logit).
- :func:`discriminator_loss` — GAN-CLS: {real, right text} → real, {real, wrong text} → fake,
  {fake, right text} → fake, the last two weighted ½ each (``cls_weight=0.5``); with
  ``cls_weight=0`` it is the plain conditional GAN loss.
- :func:`interpolate_embeddings` / :func:`generator_loss` — GAN-INT: the generator is also
  trained on β·φ(t1) + (1−β)·φ(t2) (β = 0.5), embeddings that have no real image; the paper's
  non-saturating generator loss is used throughout.
- :func:`gan_cls_step` — one D and one G update of the paper's Algorithm 1 from these pieces.
- :class:`StyleEncoder` and :func:`style_encoder_loss` — S is trained with a squared loss to
  recover z from G(z, φ(t)); :func:`style_transfer` computes x' = G(S(x), φ(t)).

Deviations from the paper, forced by the offline world (also listed in docs/papers.md):

- The paper's φ is a pretrained 1024-d char-CNN-RNN over CUB/Flowers captions and its image
  encoder is GoogLeNet. Here both encoders are small and trained in-process on the shapes
  world captions; the embedding is ``embed_dim`` (default 128) wide.
- The released code's residual blocks at 4×4/8×8 are left out (the paper does not describe
  them); the paper averages the embeddings of 4 captions per image, here a caption is
  embedded on its own (the caption grammar already varies the wording).
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .gan import bce, dcgan_init_

# Index 0 is padding; every other character of a caption must be in this set.
CHARSET = " abcdefghijklmnopqrstuvwxyz0123456789-,.'"
_CHAR_INDEX = {c: i + 1 for i, c in enumerate(CHARSET)}
NUM_CHARS = len(CHARSET) + 1


def encode_chars(texts: Sequence[str], max_len: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions -> (char ids (B, L) int64 with 0 = padding, lengths (B,) int64).

    Text is lower-cased and cut to ``max_len`` characters; L is the longest kept caption.
    """
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a sequence of strings, got {type(texts).__name__}")
    if len(texts) == 0:
        raise ValueError("texts must hold at least one caption, got an empty sequence")
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    rows = []
    for k, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{k}] must be a str, got {type(t).__name__}")
        t = t.lower()[:max_len]
        if not t:
            raise ValueError(f"texts[{k}] is empty; a caption needs at least one character")
        bad = sorted({c for c in t if c not in _CHAR_INDEX})
        if bad:
            raise ValueError(f"texts[{k}] has characters {bad} outside the charset {CHARSET!r}")
        rows.append([_CHAR_INDEX[c] for c in t])
    length = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
    return ids, torch.tensor([len(r) for r in rows], dtype=torch.long)


def _num_halvings(image_size: int) -> int:
    if image_size not in (32, 64):
        raise ValueError(f"image_size must be 32 or 64, got {image_size}")
    return int(math.log2(image_size // 4))


# --------------------------------------------------------------------------------------------
# Text and image encoders (joint embedding)
# --------------------------------------------------------------------------------------------

class CharCNNRNN(nn.Module):
    """Character-level CNN-RNN text encoder φ(t).

    ids: (B, L) int64 with 0 = padding, lengths: (B,) -> (B, embed_dim).
    Two temporal conv + ReLU + max-pool(2) stages shorten the sequence by 4; a GRU runs over
    the result and its hidden states are averaged over the valid steps (Reed et al. 2016b).
    Padding never changes a caption's embedding: it is a zero input, and activations past a
    caption's end are zeroed before each pooling (ReLU outputs are >= 0, so a zero never wins
    a max) and left out of the mean.
    """

    def __init__(self, embed_dim: int = 128, conv_dim: int = 128, hidden: int = 128):
        super().__init__()
        self.embed_dim = embed_dim
        self.conv1 = nn.Conv1d(NUM_CHARS - 1, conv_dim, 3, padding=1)
        self.conv2 = nn.Conv1d(conv_dim, conv_dim, 3, padding=1)
        self.rnn = nn.GRU(conv_dim, hidden, batch_first=True)
        self.proj = nn.Linear(hidden, embed_dim)

    @staticmethod
    def _masked_pool(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        keep = torch.arange(x.shape[2], device=x.device)[None, :] < valid[:, None]
        return F.max_pool1d(F.relu(x) * keep[:, None, :].to(x.dtype), 2, ceil_mode=True)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if ids.dim() != 2:
            raise ValueError(f"ids must be (B, L), got shape {tuple(ids.shape)}")
        if lengths.shape != (ids.shape[0],):
            raise ValueError(f"lengths must be ({ids.shape[0]},), got shape {tuple(lengths.shape)}")
        lengths = lengths.to(ids.device).clamp(1, ids.shape[1])
        # Padding (id 0) is the all-zero input, the same as the convolution's own zero padding.
        x = F.one_hot(ids, NUM_CHARS)[..., 1:].to(self.proj.weight.dtype).transpose(1, 2)
        half = torch.div(lengths + 1, 2, rounding_mode="floor")
        quarter = torch.div(half + 1, 2, rounding_mode="floor")
        x = self._masked_pool(self.conv1(x), lengths)
        x = self._masked_pool(self.conv2(x), half)
        h, _ = self.rnn(x.transpose(1, 2))
        mask = (torch.arange(h.shape[1], device=h.device)[None, :] < quarter[:, None]).to(h.dtype)
        mean = (h * mask[..., None]).sum(1) / quarter[:, None].to(h.dtype)
        return self.proj(mean)

    def embed(self, texts: Sequence[str], device=None) -> torch.Tensor:
        """Embed caption strings (eval mode is the caller's choice)."""
        ids, lengths = encode_chars(texts)
        device = device or self.proj.weight.device
        return self(ids.to(device), lengths.to(device))


class ImageEncoder(nn.Module):
    """The image side of the joint embedding: stride-2 convs, global average pool, linear.

    x: (B, 3, H, W) in [-1, 1] -> (B, embed_dim).
    """

    def __init__(self, embed_dim: int = 128, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * width, 4 * width, 4, 2, 1), nn.BatchNorm2d(4 * width), nn.LeakyReLU(0.2, inplace=True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def joint_embedding_loss(img_emb: torch.Tensor, txt_emb: torch.Tensor, labels: Optional[torch.Tensor] = None,
                         margin: float = 1.0) -> torch.Tensor:
    """Symmetric structured joint-embedding hinge loss (Reed et al. 2016b).

    img_emb, txt_emb: (B, D), row i of each is a matching pair; labels: (B,) class ids (pairs
    of the same class are not negatives), or None to treat every other row as a negative.
    With compatibility S = img_emb @ txt_embᵀ, the loss is the mean over images of the mean
    over negative texts j of max(0, margin + S_ij − S_ii), plus the same with the roles of
    image and text swapped. Rows without any negative contribute nothing.
    """
    if img_emb.dim() != 2 or img_emb.shape != txt_emb.shape:
        raise ValueError(f"img_emb and txt_emb must both be (B, D) of equal shape, got "
                         f"{tuple(img_emb.shape)} and {tuple(txt_emb.shape)}")
    b = img_emb.shape[0]
    if labels is None:
        labels = torch.arange(b, device=img_emb.device)
    elif labels.shape != (b,):
        raise ValueError(f"labels must be ({b},), got shape {tuple(labels.shape)}")
    scores = img_emb @ txt_emb.t()
    diag = scores.diagonal()
    neg = (labels[:, None] != labels[None, :]).to(scores.dtype)
    count = neg.sum(1).clamp_min(1)
    img_to_txt = (F.relu(margin + scores - diag[:, None]) * neg).sum(1) / count
    txt_to_img = (F.relu(margin + scores - diag[None, :]) * neg).sum(0) / count
    return img_to_txt.mean() + txt_to_img.mean()


# --------------------------------------------------------------------------------------------
# Generator and discriminator
# --------------------------------------------------------------------------------------------

UPSAMPLE = ("deconv", "resize")


class Generator(nn.Module):
    """G(z, φ(t)): z (B, nz), phi (B, embed_dim) -> images (B, 3, S, S) in [-1, 1].

    ``upsample``: "deconv" (the paper: 4×4 stride-2 transposed convolutions) or "resize"
    (nearest-neighbour ×2 then a 3×3 convolution, Odena et al. 2016): the latter cannot make
    the checkerboard textures by which D told early samples from the flat shapes world.
    """

    def __init__(self, embed_dim: int = 128, nz: int = 100, proj_dim: int = 128, ngf: int = 64,
                 image_size: int = 64, upsample: str = "deconv"):
        super().__init__()
        n_up = _num_halvings(image_size)
        if upsample not in UPSAMPLE:
            raise ValueError(f"upsample must be one of {UPSAMPLE}, got {upsample!r}")
        self.nz, self.embed_dim, self.image_size, self.upsample = nz, embed_dim, image_size, upsample
        self.project = nn.Sequential(nn.Linear(embed_dim, proj_dim), nn.LeakyReLU(0.2, inplace=True))
        ch = ngf * 2 ** (n_up - 1)

        def up(cin, cout):  # doubles the resolution
            if upsample == "deconv":
                return [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False)]
            return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1, bias=False)]

        layers = [nn.ConvTranspose2d(nz + proj_dim, ch, 4, 1, 0, bias=False), nn.BatchNorm2d(ch), nn.ReLU(True)]
        for _ in range(n_up - 1):
            layers += up(ch, ch // 2) + [nn.BatchNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += up(ch, 3) + [nn.Tanh()]
        self.net = nn.Sequential(*layers)
        dcgan_init_(self)

    def forward(self, z: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.nz:
            raise ValueError(f"z must be (B, {self.nz}), got shape {tuple(z.shape)}")
        if phi.shape != (z.shape[0], self.embed_dim):
            raise ValueError(f"phi must be ({z.shape[0]}, {self.embed_dim}), got shape {tuple(phi.shape)}")
        h = torch.cat([z, self.project(phi)], 1)
        return self.net(h[:, :, None, None])


class Discriminator(nn.Module):
    """D(x, φ(t)): x (B, 3, S, S), phi (B, embed_dim) -> logits (B,)."""

    def __init__(self, embed_dim: int = 128, proj_dim: int = 128, ndf: int = 64, image_size: int = 64):
        super().__init__()
        n_down = _num_halvings(image_size)
        self.embed_dim, self.image_size = embed_dim, image_size
        layers = [nn.Conv2d(3, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
        ch = ndf
        for _ in range(n_down - 1):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch * 2),
                       nn.LeakyReLU(0.2, inplace=True)]
            ch *= 2
        self.features = nn.Sequential(*layers)
        self.project = nn.Sequential(nn.Linear(embed_dim, proj_dim), nn.BatchNorm1d(proj_dim),
                                     nn.LeakyReLU(0.2, inplace=True))
        self.head = nn.Sequential(
            nn.Conv2d(ch + proj_dim, ch, 1, 1, 0, bias=False), nn.BatchNorm2d(ch), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ch, 1, 4, 1, 0, bias=False))
        dcgan_init_(self)

    def forward(self, x: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        s = self.image_size
        if x.dim() != 4 or x.shape[1:] != (3, s, s):
            raise ValueError(f"x must be (B, 3, {s}, {s}), got shape {tuple(x.shape)}")
        if phi.shape != (x.shape[0], self.embed_dim):
            raise ValueError(f"phi must be ({x.shape[0]}, {self.embed_dim}), got shape {tuple(phi.shape)}")
        h = self.features(x)
        t = self.project(phi)[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3])
        return self.head(torch.cat([h, t], 1)).flatten()


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------

def discriminator_loss(real_right: torch.Tensor, fake_right: torch.Tensor,
                       real_wrong: Optional[torch.Tensor] = None, cls_weight: float = 0.5,
                       real_label: float = 1.0) -> torch.Tensor:
    """D's loss on logits: BCE(real/right → 1) + w·BCE(real/wrong → 0) + (1 − w)·BCE(fake/right → 0).

    ``cls_weight`` w = 0.5 is GAN-CLS (the paper's ½ weights); w = 0 is the plain conditional
    GAN (then ``real_wrong`` is not needed). ``real_label`` < 1 is one-sided label smoothing
    (Salimans et al. 2016): the target of {real, right text} only; the paper uses 1.
    """
    if not 0.0 <= cls_weight <= 1.0:
        raise ValueError(f"cls_weight must be in [0, 1], got {cls_weight}")
    if not 0.5 < real_label <= 1.0:
        raise ValueError(f"real_label must be in (0.5, 1], got {real_label}")
    loss = bce(real_right, real_label) + (1.0 - cls_weight) * bce(fake_right, 0.0)
    if cls_weight > 0:
        if real_wrong is None:
            raise ValueError("real_wrong logits are required when cls_weight > 0 (GAN-CLS)")
        loss = loss + cls_weight * bce(real_wrong, 0.0)
    return loss


def instance_noise_sigma(step: int, sigma: float, anneal_steps: int = 0) -> float:
    """Standard deviation of the instance noise at GAN step ``step`` (0-based).

    Instance noise (Sønderby et al. 2016; Arjovsky & Bottou 2017) adds N(0, σ²) to every image
    the discriminator sees, real or generated, so that the two distributions overlap and G's
    gradient stays informative when the data lie on a thin set (the shapes world's flat
    colours). σ falls linearly from ``sigma`` to 0 over ``anneal_steps`` (0: constant).
    Not in the paper (σ = 0 there).
    """
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    if anneal_steps < 0:
        raise ValueError(f"anneal_steps must be >= 0, got {anneal_steps}")
    if anneal_steps == 0:
        return float(sigma)
    return float(sigma) * max(0.0, 1.0 - step / anneal_steps)


def generator_loss(fake_logits: torch.Tensor, interp_logits: Optional[torch.Tensor] = None,
                   interp_weight: float = 1.0) -> torch.Tensor:
    """Non-saturating G loss: BCE(D(G(z, φ), φ) → 1) [+ w·BCE(D(G(z', φ_int), φ_int) → 1), GAN-INT]."""
    loss = bce(fake_logits, 1.0)
    if interp_logits is not None:
        loss = loss + interp_weight * bce(interp_logits, 1.0)
    return loss


def interpolate_embeddings(phi: torch.Tensor, partner: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    """GAN-INT: β·φ(t1) + (1 − β)·φ(t2), row by row."""
    if phi.shape != partner.shape:
        raise ValueError(f"phi and partner must have equal shapes, got {tuple(phi.shape)} and {tuple(partner.shape)}")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    return beta * phi + (1.0 - beta) * partner


def mismatched_indices(labels: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """For each row i, a random row j with labels[j] != labels[i] (the "wrong text" of GAN-CLS).

    labels: (B,) int64 class ids. Rows whose class fills the whole batch get the next row
    (there is no other class to draw from).
    """
    if labels.dim() != 1:
        raise ValueError(f"labels must be (B,), got shape {tuple(labels.shape)}")
    b = labels.shape[0]
    other = labels[:, None] != labels[None, :]
    # A random score per candidate; non-candidates are pushed below every candidate.
    r = torch.rand(b, b, generator=generator).to(labels.device)
    r = torch.where(other, r, r - 2.0)
    pick = r.argmax(1)
    fallback = (torch.arange(b, device=labels.device) + 1) % max(b, 1)
    return torch.where(other.any(1), pick, fallback)


def near_mismatched_indices(attributes: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Hard "wrong texts" for GAN-CLS: for each row i, a row j whose attributes differ from row
    i's in exactly one attribute, that attribute drawn uniformly per row.

    attributes: (B, A) int64, one column per attribute (e.g. colour, shape, size). Where no row
    differs in just the drawn attribute, any row differing in exactly one attribute is taken;
    failing that, any row with other attributes; failing that (every row alike), the next row.
    With random wrong texts most pairs differ in colour, which D reads at a glance; here a
    third of them differ only in shape, so D must check the shape against the text.
    """
    if attributes.dim() != 2 or attributes.shape[1] < 1:
        raise ValueError(f"attributes must be (B, A) with A >= 1, got shape {tuple(attributes.shape)}")
    b, a = attributes.shape
    dev = attributes.device
    diff = attributes[:, None, :] != attributes[None, :, :]                     # (B, B, A)
    one = diff.sum(-1) == 1
    which = torch.randint(a, (b,), generator=generator).to(dev)
    wanted = one & diff.gather(2, which[:, None, None].expand(b, b, 1))[..., 0]
    tier = wanted.long() + one.long() + diff.any(-1).long()                      # 3, 2, 1 or 0
    score = tier.to(torch.float32) + torch.rand(b, b, generator=generator).to(dev)
    pick = score.argmax(1)
    fallback = (torch.arange(b, device=dev) + 1) % max(b, 1)
    return torch.where(diff.any(-1).any(1), pick, fallback)


# --------------------------------------------------------------------------------------------
# The training step: Algorithm 1 of the paper (GAN-CLS, with GAN-INT)
# --------------------------------------------------------------------------------------------

WRONG_TEXT = ("random", "near")


def gan_cls_step(G: nn.Module, D: nn.Module, x: torch.Tensor, phi: torch.Tensor,
                 update: Callable[[str, torch.Tensor], object], *, labels: torch.Tensor,
                 attributes: Optional[torch.Tensor] = None, cls_weight: float = 0.5, interp: bool = True,
                 wrong_text: str = "random", beta: float = 0.5, interp_weight: float = 1.0,
                 real_label: float = 1.0, noise_sigma: float = 0.0) -> dict:
    """One D update and one G update of GAN-CLS / GAN-INT (Reed et al. 2016, Algorithm 1).

    x: real images (B, 3, S, S); phi = φ(t): the fixed embeddings of their captions (B, E);
    ``update(name, loss)`` steps optimiser "D" or "G" (``Trainer.step``). In the paper's words:

    1. x̂ ← G(z, h) for z ~ N(0, I), h = φ(t);
    2. s_w ← D(x, ĥ), real image with a wrong text ĥ (GAN-CLS, ``cls_weight`` > 0): the
       caption of another class (``labels``; ``wrong_text="random"``, the paper) or one that
       differs in exactly one attribute (``attributes`` (B, A); ``"near"``);
       s_r ← D(x, h), real image with the right text; s_f ← D(x̂, h), fake image, right text;
    3. L_D = log s_r + w·log(1 − s_w) + (1 − w)·log(1 − s_f) (:func:`discriminator_loss`); D ← D − α∇L_D;
    4. GAN-INT (``interp``): half a batch more of h_int = β·h1 + (1 − β)·h2 with no real image,
       G trained to make D accept G(z', h_int) too (:func:`interpolate_embeddings`);
    5. L_G = log s_f (non-saturating) [+ ``interp_weight``·log D(G(z', h_int), h_int)]; G ← G − α∇L_G.

    ``real_label`` < 1 smooths s_r's target; ``noise_sigma`` > 0 adds instance noise to every
    image D sees (:func:`instance_noise_sigma`); the paper uses 1 and 0. Returns the losses.
    """
    if wrong_text not in WRONG_TEXT:
        raise ValueError(f"wrong_text must be one of {WRONG_TEXT}, got {wrong_text!r}")
    b = x.shape[0]

    def noisy(images):  # what D sees: the image plus instance noise (none by default)
        return images + noise_sigma * torch.randn_like(images) if noise_sigma > 0 else images

    z = torch.randn(b, G.nz, device=x.device)
    fake = G(z, phi)
    s_w = None
    if cls_weight > 0:
        if wrong_text == "near":
            if attributes is None:
                raise ValueError('attributes are required for wrong_text="near"')
            wrong = near_mismatched_indices(attributes.cpu())
        else:
            wrong = mismatched_indices(labels.cpu())
        s_w = D(noisy(x), phi[wrong.to(x.device)])
    loss_d = discriminator_loss(D(noisy(x), phi), D(noisy(fake.detach()), phi), s_w, cls_weight, real_label)
    update("D", loss_d)
    s_int = None
    if interp:
        h = max(1, b // 2)
        partner = phi[torch.randperm(b, device=x.device)[:h]]
        phi_int = interpolate_embeddings(phi[:h], partner, beta)
        s_int = D(noisy(G(torch.randn(h, G.nz, device=x.device), phi_int)), phi_int)
    loss_g = generator_loss(D(noisy(fake), phi), s_int, interp_weight)
    update("G", loss_g)
    return {"loss_d": loss_d, "loss_g": loss_g}


# --------------------------------------------------------------------------------------------
# Style encoder
# --------------------------------------------------------------------------------------------

class StyleEncoder(nn.Module):
    """S(x): images (B, 3, S, S) in [-1, 1] -> z estimates (B, nz)."""

    def __init__(self, nz: int = 100, ndf: int = 64, image_size: int = 64):
        super().__init__()
        n_down = _num_halvings(image_size)
        self.nz, self.image_size = nz, image_size
        layers = [nn.Conv2d(3, ndf, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        ch = ndf
        for _ in range(n_down - 1):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch * 2),
                       nn.LeakyReLU(0.2, inplace=True)]
            ch *= 2
        layers += [nn.Flatten(), nn.Linear(ch * 16, nz)]
        self.net = nn.Sequential(*layers)
        dcgan_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.image_size
        if x.dim() != 4 or x.shape[1:] != (3, s, s):
            raise ValueError(f"x must be (B, 3, {s}, {s}), got shape {tuple(x.shape)}")
        return self.net(x)


def style_encoder_loss(style: nn.Module, generator: nn.Module, z: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """‖z − S(G(z, φ))‖² averaged over the batch (G is held fixed: no gradient reaches it)."""
    with torch.no_grad():
        x = generator(z, phi)
    return (style(x) - z).pow(2).sum(1).mean()


def style_transfer(generator: nn.Module, style: nn.Module, x: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """x' = G(S(x), φ(t)): the query images' style rendered with new captions."""
    return generator(style(x), phi)
