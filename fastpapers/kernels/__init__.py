"""Triton kernels of fastpapers (installed as ``fastpapers.kernels``).

One module per op. Each holds private ``@triton.jit`` kernels and a plain Python launcher per
kernel; the launchers are what the ops call on CUDA tensors and what the tests call under
``TRITON_INTERPRET=1`` on the CPU.
"""
import importlib.util

HAS_TRITON = importlib.util.find_spec("triton") is not None
