// CPU kernels of detkit::roi_align_forward / roi_align_backward.
//
// Every RoI's sampling grid is computed once into tables of bilinear taps: one
// entry per sample row and one per sample column (roi_align_geometry.h); a
// sample's four weights are products of its row's and column's weights. The
// loops then take a vector of channels at a time, so they need a cell's
// channels next to each other in memory:
//  * channels-last (NHWC) input is read as it is;
//  * a contiguous (NCHW) input is copied, a chunk of channels at a time, into
//    a small channels-last buffer: for each image the box around all its RoIs'
//    footprints, or each RoI's own footprint when that copies fewer cells
//    (cpu_helpers.h; RoIPool's vector loops read the same layout).
// Both passes parallelise over independent work: forward over (chunk of
// channels, group of RoIs), backward over (chunk, image), each adding the
// contributions of the image's RoIs in turn, so no two threads write the same
// element. Every value
// is computed with the arithmetic of torchvision's kernels in the same order
// (one lane per channel), so outputs and gradients are bitwise equal to a
// serial loop and to torchvision.ops.roi_align for float32 and float64.
#include <algorithm>
#include <cstdint>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include "../roi_align_geometry.h"
#include "../roi_checks.h"
#include "cpu_helpers.h"

namespace detkit {
namespace roi_align {
namespace {

constexpr const char* kOp = "roi_align";

using cpu::Box;
using cpu::Group;
using cpu::kRegisterChannels;
using cpu::Region;
using cpu::Vector;

// One RoI's sampling grid and where its taps lie in the shared tables.
template <typename T>
struct RoiSamples {
  int32_t grid_h, grid_w;
  T count;
  int64_t y_taps, x_taps;  // index of the RoI's first sample row / column in the tables
};

template <typename T>
struct SampleTables {
  std::vector<RoiSamples<T>> rois;
  std::vector<AxisTaps<T>> y_taps, x_taps;
  // Each RoI's image and the cells its samples read (none when all lie
  // outside the map), and the RoIs in image order (cpu::order_by_image).
  std::vector<cpu::RoiFootprint> reads;
  std::vector<int64_t> by_image;
};

// Appends the taps of `bins * grid` samples along one axis to `taps` and
// returns the range [low, high] of cells they read (high < low for none).
template <typename T>
std::pair<int32_t, int32_t> add_axis_taps(
    T start, T bin_size, int64_t bins, int32_t grid, int64_t size, std::vector<AxisTaps<T>>& taps) {
  int32_t low = INT32_MAX, high = -1;
  for (int64_t b = 0; b < bins; ++b) {
    for (int32_t k = 0; k < grid; ++k) {
      const AxisTaps<T> t = axis_taps(sample_coordinate(start, b, bin_size, k, grid), size);
      if (t.low >= 0) {
        low = std::min(low, t.low);
        high = std::max(high, t.high);
      }
      taps.push_back(t);
    }
  }
  return {low, high};
}

// The sampling tables of every RoI. Validates each RoI, so the loops can
// trust the tables.
template <typename T>
SampleTables<T> build_tables(
    const at::Tensor& rois, double spatial_scale, int64_t sampling_ratio, bool aligned,
    const RoiShape& s) {
  const at::Tensor rois_c = rois.contiguous();
  const T* r = rois_c.const_data_ptr<T>();
  const T scale = static_cast<T>(spatial_scale);
  SampleTables<T> tables;
  tables.rois.reserve(s.num_rois);
  tables.reads.reserve(s.num_rois);
  for (int64_t k = 0; k < s.num_rois; ++k) {
    const T* roi = r + 5 * k;
    check_roi_row(kOp, roi, k, s.num_images);
    const SamplingGrid<T> g = sampling_grid(
        roi[1], roi[2], roi[3], roi[4], scale, s.pooled_height, s.pooled_width, sampling_ratio,
        aligned);
    TORCH_CHECK_VALUE(
        g.valid, kOp, ": rois[", k, "] = (", roi[0], ", ", roi[1], ", ", roi[2], ", ", roi[3],
        ", ", roi[4], ") at spatial_scale ", spatial_scale, " with sampling_ratio ",
        sampling_ratio, " needs a sampling grid of more than ", kMaxGrid,
        " samples per bin and axis (or has a size that is not finite)");
    tables.rois.push_back({g.grid_h, g.grid_w, g.count,
                           static_cast<int64_t>(tables.y_taps.size()),
                           static_cast<int64_t>(tables.x_taps.size())});
    Box f = Box::none();
    std::tie(f.y0, f.y1) =
        add_axis_taps(g.start_h, g.bin_h, s.pooled_height, g.grid_h, s.height, tables.y_taps);
    std::tie(f.x0, f.x1) =
        add_axis_taps(g.start_w, g.bin_w, s.pooled_width, g.grid_w, s.width, tables.x_taps);
    tables.reads.push_back({static_cast<int64_t>(roi[0]), f});
  }
  tables.by_image = cpu::order_by_image(tables.reads);
  return tables;
}

// A run of channels: L is T (one channel) or Vector<T>::Values, kGroup of them.
template <typename T, typename L>
__attribute__((always_inline)) inline L load_lane(const T* p) {
  if constexpr (sizeof(L) == sizeof(T)) {
    return *p;
  } else {
    return cpu::load<T>(p);
  }
}

template <typename T, typename L>
__attribute__((always_inline)) inline void store_lane(T* p, L v) {
  if constexpr (sizeof(L) == sizeof(T)) {
    *p = v;
  } else {
    cpu::store<T>(p, v);
  }
}

// Forward of `kGroup` lanes of type L (kGroup * sizeof(L) / sizeof(T)
// channels, from channel offset `c`) for every bin of one RoI: the bin's mean
// of bilinear samples, written to out[bin * bin_stride + c ...].
template <typename T, typename L, int kGroup>
__attribute__((always_inline)) inline void sample_lanes(
    const Region<const T>& region, const RoiSamples<T>& r, const AxisTaps<T>* ys,
    const AxisTaps<T>* xs, int64_t pooled_height, int64_t pooled_width, int64_t c, T* out,
    int64_t bin_stride) {
  constexpr int64_t kLane = sizeof(L) / sizeof(T);
  for (int64_t ph = 0; ph < pooled_height; ++ph) {
    for (int64_t pw = 0; pw < pooled_width; ++pw) {
      L acc[kGroup];
      for (int j = 0; j < kGroup; ++j) acc[j] = L{} + T(0);
      for (int32_t iy = 0; iy < r.grid_h; ++iy) {
        const AxisTaps<T>& y = ys[ph * r.grid_h + iy];
        if (y.low < 0) continue;
        for (int32_t ix = 0; ix < r.grid_w; ++ix) {
          const AxisTaps<T>& x = xs[pw * r.grid_w + ix];
          if (x.low < 0) continue;
          const T w1 = y.low_weight * x.low_weight, w2 = y.low_weight * x.high_weight;
          const T w3 = y.high_weight * x.low_weight, w4 = y.high_weight * x.high_weight;
          const T* p1 = region.at(y.low, x.low) + c;
          const T* p2 = region.at(y.low, x.high) + c;
          const T* p3 = region.at(y.high, x.low) + c;
          const T* p4 = region.at(y.high, x.high) + c;
          for (int j = 0; j < kGroup; ++j) {
            acc[j] += w1 * load_lane<T, L>(p1 + j * kLane) + w2 * load_lane<T, L>(p2 + j * kLane) +
                w3 * load_lane<T, L>(p3 + j * kLane) + w4 * load_lane<T, L>(p4 + j * kLane);
          }
        }
      }
      T* o = out + (ph * pooled_width + pw) * bin_stride + c;
      for (int j = 0; j < kGroup; ++j) store_lane<T, L>(o + j * kLane, acc[j] / r.count);
    }
  }
}

// Backward of `kGroup` lanes for every bin of one RoI: each sample's four
// weighted shares of the bin's gradient (grad[bin * grad_bin_stride + c ...]),
// over the sample count, are added to its four cells in torchvision's order.
template <typename T, typename L, int kGroup>
__attribute__((always_inline)) inline void scatter_lanes(
    const Region<T>& region, const RoiSamples<T>& r, const AxisTaps<T>* ys,
    const AxisTaps<T>* xs, int64_t pooled_height, int64_t pooled_width, int64_t c, const T* grad,
    int64_t grad_bin_stride) {
  constexpr int64_t kLane = sizeof(L) / sizeof(T);
  for (int64_t ph = 0; ph < pooled_height; ++ph) {
    for (int64_t pw = 0; pw < pooled_width; ++pw) {
      L g[kGroup];
      const T* gp = grad + (ph * pooled_width + pw) * grad_bin_stride + c;
      for (int j = 0; j < kGroup; ++j) g[j] = load_lane<T, L>(gp + j * kLane);
      for (int32_t iy = 0; iy < r.grid_h; ++iy) {
        const AxisTaps<T>& y = ys[ph * r.grid_h + iy];
        if (y.low < 0) continue;
        for (int32_t ix = 0; ix < r.grid_w; ++ix) {
          const AxisTaps<T>& x = xs[pw * r.grid_w + ix];
          if (x.low < 0) continue;
          const T w[4] = {y.low_weight * x.low_weight, y.low_weight * x.high_weight,
                          y.high_weight * x.low_weight, y.high_weight * x.high_weight};
          T* p[4] = {region.at(y.low, x.low) + c, region.at(y.low, x.high) + c,
                     region.at(y.high, x.low) + c, region.at(y.high, x.high) + c};
          // One tap after the other: taps clamped to the same cell add in turn.
          for (int t = 0; t < 4; ++t) {
            for (int j = 0; j < kGroup; ++j) {
              T* q = p[t] + j * kLane;
              store_lane<T, L>(q, load_lane<T, L>(q) + g[j] * w[t] / r.count);
            }
          }
        }
      }
    }
  }
}

// Forward of channels [0, count) of one RoI's region; see sample_lanes.
#define DETKIT_DEFINE_SAMPLE(T)                                                                 \
  DETKIT_CPU_CLONES void sample_channels(                                                       \
      const Region<const T>& region, const RoiSamples<T>& r, const AxisTaps<T>* ys,             \
      const AxisTaps<T>* xs, int64_t ph, int64_t pw, int64_t count, T* out, int64_t stride) {  \
    using V = typename Vector<T>::Values;                                                       \
    constexpr int64_t kWidth = Vector<T>::kWidth;                                               \
    int64_t c = 0;                                                                              \
    for (; c + kRegisterChannels<T> <= count; c += kRegisterChannels<T>) {                      \
      sample_lanes<T, V, 4>(region, r, ys, xs, ph, pw, c, out, stride);                         \
    }                                                                                           \
    for (; c + kWidth <= count; c += kWidth) {                                                  \
      sample_lanes<T, V, 1>(region, r, ys, xs, ph, pw, c, out, stride);                         \
    }                                                                                           \
    for (; c < count; ++c) {                                                                    \
      sample_lanes<T, T, 1>(region, r, ys, xs, ph, pw, c, out, stride);                         \
    }                                                                                           \
  }                                                                                             \
  DETKIT_CPU_CLONES void scatter_channels(                                                      \
      const Region<T>& region, const RoiSamples<T>& r, const AxisTaps<T>* ys,                   \
      const AxisTaps<T>* xs, int64_t ph, int64_t pw, int64_t count, const T* grad,              \
      int64_t stride) {                                                                         \
    using V = typename Vector<T>::Values;                                                       \
    constexpr int64_t kWidth = Vector<T>::kWidth;                                               \
    int64_t c = 0;                                                                              \
    for (; c + kRegisterChannels<T> <= count; c += kRegisterChannels<T>) {                      \
      scatter_lanes<T, V, 4>(region, r, ys, xs, ph, pw, c, grad, stride);                       \
    }                                                                                           \
    for (; c + kWidth <= count; c += kWidth) {                                                  \
      scatter_lanes<T, V, 1>(region, r, ys, xs, ph, pw, c, grad, stride);                       \
    }                                                                                           \
    for (; c < count; ++c) {                                                                    \
      scatter_lanes<T, T, 1>(region, r, ys, xs, ph, pw, c, grad, stride);                       \
    }                                                                                           \
  }
DETKIT_DEFINE_SAMPLE(float)
DETKIT_DEFINE_SAMPLE(double)
#undef DETKIT_DEFINE_SAMPLE

template <typename T>
void forward(
    const at::Tensor& input, const SampleTables<T>& tables, const RoiShape& s, bool channels_last,
    T* output) {
  const int64_t bins = s.bins();
  const at::Tensor map = input.contiguous(
      channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  T* data = const_cast<T*>(map.const_data_ptr<T>());
  const std::vector<Group> groups =
      cpu::group_rois(tables.reads, tables.by_image, s, channels_last);
  const int64_t num_groups = static_cast<int64_t>(groups.size());
  const int64_t chunk = cpu::item_channels(s.channels, num_groups, Vector<T>::kWidth);
  const int64_t chunks = (s.channels + chunk - 1) / chunk;
  // Items go through the channels chunk by chunk, and each chunk through the
  // groups image by image: the planes of a chunk of one image stay in cache.
  at::parallel_for(0, chunks * num_groups, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> buffer, out_tile(channels_last ? 0 : bins * chunk);
    for (int64_t item = begin; item < end; ++item) {
      const Group& g = groups[item % num_groups];
      const int64_t c0 = (item / num_groups) * chunk, count = std::min(chunk, s.channels - c0);
      if (!channels_last && !g.box.empty()) {
        buffer.resize(g.box.area() * count);
        cpu::copy_box(data, s, g.batch, g.box, c0, count, buffer.data(), false);
      }
      const Region<T> region =
          cpu::group_region<T>(data, channels_last ? nullptr : buffer.data(), s, g, c0, count);
      for (int64_t i = g.first; i < g.last; ++i) {
        const int64_t k = tables.by_image[i];
        const RoiSamples<T>& r = tables.rois[k];
        // channels-last output [K, bins, C] is written in place; NCHW [K, C, bins]
        // goes through a [bins, count] tile.
        T* out = channels_last ? output + k * bins * s.channels + c0 : out_tile.data();
        const int64_t stride = channels_last ? s.channels : count;
        if (tables.reads[k].footprint.empty()) {
          for (int64_t b = 0; b < bins; ++b) std::fill_n(out + b * stride, count, T(0));
        } else {
          sample_channels({region.cells, region.row, region.cell, region.origin_y, region.origin_x},
                          r, tables.y_taps.data() + r.y_taps, tables.x_taps.data() + r.x_taps,
                          s.pooled_height, s.pooled_width, count, out, stride);
        }
        if (!channels_last) {
          cpu::transpose_tile(out, bins, count, output + (k * s.channels + c0) * bins);
        }
      }
    }
  });
}

template <typename T>
at::Tensor backward(
    const at::Tensor& grad, const SampleTables<T>& tables, const RoiShape& s, bool channels_last) {
  const int64_t bins = s.bins();
  const at::MemoryFormat format =
      channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor grad_dense = grad.contiguous(format);
  const T* g = grad_dense.const_data_ptr<T>();
  // at::zeros would drop the memory format: allocate, then zero.
  at::Tensor grad_input =
      at::empty({s.num_images, s.channels, s.height, s.width}, grad.options().memory_format(format))
          .zero_();
  T* gi = grad_input.mutable_data_ptr<T>();
  const std::vector<Group> groups =
      cpu::group_rois(tables.reads, tables.by_image, s, channels_last);
  // Items: (chunk of channels, image). Each adds the image's RoIs group by
  // group in by_image order, so every element gets its shares in RoI order.
  std::vector<int64_t> image_groups{0};  // groups of the i-th image present: [image_groups[i], [i + 1])
  for (int64_t i = 1; i < static_cast<int64_t>(groups.size()); ++i) {
    if (groups[i].batch != groups[i - 1].batch) image_groups.push_back(i);
  }
  image_groups.push_back(static_cast<int64_t>(groups.size()));
  const int64_t images = static_cast<int64_t>(image_groups.size()) - 1;
  const int64_t chunk = cpu::item_channels(s.channels, images, Vector<T>::kWidth);
  const int64_t chunks = (s.channels + chunk - 1) / chunk;
  at::parallel_for(0, chunks * images, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> buffer, grad_tile(channels_last ? 0 : bins * chunk);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t image = item % images;
      const int64_t c0 = (item / images) * chunk, count = std::min(chunk, s.channels - c0);
      for (int64_t j = image_groups[image]; j < image_groups[image + 1]; ++j) {
        const Group& group = groups[j];
        if (group.box.empty()) continue;
        if (!channels_last) {
          buffer.resize(group.box.area() * count);
          cpu::copy_box(gi, s, group.batch, group.box, c0, count, buffer.data(), false);
        }
        const Region<T> region =
            cpu::group_region<T>(gi, channels_last ? nullptr : buffer.data(), s, group, c0, count);
        for (int64_t i = group.first; i < group.last; ++i) {
          const int64_t k = tables.by_image[i];
          const RoiSamples<T>& r = tables.rois[k];
          if (tables.reads[k].footprint.empty()) continue;
          // The gradient of the RoI's outputs as [bins, count] rows.
          const T* grad_rows = g + k * s.channels * bins + c0;
          int64_t grad_stride = s.channels;
          if (!channels_last) {
            cpu::transpose_tile(g + (k * s.channels + c0) * bins, count, bins, grad_tile.data());
            grad_rows = grad_tile.data();
            grad_stride = count;
          }
          scatter_channels(region, r, tables.y_taps.data() + r.y_taps,
                           tables.x_taps.data() + r.x_taps, s.pooled_height, s.pooled_width,
                           count, grad_rows, grad_stride);
        }
        if (!channels_last) {
          cpu::copy_box(gi, s, group.batch, group.box, c0, count, buffer.data(), true);
        }
      }
    }
  });
  return grad_input;
}

at::Tensor roi_align_forward_cpu(
    const at::Tensor& input, const at::Tensor& rois, double spatial_scale, int64_t pooled_height,
    int64_t pooled_width, int64_t sampling_ratio, bool aligned) {
  check_forward_args(kOp, input, rois, spatial_scale, pooled_height, pooled_width);
  check_cpu_dtype(kOp, input, "input");
  const RoiShape s{input.size(0), input.size(1), input.size(2), input.size(3),
                   rois.size(0),  pooled_height, pooled_width};
  const at::MemoryFormat format = pooled_memory_format(input);
  at::Tensor output = at::empty(
      {s.num_rois, s.channels, pooled_height, pooled_width}, input.options().memory_format(format));
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "roi_align_forward_cpu", [&] {
    const auto tables = build_tables<scalar_t>(rois, spatial_scale, sampling_ratio, aligned, s);
    if (output.numel() > 0) {
      forward(input, tables, s, format == at::MemoryFormat::ChannelsLast,
              output.mutable_data_ptr<scalar_t>());
    }
  });
  return output;
}

at::Tensor roi_align_backward_cpu(
    const at::Tensor& grad, const at::Tensor& rois, double spatial_scale, int64_t pooled_height,
    int64_t pooled_width, int64_t sampling_ratio, bool aligned, int64_t batch_size,
    int64_t channels, int64_t height, int64_t width) {
  check_backward_args(kOp, grad, rois, spatial_scale, pooled_height, pooled_width, batch_size,
                      channels, height, width);
  check_cpu_dtype(kOp, grad, "grad");
  const RoiShape s{batch_size, channels, height, width, rois.size(0), pooled_height, pooled_width};
  const bool channels_last = pooled_memory_format(grad) == at::MemoryFormat::ChannelsLast;
  at::Tensor grad_input;
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "roi_align_backward_cpu", [&] {
    const auto tables = build_tables<scalar_t>(rois, spatial_scale, sampling_ratio, aligned, s);
    grad_input = backward(grad, tables, s, channels_last);
  });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(detkit, CPU, m) {
  m.impl("roi_align_forward", &roi_align_forward_cpu);
  m.impl("roi_align_backward", &roi_align_backward_cpu);
}

}  // namespace roi_align
}  // namespace detkit
