"""fastpapers: seven classic deep-learning papers over fast fused operators.

The operators live in :mod:`fastpapers.ops`; the paper models in :mod:`fastpapers.models`.
"""
import importlib.util as _ilu
import os as _os
import sys as _sys

__version__ = "0.1.0"


def _mount_source_kernels():
    # Installed wheels carry the Triton kernels as the subpackage fastpapers.kernels; in a
    # source checkout they sit in ../kernels. Mount that folder under the same name.
    if "fastpapers.kernels" in _sys.modules:
        return
    here = _os.path.dirname(_os.path.abspath(__file__))
    if _os.path.isdir(_os.path.join(here, "kernels")):
        return
    src = _os.path.join(_os.path.dirname(here), "kernels")
    init = _os.path.join(src, "__init__.py")
    if _os.path.isfile(init):
        spec = _ilu.spec_from_file_location("fastpapers.kernels", init, submodule_search_locations=[src])
        if spec is not None and spec.loader is not None:
            mod = _ilu.module_from_spec(spec)
            _sys.modules["fastpapers.kernels"] = mod
            spec.loader.exec_module(mod)


_mount_source_kernels()

from ._ext import info  # noqa: E402

__all__ = ["__version__", "info"]
