"""LAPGAN's headline (Denton et al. 2015, Table 1): a Laplacian-pyramid GAN against a
single-scale GAN with a matched parameter count, each given the same CPU time, scored by the
Gaussian Parzen-window log-likelihood of held-out digits; the class-conditional LAPGAN is
scored the same way.

Every variant trains for ``cpu_seconds`` of process CPU time (the budget that ``budget_scale``
multiplies), in chunks of steps each ending on a checkpoint, as :func:`fastpapers.recipes.lapgan.compare`
does; the CPU seconds used so far are kept in the run folder's ``cpu_budget.json``, so a resumed
run gets only what it still lacks. The LAPGAN variants are ordinary recipe run folders (``run.json``
+ ``checkpoint.pt`` of module ``lapgan``) that :func:`fastpapers.recipes.lapgan.load`,
``sample`` and ``evaluate`` open. The recipe has no train or load for its single-scale baseline
(only inside ``compare``), so this module trains it from the same pieces
(:func:`~fastpapers.models.lapgan.matched_gan`, ``gan_step_fn``, ``gan_optimizers``) into a folder
whose checkpoint holds module ``gan`` and whose ``baseline.json`` marks it, and scores it with
the recipe's Parzen evaluation on the same split.
"""
import os
import time

from . import Protocol, register

CHUNK = 50  # steps between checks of the CPU budget (each ends on a checkpoint)
_EXTRA = ("cpu_seconds", "baseline", "samples")  # protocol settings the recipe's Config does not know


def _recipe_config(config):
    from ..recipes import lapgan as R
    return R.Config(**{k: v for k, v in config.items() if k not in _EXTRA}, steps=CHUNK)


def _fit_for_cpu(trainer, seconds, ledger):
    """Train in CHUNK-step pieces until the run has used ``seconds`` CPU seconds in all its
    attempts (``ledger``: {"cpu_seconds", "steps"} on disk)."""
    from ..train.checkpoint import atomic_save_json, read_json_file
    state = read_json_file(ledger, what="CPU budget") if os.path.isfile(ledger) else {"cpu_seconds": 0.0, "steps": 0}
    while state["cpu_seconds"] < seconds:
        t0 = time.process_time()
        state["steps"] += CHUNK
        trainer.fit(state["steps"], resume=True)
        state["cpu_seconds"] += time.process_time() - t0
        atomic_save_json(state, ledger)
    return state


def train(config, run_dir, *, device="cpu", progress=False, resume=False):
    """One variant for ``config["cpu_seconds"]`` CPU seconds in ``run_dir``; returns run_dir."""
    from torch.utils.data import TensorDataset

    from ..models.lapgan import gan_optimizers, gan_step_fn, lapgan_optimizers, lapgan_step_fn, matched_gan
    from ..recipes import lapgan as R
    from ..recipes._common import open_run
    from ..train import seed_everything
    from ..train.checkpoint import atomic_save_json

    cfg = _recipe_config(config)
    x, y, classes = R.load_images(cfg.data, cfg.size)
    train_idx, _, _ = R.splits(len(x))
    cfg = cfg.replace(channels=int(x.shape[1]), num_classes=classes if cfg.class_cond else 0)
    run = open_run(run_dir, cfg, resume=resume)
    seed_everything(cfg.seed)
    lap = R.build(cfg)["lapgan"]
    if config.get("baseline"):
        seed_everything(cfg.seed)
        model, name = matched_gan(lap), "gan"
        opts, step = gan_optimizers(model, cfg.lr), gan_step_fn(model)
        atomic_save_json({"model": "SingleScaleGAN", "config": model.config}, os.path.join(run_dir, "baseline.json"))
    else:
        model, name = lap, "lapgan"
        opts, step = lapgan_optimizers(model, cfg.lr), lapgan_step_fn(model)
    tr = R._trainer({name: model}, opts, step, TensorDataset(x[train_idx], y[train_idx]), run.path, seed=cfg.seed,
                    batch_size=cfg.batch_size, device=device, checkpoint=run.checkpoint_path, checkpoint_every=0,
                    log_every=cfg.log_every, progress=progress)
    _fit_for_cpu(tr, config["cpu_seconds"], os.path.join(run_dir, "cpu_budget.json"))
    return run_dir


def _baseline(run_dir, device):
    from ..models.lapgan import SingleScaleGAN
    from ..recipes import lapgan as R
    from ..train.checkpoint import read_json_file
    from ..train.rundir import load_run

    spec = read_json_file(os.path.join(run_dir, "baseline.json"), what="baseline record")
    model = SingleScaleGAN(**spec["config"])
    run = load_run(run_dir, R.PAPER)
    run.load_checkpoint({"gan": model})
    return model.to(device).eval(), run


def evaluate(run_dir, config, *, device="cpu"):
    import torch

    from ..models.lapgan import count_parameters
    from ..recipes import lapgan as R
    from ..train import seed_everything
    from ..train.checkpoint import read_json_file

    samples = config["samples"]
    if config.get("baseline"):
        model, _ = _baseline(run_dir, device)
        x, _, _ = R.load_images(config.get("data"), config["size"])
        _, valid_idx, test_idx = R.splits(len(x))
        seed_everything(0)
        with torch.no_grad():
            s = R.sample_in_batches(model, samples)
        res = R._parzen(s, x[valid_idx], x[test_idx])
    else:
        model = R.load(run_dir, device).nets["lapgan"]
        res = R.evaluate(run_dir, samples=samples, seed=0, device=device)
    state = read_json_file(os.path.join(run_dir, "cpu_budget.json"), what="CPU budget")
    return {"log_likelihood": float(res["log_likelihood"]), "std_error": float(res["std_error"]),
            "sigma": float(res["sigma"]), "steps": float(state["steps"]),
            "parameters": float(count_parameters(model))}


def figures(folder, results, runs_dir, *, device="cpu"):
    """64 samples of each variant's first replicate, and the LAPGAN's coarse-to-fine strip."""
    import torch

    from ..models.lapgan import sample_strip
    from ..recipes import lapgan as R
    from ..train import seed_everything
    from ..viz import save_grid

    paths = []
    for variant in results["summary"]:
        rows = [r for r in results["runs"] if r["variant"] == variant]
        if not rows:
            continue
        run_dir = os.path.join(runs_dir, variant.replace(" ", "_"), rows[0]["replicate"])
        stem = variant.replace(" ", "_").replace("/", "_")
        seed_everything(0)
        with torch.no_grad():
            if rows[0]["config"].get("baseline"):
                model, _ = _baseline(run_dir, device)
            else:
                model = R.load(run_dir, device).nets["lapgan"]
            s = R.sample_in_batches(model, 64)
            paths.append(save_grid(s, os.path.join(folder, f"samples_{stem}.png"), nrow=8, scale=2))
            if not rows[0]["config"].get("baseline") and not model.num_classes:
                _, lv = model.sample(8, return_levels=True)
                paths.append(save_grid(sample_strip([v.cpu() for v in lv]), os.path.join(folder, "lapgan_strip.png"),
                                       nrow=model.levels, value_range=(-1, 1), scale=3))
    return paths


PROTOCOL = register(Protocol(
    paper="lapgan",
    claim="A LAPGAN's samples score a higher Parzen-window log-likelihood on held-out images than those "
          "of a single-scale GAN (CIFAR-10: -1799 vs -3617); the class-conditional LAPGAN is evaluated too.",
    variants={"LAPGAN": {"class_cond": False, "baseline": False},
              "single-scale GAN": {"class_cond": False, "baseline": True},
              "class-conditional LAPGAN": {"class_cond": True, "baseline": False}},
    train=train,
    evaluate=evaluate,
    metrics=("log_likelihood", "std_error", "sigma", "steps", "parameters"),
    headline="log_likelihood",
    base={"size": 16, "levels": 3, "conv_hidden": 16, "conv_kernel": 3, "batch_size": 64, "lr": 2e-4,
          "samples": 2000, "log_every": 50},
    budget={"cpu_seconds": 600},
    notes="Data: the 5,000 bundled MNIST digits at 16x16, pixels in [0, 1]; 4,400 train, 300 validation "
          "(chooses the Parzen sigma) and 300 test digits (scored), a fixed split. LAPGAN: 16 -> 8 -> 4, a "
          "perceptron base level (width 256), convolutional residual levels 16 channels wide with 3x3 "
          "kernels; the single-scale GAN is a perceptron GAN at 16x16 whose width matches the unconditional "
          "LAPGAN's parameter count. Equal budget: 600 CPU seconds (process time) of training per run, "
          "Adam 2e-4, batch 64; the `steps` column is how many steps that bought. Parzen window on 2,000 "
          "samples (class-conditional: classes in turn); `std_error` is over the 300 test digits. "
          "Default: 3 variants x 3 seeds x 600 s = 1.5 CPU hours of training plus about a minute of "
          "evaluation per run.",
    figures=figures,
))
