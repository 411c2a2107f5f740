"""Writing what people look at as PNG files: image grids, boxes with labels."""
import os
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190)]


def to_uint8(img: torch.Tensor, value_range=(0.0, 1.0)) -> np.ndarray:
    """(C,H,W) or (H,W) tensor in value_range -> HxWx3 (or HxW) uint8 array."""
    lo, hi = value_range
    x = img.detach().float().cpu()
    x = ((x - lo) / max(hi - lo, 1e-12)).clamp(0, 1)
    x = (x * 255 + 0.5).to(torch.uint8)
    if x.dim() == 3:
        if x.shape[0] == 1:
            x = x[0]
        else:
            x = x.permute(1, 2, 0)
    return x.numpy()


def make_grid(images: torch.Tensor, nrow: int = 8, pad: int = 2, pad_value: float = 1.0) -> torch.Tensor:
    """(N,C,H,W) -> (C, rows*(H+pad)+pad, nrow*(W+pad)+pad)."""
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    n, c, h, w = images.shape
    nrow = max(1, min(nrow, n))
    rows = (n + nrow - 1) // nrow
    grid = images.new_full((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), pad_value)
    for i in range(n):
        r, q = divmod(i, nrow)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = images[i]
    return grid


def save_image(img: torch.Tensor, path: str, value_range=(0.0, 1.0), scale: int = 1) -> str:
    """Save a (C,H,W) or (H,W) tensor as PNG, optionally upscaled by an integer factor."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    im = Image.fromarray(to_uint8(img, value_range))
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    im.save(path)
    return path


def save_grid(images: torch.Tensor, path: str, nrow: int = 8, value_range=(0.0, 1.0), scale: int = 1) -> str:
    lo, hi = value_range
    return save_image(make_grid(images, nrow=nrow, pad_value=hi), path, value_range, scale)


def draw_boxes(img: torch.Tensor, boxes, labels: Optional[Sequence[str]] = None, value_range=(0.0, 1.0),
               scale: int = 1, width: int = 2) -> Image.Image:
    """Return a PIL image of img with xyxy boxes (in img pixels) and optional labels drawn."""
    im = Image.fromarray(to_uint8(img, value_range)).convert("RGB")
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.BILINEAR)
    draw = ImageDraw.Draw(im)
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4) * scale
    for i, b in enumerate(boxes.tolist()):
        color = PALETTE[i % len(PALETTE)]
        draw.rectangle(b, outline=color, width=width)
        if labels is not None and i < len(labels) and labels[i]:
            x, y = b[0] + 2, max(0.0, b[1] - 11)
            tw = draw.textlength(labels[i])
            draw.rectangle([x - 1, y, x + tw + 1, y + 11], fill=(0, 0, 0))
            draw.text((x, y), labels[i], fill=color)
    return im


def hstack(images: Sequence[Image.Image], pad: int = 4, bg=(255, 255, 255)) -> Image.Image:
    h = max(im.height for im in images)
    w = sum(im.width for im in images) + pad * (len(images) + 1)
    out = Image.new("RGB", (w, h + 2 * pad), bg)
    x = pad
    for im in images:
        out.paste(im, (x, pad))
        x += im.width + pad
    return out


def _axes(draw, box, lo, hi, title, ylabel):
    x0, y0, x1, y1 = box
    draw.line([(x0, y0), (x0, y1), (x1, y1)], fill=(0, 0, 0))
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        y = y1 - (y1 - y0) * k / 4
        draw.line([(x0 - 3, y), (x0, y)], fill=(0, 0, 0))
        draw.text((4, y - 6), f"{v:.3g}", fill=(0, 0, 0))
    draw.text((x0, 6), title, fill=(0, 0, 0))
    if ylabel:
        draw.text((x0 + 4, y0 - 14), ylabel, fill=(90, 90, 90))


def bar_chart(labels: Sequence[str], means: Sequence[float], errs: Sequence[float], path: str, *,
              title: str = "", ylabel: str = "") -> str:
    """A PNG bar chart: one bar per label at its mean, a whisker of +-err (e.g. the spread over
    seeds), the value written above it."""
    n = len(labels)
    W, H, left, top, bottom = max(320, 90 * n + 80), 300, 60, 40, 60
    hi = max([m + e for m, e in zip(means, errs)] + [1e-12])
    lo = min([0.0] + [m - e for m, e in zip(means, errs)])
    im = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    box = (left, top, W - 20, H - bottom)
    _axes(draw, box, lo, hi, title, ylabel)

    def y(v):
        return box[3] - (box[3] - box[1]) * (v - lo) / max(hi - lo, 1e-12)

    slot = (box[2] - box[0]) / max(n, 1)
    for i, (lab, m, e) in enumerate(zip(labels, means, errs)):
        cx = box[0] + slot * (i + 0.5)
        top_, bottom_ = sorted((y(m), y(0.0)))  # a negative mean hangs below the zero line
        draw.rectangle([cx - slot * 0.3, top_, cx + slot * 0.3, bottom_], fill=PALETTE[i % len(PALETTE)])
        draw.line([(cx, y(m - e)), (cx, y(m + e))], fill=(0, 0, 0), width=2)
        draw.text((cx - slot * 0.3, y(m + e) - 12), f"{m:.3g}", fill=(0, 0, 0))
        draw.text((cx - slot * 0.45, box[3] + 6 + 12 * (i % 2)), lab[:18], fill=(0, 0, 0))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    im.save(path)
    return path


def line_chart(series: dict, path: str, *, title: str = "", ylabel: str = "", log_y: bool = False) -> str:
    """A PNG line chart of ``{name: [values per step]}`` (log10 of the values with ``log_y``),
    with a legend."""
    vals = {k: [float(np.log10(max(v, 1e-30))) if log_y else float(v) for v in s] for k, s in series.items() if s}
    W, H, left, top, bottom = 520, 320, 60, 40, 40
    flat = [v for s in vals.values() for v in s] or [0.0, 1.0]
    lo, hi = min(flat), max(flat)
    if hi - lo < 1e-12:
        hi = lo + 1.0
    im = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    box = (left, top, W - 130, H - bottom)
    _axes(draw, box, lo, hi, title, ("log10 " if log_y else "") + ylabel)
    steps = max(len(s) for s in vals.values()) if vals else 1
    for i, (name, s) in enumerate(vals.items()):
        color = PALETTE[i % len(PALETTE)]
        pts = [(box[0] + (box[2] - box[0]) * j / max(steps - 1, 1), box[3] - (box[3] - box[1]) * (v - lo) / (hi - lo))
               for j, v in enumerate(s)]
        if len(pts) > 1:
            draw.line(pts, fill=color, width=2)
        draw.text((box[2] + 8, box[1] + 14 * i), name[:20], fill=color)
    draw.text((box[0], box[3] + 6), f"0 .. {steps - 1} (iteration)", fill=(0, 0, 0))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    im.save(path)
    return path
