"""Flags every command spells the same way (DESIGN.md, CLI conventions)."""
import random

import numpy as np
import torch


def add_common(p, *, out_default=None, out_help="output path"):
    p.add_argument("--out", default=out_default, help=f"{out_help} (default: {out_default})")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")


def resolve_device(name: str) -> torch.device:
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"--device must be cpu or cuda, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name} was asked for but no CUDA device is available")
    return torch.device(name)


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
