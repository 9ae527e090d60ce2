// Autocast for every RoI op, on CPU and CUDA, by one rule: float16/bfloat16
// RoIs are brought to float32 (the kernels take RoIs in the features' dtype or
// float32); on CPU, whose kernels compute in float32/float64, float16/bfloat16
// features are pooled in float32 and the result is cast back to their dtype;
// the CUDA kernels take such features as they are.
#include <tuple>

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

namespace detkit {
namespace {

bool is_reduced(at::ScalarType t) {
  return t == at::kHalf || t == at::kBFloat16;
}

at::Tensor to_float_if_reduced(const at::Tensor& t) {
  return is_reduced(t.scalar_type()) ? t.to(at::kFloat) : t;
}

// The pooled features back in `dtype`: the result itself, or the first of a
// tuple (roi_pool's argmax stays int32).
at::Tensor cast_back(const at::Tensor& t, at::ScalarType dtype) {
  return t.scalar_type() == dtype ? t : t.to(dtype);
}

std::tuple<at::Tensor, at::Tensor> cast_back(
    const std::tuple<at::Tensor, at::Tensor>& t, at::ScalarType dtype) {
  return {cast_back(std::get<0>(t), dtype), std::get<1>(t)};
}

// The autocast kernel of the forward op `kName`, whose schema starts with
// (Tensor input, Tensor rois, ...).
template <c10::DispatchKey kKey, const char* kName, typename Result, typename... Rest>
Result autocast_forward(const at::Tensor& input, const at::Tensor& rois, Rest... rest) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(kKey);
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow(kName, "")
                             .typed<Result(const at::Tensor&, const at::Tensor&, Rest...)>();
  const bool cpu = kKey == c10::DispatchKey::AutocastCPU;
  const at::Tensor features = cpu ? to_float_if_reduced(input) : input;
  return cast_back(op.call(features, to_float_if_reduced(rois), rest...), input.scalar_type());
}

constexpr char kRoiPool[] = "detkit::roi_pool_forward";
constexpr char kRoiAlign[] = "detkit::roi_align_forward";

template <c10::DispatchKey kKey>
void register_autocast(torch::Library& m) {
  m.impl("roi_pool_forward",
         &autocast_forward<kKey, kRoiPool, std::tuple<at::Tensor, at::Tensor>, double, int64_t,
                           int64_t, bool>);
  m.impl("roi_align_forward",
         &autocast_forward<kKey, kRoiAlign, at::Tensor, double, int64_t, int64_t, int64_t, bool>);
}

}  // namespace

TORCH_LIBRARY_IMPL(detkit, AutocastCPU, m) {
  register_autocast<c10::DispatchKey::AutocastCPU>(m);
}

TORCH_LIBRARY_IMPL(detkit, AutocastCUDA, m) {
  register_autocast<c10::DispatchKey::AutocastCUDA>(m);
}

}  // namespace detkit
