// Shared machinery of the CPU ROI kernels (roi_bilinear, roi_align): value checks of the
// rois, the adaptive-grid cap, the separable stencils and the forward/backward drivers.
//
// Both ops sample a tensor-product grid inside each output bin with bilinear weights, and
// both the weights and the "outside the map" rules factor into a row part and a column part.
// So each ROI is described by two small stencils: for every output row ph the list of
// (input row, weight) pairs it reads, and for every output column pw the list of (input
// column, weight) pairs. A bin's value is sum_r sum_c wr * wc * x[r, c, :], where the
// channel vector x[r, c, :] is contiguous in a channels-last copy of the input, so every
// term is one vectorised multiply-add over channels, and weights and indices are computed
// once per ROI rather than once per channel. Samples that share a pixel row or column are
// merged, which for adaptive sampling (many samples per pixel) removes most of the work.
//
// Backward: parallel over (image, block of channels); each task owns its slice of the
// input gradient and visits that image's ROIs in index order, so the result is bitwise
// deterministic and independent of the number of threads, with no atomics.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace fastpapers {
namespace roi {

// 32-byte SIMD vector of T (GCC/Clang vector extension: one AVX register where AVX is on,
// two SSE registers otherwise). Fixed-size blocks of these keep accumulators in registers,
// which the auto-vectoriser does not do for a plain array.
template <typename T>
struct Vec {
  typedef T type __attribute__((vector_size(32)));
  static constexpr int64_t kLanes = 32 / static_cast<int64_t>(sizeof(T));
};

template <typename T>
inline typename Vec<T>::type vload(const T* p) {
  typename Vec<T>::type v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
inline void vstore(T* p, typename Vec<T>::type v) {
  __builtin_memcpy(p, &v, sizeof(v));
}

// One axis of a ROI's separable stencil: for each output index p, the input indices and
// weights in idx/w[start[p] .. start[p+1]).
template <typename T>
struct Axis {
  std::vector<int64_t> start;
  std::vector<int64_t> idx;
  std::vector<T> w;

  void reset() {
    start.assign(1, 0);
    idx.clear();
    w.clear();
  }
  // Samples arrive in increasing coordinate order and each adds (lo, hi) with hi in
  // {lo, lo + 1}, so an index already present in the current bin can only be one of its last
  // two entries: merging stays O(1) and the list stays sorted.
  void add(int64_t i, T v) {
    const int64_t b = start.back();
    const int64_t e = static_cast<int64_t>(idx.size());
    for (int64_t j = e - 1; j >= b && j >= e - 2; --j) {
      if (idx[j] == i) {
        w[j] += v;
        return;
      }
    }
    idx.push_back(i);
    w.push_back(v);
  }
  void close() { start.push_back(static_cast<int64_t>(idx.size())); }
  int64_t begin(int64_t p) const { return start[p]; }
  int64_t end(int64_t p) const { return start[p + 1]; }
};

// Grain for at::parallel_for so that a task range carries at least ~64k multiply-adds: small
// problems (a few ROIs, few channels) run on the calling thread instead of paying for a
// parallel region.
inline int64_t grain(int64_t work_per_task) {
  return std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(work_per_task, 1));
}

// The value checks of the rois, run by the CPU kernels themselves so that every caller (the
// eager wrappers, torch.compile'd graphs, TorchScript, direct torch.ops calls) gets the same
// checks. TORCH_CHECK_VALUE raises ValueError in Python, like the wrappers' OpValueError.
// Every coordinate must be finite; the batch index b selects image trunc(b) (as torchvision's
// int conversion does) and must satisfy 0 <= trunc(b) < N, i.e. -1 < b < N; with
// `integral` it must moreover be a whole number.
template <typename T>
void check_rois(const T* rp, int64_t K, int64_t N, bool integral, const char* op) {
  for (int64_t k = 0; k < K; ++k) {
    const T* roi = rp + 5 * k;
    for (int64_t j = 0; j < 5; ++j)
      TORCH_CHECK_VALUE(std::isfinite(static_cast<double>(roi[j])), op,
                        ": rois must contain only finite values, got rois[", k, ", ", j,
                        "] = ", static_cast<double>(roi[j]));
    const double b = static_cast<double>(roi[0]);
    const bool ok = integral ? (b >= 0 && b < static_cast<double>(N) && b == std::floor(b))
                             : (b > -1 && b < static_cast<double>(N));
    TORCH_CHECK_VALUE(ok, op, ": rois[:, 0] must hold batch indices in [0, ", N, ")",
                      integral ? " (whole numbers)" : " after truncation toward zero", " for an input with batch size ",
                      N, ", got rois[", k, ", 0] = ", b);
  }
}

// Image of a checked ROI (truncation toward zero).
template <typename T>
inline int64_t batch_index(const T* roi) {
  return static_cast<int64_t>(roi[0]);
}

// roi_align's adaptive grid (sampling_ratio <= 0): ceil(roi size / output size) samples per
// bin and axis, as torchvision, but at most kMaxAdaptiveGrid. Without the cap a box 1e12
// pixels wide asks for ~1e11 samples per bin (torchvision then runs for hours); with it the
// work per bin is bounded, and results differ from torchvision only for bins more than
// kMaxAdaptiveGrid feature-map pixels wide. NaN or a size <= 0 gives 0 samples (the bin is
// zero), as torchvision's ceil of a non-positive size does. The CUDA kernels use the same
// rule (cuda/roi_kernel.cu).
constexpr int64_t kMaxAdaptiveGrid = 1024;

template <typename T>
inline int64_t adaptive_grid(T size_over_pooled) {
  if (!(size_over_pooled > T(0))) return 0;
  if (!(size_over_pooled < static_cast<T>(kMaxAdaptiveGrid))) return kMaxAdaptiveGrid;
  return static_cast<int64_t>(std::ceil(size_over_pooled));
}

// tile[b * C + c] = src[c * bins + b] for c < C: one ROI's [C, bins] gradient slice as
// channel vectors, scaled.
template <typename T>
inline void load_transposed(const T* __restrict__ src, int64_t C, int64_t bins, int64_t ld, T scale,
                            T* __restrict__ tile) {
  for (int64_t c = 0; c < C; ++c) {
    const T* s = src + c * bins;
    for (int64_t b = 0; b < bins; ++b) tile[b * ld + c] = s[b] * scale;
  }
}

// acc[c] += w * src[c]
template <typename T>
inline void axpy(T* __restrict__ acc, const T* __restrict__ src, T w, int64_t n) {
  for (int64_t c = 0; c < n; ++c) acc[c] += w * src[c];
}

// Forward for one ROI: out[c * oh * ow + ph * ow + pw] = scale * sum_r sum_q wr wq img[r, q, c]
// with img the ROI's image in channels-last layout [H, W, C]. Channels go in blocks of one
// fixed-size accumulator that fits in 8 AVX registers; a block's outputs for all bins, CB rows
// of oh*ow values, stay in L1 while the bins are visited, so the [C, bins] output is written
// in place without a separate transpose.
template <typename T>
void gather_roi(const T* __restrict__ img, int64_t W, int64_t C, const Axis<T>& ya, const Axis<T>& xa,
                int64_t oh, int64_t ow, T scale, T* __restrict__ out) {
  using V = typename Vec<T>::type;
  constexpr int64_t L = Vec<T>::kLanes, NV = 8, CB = NV * L;
  const int64_t bins = oh * ow;
  for (int64_t c0 = 0; c0 < C; c0 += CB) {
    const int64_t cw = std::min(CB, C - c0);
    for (int64_t ph = 0; ph < oh; ++ph) {
      for (int64_t pw = 0; pw < ow; ++pw) {
        alignas(32) T a[CB];
        if (cw == CB) {
          V acc[NV];
          for (int64_t v = 0; v < NV; ++v) acc[v] = V{};
          for (int64_t r = ya.begin(ph); r < ya.end(ph); ++r) {
            const T wr = ya.w[r] * scale;
            const T* row = img + ya.idx[r] * W * C + c0;
            for (int64_t q = xa.begin(pw); q < xa.end(pw); ++q) {
              const V w = V{} + wr * xa.w[q];
              const T* src = row + xa.idx[q] * C;
              for (int64_t v = 0; v < NV; ++v) acc[v] += w * vload(src + v * L);
            }
          }
          for (int64_t v = 0; v < NV; ++v) vstore(a + v * L, acc[v]);
        } else {
          std::fill(a, a + cw, T(0));
          for (int64_t r = ya.begin(ph); r < ya.end(ph); ++r) {
            const T wr = ya.w[r] * scale;
            const T* row = img + ya.idx[r] * W * C + c0;
            for (int64_t q = xa.begin(pw); q < xa.end(pw); ++q) axpy(a, row + xa.idx[q] * C, wr * xa.w[q], cw);
          }
        }
        T* o = out + c0 * bins + ph * ow + pw;
        for (int64_t j = 0; j < cw; ++j) o[j * bins] = a[j];
      }
    }
  }
}

// Forward driver: make_axes(k, roi, ya, xa) fills ROI k's stencils and returns the scale its
// samples are averaged with. Output is [K, C, oh, ow] contiguous.
template <typename T, typename MakeAxes>
at::Tensor forward(const at::Tensor& input, const at::Tensor& rois, int64_t oh, int64_t ow, bool integral,
                   const char* op, MakeAxes make_axes) {
  const int64_t N = input.size(0), C = input.size(1), H = input.size(2), W = input.size(3);
  const int64_t K = rois.size(0);
  at::Tensor out = at::empty({K, C, oh, ow}, input.options());
  if (K == 0) return out;
  at::Tensor rc = rois.contiguous();
  const T* rp = rc.data_ptr<T>();
  check_rois(rp, K, N, integral, op);
  if (C == 0) return out;
  if (H == 0 || W == 0) return out.zero_();
  // Channels-last: one pixel's channels are contiguous, so each stencil term is a vector op.
  at::Tensor cl = input.contiguous(at::MemoryFormat::ChannelsLast);
  const T* x = cl.data_ptr<T>();
  T* o = out.data_ptr<T>();
  const int64_t bins = oh * ow;
  at::parallel_for(0, K, grain(bins * C * 4), [&](int64_t k0, int64_t k1) {
    Axis<T> ya, xa;
    for (int64_t k = k0; k < k1; ++k) {
      const T* roi = rp + 5 * k;
      const int64_t n = batch_index(roi);
      const T scale = make_axes(roi, ya, xa);
      gather_roi(x + n * H * W * C, W, C, ya, xa, oh, ow, scale, o + k * C * bins);
    }
  });
  return out;
}

// Backward with respect to the input, shared by both ops: grad_input[n, c, r, q] =
// sum over ROIs k of image n, bins b, stencil terms (r, q): scale_k * wr * wq * grad[k, c, b].
template <typename T, typename MakeAxes>
at::Tensor backward_input(const at::Tensor& grad, const at::Tensor& rois, int64_t N, int64_t C, int64_t H,
                          int64_t W, bool integral, const char* op, MakeAxes make_axes) {
  at::Tensor gi = at::empty({N, C, H, W}, grad.options());
  const int64_t K = rois.size(0);
  if (gi.numel() == 0) return gi;
  if (K == 0) return gi.zero_();
  const int64_t oh = grad.size(2), ow = grad.size(3), bins = oh * ow;
  at::Tensor rc = rois.contiguous();
  at::Tensor gc = grad.contiguous();
  const T* rp = rc.data_ptr<T>();
  const T* gp = gc.data_ptr<T>();
  check_rois(rp, K, N, integral, op);
  std::vector<std::vector<int64_t>> per_image(N);
  for (int64_t k = 0; k < K; ++k) per_image[batch_index(rp + 5 * k)].push_back(k);
  // 128 bytes of channels per pixel (32 float, 16 double: 4 vectors, held in registers for a
  // bin's gradient) keep a task's accumulator, H*W*128 bytes, within L2 for maps up to ~64x64.
  using V = typename Vec<T>::type;
  constexpr int64_t L = Vec<T>::kLanes, NV = 4, CB = NV * L;
  const int64_t nblk = (C + CB - 1) / CB;
  T* out = gi.data_ptr<T>();
  at::parallel_for(0, N * nblk, grain((K / N + 1) * bins * CB * 4 + H * W * CB), [&](int64_t t0, int64_t t1) {
    Axis<T> ya, xa;
    std::vector<T> acc(H * W * CB);
    std::vector<T> gt(bins * CB);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / nblk, c0 = (t % nblk) * CB, cw = std::min(CB, C - c0);
      std::fill(acc.begin(), acc.end(), T(0));
      for (int64_t k : per_image[n]) {
        const T scale = make_axes(rp + 5 * k, ya, xa);
        load_transposed(gp + (k * C + c0) * bins, cw, bins, CB, scale, gt.data());
        for (int64_t ph = 0; ph < oh; ++ph) {
          for (int64_t pw = 0; pw < ow; ++pw) {
            const T* g = gt.data() + (ph * ow + pw) * CB;
            if (cw == CB) {
              V gv[NV];
              for (int64_t v = 0; v < NV; ++v) gv[v] = vload(g + v * L);
              for (int64_t r = ya.begin(ph); r < ya.end(ph); ++r) {
                T* row = acc.data() + ya.idx[r] * W * CB;
                const T wr = ya.w[r];
                for (int64_t q = xa.begin(pw); q < xa.end(pw); ++q) {
                  const V w = V{} + wr * xa.w[q];
                  T* dst = row + xa.idx[q] * CB;
                  for (int64_t v = 0; v < NV; ++v) vstore(dst + v * L, vload(dst + v * L) + w * gv[v]);
                }
              }
            } else {
              for (int64_t r = ya.begin(ph); r < ya.end(ph); ++r) {
                T* row = acc.data() + ya.idx[r] * W * CB;
                const T wr = ya.w[r];
                for (int64_t q = xa.begin(pw); q < xa.end(pw); ++q) axpy(row + xa.idx[q] * CB, g, wr * xa.w[q], cw);
              }
            }
          }
        }
      }
      for (int64_t j = 0; j < cw; ++j) {
        T* o = out + ((n * C) + c0 + j) * H * W;
        const T* a = acc.data() + j;
        for (int64_t p = 0; p < H * W; ++p) o[p] = a[p * CB];
      }
    }
  });
  return gi;
}

}  // namespace roi
}  // namespace fastpapers
