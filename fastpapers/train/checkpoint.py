"""Atomic checkpoint files and the random-number-generator state they carry."""
import os
import random
import tempfile
from typing import Dict, Optional

import numpy as np
import torch

FORMAT = "fastpapers-checkpoint"
VERSION = 1


def atomic_save(obj, path: str) -> str:
    """torch.save ``obj`` to ``path`` so that ``path`` is always either the old or the new file.

    The bytes go to a temporary file in the same folder (same filesystem, so the rename is
    atomic), are flushed to disk, and only then replace ``path`` with ``os.replace``. A crash
    or a kill at any point leaves the previous checkpoint intact; the temporary file is removed
    when the write fails inside this process.
    """
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    # Make the rename itself durable; some filesystems refuse to open a folder, which is harmless.
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
    return path


def read_checkpoint(path: str, map_location="cpu") -> dict:
    """Load a checkpoint written by :class:`Trainer` (``weights_only``: no code is unpickled)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise ValueError(f"checkpoint file {path} is corrupt or not a torch file: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"checkpoint file {path} is not a fastpapers checkpoint (no '{FORMAT}' marker)")
    return ckpt


def load_checkpoint(path: str, modules: Optional[Dict[str, torch.nn.Module]] = None, *,
                    map_location="cpu", strict: bool = True) -> dict:
    """Read a checkpoint and, when ``modules`` is given, load each named module's weights.

    This is what ``sample``/``eval`` commands use: no optimiser or trainer is needed.
    Returns the whole checkpoint dict (``step``, ``modules``, ``optimizers``, ...).
    """
    ckpt = read_checkpoint(path, map_location)
    if modules:
        missing = [name for name in modules if name not in ckpt["modules"]]
        if missing:
            raise ValueError(f"checkpoint file {path} has no module named {missing}; "
                             f"it holds {sorted(ckpt['modules'])}")
        for name, module in modules.items():
            module.load_state_dict(ckpt["modules"][name], strict=strict)
    return ckpt


def get_rng_state() -> dict:
    """Every generator a training step may draw from, as tensors and plain Python values.

    numpy's state is stored as a tensor plus ints so that the checkpoint loads with
    ``weights_only=True``.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy, torch (CPU) and every CUDA device."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
