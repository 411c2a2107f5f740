"""Text-to-image's headline (Reed et al. 2016): GAN vs GAN-CLS vs GAN-INT vs GAN-INT-CLS on the
shapes world, judged by a separately trained attribute classifier on captions of seen and of
held-out colour-shape pairs, and the style encoder's transfer of the background.

Every variant gets the same settings, the ones with which the shapes world's shapes become
learnable (docs/results.md): scenes drawn at zoom 2 (object-centred crops), resize-convolution
upsampling in G, instance noise annealed to 0 over the GAN steps, and a text encoder trained
long enough that captions differing only in shape lie apart.

Two pieces are shared rather than trained per variant, each kept under
``<runs>/text2image/_shared/`` and trained by the first run that needs it:

- ``judge/``: one attribute judge per reproduction (seed 0, trained on degraded copies too, so
  it reads G's soft drawings), used by every variant's evaluation;
- ``text_encoder/<seed>/``: one joint text/image embedding per seed (its ``model.pt`` has a G
  and S of one step each, unused), whose fixed text encoder every variant of that seed
  reuses (``Config.text_encoder``). With one seed the embedding stage is the same computation
  for every variant, so sharing it only saves time; it also makes the variants differ in the
  GAN stage alone.

Each shared folder has a ``done.json`` with the settings it was trained with; a later run
reuses it when they match and refuses it by name when they do not (another ``--runs`` folder
is the way to change them). The CPU time of a shared piece is counted in the training time of
the run that trained it (the first variant's run of each seed; the very first run for the judge).
"""
import os

from . import Protocol, register

SHARED = "_shared"
VARIANT_NAMES = {"GAN": "gan", "GAN-CLS": "gan-cls", "GAN-INT": "gan-int", "GAN-INT-CLS": "gan-int-cls"}
# Protocol settings the recipe's Config does not know.
_EXTRA = ("judge_steps", "judge_batch_size", "judge_train_size", "judge_augment", "n_eval")
# The Config fields that make a text encoder (the embedding stage's inputs).
_ENCODER_FIELDS = ("image_size", "embed_dim", "text_width", "ndf", "zoom", "embed_steps", "embed_lr", "batch_size",
                   "train_size", "seed")


def _shared_root(run_dir):
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(run_dir))), SHARED)


def _once(folder, settings, make):
    """``make()`` into ``folder`` unless it already finished with these ``settings``."""
    from ..train.checkpoint import atomic_save_json, read_json_file
    done = os.path.join(folder, "done.json")
    if os.path.isfile(done):
        stored = read_json_file(done, what="shared run record")
        differ = sorted(k for k in set(stored) | set(settings) if stored.get(k) != settings.get(k))
        if differ:
            raise ValueError(f"{folder} was trained with other settings of {differ} "
                             f"({ {k: stored.get(k) for k in differ} }, now { {k: settings.get(k) for k in differ} }); "
                             "choose another --runs folder")
        return folder
    make(os.path.isfile(os.path.join(folder, "run.json")))
    atomic_save_json(settings, done)
    return folder


def _judge(root, config, device):
    from ..recipes import text2image as R
    from ..recipes._shapes_pairs import shapes_split
    jc = R.JudgeConfig(steps=config["judge_steps"], batch_size=config["judge_batch_size"], seed=0,
                       image_size=config["image_size"], augment=config["judge_augment"], zoom=config["zoom"])
    folder = os.path.join(root, "judge")
    settings = {**jc.to_dict(), "train_size": config["judge_train_size"]}

    def make(resume):
        data = shapes_split("all", image_size=jc.image_size, n=config["judge_train_size"], seed=jc.seed + 1,
                            zoom=jc.zoom)
        R.train_judge(jc, folder, resume=resume, data=data, device=device, progress=False)
    return _once(folder, settings, make)


def _text_encoder(root, cfg, device):
    """The seed's shared text encoder: a recipe run whose GAN and style stages take one step."""
    from ..recipes import text2image as R
    enc = cfg.replace(variant="gan", steps=1, style_steps=1, noise_anneal_steps=0, text_encoder=None,
                      sample_every=0)
    folder = os.path.join(root, "text_encoder", f"seed{cfg.seed}")
    settings = {k: getattr(enc, k) for k in _ENCODER_FIELDS}
    _once(folder, settings, lambda resume: R.train(enc, folder, resume=resume, device=device, progress=False))
    return os.path.join(folder, "model.pt")


def train(config, run_dir, *, device="cpu", progress=False, resume=False):
    """The variant's GAN and style stages on the seed's shared text encoder; the judge and the
    encoder are trained first if no run has made them yet. Returns run_dir."""
    from ..recipes import text2image as R
    cfg = R.Config(**{k: v for k, v in config.items() if k not in _EXTRA})
    root = _shared_root(run_dir)
    _judge(root, config, device)
    cfg = cfg.replace(text_encoder=_text_encoder(root, cfg, device))
    R.train(cfg, run_dir, resume=resume, device=device, progress=progress)
    return run_dir


def evaluate(run_dir, config, *, device="cpu"):
    from ..recipes import text2image as R
    from ..recipes._shapes_pairs import shapes_split
    # The same test captions (half of seen, half of held-out pairs) and z for every run.
    test = shapes_split("test", image_size=config["image_size"], n=config["n_eval"], seed=2, zoom=config["zoom"])
    res = R.evaluate(run_dir, os.path.join(_shared_root(run_dir), "judge"), n=config["n_eval"], seed=0,
                     device=device, data=test)
    return {name: float(res[key]) if key in res else None for name, key in _KEYS.items()}


_KEYS = {f"{who}_{group}_{attr}": f"{who}/{group}/{attr}" for who in ("generated", "real")
         for group in ("seen", "unseen") for attr in ("colour", "kind", "size", "all")
         if who == "generated" or attr == "kind"}
_KEYS.update({"style_auc_background": "style/auc_background",
              "style_transfer_background_acc": "style/transfer_background_acc"})


def figures(folder, results, runs_dir, *, device="cpu"):
    """Samples of each variant's first replicate (one row per test caption, 8 shared z), the
    style transfer of GAN-INT-CLS (or the last variant run), and a bar chart per attribute."""
    from ..recipes import text2image as R
    from ..recipes._shapes_pairs import shapes_split
    from ..viz import bar_chart

    test = shapes_split("test", image_size=32, n=200, seed=2, zoom=1)
    # Three captions of seen colour-shape pairs, then three of held-out ones.
    captions = []
    for unseen in (0, 1):
        group = [test[i]["caption"] for i in range(len(test)) if int(test[i]["unseen"]) == unseen]
        captions += list(dict.fromkeys(group))[:3]
    paths, last = [], None
    for variant in results["summary"]:
        rows = [r for r in results["runs"] if r["variant"] == variant]
        last = os.path.join(runs_dir, variant.replace(" ", "_"), rows[0]["replicate"])
        paths += R.sample(last, captions, os.path.join(folder, f"samples_{variant}.png"), n=8, seed=0, device=device)
    if last is not None:
        chosen = [v for v in results["summary"] if v == "GAN-INT-CLS"]
        if chosen:
            rows = [r for r in results["runs"] if r["variant"] == chosen[0]]
            last = os.path.join(runs_dir, chosen[0], rows[0]["replicate"])
        paths += R.transfer(last, captions[:4], os.path.join(folder, "style_transfer.png"), n=6, seed=0, device=device)
    summary = results["summary"]
    for metric in ("generated_seen_kind", "generated_unseen_kind", "generated_unseen_colour", "generated_unseen_all"):
        stats = [summary[v]["metrics"][metric] for v in summary]
        if all(s["mean"] is not None for s in stats):
            paths.append(bar_chart(list(summary), [s["mean"] for s in stats], [s["std"] for s in stats],
                                   os.path.join(folder, f"{metric}.png"),
                                   title=f"text2image: {metric}, mean +- sd over seeds"))
    return paths


PROTOCOL = register(Protocol(
    paper="text2image",
    claim="The matching-aware discriminator (GAN-CLS) and the interpolated embeddings (GAN-INT) each make "
          "the samples match their text better than a plain conditional GAN, together (GAN-INT-CLS) best, "
          "also for captions of held-out attribute combinations; the style encoder transfers the pose / "
          "background of a query image.",
    variants={name: {"variant": v} for name, v in VARIANT_NAMES.items()},
    train=train,
    evaluate=evaluate,
    metrics=tuple(_KEYS),
    headline="generated_seen_all",
    base={"image_size": 32, "zoom": 2, "upsample": "resize", "ngf": 32, "ndf": 32, "batch_size": 64, "lr": 2e-4,
          "instance_noise": 0.3, "train_size": 20000, "wrong_text": "random", "sample_every": 0,
          "checkpoint_every": 500, "n_eval": 600, "judge_batch_size": 64, "judge_train_size": 6000,
          "judge_augment": True},
    budget={"steps": 2000, "noise_anneal_steps": 2000, "style_steps": 300, "embed_steps": 8000, "judge_steps": 1500},
    notes="Shapes world at 32x32, zoom 2, 20,000 training images without the five held-out colour-shape pairs. "
          "Every variant: G and D 32 wide with resize-convolution G, Adam 2e-4, batch 64, instance noise "
          "sigma 0.3 annealed to 0 over the 2,000 GAN steps, the paper's random wrong texts (GAN-CLS), "
          "then 300 steps of the style encoder; the seed's shared text encoder was trained 8,000 steps (at 8,000 "
          "steps captions that differ only in shape lie as far apart as colour changes; at 600 they coincide). "
          "Judge: one per reproduction, 1,500 steps on 6,000 images of every pair and their degraded copies. "
          "Evaluation: 600 test captions (300 of seen, 300 of held-out pairs) with the same z for every run; "
          "`generated_<group>_<attribute>` is the judge's accuracy on G's samples (kind = shape, all = colour, "
          "shape and size right; chance 1/6, 1/5, 1/2, 1/60), `real_<group>_kind` the judge's own shape accuracy on "
          "the real test images, `style_auc_background` whether S(x) groups real images by background (ROC AUC), "
          "`style_transfer_background_acc` how often G(S(x), another caption) keeps x's "
          "background (chance 1/4). Default: "
          "4 variants x 3 seeds x 2,000 GAN steps at about 0.3 CPU s per step (2 CPU hours) plus 3 text "
          "encoders of 8,000 steps at about 0.1 CPU s (0.6 CPU hour) and the judge (0.13 CPU s per step, "
          "3 minutes); evaluation a few CPU seconds per run.",
    figures=figures,
))
