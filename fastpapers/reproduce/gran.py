"""GRAN's headline (Im et al. 2016): generators that draw in T = 1, 3, 5 steps with a fresh z per
step, T = 3 with the same z at every step (the paper's default), and a DCGAN with the parameter
count of the T = 3 generator, compared by GAM battles on held-out MNIST digits.

GAM is comparative, so every run's evaluation battles it (model 1) against the reference
variant ``T=1`` of the same seed (model 2), which the protocol trains first; the reference's own
row is its battle against itself, the calibration (r_test and r_sample near 1). Each run is also
given a Parzen-window log-likelihood of the held-out digits (sigma chosen on the first half of
them, scored on the second), an absolute number that ranks all variants at once.

The recipe has no separate DCGAN: its T = 1 generator is one (one decoder pass, no encoder read
back, sigmoid output), so the ``DCGAN (matched)`` variant is T = 1 with G's width ``ngf`` chosen so
that its parameter count is the closest to the T = 3 generator's (the T = 1 variant keeps the
width of the recurrent ones). The discriminator is the same for every variant.
"""
import math
import os

from . import Protocol, register

REFERENCE = "T=1"
_EXTRA = ("battle_samples", "parzen_samples", "match_timesteps")


def _recipe_config(config):
    from ..recipes import gran as R
    return R.Config(**{k: v for k, v in config.items() if k not in _EXTRA})


def matched_width(base: dict, timesteps: int = 3) -> int:
    """The ngf of a T = 1 generator whose parameter count is closest to that of the
    ``timesteps``-step generator of ``base`` (a dict of GRAN Config fields)."""
    from ..models.lapgan import count_parameters
    from ..recipes import gran as R

    base = {k: v for k, v in base.items() if k in R.Config.__dataclass_fields__}
    target = count_parameters(R.build(R.Config(**{**base, "timesteps": timesteps}))["G"])
    width = base.get("ngf", R.Config.ngf)

    def size(ngf):
        return count_parameters(R.build(R.Config(**{**base, "timesteps": 1, "ngf": ngf}))["G"])
    # The count grows with ngf: step up until it passes the target, then keep the nearer.
    while size(width + 1) <= target:
        width += 1
    return min((width, width + 1), key=lambda w: abs(size(w) - target))


def train(config, run_dir, *, device="cpu", progress=False, resume=False):
    from ..recipes import gran as R
    cfg = _recipe_config(config)
    if config.get("match_timesteps"):
        shape = {k: v for k, v in config.items() if k not in _EXTRA + ("timesteps",)}
        cfg = cfg.replace(ngf=matched_width(shape, config["match_timesteps"]))
    return R.train(cfg, run_dir, resume=resume, device=device, progress=progress)


def _number(x):
    # A ratio of error rates is infinite when the denominator's discriminator made no error;
    # results.json holds only finite numbers, so that is recorded as None (the error rates stay).
    x = float(x)
    return x if math.isfinite(x) else None


def _parzen(g, n, test, seed=0, device="cpu"):
    from ..metrics.parzen import parzen_evaluate
    from ..recipes import gran as R
    samples, _ = R.draw(g, n, seed=seed, device=device)
    half = len(test) // 2
    return parzen_evaluate(samples.flatten(1).double(), test[:half].flatten(1).double(),
                           test[half:].flatten(1).double())


def evaluate(run, config, *, device="cpu"):
    """The battle against T = 1 of the same seed, and the Parzen log-likelihood."""
    from ..models.lapgan import count_parameters
    from ..recipes import gran as R

    loaded = R.load(run.path, device)
    test = R.mnist_split("test", loaded.config.image_size).tensors[0]
    ll = _parzen(loaded.nets["G"], config["parzen_samples"], test, device=device)
    out = {"parzen_ll": _number(ll["log_likelihood"]), "parzen_std_error": _number(ll["std_error"]),
           "parameters_G": float(count_parameters(loaded.nets["G"]))}
    reference = os.path.join(os.path.dirname(os.path.dirname(run.path)), REFERENCE.replace(" ", "_"),
                             os.path.basename(run.path))
    names = ("r_test", "r_sample", "test_error_1", "test_error_2", "sample_error_1", "sample_error_2")
    if not os.path.isfile(os.path.join(reference, "checkpoint.pt")):
        # Only when the reference variant was left out (--variants): no battle to report.
        return {**out, **{f"{k}_vs_T1": None for k in names}, "valid_vs_T1": None, "wins_vs_T1": None}
    b = R.evaluate(run.path, reference, n=config["battle_samples"], seed=0, device=device, bn="batch")
    out.update({f"{k}_vs_T1": _number(b[k]) for k in names})
    out["valid_vs_T1"] = float(b["valid"])
    # 1: a valid battle won, 0: lost or tied, None: no verdict (invalid battle).
    out["wins_vs_T1"] = None if not b["valid"] else float(b["winner"] == "model 1")
    return out


def figures(folder, results, runs_dir, *, device="cpu"):
    """Samples and per-step canvases of each variant's first replicate."""
    from ..recipes import gran as R

    paths = []
    for variant in results["summary"]:
        rows = [r for r in results["runs"] if r["variant"] == variant]
        run_dir = os.path.join(runs_dir, variant.replace(" ", "_"), rows[0]["replicate"])
        stem = variant.replace(" ", "_").replace("=", "").replace("(", "").replace(")", "")
        paths += R.sample(run_dir, folder, n=64, rows=8, seed=0, device=device, prefix=f"{stem}_")
    return paths


METRICS = ("parzen_ll", "parzen_std_error", "r_sample_vs_T1", "r_test_vs_T1", "valid_vs_T1", "wins_vs_T1",
           "test_error_1_vs_T1", "test_error_2_vs_T1", "sample_error_1_vs_T1", "sample_error_2_vs_T1",
           "parameters_G")

PROTOCOL = register(Protocol(
    paper="gran",
    claim="A recurrent generator that draws over several steps (T = 3, 5) beats one that draws in one "
          "(T = 1, a DCGAN) in GAM battles.",
    variants={"T=1": {"timesteps": 1, "new_z_per_step": False},
              "T=3 new noise": {"timesteps": 3, "new_z_per_step": True},
              "T=5 new noise": {"timesteps": 5, "new_z_per_step": True},
              "T=3 same noise": {"timesteps": 3, "new_z_per_step": False},
              "DCGAN (matched)": {"timesteps": 1, "new_z_per_step": False, "match_timesteps": 3}},
    train=train,
    evaluate=evaluate,
    metrics=METRICS,
    headline="parzen_ll",
    base={"image_size": 16, "ngf": 32, "ndf": 16, "batch_size": 64, "lr_g": 2e-4, "lr_d": 8e-5,
          "battle_samples": 1000, "parzen_samples": 2000, "sample_every": 0, "checkpoint_every": 500},
    budget={"steps": 4000},
    notes="Data: the 5,000 bundled MNIST digits at 16x16; 4,500 train, 500 held out (the GAM test set; "
          "for the Parzen window, the first 250 choose sigma and the last 250 are scored). G 32 wide, "
          "D 16 wide, batch 64, Adam 2e-4 (G) and 8e-5 (D), 4,000 steps for every variant. Battles: model 1 "
          "is the row's run, model 2 the T=1 run of the same seed; each discriminator judges the 500 test "
          "digits and 1,000 samples of the other model with batch statistics (the reference battle.py); "
          "valid when |r_test - 1| <= 0.2, model 1 wins when r_sample < 1 (a ratio whose denominator is 0 is "
          "infinite and recorded as no number, the error rates are kept); `wins_vs_T1` is averaged over "
          "the valid battles only (n/N shows how many). The DCGAN (matched) is T = 1 widened to the T = 3 "
          "generator's parameter count (`parameters_G`). Default: 5 variants x 3 seeds x 4,000 steps, about "
          "1-2 CPU hours of training (measured on one thread: 0.02-0.06 CPU s per step from T = 1 to T = 5, "
          "about twice that on a loaded machine) plus under a minute of evaluation per run.",
    figures=figures,
))
