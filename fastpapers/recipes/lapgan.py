"""LAPGAN (Denton et al. 2015): training, sampling, Parzen evaluation, and the comparison with a
single-scale GAN. The recipe face of :mod:`fastpapers.recipes`.

Data: MNIST digits (default), CIFAR-10 pickles or an image folder (``Config.data``), resized
to ``size``; 300 validation and 300 test images are held out by a fixed split. A run folder
holds ``run.json`` (the :class:`Config`, with ``channels`` and ``num_classes`` as read from the
data), ``checkpoint.pt`` (module "lapgan"), metrics and ``samples/``.

Example (seconds on a CPU)::

    from fastpapers.recipes import lapgan
    run = lapgan.train(lapgan.Config(size=8, levels=2, steps=20), "runs/lapgan_quick")
    lapgan.sample(run, "lapgan_quick.png", n=16, strip=True)
    print(lapgan.evaluate(run, samples=200))            # Parzen log-likelihood on the test images
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import ClassVar, Optional

import torch

from ..models.lapgan import (LAPGAN, count_parameters, gan_optimizers, gan_step_fn, lapgan_optimizers,
                             lapgan_step_fn, matched_gan, sample_strip)
from ._common import Loaded, RecipeConfig, RunLike, load_trained, open_run

PAPER = "lapgan"
HELD_OUT = 300  # validation and test images each, as the paper's protocol on a small set
SPLIT_SEED = 0  # fixed, so every run holds out the same images
MODEL_KEYS = ("size", "channels", "levels", "num_classes", "noise_dim", "base_hidden", "conv_hidden", "conv_kernel")


@dataclass
class Config(RecipeConfig):
    """LAPGAN's settings; the defaults are the CLI's (MNIST 16x16, a 16 -> 8 -> 4 pyramid)."""

    data: Optional[str] = None
    size: int = 16
    channels: int = 1
    levels: int = 3
    class_cond: bool = False
    num_classes: int = 0
    noise_dim: int = 100
    base_hidden: int = 256
    conv_hidden: int = 32
    conv_kernel: int = 5
    steps: int = 3000
    batch_size: int = 64
    lr: float = 2e-4
    seed: int = 0
    checkpoint_every: int = 250
    sample_every: int = 500
    log_every: int = 50

    PAPER: ClassVar[str] = PAPER
    RESUMABLE: ClassVar[tuple] = ("steps", "batch_size", "lr", "seed", "checkpoint_every", "sample_every",
                                  "log_every")
    FLAGS: ClassVar[dict] = {"class_cond": "--class-cond", "num_classes": "--class-cond"}

    def __post_init__(self):
        self.check_int("size", 2)
        for name in ("channels", "levels", "noise_dim", "base_hidden", "conv_hidden", "conv_kernel", "steps",
                     "batch_size"):
            self.check_int(name, 1)
        for name in ("num_classes", "checkpoint_every", "sample_every", "log_every"):
            self.check_int(name, 0)
        self.check_float("lr")
        if self.conv_kernel % 2 == 0:
            self.fail("conv_kernel", "odd")
        from .. import ops
        top = ops.max_pyramid_levels(self.size, self.size)
        if not 2 <= self.levels <= top:
            self.fail("levels", f"in [2, {top}] for size {self.size}")

    @classmethod
    def from_dict(cls, d, *, source=None):
        # A folder converted from the older lapgan.json: {"model": {...}, "data": ..., "seed": ...}.
        if isinstance(d, dict) and isinstance(d.get("model"), dict):
            model = d["model"]
            d = {**model, **{k: v for k, v in d.items() if k != "model"},
                 "class_cond": bool(model.get("num_classes", 0))}
        return super().from_dict(d, source=source)

    def model_config(self) -> dict:
        return {k: getattr(self, k) for k in MODEL_KEYS}


def build(cfg: Config) -> dict:
    """{"lapgan": LAPGAN} for ``cfg`` (the generators and discriminators of every level)."""
    return {"lapgan": LAPGAN(**cfg.model_config())}


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
    """(train, validation, test) indices: the last two HELD_OUT images each, a fixed split."""
    from ..data import split_indices

    if n <= 2 * HELD_OUT:
        raise ValueError(f"the data must hold more than {2 * HELD_OUT} images (validation and test take "
                         f"{HELD_OUT} each), got {n}")
    return split_indices(n, [n - 2 * HELD_OUT, HELD_OUT, HELD_OUT], seed=SPLIT_SEED)


def _trainer(modules, optimizers, step_fn, train_set, out, *, seed, batch_size, device, sample_fn=None,
             checkpoint=None, checkpoint_every=250, sample_every=0, log_every=50, progress=True):
    from ..train import Trainer
    return Trainer(modules, optimizers, step_fn, data=train_set, batch_size=batch_size, out_dir=out, seed=seed,
                   device=device, log_every=log_every, checkpoint_every=checkpoint_every, checkpoint_path=checkpoint,
                   sample_fn=sample_fn, sample_every=sample_every, sample_range=(-1.0, 1.0), progress=progress)


def train(cfg: Config, out: str, *, resume: bool = False, data=None, device="cpu", progress: bool = True,
          checkpoint: Optional[str] = None):
    """Train every pyramid level's GAN on ``cfg.data`` (or ``data``: (images, labels, classes))
    into the run folder ``out``; ``checkpoint`` overrides where the checkpoint goes. Returns
    the Run."""
    from torch.utils.data import TensorDataset
    from ..train import seed_everything
    x, y, num_classes = data if data is not None else load_images(cfg.data, cfg.size)
    train_idx, _, _ = splits(len(x))
    if cfg.class_cond and (y < 0).any():
        raise ValueError("--class-cond needs labelled data (CIFAR-10, MNIST, or an image folder with sub-folders)")
    cfg = cfg.replace(channels=int(x.shape[1]), num_classes=num_classes if cfg.class_cond else 0)
    LAPGAN(**cfg.model_config())  # a bad pyramid (e.g. too many levels) is refused before the folder is made
    run = open_run(out, cfg, resume=resume)
    seed_everything(cfg.seed)
    model = build(cfg)["lapgan"]
    labels = torch.arange(64) % max(model.num_classes, 1) if model.num_classes else None
    tr = _trainer({"lapgan": model}, lapgan_optimizers(model, cfg.lr), lapgan_step_fn(model),
                  TensorDataset(x[train_idx], y[train_idx]), run.path, seed=cfg.seed, batch_size=cfg.batch_size,
                  device=device, sample_fn=lambda t: model.sample(64, labels),
                  checkpoint=checkpoint or run.checkpoint_path,
                  checkpoint_every=cfg.checkpoint_every, sample_every=cfg.sample_every, log_every=cfg.log_every,
                  progress=progress)
    tr.fit(cfg.steps, resume=resume)
    return run


def load(run: RunLike, device="cpu") -> Loaded:
    """The trained LAPGAN (``nets["lapgan"]``, eval mode) of a run folder, a file in it, or a Run."""
    return load_trained(run, PAPER, Config, build, device)


def sample(run: RunLike, out: str, *, n: int = 64, cls: Optional[int] = None, strip: bool = False, seed: int = 0,
           device="cpu") -> list:
    """A grid of n samples at ``out`` (a PNG path; classes in turn, or all of class ``cls``, for
    a class-conditional model) and with ``strip`` ``<out>_strip.png``: coarse-to-fine rows."""
    from ..train import seed_everything
    from ..viz import save_grid
    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    model = load(run, device).nets["lapgan"]
    labels = None
    if model.num_classes:
        if cls is not None and not 0 <= cls < model.num_classes:
            raise ValueError(f"--class must be in [0, {model.num_classes - 1}], got {cls}")
        labels = torch.full((n,), cls) if cls is not None else torch.arange(n) % model.num_classes
    elif cls is not None:
        raise ValueError("--class needs a class-conditional checkpoint (train with --class-cond)")
    seed_everything(seed)
    with torch.no_grad():
        images, levels = model.sample(n, labels, return_levels=True)
    nrow = model.num_classes if labels is not None and cls is None else 8
    written = [save_grid(images.cpu(), out, nrow=nrow, value_range=(-1, 1), scale=2)]
    if strip:
        rows = min(n, 8)
        root, ext = os.path.splitext(out)
        written.append(save_grid(sample_strip([lv[:rows].cpu() for lv in levels]), f"{root}_strip{ext or '.png'}",
                                 nrow=model.levels, value_range=(-1, 1), scale=3))
    return written


def sample_in_batches(model, n, batch=500):
    """(n, C, S, S) unconditional (or class-cycled) samples in [0, 1]."""
    out = []
    for start in range(0, n, batch):
        m = min(batch, n - start)
        labels = (torch.arange(start, start + m) % model.num_classes) if getattr(model, "num_classes", 0) else None
        out.append(((model.sample(m, labels) + 1) / 2).clamp(0, 1).cpu())
    return torch.cat(out)


def _parzen(samples01, valid, test):
    from ..metrics.parzen import parzen_evaluate
    return parzen_evaluate(samples01.double().cpu(), valid.double(), test.double())


def evaluate(run: RunLike, *, samples: int = 2000, seed: int = 0, device="cpu") -> dict:
    """Parzen-window log-likelihood of ``samples`` samples on the held-out test images, sigma
    chosen on the validation images (the paper's protocol): {"log_likelihood", "std_error", "sigma"}."""
    from ..train import seed_everything
    if samples < 1:
        raise ValueError(f"--samples must be >= 1, got {samples}")
    loaded = load(run, device)
    x, _, _ = load_images(loaded.config.data, loaded.config.size)
    _, valid_idx, test_idx = splits(len(x))
    seed_everything(seed)
    with torch.no_grad():
        s = sample_in_batches(loaded.nets["lapgan"], samples)
    return _parzen(s, x[valid_idx], x[test_idx])


def train_for_cpu_time(trainer, cpu_seconds, chunk=25):
    """Run ``trainer`` in chunks of steps until this process has used ``cpu_seconds`` of CPU
    time (all threads); each chunk resumes from the previous chunk's checkpoint."""
    start = time.process_time()
    steps = 0
    while time.process_time() - start < cpu_seconds:
        steps += chunk
        trainer.fit(steps, resume=True)
    return steps, time.process_time() - start


def compare(out: str, *, data=None, size: int = 16, levels: int = 3, cpu_seconds: float = 120.0,
            batch_size: int = 64, samples: int = 2000, threads: int = 1, conv_hidden: int = 16, conv_kernel: int = 3,
            seed: int = 0, device="cpu") -> dict:
    """The paper's experiment on our data: LAPGAN vs a single-scale GAN with a matched parameter
    count, each trained for ``cpu_seconds`` of CPU time, scored by Parzen log-likelihood.
    Writes ``out/{lapgan,gan}/`` (their training folders), ``config.json``, sample grids, the
    LAPGAN's coarse-to-fine strip, the test images and ``results.json``; returns the results."""
    from torch.utils.data import TensorDataset
    from ..train import atomic_save_json, seed_everything
    from ..viz import save_grid
    for name, v in (("--batch-size", batch_size), ("--samples", samples), ("--threads", threads)):
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    if not cpu_seconds > 0:
        raise ValueError(f"--cpu-seconds must be > 0, got {cpu_seconds}")
    torch.set_num_threads(threads)
    x, y, _ = load_images(data, size)
    train_idx, valid_idx, test_idx = splits(len(x))
    train_set = TensorDataset(x[train_idx], y[train_idx])
    os.makedirs(out, exist_ok=True)
    seed_everything(seed)
    lap = LAPGAN(size=size, channels=x.shape[1], levels=levels, conv_hidden=conv_hidden, conv_kernel=conv_kernel)
    seed_everything(seed)
    gan = matched_gan(lap)
    runs = [("lapgan", lap, {"lapgan": lap}, lapgan_optimizers(lap), lapgan_step_fn(lap)),
            ("gan", gan, {"gan": gan}, gan_optimizers(gan), gan_step_fn(gan))]
    atomic_save_json({"lapgan": lap.config, "gan": gan.config, "cpu_seconds": cpu_seconds, "threads": threads,
                      "batch_size": batch_size, "seed": seed, "data": data}, os.path.join(out, "config.json"), indent=2)
    results = {}
    for name, model, modules, opts, step in runs:
        print(f"== {name}: {count_parameters(model)} parameters, {cpu_seconds:.0f} CPU seconds")
        tr = _trainer(modules, opts, step, train_set, os.path.join(out, name), seed=seed, batch_size=batch_size,
                      device=device, checkpoint_every=0)
        steps, used = train_for_cpu_time(tr, cpu_seconds)
        model.eval()
        seed_everything(seed)
        with torch.no_grad():
            s = sample_in_batches(model, samples)
        res = _parzen(s, x[valid_idx], x[test_idx])
        res.update(parameters=count_parameters(model), steps=steps, cpu_seconds=round(used, 1))
        results[name] = res
        save_grid(s[:64], os.path.join(out, f"{name}_samples.png"), nrow=8, scale=2)
        print(f"   {steps} steps, Parzen log-likelihood {res['log_likelihood']:.1f} +- {res['std_error']:.1f} "
              f"(sigma {res['sigma']:.3f})")
    seed_everything(seed)
    with torch.no_grad():
        _, lv = lap.sample(8, return_levels=True)
    save_grid(sample_strip([v.cpu() for v in lv]), os.path.join(out, "lapgan_strip.png"), nrow=lap.levels,
              value_range=(-1, 1), scale=3)
    save_grid(x[test_idx][:64], os.path.join(out, "test_images.png"), nrow=8, scale=2)
    atomic_save_json(results, os.path.join(out, "results.json"), indent=2)
    return results
