// Argument checks and layout rules shared by every RoI op and backend, so that
// bad input fails with the same clear message for roi_pool and roi_align, on
// CPU and CUDA. detkit/layers/_roi_utils.py holds their twins for the fake
// (meta) kernels.
#pragma once

#include <ATen/core/Tensor.h>

#include "roi_common.h"

namespace detkit {

// Shapes, devices and dtypes of a forward call, the output size and the scale.
// `op` names the op in the messages ("roi_pool", "roi_align").
void check_forward_args(
    const char* op, const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
    int64_t pooled_height, int64_t pooled_width);

// Shapes, devices and dtypes of a backward call: `grad` is the gradient of the
// pooled output [K, channels, pooled_height, pooled_width].
void check_backward_args(
    const char* op, const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
    int64_t pooled_height, int64_t pooled_width, int64_t batch_size, int64_t channels,
    int64_t height, int64_t width);

// The CPU kernels compute in float32 or float64; `what` is "input" or "grad".
void check_cpu_dtype(const char* op, const at::Tensor& t, const char* what);

// Channels-last when `t` is laid out channels-last (and not also plain
// contiguous), else contiguous. Outputs follow their input's format by this
// rule; the fake kernels apply the same rule.
at::MemoryFormat pooled_memory_format(const at::Tensor& t);

// Throws the error for RoI row `index` (its five values given) whose batch
// index is not an integer in [0, num_images) or whose corners are not finite.
[[noreturn]] void fail_bad_roi(const char* op, int64_t index, const double* roi, int64_t num_images);

// Checks the RoI row `roi` (five values, row `index` of the RoIs) and throws the
// error of fail_bad_roi for a bad one.
template <typename T>
inline void check_roi_row(const char* op, const T* roi, int64_t index, int64_t num_images) {
  if (!is_valid_roi(roi[0], roi[1], roi[2], roi[3], roi[4], num_images)) {
    const double values[5] = {double(roi[0]), double(roi[1]), double(roi[2]), double(roi[3]),
                              double(roi[4])};
    fail_bad_roi(op, index, values, num_images);
  }
}

}  // namespace detkit
