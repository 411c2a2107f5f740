"""Batched beam search (contract 5 in DESIGN.md), with greedy and sampling decoders.

The engine is model-agnostic: the caller's ``step_fn(input_ids[N, cur_len], state) ->
(logits[N, V], state)`` scores the next token of N = B*K running hypotheses, and
``reorder_state(state, beam_idx[N]) -> state`` moves the state rows along with the beams
(default: ``index_select`` on dim 0 of every tensor in the state). The initial ``state`` holds
one row per sentence (dim 0 of size B); the engine expands it to B*K rows with the same
reorder function, so an encoder's output is computed once per sentence.

Each step runs one fused op, :func:`beam_search_step` (log_softmax over the vocabulary + the
running beam score + the top-C continuations of each sentence, in one pass over the logits:
C++ on CPU, Triton on CUDA); the bookkeeping is a fixed set of small tensor ops on [B, K] and
[B, C] tensors, with no host synchronisation: on CUDA the "all done" flag is copied to pinned
memory asynchronously and read one step late (the extra steps change nothing, see
``_StopFlag``). Finished hypotheses are stored as back-pointers (finishing step, parent beam,
last token) and the sequences are rebuilt once at the end from the per-step (parent, token)
history.

Semantics are transformers' beam search (``generate(num_beams=K)``, v5): C = max(2, 1 + number
of EOS ids) * K candidates per step; a candidate ending in EOS (or reaching ``max_length``)
finalizes only when it is among the top K candidates, with score ``logp / (generated
length) ** length_penalty`` where the length counts the EOS token; the best K finished
hypotheses are kept; ``early_stopping`` True / False / "never" with transformers' stopping
heuristics; ``min_length`` bans EOS while the length (prompt included) is below it;
``no_repeat_ngram_size`` bans tokens that would repeat an n-gram of the whole sequence
(prompt included). Scores are float32 (float64 when the logits are float64).
"""
import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch
from torch.utils import _pytree as pytree

from .._ext import require_ext
from ._registry import when_built
from ._validate import check_float, check_tensor

__all__ = ["beam_search_step", "beam_search", "greedy_search", "sample", "BeamSearchOutput", "GenerationOutput"]


# ---------------------------------------------------------------------------------------------
# The fused step op
# ---------------------------------------------------------------------------------------------

def _score_dtype(logits_dtype):
    return torch.float64 if logits_dtype == torch.float64 else torch.float32


def beam_search_step(logits: torch.Tensor, beam_scores: torch.Tensor, num_beams: int, num_candidates: int,
                     banned: Optional[torch.Tensor] = None):
    """One fused beam-search step.

    Args:
        logits: (B*K, V) next-token logits of the running beams (float32/float64; on CUDA also
            float16/bfloat16).
        beam_scores: (B*K,) running log-probabilities; float64 when ``logits`` is float64,
            float32 otherwise.
        num_beams: K. num_candidates: C, in [1, K*V].
        banned: optional (B*K, M) int64 tokens ranked as -inf (-1 = unused slot); they still
            count in the softmax normaliser.

    Returns:
        (scores, indices), each (B, C): ``log_softmax(logits) + beam_scores`` of the best C of
        the K*V continuations of each sentence, best first, and their flat indices
        ``beam * V + token``; equal scores are ordered by lower flat index.

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
        raise ValueError(f"beam_scores must be on the device of logits ({logits.device}), got {beam_scores.device}")
    _check_int("num_beams", num_beams, 1)
    _check_int("num_candidates", num_candidates, 1)
    rows, vocab = logits.shape
    if rows % num_beams:
        raise ValueError(f"logits must have B*K rows with K = num_beams = {num_beams}, got {rows} rows")
    if beam_scores.shape[0] != rows:
        raise ValueError(f"beam_scores must have shape [{rows}] (one score per logits row), "
                         f"got {tuple(beam_scores.shape)}")
    if num_candidates > num_beams * vocab:
        raise ValueError(f"num_candidates must be at most num_beams * V = {num_beams * vocab}, got {num_candidates}")
    if banned is not None:
        check_tensor("banned", banned, ndim=2, dtypes=(torch.int64,))
        if banned.shape[0] != rows or banned.device != logits.device:
            raise ValueError(f"banned must be an int64 tensor [{rows}, M] on {logits.device}, "
                             f"got shape {tuple(banned.shape)} on {banned.device}")
    require_ext("beam_search_step")
    return torch.ops.fastpapers.beam_search_step(logits, beam_scores, int(num_beams), int(num_candidates), banned)


def _check_int(name, value, lo):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")


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



# ---------------------------------------------------------------------------------------------
# Decoders
# ---------------------------------------------------------------------------------------------

@dataclass
class BeamSearchOutput:
    """``sequences`` [B*R, L] (prompt included, padded with pad_token_id), ``sequences_scores``
    [B*R] (length-penalised log-probabilities, best first within a sentence), ``beam_indices``
    [B*R, L - L0] (flat index b*K + beam of the running beam each token extended; -1 padded)."""
    sequences: torch.Tensor
    sequences_scores: torch.Tensor
    beam_indices: torch.Tensor


@dataclass
class GenerationOutput:
    """Greedy / sampling result: ``sequences`` [B*R, L] and ``sequences_scores`` [B*R], the sum
    of the log-probabilities of the generated tokens (up to and including EOS) under the
    distribution the token was chosen from; ``beam_indices`` is None."""
    sequences: torch.Tensor
    sequences_scores: torch.Tensor
    beam_indices: Optional[torch.Tensor] = None


def _index_select_state(state, beam_idx):
    return pytree.tree_map(lambda t: t.index_select(0, beam_idx) if isinstance(t, torch.Tensor) else t, state)


class _StopFlag:
    """Whether the decoding loop may stop, given the "still going" flag as a 0-d bool tensor.
    On CPU reading the flag costs nothing. On CUDA the flag is copied to pinned memory without
    blocking and the copy of an earlier step is read once its event has completed, so the host
    never waits for the device; the loop then runs a step or two past the end, which changes
    no result (finished sentences only collect -1e9 candidates, and the n-gram / min-length
    bans never touch finished hypotheses)."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.pending = []

    def __call__(self, going: torch.Tensor) -> bool:
        if not self.cuda:
            return not bool(going)
        buf = torch.empty((), dtype=torch.bool, pin_memory=True)
        buf.copy_(going, non_blocking=True)
        ev = torch.cuda.Event()
        ev.record()
        self.pending.append((ev, buf))
        while self.pending and self.pending[0][0].query():
            _, first = self.pending.pop(0)
            if not bool(first):
                return True
        return False


def _eos_list(eos_token_id) -> list:
    if eos_token_id is None:
        return []
    ids = [eos_token_id] if isinstance(eos_token_id, int) and not isinstance(eos_token_id, bool) else eos_token_id
    try:
        ids = list(ids)
    except TypeError:
        raise TypeError(f"eos_token_id must be an int, a list of ints or None, got {type(eos_token_id).__name__}") from None
    for i in ids:
        if not isinstance(i, int) or isinstance(i, bool) or i < 0:
            raise ValueError(f"eos_token_id must hold non-negative ints, got {eos_token_id!r}")
    return ids


def _is_eos(tokens, eos, eos_t):
    """tokens == any EOS id, elementwise. Not torch.isin: above a few ids it takes a sorting
    path through unique(), which synchronises with a CUDA device."""
    if len(eos) == 1:
        return tokens == eos[0]
    return (tokens[..., None] == eos_t).any(-1)


def _check_common(step_fn, input_ids, max_length, pad_token_id, min_length, no_repeat_ngram_size, reorder_state):
    if not callable(step_fn):
        raise TypeError(f"step_fn must be callable, got {type(step_fn).__name__}")
    check_tensor("input_ids", input_ids, ndim=2, dtypes=(torch.int64,))
    if input_ids.shape[1] < 1:
        raise ValueError(f"input_ids must hold at least one token per sentence, got shape {tuple(input_ids.shape)}")
    _check_int("max_length", max_length, 1)
    if max_length <= input_ids.shape[1]:
        raise ValueError(f"max_length must exceed the prompt length {input_ids.shape[1]}, got {max_length}")
    _check_int("pad_token_id", pad_token_id, 0)
    _check_int("min_length", min_length, 0)
    _check_int("no_repeat_ngram_size", no_repeat_ngram_size, 0)
    if reorder_state is not None and not callable(reorder_state):
        raise TypeError(f"reorder_state must be callable or None, got {type(reorder_state).__name__}")


def _check_logits(logits, rows, device, eos):
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"step_fn must return (logits, state) with logits a torch.Tensor, got {type(logits).__name__}")
    if logits.dim() != 2 or logits.shape[0] != rows:
        raise ValueError(f"step_fn must return logits of shape [{rows}, V], got {tuple(logits.shape)}")
    if logits.device != device:
        raise ValueError(f"step_fn must return logits on {device}, got {logits.device}")
    if not logits.dtype.is_floating_point:
        raise TypeError(f"step_fn must return floating-point logits, got {logits.dtype}")
    if eos and max(eos) >= logits.shape[1]:
        raise ValueError(f"eos_token_id {max(eos)} is outside the vocabulary of size {logits.shape[1]}")
    if logits.device.type == "cpu" and logits.dtype not in (torch.float32, torch.float64):
        # transformers scores in float32 whatever the model's dtype.
        logits = logits.float()
    return logits


def _banned_tokens(seq, cur_len, eos_t, min_length, ngram):
    """Tokens the next step may not pick, as (N, M) int64 with -1 for unused slots, or None:
    the EOS ids while cur_len < min_length, and every token that would repeat an n-gram
    (transformers' NoRepeatNGramLogitsProcessor: the last n-1 tokens are matched against every
    window of the sequence; a matching window bans its last token)."""
    parts = []
    if eos_t is not None and cur_len < min_length:
        parts.append(eos_t.expand(seq.shape[0], eos_t.shape[0]))
    if ngram and cur_len >= ngram:
        windows = seq[:, :cur_len].unfold(1, ngram, 1)
        prefix = seq[:, cur_len + 1 - ngram:cur_len]
        match = (windows[..., :-1] == prefix[:, None, :]).all(-1)
        parts.append(torch.where(match, windows[..., -1], -1))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else torch.cat(parts, 1)


def beam_search(step_fn: Callable, input_ids: torch.Tensor, state=None, *, num_beams: int, max_length: int,
                eos_token_id: Union[int, Sequence[int], None], pad_token_id: int, length_penalty: float = 1.0,
                early_stopping: Union[bool, str] = False, min_length: int = 0, no_repeat_ngram_size: int = 0,
                num_return_sequences: int = 1, reorder_state: Optional[Callable] = None) -> BeamSearchOutput:
    """Beam search over B sentences x K beams with transformers' semantics.

    Args:
        step_fn: ``(input_ids[B*K, cur_len], state) -> (logits[B*K, V], state)``.
        input_ids: (B, L0) int64 prompts (at least one token, e.g. BOS).
        state: anything holding tensors with one row per sentence on dim 0, or None.
        num_beams: K >= 1. max_length: total length (prompt included), > L0.
        eos_token_id: an int, a list of ints, or None. pad_token_id: fills ended sequences.
        length_penalty: exponent on the generated length in the finished scores.
        early_stopping: True (stop a sentence once K hypotheses are finished), False
            (transformers' heuristic on the current length) or "never" (heuristic on
            max_length when length_penalty > 0).
        min_length: EOS is banned while the sequence (prompt included) is shorter.
        no_repeat_ngram_size: ban repeating any n-gram of this size (0 = off).
        num_return_sequences: R <= K best hypotheses per sentence.
        reorder_state: ``(state, beam_idx[B*K]) -> state``; default index_select on dim 0.

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
        raise ValueError(f"num_return_sequences must be <= num_beams = {num_beams}, got {num_return_sequences}")
    if not (early_stopping is True or early_stopping is False or early_stopping == "never"):
        raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
    if not isinstance(length_penalty, (int, float)) or isinstance(length_penalty, bool) or not math.isfinite(
            length_penalty):
        raise TypeError(f"length_penalty must be a finite number, got {length_penalty!r}")
    eos = _eos_list(eos_token_id)
    require_ext("beam_search_step")

    dev = input_ids.device
    B, L0 = input_ids.shape
    K, R = num_beams, num_return_sequences
    C = max(2, 1 + len(eos)) * K
    T = max_length - L0
    reorder = reorder_state or _index_select_state
    eos_t = torch.tensor(eos, dtype=torch.long, device=dev) if eos else None
    offset = torch.arange(B, device=dev)[:, None] * K
    if state is not None:
        state = reorder(state, torch.arange(B, device=dev).repeat_interleave(K))
    seq = torch.full((B * K, max_length), pad_token_id, dtype=torch.long, device=dev)
    seq[:, :L0] = input_ids.repeat_interleave(K, 0)
    top_mask = torch.arange(C, device=dev) < K
    # hist[t][b, k]: flat index parent_beam * V + token of the candidate that became running
    # beam k of sentence b at step t (the back-pointers), stacked once at the end.
    hist = []
    # A slot of the finished list is one int64: (step * K + parent_beam) * V + last_token, plus
    # `done` when the hypothesis really finished (transformers also keeps candidates that did
    # not, with -1e9 scores, in the list); -1 marks a slot never filled.
    fin_code = torch.full((B, K), -1, dtype=torch.long, device=dev)
    fin_done = torch.zeros((B, K), dtype=torch.bool, device=dev)  # fin_code >= done
    unsat = torch.ones((B, 1), dtype=torch.bool, device=dev)
    flag = _StopFlag(dev)
    run_scores = fin_scores = None
    V = 0
    for t in range(T):
        cur_len = L0 + t
        logits, state = step_fn(seq[:, :cur_len], state)
        logits = _check_logits(logits, B * K, dev, eos)
        if run_scores is None:
            V = logits.shape[1]
            sdt = _score_dtype(logits.dtype)
            if C > K * V:
                raise ValueError(f"num_beams = {K} needs {C} candidates per step but the vocabulary offers "
                                 f"only K * V = {K * V}")
            # Only beam 0 is live at the first step; the others start at -1e9 so that the K
            # beams do not all pick the same tokens (transformers' initialisation).
            run_scores = torch.zeros((B, K), dtype=sdt, device=dev)
            run_scores[:, 1:] = -1e9
            fin_scores = torch.full((B, K), -1e9, dtype=sdt, device=dev)
            done = T * K * V  # above every (step * K + beam) * V + token
        elif logits.shape[1] != V:
            raise ValueError(f"step_fn must return logits of the same vocabulary size every step: {V} at the "
                             f"first step, {logits.shape[1]} at step {t}")
        banned = _banned_tokens(seq, cur_len, eos_t, min_length, no_repeat_ngram_size)
        # The engine built every input above (logits checked by _check_logits), so the op is
        # called without the public wrapper's validation.
        cand_scores, cand_flat = torch.ops.fastpapers.beam_search_step(logits, run_scores.view(-1), K, C, banned)
        if cur_len + 1 >= max_length:
            hits = torch.ones((B, C), dtype=torch.bool, device=dev)
        elif eos_t is None:
            hits = torch.zeros((B, C), dtype=torch.bool, device=dev)
        else:
            hits = _is_eos(cand_flat % V, eos, eos_t)

        # Live beams: the best K candidates that did not just finish (finishing ones get
        # -1e9 added, transformers' arithmetic).
        run_scores, sel = torch.add(cand_scores, hits, alpha=-1e9).topk(K, dim=1)
        sel_flat = cand_flat.gather(1, sel)

        # Finished hypotheses: a finishing candidate among the top K replaces a worse one,
        # unless the sentence can no longer improve (or, with early_stopping=True, is full);
        # the -1e9 penalties are transformers' arithmetic.
        just = hits & top_mask
        fin_cand = cand_scores / ((cur_len + 1 - L0) ** length_penalty)
        if early_stopping is True:
            fin_cand = torch.add(fin_cand, fin_done.all(1, keepdim=True), alpha=-1e9)
        fin_cand = torch.add(fin_cand, ~unsat, alpha=-1e9)
        fin_cand = torch.add(fin_cand, ~just, alpha=-1e9)
        fin_scores, keep = torch.cat((fin_scores, fin_cand), 1).topk(K, dim=1)
        code = torch.add(cand_flat + t * K * V, just, alpha=done)
        fin_code = torch.cat((fin_code, code), 1).gather(1, keep)
        fin_done = fin_code >= done

        hist.append(sel_flat)
        src = (torch.div(sel_flat, V, rounding_mode="floor") + offset).view(-1)
        seq = seq.index_select(0, src)
        seq[:, cur_len] = (sel_flat % V).view(-1)
        if state is not None:
            state = reorder(state, src)

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
        going = unsat.any()
        if early_stopping is True:
            going = going & ~fin_done.all()
        if flag(going):
            break
    return _backtrack(input_ids, fin_scores, fin_code, done, torch.stack(hist), K, V, offset, R, pad_token_id)


def _backtrack(input_ids, fin_scores, fin_code, done, hist, K, V, offset, R, pad):
    """Rebuild the R best hypotheses of each sentence from the back-pointers: one walk from
    the last step to the first, over all hypotheses at once."""
    B, L0 = input_ids.shape
    code = fin_code[:, :R]
    code = torch.where(code >= done, code - done, code)
    step = torch.where(code >= 0, torch.div(code, K * V, rounding_mode="floor"), -1)
    length = int((step + 1).max())  # the one host synchronisation: the output's length
    p = torch.div(code % (K * V), V, rounding_mode="floor")
    last_tok = code % V
    last_beam = p + offset
    hist_parent = torch.div(hist, V, rounding_mode="floor")
    hist_tok = hist % V
    toks, beams = [], []
    for s in range(length - 1, -1, -1):
        end = step == s
        mid = step > s
        anc_tok = hist_tok[s].gather(1, p)
        anc_parent = hist_parent[s].gather(1, p)
        toks.append(torch.where(end, last_tok, torch.where(mid, anc_tok, pad)))
        beams.append(torch.where(end, last_beam, torch.where(mid, anc_parent + offset, -1)))
        p = torch.where(mid, anc_parent, p)
    gen = torch.stack(toks[::-1], 2) if toks else input_ids.new_empty((B, R, 0))
    bidx = torch.stack(beams[::-1], 2) if beams else input_ids.new_empty((B, R, 0))
    sequences = torch.cat((input_ids[:, None, :].expand(B, R, L0), gen), 2).reshape(B * R, -1)
    return BeamSearchOutput(sequences=sequences, sequences_scores=fin_scores[:, :R].reshape(-1),
                            beam_indices=bidx.reshape(B * R, -1))


def _decode_loop(step_fn, input_ids, state, max_length, eos, pad_token_id, min_length, ngram, choose):
    """Shared loop of the greedy and sampling decoders: ``choose(logits, banned, scores)`` ->
    (tokens [N], new cumulative scores [N])."""
    dev = input_ids.device
    N, L0 = input_ids.shape
    eos_t = torch.tensor(eos, dtype=torch.long, device=dev) if eos else None
    seq = torch.full((N, max_length), pad_token_id, dtype=torch.long, device=dev)
    seq[:, :L0] = input_ids
    unfinished = torch.ones(N, dtype=torch.bool, device=dev)
    end_len = torch.full((N,), max_length, dtype=torch.long, device=dev)
    flag = _StopFlag(dev)
    scores = None
    for cur_len in range(L0, max_length):
        logits, state = step_fn(seq[:, :cur_len], state)
        logits = _check_logits(logits, N, dev, eos)
        if scores is None:
            scores = torch.zeros(N, dtype=_score_dtype(logits.dtype), device=dev)
        banned = _banned_tokens(seq, cur_len, eos_t, min_length, ngram)
        tok, new_scores = choose(logits, banned, scores)
        tok = torch.where(unfinished, tok, pad_token_id)
        scores = torch.where(unfinished, new_scores, scores)
        seq[:, cur_len] = tok
        if eos_t is not None:
            ended = unfinished & _is_eos(tok, eos, eos_t)
            end_len = torch.where(ended, cur_len + 1, end_len)
            unfinished = unfinished & ~ended
        if cur_len + 1 < max_length and flag(unfinished.any()):
            break
    return GenerationOutput(sequences=seq[:, :int(end_len.max())], sequences_scores=scores)


def greedy_search(step_fn: Callable, input_ids: torch.Tensor, state=None, *, max_length: int,
                  eos_token_id: Union[int, Sequence[int], None], pad_token_id: int, min_length: int = 0,
                  no_repeat_ngram_size: int = 0, reorder_state: Optional[Callable] = None) -> GenerationOutput:
    """Greedy decoding with the beam-search API (transformers' ``generate(num_beams=1)``):
    the most likely token each step (lower id on ties, one fused step with K = 1); a sentence
    that emitted EOS is padded with ``pad_token_id``. ``reorder_state`` is accepted for
    symmetry; greedy never reorders."""
    _check_common(step_fn, input_ids, max_length, pad_token_id, min_length, no_repeat_ngram_size, reorder_state)
    eos = _eos_list(eos_token_id)

    def choose(logits, banned, scores):
        s, i = beam_search_step(logits, scores, 1, 1, banned)
        return i[:, 0], s[:, 0]

    return _decode_loop(step_fn, input_ids, state, max_length, eos, pad_token_id, min_length,
                        no_repeat_ngram_size, choose)


def sample(step_fn: Callable, input_ids: torch.Tensor, state=None, *, max_length: int,
           eos_token_id: Union[int, Sequence[int], None], pad_token_id: int, temperature: float = 1.0,
           top_k: int = 0, min_length: int = 0, no_repeat_ngram_size: int = 0, num_return_sequences: int = 1,
           reorder_state: Optional[Callable] = None, generator: Optional[torch.Generator] = None
           ) -> GenerationOutput:
    """Ancestral sampling with the beam-search API (transformers' ``generate(do_sample=True)``):
    bans (min_length, n-grams), then logits / temperature, then keep the top_k logits (0 = all),
    then one multinomial draw from the softmax. With the same seed and ``generator=None`` the
    draws equal transformers'. R = num_return_sequences samples per prompt (rows b*R .. b*R+R-1);
    the state is expanded with ``reorder_state``."""
    _check_common(step_fn, input_ids, max_length, pad_token_id, min_length, no_repeat_ngram_size, reorder_state)
    _check_int("num_return_sequences", num_return_sequences, 1)
    _check_int("top_k", top_k, 0)
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool):
        raise TypeError(f"temperature must be a number, got {type(temperature).__name__}")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive finite number, got {temperature}")
    eos = _eos_list(eos_token_id)
    R = num_return_sequences
    if R > 1:
        expand = torch.arange(input_ids.shape[0], device=input_ids.device).repeat_interleave(R)
        input_ids = input_ids.index_select(0, expand)
        if state is not None:
            state = (reorder_state or _index_select_state)(state, expand)

    def choose(logits, banned, scores):
        x = logits.to(dtype=torch.float32 if logits.dtype != torch.float64 else torch.float64, copy=True)
        if banned is not None:
            V = x.shape[1]
            mask = torch.zeros((x.shape[0], V + 1), dtype=torch.bool, device=x.device)
            mask.scatter_(1, torch.where(banned < 0, V, banned), True)
            x = x.masked_fill(mask[:, :V], -math.inf)
        if temperature != 1.0:
            x = x / temperature
        if top_k:
            kth = torch.topk(x, min(top_k, x.shape[1]))[0][..., -1, None]
            x = x.masked_fill(x < kth, -math.inf)
        probs = torch.softmax(x, dim=-1)
        tok = torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)
        logp = torch.log_softmax(x, dim=-1).gather(1, tok[:, None])[:, 0]
        return tok, scores + logp.to(scores.dtype)

    return _decode_loop(step_fn, input_ids, state, max_length, eos, pad_token_id, min_length,
                        no_repeat_ngram_size, choose)


when_built(_register)
