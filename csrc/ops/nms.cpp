// Schema of the NMS ops and their autocast kernels. CPU and CUDA kernels live in
// cpu/nms_kernel.cpp and cuda/nms_kernel.cu.
//
// Autocast (CPU and CUDA): like torchvision, the boxes and scores are cast to float32 and the op
// runs in float32; the result is int64 indices, so nothing is cast back.
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <tuple>

namespace fastpapers {
namespace {

template <c10::DispatchKey key, c10::DeviceType device>
at::Tensor nms_autocast(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(key);
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("fastpapers::nms", "").typed<at::Tensor(
      const at::Tensor&, const at::Tensor&, double)>();
  return op.call(at::autocast::cached_cast(at::kFloat, boxes, device),
                 at::autocast::cached_cast(at::kFloat, scores, device), iou_threshold);
}

template <c10::DispatchKey key, c10::DeviceType device>
std::tuple<at::Tensor, at::Tensor> nms_padded_autocast(const at::Tensor& boxes, const at::Tensor& scores,
                                                       double iou_threshold) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(key);
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("fastpapers::nms_padded", "").typed<
      std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, double)>();
  return op.call(at::autocast::cached_cast(at::kFloat, boxes, device),
                 at::autocast::cached_cast(at::kFloat, scores, device), iou_threshold);
}

template <c10::DispatchKey key, c10::DeviceType device>
at::Tensor batched_nms_autocast(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                                double iou_threshold, std::optional<double> score_threshold,
                                std::optional<int64_t> max_per_group) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(key);
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("fastpapers::batched_nms", "").typed<at::Tensor(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, double, std::optional<double>,
      std::optional<int64_t>)>();
  // idxs are integer group ids: cached_cast leaves non-floating tensors alone.
  return op.call(at::autocast::cached_cast(at::kFloat, boxes, device),
                 at::autocast::cached_cast(at::kFloat, scores, device), idxs, iou_threshold, score_threshold,
                 max_per_group);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastpapers, m) {
  m.def("nms(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor");
  // Fixed-size variant: keep[N] (kept indices first, then -1) and count[] (0-d, on the device).
  // No device->host copy: usable inside CUDA graphs and with static shapes under torch.compile.
  m.def("nms_padded(Tensor boxes, Tensor scores, float iou_threshold) -> (Tensor, Tensor)");
  m.def(
      "batched_nms(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold, "
      "float? score_threshold=None, int? max_per_group=None) -> Tensor");
}

TORCH_LIBRARY_IMPL(fastpapers, Autocast, m) {
  m.impl("nms", &nms_autocast<c10::DispatchKey::Autocast, c10::DeviceType::CUDA>);
  m.impl("nms_padded", &nms_padded_autocast<c10::DispatchKey::Autocast, c10::DeviceType::CUDA>);
  m.impl("batched_nms", &batched_nms_autocast<c10::DispatchKey::Autocast, c10::DeviceType::CUDA>);
}

TORCH_LIBRARY_IMPL(fastpapers, AutocastCPU, m) {
  m.impl("nms", &nms_autocast<c10::DispatchKey::AutocastCPU, c10::DeviceType::CPU>);
  m.impl("nms_padded", &nms_padded_autocast<c10::DispatchKey::AutocastCPU, c10::DeviceType::CPU>);
  m.impl("batched_nms", &batched_nms_autocast<c10::DispatchKey::AutocastCPU, c10::DeviceType::CPU>);
}

}  // namespace fastpapers
