// Schemas of detkit's operators, declared once for every backend.
// Backends implement them with TORCH_LIBRARY_IMPL (cpu/, cuda/, autocast);
// autograd and the fake (meta) kernels are registered from Python in
// detkit/layers/roi_pool.py and roi_align.py.
#include <torch/library.h>

TORCH_LIBRARY(detkit, m) {
  // Returns the pooled features [K, C, pooled_height, pooled_width] and, for
  // every output, the in-plane index h * W + w of its maximum (int32, -1 for
  // an empty bin). Both follow the input's memory format. With
  // with_argmax=False (inference) argmax is an empty tensor and not computed.
  m.def(
      "roi_pool_forward(Tensor input, Tensor rois, float spatial_scale, "
      "int pooled_height, int pooled_width, bool with_argmax=True) "
      "-> (Tensor output, Tensor argmax)");
  // Routes every output's gradient to its argmax input element.
  m.def(
      "roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, "
      "int pooled_height, int pooled_width, SymInt batch_size, SymInt channels, "
      "SymInt height, SymInt width) -> Tensor");
  // RoIAlign: the pooled features [K, C, pooled_height, pooled_width], each bin
  // the mean of bilinear samples on a regular grid (sampling_ratio per axis, or
  // adaptive when <= 0), with the half-pixel offset when aligned. The output
  // follows the input's memory format.
  m.def(
      "roi_align_forward(Tensor input, Tensor rois, float spatial_scale, int pooled_height, "
      "int pooled_width, int sampling_ratio, bool aligned) -> Tensor");
  // The input gradient [batch_size, channels, height, width], in grad's memory format.
  m.def(
      "roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, int pooled_height, "
      "int pooled_width, int sampling_ratio, bool aligned, SymInt batch_size, SymInt channels, "
      "SymInt height, SymInt width) -> Tensor");
}
