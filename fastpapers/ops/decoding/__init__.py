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
read every step (a few microseconds) and the loop stops exactly when transformers' does.
On CUDA the flag is copied to pinned memory asynchronously every ``CHECK_EVERY`` = 8 steps and
read once that copy has landed, so the host never waits for the device inside the loop; the
loop may then run up to about 2 * CHECK_EVERY steps past the stop (calling ``step_fn`` for
them), which changes no result: finished sentences only collect -1e9 candidates, finished
greedy/sampled rows only pad. The one blocking read is at the end, for the output's length.
On meta tensors the loop runs to ``max_length`` and the output has the full length.

Bad values. Logits with NaN or +inf (or a row without a finite logit) raise
:class:`~fastpapers.ops.OpValueError` naming step_fn: on the CPU once at the end of the call
(the fused step's NaN mark is sticky in the running scores), on CUDA per step in checked mode
(:func:`fastpapers.ops.set_checks`). On CUDA without checks they give NaN scores and
in-range, unspecified tokens, never an out-of-bounds access. -inf logits are a mask and
decode normally. Sizes are bounded: rows * max_length <= ``MAX_TOKEN_SLOTS``.
"""
from ._common import (CHECK_EVERY, MAX_TOKEN_SLOTS, BeamSearchOutput, GenerationOutput, _banned_tokens,  # noqa: F401
                      _is_eos)
from .beam import beam_search
from .greedy import greedy_search, sample

__all__ = ["beam_search", "greedy_search", "sample", "BeamSearchOutput", "GenerationOutput", "CHECK_EVERY",
           "MAX_TOKEN_SLOTS"]
