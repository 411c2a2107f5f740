"""Reed et al. 2016 on the shapes world: GAN vs GAN-CLS vs GAN-INT vs GAN-INT-CLS at equal CPU budget.

Run (each stage is resumable; run the variants one or two at a time, one thread each):

    python experiments/text2image_exp.py prepare --robust-judge   # judges + shared text encoder
    python experiments/text2image_exp.py variant gan-int-cls $RECIPE   # ... and the other three
    python experiments/text2image_exp.py report --width 32

with the third session's recipe RECIPE="--width 32 --train-size 20000 --instance-noise 0.3
--noise-anneal-steps 3000 --cpu-budget 1400" (the first sessions' runs: --width 16, 4000
images, no instance noise, 360 and 720 CPU s). The fourth session's runs (shapes drawn):
``prepare --robust-judge --zoom 2 --train-size 20000 --embed-steps 8000 --root runs/t2i_e3k``,
then ``variant <name> $RECIPE --zoom 2 --upsample resize --suffix _resize --root runs/t2i_e3k``
(and ``--wrong-text near --suffix _resize_near`` for GAN-CLS), ``report`` with the same
--root, --zoom, --suffix and a --tag. The judge and text encoder of a root may be
reused across recipes (they do not depend on the GAN).

Equal budget: a variant trains its GAN in chunks (each resumes the last checkpoint
bit-exactly) until its process has used ``--cpu-budget`` CPU seconds (``time.process_time``,
so other jobs on a shared machine do not bias it); the last chunk is sized from the measured
cost per step. The style encoder is trained afterwards, outside the budget, the same number
of steps for every variant. Everything is written under --root (default runs/t2i_exp); the
report writes docs/img/text2image_*.png and ``<root>/metrics.json``.
"""
import argparse
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastpapers.metrics import judge as J  # noqa: E402
from fastpapers.recipes import text2image as T  # noqa: E402

VARIANTS = ["gan", "gan-cls", "gan-int", "gan-int-cls"]
TEXT = dict(embed_dim=64, text_width=96)
# One caption per shape in two colours: does the caption's shape change the drawing?
SHAPE_ROWS = [f"a large {c} {k}" for c in ("green", "orange") for k in ("circle", "square", "triangle", "star", "cross")]
PREVIEW = ["a small red circle", "a large blue square", "a big yellow star", "a large green cross",
           "a little orange triangle",
           # held-out colour-shape pairs: never seen in training
           "a large red triangle", "a large blue circle", "a big green star", "a large yellow cross",
           "a large purple square"]


def _train_data(a):
    return T.shapes_split("train", image_size=a.size, n=a.train_size, seed=0, zoom=a.zoom)


def prepare(a):
    T.train_judge(T.JudgeConfig(steps=a.judge_steps, batch_size=64, seed=1, image_size=a.size, zoom=a.zoom),
                  os.path.join(a.root, "judge"), progress=False, resume=True,
                  data=T.shapes_split("all", image_size=a.size, n=a.train_size, seed=1, zoom=a.zoom))
    if a.robust_judge:
        T.train_judge(T.JudgeConfig(steps=a.judge_steps, batch_size=64, seed=1, augment=True, zoom=a.zoom,
                                    image_size=a.size), os.path.join(a.root, "judge_robust"), progress=False,
                      resume=True, data=T.shapes_split("all", image_size=a.size, n=a.train_size, seed=1, zoom=a.zoom))
    # Only the text encoder of this run is used (GAN and style stages: one step each).
    T.train(T.Config(steps=1, style_steps=1, embed_steps=a.embed_steps, batch_size=64, ngf=32, ndf=32,
                     image_size=a.size, zoom=a.zoom, **TEXT), os.path.join(a.root, "embedding"), progress=False,
            resume=True, data=_train_data(a))
    sep = text_separation(os.path.join(a.root, "embedding", "model.pt"))
    with open(os.path.join(a.root, "embedding", "separation.json"), "w") as f:
        json.dump(sep, f, indent=1)
    print(json.dumps(sep, indent=1))


@torch.no_grad()
def text_separation(model, per_class=20):
    """How far apart φ puts captions that differ in one attribute: the mean distance between the
    centroids (over ``per_class`` template captions) of classes differing only in size, only
    in colour, only in shape. The fourth session found the 600-step encoder put circle and
    square captions 0.0-0.2 apart (colour: 2.0), so no G could draw the shape it was asked."""
    from fastpapers.data.shapes import COLOURS, SHAPES, SIZES, caption_variants
    nets = T.load(model).nets
    g = torch.Generator().manual_seed(0)
    classes = [(s, c, k) for s in SIZES for c in COLOURS for k in SHAPES]
    cent = torch.stack([nets["text"].embed(caption_variants(s, c, k, per_class, g)).mean(0) for s, c, k in classes])
    dist = torch.cdist(cent, cent)
    res = {}
    for ai, name in enumerate(("size", "colour", "kind")):
        vals = [dist[i, j] for i in range(len(classes)) for j in range(len(classes))
                if classes[i][ai] != classes[j][ai] and sum(x != y for x, y in zip(classes[i], classes[j])) == 1]
        res[f"text/centroid_distance_{name}"] = torch.stack(vals).mean().item()
    res["text/norm"] = cent.norm(dim=1).mean().item()
    return res


def variant(a):
    out = os.path.join(a.root, a.name + a.suffix)
    data = _train_data(a)
    kw = dict(lr=2e-4, batch_size=64, seed=a.seed, text_encoder=os.path.join(a.root, "embedding", "model.pt"),
              variant=a.name, sample_every=a.chunk, checkpoint_every=a.chunk, ngf=a.width, ndf=a.width,
              image_size=a.size, zoom=a.zoom, upsample=a.upsample, wrong_text=a.wrong_text, real_label=a.real_label,
              lr_d=a.lr_d, instance_noise=a.instance_noise, noise_anneal_steps=a.noise_anneal_steps, **TEXT)
    log_path = os.path.join(out, "budget.json")
    spent, steps = 0.0, 0
    if os.path.isfile(log_path):
        with open(log_path) as f:
            rec = json.load(f)
        spent, steps = rec["cpu_s"], rec["gan_steps"]
    while True:
        per_step = spent / steps if steps else None
        left = a.cpu_budget - spent
        nxt = a.chunk if per_step is None else min(a.chunk, math.floor(left / per_step))
        if nxt < 1:
            break
        t0 = time.process_time()
        # style_steps=1 keeps each chunk cheap; the style encoder is trained once at the end.
        T.train(T.Config(steps=steps + nxt, style_steps=1, **kw), out, resume=True, progress=False, data=data)
        spent += time.process_time() - t0
        steps += nxt
        with open(log_path, "w") as f:
            json.dump({"cpu_s": spent, "gan_steps": steps, "cpu_budget_s": a.cpu_budget}, f)
        print(f"{a.name}: {steps} GAN steps, {spent:.0f} CPU s", flush=True)
    t0 = time.process_time()
    T.train(T.Config(steps=steps, style_steps=a.style_steps, **kw), out, resume=True, progress=False, data=data)
    with open(log_path, "w") as f:
        json.dump({"cpu_s": spent, "gan_steps": steps, "cpu_budget_s": a.cpu_budget, "style_steps": a.style_steps,
                   "style_cpu_s": time.process_time() - t0}, f)


def foreground_colour(x):
    """A judge-free colour reading: (B, 3, S, S) in [-1, 1] -> (B,) index of the nearest
    shapes-world colour to the mean of the 10% of pixels farthest from the background (the
    median colour of the 2-pixel border). It reads 63% of the real test images right (small
    shapes have fewer pixels than the 10% it takes)."""
    from fastpapers.data.shapes import COLOURS
    palette = torch.tensor(list(COLOURS.values())) * 2 - 1
    border = torch.cat([x[:, :, :2].flatten(2), x[:, :, -2:].flatten(2), x[:, :, :, :2].flatten(2),
                        x[:, :, :, -2:].flatten(2)], 2).median(2).values
    px = x.flatten(2)
    far = (px - border[:, :, None]).norm(dim=1).topk(max(1, px.shape[2] // 10), 1).indices
    fg = torch.gather(px, 2, far[:, None, :].expand(-1, 3, -1)).mean(2)
    return torch.cdist(fg, palette).argmin(1)


def colour_probe(nets, test, n):
    items = T.stack_items(test, ("image", "caption", "colour", "unseen"), limit=n)
    z = torch.randn(len(items["caption"]), 100, generator=torch.Generator().manual_seed(0))
    hit = (foreground_colour(T.generate(nets, items["caption"], z)) == items["colour"]).float()
    unseen = items["unseen"].bool()
    return {"probe/seen/colour": hit[~unseen].mean().item(), "probe/unseen/colour": hit[unseen].mean().item(),
            "probe/real/colour": (foreground_colour(items["image"]) == items["colour"]).float().mean().item()}


def style_controls(test, n, width, size):
    """The style AUC's baselines: the same pairwise background AUC from raw pixels and from an
    untrained style encoder. Backgrounds fill most of each image, so any image feature may
    separate them; a trained S is informative only where it beats these."""
    from fastpapers.models import text2image as t2i
    items = T.stack_items(test, ("image", "background"), limit=n)
    torch.manual_seed(0)
    s = t2i.StyleEncoder(100, width, size).eval()
    with torch.no_grad():
        untrained = s(items["image"])
    return {"style/auc_background_pixels": J.pairwise_auc(items["image"].flatten(1), items["background"]),
            "style/auc_background_untrained_S": J.pairwise_auc(untrained, items["background"])}


def shape_confusion(nets, test, n, judge_path):
    """Caption shape (rows) against the shape a judge reads in G's drawing (columns), for the
    test captions; written to the metrics as a nested list (SHAPES order)."""
    from fastpapers.data.shapes import SHAPES
    if not os.path.isfile(judge_path):
        return {}
    items = T.stack_items(test, ("caption", "kind"), limit=n)
    z = torch.randn(len(items["caption"]), 100, generator=torch.Generator().manual_seed(0))
    pred = J.predict(T.load_judge(judge_path).nets["judge"], T.generate(nets, items["caption"], z))["kind"]
    conf = torch.zeros(len(SHAPES), len(SHAPES), dtype=torch.long)
    conf.index_put_((items["kind"], pred), torch.ones_like(pred), accumulate=True)
    return {"robust_judge/shape_confusion": conf.tolist()}


def report(a):
    from fastpapers.viz import save_grid
    judge = os.path.join(a.root, "judge", "checkpoint.pt")
    test = T.shapes_split("test", image_size=a.size, n=a.eval_n, seed=5, zoom=a.zoom)
    rows, grids = {}, []
    z = torch.randn(6, 100, generator=torch.Generator().manual_seed(0))
    z8 = torch.randn(8, 100, generator=torch.Generator().manual_seed(1))
    os.makedirs(a.img, exist_ok=True)
    robust = os.path.join(a.root, "judge_robust", "checkpoint.pt")
    for v in a.variants:
        model = os.path.join(a.root, v + a.suffix, "model.pt")
        rows[v] = T.evaluate(model, judge, n=a.eval_n, seed=0, data=test)
        if os.path.isfile(robust):  # the judge trained on blurred/noisy copies too (`prepare --robust-judge`)
            again = T.evaluate(model, robust, n=a.eval_n, seed=0, data=test)
            rows[v].update({f"robust_judge/{k}": x for k, x in again.items() if k.startswith(("generated/", "real/"))})
        with open(os.path.join(a.root, v + a.suffix, "budget.json")) as f:
            rows[v]["budget"] = json.load(f)
        nets = T.load(model).nets
        rows[v].update(colour_probe(nets, test, a.eval_n))
        grids.append(torch.stack([T.generate(nets, [c] * 6, z) for c in PREVIEW]))  # (captions, 6, 3, S, S)
        rows[v].update(shape_confusion(nets, test, a.eval_n, robust))
        shape_rows = torch.cat([T.generate(nets, [c] * 8, z8) for c in SHAPE_ROWS])
        save_grid(shape_rows, os.path.join(a.img, f"text2image_{v}{a.tag}_shapes.png"), nrow=8, value_range=(-1, 1),
                  scale=2)
    rows["controls"] = style_controls(test, a.eval_n, a.width, a.size)
    rows["text_encoder"] = text_separation(os.path.join(a.root, "embedding", "model.pt"))
    with open(os.path.join(a.root, f"metrics{a.suffix}.json"), "w") as f:
        json.dump(rows, f, indent=1)
    # One figure per variant: one row per caption, 6 noise vectors shared across captions/variants.
    for v, g in zip(a.variants, grids):
        save_grid(g.reshape(-1, *g.shape[2:]), os.path.join(a.img, f"text2image_{v}{a.tag}.png"), nrow=6,
                  value_range=(-1, 1), scale=2)
    T.transfer(os.path.join(a.root, a.transfer_variant + a.suffix, "model.pt"),
               ["a small red circle", "a large blue square", "a big yellow star", "a large green cross"],
               os.path.join(a.img, f"text2image_transfer{a.tag}.png"), n=6, seed=3)
    print(json.dumps(rows, indent=1))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("stage", choices=["prepare", "variant", "report"])
    p.add_argument("name", nargs="?", choices=VARIANTS)
    p.add_argument("--root", default="runs/t2i_exp")
    p.add_argument("--img", default="docs/img")
    p.add_argument("--train-size", type=int, default=4000)
    p.add_argument("--robust-judge", action="store_true",
                   help="prepare: also train a judge on blurred/noisy copies (report uses both)")
    p.add_argument("--judge-steps", type=int, default=900)
    p.add_argument("--embed-steps", type=int, default=600)
    p.add_argument("--size", type=int, default=32, choices=(32, 64), help="image size")
    p.add_argument("--zoom", type=int, default=1, choices=(1, 2),
                   help="2: object-centred crops of scenes drawn at twice the size (fourth session)")
    p.add_argument("--upsample", default="deconv", choices=("deconv", "resize"), help="G's upsampling")
    p.add_argument("--wrong-text", default="random", choices=("random", "near"), help="GAN-CLS wrong texts")
    p.add_argument("--suffix", default="", help="variant/report: run folders are <root>/<variant><suffix>")
    p.add_argument("--tag", default="", help="report: suffix of the figure file names")
    p.add_argument("--width", type=int, default=16, help="ngf = ndf of G, D and S")
    p.add_argument("--real-label", type=float, default=1.0, help="D's real target (< 1: one-sided smoothing)")
    p.add_argument("--instance-noise", type=float, default=0.0, help="σ of D's input noise at step 0")
    p.add_argument("--noise-anneal-steps", type=int, default=0, help="σ falls to 0 over this many steps (0: constant)")
    p.add_argument("--lr-d", type=float, default=None, help="D's Adam step size (default: G's, 2e-4)")
    p.add_argument("--cpu-budget", type=float, default=360.0, help="CPU seconds of GAN training per variant")
    p.add_argument("--chunk", type=int, default=100, help="GAN steps between budget checks")
    p.add_argument("--style-steps", type=int, default=300)
    p.add_argument("--eval-n", type=int, default=600)
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=VARIANTS, help="report: the variants to report")
    p.add_argument("--transfer-variant", default="gan-int-cls", choices=VARIANTS)
    p.add_argument("--seed", type=int, default=0, help="variant: the GAN's seed (init, noise, batches)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (CPU seconds are summed over them)")
    a = p.parse_args()
    if a.stage == "variant" and a.name is None:
        p.error("variant needs a name")
    torch.set_num_threads(a.threads)
    {"prepare": prepare, "variant": variant, "report": report}[a.stage](a)


if __name__ == "__main__":
    main()
