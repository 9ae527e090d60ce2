// Launchers of the CUDA RoIAlign kernels (plain C++, see kernel_api.h);
// roi_align_cuda.cpp adapts them to ATen tensors.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "kernel_api.h"

namespace detkit {
namespace roi_align {
namespace cuda {

using detkit::cuda::DType;
using detkit::cuda::FixedPointTarget;
using detkit::cuda::Strides4;

// Pools `input` (NCHW, or NHWC when `channels_last`) into `output` laid out in
// the same format. `rois` has the input's type, or float32 for float16/
// bfloat16 input. A bad RoI (batch index, corners, sampling grid) fails a
// device assert.
cudaError_t launch_forward(
    DType dtype, DType roi_dtype, const void* input, const void* rois, double spatial_scale,
    int64_t sampling_ratio, bool aligned, bool channels_last, const RoiShape& shape, void* output,
    cudaStream_t stream);

// Adds each sample's shares of its bin's gradient to its four cells with
// atomics, into `grad_input` (zero-filled; float32 for float16/bfloat16 grads,
// else the grad's type, laid out by `input_strides`) or, when `fixed_point` is
// given, into its deterministic sums instead.
cudaError_t launch_backward(
    DType dtype, DType roi_dtype, const void* grad, Strides4 grad_strides, const void* rois,
    double spatial_scale, int64_t sampling_ratio, bool aligned, const RoiShape& shape,
    void* grad_input, Strides4 input_strides, const FixedPointTarget* fixed_point,
    cudaStream_t stream);

}  // namespace cuda
}  // namespace roi_align
}  // namespace detkit
