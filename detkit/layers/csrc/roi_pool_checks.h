// What roi_pool checks and allocates beyond the checks shared by every RoI op
// (roi_checks.h): the argmax that its backward consumes.
#pragma once

#include <ATen/core/Tensor.h>

namespace detkit {
namespace roi_pool {

constexpr const char* kOp = "roi_pool";

// The shared backward checks, and that `argmax` is the int32 tensor of the
// forward (the grad's shape and device).
void check_backward_args(
    const at::Tensor& grad, const at::Tensor& rois, const at::Tensor& argmax,
    double spatial_scale, int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
    int64_t channels, int64_t height, int64_t width);

// The argmax output for `output`: int32 with its shape and layout, or an
// empty tensor when the caller does not need it (inference).
at::Tensor allocate_argmax(const at::Tensor& output, bool with_argmax);

}  // namespace roi_pool
}  // namespace detkit
