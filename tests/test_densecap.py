"""DenseCap model: anchors, the box sampler's rules, losses, gradients to the boxes, predict's
output and checkpoint/resume through the Trainer. Sizes are tiny (48 px canvases)."""
import pytest
import torch

from fastpapers.data.shapes import ShapesDense, dense_collate, shapes_vocabulary
from fastpapers.models.densecap import (DenseCap, LossWeights, box_iou, make_anchors, sample_boxes,
                                        shapes_model)
from fastpapers.recipes.densecap import make_trainer
from fastpapers.train import seed_everything


def _data(n=4):
    return ShapesDense(n, size=48, min_objects=1, max_objects=2, seed=3)


def _model(**kw):
    torch.manual_seed(0)
    opts = dict(anchor_scales=(10.0, 18.0), anchor_ratios=(1.0,), sampler_batch=32, rpn_hidden=32, fc_dim=64,
                embed_dim=32, lstm_hidden=64, roi_size=(4, 4), rpn_top_n=50, max_caption_length=8)
    opts.update(kw)
    return shapes_model(shapes_vocabulary(), **opts)


def test_make_anchors_hand_values():
    a = make_anchors(2, 3, 8, scales=(4.0,), ratios=(1.0, 4.0))
    assert a.shape == (2 * 3 * 2, 4)
    # Order (y, x, anchor): row 0 is cell (0, 0) ratio 1; row 1 the same cell ratio 4 (h/w = 4,
    # area 16 -> w = 2, h = 8); row 2 is cell (0, 1); row 6 is cell (1, 0).
    torch.testing.assert_close(a[0], torch.tensor([4.0, 4.0, 4.0, 4.0]))
    torch.testing.assert_close(a[1], torch.tensor([4.0, 4.0, 2.0, 8.0]))
    torch.testing.assert_close(a[2], torch.tensor([12.0, 4.0, 4.0, 4.0]))
    torch.testing.assert_close(a[6], torch.tensor([4.0, 12.0, 4.0, 4.0]))


def test_box_iou_hand_values():
    a = torch.tensor([[0.0, 0, 10, 10], [0, 0, 0, 0]])
    b = torch.tensor([[5.0, 0, 15, 10], [0, 0, 10, 10]])
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[50 / 150, 1.0], [0.0, 0.0]]))


def test_sampler_rules_on_hand_made_boxes():
    gt = torch.tensor([[0.0, 0, 10, 10], [100, 100, 110, 110]])
    anchors = torch.tensor([
        [0.0, 0, 10, 10],      # 0: IoU 1 with gt 0 -> positive
        [0.0, 0, 10, 9],       # 1: IoU 0.9 with gt 0 -> positive
        [0.0, 0, 10, 5],       # 2: IoU 0.5 -> neither
        [50.0, 50, 60, 60],    # 3: IoU 0 -> negative
        [100.0, 100, 115, 115],  # 4: IoU 100/225 = 0.44 with gt 1: its best anchor -> forced positive
        [60.0, 60, 70, 70],    # 5: negative
        [0.0, 0, 10, 10],      # 6: IoU 1 but invalid -> ignored
        [200.0, 200, 210, 210],  # 7: negative
    ])
    valid = torch.ones(8, dtype=torch.bool)
    valid[6] = False
    pos, pos_gt, neg = sample_boxes(anchors, gt, batch_size=100, valid=valid)
    got = dict(zip(pos.tolist(), pos_gt.tolist()))
    assert got == {0: 0, 1: 0, 4: 1}
    assert sorted(neg.tolist()) == [3, 5, 7]

    # At most half positive: B = 4 -> 2 positives, 2 negatives drawn from the available ones.
    pos, pos_gt, neg = sample_boxes(anchors, gt, batch_size=4, valid=valid)
    assert pos.numel() == 2 and set(pos.tolist()) <= {0, 1, 4} and neg.numel() == 2
    assert set(neg.tolist()) <= {3, 5, 7}
    assert torch.equal(pos_gt, torch.tensor([0 if p in (0, 1) else 1 for p in pos.tolist()]))

    # Negatives fill what positives leave: B = 5 with 3 positives available -> 2 + 3.
    pos, _, neg = sample_boxes(anchors, gt, batch_size=5, valid=valid)
    assert pos.numel() == 2 and neg.numel() == 3

    # The forced anchor of a ground truth with no anchor at IoU >= 0.7 and no anchor at all
    # over 0.3 is still positive, and not a negative.
    far = torch.tensor([[300.0, 300, 302, 302]])
    pos, pos_gt, neg = sample_boxes(anchors, far, batch_size=100)
    assert pos.numel() == 1 and pos_gt.tolist() == [0] and int(pos) not in neg.tolist()


def test_sampler_bad_input():
    with pytest.raises(ValueError, match="gt"):
        sample_boxes(torch.zeros(3, 4), torch.zeros(0, 4))
    with pytest.raises(ValueError, match="batch_size"):
        sample_boxes(torch.zeros(3, 4), torch.zeros(1, 4), batch_size=0)
    with pytest.raises(ValueError, match="backbone"):
        DenseCap(shapes_vocabulary(), backbone="resnet")


def test_shapes_of_the_pieces_and_losses():
    m = _model()
    batch = dense_collate([_data()[i] for i in range(2)])
    feats = m.backbone(batch["image"])
    assert feats.shape == (2, 64, 6, 6)
    deltas, scores = m.rpn(feats)
    assert deltas.shape == (2, 6 * 6 * 2, 4) and scores.shape == (2, 6 * 6 * 2)
    out = m(batch["image"], batch["boxes"], batch["captions"])
    assert set(out) == {"rpn_box", "rpn_score", "final_box", "final_score", "caption", "loss"}
    for v in out.values():
        assert v.shape == () and torch.isfinite(v)
    torch.testing.assert_close(out["loss"], sum(v for k, v in out.items() if k != "loss"))
    # The caption term starts near log(V): the LM knows nothing yet.
    assert abs(float(out["caption"].detach()) - torch.log(torch.tensor(float(len(m.vocab))))) < 0.5


def test_loss_decreases_on_a_tiny_batch():
    m = _model()
    batch = dense_collate([_data()[i] for i in range(4)])
    opt = torch.optim.Adam(m.parameters(), lr=5e-3)

    def loss():
        torch.manual_seed(1)  # the same sampled boxes each time
        return m(batch["image"], batch["boxes"], batch["captions"])["loss"]

    first = float(loss().detach())
    for _ in range(12):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert float(loss().detach()) < 0.75 * first


def test_caption_loss_gradient_reaches_the_boxes_through_roi_bilinear():
    # Only the caption term: the localisation layer's delta channels can get a gradient only
    # through the proposal boxes fed to roi_bilinear; its score channels get none.
    m = _model(loss_weights=LossWeights(0.0, 0.0, 0.0, 0.0, 1.0))
    batch = dense_collate([_data()[i] for i in range(2)])
    m(batch["image"], batch["boxes"], batch["captions"])["loss"].backward()
    g = m.rpn.head.weight.grad.view(m.rpn.k, 5, -1)
    assert g[:, :4].abs().sum() > 0
    assert torch.equal(g[:, 4], torch.zeros_like(g[:, 4]))
    # And without the sampler in between: d(roi features)/d(box) is non-zero.
    feats = torch.rand(1, 3, 8, 8)
    box = torch.tensor([[0.0, 1.0, 1.5, 6.0, 7.0]], requires_grad=True)
    m.roi_fn(feats, box, (3, 3), 1.0).sum().backward()
    assert box.grad[0, 1:].abs().min() > 0


@pytest.mark.parametrize("beam", [1, 2])
def test_predict_output_format(beam):
    m = _model(max_detections=5)
    m.eval()
    images = torch.stack([_data()[i]["image"] for i in range(2)])
    res = m.predict(images, beam_size=beam)
    assert len(res) == 2
    for r in res:
        d = r["boxes"].shape[0]
        assert 1 <= d <= 5
        assert r["scores"].shape == (d,) and r["tokens"].shape[0] == d and len(r["captions"]) == d
        assert torch.all(r["scores"][:-1] >= r["scores"][1:])
        assert ((r["scores"] >= 0) & (r["scores"] <= 1)).all()
        assert (r["boxes"] >= 0).all() and (r["boxes"] <= 48).all()
        assert (r["tokens"][:, 0] == m.vocab.bos_id).all() and r["tokens"].shape[1] <= m.max_caption_length
        assert all(isinstance(c, str) for c in r["captions"])
        # Final NMS at 0.3: no two kept boxes overlap more.
        iou = box_iou(r["boxes"], r["boxes"]).fill_diagonal_(0)
        assert (iou <= 0.3 + 1e-6).all()


def _train(out, steps, *, resume, seed_model):
    seed_everything(seed_model)
    m = _model()
    tr = make_trainer(m, _data(8), out_dir=str(out), batch_size=2, seed=0, log_every=1, checkpoint_every=2,
                      progress=False)
    tr.fit(steps, resume=resume)
    return m


def test_checkpoint_resume_through_the_trainer(tmp_path):
    full = _train(tmp_path / "full", 4, resume=False, seed_model=1)
    _train(tmp_path / "halves", 2, resume=False, seed_model=1)
    halves = _train(tmp_path / "halves", 4, resume=True, seed_model=2)  # other init: the load must overwrite it
    for (name, a), b in zip(full.state_dict().items(), halves.state_dict().values()):
        assert torch.equal(a, b), name


def test_vgg16_backbone_with_hed_weights():
    from fastpapers.models.densecap import VGG16Backbone
    torch.manual_seed(0)
    b = VGG16Backbone(hed_weights=True)
    convs = [m for m in b.net if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 13 and sum(isinstance(m, torch.nn.MaxPool2d) for m in b.net) == 4
    import h5py
    from fastpapers.models.densecap import hed_weights_path
    with h5py.File(hed_weights_path(), "r") as f:
        w = torch.from_numpy(f["block3/layers/conv2d_1/vars/0"][()])
    torch.testing.assert_close(convs[5].weight, w.permute(3, 2, 0, 1))
    assert b(torch.rand(1, 3, 32, 48)).shape == (1, 512, 2, 3)


def test_cli_train_eval_predict(tmp_path, capsys):
    import json
    from PIL import Image
    from fastpapers.cli import main
    from fastpapers.viz import to_uint8
    run = str(tmp_path / "run")
    assert main(["densecap", "train", "--out", run, "--steps", "2", "--n-train", "8", "--size", "48",
                 "--batch-size", "2"]) == 0
    capsys.readouterr()
    assert main(["densecap", "eval", "--out", run, "--n-test", "3", "--language", "token_f1"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["language"] == "token_f1" and r["images"] == 3 and 0.0 <= r["map"] <= 1.0
    img = tmp_path / "in.png"
    Image.fromarray(to_uint8(_data(1)[0]["image"])).save(img)
    png = tmp_path / "pred.png"
    assert main(["densecap", "predict", str(img), "--out", run, "--png", str(png)]) == 0
    with Image.open(png) as im:
        assert im.size == (384, 384)
    assert main(["densecap", "predict", "--out", run]) == 2
    assert main(["densecap", "eval", "--out", str(tmp_path / "none")]) == 2


def test_older_format_folders_load(tmp_path):
    # A run folder written before run.json existed (config.json + checkpoint) loads in place,
    # and again after convert_legacy; the weights are the trained ones.
    import json
    import os

    from fastpapers.recipes import densecap as R
    from fastpapers.train.rundir import convert_legacy

    out = tmp_path / "run"
    cfg = R.Config(n_train=4, steps=1, batch_size=2)
    R.train(cfg, str(out), progress=False)
    trained = R.load(str(out)).nets["densecap"].state_dict()
    for name in ("run.json", "run.json.sha256"):
        os.remove(out / name)
    (out / "config.json").write_text(json.dumps({"data": "shapes", "size": 64, "backbone": "shapes",
                                                 "hed_weights": False, "n_train": 4, "seed": 0}))
    for step in ("in place", "converted"):
        if step == "converted":
            convert_legacy(str(out), "densecap")
            assert (out / "run.json").is_file()
        loaded = R.load(str(out))
        assert loaded.config.n_train == 4 and loaded.config.proposals == "rpn"
        for k, v in loaded.nets["densecap"].state_dict().items():
            assert torch.equal(v, trained[k]), k
