"""Fused operators of fastpapers. Each op validates its inputs, dispatches to the C++ kernel
on CPU tensors and to the CUDA/Triton kernel on CUDA tensors, and has a pure-PyTorch
reference in :mod:`fastpapers.reference`."""
from . import boxes
from .nms import batched_nms, nms
from .roi import roi_align, roi_bilinear

__all__ = ["nms", "batched_nms", "roi_bilinear", "roi_align", "boxes"]
