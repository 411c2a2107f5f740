"""GAM, the generative adversarial metric (Im et al. 2016, Sec. 4): two GANs judge each other.

Each model's discriminator judges the other model's samples and a held-out test set. With ε
the classification error rate, r_test = ε(D1; test) / ε(D2; test) and
r_sample = ε(D1; G2 samples) / ε(D2; G1 samples). Model 1 wins when r_sample < 1 (its
discriminator is fooled less by the opponent's samples than the opponent's discriminator by
its own), model 2 when r_sample > 1; the verdict is valid only when r_test ≈ 1 (both
discriminators judge real test data equally well).

:func:`batch_statistics` evaluates a discriminator with the batch-norm statistics of the batch
it judges, as during training and in the reference ``battle.py`` (whose batch-norm layers
always normalise with the current batch); a module in eval mode would instead use running
averages over the alternating real and fake training batches, a mixture that matches neither
kind of input.

>>> import torch
>>> says_real = lambda x: x.flatten(1).mean(1) - 0.5       # "real" when the mean is above 1/2
>>> test = torch.full((4, 1, 2, 2), 0.9)
>>> r = gam_battle(says_real, torch.full((4, 1, 2, 2), 0.2), says_real, torch.full((4, 1, 2, 2), 0.8), test)
>>> r.r_test, r.winner                                        # D1 is fooled by G2's samples, D2 is not
(1.0, 'model 2')
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

__all__ = ["BattleResult", "batch_statistics", "gam_battle"]

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
    battle does (what ``fastpapers gran battle`` uses by default). samples1, samples2: images
    drawn from G1 and G2. test_images: held-out real data. r_test = ε(D1; test)/ε(D2; test) and
    r_sample = ε(D1; samples2)/ε(D2; samples1).
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
