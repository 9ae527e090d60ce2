// Types shared by the launchers of every op's CUDA kernels. Plain C++ over raw
// pointers, so that the .cu files need no torch headers (nvcc compiles them in
// seconds); the *_cuda.cpp adapters translate ATen tensors into these.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "../roi_common.h"

namespace detkit {
namespace cuda {

enum class DType { kFloat32, kFloat64, kFloat16, kBFloat16 };

// Element strides of a 4-D tensor.
struct Strides4 {
  int64_t n, c, h, w;
};

// Where a deterministic backward adds its contributions (fixed_point.cuh):
// int64 fixed-point sums and flags of non-finite contributions, one per input
// gradient element (laid out by `strides`), and every channel's scale.
struct FixedPointTarget {
  unsigned long long* sums;
  int32_t* flags;
  const double* scales;
  Strides4 strides;
};

// Writes the input gradient (`dtype`, NCHW or NHWC when `channels_last`) from
// the fixed-point sums and flags of `target`.
cudaError_t launch_fixed_point_finish(
    DType dtype, const FixedPointTarget& target, const RoiShape& shape, bool channels_last,
    void* grad_input, cudaStream_t stream);

}  // namespace cuda
}  // namespace detkit
