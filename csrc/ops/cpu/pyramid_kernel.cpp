// CPU image pyramids with OpenCV's float semantics (contract 4) and their exact adjoints.
//
// Every op here is separable: out = A_v * X * A_h^T for two 1-D operators. A 1-D operator is
// a small CSR table with integer weights (the real weight is weight * scale), built from
// OpenCV's definitions with reflect-101 borders; an adjoint is the transposed table. Two
// stencils cover every interior:
//   decimate: out[j] = t[2j-2] + 4 t[2j-1] + 6 t[2j] + 4 t[2j+1] + t[2j+2]
//             (pyr_down, and the adjoint of pyr_up)
//   expand:   out[2x] = t[x-1] + 6 t[x] + t[x+1],  out[2x+1] = 4 (t[x] + t[x+1])
//             (pyr_up in polyphase form, no inserted zeros; and the adjoint of pyr_down)
// Only the few border entries of each row are read from the table.
//
// A 2-D op runs output row by output row and takes the cheaper axis first. Decimating
// horizontally (pyr_down, adjoint of pyr_up): each input row is deinterleaved and filtered once,
// in memory order, into a small cache of filtered rows, and the vertical taps combine those
// narrow rows, so only kept pixels are computed. Expanding horizontally (pyr_up, adjoint of
// pyr_down): the vertical taps combine narrow input rows, then the polyphase expansion writes
// the output row, so no inserted zero is ever multiplied. The Laplacian subtraction /
// reconstruction addition is the last pass's epilogue. Whole pyramids run plane by plane when
// there are enough planes to keep every thread busy, so each plane's levels stay in cache;
// otherwise level by level, parallel over rows.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <type_traits>
#include <cstdlib>
#include <utility>
#include <vector>

namespace fastpapers {
namespace {

constexpr double kBinomial[5] = {1, 4, 6, 4, 1};
// Per-axis scales of the integer weights: pyr_down filters with w/16; pyr_up with 2w/16 = w/8.
constexpr double kDownScale = 1.0 / 16.0;
constexpr double kUpScale = 1.0 / 8.0;
// Upper bound on the taps of one row of any operator here (5 for pyr_down; adjoints merge
// reflected border taps, which the assertion in push_row guards).
constexpr int64_t kMaxTaps = 8;

// OpenCV's borderInterpolate(p, n, BORDER_REFLECT_101).
int64_t reflect101(int64_t p, int64_t n) {
  if (n == 1) return 0;
  while (p < 0 || p >= n) p = p < 0 ? -p : 2 * n - 2 - p;
  return p;
}

enum class Stencil { Decimate, Expand };

struct Op1D {
  int64_t n_in = 0, n_out = 0;
  std::vector<int64_t> off{0};
  std::vector<int64_t> idx;
  std::vector<double> wt;
  Stencil stencil = Stencil::Decimate;
  double scale = 1.0;
  int64_t lo = 0, hi = 0;  // rows in [lo, hi) equal the stencil
  int64_t max_taps = 0;
};

using Taps = std::vector<std::pair<int64_t, double>>;

void add_tap(Taps& taps, int64_t j, double w) {
  for (auto& t : taps)
    if (t.first == j) {
      t.second += w;
      return;
    }
  taps.emplace_back(j, w);
}

void push_row(Op1D& op, Taps taps) {
  std::sort(taps.begin(), taps.end());
  for (auto& t : taps) {
    op.idx.push_back(t.first);
    op.wt.push_back(t.second);
  }
  op.off.push_back(static_cast<int64_t>(op.idx.size()));
  op.max_taps = std::max<int64_t>(op.max_taps, static_cast<int64_t>(taps.size()));
  TORCH_INTERNAL_ASSERT(op.max_taps <= kMaxTaps, "pyramid: a row has more taps than kMaxTaps");
}

bool matches_stencil(const Op1D& op, int64_t j) {
  const int64_t b = op.off[j], k = op.off[j + 1] - b;
  const int64_t* ix = op.idx.data() + b;
  const double* w = op.wt.data() + b;
  if (op.stencil == Stencil::Decimate) {
    if (k != 5) return false;
    for (int q = 0; q < 5; ++q)
      if (ix[q] != 2 * j - 2 + q || w[q] != kBinomial[q]) return false;
    return true;
  }
  const int64_t x = j / 2;
  if (j % 2 == 0)
    return k == 3 && ix[0] == x - 1 && ix[1] == x && ix[2] == x + 1 && w[0] == 1 && w[1] == 6 && w[2] == 1;
  return k == 2 && ix[0] == x && ix[1] == x + 1 && w[0] == 4 && w[1] == 4;
}

// The interior is the one contiguous run of rows that follow the stencil; everything outside
// it is a border row served from the table.
void find_interior(Op1D& op) {
  op.lo = op.hi = 0;
  int64_t first = -1, last = -1;
  for (int64_t j = 0; j < op.n_out; ++j)
    if (matches_stencil(op, j)) {
      if (first < 0) first = j;
      last = j;
    }
  if (first < 0) return;
  for (int64_t j = first; j <= last; ++j)
    TORCH_INTERNAL_ASSERT(matches_stencil(op, j), "pyramid: stencil run broken at row ", j);
  op.lo = first;
  op.hi = last + 1;
}

Op1D make_down(int64_t n) {
  Op1D op;
  op.n_in = n;
  op.n_out = (n + 1) / 2;
  op.stencil = Stencil::Decimate;
  op.scale = kDownScale;
  for (int64_t i = 0; i < op.n_out; ++i) {
    Taps taps;
    for (int k = 0; k < 5; ++k) add_tap(taps, reflect101(2 * i + k - 2, n), kBinomial[k]);
    push_row(op, std::move(taps));
  }
  find_interior(op);
  return op;
}

// pyr_up from n to m (2n, or 2n +- 1 when m is odd). Row t < 2n filters the zero-inserted signal
// of length 2n (reflect-101 on that length) with 2w; only even positions hold samples, so each
// row keeps 2 or 3 taps. OpenCV fills the extra row of m = 2n + 1 by copying row 2n - 2 and the
// extra column by copying column 2n - 1 (pyramids.cpp, pyrUp_).
Op1D make_up(int64_t n, int64_t m, bool vertical) {
  Op1D op;
  op.n_in = n;
  op.n_out = m;
  op.stencil = Stencil::Expand;
  op.scale = kUpScale;
  std::vector<Taps> rows;
  for (int64_t t = 0; t < std::min(m, 2 * n); ++t) {
    Taps taps;
    for (int k = 0; k < 5; ++k) {
      const int64_t p = reflect101(t + k - 2, 2 * n);
      if (p % 2 == 0) add_tap(taps, p / 2, kBinomial[k]);
    }
    rows.push_back(std::move(taps));
  }
  if (m == 2 * n + 1) rows.push_back(rows[vertical ? 2 * n - 2 : 2 * n - 1]);
  for (auto& r : rows) push_row(op, std::move(r));
  find_interior(op);
  return op;
}

Op1D transpose(const Op1D& a) {
  Op1D t;
  t.n_in = a.n_out;
  t.n_out = a.n_in;
  t.stencil = a.stencil == Stencil::Decimate ? Stencil::Expand : Stencil::Decimate;
  t.scale = a.scale;
  std::vector<int64_t> count(t.n_out + 1, 0);
  for (int64_t e = 0; e < static_cast<int64_t>(a.idx.size()); ++e) ++count[a.idx[e] + 1];
  t.off.assign(t.n_out + 1, 0);
  for (int64_t j = 0; j < t.n_out; ++j) t.off[j + 1] = t.off[j] + count[j + 1];
  t.idx.resize(a.idx.size());
  t.wt.resize(a.wt.size());
  std::vector<int64_t> fill(t.off.begin(), t.off.end() - 1);
  // Rows of `a` are visited in increasing order, so each transposed row comes out sorted.
  for (int64_t i = 0; i < a.n_out; ++i)
    for (int64_t e = a.off[i]; e < a.off[i + 1]; ++e) {
      const int64_t pos = fill[a.idx[e]]++;
      t.idx[pos] = i;
      t.wt[pos] = a.wt[e];
    }
  for (int64_t j = 0; j < t.n_out; ++j) t.max_taps = std::max(t.max_taps, t.off[j + 1] - t.off[j]);
  TORCH_INTERNAL_ASSERT(t.max_taps <= kMaxTaps, "pyramid: a row has more taps than kMaxTaps");
  find_interior(t);
  return t;
}

// tmp[c] = sum_k w_k * plane[row_k][c]; whole rows, so every case is a vectorised loop.
template <typename T>
void vertical_taps(const T* plane, int64_t w, const int64_t* idx, const double* wt, int64_t k,
                   T* __restrict tmp) {
  const T* r0 = plane + idx[0] * w;
  const T w0 = static_cast<T>(wt[0]);
  if (k == 3) {
    const T* __restrict a = r0;
    const T* __restrict b = plane + idx[1] * w;
    const T* __restrict c = plane + idx[2] * w;
    const T w1 = static_cast<T>(wt[1]), w2 = static_cast<T>(wt[2]);
    for (int64_t x = 0; x < w; ++x) tmp[x] = w0 * a[x] + w1 * b[x] + w2 * c[x];
    return;
  }
  if (k == 2) {
    const T* __restrict a = r0;
    const T* __restrict b = plane + idx[1] * w;
    const T w1 = static_cast<T>(wt[1]);
    for (int64_t x = 0; x < w; ++x) tmp[x] = w0 * a[x] + w1 * b[x];
    return;
  }
  for (int64_t x = 0; x < w; ++x) tmp[x] = w0 * r0[x];
  for (int64_t q = 1; q < k; ++q) {
    const T* __restrict r = plane + idx[q] * w;
    const T wq = static_cast<T>(wt[q]);
    for (int64_t x = 0; x < w; ++x) tmp[x] += wq * r[x];
  }
}

// MODE 0: out = s * acc; +1: out = other + s * acc; -1: out = other - s * acc.
template <typename T, int MODE>
inline T epilogue(T acc, T s, const T* other, int64_t j) {
  if constexpr (MODE == 0) {
    return s * acc;
  } else if constexpr (MODE > 0) {
    return other[j] + s * acc;
  } else {
    return other[j] - s * acc;
  }
}

// Even samples to te, odd samples to to, so the decimating stencil reads contiguous memory.
template <typename T>
void deinterleave(const T* __restrict src, int64_t n, T* __restrict te, T* __restrict to) {
  int64_t c = 0;
#if defined(__AVX2__)
  if constexpr (std::is_same_v<T, float>) {
    for (; c + 16 <= n; c += 16) {
      const __m256 a = _mm256_loadu_ps(src + c), b = _mm256_loadu_ps(src + c + 8);
      // [a0 a2 b0 b2 | a4 a6 b4 b6] -> 64-bit lanes (0, 2, 1, 3) -> a0 a2 a4 a6 b0 b2 b4 b6.
      const __m256 ev = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
      const __m256 od = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
      _mm256_storeu_ps(te + c / 2, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(ev), _MM_SHUFFLE(3, 1, 2, 0))));
      _mm256_storeu_ps(to + c / 2, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(od), _MM_SHUFFLE(3, 1, 2, 0))));
    }
  }
#endif
  for (; c < n; ++c) (c & 1 ? to : te)[c >> 1] = src[c];
}

// One row through a decimating 1-D operator (integer weights, no scale). `scratch` holds n_in.
template <typename T>
void decimate_row(const T* __restrict src, T* __restrict dst, const Op1D& h, T* __restrict scratch) {
  T* te = scratch;
  T* to = scratch + (h.n_in + 1) / 2;
  deinterleave(src, h.n_in, te, to);
  auto border = [&](int64_t j) {
    T acc = 0;
    for (int64_t e = h.off[j]; e < h.off[j + 1]; ++e) {
      const int64_t i = h.idx[e];
      acc += static_cast<T>(h.wt[e]) * ((i & 1) ? to[i >> 1] : te[i >> 1]);
    }
    dst[j] = acc;
  };
  for (int64_t j = 0; j < h.lo; ++j) border(j);
  // t[2j-2], t[2j-1], t[2j], t[2j+1], t[2j+2] = te[j-1], to[j-1], te[j], to[j], te[j+1].
  for (int64_t j = h.lo; j < h.hi; ++j) dst[j] = (te[j - 1] + te[j + 1]) + T(4) * (to[j - 1] + to[j]) + T(6) * te[j];
  for (int64_t j = h.hi; j < h.n_out; ++j) border(j);
}

// One row through an expanding 1-D operator (polyphase: 3 taps for even, 2 for odd outputs),
// with the scale and the epilogue.
template <typename T, int MODE>
void expand_row(const T* __restrict t, T* __restrict out, const T* __restrict other, const Op1D& h, T s) {
  auto border = [&](int64_t j) {
    T acc = 0;
    for (int64_t e = h.off[j]; e < h.off[j + 1]; ++e) acc += static_cast<T>(h.wt[e]) * t[h.idx[e]];
    out[j] = epilogue<T, MODE>(acc, s, other, j);
  };
  // Pairs (2x, 2x+1) with both outputs inside the interior [lo, hi).
  const int64_t xs = (h.lo + 1) / 2;
  const int64_t xe = std::max(xs, h.hi / 2);
  for (int64_t j = 0; j < 2 * xs && j < h.n_out; ++j) border(j);
  for (int64_t x = xs; x < xe; ++x) {
    const T even = (t[x - 1] + t[x + 1]) + T(6) * t[x];
    const T odd = T(4) * (t[x] + t[x + 1]);
    out[2 * x] = epilogue<T, MODE>(even, s, other, 2 * x);
    out[2 * x + 1] = epilogue<T, MODE>(odd, s, other, 2 * x + 1);
  }
  for (int64_t j = 2 * xe; j < h.n_out; ++j) border(j);
}

// out[x] = epilogue(s * sum_k w_k rows[k][x]).
template <typename T, int MODE>
void combine_rows(const T* const* rows, const double* wt, int64_t k, int64_t n, T s, const T* __restrict other,
                  T* __restrict out) {
  if (k == 5) {
    const T* __restrict a = rows[0];
    const T* __restrict b = rows[1];
    const T* __restrict c = rows[2];
    const T* __restrict d = rows[3];
    const T* __restrict e = rows[4];
    const T w0 = static_cast<T>(wt[0]), w1 = static_cast<T>(wt[1]), w2 = static_cast<T>(wt[2]),
            w3 = static_cast<T>(wt[3]), w4 = static_cast<T>(wt[4]);
    for (int64_t x = 0; x < n; ++x)
      out[x] = epilogue<T, MODE>(w0 * a[x] + w1 * b[x] + w2 * c[x] + w3 * d[x] + w4 * e[x], s, other, x);
    return;
  }
  if (k == 3) {
    const T* __restrict a = rows[0];
    const T* __restrict b = rows[1];
    const T* __restrict c = rows[2];
    const T w0 = static_cast<T>(wt[0]), w1 = static_cast<T>(wt[1]), w2 = static_cast<T>(wt[2]);
    for (int64_t x = 0; x < n; ++x) out[x] = epilogue<T, MODE>(w0 * a[x] + w1 * b[x] + w2 * c[x], s, other, x);
    return;
  }
  for (int64_t x = 0; x < n; ++x) {
    T acc = 0;
    for (int64_t q = 0; q < k; ++q) acc += static_cast<T>(wt[q]) * rows[q][x];
    out[x] = epilogue<T, MODE>(acc, s, other, x);
  }
}

// Per-task buffers, grown on demand: a row buffer and a small cache of horizontally filtered
// input rows tagged by row index.
template <typename T>
struct Workspace {
  std::vector<T> row, cache;
  std::vector<int64_t> tag, used;
  int64_t clock = 0;

  T* row_buffer(int64_t n) {
    if (static_cast<int64_t>(row.size()) < n) row.resize(n);
    return row.data();
  }
  void reset_cache(int64_t slots, int64_t width) {
    if (static_cast<int64_t>(cache.size()) < slots * width) cache.resize(slots * width);
    tag.assign(slots, -1);
    used.assign(slots, 0);
  }
};

// Output rows [r0, r1) of one plane. The cheaper side goes first: for a decimating horizontal
// operator each input row is filtered once (kept in the row cache while the vertical taps
// need it) and streamed in order; for an expanding one the vertical taps combine narrow input
// rows and the polyphase expansion writes the output row.
template <typename T, int MODE>
void plane_rows(const T* in, T* out, const T* other, const Op1D& v, const Op1D& h, T s, int64_t r0, int64_t r1,
                Workspace<T>& ws) {
  const int64_t win = h.n_in, wout = h.n_out;
  if (h.stencil == Stencil::Expand) {
    T* tmp = ws.row_buffer(win);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = v.off[r];
      vertical_taps<T>(in, win, v.idx.data() + b, v.wt.data() + b, v.off[r + 1] - b, tmp);
      expand_row<T, MODE>(tmp, out + r * wout, MODE == 0 ? nullptr : other + r * wout, h, s);
    }
    return;
  }
  // A row's taps are a few consecutive input rows; two spare slots let consecutive output rows
  // share the rows they overlap on.
  const int64_t slots = v.max_taps + 2;
  ws.reset_cache(slots, wout);
  T* scratch = ws.row_buffer(win + 1);
  const T* rows[kMaxTaps];
  int64_t slot_of[kMaxTaps];
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t b = v.off[r], k = v.off[r + 1] - b;
    const int64_t* idx = v.idx.data() + b;
    ++ws.clock;
    for (int64_t q = 0; q < k; ++q) {
      slot_of[q] = -1;
      for (int64_t sl = 0; sl < slots; ++sl)
        if (ws.tag[sl] == idx[q]) {
          slot_of[q] = sl;
          ws.used[sl] = ws.clock;
          break;
        }
    }
    for (int64_t q = 0; q < k; ++q) {
      if (slot_of[q] >= 0) continue;
      // Least recently used slot; slots used by this row carry the current clock, so with
      // slots > k they are never chosen.
      int64_t best = 0;
      for (int64_t sl = 1; sl < slots; ++sl)
        if (ws.used[sl] < ws.used[best]) best = sl;
      ws.tag[best] = idx[q];
      ws.used[best] = ws.clock;
      slot_of[q] = best;
      decimate_row<T>(in + idx[q] * win, ws.cache.data() + best * wout, h, scratch);
    }
    for (int64_t q = 0; q < k; ++q) rows[q] = ws.cache.data() + slot_of[q] * wout;
    combine_rows<T, MODE>(rows, v.wt.data() + b, k, wout, s, MODE == 0 ? nullptr : other + r * wout,
                          out + r * wout);
  }
}

// One separable op over `planes` planes, parallel over (plane, output row).
template <typename T, int MODE>
void run_level(const T* in, T* out, const T* other, int64_t planes, const Op1D& v, const Op1D& h) {
  const int64_t hin = v.n_in, hout = v.n_out, win = h.n_in, wout = h.n_out;
  const T s = static_cast<T>(v.scale * h.scale);
  const int64_t rows = planes * hout;
  // About 16k output-and-input elements per task keeps scheduling overhead small.
  const int64_t grain = std::max<int64_t>(1, 16384 / (win + wout));
  at::parallel_for(0, rows, grain, [&](int64_t b, int64_t e) {
    Workspace<T> ws;
    for (int64_t r = b; r < e;) {
      const int64_t p = r / hout, r0 = r % hout, r1 = std::min(hout, r0 + (e - r));
      plane_rows<T, MODE>(in + p * hin * win, out + p * hout * wout, MODE == 0 ? nullptr : other + p * hout * wout,
                          v, h, s, r0, r1, ws);
      r += r1 - r0;
    }
  });
}

int64_t planes_of(const at::Tensor& t) { return t.size(0) * t.size(1); }

void check_image(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "pyramid CPU kernel: ", name, " must be a CPU tensor");
  TORCH_CHECK(t.dim() == 4, "pyramid: ", name, " must be [B, C, H, W], got ", t.sizes());
  TORCH_CHECK(t.size(2) >= 1 && t.size(3) >= 1, "pyramid: ", name, " must have H, W >= 1, got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, "pyramid: ", name,
              " must be float32 or float64, got ", t.scalar_type());
}

bool up_size_ok(int64_t n, int64_t m) { return m >= 1 && std::abs(m - 2 * n) == m % 2; }

void check_up(int64_t h, int64_t w, int64_t oh, int64_t ow, const char* what) {
  TORCH_CHECK(up_size_ok(h, oh) && up_size_ok(w, ow), what, ": output size (", oh, ", ", ow,
              ") must be (2H, 2W) = (", 2 * h, ", ", 2 * w, ") or one less/more where odd");
}

template <int MODE>
at::Tensor separable(const at::Tensor& x, const Op1D& v, const Op1D& h, const at::Tensor* other) {
  at::Tensor xc = x.contiguous();
  at::Tensor out = at::empty({x.size(0), x.size(1), v.n_out, h.n_out}, x.options());
  at::Tensor oc;
  if (other != nullptr) oc = other->contiguous();
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fastpapers_pyramid", [&] {
    run_level<scalar_t, MODE>(xc.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
                              other == nullptr ? nullptr : oc.const_data_ptr<scalar_t>(), planes_of(xc), v, h);
  });
  return out;
}

at::Tensor pyr_down_cpu(const at::Tensor& x) {
  check_image(x, "x");
  return separable<0>(x, make_down(x.size(2)), make_down(x.size(3)), nullptr);
}

at::Tensor pyr_up_cpu(const at::Tensor& x, at::IntArrayRef size) {
  check_image(x, "x");
  TORCH_CHECK(size.size() == 2, "pyr_up: size must be (H, W)");
  check_up(x.size(2), x.size(3), size[0], size[1], "pyr_up");
  return separable<0>(x, make_up(x.size(2), size[0], true), make_up(x.size(3), size[1], false), nullptr);
}

at::Tensor pyr_down_backward_cpu(const at::Tensor& grad, at::IntArrayRef input_size) {
  check_image(grad, "grad");
  TORCH_CHECK(input_size.size() == 2 && input_size[0] >= 1 && input_size[1] >= 1 &&
                  (input_size[0] + 1) / 2 == grad.size(2) && (input_size[1] + 1) / 2 == grad.size(3),
              "pyr_down_backward: grad ", grad.sizes(), " is not pyr_down's output for input size ", input_size);
  return separable<0>(grad, transpose(make_down(input_size[0])), transpose(make_down(input_size[1])), nullptr);
}

at::Tensor pyr_up_backward_cpu(const at::Tensor& grad, at::IntArrayRef input_size) {
  check_image(grad, "grad");
  TORCH_CHECK(input_size.size() == 2 && input_size[0] >= 1 && input_size[1] >= 1,
              "pyr_up_backward: input_size must be two positive ints");
  check_up(input_size[0], input_size[1], grad.size(2), grad.size(3), "pyr_up_backward");
  return separable<0>(grad, transpose(make_up(input_size[0], grad.size(2), true)),
                      transpose(make_up(input_size[1], grad.size(3), false)), nullptr);
}

void check_pair(const at::Tensor& fine, const at::Tensor& coarse, const char* what) {
  check_image(fine, "fine");
  check_image(coarse, "coarse");
  TORCH_CHECK(fine.size(0) == coarse.size(0) && fine.size(1) == coarse.size(1) &&
                  fine.scalar_type() == coarse.scalar_type(),
              what, ": fine ", fine.sizes(), " and coarse ", coarse.sizes(), " must share B, C and dtype");
  check_up(coarse.size(2), coarse.size(3), fine.size(2), fine.size(3), what);
}

at::Tensor laplacian_level_cpu(const at::Tensor& fine, const at::Tensor& coarse) {
  check_pair(fine, coarse, "laplacian_level");
  return separable<-1>(coarse, make_up(coarse.size(2), fine.size(2), true),
                       make_up(coarse.size(3), fine.size(3), false), &fine);
}

at::Tensor pyr_up_add_cpu(const at::Tensor& coarse, const at::Tensor& residual) {
  check_pair(residual, coarse, "pyr_up_add");
  return separable<1>(coarse, make_up(coarse.size(2), residual.size(2), true),
                      make_up(coarse.size(3), residual.size(3), false), &residual);
}

// The operators between consecutive levels of a pyramid whose finest level is h x w.
struct LevelOps {
  std::vector<int64_t> hs, ws;
  std::vector<Op1D> dv, dh, uv, uh;  // down from level i to i+1; up from i+1 back to i
};

LevelOps level_ops(std::vector<int64_t> hs, std::vector<int64_t> ws, bool down, bool up) {
  LevelOps ops;
  for (size_t i = 0; i + 1 < hs.size(); ++i) {
    if (down) {
      ops.dv.push_back(make_down(hs[i]));
      ops.dh.push_back(make_down(ws[i]));
    }
    if (up) {
      ops.uv.push_back(make_up(hs[i + 1], hs[i], true));
      ops.uh.push_back(make_up(ws[i + 1], ws[i], false));
    }
  }
  ops.hs = std::move(hs);
  ops.ws = std::move(ws);
  return ops;
}

LevelOps halving_ops(int64_t h, int64_t w, int64_t levels, bool up) {
  std::vector<int64_t> hs{h}, ws{w};
  for (int64_t i = 1; i < levels; ++i) {
    hs.push_back((hs.back() + 1) / 2);
    ws.push_back((ws.back() + 1) / 2);
  }
  return level_ops(std::move(hs), std::move(ws), true, up);
}

// Input elements (finest level) below which one more thread costs more than it saves.
constexpr int64_t kWorkPerThread = 65536;

// Plane-by-plane scheduling pays off when every thread gets several planes, and for small
// work, which then runs on the calling thread alone.
bool plane_parallel(int64_t planes, int64_t elements) {
  return elements < 2 * kWorkPerThread || planes >= 4 * static_cast<int64_t>(at::get_num_threads());
}

// Runs body(p, state) for every plane p; each worker builds its state with make_state(). Planes
// are claimed one at a time from a shared counter rather than split into fixed shares, so a
// worker that the OS pauses (shared machines) does not hold up a fixed block of planes.
template <typename MakeState, typename Body>
void for_each_plane(int64_t planes, int64_t elements, MakeState make_state, Body body) {
  const int64_t workers = std::min<int64_t>({planes, static_cast<int64_t>(at::get_num_threads()),
                                             std::max<int64_t>(1, elements / kWorkPerThread)});
  if (workers <= 1) {
    auto state = make_state();
    for (int64_t p = 0; p < planes; ++p) body(p, state);
    return;
  }
  std::atomic<int64_t> next{0};
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    auto state = make_state();
    for (int64_t p = next.fetch_add(1); p < planes; p = next.fetch_add(1)) body(p, state);
  });
}

std::vector<at::Tensor> pyr_down_levels_cpu(const at::Tensor& x, int64_t count) {
  check_image(x, "x");
  TORCH_CHECK(count >= 0, "pyr_down_levels: count must be >= 0, got ", count);
  at::Tensor xc = x.contiguous();
  const LevelOps ops = halving_ops(x.size(2), x.size(3), count + 1, false);
  std::vector<at::Tensor> outs;
  for (int64_t i = 1; i <= count; ++i) outs.push_back(at::empty({x.size(0), x.size(1), ops.hs[i], ops.ws[i]}, x.options()));
  const int64_t planes = planes_of(xc);
  if (planes == 0 || count == 0) return outs;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pyr_down_levels_cpu", [&] {
    using T = scalar_t;
    std::vector<const T*> src{xc.const_data_ptr<T>()};
    std::vector<T*> dst;
    for (auto& o : outs) {
      dst.push_back(o.mutable_data_ptr<T>());
      src.push_back(o.const_data_ptr<T>());
    }
    auto area = [&](size_t i) { return ops.hs[i] * ops.ws[i]; };
    if (plane_parallel(planes, xc.numel())) {
      for_each_plane(
          planes, xc.numel(), [] { return Workspace<T>(); },
          [&](int64_t p, Workspace<T>& ws) {
            for (int64_t i = 0; i < count; ++i)
              plane_rows<T, 0>(src[i] + p * area(i), dst[i] + p * area(i + 1), nullptr, ops.dv[i], ops.dh[i],
                               static_cast<T>(kDownScale * kDownScale), 0, ops.hs[i + 1], ws);
          });
    } else {
      for (int64_t i = 0; i < count; ++i) run_level<T, 0>(src[i], dst[i], nullptr, planes, ops.dv[i], ops.dh[i]);
    }
  });
  return outs;
}

std::vector<at::Tensor> laplacian_pyramid_cpu(const at::Tensor& x, int64_t levels) {
  check_image(x, "x");
  TORCH_CHECK(levels >= 1, "laplacian_pyramid: levels must be >= 1, got ", levels);
  at::Tensor xc = x.contiguous();
  const LevelOps ops = halving_ops(x.size(2), x.size(3), levels, true);
  std::vector<at::Tensor> outs;
  for (int64_t i = 0; i < levels; ++i) outs.push_back(at::empty({x.size(0), x.size(1), ops.hs[i], ops.ws[i]}, x.options()));
  const int64_t planes = planes_of(xc);
  if (planes == 0) return outs;
  if (levels == 1) {
    outs[0].copy_(xc);
    return outs;
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "laplacian_pyramid_cpu", [&] {
    using T = scalar_t;
    const T sd = static_cast<T>(kDownScale * kDownScale), su = static_cast<T>(kUpScale * kUpScale);
    auto area = [&](int64_t i) { return ops.hs[i] * ops.ws[i]; };
    const T* xp = xc.const_data_ptr<T>();
    if (plane_parallel(planes, xc.numel())) {
      // Gaussian levels 1 .. levels-2 ping-pong through two scratch planes; the coarsest
      // Gaussian level is an output.
      for_each_plane(
          planes, xc.numel(), [&] { return std::make_pair(std::vector<T>(2 * area(1)), Workspace<T>()); },
          [&](int64_t p, std::pair<std::vector<T>, Workspace<T>>& state) {
            auto& [scratch, ws] = state;
            const T* g = xp + p * area(0);
            for (int64_t i = 0; i + 1 < levels; ++i) {
              T* next = i + 2 == levels ? outs[levels - 1].mutable_data_ptr<T>() + p * area(levels - 1)
                                        : scratch.data() + (i % 2) * area(1);
              plane_rows<T, 0>(g, next, nullptr, ops.dv[i], ops.dh[i], sd, 0, ops.hs[i + 1], ws);
              plane_rows<T, -1>(next, outs[i].mutable_data_ptr<T>() + p * area(i), g, ops.uv[i], ops.uh[i], su, 0,
                                ops.hs[i], ws);
              g = next;
            }
          });
    } else {
      std::vector<at::Tensor> gauss{xc};
      for (int64_t i = 1; i + 1 < levels; ++i) gauss.push_back(at::empty_like(outs[i]));
      gauss.push_back(outs[levels - 1]);
      for (int64_t i = 0; i + 1 < levels; ++i) {
        run_level<T, 0>(gauss[i].const_data_ptr<T>(), gauss[i + 1].mutable_data_ptr<T>(), nullptr, planes,
                        ops.dv[i], ops.dh[i]);
        run_level<T, -1>(gauss[i + 1].const_data_ptr<T>(), outs[i].mutable_data_ptr<T>(), gauss[i].const_data_ptr<T>(),
                         planes, ops.uv[i], ops.uh[i]);
      }
    }
  });
  return outs;
}

at::Tensor laplacian_reconstruct_cpu(at::TensorList pyramid) {
  const int64_t levels = static_cast<int64_t>(pyramid.size());
  TORCH_CHECK(levels >= 1, "laplacian_reconstruct: pyramid must hold at least one level");
  std::vector<at::Tensor> lap;
  std::vector<int64_t> hs, ws;
  for (int64_t i = 0; i < levels; ++i) {
    check_image(pyramid[i], "pyramid[i]");
    TORCH_CHECK(pyramid[i].size(0) == pyramid[0].size(0) && pyramid[i].size(1) == pyramid[0].size(1) &&
                    pyramid[i].scalar_type() == pyramid[0].scalar_type(),
                "laplacian_reconstruct: every level must share B, C and dtype with level 0");
    if (i > 0) check_up(pyramid[i].size(2), pyramid[i].size(3), hs.back(), ws.back(), "laplacian_reconstruct");
    lap.push_back(pyramid[i].contiguous());
    hs.push_back(pyramid[i].size(2));
    ws.push_back(pyramid[i].size(3));
  }
  at::Tensor out = at::empty_like(lap[0]);
  const int64_t planes = planes_of(lap[0]);
  if (planes == 0) return out;
  if (levels == 1) return out.copy_(lap[0]);
  const LevelOps ops = level_ops(hs, ws, false, true);
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "laplacian_reconstruct_cpu", [&] {
    using T = scalar_t;
    const T su = static_cast<T>(kUpScale * kUpScale);
    auto area = [&](int64_t i) { return ops.hs[i] * ops.ws[i]; };
    T* op = out.mutable_data_ptr<T>();
    if (plane_parallel(planes, out.numel())) {
      for_each_plane(
          planes, out.numel(), [&] { return std::make_pair(std::vector<T>(levels > 2 ? 2 * area(1) : 0), Workspace<T>()); },
          [&](int64_t p, std::pair<std::vector<T>, Workspace<T>>& state) {
            auto& [scratch, ws] = state;
            const T* g = lap[levels - 1].const_data_ptr<T>() + p * area(levels - 1);
            for (int64_t i = levels - 2; i >= 0; --i) {
              T* dst = i == 0 ? op + p * area(0) : scratch.data() + (i % 2) * area(1);
              plane_rows<T, 1>(g, dst, lap[i].const_data_ptr<T>() + p * area(i), ops.uv[i], ops.uh[i], su, 0,
                               ops.hs[i], ws);
              g = dst;
            }
          });
    } else {
      at::Tensor g = lap[levels - 1];
      for (int64_t i = levels - 2; i >= 0; --i) {
        at::Tensor dst = i == 0 ? out : at::empty_like(lap[i]);
        run_level<T, 1>(g.const_data_ptr<T>(), dst.mutable_data_ptr<T>(), lap[i].const_data_ptr<T>(), planes,
                        ops.uv[i], ops.uh[i]);
        g = dst;
      }
    }
  });
  return out;
}

// The adjoints of the whole-pyramid ops, level by level (each level parallel over rows).
// Shapes are checked here; argument names and messages for users come from the Python wrappers.
void check_grads(at::TensorList grads, const char* what) {
  TORCH_CHECK(!grads.empty(), what, ": grads must hold at least one tensor");
  for (const auto& g : grads) {
    check_image(g, "grads[i]");
    TORCH_CHECK(g.size(0) == grads[0].size(0) && g.size(1) == grads[0].size(1) &&
                    g.scalar_type() == grads[0].scalar_type(),
                what, ": every grad must share B, C and dtype with grads[0]");
  }
}

at::Tensor pyr_down_levels_backward_cpu(at::TensorList grads, at::IntArrayRef input_size) {
  check_grads(grads, "pyr_down_levels_backward");
  TORCH_CHECK(input_size.size() == 2 && input_size[0] >= 1 && input_size[1] >= 1,
              "pyr_down_levels_backward: input_size must be two positive ints");
  std::vector<int64_t> hs{input_size[0]}, ws{input_size[1]};
  for (const auto& g : grads) {
    TORCH_CHECK(g.size(2) == (hs.back() + 1) / 2 && g.size(3) == (ws.back() + 1) / 2,
                "pyr_down_levels_backward: grad ", g.sizes(), " is not the next level of ", hs.back(), "x", ws.back());
    hs.push_back(g.size(2));
    ws.push_back(g.size(3));
  }
  // G_{i+1} = D_i G_i, so dG_i = g_i + D_i^T dG_{i+1} from the coarsest level, and dx = D_0^T dG_1.
  at::Tensor acc = grads.back();
  for (int64_t i = static_cast<int64_t>(grads.size()) - 1; i >= 1; --i) {
    const at::Tensor other = grads[i - 1].contiguous();
    acc = separable<1>(acc, transpose(make_down(hs[i])), transpose(make_down(ws[i])), &other);
  }
  return separable<0>(acc, transpose(make_down(hs[0])), transpose(make_down(ws[0])), nullptr);
}

at::Tensor laplacian_pyramid_backward_cpu(at::TensorList grads) {
  check_grads(grads, "laplacian_pyramid_backward");
  const int64_t n = static_cast<int64_t>(grads.size());
  for (int64_t i = 1; i < n; ++i)
    TORCH_CHECK(grads[i].size(2) == (grads[i - 1].size(2) + 1) / 2 && grads[i].size(3) == (grads[i - 1].size(3) + 1) / 2,
                "laplacian_pyramid_backward: grads[", i, "] ", grads[i].sizes(), " is not the next level of ",
                grads[i - 1].sizes());
  if (n == 1) return grads[0].clone(at::MemoryFormat::Contiguous);
  // L_i = G_i - U_i G_{i+1} (i < n-1), L_{n-1} = G_{n-1}, G_{i+1} = D_i G_i; from the coarsest
  // level: dG_i = (dL_i - U_{i-1}^T dL_{i-1}) + D_i^T dG_{i+1}.
  auto h = [&](int64_t i) { return grads[i].size(2); };
  auto w = [&](int64_t i) { return grads[i].size(3); };
  auto residual_t = [&](int64_t i) {  // dL_i - U_{i-1}^T dL_{i-1}
    const at::Tensor other = grads[i].contiguous();
    return separable<-1>(grads[i - 1], transpose(make_up(h(i), h(i - 1), true)),
                         transpose(make_up(w(i), w(i - 1), false)), &other);
  };
  at::Tensor acc = residual_t(n - 1);
  for (int64_t i = n - 2; i >= 0; --i) {
    const at::Tensor other = i > 0 ? residual_t(i) : grads[0].contiguous();
    acc = separable<1>(acc, transpose(make_down(h(i))), transpose(make_down(w(i))), &other);
  }
  return acc;
}

std::vector<at::Tensor> laplacian_reconstruct_backward_cpu(const at::Tensor& grad, at::IntArrayRef heights,
                                                           at::IntArrayRef widths) {
  check_image(grad, "grad");
  TORCH_CHECK(heights.size() == widths.size(), "laplacian_reconstruct_backward: heights and widths must have one "
              "entry per level below level 0, got ", heights.size(), " and ", widths.size());
  // out = L_0 + U_0 (L_1 + U_1 (...)): dL_0 = grad (the caller's, not returned here, so that
  // no copy is made), dL_{i+1} = U_i^T dL_i.
  std::vector<at::Tensor> out;
  at::Tensor g = grad;
  for (size_t i = 0; i < heights.size(); ++i) {
    check_up(heights[i], widths[i], g.size(2), g.size(3), "laplacian_reconstruct_backward");
    g = separable<0>(g, transpose(make_up(heights[i], g.size(2), true)), transpose(make_up(widths[i], g.size(3), false)),
                     nullptr);
    out.push_back(g);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastpapers, CPU, m) {
  m.impl("pyr_down", &pyr_down_cpu);
  m.impl("pyr_up", &pyr_up_cpu);
  m.impl("pyr_down_backward", &pyr_down_backward_cpu);
  m.impl("pyr_up_backward", &pyr_up_backward_cpu);
  m.impl("laplacian_level", &laplacian_level_cpu);
  m.impl("pyr_up_add", &pyr_up_add_cpu);
  m.impl("pyr_down_levels", &pyr_down_levels_cpu);
  m.impl("laplacian_pyramid", &laplacian_pyramid_cpu);
  m.impl("laplacian_reconstruct", &laplacian_reconstruct_cpu);
  m.impl("pyr_down_levels_backward", &pyr_down_levels_backward_cpu);
  m.impl("laplacian_pyramid_backward", &laplacian_pyramid_backward_cpu);
  m.impl("laplacian_reconstruct_backward", &laplacian_reconstruct_backward_cpu);
}

}  // namespace fastpapers
