"""Loading the compiled extension ``fastpapers._C`` and reporting what is available."""
import importlib
import os

import torch

_BUILD_HINT = (
    "fastpapers' compiled extension (fastpapers._C) is not built. Build it with "
    "`pip install --no-build-isolation -e .` (or `make install`) from the source checkout; "
    "set FORCE_CUDA=1 to compile the CUDA kernels."
)


class ExtensionNotBuiltError(RuntimeError):
    """Raised when an op needs fastpapers._C and it was not compiled."""


def _import_ext():
    try:
        return importlib.import_module("fastpapers._C"), None
    except ImportError as exc:  # not built, or built against another torch
        return None, exc


# Loaded once at import: the op wrappers test a plain global, which torch.compile traces
# without a graph break.
_EXT, _EXT_ERROR = _import_ext()


def _load():
    return _EXT, _EXT_ERROR


def has_ext() -> bool:
    return _load()[0] is not None


def require_ext(op: str):
    """Return the loaded extension module, or raise an error that says how to build it."""
    if _EXT is None:
        raise ExtensionNotBuiltError(f"fastpapers.ops.{op} needs the compiled library. {_BUILD_HINT} "
                                     f"(import error: {_EXT_ERROR})")
    return _EXT


def has_triton() -> bool:
    return importlib.util.find_spec("triton") is not None


def compiled_ops():
    """Names of the ops the compiled library registered (namespace ``fastpapers``)."""
    if not has_ext():
        return []
    names = []
    for name in torch._C._dispatch_get_all_op_names():
        if name.startswith("fastpapers::"):
            names.append(name.split("::", 1)[1])
    return sorted(set(names))


def info() -> dict:
    """What this installation has: compiled ops, CUDA kernels, Triton, devices."""
    mod, exc = _load()
    return {
        "version": importlib.import_module("fastpapers").__version__,
        "torch": torch.__version__,
        "extension_built": mod is not None,
        "extension_error": None if exc is None else str(exc),
        "compiled_ops": compiled_ops(),
        "cuda_kernels_compiled": bool(getattr(mod, "with_cuda", False)),
        "cuda_available": torch.cuda.is_available(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "triton_available": has_triton(),
        "triton_interpret": os.environ.get("TRITON_INTERPRET", "0") == "1",
        "cpu_threads": torch.get_num_threads(),
    }
