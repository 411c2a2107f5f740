"""Batched beam search with transformers' semantics (see the package docstring)."""
import math
from typing import Callable, Optional, Sequence, Union

import torch

from ..._ext import require_ext
from .._validate import OpTypeError, OpValueError, value_checks
from ..beam_search import _check_int, _score_dtype, fused_step
from ._common import (BeamSearchOutput, _Bans, _check_common, _check_slots, _check_step_scores, _device_ids,
                      _eos_list, _is_eos, _Logits, _processed_log_probs, _Reorder, _StopFlag)
from .greedy import _greedy_as_beam

__all__ = ["beam_search"]


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
    step_checks = checks and dev.type != "cpu"
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
        logits, state = logits_check(step_fn(seq.narrow(1, 0, cur_len), state), t)
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
        _check_step_scores(cand_scores, t, step_checks)
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
        seq.select(1, cur_len).copy_(cand_tok.gather(1, sel).view(-1))
        state = reorder(state, src, N, "B*K (one per beam)")

        # transformers' stopping heuristic, evaluated at the new length.
        if early_stopping == "never" and length_penalty > 0.0:
            best_len = max_length - L0
        else:
            best_len = cur_len + 1 - L0
        best_running = run_scores.narrow(1, 0, 1) / (best_len ** length_penalty)
        # fin_scores is sorted best first (topk), so its last column is the minimum; a [B, K]
        # min-reduction wakes the OpenMP pool and cost 30 ms per step on a busy 2-core machine.
        worst_finished = torch.where(fin_done, fin_scores.narrow(1, K - 1, 1), -1e9)
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
    _check_step_scores(run_scores, None, checks and not step_checks)
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


