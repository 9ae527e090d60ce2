#include "roi_checks.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <c10/util/Exception.h>

namespace detkit {
namespace {

bool is_reduced_float(at::ScalarType t) {
  return t == at::kHalf || t == at::kBFloat16;
}

void check_pooling(const char* op, double spatial_scale, int64_t pooled_height, int64_t pooled_width) {
  TORCH_CHECK_VALUE(
      pooled_height > 0 && pooled_width > 0, op,
      ": pooled_height and pooled_width must be positive, got (", pooled_height, ", ",
      pooled_width, ")");
  TORCH_CHECK_VALUE(
      std::isfinite(spatial_scale) && spatial_scale > 0, op,
      ": spatial_scale must be a positive finite number, got ", spatial_scale);
}

void check_rois(const char* op, const at::Tensor& rois, const at::Tensor& features, const char* features_name) {
  TORCH_CHECK_VALUE(
      rois.dim() == 2 && rois.size(1) == 5, op,
      ": rois must be a Tensor[K, 5] of (batch_index, x1, y1, x2, y2) rows, got shape ",
      rois.sizes());
  TORCH_CHECK(
      rois.device() == features.device(), op, ": ", features_name,
      " and rois must be on the same device, got ", features_name, " on ", features.device(),
      " and rois on ", rois.device());
  const auto dtype = features.scalar_type();
  const bool same = rois.scalar_type() == dtype;
  const bool float_rois_for_reduced = is_reduced_float(dtype) && rois.scalar_type() == at::kFloat;
  TORCH_CHECK(
      same || float_rois_for_reduced, op, ": rois dtype must match the ", features_name,
      " dtype (float16/bfloat16 ", features_name, " also take float32 rois), got ",
      features_name, " ", dtype, " and rois ", rois.scalar_type());
}

// The kernels address a feature map's cells with int32 offsets.
void check_plane(const char* op, int64_t height, int64_t width) {
  TORCH_CHECK_VALUE(
      height * width <= std::numeric_limits<int32_t>::max(), op, ": a feature map of ", height,
      " x ", width, " cells is too large for the kernels' int32 cell indices");
}

}  // namespace

void check_forward_args(
    const char* op, const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
    int64_t pooled_height, int64_t pooled_width) {
  TORCH_CHECK_VALUE(
      input.dim() == 4, op, ": input must be a 4-D tensor [N, C, H, W], got shape ",
      input.sizes());
  TORCH_CHECK(
      at::isFloatingType(input.scalar_type()), op,
      ": input must have a floating-point dtype, got ", input.scalar_type());
  check_rois(op, rois, input, "input");
  check_pooling(op, spatial_scale, pooled_height, pooled_width);
  check_plane(op, input.size(2), input.size(3));
}

void check_backward_args(
    const char* op, const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
    int64_t pooled_height, int64_t pooled_width, int64_t batch_size, int64_t channels,
    int64_t height, int64_t width) {
  TORCH_CHECK(
      at::isFloatingType(grad.scalar_type()), op,
      ": grad must have a floating-point dtype, got ", grad.scalar_type());
  check_rois(op, rois, grad, "grad");
  check_pooling(op, spatial_scale, pooled_height, pooled_width);
  TORCH_CHECK_VALUE(
      batch_size >= 0 && channels >= 0 && height >= 0 && width >= 0, op,
      ": input sizes must be non-negative, got [", batch_size, ", ", channels, ", ", height, ", ",
      width, "]");
  check_plane(op, height, width);
  const std::vector<int64_t> pooled_shape{rois.size(0), channels, pooled_height, pooled_width};
  TORCH_CHECK_VALUE(
      grad.sizes() == at::IntArrayRef(pooled_shape), op, ": grad must have shape ",
      at::IntArrayRef(pooled_shape), " (rois, channels, pooled size), got ", grad.sizes());
}

void check_cpu_dtype(const char* op, const at::Tensor& t, const char* what) {
  TORCH_CHECK(
      t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op, ": on CPU the ", what,
      " dtype must be float32 or float64, got ", t.scalar_type(),
      " (float16/bfloat16 CPU input is pooled in float32 inside torch.autocast('cpu'))");
}

at::MemoryFormat pooled_memory_format(const at::Tensor& t) {
  const bool channels_last =
      t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast);
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

void fail_bad_roi(const char* op, int64_t index, const double* roi, int64_t num_images) {
  for (int i = 1; i < 5; ++i) {
    TORCH_CHECK_VALUE(
        std::isfinite(roi[i]), op, ": rois[", index, "] = (", roi[0], ", ", roi[1], ", ", roi[2],
        ", ", roi[3], ", ", roi[4], ") has a coordinate that is not finite");
  }
  TORCH_CHECK_VALUE(
      false, op, ": rois[", index, ", 0] = ", roi[0],
      " is not a valid batch index: it must be an integer in [0, ", num_images,
      ") (the input holds ", num_images, " images)");
}

}  // namespace detkit
