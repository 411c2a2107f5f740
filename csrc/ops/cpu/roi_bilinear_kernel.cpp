// CPU kernels of roi_bilinear (DenseCap's box-differentiable ROI sampler).
//
// Output cell (p, q) of ROI (b, x1, y1, x2, y2), scaled by s, is the bilinear sample of the
// map at pixel coordinates x = s*x1 + (q + 0.5) * s*(x2 - x1) / ow - 0.5 (likewise y), with
// zero outside the map: F.grid_sample(align_corners=False, padding_mode='zeros') on
// F.affine_grid of the box's theta. Sample coordinates are computed in double so that float
// inputs are sampled where the exact formula says, not where float rounding moves them.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>

#include "roi_common.h"

namespace fastpapers {
namespace {

using roi::Axis;

// Pixel coordinate of output index p along an axis of the box [a, b] (already scaled).
inline double sample_coord(double a, double b, int64_t p, int64_t pooled) {
  return a + (static_cast<double>(p) + 0.5) * (b - a) / static_cast<double>(pooled) - 0.5;
}

// One sample per output index; its two taps, dropped when they fall outside [0, size).
template <typename T>
void bilinear_axis(Axis<T>& ax, double a, double b, int64_t pooled, int64_t size) {
  ax.reset();
  for (int64_t p = 0; p < pooled; ++p) {
    const double c = sample_coord(a, b, p, pooled);
    // Written as !(inside) so NaN takes this branch instead of reaching the integer cast.
    if (c > -1.0 && c < static_cast<double>(size)) {
      const double f = std::floor(c);
      const int64_t lo = static_cast<int64_t>(f);
      const double l = c - f;
      if (lo >= 0) ax.add(lo, static_cast<T>(1.0 - l));
      if (lo + 1 < size) ax.add(lo + 1, static_cast<T>(l));
    }
    ax.close();
  }
}

template <typename T>
struct BilinearAxes {
  double scale;
  int64_t oh, ow, H, W;
  T operator()(const T* roi, Axis<T>& ya, Axis<T>& xa) const {
    bilinear_axis(ya, roi[2] * scale, roi[4] * scale, oh, H);
    bilinear_axis(xa, roi[1] * scale, roi[3] * scale, ow, W);
    return T(1);
  }
};

void check_inputs(const at::Tensor& input, const at::Tensor& rois, const char* op) {
  TORCH_CHECK(input.device().is_cpu() && rois.device().is_cpu(), op, ": expected CPU tensors");
  TORCH_CHECK_VALUE(input.dim() == 4, op, ": input must be [N, C, H, W], got ", input.sizes());
  TORCH_CHECK_VALUE(rois.dim() == 2 && rois.size(1) == 5, op, ": rois must be [K, 5], got ", rois.sizes());
  TORCH_CHECK_TYPE(input.scalar_type() == rois.scalar_type(), op, ": input and rois must share a dtype");
}

at::Tensor roi_bilinear_cpu(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                            int64_t pooled_height, int64_t pooled_width) {
  check_inputs(input, rois, "roi_bilinear");
  TORCH_CHECK(pooled_height > 0 && pooled_width > 0, "roi_bilinear: output size must be positive");
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "roi_bilinear_cpu", [&] {
    BilinearAxes<scalar_t> axes{spatial_scale, pooled_height, pooled_width, input.size(2), input.size(3)};
    out = roi::forward<scalar_t>(input, rois, pooled_height, pooled_width, true, "roi_bilinear", axes);
  });
  return out;
}

at::Tensor roi_bilinear_backward_input_cpu(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                           int64_t N, int64_t C, int64_t H, int64_t W) {
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == rois.size(0) && grad.size(1) == C,
              "roi_bilinear_backward_input: grad must be [K, C, oh, ow], got ", grad.sizes());
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5, "roi_bilinear_backward_input: rois must be [K, 5]");
  at::Tensor gi;
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "roi_bilinear_backward_input_cpu", [&] {
    BilinearAxes<scalar_t> axes{spatial_scale, grad.size(2), grad.size(3), H, W};
    gi = roi::backward_input<scalar_t>(grad, rois, N, C, H, W, true, "roi_bilinear_backward_input", axes);
  });
  return gi;
}

// sum_i a[i] * b[i], with four vector accumulators (a fixed summation order).
template <typename T>
inline T dot(const T* __restrict__ a, const T* __restrict__ b, int64_t n) {
  using V = typename roi::Vec<T>::type;
  constexpr int64_t L = roi::Vec<T>::kLanes;
  V acc[4] = {V{}, V{}, V{}, V{}};
  int64_t i = 0;
  for (; i + 4 * L <= n; i += 4 * L)
    for (int64_t v = 0; v < 4; ++v) acc[v] += roi::vload(a + i + v * L) * roi::vload(b + i + v * L);
  const V sum = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  T s = 0;
  for (int64_t j = 0; j < L; ++j) s += sum[j];
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// d out[k, c, p, q] / d x-sample = sum over the two rows of wy * (x[row, x0 + 1] - x[row, x0])
// with zero for taps outside the map (the one-sided derivative at integer coordinates, as
// grid_sample's backward takes it), and x-sample = s*x1 + (q + 0.5)/ow * s*(x2 - x1) - 0.5,
// so d/dx1 = s * (1 - (q + 0.5)/ow) and d/dx2 = s * (q + 0.5)/ow. Likewise for y.
template <typename T>
void backward_rois_impl(const at::Tensor& grad, const at::Tensor& input, const at::Tensor& rois, double s,
                        at::Tensor& gr) {
  const int64_t N = input.size(0), C = input.size(1), H = input.size(2), W = input.size(3);
  const int64_t K = rois.size(0), oh = grad.size(2), ow = grad.size(3), bins = oh * ow;
  at::Tensor rc = rois.contiguous();
  at::Tensor gc = grad.contiguous();
  at::Tensor cl = input.contiguous(at::MemoryFormat::ChannelsLast);
  const T* rp = rc.data_ptr<T>();
  const T* gp = gc.data_ptr<T>();
  const T* x = cl.data_ptr<T>();
  T* out = gr.data_ptr<T>();
  roi::check_rois(rp, K, N, true, "roi_bilinear_backward_rois");
  at::parallel_for(0, K, roi::grain(bins * C * 4), [&](int64_t k0, int64_t k1) {
    std::vector<T> gt(bins * C);
    for (int64_t k = k0; k < k1; ++k) {
      const T* roi = rp + 5 * k;
      const T* img = x + roi::batch_index(roi) * H * W * C;
      roi::load_transposed(gp + k * C * bins, C, bins, C, T(1), gt.data());
      const double X1 = roi[1] * s, Y1 = roi[2] * s, X2 = roi[3] * s, Y2 = roi[4] * s;
      double gx1 = 0, gx2 = 0, gy1 = 0, gy2 = 0;
      for (int64_t ph = 0; ph < oh; ++ph) {
        const double cy = sample_coord(Y1, Y2, ph, oh);
        if (!(cy > -1.0 && cy < static_cast<double>(H))) continue;
        const double fy = std::floor(cy), ly = cy - fy;
        const int64_t y0 = static_cast<int64_t>(fy);
        const double ty = (static_cast<double>(ph) + 0.5) / static_cast<double>(oh);
        for (int64_t pw = 0; pw < ow; ++pw) {
          const double cx = sample_coord(X1, X2, pw, ow);
          if (!(cx > -1.0 && cx < static_cast<double>(W))) continue;
          const double fx = std::floor(cx), lx = cx - fx;
          const int64_t x0 = static_cast<int64_t>(fx);
          const T* g = gt.data() + (ph * ow + pw) * C;
          // g . x at the four taps, zero for taps outside the map.
          auto tap = [&](int64_t yy, int64_t xx) -> double {
            if (yy < 0 || yy >= H || xx < 0 || xx >= W) return 0.0;
            return static_cast<double>(dot(g, img + (yy * W + xx) * C, C));
          };
          const double a = tap(y0, x0), b = tap(y0, x0 + 1), c = tap(y0 + 1, x0), d = tap(y0 + 1, x0 + 1);
          const double dx = (1.0 - ly) * (b - a) + ly * (d - c);
          const double dy = (1.0 - lx) * (c - a) + lx * (d - b);
          const double tx = (static_cast<double>(pw) + 0.5) / static_cast<double>(ow);
          gx1 += dx * (1.0 - tx);
          gx2 += dx * tx;
          gy1 += dy * (1.0 - ty);
          gy2 += dy * ty;
        }
      }
      T* o = out + 5 * k;
      o[0] = T(0);  // the batch index is not differentiable
      o[1] = static_cast<T>(gx1 * s);
      o[2] = static_cast<T>(gy1 * s);
      o[3] = static_cast<T>(gx2 * s);
      o[4] = static_cast<T>(gy2 * s);
    }
  });
}

at::Tensor roi_bilinear_backward_rois_cpu(const at::Tensor& grad, const at::Tensor& input, const at::Tensor& rois,
                                          double spatial_scale) {
  check_inputs(input, rois, "roi_bilinear_backward_rois");
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == rois.size(0) && grad.size(1) == input.size(1),
              "roi_bilinear_backward_rois: grad must be [K, C, oh, ow], got ", grad.sizes());
  at::Tensor gr = at::zeros({rois.size(0), 5}, rois.options());
  if (rois.size(0) == 0 || input.numel() == 0 || grad.numel() == 0) return gr;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "roi_bilinear_backward_rois_cpu", [&] {
    backward_rois_impl<scalar_t>(grad, input, rois, spatial_scale, gr);
  });
  return gr;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastpapers, CPU, m) {
  m.impl("roi_bilinear", &roi_bilinear_cpu);
  m.impl("roi_bilinear_backward_input", &roi_bilinear_backward_input_cpu);
  m.impl("roi_bilinear_backward_rois", &roi_bilinear_backward_rois_cpu);
}

}  // namespace fastpapers
