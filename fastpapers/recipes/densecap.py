"""Recipe: DenseCap (Johnson, Karpathy and Fei-Fei 2016), the fully convolutional localisation
network, on shapes-world canvases (the default) or on Visual Genome region descriptions.

:func:`train` writes a run folder (paper ``densecap``): run.json (the whole :class:`Config`),
the trainer's checkpoint (resumable), metrics and, for Visual Genome, ``vocab.json`` (built
from the training phrases). :func:`evaluate` gives the dense-captioning mAP (METEOR when Java
is present, otherwise the token-F1 variant, named in the result) and the detection mAP;
:func:`predict_png` draws one image's boxes and captions. Folders written before run.json
existed (``config.json`` + checkpoint) still load.
"""
import os
from dataclasses import dataclass
from typing import ClassVar, Dict, Optional

import torch

from ..models.densecap import PROPOSALS, DenseCap, shapes_model, visual_genome_model
from ..train import Trainer
from ..train.checkpoint import read_json_file, seed_everything
from ..train.rundir import RUN_FILE, Run
from ._common import Loaded, RecipeConfig, find_run, open_run, stored_config

__all__ = ["PAPER", "Config", "build", "make_trainer", "densecap_step", "train", "load", "evaluate",
           "collect_predictions", "predict_png", "vg_dataset"]

PAPER = "densecap"
MODULE = "densecap"
DEFAULT_SIZE = {"shapes": 64, "vg": 256}


@dataclass
class Config(RecipeConfig):
    """One DenseCap run: data (shapes world or Visual Genome), backbone, training."""
    data: str = "shapes"                 # "shapes" or "vg"
    size: Optional[int] = None           # image side (default 64 shapes, 256 Visual Genome)
    backbone: Optional[str] = None       # "shapes" or "vgg16" (default: by data)
    hed_weights: bool = False
    proposals: str = "rpn"               # "rpn" (the paper), "grid" or "image" (the baselines)
    n_train: int = 4000
    steps: int = 2000
    batch_size: int = 8
    lr: float = 1e-3
    seed: int = 0
    checkpoint_every: int = 500
    vg_regions: Optional[str] = None
    vg_images: Optional[str] = None
    vg_split: Optional[str] = None
    vg_min_word_count: int = 15
    max_words: Optional[int] = None      # Visual Genome: longest phrase (set from the data)
    images: Optional[int] = None         # Visual Genome: training images (set from the data)

    PAPER: ClassVar[str] = PAPER
    RESUMABLE: ClassVar[tuple] = ("steps", "checkpoint_every")

    def __post_init__(self):
        self.check_choice("data", tuple(DEFAULT_SIZE))
        if self.size is None:
            self.size = DEFAULT_SIZE[self.data]
        if self.backbone is None:
            self.backbone = "vgg16" if self.data == "vg" else "shapes"
        for name in ("n_train", "steps", "batch_size", "vg_min_word_count"):
            self.check_int(name)
        self.check_int("size", 16)
        self.check_int("checkpoint_every", 0)
        self.check_choice("backbone", ("shapes", "vgg16"))
        self.check_choice("proposals", tuple(PROPOSALS))
        if self.hed_weights and self.backbone != "vgg16":
            raise ValueError(f"--hed-weights needs --backbone vgg16, got --backbone {self.backbone}")
        self.check_float("lr")


def vg_dataset(regions: Optional[str], images: Optional[str], split_file: Optional[str], split: str, size: int,
               vocab=None, min_word_count: int = 1):
    """A :class:`VisualGenomeDense` from the --vg-* settings; errors name the flag at fault."""
    from ..data.dense_regions import VisualGenomeDense, read_vg_split
    if images is None:
        raise ValueError("--vg-regions needs --vg-images DIR (the folder of <image_id>.jpg)")
    if regions is None:
        raise ValueError("--vg-images needs --vg-regions FILE (region_descriptions.json)")
    if not os.path.isfile(regions):
        raise ValueError(f"--vg-regions {regions}: file not found")
    if not os.path.isdir(images):
        raise ValueError(f"--vg-images {images}: folder not found")
    ids = None
    if split_file is not None:
        try:
            ids = read_vg_split(split_file, split)
        except (FileNotFoundError, ValueError) as exc:
            raise ValueError(f"--vg-split: {exc}") from exc
    try:
        data = VisualGenomeDense(regions, images, size=size, vocab=vocab, image_ids=ids,
                                 min_word_count=min_word_count)
    except (FileNotFoundError, ValueError) as exc:
        raise ValueError(f"--vg-regions: {exc}") from exc
    if len(data) == 0:
        where = f"the '{split}' ids of --vg-split {split_file}" if ids is not None else "it"
        raise ValueError(f"--vg-regions {regions}: no image with a region in {where}")
    try:
        data.check_images()
    except FileNotFoundError as exc:
        raise ValueError(f"--vg-images: {exc}") from exc
    return data


def build(cfg: Config, vocab) -> Dict[str, DenseCap]:
    """A fresh DenseCap for ``cfg`` over ``vocab`` (the shapes world's, or the training phrases')."""
    if cfg.data == "vg":
        model = visual_genome_model(vocab, cfg.size, backbone=cfg.backbone, hed_weights=cfg.hed_weights,
                                    max_caption_length=cfg.max_words + 2, proposals=cfg.proposals)
    else:
        model = shapes_model(vocab, backbone=cfg.backbone, hed_weights=cfg.hed_weights, proposals=cfg.proposals)
    return {MODULE: model}


def densecap_step(tr, batch):
    """Trainer step: one Adam update on the weighted loss; logs the five terms."""
    model = tr.modules[MODULE]
    out = model(batch["image"], batch["boxes"], batch["captions"])
    tr.step(MODULE, out["loss"])
    return {k: v.detach() for k, v in out.items()}


def make_trainer(model: DenseCap, data, *, out_dir: str, batch_size: int = 8, lr: float = 1e-3, seed: int = 0,
                 device="cpu", grad_clip: Optional[float] = 10.0, **trainer_kwargs) -> Trainer:
    """A :class:`fastpapers.train.Trainer` for DenseCap on a dataset of ``ShapesDense``-style
    items (collated with :func:`fastpapers.data.shapes.dense_collate`)."""
    from ..data.shapes import dense_collate
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    return Trainer({MODULE: model}, {MODULE: opt}, densecap_step, data=data, batch_size=batch_size,
                   out_dir=out_dir, seed=seed, device=device, grad_clip=grad_clip, collate_fn=dense_collate,
                   **trainer_kwargs)


def train(cfg: Config, out: str, *, resume: bool = False, device="cpu", progress: bool = True,
          data=None) -> Run:
    """Train with ``cfg`` into the run folder ``out``; returns the run."""
    from ..data.shapes import ShapesDense

    seed_everything(cfg.seed)
    if data is None and cfg.data == "vg":
        data = vg_dataset(cfg.vg_regions, cfg.vg_images, cfg.vg_split, "train", cfg.size,
                          min_word_count=cfg.vg_min_word_count)
    elif data is None:
        data = ShapesDense(cfg.n_train, size=cfg.size, seed=cfg.seed)
    if cfg.data == "vg":
        cfg = cfg.replace(max_words=data.max_words, images=len(data), vg_regions=os.path.abspath(cfg.vg_regions),
                          vg_images=os.path.abspath(cfg.vg_images),
                          vg_split=None if cfg.vg_split is None else os.path.abspath(cfg.vg_split))
    run = open_run(out, cfg, resume=resume)
    if cfg.data == "vg":
        data.vocab.save(run.file("vocab.json"))
    model = build(cfg, data.vocab)[MODULE]
    tr = make_trainer(model, data, out_dir=run.path, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
                      device=device, log_every=50, checkpoint_every=cfg.checkpoint_every, progress=progress)
    tr.fit(cfg.steps, resume=resume)
    return run


def load(run, device="cpu") -> Loaded:
    """A trained DenseCap (``nets["densecap"]``, eval mode) and its Config from a run folder,
    a file in it, or a Run."""
    from ..data.shapes import shapes_vocabulary
    from ..data.vocab import Vocabulary
    from ..train import load_checkpoint

    out = run.path if isinstance(run, Run) else os.fspath(run)
    folder = out if os.path.isdir(out) else os.path.dirname(os.path.abspath(out))
    found = None
    if os.path.isfile(os.path.join(folder, RUN_FILE)):
        found = find_run(folder, PAPER)
        cfg = stored_config(found, Config)
    elif os.path.isfile(os.path.join(folder, "config.json")):
        # A folder written before run.json existed: its config.json keys are all Config fields.
        legacy = os.path.join(folder, "config.json")
        cfg = Config.from_dict(read_json_file(legacy, what="DenseCap config file"), source=legacy)
    else:
        raise ValueError(f"--out {out} holds no DenseCap run: run `fastpapers densecap train --out {out}` first")
    vocab = Vocabulary.load(os.path.join(folder, "vocab.json")) if cfg.data == "vg" else shapes_vocabulary()
    # The checkpoint holds the trained weights: HED's are not read again.
    model = build(cfg.replace(hed_weights=False), vocab)[MODULE]
    load_checkpoint(os.path.join(folder, "checkpoint.pt"), {MODULE: model})
    return Loaded(config=cfg, nets={MODULE: model.to(device).eval()}, path=folder, run=found,
                  device=torch.device(device), artefacts={"vocab": vocab})


def collect_predictions(model, data, n=None, *, beam=1, device="cpu", batch=16, max_detections=None):
    """Predictions and ground truth on the first ``n`` items of ``data`` (a dataset with
    ``region_captions``, like :class:`~fastpapers.data.shapes.ShapesDense`), in the format of
    :func:`~fastpapers.metrics.dense_ap.dense_captioning_map`."""
    n = len(data) if n is None else min(n, len(data))
    preds, gts = [], []
    for s in range(0, n, batch):
        items = [data[i] for i in range(s, min(n, s + batch))]
        res = model.predict(torch.stack([it["image"] for it in items]).to(device), beam_size=beam,
                            max_detections=max_detections)
        for it, r, i in zip(items, res, range(s, s + len(items))):
            preds.append({"boxes": r["boxes"].cpu(), "scores": r["scores"].cpu(), "captions": r["captions"]})
            gts.append({"boxes": it["boxes"], "captions": data.region_captions[i]})
    return preds, gts


def evaluate(model, size, n, *, seed=0, beam=1, language="auto", device="cpu", batch=16, data=None):
    """mAP of ``model`` on ``n`` shapes-world test images (or on ``data`` when given)."""
    from ..data.shapes import ShapesDense
    from ..metrics.dense_ap import dense_captioning_map
    from ..metrics.meteor import meteor_available
    if language == "auto":
        language = "meteor" if meteor_available() else "token_f1"
    if data is None:
        data = ShapesDense(n, size=size, split="test", seed=seed)
    preds, gts = collect_predictions(model, data, n, beam=beam, device=device, batch=batch)
    r = dense_captioning_map(preds, gts, language=language)
    return {"map": r["map"], "det_map": r["det_map"], "language": language, "images": len(preds)}


def predict_png(model, image_path, size, png, *, beam=1, device="cpu", top=5):
    """Draw the ``top`` boxes and captions of one image file into ``png``."""
    from ..data.formats import read_image
    from ..viz import draw_boxes
    img = read_image(image_path, size)
    r = model.predict(img[None].to(device), beam_size=beam, max_detections=top)[0]
    labels = [f"{c} ({s:.2f})" for c, s in zip(r["captions"], r["scores"].tolist())]
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    draw_boxes(img, r["boxes"].cpu(), labels, scale=max(1, 384 // size)).save(png)
    return png
