// CUDA kernels of roi_bilinear and roi_align; the semantics are those of the CPU kernels
// (cpu/roi_bilinear_kernel.cpp, cpu/roi_align_kernel.cpp), which state them in full.
//
// Layout: the input is read channels-last, so the 32 lanes of a warp read 32 consecutive
// channels of one pixel (one coalesced 128-byte line for float); the float forward reads 4
// channels per lane (16-byte loads) when C is a multiple of 4. A block owns one ROI and 32
// (or 128) channels; its 8 warps share the ROI's bins. Bins are staged through a shared-memory tile so
// that the [K, C, oh, ow] output is written (and the gradient read) along contiguous bins.
//
// Backward with respect to the input:
//  - default: scatter with atomicAdd into a channels-last accumulator (opmath dtype, so half
//    and bfloat16 accumulate in float);
//  - torch.use_deterministic_algorithms(True): a gather, one thread per input element, that
//    visits the ROIs and bins in a fixed order, so the result is bitwise reproducible.
// Backward with respect to the boxes (roi_bilinear): one block per ROI reduces over bins and
// channels with a fixed-order tree, so it is always deterministic.
//
// Bad values (possible only when the value checks are off, the default on CUDA: they would
// need a device->host copy). The batch index b selects image trunc(b), as on the CPU; a ROI
// whose trunc(b) is outside [0, N), or whose b is NaN, reads nothing: its output is zero and
// it contributes no gradient. NaN or infinite coordinates give samples that count as outside
// the map (zero), never an index. roi_align's adaptive grid is capped at kMaxAdaptiveGrid
// samples per bin and axis (the CPU kernels' rule, cpu/roi_common.h), so no box makes a
// kernel run for hours. Every pixel a kernel reads or writes lies inside the map.
//
// The half-precision kernels compute sample coordinates and sums in float32 (opmath) from the
// half-valued inputs. torchvision's CUDA roi_align computes both in the input dtype: in float16
// a coordinate near 500 has a spacing of 0.25-0.5 pixel, and ceil(roi_size / output_size) of a
// rounded size can change the adaptive grid, which is where its float16 output departs from
// the float64 result on the same half-valued inputs (tests/test_roi_torchvision.py measures it).
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>
#include <type_traits>

namespace fastpapers {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = 32 * kWarps;
constexpr int kChunk = 64;  // bins per shared-memory tile

// ---------------------------------------------------------------- sampling geometry

// roi_bilinear: pixel coordinate of output index p along the (scaled) box side [a, b].
__device__ __forceinline__ double sample_coord(double a, double b, int p, int pooled) {
  return a + (static_cast<double>(p) + 0.5) * (b - a) / static_cast<double>(pooled) - 0.5;
}

// roi_bilinear: the sample's lower tap and fraction; false when both taps are outside.
__device__ __forceinline__ bool bilinear_taps(double c, int size, int& lo, double& l) {
  if (!(c > -1.0 && c < static_cast<double>(size))) return false;
  const double f = floor(c);
  lo = static_cast<int>(f);
  l = c - f;
  return true;
}

// roi_bilinear: weight that output index p gives to input index `target` (in range).
__device__ __forceinline__ double bilinear_axis_weight(double a, double b, int p, int pooled, int size,
                                                       int target) {
  int lo;
  double l;
  if (!bilinear_taps(sample_coord(a, b, p, pooled), size, lo, l)) return 0.0;
  return (lo == target ? 1.0 - l : 0.0) + (lo + 1 == target ? l : 0.0);
}

// roi_align (torchvision): geometry of one ROI, in the coordinate type C.
template <typename C>
struct AlignGeom {
  C start_h, start_w, bin_h, bin_w;
  int grid_h, grid_w;
  C count;
};

// Mirror of roi::adaptive_grid (cpu/roi_common.h): ceil(x) clamped to [0, kMaxAdaptiveGrid],
// NaN -> 0.
constexpr int kMaxAdaptiveGrid = 1024;

template <typename C>
__device__ __forceinline__ int adaptive_grid(C size_over_pooled) {
  if (!(size_over_pooled > C(0))) return 0;
  if (!(size_over_pooled < static_cast<C>(kMaxAdaptiveGrid))) return kMaxAdaptiveGrid;
  return static_cast<int>(ceil(size_over_pooled));
}

template <typename T, typename C>
__device__ __forceinline__ AlignGeom<C> align_geom(const T* roi, double scale, int oh, int ow, int sampling_ratio,
                                                   bool aligned) {
  AlignGeom<C> g;
  const C off = aligned ? C(0.5) : C(0);
  const C s = static_cast<C>(scale);
  g.start_w = static_cast<C>(roi[1]) * s - off;
  g.start_h = static_cast<C>(roi[2]) * s - off;
  C w = static_cast<C>(roi[3]) * s - off - g.start_w;
  C h = static_cast<C>(roi[4]) * s - off - g.start_h;
  if (!aligned) {
    w = w > C(1) ? w : C(1);
    h = h > C(1) ? h : C(1);
  }
  g.bin_h = h / static_cast<C>(oh);
  g.bin_w = w / static_cast<C>(ow);
  g.grid_h = sampling_ratio > 0 ? sampling_ratio : adaptive_grid(h / static_cast<C>(oh));
  g.grid_w = sampling_ratio > 0 ? sampling_ratio : adaptive_grid(w / static_cast<C>(ow));
  // In int64: a user-given sampling_ratio may be large.
  const int64_t cnt = static_cast<int64_t>(g.grid_h) * g.grid_w;
  g.count = static_cast<C>(cnt > 1 ? cnt : 1);
  return g;
}

template <typename C>
__device__ __forceinline__ C align_coord(C start, C bin, int p, int i, int grid) {
  return start + static_cast<C>(p) * bin + static_cast<C>(i + .5f) * bin / static_cast<C>(grid);
}

// roi_align: taps of one sample along an axis; false when the sample counts as zero.
template <typename C>
__device__ __forceinline__ bool align_taps(C v, int size, int& lo, int& hi, C& wlo, C& whi) {
  if (!(v >= C(-1) && v <= static_cast<C>(size))) return false;
  if (v <= C(0)) v = C(0);
  lo = static_cast<int>(v);
  if (lo >= size - 1) {
    hi = lo = size - 1;
    v = static_cast<C>(lo);
  } else {
    hi = lo + 1;
  }
  whi = v - static_cast<C>(lo);
  wlo = C(1) - whi;
  return true;
}

// roi_align: total weight that bin p's samples give to input index `target`.
template <typename C>
__device__ __forceinline__ C align_axis_weight(C start, C bin, int p, int grid, int size, int target) {
  C w = C(0);
  for (int i = 0; i < grid; ++i) {
    int lo, hi;
    C wl, wh;
    if (!align_taps(align_coord(start, bin, p, i, grid), size, lo, hi, wl, wh)) continue;
    if (lo == target) w += wl;
    if (hi == target) w += wh;
  }
  return w;
}

// Can any sample of an axis spanning [start, start + len] touch index `target`? (A cheap,
// conservative test: samples clamp into [0, size - 1] and read one index past their floor.)
template <typename C>
__device__ __forceinline__ bool may_touch(C start, C len, int size, int target) {
  const C a = len < C(0) ? start + len : start;
  const C b = len < C(0) ? start : start + len;
  const double lo = floor(static_cast<double>(a)) - 2.0;
  const double hi = floor(static_cast<double>(b)) + 2.0;
  const double t = static_cast<double>(target);
  return (t >= lo || target == 0) && (t <= hi || target == size - 1);
}

// Image of a ROI: trunc(b) when it is in [0, N) (i.e. -1 < b < N); false otherwise (and for NaN).
template <typename T>
__device__ __forceinline__ bool roi_image(const T* roi, int N, int& n) {
  const double b = static_cast<double>(roi[0]);
  if (!(b > -1.0 && b < static_cast<double>(N))) return false;
  n = static_cast<int>(b);
  return true;
}

// ---------------------------------------------------------------- forward

// kVec consecutive channels of one pixel as opmath values; kVec == 4 is one 16-byte load
// (float only; the launcher checks alignment and C % 4 == 0).
template <typename T, int kVec>
__device__ __forceinline__ void load_pixel(const T* p, at::opmath_type<T> (&v)[kVec]) {
  if constexpr (kVec == 4 && std::is_same_v<T, float>) {
    const float4 q = __ldg(reinterpret_cast<const float4*>(p));
    v[0] = q.x;
    v[1] = q.y;
    v[2] = q.z;
    v[3] = q.w;
  } else {
#pragma unroll
    for (int j = 0; j < kVec; ++j) v[j] = static_cast<at::opmath_type<T>>(p[j]);
  }
}

// A block owns one ROI and 32 * kVec channels (kVec per lane); the geometry of each sample is
// computed once per warp for all of them.
template <typename T, bool kAlign, int kVec>
__global__ void __launch_bounds__(kThreads) roi_forward_kernel(const T* __restrict__ x, const T* __restrict__ rois,
                                                               T* __restrict__ out, int N, int C, int H, int W,
                                                               int oh, int ow, double scale, int sampling_ratio,
                                                               bool aligned) {
  using acc_t = at::opmath_type<T>;
  constexpr int kCh = 32 * kVec;  // channels per block
  // tile[bin][j * 32 + lane] holds channel c0 + lane * kVec + j: conflict-free writes.
  __shared__ acc_t tile[kChunk][kCh + 1];
  const int k = blockIdx.x;
  const int c0 = blockIdx.y * kCh;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int c = c0 + lane * kVec;
  const T* roi = rois + 5 * static_cast<int64_t>(k);
  int n = 0;
  const bool valid = roi_image(roi, N, n) && c < C;
  const T* img = x + static_cast<int64_t>(n) * H * W * C + c;
  auto pix = [&](int yy, int xx, acc_t (&v)[kVec]) { load_pixel<T, kVec>(img + (static_cast<int64_t>(yy) * W + xx) * C, v); };
  const int bins = oh * ow;
  // The ROI's geometry, once per thread rather than once per bin.
  AlignGeom<acc_t> g{};
  if constexpr (kAlign) g = align_geom<T, acc_t>(roi, scale, oh, ow, sampling_ratio, aligned);
  for (int b0 = 0; b0 < bins; b0 += kChunk) {
    const int nb = min(kChunk, bins - b0);
    for (int bb = warp; bb < nb; bb += kWarps) {
      const int ph = (b0 + bb) / ow, pw = (b0 + bb) % ow;
      acc_t v[kVec];
#pragma unroll
      for (int j = 0; j < kVec; ++j) v[j] = acc_t(0);
      if (valid) {
        if constexpr (kAlign) {
          for (int iy = 0; iy < g.grid_h; ++iy) {
            int y0, y1;
            acc_t wy0, wy1;
            if (!align_taps(align_coord(g.start_h, g.bin_h, ph, iy, g.grid_h), H, y0, y1, wy0, wy1)) continue;
            for (int ix = 0; ix < g.grid_w; ++ix) {
              int x0, x1;
              acc_t wx0, wx1;
              if (!align_taps(align_coord(g.start_w, g.bin_w, pw, ix, g.grid_w), W, x0, x1, wx0, wx1)) continue;
              acc_t p00[kVec], p01[kVec], p10[kVec], p11[kVec];
              pix(y0, x0, p00);
              pix(y0, x1, p01);
              pix(y1, x0, p10);
              pix(y1, x1, p11);
#pragma unroll
              for (int j = 0; j < kVec; ++j)
                v[j] += wy0 * wx0 * p00[j] + wy0 * wx1 * p01[j] + wy1 * wx0 * p10[j] + wy1 * wx1 * p11[j];
            }
          }
#pragma unroll
          for (int j = 0; j < kVec; ++j) v[j] /= g.count;
        } else {
          int y0, x0;
          double ly, lx;
          const double sy = static_cast<double>(roi[2]) * scale, ey = static_cast<double>(roi[4]) * scale;
          const double sx = static_cast<double>(roi[1]) * scale, ex = static_cast<double>(roi[3]) * scale;
          if (bilinear_taps(sample_coord(sy, ey, ph, oh), H, y0, ly) &&
              bilinear_taps(sample_coord(sx, ex, pw, ow), W, x0, lx)) {
            const bool r0 = y0 >= 0, r1 = y0 + 1 < H, q0 = x0 >= 0, q1 = x0 + 1 < W;
            const acc_t hy = static_cast<acc_t>(1.0 - ly), vy = static_cast<acc_t>(ly);
            const acc_t hx = static_cast<acc_t>(1.0 - lx), vx = static_cast<acc_t>(lx);
            acc_t p[kVec];
            if (r0 && q0) {
              pix(y0, x0, p);
              for (int j = 0; j < kVec; ++j) v[j] += hy * hx * p[j];
            }
            if (r0 && q1) {
              pix(y0, x0 + 1, p);
              for (int j = 0; j < kVec; ++j) v[j] += hy * vx * p[j];
            }
            if (r1 && q0) {
              pix(y0 + 1, x0, p);
              for (int j = 0; j < kVec; ++j) v[j] += vy * hx * p[j];
            }
            if (r1 && q1) {
              pix(y0 + 1, x0 + 1, p);
              for (int j = 0; j < kVec; ++j) v[j] += vy * vx * p[j];
            }
          }
        }
      }
#pragma unroll
      for (int j = 0; j < kVec; ++j) tile[bb][j * 32 + lane] = v[j];
    }
    __syncthreads();
    for (int i = threadIdx.x; i < kCh * nb; i += kThreads) {
      const int o = i / nb, bb = i % nb;  // channel c0 + o = c0 + (o / kVec) * kVec + o % kVec
      if (c0 + o < C)
        out[(static_cast<int64_t>(k) * C + c0 + o) * bins + b0 + bb] =
            static_cast<T>(tile[bb][(o % kVec) * 32 + o / kVec]);
    }
    __syncthreads();
  }
}

// ---------------------------------------------------------------- backward: input, atomics

template <typename T, bool kAlign>
__global__ void __launch_bounds__(kThreads)
    roi_backward_scatter_kernel(const T* __restrict__ grad, int64_t gsK, int64_t gsC, int64_t gsH, int64_t gsW,
                                const T* __restrict__ rois, at::opmath_type<T>* __restrict__ acc, int N, int C, int H,
                                int W, int oh, int ow, double scale, int sampling_ratio, bool aligned) {
  using acc_t = at::opmath_type<T>;
  __shared__ acc_t tile[kChunk][33];
  const int k = blockIdx.x;
  const int c0 = blockIdx.y * 32;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int c = c0 + lane;
  const T* roi = rois + 5 * static_cast<int64_t>(k);
  int n = 0;
  const bool valid = roi_image(roi, N, n) && c < C;
  acc_t* dst = acc + static_cast<int64_t>(n) * H * W * C + c;
  auto add = [&](int yy, int xx, acc_t v) { atomicAdd(dst + (static_cast<int64_t>(yy) * W + xx) * C, v); };
  const int bins = oh * ow;
  AlignGeom<acc_t> geo{};
  if constexpr (kAlign) geo = align_geom<T, acc_t>(roi, scale, oh, ow, sampling_ratio, aligned);
  for (int b0 = 0; b0 < bins; b0 += kChunk) {
    const int nb = min(kChunk, bins - b0);
    for (int i = threadIdx.x; i < 32 * nb; i += kThreads) {
      const int cc = i / nb, bb = i % nb;
      // grad read through its strides: an expanded or sliced gradient (e.g. of out.sum())
      // needs no contiguous copy.
      const int b = b0 + bb;
      tile[bb][cc] = c0 + cc < C ? static_cast<acc_t>(grad[k * gsK + (c0 + cc) * gsC + (b / ow) * gsH + (b % ow) * gsW])
                                 : acc_t(0);
    }
    __syncthreads();
    for (int bb = warp; valid && bb < nb; bb += kWarps) {
      const int ph = (b0 + bb) / ow, pw = (b0 + bb) % ow;
      const acc_t g = tile[bb][lane];
      if constexpr (kAlign) {
        const acc_t gs = g / geo.count;
        for (int iy = 0; iy < geo.grid_h; ++iy) {
          int y0, y1;
          acc_t wy0, wy1;
          if (!align_taps(align_coord(geo.start_h, geo.bin_h, ph, iy, geo.grid_h), H, y0, y1, wy0, wy1)) continue;
          for (int ix = 0; ix < geo.grid_w; ++ix) {
            int x0, x1;
            acc_t wx0, wx1;
            if (!align_taps(align_coord(geo.start_w, geo.bin_w, pw, ix, geo.grid_w), W, x0, x1, wx0, wx1)) continue;
            add(y0, x0, gs * wy0 * wx0);
            add(y0, x1, gs * wy0 * wx1);
            add(y1, x0, gs * wy1 * wx0);
            add(y1, x1, gs * wy1 * wx1);
          }
        }
      } else {
        int y0, x0;
        double ly, lx;
        const double sy = static_cast<double>(roi[2]) * scale, ey = static_cast<double>(roi[4]) * scale;
        const double sx = static_cast<double>(roi[1]) * scale, ex = static_cast<double>(roi[3]) * scale;
        if (bilinear_taps(sample_coord(sy, ey, ph, oh), H, y0, ly) &&
            bilinear_taps(sample_coord(sx, ex, pw, ow), W, x0, lx)) {
          const bool r0 = y0 >= 0, r1 = y0 + 1 < H, q0 = x0 >= 0, q1 = x0 + 1 < W;
          const acc_t hy = static_cast<acc_t>(1.0 - ly), vy = static_cast<acc_t>(ly);
          const acc_t hx = static_cast<acc_t>(1.0 - lx), vx = static_cast<acc_t>(lx);
          if (r0 && q0) add(y0, x0, g * hy * hx);
          if (r0 && q1) add(y0, x0 + 1, g * hy * vx);
          if (r1 && q0) add(y0 + 1, x0, g * vy * hx);
          if (r1 && q1) add(y0 + 1, x0 + 1, g * vy * vx);
        }
      }
    }
    __syncthreads();
  }
}

// ---------------------------------------------------------------- backward: input, deterministic

// One thread per element (n, y, x, c) of a channels-last gradient; gT is the output gradient
// as [K, oh, ow, C]. ROIs and bins are visited in index order.
template <typename T, bool kAlign>
__global__ void __launch_bounds__(kThreads)
    roi_backward_gather_kernel(const T* __restrict__ gT, const T* __restrict__ rois, T* __restrict__ out, int N,
                               int C, int H, int W, int K, int oh, int ow, double scale, int sampling_ratio,
                               bool aligned) {
  using acc_t = at::opmath_type<T>;
  const int64_t total = static_cast<int64_t>(N) * H * W * C;
  const int bins = oh * ow;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int c = static_cast<int>(idx % C);
    int64_t t = idx / C;
    const int xx = static_cast<int>(t % W);
    t /= W;
    const int yy = static_cast<int>(t % H);
    const int n = static_cast<int>(t / H);
    acc_t sum = acc_t(0);
    for (int k = 0; k < K; ++k) {
      const T* roi = rois + 5 * static_cast<int64_t>(k);
      int b;
      if (!roi_image(roi, N, b) || b != n) continue;
      const T* g = gT + static_cast<int64_t>(k) * bins * C + c;
      if constexpr (kAlign) {
        const AlignGeom<acc_t> geo = align_geom<T, acc_t>(roi, scale, oh, ow, sampling_ratio, aligned);
        if (!may_touch(geo.start_h, geo.bin_h * static_cast<acc_t>(oh), H, yy) ||
            !may_touch(geo.start_w, geo.bin_w * static_cast<acc_t>(ow), W, xx))
          continue;
        for (int ph = 0; ph < oh; ++ph) {
          const acc_t wy = align_axis_weight(geo.start_h, geo.bin_h, ph, geo.grid_h, H, yy);
          if (wy == acc_t(0)) continue;
          for (int pw = 0; pw < ow; ++pw) {
            const acc_t wx = align_axis_weight(geo.start_w, geo.bin_w, pw, geo.grid_w, W, xx);
            if (wx == acc_t(0)) continue;
            sum += static_cast<acc_t>(g[static_cast<int64_t>(ph * ow + pw) * C]) / geo.count * wy * wx;
          }
        }
      } else {
        const double sy = static_cast<double>(roi[2]) * scale, ey = static_cast<double>(roi[4]) * scale;
        const double sx = static_cast<double>(roi[1]) * scale, ex = static_cast<double>(roi[3]) * scale;
        if (!may_touch(sy - 0.5, ey - sy, H, yy) || !may_touch(sx - 0.5, ex - sx, W, xx)) continue;
        for (int ph = 0; ph < oh; ++ph) {
          const double wy = bilinear_axis_weight(sy, ey, ph, oh, H, yy);
          if (wy == 0.0) continue;
          for (int pw = 0; pw < ow; ++pw) {
            const double wx = bilinear_axis_weight(sx, ex, pw, ow, W, xx);
            if (wx == 0.0) continue;
            sum += static_cast<acc_t>(g[static_cast<int64_t>(ph * ow + pw) * C]) * static_cast<acc_t>(wy * wx);
          }
        }
      }
    }
    out[idx] = static_cast<T>(sum);
  }
}

// ---------------------------------------------------------------- backward: boxes

template <typename T>
__global__ void __launch_bounds__(kThreads)
    roi_bilinear_backward_rois_kernel(const T* __restrict__ gT, const T* __restrict__ x, const T* __restrict__ rois,
                                      T* __restrict__ out, int N, int C, int H, int W, int oh, int ow, double scale) {
  using acc_t = at::opmath_type<T>;
  __shared__ acc_t red[4][kThreads];
  const int k = blockIdx.x;
  const T* roi = rois + 5 * static_cast<int64_t>(k);
  int n = 0;
  const bool valid = roi_image(roi, N, n);
  const T* img = x + static_cast<int64_t>(n) * H * W * C;
  const int bins = oh * ow;
  const double sy = static_cast<double>(roi[2]) * scale, ey = static_cast<double>(roi[4]) * scale;
  const double sx = static_cast<double>(roi[1]) * scale, ex = static_cast<double>(roi[3]) * scale;
  acc_t s[4] = {acc_t(0), acc_t(0), acc_t(0), acc_t(0)};  // d/dx1, d/dy1, d/dx2, d/dy2
  const int64_t work = valid ? static_cast<int64_t>(bins) * C : 0;
  for (int64_t i = threadIdx.x; i < work; i += kThreads) {
    const int b = static_cast<int>(i / C), c = static_cast<int>(i % C);
    const int ph = b / ow, pw = b % ow;
    int y0, x0;
    double ly, lx;
    if (!bilinear_taps(sample_coord(sy, ey, ph, oh), H, y0, ly) || !bilinear_taps(sample_coord(sx, ex, pw, ow), W, x0, lx))
      continue;
    auto tap = [&](int yy, int xx) -> acc_t {
      if (yy < 0 || yy >= H || xx < 0 || xx >= W) return acc_t(0);
      return static_cast<acc_t>(img[(static_cast<int64_t>(yy) * W + xx) * C + c]);
    };
    const acc_t a = tap(y0, x0), bq = tap(y0, x0 + 1), cq = tap(y0 + 1, x0), d = tap(y0 + 1, x0 + 1);
    const acc_t g = static_cast<acc_t>(gT[(static_cast<int64_t>(k) * bins + b) * C + c]);
    const acc_t dx = g * (static_cast<acc_t>(1.0 - ly) * (bq - a) + static_cast<acc_t>(ly) * (d - cq));
    const acc_t dy = g * (static_cast<acc_t>(1.0 - lx) * (cq - a) + static_cast<acc_t>(lx) * (d - bq));
    const acc_t tx = static_cast<acc_t>((pw + 0.5) / ow), ty = static_cast<acc_t>((ph + 0.5) / oh);
    s[0] += dx * (acc_t(1) - tx);
    s[1] += dy * (acc_t(1) - ty);
    s[2] += dx * tx;
    s[3] += dy * ty;
  }
  for (int j = 0; j < 4; ++j) red[j][threadIdx.x] = s[j];
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride)
      for (int j = 0; j < 4; ++j) red[j][threadIdx.x] += red[j][threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    T* o = out + 5 * static_cast<int64_t>(k);
    o[0] = static_cast<T>(0);
    for (int j = 0; j < 4; ++j) o[1 + j] = static_cast<T>(red[j][0] * static_cast<acc_t>(scale));
  }
}

// ---------------------------------------------------------------- host side

void check_pair(const at::Tensor& a, const at::Tensor& rois, const char* op) {
  TORCH_CHECK(a.is_cuda() && rois.is_cuda(), op, ": expected CUDA tensors");
  TORCH_CHECK(a.device() == rois.device(), op, ": tensors must be on the same device");
  TORCH_CHECK(a.dim() == 4, op, ": expected a 4-d tensor, got ", a.sizes());
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5, op, ": rois must be [K, 5], got ", rois.sizes());
  TORCH_CHECK(a.scalar_type() == rois.scalar_type(), op, ": tensors and rois must share a dtype");
}

// The kernels index pixels in int64 but take sizes, bins and ROI numbers as int and launch
// one block row per ROI and one block column per 32 channels: say so instead of wrapping.
void check_sizes(int64_t N, int64_t C, int64_t H, int64_t W, int64_t K, int64_t oh, int64_t ow, const char* op) {
  constexpr int64_t kInt = std::numeric_limits<int>::max();
  TORCH_CHECK_VALUE(N <= kInt && H <= kInt && W <= kInt && K <= kInt, op,
                    ": sizes must fit in int32, got input [", N, ", ", C, ", ", H, ", ", W, "] and ", K, " rois");
  TORCH_CHECK_VALUE((C + 31) / 32 <= 65535, op, ": at most ", 65535 * 32, " channels on CUDA, got ", C);
  TORCH_CHECK_VALUE(oh * ow <= kInt - kChunk, op, ": output_size (", oh, ", ", ow, ") has more than 2^31 bins");
}

int blocks_for(int64_t total) {
  const int64_t b = (total + kThreads - 1) / kThreads;
  return static_cast<int>(std::min<int64_t>(std::max<int64_t>(b, 1), 65535LL * 16));
}

// float with whole 16-byte pixels: 4 channels per lane (one vector load per tap); otherwise
// one. (Only float instantiates the 4-channel kernel: its tile would not fit for double.)
template <typename T, bool kAlign>
void launch_forward(const at::Tensor& x, const at::Tensor& r, at::Tensor& out, int64_t N, int64_t C, int64_t H,
                    int64_t W, int64_t K, int64_t oh, int64_t ow, double scale, int64_t sampling_ratio, bool aligned,
                    cudaStream_t stream) {
  if constexpr (std::is_same_v<T, float>) {
    if (C % 4 == 0 && C >= 64 && reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0) {
      const dim3 grid(static_cast<unsigned>(K), static_cast<unsigned>((C + 127) / 128));
      roi_forward_kernel<T, kAlign, 4><<<grid, kThreads, 0, stream>>>(x.data_ptr<T>(), r.data_ptr<T>(),
                                                                       out.data_ptr<T>(), N, C, H, W, oh, ow, scale,
                                                                       sampling_ratio, aligned);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
  }
  const dim3 grid(static_cast<unsigned>(K), static_cast<unsigned>((C + 31) / 32));
  roi_forward_kernel<T, kAlign, 1><<<grid, kThreads, 0, stream>>>(x.data_ptr<T>(), r.data_ptr<T>(),
                                                                   out.data_ptr<T>(), N, C, H, W, oh, ow, scale,
                                                                   sampling_ratio, aligned);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <bool kAlign>
at::Tensor forward_cuda(const at::Tensor& input, const at::Tensor& rois, double scale, int64_t oh, int64_t ow,
                        int64_t sampling_ratio, bool aligned, const char* op) {
  check_pair(input, rois, op);
  TORCH_CHECK(oh > 0 && ow > 0, op, ": output size must be positive");
  c10::cuda::CUDAGuard guard(input.device());
  const int64_t N = input.size(0), C = input.size(1), H = input.size(2), W = input.size(3), K = rois.size(0);
  check_sizes(N, C, H, W, K, oh, ow, op);
  at::Tensor out = at::empty({K, C, oh, ow}, input.options());
  if (out.numel() == 0) return out;
  if (H == 0 || W == 0) return out.zero_();
  at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor r = rois.contiguous();
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_forward_cuda", [&] {
    launch_forward<scalar_t, kAlign>(x, r, out, N, C, H, W, K, oh, ow, scale, sampling_ratio, aligned, stream);
  });
  return out;
}

template <bool kAlign>
at::Tensor backward_input_cuda(const at::Tensor& grad, const at::Tensor& rois, double scale, int64_t N, int64_t C,
                               int64_t H, int64_t W, int64_t sampling_ratio, bool aligned, const char* op) {
  check_pair(grad, rois, op);
  TORCH_CHECK(grad.size(0) == rois.size(0) && grad.size(1) == C, op, ": grad must be [K, C, oh, ow], got ",
              grad.sizes());
  c10::cuda::CUDAGuard guard(grad.device());
  const int64_t K = rois.size(0), oh = grad.size(2), ow = grad.size(3);
  check_sizes(N, C, H, W, K, oh, ow, op);
  // The gradient is returned channels-last (the layout the kernels accumulate in), which
  // saves a transposing copy; the fake kernels in fastpapers/ops/roi.py say the same.
  const auto cl = grad.options().memory_format(at::MemoryFormat::ChannelsLast);
  if (N * C * H * W == 0) return at::empty({N, C, H, W}, cl);
  if (K == 0 || grad.numel() == 0) return at::zeros({N, C, H, W}, cl);
  at::Tensor r = rois.contiguous();
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  if (at::globalContext().deterministicAlgorithms()) {
    at::Tensor gT = grad.permute({0, 2, 3, 1}).contiguous();
    at::Tensor buf = at::empty({N, H, W, C}, grad.options());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "roi_backward_input_cuda", [&] {
      roi_backward_gather_kernel<scalar_t, kAlign><<<blocks_for(buf.numel()), kThreads, 0, stream>>>(
          gT.data_ptr<scalar_t>(), r.data_ptr<scalar_t>(), buf.data_ptr<scalar_t>(), N, C, H, W, K, oh, ow, scale,
          sampling_ratio, aligned);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return buf.permute({0, 3, 1, 2});
  }
  const at::Tensor& g = grad;
  at::Tensor buf = at::zeros({N, H, W, C}, grad.options().dtype(at::toOpMathType(grad.scalar_type())));
  const dim3 grid(static_cast<unsigned>(K), static_cast<unsigned>((C + 31) / 32));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "roi_backward_input_cuda", [&] {
    roi_backward_scatter_kernel<scalar_t, kAlign><<<grid, kThreads, 0, stream>>>(
        g.data_ptr<scalar_t>(), g.stride(0), g.stride(1), g.stride(2), g.stride(3), r.data_ptr<scalar_t>(),
        buf.data_ptr<at::opmath_type<scalar_t>>(), N, C, H, W, oh, ow, scale, sampling_ratio, aligned);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  // .to keeps the channels-last strides; for float32/float64 it is no copy at all.
  return buf.permute({0, 3, 1, 2}).to(grad.scalar_type());
}

at::Tensor roi_bilinear_cuda(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                             int64_t pooled_height, int64_t pooled_width) {
  return forward_cuda<false>(input, rois, spatial_scale, pooled_height, pooled_width, 0, false, "roi_bilinear");
}

at::Tensor roi_bilinear_backward_input_cuda(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                            int64_t N, int64_t C, int64_t H, int64_t W) {
  return backward_input_cuda<false>(grad, rois, spatial_scale, N, C, H, W, 0, false, "roi_bilinear_backward_input");
}

at::Tensor roi_bilinear_backward_rois_cuda(const at::Tensor& grad, const at::Tensor& input, const at::Tensor& rois,
                                           double spatial_scale) {
  check_pair(input, rois, "roi_bilinear_backward_rois");
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == rois.size(0) && grad.size(1) == input.size(1),
              "roi_bilinear_backward_rois: grad must be [K, C, oh, ow], got ", grad.sizes());
  c10::cuda::CUDAGuard guard(input.device());
  const int64_t N = input.size(0), C = input.size(1), H = input.size(2), W = input.size(3), K = rois.size(0);
  check_sizes(N, C, H, W, K, grad.size(2), grad.size(3), "roi_bilinear_backward_rois");
  at::Tensor gr = at::zeros({K, 5}, rois.options());
  if (K == 0 || input.numel() == 0 || grad.numel() == 0) return gr;
  at::Tensor gT = grad.permute({0, 2, 3, 1}).contiguous();
  at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor r = rois.contiguous();
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_bilinear_backward_rois", [&] {
    roi_bilinear_backward_rois_kernel<scalar_t><<<static_cast<unsigned>(K), kThreads, 0, stream>>>(
        gT.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), r.data_ptr<scalar_t>(), gr.data_ptr<scalar_t>(), N, C, H,
        W, grad.size(2), grad.size(3), spatial_scale);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return gr;
}

at::Tensor roi_align_cuda(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                          int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio, bool aligned) {
  return forward_cuda<true>(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned,
                            "roi_align");
}

at::Tensor roi_align_backward_cuda(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                   int64_t pooled_height, int64_t pooled_width, int64_t N, int64_t C, int64_t H,
                                   int64_t W, int64_t sampling_ratio, bool aligned) {
  TORCH_CHECK(grad.dim() == 4 && grad.size(2) == pooled_height && grad.size(3) == pooled_width,
              "roi_align_backward: grad must be [K, C, oh, ow], got ", grad.sizes());
  return backward_input_cuda<true>(grad, rois, spatial_scale, N, C, H, W, sampling_ratio, aligned,
                                   "roi_align_backward");
}

}  // namespace

TORCH_LIBRARY_IMPL(fastpapers, CUDA, m) {
  m.impl("roi_bilinear", &roi_bilinear_cuda);
  m.impl("roi_bilinear_backward_input", &roi_bilinear_backward_input_cuda);
  m.impl("roi_bilinear_backward_rois", &roi_bilinear_backward_rois_cuda);
  m.impl("roi_align", &roi_align_cuda);
  m.impl("roi_align_backward", &roi_align_backward_cuda);
}

}  // namespace fastpapers
