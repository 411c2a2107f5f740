"""Flags every command spells the same way (DESIGN.md, CLI conventions), declared once here.

- :func:`add_common`: ``--out``, ``--seed``, ``--device``.
- :func:`add_training_flags`: ``--steps``, ``--batch-size``, ``--checkpoint-every``,
  ``--sample-every``, ``--resume`` (and ``--lr`` when the command has one learning rate).
- ``type=`` helpers (:func:`positive_int`, :func:`nonneg_int`, :func:`positive_float`,
  :func:`nonneg_float`, :func:`finite_float`, :func:`prob_float`, :func:`nonempty_path`,
  :func:`device_name`): a bad value is refused by argparse itself with one line that names
  the flag, e.g. ``argument --steps: expected a positive int, got '0'``.

>>> import argparse
>>> p = argparse.ArgumentParser()
>>> add_training_flags(p, steps=100, batch_size=8, lr=1e-3)
>>> a = p.parse_args(["--steps", "5"])
>>> (a.steps, a.batch_size, a.checkpoint_every, a.sample_every, a.resume, a.lr)
(5, 8, 500, 0, False, 0.001)
"""
import argparse
import math

import torch

from ..train.checkpoint import seed_everything  # noqa: F401  (the one definition; commands import it here)


class ValueRefused(argparse.ArgumentTypeError):
    """A flag value outside what the flag accepts (raised by the ``type=`` helpers below)."""


def _int(text: str, what: str, ok) -> int:
    try:
        value = int(text, 10)
    except (TypeError, ValueError):
        raise ValueRefused(f"expected {what}, got {text!r}") from None
    if not ok(value):
        raise ValueRefused(f"expected {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    return _int(text, "a positive int", lambda v: v >= 1)


def nonneg_int(text: str) -> int:
    """argparse type: an int >= 0."""
    return _int(text, "an int >= 0", lambda v: v >= 0)


def _float(text: str, what: str, ok) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueRefused(f"expected {what}, got {text!r}") from None
    if not math.isfinite(value) or not ok(value):
        raise ValueRefused(f"expected {what}, got {text!r}")
    return value


def finite_float(text: str) -> float:
    """argparse type: any finite float (refuses nan and inf)."""
    return _float(text, "a finite number", lambda v: True)


def positive_float(text: str) -> float:
    """argparse type: a finite float > 0 (refuses nan and inf)."""
    return _float(text, "a finite number > 0", lambda v: v > 0)


def nonneg_float(text: str) -> float:
    """argparse type: a finite float >= 0."""
    return _float(text, "a finite number >= 0", lambda v: v >= 0)


def prob_float(text: str) -> float:
    """argparse type: a float in [0, 1]."""
    return _float(text, "a number in [0, 1]", lambda v: 0 <= v <= 1)


def nonempty_path(text: str) -> str:
    """argparse type: a path that is not empty or blank."""
    if not isinstance(text, str) or not text.strip():
        raise ValueRefused(f"expected a non-empty path, got {text!r}")
    return text


def device_name(text: str) -> str:
    """argparse type: ``cpu``, ``cuda`` or ``cuda:N`` (whether CUDA is present is checked by
    :func:`resolve_device` when the command runs)."""
    if text in ("cpu", "cuda") or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise ValueRefused(f"expected cpu, cuda or cuda:N, got {text!r}")


def add_common(p, *, out_default=None, out_help="output path"):
    p.add_argument("--out", type=nonempty_path, default=out_default, help=f"{out_help} (default: {out_default})")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda or cuda:N (default: cpu)")


def add_training_flags(p, *, steps: int, batch_size: int, checkpoint_every=None, sample_every=None, lr=None):
    """Declare the training flags with this command's defaults.

    ``checkpoint_every`` defaults to 500 when None (0 = only at the end), ``sample_every`` to
    0 (never); ``--lr`` is declared only when ``lr`` is given.
    """
    p.add_argument("--steps", type=positive_int, default=steps, help="training steps (default: %(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=batch_size, help="batch size (default: %(default)s)")
    p.add_argument("--checkpoint-every", type=nonneg_int, default=500 if checkpoint_every is None else checkpoint_every,
                   help="steps between checkpoints, 0 = only at the end (default: %(default)s)")
    p.add_argument("--sample-every", type=nonneg_int, default=0 if sample_every is None else sample_every,
                   help="steps between sample grids, 0 = never (default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    if lr is not None:
        p.add_argument("--lr", type=positive_float, default=lr, help="learning rate (default: %(default)s)")


def resolve_device(name: str) -> torch.device:
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"--device must be cpu or cuda, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name} was asked for but no CUDA device is available")
    return torch.device(name)
