// Device helpers shared by every op's CUDA kernels: storage types and their
// compute types, dtype dispatch, launch sizes, index arithmetic, and the
// fixed-point adds of the deterministic backward passes.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kernel_api.h"

namespace detkit {
namespace cuda {

constexpr int kThreads = 256;

// Storage type T, the type it is computed in, and the conversions.
template <typename T>
struct Scalar {
  using compute = T;
  __device__ static T load(T v) { return v; }
  __device__ static T store(T v) { return v; }
};
template <>
struct Scalar<__half> {
  using compute = float;
  __device__ static float load(__half v) { return __half2float(v); }
  __device__ static __half store(float v) { return __float2half(v); }
};
template <>
struct Scalar<__nv_bfloat16> {
  using compute = float;
  __device__ static float load(__nv_bfloat16 v) { return __bfloat162float(v); }
  __device__ static __nv_bfloat16 store(float v) { return __float2bfloat16(v); }
};

// Calls f(T{}) with the storage type named by `dtype`.
template <typename F>
cudaError_t dispatch(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat32:
      return f(float{});
    case DType::kFloat64:
      return f(double{});
    case DType::kFloat16:
      return f(__half{});
    case DType::kBFloat16:
      return f(__nv_bfloat16{});
  }
  return cudaErrorInvalidValue;
}

// Calls f(T{}, R{}) with the storage types of the features and the RoIs:
// the RoIs have the features' type, or float32 for float16/bfloat16 features.
template <typename F>
cudaError_t dispatch_with_rois(DType dtype, DType roi_dtype, F&& f) {
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    return roi_dtype == dtype ? f(tag, tag) : f(tag, float{});
  });
}

// Calls f(std::true_type{}) or f(std::false_type{}): a runtime flag picks a
// kernel's bool template argument (decltype(flag)::value).
template <typename F>
cudaError_t dispatch_flag(bool flag, F&& f) {
  return flag ? f(std::true_type{}) : f(std::false_type{});
}

inline int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// Blocks of a grid-stride loop over `work` elements.
inline int64_t grid_for(int64_t work) {
  return std::min<int64_t>(ceil_div(work, kThreads), int64_t(1) << 20);
}

// Splits flat index e of an [n, channels, height, width] tensor stored NCHW
// (or NHWC when kChannelsLast) into its coordinates.
template <bool kChannelsLast>
__device__ __forceinline__ void unflatten(
    int64_t e, int64_t channels, int64_t height, int64_t width, int64_t& n, int64_t& c,
    int64_t& h, int64_t& w) {
  if (kChannelsLast) {
    c = e % channels;
    e /= channels;
    w = e % width;
    e /= width;
    h = e % height;
    n = e / height;
  } else {
    w = e % width;
    e /= width;
    h = e % height;
    e /= height;
    c = e % channels;
    n = e / channels;
  }
}

__device__ __forceinline__ int64_t offset(
    const Strides4& st, int64_t n, int64_t c, int64_t h, int64_t w) {
  return n * st.n + c * st.c + h * st.h + w * st.w;
}

// Flags of the non-finite contributions an element received.
constexpr int32_t kSawNaN = 1, kSawPlusInf = 2, kSawMinusInf = 4;

// Adds `value` to element `index` (an offset by target.strides) of channel `c`
// of a deterministic backward's target: rounded to an integer multiple of
// 1 / scales[c] and added to an int64 sum, whose additions commute exactly;
// a non-finite value only sets a flag, which the finish kernel turns into the
// NaN or infinity a float sum would hold.
__device__ __forceinline__ void fixed_point_add(
    const FixedPointTarget& target, int64_t index, int64_t c, double value) {
  if (!isfinite(value)) {
    const int32_t flag = isnan(value) ? kSawNaN : (value > 0 ? kSawPlusInf : kSawMinusInf);
    atomicOr(target.flags + index, flag);
    return;
  }
  const long long units = llrint(value * target.scales[c]);
  atomicAdd(target.sums + index, static_cast<unsigned long long>(units));
}

}  // namespace cuda
}  // namespace detkit
