#include "cuda_adapter.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/amax.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/frexp.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/ldexp.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/util/Exception.h>

namespace detkit {
namespace cuda {

DType to_kernel_dtype(const char* op, at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return DType::kFloat32;
    case at::kDouble:
      return DType::kFloat64;
    case at::kHalf:
      return DType::kFloat16;
    case at::kBFloat16:
      return DType::kBFloat16;
    default:
      TORCH_CHECK(
          false, op, ": on CUDA the dtype must be float32, float64, float16 or bfloat16, got ", t);
  }
}

Strides4 strides_of(const at::Tensor& t) {
  return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

FixedPointGrad::FixedPointGrad(
    const at::Tensor& grad, int64_t batch_size, int64_t channels, int64_t height, int64_t width,
    at::MemoryFormat format)
    : dtype_(grad.scalar_type()), format_(format) {
  const auto options = grad.options().memory_format(format);
  // at::zeros would drop the memory format: allocate, then zero.
  sums_ = at::empty({batch_size, channels, height, width}, options.dtype(at::kLong)).zero_();
  flags_ = at::empty({batch_size, channels, height, width}, options.dtype(at::kInt)).zero_();
  // The bound of any element's |sum| per channel, and the largest power-of-two
  // scale that keeps it below 2^62. All on the device: no synchronisation.
  const at::Tensor magnitude = grad.abs().to(at::kDouble);
  const at::Tensor finite = at::where(at::isfinite(magnitude), magnitude, 0.0);
  const double terms = static_cast<double>(grad.size(0) * grad.size(2) * grad.size(3));
  const at::Tensor bound = finite.amax({0, 2, 3}) * terms;
  const at::Tensor exponent = std::get<1>(at::frexp(bound));  // bound < 2^exponent
  scales_ = at::where(bound > 0, at::ldexp(at::ones_like(bound), 62 - exponent), 1.0);
  target_ = {reinterpret_cast<unsigned long long*>(sums_.mutable_data_ptr<int64_t>()),
             flags_.mutable_data_ptr<int32_t>(), scales_.const_data_ptr<double>(),
             strides_of(sums_)};
}

at::Tensor FixedPointGrad::finish(const RoiShape& shape, c10::cuda::CUDAStream stream) const {
  at::Tensor grad_input =
      at::empty(sums_.sizes(), sums_.options().dtype(dtype_).memory_format(format_));
  C10_CUDA_CHECK(launch_fixed_point_finish(
      to_kernel_dtype("fixed_point", dtype_), target_, shape,
      format_ == at::MemoryFormat::ChannelsLast, grad_input.mutable_data_ptr(), stream));
  return grad_input;
}

}  // namespace cuda
}  // namespace detkit
