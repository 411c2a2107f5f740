"""DenseCap (FCLN) against two baselines at an equal CPU budget, on the shapes world.

- ``fcln``: the paper's model (localisation layer: anchors, RPN scores and box deltas, RPN NMS).
- ``grid``: no localisation layer; the fixed anchor grid (3 scales x 3 ratios every 8 px,
  clipped to the image) is the proposal set, through the same bilinear ROI sampling,
  recognition network (final score + final box regression), LSTM and final NMS 0.3.
- ``image``: a full-image captioner; one region = the whole image, one caption per image, the
  predicted box is the image.

Each model trains (one thread, Adam, batch 8, 64 px canvases with 1-4 shapes) until its own
process has used ``--cpu-budget`` CPU seconds (time.process_time, so other jobs on the machine
do not bias it); the count is saved beside the trainer's checkpoint, so a killed run resumes
where it stopped. ``report`` evaluates every model on the same test canvases: dense mAP with
METEOR (Java) and with the token-F1 variant, detection mAP, and caption accuracy.

    nice -n 10 python experiments/densecap_exp.py train fcln      # one process per model
    python experiments/densecap_exp.py report fcln grid image --at 450
"""
import argparse
import json
import os
import shutil
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastpapers.recipes.densecap import collect_predictions, make_trainer  # noqa: E402
from fastpapers.data.shapes import ShapesDense, shapes_vocabulary  # noqa: E402
from fastpapers.metrics.dense_ap import dense_captioning_map, region_caption_accuracy  # noqa: E402
from fastpapers.models.densecap import shapes_model  # noqa: E402
from fastpapers.train import load_checkpoint  # noqa: E402

MODES = {"fcln": "rpn", "grid": "grid", "image": "image"}
TITLES = {"fcln": "DenseCap (FCLN)", "grid": "fixed grid, no localisation layer", "image": "full-image captioner"}


def run_dir(a, name):
    return os.path.join(a.root, name)


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def train(a, name):
    from tqdm.auto import tqdm
    out = run_dir(a, name)
    os.makedirs(out, exist_ok=True)
    budget_path = os.path.join(out, "budget.json")
    data = ShapesDense(a.n_train, size=a.size, seed=a.seed)
    torch.manual_seed(a.seed)
    model = shapes_model(data.vocab, proposals=MODES[name])
    tr = make_trainer(model, data, out_dir=out, batch_size=a.batch_size, lr=a.lr, seed=a.seed, log_every=a.chunk,
                      checkpoint_every=0, progress=False)
    state = {"step": 0, "cpu_s": 0.0, "history": []}
    resume = os.path.isfile(tr.checkpoint_path) and os.path.isfile(budget_path)
    if resume:
        with open(budget_path) as f:
            state = json.load(f)
    bar = tqdm(total=round(a.cpu_budget), initial=min(round(state["cpu_s"]), round(a.cpu_budget)),
               desc=f"{name} (CPU s)", dynamic_ncols=True, mininterval=1.0)
    while state["cpu_s"] < a.cpu_budget:
        c0 = time.process_time()
        # fit() saves the checkpoint when it reaches the target step; the CPU count is written
        # right after it, so the two agree unless the process dies between the two writes.
        last = tr.fit(state["step"] + a.chunk, resume=resume)
        resume = False
        used = time.process_time() - c0
        if tr.global_step != state["step"] + a.chunk:
            raise RuntimeError(f"{budget_path} says step {state['step']} but the checkpoint is at another step")
        state["step"] = tr.global_step
        state["cpu_s"] += used
        state["history"].append({"step": state["step"], "cpu_s": round(state["cpu_s"], 2),
                                 **{k: round(v, 4) for k, v in last.items() if not k.startswith(("lr/", "steps"))}})
        _write_json(budget_path, state)
        for m in a.milestones:
            snap = os.path.join(out, f"checkpoint_cpu{m}.pt")
            if state["cpu_s"] >= m and not os.path.isfile(snap):
                # A snapshot at each CPU milestone: the learning curve against CPU time, and an
                # equal-budget comparison at a smaller budget should a run be cut short.
                shutil.copyfile(tr.checkpoint_path, snap)
                _write_json(os.path.join(out, f"budget_cpu{m}.json"), state)
        bar.update(min(round(state["cpu_s"]), round(a.cpu_budget)) - bar.n)
        bar.set_postfix(step=state["step"], caption=f"{last.get('caption', float('nan')):.3f}", refresh=False)
    bar.close()
    print(f"{name}: {state['step']} steps in {state['cpu_s']:.0f} CPU s")


def _suffix(a):
    return f"_cpu{a.at}" if a.at else ""


def load_model(a, name):
    model = shapes_model(shapes_vocabulary(), proposals=MODES[name])
    load_checkpoint(os.path.join(run_dir(a, name), f"checkpoint{_suffix(a)}.pt"), {"densecap": model})
    return model.eval()


def report(a):
    from fastpapers.metrics.meteor import Meteor, meteor_available
    from fastpapers.viz import draw_boxes, hstack
    torch.set_num_threads(a.threads)
    test = ShapesDense(a.n_test, size=a.size, split="test", seed=a.seed)
    have_java = meteor_available()
    rows = []
    os.makedirs(a.img, exist_ok=True)
    for name in a.models:
        with open(os.path.join(run_dir(a, name), f"budget{_suffix(a)}.json")) as f:
            budget = json.load(f)
        model = load_model(a, name)
        t0 = time.process_time()
        preds, gts = collect_predictions(model, test)
        infer_s = time.process_time() - t0
        row = {"model": name, "steps": budget["step"], "cpu_s": budget["cpu_s"],
               "final_caption_loss": budget["history"][-1]["caption"], "infer_cpu_s_per_image": infer_s / len(test)}
        r = dense_captioning_map(preds, gts, language="token_f1")
        row.update(map_token_f1=r["map"], det_map=r["det_map"], ap_iou05_det=r["ap"][(0.5, -1.0)])
        if have_java:
            with Meteor() as m:
                row["map_meteor"] = dense_captioning_map(preds, gts, language="meteor", meteor=m)["map"]
        row.update(region_caption_accuracy(preds, gts))
        # Box-free: does the image's highest-scoring caption name one of its regions exactly?
        # The only caption measure the full-image captioner can score on.
        row["top1_caption_in_image"] = sum(bool(p["captions"]) and p["captions"][0] in g["captions"]
                                           for p, g in zip(preds, gts)) / len(preds)
        rows.append(row)
        print(json.dumps(row), flush=True)

        images = torch.stack([test[i]["image"] for i in range(a.show)])
        res = model.predict(images, max_detections=4)
        for rr in res:  # draw only confident boxes, so the figure stays readable
            keep = [j for j, sc in enumerate(rr["scores"].tolist()) if sc >= a.min_score]
            rr["boxes"], rr["scores"] = rr["boxes"][keep], rr["scores"][keep]
            rr["captions"] = [rr["captions"][j] for j in keep]
        panels = [draw_boxes(img, rr["boxes"], [f"{c} {s:.2f}" for c, s in zip(rr["captions"], rr["scores"].tolist())],
                             scale=4) for img, rr in zip(images, res)]
        hstack(panels).save(os.path.join(a.img, f"densecap_{name}{_suffix(a)}.png"), optimize=True)
        with open(os.path.join(a.root, f"examples_{name}{_suffix(a)}.txt"), "w") as f:
            for i, rr in enumerate(res):
                f.write(f"image {i}: truth {test.region_captions[i]}; predicted {rr['captions']} "
                        f"scores {[round(s, 2) for s in rr['scores'].tolist()]}\n")
    _write_json(os.path.join(a.root, f"results{_suffix(a)}.json"), rows)
    print(f"\n{len(test)} test canvases ({a.size} px, 1-4 shapes), greedy captions\n")
    print("| model | steps | CPU s | mAP (METEOR) | mAP (token F1) | detection mAP | AP det IoU 0.5 "
          "| regions found (IoU 0.5) | caption exact when found | top-1 caption names a region |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        meteor = f"{r['map_meteor']:.3f}" if "map_meteor" in r else "n/a (no Java)"
        print(f"| {TITLES[r['model']]} | {r['steps']} | {r['cpu_s']:.0f} | {meteor} | {r['map_token_f1']:.3f} "
              f"| {r['det_map']:.3f} | {r['ap_iou05_det']:.3f} | {r['found']:.2f} | {r['right_given_found']:.2f} "
              f"| {r['top1_caption_in_image']:.2f} |")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("stage", choices=["train", "report"])
    p.add_argument("models", nargs="+", choices=sorted(MODES))
    p.add_argument("--root", default="runs/densecap_exp")
    p.add_argument("--img", default="docs/img")
    p.add_argument("--cpu-budget", type=float, default=450.0, help="CPU seconds of training per model")
    p.add_argument("--milestones", type=int, nargs="*", default=[300, 450],
                   help="CPU seconds at which to keep a copy of the checkpoint")
    p.add_argument("--chunk", type=int, default=50, help="steps between checkpoints")
    p.add_argument("--n-train", type=int, default=4000)
    p.add_argument("--n-test", type=int, default=300)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--at", type=int, default=0,
                   help="report: evaluate the snapshots taken at this CPU milestone (0: the final checkpoints)")
    p.add_argument("--min-score", type=float, default=0.3, help="report: smallest score drawn in the PNGs")
    p.add_argument("--show", type=int, default=3, help="test canvases in each example PNG")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.stage == "train":
        for name in a.models:
            train(a, name)
    else:
        report(a)


if __name__ == "__main__":
    main()
