"""A PNG that shows what the semantic-attention captioner looked at: the image, the caption,
the detected attributes with their detector probabilities, and the input (α) and output (β)
attention of every generated word over those attributes."""
import os
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..viz import to_uint8

_CELL = 22
_WORD_W = 78
_PAD = 8


def _heat(weights: np.ndarray, words: Sequence[str], attrs: Sequence[str], title: str) -> Image.Image:
    rows, cols = weights.shape
    head = 14 + _WORD_W
    im = Image.new("RGB", (_WORD_W + cols * _CELL + _PAD, head + rows * _CELL + _PAD), (255, 255, 255))
    d = ImageDraw.Draw(im)
    d.text((2, 0), title, fill=(0, 0, 0))
    for j, a in enumerate(attrs):
        # Column labels written sideways so long attribute words fit a narrow column.
        label = Image.new("RGB", (_WORD_W - 4, _CELL - 4), (255, 255, 255))
        ImageDraw.Draw(label).text((2, 2), a[:12], fill=(0, 0, 0))
        im.paste(label.rotate(90, expand=True), (_WORD_W + j * _CELL, 16))
    for i, w in enumerate(words):
        y = head + i * _CELL
        d.text((2, y + 5), w[:12], fill=(0, 0, 0))
        for j in range(cols):
            shade = int(255 * (1 - float(weights[i, j])))
            x = _WORD_W + j * _CELL
            d.rectangle([x, y, x + _CELL - 2, y + _CELL - 2], fill=(255, shade, shade), outline=(200, 200, 200))
    return im


def render_attention(image: torch.Tensor, caption: str, words: Sequence[str], attributes: Sequence[str],
                     attribute_scores: Optional[Sequence[float]], alpha: Optional[torch.Tensor],
                     beta: Optional[torch.Tensor], path: str, scale: int = 4) -> str:
    """Write the explanation PNG.

    Args:
        image: (C, H, W) in [0, 1].
        caption: the generated sentence.
        words: the generated words, one row of α/β each.
        attributes: the k attribute words the decoder attended to.
        attribute_scores: their detector probabilities (None when supplied by the user).
        alpha, beta: (len(words), k) attention weights, or None when that attention is off.
    """
    pic = Image.fromarray(to_uint8(image)).convert("RGB")
    pic = pic.resize((pic.width * scale, pic.height * scale), Image.NEAREST)
    panels = [pic]
    for w, name in ((alpha, "input attention (alpha)"), (beta, "output attention (beta)")):
        if w is not None:
            panels.append(_heat(w.detach().float().cpu().numpy(), words, attributes, name))
    width = sum(p.width for p in panels) + _PAD * (len(panels) + 1)
    lines = [caption]
    if attribute_scores is not None:
        lines.append("attributes: " + ", ".join(f"{a} {s:.2f}" for a, s in zip(attributes, attribute_scores)))
    else:
        lines.append("attributes: " + ", ".join(attributes))
    text_h = 14 * len(lines) + _PAD
    height = max(p.height for p in panels) + text_h + 2 * _PAD
    out = Image.new("RGB", (max(width, 8 * max(len(s) for s in lines)), height), (255, 255, 255))
    x = _PAD
    for p in panels:
        out.paste(p, (x, _PAD))
        x += p.width + _PAD
    d = ImageDraw.Draw(out)
    y = height - text_h
    for s in lines:
        d.text((_PAD, y), s, fill=(0, 0, 0))
        y += 14
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    out.save(path)
    return path
