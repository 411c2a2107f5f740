// Schema of the image-pyramid ops (contract 4). Kernels: cpu/pyramid_kernel.cpp; the CUDA
// implementations are Triton kernels registered from fastpapers/ops/pyramid.py.
//
// Every tensor is [B, C, H, W]. Sizes are (H, W).
//   pyr_down(x)                        OpenCV pyrDown, output ceil(H/2) x ceil(W/2)
//   pyr_up(x, size)                    OpenCV pyrUp to `size` (2H or 2H +- 1 when odd, same for W)
//   pyr_down_backward(grad, input_size) adjoint of pyr_down from an input of `input_size`
//   pyr_up_backward(grad, input_size)   adjoint of pyr_up from an input of `input_size`
//   laplacian_level(fine, coarse)      fine - pyr_up(coarse, fine size), one pass
//   pyr_up_add(coarse, residual)       residual + pyr_up(coarse, residual size), one pass
//   pyr_down_levels(x, count)          [pyr_down(x), pyr_down(pyr_down(x)), ...] (count tensors)
//   laplacian_pyramid(x, levels)       [L_0, ..., L_{levels-2}, G_{levels-1}]
//   laplacian_reconstruct(pyramid)     the inverse of laplacian_pyramid
// The adjoints of the three whole-pyramid ops (their backward; the adjoint of each adjoint is
// the op itself, which gives double backward):
//   pyr_down_levels_backward(grads, input_size)   grads of pyr_down_levels' outputs -> grad of x
//   laplacian_pyramid_backward(grads)             grads of laplacian_pyramid's levels -> grad of x
//   laplacian_reconstruct_backward(grad, heights, widths)
//                                                 grad of the output -> grads of levels 1, 2, ...
//                                                 (sizes heights[i] x widths[i]); level 0's is grad
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fastpapers, m) {
  m.def("pyr_down(Tensor x) -> Tensor");
  m.def("pyr_up(Tensor x, SymInt[2] size) -> Tensor");
  m.def("pyr_down_backward(Tensor grad, SymInt[2] input_size) -> Tensor");
  m.def("pyr_up_backward(Tensor grad, SymInt[2] input_size) -> Tensor");
  m.def("laplacian_level(Tensor fine, Tensor coarse) -> Tensor");
  m.def("pyr_up_add(Tensor coarse, Tensor residual) -> Tensor");
  m.def("pyr_down_levels(Tensor x, int count) -> Tensor[]");
  m.def("laplacian_pyramid(Tensor x, int levels) -> Tensor[]");
  m.def("laplacian_reconstruct(Tensor[] pyramid) -> Tensor");
  m.def("pyr_down_levels_backward(Tensor[] grads, SymInt[2] input_size) -> Tensor");
  m.def("laplacian_pyramid_backward(Tensor[] grads) -> Tensor");
  m.def("laplacian_reconstruct_backward(Tensor grad, SymInt[] heights, SymInt[] widths) -> Tensor[]");
}
