"""Decoders over the fused step: batched beam search, greedy search and sampling.

The engine is model-agnostic: the caller's ``step_fn(input_ids[N, cur_len], state) ->
(logits[N, V], state)`` scores the next token of N running hypotheses (N = B*K in beam
search), and ``reorder_state(state, beam_idx[N]) -> state`` moves the state rows along with
the beams (default: ``index_select`` on dim 0 of every tensor in the state, which then must
have one row per hypothesis). The initial ``state`` holds one row per sentence; the engine
expands it with the same reorder function, so an encoder's output is computed once per
sentence. ``input_ids`` handed to ``step_fn`` is a view of the engine's token buffer, valid
for the duration of the call (the buffer is updated in place).

Semantics are transformers' ``generate`` (v5), checked option by option in
tests/test_decoding.py: ``num_beams > 1`` is its beam search, ``num_beams == 1`` its greedy
search (``length_penalty`` and ``early_stopping`` then play no part in the choice of
tokens), ``sample`` its multinomial sampling. See :func:`beam_search` for the details.

Host synchronisation. Each step of beam search is one fused op (:func:`beam_search_step`)
and a fixed set of small tensor ops on [B, K] and [B, C] tensors written into preallocated
buffers; nothing in a step reads a tensor value on the host. On CPU the "all done" flag is
read every step (it costs nothing there) and the loop stops exactly when transformers' does.
On CUDA the flag is copied to pinned memory asynchronously every ``CHECK_EVERY`` = 8 steps and
read once that copy has landed, so the host never waits for the device inside the loop; the
loop may then run up to about 2 * CHECK_EVERY steps past the stop (calling ``step_fn`` for
them), which changes no result: finished sentences only collect -1e9 candidates, finished
greedy/sampled rows only pad. The one blocking read is at the end, for the output's length.
On meta tensors the loop runs to ``max_length`` and the output has the full length.
"""
import math
from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple, Union

import torch
from torch.utils import _pytree as pytree

from .._ext import require_ext
from ._validate import OpTypeError, OpValueError, check_tensor, value_checks
from .beam_search import _check_int, _score_dtype, fused_step

__all__ = ["beam_search", "greedy_search", "sample", "BeamSearchOutput", "GenerationOutput", "CHECK_EVERY",
           "MAX_TOKEN_SLOTS"]

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


# ---------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------

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
    """The fused step marks sentences with NaN/+inf logits by NaN scores (see beam_search_step)."""
    if checks and bool(torch.isnan(scores).any()):
        raise OpValueError(f"step_fn returned logits with NaN or +inf, or a row without a finite value, at step {t}")


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
        windows = seq[:, :cur_len].unfold(1, ngram, 1)
        prefix = seq[:, cur_len + 1 - ngram:cur_len]
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


# ---------------------------------------------------------------------------------------------
# Beam search
# ---------------------------------------------------------------------------------------------

def beam_search(step_fn: Callable, input_ids: torch.Tensor, state=None, *, num_beams: int, max_length: int,
                eos_token_id: Union[int, Sequence[int], None], pad_token_id: int, length_penalty: float = 1.0,
                early_stopping: Union[bool, str] = False, min_length: int = 0, no_repeat_ngram_size: int = 0,
                num_return_sequences: int = 1, reorder_state: Optional[Callable] = None,
                output_scores: bool = False) -> BeamSearchOutput:
    """Beam search over B sentences x K beams with transformers' semantics.

    C = max(2, 1 + number of EOS ids) * K candidates per step; a candidate ending in EOS (or
    reaching ``max_length``) finalizes only when it is among the top K candidates, with score
    ``logp / (generated length) ** length_penalty`` where the length counts the EOS token; the
    best K finished hypotheses are kept. Scores are float32 (float64 for float64 logits).

    Args:
        step_fn: ``(input_ids[B*K, cur_len], state) -> (logits[B*K, V], state)``.
        input_ids: (B, L0) int64 prompts (at least one token, e.g. BOS). B = 0 gives empty
            outputs without calling step_fn.
        state: anything holding tensors with one row per sentence on dim 0, or None.
        num_beams: K >= 1. K = 1 is greedy search, as in ``generate(num_beams=1)``: the most
            likely token each step, ``length_penalty`` and ``early_stopping`` play no part in
            the choice; ``sequences_scores`` is then the sum of the generated tokens'
            log-probabilities divided by (generated length) ** length_penalty (generate
            returns no sequences_scores there), ``beam_indices`` the row's own index.
        max_length: total length (prompt included), > L0.
        eos_token_id: an int, a list of ints, or None. pad_token_id: fills ended sequences.
        length_penalty: exponent on the generated length in the finished scores.
        early_stopping: True (stop a sentence once K hypotheses are finished), False
            (transformers' heuristic on the current length) or "never" (heuristic on
            max_length when length_penalty > 0).
        min_length: EOS is banned while the sequence (prompt included) is shorter.
        no_repeat_ngram_size: ban repeating any n-gram of this size, prompt included (0 = off).
        num_return_sequences: R <= K best hypotheses per sentence.
        reorder_state: ``(state, beam_idx[B*K]) -> state``; default index_select on dim 0.
        output_scores: also return transformers' per-step ``scores`` (log_softmax with the
            bans as -inf, [B*K, V] per step; greedy for K = 1: the logits with the bans).

    Returns:
        :class:`BeamSearchOutput`.

    Example:
        >>> import torch
        >>> from fastpapers.ops import beam_search
        >>> table = torch.randn(10, 10)
        >>> step = lambda ids, state: (table[ids[:, -1]], state)
        >>> out = beam_search(step, torch.tensor([[1], [4]]), num_beams=3, max_length=6,
        ...                   eos_token_id=0, pad_token_id=9)
        >>> out.sequences.shape[0], out.sequences_scores.shape
        (2, torch.Size([2]))
    """
    _check_common(step_fn, input_ids, max_length, pad_token_id, min_length, no_repeat_ngram_size, reorder_state)
    _check_int("num_beams", num_beams, 1)
    _check_int("num_return_sequences", num_return_sequences, 1)
    if num_return_sequences > num_beams:
        raise OpValueError(f"num_return_sequences must be <= num_beams = {num_beams}, got {num_return_sequences}")
    if not (early_stopping is True or early_stopping is False or early_stopping == "never"):
        raise OpValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
    if not isinstance(length_penalty, (int, float)) or isinstance(length_penalty, bool) or not math.isfinite(
            length_penalty):
        raise OpTypeError(f"length_penalty must be a finite number, got {length_penalty!r}")
    eos = _eos_list(eos_token_id)
    B, L0 = input_ids.shape
    K, R = num_beams, num_return_sequences
    _check_slots(B * K, max_length)
    require_ext("beam_search_step")
    if K == 1:
        return _greedy_as_beam(step_fn, input_ids, state, max_length, eos, pad_token_id, min_length,
                               no_repeat_ngram_size, reorder_state, length_penalty, output_scores)
    dev = input_ids.device
    if B == 0:
        return BeamSearchOutput(input_ids.new_empty((0, L0)), torch.empty(0, device=dev),
                                input_ids.new_empty((0, 0)), () if output_scores else None)
    C = max(2, 1 + len(eos)) * K
    T = max_length - L0
    N = B * K
    reorder = _Reorder(reorder_state)
    checks = value_checks(input_ids)
    eos_t = _device_ids(eos, dev) if eos else None
    bans = _Bans(N, eos_t, min_length, no_repeat_ngram_size)
    offset = torch.arange(B, device=dev)[:, None] * K
    state = reorder(state, torch.arange(B, device=dev).repeat_interleave(K), B, "B (one per sentence)")
    # Two token buffers: each step index-selects the running rows of one into the other.
    seq = torch.full((N, max_length), pad_token_id, dtype=torch.long, device=dev)
    seq[:, :L0] = input_ids.repeat_interleave(K, 0)
    spare = torch.empty_like(seq)
    top_mask = torch.arange(C, device=dev) < K
    all_hit = torch.ones((B, C), dtype=torch.bool, device=dev)
    # hist[t][b, k]: flat index parent_beam * V + token of the candidate that became running
    # beam k of sentence b at step t (the back-pointers), stacked once at the end.
    hist = []
    # A slot of the finished list is one int64: (step * K + parent_beam) * V + last_token, plus
    # `done` when the hypothesis really finished (transformers also keeps candidates that did
    # not, with -1e9 scores, in the list); -1 marks a slot never filled.
    fin_code = torch.full((B, K), -1, dtype=torch.long, device=dev)
    fin_done = torch.zeros((B, K), dtype=torch.bool, device=dev)  # fin_code >= done
    unsat = torch.ones((B, 1), dtype=torch.bool, device=dev)
    flag = _StopFlag(dev, T)
    logits_check = _Logits(N, dev, eos)
    step_scores = [] if output_scores else None
    going_hist = [] if (output_scores and flag.kind == "cuda") else None
    run_scores = fin_scores = None
    V = done = 0
    for t in range(T):
        cur_len = L0 + t
        logits, state = logits_check(step_fn(seq[:, :cur_len], state), t)
        if run_scores is None:
            V = logits.shape[1]
            sdt = _score_dtype(logits.dtype)
            if C > K * V:
                raise OpValueError(f"num_beams = {K} needs {C} candidates per step but the vocabulary offers "
                                   f"only K * V = {K * V}")
            # Only beam 0 is live at the first step; the others start at -1e9 so that the K
            # beams do not all pick the same tokens (transformers' initialisation).
            run_scores = torch.zeros((B, K), dtype=sdt, device=dev)
            run_scores[:, 1:] = -1e9
            fin_scores = torch.full((B, K), -1e9, dtype=sdt, device=dev)
            done = T * K * V  # above every (step * K + beam) * V + token
        banned = bans(seq, cur_len)
        cand_scores, cand_flat = fused_step(logits, run_scores.view(-1), K, C, banned)
        _check_step_scores(cand_scores, t, checks)
        if output_scores:
            step_scores.append(_processed_log_probs(logits, banned, sdt))
        cand_tok = cand_flat % V
        if cur_len + 1 >= max_length:
            hits = all_hit
        elif eos_t is None:
            hits = None
        else:
            hits = _is_eos(cand_tok, eos, eos_t)

        # Live beams: the best K candidates that did not just finish (finishing ones get
        # -1e9 added, transformers' arithmetic).
        live = cand_scores if hits is None else torch.add(cand_scores, hits, alpha=-1e9)
        run_scores, sel = live.topk(K, dim=1)
        sel_flat = cand_flat.gather(1, sel)

        # Finished hypotheses: a finishing candidate among the top K replaces a worse one,
        # unless the sentence can no longer improve (or, with early_stopping=True, is full).
        # Blocked and non-finishing candidates score -1e9 (transformers adds -1e9 per reason;
        # such junk never outranks a finished hypothesis, whatever its exact value).
        if hits is not None:
            just = hits & top_mask
            ok = just & unsat
            if early_stopping is True:
                ok = ok & ~fin_done.all(1, keepdim=True)
            fin_cand = torch.where(ok, cand_scores / ((cur_len + 1 - L0) ** length_penalty), -1e9)
            fin_scores, keep = torch.cat((fin_scores, fin_cand), 1).topk(K, dim=1)
            code = torch.add(cand_flat, just, alpha=done).add_(t * K * V)
            fin_code = torch.cat((fin_code, code), 1).gather(1, keep)
            fin_done = fin_code >= done

        hist.append(sel_flat)
        src = torch.div(sel_flat, V, rounding_mode="floor").add_(offset).view(-1)
        torch.index_select(seq, 0, src, out=spare)
        seq, spare = spare, seq
        seq[:, cur_len] = cand_tok.gather(1, sel).view(-1)
        state = reorder(state, src, N, "B*K (one per beam)")

        # transformers' stopping heuristic, evaluated at the new length.
        if early_stopping == "never" and length_penalty > 0.0:
            best_len = max_length - L0
        else:
            best_len = cur_len + 1 - L0
        best_running = run_scores[:, :1] / (best_len ** length_penalty)
        # fin_scores is sorted best first (topk), so its last column is the minimum; a [B, K]
        # min-reduction wakes the OpenMP pool and cost 30 ms per step on a busy 2-core machine.
        worst_finished = torch.where(fin_done, fin_scores[:, -1:], -1e9)
        unsat = unsat & (best_running > worst_finished).any(-1, keepdim=True)
        # transformers also stops when every candidate hit a stopping criterion; before the
        # last step (where the loop ends anyway) that cannot happen: each beam row holds at
        # most len(eos) EOS tokens, so at most len(eos) * K < C candidates end in EOS.
        if flag.due(t) or going_hist is not None:
            going = unsat.any()
            if early_stopping is True:
                going = going & ~fin_done.all()
            if going_hist is not None:
                going_hist.append(going)
            if flag.due(t) and flag.stop(going):
                break
    return _backtrack(input_ids, fin_scores, fin_code, done, torch.stack(hist), K, V, offset, R, pad_token_id,
                      step_scores, going_hist)


def _backtrack(input_ids, fin_scores, fin_code, done, hist, K, V, offset, R, pad, step_scores, going_hist):
    """Rebuild the R best hypotheses of each sentence from the back-pointers: one walk from
    the last step to the first over all hypotheses at once (three small ops per step), then
    the tokens and beam indices of every position in one go."""
    B, L0 = input_ids.shape
    dev = input_ids.device
    code = fin_code[:, :R]
    code = torch.where(code >= done, code - done, code)
    last = torch.where(code >= 0, torch.div(code, K * V, rounding_mode="floor"), -1)  # finishing step
    fin_parent = torch.div(code % (K * V), V, rounding_mode="floor")
    fin_tok = code % V
    # The one blocking read: the output's length (and, for output_scores on CUDA, the number of
    # steps transformers would have run).
    reads = [(last + 1).max()]
    if going_hist:
        g = torch.stack(going_hist).to(torch.long)
        # steps up to and including the first whose flag said stop
        reads.append((g.cumprod(0).sum() + 1).clamp(max=g.numel()))
    if dev.type == "meta":
        length, steps_run = hist.shape[0], hist.shape[0]
    else:
        vals = torch.stack(reads).tolist()
        length = vals[0]
        steps_run = vals[1] if going_hist else hist.shape[0]
    q = fin_parent.clamp(min=0)
    anc = []
    par = []
    for s in range(length - 1, -1, -1):
        q = torch.where(last - 1 == s, fin_parent, q)
        a = hist[s].gather(1, q.clamp(min=0))
        q = torch.div(a, V, rounding_mode="floor")
        anc.append(a)
        par.append(q)
    if length:
        anc_t = torch.stack(anc[::-1])  # [L, B, R]: token at position s is anc % V (s < last)
        par_t = torch.stack(par[::-1])  # parent beam of that token
        pos = torch.arange(length, device=dev)[:, None, None]
        is_last = pos == last
        before = pos < last
        toks = torch.where(is_last, fin_tok, torch.where(before, anc_t % V, pad))
        beams = torch.where(is_last, fin_parent + offset, torch.where(before, par_t + offset, -1))
        gen, bidx = toks.permute(1, 2, 0), beams.permute(1, 2, 0)
    else:
        gen = bidx = input_ids.new_empty((B, R, 0))
    sequences = torch.cat((input_ids[:, None, :].expand(B, R, L0), gen), 2).reshape(B * R, -1)
    scores = tuple(step_scores[:steps_run]) if step_scores is not None else None
    return BeamSearchOutput(sequences=sequences, sequences_scores=fin_scores[:, :R].reshape(-1),
                            beam_indices=bidx.reshape(B * R, -1), scores=scores)


# ---------------------------------------------------------------------------------------------
# Greedy search and sampling
# ---------------------------------------------------------------------------------------------

def _decode_loop(step_fn, input_ids, state, max_length, eos, pad, min_length, ngram, choose, output_scores):
    """Shared loop of greedy search and sampling: ``choose(logits, banned, scores, t, checks)``
    -> (tokens [N], new cumulative scores [N], transformers' processed scores or None).
    Returns (sequences [N, L], scores [N], end lengths [N], per-step scores or None)."""
    dev = input_ids.device
    N, L0 = input_ids.shape
    T = max_length - L0
    checks = value_checks(input_ids)
    eos_t = _device_ids(eos, dev) if eos else None
    bans = _Bans(N, eos_t, min_length, ngram)
    seq = torch.full((N, max_length), pad, dtype=torch.long, device=dev)
    seq[:, :L0] = input_ids
    unfinished = torch.ones(N, dtype=torch.bool, device=dev)
    # L0 + the number of steps a row was unfinished at: the position after its EOS.
    end_len = torch.full((N,), L0, dtype=torch.long, device=dev)
    flag = _StopFlag(dev, T)
    logits_check = _Logits(N, dev, eos)
    step_scores = [] if output_scores else None
    scores = None
    for t in range(T):
        cur_len = L0 + t
        logits, state = logits_check(step_fn(seq[:, :cur_len], state), t)
        if scores is None:
            scores = torch.zeros(N, dtype=_score_dtype(logits.dtype), device=dev)
        tok, new_scores, processed = choose(logits, bans(seq, cur_len), scores, t, checks)
        if output_scores:
            step_scores.append(processed)
        end_len.add_(unfinished)
        if eos_t is None:
            seq[:, cur_len] = tok
            scores = new_scores
            continue
        seq[:, cur_len] = torch.where(unfinished, tok, pad)
        scores = torch.where(unfinished, new_scores, scores)
        unfinished = unfinished & ~_is_eos(tok, eos, eos_t)
        if cur_len + 1 < max_length and flag.due(t) and flag.stop(unfinished.any()):
            break
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
        if checks:
            best = x.amax(-1)
            if bool((best == -math.inf).any()):
                raise OpValueError(f"sample: every token of a row is banned or has a -inf logit at step {t} "
                                   f"(min_length / no_repeat_ngram_size leave nothing to draw)")
            if not bool(torch.isfinite(best).all()):
                raise OpValueError(f"step_fn returned logits with NaN or +inf at step {t}")
        probs = torch.softmax(x, dim=-1)
        if not checks:
            # A row without a finite logit has NaN probabilities, which multinomial rejects with a
            # device-side assertion; as zeros it draws token 0.
            probs = torch.nan_to_num(probs, nan=0.0)
        tok = torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)
        logp = torch.log_softmax(x, dim=-1).gather(1, tok[:, None])[:, 0]
        return tok, scores + logp, x if output_scores else None

    seqs, scores, _, step_scores = _decode_loop(step_fn, input_ids, state, max_length, eos, pad_token_id, min_length,
                                                no_repeat_ngram_size, choose, output_scores)
    return GenerationOutput(sequences=seqs, sequences_scores=scores, scores=step_scores)
