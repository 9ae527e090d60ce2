// RoIAlign geometry shared by the CPU and CUDA kernels.
//
// RoIAlign (He et al. 2017, as torchvision.ops.roi_align computes it) divides
// each RoI into pooled_height x pooled_width bins without rounding, samples
// every bin on a regular grid and averages the bilinearly interpolated values
// of the samples. These functions give the RoI's sampling grid and, for one
// sample coordinate along one axis, its two neighbouring cells and their
// weights. Bilinear weights are products of the two axes' weights, so a kernel
// computes the taps of each sample row and column once and combines them.
//
// The rules, all in the compute type T (float for float/half/bfloat16 RoIs,
// double for double), in torchvision's order of operations:
//  * corners are scaled by spatial_scale and, when `aligned`, shifted by -0.5
//    (the half-pixel offset); without `aligned` the RoI is at least 1 x 1;
//  * bin size = RoI size / pooled size; a bin holds sampling_ratio samples per
//    axis, or ceil(RoI size / pooled size) when sampling_ratio <= 0;
//  * sample k of bin b lies at start + b * bin + (k + 0.5) * bin / grid;
//  * a sample beyond [-1, size] on either axis contributes 0; otherwise it is
//    clamped to >= 0, low = floor, high = low + 1, both capped at size - 1;
//  * a bin's value is the sum of its samples over max(grid_h * grid_w, 1).
//
// Plain C++ without torch headers, so that nvcc compiles it in seconds.
#pragma once

#include <cmath>
#include <cstdint>

#include "roi_common.h"

namespace detkit {
namespace roi_align {

// Adaptive grids beyond this many samples per bin and axis come only from
// absurd RoIs (thousands of cells wide); they are refused rather than run for
// hours.
constexpr int64_t kMaxGrid = 1 << 10;

// The sampling grid of one RoI in the compute type T.
template <typename T>
struct SamplingGrid {
  T start_h, start_w, bin_h, bin_w;
  int32_t grid_h, grid_w;
  T count;  // the divisor of a bin's sum: max(grid_h * grid_w, 1)
  bool valid;  // false when the RoI's size is not finite or its grid too large
};

// Samples per bin and axis for an RoI `roi_size` cells long split into `bins`
// bins; kMaxGrid + 1 stands for any grid beyond the limit.
template <typename T>
DETKIT_HOST_DEVICE int64_t samples_per_bin(T roi_size, int64_t bins, int64_t sampling_ratio) {
  if (sampling_ratio > 0) {
    return sampling_ratio;
  }
  const double grid = ceil(static_cast<double>(roi_size / static_cast<T>(bins)));
  return grid > static_cast<double>(kMaxGrid) ? kMaxGrid + 1 : static_cast<int64_t>(grid);
}

template <typename T>
DETKIT_HOST_DEVICE SamplingGrid<T> sampling_grid(
    T x1, T y1, T x2, T y2, T spatial_scale, int64_t pooled_height, int64_t pooled_width,
    int64_t sampling_ratio, bool aligned) {
  const T offset = aligned ? static_cast<T>(0.5) : static_cast<T>(0);
  SamplingGrid<T> g;
  g.start_w = x1 * spatial_scale - offset;
  g.start_h = y1 * spatial_scale - offset;
  T roi_width = (x2 * spatial_scale - offset) - g.start_w;
  T roi_height = (y2 * spatial_scale - offset) - g.start_h;
  g.valid = is_finite(roi_width) && is_finite(roi_height);
  if (!aligned) {  // malformed RoIs become 1 x 1 (std::max's rule)
    roi_width = roi_width < static_cast<T>(1) ? static_cast<T>(1) : roi_width;
    roi_height = roi_height < static_cast<T>(1) ? static_cast<T>(1) : roi_height;
  }
  g.bin_h = roi_height / static_cast<T>(pooled_height);
  g.bin_w = roi_width / static_cast<T>(pooled_width);
  const int64_t grid_h = g.valid ? samples_per_bin(roi_height, pooled_height, sampling_ratio) : 0;
  const int64_t grid_w = g.valid ? samples_per_bin(roi_width, pooled_width, sampling_ratio) : 0;
  g.valid = g.valid && grid_h <= kMaxGrid && grid_w <= kMaxGrid;
  g.grid_h = static_cast<int32_t>(g.valid ? grid_h : 0);
  g.grid_w = static_cast<int32_t>(g.valid ? grid_w : 0);
  const int64_t samples = static_cast<int64_t>(g.grid_h) * g.grid_w;
  g.count = static_cast<T>(samples > 1 ? samples : 1);
  return g;
}

// Coordinate of sample k of bin b along an axis that starts at `start`.
template <typename T>
DETKIT_HOST_DEVICE T sample_coordinate(T start, int64_t b, T bin_size, int64_t k, int32_t grid) {
  return start + static_cast<T>(b) * bin_size +
      static_cast<T>(static_cast<float>(k) + .5f) * bin_size / static_cast<T>(grid);
}

// The two cells a coordinate interpolates between along one axis, and their
// weights: value = low_weight * cell[low] + high_weight * cell[high].
template <typename T>
struct AxisTaps {
  int32_t low, high;  // low = -1: the sample lies outside the map and contributes 0
  T low_weight, high_weight;
};

template <typename T>
DETKIT_HOST_DEVICE AxisTaps<T> axis_taps(T coordinate, int64_t size) {
  AxisTaps<T> t;
  // Written as !(inside) so that a NaN coordinate counts as outside.
  if (!(coordinate >= static_cast<T>(-1) && coordinate <= static_cast<T>(size))) {
    t.low = t.high = -1;
    t.low_weight = t.high_weight = static_cast<T>(0);
    return t;
  }
  T c = coordinate <= static_cast<T>(0) ? static_cast<T>(0) : coordinate;
  t.low = static_cast<int32_t>(c);
  if (t.low >= size - 1) {
    t.low = t.high = static_cast<int32_t>(size - 1);
    c = static_cast<T>(t.low);
  } else {
    t.high = t.low + 1;
  }
  t.high_weight = c - static_cast<T>(t.low);
  t.low_weight = static_cast<T>(1) - t.high_weight;
  return t;
}

}  // namespace roi_align
}  // namespace detkit
