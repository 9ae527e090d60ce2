// Helpers shared by the CPU kernels of every RoI op: vector types over
// channels, the multi-versioning attribute for hot loops, tile transposes, and
// the layout the channel-vector loops read: RoIs grouped by image with the
// box of the map they read, copied a chunk of channels at a time into
// channels-last buffers (or read in place from a channels-last map).
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "../roi_common.h"

// Builds a hot loop for AVX-512, AVX2 and baseline x86-64; the loader picks the
// best one the machine supports.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define DETKIT_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DETKIT_CPU_CLONES
#endif

namespace detkit {
namespace cpu {

// 32-byte vectors (GCC vector extensions): one AVX2 register, two SSE ones.
typedef float f32x8 __attribute__((vector_size(32)));
typedef int32_t i32x8 __attribute__((vector_size(32)));
typedef double f64x4 __attribute__((vector_size(32)));
typedef int64_t i64x4 __attribute__((vector_size(32)));

template <typename T>
struct Vector;
template <>
struct Vector<float> {
  using Values = f32x8;
  using Indices = i32x8;  // the type of a comparison mask of Values
  static constexpr int kWidth = 8;
};
template <>
struct Vector<double> {
  using Values = f64x4;
  using Indices = i64x4;
  static constexpr int kWidth = 4;
};

// Channels a kernel keeps in registers at once: four vectors.
template <typename T>
constexpr int kRegisterChannels = 4 * Vector<T>::kWidth;

template <typename T>
__attribute__((always_inline)) inline typename Vector<T>::Values load(const T* p) {
  typename Vector<T>::Values v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
__attribute__((always_inline)) inline void store(T* p, typename Vector<T>::Values v) {
  __builtin_memcpy(p, &v, sizeof(v));
}

// Transposes a square block in registers: v[i][j] becomes v[j][i].
__attribute__((always_inline)) inline void transpose_square(f32x8 (&v)[8]) {
  f32x8 t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = __builtin_shufflevector(v[i], v[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[i + 1] = __builtin_shufflevector(v[i], v[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = __builtin_shufflevector(t[i], t[i + 2], 0, 1, 8, 9, 4, 5, 12, 13);
    u[i + 1] = __builtin_shufflevector(t[i], t[i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    u[i + 2] = __builtin_shufflevector(t[i + 1], t[i + 3], 0, 1, 8, 9, 4, 5, 12, 13);
    u[i + 3] = __builtin_shufflevector(t[i + 1], t[i + 3], 2, 3, 10, 11, 6, 7, 14, 15);
  }
  for (int i = 0; i < 4; ++i) {
    v[i] = __builtin_shufflevector(u[i], u[i + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    v[i + 4] = __builtin_shufflevector(u[i], u[i + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}

__attribute__((always_inline)) inline void transpose_square(f64x4 (&v)[4]) {
  const f64x4 t0 = __builtin_shufflevector(v[0], v[1], 0, 4, 2, 6);
  const f64x4 t1 = __builtin_shufflevector(v[0], v[1], 1, 5, 3, 7);
  const f64x4 t2 = __builtin_shufflevector(v[2], v[3], 0, 4, 2, 6);
  const f64x4 t3 = __builtin_shufflevector(v[2], v[3], 1, 5, 3, 7);
  v[0] = __builtin_shufflevector(t0, t2, 0, 1, 4, 5);
  v[1] = __builtin_shufflevector(t1, t3, 0, 1, 4, 5);
  v[2] = __builtin_shufflevector(t0, t2, 2, 3, 6, 7);
  v[3] = __builtin_shufflevector(t1, t3, 2, 3, 6, 7);
}

// Copies the [rows, width] blocks of `count` channel planes (channel c's row
// y at planes + c * plane_stride + y * row_stride) into cells of a channels-
// last tile (cell (y, x) at tile + (y * width + x) * count), or back from the
// tile into the planes when kBack. Square blocks go through registers. Inlined
// into its callers, so that it is compiled for their DETKIT_CPU_CLONES targets.
template <typename T, bool kBack>
__attribute__((always_inline)) inline void transpose_planes(
    T* planes, int64_t plane_stride, int64_t row_stride, int64_t rows, int64_t width,
    int64_t count, T* tile) {
  using V = typename Vector<T>::Values;
  constexpr int64_t kW = Vector<T>::kWidth;
  auto scalar = [&](int64_t c, int64_t y, int64_t x) {
    T* plane = planes + c * plane_stride + y * row_stride + x;
    T* cell = tile + (y * width + x) * count + c;
    if (kBack) {
      *plane = *cell;
    } else {
      *cell = *plane;
    }
  };
  int64_t c = 0;
  for (; c + kW <= count; c += kW) {
    for (int64_t y = 0; y < rows; ++y) {
      int64_t x = 0;
      for (; x + kW <= width; x += kW) {
        V v[kW];
        T* plane = planes + c * plane_stride + y * row_stride + x;
        T* cell = tile + (y * width + x) * count + c;
        for (int64_t i = 0; i < kW; ++i) v[i] = load(kBack ? cell + i * count : plane + i * plane_stride);
        transpose_square(v);
        for (int64_t i = 0; i < kW; ++i) store(kBack ? plane + i * plane_stride : cell + i * count, v[i]);
      }
      for (; x < width; ++x) {
        for (int64_t i = 0; i < kW; ++i) scalar(c + i, y, x);
      }
    }
  }
  for (; c < count; ++c) {
    for (int64_t y = 0; y < rows; ++y) {
      for (int64_t x = 0; x < width; ++x) scalar(c, y, x);
    }
  }
}

// The cells of rows [y0, y1] and columns [x0, x1] of a map (none when y1 < y0
// or x1 < x0).
struct Box {
  int32_t y0, y1, x0, x1;

  static Box none() { return {INT32_MAX, -1, INT32_MAX, -1}; }
  static Box map(const RoiShape& s) {
    return {0, static_cast<int32_t>(s.height - 1), 0, static_cast<int32_t>(s.width - 1)};
  }
  bool empty() const { return y1 < y0 || x1 < x0; }
  int64_t rows() const { return y1 - y0 + 1; }
  int64_t cols() const { return x1 - x0 + 1; }
  int64_t area() const { return empty() ? 0 : rows() * cols(); }
  // The smallest box holding both (an empty box holds nothing).
  Box join(const Box& b) const {
    if (b.empty()) return *this;
    if (empty()) return b;
    return {std::min(y0, b.y0), std::max(y1, b.y1), std::min(x0, b.x0), std::max(x1, b.x1)};
  }
};

// Where an RoI reads: its image and the cells its bins or samples read (its
// footprint; none when it reads nothing).
struct RoiFootprint {
  int64_t batch;
  Box footprint;
};

// RoI indices sorted by image (stably): the loops visit an image's RoIs one
// after another, so the part of the map they read stays in cache.
std::vector<int64_t> order_by_image(const std::vector<RoiFootprint>& rois);

// RoIs of one image (by_image[first, last)) that read the same part of the
// map, `box`.
struct Group {
  int64_t batch, first, last;
  Box box;
};

// The groups of every image, in by_image order. For a channels-last map, read
// in place, an image's RoIs form one group. A contiguous map is copied group by
// group into channels-last buffers: the RoIs of an image share one copy of
// the box around all their footprints when that copies fewer cells than a copy
// per RoI, else each RoI is a group of its own.
std::vector<Group> group_rois(
    const std::vector<RoiFootprint>& rois, const std::vector<int64_t>& by_image,
    const RoiShape& s, bool in_place);

// Channels per work item: a power of two from one vector (`width` channels) to
// `most`, the largest that still gives every thread two items or more when the
// items are (chunk of channels, one of `units`).
constexpr int64_t kItemChannels = 32;
int64_t item_channels(int64_t channels, int64_t units, int64_t width,
                      int64_t most = kItemChannels);

// Where a work item's channels lie: cells whose channels are next to each other
// (channels-last), `row` and `cell` elements apart; `cells` is the item's first
// channel of cell (origin_y, origin_x).
template <typename T>
struct Region {
  T* cells;
  int64_t row, cell;
  int32_t origin_y, origin_x;

  T* at(int32_t y, int32_t x) const { return cells + (y - origin_y) * row + (x - origin_x) * cell; }
};

// Where channel c0 of a group's cells lies: in the map itself (channels-last,
// when `buffer` is null) or in the buffer it was copied to (`count` channels).
template <typename T>
Region<T> group_region(T* map, T* buffer, const RoiShape& s, const Group& g, int64_t c0,
                       int64_t count) {
  if (buffer == nullptr) {
    return {map + g.batch * s.plane() * s.channels + c0, s.width * s.channels, s.channels, 0, 0};
  }
  return {buffer, g.box.cols() * count, count, g.box.y0, g.box.x0};
}

// Copies channels [c0, c0 + count) of `box` of image n from NCHW `planes` into
// the channels-last `buffer` ([rows, cols, count]), or back when `back`.
void copy_box(float* planes, const RoiShape& s, int64_t n, const Box& box, int64_t c0,
              int64_t count, float* buffer, bool back);
void copy_box(double* planes, const RoiShape& s, int64_t n, const Box& box, int64_t c0,
              int64_t count, double* buffer, bool back);

// Writes the [rows, cols] tile transposed to out[cols, rows].
template <typename V>
void transpose_tile(const V* tile, int64_t rows, int64_t cols, V* out) {
  constexpr int64_t kStep = 8;
  for (int64_t c0 = 0; c0 < cols; c0 += kStep) {
    const int64_t c1 = std::min(c0 + kStep, cols);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = c0; c < c1; ++c) out[c * rows + r] = tile[r * cols + c];
    }
  }
}

}  // namespace cpu
}  // namespace detkit
