// CPU Gram matrix and fused style loss (contract 3 in DESIGN.md).
//
// The Gram X X^T is symmetric, so only its upper triangle is computed: the rows are cut into
// a few blocks and block i multiplies against rows i.. only, one at::mm per block through the
// BLAS torch links (MKL on x86). With 4 blocks this is 62.5% of a full product, with GEMMs
// still large enough to run at the BLAS's full speed (finer cuts lose more to small GEMMs
// than they save). The loss epilogue walks the block's upper triangle right after its
// product, while it is in cache: it forms D = scale*G - sym(A), mirrors it into the lower
// half and sums the squares. D is returned so that the backward is a single batched product
// dF = c * D F.
//
// Threads: when there are at least as many (matrix, block pair) tasks as threads, each task
// runs its products single-threaded and then its epilogue, in one parallel region (blocks i
// and nb-1-i pair up, so tasks carry equal work). Otherwise (one small matrix) the BLAS
// parallelises each product and the epilogue runs after them, in parallel over tile rows.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

namespace fastpapers {
namespace {

// The epilogues walk the upper triangle in square tiles. An off-diagonal tile (I, J) and its
// mirror (J, I) go through two small local buffers: the mirror's target entries are read
// once transposed into one, the results written once transposed from the other, so the
// arithmetic runs on contiguous rows (vectorised) and the strided accesses stay within a
// kTile x kTile block that is in cache.
constexpr int64_t kTile = 32;

// Off-diagonal tile rows [i0, i1) x cols [j0, j1) (j0 >= i1) of g ([C, C], holding X X^T in
// its upper triangle). With a target a: g <- scale*g - (A + A^T)/2 on the tile and its
// mirror, returning sum((scale*G - A)^2) over both. Without: g <- scale*g, mirrored.
template <typename T, bool kTarget>
double off_diagonal_tile(T* g, const T* a, int64_t c, T scale, int64_t i0, int64_t i1, int64_t j0,
                         int64_t j1) {
  alignas(64) T at[kTile * kTile];
  alignas(64) T dt[kTile * kTile];
  const int64_t ni = i1 - i0, nj = j1 - j0;
  if (kTarget) {
    for (int64_t jj = 0; jj < nj; ++jj) {
      const T* arow = a + (j0 + jj) * c + i0;
      for (int64_t ii = 0; ii < ni; ++ii) at[ii * kTile + jj] = arow[ii];
    }
  }
  double acc = 0.0;
  for (int64_t ii = 0; ii < ni; ++ii) {
    T* grow = g + (i0 + ii) * c + j0;
    T* drow = dt + ii * kTile;
    if (kTarget) {
      const T* arow = a + (i0 + ii) * c + j0;
      const T* trow = at + ii * kTile;
      // A row holds at most 2 * kTile squares: summed in T, then added in double.
      T racc = 0;
#pragma omp simd reduction(+ : racc)
      for (int64_t jj = 0; jj < nj; ++jj) {
        const T v = grow[jj] * scale;
        const T d1 = v - arow[jj];
        const T d2 = v - trow[jj];
        const T ds = (d1 + d2) * T(0.5);
        grow[jj] = ds;
        drow[jj] = ds;
        racc += d1 * d1 + d2 * d2;
      }
      acc += static_cast<double>(racc);
    } else {
#pragma omp simd
      for (int64_t jj = 0; jj < nj; ++jj) {
        const T v = grow[jj] * scale;
        grow[jj] = v;
        drow[jj] = v;
      }
    }
  }
  for (int64_t jj = 0; jj < nj; ++jj) {
    T* grow = g + (j0 + jj) * c + i0;
    for (int64_t ii = 0; ii < ni; ++ii) grow[ii] = dt[ii * kTile + jj];
  }
  return acc;
}

// Diagonal tile [i0, i1)^2: the same update on its upper half, mirrored into its lower half.
template <typename T, bool kTarget>
double diagonal_tile(T* g, const T* a, int64_t c, T scale, int64_t i0, int64_t i1) {
  double acc = 0.0;
  for (int64_t i = i0; i < i1; ++i) {
    const T v = g[i * c + i] * scale;
    if (kTarget) {
      const T d = v - a[i * c + i];
      g[i * c + i] = d;
      acc += static_cast<double>(d) * d;
    } else {
      g[i * c + i] = v;
    }
    for (int64_t j = i + 1; j < i1; ++j) {
      const T w = g[i * c + j] * scale;
      T ds = w;
      if (kTarget) {
        const T d1 = w - a[i * c + j];
        const T d2 = w - a[j * c + i];
        ds = (d1 + d2) * T(0.5);
        acc += static_cast<double>(d1) * d1 + static_cast<double>(d2) * d2;
      }
      g[i * c + j] = ds;
      g[j * c + i] = ds;
    }
  }
  return acc;
}

// Tile row I of one matrix: its diagonal tile and every tile right of it.
template <typename T, bool kTarget>
double tile_row(T* g, const T* a, int64_t c, T scale, int64_t row) {
  const int64_t i0 = row * kTile, i1 = std::min(c, i0 + kTile);
  double acc = diagonal_tile<T, kTarget>(g, a, c, scale, i0, i1);
  for (int64_t j0 = i1; j0 < c; j0 += kTile)
    acc += off_diagonal_tile<T, kTarget>(g, a, c, scale, i0, i1, j0, std::min(c, j0 + kTile));
  return acc;
}

// Row blocks of the upper-triangle product of B matrices with C channels: their height, a
// multiple of kTile so that epilogue tile rows never straddle two blocks, and whether each
// thread gets (matrix, block pair) tasks of its own. The block count goes by C; with few
// matrices it is doubled (down to kTile-row blocks) until every thread has a task. Single-
// threaded products, one per task, scale better than the BLAS threading each small product.
struct Blocks {
  int64_t rows;
  bool per_thread;
};

Blocks plan_blocks(int64_t b, int64_t c) {
  auto height = [c](int64_t nb) {
    const int64_t bs = ((c + nb - 1) / nb + kTile - 1) / kTile * kTile;
    return std::max<int64_t>(1, std::min(c, bs));
  };
  auto tasks = [b, c](int64_t bs) { return b * (((c + bs - 1) / bs + 1) / 2); };
  const int64_t base = c >= 256 ? 4 : (c >= 96 ? 2 : 1);
  const int64_t threads = at::get_num_threads();
  for (int64_t nb = base;; nb *= 2) {
    if (tasks(height(nb)) >= threads) return {height(nb), true};
    if (c < 2 * nb * kTile) return {height(base), false};
  }
}

// Tile rows [r0, r1) of g[i] (upper triangle holding X X^T): the epilogue, each tile row's sum
// stored in part (one slot per tile row, so the total's order never depends on threads).
template <typename T, bool kTarget>
void epilogue_rows(T* g, const T* a, int64_t c, T scale, int64_t t0, int64_t t1, double* part) {
  for (int64_t t = t0; t < t1; ++t) part[t] = tile_row<T, kTarget>(g, a, c, scale, t);
}

// g ([B, C, C]) <- the epilogue applied to X X^T for x ([B, C, N] contiguous): scale*G
// mirrored, or (with a target a, batch stride a_stride) D = scale*G - sym(A) mirrored, and
// the returned sum((scale*G - A)^2) over all B matrices.
template <typename T, bool kTarget>
double gram_epilogue(const at::Tensor& x, at::Tensor& g, const T* a, int64_t a_stride, T scale) {
  const int64_t b = x.size(0), c = x.size(1), n = x.size(2);
  if (b == 0 || c == 0) return 0.0;
  const Blocks plan = plan_blocks(b, c);
  const int64_t bs = plan.rows;
  const int64_t nb = (c + bs - 1) / bs;
  const int64_t nt = (c + kTile - 1) / kTile;
  const int64_t tiles_per_block = bs / kTile + (bs % kTile != 0);
  std::vector<double> part(b * nt, 0.0);
  T* gp = g.data_ptr<T>();
  // Rows [r0, r0 + rows) of matrix i against rows r0.. (the K = 0 product is all zero).
  auto product = [&](int64_t i, int64_t r0, int64_t rows) {
    at::Tensor o = g.select(0, i).narrow(0, r0, rows).narrow(1, r0, c - r0);
    if (n == 0) {
      o.zero_();
      return;
    }
    at::Tensor xi = x.select(0, i);
    at::mm_out(o, xi.narrow(0, r0, rows), xi.narrow(0, r0, c - r0).t());
  };
  auto block = [&](int64_t i, int64_t k) {
    const int64_t r0 = k * bs;
    product(i, r0, std::min(bs, c - r0));
    const int64_t t0 = k * tiles_per_block;
    epilogue_rows<T, kTarget>(gp + i * c * c, kTarget ? a + i * a_stride : nullptr, c, scale, t0,
                              std::min(nt, t0 + tiles_per_block), part.data() + i * nt);
  };
  const int64_t pairs = (nb + 1) / 2;
  if (plan.per_thread) {
    // The products are ATen calls made from the worker threads: they need the caller's
    // dispatch state (below autograd), which OpenMP workers do not inherit.
    const at::ThreadLocalState state;
    at::parallel_for(0, b * pairs, 1, [&](int64_t p0, int64_t p1) {
      at::ThreadLocalStateGuard guard(state);
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t i = p / pairs, k = p % pairs;
        block(i, k);
        if (nb - 1 - k != k) block(i, nb - 1 - k);
      }
    });
  } else {
    for (int64_t i = 0; i < b; ++i)
      for (int64_t r0 = 0; r0 < c; r0 += bs) product(i, r0, std::min(bs, c - r0));
    // Tile row t has nt - t tiles: a task takes rows t and nt-1-t so all carry equal work.
    const int64_t per = (nt + 1) / 2;
    const int64_t grain = std::max<int64_t>(1, 65536 / ((nt + 1) * kTile * kTile));
    at::parallel_for(0, b * per, grain, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t i = p / per, r = p % per;
        T* gi = gp + i * c * c;
        const T* ai = kTarget ? a + i * a_stride : nullptr;
        epilogue_rows<T, kTarget>(gi, ai, c, scale, r, r + 1, part.data() + i * nt);
        if (nt - 1 - r != r) epilogue_rows<T, kTarget>(gi, ai, c, scale, nt - 1 - r, nt - r, part.data() + i * nt);
      }
    });
  }
  double total = 0.0;
  for (double v : part) total += v;
  return total;
}

at::Tensor as_bcn(const at::Tensor& x) {
  TORCH_CHECK(x.dim() >= 3, "gram: features must be [B, C, H, W] (or [B, C, N]), got ", x.sizes());
  // The spatial size is explicit: reshape cannot infer -1 when the batch or C is empty.
  int64_t n = 1;
  for (int64_t d = 2; d < x.dim(); ++d) n *= x.size(d);
  return x.reshape({x.size(0), x.size(1), n}).contiguous();
}

at::Tensor gram_matrix_cpu(const at::Tensor& x, double scale) {
  TORCH_CHECK(x.device().is_cpu(), "gram_matrix_cpu: x must be a CPU tensor");
  at::Tensor xf = as_bcn(x);
  const int64_t b = xf.size(0), c = xf.size(1);
  at::Tensor g = at::empty({b, c, c}, xf.options());
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "gram_matrix_cpu", [&] {
    gram_epilogue<scalar_t, false>(xf, g, nullptr, 0, static_cast<scalar_t>(scale));
  });
  return g;
}

at::Tensor gram_matrix_backward_cpu(const at::Tensor& grad, const at::Tensor& x, double scale) {
  TORCH_CHECK(x.device().is_cpu() && grad.device().is_cpu(), "gram_matrix_backward_cpu: CPU tensors only");
  at::Tensor xf = as_bcn(x);
  // (dG + dG^T) is symmetric: one batched product gives the gradient of both factors; the
  // scale rides on the product's alpha (beta = 0: the uninitialised output is not read).
  at::Tensor sym = grad + grad.transpose(1, 2);
  at::Tensor out = at::empty_like(xf);
  at::baddbmm_out(out, out, sym, xf, /*beta=*/0, /*alpha=*/scale);
  return out.view(x.sizes());
}

std::tuple<at::Tensor, std::vector<at::Tensor>> style_loss_cpu(at::TensorList features,
                                                                at::TensorList targets,
                                                                at::ArrayRef<double> scales,
                                                                at::ArrayRef<double> weights) {
  const size_t nl = features.size();
  TORCH_CHECK(targets.size() == nl && scales.size() == nl && weights.size() == nl,
              "style_loss: features, targets, scales and weights must have the same length");
  TORCH_CHECK(nl > 0, "style_loss: at least one layer is needed");
  std::vector<at::Tensor> diffs;
  diffs.reserve(nl);
  double total = 0.0;
  for (size_t l = 0; l < nl; ++l) {
    TORCH_CHECK(features[l].device().is_cpu(), "style_loss_cpu: features must be CPU tensors");
    at::Tensor f = as_bcn(features[l]);
    const int64_t b = f.size(0), c = f.size(1);
    at::Tensor a = targets[l].contiguous();
    TORCH_CHECK(a.scalar_type() == f.scalar_type(), "style_loss: target dtype must match features");
    TORCH_CHECK((a.dim() == 2 && a.size(0) == c && a.size(1) == c) ||
                    (a.dim() == 3 && a.size(0) == b && a.size(1) == c && a.size(2) == c),
                "style_loss: target ", l, " must be [C, C] or [B, C, C], got ", a.sizes());
    const int64_t a_stride = a.dim() == 3 ? c * c : 0;
    at::Tensor d = at::empty({b, c, c}, f.options());
    double layer = 0.0;
    AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "style_loss_cpu", [&] {
      const scalar_t s = f.size(2) == 0 ? scalar_t(0) : static_cast<scalar_t>(scales[l]);
      layer = gram_epilogue<scalar_t, true>(f, d, a.data_ptr<scalar_t>(), a_stride, s);
    });
    total += weights[l] * layer;
    diffs.push_back(d);
  }
  at::Tensor loss = at::scalar_tensor(total, features[0].options());
  return {loss, diffs};
}

std::vector<at::Tensor> style_loss_backward_cpu(const at::Tensor& grad, at::TensorList features,
                                                at::TensorList diffs, at::ArrayRef<double> coefs) {
  const size_t nl = features.size();
  TORCH_CHECK(diffs.size() == nl && coefs.size() == nl,
              "style_loss_backward: features, diffs and coefs must have the same length");
  const double g = grad.item<double>();
  std::vector<at::Tensor> out;
  out.reserve(nl);
  for (size_t l = 0; l < nl; ++l) {
    at::Tensor f = as_bcn(features[l]);
    // One product straight into the gradient, its factor on alpha (beta = 0: the
    // uninitialised output is not read), so neither D nor the product takes a scaling pass.
    at::Tensor o = at::empty_like(f);
    at::baddbmm_out(o, o, diffs[l], f, /*beta=*/0, /*alpha=*/g * coefs[l]);
    out.push_back(o.view(features[l].sizes()));
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastpapers, CPU, m) {
  m.impl("gram_matrix", &gram_matrix_cpu);
  m.impl("gram_matrix_backward", &gram_matrix_backward_cpu);
  m.impl("style_loss", &style_loss_cpu);
  m.impl("style_loss_backward", &style_loss_backward_cpu);
}

}  // namespace fastpapers
