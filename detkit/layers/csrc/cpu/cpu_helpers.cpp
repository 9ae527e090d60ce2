#include "cpu_helpers.h"

namespace detkit {
namespace cpu {

CellLayout nhwc_layout(int64_t c, int64_t h, int64_t w) {
  return {h * w * c, 0, c > 0 ? c : 1, w * c, c};
}

CellLayout blocked_layout(int64_t c, int64_t h, int64_t w) {
  if (c % kChannelBlock != 0) {
    return nhwc_layout(c, h, w);
  }
  return {c * h * w, h * w * kChannelBlock, kChannelBlock, w * kChannelBlock, kChannelBlock};
}

at::Tensor channel_blocked(const at::Tensor& input) {
  const int64_t n = input.size(0), c = input.size(1), h = input.size(2), w = input.size(3);
  if (c % kChannelBlock != 0) {
    return input.contiguous(at::MemoryFormat::ChannelsLast);
  }
  return input.reshape({n, c / kChannelBlock, kChannelBlock, h, w})
      .permute({0, 1, 3, 4, 2})
      .contiguous();
}

}  // namespace cpu
}  // namespace detkit
