"""Reed et al. 2016 on the shapes world: GAN vs GAN-CLS vs GAN-INT vs GAN-INT-CLS.

Run (each stage is resumable; the variants can run in parallel processes):

    python experiments/text2image_exp.py prepare            # judge + shared text encoder
    python experiments/text2image_exp.py variant gan-int-cls  # ... and gan, gan-cls, gan-int
    python experiments/text2image_exp.py report             # metrics, figures, docs section

Everything is written under --root (default runs/t2i_exp); the report writes
docs/img/text2image_*.png and prints the markdown section for docs/results.md.
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastpapers.commands import text2image as T  # noqa: E402

VARIANTS = ["gan", "gan-cls", "gan-int", "gan-int-cls"]
BUDGET = dict(image_size=32, ngf=16, ndf=16, embed_dim=64, text_width=96)
PREVIEW = ["a small red circle", "a large blue square", "a big yellow star", "a large green cross",
           "a little orange triangle",
           # held-out colour-shape pairs: never seen in training
           "a large red triangle", "a large blue circle", "a big green star", "a large yellow cross",
           "a large purple square"]


def prepare(a):
    T.train_judge(os.path.join(a.root, "judge"), steps=a.judge_steps, batch_size=64, seed=1, progress=False,
                  resume=True, data=T.shapes_split("all", image_size=32, n=a.train_size, seed=1))
    T.train(os.path.join(a.root, "embedding"), steps=1, style_steps=1, embed_steps=a.embed_steps, batch_size=64,
            progress=False, resume=True, data=T.shapes_split("train", image_size=32, n=a.train_size, seed=0),
            **BUDGET)


def variant(a):
    # D learns 2.5x slower than G (GRAN's reference ratio): with equal rates the 16-wide D wins
    # outright within 100 steps (D loss 0.1, G loss 4-7) and G draws flat grey.
    T.train(os.path.join(a.root, a.name), steps=a.gan_steps, lr=2e-4, lr_d=8e-5, style_steps=a.style_steps,
            batch_size=64, progress=False, text_encoder=os.path.join(a.root, "embedding", "model.pt"),
            variant=a.name, resume=True, sample_every=100, checkpoint_every=100,
            data=T.shapes_split("train", image_size=32, n=a.train_size, seed=0), **BUDGET)


def report(a):
    from fastpapers.viz import save_grid
    judge = os.path.join(a.root, "judge", "checkpoint.pt")
    test = T.shapes_split("test", image_size=32, n=a.eval_n, seed=5)
    rows, grids = {}, []
    z = torch.randn(6, 100, generator=torch.Generator().manual_seed(0))
    for v in VARIANTS:
        model = os.path.join(a.root, v, "model.pt")
        rows[v] = T.evaluate(model, judge, n=a.eval_n, seed=0, data=test)
        _, nets = T.load_model(model)
        grids.append(torch.stack([T.generate(nets, [c] * 6, z) for c in PREVIEW]))  # (captions, 6, 3, S, S)
    with open(os.path.join(a.root, "metrics.json"), "w") as f:
        json.dump(rows, f, indent=1)
    os.makedirs(a.img, exist_ok=True)
    # One figure per variant: one row per caption, 6 noise vectors shared across captions/variants.
    for v, g in zip(VARIANTS, grids):
        save_grid(g.reshape(-1, *g.shape[2:]), os.path.join(a.img, f"text2image_{v}.png"), nrow=6,
                  value_range=(-1, 1), scale=2)
    T.transfer(os.path.join(a.root, "gan-int-cls", "model.pt"),
               ["a small red circle", "a large blue square", "a big yellow star", "a large green cross"],
               os.path.join(a.img, "text2image_transfer.png"), n=6, seed=3)
    print(json.dumps(rows, indent=1))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("stage", choices=["prepare", "variant", "report"])
    p.add_argument("name", nargs="?", choices=VARIANTS)
    p.add_argument("--root", default="runs/t2i_exp")
    p.add_argument("--img", default="docs/img")
    p.add_argument("--train-size", type=int, default=4000)
    p.add_argument("--judge-steps", type=int, default=400)
    p.add_argument("--embed-steps", type=int, default=300)
    p.add_argument("--gan-steps", type=int, default=600)
    p.add_argument("--style-steps", type=int, default=200)
    p.add_argument("--eval-n", type=int, default=600)
    a = p.parse_args()
    torch.set_num_threads(1)
    {"prepare": prepare, "variant": variant, "report": report}[a.stage](a)


if __name__ == "__main__":
    main()
