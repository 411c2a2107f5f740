"""Dense-captioning mAP (Johnson et al. 2016; jcjohnson/densecap ``eval/eval_utils.lua``).

Per image: ground-truth boxes overlapping at IoU >= 0.7 are merged (repeatedly take the box
with the most partners at IoU >= 0.7, replace the group by its mean box, which keeps every
caption of the group as a reference). Predictions, by decreasing score, are each matched to
the merged box of highest IoU; the first prediction to take a box may count as a hit, later
ones never do (as in the reference, a box is taken whatever the IoU). Each match records the
IoU and the language score of its caption against the box's references.

Across the dataset, records are sorted by score; for an IoU threshold t and a language
threshold m a record is a true positive when IoU >= t, it took its box first and
language score > m. AP is the 101-point max-interpolated precision (recall 0, 0.01, .., 1,
recall over the number of merged boxes). mAP is the mean over IoU in {0.3, 0.4, 0.5, 0.6, 0.7}
x language thresholds {0, 0.05, 0.1, 0.15, 0.2, 0.25} (30 APs); ``det_map`` is the same with
the language threshold -1 (detection only).

Language score: ``"meteor"`` (METEOR 1.5 through Java, :class:`fastpapers.metrics.Meteor`,
the paper's) or ``"token_f1"`` (bag-of-words F1, best over references, no Java: **not**
comparable to the paper's numbers; reported as ``map_token_f1``-style results by callers).

Deviation: IoU is computed on continuous coordinates (the reference adds Torch's +1 pixel to
widths and heights).
"""
from typing import Dict, List, Optional, Sequence

import torch

from ..ops.boxes import box_iou

__all__ = ["merge_boxes", "dense_captioning_map", "region_caption_accuracy", "IOU_THRESHOLDS", "LANGUAGE_THRESHOLDS"]

IOU_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
LANGUAGE_THRESHOLDS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25)


def merge_boxes(boxes: torch.Tensor, captions: Sequence[str], threshold: float = 0.7):
    """Merge ground-truth boxes overlapping at IoU >= ``threshold``: returns (M, 4) mean boxes
    and M lists of reference captions."""
    boxes = torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    if len(captions) != boxes.shape[0]:
        raise ValueError(f"captions must hold one caption per box: {boxes.shape[0]} boxes, {len(captions)} captions")
    d = box_iou(boxes, boxes)
    out_boxes, out_refs = [], []
    while True:
        good = d >= threshold
        counts = good.sum(0)
        if boxes.shape[0] == 0 or int(counts.max()) == 0:
            break
        top = int(counts.argmax())
        group = good[top].nonzero().squeeze(1)
        out_boxes.append(boxes[group].mean(0))
        out_refs.append([captions[int(j)] for j in group])
        d[group, :] = 0
        d[:, group] = 0
    merged = torch.stack(out_boxes) if out_boxes else boxes.new_zeros(0, 4)
    return merged, out_refs


def _ap(tp: torch.Tensor, npos: int) -> float:
    if npos == 0:
        return 0.0
    tpc = tp.cumsum(0)
    fpc = (1 - tp).cumsum(0)
    rec = tpc / npos
    prec = tpc / (tpc + fpc).clamp(min=1)
    total = 0.0
    for t in range(101):
        mask = rec >= t / 100 - 1e-12
        total += float(prec[mask].max()) if bool(mask.any()) else 0.0
    return total / 101


def dense_captioning_map(predictions: Sequence[Dict], ground_truth: Sequence[Dict], *, language: str = "meteor",
                         merge_threshold: float = 0.7, meteor=None) -> Dict[str, float]:
    """Dense-captioning mAP over a dataset.

    Args:
        predictions: per image ``{"boxes": (D, 4) xyxy, "scores": (D,), "captions": [str]}``.
        ground_truth: per image ``{"boxes": (G, 4) xyxy, "captions": [str]}``.
        language: ``"meteor"`` (needs Java) or ``"token_f1"``.
        meteor: an open :class:`fastpapers.metrics.Meteor` to reuse (else one is started).

    Returns:
        ``{"map": mean of the 30 APs, "det_map": mean over IoU thresholds with no language
        condition, "ap": {(iou, lang): AP}, "language": language}``.
    """
    if language not in ("meteor", "token_f1"):
        raise ValueError(f"language must be 'meteor' or 'token_f1', got {language!r}")
    if len(predictions) != len(ground_truth):
        raise ValueError(f"predictions and ground_truth must have one entry per image, got {len(predictions)} "
                         f"and {len(ground_truth)}")
    scores: List[float] = []
    ious: List[float] = []
    first: List[bool] = []
    cands: List[str] = []
    refs: List[Optional[List[str]]] = []
    npos = 0
    for i, (p, g) in enumerate(zip(predictions, ground_truth)):
        gb, grefs = merge_boxes(g["boxes"], list(g["captions"]), merge_threshold)
        npos += gb.shape[0]
        pb = torch.as_tensor(p["boxes"], dtype=torch.float64).reshape(-1, 4)
        ps = torch.as_tensor(p["scores"], dtype=torch.float64).reshape(-1)
        if len(p["captions"]) != pb.shape[0] or ps.shape[0] != pb.shape[0]:
            raise ValueError(f"predictions[{i}] must hold as many scores and captions as boxes")
        used = torch.zeros(gb.shape[0], dtype=torch.bool)
        ov = box_iou(pb, gb) if gb.shape[0] else pb.new_zeros(pb.shape[0], 0)
        for d in torch.argsort(ps, descending=True, stable=True).tolist():
            best, j = (float(ov[d].max()), int(ov[d].argmax())) if gb.shape[0] else (0.0, -1)
            if best <= 0:
                j = -1  # nothing overlaps: a false positive at every threshold
            scores.append(float(ps[d]))
            ious.append(best)
            cands.append(p["captions"][d])
            refs.append(grefs[j] if j >= 0 else None)
            first.append(j >= 0 and not bool(used[j]))
            if j >= 0:
                used[j] = True

    lang = torch.zeros(len(scores), dtype=torch.float64)
    matched = [k for k, r in enumerate(refs) if r is not None]
    if matched:
        hyps = [cands[k] for k in matched]
        mrefs = [refs[k] for k in matched]
        if language == "token_f1":
            from .token_f1 import token_f1
            vals = [token_f1(h, r) for h, r in zip(hyps, mrefs)]
        else:
            from .meteor import Meteor
            if meteor is None:
                with Meteor() as m:
                    _, vals = m.score(hyps, mrefs)
            else:
                _, vals = meteor.score(hyps, mrefs)
        lang[matched] = torch.tensor([float(v) for v in vals], dtype=torch.float64)

    order = torch.argsort(torch.tensor(scores, dtype=torch.float64), descending=True, stable=True)
    iou_t = torch.tensor(ious, dtype=torch.float64)[order]
    first_t = torch.tensor(first, dtype=torch.bool)[order]
    lang = lang[order]
    ap = {}
    for t in IOU_THRESHOLDS:
        for m in (-1.0,) + LANGUAGE_THRESHOLDS:
            tp = ((iou_t >= t) & first_t & (lang > m)).to(torch.float64)
            ap[(t, m)] = _ap(tp, npos)
    lang_aps = [ap[(t, m)] for t in IOU_THRESHOLDS for m in LANGUAGE_THRESHOLDS]
    return {"map": sum(lang_aps) / len(lang_aps),
            "det_map": sum(ap[(t, -1.0)] for t in IOU_THRESHOLDS) / len(IOU_THRESHOLDS),
            "ap": ap, "language": language}


def region_caption_accuracy(predictions: Sequence[Dict], ground_truth: Sequence[Dict], *, iou: float = 0.5
                            ) -> Dict[str, float]:
    """A plain-language companion to the mAP, over ground-truth regions (not merged): a region
    is *found* when some prediction overlaps it at IoU >= ``iou``, and *right* when the
    highest-scoring such prediction's caption equals one of the region's captions exactly.

    Returns ``{"regions": count, "found": fraction found, "right_given_found": fraction of the
    found regions that are right}``. Same input formats as :func:`dense_captioning_map`.
    """
    if len(predictions) != len(ground_truth):
        raise ValueError(f"predictions and ground_truth must have one entry per image, got {len(predictions)} "
                         f"and {len(ground_truth)}")
    found = right = total = 0
    for p, g in zip(predictions, ground_truth):
        gb = torch.as_tensor(g["boxes"], dtype=torch.float64).reshape(-1, 4)
        total += gb.shape[0]
        pb = torch.as_tensor(p["boxes"], dtype=torch.float64).reshape(-1, 4)
        if pb.shape[0] == 0:
            continue
        ps = torch.as_tensor(p["scores"], dtype=torch.float64).reshape(-1)
        ov = box_iou(gb, pb)
        for j in range(gb.shape[0]):
            hits = (ov[j] >= iou).nonzero().squeeze(1)
            if hits.numel():
                found += 1
                best = int(hits[ps[hits].argmax()])
                refs = g["captions"][j]
                refs = [refs] if isinstance(refs, str) else list(refs)
                right += p["captions"][best] in refs
    return {"regions": total, "found": found / max(total, 1), "right_given_found": right / max(found, 1)}
