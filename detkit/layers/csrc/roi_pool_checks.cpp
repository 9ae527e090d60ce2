#include "roi_pool_checks.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>

#include "roi_checks.h"

namespace detkit {
namespace roi_pool {

void check_backward_args(
    const at::Tensor& grad, const at::Tensor& rois, const at::Tensor& argmax,
    double spatial_scale, int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
    int64_t channels, int64_t height, int64_t width) {
  detkit::check_backward_args(kOp, grad, rois, spatial_scale, pooled_height, pooled_width,
                              batch_size, channels, height, width);
  TORCH_CHECK_VALUE(
      argmax.sizes() == grad.sizes() && argmax.scalar_type() == at::kInt &&
          argmax.device() == grad.device(),
      "roi_pool: argmax must be the int32 tensor returned by roi_pool_forward (shape ",
      grad.sizes(), " on ", grad.device(), "), got ", argmax.scalar_type(), " of shape ",
      argmax.sizes(), " on ", argmax.device());
}

at::Tensor allocate_argmax(const at::Tensor& output, bool with_argmax) {
  const auto options = output.options().dtype(at::kInt);
  return with_argmax ? at::empty_like(output, options) : at::empty({0}, options);
}

}  // namespace roi_pool
}  // namespace detkit
