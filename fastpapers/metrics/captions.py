"""Caption scores of a corpus: BLEU-1..4, CIDEr-D and (with Java) METEOR, references tokenised
like the vocabulary."""
from typing import Dict, List

__all__ = ["caption_scores"]


def caption_scores(references: List[List[str]], hypotheses: List[str], *, meteor: bool = True) -> Dict[str, float]:
    """Corpus BLEU-1..4 and CIDEr-D, and METEOR when ``meteor`` and Java runs (it starts a JVM
    that loads METEOR's paraphrase tables: minutes on a busy machine). References are
    tokenised and lower-cased like the vocabulary; hypotheses are space-separated tokens."""
    from ..data import tokenize
    from .bleu import corpus_bleu
    from .cider import cider_d
    from .meteor import Meteor, meteor_available

    refs = [[" ".join(tokenize(c)) for c in rs] for rs in references]
    scores = {f"BLEU-{n}": v for n, v in zip(range(1, 5), corpus_bleu(hypotheses, refs).values())}
    scores["CIDEr"] = cider_d(hypotheses, refs)[0]
    if meteor and meteor_available():
        with Meteor() as m:
            scores["METEOR"] = m.score(hypotheses, refs)[0]
    return scores
