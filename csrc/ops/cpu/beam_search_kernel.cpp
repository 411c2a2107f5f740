// CPU kernel of the fused beam-search step: log_softmax over the vocabulary, plus the running
// beam score, plus the top-C continuations of each sentence, in one pass over the logits.
//
// Phase 1 (threaded over the B*K rows): the row is read once, in L1-sized blocks. Each block
// gives its max (the running max m and sum of exp(x - m) are rescaled when it grows: the online
// softmax normaliser), its sum of exponentials (a second read, from L1), and, only when its max
// beats the current C-th best logit of the row, a vectorised compare that inserts the few
// winners into a small sorted list. Within a row the ranking by logit equals the ranking by
// log-probability + beam score, so the list holds raw logits until the normaliser is known.
// Phase 2 (serial over the B sentences): a K-way merge of the K sorted row lists.
// Order everywhere: larger score first, equal scores by lower index (token, then beam*V+token).
// Bad values: a sentence with a row holding NaN/+inf logits, no finite logit, or a NaN/+inf beam
// score gets NaN for all its scores (found in the pass made anyway; the Python wrapper raises).
// ATen's vectorised types take their AVX2 form only
// when CPU_CAPABILITY_AVX2 is defined, as in ATen's own per-capability builds; setup.py adds
// -mavx2 -mfma on hosts that have them. Without it Vectorized<float> is a scalar loop
// (measured: the fused step was no faster than log_softmax + topk).
#if defined(__AVX2__) && defined(__FMA__) && !defined(CPU_CAPABILITY)
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#endif
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

namespace fastpapers {
namespace {

// 512 floats (2 KiB) stay in L1 between the max pass and the exp-sum pass of a block; smaller
// blocks make the threshold gate (below) finer, larger ones amortise the per-block work.
constexpr int64_t kBlock = 512;

template <typename T>
struct SortedTop {
  T* val;
  int64_t* idx;
  int64_t cap;
  int64_t size = 0;

  // Keeps the list sorted descending; an equal value goes after the kept ones, and rows are
  // scanned in increasing token order, so equal values stay ordered by lower index.
  inline void push(T x, int64_t i) {
    if (size == cap && !(x > val[cap - 1])) return;
    int64_t p = size < cap ? size : cap - 1;
    while (p > 0 && val[p - 1] < x) {
      val[p] = val[p - 1];
      idx[p] = idx[p - 1];
      --p;
    }
    val[p] = x;
    idx[p] = i;
    if (size < cap) ++size;
  }
};

inline bool is_banned(const int64_t* banned, int64_t nb, int64_t token) {
  for (int64_t k = 0; k < nb; ++k)
    if (banned[k] == token) return true;
  return false;
}

// exp of a vector of non-positive arguments (x - running max). float: Cody-Waite reduction
// x = n ln2 + r (ln 2 in two parts, |r| <= ln2 / 2), exp(r) = 1 + r q(r) with q a degree-5
// least-squares fit (max relative error 9e-8 over [-85.9, 0], measured against double exp in
// a standalone harness: below float's rounding), times 2^n built in the exponent bits: 17
// vector instructions per 8 values and no special-case handling, which Sleef's expf_u10
// behind Vectorized<float>::exp() needs for arguments of any sign; the exp is most of the
// step's arithmetic. Arguments below -86 (including -inf logits) give exp(-86) ~ 4e-38 instead of
// less: the sum also holds exp(0) = 1 for the max, so those terms are far below its rounding.
// double: Sleef (Vectorized<double>::exp), the float64 path is for accuracy, not speed.
template <typename T>
struct ExpNonPos {
  static inline at::vec::Vectorized<T> apply(const at::vec::Vectorized<T>& a) { return a.exp(); }
};

template <>
struct ExpNonPos<float> {
  using Vec = at::vec::Vectorized<float>;
  using IVec = at::vec::Vectorized<int32_t>;
  static inline Vec apply(const Vec& a) {
    const Vec x0 = at::vec::maximum(a, Vec(-86.0f));
    const Vec n = at::vec::fmadd(x0, Vec(1.44269504088896341f), Vec(0.5f)).floor();
    Vec r = at::vec::fmadd(n, Vec(-0.693359375f), x0);
    r = at::vec::fmadd(n, Vec(2.12194440e-4f), r);
    Vec q = at::vec::fmadd(Vec(1.385929063e-3f), r, Vec(8.374772966e-3f));
    q = at::vec::fmadd(q, r, Vec(4.166772589e-2f));
    q = at::vec::fmadd(q, r, Vec(1.666642129e-1f));
    q = at::vec::fmadd(q, r, Vec(4.999999404e-1f));
    q = at::vec::fmadd(q, r, Vec(1.0f));
    q = at::vec::fmadd(q, r, Vec(1.0f));
    // 2^n from its exponent field; n >= -125 keeps it a normal float.
    const IVec e = (at::vec::convert_to_int_of_same_size(n) + IVec(127)) << IVec(23);
    return q * at::vec::cast<float>(e);
  }
};

// Top-`cap` logits of one row (banned tokens count as -inf) and the row's log-normaliser,
// turned into final scores ((x - max) - log(sum exp(x - max))) + beam_score, the order of
// operations of torch's log_softmax followed by the beam-score add.
//
// One pass over the row in L1-sized blocks: the block's max (vectorised, 4 accumulators);
// the online-softmax update of the running max m and the sum s of exp(x - m); the block's
// sum of exp(x - m) (a second read, from L1); and only when the block's max beats the row's
// current cap-th best logit, a vectorised compare that hands the few lanes above it to the
// sorted list. After the first blocks the threshold is high and that gate is rarely open.
//
// Returns whether the row is bad: a NaN or +inf logit (the exp-sum turns either into NaN), no
// finite logit (sum 0), or a NaN or +inf beam score. The caller marks its sentence with NaN.
template <typename T>
bool row_top(const T* x, int64_t V, const int64_t* banned, int64_t nb, T beam_score, T* tv, int64_t* ti,
             int64_t cap) {
  using Vec = at::vec::Vectorized<T>;
  constexpr int64_t W = Vec::size();
  const T ninf = -std::numeric_limits<T>::infinity();
  SortedTop<T> top{tv, ti, cap};
  const int64_t warm = std::min(cap, V);
  for (int64_t j = 0; j < warm; ++j) top.push(nb && is_banned(banned, nb, j) ? ninf : x[j], j);
  T m = ninf;
  double s = 0.0;
  bool nan_seen = false;
  for (int64_t b0 = 0; b0 < V; b0 += kBlock) {
    const int64_t n = std::min(kBlock, V - b0);
    const int64_t nv = n - n % W;  // lanes handled by full vectors; the rest is a scalar tail
    const T* p = x + b0;
    Vec mx0(ninf), mx1(ninf), mx2(ninf), mx3(ninf);
    int64_t i = 0;
    for (; i + 4 * W <= nv; i += 4 * W) {
      mx0 = at::vec::maximum(mx0, Vec::loadu(p + i));
      mx1 = at::vec::maximum(mx1, Vec::loadu(p + i + W));
      mx2 = at::vec::maximum(mx2, Vec::loadu(p + i + 2 * W));
      mx3 = at::vec::maximum(mx3, Vec::loadu(p + i + 3 * W));
    }
    for (; i < nv; i += W) mx0 = at::vec::maximum(mx0, Vec::loadu(p + i));
    const Vec mxv = at::vec::maximum(at::vec::maximum(mx0, mx1), at::vec::maximum(mx2, mx3));
    T bm = at::vec::vec_reduce_all<T>([](Vec& a, Vec& b) { return at::vec::maximum(a, b); }, mxv);
    for (int64_t j = nv; j < n; ++j) bm = std::max(bm, p[j]);
    // The vector max propagates NaN (the scalar tail's std::max may not, the exp-sum below
    // does): a NaN block max would otherwise skip the block.
    nan_seen |= std::isnan(bm);
    if (bm > m) {
      s = (m == ninf) ? 0.0 : s * std::exp(static_cast<double>(m) - static_cast<double>(bm));
      m = bm;
    }
    if (m != ninf) {
      const Vec mm(m);
      Vec s0(T(0)), s1(T(0)), s2(T(0)), s3(T(0));
      i = 0;
      for (; i + 4 * W <= nv; i += 4 * W) {
        s0 = s0 + ExpNonPos<T>::apply(Vec::loadu(p + i) - mm);
        s1 = s1 + ExpNonPos<T>::apply(Vec::loadu(p + i + W) - mm);
        s2 = s2 + ExpNonPos<T>::apply(Vec::loadu(p + i + 2 * W) - mm);
        s3 = s3 + ExpNonPos<T>::apply(Vec::loadu(p + i + 3 * W) - mm);
      }
      for (; i < nv; i += W) s0 = s0 + ExpNonPos<T>::apply(Vec::loadu(p + i) - mm);
      const Vec sv = (s0 + s1) + (s2 + s3);
      double bs = static_cast<double>(at::vec::vec_reduce_all<T>([](Vec& a, Vec& b) { return a + b; }, sv));
      for (int64_t j = nv; j < n; ++j) bs += std::exp(static_cast<double>(p[j]) - static_cast<double>(m));
      s += bs;
    }
    if (bm > top.val[cap - 1]) {
      // Lanes above the threshold, in increasing token order; the threshold rises as they go in.
      for (i = 0; i < nv; i += W) {
        const Vec v = Vec::loadu(p + i);
        int above = ~(v > Vec(top.val[cap - 1])).zero_mask() & ((1 << W) - 1);
        while (above) {
          const int lane = __builtin_ctz(above);
          above &= above - 1;
          const int64_t j = b0 + i + lane;
          if (j >= warm && !(nb && is_banned(banned, nb, j))) top.push(p[i + lane], j);
        }
      }
      for (int64_t j = nv; j < n; ++j)
        if (b0 + j >= warm && p[j] > top.val[cap - 1] && !(nb && is_banned(banned, nb, b0 + j))) top.push(p[j], b0 + j);
    }
  }
  const T log_sum = static_cast<T>(std::log(s));
  for (int64_t c = 0; c < top.size; ++c) tv[c] = ((tv[c] - m) - log_sum) + beam_score;
  const T inf = std::numeric_limits<T>::infinity();
  return nan_seen || !(s > 0.0 && s < static_cast<double>(inf)) || !(m < inf) || !(beam_score < inf);
}

std::tuple<at::Tensor, at::Tensor> beam_search_step_cpu(const at::Tensor& logits, const at::Tensor& beam_scores,
                                                       int64_t num_beams, int64_t num_candidates,
                                                       const std::optional<at::Tensor>& banned) {
  TORCH_CHECK(logits.device().is_cpu(), "beam_search_step: logits must be a CPU tensor");
  TORCH_CHECK(logits.dim() == 2, "beam_search_step: logits must be [B*K, V]");
  TORCH_CHECK(num_beams >= 1, "beam_search_step: num_beams must be >= 1");
  const int64_t rows = logits.size(0), V = logits.size(1);
  TORCH_CHECK(rows % num_beams == 0, "beam_search_step: logits rows must be a multiple of num_beams");
  TORCH_CHECK(beam_scores.dim() == 1 && beam_scores.size(0) == rows, "beam_search_step: beam_scores must be [B*K]");
  TORCH_CHECK(beam_scores.scalar_type() == logits.scalar_type(),
              "beam_search_step: beam_scores must have the dtype of logits");
  TORCH_CHECK(num_candidates >= 1 && num_candidates <= num_beams * V,
              "beam_search_step: num_candidates must be in [1, num_beams * V]");
  const int64_t B = rows / num_beams, K = num_beams, C = num_candidates;
  at::Tensor scores = at::empty({B, C}, logits.options());
  at::Tensor indices = at::empty({B, C}, logits.options().dtype(at::kLong));
  if (B == 0) return {scores, indices};
  at::Tensor x = logits.contiguous();
  at::Tensor bs = beam_scores.contiguous();
  at::Tensor ban;
  int64_t nb = 0;
  if (banned.has_value()) {
    TORCH_CHECK(banned->dim() == 2 && banned->size(0) == rows && banned->scalar_type() == at::kLong,
                "beam_search_step: banned must be int64 [B*K, M]");
    ban = banned->contiguous();
    nb = ban.size(1);
  }
  const int64_t cap = std::min(C, V);
  at::Tensor row_val = at::empty({rows, cap}, logits.options());
  at::Tensor row_idx = at::empty({rows, cap}, logits.options().dtype(at::kLong));
  std::vector<uint8_t> row_bad(rows, 0);
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "beam_search_step_cpu", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* bsp = bs.data_ptr<scalar_t>();
    const int64_t* banp = nb ? ban.data_ptr<int64_t>() : nullptr;
    scalar_t* rv = row_val.data_ptr<scalar_t>();
    int64_t* ri = row_idx.data_ptr<int64_t>();
    // Rows are handed out from a shared counter, `chunk` rows (~32k logits, tens of us) at a
    // time, rather than split evenly up front: on a shared machine a thread that is
    // descheduled would otherwise hold the whole step back until its half is done.
    // Below 64k logits in all, one thread does everything (waking the pool costs more).
    const int64_t chunk = std::max<int64_t>(1, 32768 / std::max<int64_t>(V, 1));
    const int64_t tasks = rows * V < 65536 ? 1 : std::min<int64_t>(at::get_num_threads(), (rows + chunk - 1) / chunk);
    std::atomic<int64_t> next{0};
    at::parallel_for(0, tasks, 1, [&](int64_t, int64_t) {
      for (int64_t r0 = next.fetch_add(chunk); r0 < rows; r0 = next.fetch_add(chunk)) {
        const int64_t r1 = std::min(rows, r0 + chunk);
        for (int64_t r = r0; r < r1; ++r)
          row_bad[r] = row_top<scalar_t>(xp + r * V, V, nb ? banp + r * nb : nullptr, nb, bsp[r], rv + r * cap,
                                         ri + r * cap, cap);
      }
    });
    scalar_t* sp = scores.data_ptr<scalar_t>();
    int64_t* ip = indices.data_ptr<int64_t>();
    // The merge is B*C*K comparisons (1,600 for B=32, K=5): serial, because waking the
    // thread pool for it costs more than the work.
    {
      std::vector<int64_t> head(K);
      for (int64_t b = 0; b < B; ++b) {
        std::fill(head.begin(), head.end(), 0);
        const scalar_t* bv = rv + b * K * cap;
        const int64_t* bi = ri + b * K * cap;
        for (int64_t c = 0; c < C; ++c) {
          // Beams are visited in increasing order and only a strictly larger score wins, so
          // equal scores go to the lower beam (its flat index beam*V + token is lower).
          int64_t best = -1;
          for (int64_t k = 0; k < K; ++k) {
            if (head[k] >= cap) continue;
            if (best < 0 || bv[k * cap + head[k]] > bv[best * cap + head[best]]) best = k;
          }
          sp[b * C + c] = bv[best * cap + head[best]];
          ip[b * C + c] = best * V + bi[best * cap + head[best]];
          ++head[best];
        }
        // A sentence with a bad row gets NaN scores (indices stay valid): the wrapper's check.
        if (std::any_of(row_bad.begin() + b * K, row_bad.begin() + (b + 1) * K, [](uint8_t v) { return v != 0; }))
          std::fill(sp + b * C, sp + (b + 1) * C, std::numeric_limits<scalar_t>::quiet_NaN());
      }
    }
  });
  return {scores, indices};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastpapers, CPU, m) { m.impl("beam_search_step", &beam_search_step_cpu); }

}  // namespace fastpapers
