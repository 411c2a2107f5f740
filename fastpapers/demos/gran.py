"""GRAN demo: a short run of a 3-step recurrent generator on MNIST, with its per-step canvases."""
import os

from ._rundir import run_dir

ORDER = 45
TITLE = "GRAN (Im et al. 2016): MNIST samples drawn in T = 3 canvas steps"


def run(out_dir, *, device, seed):
    from ..commands import gran as G
    cfg = dict(steps=100, batch_size=32, seed=seed, sample_every=0, checkpoint_every=100, timesteps=3,
               image_size=16, ngf=16, ndf=16)
    folder = run_dir(out_dir, "gran_run", **cfg)
    G.train(folder, device=device, resume=True, progress=False, **cfg)
    written = G.sample(os.path.join(folder, "checkpoint.pt"), out_dir, n=32, rows=6, seed=seed, device=device,
                       prefix="gran_")
    print("   gran_steps.png: one row per sample, columns = the canvas after steps 1, 2, 3")
    return written
