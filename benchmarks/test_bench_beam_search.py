"""Beam search vs transformers ``generate(num_beams=5)`` (B=32 and B=1 sentences, K=5 beams,
V=32,000, 64 steps) on the same step function; and the fused step alone vs log_softmax + add
+ topk.

The step function is deliberately cheap so that the engines, not the model, are timed: it
returns a [B*K, V] window of one of four pre-drawn [2*B*K, V] logit matrices (a view, no
copy), matrix and row offset chosen by the current length, so no two of the 64 steps see the
same logits (with a period of 4 steps, hypotheses made of the same laps in another order tie
up to rounding and the equality check becomes a coin toss); every third row favours EOS so
that hypotheses finish along the way and the finalisation paths run. transformers runs it
through a minimal PreTrainedModel whose forward returns those logits
(fastpapers.reference.beam_search.transformers_generate).

Why the two sides do the same work:
- Inputs: the same (B, 4) int64 prompts on the device and the same step function; both
  engines hand it the same [B*K, cur_len] token ids each step. Same options: K=5,
  max_length = 4 + 64, EOS 2, PAD 1, length_penalty 1, early_stopping False, no cache.
- Outputs, mode "sequences": the peer runs with ``output_scores=False``, the options of a
  user who wants only the sequences, and returns the (B, L) sequences; ours returns them and
  the B final scores (read off the running beam scores both engines keep anyway). Mode
  "sequences+step scores" (only where ``ops.beam_search`` has an ``output_scores`` option):
  both also keep the [B*K, V] processed scores of every step. Sequences and final scores are
  checked equal before timing (the check runs the peer with scores on).
- Host work: the peer's wrapper builds a parameterless PreTrainedModel per call (about
  0.5 ms on the CPU, under 1 % of the peer's time at either B); both run under no_grad.
- Precision: float32 logits on both sides; no matrix products.
- Synchronisation: each timed call ends with ``torch.cuda.synchronize()`` on both sides.
- Warm-up: outside the timed region (conftest.measure).

The fused step: both sides take the same (B*K, V) float32 logits and (B*K,) beam scores and
return the best 2K scores and flat indices of ``log_softmax(logits) + scores`` per sentence,
over its K*V continuations (transformers' own step), checked equal before timing.
"""
import inspect

import pytest
import torch

from benchmarks.conftest import DEVICE, measure, sync, tag
from fastpapers import ops
from fastpapers.reference.beam_search import transformers_generate

K, V, STEPS, L0 = 5, 32000, 64, 4
EOS, PAD = 2, 1
OURS_HAS_STEP_SCORES = "output_scores" in inspect.signature(ops.beam_search).parameters
PEER = "transformers generate(num_beams=5)"


@pytest.fixture(scope="module", params=[32, 1], ids=lambda b: f"B{b}")
def problem(request):
    b = request.param
    g = torch.Generator().manual_seed(0)
    bank = torch.randn(4, 2 * b * K, V, generator=g) * 3
    bank[:, ::3, EOS] = 11.0
    bank = bank.to(DEVICE)
    ids = torch.randint(3, V, (b, L0), generator=g).to(DEVICE)

    def fn(input_ids):
        t = input_ids.shape[1]
        o = (t * 37) % (b * K)
        return bank[t % 4, o:o + b * K]

    opts = dict(num_beams=K, max_length=L0 + STEPS, eos_token_id=EOS, pad_token_id=PAD)
    ours = ops.beam_search(lambda x, s: (fn(x), s), ids, **opts)
    peer = transformers_generate(fn, ids, V, **opts)
    assert torch.equal(ours.sequences, peer.sequences)
    torch.testing.assert_close(ours.sequences_scores, peer.sequences_scores, rtol=1e-5, atol=1e-6)
    return b, fn, ids, opts


@pytest.mark.parametrize("impl", ["peer", "ours"])
@pytest.mark.parametrize("mode", ["sequences", "sequences+step scores"])
def test_beam_search_end_to_end(benchmark, problem, mode, impl):
    b, fn, ids, opts = problem
    step_scores = mode != "sequences"
    if step_scores and not OURS_HAS_STEP_SCORES:
        pytest.skip("ops.beam_search has no output_scores option")
    ours_opts = dict(opts, output_scores=step_scores) if OURS_HAS_STEP_SCORES else opts
    work = (f"(B, {L0 + STEPS}) sequences" + (" + final scores (ours)" if not step_scores else
                                               " + final scores + the [B*K, V] scores of every step"))
    suffix = "" if mode == "sequences" else ", per-step scores kept"
    tag(benchmark, f"beam search B={b} K={K} V={V} {STEPS} steps{suffix} ({DEVICE})", impl,
        PEER + f", output_scores={step_scores}", work)
    if impl == "peer":
        def run():
            out = transformers_generate(fn, ids, V, output_scores=step_scores, **opts)
            sync()
            return out
    else:
        def run():
            out = ops.beam_search(lambda x, s: (fn(x), s), ids, **ours_opts)
            sync()
            return out
    measure(benchmark, run, rounds=3 if DEVICE == "cpu" else 10, warmup=1 if DEVICE == "cpu" else 2)


@pytest.mark.parametrize("impl", ["peer", "ours"])
@pytest.mark.parametrize("b", [32, 1])
def test_fused_step(benchmark, b, impl):
    g = torch.Generator().manual_seed(1)
    logits = (torch.randn(b * K, V, generator=g) * 3).to(DEVICE)
    scores = torch.randn(b * K, generator=g).to(DEVICE)

    def peer():
        lp = torch.log_softmax(logits, dim=-1) + scores[:, None]
        out = lp.view(b, K * V).topk(2 * K)
        sync()
        return out

    def ours():
        out = ops.beam_search_step(logits, scores, K, 2 * K)
        sync()
        return out

    if impl == "ours":
        (ps, pi), (os_, oi) = peer(), ours()
        assert torch.equal(pi, oi)
        torch.testing.assert_close(ps, os_, rtol=1e-5, atol=1e-5)
    tag(benchmark, f"fused step log_softmax+add+top-{2 * K}, {b * K}x{V} ({DEVICE})", impl,
        "torch log_softmax + add + topk", f"(B, {2 * K}) best scores + flat indices of {b * K}x{V} float32 logits")
    measure(benchmark, peer if impl == "peer" else ours, rounds=20, warmup=2)
