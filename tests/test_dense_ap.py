"""Dense-captioning mAP on a hand-computed case (token-F1 language score) and the merge rule."""
import pytest
import torch

from fastpapers.metrics.dense_ap import dense_captioning_map, merge_boxes
from fastpapers.metrics.meteor import meteor_available


def test_merge_takes_the_box_with_most_partners_first():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 8], [0, 0, 10, 6.5], [20, 20, 30, 30]])
    # IoU(X, Y) = 0.8, IoU(Y, Z) = 0.8125, IoU(X, Z) = 0.65: Y has the most partners, so X, Y and
    # Z merge into one box although X and Z do not overlap enough themselves.
    merged, refs = merge_boxes(boxes, ["x", "y", "z", "w"])
    torch.testing.assert_close(merged, torch.tensor([[0.0, 0, 10, 24.5 / 3], [20, 20, 30, 30]], dtype=torch.float64))
    assert refs == [["x", "y", "z"], ["w"]]
    with pytest.raises(ValueError, match="captions"):
        merge_boxes(boxes, ["x"])


def _case():
    gt = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 30]]),
           "captions": ["red circle", "a red disc", "blue square"]},
          {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "captions": ["green star"]}]
    pred = [{"boxes": torch.tensor([[0.0, 0, 10, 9.5], [0, 0, 10, 9.5], [20, 20, 30, 25], [50, 50, 60, 60]]),
             "scores": torch.tensor([0.9, 0.8, 0.7, 0.6]),
             "captions": ["red circle", "red circle", "blue square", "x"]},
            {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "scores": torch.tensor([0.85]),
             "captions": ["a very big green thing over here"]}]
    return pred, gt


def test_map_hand_computed_token_f1():
    pred, gt = _case()
    r = dense_captioning_map(pred, gt, language="token_f1")
    # 3 merged boxes. By score: p1 hit (IoU 1, F1 1), p5 hit (IoU 1, F1 2/9), p2 repeat (miss),
    # p3 (IoU 0.5, F1 1), p4 no overlap (miss). 101-point interpolated AP per (IoU, language):
    #  IoU <= .5, lang < 2/9: tp 1,1,0,1,0 -> 67 points at precision 1, 34 at 3/4
    #  IoU >= .6, lang < 2/9: tp 1,1,0,0,0 -> 67 points at 1
    #  IoU <= .5, lang .25:   tp 1,0,0,1,0 -> 34 points at 1, 33 at 1/2
    #  IoU >= .6, lang .25:   tp 1,0,0,0,0 -> 34 points at 1
    assert r["ap"][(0.3, 0.2)] == pytest.approx(92.5 / 101)
    assert r["ap"][(0.7, 0.0)] == pytest.approx(67 / 101)
    assert r["ap"][(0.5, 0.25)] == pytest.approx(50.5 / 101)
    assert r["ap"][(0.6, 0.25)] == pytest.approx(34 / 101)
    assert r["map"] == pytest.approx(2277 / 3030)
    assert r["det_map"] == pytest.approx(411.5 / 505)
    assert len([k for k in r["ap"] if k[1] >= 0]) == 30 and r["language"] == "token_f1"


def test_map_perfect_and_empty_predictions():
    _, gt = _case()
    perfect = [{"boxes": torch.tensor([[0.0, 0, 10, 9.5], [20, 20, 30, 30]]), "scores": torch.tensor([1.0, 0.5]),
                "captions": ["a red disc", "blue square"]},
               {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "scores": torch.tensor([0.7]), "captions": ["green star"]}]
    assert dense_captioning_map(perfect, gt, language="token_f1")["map"] == pytest.approx(1.0)
    empty = [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "captions": []} for _ in gt]
    assert dense_captioning_map(empty, gt, language="token_f1")["map"] == 0.0


def test_map_bad_input():
    pred, gt = _case()
    with pytest.raises(ValueError, match="language"):
        dense_captioning_map(pred, gt, language="bleu")
    with pytest.raises(ValueError, match="ground_truth"):
        dense_captioning_map(pred, gt[:1], language="token_f1")
    pred[0]["captions"] = pred[0]["captions"][:2]
    with pytest.raises(ValueError, match=r"predictions\[0\]"):
        dense_captioning_map(pred, gt, language="token_f1")


@pytest.mark.skipif(not meteor_available(), reason="METEOR needs Java and pycocoevalcap's jar")
def test_map_meteor_perfect_captions():
    _, gt = _case()
    perfect = [{"boxes": torch.tensor([[0.0, 0, 10, 9.5], [20, 20, 30, 30]]), "scores": torch.tensor([1.0, 0.5]),
                "captions": ["a red disc", "blue square"]},
               {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "scores": torch.tensor([0.7]), "captions": ["green star"]}]
    r = dense_captioning_map(perfect, gt, language="meteor")
    assert r["map"] == pytest.approx(1.0) and r["language"] == "meteor"
