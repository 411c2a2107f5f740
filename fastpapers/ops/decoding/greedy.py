"""Greedy search and ancestral sampling with transformers' semantics (see the package
docstring), and beam search's num_beams = 1 case, which is greedy search."""
import math
from typing import Callable, Optional, Sequence, Union

import torch

from ..._ext import require_ext
from .._validate import OpTypeError, OpValueError, value_checks
from ..beam_search import _check_int, _score_dtype, fused_step
from ._common import (BeamSearchOutput, GenerationOutput, _Bans, _check_common, _check_slots, _check_step_scores,
                      _device_ids, _eos_list, _is_eos, _Logits, _mask_banned, _Reorder, _StopFlag)

__all__ = ["greedy_search", "sample"]


def _decode_loop(step_fn, input_ids, state, max_length, eos, pad, min_length, ngram, choose, output_scores):
    """Shared loop of greedy search and sampling: ``choose(logits, banned, scores, t, checks)``
    -> (tokens [N], new cumulative scores [N], transformers' processed scores or None).
    Returns (sequences [N, L], scores [N], end lengths [N], per-step scores or None)."""
    dev = input_ids.device
    N, L0 = input_ids.shape
    T = max_length - L0
    checks = value_checks(input_ids)
    step_checks = checks and dev.type != "cpu"
    eos_t = _device_ids(eos, dev) if eos else None
    bans = _Bans(N, eos_t, min_length, ngram)
    seq = torch.full((N, max_length), pad, dtype=torch.long, device=dev)
    seq[:, :L0] = input_ids
    unfinished = torch.ones(N, dtype=torch.bool, device=dev)
    # The position after the row's EOS (max_length for a row that never ends).
    end_len = torch.full((N,), max_length, dtype=torch.long, device=dev)
    flag = _StopFlag(dev, T)
    logits_check = _Logits(N, dev, eos)
    step_scores = [] if output_scores else None
    scores = None
    for t in range(T):
        cur_len = L0 + t
        logits, state = logits_check(step_fn(seq.narrow(1, 0, cur_len), state), t)
        if scores is None:
            scores = torch.zeros(N, dtype=_score_dtype(logits.dtype), device=dev)
        tok, new_scores, processed = choose(logits, bans(seq, cur_len), scores, t, step_checks)
        if output_scores:
            step_scores.append(processed)
        if eos_t is None:
            seq.select(1, cur_len).copy_(tok)
            scores = new_scores
            continue
        seq.select(1, cur_len).copy_(torch.where(unfinished, tok, pad))
        scores = torch.where(unfinished, new_scores, scores)
        end_len = torch.where(unfinished, cur_len + 1, end_len)
        unfinished = unfinished & ~_is_eos(tok, eos, eos_t)
        if cur_len + 1 < max_length and flag.due(t) and flag.stop(unfinished.any()):
            break
    _check_step_scores(scores, None, checks and not step_checks)
    # The one blocking read: the output's length (transformers stops once every row ended).
    length = max_length if dev.type == "meta" else int(end_len.max())
    if output_scores:
        step_scores = tuple(step_scores[:length - L0])
    return seq[:, :length], scores, end_len, step_scores


def _greedy_choose(output_scores):
    def choose(logits, banned, scores, t, checks):
        s, i = fused_step(logits, scores, 1, 1, banned)
        _check_step_scores(s, t, checks)
        processed = _mask_banned(logits.to(scores.dtype, copy=True), banned) if output_scores else None
        return i[:, 0], s[:, 0], processed
    return choose


def _empty_generation(input_ids, output_scores):
    return GenerationOutput(input_ids.new_empty((0, input_ids.shape[1])), torch.empty(0, device=input_ids.device),
                            scores=() if output_scores else None)


def _greedy_as_beam(step_fn, input_ids, state, max_length, eos, pad, min_length, ngram, reorder_state,
                    length_penalty, output_scores):
    """beam_search with num_beams=1: generate's greedy search, in the beam-search output."""
    B, L0 = input_ids.shape
    if B == 0:
        return BeamSearchOutput(input_ids.new_empty((0, L0)), torch.empty(0, device=input_ids.device),
                                input_ids.new_empty((0, 0)), () if output_scores else None)
    state = _Reorder(reorder_state)(state, torch.arange(B, device=input_ids.device), B, "B (one per sentence)")
    seqs, scores, end_len, step_scores = _decode_loop(step_fn, input_ids, state, max_length, eos, pad, min_length,
                                                      ngram, _greedy_choose(output_scores), output_scores)
    gen_len = end_len - L0
    pos = torch.arange(seqs.shape[1] - L0, device=input_ids.device)
    rows = torch.arange(B, device=input_ids.device)[:, None]
    beam_indices = torch.where(pos < gen_len[:, None], rows, -1)
    return BeamSearchOutput(seqs, scores / gen_len.to(scores.dtype).pow(length_penalty), beam_indices, step_scores)


def greedy_search(step_fn: Callable, input_ids: torch.Tensor, state=None, *, max_length: int,
                  eos_token_id: Union[int, Sequence[int], None], pad_token_id: int, min_length: int = 0,
                  no_repeat_ngram_size: int = 0, reorder_state: Optional[Callable] = None,
                  output_scores: bool = False) -> GenerationOutput:
    """Greedy decoding with the beam-search API (transformers' ``generate(num_beams=1)``):
    the most likely token each step (lower id on ties, one fused step with K = 1); a sentence
    that emitted EOS is padded with ``pad_token_id``. ``reorder_state`` is accepted for
    symmetry; greedy never reorders. ``output_scores``: also return transformers' per-step
    ``scores`` (the logits with the bans as -inf).

    Example:
        >>> import torch
        >>> from fastpapers.ops import greedy_search
        >>> table = torch.eye(5) * 3
        >>> out = greedy_search(lambda ids, s: (table[(ids[:, -1] + 1) % 5], s), torch.tensor([[0]]),
        ...                     max_length=5, eos_token_id=3, pad_token_id=0)
        >>> out.sequences.tolist()
        [[0, 1, 2, 3]]
    """
    _check_common(step_fn, input_ids, max_length, pad_token_id, min_length, no_repeat_ngram_size, reorder_state)
    eos = _eos_list(eos_token_id)
    _check_slots(input_ids.shape[0], max_length)
    require_ext("beam_search_step")
    if input_ids.shape[0] == 0:
        return _empty_generation(input_ids, output_scores)
    seqs, scores, _, step_scores = _decode_loop(step_fn, input_ids, state, max_length, eos, pad_token_id, min_length,
                                                no_repeat_ngram_size, _greedy_choose(output_scores), output_scores)
    return GenerationOutput(sequences=seqs, sequences_scores=scores, scores=step_scores)


def sample(step_fn: Callable, input_ids: torch.Tensor, state=None, *, max_length: int,
           eos_token_id: Union[int, Sequence[int], None], pad_token_id: int, temperature: float = 1.0,
           top_k: int = 0, min_length: int = 0, no_repeat_ngram_size: int = 0, num_return_sequences: int = 1,
           reorder_state: Optional[Callable] = None, generator: Optional[torch.Generator] = None,
           output_scores: bool = False) -> GenerationOutput:
    """Ancestral sampling with the beam-search API (transformers' ``generate(do_sample=True)``):
    bans (min_length, n-grams), then logits / temperature, then keep the top_k logits (0 = all),
    then one multinomial draw from the softmax. With the same seed and ``generator=None`` the
    draws equal transformers'. R = num_return_sequences samples per prompt (rows b*R .. b*R+R-1);
    the state is expanded with ``reorder_state``. ``output_scores``: also return transformers'
    per-step ``scores`` (the processed logits the draw is made from).

    A row in which every token is banned (or whose logits are NaN/+inf) cannot be sampled: on
    the CPU, and on CUDA in checked mode, that raises :class:`OpValueError`; on CUDA without
    checks (no synchronisation) such a row draws token 0 with a -inf or NaN score.
    """
    _check_common(step_fn, input_ids, max_length, pad_token_id, min_length, no_repeat_ngram_size, reorder_state)
    _check_int("num_return_sequences", num_return_sequences, 1)
    _check_int("top_k", top_k, 0)
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool):
        raise OpTypeError(f"temperature must be a number, got {type(temperature).__name__}")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise OpValueError(f"temperature must be a positive finite number, got {temperature}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise OpTypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    eos = _eos_list(eos_token_id)
    R = num_return_sequences
    B = input_ids.shape[0]
    _check_slots(B * R, max_length)
    if B == 0:
        return _empty_generation(input_ids, output_scores)
    if R > 1:
        expand = torch.arange(B, device=input_ids.device).repeat_interleave(R)
        input_ids = input_ids.index_select(0, expand)
        state = _Reorder(reorder_state)(state, expand, B, "B (one per prompt)")

    def choose(logits, banned, scores, t, checks):
        x = logits.to(dtype=scores.dtype, copy=True)
        x = _mask_banned(x, banned)
        if temperature != 1.0:
            x = x / temperature
        if top_k:
            kth = torch.topk(x, min(top_k, x.shape[1]))[0][..., -1, None]
            x = x.masked_fill(x < kth, -math.inf)
        if checks:  # CUDA's checked mode: multinomial would fail in a device-side assertion
            _check_drawable(x, t)
        probs = torch.softmax(x, dim=-1)
        if x.device.type == "cuda" and not checks:
            # A row without a finite logit has NaN probabilities, which multinomial rejects with a
            # device-side assertion; as zeros it draws token 0.
            probs = torch.nan_to_num(probs, nan=0.0)
        try:
            tok = torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)
        except RuntimeError:
            _check_drawable(x, t)  # names the problem (CPU: multinomial raised on NaN probabilities)
            raise
        logp = torch.log_softmax(x, dim=-1).gather(1, tok[:, None])[:, 0]
        return tok, scores + logp, x if output_scores else None

    seqs, scores, _, step_scores = _decode_loop(step_fn, input_ids, state, max_length, eos, pad_token_id, min_length,
                                                no_repeat_ngram_size, choose, output_scores)
    return GenerationOutput(sequences=seqs, sequences_scores=scores, scores=step_scores)


def _check_drawable(x, t):
    best = x.amax(-1)
    if bool((best == -math.inf).any()):
        raise OpValueError(f"sample: every token of a row is banned or has a -inf logit at step {t} "
                           f"(min_length / no_repeat_ngram_size leave nothing to draw)")
    if not bool(torch.isfinite(best).all()):
        raise OpValueError(f"step_fn returned logits with NaN or +inf at step {t}")
