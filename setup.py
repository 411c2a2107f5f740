"""Build script for fastpapers and its compiled extension ``fastpapers._C``.

Environment switches (torchvision's conventions):
  FORCE_CUDA=1            compile the CUDA sources even when no GPU is visible
  TORCH_CUDA_ARCH_LIST    CUDA architectures (default "9.0" when forced without a GPU)
  DEBUG=1                 -O0 -g instead of -O3
  NVCC_FLAGS              extra flags for nvcc
  FASTPAPERS_NO_EXT=1     skip the extension (pure-Python install)
"""
import glob
import os
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name):
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def extensions():
    if _flag("FASTPAPERS_NO_EXT"):
        print("fastpapers setup: FASTPAPERS_NO_EXT=1, building no extension")
        return [], {}
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    debug = _flag("DEBUG")
    force_cuda = _flag("FORCE_CUDA")
    with_cuda = CUDA_HOME is not None and (torch.cuda.is_available() or force_cuda)
    if force_cuda and CUDA_HOME is None:
        print("fastpapers setup: WARNING FORCE_CUDA=1 but no CUDA toolkit found; CPU only")
    if with_cuda and not torch.cuda.is_available() and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0"

    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    sources += sorted(glob.glob(os.path.join("csrc", "ops", "*.cpp")))
    sources += sorted(glob.glob(os.path.join("csrc", "ops", "cpu", "*.cpp")))
    cuda_sources = sorted(glob.glob(os.path.join("csrc", "ops", "cuda", "*.cu")))

    opt = ["-O0", "-g"] if debug else ["-O3"]
    # The C++ standard is left to torch.utils.cpp_extension (C++17 up to torch 2.10, C++20 after).
    cxx = opt + ["-fopenmp", "-DFASTPAPERS_BUILD"]
    # Native tuning only for local builds; wheels must run on any x86-64.
    if _flag("FASTPAPERS_NATIVE"):
        cxx.append("-march=native")
    else:
        cxx += ["-mavx2", "-mfma"] if _x86_has_avx2() else []
    nvcc = opt + ["--expt-relaxed-constexpr", "-DFASTPAPERS_BUILD"]
    nvcc += [f for f in os.environ.get("NVCC_FLAGS", "").split() if f]
    define_macros = []
    ext_cls = CppExtension
    extra = {"cxx": cxx}
    if with_cuda:
        ext_cls = CUDAExtension
        sources += cuda_sources
        define_macros.append(("WITH_CUDA", None))
        extra["nvcc"] = nvcc
    print(
        "fastpapers setup: cuda=%s (CUDA_HOME=%s, FORCE_CUDA=%s, TORCH_CUDA_ARCH_LIST=%s) debug=%s "
        "torch=%s sources=%d"
        % (with_cuda, CUDA_HOME, force_cuda, os.environ.get("TORCH_CUDA_ARCH_LIST"), debug,
           torch.__version__, len(sources))
    )
    ext = ext_cls(
        "fastpapers._C",
        sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        define_macros=define_macros,
        extra_compile_args=extra,
        extra_link_args=["-fopenmp"],
    )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


def _x86_has_avx2():
    """The CI and dev machines are x86-64 with AVX2; other hosts get the generic build."""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        return " avx2 " in info and " fma " in info
    except OSError:
        return False


ext_modules, cmdclass = extensions()

setup(
    packages=find_packages(include=["fastpapers", "fastpapers.*"]),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    package_data={"fastpapers": ["data/assets/*", "weights/manifest.json", "weights/*/*"]},
    zip_safe=False,
)
