// CPU Gram matrix and fused style loss (contract 3 in DESIGN.md).
//
// The Gram X X^T is symmetric, so only its upper triangle is computed: the rows are cut into
// a few blocks and block i multiplies against rows i.. only, one at::mm per block through the
// BLAS torch links (MKL on x86). With 4 blocks this is 62.5% of a full product, with GEMMs
// still large enough to run at the BLAS's full speed (finer cuts lose more to small GEMMs
// than they save). The loss epilogue then walks the upper triangle once: it forms
// D = scale*G - sym(A), mirrors it into the lower half and sums the squares in double. D is
// returned so that the backward is a single batched product dF = c * D F.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

namespace fastpapers {
namespace {

// Row-block count for the upper-triangle product, by channel count.
int64_t row_blocks(int64_t c) {
  if (c >= 256) return 4;
  if (c >= 96) return 2;
  return 1;
}

// out[b, i, j] = sum_k x[b, i, k] x[b, j, k] for j >= i (x: [B, C, N] contiguous, out:
// [B, C, C]). The strictly lower part of out is left unwritten. One batched product per row
// block keeps the number of BLAS calls (and their thread start-ups) independent of B.
void upper_gram(const at::Tensor& x, at::Tensor& out) {
  const int64_t c = x.size(1);
  if (c == 0 || x.size(0) == 0) return;
  if (x.size(2) == 0) {
    out.zero_();
    return;
  }
  const int64_t nb = row_blocks(c);
  int64_t bs = (c + nb - 1) / nb;
  bs = std::min(c, (bs + 15) / 16 * 16);  // multiples of the BLAS micro-tile width
  for (int64_t i = 0; i < c; i += bs) {
    const int64_t rows = std::min(bs, c - i);
    at::Tensor o = out.narrow(1, i, rows).narrow(2, i, c - i);
    at::bmm_out(o, x.narrow(1, i, rows), x.narrow(1, i, c - i).transpose(1, 2));
  }
}

// The mirror passes walk the upper triangle in square tiles: the transposed writes of a
// tile then touch kTile rows that stay in cache, instead of a stride-C column per row.
constexpr int64_t kTile = 32;

// In place on g ([C, C], upper triangle holding X X^T): g <- scale * g, mirrored.
template <typename T>
void scale_mirror(T* g, int64_t c, T scale) {
  for (int64_t i0 = 0; i0 < c; i0 += kTile) {
    const int64_t i1 = std::min(c, i0 + kTile);
    for (int64_t j0 = i0; j0 < c; j0 += kTile) {
      const int64_t j1 = std::min(c, j0 + kTile);
      for (int64_t i = i0; i < i1; ++i) {
        int64_t j = std::max(j0, i);
        if (j == i) g[i * c + i] *= scale, ++j;
        for (; j < j1; ++j) {
          const T v = g[i * c + j] * scale;
          g[i * c + j] = v;
          g[j * c + i] = v;
        }
      }
    }
  }
}

// In place on g ([C, C], upper triangle holding X X^T): g <- scale * g - (A + A^T) / 2,
// mirrored; returns sum((scale * G - A)^2) over the full matrix, accumulated in double.
template <typename T>
double diff_mirror(T* g, const T* a, int64_t c, T scale) {
  double acc = 0.0;
  for (int64_t i0 = 0; i0 < c; i0 += kTile) {
    const int64_t i1 = std::min(c, i0 + kTile);
    for (int64_t j0 = i0; j0 < c; j0 += kTile) {
      const int64_t j1 = std::min(c, j0 + kTile);
      for (int64_t i = i0; i < i1; ++i) {
        int64_t j = std::max(j0, i);
        if (j == i) {
          const double dd = static_cast<double>(g[i * c + i] * scale - a[i * c + i]);
          g[i * c + i] = static_cast<T>(dd);
          acc += dd * dd;
          ++j;
        }
        for (; j < j1; ++j) {
          const T v = g[i * c + j] * scale;
          const T d1 = v - a[i * c + j];
          const T d2 = v - a[j * c + i];
          const T ds = (d1 + d2) * T(0.5);
          g[i * c + j] = ds;
          g[j * c + i] = ds;
          acc += static_cast<double>(d1) * d1 + static_cast<double>(d2) * d2;
        }
      }
    }
  }
  return acc;
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
  upper_gram(xf, g);
  if (xf.size(2) == 0) return g.zero_();
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "gram_matrix_cpu", [&] {
    scalar_t* p = g.data_ptr<scalar_t>();
    for (int64_t i = 0; i < b; ++i) scale_mirror<scalar_t>(p + i * c * c, c, static_cast<scalar_t>(scale));
  });
  return g;
}

at::Tensor gram_matrix_backward_cpu(const at::Tensor& grad, const at::Tensor& x, double scale) {
  TORCH_CHECK(x.device().is_cpu() && grad.device().is_cpu(), "gram_matrix_backward_cpu: CPU tensors only");
  at::Tensor xf = as_bcn(x);
  // (dG + dG^T) is symmetric: one batched product gives the gradient of both factors.
  at::Tensor sym = (grad + grad.transpose(1, 2)).mul_(scale);
  return at::bmm(sym, xf).view(x.sizes());
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
    upper_gram(f, d);
    AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "style_loss_cpu", [&] {
      scalar_t* pd = d.data_ptr<scalar_t>();
      const scalar_t* pa = a.data_ptr<scalar_t>();
      const scalar_t s = f.size(2) == 0 ? scalar_t(0) : static_cast<scalar_t>(scales[l]);
      for (int64_t i = 0; i < b; ++i) layer += diff_mirror<scalar_t>(pd + i * c * c, pa + i * a_stride, c, s);
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
    // Scaling the small [B, C, C] factor instead of the [B, C, N] product saves a pass.
    at::Tensor e = diffs[l] * (g * coefs[l]);
    out.push_back(at::bmm(e, f).view(features[l].sizes()));
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
