"""``fastpapers densecap train|eval|predict IMAGE``: DenseCap on the shapes world.

``train`` writes ``<out>/checkpoint.pt`` (resumable with ``--resume``) and ``<out>/config.json``;
``eval`` prints the dense-captioning mAP on the test split (METEOR when Java is present,
otherwise the token-F1 variant, named in the output); ``predict`` draws the boxes and captions
of one image into a PNG.
"""
import json
import os

import torch

from ._common import add_common, resolve_device, seed_everything


def register(sub):
    p = sub.add_parser("densecap", help="DenseCap dense captioning (train / eval / predict)")
    p.add_argument("action", choices=["train", "eval", "predict"])
    p.add_argument("image", nargs="?", default=None, help="image file (predict)")
    add_common(p, out_default="runs/densecap", out_help="run folder (checkpoint.pt, config.json)")
    p.add_argument("--steps", type=int, default=2000, help="training steps (default: 2000)")
    p.add_argument("--n-train", type=int, default=4000, help="shapes-world training images (default: 4000)")
    p.add_argument("--n-test", type=int, default=200, help="shapes-world test images for eval (default: 200)")
    p.add_argument("--size", type=int, default=64, help="canvas side in pixels (default: 64)")
    p.add_argument("--batch-size", type=int, default=8, help="images per step (default: 8)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    p.add_argument("--beam", type=int, default=1, help="beam size for captions (1 = greedy; default: 1)")
    p.add_argument("--language", choices=["auto", "meteor", "token_f1"], default="auto",
                   help="eval language score (auto: METEOR when Java is present; default: auto)")
    p.add_argument("--png", default=None, help="predict: output PNG (default: <out>/prediction.png)")
    p.set_defaults(func=run)


def _load(out, device):
    from ..data.shapes import shapes_vocabulary
    from ..models.densecap import shapes_model
    from ..train import load_checkpoint
    cfg_path = os.path.join(out, "config.json")
    if not os.path.isfile(cfg_path):
        raise ValueError(f"--out {out} holds no config.json: run `fastpapers densecap train --out {out}` first")
    with open(cfg_path) as f:
        cfg = json.load(f)
    model = shapes_model(shapes_vocabulary())
    load_checkpoint(os.path.join(out, "checkpoint.pt"), {"densecap": model})
    return model.to(device).eval(), cfg


def run(args):
    device = resolve_device(args.device)
    seed_everything(args.seed)
    if args.action == "train":
        train(args, device)
    elif args.action == "eval":
        model, cfg = _load(args.out, device)
        print(json.dumps(evaluate(model, cfg["size"], args.n_test, seed=args.seed, beam=args.beam,
                                  language=args.language, device=device)))
    else:
        if args.image is None:
            raise ValueError("predict needs an IMAGE argument")
        model, cfg = _load(args.out, device)
        path = predict_png(model, args.image, cfg["size"], args.png or os.path.join(args.out, "prediction.png"),
                           beam=args.beam, device=device)
        print(f"wrote {path}")


def train(args, device):
    from ..data.shapes import ShapesDense
    from ..models.densecap import make_trainer, shapes_model
    for name in ("steps", "n_train", "size", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    data = ShapesDense(args.n_train, size=args.size, seed=args.seed)
    model = shapes_model(data.vocab)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump({"size": args.size, "n_train": args.n_train, "seed": args.seed}, f)
    tr = make_trainer(model, data, out_dir=args.out, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      device=device, log_every=50, checkpoint_every=500)
    tr.fit(args.steps, resume=args.resume)


def evaluate(model, size, n, *, seed=0, beam=1, language="auto", device="cpu", batch=16):
    """mAP of ``model`` on ``n`` shapes-world test images."""
    from ..data.shapes import ShapesDense
    from ..metrics.dense_ap import dense_captioning_map
    from ..metrics.meteor import meteor_available
    if language == "auto":
        language = "meteor" if meteor_available() else "token_f1"
    data = ShapesDense(n, size=size, split="test", seed=seed)
    preds, gts = [], []
    for s in range(0, n, batch):
        items = [data[i] for i in range(s, min(n, s + batch))]
        res = model.predict(torch.stack([it["image"] for it in items]).to(device), beam_size=beam)
        for it, r, i in zip(items, res, range(s, s + len(items))):
            preds.append({"boxes": r["boxes"].cpu(), "scores": r["scores"].cpu(), "captions": r["captions"]})
            gts.append({"boxes": it["boxes"], "captions": data.region_captions[i]})
    r = dense_captioning_map(preds, gts, language=language)
    return {"map": r["map"], "det_map": r["det_map"], "language": language, "images": n}


def predict_png(model, image_path, size, png, *, beam=1, device="cpu", top=5):
    from ..data.formats import read_image
    from ..viz import draw_boxes
    img = read_image(image_path, size)
    r = model.predict(img[None].to(device), beam_size=beam, max_detections=top)[0]
    labels = [f"{c} ({s:.2f})" for c, s in zip(r["captions"], r["scores"].tolist())]
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    draw_boxes(img, r["boxes"].cpu(), labels, scale=max(1, 384 // size)).save(png)
    return png
