"""Neural style's experiment (Gatys et al. 2015): the style and content losses over the
optimisation for L-BFGS and Adam, from white noise and from the content image, on three
content x style pairs of the bundled scikit-image pictures."""
import json
import os

from . import Protocol, register

PAIRS = {"astronaut_x_brick": ("skimage:astronaut", "skimage:brick"),
         "chelsea_x_grass": ("skimage:chelsea", "skimage:grass"),
         "coffee_x_gravel": ("skimage:coffee", "skimage:gravel")}


def train(config, run_dir, *, device="cpu", progress=False, resume=False):
    """One transfer (nothing to resume: an unfinished one starts again); the result and the
    per-iteration losses are written into ``run_dir``."""
    from ..recipes import neural_style as R
    from ..train.checkpoint import atomic_save_json
    from ..viz import save_image

    cfg = R.Config(**config)
    net = R.build(cfg)["vgg"]
    image, history = R.transfer(cfg, device=device, progress=progress, net=net)
    os.makedirs(run_dir, exist_ok=True)
    save_image(image, os.path.join(run_dir, "result.png"))
    atomic_save_json(history, os.path.join(run_dir, "history.json"))
    return image, history, net


def evaluate(handle, config, *, device="cpu"):
    from ..recipes import neural_style as R

    image, history, net = handle
    first, last = history[0], history[-1]
    scores = R.evaluate(R.Config(**config), image, net=net)
    return {"style_reduction_pct": 100.0 * (1.0 - last["style"] / first["style"]),
            "final_style_loss": last["style"], "final_content_loss": last["content"],
            "style_distance": scores["style_distance"], "content_style_distance": scores["content_style_distance"]}


def figures(folder, results, runs_dir, *, device="cpu"):
    """Content / style / result for every pair (first variant), and the style-loss curves of
    every variant on the first pair."""
    from PIL import Image

    from ..models import neural_style as ns
    from ..viz import hstack, line_chart, to_uint8

    paths = []
    variants = list(results["summary"])
    for pair, (content, style) in PAIRS.items():
        result = os.path.join(runs_dir, variants[0].replace(" ", "_"), pair, "result.png")
        if not os.path.isfile(result):
            continue
        out = Image.open(result).convert("RGB")
        small = [Image.fromarray(to_uint8(ns._resize_long(ns.load_image(s), max(out.size)))).convert("RGB")
                 for s in (content, style)]
        path = os.path.join(folder, f"transfer_{pair}.png")
        hstack(small + [out]).save(path)
        paths.append(path)
    first = next(iter(PAIRS))
    curves = {}
    for v in variants:
        hist = os.path.join(runs_dir, v.replace(" ", "_"), first, "history.json")
        if os.path.isfile(hist):
            with open(hist) as f:
                curves[v] = [h["style"] for h in json.load(f)]
    if curves:
        paths.append(line_chart(curves, os.path.join(folder, "style_loss_curves.png"),
                                title=f"style loss per iteration, {first}", ylabel="style loss", log_y=True))
    return paths


PROTOCOL = register(Protocol(
    paper="neural_style",
    claim="Optimising an image from white noise against a content image's features and a style image's "
          "Gram matrices reduces the style loss by orders of magnitude while keeping the content; L-BFGS "
          "is the optimiser of choice.",
    variants={"L-BFGS noise": {"optimizer": "lbfgs", "init": "noise"},
              "L-BFGS content": {"optimizer": "lbfgs", "init": "content"},
              "Adam noise": {"optimizer": "adam", "init": "noise"},
              "Adam content": {"optimizer": "adam", "init": "content"}},
    train=train,
    evaluate=evaluate,
    metrics=("style_reduction_pct", "final_style_loss", "final_content_loss", "style_distance",
             "content_style_distance"),
    headline="style_reduction_pct",
    base={"size": 128},
    budget={"iters": 300},
    replicates={name: {"content": c, "style": [s], "seed": 0} for name, (c, s) in PAIRS.items()},
    higher_is_better=True,
    notes="Replicates are the three content x style pairs. style_distance is the fused style loss between "
          "the result's Gram matrices and the style image's (content_style_distance: the content image's), "
          "through HED's VGG-16.",
    figures=figures,
))
