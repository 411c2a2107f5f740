"""GRAN (Im et al. 2016) on MNIST 16x16: T = 1 (a DCGAN with a sigmoid canvas) against T = 3,
with GAM battles over checkpoint snapshots and per-step canvas grids.

    python experiments/gran_exp.py train 1 --seeds 0 1 2 --steps 2500   # one process per T; resumable
    python experiments/gran_exp.py train 3 --seeds 0 1 2 --steps 2500
    python experiments/gran_exp.py report 1 3 --seeds 0 1 2   # battles, figures, the markdown table

Both models have the same discriminator and train the same number of steps (so both
discriminators have had the same number of updates); a snapshot of the checkpoint is kept
every --snapshot-every steps. GAM's verdict is valid only when both discriminators do
equally well on the test set (r_test ~ 1), and a GAN's discriminator drifts from step to
step, so the report battles every pair of snapshots from the last --last-snapshots of each
run: the pairs whose r_test is within the tolerance are the valid battles, and their
r_sample values are summarised (count of wins each way, mean, median, a sign test). With
several seeds every snapshot of every T1 run battles every snapshot of every T2 run. The
discriminators judge with batch statistics, as in the reference battle.py. The battles go to
``<root>/battles_T<t1>_T<t2>.json``; the figures are drawn from the first seed's last checkpoint.
"""
import argparse
import json
import math
import os
import shutil
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastpapers.metrics import gam  # noqa: E402
from fastpapers.recipes import gran as G  # noqa: E402
from fastpapers.train.checkpoint import read_checkpoint  # noqa: E402


def run_dir(a, t, seed):
    return os.path.join(a.root, f"T{t}_s{seed}")


def _snapshots(d):
    names = [f for f in os.listdir(d) if f.startswith("step_") and f.endswith(".pt")]
    return sorted((int(f[5:-3]), os.path.join(d, f)) for f in names)


def train(a):
    for seed in a.seeds:
        d = run_dir(a, a.t[0], seed)
        cpu_path = os.path.join(d, "cpu.json")
        cpu = 0.0
        if os.path.isfile(cpu_path):
            with open(cpu_path) as f:
                cpu = json.load(f)["cpu_s"]
        ckpt = os.path.join(d, "checkpoint.pt")
        done = int(read_checkpoint(ckpt)["step"]) if os.path.isfile(ckpt) else 0
        if done and done % a.snapshot_every == 0:
            snap = os.path.join(d, f"step_{done:06d}.pt")
            if not os.path.isfile(snap):
                shutil.copyfile(ckpt, snap)
        for stop in range(done // a.snapshot_every * a.snapshot_every + a.snapshot_every, a.steps + 1,
                          a.snapshot_every):
            t0 = time.process_time()
            # D learns 2.5x slower than G, the reference code's ratio (4e-5 vs 1e-4): with equal
            # rates a 16-wide D wins outright within a few hundred steps and G collapses.
            G.train(G.Config(steps=stop, batch_size=64, seed=seed, sample_every=a.snapshot_every,
                             checkpoint_every=a.snapshot_every, timesteps=a.t[0], image_size=16, ngf=2 * a.width,
                             ndf=a.width, lr_g=2e-4, lr_d=8e-5), d, progress=False, resume=True)
            cpu += time.process_time() - t0
            shutil.copyfile(os.path.join(d, "checkpoint.pt"), os.path.join(d, f"step_{stop:06d}.pt"))
            with open(cpu_path, "w") as f:
                json.dump({"cpu_s": cpu, "steps": stop}, f)
            print(f"T={a.t[0]} seed {seed}: {stop} steps, {cpu:.0f} CPU s (this process)", flush=True)


def report(a):
    from fastpapers.viz import save_grid
    os.makedirs(a.img, exist_ok=True)
    if len(a.t) != 2:
        raise SystemExit("report battles exactly two step counts, e.g. `report 1 3`")
    test = G.mnist_split("test", 16).tensors[0]
    (t1, t2), seed = a.t, a.seeds[0]
    # Every seed's last snapshots of each model: with several seeds, every T1 run battles every T2 run.
    snaps1 = [(f"s{sd} step {st}", p) for sd in a.seeds
              for st, p in _snapshots(run_dir(a, t1, sd))[-a.last_snapshots:]]
    snaps2 = [(f"s{sd} step {st}", p) for sd in a.seeds
              for st, p in _snapshots(run_dir(a, t2, sd))[-a.last_snapshots:]]
    # What G.battle does per pair, with each snapshot's samples and judge made once: model 1
    # draws with seed 0, model 2 with seed 1; each discriminator judges a set as one batch.
    # A snapshot's config is its run folder's run.json, shared by all its snapshots.

    def prepare(snaps, seed_):
        out = []
        for label, path in snaps:
            nets = G.load(path).nets
            out.append((label, G.draw(nets["G"], a.n, seed=seed_)[0], gam.batch_statistics(nets["D"])))
        return out

    rows, second = [], prepare(snaps2, 1)
    for s1, x1, d1 in prepare(snaps1, 0):
        for s2, x2, d2 in second:
            r = gam.gam_battle(d1, x1, d2, x2, test, tolerance=a.tolerance, batch_size=max(a.n, len(test)))
            rows.append({"model1": f"T={t1} {s1}", "model2": f"T={t2} {s2}", **r.as_dict()})
    valid = [r for r in rows if r["valid"]]
    summary = {"seeds": a.seeds, "pairs": len(rows), "valid": len(valid),
               "model1_wins": sum(r["winner"] == "model 1" for r in valid),
               "model2_wins": sum(r["winner"] == "model 2" for r in valid),
               "ties": sum(r["winner"] == "tie" for r in valid)}
    if valid:
        rs = [r["r_sample"] for r in valid]
        summary.update(mean_r_sample=statistics.fmean(rs), median_r_sample=statistics.median(rs))
        # Two-sided sign test of "each model wins a valid battle with probability 1/2" (ties left
        # out). The battles share snapshots, so they are not independent: a rough guide only.
        k, n = summary["model1_wins"], summary["model1_wins"] + summary["model2_wins"]
        if n:
            tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2 ** n
            summary["sign_test_p"] = min(1.0, 2 * tail)
    with open(os.path.join(a.root, f"battles_T{t1}_T{t2}.json"), "w") as f:
        json.dump({"summary": summary, "battles": rows}, f, indent=1)
    for t in a.t:
        g = G.load(os.path.join(run_dir(a, t, seed), "checkpoint.pt")).nets["G"]
        canvas, steps = G.draw(g, 64, seed=0)
        save_grid(canvas, os.path.join(a.img, f"gran_T{t}_samples.png"), nrow=8, scale=2)
        G.save_step_grid(steps[:8], os.path.join(a.img, f"gran_T{t}_steps.png"), scale=3)
    print("| model 1 | model 2 | ε(D1; test) | ε(D2; test) | r_test | ε(D1; G2) | ε(D2; G1) | r_sample | valid "
          "| winner |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in valid:
        print(f"| {r['model1']} | {r['model2']} | {r['test_error_1']:.3f} | {r['test_error_2']:.3f} "
              f"| {r['r_test']:.2f} "
              f"| {r['sample_error_1']:.3f} | {r['sample_error_2']:.3f} | {r['r_sample']:.2f} | {r['valid']} "
              f"| {r['winner']} |")
    print(json.dumps(summary, indent=1))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("stage", choices=["train", "report"])
    p.add_argument("t", nargs="+", type=int)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--root", default="runs/gran_exp")
    p.add_argument("--img", default="docs/img")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--snapshot-every", type=int, default=250)
    p.add_argument("--last-snapshots", type=int, default=4, help="snapshots per run that enter the battles")
    p.add_argument("--tolerance", type=float, default=0.2, help="validity: |r_test - 1| <= this")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--n", type=int, default=1000)
    a = p.parse_args()
    torch.set_num_threads(1)
    {"train": train, "report": report}[a.stage](a)


if __name__ == "__main__":
    main()
