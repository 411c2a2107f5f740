"""Pure-PyTorch NMS, transcribed from the contract: the oracle for the compiled kernels."""
import torch


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    n = boxes.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, stable=True, descending=True).indices
    b = boxes[order]
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.maximum(b[:, None, :2], b[None, :, :2])
    rb = torch.minimum(b[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    iou = inter / (area[:, None] + area[None, :] - inter)
    over = (iou > iou_threshold).cpu()
    dead = torch.zeros(n, dtype=torch.bool)
    keep = []
    for i in range(n):
        if dead[i]:
            continue
        keep.append(i)
        dead |= over[i]
    return order[torch.tensor(keep, dtype=torch.long, device=boxes.device)]


def batched_nms(boxes, scores, idxs, iou_threshold, *, score_threshold=None, max_per_group=None):
    keep_all = []
    mask_all = torch.ones_like(scores, dtype=torch.bool)
    if score_threshold is not None:
        mask_all = scores > score_threshold
    for g in torch.unique(idxs):
        sel = torch.nonzero((idxs == g) & mask_all).flatten()
        k = sel[nms(boxes[sel], scores[sel], iou_threshold)]
        if max_per_group is not None:
            k = k[:max_per_group]
        keep_all.append(k)
    if not keep_all:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    keep = torch.sort(torch.cat(keep_all)).values
    return keep[torch.sort(scores[keep], stable=True, descending=True).indices]
