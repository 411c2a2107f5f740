"""``fastpapers gran train|sample|battle``: GRAN (Im et al. 2016) on MNIST, and GAM battles.

The functions :func:`train`, :func:`sample` and :func:`battle` are the Python entry points;
the CLI only parses flags into them. A run folder holds ``config.json`` (the model's shape),
``checkpoint.pt`` (the trainer's checkpoint), ``metrics.jsonl``/``metrics.csv`` and
``samples/``.
"""
from __future__ import annotations

import json
import os
from typing import Optional

import torch

from ..models import gran
from ._common import add_common, resolve_device, seed_everything

def default_config(**overrides) -> dict:
    cfg = dict(nz=100, timesteps=3, image_size=16, channels=1, ngf=32, ndf=32, hz_dim=100, hc_dim=100,
               new_z_per_step=False)
    unknown = sorted(set(overrides) - set(cfg))
    if unknown:
        raise ValueError(f"unknown GRAN config keys {unknown}; known: {sorted(cfg)}")
    cfg.update(overrides)
    return cfg


def build(cfg: dict) -> tuple[gran.GRANGenerator, gran.GRANDiscriminator]:
    g = gran.GRANGenerator(nz=cfg["nz"], steps=cfg["timesteps"], image_size=cfg["image_size"],
                           channels=cfg["channels"], ngf=cfg["ngf"], hz_dim=cfg["hz_dim"], hc_dim=cfg["hc_dim"],
                           new_z_per_step=cfg["new_z_per_step"])
    d = gran.GRANDiscriminator(image_size=cfg["image_size"], channels=cfg["channels"], ndf=cfg["ndf"])
    return g, d


TEST_DIGITS = 500


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


def _config_path(run_dir: str) -> str:
    return os.path.join(run_dir, "config.json")


def load_run(checkpoint: str, device="cpu") -> tuple[dict, gran.GRANGenerator, gran.GRANDiscriminator]:
    """(config, G, D) in eval mode from a trainer checkpoint with ``config.json`` beside it."""
    from ..train import load_checkpoint
    cfg_path = _config_path(os.path.dirname(os.path.abspath(checkpoint)))
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"config file not found: {cfg_path} (written by `fastpapers gran train`)")
    with open(cfg_path) as f:
        cfg = default_config(**json.load(f))
    g, d = build(cfg)
    load_checkpoint(checkpoint, {"G": g, "D": d})
    return cfg, g.to(device).eval(), d.to(device).eval()


def train(out: str, *, steps: int = 2000, batch_size: int = 64, lr_d: float = 2e-4, lr_g: float = 2e-4,
          seed: int = 0, device="cpu", resume: bool = False, data=None, sample_every: int = 500,
          checkpoint_every: int = 500, log_every: int = 50, progress: bool = True, **config) -> dict:
    """Train GRAN with alternating D and G Adam steps (β1 = 0.5) through the shared Trainer.

    ``data`` defaults to the MNIST training split at the config's image size. Returns the
    last logged metrics.
    """
    from ..train import Trainer, seed_everything as train_seed
    cfg = default_config(**config)
    cfg_path = _config_path(out)
    if resume and os.path.isfile(cfg_path):
        with open(cfg_path) as f:
            saved = json.load(f)
        if saved != cfg:
            raise ValueError(f"--resume: the run in {out} was trained with config {saved}, not {cfg}")
    os.makedirs(out, exist_ok=True)
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=1)
    train_seed(seed)
    g, d = build(cfg)
    if data is None:
        data = mnist_split("train", cfg["image_size"])
    opts = {"D": torch.optim.Adam(d.parameters(), lr_d, betas=(0.5, 0.999)),
            "G": torch.optim.Adam(g.parameters(), lr_g, betas=(0.5, 0.999))}

    def step(tr, batch):
        real = batch[0]
        fake = g(g.sample_z(real.shape[0], device=tr.device))
        loss_d = gran.discriminator_loss(d(real), d(fake.detach()))
        tr.step("D", loss_d)
        loss_g = gran.generator_loss(d(fake))
        tr.step("G", loss_g)
        return {"loss_d": loss_d, "loss_g": loss_g}

    fixed = g.sample_z(64, generator=torch.Generator().manual_seed(seed))

    def sample_fn(tr):
        return g(fixed.to(tr.device))

    trainer = Trainer({"G": g, "D": d}, opts, step, data=data, batch_size=batch_size, out_dir=out, seed=seed,
                      device=device, log_every=log_every, checkpoint_every=checkpoint_every,
                      sample_fn=sample_fn, sample_every=sample_every, sample_range=(0.0, 1.0),
                      progress=progress)
    return trainer.fit(steps, resume=resume)


@torch.no_grad()
def draw(g: gran.GRANGenerator, n: int, *, seed: int = 0, device="cpu", batch_size: int = 500):
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


def sample(checkpoint: str, out: str, *, n: int = 64, rows: int = 8, seed: int = 0, device="cpu",
           prefix: str = "") -> list:
    """Write ``<prefix>samples.png`` (n canvases) and ``<prefix>steps.png`` (per-step canvases of
    ``rows`` samples) into the folder ``out``."""
    from ..viz import save_grid
    if n < 1 or rows < 1:
        raise ValueError(f"--n and --rows must be >= 1, got {n} and {rows}")
    _, g, _ = load_run(checkpoint, device)
    canvas, steps = draw(g, max(n, rows), seed=seed, device=device)
    os.makedirs(out, exist_ok=True)
    return [save_grid(canvas[:n], os.path.join(out, f"{prefix}samples.png"), nrow=8, scale=2),
            save_step_grid(steps[:rows], os.path.join(out, f"{prefix}steps.png"))]


def battle(checkpoint1: str, checkpoint2: str, *, n: int = 1000, seed: int = 0, device="cpu",
           tolerance: float = 0.2, test=None, bn: str = "batch") -> gran.BattleResult:
    """GAM battle between two trained GRAN runs on the MNIST test split (or ``test`` images).

    ``bn="batch"`` (the reference ``battle.py``): each discriminator normalises with the
    statistics of the set it judges, the test set and each model's samples judged as one
    batch each; ``bn="running"``: eval mode, the running averages of training.
    """
    if bn not in ("batch", "running"):
        raise ValueError(f"bn must be 'batch' or 'running', got {bn!r}")
    cfg1, g1, d1 = load_run(checkpoint1, device)
    cfg2, g2, d2 = load_run(checkpoint2, device)
    shape1 = (cfg1["channels"], cfg1["image_size"])
    if shape1 != (cfg2["channels"], cfg2["image_size"]):
        raise ValueError(f"the two checkpoints draw different images: {shape1} vs "
                         f"{(cfg2['channels'], cfg2['image_size'])}")
    if test is None:
        test = mnist_split("test", cfg1["image_size"]).tensors[0]
    s1, _ = draw(g1, n, seed=seed, device=device)
    s2, _ = draw(g2, n, seed=seed + 1, device=device)
    if bn == "running":
        return gran.gam_battle(d1, s1.to(device), d2, s2.to(device), test.to(device), tolerance=tolerance)
    return gran.gam_battle(gran.batch_statistics(d1), s1.to(device), gran.batch_statistics(d2), s2.to(device),
                           test.to(device), tolerance=tolerance, batch_size=max(n, len(test)))


# ---- CLI ---------------------------------------------------------------------------------------

def register(sub):
    p = sub.add_parser("gran", help="GRAN: recurrent adversarial networks and the GAM metric",
                       description="Train GRAN on MNIST, draw samples with per-step canvases, "
                                   "and battle two trained models with the GAM metric.")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)

    t = verbs.add_parser("train", help="train GRAN on MNIST")
    add_common(t, out_default="runs/gran", out_help="run folder (checkpoint, metrics, samples)")
    t.add_argument("--steps", type=int, default=2000, help="training steps (default: 2000)")
    t.add_argument("--batch-size", type=int, default=64, help="batch size (default: 64)")
    t.add_argument("--size", type=int, default=16, help="image size: 16, 28 or 32 (default: 16)")
    t.add_argument("--timesteps", type=int, default=3, help="GRAN recurrent steps T (default: 3)")
    t.add_argument("--new-z-per-step", action="store_true", help="draw a fresh z at every step")
    t.add_argument("--width", type=int, default=32, help="ngf = ndf channel width (default: 32)")
    t.add_argument("--lr-d", type=float, default=2e-4, help="Adam step size of D (default: 2e-4)")
    t.add_argument("--lr-g", type=float, default=2e-4, help="Adam step size of G (default: 2e-4)")
    t.add_argument("--sample-every", type=int, default=500, help="sample grid every N steps (default: 500)")
    t.add_argument("--checkpoint-every", type=int, default=500, help="checkpoint every N steps (default: 500)")
    t.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    t.set_defaults(func=_train_cli)

    s = verbs.add_parser("sample", help="draw samples and per-step canvases from a trained run")
    add_common(s, out_default="gran_samples", out_help="folder for samples.png and steps.png")
    s.add_argument("--checkpoint", required=True, help="run checkpoint (config.json beside it)")
    s.add_argument("--n", type=int, default=64, help="number of samples (default: 64)")
    s.add_argument("--rows", type=int, default=8, help="samples shown step by step (default: 8)")
    s.set_defaults(func=_sample_cli)

    b = verbs.add_parser("battle", help="GAM battle between two trained runs")
    add_common(b, out_default=None, out_help="optional JSON file for the result")
    b.add_argument("--checkpoint", action="append", required=True,
                   help="a run checkpoint; give exactly two (model 1, then model 2)")
    b.add_argument("--n", type=int, default=1000, help="samples per model (default: 1000)")
    b.add_argument("--tolerance", type=float, default=0.2, help="validity: |r_test - 1| <= this (default: 0.2)")
    b.add_argument("--bn", default="batch", choices=("batch", "running"),
                   help="discriminator batch norm: statistics of the judged set, as the reference "
                        "battle.py (batch), or the running averages (default: batch)")
    b.set_defaults(func=_battle_cli)


def _train_cli(args):
    for flag, v in (("--steps", args.steps), ("--batch-size", args.batch_size), ("--timesteps", args.timesteps),
                    ("--width", args.width)):
        if v < 1:
            raise ValueError(f"{flag} must be >= 1, got {v}")
    device = resolve_device(args.device)
    metrics = train(args.out, steps=args.steps, batch_size=args.batch_size, lr_d=args.lr_d, lr_g=args.lr_g,
                    seed=args.seed, device=device, resume=args.resume, sample_every=args.sample_every,
                    checkpoint_every=args.checkpoint_every, image_size=args.size, timesteps=args.timesteps,
                    ngf=args.width, ndf=args.width, new_z_per_step=args.new_z_per_step)
    print(json.dumps(metrics))
    return 0


def _sample_cli(args):
    seed_everything(args.seed)
    for path in sample(args.checkpoint, args.out, n=args.n, rows=args.rows, seed=args.seed,
                       device=resolve_device(args.device)):
        print(f"wrote {path}")
    return 0


def _battle_cli(args):
    if len(args.checkpoint) != 2:
        raise ValueError(f"--checkpoint must be given exactly twice, got {len(args.checkpoint)}")
    r = battle(args.checkpoint[0], args.checkpoint[1], n=args.n, seed=args.seed,
               device=resolve_device(args.device), tolerance=args.tolerance, bn=args.bn)
    print(f"r_test = {r.r_test:.3f}  r_sample = {r.r_sample:.3f}  valid = {r.valid}  winner: {r.winner}")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(r.as_dict(), f, indent=1)
        print(f"wrote {args.out}")
    return 0
