"""ROUGE-L as pycocoevalcap's ``Rouge``: LCS precision and recall against each reference, the
best of each over the references, combined as F with beta = 1.2; the corpus score is the mean."""
from typing import List, Sequence, Tuple


def lcs_length(a: Sequence, b: Sequence) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l_sentence(hyp: str, refs: Sequence[str], beta: float = 1.2) -> float:
    if not refs:
        raise ValueError("refs must hold at least one reference")
    # coco-caption splits on single spaces; so do we, to give identical scores.
    h = hyp.split(" ")
    prec, rec = [], []
    for r in refs:
        t = r.split(" ")
        lcs = lcs_length(t, h)
        prec.append(lcs / len(h))
        rec.append(lcs / len(t))
    p, r = max(prec), max(rec)
    if p == 0 or r == 0:
        return 0.0
    return (1 + beta ** 2) * p * r / (r + beta ** 2 * p)


def rouge_l(hyps: Sequence[str], refs: Sequence[Sequence[str]], beta: float = 1.2) -> Tuple[float, List[float]]:
    """-> (mean ROUGE-L, per-sentence scores)."""
    if len(hyps) != len(refs):
        raise ValueError(f"refs must hold one list of references per hypothesis: {len(hyps)} hyps, "
                         f"{len(refs)} refs")
    scores = [rouge_l_sentence(h, rs, beta) for h, rs in zip(hyps, refs)]
    return (sum(scores) / len(scores) if scores else 0.0), scores
