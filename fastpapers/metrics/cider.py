"""CIDEr-D, as computed by pycocoevalcap's ``Cider`` (the coco-caption implementation).

For each n = 1..4: tf-idf vectors of n-gram counts, idf = log(#documents) - log(max(1, df))
with df counted over the reference sets (one document per image); the hypothesis' weights are
clipped at the reference's (``min``), the dot product is divided by both norms, multiplied by a
Gaussian length penalty exp(-(l_h - l_r)^2 / (2 sigma^2)), averaged over the references and the
four orders, and scaled by 10. coco-caption measures "length" by its number of bigrams
(counted when ``len(ngram) - 1 == 1``); we keep that so scores match it exactly.
"""
import math
from collections import Counter, defaultdict
from typing import Dict, List, Optional, Sequence, Tuple


def _counts(sentence: str, n: int) -> Counter:
    words = sentence.split()
    return Counter(tuple(words[i:i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def document_frequency(refs: Sequence[Sequence[str]], n: int = 4) -> Tuple[Dict[tuple, float], int]:
    """(df over the reference sets, number of sets): precompute once from a training corpus to use
    CIDEr-D as a reward with stable idf weights."""
    df: Dict[tuple, float] = defaultdict(float)
    for rs in refs:
        for g in {g for r in rs for g in _counts(r, n)}:
            df[g] += 1
    return df, len(refs)


def cider_d(hyps: Sequence[str], refs: Sequence[Sequence[str]], *, n: int = 4, sigma: float = 6.0,
            df: Optional[Tuple[Dict[tuple, float], int]] = None) -> Tuple[float, List[float]]:
    """-> (corpus CIDEr-D, per-sentence scores). ``refs[i]`` lists the references of ``hyps[i]``
    (strings, tokens separated by spaces). ``df`` defaults to the df of ``refs`` itself."""
    if len(hyps) != len(refs):
        raise ValueError(f"refs must hold one list of references per hypothesis: {len(hyps)} hyps, "
                         f"{len(refs)} refs")
    if any(len(r) == 0 for r in refs):
        raise ValueError("refs must hold at least one reference per hypothesis")
    freq, ndocs = df if df is not None else document_frequency(refs, n)
    log_docs = math.log(float(ndocs))

    def vec(counts: Counter):
        v = [dict() for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for g, tf in counts.items():
            k = len(g) - 1
            w = float(tf) * (log_docs - math.log(max(1.0, freq.get(g, 0.0))))
            v[k][g] = w
            norm[k] += w * w
            if k == 1:
                length += tf
        return v, [math.sqrt(x) for x in norm], length

    scores = []
    for hyp, rs in zip(hyps, refs):
        vh, nh, lh = vec(_counts(hyp, n))
        total = [0.0] * n
        for r in rs:
            vr, nr, lr = vec(_counts(r, n))
            penalty = math.exp(-((lh - lr) ** 2) / (2 * sigma ** 2))
            for k in range(n):
                val = sum(min(w, vr[k].get(g, 0.0)) * vr[k].get(g, 0.0) for g, w in vh[k].items())
                if nh[k] != 0 and nr[k] != 0:
                    val /= nh[k] * nr[k]
                total[k] += val * penalty
        scores.append(sum(total) / n / len(rs) * 10.0)
    return (sum(scores) / len(scores) if scores else 0.0), scores
