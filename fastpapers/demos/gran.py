"""GRAN demo: a short run of a 3-step recurrent generator on MNIST, with its per-step canvases."""
import os

ORDER = 45
TITLE = "GRAN (Im et al. 2016): MNIST samples drawn in T = 3 canvas steps"


def run(out_dir, *, device, seed):
    from ..commands import gran as G
    run_dir = os.path.join(out_dir, "gran_run")
    G.train(run_dir, steps=100, batch_size=32, seed=seed, device=device, resume=True, progress=False,
            sample_every=0, checkpoint_every=100, timesteps=3, image_size=16, ngf=16, ndf=16)
    written = G.sample(os.path.join(run_dir, "checkpoint.pt"), out_dir, n=32, rows=6, seed=seed, device=device,
                       prefix="gran_")
    print("   gran_steps.png: one row per sample, columns = the canvas after steps 1, 2, 3")
    return written
