// Schema of the NMS ops. Kernels live in cpu/nms_kernel.cpp and cuda/nms_kernel.cu.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fastpapers, m) {
  m.def("nms(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor");
  m.def(
      "batched_nms(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold, "
      "float? score_threshold=None, int? max_per_group=None) -> Tensor");
}
