"""GRAN (Im et al. 2016) on MNIST: training, sampling with per-step canvases, and GAM battles.

The recipe face of :mod:`fastpapers.recipes`. A run folder holds ``run.json`` (the
:class:`Config`), ``checkpoint.pt`` (the trainer's checkpoint of "G" and "D"),
``metrics.jsonl``/``metrics.csv`` and ``samples/``.

Example (seconds on a CPU)::

    from fastpapers.recipes import gran
    run = gran.train(gran.Config(steps=20, ngf=8, ndf=8), "runs/gran_quick")
    gran.sample(run, "gran_out", n=16)                  # samples.png, steps.png
    result = gran.battle(run, "runs/gran_other")         # a metrics.gam.BattleResult
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar, Optional

import torch

from ..metrics.gam import BattleResult, batch_statistics, gam_battle
from ..models import gran as gran_model
from ..models.gan import adversarial_step, dcgan_adam
from ._common import Loaded, RecipeConfig, RunLike, last_metrics, load_trained, open_run  # noqa: F401

PAPER = "gran"
TEST_DIGITS = 500  # the GAM battles' held-out digits
BN_MODES = ("batch", "running")


@dataclass
class Config(RecipeConfig):
    """GRAN's settings; the defaults are the CLI's (MNIST at 16x16, T = 3)."""

    nz: int = 100
    timesteps: int = 3
    image_size: int = 16
    channels: int = 1
    ngf: int = 32
    ndf: int = 32
    hz_dim: int = 100
    hc_dim: int = 100
    new_z_per_step: bool = False
    steps: int = 2000
    batch_size: int = 64
    lr_d: float = 2e-4
    lr_g: float = 2e-4
    seed: int = 0
    sample_every: int = 500
    checkpoint_every: int = 500
    log_every: int = 50

    PAPER: ClassVar[str] = PAPER
    RESUMABLE: ClassVar[tuple] = ("steps", "batch_size", "lr_d", "lr_g", "seed", "sample_every",
                                  "checkpoint_every", "log_every")
    FLAGS: ClassVar[dict] = {"ngf": "--width", "ndf": "--width", "image_size": "--size"}

    def __post_init__(self):
        for name in ("nz", "timesteps", "channels", "ngf", "ndf", "hz_dim", "hc_dim", "steps", "batch_size"):
            self.check_int(name, 1)
        for name in ("sample_every", "checkpoint_every", "log_every"):
            self.check_int(name, 0)
        self.check_int("image_size", 8)
        try:
            gran_model.base_and_levels(self.image_size)
        except ValueError:
            self.fail("image_size", "a size that halves down to a 4x4..7x7 base (e.g. 16, 28, 32, 64)")
        self.check_float("lr_d")
        self.check_float("lr_g")
        if not isinstance(self.new_z_per_step, bool):
            self.fail("new_z_per_step", "a bool")


def build(cfg: Config) -> dict:
    """{"G": GRANGenerator, "D": GRANDiscriminator} for ``cfg``."""
    g = gran_model.GRANGenerator(nz=cfg.nz, steps=cfg.timesteps, image_size=cfg.image_size, channels=cfg.channels,
                                 ngf=cfg.ngf, hz_dim=cfg.hz_dim, hc_dim=cfg.hc_dim,
                                 new_z_per_step=cfg.new_z_per_step)
    d = gran_model.GRANDiscriminator(image_size=cfg.image_size, channels=cfg.channels, ndf=cfg.ndf)
    return {"G": g, "D": d}


def mnist_split(split: str, image_size: int):
    """The 5,000 bundled MNIST digits in [0, 1], split by a fixed permutation into ``train``
    (4,500) and ``test`` (500, the GAM battles' held-out data): a TensorDataset of
    (images (N, 1, S, S), labels)."""
    from ..data import mnist, split_indices
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images, labels = mnist(image_size)
    test_idx, train_idx = split_indices(len(images), [TEST_DIGITS, len(images) - TEST_DIGITS], seed=0)
    idx = train_idx if split == "train" else test_idx
    return torch.utils.data.TensorDataset(images[idx], labels[idx])


def train(cfg: Config, out: str, *, resume: bool = False, data=None, device="cpu", progress: bool = True):
    """Train GRAN with alternating D and G Adam steps (β1 = 0.5) into the run folder ``out``.

    ``data`` defaults to the MNIST training split at the config's image size. Returns the
    :class:`~fastpapers.train.rundir.Run` (its last logged metrics: :func:`last_metrics`).
    """
    from ..train import Trainer, seed_everything
    run = open_run(out, cfg, resume=resume)
    seed_everything(cfg.seed)
    nets = build(cfg)
    g, d = nets["G"], nets["D"]
    if data is None:
        data = mnist_split("train", cfg.image_size)
    opts = {"D": dcgan_adam(d.parameters(), cfg.lr_d), "G": dcgan_adam(g.parameters(), cfg.lr_g)}

    def step(tr, batch):
        real = batch[0]
        fake = g(g.sample_z(real.shape[0], device=tr.device))
        loss_d, loss_g = adversarial_step(d, real, fake, tr.step)
        return {"loss_d": loss_d, "loss_g": loss_g}

    fixed = g.sample_z(64, generator=torch.Generator().manual_seed(cfg.seed))
    trainer = Trainer(nets, opts, step, data=data, batch_size=cfg.batch_size, out_dir=run.path, seed=cfg.seed,
                      device=device, log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every,
                      checkpoint_path=run.checkpoint_path, sample_fn=lambda tr: g(fixed.to(tr.device)),
                      sample_every=cfg.sample_every, sample_range=(0.0, 1.0), progress=progress)
    trainer.fit(cfg.steps, resume=resume)
    return run


def load(run: RunLike, device="cpu") -> Loaded:
    """The trained G and D (eval mode) of a run folder, a file in it, or a Run.

    A ``.pt`` file in the folder other than its checkpoint.pt (a snapshot of it) gives that
    file's weights."""
    def weights(r, nets):
        path = os.path.abspath(os.fspath(run))
        snapshot = path.endswith(".pt") and os.path.isfile(path) and path != os.path.abspath(r.checkpoint_path)
        r.load_checkpoint(nets, checkpoint=path if snapshot else None)

    return load_trained(run, PAPER, Config, build, device,
                        weights=weights if isinstance(run, (str, os.PathLike)) else None)


@torch.no_grad()
def draw(g: gran_model.GRANGenerator, n: int, *, seed: int = 0, device="cpu", batch_size: int = 500):
    """n samples from G: (canvas (n, C, S, S), running canvases (n, T, C, S, S)), on the CPU."""
    gen = torch.Generator().manual_seed(seed)
    canvases, steps = [], []
    for i in range(0, n, batch_size):
        z = g.sample_z(min(batch_size, n - i), generator=gen, device=device)
        c, s = g(z, return_steps=True)
        canvases.append(c.cpu())
        steps.append(s.cpu())
    return torch.cat(canvases), torch.cat(steps)


def save_step_grid(steps: torch.Tensor, path: str, scale: int = 2) -> str:
    """One row per sample, one column per step: the running canvases σ(Σ_{s≤t} ΔC_s)."""
    from ..viz import save_grid
    n, t = steps.shape[:2]
    return save_grid(steps.reshape(n * t, *steps.shape[2:]), path, nrow=t, scale=scale)


def sample(run: RunLike, out: str, *, n: int = 64, rows: int = 8, seed: int = 0, device="cpu",
           prefix: str = "") -> list:
    """Write ``<prefix>samples.png`` (n canvases) and ``<prefix>steps.png`` (per-step canvases of
    ``rows`` samples) into the folder ``out``; returns the two paths."""
    from ..viz import save_grid
    if n < 1 or rows < 1:
        raise ValueError(f"--n and --rows must be >= 1, got {n} and {rows}")
    g = load(run, device).nets["G"]
    canvas, steps = draw(g, max(n, rows), seed=seed, device=device)
    os.makedirs(out, exist_ok=True)
    return [save_grid(canvas[:n], os.path.join(out, f"{prefix}samples.png"), nrow=8, scale=2),
            save_step_grid(steps[:rows], os.path.join(out, f"{prefix}steps.png"))]


def battle(run1: RunLike, run2: RunLike, *, n: int = 1000, seed: int = 0, device="cpu", tolerance: float = 0.2,
           test: Optional[torch.Tensor] = None, bn: str = "batch") -> BattleResult:
    """GAM battle (:mod:`fastpapers.metrics.gam`) between two trained GRAN runs on the MNIST
    test split (or ``test`` images).

    ``bn="batch"`` (the reference ``battle.py``): each discriminator normalises with the
    statistics of the set it judges, the test set and each model's samples judged as one
    batch each; ``bn="running"``: eval mode, the running averages of training.
    """
    if bn not in BN_MODES:
        raise ValueError(f"bn (--bn) must be one of {list(BN_MODES)}, got {bn!r}")
    a, b = load(run1, device), load(run2, device)
    shape1, shape2 = (a.config.channels, a.config.image_size), (b.config.channels, b.config.image_size)
    if shape1 != shape2:
        raise ValueError(f"the two runs draw different images: {shape1} vs {shape2}")
    if test is None:
        test = mnist_split("test", a.config.image_size).tensors[0]
    s1, _ = draw(a.nets["G"], n, seed=seed, device=device)
    s2, _ = draw(b.nets["G"], n, seed=seed + 1, device=device)
    d1, d2 = a.nets["D"], b.nets["D"]
    if bn == "running":
        return gam_battle(d1, s1.to(device), d2, s2.to(device), test.to(device), tolerance=tolerance)
    return gam_battle(batch_statistics(d1), s1.to(device), batch_statistics(d2), s2.to(device), test.to(device),
                      tolerance=tolerance, batch_size=max(n, len(test)))


def evaluate(run: RunLike, opponent: RunLike, **battle_kw) -> dict:
    """GRAN's metric is comparative: the GAM battle of ``run`` (model 1) against ``opponent``,
    as a dict (error rates, r_test, r_sample, valid, winner)."""
    return battle(run, opponent, **battle_kw).as_dict()
