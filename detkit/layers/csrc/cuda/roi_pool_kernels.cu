// CUDA kernels of detkit's RoI max pooling.
//
// forward: one block per (RoI, slice of the RoI's outputs). One thread puts
//   the RoI's bin bounds into shared memory (the geometry table's row, built
//   in place); each thread then computes outputs in memory order, so writes coalesce
//   (and, for channels-last input, so do reads: consecutive threads take
//   consecutive channels of the same cell). No output or argmax zero-fill.
// backward, atomic (default): one thread per output gradient, atomicAdd into
//   the input gradient (float32 accumulation for float16/bfloat16); the batch
//   index is read from the RoI row.
// backward, gather (torch.use_deterministic_algorithms(True)): one thread per
//   input-gradient element sums, in (RoI, bin) order, the gradients of the
//   outputs whose argmax is that element: no atomics, bitwise reproducible,
//   slower when RoIs are many. It reads the whole geometry table (launch_geometry).
#undef NDEBUG  // keep the device assert on bad RoIs in release builds
#include <algorithm>
#include <cassert>
#include <cfloat>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "../roi_pool_geometry.h"
#include "roi_pool_kernels.h"

namespace detkit {
namespace roi_pool {
namespace cuda {
namespace {

constexpr int kThreads = 256;
// Outputs per thread in the forward kernel's slice of an RoI.
constexpr int64_t kOutputsPerThread = 4;
constexpr int64_t kMaxGridY = 65535;

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

// Calls f(T{}, R{}) with the storage types of the features and the RoIs:
// the RoIs have the features' type, or float32 for float16/bfloat16 features.
template <typename F>
cudaError_t dispatch_with_rois(DType dtype, DType roi_dtype, F&& f);

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

template <typename F>
cudaError_t dispatch_with_rois(DType dtype, DType roi_dtype, F&& f) {
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    return roi_dtype == dtype ? f(tag, tag) : f(tag, float{});
  });
}

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// Writes the geometry-table row of one RoI; a bad batch index or corner
// fails the device assert.
template <typename R>
__device__ void roi_geometry(const R* roi, double spatial_scale, const PoolShape& s, int32_t* row) {
  using T = typename Scalar<R>::compute;
  const T batch = Scalar<R>::load(roi[0]);
  const T x1 = Scalar<R>::load(roi[1]);
  const T y1 = Scalar<R>::load(roi[2]);
  const T x2 = Scalar<R>::load(roi[3]);
  const T y2 = Scalar<R>::load(roi[4]);
  const bool valid = is_valid_batch_index(batch, s.num_images) && isfinite(x1) &&
      isfinite(y1) && isfinite(x2) && isfinite(y2);
  assert(valid && "roi_pool: rois need an integer batch index in [0, N) and finite corners");
  if (!valid) {  // never reached while the assert is on; still, read nothing outside the input
    for (int64_t i = 0; i < geometry_row_size(s.pooled_height, s.pooled_width); ++i) row[i] = 0;
    return;
  }
  fill_geometry_row<T>(batch, x1, y1, x2, y2, static_cast<T>(spatial_scale), s.height, s.width,
                       s.pooled_height, s.pooled_width, row);
}

template <typename R>
__global__ void geometry_kernel(
    const R* __restrict__ rois, double spatial_scale, PoolShape s, int32_t* __restrict__ table) {
  const int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (k < s.num_rois) {
    roi_geometry(rois + 5 * k, spatial_scale, s,
                 table + k * geometry_row_size(s.pooled_height, s.pooled_width));
  }
}

template <typename T, typename R, bool kChannelsLast>
__global__ void __launch_bounds__(kThreads) forward_kernel(
    const T* __restrict__ input, const R* __restrict__ rois, double spatial_scale, PoolShape s,
    int64_t outputs_per_block, T* __restrict__ output, int32_t* __restrict__ argmax) {
  using C = typename Scalar<T>::compute;
  extern __shared__ int32_t geometry[];
  const int64_t k = blockIdx.x;
  if (threadIdx.x == 0) {
    roi_geometry(rois + 5 * k, spatial_scale, s, geometry);
  }
  __syncthreads();

  const int32_t* hb = geometry + 1;
  const int32_t* wb = hb + 2 * s.pooled_height;
  const int channels = static_cast<int>(s.channels);
  const int pooled_width = static_cast<int>(s.pooled_width);
  const int bins = static_cast<int>(s.pooled_height * s.pooled_width);
  const int width = static_cast<int>(s.width);
  const int64_t plane = s.height * s.width;
  const int per_roi = channels * bins;
  const T* image = input + geometry[0] * s.channels * plane;
  T* out = output + k * per_roi;
  int32_t* arg = argmax == nullptr ? nullptr : argmax + k * per_roi;
  const int begin = static_cast<int>(blockIdx.y * outputs_per_block);
  const int end = static_cast<int>(min(begin + outputs_per_block, static_cast<int64_t>(per_roi)));
  for (int e = begin + threadIdx.x; e < end; e += blockDim.x) {
    const int bin = kChannelsLast ? e / channels : e % bins;
    const int c = kChannelsLast ? e - bin * channels : e / bins;
    const int ph = bin / pooled_width;
    const int pw = bin - ph * pooled_width;
    const int h0 = hb[2 * ph], h1 = hb[2 * ph + 1], w0 = wb[2 * pw], w1 = wb[2 * pw + 1];
    C best = (h1 <= h0 || w1 <= w0) ? C(0) : C(-FLT_MAX);
    int32_t best_index = -1;
    for (int h = h0; h < h1; ++h) {
      for (int w = w0; w < w1; ++w) {
        const int index = h * width + w;
        const C v = Scalar<T>::load(
            kChannelsLast ? image[static_cast<int64_t>(index) * channels + c]
                          : image[c * plane + index]);
        if (v > best) {
          best = v;
          best_index = index;
        }
      }
    }
    out[e] = Scalar<T>::store(best);
    if (arg != nullptr) {
      arg[e] = best_index;
    }
  }
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

__device__ __forceinline__ int64_t offset(const Strides4& st, int64_t n, int64_t c, int64_t h, int64_t w) {
  return n * st.n + c * st.c + h * st.h + w * st.w;
}

template <typename T, typename R, bool kChannelsLast>
__global__ void __launch_bounds__(kThreads) backward_atomic_kernel(
    const T* __restrict__ grad, Strides4 gs, const int32_t* __restrict__ argmax, Strides4 as,
    const R* __restrict__ rois, PoolShape s, typename Scalar<T>::compute* grad_input,
    Strides4 is) {
  const int64_t total = s.num_rois * s.channels * s.pooled_height * s.pooled_width;
  const int64_t plane = s.height * s.width;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    int64_t k, c, ph, pw;
    unflatten<kChannelsLast>(e, s.channels, s.pooled_height, s.pooled_width, k, c, ph, pw);
    const int32_t index = argmax[offset(as, k, c, ph, pw)];
    if (index < 0 || index >= plane) {  // empty bin (argmax from forward is never >= plane)
      continue;
    }
    const auto batch = Scalar<R>::load(rois[5 * k]);
    const bool valid = is_valid_batch_index(batch, s.num_images);
    assert(valid && "roi_pool: rois need an integer batch index in [0, N)");
    if (!valid) {
      continue;
    }
    atomicAdd(grad_input + static_cast<int64_t>(batch) * is.n + c * is.c + index * is.w,
              Scalar<T>::load(grad[offset(gs, k, c, ph, pw)]));
  }
}

template <typename T, bool kChannelsLast>
__global__ void __launch_bounds__(kThreads) backward_gather_kernel(
    const T* __restrict__ grad, Strides4 gs, const int32_t* __restrict__ argmax, Strides4 as,
    const int32_t* __restrict__ table, PoolShape s, T* __restrict__ grad_input) {
  using C = typename Scalar<T>::compute;
  const int64_t total = s.num_images * s.channels * s.height * s.width;
  const int64_t row_size = geometry_row_size(s.pooled_height, s.pooled_width);
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    int64_t n, c, h, w;
    unflatten<kChannelsLast>(e, s.channels, s.height, s.width, n, c, h, w);
    const int32_t index = static_cast<int32_t>(h * s.width + w);
    C sum = C(0);
    for (int64_t k = 0; k < s.num_rois; ++k) {
      const int32_t* geo = table + k * row_size;
      const int32_t* hb = geo + 1;
      const int32_t* wb = hb + 2 * s.pooled_height;
      const bool inside = geo[0] == n && h >= hb[0] && h < hb[2 * s.pooled_height - 1] &&
          w >= wb[0] && w < wb[2 * s.pooled_width - 1];
      if (!inside) {
        continue;
      }
      for (int64_t ph = 0; ph < s.pooled_height; ++ph) {
        if (h < hb[2 * ph] || h >= hb[2 * ph + 1]) {
          continue;
        }
        for (int64_t pw = 0; pw < s.pooled_width; ++pw) {
          if (w >= wb[2 * pw] && w < wb[2 * pw + 1] && argmax[offset(as, k, c, ph, pw)] == index) {
            sum += Scalar<T>::load(grad[offset(gs, k, c, ph, pw)]);
          }
        }
      }
    }
    grad_input[e] = Scalar<T>::store(sum);
  }
}

int64_t grid_for(int64_t work) {
  return std::min<int64_t>(ceil_div(work, kThreads), int64_t(1) << 20);
}

}  // namespace

cudaError_t launch_geometry(
    DType roi_dtype, const void* rois, double spatial_scale, const PoolShape& shape,
    int32_t* table, cudaStream_t stream) {
  if (shape.num_rois == 0) {
    return cudaSuccess;
  }
  return dispatch(roi_dtype, [&](auto tag) {
    using R = decltype(tag);
    geometry_kernel<R><<<ceil_div(shape.num_rois, kThreads), kThreads, 0, stream>>>(
        static_cast<const R*>(rois), spatial_scale, shape, table);
    return cudaGetLastError();
  });
}

cudaError_t launch_forward(
    DType dtype, DType roi_dtype, const void* input, const void* rois, double spatial_scale,
    bool channels_last, const PoolShape& shape, void* output, int32_t* argmax,
    cudaStream_t stream) {
  const int64_t per_roi = shape.channels * shape.pooled_height * shape.pooled_width;
  if (shape.num_rois == 0 || per_roi == 0) {
    return cudaSuccess;
  }
  const int64_t per_block =
      std::max(kThreads * kOutputsPerThread, ceil_div(per_roi, kMaxGridY));
  const dim3 grid(static_cast<unsigned>(shape.num_rois), static_cast<unsigned>(ceil_div(per_roi, per_block)));
  const size_t shared = sizeof(int32_t) * geometry_row_size(shape.pooled_height, shape.pooled_width);
  return dispatch_with_rois(dtype, roi_dtype, [&](auto tag, auto roi_tag) {
    using T = decltype(tag);
    using R = decltype(roi_tag);
    const T* in = static_cast<const T*>(input);
    const R* r = static_cast<const R*>(rois);
    T* out = static_cast<T*>(output);
    if (channels_last) {
      forward_kernel<T, R, true><<<grid, kThreads, shared, stream>>>(
          in, r, spatial_scale, shape, per_block, out, argmax);
    } else {
      forward_kernel<T, R, false><<<grid, kThreads, shared, stream>>>(
          in, r, spatial_scale, shape, per_block, out, argmax);
    }
    return cudaGetLastError();
  });
}

cudaError_t launch_backward_atomic(
    DType dtype, DType roi_dtype, const void* grad, Strides4 grad_strides, const int32_t* argmax,
    Strides4 argmax_strides, const void* rois, const PoolShape& shape, void* grad_input,
    Strides4 input_strides, cudaStream_t stream) {
  const int64_t total = shape.num_rois * shape.channels * shape.pooled_height * shape.pooled_width;
  if (total == 0) {
    return cudaSuccess;
  }
  // Walk outputs in the order of argmax's memory: channels fastest if channels-last.
  const bool channels_last = argmax_strides.c == 1 && shape.channels > 1;
  return dispatch_with_rois(dtype, roi_dtype, [&](auto tag, auto roi_tag) {
    using T = decltype(tag);
    using R = decltype(roi_tag);
    using A = typename Scalar<T>::compute;
    const T* g = static_cast<const T*>(grad);
    const R* r = static_cast<const R*>(rois);
    A* gi = static_cast<A*>(grad_input);
    if (channels_last) {
      backward_atomic_kernel<T, R, true><<<grid_for(total), kThreads, 0, stream>>>(
          g, grad_strides, argmax, argmax_strides, r, shape, gi, input_strides);
    } else {
      backward_atomic_kernel<T, R, false><<<grid_for(total), kThreads, 0, stream>>>(
          g, grad_strides, argmax, argmax_strides, r, shape, gi, input_strides);
    }
    return cudaGetLastError();
  });
}

cudaError_t launch_backward_gather(
    DType dtype, const void* grad, Strides4 grad_strides, const int32_t* argmax,
    Strides4 argmax_strides, const int32_t* table, const PoolShape& shape, void* grad_input,
    bool channels_last, cudaStream_t stream) {
  const int64_t total = shape.num_images * shape.channels * shape.height * shape.width;
  if (total == 0) {
    return cudaSuccess;
  }
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* g = static_cast<const T*>(grad);
    T* gi = static_cast<T*>(grad_input);
    if (channels_last) {
      backward_gather_kernel<T, true><<<grid_for(total), kThreads, 0, stream>>>(
          g, grad_strides, argmax, argmax_strides, table, shape, gi);
    } else {
      backward_gather_kernel<T, false><<<grid_for(total), kThreads, 0, stream>>>(
          g, grad_strides, argmax, argmax_strides, table, shape, gi);
    }
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace roi_pool
}  // namespace detkit
