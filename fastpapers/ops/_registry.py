"""Registration of the ops' Python-side pieces (fake kernels, autograd, Triton CUDA kernels).

The schemas and the CPU/CUDA C++ kernels come from the compiled library ``fastpapers._C``.
An op module declares what it registers in a function and, at its end, hands it to
:func:`when_built`, which runs it once if the library loaded; without the library the module still imports,
and calling the op raises :class:`fastpapers._ext.ExtensionNotBuiltError` with the build
hint (from ``require_ext``).
"""
from typing import Callable

from .._ext import has_ext
from ..kernels import HAS_TRITON

__all__ = ["when_built", "HAS_TRITON"]


def when_built(register: Callable[[], None]) -> Callable[[], None]:
    """Run ``register()`` now if fastpapers._C is loaded; return it unchanged."""
    if has_ext():
        register()
    return register
