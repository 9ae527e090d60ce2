// ATen adapter of the CUDA RoIAlign kernels: checks arguments and allocates
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
#include "cuda_adapter.h"
#include "roi_align_kernels.h"

namespace detkit {
namespace roi_align {
namespace {

constexpr const char* kOp = "roi_align";

using detkit::cuda::strides_of;

detkit::cuda::DType kernel_dtype(const at::Tensor& t) {
  return detkit::cuda::to_kernel_dtype(kOp, t.scalar_type());
}

at::Tensor roi_align_forward_cuda(
    const at::Tensor& input, const at::Tensor& rois, double spatial_scale, int64_t pooled_height,
    int64_t pooled_width, int64_t sampling_ratio, bool aligned) {
  check_forward_args(kOp, input, rois, spatial_scale, pooled_height, pooled_width);
  const auto dtype = kernel_dtype(input);
  const c10::cuda::CUDAGuard device_guard(input.device());
  const RoiShape s{input.size(0), input.size(1), input.size(2), input.size(3),
                   rois.size(0),  pooled_height, pooled_width};
  const at::MemoryFormat format = pooled_memory_format(input);
  at::Tensor output = at::empty(
      {s.num_rois, s.channels, pooled_height, pooled_width}, input.options().memory_format(format));
  if (output.numel() == 0) {
    return output;
  }
  const at::Tensor features = input.contiguous(format);
  const at::Tensor rois_c = rois.contiguous();
  C10_CUDA_CHECK(cuda::launch_forward(
      dtype, kernel_dtype(rois), features.const_data_ptr(), rois_c.const_data_ptr(),
      spatial_scale, sampling_ratio, aligned, format == at::MemoryFormat::ChannelsLast, s,
      output.mutable_data_ptr(), c10::cuda::getCurrentCUDAStream()));
  return output;
}

at::Tensor roi_align_backward_cuda(
    const at::Tensor& grad, const at::Tensor& rois, double spatial_scale, int64_t pooled_height,
    int64_t pooled_width, int64_t sampling_ratio, bool aligned, int64_t batch_size,
    int64_t channels, int64_t height, int64_t width) {
  check_backward_args(kOp, grad, rois, spatial_scale, pooled_height, pooled_width, batch_size,
                      channels, height, width);
  const auto dtype = kernel_dtype(grad);
  const c10::cuda::CUDAGuard device_guard(grad.device());
  const RoiShape s{batch_size, channels, height, width, rois.size(0), pooled_height, pooled_width};
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor rois_c = rois.contiguous();
  return detkit::cuda::accumulate_input_grad(
      grad, s, pooled_memory_format(grad), stream,
      [&](void* buffer, detkit::cuda::Strides4 strides, const detkit::cuda::FixedPointTarget* fixed) {
        C10_CUDA_CHECK(cuda::launch_backward(
            dtype, kernel_dtype(rois), grad.const_data_ptr(), strides_of(grad),
            rois_c.const_data_ptr(), spatial_scale, sampling_ratio, aligned, s, buffer, strides,
            fixed, stream));
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(detkit, CUDA, m) {
  m.impl("roi_align_forward", &roi_align_forward_cuda);
  m.impl("roi_align_backward", &roi_align_backward_cuda);
}

}  // namespace roi_align
}  // namespace detkit
