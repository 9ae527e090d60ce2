// Argument checks and layout rules shared by every roi_pool backend, so that
// bad input fails with the same clear message on CPU and CUDA.
#pragma once

#include <ATen/core/Tensor.h>

namespace detkit {
namespace roi_pool {

// Shapes, devices, dtypes, output size and scale of a forward call.
void check_forward_args(
    const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
    int64_t pooled_height, int64_t pooled_width);

// Shapes, devices and dtypes of a backward call.
void check_backward_args(
    const at::Tensor& grad, const at::Tensor& rois, const at::Tensor& argmax,
    double spatial_scale, int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
    int64_t channels, int64_t height, int64_t width);

// Channels-last when `t` is laid out channels-last (and not also plain
// contiguous), else contiguous. Outputs follow the input's format with this
// rule; detkit/layers/roi_pool.py's fake kernels apply the same rule.
at::MemoryFormat pooled_memory_format(const at::Tensor& t);

// The argmax output for `output`: int32 with its shape and layout, or an
// empty tensor when the caller does not need it (inference).
at::Tensor allocate_argmax(const at::Tensor& output, bool with_argmax);

// Throws the error for RoI row `index` (its five values given) whose batch
// index is not an integer in [0, num_images) or whose corners are not finite.
[[noreturn]] void fail_bad_roi(int64_t index, const double* roi, int64_t num_images);

}  // namespace roi_pool
}  // namespace detkit
