"""A tiny training run for tests/test_faults.py, run in its own process so that it can be
killed for real: ``python tests/_fault_task.py OUT STEPS [--resume] [--signal NAME --at STEP]``.

With ``--signal`` the step function sends that signal to its own process at step ``--at``
(a deterministic point); ``--signal wait`` instead writes ``OUT/ready`` at that step and
then sleeps, so the parent can send the signal from outside. The final weights go to
``OUT/params.pt``.
"""
import argparse
import os
import random
import signal
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from fastpapers.train import Trainer, create_run, seed_everything


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("steps", type=int)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--signal", default=None)
    ap.add_argument("--at", type=int, default=-1)
    ap.add_argument("--checkpoint-every", type=int, default=20)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    run = create_run(args.out, "toy", {"hidden": 16}, resume=args.resume)
    seed_everything(1)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(45, 6, generator=g)
    data = TensorDataset(x, (x[:, 0] > 0).long())
    body = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.2))
    head = nn.Linear(16, 2)
    opts = {"body": torch.optim.SGD(body.parameters(), lr=0.05, momentum=0.9),
            "head": torch.optim.Adam(head.parameters(), lr=3e-3)}

    def step(tr, batch):
        xb, yb = batch
        xb = xb + 0.01 * torch.randn_like(xb) + 0.001 * float(np.random.rand()) + 0.001 * random.random()
        logits = head(body(xb))
        loss = F.cross_entropy(logits, yb)
        tr.step("body" if tr.global_step % 2 else "head", loss)
        if tr.global_step == args.at and args.signal:
            if args.signal == "wait":
                open(os.path.join(args.out, "ready"), "w").close()
                deadline = time.time() + 60
                while not tr.stop_requested and time.time() < deadline:
                    time.sleep(0.01)  # the parent's signal arrives here
            else:
                os.kill(os.getpid(), getattr(signal, args.signal))
        return {"loss": loss, "acc": (logits.argmax(1) == yb).float().mean()}

    tr = Trainer({"body": body, "head": head}, opts, step, data=data, batch_size=8, out_dir=run.path, seed=3,
                 log_every=7, checkpoint_every=args.checkpoint_every, progress=False)
    tr.fit(args.steps, resume=args.resume)
    torch.save({k: v for m in (body, head) for k, v in m.state_dict().items()} | {"_": torch.zeros(1)},
               os.path.join(run.path, "params.pt"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
