// ATen adapter of the CUDA RoI pooling kernels: checks arguments and allocates
// outputs on the input's device and stream (the backward's accumulation comes
// from cuda_adapter.h).
#include <cstdint>

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../roi_checks.h"
#include "../roi_pool_checks.h"
#include "../roi_pool_geometry.h"
#include "cuda_adapter.h"
#include "roi_pool_kernels.h"

namespace detkit {
namespace roi_pool {
namespace {

using detkit::cuda::strides_of;

detkit::cuda::DType kernel_dtype(const at::Tensor& t) {
  return detkit::cuda::to_kernel_dtype(kOp, t.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> roi_pool_forward_cuda(
    const at::Tensor& input, const at::Tensor& rois, double spatial_scale, int64_t pooled_height,
    int64_t pooled_width, bool with_argmax) {
  check_forward_args(kOp, input, rois, spatial_scale, pooled_height, pooled_width);
  const auto dtype = kernel_dtype(input);
  const c10::cuda::CUDAGuard device_guard(input.device());
  const RoiShape s{input.size(0), input.size(1), input.size(2), input.size(3),
                   rois.size(0),  pooled_height, pooled_width};
  TORCH_CHECK_VALUE(
      s.channels * pooled_height * pooled_width <= INT32_MAX,
      "roi_pool: ", s.channels, " channels x ", pooled_height, " x ", pooled_width,
      " outputs per RoI exceed the CUDA kernel's int32 indexing");
  // The forward kernel keeps an RoI's geometry row in (48 KiB of) shared memory.
  TORCH_CHECK(
      geometry_row_size(pooled_height, pooled_width) * sizeof(int32_t) <= 48 * 1024,
      "roi_pool: a pooled size of ", pooled_height, " x ", pooled_width,
      " is too large for the CUDA kernel");
  const at::MemoryFormat format = pooled_memory_format(input);
  at::Tensor output = at::empty(
      {s.num_rois, s.channels, pooled_height, pooled_width}, input.options().memory_format(format));
  at::Tensor argmax = allocate_argmax(output, with_argmax);
  if (s.num_rois == 0) {
    return {output, argmax};
  }
  const at::Tensor features = input.contiguous(format);
  const at::Tensor rois_c = rois.contiguous();
  C10_CUDA_CHECK(cuda::launch_forward(
      dtype, kernel_dtype(rois), features.const_data_ptr(), rois_c.const_data_ptr(),
      spatial_scale, format == at::MemoryFormat::ChannelsLast, s, output.mutable_data_ptr(),
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
  const auto dtype = kernel_dtype(grad);
  const c10::cuda::CUDAGuard device_guard(grad.device());
  const RoiShape s{batch_size, channels, height, width, rois.size(0), pooled_height, pooled_width};
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor rois_c = rois.contiguous();
  return detkit::cuda::accumulate_input_grad(
      grad, s, pooled_memory_format(argmax), stream,
      [&](void* buffer, detkit::cuda::Strides4 strides, const detkit::cuda::FixedPointTarget* fixed) {
        C10_CUDA_CHECK(cuda::launch_backward(
            dtype, kernel_dtype(rois), grad.const_data_ptr(), strides_of(grad),
            argmax.const_data_ptr<int32_t>(), strides_of(argmax), rois_c.const_data_ptr(), s,
            buffer, strides, fixed, stream));
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(detkit, CUDA, m) {
  m.impl("roi_pool_forward", &roi_pool_forward_cuda);
  m.impl("roi_pool_backward", &roi_pool_backward_cuda);
}

}  // namespace roi_pool
}  // namespace detkit
