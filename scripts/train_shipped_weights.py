"""Train the small models that ship in ``fastpapers/weights/``, reproducibly.

Usage::

    python scripts/train_shipped_weights.py densecap [semantic_attention ...] [--reuse]

``--reuse`` ships a finished run already in ``build/shipped_runs/<paper>`` without training again.

Each paper is trained with its recipe (``fastpapers.recipes.<paper>.train``) at the small
settings of :data:`SETTINGS` into ``build/shipped_runs/<paper>``; the run folder is then copied
into ``fastpapers/weights/<paper>/`` with the checkpoint slimmed to the model weights (no
optimiser state, floating tensors stored as float16: loading converts them back to the
model's float32), the shipped copy is evaluated with the recipe's evaluate, and
``fastpapers/weights/manifest.json`` records the command, commit, seed, settings, training
time, metrics and the SHA-256 of every shipped file.
"""
import importlib
import json
import os
import shutil
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fastpapers.train import checkpoint as C  # noqa: E402
from fastpapers import weights as W  # noqa: E402

# Small settings that train in a few CPU minutes each.
SETTINGS = {
    "densecap": dict(steps=2400, n_train=4000, batch_size=8, lr=1e-3, seed=0, checkpoint_every=0),
    "semantic_attention": dict(scenes=3000, size=32, dim=64, steps=8000, batch_size=32, lr=2e-3, seed=0,
                               checkpoint_every=0),
    "lapgan": dict(steps=3000, batch_size=64, seed=0, checkpoint_every=0, sample_every=0),
    "gran": dict(steps=2000, batch_size=64, seed=0, checkpoint_every=0, sample_every=0),
    "mixer": dict(steps=2500, batch_size=32, lr=3e-3, hidden=128, emb=64, seed=0, checkpoint_every=0),
}

# Run-folder files that are not shipped: training logs and sample grids.
_SKIP = {"metrics.jsonl", "metrics.csv", "tb", "samples"}
# Papers whose recipe loads a model file of its own (MIXER's model.pt), not the checkpoint.
_NO_CHECKPOINT = {"mixer"}


def _evaluate(paper, folder):
    """The recipe's metrics for the model in ``folder`` (the shipped copy)."""
    R = importlib.import_module(f"fastpapers.recipes.{paper}")
    L = R.load(folder)
    if paper == "densecap":
        return R.evaluate(L.nets["densecap"], L.config.size, 200, seed=0)
    if paper == "semantic_attention":
        test = R.shapes_corpus(200, size=L.config.size, split="test", seed=0)
        return R.evaluate(L.nets[next(iter(L.nets))], L.artefacts["vocab"], test)
    if paper == "mixer":
        data = R.load_data(L.config, held_out=True)
        return {"greedy": R.evaluate(L.nets["model"], data, beam_size=1),
                "beam5": R.evaluate(L.nets["model"], data, beam_size=5)}
    if paper == "lapgan":
        return R.evaluate(folder, samples=2000, seed=0)
    if paper == "gran":
        # The recipe's evaluate is a GAM battle against a second run; the shipped record is the
        # Parzen-window log-likelihood (LAPGAN's protocol) on the 500 held-out digits, sigma
        # chosen on the first 250, scored on the last 250.
        from fastpapers.metrics.parzen import parzen_evaluate
        test = R.mnist_split("test", L.config.image_size).tensors[0].flatten(1).double()
        canvas, _ = R.draw(L.nets["G"], 2000, seed=0)
        return {"parzen": parzen_evaluate(canvas.flatten(1).double(), test[:250], test[250:]), "held_out": 250}
    raise KeyError(paper)


def _slim_checkpoint(src, dst):
    ckpt = C.read_checkpoint(src)
    mods = {name: {k: (v.half() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in sd.items()}
            for name, sd in ckpt["modules"].items()}
    keep = {k: ckpt[k] for k in ("format", "version", "step", "seed") if k in ckpt}
    C.atomic_save({**keep, "modules": mods, "optimizers": {}}, dst)


def ship(paper, commit, reuse=False):
    R = importlib.import_module(f"fastpapers.recipes.{paper}")
    cfg = R.Config(**SETTINGS[paper])
    run_out = os.path.join(ROOT, "build", "shipped_runs", paper)
    done = os.path.join(run_out, "model.pt" if paper in _NO_CHECKPOINT else "checkpoint.pt")
    if reuse and os.path.isfile(done):
        # --reuse: ship the finished run already in build/ (its training time from the files' times).
        train_s = os.path.getmtime(done) - os.path.getmtime(os.path.join(run_out, "run.json"))
    else:
        shutil.rmtree(run_out, ignore_errors=True)
        t0 = time.perf_counter()
        R.train(cfg, run_out, progress=False)
        train_s = time.perf_counter() - t0
    dst = os.path.join(W.ROOT, paper)
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(dst)
    for name in sorted(os.listdir(run_out)):
        if name in _SKIP or name.startswith("checkpoint.pt") or name.endswith(".tmp"):
            continue
        if os.path.isfile(os.path.join(run_out, name)):
            shutil.copy2(os.path.join(run_out, name), os.path.join(dst, name))
    if paper not in _NO_CHECKPOINT:
        _slim_checkpoint(os.path.join(run_out, "checkpoint.pt"), os.path.join(dst, "checkpoint.pt"))
    metrics = _evaluate(paper, dst)
    files = {name: C.sha256_file(os.path.join(dst, name)) for name in sorted(os.listdir(dst))}
    entry = {"command": f"python scripts/train_shipped_weights.py {paper}", "commit": commit,
             "seed": cfg.seed, "settings": SETTINGS[paper], "train_seconds": round(train_s, 1),
             "threads": torch.get_num_threads(), "metrics": metrics, "files": files,
             "bytes": sum(os.path.getsize(os.path.join(dst, n)) for n in files)}
    man = W.manifest() if os.path.isfile(W.MANIFEST) else {"format": "fastpapers-weights", "version": 1,
                                                          "papers": {}}
    man["papers"][paper] = entry
    with open(W.MANIFEST, "w") as f:
        json.dump(man, f, indent=1, sort_keys=True)
        f.write("\n")
    print(json.dumps({paper: {k: entry[k] for k in ("train_seconds", "metrics", "bytes")}}))


def main(argv):
    reuse = "--reuse" in argv
    papers = [a for a in argv if a != "--reuse"] or list(SETTINGS)
    unknown = [p for p in papers if p not in SETTINGS]
    if unknown:
        raise SystemExit(f"unknown papers {unknown}; known: {sorted(SETTINGS)}")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    for paper in papers:
        ship(paper, commit, reuse=reuse)


if __name__ == "__main__":
    main(sys.argv[1:])
