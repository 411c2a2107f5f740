"""The experiment's baselines (``proposals="grid"`` and ``"image"``), the Visual Genome preset
and the region caption accuracy. Tiny sizes (48 px canvases)."""
import pytest
import torch

from fastpapers.data.shapes import ShapesDense, dense_collate, shapes_vocabulary
from fastpapers.metrics.dense_ap import region_caption_accuracy
from fastpapers.models.densecap import DenseCap, box_iou, make_anchors, shapes_model, visual_genome_model

SMALL = dict(anchor_scales=(10.0, 18.0), anchor_ratios=(1.0,), sampler_batch=32, rpn_hidden=32, fc_dim=64,
             embed_dim=32, lstm_hidden=64, roi_size=(4, 4), rpn_top_n=50, max_caption_length=8)


def _batch(n=2):
    d = ShapesDense(n, size=48, min_objects=1, max_objects=2, seed=3)
    return dense_collate([d[i] for i in range(n)])


def _model(proposals, **kw):
    torch.manual_seed(0)
    return shapes_model(shapes_vocabulary(), proposals=proposals, **dict(SMALL, **kw))


def test_grid_has_no_localisation_layer_and_trains_the_rest():
    m = _model("grid")
    assert m.rpn is None
    b = _batch()
    out = m(b["image"], b["boxes"], b["captions"])
    assert float(out["rpn_box"]) == 0.0 and float(out["rpn_score"]) == 0.0  # constants, no graph
    for k in ("final_box", "final_score", "caption"):
        assert float(out[k].detach()) > 0, k
    out["loss"].backward()
    for name in ("backbone.net.0.weight", "recog.1.weight", "final_score.weight", "final_box.weight",
                 "lm.lstm.weight_ih_l0"):
        assert dict(m.named_parameters())[name].grad.abs().sum() > 0, name


def test_grid_predict_scores_every_clipped_anchor():
    m = _model("grid", max_detections=1000, final_nms=1.0)
    m.eval()
    images = _batch()["image"]
    res = m.predict(images)
    # NMS at 1.0 suppresses nothing (IoU > 1 never holds) and the final box regression starts
    # at zero, so every clipped grid box comes back: 6 x 6 cells x 2 anchors.
    grid = make_anchors(6, 6, 8, (10.0, 18.0), (1.0,))
    grid = torch.cat([grid[:, :2] - grid[:, 2:] / 2, grid[:, :2] + grid[:, 2:] / 2], 1).clamp(0, 48)

    def rows(b):
        return sorted(map(tuple, b.tolist()))
    assert res[0]["boxes"].shape[0] == 72
    torch.testing.assert_close(torch.tensor(rows(res[0]["boxes"])), torch.tensor(rows(grid)))
    m.final_nms = 0.3
    r = m.predict(images)[0]
    assert (box_iou(r["boxes"], r["boxes"]).fill_diagonal_(0) <= 0.3 + 1e-6).all()
    assert torch.all(r["scores"][:-1] >= r["scores"][1:])


def test_image_captioner_one_whole_image_box():
    m = _model("image")
    assert m.rpn is None
    b = _batch(3)
    out = m(b["image"], b["boxes"], b["captions"])
    assert out["loss"] is out["caption"] and float(out["final_score"]) == 0.0
    out["loss"].backward()
    assert m.final_score.weight.grad is None  # not part of this model's loss
    m.eval()
    res = m.predict(b["image"], beam_size=2)
    for r in res:
        assert torch.equal(r["boxes"], torch.tensor([[0.0, 0.0, 48.0, 48.0]]))
        assert r["scores"].tolist() == [1.0] and len(r["captions"]) == 1


def test_image_captioner_learns_the_captions_of_its_image():
    # Every caption of the image is a target of the single region code: on one image with one
    # region, a few steps make greedy decoding return that caption.
    d = ShapesDense(1, size=48, min_objects=1, max_objects=1, seed=5)
    b = dense_collate([d[0]])
    m = _model("image")
    opt = torch.optim.Adam(m.parameters(), lr=2e-2)
    for _ in range(15):
        opt.zero_grad()
        m(b["image"], b["boxes"], b["captions"])["loss"].backward()
        opt.step()
    m.eval()
    assert m.predict(b["image"])[0]["captions"] == d.region_captions[0]


def test_bad_proposals_mode():
    with pytest.raises(ValueError, match="proposals"):
        DenseCap(shapes_vocabulary(), proposals="edgeboxes")


def test_visual_genome_preset_scales_the_reference_anchors():
    m = visual_genome_model(shapes_vocabulary(), 360, backbone="shapes")
    torch.testing.assert_close(torch.tensor(m.anchor_scales), torch.tensor([32.0, 64.0, 128.0, 256.0]))
    assert m.anchor_ratios == (0.5, 1.0, 2.0) and m.rpn.k == 12 and m.sampler_batch == 256
    assert m.rpn_top_n == 1000 and m.rpn_nms == 0.7 and m.final_nms == 0.3
    with pytest.raises(ValueError, match="size"):
        visual_genome_model(shapes_vocabulary(), 8)


def test_region_caption_accuracy_hand_built():
    gt = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]]),
           "captions": ["red circle", "blue square", "green star"]}]
    pred = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 31], [60, 60, 70, 70]]),
             # Region 0: two hits, the higher-scoring one (index 1) has the right caption.
             # Region 1: one hit, wrong caption. Region 2: no hit.
             "scores": torch.tensor([0.5, 0.9, 0.8, 0.7]),
             "captions": ["blue circle", "red circle", "blue star", "green star"]}]
    r = region_caption_accuracy(pred, gt)
    assert r == {"regions": 3, "found": 2 / 3, "right_given_found": 0.5}
    pred[0]["scores"] = torch.tensor([0.95, 0.9, 0.8, 0.7])
    assert region_caption_accuracy(pred, gt)["right_given_found"] == 0.0
    empty = [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "captions": []}]
    assert region_caption_accuracy(empty, gt) == {"regions": 3, "found": 0.0, "right_given_found": 0.0}
    with pytest.raises(ValueError, match="ground_truth"):
        region_caption_accuracy(pred, gt + gt)
