// CUDA kernels of detkit's RoIAlign (geometry in roi_align_geometry.h).
//
// forward: one block per (RoI, slice of the RoI's outputs). One thread puts
//   the RoI's sampling grid into shared memory; each thread then computes
//   outputs in memory order, so writes coalesce (and, for channels-last input,
//   so do reads: consecutive threads take consecutive channels of a cell).
//   Each output sums its bin's samples (float32 for float16/bfloat16) in
//   torchvision's order and divides by the sample count.
// backward: one thread per output gradient, which adds each sample's four
//   weighted shares to the sample's cells with atomicAdd (float32 accumulation
//   for float16/bfloat16), or, under torch.use_deterministic_algorithms(True),
//   with fixed-point adds (cuda_helpers.cuh) whose result does not depend on
//   the order of the additions.
#undef NDEBUG  // keep the device assert on bad RoIs in release builds
#include <algorithm>
#include <cassert>
#include <cstdint>

#include "../roi_align_geometry.h"
#include "cuda_helpers.cuh"
#include "roi_align_kernels.h"

namespace detkit {
namespace roi_align {
namespace cuda {
namespace {

using namespace detkit::cuda;

// Outputs per thread in the forward kernel's slice of an RoI.
constexpr int64_t kOutputsPerThread = 4;
constexpr int64_t kMaxGridY = 65535;

// The sampling grid of RoI row `roi`, in the RoIs' compute type; a bad batch
// index, corner or grid fails the device assert (and gives an empty grid).
template <typename R>
__device__ SamplingGrid<typename Scalar<R>::compute> roi_grid(
    const R* roi, double spatial_scale, int64_t sampling_ratio, bool aligned, const RoiShape& s,
    int64_t& batch) {
  using G = typename Scalar<R>::compute;
  const G b = Scalar<R>::load(roi[0]);
  const G x1 = Scalar<R>::load(roi[1]);
  const G y1 = Scalar<R>::load(roi[2]);
  const G x2 = Scalar<R>::load(roi[3]);
  const G y2 = Scalar<R>::load(roi[4]);
  const bool valid_roi = is_valid_roi(b, x1, y1, x2, y2, s.num_images);
  SamplingGrid<G> g = sampling_grid(
      valid_roi ? x1 : G(0), valid_roi ? y1 : G(0), valid_roi ? x2 : G(0), valid_roi ? y2 : G(0),
      static_cast<G>(spatial_scale), s.pooled_height, s.pooled_width, sampling_ratio, aligned);
  const bool valid = valid_roi && g.valid;
  assert(valid &&
         "roi_align: rois need an integer batch index in [0, N), finite corners and a sampling "
         "grid of at most 1024 samples per bin and axis");
  if (!valid) {  // never reached while the assert is on; still, read nothing outside the input
    g.grid_h = g.grid_w = 0;
  }
  batch = valid ? static_cast<int64_t>(b) : 0;
  return g;
}

// The value of one RoI bin: the mean of its bilinear samples.
template <typename T, typename G, bool kChannelsLast>
__device__ __forceinline__ G bin_value(
    const T* __restrict__ image, int64_t c, const SamplingGrid<G>& g, int64_t ph, int64_t pw,
    const RoiShape& s) {
  const int64_t plane = s.height * s.width;
  const auto at = [&](int32_t y, int32_t x) {
    const int64_t cell = static_cast<int64_t>(y) * s.width + x;
    return Scalar<T>::load(kChannelsLast ? image[cell * s.channels + c] : image[c * plane + cell]);
  };
  G sum = G(0);
  for (int32_t iy = 0; iy < g.grid_h; ++iy) {
    const AxisTaps<G> y = axis_taps(sample_coordinate(g.start_h, ph, g.bin_h, iy, g.grid_h), s.height);
    if (y.low < 0) continue;
    for (int32_t ix = 0; ix < g.grid_w; ++ix) {
      const AxisTaps<G> x =
          axis_taps(sample_coordinate(g.start_w, pw, g.bin_w, ix, g.grid_w), s.width);
      if (x.low < 0) continue;
      sum += y.low_weight * x.low_weight * at(y.low, x.low) +
          y.low_weight * x.high_weight * at(y.low, x.high) +
          y.high_weight * x.low_weight * at(y.high, x.low) +
          y.high_weight * x.high_weight * at(y.high, x.high);
    }
  }
  return sum / g.count;
}

template <typename T, typename R, bool kChannelsLast>
__global__ void __launch_bounds__(kThreads) forward_kernel(
    const T* __restrict__ input, const R* __restrict__ rois, double spatial_scale,
    int64_t sampling_ratio, bool aligned, RoiShape s, int64_t outputs_per_block,
    T* __restrict__ output) {
  using G = typename Scalar<R>::compute;
  __shared__ SamplingGrid<G> grid;
  __shared__ int64_t batch;
  const int64_t k = blockIdx.x;
  if (threadIdx.x == 0) {
    int64_t b;
    grid = roi_grid(rois + 5 * k, spatial_scale, sampling_ratio, aligned, s, b);
    batch = b;
  }
  __syncthreads();

  const int64_t bins = s.pooled_height * s.pooled_width;
  const int64_t per_roi = s.channels * bins;
  const T* image = input + batch * s.channels * s.height * s.width;
  T* out = output + k * per_roi;
  const int64_t begin = blockIdx.y * outputs_per_block;
  const int64_t end = min(begin + outputs_per_block, per_roi);
  for (int64_t e = begin + threadIdx.x; e < end; e += blockDim.x) {
    const int64_t bin = kChannelsLast ? e / s.channels : e % bins;
    const int64_t c = kChannelsLast ? e - bin * s.channels : e / bins;
    const int64_t ph = bin / s.pooled_width;
    const int64_t pw = bin - ph * s.pooled_width;
    out[e] = Scalar<T>::store(bin_value<T, G, kChannelsLast>(image, c, grid, ph, pw, s));
  }
}

template <typename T, typename R, bool kChannelsLast, bool kFixedPoint>
__global__ void __launch_bounds__(kThreads) backward_kernel(
    const T* __restrict__ grad, Strides4 gs, const R* __restrict__ rois, double spatial_scale,
    int64_t sampling_ratio, bool aligned, RoiShape s, typename Scalar<T>::compute* grad_input,
    Strides4 is, FixedPointTarget fixed_point) {
  using G = typename Scalar<R>::compute;
  const int64_t total = s.num_rois * s.channels * s.pooled_height * s.pooled_width;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    int64_t k, c, ph, pw;
    unflatten<kChannelsLast>(e, s.channels, s.pooled_height, s.pooled_width, k, c, ph, pw);
    int64_t n;
    const SamplingGrid<G> g = roi_grid(rois + 5 * k, spatial_scale, sampling_ratio, aligned, s, n);
    const G value = Scalar<T>::load(grad[offset(gs, k, c, ph, pw)]);
    const auto add = [&](int32_t y, int32_t x, G share) {
      if (kFixedPoint) {
        fixed_point_add(fixed_point, offset(fixed_point.strides, n, c, y, x), c, share);
      } else {
        atomicAdd(grad_input + offset(is, n, c, y, x), share);
      }
    };
    for (int32_t iy = 0; iy < g.grid_h; ++iy) {
      const AxisTaps<G> y =
          axis_taps(sample_coordinate(g.start_h, ph, g.bin_h, iy, g.grid_h), s.height);
      if (y.low < 0) continue;
      for (int32_t ix = 0; ix < g.grid_w; ++ix) {
        const AxisTaps<G> x =
            axis_taps(sample_coordinate(g.start_w, pw, g.bin_w, ix, g.grid_w), s.width);
        if (x.low < 0) continue;
        add(y.low, x.low, value * (y.low_weight * x.low_weight) / g.count);
        add(y.low, x.high, value * (y.low_weight * x.high_weight) / g.count);
        add(y.high, x.low, value * (y.high_weight * x.low_weight) / g.count);
        add(y.high, x.high, value * (y.high_weight * x.high_weight) / g.count);
      }
    }
  }
}

}  // namespace

cudaError_t launch_forward(
    DType dtype, DType roi_dtype, const void* input, const void* rois, double spatial_scale,
    int64_t sampling_ratio, bool aligned, bool channels_last, const RoiShape& shape, void* output,
    cudaStream_t stream) {
  const int64_t per_roi = shape.channels * shape.pooled_height * shape.pooled_width;
  if (shape.num_rois == 0 || per_roi == 0) {
    return cudaSuccess;
  }
  const int64_t per_block = std::max(kThreads * kOutputsPerThread, ceil_div(per_roi, kMaxGridY));
  const dim3 grid(static_cast<unsigned>(shape.num_rois),
                  static_cast<unsigned>(ceil_div(per_roi, per_block)));
  return dispatch_with_rois(dtype, roi_dtype, [&](auto tag, auto roi_tag) {
    using T = decltype(tag);
    using R = decltype(roi_tag);
    return dispatch_flag(channels_last, [&](auto nhwc) {
      forward_kernel<T, R, decltype(nhwc)::value><<<grid, kThreads, 0, stream>>>(
          static_cast<const T*>(input), static_cast<const R*>(rois), spatial_scale,
          sampling_ratio, aligned, shape, per_block, static_cast<T*>(output));
      return cudaGetLastError();
    });
  });
}

cudaError_t launch_backward(
    DType dtype, DType roi_dtype, const void* grad, Strides4 grad_strides, const void* rois,
    double spatial_scale, int64_t sampling_ratio, bool aligned, const RoiShape& shape,
    void* grad_input, Strides4 input_strides, const FixedPointTarget* fixed_point,
    cudaStream_t stream) {
  const int64_t total = shape.num_rois * shape.channels * shape.pooled_height * shape.pooled_width;
  if (total == 0) {
    return cudaSuccess;
  }
  // Walk the gradient in the order of its memory: channels fastest if channels-last.
  const bool channels_last = grad_strides.c == 1 && shape.channels > 1;
  const FixedPointTarget target = fixed_point != nullptr ? *fixed_point : FixedPointTarget{};
  return dispatch_with_rois(dtype, roi_dtype, [&](auto tag, auto roi_tag) {
    using T = decltype(tag);
    using R = decltype(roi_tag);
    return dispatch_flag(channels_last, [&](auto nhwc) {
      return dispatch_flag(fixed_point != nullptr, [&](auto fixed) {
        backward_kernel<T, R, decltype(nhwc)::value, decltype(fixed)::value>
            <<<grid_for(total), kThreads, 0, stream>>>(
                static_cast<const T*>(grad), grad_strides, static_cast<const R*>(rois),
                spatial_scale, sampling_ratio, aligned, shape,
                static_cast<typename Scalar<T>::compute*>(grad_input), input_strides, target);
        return cudaGetLastError();
      });
    });
  });
}

}  // namespace cuda
}  // namespace roi_align
}  // namespace detkit
