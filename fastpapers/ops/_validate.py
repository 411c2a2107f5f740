"""Input checks shared by every op: each error names the argument and what was expected."""
from typing import Iterable, Optional, Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.float64)
CUDA_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_tensor(name: str, t, *, ndim: Optional[int] = None, last_dim: Optional[int] = None,
                 dtypes: Optional[Iterable[torch.dtype]] = None):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if last_dim is not None and t.shape[-1] != last_dim:
        raise ValueError(f"{name} must have size {last_dim} in its last dimension, got shape {tuple(t.shape)}")
    if dtypes is not None:
        dtypes = tuple(dtypes)
        if t.dtype not in dtypes:
            names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
            raise TypeError(f"{name} must have dtype in ({names}), got {str(t.dtype).replace('torch.', '')}")


def check_float(name: str, t):
    """Floating dtypes allowed for ``t`` on its device (half precision on CUDA only)."""
    allowed = CUDA_FLOAT_DTYPES if t.is_cuda else FLOAT_DTYPES
    check_tensor(name, t, dtypes=allowed)


def check_same_device(**tensors):
    items = list(tensors.items())
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.device != first.device:
            raise ValueError(f"{name} must be on the same device as {first_name} ({first.device}), got {t.device}")


def check_same_dtype(**tensors):
    items = list(tensors.items())
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.dtype != first.dtype:
            raise TypeError(f"{name} must have the same dtype as {first_name} "
                            f"({str(first.dtype).replace('torch.', '')}), got {str(t.dtype).replace('torch.', '')}")


def check_finite(name: str, t):
    if t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must contain only finite values (found NaN or inf)")


def check_range(name: str, value, lo, hi):
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not (lo <= value <= hi):
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")


def check_size_pair(name: str, value) -> Sequence[int]:
    """An int or a pair of positive ints -> (h, w)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"{name} must be positive, got {tuple(value)}")
    return h, w
