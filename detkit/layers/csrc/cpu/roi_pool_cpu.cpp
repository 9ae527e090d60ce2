// CPU kernels of detkit::roi_pool_forward / roi_pool_backward.
//
// Forward has two loops over the same geometry table (one row per RoI):
//  * pool_planes walks one (RoI, channel) plane at a time: cheapest when the
//    RoIs cover little of a contiguous (NCHW) map;
//  * pool_groups walks each bin's cells once and takes the max of a vector of
//    channels at a time in registers. It reads cells whose channels lie next to
//    each other, in RoIAlign's layout (cpu_helpers.h): a channels-last (NHWC)
//    map in place; a contiguous one copied, a chunk of channels at a time, into
//    channels-last buffers of the box its RoIs read, when the RoIs cover
//    enough of it to pay for the copy.
// Both parallelise over independent outputs. Backward parallelises over
// channels, so no two threads touch the same input element, and adds every
// element's contributions in (RoI, bin) order: deterministic and bitwise
// equal to a serial loop.
#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "../roi_checks.h"
#include "../roi_pool_checks.h"
#include "../roi_pool_geometry.h"
#include "cpu_helpers.h"

namespace detkit {
namespace roi_pool {
namespace {

using cpu::Box;
using cpu::Group;
using cpu::kRegisterChannels;
using cpu::Region;
using cpu::RoiFootprint;
using cpu::Vector;

// The most channels of one forward work item: four times RoIAlign's, so that
// each RoI's results are written in longer runs.
constexpr int64_t kItemChannels = 4 * cpu::kItemChannels;

// Bytes of input gradient that backward accumulates into at a time.
constexpr int64_t kScatterBytes = 256 * 1024;

int64_t row_size(const RoiShape& s) {
  return geometry_row_size(s.pooled_height, s.pooled_width);
}

// One geometry-table row per RoI. Validates each RoI's batch index and
// corners, so the pooling loops can trust the table.
template <typename T>
std::vector<int32_t> build_geometry(const at::Tensor& rois, double spatial_scale, const RoiShape& s) {
  const at::Tensor rois_c = rois.contiguous();
  const T* r = rois_c.const_data_ptr<T>();
  const T scale = static_cast<T>(spatial_scale);
  std::vector<int32_t> table(s.num_rois * row_size(s));
  for (int64_t k = 0; k < s.num_rois; ++k) {
    const T* roi = r + 5 * k;
    check_roi_row(kOp, roi, k, s.num_images);
    fill_geometry_row<T>(
        roi[0], roi[1], roi[2], roi[3], roi[4], scale, s.height, s.width, s.pooled_height,
        s.pooled_width, table.data() + k * row_size(s));
  }
  return table;
}

// The batch index of every RoI, each validated like build_geometry's.
template <typename T>
std::vector<int64_t> batch_indices(const at::Tensor& rois, int64_t num_images) {
  const at::Tensor rois_c = rois.contiguous();
  const T* r = rois_c.const_data_ptr<T>();
  std::vector<int64_t> batch(rois.size(0));
  for (size_t k = 0; k < batch.size(); ++k) {
    check_roi_row(kOp, r + 5 * k, k, num_images);
    batch[k] = static_cast<int64_t>(r[5 * k]);
  }
  return batch;
}

// Each RoI's image and the cells its bins read: the rows of its bins that have
// rows by the columns of its bins that have columns (none when no bin has a
// cell, as for an RoI outside the map).
std::vector<RoiFootprint> footprints(const std::vector<int32_t>& table, const RoiShape& s) {
  std::vector<RoiFootprint> reads(s.num_rois);
  for (int64_t k = 0; k < s.num_rois; ++k) {
    const int32_t* geo = table.data() + k * row_size(s);
    const int32_t* hb = geo + 1;
    const int32_t* wb = hb + 2 * s.pooled_height;
    Box f = Box::none();
    for (int64_t b = 0; b < s.pooled_height; ++b) {
      if (hb[2 * b + 1] > hb[2 * b]) {
        f.y0 = std::min(f.y0, hb[2 * b]);
        f.y1 = std::max(f.y1, hb[2 * b + 1] - 1);
      }
    }
    for (int64_t b = 0; b < s.pooled_width; ++b) {
      if (wb[2 * b + 1] > wb[2 * b]) {
        f.x0 = std::min(f.x0, wb[2 * b]);
        f.x1 = std::max(f.x1, wb[2 * b + 1] - 1);
      }
    }
    reads[k] = {geo[0], f};
  }
  return reads;
}

// Number of feature-map cells the RoIs' bins cover, counted per channel.
int64_t cells_visited(const std::vector<int32_t>& table, const RoiShape& s) {
  int64_t cells = 0;
  for (size_t row = 0; row < table.size(); row += row_size(s)) {
    const int32_t* h = table.data() + row + 1;
    const int32_t* w = h + 2 * s.pooled_height;
    int64_t rows = 0, cols = 0;
    for (int64_t b = 0; b < s.pooled_height; ++b) rows += std::max(h[2 * b + 1] - h[2 * b], 0);
    for (int64_t b = 0; b < s.pooled_width; ++b) cols += std::max(w[2 * b + 1] - w[2 * b], 0);
    cells += rows * cols;
  }
  return cells;
}

// Max pooling of plane after plane: output [K, C, bins] from NCHW input.
// Argmax is written only when kArgmax (training); inference skips it.
template <typename T, bool kArgmax>
void pool_planes(
    const T* input, const std::vector<int32_t>& table, const RoiShape& s, T* output,
    int32_t* argmax) {
  const int64_t plane = s.plane();
  const int64_t bins = s.bins();
  at::parallel_for(0, s.num_rois * s.channels, 16, [&](int64_t begin, int64_t end) {
    for (int64_t kc = begin; kc < end; ++kc) {
      const int32_t* geo = table.data() + (kc / s.channels) * row_size(s);
      const int32_t* hb = geo + 1;
      const int32_t* wb = hb + 2 * s.pooled_height;
      const T* src = input + (geo[0] * s.channels + kc % s.channels) * plane;
      for (int64_t ph = 0; ph < s.pooled_height; ++ph) {
        for (int64_t pw = 0; pw < s.pooled_width; ++pw) {
          const bool empty = hb[2 * ph + 1] <= hb[2 * ph] || wb[2 * pw + 1] <= wb[2 * pw];
          T best = empty ? T(0) : T(-FLT_MAX);
          int32_t best_index = -1;
          for (int32_t h = hb[2 * ph]; h < hb[2 * ph + 1]; ++h) {
            for (int32_t w = wb[2 * pw]; w < wb[2 * pw + 1]; ++w) {
              const int32_t index = h * static_cast<int32_t>(s.width) + w;
              if (src[index] > best) {
                best = src[index];
                best_index = index;
              }
            }
          }
          output[kc * bins + ph * s.pooled_width + pw] = best;
          if (kArgmax) {
            argmax[kc * bins + ph * s.pooled_width + pw] = best_index;
          }
        }
      }
    }
  });
}

// Max (and argmax) over the cells [h0, h1) x [w0, w1) of kGroup vectors of
// channels from channel c of `region`; the running max and argmax stay in
// vector registers. The argmax is the cell's index in the map (h * width + w),
// wherever the region lies. Results go to best_out[i] (and index_out[i]).
template <typename T, bool kArgmax, int kGroup>
__attribute__((always_inline)) inline void scan_lanes(
    const Region<const T>& region, int64_t c, int32_t width, int32_t h0, int32_t h1, int32_t w0,
    int32_t w1, T init, T* best_out, int32_t* index_out) {
  using V = typename Vector<T>::Values;
  using I = typename Vector<T>::Indices;
  constexpr int kWidth = Vector<T>::kWidth;
  V best[kGroup];
  I index[kGroup];
  for (int j = 0; j < kGroup; ++j) {
    best[j] = V{} + init;
    index[j] = I{} - 1;
  }
  for (int32_t h = h0; h < h1; ++h) {
    const T* src = region.at(h, w0) + c;
    int32_t cell = h * width + w0;
    for (int32_t w = w0; w < w1; ++w, ++cell, src += region.cell) {
      for (int j = 0; j < kGroup; ++j) {
        const V v = cpu::load<T>(src + j * kWidth);
        const I greater = v > best[j];
        best[j] = greater ? v : best[j];
        if (kArgmax) {
          index[j] = greater ? I{} + cell : index[j];
        }
      }
    }
  }
  for (int j = 0; j < kGroup; ++j) {
    cpu::store<T>(best_out + j * kWidth, best[j]);
    if (kArgmax && sizeof(I) == sizeof(int32_t) * kWidth) {
      __builtin_memcpy(index_out + j * kWidth, &index[j], sizeof(I));
    } else if (kArgmax) {
      for (int i = 0; i < kWidth; ++i) {
        index_out[j * kWidth + i] = static_cast<int32_t>(index[j][i]);
      }
    }
  }
}

// Scalar version of scan_lanes for `count` channels from channel c.
template <typename T, bool kArgmax>
inline void scan_scalar(
    const Region<const T>& region, int64_t c, int64_t count, int32_t width, int32_t h0,
    int32_t h1, int32_t w0, int32_t w1, T init, T* best_out, int32_t* index_out) {
  for (int64_t i = 0; i < count; ++i) {
    T best = init;
    int32_t best_index = -1;
    for (int32_t h = h0; h < h1; ++h) {
      const T* src = region.at(h, w0) + c + i;
      for (int32_t w = w0; w < w1; ++w, src += region.cell) {
        if (*src > best) {
          best = *src;
          best_index = h * width + w;
        }
      }
    }
    best_out[i] = best;
    if (kArgmax) {
      index_out[i] = best_index;
    }
  }
}

// Pools channels [0, count) of `region` for every bin of one RoI (bin bounds
// hb, wb in map cells). The result of bin b and channel i goes to
// best[b * bin_stride + i] (and best_index[...]).
template <typename T, bool kArgmax>
__attribute__((always_inline)) inline void pool_roi_lanes(
    const Region<const T>& region, const int32_t* hb, const int32_t* wb, int64_t pooled_height,
    int64_t pooled_width, int32_t width, int64_t count, T* best, int32_t* best_index,
    int64_t bin_stride) {
  constexpr int64_t kWidth = Vector<T>::kWidth;
  for (int64_t ph = 0; ph < pooled_height; ++ph) {
    for (int64_t pw = 0; pw < pooled_width; ++pw) {
      const int64_t bin = ph * pooled_width + pw;
      const int32_t h0 = hb[2 * ph], h1 = hb[2 * ph + 1], w0 = wb[2 * pw], w1 = wb[2 * pw + 1];
      const T init = (h1 <= h0 || w1 <= w0) ? T(0) : T(-FLT_MAX);
      T* m = best + bin * bin_stride;
      int32_t* a = kArgmax ? best_index + bin * bin_stride : nullptr;
      int64_t c = 0;
      for (; c + kRegisterChannels<T> <= count; c += kRegisterChannels<T>) {
        scan_lanes<T, kArgmax, 4>(region, c, width, h0, h1, w0, w1, init, m + c,
                                  kArgmax ? a + c : nullptr);
      }
      for (; c + kWidth <= count; c += kWidth) {
        scan_lanes<T, kArgmax, 1>(region, c, width, h0, h1, w0, w1, init, m + c,
                                  kArgmax ? a + c : nullptr);
      }
      scan_scalar<T, kArgmax>(region, c, count - c, width, h0, h1, w0, w1, init, m + c,
                              kArgmax ? a + c : nullptr);
    }
  }
}

#define DETKIT_DEFINE_POOL_ROI(T)                                                              \
  DETKIT_CPU_CLONES void pool_roi(                                                            \
      const Region<const T>& region, const int32_t* hb, const int32_t* wb,                    \
      int64_t pooled_height, int64_t pooled_width, int32_t width, int64_t count, T* best,     \
      int32_t* best_index, int64_t bin_stride) {                                              \
    if (best_index != nullptr) {                                                              \
      pool_roi_lanes<T, true>(region, hb, wb, pooled_height, pooled_width, width, count,      \
                              best, best_index, bin_stride);                                  \
    } else {                                                                                  \
      pool_roi_lanes<T, false>(region, hb, wb, pooled_height, pooled_width, width, count,     \
                               best, best_index, bin_stride);                                 \
    }                                                                                         \
  }
DETKIT_DEFINE_POOL_ROI(float)
DETKIT_DEFINE_POOL_ROI(double)
#undef DETKIT_DEFINE_POOL_ROI

// Max pooling over vectors of channels into channels-last ([K, bins, C]) or
// NCHW ([K, C, bins]) output, group by group (cpu::group_rois) and a chunk of
// channels at a time, as RoIAlign's forward goes: `map` is channels-last (read
// in place) or NCHW (each group's box copied into a channels-last buffer).
// `argmax` may be null.
template <typename T>
void pool_groups(
    const T* map, const std::vector<int32_t>& table, const std::vector<int64_t>& by_image,
    const std::vector<Group>& groups, const RoiShape& s, bool channels_last, T* output,
    int32_t* argmax) {
  const int64_t bins = s.bins();
  const int64_t num_groups = static_cast<int64_t>(groups.size());
  const int64_t chunk =
      cpu::item_channels(s.channels, num_groups, Vector<T>::kWidth, kItemChannels);
  const int64_t chunks = (s.channels + chunk - 1) / chunk;
  const int32_t width = static_cast<int32_t>(s.width);
  at::parallel_for(0, chunks * num_groups, 1, [&](int64_t begin, int64_t end) {
    // NCHW output: pool into a [bins, count] tile, then write it out transposed.
    std::vector<T> buffer, tile(channels_last ? 0 : bins * chunk);
    std::vector<int32_t> tile_index(argmax == nullptr ? 0 : tile.size());
    for (int64_t item = begin; item < end; ++item) {
      const Group& g = groups[item % num_groups];
      const int64_t c0 = (item / num_groups) * chunk, count = std::min(chunk, s.channels - c0);
      if (!channels_last && !g.box.empty()) {
        buffer.resize(g.box.area() * count);
        cpu::copy_box(const_cast<T*>(map), s, g.batch, g.box, c0, count, buffer.data(), false);
      }
      const Region<const T> region = cpu::group_region<const T>(
          map, channels_last ? nullptr : buffer.data(), s, g, c0, count);
      for (int64_t i = g.first; i < g.last; ++i) {
        const int64_t k = by_image[i];
        const int32_t* hb = table.data() + k * row_size(s) + 1;
        const int32_t* wb = hb + 2 * s.pooled_height;
        const int64_t offset = k * bins * s.channels + c0;  // channels-last output
        T* out = channels_last ? output + offset : tile.data();
        int32_t* arg = argmax == nullptr ? nullptr
                                         : (channels_last ? argmax + offset : tile_index.data());
        pool_roi(region, hb, wb, s.pooled_height, s.pooled_width, width, count, out, arg,
                 channels_last ? s.channels : count);
        if (!channels_last) {
          const int64_t planes = (k * s.channels + c0) * bins;
          cpu::transpose_tile(tile.data(), bins, count, output + planes);
          if (argmax != nullptr) {
            cpu::transpose_tile(tile_index.data(), bins, count, argmax + planes);
          }
        }
      }
    }
  });
}

// Whether copying the groups' boxes into channels-last buffers and pooling
// vectors of channels beats pooling plane by plane. Plane pooling costs a
// scalar comparison per visited cell plus loop overhead per bin; channel
// vectors compare a vector of channels at once but pay for the transposing
// copy of `copied` cells and the output transpose.
bool prefer_channel_vectors(int64_t visited, int64_t copied, const RoiShape& s) {
  const int64_t bin_visits = s.num_rois * s.bins();
  const int64_t plane_cost = visited + 4 * bin_visits;
  const int64_t vector_cost = 2 * copied + visited / 4 + 2 * bin_visits;
  return vector_cost < plane_cost;
}

std::tuple<at::Tensor, at::Tensor> roi_pool_forward_cpu(
    const at::Tensor& input, const at::Tensor& rois, double spatial_scale, int64_t pooled_height,
    int64_t pooled_width, bool with_argmax) {
  check_forward_args(kOp, input, rois, spatial_scale, pooled_height, pooled_width);
  check_cpu_dtype(kOp, input, "input");
  const RoiShape s{input.size(0), input.size(1), input.size(2), input.size(3),
                   rois.size(0),  pooled_height, pooled_width};
  const at::MemoryFormat format = pooled_memory_format(input);
  at::Tensor output = at::empty(
      {s.num_rois, s.channels, pooled_height, pooled_width}, input.options().memory_format(format));
  at::Tensor argmax = allocate_argmax(output, with_argmax);

  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "roi_pool_forward_cpu", [&] {
    const auto table = build_geometry<scalar_t>(rois, spatial_scale, s);
    if (output.numel() == 0) {
      return;
    }
    scalar_t* out = output.mutable_data_ptr<scalar_t>();
    int32_t* arg = with_argmax ? argmax.mutable_data_ptr<int32_t>() : nullptr;
    const bool channels_last = format == at::MemoryFormat::ChannelsLast;
    const std::vector<RoiFootprint> reads = footprints(table, s);
    const std::vector<int64_t> by_image = cpu::order_by_image(reads);
    const std::vector<Group> groups = cpu::group_rois(reads, by_image, s, channels_last);
    int64_t copied = 0;
    for (const Group& g : groups) copied += g.box.area();
    if (channels_last || prefer_channel_vectors(cells_visited(table, s), copied, s)) {
      const at::Tensor map = input.contiguous(
          channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
      pool_groups(map.const_data_ptr<scalar_t>(), table, by_image, groups, s, channels_last, out,
                  arg);
    } else if (with_argmax) {
      pool_planes<scalar_t, true>(input.contiguous().const_data_ptr<scalar_t>(), table, s, out, arg);
    } else {
      pool_planes<scalar_t, false>(input.contiguous().const_data_ptr<scalar_t>(), table, s, out,
                                   nullptr);
    }
  });
  return {output, argmax};
}

// Adds grad[k, c, bin] to grad_input[batch[k], c, argmax[k, c, bin]] for the
// channels [c_begin, c_end), in (RoI, bin) order for every input element.
// `grad`, `argmax` and `grad_input` are dense, NCHW or (if `channels_last`)
// NHWC. Channels are taken a block at a time, sized so that the block of the
// gradient being accumulated stays in L2 while every RoI adds to it. Returns false if an argmax lies outside
// the plane (it is skipped).
template <typename T>
bool scatter_channels(
    const T* grad, const int32_t* argmax, const std::vector<int64_t>& batch, const RoiShape& s,
    T* grad_input, bool channels_last, int64_t c_begin, int64_t c_end) {
  const int64_t plane = s.plane();
  const int64_t bins = s.bins();
  const int64_t channels = s.channels;
  const int64_t num_rois = static_cast<int64_t>(batch.size());
  bool outside = false;
  const int64_t block = std::max<int64_t>(1, kScatterBytes / (plane * sizeof(T)));
  if (!channels_last) {
    for (int64_t c0 = c_begin; c0 < c_end; c0 += block) {
      const int64_t c1 = std::min(c0 + block, c_end);
      for (int64_t k = 0; k < num_rois; ++k) {
        for (int64_t c = c0; c < c1; ++c) {
          const T* g = grad + (k * channels + c) * bins;
          const int32_t* a = argmax + (k * channels + c) * bins;
          T* target = grad_input + (batch[k] * channels + c) * plane;
          for (int64_t b = 0; b < bins; ++b) {
            outside |= a[b] >= plane;
            if (a[b] >= 0 && a[b] < plane) target[a[b]] += g[b];
          }
        }
      }
    }
    return !outside;
  }
  for (int64_t c0 = c_begin; c0 < c_end; c0 += block) {
    const int64_t c1 = std::min(c0 + block, c_end);
    for (int64_t k = 0; k < num_rois; ++k) {
      T* target = grad_input + batch[k] * plane * channels;
      for (int64_t b = 0; b < bins; ++b) {
        const T* g = grad + (k * bins + b) * channels;
        const int32_t* a = argmax + (k * bins + b) * channels;
        for (int64_t c = c0; c < c1; ++c) {
          outside |= a[c] >= plane;
          if (a[c] >= 0 && a[c] < plane) target[a[c] * channels + c] += g[c];
        }
      }
    }
  }
  return !outside;
}

at::Tensor roi_pool_backward_cpu(
    const at::Tensor& grad, const at::Tensor& rois, const at::Tensor& argmax,
    double spatial_scale, int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
    int64_t channels, int64_t height, int64_t width) {
  check_backward_args(grad, rois, argmax, spatial_scale, pooled_height, pooled_width,
                      batch_size, channels, height, width);
  check_cpu_dtype(kOp, grad, "grad");
  const at::MemoryFormat format = pooled_memory_format(argmax);
  // at::zeros would drop the memory format: allocate, then zero.
  at::Tensor grad_input =
      at::empty({batch_size, channels, height, width}, grad.options().memory_format(format))
          .zero_();
  const RoiShape s{batch_size, channels, height, width, rois.size(0), pooled_height, pooled_width};

  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "roi_pool_backward_cpu", [&] {
    const std::vector<int64_t> batch = batch_indices<scalar_t>(rois, batch_size);
    if (grad.numel() == 0) {
      return;
    }
    const at::Tensor grad_dense = grad.contiguous(format);
    const at::Tensor argmax_dense = argmax.contiguous(format);
    std::atomic<bool> valid{true};
    at::parallel_for(0, channels, 1, [&](int64_t c_begin, int64_t c_end) {
      if (!scatter_channels(grad_dense.const_data_ptr<scalar_t>(),
                            argmax_dense.const_data_ptr<int32_t>(), batch, s,
                            grad_input.mutable_data_ptr<scalar_t>(),
                            format == at::MemoryFormat::ChannelsLast, c_begin, c_end)) {
        valid = false;
      }
    });
    TORCH_CHECK_VALUE(
        valid, "roi_pool: argmax holds indices outside the ", height, " x ", width,
        " feature map; pass the argmax that roi_pool_forward returned");
  });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(detkit, CPU, m) {
  m.impl("roi_pool_forward", &roi_pool_forward_cpu);
  m.impl("roi_pool_backward", &roi_pool_backward_cpu);
}

}  // namespace roi_pool
}  // namespace detkit
