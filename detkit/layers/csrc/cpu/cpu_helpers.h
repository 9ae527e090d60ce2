// Helpers shared by the CPU kernels of every RoI op: vector types over
// channels, the multi-versioning attribute for hot loops, channel-blocked
// copies of a feature map and tile transposes.
#pragma once

#include <algorithm>
#include <cstdint>

#include <ATen/core/Tensor.h>

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

// Channels of a feature map processed together by the channel-vector loops:
// their data stay in L1/L2 while an RoI's cells are visited.
constexpr int64_t kChannelBlock = 128;

// Where channel c of cell (y, x) of image n lies in a feature map whose cells
// hold their channels next to each other, in blocks of `block` channels:
//   n * image + (c / block) * block_stride + y * row + x * cell + c % block.
// NHWC is one block of all channels; channel-blocked copies and RoI tiles use
// blocks of kChannelBlock.
struct CellLayout {
  int64_t image, block_stride, block, row, cell;

  // Offset of channel c of cell (0, 0) of image n.
  int64_t channel(int64_t n, int64_t c) const {
    return n * image + (c / block) * block_stride + c % block;
  }
};

// The layout of a channels-last (NHWC) [n, c, h, w] map.
CellLayout nhwc_layout(int64_t c, int64_t h, int64_t w);

// Channel-blocked maps, which the channel-vector loops read well: blocks of
// kChannelBlock channels, [N, C / kChannelBlock, H, W, kChannelBlock], when the
// blocks divide C, else NHWC. blocked_layout says where their cells lie.
CellLayout blocked_layout(int64_t c, int64_t h, int64_t w);

// A channel-blocked copy of NCHW `input`.
at::Tensor channel_blocked(const at::Tensor& input);

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
