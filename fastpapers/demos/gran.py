"""GRAN demo: MNIST samples of a 3-step recurrent generator, with its per-step canvases, by the
shipped model (``fastpapers/weights/gran``, checked against its SHA-256) or, with ``--train``,
by a short run trained here."""
from ._rundir import run_dir

ORDER = 45
TITLE = "GRAN (Im et al. 2016): MNIST samples drawn in T = 3 canvas steps"
WEIGHTS = "gran"


def run_shipped(out_dir, *, device, seed):
    from .. import weights
    from ..recipes import gran
    weights.verify(WEIGHTS)
    entry = weights.entry(WEIGHTS)
    p = entry["metrics"]["parzen"]
    print(f"   loaded the shipped model ({weights.path(WEIGHTS)}, {entry['settings']['steps']} training steps): "
          f"Parzen log-likelihood {p['log_likelihood']:.1f} ± {p['std_error']:.1f} nats on held-out digits")
    written = gran.sample(weights.path(WEIGHTS), out_dir, n=32, rows=6, seed=seed, device=device, prefix="gran_")
    print("   gran_steps.png: one row per sample, columns = the canvas after steps 1, 2, 3")
    return written


def run(out_dir, *, device, seed):
    from ..recipes import gran
    cfg = gran.Config(steps=100, batch_size=32, seed=seed, sample_every=0, checkpoint_every=100, timesteps=3,
                      image_size=16, ngf=16, ndf=16)
    # The digest keys of earlier releases (the same settings, the same folder name).
    folder = run_dir(out_dir, "gran_run", steps=100, batch_size=32, seed=seed, sample_every=0,
                     checkpoint_every=100, timesteps=3, image_size=16, ngf=16, ndf=16)
    run = gran.train(cfg, folder, device=device, resume=True, progress=False)
    written = gran.sample(run, out_dir, n=32, rows=6, seed=seed, device=device, prefix="gran_")
    print("   gran_steps.png: one row per sample, columns = the canvas after steps 1, 2, 3")
    return written
