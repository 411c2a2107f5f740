// Schema of the Gram-matrix / style-loss ops (contract 3 in DESIGN.md). The CPU kernels live
// in cpu/gram_kernel.cpp; the CUDA implementations are Triton kernels registered from Python
// (fastpapers/ops/gram.py, kernels/gram.py).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fastpapers, m) {
  // G[b] = scale * X[b] X[b]^T with X = x.view(B, C, -1).
  m.def("gram_matrix(Tensor x, float scale) -> Tensor");
  // dX[b] = scale * (dG[b] + dG[b]^T) X[b].
  m.def("gram_matrix_backward(Tensor grad, Tensor x, float scale) -> Tensor");
  // For each layer l: D_l = scales[l] * F_l F_l^T - A_l (A_l broadcast over the batch when
  // it is [C, C]); loss = sum_l weights[l] * sum(D_l^2). Returns the loss and every D_l,
  // which the backward reuses.
  m.def(
      "style_loss(Tensor[] features, Tensor[] targets, float[] scales, float[] weights) -> "
      "(Tensor, Tensor[])");
  // dF_l = grad * coefs[l] * D_l F_l, one matrix product per layer (D_l symmetric).
  m.def(
      "style_loss_backward(Tensor grad, Tensor[] features, Tensor[] diffs, float[] coefs) -> "
      "Tensor[]");
}
