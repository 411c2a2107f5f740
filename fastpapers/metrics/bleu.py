"""BLEU at corpus and sentence level, on token lists and on batched token tensors.

Semantics are sacrebleu's ``compute_bleu`` (sacrebleu 2.x) applied to pre-tokenised text
(``tokenize='none'``): modified n-gram precisions clipped by the maximum count over the
references, brevity penalty against the closest reference length (ties: the shorter), the
smoothing methods ``none``, ``floor`` (value 0.1), ``add-k`` (value 1: Lin & Och's +1 for
n > 1, the MIXER training reward) and ``exp`` (NIST), and ``effective_order`` (ignore the
orders a short sentence has no n-grams of). Scores are in [0, 1], not sacrebleu's 0-100.
BLEU-n (n = 1..4) is the geometric mean of the precisions of orders 1..n times the brevity
penalty, which is also what pycocoevalcap's ``Bleu`` reports (up to its 1e-15 / 1e-9 guards).
"""
import math
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

SMOOTH_DEFAULTS = {"none": None, "floor": 0.1, "add-k": 1.0, "exp": None}
Tokens = Union[str, Sequence]


def _tokens(x: Tokens) -> List:
    return x.split() if isinstance(x, str) else list(x)


def _ngrams(tokens: List, n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _closest(hyp_len: int, ref_lens: Sequence[int]) -> int:
    return min(ref_lens, key=lambda r: (abs(hyp_len - r), r))


def sentence_stats(hyp: Tokens, refs: Sequence[Tokens], max_n: int = 4) -> Tuple[List[int], List[int], int, int]:
    """(correct[n], total[n], hyp length, closest reference length) for one sentence."""
    h = _tokens(hyp)
    rs = [_tokens(r) for r in refs]
    if not rs:
        raise ValueError("refs must hold at least one reference")
    correct, total = [], []
    for n in range(1, max_n + 1):
        hc = _ngrams(h, n)
        best: Counter = Counter()
        for r in rs:
            for g, c in _ngrams(r, n).items():
                if c > best[g]:
                    best[g] = c
        correct.append(sum(min(c, best[g]) for g, c in hc.items()))
        total.append(max(0, len(h) - n + 1))
    return correct, total, len(h), _closest(len(h), [len(r) for r in rs])


def _check_smooth(smooth: str, value):
    if smooth not in SMOOTH_DEFAULTS:
        raise ValueError(f"smooth must be one of {sorted(SMOOTH_DEFAULTS)}, got {smooth!r}")
    return SMOOTH_DEFAULTS[smooth] if value is None else value


def score_from_stats(correct: Sequence[float], total: Sequence[float], sys_len: float, ref_len: float, *,
                     smooth: str = "none", smooth_value: Optional[float] = None,
                     effective_order: bool = False) -> float:
    """BLEU from sufficient statistics (orders 1..len(correct)); sacrebleu's rules, in [0, 1]."""
    value = _check_smooth(smooth, smooth_value)
    correct, total = list(map(float, correct)), list(map(float, total))
    max_n = len(correct)
    bp = 1.0
    if sys_len < ref_len:
        bp = math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0
    if not any(correct):
        return 0.0
    logs = [0.0] * max_n
    zero = [True] * max_n
    mteval = 1.0
    eff = max_n
    for n in range(1, max_n + 1):
        if smooth == "add-k" and n > 1:
            correct[n - 1] += value
            total[n - 1] += value
        if total[n - 1] == 0:
            break
        if effective_order:
            eff = n
        p = 0.0
        if correct[n - 1] == 0:
            if smooth == "exp":
                mteval *= 2
                p = 1.0 / (mteval * total[n - 1])
            elif smooth == "floor":
                p = value / total[n - 1]
        else:
            p = correct[n - 1] / total[n - 1]
        if p > 0:
            logs[n - 1], zero[n - 1] = math.log(p), False
    if any(zero[:eff]):
        return 0.0
    return bp * math.exp(sum(logs[:eff]) / eff)


def sentence_bleu(hyp: Tokens, refs: Sequence[Tokens], *, max_n: int = 4, smooth: str = "add-k",
                  smooth_value: Optional[float] = None, effective_order: bool = True) -> float:
    """Smoothed sentence BLEU-``max_n`` of one hypothesis (str is split on spaces, or a token list)."""
    c, t, h, r = sentence_stats(hyp, refs, max_n)
    return score_from_stats(c, t, h, r, smooth=smooth, smooth_value=smooth_value, effective_order=effective_order)


def corpus_bleu(hyps: Sequence[Tokens], refs: Sequence[Sequence[Tokens]], *, max_n: int = 4,
                smooth: str = "none") -> Dict[str, float]:
    """Corpus BLEU-1..``max_n``: ``refs[i]`` holds the references of ``hyps[i]``.
    Returns ``{"bleu_1": ..., "bleu_{max_n}": ...}`` with the statistics summed over the corpus."""
    if len(hyps) != len(refs):
        raise ValueError(f"refs must hold one list of references per hypothesis: {len(hyps)} hyps, "
                         f"{len(refs)} refs")
    C, T, H, R = [0] * max_n, [0] * max_n, 0, 0
    for hyp, rs in zip(hyps, refs):
        c, t, h, r = sentence_stats(hyp, rs, max_n)
        C = [a + b for a, b in zip(C, c)]
        T = [a + b for a, b in zip(T, t)]
        H, R = H + h, R + r
    return {f"bleu_{n}": score_from_stats(C[:n], T[:n], H, R, smooth=smooth) for n in range(1, max_n + 1)}


def _lengths(x: torch.Tensor, pad_id: int, eos_id: Optional[int]) -> torch.Tensor:
    stop = x == pad_id
    if eos_id is not None:
        stop = stop | (x == eos_id)
    pos = torch.arange(x.shape[-1], device=x.device).expand_as(x)
    return torch.where(stop, pos, torch.full_like(pos, x.shape[-1])).amin(-1)


def batch_sentence_bleu(hyps: torch.Tensor, refs: torch.Tensor, *, pad_id: int = 0, eos_id: Optional[int] = None,
                        max_n: int = 4, smooth: str = "add-k", smooth_value: Optional[float] = None,
                        effective_order: bool = True) -> torch.Tensor:
    """Sentence BLEU of every row of ``hyps`` (B, Lh) against ``refs`` (B, Lr) or (B, R, Lr),
    computed with tensor ops on the tensors' device (a reward per sample for REINFORCE).

    A sentence ends at its first ``pad_id`` (or ``eos_id`` when given; neither is counted).
    Equals :func:`sentence_bleu` on the token lists. Returns (B,) float32 in [0, 1].
    """
    if hyps.dim() != 2:
        raise ValueError(f"hyps must be (B, L), got shape {tuple(hyps.shape)}")
    if refs.dim() == 2:
        refs = refs[:, None]
    if refs.dim() != 3 or refs.shape[0] != hyps.shape[0]:
        raise ValueError(f"refs must be (B, Lr) or (B, R, Lr) with B = {hyps.shape[0]}, got shape {tuple(refs.shape)}")
    if hyps.dtype.is_floating_point or refs.dtype.is_floating_point:
        raise TypeError(f"hyps and refs must be integer token ids, got {hyps.dtype} and {refs.dtype}")
    value = _check_smooth(smooth, smooth_value)
    dev = hyps.device
    N = max_n
    hl = _lengths(hyps, pad_id, eos_id)                                   # (B,)
    rl = _lengths(refs, pad_id, eos_id)                                   # (B, R)
    Lh, Lr = hyps.shape[1], refs.shape[2]
    # n-gram equality without hashing: n-grams at (i, j) match when the (n-1)-grams at (i, j)
    # match and the tokens at (i+n-1, j+n-1) do. Shifting the unigram equality matrix builds
    # every order at full size; positions whose n-gram runs past the sentence are masked.
    eq_hh = hyps[:, :, None] == hyps[:, None, :]                          # (B, Lh, Lh)
    eq_hr = hyps[:, None, :, None] == refs[:, :, None, :]                 # (B, R, Lh, Lr)

    def orders(eq):
        out, cur = [eq], eq
        for k in range(1, N):
            shifted = torch.zeros_like(eq)
            shifted[..., :-k, :-k] = eq[..., k:, k:]
            cur = cur & shifted
            out.append(cur)
        return torch.stack(out)                                           # (N, ..., I, J)

    n_idx = torch.arange(1, N + 1, device=dev)
    vh = torch.arange(Lh, device=dev)[None, None] + n_idx[:, None, None] <= hl[None, :, None]        # (N, B, Lh)
    vr = torch.arange(Lr, device=dev)[None, None, None] + n_idx[:, None, None, None] <= rl[None, ..., None]
    c_h = (orders(eq_hh) & vh[:, :, None, :]).sum(-1)                     # (N, B, Lh): count in the hypothesis
    c_r = (orders(eq_hr) & vr[:, :, :, None, :]).sum(-1).amax(2)          # (N, B, Lh): max count in a reference
    # Each distinct n-gram g appears c_h(g) times: summing min(c_h, c_r)/c_h over its positions
    # adds min(c_h, c_r) once. Rounding removes the float residue of the division.
    frac = torch.where(vh, torch.minimum(c_h, c_r).double() / c_h.clamp(min=1).double(),
                       torch.zeros((), dtype=torch.float64, device=dev))
    correct = frac.sum(-1).round().T                                       # (B, N)
    total = (hl[:, None] - n_idx[None] + 1).clamp(min=0).double()          # (B, N)
    hlf = hl.double()
    key = (rl - hl[:, None]).abs() * (rl.max() + 1) + rl                  # closest length, ties -> shorter
    ref_len = rl.gather(1, key.argmin(1, keepdim=True))[:, 0].double()
    bp = torch.where(hlf < ref_len, torch.exp(1 - ref_len / hlf.clamp(min=1)), torch.ones_like(hlf))
    bp = torch.where((hlf < ref_len) & (hlf == 0), torch.zeros_like(bp), bp)
    any_correct = correct.sum(1) > 0
    if smooth == "add-k":
        add = torch.full((N,), float(value), dtype=torch.float64, device=dev)
        add[0] = 0
        correct, total = correct + add, total + add
    # sacrebleu stops at the first order without n-grams; ``alive`` marks the orders before it.
    alive = torch.cumprod((total > 0).to(torch.int64), 1).bool()
    p = correct / total.clamp(min=1e-300)
    if smooth == "exp":
        # NIST: the k-th order without a match gets 1 / (2^k * total).
        k = torch.cumsum((alive & (correct == 0)).double(), 1)
        p = torch.where(correct == 0, 1.0 / (torch.pow(2.0, k) * total.clamp(min=1e-300)), p)
    elif smooth == "floor":
        p = torch.where(correct == 0, value / total.clamp(min=1e-300), p)
    counted = alive if effective_order else torch.ones_like(alive)
    # Orders past the stop count as zero precision unless effective_order drops them.
    zero_seen = (counted & ((p <= 0) | ~alive)).any(1)
    log_sum = torch.where(alive & (p > 0), torch.log(p.clamp(min=1e-300)), torch.zeros_like(p)).sum(1)
    score = bp * torch.exp(log_sum / counted.sum(1).clamp(min=1))
    score = torch.where(any_correct & ~zero_seen, score, torch.zeros_like(score))
    return score.float()


def best_reference_bleu(hyps: torch.Tensor, refs: torch.Tensor, **kwargs) -> torch.Tensor:
    """Max over the R references (B, R, L) of the single-reference sentence BLEU: the MIXER proxy
    task's reward, where each reference is a different valid answer rather than a paraphrase."""
    if refs.dim() != 3:
        raise ValueError(f"refs must be (B, R, L), got shape {tuple(refs.shape)}")
    return torch.stack([batch_sentence_bleu(hyps, refs[:, r], **kwargs) for r in range(refs.shape[1])], 1).amax(1)
