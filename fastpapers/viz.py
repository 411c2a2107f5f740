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
