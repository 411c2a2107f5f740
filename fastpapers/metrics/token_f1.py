"""Token-F1 caption similarity: the language score used where METEOR (Java) is unavailable."""
from collections import Counter
from typing import List, Sequence, Tuple, Union

Tokens = Union[str, Sequence]


def token_f1(hyp: Tokens, refs: Sequence[Tokens]) -> float:
    """Best over the references of the F1 between token multisets (bag-of-words overlap).
    Two empty sentences score 1; one empty, 0."""
    if not refs:
        raise ValueError("refs must hold at least one reference")
    h = Counter(hyp.split() if isinstance(hyp, str) else hyp)
    best = 0.0
    for ref in refs:
        r = Counter(ref.split() if isinstance(ref, str) else ref)
        if not h and not r:
            return 1.0
        overlap = sum((h & r).values())
        if overlap == 0:
            continue
        p, q = overlap / sum(h.values()), overlap / sum(r.values())
        best = max(best, 2 * p * q / (p + q))
    return best


def corpus_token_f1(hyps: Sequence[Tokens], refs: Sequence[Sequence[Tokens]]) -> Tuple[float, List[float]]:
    if len(hyps) != len(refs):
        raise ValueError(f"refs must hold one list of references per hypothesis: {len(hyps)} hyps, "
                         f"{len(refs)} refs")
    scores = [token_f1(h, rs) for h, rs in zip(hyps, refs)]
    return (sum(scores) / len(scores) if scores else 0.0), scores
