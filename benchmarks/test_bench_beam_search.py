"""Beam search vs transformers (B=32 sentences, K=5 beams, V=32,000, 64 steps), same step
function on both sides; and the fused step alone vs log_softmax + add + topk.

The step function is deliberately cheap so that the engines, not the model, are timed: it
returns a [B*K, V] window of one of four pre-drawn [2*B*K, V] logit matrices (a view, no
copy), matrix and row offset chosen by the current length, so no two of the 64 steps see the
same logits (with a period of 4 steps, hypotheses made of the same laps in another order tie up
to rounding and the equality check becomes a coin toss); every third row favours EOS so that
hypotheses finish along the way and the finalisation paths run. transformers runs it through ``generate(num_beams=5)`` on a minimal
PreTrainedModel whose forward returns those logits (fastpapers.reference.beam_search.
transformers_generate); both engines receive the same [B*K, cur_len] token ids each step.
Results (sequences, scores) are checked equal before timing.
"""
import pytest
import torch

from benchmarks.conftest import tag
from fastpapers import ops
from fastpapers.reference.beam_search import transformers_generate

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
B, K, V, STEPS, L0 = 32, 5, 32000, 64, 4
EOS, PAD = 2, 1


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


@pytest.fixture(scope="module")
def problem():
    g = torch.Generator().manual_seed(0)
    bank = torch.randn(4, 2 * B * K, V, generator=g) * 3
    bank[:, ::3, EOS] = 11.0
    bank = bank.to(DEVICE)
    ids = torch.randint(3, V, (B, L0), generator=g).to(DEVICE)

    def fn(input_ids):
        t = input_ids.shape[1]
        o = (t * 37) % (B * K)
        return bank[t % 4, o:o + B * K]

    opts = dict(num_beams=K, max_length=L0 + STEPS, eos_token_id=EOS, pad_token_id=PAD)
    ours = ops.beam_search(lambda x, s: (fn(x), s), ids, **opts)
    peer = transformers_generate(fn, ids, V, **opts)
    assert torch.equal(ours.sequences, peer.sequences)
    torch.testing.assert_close(ours.sequences_scores, peer.sequences_scores, rtol=1e-5, atol=1e-6)
    return fn, ids, opts


@pytest.mark.parametrize("impl", ["peer", "ours"])
def test_beam_search_end_to_end(benchmark, problem, impl):
    fn, ids, opts = problem
    tag(benchmark, f"beam search B={B} K={K} V={V} {STEPS} steps ({DEVICE})", impl,
        "transformers generate(num_beams=5)")
    if impl == "peer":
        def run():
            out = transformers_generate(fn, ids, V, **opts)
            _sync()
            return out
    else:
        def run():
            out = ops.beam_search(lambda x, s: (fn(x), s), ids, **opts)
            _sync()
            return out
    benchmark.pedantic(run, rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("impl", ["peer", "ours"])
def test_fused_step(benchmark, impl):
    g = torch.Generator().manual_seed(1)
    logits = (torch.randn(B * K, V, generator=g) * 3).to(DEVICE)
    scores = torch.randn(B * K, generator=g).to(DEVICE)

    def peer():
        lp = torch.log_softmax(logits, dim=-1) + scores[:, None]
        out = lp.view(B, K * V).topk(2 * K)
        _sync()
        return out

    def ours():
        out = ops.beam_search_step(logits, scores, K, 2 * K)
        _sync()
        return out

    (ps, pi), (os_, oi) = peer(), ours()
    assert torch.equal(pi, oi)
    torch.testing.assert_close(ps, os_, rtol=1e-5, atol=1e-5)
    tag(benchmark, f"fused step log_softmax+add+top-{2 * K}, {B * K}x{V} ({DEVICE})", impl,
        "torch log_softmax + add + topk")
    benchmark.pedantic(peer if impl == "peer" else ours, rounds=20, warmup_rounds=2)
