// Schema of the ROI sampling ops (contract 2 in DESIGN.md), and roi_align's autocast rule.
// Kernels live in cpu/roi_bilinear_kernel.cpp, cpu/roi_align_kernel.cpp and cuda/roi_kernel.cu.
//
// rois are [K, 5] rows (batch index, x1, y1, x2, y2) in the input image's coordinates; the
// backward ops take the forward's static arguments plus the input's shape, so that the
// gradient of the features never needs the features themselves.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

namespace fastpapers {
namespace {

// Autocast (torchvision's rule for roi_align): a float16/bfloat16 input or rois run the
// float32 kernel, and the result comes back in the input's dtype.
at::Tensor autocast_float(const at::Tensor& t) {
  const auto st = t.scalar_type();
  return (st == at::kHalf || st == at::kBFloat16) ? t.to(at::kFloat) : t;
}

template <c10::DispatchKey kKey>
at::Tensor roi_align_autocast(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                              c10::SymInt pooled_height, c10::SymInt pooled_width, int64_t sampling_ratio,
                              bool aligned) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(kKey);
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastpapers::roi_align", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, double, c10::SymInt, c10::SymInt,
                                         int64_t, bool)>();
  return op.call(autocast_float(input), autocast_float(rois), spatial_scale, std::move(pooled_height),
                 std::move(pooled_width), sampling_ratio, aligned)
      .to(input.scalar_type());
}

}  // namespace

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

TORCH_LIBRARY_IMPL(fastpapers, Autocast, m) {
  m.impl("roi_align", TORCH_FN(roi_align_autocast<c10::DispatchKey::Autocast>));
}

TORCH_LIBRARY_IMPL(fastpapers, AutocastCPU, m) {
  m.impl("roi_align", TORCH_FN(roi_align_autocast<c10::DispatchKey::AutocastCPU>));
}

}  // namespace fastpapers
