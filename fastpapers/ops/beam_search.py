"""The fused beam-search step (contract 5 in DESIGN.md): ``fastpapers::beam_search_step``.

One pass over the logits computes log_softmax over the vocabulary + the running beam score +
the top-C continuations of each sentence: C++ on CPU (csrc/ops/cpu/beam_search_kernel.cpp),
Triton on CUDA (fastpapers/kernels/beam_search.py). The decoders built on it (beam search,
greedy search, sampling) are in :mod:`fastpapers.ops.decoding`.

Bad values. A sentence any of whose rows holds a NaN or +inf logit, has no finite logit at
all, or has a NaN or +inf beam score gets NaN for all its C scores (its indices stay in
[0, K*V), their order unspecified); -inf logits and -inf beam scores are legitimate (masked
tokens, dead beams) and rank last. The kernels detect this in the pass they make anyway. On
the CPU the op then raises :class:`OpValueError`; on CUDA it does so only in checked mode
(:func:`fastpapers.ops.set_checks`), otherwise it returns the NaN scores without a host
synchronisation.
"""
from typing import Optional

import torch

from .._ext import require_ext
from ._registry import when_built
from ._validate import OpTypeError, OpValueError, check_float, check_tensor, value_checks

__all__ = ["beam_search_step"]


def _score_dtype(logits_dtype):
    return torch.float64 if logits_dtype == torch.float64 else torch.float32


def _check_int(name, value, lo):
    if not isinstance(value, int) or isinstance(value, bool):
        raise OpTypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < lo:
        raise OpValueError(f"{name} must be >= {lo}, got {value}")


def beam_search_step(logits: torch.Tensor, beam_scores: torch.Tensor, num_beams: int, num_candidates: int,
                     banned: Optional[torch.Tensor] = None):
    """One fused beam-search step.

    Args:
        logits: (B*K, V) next-token logits of the running beams (float32/float64; on CUDA also
            float16/bfloat16).
        beam_scores: (B*K,) running log-probabilities; float64 when ``logits`` is float64,
            float32 otherwise.
        num_beams: K. num_candidates: C, in [1, K*V].
        banned: optional (B*K, M) int64 tokens ranked as -inf (-1 = unused slot, otherwise in
            [0, V)); they still count in the softmax normaliser.

    Returns:
        (scores, indices), each (B, C): ``log_softmax(logits) + beam_scores`` of the best C of
        the K*V continuations of each sentence, best first, and their flat indices
        ``beam * V + token``; equal scores are ordered by lower flat index. NaN/+inf inputs:
        see the module docstring.

    Example:
        >>> import torch, fastpapers.ops as ops
        >>> logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0]])
        >>> s, i = ops.beam_search_step(logits, torch.tensor([0.0, -10.0]), 2, 2)
        >>> i.tolist()
        [[1, 2]]
    """
    check_tensor("logits", logits, ndim=2)
    check_float("logits", logits)
    check_tensor("beam_scores", beam_scores, ndim=1, dtypes=(_score_dtype(logits.dtype),))
    if beam_scores.device != logits.device:
        raise OpValueError(f"beam_scores must be on the device of logits ({logits.device}), got {beam_scores.device}")
    _check_int("num_beams", num_beams, 1)
    _check_int("num_candidates", num_candidates, 1)
    rows, vocab = logits.shape
    if rows % num_beams:
        raise OpValueError(f"logits must have B*K rows with K = num_beams = {num_beams}, got {rows} rows")
    if beam_scores.shape[0] != rows:
        raise OpValueError(f"beam_scores must have shape [{rows}] (one score per logits row), "
                           f"got {tuple(beam_scores.shape)}")
    if num_candidates > num_beams * vocab:
        raise OpValueError(f"num_candidates must be at most num_beams * V = {num_beams * vocab}, "
                           f"got {num_candidates}")
    if banned is not None:
        check_tensor("banned", banned, ndim=2, dtypes=(torch.int64,))
        if banned.shape[0] != rows or banned.device != logits.device:
            raise OpValueError(f"banned must be an int64 tensor [{rows}, M] on {logits.device}, "
                               f"got shape {tuple(banned.shape)} on {banned.device}")
        if banned.numel() and value_checks(banned) and bool(((banned < -1) | (banned >= vocab)).any()):
            raise OpValueError(f"banned must hold token ids in [0, {vocab}) or -1 for an unused slot")
    require_ext("beam_search_step")
    scores, indices = fused_step(logits, beam_scores, num_beams, num_candidates, banned)
    if scores.numel() and value_checks(scores) and bool(torch.isnan(scores).any()):
        raise OpValueError("logits and beam_scores must not hold NaN or +inf, and every logits row needs a "
                           "finite value (-inf marks a masked token)")
    return scores, indices


_launch = None


def fused_step(logits, beam_scores, num_beams: int, num_candidates: int, banned=None):
    """The op after its checks (the decoders, which build every input themselves, call it
    directly). Eager CUDA float16/bfloat16/float32 logits go straight to the Triton launcher:
    the dispatcher's round trip to a Python-registered kernel costs tens of microseconds per
    call; under torch.compile and on other devices it is the registered op."""
    global _launch
    if logits.is_cuda and logits.dtype != torch.float64 and not torch.compiler.is_compiling():
        if _launch is None:
            from ..kernels.beam_search import beam_search_step as launch
            _launch = launch
        return _launch(logits, beam_scores, num_beams, num_candidates, banned)
    return torch.ops.fastpapers.beam_search_step(logits, beam_scores, num_beams, num_candidates, banned)


def _register():
    def _fake(logits, beam_scores, num_beams, num_candidates, banned=None):
        b = logits.shape[0] // num_beams
        return (logits.new_empty((b, num_candidates), dtype=_score_dtype(logits.dtype)),
                logits.new_empty((b, num_candidates), dtype=torch.long))

    torch.library.register_fake("fastpapers::beam_search_step")(_fake)

    def _cuda(logits, beam_scores, num_beams, num_candidates, banned=None):
        if logits.dtype == torch.float64:
            # The Triton kernels compute in float32; float64 keeps its precision through the
            # composed reference (log_softmax + stable sort), same semantics.
            from ..reference.beam_search import beam_search_step as ref_step
            return ref_step(logits, beam_scores, num_beams, num_candidates, banned)
        from ..kernels.beam_search import beam_search_step as launch
        return launch(logits, beam_scores, num_beams, num_candidates, banned)

    torch.library.impl("fastpapers::beam_search_step", "CUDA")(_cuda)


when_built(_register)
