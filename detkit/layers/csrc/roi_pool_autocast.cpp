// Autocast on CPU: float16/bfloat16 features are pooled in float32 (the CPU
// kernels are float32/float64 only) and the result is cast back. Max pooling
// picks one of its inputs, so the round trip changes no value.
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

namespace detkit {
namespace roi_pool {
namespace {

std::tuple<at::Tensor, at::Tensor> roi_pool_forward_autocast_cpu(
    const at::Tensor& input, const at::Tensor& rois, double spatial_scale, int64_t pooled_height,
    int64_t pooled_width, bool with_argmax) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCPU);
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("detkit::roi_pool_forward", "")
                             .typed<decltype(roi_pool_forward_autocast_cpu)>();
  const auto dtype = input.scalar_type();
  if (dtype != at::kHalf && dtype != at::kBFloat16) {
    return op.call(input, rois, spatial_scale, pooled_height, pooled_width, with_argmax);
  }
  auto [output, argmax] = op.call(
      input.to(at::kFloat), rois.to(at::kFloat), spatial_scale, pooled_height, pooled_width,
      with_argmax);
  return {output.to(dtype), argmax};
}

}  // namespace

TORCH_LIBRARY_IMPL(detkit, AutocastCPU, m) {
  m.impl("roi_pool_forward", &roi_pool_forward_autocast_cpu);
}

}  // namespace roi_pool
}  // namespace detkit
