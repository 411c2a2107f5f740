"""Fused operators of fastpapers. Each op validates its inputs, dispatches to the C++ kernel
on CPU tensors and to the CUDA/Triton kernel on CUDA tensors, and has a pure-PyTorch
reference in :mod:`fastpapers.reference`."""
from .gram import StyleLoss, gram_matrix, style_loss
from .nms import batched_nms, nms

__all__ = ["nms", "batched_nms", "gram_matrix", "style_loss", "StyleLoss"]
