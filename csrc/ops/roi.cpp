// Schema of the ROI sampling ops (contract 2 in DESIGN.md). Kernels live in
// cpu/roi_bilinear_kernel.cpp, cpu/roi_align_kernel.cpp and cuda/roi_kernel.cu.
//
// rois are [K, 5] rows (batch index, x1, y1, x2, y2) in the input image's coordinates; the
// backward ops take the forward's static arguments plus the input's shape, so that the
// gradient of the features never needs the features themselves.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fastpapers, m) {
  m.def(
      "roi_bilinear(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width) -> Tensor");
  m.def(
      "roi_bilinear_backward_input(Tensor grad, Tensor rois, float spatial_scale, "
      "SymInt batch_size, SymInt channels, SymInt height, SymInt width) -> Tensor");
  m.def(
      "roi_bilinear_backward_rois(Tensor grad, Tensor input, Tensor rois, float spatial_scale) "
      "-> Tensor");
  m.def(
      "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor");
  m.def(
      "roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width, "
      "int sampling_ratio, bool aligned) -> Tensor");
}
