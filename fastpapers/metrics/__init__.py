"""Evaluation metrics: caption/translation scores, Parzen log-likelihood, the papers' judges.

- BLEU: ``corpus_bleu(hyps, refs)`` -> {"bleu_1".."bleu_4"}; ``sentence_bleu(hyp, refs,
  smooth="add-k")``; ``batch_sentence_bleu(hyp_ids (B, L), ref_ids (B, [R,] L), pad_id=0)``
  -> (B,) rewards on the device; ``best_reference_bleu`` (max over alternative references).
  Sentences are strings (split on spaces) or token lists.
- ``cider_d(hyps, refs)``, ``rouge_l(hyps, refs)``, ``corpus_token_f1(hyps, refs)`` ->
  (corpus score, per-sentence scores); ``Meteor().score(hyps, refs)`` (needs Java).
- ``dense_captioning_map(predictions, ground_truth, language="meteor"|"token_f1")`` -> DenseCap
  mAP (mean of 30 APs over IoU x language thresholds) and detection mAP.
- ``parzen_evaluate(samples, valid, test)`` -> {"log_likelihood", "std_error", "sigma"}.
- Submodules: :mod:`.captions` (``caption_scores``: BLEU-1..4, CIDEr-D, METEOR of a corpus),
  :mod:`.gam` (GRAN's generative adversarial metric: battles between two GANs), :mod:`.judge`
  (the shapes-world judge network, attribute accuracy, pairwise AUC), :mod:`.style` (the Gram
  distance of neural style).

``refs[i]`` is always the list of references of ``hyps[i]``.
"""
from . import captions, gam, judge, style  # noqa: F401 (submodules)
from .bleu import (batch_sentence_bleu, best_reference_bleu, corpus_bleu, score_from_stats, sentence_bleu,
                   sentence_stats)
from .cider import cider_d, document_frequency
from .captions import caption_scores
from .dense_ap import dense_captioning_map, merge_boxes
from .meteor import Meteor, MeteorUnavailable, meteor_available
from .parzen import parzen_evaluate, parzen_log_likelihood, select_sigma
from .rouge import rouge_l, rouge_l_sentence
from .token_f1 import corpus_token_f1, token_f1

__all__ = ["batch_sentence_bleu", "best_reference_bleu", "corpus_bleu", "score_from_stats", "sentence_bleu",
           "sentence_stats", "cider_d", "document_frequency", "Meteor", "MeteorUnavailable", "meteor_available", "parzen_evaluate",
           "parzen_log_likelihood", "select_sigma", "rouge_l", "rouge_l_sentence", "corpus_token_f1", "token_f1",
           "dense_captioning_map", "merge_boxes", "captions", "gam", "judge", "style", "caption_scores"]
