// Launchers of the CUDA RoI max-pooling kernels (plain C++, see kernel_api.h);
// roi_pool_cuda.cpp adapts them to ATen tensors.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "kernel_api.h"

namespace detkit {
namespace roi_pool {
namespace cuda {

using detkit::cuda::DType;
using detkit::cuda::FixedPointTarget;
using detkit::cuda::Strides4;

// Max-pools `input` (NCHW, or NHWC when `channels_last`) into `output` and
// `argmax` laid out in the same format; `argmax` may be null (inference).
// Each block computes its RoI's geometry row in shared memory. `rois` has the
// input's type, or float32 for float16/bfloat16 input. A bad batch index or
// corner fails a device assert.
cudaError_t launch_forward(
    DType dtype, DType roi_dtype, const void* input, const void* rois, double spatial_scale,
    bool channels_last, const RoiShape& shape, void* output, int32_t* argmax,
    cudaStream_t stream);

// Adds every output gradient to its argmax input element with atomics, into
// `grad_input` (zero-filled; float32 for float16/bfloat16 grads, else the
// grad's type, laid out by `input_strides`) or, when `fixed_point` is given,
// into its deterministic sums instead.
cudaError_t launch_backward(
    DType dtype, DType roi_dtype, const void* grad, Strides4 grad_strides, const int32_t* argmax,
    Strides4 argmax_strides, const void* rois, const RoiShape& shape, void* grad_input,
    Strides4 input_strides, const FixedPointTarget* fixed_point, cudaStream_t stream);

}  // namespace cuda
}  // namespace roi_pool
}  // namespace detkit
