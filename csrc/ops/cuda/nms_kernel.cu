// CUDA NMS: tiled 64-box bitmasks (upper-triangle tiles only) and the greedy keep scan on the
// device, per group, so nothing but the final index list ever reaches the host.
//
// nms is batched_nms with one group. batched_nms sorts by (group, score desc, index) with two
// stable sorts, so each group is a contiguous span of rank-ordered boxes; masks are built only
// for pairs inside a span (memory sum_g n_g * ceil(n_g / 64) words, linear in the number of
// groups for bounded group sizes) and one thread block scans each group. Groups never see each
// other's boxes, so no coordinate offset is added: exact in every dtype, fp16 with large ids
// included.
//
// The pair test does the CPU kernel's operations (torchvision CPU's order) with explicitly
// rounded intrinsics, so nvcc cannot contract them into FMAs: float and double results equal
// the CPU kernel's bit for bit. Half and bfloat16 boxes are converted to float first and
// computed in float, so they give exactly the float result on boxes.float(). The float IoU is
// compared with the largest float <= threshold, i.e. torchvision CPU's float-vs-double
// comparison (see cpu/nms_kernel.cpp).
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "ops/nms_threshold.h"

#include <cmath>
#include <cstdint>
#include <limits>

namespace fastpapers {
namespace {

constexpr int kTile = 64;
constexpr int kScanThreads = 128;  // >= kTile: the scan loads one diagonal word per thread

__device__ __forceinline__ float sub_rn(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double sub_rn(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ double div_rn(double a, double b) { return __ddiv_rn(a, b); }

// Boxes in tile t of a span of n.
__device__ __forceinline__ int tile_size(int64_t n, int64_t t) {
  const int64_t rest = n - t * kTile;
  return static_cast<int>(rest < kTile ? rest : kTile);
}

template <typename acc_t>
__device__ __forceinline__ acc_t box_area(const acc_t* b) {
  return mul_rn(sub_rn(b[2], b[0]), sub_rn(b[3], b[1]));
}

// Does box a (higher rank) suppress box b? Same expression as the CPU kernel.
template <typename acc_t>
__device__ __forceinline__ bool suppresses(const acc_t* a, acc_t area_a, const acc_t* b, acc_t area_b, acc_t thr) {
  const acc_t xx1 = a[0] > b[0] ? a[0] : b[0];
  const acc_t yy1 = a[1] > b[1] ? a[1] : b[1];
  const acc_t xx2 = a[2] < b[2] ? a[2] : b[2];
  const acc_t yy2 = a[3] < b[3] ? a[3] : b[3];
  const acc_t dw = sub_rn(xx2, xx1), dh = sub_rn(yy2, yy1);
  const acc_t w = dw > acc_t(0) ? dw : acc_t(0);
  const acc_t h = dh > acc_t(0) ? dh : acc_t(0);
  const acc_t inter = mul_rn(w, h);
  return div_rn(inter, sub_rn(add_rn(area_a, area_b), inter)) > thr;
}

// Block (row tile r, column tile c >= r) of one group: bit j of word (row i, column tile c)
// says box i suppresses box c * 64 + j. Tiles below the diagonal are never launched work.
// The grid is (all row tiles of all groups, largest tile count); tile_group maps a row tile to
// its group.
template <typename acc_t>
__global__ void mask_kernel(const acc_t* __restrict__ boxes, const int64_t* __restrict__ gstart,
                            const int64_t* __restrict__ toff, const int64_t* __restrict__ moff,
                            const int32_t* __restrict__ tile_group, acc_t thr, uint64_t* __restrict__ mask) {
  const int64_t tile = blockIdx.x;
  const int32_t g = tile_group[tile];
  const int64_t r = tile - toff[g];
  const int64_t c = blockIdx.y;
  const int64_t s = gstart[g], n = gstart[g + 1] - s;
  const int64_t T = (n + kTile - 1) / kTile;
  if (c < r || c >= T) return;
  const int rows = tile_size(n, r);
  const int cols = tile_size(n, c);
  __shared__ acc_t col[kTile * 4];
  __shared__ acc_t col_area[kTile];
  const int t = threadIdx.x;
  if (t < cols) {
    const acc_t* p = boxes + (s + c * kTile + t) * 4;
    for (int k = 0; k < 4; ++k) col[t * 4 + k] = p[k];
    col_area[t] = box_area(col + t * 4);
  }
  __syncthreads();
  if (t < rows) {
    const int64_t i = r * kTile + t;
    acc_t row[4];
    for (int k = 0; k < 4; ++k) row[k] = boxes[(s + i) * 4 + k];
    const acc_t area = box_area(row);
    uint64_t bits = 0;
    for (int j = (r == c) ? t + 1 : 0; j < cols; ++j)
      if (suppresses(row, area, col + j * 4, col_area[j], thr)) bits |= 1ull << j;
    mask[moff[g] + i * T + c] = bits;
  }
}

// One block per group: walks the group's tiles in rank order. Thread 0 resolves a tile's 64
// boxes serially against the tile's diagonal words (preloaded to shared memory); then the
// threads OR the rows of that tile's kept boxes into the removed words of the later tiles,
// one word per thread. One pass over the upper-triangle mask, two barriers per tile.
// Stops after max_keep kept boxes (< 0: no limit).
__global__ void keep_scan_kernel(const uint64_t* __restrict__ mask, const int64_t* __restrict__ gstart,
                                 const int64_t* __restrict__ toff, const int64_t* __restrict__ moff,
                                 uint64_t* __restrict__ removed_all, int64_t max_keep, bool* __restrict__ keep) {
  const int64_t g = blockIdx.x;
  const int64_t s = gstart[g], n = gstart[g + 1] - s;
  const int64_t T = (n + kTile - 1) / kTile;
  const uint64_t* m = mask + moff[g];
  uint64_t* removed = removed_all + toff[g];
  __shared__ uint64_t diag[kTile];
  __shared__ uint64_t kept_word;
  __shared__ int stop;
  int64_t kept = 0;  // meaningful in thread 0 only
  for (int64_t t = 0; t < T; ++t) {
    const int rows = tile_size(n, t);
    if (threadIdx.x < rows) diag[threadIdx.x] = m[(t * kTile + threadIdx.x) * T + t];
    __syncthreads();
    if (threadIdx.x == 0) {
      uint64_t cur = removed[t], kw = 0;
      int st = 0;
      for (int i = 0; i < rows; ++i) {
        if ((cur >> i) & 1ull) continue;
        if (kept == max_keep) {
          st = 1;
          break;
        }
        kw |= 1ull << i;
        ++kept;
        cur |= diag[i];
      }
      kept_word = kw;
      stop = st;
    }
    __syncthreads();
    const uint64_t kw = kept_word;
    if (threadIdx.x < rows) keep[s + t * kTile + threadIdx.x] = (kw >> threadIdx.x) & 1ull;
    if (stop) break;  // uniform across the block: every thread read the same shared flag
    for (int64_t w = t + 1 + threadIdx.x; w < T; w += blockDim.x) {
      uint64_t acc = 0, bits = kw;
      while (bits) {
        const int i = __ffsll(static_cast<long long>(bits)) - 1;
        bits &= bits - 1;
        acc |= m[(t * kTile + i) * T + w];
      }
      removed[w] |= acc;
    }
    __syncthreads();
  }
}

using nms_detail::compare_threshold;

// Keep flags over `sorted` ([m, 4] acc dtype, group spans given by gstart [G + 1] on the
// device). sum_t, max_t, words: sum and max of the per-group tile counts and the total mask
// words, already known on the host.
at::Tensor keep_flags(const at::Tensor& sorted, const at::Tensor& gstart, int64_t groups, int64_t sum_t,
                      int64_t max_t, int64_t words, double iou_threshold, int64_t max_keep) {
  TORCH_CHECK(max_t <= 65535, "nms (CUDA): a group of more than 65535 * 64 boxes is not supported");
  const auto opts = gstart.options();
  const at::Tensor counts = gstart.slice(0, 1) - gstart.slice(0, 0, groups);
  const at::Tensor tiles = at::floor_divide(counts + (kTile - 1), kTile);
  const at::Tensor zero = at::zeros({1}, opts);
  const at::Tensor toff = at::cat({zero, tiles.cumsum(0)});
  const at::Tensor moff = at::cat({zero, (counts * tiles).cumsum(0)});
  const at::Tensor tile_group =
      at::repeat_interleave(at::arange(groups, opts.dtype(at::kInt)), tiles, /*dim=*/0, /*output_size=*/sum_t);
  at::Tensor mask = at::empty({words}, opts.dtype(at::kLong));
  at::Tensor removed = at::zeros({sum_t}, opts.dtype(at::kLong));
  at::Tensor keep = at::zeros({sorted.size(0)}, opts.dtype(at::kBool));
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(sorted.scalar_type(), "fastpapers_nms_mask", [&] {
    const dim3 grid(static_cast<unsigned>(sum_t), static_cast<unsigned>(max_t));
    mask_kernel<scalar_t><<<grid, kTile, 0, stream>>>(
        sorted.data_ptr<scalar_t>(), gstart.data_ptr<int64_t>(), toff.data_ptr<int64_t>(), moff.data_ptr<int64_t>(),
        tile_group.data_ptr<int32_t>(), compare_threshold<scalar_t>(iou_threshold),
        reinterpret_cast<uint64_t*>(mask.data_ptr<int64_t>()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  keep_scan_kernel<<<static_cast<unsigned>(groups), kScanThreads, 0, stream>>>(
      reinterpret_cast<const uint64_t*>(mask.data_ptr<int64_t>()), gstart.data_ptr<int64_t>(), toff.data_ptr<int64_t>(),
      moff.data_ptr<int64_t>(), reinterpret_cast<uint64_t*>(removed.data_ptr<int64_t>()), max_keep,
      keep.data_ptr<bool>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return keep;
}

at::ScalarType acc_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

void check_inputs(const char* op, const at::Tensor& boxes, const at::Tensor& scores) {
  TORCH_CHECK(boxes.is_cuda() && scores.is_cuda() && boxes.device() == scores.device(), op,
              ": boxes and scores must be on the same CUDA device");
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(1) == 4, op, ": boxes must be [N, 4], got ", boxes.sizes());
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == boxes.size(0), op, ": scores must be [N] with N = ",
              boxes.size(0), ", got ", scores.sizes());
  TORCH_CHECK(boxes.scalar_type() == scores.scalar_type(), op, ": boxes and scores must share a dtype");
  TORCH_CHECK(at::isFloatingType(boxes.scalar_type()), op, ": boxes must be floating point");
}

at::Tensor nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  check_inputs("nms", boxes, scores);
  const c10::cuda::CUDAGuard guard(boxes.device());
  const int64_t n = boxes.size(0);
  if (n == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  const at::Tensor order = std::get<1>(scores.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  const at::Tensor sorted = boxes.index_select(0, order).to(acc_dtype(boxes.scalar_type())).contiguous();
  const at::Tensor gstart = at::tensor({int64_t{0}, n}, boxes.options().dtype(at::kLong).device(at::kCPU))
                                .to(boxes.device());
  const int64_t t = (n + kTile - 1) / kTile;
  const at::Tensor keep = keep_flags(sorted, gstart, 1, t, t, n * t, iou_threshold, -1);
  return order.masked_select(keep);
}

at::Tensor batched_nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                            double iou_threshold, std::optional<double> score_threshold,
                            std::optional<int64_t> max_per_group) {
  check_inputs("batched_nms", boxes, scores);
  TORCH_CHECK(idxs.device() == boxes.device() && idxs.dim() == 1 && idxs.size(0) == boxes.size(0),
              "batched_nms: idxs must be [N] on the boxes' device");
  TORCH_CHECK(!at::isFloatingType(idxs.scalar_type()), "batched_nms: idxs must be integers");
  const c10::cuda::CUDAGuard guard(boxes.device());
  if (boxes.size(0) == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  // Score prefilter, compared in the scores' dtype like `scores > score_threshold`.
  std::optional<at::Tensor> subset;
  at::Tensor b = boxes, s = scores, g = idxs.to(at::kLong);
  if (score_threshold.has_value()) {
    subset = at::gt(scores, *score_threshold).nonzero().squeeze(1);
    if (subset->numel() == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
    b = boxes.index_select(0, *subset);
    s = scores.index_select(0, *subset);
    g = g.index_select(0, *subset);
  }
  const int64_t m = s.size(0);
  // (group, score desc, index): a stable score sort, then a stable sort by group.
  const at::Tensor by_score = std::get<1>(s.sort(/*stable=*/true, 0, /*descending=*/true));
  const at::Tensor g1 = g.index_select(0, by_score);
  const auto group_sort = g1.sort(/*stable=*/true, 0, /*descending=*/false);
  const at::Tensor grouped = by_score.index_select(0, std::get<1>(group_sort));
  const at::Tensor counts = std::get<2>(at::unique_consecutive(std::get<0>(group_sort), false, true));
  const int64_t groups = counts.size(0);
  const at::Tensor tiles = at::floor_divide(counts + (kTile - 1), kTile);
  // One host copy for the three sizes the launches need.
  const at::Tensor stats = at::stack({tiles.sum(), tiles.max(), (counts * tiles).sum()}).cpu();
  const int64_t* st = stats.data_ptr<int64_t>();
  const at::Tensor gstart = at::cat({at::zeros({1}, counts.options()), counts.cumsum(0)});
  const at::Tensor sorted = b.index_select(0, grouped).to(acc_dtype(boxes.scalar_type())).contiguous();
  const at::Tensor keep = keep_flags(sorted, gstart, groups, st[0], st[1], st[2], iou_threshold,
                                     max_per_group.has_value() ? *max_per_group : -1);
  // Kept flags by subset position, read back in score order: decreasing score, lower index
  // first on ties (nonzero's subset is increasing in the original index).
  const at::Tensor kept_flag = at::zeros({m}, keep.options()).index_fill_(0, grouped.masked_select(keep), true);
  const at::Tensor out = by_score.masked_select(kept_flag.index_select(0, by_score));
  return subset.has_value() ? subset->index_select(0, out) : out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastpapers, CUDA, m) {
  m.impl("nms", &nms_cuda);
  m.impl("batched_nms", &batched_nms_cuda);
}

}  // namespace fastpapers
