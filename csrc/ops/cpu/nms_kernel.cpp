// CPU NMS with torchvision's exact semantics: a box is suppressed when its IoU with a kept,
// higher-ranked box is > iou_threshold (strictly); areas have no +1; the result is ordered by
// decreasing score, equal scores keep the lower index first.
//
// Pipeline (single image): radix-sort the scores (stable, descending) -> gather the boxes into
// structure-of-arrays buffers in rank order -> greedy sweep. The sweep is either
//   * a spatial grid: every box is registered once, in the cell of its (x1, y1) corner; a
//     kept box scans the higher-ranked entries of the window of cells where an overlapping
//     box can be anchored (each pair is met once), plus a short list of "big" boxes that span
//     too many cells to register; or
//   * a dense sweep, when the grid would not prune (many big boxes) or the input is small
//     (<= 256 boxes, e.g. one class of one image): each kept box tests every later box, and
//     the live list is compacted as boxes die.
// Both use the same pair test, written operation for operation like torchvision's (max/min,
// clamp at 0, inter / (area_i + area_j - inter) > threshold; AVX2 when compiled with it, a
// scalar loop otherwise), so the kept set is bit-identical to torchvision's on every input,
// not only on typical ones.
//
// Why the grid is exact: two boxes can only suppress each other when inter > 0, i.e. when
// max(x1) < min(x2) and max(y1) < min(y2) (strict; touching boxes give inter = 0, and
// 0 / union is 0 or NaN, never > threshold >= 0). The cell index c(x) = clamp(floor((x - ox)
// * inv)) is a non-decreasing function of x (double subtraction and multiplication by a
// positive constant are monotone under rounding), which bounds where an overlapping box can
// be anchored (the argument is written out at grid_sweep). Boxes with x2 <= x1 or y2 <= y1
// (zero area or inverted) have inter = 0 with every box, so they are always kept and never
// tested. Pruning only skips pairs whose torchvision IoU is 0 or NaN.
//
// Why the division stays: torchvision compares the float IoU with a double threshold. The
// division-free form inter > thr * union rounds differently: boxes (0,0,10,10) and (0,0,10,3)
// have float IoU 0.3f = 0.30000001 > 0.3, which torchvision suppresses at threshold 0.3, while
// 30 > 0.3f * 100 is false. We compare the float IoU with the largest float <= threshold,
// which is the same predicate as torchvision's float-vs-double comparison.
//
// Measured on the 2-core dev machine (AMD EPYC, AVX2): see the comments at grid_sweep.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "ops/nms_threshold.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <tuple>
#include <vector>

namespace fastpapers {
namespace {

// ---------------------------------------------------------------------------------------
using nms_detail::compare_threshold;

// Uninitialised buffer with kPad zeroed slack at the end: the SIMD loops read whole vectors
// past a span's end and mask the extra lanes, so every buffer they read must be padded.
constexpr int64_t kPad = 8;

template <typename T>
struct Buffer {
  std::unique_ptr<T[]> p;
  explicit Buffer(int64_t n = 0) : p(new T[n + kPad]) { std::memset(static_cast<void*>(p.get() + n), 0, kPad * sizeof(T)); }
  T* get() const { return p.get(); }
  T& operator[](int64_t i) const { return p[i]; }
};

// Boxes in rank order as structure of arrays.
template <typename T>
struct Boxes {
  T* x1;
  T* y1;
  T* x2;
  T* y2;
  T* area;
};

// ---------------------------------------------------------------------------------------
// The pair test, written like torchvision cpu/nms_kernel.cpp: same operations, same order.
template <typename T>
struct Probe {
  T x1, y1, x2, y2, area, thr;
};

template <typename T>
inline bool pair_suppresses(const Probe<T>& b, T x1, T y1, T x2, T y2, T area) {
  const T xx1 = std::max(b.x1, x1), yy1 = std::max(b.y1, y1);
  const T xx2 = std::min(b.x2, x2), yy2 = std::min(b.y2, y2);
  const T w = std::max(static_cast<T>(0), xx2 - xx1);
  const T h = std::max(static_cast<T>(0), yy2 - yy1);
  const T inter = w * h;
  return inter / (b.area + area - inter) > b.thr;
}

// Grid entries are stored in blocks of one vector of each coordinate (AoSoA): registering a
// box writes one 160-byte block instead of five arrays, and a cell is a run of whole blocks.
// The box area is recomputed from the coordinates (the same expression as the gathered area).
template <typename T>
struct Block {
  static constexpr int L = 32 / sizeof(T);  // one AVX2 vector
  T x1[L], y1[L], x2[L], y2[L];
  uint32_t rank[L];
};

#if defined(__AVX2__)
// max/min take the probe first like std::max(ix1, x1[j]); both agree with std::max/min on
// every non-NaN value (at most the sign of a zero differs, and a zero is clamped to +0).
template <typename T>
struct Simd;

template <>
struct Simd<float> {
  using V = __m256;
  static V set1(float v) { return _mm256_set1_ps(v); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  static V min(V a, V b) { return _mm256_min_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V div(V a, V b) { return _mm256_div_ps(a, b); }
  static int gt(V a, V b) { return _mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_GT_OQ)); }
  static int tags_ok(const uint32_t* t, uint32_t need) {
    const __m256i n = _mm256_set1_epi32(static_cast<int>(need));
    const __m256i v = _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(t)), n);
    return _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(v, n)));
  }
};

template <>
struct Simd<double> {
  using V = __m256d;
  static V set1(double v) { return _mm256_set1_pd(v); }
  static V load(const double* p) { return _mm256_loadu_pd(p); }
  static V max(V a, V b) { return _mm256_max_pd(a, b); }
  static V min(V a, V b) { return _mm256_min_pd(a, b); }
  static V sub(V a, V b) { return _mm256_sub_pd(a, b); }
  static V add(V a, V b) { return _mm256_add_pd(a, b); }
  static V mul(V a, V b) { return _mm256_mul_pd(a, b); }
  static V div(V a, V b) { return _mm256_div_pd(a, b); }
  static int gt(V a, V b) { return _mm256_movemask_pd(_mm256_cmp_pd(a, b, _CMP_GT_OQ)); }
  static int tags_ok(const uint32_t* t, uint32_t need) {
    const __m128i n = _mm_set1_epi32(static_cast<int>(need));
    const __m128i v = _mm_and_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t)), n);
    return _mm_movemask_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(v, n)));
  }
};

// Lanes of one vector that box b suppresses (bit k = lane k). `area` may be null: then the
// area is recomputed from the coordinates.
template <typename T>
inline int fire_mask(const typename Simd<T>::V* probe, const T* x1, const T* y1, const T* x2, const T* y2,
                     const T* area) {
  using S = Simd<T>;
  const auto lx1 = S::load(x1), ly1 = S::load(y1), lx2 = S::load(x2), ly2 = S::load(y2);
  const auto xx1 = S::max(probe[0], lx1), yy1 = S::max(probe[1], ly1);
  const auto xx2 = S::min(probe[2], lx2), yy2 = S::min(probe[3], ly2);
  // max_ps(d, 0) = d > 0 ? d : 0, exactly std::max(0, d) = (0 < d) ? d : 0, NaN included.
  const auto w = S::max(S::sub(xx2, xx1), probe[6]);
  const auto h = S::max(S::sub(yy2, yy1), probe[6]);
  const auto inter = S::mul(w, h);
  const auto aj = area ? S::load(area) : S::mul(S::sub(lx2, lx1), S::sub(ly2, ly1));
  const auto uni = S::sub(S::add(probe[4], aj), inter);
  return S::gt(S::div(inter, uni), probe[5]);
}

template <typename T>
inline void load_probe(const Probe<T>& b, typename Simd<T>::V* v) {
  using S = Simd<T>;
  v[0] = S::set1(b.x1);
  v[1] = S::set1(b.y1);
  v[2] = S::set1(b.x2);
  v[3] = S::set1(b.y2);
  v[4] = S::set1(b.area);
  v[5] = S::set1(b.thr);
  v[6] = S::set1(static_cast<T>(0));
}

// Marks dead[rank[j]] for every j in [lo, hi) of the SoA span that b suppresses. Returns the
// number of lanes that fired (the dense sweep's compaction heuristic; may count dead boxes).
template <typename T>
int64_t suppress_span(const Probe<T>& b, const Boxes<T>& s, const int32_t* rank, int64_t lo, int64_t hi,
                      uint8_t* dead) {
  constexpr int W = 32 / sizeof(T);
  typename Simd<T>::V probe[7];
  load_probe(b, probe);
  // Local copies: stores through uint8_t* may alias anything, so fields of `s` would be
  // reloaded on every iteration.
  const T *x1 = s.x1, *y1 = s.y1, *x2 = s.x2, *y2 = s.y2, *area = s.area;
  int64_t fired = 0;
  for (int64_t j = lo; j < hi; j += W) {
    int bits = fire_mask<T>(probe, x1 + j, y1 + j, x2 + j, y2 + j, area + j);
    if (hi - j < W) bits &= (1 << (hi - j)) - 1;
    while (bits) {
      dead[rank[j + __builtin_ctz(static_cast<unsigned>(bits))]] = 1;
      ++fired;
      bits &= bits - 1;
    }
  }
  return fired;
}

// The same over grid blocks.
template <typename T>
void suppress_blocks(const Probe<T>& b, const Block<T>* blk, int64_t nblk, uint8_t* dead) {
  typename Simd<T>::V probe[7];
  load_probe(b, probe);
  for (int64_t k = 0; k < nblk; ++k) {
    const Block<T>& e = blk[k];
    int bits = fire_mask<T>(probe, e.x1, e.y1, e.x2, e.y2, nullptr);
    while (bits) {
      dead[e.rank[__builtin_ctz(static_cast<unsigned>(bits))]] = 1;
      bits &= bits - 1;
    }
  }
}
#else
template <typename T>
int64_t suppress_span(const Probe<T>& b, const Boxes<T>& s, const int32_t* rank, int64_t lo, int64_t hi,
                      uint8_t* dead) {
  int64_t fired = 0;
  for (int64_t j = lo; j < hi; ++j) {
    if (pair_suppresses(b, s.x1[j], s.y1[j], s.x2[j], s.y2[j], s.area[j])) {
      dead[rank[j]] = 1;
      ++fired;
    }
  }
  return fired;
}

template <typename T>
void suppress_blocks(const Probe<T>& b, const Block<T>* blk, int64_t nblk, uint8_t* dead) {
  for (int64_t k = 0; k < nblk; ++k) {
    const Block<T>& e = blk[k];
    for (int l = 0; l < Block<T>::L; ++l) {
      const T area = (e.x2[l] - e.x1[l]) * (e.y2[l] - e.y1[l]);
      if (pair_suppresses(b, e.x1[l], e.y1[l], e.x2[l], e.y2[l], area)) dead[e.rank[l]] = 1;
    }
  }
}
#endif

template <typename T>
inline bool has_area(T x1, T y1, T x2, T y2) {
  return x2 > x1 && y2 > y1;  // false for NaN too: such a box is kept and never tested
}

// ---------------------------------------------------------------------------------------
// Dense sweep over a mutable span (boxes + ranks in rank order). Each kept box tests every
// later box; when about half the span behind the cursor has died since the last pass, the
// dead are compacted out so later kept boxes stop paying for them. Calls keep(rank) in order;
// stops after max_keep (< 0: no limit). With a negative threshold an IoU of 0 suppresses
// too, so boxes without area are tested like the others (test_all).
template <typename T, typename Keep>
int64_t dense_sweep(Boxes<T> s, int32_t* rank, int64_t m, T thr, int64_t max_keep, uint8_t* dead, Keep&& keep,
                    bool test_all = false) {
  int64_t kept = 0, fired = 0;
  for (int64_t p = 0; p < m; ++p) {
    const int32_t r = rank[p];
    if (dead[r]) continue;
    keep(r);
    if (++kept == max_keep) break;
    if (!test_all && !has_area(s.x1[p], s.y1[p], s.x2[p], s.y2[p])) continue;
    const Probe<T> b{s.x1[p], s.y1[p], s.x2[p], s.y2[p], s.area[p], thr};
    fired += suppress_span<T>(b, s, rank, p + 1, m, dead);
    if (2 * fired > m - p && m - p > 64) {
      int64_t w = p + 1;
      for (int64_t k = p + 1; k < m; ++k) {
        if (dead[rank[k]]) continue;
        s.x1[w] = s.x1[k];
        s.y1[w] = s.y1[k];
        s.x2[w] = s.x2[k];
        s.y2[w] = s.y2[k];
        s.area[w] = s.area[k];
        rank[w] = rank[k];
        ++w;
      }
      m = w;
      fired = 0;
    }
  }
  return kept;
}

// ---------------------------------------------------------------------------------------
// Grid sweep. Each box is registered once, in the cell of its (x1, y1) corner ("anchor");
// with D = the largest cell span (cell(x2) - cell(x1)) of a registered box, a box j that
// overlaps box i has cell(x1_i) - D <= cell(x1_j) <= cell(x2_i): the shared point
// p = max(x1_i, x1_j) gives cell(x1_j) <= cell(p) <= cell(x2_i) and cell(p) <= cell(x2_j) <=
// cell(x1_j) + D with cell(p) >= cell(x1_i) — integer bounds from the monotone cell(), no
// rounding margin. A kept box scans that window of anchor cells, so every pair is met once.
// Registering each box once (rather than in every cell it covers) keeps the grid small: the
// copy-per-covered-cell variant held 4x the data (1.6 MB at 20k boxes, past L2) and perf
// showed its cursor loads missing cache. Measured CPU time at 20k benchmark boxes, thr 0.5:
// 8.3 ms (torchvision 1343 ms); thr 0: 3.3 ms; thr 1 (nothing suppressed): 11.0 ms.
// perf shares of the op at 20k: sweep (suppress_blocks) 60%, grid build and cursors 22%,
// allocations/page faults ~10%, median 5%, gather 3.5%, radix sort 2.5%.
//
// Cell side = kCellScale x the median box side (per axis).
constexpr double kCellScale = 1.0;
// Boxes spanning more than kMaxSpan cells on an axis go to the big list (tested against every
// later box instead of registered), so one huge box cannot widen every query window.
constexpr int32_t kMaxSpan = 3;

struct Axis {
  double origin = 0, inv = 0;
  int64_t cells = 1;
  int32_t cell(double v) const {
    const double c = std::floor((v - origin) * inv);
    // Monotone clamp; a NaN product (inf * 0 on an axis of infinite extent) maps to 0 like
    // every other coordinate on that axis.
    if (!(c > 0)) return 0;
    if (c >= static_cast<double>(cells - 1)) return static_cast<int32_t>(cells - 1);
    return static_cast<int32_t>(c);
  }
};

template <typename T>
double median_of(std::vector<T>& v) {
  auto mid = v.begin() + v.size() / 2;
  std::nth_element(v.begin(), mid, v.end());
  return static_cast<double>(*mid);
}

template <typename T>
void set_lane(Block<T>& b, int l, T x1, T y1, T x2, T y2, uint32_t rank) {
  b.x1[l] = x1;
  b.y1[l] = y1;
  b.x2[l] = x2;
  b.y2[l] = y2;
  b.rank[l] = rank;
}

// Unused lanes of a run's last block: NaN coordinates give a NaN area, union and IoU, so a
// pad never fires; its rank is above every rank, so cursors stop before it.
template <typename T>
void pad_lanes(Block<T>& b, int from) {
  const T nan = std::numeric_limits<T>::quiet_NaN();
  for (int l = from; l < Block<T>::L; ++l) set_lane(b, l, nan, nan, nan, nan, std::numeric_limits<uint32_t>::max());
}

// Returns false (without touching dead or calling keep) when the grid would not prune: then
// the caller runs the dense sweep. rank[p] == p on entry (used for the big boxes' sweeps).
template <typename T, typename Keep>
bool grid_sweep(const Boxes<T>& s, const int32_t* rank, int64_t n, T thr, int64_t max_keep, uint8_t* dead,
                Keep&& keep) {
  constexpr int L = Block<T>::L;
  // Extent and median sides of the boxes that can overlap anything.
  double lox = std::numeric_limits<double>::infinity(), loy = lox, hix = -lox, hiy = -lox;
  std::vector<T> ws, hs;
  ws.reserve(n);
  hs.reserve(n);
  for (int64_t i = 0; i < n; ++i) {
    if (!has_area(s.x1[i], s.y1[i], s.x2[i], s.y2[i])) continue;
    lox = std::min(lox, static_cast<double>(s.x1[i]));
    loy = std::min(loy, static_cast<double>(s.y1[i]));
    hix = std::max(hix, static_cast<double>(s.x2[i]));
    hiy = std::max(hiy, static_cast<double>(s.y2[i]));
    ws.push_back(s.x2[i] - s.x1[i]);
    hs.push_back(s.y2[i] - s.y1[i]);
  }
  const int64_t nv = static_cast<int64_t>(ws.size());
  if (nv < 2) return false;
  // Cells per axis from the median sides, then shrunk together so there are at least ~8
  // boxes per cell (a cell is a run of whole 8-lane blocks; far-apart clusters share cells
  // instead of allocating empty ones).
  const double gx0 = std::max(1.0, std::min((hix - lox) / (kCellScale * median_of(ws)), double(nv)));
  const double gy0 = std::max(1.0, std::min((hiy - loy) / (kCellScale * median_of(hs)), double(nv)));
  const double shrink = std::max(1.0, std::sqrt(gx0 * gy0 / (nv / 8.0 + 1)));
  Axis ax, ay;
  ax.cells = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(gx0 / shrink)));
  ay.cells = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(gy0 / shrink)));
  ax.origin = lox;
  ay.origin = loy;
  ax.inv = static_cast<double>(ax.cells) / (hix - lox);
  ay.inv = static_cast<double>(ay.cells) / (hiy - loy);
  if (!std::isfinite(ax.inv)) ax.inv = 0;
  if (!std::isfinite(ay.inv)) ay.inv = 0;
  const int64_t ncell = ax.cells * ay.cells;

  // Cells per box; kind: 0 = no area, 1 = registered in the grid, 2 = big.
  Buffer<int32_t> cx0(n), cy0(n), cx1(n), cy1(n);
  std::vector<uint8_t> kind(n, 0);
  std::vector<int64_t> count(ncell + 1, 0);  // the last run is the big list
  int32_t dx = 0, dy = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (!has_area(s.x1[i], s.y1[i], s.x2[i], s.y2[i])) continue;
    cx0[i] = ax.cell(s.x1[i]);
    cx1[i] = ax.cell(s.x2[i]);
    cy0[i] = ay.cell(s.y1[i]);
    cy1[i] = ay.cell(s.y2[i]);
    if (cx1[i] - cx0[i] > kMaxSpan || cy1[i] - cy0[i] > kMaxSpan) {
      kind[i] = 2;
      ++count[ncell];
      continue;
    }
    kind[i] = 1;
    dx = std::max(dx, cx1[i] - cx0[i]);
    dy = std::max(dy, cy1[i] - cy0[i]);
    ++count[cy0[i] * ax.cells + cx0[i]];
  }
  const int64_t nbig = count[ncell];
  // Every later box is tested against each kept big box, and every kept box against the big
  // list: past a few percent of big boxes the dense sweep does the same work with less
  // bookkeeping.
  if (nbig > std::max<int64_t>(32, nv / 32)) return false;
  // Run c (cell c, or the big list for c = ncell) owns blocks [bstart[c], bstart[c + 1]),
  // filled in increasing rank, so each run is sorted by rank.
  std::vector<int64_t> bstart(ncell + 2, 0);
  for (int64_t c = 0; c <= ncell; ++c) bstart[c + 1] = bstart[c] + (count[c] + L - 1) / L;
  Buffer<Block<T>> blocks(bstart[ncell + 1]);
  {
    std::fill(count.begin(), count.end(), 0);
    for (int64_t i = 0; i < n; ++i) {
      if (kind[i] == 0) continue;
      const int64_t c = kind[i] == 2 ? ncell : cy0[i] * ax.cells + cx0[i];
      const int64_t e = count[c]++;
      set_lane(blocks[bstart[c] + e / L], static_cast<int>(e % L), s.x1[i], s.y1[i], s.x2[i], s.y2[i],
               static_cast<uint32_t>(i));
    }
    for (int64_t c = 0; c <= ncell; ++c)
      if (count[c] % L) pad_lanes(blocks[bstart[c + 1] - 1], static_cast<int>(count[c] % L));
  }
  // cursor[c]: first block of run c that can hold a rank above the boxes processed so far.
  // Blocks are skipped whole (by their last lane); the lower ranks left in the first block are
  // tested anyway, which is harmless: marking an already decided box dead changes nothing.
  std::vector<int64_t> cursor(bstart.begin(), bstart.end() - 1);
  auto advance = [&](int64_t c, int64_t i) {
    int64_t b = cursor[c];
    const int64_t e = bstart[c + 1];
    while (b < e && static_cast<int64_t>(blocks[b].rank[L - 1]) <= i) ++b;
    cursor[c] = b;
    return b;
  };

  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (dead[i]) continue;
    keep(static_cast<int32_t>(i));
    if (++kept == max_keep) break;
    if (kind[i] == 0) continue;
    const Probe<T> b{s.x1[i], s.y1[i], s.x2[i], s.y2[i], s.area[i], thr};
    if (kind[i] == 2) {
      suppress_span<T>(b, s, rank, i + 1, n, dead);
      continue;
    }
    for (int32_t cy = std::max(0, cy0[i] - dy); cy <= cy1[i]; ++cy) {
      for (int32_t cx = std::max(0, cx0[i] - dx); cx <= cx1[i]; ++cx) {
        const int64_t c = cy * ax.cells + cx;
        const int64_t lo = advance(c, i);
        suppress_blocks<T>(b, blocks.get() + lo, bstart[c + 1] - lo, dead);
      }
    }
    if (nbig) {
      const int64_t lo = advance(ncell, i);
      suppress_blocks<T>(b, blocks.get() + lo, bstart[ncell + 1] - lo, dead);
    }
  }
  return true;
}

// Below this many boxes the dense sweep is used directly: the grid's set-up (extent,
// medians, cell counts, blocks) is a fixed cost that small groups (the batched benchmark's
// groups hold ~62 boxes) do not recover.
constexpr int64_t kDenseMax = 256;

// Greedy NMS over boxes already in rank order. `s` may be overwritten (the dense sweep
// compacts it in place); rank[p] = p on entry. keep(p) is called for each kept rank.
// A threshold below 0 (torchvision accepts any float) makes every pair with a non-NaN IoU,
// disjoint boxes included, a suppression: the grid's pruning (which skips pairs with IoU 0)
// does not apply, so such thresholds take the dense sweep over all pairs.
template <typename T, typename Keep>
void nms_ranked(Boxes<T> s, int32_t* rank, int64_t n, T thr, int64_t max_keep, uint8_t* dead, Keep&& keep) {
  const bool test_all = thr < T(0);
  if (!test_all && n > kDenseMax && grid_sweep<T>(s, rank, n, thr, max_keep, dead, keep)) return;
  dense_sweep<T>(s, rank, n, thr, max_keep, dead, keep, test_all);
}

// ---------------------------------------------------------------------------------------
// Stable descending sort of scores (equal scores: lower index first), LSD radix on the
// order-preserving integer image of the float; 11-bit digits, passes whose digit is the same
// for every key are skipped (perf at 20k boxes: 2.5% of the op; at::sort(stable) of the
// same scores alone took 0.7 ms, about 8% of the whole op).
template <typename T>
struct KeyOf;
template <>
struct KeyOf<float> {
  using U = uint32_t;
};
template <>
struct KeyOf<double> {
  using U = uint64_t;
};

template <typename T>
typename KeyOf<T>::U descending_key(T v) {
  using U = typename KeyOf<T>::U;
  constexpr U sign = U{1} << (sizeof(U) * 8 - 1);
  if (v == 0) v = 0;  // -0 == +0: the same key, so ties stay in index order
  U u;
  std::memcpy(&u, &v, sizeof(U));
  u = (u & sign) ? ~u : (u | sign);  // ascending image
  return ~u;                         // descending
}

// Sorts keys ascending and permutes items alongside (stable).
template <typename U>
void radix_sort(std::vector<U>& keys, std::vector<int32_t>& items) {
  const int64_t m = static_cast<int64_t>(items.size());
  constexpr int kBits = 11, kBuckets = 1 << kBits;
  constexpr int kPasses = (sizeof(U) * 8 + kBits - 1) / kBits;
  if (m < 64) {
    std::vector<int32_t> idx(m);
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return keys[a] < keys[b]; });
    std::vector<U> k2(m);
    std::vector<int32_t> i2(m);
    for (int64_t k = 0; k < m; ++k) {
      k2[k] = keys[idx[k]];
      i2[k] = items[idx[k]];
    }
    keys.swap(k2);
    items.swap(i2);
    return;
  }
  std::vector<int64_t> hist(static_cast<size_t>(kPasses) * kBuckets, 0);
  for (int64_t k = 0; k < m; ++k)
    for (int p = 0; p < kPasses; ++p) ++hist[p * kBuckets + ((keys[k] >> (p * kBits)) & (kBuckets - 1))];
  std::vector<U> k2(m);
  std::vector<int32_t> i2(m);
  for (int p = 0; p < kPasses; ++p) {
    int64_t* h = hist.data() + p * kBuckets;
    if (h[keys[0] >> (p * kBits) & (kBuckets - 1)] == m) continue;  // one digit value: no-op pass
    int64_t sum = 0;
    for (int b = 0; b < kBuckets; ++b) {
      const int64_t c = h[b];
      h[b] = sum;
      sum += c;
    }
    for (int64_t k = 0; k < m; ++k) {
      const int64_t d = h[(keys[k] >> (p * kBits)) & (kBuckets - 1)]++;
      k2[d] = keys[k];
      i2[d] = items[k];
    }
    keys.swap(k2);
    items.swap(i2);
  }
}

// Rank-ordered SoA copy of boxes[order[k]] (boxes read through their strides).
template <typename T>
struct Gathered {
  Buffer<T> x1, y1, x2, y2, area;
  Buffer<int32_t> rank;
  explicit Gathered(int64_t m) : x1(m), y1(m), x2(m), y2(m), area(m), rank(m) {}
  Boxes<T> view() const { return {x1.get(), y1.get(), x2.get(), y2.get(), area.get()}; }
};

template <typename T>
void gather(const at::Tensor& boxes, const int32_t* order, int64_t m, Gathered<T>& g) {
  const T* b = boxes.data_ptr<T>();
  const int64_t s0 = boxes.stride(0), s1 = boxes.stride(1);
  for (int64_t k = 0; k < m; ++k) {
    const T* p = b + order[k] * s0;
    const T x1 = p[0], y1 = p[s1], x2 = p[2 * s1], y2 = p[3 * s1];
    g.x1[k] = x1;
    g.y1[k] = y1;
    g.x2[k] = x2;
    g.y2[k] = y2;
    g.area[k] = (x2 - x1) * (y2 - y1);  // torchvision: (x2 - x1) * (y2 - y1), no +1
    g.rank[k] = static_cast<int32_t>(k);
  }
}

void check_inputs(const char* op, const at::Tensor& boxes, const at::Tensor& scores) {
  TORCH_CHECK(boxes.device().is_cpu() && scores.device().is_cpu(), op, ": expected CPU tensors");
  TORCH_CHECK_TYPE(at::isFloatingType(boxes.scalar_type()), op, ": boxes must be floating point, got ",
                   boxes.scalar_type());
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(1) == 4, op, ": boxes must be [N, 4], got ", boxes.sizes());
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == boxes.size(0), op, ": scores must be [N] with N = ",
              boxes.size(0), ", got ", scores.sizes());
  TORCH_CHECK(boxes.scalar_type() == scores.scalar_type(), op, ": boxes and scores must share a dtype");
  TORCH_CHECK(boxes.size(0) < std::numeric_limits<int32_t>::max(), op, ": at most 2^31 - 2 boxes");
}

// float16 / bfloat16: computed in float32 (every half value is exact in float, so the order
// of the scores and the boxes are unchanged; the IoU is the float32 IoU of those boxes).
bool is_half(const at::Tensor& t) {
  return t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16;
}

at::Tensor nms_cpu(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  check_inputs("nms", boxes, scores);
  if (is_half(boxes)) return nms_cpu(boxes.to(at::kFloat), scores.to(at::kFloat), iou_threshold);
  const int64_t n = boxes.size(0);
  if (n == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  std::vector<int32_t> keep;
  std::vector<int32_t> order(n);
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "nms_cpu", [&] {
    using U = typename KeyOf<scalar_t>::U;
    const scalar_t* sp = scores.data_ptr<scalar_t>();
    const int64_t ss = scores.stride(0);
    std::vector<U> keys(n);
    for (int64_t i = 0; i < n; ++i) keys[i] = descending_key(sp[i * ss]);
    std::iota(order.begin(), order.end(), 0);
    radix_sort(keys, order);
    Gathered<scalar_t> g(n);
    gather(boxes, order.data(), n, g);
    std::vector<uint8_t> dead(n, 0);
    keep.reserve(n);
    nms_ranked<scalar_t>(g.view(), g.rank.get(), n, compare_threshold<scalar_t>(iou_threshold), -1, dead.data(),
                         [&](int32_t r) { keep.push_back(r); });
  });
  at::Tensor out = at::empty({static_cast<int64_t>(keep.size())}, boxes.options().dtype(at::kLong));
  int64_t* o = out.data_ptr<int64_t>();
  for (size_t k = 0; k < keep.size(); ++k) o[k] = order[keep[k]];
  return out;
}

std::tuple<at::Tensor, at::Tensor> nms_padded_cpu(const at::Tensor& boxes, const at::Tensor& scores,
                                                  double iou_threshold) {
  const at::Tensor keep = nms_cpu(boxes, scores, iou_threshold);
  at::Tensor out = at::full({boxes.size(0)}, -1, boxes.options().dtype(at::kLong));
  out.narrow(0, 0, keep.size(0)).copy_(keep);
  return {out, at::scalar_tensor(keep.size(0), boxes.options().dtype(at::kLong))};
}

// Dense group ids: direct offsets when the id range is small, else an open-addressing hash
// table (ids in order of first appearance). Returns the number of ids.
int64_t dense_group_ids(const int64_t* g, const int32_t* items, int64_t m, std::vector<int32_t>& gid) {
  gid.resize(m);
  int64_t lo = std::numeric_limits<int64_t>::max(), hi = std::numeric_limits<int64_t>::min();
  for (int64_t k = 0; k < m; ++k) {
    lo = std::min(lo, g[items[k]]);
    hi = std::max(hi, g[items[k]]);
  }
  // Unsigned difference: hi - lo cannot overflow that way.
  const uint64_t range = static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo);
  if (range < static_cast<uint64_t>(4 * m + 1024)) {
    for (int64_t k = 0; k < m; ++k) gid[k] = static_cast<int32_t>(static_cast<uint64_t>(g[items[k]]) - lo);
    return static_cast<int64_t>(range) + 1;
  }
  int64_t cap = 1;
  while (cap < 2 * m) cap <<= 1;
  std::vector<int64_t> slot_key(cap);
  std::vector<int32_t> slot_id(cap, -1);
  int32_t next = 0;
  for (int64_t k = 0; k < m; ++k) {
    const int64_t v = g[items[k]];
    uint64_t h = (static_cast<uint64_t>(v) * 0x9E3779B97F4A7C15ull) >> 20;
    for (;; ++h) {
      const int64_t s = static_cast<int64_t>(h & (cap - 1));
      if (slot_id[s] < 0) {
        slot_key[s] = v;
        slot_id[s] = next++;
      }
      if (slot_key[s] == v) {
        gid[k] = slot_id[s];
        break;
      }
    }
  }
  return next;
}

// Batched NMS, exact per group without coordinate offsets:
//   1. score prefilter; 2. stable descending radix sort of the scores; 3. stable counting
//   sort of that order by dense group id -> each group is a contiguous, rank-ordered span;
//   4. gather once; 5. NMS per group, spans spread over threads by size; 6. the output is
//   the score order of step 2 filtered by the kept flags, i.e. already by decreasing score
//   with lower indices first on ties (no final sort).
at::Tensor batched_nms_cpu(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                           double iou_threshold, std::optional<double> score_threshold,
                           std::optional<int64_t> max_per_group) {
  check_inputs("batched_nms", boxes, scores);
  TORCH_CHECK(idxs.device().is_cpu() && idxs.dim() == 1 && idxs.size(0) == boxes.size(0),
              "batched_nms: idxs must be a CPU tensor of shape [N]");
  TORCH_CHECK_TYPE(at::isIntegralType(idxs.scalar_type(), /*includeBool=*/false),
                   "batched_nms: idxs must have an integer dtype (group ids), got ", idxs.scalar_type());
  TORCH_CHECK_VALUE(!max_per_group.has_value() || *max_per_group >= 0,
                    "batched_nms: max_per_group must be >= 0 or None, got ", max_per_group.value_or(0));
  if (is_half(boxes)) {
    // The score threshold is compared in the scores' dtype, like `scores > score_threshold`.
    std::optional<double> st;
    if (score_threshold.has_value())
      st = boxes.scalar_type() == at::kHalf ? static_cast<double>(static_cast<at::Half>(*score_threshold))
                                            : static_cast<double>(static_cast<at::BFloat16>(*score_threshold));
    return batched_nms_cpu(boxes.to(at::kFloat), scores.to(at::kFloat), idxs, iou_threshold, st, max_per_group);
  }
  const int64_t n = boxes.size(0);
  // max_per_group = 0 keeps nothing.
  if (n == 0 || max_per_group == int64_t{0}) return at::empty({0}, boxes.options().dtype(at::kLong));
  const at::Tensor gl = idxs.to(at::kLong).contiguous();
  const int64_t* gp = gl.data_ptr<int64_t>();
  const int64_t max_keep = max_per_group.has_value() ? *max_per_group : -1;
  std::vector<int32_t> order;  // step 2's order, original indices
  std::vector<uint8_t> kept_flag(n, 0);
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "batched_nms_cpu", [&] {
    using U = typename KeyOf<scalar_t>::U;
    const scalar_t* sp = scores.data_ptr<scalar_t>();
    const int64_t ss = scores.stride(0);
    std::vector<U> keys;
    keys.reserve(n);
    order.reserve(n);
    // The threshold is compared in the scores' dtype, like `scores > score_threshold`.
    const scalar_t st = score_threshold.has_value() ? static_cast<scalar_t>(*score_threshold) : scalar_t(0);
    for (int64_t i = 0; i < n; ++i) {
      const scalar_t v = sp[i * ss];
      if (score_threshold.has_value() && !(v > st)) continue;
      keys.push_back(descending_key(v));
      order.push_back(static_cast<int32_t>(i));
    }
    const int64_t m = static_cast<int64_t>(order.size());
    if (m == 0) return;
    radix_sort(keys, order);

    std::vector<int32_t> gid;
    const int64_t ng = dense_group_ids(gp, order.data(), m, gid);
    std::vector<int64_t> gstart(ng + 1, 0);
    for (int64_t k = 0; k < m; ++k) ++gstart[gid[k] + 1];
    for (int64_t c = 0; c < ng; ++c) gstart[c + 1] += gstart[c];
    std::vector<int32_t> grouped(m);
    {
      std::vector<int64_t> fill(gstart.begin(), gstart.end() - 1);
      for (int64_t k = 0; k < m; ++k) grouped[fill[gid[k]]++] = order[k];
    }
    Gathered<scalar_t> g(m);
    gather(boxes, grouped.data(), m, g);
    std::vector<uint8_t> dead(m, 0);

    // Spans of non-empty groups, cut into chunks of about equal box counts so both threads
    // get the same work whatever the group sizes.
    std::vector<int64_t> spans;
    for (int64_t c = 0; c < ng; ++c)
      if (gstart[c + 1] > gstart[c]) spans.push_back(c);
    const int64_t nspan = static_cast<int64_t>(spans.size());
    const int64_t nchunk = std::min<int64_t>(nspan, 8 * at::get_num_threads());
    std::vector<int64_t> cut{0};
    for (int64_t k = 0, acc = 0; k < nspan; ++k) {
      acc += gstart[spans[k] + 1] - gstart[spans[k]];
      if (acc * nchunk >= m * static_cast<int64_t>(cut.size()) && k + 1 < nspan) cut.push_back(k + 1);
    }
    cut.push_back(nspan);
    const scalar_t thr = compare_threshold<scalar_t>(iou_threshold);
    const Boxes<scalar_t> all = g.view();
    at::parallel_for(0, static_cast<int64_t>(cut.size()) - 1, 1, [&](int64_t b, int64_t e) {
      for (int64_t ch = b; ch < e; ++ch) {
        for (int64_t k = cut[ch]; k < cut[ch + 1]; ++k) {
          const int64_t s = gstart[spans[k]], len = gstart[spans[k] + 1] - s;
          const Boxes<scalar_t> sub{all.x1 + s, all.y1 + s, all.x2 + s, all.y2 + s, all.area + s};
          // Local ranks 0..len-1 index this group's slice of dead[]; distinct groups write
          // distinct bytes of dead[] and kept_flag[], so threads never share a byte.
          int32_t* rk = g.rank.get() + s;
          for (int64_t p = 0; p < len; ++p) rk[p] = static_cast<int32_t>(p);
          nms_ranked<scalar_t>(sub, rk, len, thr, max_keep, dead.data() + s,
                               [&](int32_t r) { kept_flag[grouped[s + r]] = 1; });
        }
      }
    });
  });
  int64_t nk = 0;
  for (int32_t i : order) nk += kept_flag[i];
  at::Tensor out = at::empty({nk}, boxes.options().dtype(at::kLong));
  int64_t* o = out.data_ptr<int64_t>();
  for (int32_t i : order)
    if (kept_flag[i]) *o++ = i;
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastpapers, CPU, m) {
  m.impl("nms", &nms_cpu);
  m.impl("nms_padded", &nms_padded_cpu);
  m.impl("batched_nms", &batched_nms_cpu);
}

}  // namespace fastpapers
