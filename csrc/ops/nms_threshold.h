// Shared by the CPU and CUDA NMS kernels.
#pragma once

#include <cmath>
#include <limits>

namespace fastpapers {
namespace nms_detail {

// Threshold in the precision torchvision compares in: a float IoU against a double threshold
// is the same predicate as against the largest float <= threshold.
template <typename T>
inline T compare_threshold(double thr);

template <>
inline float compare_threshold<float>(double thr) {
  float f = static_cast<float>(thr);
  if (static_cast<double>(f) > thr) f = std::nextafter(f, -std::numeric_limits<float>::infinity());
  return f;
}

template <>
inline double compare_threshold<double>(double thr) {
  return thr;
}

}  // namespace nms_detail
}  // namespace fastpapers
