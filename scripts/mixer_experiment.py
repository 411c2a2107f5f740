"""XENT vs DAD vs E2E vs MIXER on the ambiguous-transduction task at an equal step budget.

Every run: the same model (attentive encoder, LSTM-64 decoder), data (20k training pairs,
1k held-out pairs from another seed), batch 32, Adam 3e-3, the same number of steps; MIXER
spends the first half on XENT and then moves delta=2 tokens per stage from XENT to REINFORCE.
Scores: corpus BLEU-4 (both references), mean best-reference sentence BLEU-4, exact match
(the output is one of the two valid answers), greedy and beam 5.

    python scripts/mixer_experiment.py --steps 2000 --out runs/mixer_exp      # one process per algorithm
    python scripts/mixer_experiment.py --algo xent --steps 2000 --out ...     # a single run
"""
import argparse
import json
import os
import subprocess
import sys
import time

import torch

ALGOS = ("xent", "dad", "e2e", "mixer")


def one(algo, steps, out, seed, rl_lr=None):
    from fastpapers.data import AmbiguousTransduction
    from fastpapers.models import mixer as M
    from fastpapers.recipes import mixer as R

    # Tiny recurrent model: a second OpenMP thread only adds wake-up latency.
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    train = AmbiguousTransduction(20000, seed=seed)
    test = AmbiguousTransduction(1000, seed=10_000 + seed)
    V = len(train.vocab)
    model = M.MixerModel(M.MixerConfig(src_vocab=V, tgt_vocab=V, emb=32, hidden=64, max_tgt_len=9))
    t0 = time.perf_counter()
    T = model.cfg.max_tgt_len + 1
    xent_steps = steps // 2
    stage_steps = max(1, (steps - xent_steps) // -(-T // 2))
    name = algo if rl_lr is None else f"{algo}_rl_lr{rl_lr:g}"
    run_dir = os.path.join(out, name)
    common = dict(batch_size=32, out_dir=run_dir, seed=seed, delta=2, stage_steps=stage_steps, e2e_k=5,
                  progress=False, log_every=100)
    if algo in ("mixer", "xent") and rl_lr is not None:
        # Same schedule, but the second half (MIXER's REINFORCE stages, from s = T - delta on)
        # runs at its own learning rate, as a second trainer run. For XENT this is the control:
        # the same learning-rate drop without REINFORCE.
        R.fit(model, train, algo="xent", steps=xent_steps, lr=3e-3, **{**common, "out_dir": run_dir + "_xent"})
        R.fit(model, train, algo=algo, steps=steps - xent_steps, lr=rl_lr, xent_steps=0, **common)
    else:
        R.fit(model, train, algo=algo, steps=steps, lr=3e-3, xent_steps=xent_steps, **common)
    train_s = time.perf_counter() - t0
    res = {"algo": name, "steps": steps, "train_seconds": train_s,
           "greedy": R.evaluate(model, test, beam_size=1), "beam5": R.evaluate(model, test, beam_size=5)}
    R.save_model(model, os.path.join(run_dir, "model.pt"), source_vocab=train.vocab, target_vocab=train.vocab)
    with open(os.path.join(run_dir, "result.json"), "w") as f:
        json.dump(res, f, indent=2)
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--out", default="runs/mixer_exp")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--algo", default=None, choices=ALGOS)
    p.add_argument("--rl-lr", type=float, default=None, help="mixer: Adam lr of the REINFORCE stages (xent: of the second half)")
    a = p.parse_args()
    if a.algo:
        print(json.dumps(one(a.algo, a.steps, a.out, a.seed, a.rl_lr)))
        return
    procs = [subprocess.Popen([sys.executable, __file__, "--algo", algo, "--steps", str(a.steps), "--out", a.out,
                               "--seed", str(a.seed)]) for algo in ALGOS]
    if any(pr.wait() for pr in procs):
        sys.exit("a run failed")
    rows = [json.load(open(os.path.join(a.out, algo, "result.json"))) for algo in ALGOS]
    print("| method | greedy BLEU-4 | greedy sent. BLEU-4 | greedy exact % | beam-5 BLEU-4 | beam-5 sent. BLEU-4 "
          "| beam-5 exact % | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        g, b = r["greedy"], r["beam5"]
        print(f"| {r['algo'].upper()} | {g['bleu4']:.2f} | {g['sentence_bleu4']:.2f} | {g['exact_match']:.1f} | "
              f"{b['bleu4']:.2f} | {b['sentence_bleu4']:.2f} | {b['exact_match']:.1f} | {r['train_seconds']:.0f} |")


if __name__ == "__main__":
    main()
