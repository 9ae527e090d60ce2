// ATen adapter of the CUDA RoI pooling kernels: checks arguments, allocates
// outputs on the input's device and stream, and picks the backward variant.
#include <cstdint>

#include <ATen/Context.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../roi_pool_checks.h"
#include "../roi_pool_geometry.h"
#include "roi_pool_kernels.h"

namespace detkit {
namespace roi_pool {
namespace {

cuda::DType to_kernel_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return cuda::DType::kFloat32;
    case at::kDouble:
      return cuda::DType::kFloat64;
    case at::kHalf:
      return cuda::DType::kFloat16;
    case at::kBFloat16:
      return cuda::DType::kBFloat16;
    default:
      TORCH_CHECK(
          false, "roi_pool: on CUDA the dtype must be float32, float64, float16 or bfloat16, got ",
          t);
  }
}

cuda::Strides4 strides_of(const at::Tensor& t) {
  return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

// The forward kernel keeps an RoI's geometry row in (48 KiB of) shared memory.
void check_shared_geometry(const cuda::PoolShape& s) {
  TORCH_CHECK(
      geometry_row_size(s.pooled_height, s.pooled_width) * sizeof(int32_t) <= 48 * 1024,
      "roi_pool: a pooled size of ", s.pooled_height, " x ", s.pooled_width,
      " is too large for the CUDA kernel");
}

// The per-RoI geometry table on the device; fails a device assert on bad RoIs.
at::Tensor geometry_table(const at::Tensor& rois, double spatial_scale, const cuda::PoolShape& s) {
  const at::Tensor rois_c = rois.contiguous();
  at::Tensor table = at::empty(
      {s.num_rois, geometry_row_size(s.pooled_height, s.pooled_width)},
      rois.options().dtype(at::kInt));
  C10_CUDA_CHECK(cuda::launch_geometry(
      to_kernel_dtype(rois.scalar_type()), rois_c.const_data_ptr(), spatial_scale, s,
      table.mutable_data_ptr<int32_t>(), c10::cuda::getCurrentCUDAStream()));
  return table;
}

std::tuple<at::Tensor, at::Tensor> roi_pool_forward_cuda(
    const at::Tensor& input, const at::Tensor& rois, double spatial_scale, int64_t pooled_height,
    int64_t pooled_width, bool with_argmax) {
  check_forward_args(input, rois, spatial_scale, pooled_height, pooled_width);
  const auto dtype = to_kernel_dtype(input.scalar_type());
  const c10::cuda::CUDAGuard device_guard(input.device());
  const cuda::PoolShape s{input.size(0), input.size(1), input.size(2), input.size(3),
                          rois.size(0),  pooled_height, pooled_width};
  TORCH_CHECK_VALUE(
      s.channels * pooled_height * pooled_width <= INT32_MAX,
      "roi_pool: ", s.channels, " channels x ", pooled_height, " x ", pooled_width,
      " outputs per RoI exceed the CUDA kernel's int32 indexing");
  const at::MemoryFormat format = pooled_memory_format(input);
  at::Tensor output = at::empty(
      {s.num_rois, s.channels, pooled_height, pooled_width}, input.options().memory_format(format));
  at::Tensor argmax = allocate_argmax(output, with_argmax);
  if (s.num_rois == 0) {
    return {output, argmax};
  }
  check_shared_geometry(s);
  const at::Tensor features = input.contiguous(format);
  const at::Tensor rois_c = rois.contiguous();
  C10_CUDA_CHECK(cuda::launch_forward(
      dtype, to_kernel_dtype(rois.scalar_type()), features.const_data_ptr(),
      rois_c.const_data_ptr(), spatial_scale, format == at::MemoryFormat::ChannelsLast, s,
      output.mutable_data_ptr(),
      with_argmax ? argmax.mutable_data_ptr<int32_t>() : nullptr,
      c10::cuda::getCurrentCUDAStream()));
  return {output, argmax};
}

at::Tensor roi_pool_backward_cuda(
    const at::Tensor& grad, const at::Tensor& rois, const at::Tensor& argmax,
    double spatial_scale, int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
    int64_t channels, int64_t height, int64_t width) {
  check_backward_args(grad, rois, argmax, spatial_scale, pooled_height, pooled_width,
                      batch_size, channels, height, width);
  const auto dtype = to_kernel_dtype(grad.scalar_type());
  const c10::cuda::CUDAGuard device_guard(grad.device());
  const cuda::PoolShape s{batch_size, channels, height, width,
                          rois.size(0), pooled_height, pooled_width};
  const at::MemoryFormat format = pooled_memory_format(argmax);
  const auto options = grad.options().memory_format(format);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  if (grad.numel() == 0) {
    return at::empty({batch_size, channels, height, width}, options).zero_();
  }
  if (at::globalContext().deterministicAlgorithms()) {
    const at::Tensor table = geometry_table(rois, spatial_scale, s);
    at::Tensor grad_input = at::empty({batch_size, channels, height, width}, options);
    C10_CUDA_CHECK(cuda::launch_backward_gather(
        dtype, grad.const_data_ptr(), strides_of(grad), argmax.const_data_ptr<int32_t>(),
        strides_of(argmax), table.const_data_ptr<int32_t>(), s, grad_input.mutable_data_ptr(),
        format == at::MemoryFormat::ChannelsLast, stream));
    return grad_input;
  }
  // float16/bfloat16 gradients are accumulated in float32, then rounded once.
  const bool reduced = grad.scalar_type() == at::kHalf || grad.scalar_type() == at::kBFloat16;
  // at::zeros would drop the memory format: allocate, then zero.
  at::Tensor accumulator =
      at::empty({batch_size, channels, height, width}, reduced ? options.dtype(at::kFloat) : options)
          .zero_();
  const at::Tensor rois_c = rois.contiguous();
  C10_CUDA_CHECK(cuda::launch_backward_atomic(
      dtype, to_kernel_dtype(rois.scalar_type()), grad.const_data_ptr(), strides_of(grad),
      argmax.const_data_ptr<int32_t>(), strides_of(argmax), rois_c.const_data_ptr(), s,
      accumulator.mutable_data_ptr(), strides_of(accumulator), stream));
  return reduced ? accumulator.to(grad.scalar_type()) : accumulator;
}

}  // namespace

TORCH_LIBRARY_IMPL(detkit, CUDA, m) {
  m.impl("roi_pool_forward", &roi_pool_forward_cuda);
  m.impl("roi_pool_backward", &roi_pool_backward_cuda);
}

}  // namespace roi_pool
}  // namespace detkit
