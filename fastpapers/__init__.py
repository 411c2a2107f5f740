"""fastpapers: seven classic deep-learning papers over fast fused operators.

The operators live in :mod:`fastpapers.ops`; the paper models in :mod:`fastpapers.models`.
"""
__version__ = "0.1.0"

from ._ext import info  # noqa: E402

__all__ = ["__version__", "info"]
