"""Pieces shared by the decoders: output classes, argument and step_fn checks, the stop flag,
the bans (min_length, n-grams), state reordering."""
import math
from collections import deque
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch.utils import _pytree as pytree

from .._validate import OpTypeError, OpValueError, check_tensor
from ..beam_search import _check_int

# Steps between two reads of the stop flag on CUDA. Reading it costs no wait (the copy is
# asynchronous) but one event and one pinned copy; running past the stop costs up to
# 2 * CHECK_EVERY extra steps of step_fn.
CHECK_EVERY = 8
# Bound on rows * max_length: the token buffers are int64, two of [rows, max_length] plus the
# [steps, rows] history, so 2**30 slots is 24 GiB. Beyond it the allocator would fail with a
# message that does not say why.
MAX_TOKEN_SLOTS = 1 << 30


@dataclass
class BeamSearchOutput:
    """``sequences`` [B*R, L] (prompt included, padded with pad_token_id), ``sequences_scores``
    [B*R] (length-penalised log-probabilities, best first within a sentence), ``beam_indices``
    [B*R, L - L0] (flat index b*K + beam of the running beam each token extended; -1 padded),
    ``scores``: with ``output_scores=True``, a tuple with one [B*K, V] tensor per step run
    (transformers' ``scores``), else None."""
    sequences: torch.Tensor
    sequences_scores: torch.Tensor
    beam_indices: torch.Tensor
    scores: Optional[Tuple[torch.Tensor, ...]] = None


@dataclass
class GenerationOutput:
    """Greedy / sampling result: ``sequences`` [N, L] and ``sequences_scores`` [N], the sum
    of the log-probabilities of the generated tokens (up to and including EOS) under the
    distribution the token was chosen from; ``beam_indices`` is None; ``scores`` as in
    :class:`BeamSearchOutput` (transformers' processed logits per step)."""
    sequences: torch.Tensor
    sequences_scores: torch.Tensor
    beam_indices: Optional[torch.Tensor] = None
    scores: Optional[Tuple[torch.Tensor, ...]] = None


def _select_rows(state, idx, rows, what):
    """Default reorder: index_select dim 0 of every tensor leaf, which must have ``rows`` rows."""
    def sel(t):
        if not isinstance(t, torch.Tensor):
            return t
        if t.dim() == 0 or t.shape[0] != rows:
            raise OpValueError(f"state tensors must have {what} = {rows} rows on dim 0 (the default reorder_state "
                               f"index-selects dim 0; pass reorder_state for another layout), got a tensor of "
                               f"shape {tuple(t.shape)}")
        return t.index_select(0, idx)
    return pytree.tree_map(sel, state)


class _Reorder:
    def __init__(self, reorder_state):
        self.custom = reorder_state

    def __call__(self, state, idx, rows, what):
        if state is None:
            return None
        if self.custom is not None:
            return self.custom(state, idx)
        return _select_rows(state, idx, rows, what)


class _StopFlag:
    """Whether the loop may stop, from a 0-d bool "still going" tensor (see the module
    docstring). ``due(t)`` says whether step t should compute and hand in the flag."""

    def __init__(self, device, steps):
        self.kind = device.type if device.type in ("cpu", "cuda", "meta") else "other"
        if self.kind == "cuda":
            self.host = torch.zeros(steps // CHECK_EVERY + 2, dtype=torch.bool, pin_memory=True)
            self.host_np = self.host.numpy()
            self.pending = deque()
            self.n = 0

    def due(self, t):
        if self.kind == "cuda":
            return t % CHECK_EVERY == CHECK_EVERY - 1
        return self.kind != "meta"

    def stop(self, going):
        if self.kind != "cuda":
            return not bool(going)
        slot = self.n
        self.n += 1
        self.host[slot].copy_(going, non_blocking=True)
        ev = torch.cuda.Event()
        ev.record()
        self.pending.append((ev, slot))
        while self.pending and self.pending[0][0].query():
            _, s = self.pending.popleft()
            if not self.host_np[s]:
                return True
        return False


def _eos_list(eos_token_id) -> list:
    if eos_token_id is None:
        return []
    ids = [eos_token_id] if isinstance(eos_token_id, int) and not isinstance(eos_token_id, bool) else eos_token_id
    try:
        ids = list(ids)
    except TypeError:
        raise OpTypeError(f"eos_token_id must be an int, a list of ints or None, "
                          f"got {type(eos_token_id).__name__}") from None
    for i in ids:
        if not isinstance(i, int) or isinstance(i, bool) or i < 0:
            raise OpValueError(f"eos_token_id must hold non-negative ints, got {eos_token_id!r}")
    return ids


def _device_ids(ids, device):
    """A small int64 tensor of Python ints on ``device`` without a blocking upload (a blocking
    host->device copy is a synchronisation)."""
    t = torch.tensor(ids, dtype=torch.long)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _is_eos(tokens, eos, eos_t):
    """tokens == any EOS id, elementwise. Not torch.isin: above a few ids it takes a sorting
    path through unique(), which synchronises with a CUDA device."""
    if len(eos) == 1:
        return tokens == eos[0]
    return (tokens[..., None] == eos_t).any(-1)


def _check_common(step_fn, input_ids, max_length, pad_token_id, min_length, no_repeat_ngram_size, reorder_state):
    if not callable(step_fn):
        raise OpTypeError(f"step_fn must be callable, got {type(step_fn).__name__}")
    check_tensor("input_ids", input_ids, ndim=2, dtypes=(torch.int64,))
    if input_ids.shape[1] < 1:
        raise OpValueError(f"input_ids must hold at least one token per sentence, got shape {tuple(input_ids.shape)}")
    _check_int("max_length", max_length, 1)
    if max_length <= input_ids.shape[1]:
        raise OpValueError(f"max_length must exceed the prompt length {input_ids.shape[1]}, got {max_length}")
    _check_int("pad_token_id", pad_token_id, 0)
    _check_int("min_length", min_length, 0)
    _check_int("no_repeat_ngram_size", no_repeat_ngram_size, 0)
    if reorder_state is not None and not callable(reorder_state):
        raise OpTypeError(f"reorder_state must be callable or None, got {type(reorder_state).__name__}")


def _check_slots(rows, max_length):
    if rows * max_length > MAX_TOKEN_SLOTS:
        raise OpValueError(f"max_length = {max_length} for {rows} hypotheses needs {rows * max_length} token slots "
                           f"(int64 buffers of {rows * max_length * 8 * 3 / 2 ** 30:.0f} GiB); at most "
                           f"{MAX_TOKEN_SLOTS} are supported: lower max_length or the batch")


def _describe(x):
    if isinstance(x, torch.Tensor):
        return f"a Tensor of shape {tuple(x.shape)}"
    if isinstance(x, (tuple, list)):
        return f"a {type(x).__name__} of {len(x)} items"
    return type(x).__name__


class _Logits:
    """Checks of what step_fn returns, per call: the (logits, state) pair, then the logits'
    rows, device, dtype and vocabulary (fixed by the first step)."""

    def __init__(self, rows, device, eos):
        self.rows, self.device, self.max_eos = rows, device, max(eos) if eos else -1
        self.V = None

    def __call__(self, out, t):
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise OpTypeError(f"step_fn must return a pair (logits[{self.rows}, V], state), got {_describe(out)}")
        logits, state = out
        if not isinstance(logits, torch.Tensor):
            raise OpTypeError(f"step_fn must return (logits, state) with logits a torch.Tensor [{self.rows}, V], "
                              f"got {_describe(logits)}")
        if logits.dim() != 2 or logits.shape[0] != self.rows:
            raise OpValueError(f"step_fn must return logits of shape [{self.rows}, V], got {tuple(logits.shape)}")
        if logits.device != self.device:
            raise OpValueError(f"step_fn must return logits on {self.device}, got {logits.device}")
        if not logits.dtype.is_floating_point:
            raise OpTypeError(f"step_fn must return floating-point logits, got {logits.dtype}")
        if self.V is None:
            self.V = logits.shape[1]
            if self.max_eos >= self.V:
                raise OpValueError(f"eos_token_id {self.max_eos} is outside the vocabulary of size {self.V}")
        elif logits.shape[1] != self.V:
            raise OpValueError(f"step_fn must return logits of the same vocabulary size every step: {self.V} at the "
                               f"first step, {logits.shape[1]} at step {t}")
        if logits.device.type != "cuda" and logits.dtype not in (torch.float32, torch.float64):
            # transformers scores in float32 whatever the model's dtype.
            logits = logits.float()
        return logits, state


def _check_step_scores(scores, t, checks):
    """The fused step marks sentences with NaN/+inf logits by NaN scores (see beam_search_step).
    Per step only in CUDA's checked mode (it synchronises); on the CPU the decoders check once
    at the end instead (one reduction per step costs more than the bookkeeping of a small
    step): a NaN mark is sticky, it reaches the running scores and stays there."""
    if checks and bool(torch.isnan(scores).any()):
        where = "" if t is None else f" at step {t}"
        raise OpValueError(f"step_fn returned logits with NaN or +inf, or a row without a finite value{where}")


class _Bans:
    """Tokens the next step may not pick, as (N, M) int64 with -1 for unused slots, or None:
    the EOS ids while cur_len < min_length, and every token that would repeat an n-gram
    (transformers' NoRepeatNGramLogitsProcessor: the last n-1 tokens are matched against every
    window of the sequence; a matching window bans its last token)."""

    def __init__(self, rows, eos_t, min_length, ngram):
        self.eos_rows = eos_t.expand(rows, eos_t.shape[0]).contiguous() if (eos_t is not None and min_length) else None
        self.min_length, self.ngram = min_length, ngram

    def __call__(self, seq, cur_len):
        return _banned_tokens(seq, cur_len, self.eos_rows, self.min_length, self.ngram)


def _banned_tokens(seq, cur_len, eos_rows, min_length, ngram):
    parts = []
    if eos_rows is not None and cur_len < min_length:
        parts.append(eos_rows.expand(seq.shape[0], eos_rows.shape[-1]))
    if ngram and cur_len >= ngram:
        windows = seq.narrow(1, 0, cur_len).unfold(1, ngram, 1)
        prefix = seq.narrow(1, cur_len + 1 - ngram, ngram - 1)
        match = (windows[..., :-1] == prefix[:, None, :]).all(-1)
        parts.append(torch.where(match, windows[..., -1], -1))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else torch.cat(parts, 1)


def _processed_log_probs(logits, banned, sdt):
    """transformers' per-step beam ``scores``: log_softmax, then the bans as -inf."""
    lp = torch.log_softmax(logits.to(sdt), dim=-1)
    return _mask_banned(lp, banned)


def _mask_banned(x, banned):
    if banned is None or not banned.shape[1]:
        return x
    V = x.shape[1]
    mask = torch.zeros((x.shape[0], V + 1), dtype=torch.bool, device=x.device)
    mask.scatter_(1, torch.where(banned < 0, V, banned), True)
    return x.masked_fill(mask[:, :V], -math.inf)


