// RoI max-pooling geometry shared by the CPU and CUDA kernels.
//
// Fast R-CNN's RoI pooling layer (Girshick 2015, section 2.1) splits each
// region of interest into a grid of pooled_height x pooled_width bins on the
// feature map and max-pools every bin. These functions turn one RoI row
// (batch_index, x1, y1, x2, y2) into the bins' integer bounds. They are
// computed once per RoI and stored in a "geometry table" that the pooling
// loops read, so no kernel repeats this arithmetic per channel.
//
// The rules are the paper's layer (and torchvision.ops.roi_pool): corners are
// scaled and rounded half away from zero, the RoI is at least 1 x 1, bin b
// spans [floor(b * bin), ceil((b + 1) * bin)) from the RoI start, and every
// bound is clipped to the feature map. Scaling and bin arithmetic happen in
// the compute type T (float for float/half/bfloat16 RoIs, double for double),
// exactly as torchvision does for float32 and float64.
//
// This header is plain C++ so that nvcc compiles it without torch headers.
#pragma once

#include <cmath>
#include <cstdint>

#include "roi_common.h"

namespace detkit {
namespace roi_pool {

// Row layout of the geometry table: the batch index, then (start, end) of
// every bin row, then (start, end) of every bin column.
DETKIT_HOST_DEVICE int64_t geometry_row_size(int64_t pooled_height, int64_t pooled_width) {
  return 1 + 2 * pooled_height + 2 * pooled_width;
}

// Scaled corners beyond this magnitude lie far outside any feature map;
// clamping keeps absurd coordinates from overflowing the integer arithmetic.
constexpr double kMaxScaledCorner = 1073741824.0;  // 2^30

template <typename T>
DETKIT_HOST_DEVICE int64_t scaled_corner(T coordinate, T spatial_scale) {
  const double scaled = static_cast<double>(coordinate * spatial_scale);
  const double clamped = fmin(fmax(scaled, -kMaxScaledCorner), kMaxScaledCorner);
  return static_cast<int64_t>(round(clamped));  // C round: half away from zero
}

DETKIT_HOST_DEVICE int32_t clip(int64_t value, int64_t limit) {
  return static_cast<int32_t>(value < 0 ? 0 : (value > limit ? limit : value));
}

// Bounds [start, end) of `bins` consecutive bins along one axis of an RoI
// that starts at `roi_start` and spans `roi_length` cells, written to
// bounds[2 * b] and bounds[2 * b + 1], clipped to [0, limit].
template <typename T>
DETKIT_HOST_DEVICE void bin_bounds(
    int64_t roi_start, int64_t roi_length, int64_t bins, int64_t limit, int32_t* bounds) {
  const T bin_size = static_cast<T>(roi_length) / static_cast<T>(bins);
  for (int64_t b = 0; b < bins; ++b) {
    const int64_t start = static_cast<int64_t>(floor(static_cast<double>(static_cast<T>(b) * bin_size)));
    const int64_t end = static_cast<int64_t>(ceil(static_cast<double>(static_cast<T>(b + 1) * bin_size)));
    bounds[2 * b] = clip(start + roi_start, limit);
    bounds[2 * b + 1] = clip(end + roi_start, limit);
  }
}

// Fills one geometry-table row for the RoI (batch, x1, y1, x2, y2) given in
// compute type T. The caller has validated the batch index.
template <typename T>
DETKIT_HOST_DEVICE void fill_geometry_row(
    T batch, T x1, T y1, T x2, T y2, T spatial_scale, int64_t height, int64_t width,
    int64_t pooled_height, int64_t pooled_width, int32_t* row) {
  const int64_t start_w = scaled_corner(x1, spatial_scale);
  const int64_t start_h = scaled_corner(y1, spatial_scale);
  const int64_t end_w = scaled_corner(x2, spatial_scale);
  const int64_t end_h = scaled_corner(y2, spatial_scale);
  const int64_t roi_width = end_w - start_w + 1 > 1 ? end_w - start_w + 1 : 1;
  const int64_t roi_height = end_h - start_h + 1 > 1 ? end_h - start_h + 1 : 1;
  row[0] = static_cast<int32_t>(batch);
  bin_bounds<T>(start_h, roi_height, pooled_height, height, row + 1);
  bin_bounds<T>(start_w, roi_width, pooled_width, width, row + 1 + 2 * pooled_height);
}

}  // namespace roi_pool
}  // namespace detkit
