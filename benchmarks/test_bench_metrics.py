"""Caption metrics vs their peers on identical sentences: batched tensor sentence BLEU (a
REINFORCE reward) vs a sacrebleu sentence_score loop, and CIDEr-D vs pycocoevalcap's Cider.

Why the two sides do the same work:
- Inputs: the same sentences, in each side's own input form, made before timing: token-id
  tensors on the device for ours, the space-joined strings for sacrebleu. The token-to-string
  conversion a sacrebleu user must also do is left out of the peer's time (it favours the
  peer). CIDEr: the same hypothesis and reference strings, as lists (ours) and as the
  id-keyed dicts pycocoevalcap's API takes.
- Outputs: BLEU, the (B,) float tensor of per-sentence add-k BLEU-4 on the host (the peer
  builds it from its loop; ours copies it from the device, which ends its timed call with a
  synchronisation on CUDA); CIDEr-D, the corpus score and the per-sentence scores, with the
  document frequencies computed from the references inside the call on both sides.
  Checked equal before timing.
- Precision: float32 BLEU tensors on both sides (the peer's Python floats go into one);
  CIDEr in float64 on both.
- Warm-up: outside the timed region (conftest.measure).

Without sacrebleu or pycocoevalcap (the lent GPU host has no pycocoevalcap), only the cases
needing the missing peer skip.
"""
import random

import pytest
import torch

from benchmarks.conftest import DEVICE, measure, tag
from fastpapers.metrics import batch_sentence_bleu, cider_d

try:
    import sacrebleu
except ImportError:
    sacrebleu = None
try:
    from pycocoevalcap.cider.cider import Cider
except ImportError:
    Cider = None

V = 30


def _batch(b, length=20, refs=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    ref = torch.randint(4, 4 + V, (b, refs, length), generator=g)
    keep = torch.rand(b, length, generator=g) < 0.6
    hyp = torch.where(keep, ref[:, 0], torch.randint(4, 4 + V, (b, length), generator=g))
    hyp[:, length - 3:] = 0  # shorter hypotheses: brevity penalty active
    return hyp, ref


def _strings(x):
    return [" ".join(str(t) for t in row if t != 0) for row in x.tolist()]


@pytest.mark.parametrize("impl", ["peer", "ours"])
@pytest.mark.parametrize("b", [64, 512])
def test_sentence_bleu_batch(benchmark, b, impl):
    if sacrebleu is None:
        pytest.skip("sacrebleu is not installed")
    hyp, ref = _batch(b)
    hs, rs = _strings(hyp), [_strings(ref[i]) for i in range(b)]
    metric = sacrebleu.BLEU(tokenize="none", smooth_method="add-k", effective_order=True)

    def peer():
        return torch.tensor([metric.sentence_score(h, r).score / 100 for h, r in zip(hs, rs)], dtype=torch.float32)

    hyp_d, ref_d = hyp.to(DEVICE), ref.to(DEVICE)

    def ours():
        out = batch_sentence_bleu(hyp_d, ref_d, smooth="add-k")
        return out.cpu()

    if impl == "ours":
        torch.testing.assert_close(ours(), peer(), rtol=1e-6, atol=1e-7)
    tag(benchmark, f"sentence BLEU-4 add-k, {b} x 20 tokens, 2 refs ({DEVICE})", impl, "sacrebleu sentence_score loop",
        f"({b},) per-sentence BLEU-4 on the host")
    measure(benchmark, peer if impl == "peer" else ours, rounds=5, warmup=1)


@pytest.mark.parametrize("impl", ["peer", "ours"])
def test_cider_d(benchmark, impl):
    if Cider is None:
        pytest.skip("pycocoevalcap is not installed")
    rng = random.Random(0)
    words = [f"w{i}" for i in range(40)]
    refs = [[" ".join(rng.choice(words) for _ in range(rng.randint(6, 14))) for _ in range(5)] for _ in range(500)]
    hyps = [" ".join(r[0].split()[: rng.randint(3, 12)]) for r in refs]
    gts, res = {i: r for i, r in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)}
    if impl == "ours":
        want, want_per = Cider().compute_score(gts, res)
        got, got_per = cider_d(hyps, refs)
        assert got == pytest.approx(want, rel=1e-10)
        assert list(got_per) == pytest.approx(list(want_per), rel=1e-10, abs=1e-12)
    tag(benchmark, "CIDEr-D, 500 sentences x 5 refs", impl, "pycocoevalcap Cider",
        "corpus + 500 per-sentence CIDEr-D scores")
    fn = (lambda: Cider().compute_score(gts, res)) if impl == "peer" else (lambda: cider_d(hyps, refs))
    measure(benchmark, fn, rounds=3, warmup=1)
