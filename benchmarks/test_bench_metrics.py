"""Caption metrics vs their peers on identical sentences (results checked equal before timing):
batched tensor sentence BLEU (a REINFORCE reward) vs a sacrebleu sentence_bleu loop, and
CIDEr-D vs pycocoevalcap's Cider."""
import random

import pytest
import sacrebleu
import torch
from pycocoevalcap.cider.cider import Cider

from benchmarks.conftest import tag
from fastpapers.metrics import batch_sentence_bleu, cider_d

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
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
    hyp, ref = _batch(b)
    hs, rs = _strings(hyp), [_strings(ref[i]) for i in range(b)]
    metric = sacrebleu.BLEU(tokenize="none", smooth_method="add-k", effective_order=True)

    def peer():
        return torch.tensor([metric.sentence_score(h, r).score / 100 for h, r in zip(hs, rs)])

    hyp_d, ref_d = hyp.to(DEVICE), ref.to(DEVICE)

    def ours():
        out = batch_sentence_bleu(hyp_d, ref_d, smooth="add-k")
        return out.cpu()

    torch.testing.assert_close(ours(), peer().float(), rtol=1e-6, atol=1e-7)
    tag(benchmark, f"sentence BLEU-4 add-k, {b} x 20 tokens, 2 refs ({DEVICE})", impl, "sacrebleu sentence_score loop")
    benchmark.pedantic(peer if impl == "peer" else ours, rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("impl", ["peer", "ours"])
def test_cider_d(benchmark, impl):
    rng = random.Random(0)
    words = [f"w{i}" for i in range(40)]
    refs = [[" ".join(rng.choice(words) for _ in range(rng.randint(6, 14))) for _ in range(5)] for _ in range(500)]
    hyps = [" ".join(r[0].split()[: rng.randint(3, 12)]) for r in refs]
    gts, res = {i: r for i, r in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)}
    want = Cider().compute_score(gts, res)[0]
    assert cider_d(hyps, refs)[0] == pytest.approx(want, rel=1e-10)
    tag(benchmark, "CIDEr-D, 500 sentences x 5 refs", impl, "pycocoevalcap Cider")
    fn = (lambda: Cider().compute_score(gts, res)) if impl == "peer" else (lambda: cider_d(hyps, refs))
    benchmark.pedantic(fn, rounds=3, warmup_rounds=1)
