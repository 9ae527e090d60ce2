// CUDA kernels of detkit's RoI max pooling.
//
// forward: one block per (RoI, slice of the RoI's outputs). One thread puts
//   the RoI's bin bounds into shared memory (the geometry row of
//   roi_pool_geometry.h, the one bin-geometry path); each thread then computes
//   outputs in memory order, so writes coalesce (and, for channels-last input,
//   so do reads: consecutive threads take consecutive channels of the same
//   cell). No output or argmax zero-fill.
// backward: one thread per output gradient, which it adds to its argmax
//   element with an atomicAdd (float32 accumulation for float16/bfloat16), or,
//   under torch.use_deterministic_algorithms(True), with a fixed-point add
//   (cuda_helpers.cuh) whose result does not depend on the order of the
//   additions. The batch index is read from the RoI row.
#undef NDEBUG  // keep the device assert on bad RoIs in release builds
#include <algorithm>
#include <cassert>
#include <cfloat>
#include <cstdint>

#include "../roi_pool_geometry.h"
#include "cuda_helpers.cuh"
#include "roi_pool_kernels.h"

namespace detkit {
namespace roi_pool {
namespace cuda {
namespace {

using namespace detkit::cuda;

// Outputs per thread in the forward kernel's slice of an RoI.
constexpr int64_t kOutputsPerThread = 4;
constexpr int64_t kMaxGridY = 65535;

// Writes the geometry row of one RoI; a bad batch index or corner fails the
// device assert.
template <typename R>
__device__ void roi_geometry(const R* roi, double spatial_scale, const RoiShape& s, int32_t* row) {
  using T = typename Scalar<R>::compute;
  const T batch = Scalar<R>::load(roi[0]);
  const T x1 = Scalar<R>::load(roi[1]);
  const T y1 = Scalar<R>::load(roi[2]);
  const T x2 = Scalar<R>::load(roi[3]);
  const T y2 = Scalar<R>::load(roi[4]);
  const bool valid = is_valid_roi(batch, x1, y1, x2, y2, s.num_images);
  assert(valid && "roi_pool: rois need an integer batch index in [0, N) and finite corners");
  if (!valid) {  // never reached while the assert is on; still, read nothing outside the input
    for (int64_t i = 0; i < geometry_row_size(s.pooled_height, s.pooled_width); ++i) row[i] = 0;
    return;
  }
  fill_geometry_row<T>(batch, x1, y1, x2, y2, static_cast<T>(spatial_scale), s.height, s.width,
                       s.pooled_height, s.pooled_width, row);
}

template <typename T, typename R, bool kChannelsLast>
__global__ void __launch_bounds__(kThreads) forward_kernel(
    const T* __restrict__ input, const R* __restrict__ rois, double spatial_scale, RoiShape s,
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

template <typename T, typename R, bool kChannelsLast, bool kFixedPoint>
__global__ void __launch_bounds__(kThreads) backward_kernel(
    const T* __restrict__ grad, Strides4 gs, const int32_t* __restrict__ argmax, Strides4 as,
    const R* __restrict__ rois, RoiShape s, typename Scalar<T>::compute* grad_input,
    Strides4 is, FixedPointTarget fixed_point) {
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
    const auto value = Scalar<T>::load(grad[offset(gs, k, c, ph, pw)]);
    const int64_t n = static_cast<int64_t>(batch);
    if (kFixedPoint) {
      const int64_t h = index / s.width, w = index - h * s.width;
      fixed_point_add(fixed_point, offset(fixed_point.strides, n, c, h, w), c, value);
    } else {
      atomicAdd(grad_input + n * is.n + c * is.c + index * is.w, value);
    }
  }
}

}  // namespace

cudaError_t launch_forward(
    DType dtype, DType roi_dtype, const void* input, const void* rois, double spatial_scale,
    bool channels_last, const RoiShape& shape, void* output, int32_t* argmax,
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
    return dispatch_flag(channels_last, [&](auto nhwc) {
      forward_kernel<T, R, decltype(nhwc)::value><<<grid, kThreads, shared, stream>>>(
          static_cast<const T*>(input), static_cast<const R*>(rois), spatial_scale, shape,
          per_block, static_cast<T*>(output), argmax);
      return cudaGetLastError();
    });
  });
}

cudaError_t launch_backward(
    DType dtype, DType roi_dtype, const void* grad, Strides4 grad_strides, const int32_t* argmax,
    Strides4 argmax_strides, const void* rois, const RoiShape& shape, void* grad_input,
    Strides4 input_strides, const FixedPointTarget* fixed_point, cudaStream_t stream) {
  const int64_t total = shape.num_rois * shape.channels * shape.pooled_height * shape.pooled_width;
  if (total == 0) {
    return cudaSuccess;
  }
  // Walk outputs in the order of argmax's memory: channels fastest if channels-last.
  const bool channels_last = argmax_strides.c == 1 && shape.channels > 1;
  const FixedPointTarget target = fixed_point != nullptr ? *fixed_point : FixedPointTarget{};
  return dispatch_with_rois(dtype, roi_dtype, [&](auto tag, auto roi_tag) {
    using T = decltype(tag);
    using R = decltype(roi_tag);
    return dispatch_flag(channels_last, [&](auto nhwc) {
      return dispatch_flag(fixed_point != nullptr, [&](auto fixed) {
        backward_kernel<T, R, decltype(nhwc)::value, decltype(fixed)::value>
            <<<grid_for(total), kThreads, 0, stream>>>(
                static_cast<const T*>(grad), grad_strides, argmax, argmax_strides,
                static_cast<const R*>(rois), shape,
                static_cast<typename Scalar<T>::compute*>(grad_input), input_strides, target);
        return cudaGetLastError();
      });
    });
  });
}

}  // namespace cuda
}  // namespace roi_pool
}  // namespace detkit
