"""LAPGAN demo: coarse-to-fine sampling on MNIST digits, by the shipped model
(``fastpapers/weights/lapgan``, checked against its SHA-256). With ``--train``: the checkpoint
of `fastpapers lapgan train` when runs/lapgan/checkpoint.pt exists, otherwise a LAPGAN trained
here for a few seconds (the samples are then rough: the point is the pyramid, coarse to fine)."""
import os
import tempfile

import torch

ORDER = 50
TITLE = "LAPGAN: coarse-to-fine samples (16 -> 8 -> 4 pyramid of GANs)"
CHECKPOINT = os.path.join("runs", "lapgan", "checkpoint.pt")
QUICK_STEPS = 40
WEIGHTS = "lapgan"


def run_shipped(out_dir, *, device, seed):
    from .. import weights
    loaded = weights.load(WEIGHTS, device=device)
    entry = weights.entry(WEIGHTS)
    m = entry["metrics"]
    print(f"   loaded the shipped model ({weights.path(WEIGHTS)}, {entry['settings']['steps']} training steps): "
          f"Parzen log-likelihood {m['log_likelihood']:.1f} ± {m['std_error']:.1f} nats on held-out digits")
    return _draw(loaded.nets["lapgan"], out_dir, device=device, seed=seed)


def run(out_dir, *, device, seed):
    from ..models.lapgan import LAPGAN, lapgan_optimizers, lapgan_step_fn
    from ..recipes.lapgan import load, load_images, splits
    from ..train import Trainer

    if os.path.isfile(CHECKPOINT):
        model = load(CHECKPOINT, device).nets["lapgan"]
        print(f"   loaded {CHECKPOINT}")
    else:
        x, y, _ = load_images(None, 16)
        train_idx, _, _ = splits(len(x))
        # The narrow variant of `lapgan compare`: a few seconds of CPU.
        model = LAPGAN(size=16, levels=3, conv_hidden=16, conv_kernel=3)
        # One thread: these small convolutions gain nothing from a second one, and on a busy
        # machine the threads' barrier waits cost more than the work.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        with tempfile.TemporaryDirectory() as tmp:
            tr = Trainer({"lapgan": model}, lapgan_optimizers(model), lapgan_step_fn(model),
                         data=torch.utils.data.TensorDataset(x[train_idx], y[train_idx]), batch_size=64,
                         out_dir=tmp, seed=seed, device=device, checkpoint_every=0, log_every=QUICK_STEPS,
                         progress=False)
            try:
                last = tr.fit(QUICK_STEPS)
            finally:
                torch.set_num_threads(threads)
        print(f"   trained {QUICK_STEPS} steps here (run `fastpapers lapgan train` for real samples); "
              + ", ".join(f"{k} {v:.2f}" for k, v in last.items() if k.startswith("loss")))
    return _draw(model, out_dir, device=device, seed=seed)


def _draw(model, out_dir, *, device, seed):
    from ..models.lapgan import sample_strip
    from ..viz import save_grid

    model.eval()
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        images, levels = model.sample(64, torch.arange(64) % max(model.num_classes, 1) if model.num_classes else None,
                                      return_levels=True, generator=g)
    grid = save_grid(images.cpu(), os.path.join(out_dir, "lapgan_samples.png"), nrow=8, value_range=(-1, 1), scale=2)
    strip = save_grid(sample_strip([lv[:8].cpu() for lv in levels]), os.path.join(out_dir, "lapgan_strip.png"),
                      nrow=model.levels, value_range=(-1, 1), scale=3)
    return [grid, strip]
