import math
import random

import pytest
import sacrebleu
import torch

try:  # the coco-caption oracle; machines without it (the lent GPU host) skip only its cases
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
except ImportError:
    Bleu = Cider = Rouge = None

from fastpapers.data import AmbiguousTransduction
from tests.utils import DEVICES
from fastpapers.metrics import (Meteor, MeteorUnavailable, batch_sentence_bleu, best_reference_bleu, cider_d,
                                corpus_bleu, corpus_token_f1, meteor_available, parzen_evaluate,
                                parzen_log_likelihood, rouge_l, select_sigma, sentence_bleu, token_f1)

needs_coco = pytest.mark.skipif(Bleu is None, reason="needs pycocoevalcap (the coco-caption oracle)")

WORDS = "a the red blue small large circle square star above below left of right and".split()


def _corpus(n, seed, n_refs=3):
    """Random captions over a small vocabulary, references as perturbed copies: real overlap."""
    rng = random.Random(seed)

    def sent(lo=3, hi=12):
        return [rng.choice(WORDS) for _ in range(rng.randint(lo, hi))]

    hyps, refs = [], []
    for _ in range(n):
        base = sent()
        rs = []
        for _ in range(n_refs):
            r = [w if rng.random() < 0.7 else rng.choice(WORDS) for w in base]
            if rng.random() < 0.5:
                r = r + sent(1, 3)
            rs.append(" ".join(r))
        h = [w if rng.random() < 0.6 else rng.choice(WORDS) for w in base][: rng.randint(1, len(base))]
        hyps.append(" ".join(h))
        refs.append(rs)
    return hyps, refs


def test_corpus_bleu_matches_sacrebleu():
    hyps, refs = _corpus(300, 0)
    ours = corpus_bleu(hyps, refs)
    streams = [list(r) for r in zip(*refs)]
    for n in range(1, 5):
        want = sacrebleu.BLEU(tokenize="none", max_ngram_order=n).corpus_score(hyps, streams).score / 100
        assert ours[f"bleu_{n}"] == pytest.approx(want, rel=1e-12, abs=1e-14)


@needs_coco
def test_corpus_bleu_matches_pycocoevalcap():
    hyps, refs = _corpus(300, 1)
    ours = corpus_bleu(hyps, refs)
    score, _ = Bleu(4).compute_score({i: r for i, r in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)},
                                     verbose=0)
    for n in range(4):
        # coco-caption adds 1e-15 / 1e-9 guards to every ratio; nothing else differs.
        assert ours[f"bleu_{n + 1}"] == pytest.approx(score[n], rel=1e-7)


@pytest.mark.parametrize("smooth", ["none", "floor", "add-k", "exp"])
@pytest.mark.parametrize("effective_order", [True, False])
def test_sentence_bleu_matches_sacrebleu(smooth, effective_order):
    hyps, refs = _corpus(200, 2)
    hyps += ["red", "red circle", "", "a b c d e"]
    refs += [["red circle above"], ["red circle"], ["red"], ["x y z"]]
    metric = sacrebleu.BLEU(tokenize="none", smooth_method=smooth, effective_order=effective_order)
    for h, rs in zip(hyps, refs):
        want = metric.sentence_score(h, rs).score / 100
        got = sentence_bleu(h, rs, smooth=smooth, effective_order=effective_order)
        assert got == pytest.approx(want, rel=1e-12, abs=1e-14), (h, rs)


def _ids(sents, vocab, length, pad=0):
    out = torch.full((len(sents), length), pad, dtype=torch.long)
    for i, s in enumerate(sents):
        toks = [vocab[w] for w in s.split()]
        out[i, :len(toks)] = torch.tensor(toks, dtype=torch.long)
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("smooth", ["none", "floor", "add-k", "exp"])
@pytest.mark.parametrize("effective_order", [True, False])
def test_batched_bleu_equals_sentence_bleu(smooth, effective_order, device):
    hyps, refs = _corpus(150, 3, n_refs=2)
    hyps += ["red", "", "red red red red"]
    refs += [["red circle", "blue"], ["red", "red"], ["red red", "red"]]
    vocab = {w: i + 4 for i, w in enumerate(WORDS)}
    H = _ids(hyps, vocab, 16)
    Rf = torch.stack([_ids([r[k] for r in refs], vocab, 18) for k in range(2)], 1)
    got = batch_sentence_bleu(H.to(device), Rf.to(device), smooth=smooth, effective_order=effective_order)
    assert got.device.type == device
    got = got.cpu()
    want = torch.tensor([sentence_bleu(h, rs, smooth=smooth, effective_order=effective_order)
                         for h, rs in zip(hyps, refs)])
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    assert got.dtype == torch.float32 and got.shape == (len(hyps),)


def test_batched_bleu_stops_at_eos_and_best_reference():
    eos = 2
    hyp = torch.tensor([[5, 6, 7, 8, eos, 9, 9, 0]])
    ref = torch.tensor([[5, 6, 7, 8, eos, 0, 0, 0]])
    assert batch_sentence_bleu(hyp, ref, eos_id=eos).item() == pytest.approx(1.0)
    assert batch_sentence_bleu(hyp, ref).item() < 1.0  # without eos_id the tail counts
    data = AmbiguousTransduction(64, seed=0)
    reward = best_reference_bleu(data.target[:, 1:], data.references[:, :, 1:], eos_id=2, smooth="none",
                                 effective_order=False)
    assert torch.all(reward == 1.0)  # the target is always one of the references
    other = data.references[torch.arange(64), 1 - data.mode][:, 1:]
    plain = batch_sentence_bleu(other, data.target[:, 1:], eos_id=2)
    assert (plain < 1).float().mean() > 0.9


def test_bleu_bad_inputs():
    with pytest.raises(ValueError, match="smooth"):
        sentence_bleu("a", ["a"], smooth="laplace")
    with pytest.raises(ValueError, match="refs"):
        corpus_bleu(["a"], [])
    with pytest.raises(TypeError, match="hyps"):
        batch_sentence_bleu(torch.ones(2, 3), torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="refs"):
        batch_sentence_bleu(torch.ones(2, 3, dtype=torch.long), torch.ones(3, 3, dtype=torch.long))


@needs_coco
def test_cider_d_matches_pycocoevalcap():
    hyps, refs = _corpus(120, 4, n_refs=5)
    hyps += ["red", "a b"]  # one-word and unseen-word hypotheses
    refs += [["red circle", "red"], ["blue star", "a red star"]]
    ours, per = cider_d(hyps, refs)
    want, want_per = Cider().compute_score({i: r for i, r in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)})
    assert ours == pytest.approx(want, rel=1e-10)
    assert per == pytest.approx(list(want_per), rel=1e-10, abs=1e-12)


@needs_coco
def test_rouge_l_matches_pycocoevalcap():
    hyps, refs = _corpus(150, 5)
    ours, per = rouge_l(hyps, refs)
    want, want_per = Rouge().compute_score({i: r for i, r in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)})
    assert ours == pytest.approx(want, rel=1e-12)
    assert per == pytest.approx(list(want_per), rel=1e-12)


def test_token_f1():
    assert token_f1("small red triangle", ["small red triangle"]) == 1.0
    assert token_f1("red triangle", ["small red triangle"]) == pytest.approx(0.8)
    assert token_f1("blue", ["small red triangle", "blue square"]) == pytest.approx(2 / 3)
    assert token_f1("red red", ["red"]) == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert token_f1("", [""]) == 1.0 and token_f1("", ["a"]) == 0.0
    mean, per = corpus_token_f1(["a b", "c"], [["a b"], ["d"]])
    assert mean == 0.5 and per == [1.0, 0.0]


def test_parzen_equals_a_gaussian_for_one_sample():
    torch.manual_seed(0)
    mu = torch.randn(1, 7, dtype=torch.float64)
    x = torch.randn(50, 7, dtype=torch.float64)
    sigma = 0.7
    got = parzen_log_likelihood(mu, x, sigma, batch_size=8)
    want = torch.distributions.MultivariateNormal(mu[0], sigma ** 2 * torch.eye(7, dtype=torch.float64)).log_prob(x)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_parzen_matches_brute_force_and_is_stable(device):
    torch.manual_seed(1)
    s = torch.rand(300, 1, 4, 4)
    x = torch.rand(40, 1, 4, 4)
    sigma = 0.05  # far points: exp underflows in a naive sum
    d2 = ((x.reshape(40, 1, -1).double() - s.reshape(1, 300, -1).double()) ** 2).sum(-1)
    want = torch.logsumexp(-d2 / (2 * sigma ** 2), 1) - math.log(300) - 8 * math.log(2 * math.pi * sigma ** 2)
    got = parzen_log_likelihood(s.to(device), x.to(device), sigma, batch_size=7)
    assert got.device.type == device
    torch.testing.assert_close(got.cpu(), want, rtol=1e-9, atol=1e-8)
    assert torch.isfinite(got).all() and torch.isfinite(parzen_log_likelihood(s, x + 100, sigma)).all()


def test_parzen_bandwidth_selection():
    torch.manual_seed(2)
    samples, valid, test = torch.randn(2000, 2) * 0.5, torch.randn(300, 2) * 0.5, torch.randn(300, 2) * 0.5
    sigma = select_sigma(samples, valid, [0.01, 0.03, 0.1, 0.2, 0.3, 1.0, 3.0])
    assert sigma in (0.1, 0.2)  # Silverman's rule for n=2000, std 0.5 in 2-d gives ~0.12
    res = parzen_evaluate(samples, valid, test, [0.01, 0.1, 0.2, 1.0])
    # A density close to the truth scores close to the true entropy of N(0, 0.25 I): -2.0 nats... per point
    true = torch.distributions.Normal(0, 0.5).log_prob(test).sum(1).mean().item()
    assert abs(res["log_likelihood"] - true) < 0.15 and res["std_error"] > 0
    with pytest.raises(ValueError, match="sigma"):
        parzen_log_likelihood(samples, valid, 0.0)
    with pytest.raises(ValueError, match="x"):
        parzen_log_likelihood(samples, torch.randn(3, 5), 0.1)


needs_java = pytest.mark.skipif(not meteor_available(), reason="needs Java and pycocoevalcap's METEOR jar")


@needs_java
def test_meteor_bridge_matches_pycocoevalcap():
    from pycocoevalcap.meteor.meteor import Meteor as CocoMeteor
    hyps, refs = _corpus(40, 6)
    hyps[3] = "a line\nbreak ||| and pipes"  # would desynchronise pycocoevalcap's own wrapper
    with Meteor() as m:
        score, per = m.score(hyps, refs)
        again, _ = m.score(hyps[:5], refs[:5])  # the same process answers a second call
    clean = [" ".join(h.replace("|||", " ").split()) for h in hyps]
    want, want_per = CocoMeteor().compute_score({i: r for i, r in enumerate(refs)},
                                                {i: [h] for i, h in enumerate(clean)})
    assert score == pytest.approx(want, abs=1e-9)
    assert per == pytest.approx(list(want_per), abs=1e-9)
    assert 0 < score < 1 and again > 0


def test_meteor_without_java_is_a_clear_error():
    with pytest.raises(MeteorUnavailable, match="Java"):
        Meteor(java="no-such-java-binary")
