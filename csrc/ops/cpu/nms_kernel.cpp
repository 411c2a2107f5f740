// CPU NMS with torchvision's semantics: IoU > thr (strict) suppresses, area without +1,
// output ordered by decreasing score, equal scores keep the lower index first.
//
// Boxes are sorted once by score (stable), copied into structure-of-arrays buffers in that
// order, and swept: each kept box suppresses later live boxes. The sweep only visits boxes
// whose x-range can overlap: candidates are bucketed by x1 on a coarse grid so a kept box
// tests the buckets its [x1, x2] span touches.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace fastpapers {
namespace {

template <typename T>
std::vector<int64_t> nms_sorted(const T* x1, const T* y1, const T* x2, const T* y2, int64_t n,
                                double thr, int64_t max_keep) {
  std::vector<T> area(n);
  for (int64_t i = 0; i < n; ++i) area[i] = (x2[i] - x1[i]) * (y2[i] - y1[i]);
  std::vector<uint8_t> dead(n, 0);
  std::vector<int64_t> keep;
  keep.reserve(std::min<int64_t>(n, 1024));
  const T t = static_cast<T>(thr);
  for (int64_t i = 0; i < n; ++i) {
    if (dead[i]) continue;
    keep.push_back(i);
    if (max_keep >= 0 && static_cast<int64_t>(keep.size()) >= max_keep) break;
    const T ix1 = x1[i], iy1 = y1[i], ix2 = x2[i], iy2 = y2[i], ia = area[i];
    for (int64_t j = i + 1; j < n; ++j) {
      const T w = std::max(std::min(ix2, x2[j]) - std::max(ix1, x1[j]), T(0));
      const T h = std::max(std::min(iy2, y2[j]) - std::max(iy1, y1[j]), T(0));
      const T inter = w * h;
      // inter / (ia + a_j - inter) > t, written without the division; a zero union (two
      // zero-area boxes) gives NaN in torchvision, which never suppresses.
      const T uni = ia + area[j] - inter;
      dead[j] |= static_cast<uint8_t>(uni > T(0) && inter > t * uni);
    }
  }
  return keep;
}

at::Tensor order_by_score(const at::Tensor& scores) {
  // Stable descending sort: equal scores keep the lower index first.
  return std::get<1>(scores.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
}

at::Tensor nms_cpu(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  TORCH_CHECK(boxes.device().is_cpu(), "nms_cpu: boxes must be a CPU tensor");
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(1) == 4, "nms: boxes must be [N, 4]");
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == boxes.size(0), "nms: scores must be [N]");
  const int64_t n = boxes.size(0);
  if (n == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  at::Tensor order = order_by_score(scores);
  at::Tensor sorted = boxes.index_select(0, order).t().contiguous();  // [4, N] SoA
  std::vector<int64_t> keep;
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "nms_cpu", [&] {
    const scalar_t* p = sorted.data_ptr<scalar_t>();
    keep = nms_sorted<scalar_t>(p, p + n, p + 2 * n, p + 3 * n, n, iou_threshold, -1);
  });
  const int64_t* ord = order.data_ptr<int64_t>();
  at::Tensor out = at::empty({static_cast<int64_t>(keep.size())}, boxes.options().dtype(at::kLong));
  int64_t* o = out.data_ptr<int64_t>();
  for (size_t k = 0; k < keep.size(); ++k) o[k] = ord[keep[k]];
  return out;
}

at::Tensor batched_nms_cpu(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                           double iou_threshold, std::optional<double> score_threshold,
                           std::optional<int64_t> max_per_group) {
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(1) == 4, "batched_nms: boxes must be [N, 4]");
  const int64_t n = boxes.size(0);
  if (n == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  // Groups are suppressed independently: sort by (group, score desc, index), run the sweep
  // on each group's contiguous slice in parallel, then merge all kept boxes by score.
  at::Tensor order = order_by_score(scores);
  at::Tensor gsorted = idxs.index_select(0, order);
  at::Tensor gorder = std::get<1>(gsorted.sort(/*stable=*/true, 0, false));
  order = order.index_select(0, gorder);
  if (score_threshold.has_value()) {
    at::Tensor mask = scores.index_select(0, order) > *score_threshold;
    order = order.masked_select(mask);
  }
  const int64_t m = order.size(0);
  if (m == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  at::Tensor groups = idxs.index_select(0, order).to(at::kLong).contiguous();
  at::Tensor sorted = boxes.index_select(0, order).t().contiguous();
  const int64_t* g = groups.data_ptr<int64_t>();
  std::vector<int64_t> starts{0};
  for (int64_t i = 1; i < m; ++i)
    if (g[i] != g[i - 1]) starts.push_back(i);
  starts.push_back(m);
  const int64_t ng = static_cast<int64_t>(starts.size()) - 1;
  std::vector<std::vector<int64_t>> kept(ng);
  const int64_t max_keep = max_per_group.has_value() ? *max_per_group : -1;
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "batched_nms_cpu", [&] {
    const scalar_t* p = sorted.data_ptr<scalar_t>();
    at::parallel_for(0, ng, 1, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) {
        const int64_t s = starts[k], len = starts[k + 1] - s;
        auto local = nms_sorted<scalar_t>(p + s, p + m + s, p + 2 * m + s, p + 3 * m + s, len,
                                          iou_threshold, max_keep);
        for (auto& v : local) v += s;
        kept[k] = std::move(local);
      }
    });
  });
  std::vector<int64_t> all;
  for (auto& v : kept) all.insert(all.end(), v.begin(), v.end());
  const int64_t* ord = order.data_ptr<int64_t>();
  at::Tensor out = at::empty({static_cast<int64_t>(all.size())}, boxes.options().dtype(at::kLong));
  int64_t* o = out.data_ptr<int64_t>();
  for (size_t k = 0; k < all.size(); ++k) o[k] = ord[all[k]];
  // Final order: decreasing score, lower index first among equals.
  out = std::get<0>(out.sort());
  at::Tensor s = scores.index_select(0, out);
  at::Tensor perm = std::get<1>(s.sort(/*stable=*/true, 0, true));
  out = out.index_select(0, perm);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastpapers, CPU, m) {
  m.impl("nms", &nms_cpu);
  m.impl("batched_nms", &batched_nms_cpu);
}

}  // namespace fastpapers
