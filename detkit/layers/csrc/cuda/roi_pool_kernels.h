// Launchers of the CUDA RoI pooling kernels. Plain C++ over raw pointers so
// that the .cu file needs no torch headers (nvcc compiles it in seconds);
// roi_pool_cuda.cpp adapts them to ATen tensors.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace detkit {
namespace roi_pool {
namespace cuda {

enum class DType { kFloat32, kFloat64, kFloat16, kBFloat16 };

// Element strides of a 4-D tensor.
struct Strides4 {
  int64_t n, c, h, w;
};

struct PoolShape {
  int64_t num_images, channels, height, width, num_rois, pooled_height, pooled_width;
};

// Writes the geometry table [num_rois, geometry_row_size] (roi_pool_geometry.h)
// for `rois` [num_rois, 5], which the deterministic backward reads. A bad batch
// index or corner fails a device assert.
cudaError_t launch_geometry(
    DType roi_dtype, const void* rois, double spatial_scale, const PoolShape& shape,
    int32_t* table, cudaStream_t stream);

// Max-pools `input` (NCHW, or NHWC when `channels_last`) into `output` and
// `argmax` laid out in the same format; `argmax` may be null (inference).
// Each block computes its RoI's geometry row in shared memory. `rois` has the
// input's type, or float32 for float16/bfloat16 input.
cudaError_t launch_forward(
    DType dtype, DType roi_dtype, const void* input, const void* rois, double spatial_scale,
    bool channels_last, const PoolShape& shape, void* output, int32_t* argmax,
    cudaStream_t stream);

// Adds every output gradient to its argmax input element with atomics.
// `grad_input` (zero-filled) has the float32 type for float16/bfloat16 grads,
// else the grad's type.
cudaError_t launch_backward_atomic(
    DType dtype, DType roi_dtype, const void* grad, Strides4 grad_strides, const int32_t* argmax,
    Strides4 argmax_strides, const void* rois, const PoolShape& shape, void* grad_input,
    Strides4 input_strides, cudaStream_t stream);

// Writes every input gradient element by gathering the outputs that chose it,
// in (RoI, bin) order: bitwise reproducible. `grad_input` is NCHW, or NHWC
// when `channels_last`, of the grad's type.
cudaError_t launch_backward_gather(
    DType dtype, const void* grad, Strides4 grad_strides, const int32_t* argmax,
    Strides4 argmax_strides, const int32_t* table, const PoolShape& shape, void* grad_input,
    bool channels_last, cudaStream_t stream);

}  // namespace cuda
}  // namespace roi_pool
}  // namespace detkit
