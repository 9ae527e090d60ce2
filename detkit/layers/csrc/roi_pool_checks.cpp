#include "roi_pool_checks.h"

#include <cmath>
#include <cstdint>
#include <limits>

#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>

namespace detkit {
namespace roi_pool {
namespace {

bool is_reduced_float(at::ScalarType t) {
  return t == at::kHalf || t == at::kBFloat16;
}

void check_pooling(double spatial_scale, int64_t pooled_height, int64_t pooled_width) {
  TORCH_CHECK_VALUE(
      pooled_height > 0 && pooled_width > 0,
      "roi_pool: pooled_height and pooled_width must be positive, got (", pooled_height, ", ",
      pooled_width, ")");
  TORCH_CHECK_VALUE(
      std::isfinite(spatial_scale) && spatial_scale > 0,
      "roi_pool: spatial_scale must be a positive finite number, got ", spatial_scale);
}

void check_rois(const at::Tensor& rois, const at::Tensor& features, const char* features_name) {
  TORCH_CHECK_VALUE(
      rois.dim() == 2 && rois.size(1) == 5,
      "roi_pool: rois must be a Tensor[K, 5] of (batch_index, x1, y1, x2, y2) rows, got shape ",
      rois.sizes());
  TORCH_CHECK(
      rois.device() == features.device(), "roi_pool: ", features_name,
      " and rois must be on the same device, got ", features_name, " on ", features.device(),
      " and rois on ", rois.device());
  const auto dtype = features.scalar_type();
  const bool same = rois.scalar_type() == dtype;
  const bool float_rois_for_reduced = is_reduced_float(dtype) && rois.scalar_type() == at::kFloat;
  TORCH_CHECK(
      same || float_rois_for_reduced, "roi_pool: rois dtype must match the ", features_name,
      " dtype (float16/bfloat16 ", features_name, " also take float32 rois), got ",
      features_name, " ", dtype, " and rois ", rois.scalar_type());
}

}  // namespace

void check_forward_args(
    const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
    int64_t pooled_height, int64_t pooled_width) {
  TORCH_CHECK_VALUE(
      input.dim() == 4, "roi_pool: input must be a 4-D tensor [N, C, H, W], got shape ",
      input.sizes());
  TORCH_CHECK(
      at::isFloatingType(input.scalar_type()),
      "roi_pool: input must have a floating-point dtype, got ", input.scalar_type());
  check_rois(rois, input, "input");
  check_pooling(spatial_scale, pooled_height, pooled_width);
  TORCH_CHECK_VALUE(
      input.size(2) * input.size(3) <= std::numeric_limits<int32_t>::max(),
      "roi_pool: a feature map of ", input.size(2), " x ", input.size(3),
      " cells is too large for int32 argmax indices");
}

void check_backward_args(
    const at::Tensor& grad, const at::Tensor& rois, const at::Tensor& argmax,
    double spatial_scale, int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
    int64_t channels, int64_t height, int64_t width) {
  check_rois(rois, grad, "grad");
  check_pooling(spatial_scale, pooled_height, pooled_width);
  TORCH_CHECK_VALUE(
      batch_size >= 0 && channels >= 0 && height >= 0 && width >= 0,
      "roi_pool: input sizes must be non-negative, got [", batch_size, ", ", channels, ", ",
      height, ", ", width, "]");
  const std::vector<int64_t> pooled_shape{rois.size(0), channels, pooled_height, pooled_width};
  TORCH_CHECK_VALUE(
      grad.sizes() == at::IntArrayRef(pooled_shape), "roi_pool: grad must have shape ",
      at::IntArrayRef(pooled_shape), " (rois, channels, pooled size), got ", grad.sizes());
  TORCH_CHECK_VALUE(
      argmax.sizes() == grad.sizes() && argmax.scalar_type() == at::kInt &&
          argmax.device() == grad.device(),
      "roi_pool: argmax must be the int32 tensor returned by roi_pool_forward (shape ",
      grad.sizes(), " on ", grad.device(), "), got ", argmax.scalar_type(), " of shape ",
      argmax.sizes(), " on ", argmax.device());
}

at::MemoryFormat pooled_memory_format(const at::Tensor& t) {
  const bool channels_last =
      t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast);
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

at::Tensor allocate_argmax(const at::Tensor& output, bool with_argmax) {
  const auto options = output.options().dtype(at::kInt);
  return with_argmax ? at::empty_like(output, options) : at::empty({0}, options);
}

void fail_bad_roi(int64_t index, const double* roi, int64_t num_images) {
  for (int i = 1; i < 5; ++i) {
    TORCH_CHECK_VALUE(
        std::isfinite(roi[i]), "roi_pool: rois[", index, "] = (", roi[0], ", ", roi[1], ", ",
        roi[2], ", ", roi[3], ", ", roi[4], ") has a coordinate that is not finite");
  }
  TORCH_CHECK_VALUE(
      false, "roi_pool: rois[", index, ", 0] = ", roi[0],
      " is not a valid batch index: it must be an integer in [0, ", num_images,
      ") (the input holds ", num_images, " images)");
}

}  // namespace roi_pool
}  // namespace detkit
