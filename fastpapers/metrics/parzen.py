"""Gaussian Parzen-window log-likelihood (Breuleux et al.; used by the GAN and LAPGAN papers).

The density of a generator is estimated by an isotropic Gaussian kernel of width sigma on each
of its N samples: log p(x) = logsumexp_i(-||x - s_i||^2 / (2 sigma^2)) - log N
- (D/2) log(2 pi sigma^2). sigma is chosen to maximise the mean log-likelihood of a validation
set, then the test set is scored. Computed in batches with a stable log-sum-exp, in float64.
"""
import math
from typing import Dict, Sequence

import torch


def _flat(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be (N, ...) with N > 0, got shape {tuple(x.shape)}")
    return x.reshape(x.shape[0], -1).double()


def parzen_log_likelihood(samples: torch.Tensor, x: torch.Tensor, sigma: float, *,
                          batch_size: int = 256) -> torch.Tensor:
    """(M,) log-likelihood of each row of ``x`` under the Parzen window on ``samples`` (N, ...)."""
    s, q = _flat(samples, "samples"), _flat(x, "x").to(samples.device)
    if s.shape[1] != q.shape[1]:
        raise ValueError(f"x must have the samples' dimension {s.shape[1]}, got {q.shape[1]}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    n, d = s.shape
    s_sq = (s * s).sum(1)
    const = -math.log(n) - 0.5 * d * math.log(2 * math.pi * sigma * sigma)
    out = []
    for start in range(0, q.shape[0], batch_size):
        xb = q[start:start + batch_size]
        # ||x - s||^2 through one matrix product; clamp the rounding below zero.
        d2 = ((xb * xb).sum(1, keepdim=True) + s_sq[None] - 2 * xb @ s.T).clamp(min=0)
        out.append(torch.logsumexp(-d2 / (2 * sigma * sigma), dim=1) + const)
    return torch.cat(out)


def select_sigma(samples: torch.Tensor, valid: torch.Tensor, sigmas: Sequence[float] = None, *,
                 batch_size: int = 256) -> float:
    """The sigma (from ``sigmas``, default a log grid 10^-2..10^0.5) with the best mean validation
    log-likelihood."""
    sigmas = list(sigmas) if sigmas is not None else [10 ** e for e in torch.linspace(-2, 0.5, 26).tolist()]
    if not sigmas:
        raise ValueError("sigmas must not be empty")
    scores = [parzen_log_likelihood(samples, valid, s, batch_size=batch_size).mean().item() for s in sigmas]
    return float(sigmas[max(range(len(sigmas)), key=scores.__getitem__)])


def parzen_evaluate(samples: torch.Tensor, valid: torch.Tensor, test: torch.Tensor, sigmas: Sequence[float] = None,
                    *, batch_size: int = 256) -> Dict[str, float]:
    """Choose sigma on ``valid``, score ``test``: {"log_likelihood": mean, "std_error", "sigma"}."""
    sigma = select_sigma(samples, valid, sigmas, batch_size=batch_size)
    ll = parzen_log_likelihood(samples, test, sigma, batch_size=batch_size)
    se = ll.std().item() / math.sqrt(ll.numel()) if ll.numel() > 1 else 0.0
    return {"log_likelihood": ll.mean().item(), "std_error": se, "sigma": sigma}
