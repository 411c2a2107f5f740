"""Tiny training tasks shared by tests/test_train.py and the torchrun worker it launches."""
import json
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from fastpapers.train import Trainer, seed_everything


def regression_data(n=50, dtype=torch.float64):
    g = torch.Generator().manual_seed(123)
    x = torch.randn(n, 5, generator=g, dtype=dtype)
    y = x @ torch.randn(5, 2, generator=g, dtype=dtype) + 0.1 * torch.randn(n, 2, generator=g, dtype=dtype)
    return TensorDataset(x, y)


def ddp_run(out_dir, steps=6, batch_size=8):
    """Two modules, two optimisers stepped alternately, no randomness inside the step."""
    seed_everything(0)
    enc = nn.Sequential(nn.Linear(5, 16), nn.Tanh()).double()
    head = nn.Linear(16, 2).double()
    opts = {"enc": torch.optim.SGD(enc.parameters(), lr=0.1, momentum=0.9),
            "head": torch.optim.Adam(head.parameters(), lr=0.01)}

    def step(tr, batch):
        x, y = batch
        loss = F.mse_loss(head(enc(x)), y)
        tr.step("enc", loss, retain_graph=True)
        tr.step("head", loss)
        return {"loss": loss}

    tr = Trainer({"enc": enc, "head": head}, opts, step, data=regression_data(), batch_size=batch_size,
                 out_dir=out_dir, seed=0, log_every=1, checkpoint_every=3, grad_clip=1.0, progress=False)
    tr.fit(steps)
    return torch.cat([p.detach().reshape(-1) for m in (enc, head) for p in m.parameters()])


if __name__ == "__main__":
    params = ddp_run(sys.argv[1])
    rank = int(os.environ.get("RANK", "0"))
    with open(os.path.join(sys.argv[1], f"params_rank{rank}.json"), "w") as f:
        json.dump(params.tolist(), f)
