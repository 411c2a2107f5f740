// CPU kernels of roi_align with torchvision's semantics (torchvision.ops.roi_align).
//
// Per ROI: start = x1 * scale - (aligned ? 0.5 : 0); size = x2 * scale - offset - start,
// clamped to >= 1 unless aligned; bin = size / pooled; grid = sampling_ratio if > 0 else
// ceil(size / pooled) (per ROI and per axis); samples at start + p * bin + (i + 0.5) * bin /
// grid, averaged over max(grid_h * grid_w, 1). A sample outside [-1, H] x [-1, W] counts as
// zero; otherwise negative coordinates clamp to 0 and a sample at or past the last pixel
// reads the last pixel. Coordinates are computed in the input's dtype with torchvision's
// operation order, so samples land where torchvision's do. float16 and bfloat16 inputs are
// computed in float32 (coordinates and sums) and the result is rounded once to the input
// dtype. The batch index is truncated toward zero (torchvision's int conversion).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>

#include "roi_common.h"

namespace fastpapers {
namespace {

using roi::Axis;

template <typename T>
void align_axis(Axis<T>& ax, T start, T bin, int64_t pooled, int64_t grid, int64_t size) {
  ax.reset();
  for (int64_t p = 0; p < pooled; ++p) {
    for (int64_t i = 0; i < grid; ++i) {
      T v = start + static_cast<T>(p) * bin + static_cast<T>(i + .5f) * bin / static_cast<T>(grid);
      // Written as !(inside) so NaN coordinates count as outside, as in torchvision.
      if (!(v >= -1.0 && v <= static_cast<T>(size))) continue;
      if (v <= 0) v = 0;
      int64_t lo = static_cast<int64_t>(v), hi;
      if (lo >= size - 1) {
        hi = lo = size - 1;
        v = static_cast<T>(lo);
      } else {
        hi = lo + 1;
      }
      const T l = v - static_cast<T>(lo);
      const T h = static_cast<T>(1. - l);
      ax.add(lo, h);
      ax.add(hi, l);
    }
    ax.close();
  }
}

template <typename T>
struct AlignAxes {
  double scale;
  int64_t oh, ow, H, W, sampling_ratio;
  bool aligned;
  T operator()(const T* roi, Axis<T>& ya, Axis<T>& xa) const {
    const T off = aligned ? T(0.5) : T(0);
    const T s = static_cast<T>(scale);
    const T x1 = roi[1] * s - off, y1 = roi[2] * s - off;
    T w = roi[3] * s - off - x1, h = roi[4] * s - off - y1;
    if (!aligned) {
      w = std::max(w, T(1));
      h = std::max(h, T(1));
    }
    const T bin_h = h / static_cast<T>(oh), bin_w = w / static_cast<T>(ow);
    const int64_t gh = sampling_ratio > 0 ? sampling_ratio : roi::adaptive_grid(h / static_cast<T>(oh));
    const int64_t gw = sampling_ratio > 0 ? sampling_ratio : roi::adaptive_grid(w / static_cast<T>(ow));
    align_axis(ya, y1, bin_h, oh, gh, H);
    align_axis(xa, x1, bin_w, ow, gw, W);
    return T(1) / static_cast<T>(std::max<int64_t>(gh * gw, 1));
  }
};

bool is_half(const at::Tensor& t) {
  return t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16;
}

at::Tensor roi_align_cpu(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                         int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio, bool aligned) {
  TORCH_CHECK(input.device().is_cpu() && rois.device().is_cpu(), "roi_align: expected CPU tensors");
  TORCH_CHECK_VALUE(input.dim() == 4, "roi_align: input must be [N, C, H, W], got ", input.sizes());
  TORCH_CHECK_VALUE(rois.dim() == 2 && rois.size(1) == 5, "roi_align: rois must be [K, 5], got ", rois.sizes());
  TORCH_CHECK_TYPE(input.scalar_type() == rois.scalar_type(), "roi_align: input and rois must share a dtype, got ",
                   input.scalar_type(), " and ", rois.scalar_type());
  TORCH_CHECK_VALUE(pooled_height > 0 && pooled_width > 0, "roi_align: output size must be positive");
  if (is_half(input)) {
    // float32 inside: the float32 result rounded once to the input dtype.
    return roi_align_cpu(input.to(at::kFloat), rois.to(at::kFloat), spatial_scale, pooled_height, pooled_width,
                         sampling_ratio, aligned)
        .to(input.scalar_type());
  }
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "roi_align_cpu", [&] {
    AlignAxes<scalar_t> axes{spatial_scale, pooled_height, pooled_width, input.size(2), input.size(3),
                             sampling_ratio, aligned};
    out = roi::forward<scalar_t>(input, rois, pooled_height, pooled_width, false, "roi_align", axes);
  });
  return out;
}

at::Tensor roi_align_backward_cpu(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                  int64_t pooled_height, int64_t pooled_width, int64_t N, int64_t C, int64_t H,
                                  int64_t W, int64_t sampling_ratio, bool aligned) {
  TORCH_CHECK(grad.device().is_cpu() && rois.device().is_cpu(), "roi_align_backward: expected CPU tensors");
  TORCH_CHECK_VALUE(grad.dim() == 4 && grad.size(0) == rois.size(0) && grad.size(1) == C &&
                        grad.size(2) == pooled_height && grad.size(3) == pooled_width,
                    "roi_align_backward: grad must be [K, C, oh, ow], got ", grad.sizes());
  TORCH_CHECK_VALUE(rois.dim() == 2 && rois.size(1) == 5, "roi_align_backward: rois must be [K, 5]");
  TORCH_CHECK_TYPE(grad.scalar_type() == rois.scalar_type(), "roi_align_backward: grad and rois must share a dtype");
  if (is_half(grad)) {
    return roi_align_backward_cpu(grad.to(at::kFloat), rois.to(at::kFloat), spatial_scale, pooled_height,
                                  pooled_width, N, C, H, W, sampling_ratio, aligned)
        .to(grad.scalar_type());
  }
  at::Tensor gi;
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "roi_align_backward_cpu", [&] {
    AlignAxes<scalar_t> axes{spatial_scale, pooled_height, pooled_width, H, W, sampling_ratio, aligned};
    gi = roi::backward_input<scalar_t>(grad, rois, N, C, H, W, false, "roi_align_backward", axes);
  });
  return gi;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastpapers, CPU, m) {
  m.impl("roi_align", &roi_align_cpu);
  m.impl("roi_align_backward", &roi_align_backward_cpu);
}

}  // namespace fastpapers
