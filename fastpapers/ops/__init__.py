"""Fused operators of fastpapers. Each op validates its inputs, dispatches to the C++ kernel
on CPU tensors and to the CUDA/Triton kernel on CUDA tensors, and has a pure-PyTorch
reference in :mod:`fastpapers.reference`."""
from . import boxes
from .beam_search import beam_search_step
from .decoding import BeamSearchOutput, GenerationOutput, beam_search, greedy_search, sample
from .gram import StyleLoss, gram_matrix, style_loss
from .nms import batched_nms, nms, nms_padded
from .pyramid import (gaussian_pyramid, laplacian_level, laplacian_pyramid, laplacian_reconstruct, max_pyramid_levels,
                      pyr_down, pyr_up)
from .roi import RoIAlign, roi_align, roi_bilinear
from ._validate import OpTypeError, OpValueError, checks_enabled, set_checks

__all__ = ["nms", "batched_nms", "nms_padded", "roi_bilinear", "roi_align", "RoIAlign", "boxes", "beam_search_step",
           "beam_search",
           "greedy_search", "sample", "BeamSearchOutput", "GenerationOutput", "gram_matrix", "style_loss",
           "StyleLoss", "pyr_down", "pyr_up", "gaussian_pyramid", "laplacian_pyramid", "laplacian_reconstruct",
           "laplacian_level", "max_pyramid_levels", "set_checks", "checks_enabled", "OpValueError",
           "OpTypeError"]
