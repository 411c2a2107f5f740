"""Loaders for users' own data in standard formats. Nothing here downloads anything.

- :func:`load_cifar10`: the CIFAR-10 "python version" folder (``data_batch_1..5``,
  ``test_batch``, ``batches.meta``: pickled dicts with ``data`` uint8 (N, 3072) and ``labels``).
- :class:`CocoCaptions`: a COCO captions JSON (``images`` [{id, file_name}], ``annotations``
  [{image_id, caption}]) plus its image folder.
- :class:`VisualGenomeRegions`: Visual Genome ``region_descriptions.json`` ([{id, regions:
  [{image_id, phrase, x, y, width, height}]}]) plus a folder of ``<image_id>.jpg``.
- :class:`ParallelText`: two text files, one sentence per line, line i of one the translation
  of line i of the other.
- :class:`ImageFolder`: images in a folder (labels from sub-folders when there are any).

A missing file raises FileNotFoundError and a malformed one ValueError, both naming the file.
"""
import json
import os
import pickle
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .vocab import Vocabulary

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _need_file(path: str, what: str) -> str:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file not found: {path}")
    return path


def _need_dir(path: str, what: str) -> str:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} folder not found: {path}")
    return path


def read_image(path: str, size: Optional[int] = None) -> torch.Tensor:
    """An image file -> (3, H, W) float32 in [0, 1]; resized to ``size`` x ``size`` if given."""
    from PIL import Image, UnidentifiedImageError
    _need_file(path, "image")
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"image file {path} is corrupt or not an image: {exc}") from exc
    x = torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0
    if size is not None:
        x = F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)[0].clamp(0, 1)
    return x


def _read_json(path: str, what: str):
    _need_file(path, what)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} file {path} is not valid JSON: {exc}") from exc


# ---- CIFAR-10 ----------------------------------------------------------------------------

def _unpickle(path: str) -> dict:
    _need_file(path, "CIFAR-10")
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise ValueError(f"CIFAR-10 file {path} is corrupt: {exc}") from exc
    if not isinstance(d, dict):
        raise ValueError(f"CIFAR-10 file {path} does not hold a dict")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def load_cifar10(root: str, *, train: bool = True) -> Tuple[torch.Tensor, torch.Tensor, List[str]]:
    """-> (images (N, 3, 32, 32) uint8, labels (N,) int64, class names) from the python-pickle
    folder ``root`` (``cifar-10-batches-py``). ``train``: data_batch_1..5, else test_batch.
    The pickles are trusted files: only open folders you got from the CIFAR authors."""
    _need_dir(root, "CIFAR-10")
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    xs, ys = [], []
    for name in names:
        path = os.path.join(root, name)
        d = _unpickle(path)
        if "data" not in d or "labels" not in d:
            raise ValueError(f"CIFAR-10 file {path} lacks 'data' or 'labels' (has {sorted(d)})")
        data = np.asarray(d["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072 or len(d["labels"]) != data.shape[0]:
            raise ValueError(f"CIFAR-10 file {path} must hold data (N, 3072) and N labels, got data "
                             f"{data.shape} and {len(d['labels'])} labels")
        xs.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
        ys.append(torch.tensor(list(d["labels"]), dtype=torch.long))
    meta_path = os.path.join(root, "batches.meta")
    classes = [str(i) for i in range(10)]
    if os.path.isfile(meta_path):
        meta = _unpickle(meta_path)
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get("label_names", classes)]
    return torch.cat(xs), torch.cat(ys), classes


# ---- COCO captions -------------------------------------------------------------------------

class CocoCaptions(Dataset):
    """COCO-style captions. Item: (image (3, S, S) float in [0, 1], list of caption strings).
    Images are read lazily; ``size`` resizes them (None keeps each image's size)."""

    def __init__(self, annotations: str, image_dir: str, *, size: Optional[int] = None):
        data = _read_json(annotations, "COCO captions")
        _need_dir(image_dir, "COCO image")
        try:
            files = {int(im["id"]): im["file_name"] for im in data["images"]}
            caps: Dict[int, List[str]] = {i: [] for i in files}
            for a in data["annotations"]:
                caps[int(a["image_id"])].append(str(a["caption"]).strip())
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"COCO captions file {annotations} is malformed: missing or bad field {exc}") from exc
        self.image_dir, self.size = image_dir, size
        self.ids = sorted(i for i in files if caps[i])
        self.files = files
        self.captions = caps

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        image_id = self.ids[i]
        img = read_image(os.path.join(self.image_dir, self.files[image_id]), self.size)
        return img, list(self.captions[image_id])

    def all_captions(self) -> List[str]:
        return [c for i in self.ids for c in self.captions[i]]


# ---- Visual Genome regions -------------------------------------------------------------------

class VisualGenomeRegions(Dataset):
    """Visual Genome region descriptions. Item: dict(image (3, H, W) float in [0, 1], boxes
    (k, 4) float xyxy in the image's pixels (scaled when ``size`` resizes it), phrases list)."""

    def __init__(self, regions_json: str, image_dir: str, *, size: Optional[int] = None,
                 image_name: str = "{}.jpg"):
        data = _read_json(regions_json, "Visual Genome regions")
        _need_dir(image_dir, "Visual Genome image")
        if not isinstance(data, list):
            raise ValueError(f"Visual Genome regions file {regions_json} must hold a list of images")
        self.items = []
        try:
            for entry in data:
                regions = entry["regions"]
                image_id = int(entry.get("id", regions[0]["image_id"] if regions else -1))
                boxes = [[float(r["x"]), float(r["y"]), float(r["x"]) + float(r["width"]),
                          float(r["y"]) + float(r["height"])] for r in regions]
                phrases = [str(r["phrase"]).strip() for r in regions]
                if regions:
                    self.items.append((image_id, boxes, phrases))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"Visual Genome regions file {regions_json} is malformed: missing or bad field "
                             f"{exc}") from exc
        self.image_dir, self.size, self.image_name = image_dir, size, image_name

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        image_id, boxes, phrases = self.items[i]
        path = os.path.join(self.image_dir, self.image_name.format(image_id))
        img = read_image(path)
        b = torch.tensor(boxes, dtype=torch.float32).view(-1, 4)
        if self.size is not None:
            h, w = img.shape[1:]
            img = F.interpolate(img[None], size=(self.size, self.size), mode="bilinear", antialias=True,
                                align_corners=False)[0].clamp(0, 1)
            b = b * torch.tensor([self.size / w, self.size / h, self.size / w, self.size / h])
        return {"image": img, "boxes": b, "phrases": list(phrases)}


# ---- parallel text -----------------------------------------------------------------------------

def _read_lines(path: str) -> List[str]:
    _need_file(path, "text")
    try:
        with open(path, encoding="utf-8") as f:
            return [line.rstrip("\n").rstrip("\r") for line in f]
    except UnicodeDecodeError as exc:
        raise ValueError(f"text file {path} is not UTF-8: {exc}") from exc


class ParallelText(Dataset):
    """Sentence pairs from two line-aligned files. Item: (source ids (Ls,), target ids (Lt,))
    with ``<bos>``/``<eos>`` (use :func:`pad_collate`); strings in ``.source`` / ``.target``.
    Vocabularies are built from the files unless given (share one with ``vocab=``)."""

    def __init__(self, source_path: str, target_path: str, *, source_vocab: Optional[Vocabulary] = None,
                 target_vocab: Optional[Vocabulary] = None, vocab: Optional[Vocabulary] = None):
        src, tgt = _read_lines(source_path), _read_lines(target_path)
        if len(src) != len(tgt):
            raise ValueError(f"parallel files differ in length: {source_path} has {len(src)} lines, "
                             f"{target_path} has {len(tgt)}")
        keep = [i for i in range(len(src)) if src[i].strip() and tgt[i].strip()]
        self.source = [src[i] for i in keep]
        self.target = [tgt[i] for i in keep]
        self.source_vocab = source_vocab or vocab or Vocabulary.build(self.source)
        self.target_vocab = target_vocab or vocab or Vocabulary.build(self.target)

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        return (torch.tensor(self.source_vocab.encode(self.source[i]), dtype=torch.long),
                torch.tensor(self.target_vocab.encode(self.target[i]), dtype=torch.long))


def pad_collate(items: Sequence[Tuple[torch.Tensor, ...]], pad_id: int = 0) -> Tuple[torch.Tensor, ...]:
    """Batch tuples of 1-D id tensors: each field padded to its longest -> (B, L) int64."""
    return tuple(torch.nn.utils.rnn.pad_sequence(list(field), batch_first=True, padding_value=pad_id)
                 for field in zip(*items))


# ---- image folder --------------------------------------------------------------------------------

class ImageFolder(Dataset):
    """Every image under ``root`` (sorted paths). With sub-folders, item = (image, label index
    of its top-level sub-folder; ``.classes`` names them); without, item = (image, -1)."""

    def __init__(self, root: str, *, size: Optional[int] = None, transform: Optional[Callable] = None):
        _need_dir(root, "image")
        self.paths = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs
                            if f.lower().endswith(IMAGE_EXTENSIONS))
        if not self.paths:
            raise ValueError(f"image folder {root} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
        rel = [os.path.relpath(p, root) for p in self.paths]
        self.classes = sorted({r.split(os.sep)[0] for r in rel if os.sep in r})
        index = {c: i for i, c in enumerate(self.classes)}
        self.labels = [index[r.split(os.sep)[0]] if os.sep in r else -1 for r in rel]
        self.size, self.transform = size, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        x = read_image(self.paths[i], self.size)
        if self.transform is not None:
            x = self.transform(x)
        return x, self.labels[i]
