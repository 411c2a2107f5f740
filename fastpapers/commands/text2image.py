"""``fastpapers text2image train|sample|transfer|judge|eval``: the CLI of
:mod:`fastpapers.recipes.text2image` (Reed et al. 2016 on the shapes world).

Variants (``--variant``): ``gan`` (conditional GAN), ``gan-cls`` (matching-aware
discriminator), ``gan-int`` (interpolated embeddings), ``gan-int-cls`` (both, the default).
"""
from __future__ import annotations

import json
import os

from ..models.text2image import UPSAMPLE, WRONG_TEXT
from ..recipes import text2image as recipe
from ._common import (add_common, add_training_flags, nonneg_float, nonneg_int, positive_float, positive_int,
                      resolve_device, seed_everything)


def register(sub):
    p = sub.add_parser("text2image", help="text-to-image GAN (GAN-CLS, GAN-INT, style encoder)",
                       description="Reed et al. 2016 on the shapes world: train, sample from captions, "
                                   "transfer a query image's style, train the judge and evaluate.")
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    p.set_defaults(func=lambda args: p.print_help() or 2)

    t = verbs.add_parser("train", help="train embedding, GAN and style encoder; writes OUT/model.pt")
    add_common(t, out_default=recipe.DEFAULT_OUT, out_help="run folder")
    t.add_argument("--variant", default="gan-int-cls", choices=sorted(recipe.VARIANTS), help="(default: gan-int-cls)")
    add_training_flags(t, steps=3000, batch_size=64, checkpoint_every=500, sample_every=500, lr=2e-4)
    t.add_argument("--embed-steps", type=positive_int, default=1000, help="joint-embedding steps (default: 1000)")
    t.add_argument("--style-steps", type=positive_int, default=1000, help="style-encoder steps (default: 1000)")
    t.add_argument("--train-size", type=positive_int, default=6000, help="shapes-world training images (default: 6000)")
    t.add_argument("--size", type=int, default=32, choices=(32, 64), help="image size (default: 32)")
    t.add_argument("--width", type=positive_int, default=32, help="ngf = ndf (default: 32)")
    t.add_argument("--upsample", default="deconv", choices=UPSAMPLE,
                   help="G's upsampling: deconv (the paper) or resize (nearest x2 + 3x3 conv; default: deconv)")
    t.add_argument("--wrong-text", default="random", choices=WRONG_TEXT,
                   help="GAN-CLS wrong texts: random (the paper) or near (differs in one attribute; default: random)")
    t.add_argument("--zoom", type=int, default=1, choices=(1, 2),
                   help="2: object-centred crops of scenes drawn at twice the size (default: 1)")
    t.add_argument("--lr-d", type=positive_float, default=None, help="Adam step size of D (default: --lr)")
    t.add_argument("--real-label", type=float, default=1.0,
                   help="D's target for real images with the right text; < 1 is one-sided label smoothing "
                        "(default: 1, the paper)")
    t.add_argument("--instance-noise", type=nonneg_float, default=0.0,
                   help="σ of the Gaussian noise added to every image D sees, at step 0 (default: 0, the paper)")
    t.add_argument("--noise-anneal-steps", type=nonneg_int, default=0,
                   help="σ falls linearly to 0 over this many GAN steps (default: 0 = constant)")
    t.add_argument("--text-encoder", default=None, help="reuse the fixed text encoder of this model.pt")
    t.set_defaults(func=_train)

    s = verbs.add_parser("sample", help="images from captions")
    add_common(s, out_default="text2image_samples.png", out_help="PNG path")
    s.add_argument("--checkpoint", required=True, help="a run's model.pt")
    s.add_argument("--text", action="append", required=True, help='a caption, e.g. "small red star" (repeatable)')
    s.add_argument("--n", type=positive_int, default=8, help="samples per caption (default: 8)")
    s.set_defaults(func=_sample)

    x = verbs.add_parser("transfer", help="render query images' style with new captions: G(S(x), phi(t))")
    add_common(x, out_default="text2image_transfer.png", out_help="PNG path")
    x.add_argument("--checkpoint", required=True, help="a run's model.pt")
    x.add_argument("--text", action="append", required=True, help="a caption (repeatable)")
    x.add_argument("--n", type=positive_int, default=6, help="query images from the shapes test split (default: 6)")
    x.set_defaults(func=_transfer)

    j = verbs.add_parser("judge", help="train the attribute classifier used by eval")
    add_common(j, out_default="runs/text2image_judge", out_help="run folder")
    j.add_argument("--steps", type=positive_int, default=1500, help="training steps (default: 1500)")
    j.add_argument("--batch-size", type=positive_int, default=64, help="batch size (default: 64)")
    j.add_argument("--size", type=int, default=32, choices=(32, 64), help="image size (default: 32)")
    j.add_argument("--zoom", type=int, default=1, choices=(1, 2),
                   help="the zoom of the models it will judge (see train --zoom; default: 1)")
    j.add_argument("--augment", action="store_true",
                   help="train on blurred and noisy copies too (a judge robust to imperfect samples)")
    j.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    j.set_defaults(func=_judge)

    e = verbs.add_parser("eval", help="attribute accuracy on held-out captions, style AUC")
    add_common(e, out_default=None, out_help="optional JSON file for the metrics")
    e.add_argument("--checkpoint", required=True, help="a run's model.pt")
    e.add_argument("--judge", required=True, help="the judge's checkpoint.pt")
    e.add_argument("--n", type=positive_int, default=600, help="test captions (default: 600)")
    e.set_defaults(func=_eval)


def _train(args):
    cfg = recipe.Config(steps=args.steps, embed_steps=args.embed_steps, style_steps=args.style_steps,
                        batch_size=args.batch_size, lr=args.lr, lr_d=args.lr_d, seed=args.seed,
                        train_size=args.train_size, text_encoder=args.text_encoder, sample_every=args.sample_every,
                        checkpoint_every=args.checkpoint_every, variant=args.variant, image_size=args.size,
                        ngf=args.width, ndf=args.width, real_label=args.real_label,
                        instance_noise=args.instance_noise, noise_anneal_steps=args.noise_anneal_steps,
                        zoom=args.zoom, upsample=args.upsample, wrong_text=args.wrong_text)
    run = recipe.train(cfg, args.out, resume=args.resume, device=resolve_device(args.device))
    print(f"wrote {run.file('model.pt')}")
    return 0


def _sample(args):
    seed_everything(args.seed)
    [path] = recipe.sample(args.checkpoint, args.text, args.out, n=args.n, seed=args.seed,
                           device=resolve_device(args.device))
    print("wrote", path)
    return 0


def _transfer(args):
    seed_everything(args.seed)
    [path] = recipe.transfer(args.checkpoint, args.text, args.out, n=args.n, seed=args.seed,
                             device=resolve_device(args.device))
    print("wrote", path)
    return 0


def _judge(args):
    cfg = recipe.JudgeConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed, image_size=args.size,
                             augment=args.augment, zoom=args.zoom)
    run = recipe.train_judge(cfg, args.out, resume=args.resume, device=resolve_device(args.device))
    print(f"wrote {run.checkpoint_path}")
    return 0


def _eval(args):
    res = recipe.evaluate(args.checkpoint, args.judge, n=args.n, seed=args.seed, device=resolve_device(args.device))
    for k, v in res.items():
        print(f"{k:40s} {v:.4f}" if isinstance(v, float) else f"{k:40s} {v}")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
        print(f"wrote {args.out}")
    return 0
