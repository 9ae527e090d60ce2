// The finish of a deterministic backward: fixed-point sums (and flags of
// non-finite contributions) to gradient values. See fixed_point_add.
#include <cmath>
#include <cstdint>

#include "cuda_helpers.cuh"

namespace detkit {
namespace cuda {
namespace {

template <typename T, bool kChannelsLast>
__global__ void __launch_bounds__(kThreads) finish_kernel(
    FixedPointTarget target, RoiShape s, T* __restrict__ grad_input) {
  using C = typename Scalar<T>::compute;
  const int64_t total = s.num_images * s.channels * s.height * s.width;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    int64_t n, c, h, w;
    unflatten<kChannelsLast>(e, s.channels, s.height, s.width, n, c, h, w);
    const int64_t index = offset(target.strides, n, c, h, w);
    const int32_t flags = target.flags[index];
    double value;
    if ((flags & kSawNaN) || ((flags & kSawPlusInf) && (flags & kSawMinusInf))) {
      value = NAN;
    } else if (flags & kSawPlusInf) {
      value = INFINITY;
    } else if (flags & kSawMinusInf) {
      value = -INFINITY;
    } else {
      const long long units = static_cast<long long>(target.sums[index]);
      value = static_cast<double>(units) / target.scales[c];
    }
    grad_input[e] = Scalar<T>::store(static_cast<C>(value));
  }
}

}  // namespace

cudaError_t launch_fixed_point_finish(
    DType dtype, const FixedPointTarget& target, const RoiShape& shape, bool channels_last,
    void* grad_input, cudaStream_t stream) {
  const int64_t total = shape.num_images * shape.channels * shape.height * shape.width;
  if (total == 0) {
    return cudaSuccess;
  }
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    T* out = static_cast<T*>(grad_input);
    if (channels_last) {
      finish_kernel<T, true><<<grid_for(total), kThreads, 0, stream>>>(target, shape, out);
    } else {
      finish_kernel<T, false><<<grid_for(total), kThreads, 0, stream>>>(target, shape, out);
    }
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace detkit
