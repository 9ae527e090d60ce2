// What the ATen adapters of every op's CUDA kernels share: dtype and stride
// translation, and the buffers of the deterministic backward.
#pragma once

#include <ATen/Context.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAStream.h>

#include <vector>

#include "kernel_api.h"

namespace detkit {
namespace cuda {

// The kernels' name for `t`'s dtype; other dtypes fail with `op`'s message.
DType to_kernel_dtype(const char* op, at::ScalarType t);

Strides4 strides_of(const at::Tensor& t);

// The deterministic accumulation of a backward pass (torch.use_deterministic_
// algorithms(True)). Every contribution to the input gradient is rounded to an
// integer multiple of a per-channel unit and added to an int64 sum, so the
// result does not depend on the order of the atomic additions. The unit is a
// power of two chosen from the gradient (K x bins x the largest finite |grad|
// of the channel bounds any element's sum), so no sum overflows and each
// contribution keeps about 62 - log2(K x bins) bits below that bound: about
// 1e-14 of a channel's largest gradient for 2000 RoIs of 7 x 7.
class FixedPointGrad {
 public:
  // For `grad` ([K, C, pooled_h, pooled_w]) and an input gradient of
  // [batch_size, channels, height, width] in `format`.
  FixedPointGrad(
      const at::Tensor& grad, int64_t batch_size, int64_t channels, int64_t height,
      int64_t width, at::MemoryFormat format);

  const FixedPointTarget& target() const { return target_; }

  // The input gradient in grad's dtype and the format given above.
  at::Tensor finish(const RoiShape& shape, c10::cuda::CUDAStream stream) const;

 private:
  at::Tensor sums_, flags_, scales_;
  at::ScalarType dtype_;
  at::MemoryFormat format_;
  FixedPointTarget target_;
};

// The input gradient [num_images, channels, height, width] (in `format`) of a
// backward pass that adds the contributions of `grad`'s outputs. `launch(buffer,
// strides, fixed_point)` runs the op's kernel with either a zero-filled buffer
// to add into with atomics (float32 for float16/bfloat16 grads, else grad's
// dtype) and its strides, fixed_point null; or, under torch.use_deterministic_
// algorithms(True), a null buffer and the FixedPointGrad target.
template <typename Launch>
at::Tensor accumulate_input_grad(
    const at::Tensor& grad, const RoiShape& s, at::MemoryFormat format,
    c10::cuda::CUDAStream stream, Launch&& launch) {
  const auto options = grad.options().memory_format(format);
  const std::vector<int64_t> sizes{s.num_images, s.channels, s.height, s.width};
  if (grad.numel() == 0) {
    return at::empty(sizes, options).zero_();
  }
  if (at::globalContext().deterministicAlgorithms()) {
    const FixedPointGrad sums(grad, s.num_images, s.channels, s.height, s.width, format);
    launch(nullptr, Strides4{}, &sums.target());
    return sums.finish(s, stream);
  }
  const bool reduced = grad.scalar_type() == at::kHalf || grad.scalar_type() == at::kBFloat16;
  // at::zeros would drop the memory format: allocate, then zero.
  at::Tensor buffer = at::empty(sizes, reduced ? options.dtype(at::kFloat) : options).zero_();
  launch(buffer.mutable_data_ptr(), strides_of(buffer), nullptr);
  return reduced ? buffer.to(grad.scalar_type()) : buffer;  // rounded once
}

}  // namespace cuda
}  // namespace detkit
