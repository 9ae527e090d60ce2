// Definitions shared by every RoI op and by both compilers (the C++ CPU kernels
// and nvcc's CUDA kernels): the sizes of one call and the checks of one RoI row.
// Plain C++ without torch headers, so that nvcc compiles it in seconds.
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define DETKIT_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define DETKIT_HOST_DEVICE inline
#endif

namespace detkit {

// Sizes of one call of an RoI op: the feature map [num_images, channels,
// height, width], the number of RoIs and the pooled grid of each.
struct RoiShape {
  int64_t num_images, channels, height, width, num_rois, pooled_height, pooled_width;

  DETKIT_HOST_DEVICE int64_t bins() const { return pooled_height * pooled_width; }
  DETKIT_HOST_DEVICE int64_t plane() const { return height * width; }
};

// std::isfinite on the host, CUDA's isfinite on the device.
template <typename T>
DETKIT_HOST_DEVICE bool is_finite(T value) {
#ifdef __CUDA_ARCH__
  return isfinite(value);
#else
  return std::isfinite(value);
#endif
}

// True when `value` is an integer in [0, num_images): a usable batch index.
template <typename T>
DETKIT_HOST_DEVICE bool is_valid_batch_index(T value, int64_t num_images) {
  const double v = static_cast<double>(value);
  return v >= 0.0 && v < static_cast<double>(num_images) && v == floor(v);
}

// True when the RoI row (batch, x1, y1, x2, y2) has a usable batch index and
// finite corners: what every kernel requires of its input.
template <typename T>
DETKIT_HOST_DEVICE bool is_valid_roi(T batch, T x1, T y1, T x2, T y2, int64_t num_images) {
  return is_valid_batch_index(batch, num_images) && is_finite(x1) && is_finite(y1) &&
      is_finite(x2) && is_finite(y2);
}

}  // namespace detkit
