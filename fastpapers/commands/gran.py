"""``fastpapers gran train|sample|battle``: the CLI of :mod:`fastpapers.recipes.gran`."""
from __future__ import annotations

import json
import os

from ..recipes import gran as recipe
from ._common import (add_common, add_training_flags, nonneg_float, positive_float, positive_int, resolve_device,
                      seed_everything)


def register(sub):
    p = sub.add_parser("gran", help="GRAN: recurrent adversarial networks and the GAM metric",
                       description="Train GRAN on MNIST, draw samples with per-step canvases, "
                                   "and battle two trained models with the GAM metric.")
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    p.set_defaults(func=lambda args: p.print_help() or 2)

    t = verbs.add_parser("train", help="train GRAN on MNIST")
    add_common(t, out_default="runs/gran", out_help="run folder (checkpoint, metrics, samples)")
    add_training_flags(t, steps=2000, batch_size=64, checkpoint_every=500, sample_every=500)
    t.add_argument("--size", type=positive_int, default=16, help="image size: 16, 28 or 32 (default: 16)")
    t.add_argument("--timesteps", type=positive_int, default=3, help="GRAN recurrent steps T (default: 3)")
    t.add_argument("--new-z-per-step", action="store_true", help="draw a fresh z at every step")
    t.add_argument("--width", type=positive_int, default=32, help="ngf = ndf channel width (default: 32)")
    t.add_argument("--lr-d", type=positive_float, default=2e-4, help="Adam step size of D (default: 2e-4)")
    t.add_argument("--lr-g", type=positive_float, default=2e-4, help="Adam step size of G (default: 2e-4)")
    t.set_defaults(func=_train)

    s = verbs.add_parser("sample", help="draw samples and per-step canvases from a trained run")
    add_common(s, out_default="gran_samples", out_help="folder for samples.png and steps.png")
    s.add_argument("--checkpoint", required=True, help="the run's checkpoint.pt (or its folder)")
    s.add_argument("--n", type=positive_int, default=64, help="number of samples (default: 64)")
    s.add_argument("--rows", type=positive_int, default=8, help="samples shown step by step (default: 8)")
    s.set_defaults(func=_sample)

    b = verbs.add_parser("battle", help="GAM battle between two trained runs")
    add_common(b, out_default=None, out_help="optional JSON file for the result")
    b.add_argument("--checkpoint", action="append", required=True,
                   help="a run checkpoint; give exactly two (model 1, then model 2)")
    b.add_argument("--n", type=positive_int, default=1000, help="samples per model (default: 1000)")
    b.add_argument("--tolerance", type=nonneg_float, default=0.2,
                   help="validity: |r_test - 1| <= this (default: 0.2)")
    b.add_argument("--bn", default="batch", choices=recipe.BN_MODES,
                   help="discriminator batch norm: statistics of the judged set, as the reference "
                        "battle.py (batch), or the running averages (default: batch)")
    b.set_defaults(func=_battle)


def _train(args):
    cfg = recipe.Config(steps=args.steps, batch_size=args.batch_size, lr_d=args.lr_d, lr_g=args.lr_g,
                        seed=args.seed, sample_every=args.sample_every, checkpoint_every=args.checkpoint_every,
                        image_size=args.size, timesteps=args.timesteps, ngf=args.width, ndf=args.width,
                        new_z_per_step=args.new_z_per_step)
    run = recipe.train(cfg, args.out, resume=args.resume, device=resolve_device(args.device))
    print(json.dumps(recipe.last_metrics(run.path)))
    return 0


def _sample(args):
    seed_everything(args.seed)
    for path in recipe.sample(args.checkpoint, args.out, n=args.n, rows=args.rows, seed=args.seed,
                              device=resolve_device(args.device)):
        print(f"wrote {path}")
    return 0


def _battle(args):
    if len(args.checkpoint) != 2:
        raise ValueError(f"--checkpoint must be given exactly twice, got {len(args.checkpoint)}")
    r = recipe.battle(args.checkpoint[0], args.checkpoint[1], n=args.n, seed=args.seed,
                      device=resolve_device(args.device), tolerance=args.tolerance, bn=args.bn)
    print(f"r_test = {r.r_test:.3f}  r_sample = {r.r_sample:.3f}  valid = {r.valid}  winner: {r.winner}")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(r.as_dict(), f, indent=1)
        print(f"wrote {args.out}")
    return 0
