"""Input checks shared by every op: each error names the argument and what was expected.

Errors. The ops raise :class:`OpValueError` and :class:`OpTypeError`. They derive from
``ValueError`` / ``TypeError`` (what fastpapers has always raised) *and* from
``RuntimeError`` (what torchvision's C++ checks raise, so code written for torchvision that
catches ``RuntimeError`` keeps working when it swaps in these ops).

Value checks on CUDA. Checks of a tensor's *values* (NaN boxes, batch indices out of range)
need the values on the host, i.e. a device->host copy that stalls the stream. On CUDA the
ops skip them by default; their kernels never read or write out of bounds on such values,
and each op documents what it returns for them. :func:`set_checks` (or the environment
variable ``FASTPAPERS_CHECKS=1`` at import) turns them on, restoring the named errors on
CUDA too. On the CPU the value checks always run: they cost no synchronisation there.
Shape, dtype and device checks read only metadata and always run.
"""
import os
from typing import Iterable, Optional, Tuple

import torch

FLOAT_DTYPES = (torch.float32, torch.float64)
HALF_DTYPES = (torch.float16, torch.bfloat16)
CUDA_FLOAT_DTYPES = HALF_DTYPES + FLOAT_DTYPES

__all__ = ["OpValueError", "OpTypeError", "set_checks", "checks_enabled", "value_checks"]


class OpValueError(ValueError, RuntimeError):
    """An op's argument has a wrong shape, size or value (a ValueError and a RuntimeError)."""


class OpTypeError(TypeError, RuntimeError):
    """An op's argument has a wrong type or dtype (a TypeError and a RuntimeError)."""


_CHECKS = os.environ.get("FASTPAPERS_CHECKS", "0").lower() in ("1", "true", "yes", "on")


def set_checks(enabled: bool) -> bool:
    """Turn value checks on CUDA tensors on or off; returns the previous setting.

    With checks on, CUDA calls validate tensor values as the CPU path does (NaN/inf boxes,
    batch indices out of range, ...), at the price of a device->host synchronisation per
    check. Off (the default), CUDA calls never synchronise with the host.

    Example:
        >>> import fastpapers.ops as ops
        >>> old = ops.set_checks(True)
        >>> ops.checks_enabled()
        True
        >>> _ = ops.set_checks(old)
    """
    global _CHECKS
    if not isinstance(enabled, bool):
        raise OpTypeError(f"enabled must be a bool, got {type(enabled).__name__}")
    old, _CHECKS = _CHECKS, enabled
    return old


def checks_enabled() -> bool:
    """Whether value checks run on CUDA tensors (see :func:`set_checks`)."""
    return _CHECKS


def value_checks(t: torch.Tensor) -> bool:
    """Whether the value checks for ``t`` should run now.

    CPU: always (outside torch.compile tracing, where values are unknown). CUDA: only in
    checked mode. Meta and fake tensors: never (they have no values).
    """
    if torch.compiler.is_compiling():
        return False
    if t.device.type == "meta":
        return False
    if t.device.type == "cpu":
        return True
    return _CHECKS


def _dtype_name(d: torch.dtype) -> str:
    return str(d).replace("torch.", "")


def check_tensor(name: str, t, *, ndim: Optional[int] = None, last_dim: Optional[int] = None,
                 dtypes: Optional[Iterable[torch.dtype]] = None):
    if not isinstance(t, torch.Tensor):
        raise OpTypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        raise OpValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if last_dim is not None and t.shape[-1] != last_dim:
        raise OpValueError(f"{name} must have size {last_dim} in its last dimension, got shape {tuple(t.shape)}")
    if dtypes is not None:
        dtypes = tuple(dtypes)
        if t.dtype not in dtypes:
            names = ", ".join(_dtype_name(d) for d in dtypes)
            raise OpTypeError(f"{name} must have dtype in ({names}), got {_dtype_name(t.dtype)}")


def check_float(name: str, t, *, cpu_half: bool = False):
    """Floating dtypes allowed for ``t`` on its device: float32/float64 everywhere, and
    float16/bfloat16 on CUDA (and on the CPU where the op passes ``cpu_half=True``)."""
    allowed = CUDA_FLOAT_DTYPES if (t.device.type != "cpu" or cpu_half) else FLOAT_DTYPES
    check_tensor(name, t, dtypes=allowed)


def check_same_device(**tensors):
    items = list(tensors.items())
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.device != first.device:
            raise OpValueError(f"{name} must be on the same device as {first_name} ({first.device}), got {t.device}")


def check_same_dtype(**tensors):
    items = list(tensors.items())
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.dtype != first.dtype:
            raise OpTypeError(f"{name} must have the same dtype as {first_name} "
                              f"({_dtype_name(first.dtype)}), got {_dtype_name(t.dtype)}")


def check_finite(name: str, t):
    """Raise if ``t`` holds NaN or inf, when value checks apply to ``t`` (see value_checks)."""
    if t.numel() and value_checks(t) and not bool(torch.isfinite(t).all()):
        raise OpValueError(f"{name} must contain only finite values (found NaN or inf)")


def check_no_nan(name: str, t):
    """Raise if ``t`` holds NaN (±inf allowed), when value checks apply to ``t``."""
    if t.numel() and value_checks(t) and bool(torch.isnan(t).any()):
        raise OpValueError(f"{name} must not contain NaN")


def check_number(name: str, value) -> float:
    """A real Python number (int or float, not bool) -> float."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise OpTypeError(f"{name} must be a number, got {type(value).__name__}")
    return float(value)


def check_range(name: str, value, lo, hi):
    value = check_number(name, value)
    if not (lo <= value <= hi):
        raise OpValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return value


def check_int(name: str, value, *, min_value: Optional[int] = None, max_value: Optional[int] = None) -> int:
    """A Python int (or a 0-d integer tensor's value is NOT accepted: it would need a sync)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise OpTypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if min_value is not None and value < min_value:
        raise OpValueError(f"{name} must be >= {min_value}, got {value}")
    if max_value is not None and value > max_value:
        raise OpValueError(f"{name} must be <= {max_value}, got {value}")
    return value


# The largest output side any op accepts: beyond it an [K, C, oh, ow] output or a pyramid
# level would not fit any device's memory, and the allocator's message would not say why.
MAX_SIDE = 1 << 16


def check_size_pair(name: str, value, *, max_side: int = MAX_SIDE) -> Tuple[int, int]:
    """An int or a pair (list/tuple/torch.Size) of positive ints -> (h, w).

    Floats, strings and bools are rejected (7.9 is not silently 7, "77" not 7x7).
    """
    if isinstance(value, int) and not isinstance(value, bool):
        pair = (value, value)
    elif isinstance(value, (tuple, list, torch.Size)) and len(value) == 2:
        pair = tuple(value)
    else:
        raise OpTypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    for v in pair:
        if not isinstance(v, int) or isinstance(v, bool):
            raise OpTypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    h, w = pair
    if h <= 0 or w <= 0:
        raise OpValueError(f"{name} must be positive, got {tuple(pair)}")
    if h > max_side or w > max_side:
        raise OpValueError(f"{name} must be at most {max_side} on each side, got {tuple(pair)}")
    return h, w
