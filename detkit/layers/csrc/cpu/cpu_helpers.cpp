#include "cpu_helpers.h"

#include <ATen/Parallel.h>

namespace detkit {
namespace cpu {

std::vector<int64_t> order_by_image(const std::vector<RoiFootprint>& rois) {
  std::vector<int64_t> by_image(rois.size());
  std::iota(by_image.begin(), by_image.end(), int64_t(0));
  std::stable_sort(by_image.begin(), by_image.end(),
                   [&](int64_t a, int64_t b) { return rois[a].batch < rois[b].batch; });
  return by_image;
}

std::vector<Group> group_rois(
    const std::vector<RoiFootprint>& rois, const std::vector<int64_t>& by_image,
    const RoiShape& s, bool in_place) {
  std::vector<Group> groups;
  const int64_t count = static_cast<int64_t>(by_image.size());
  for (int64_t first = 0; first < count;) {
    const int64_t batch = rois[by_image[first]].batch;
    int64_t last = first;
    Box around = Box::none();
    int64_t footprints = 0;
    for (; last < count && rois[by_image[last]].batch == batch; ++last) {
      const Box& b = rois[by_image[last]].footprint;
      around = around.join(b);
      footprints += b.area();
    }
    if (in_place || around.area() <= footprints) {
      groups.push_back({batch, first, last, in_place ? Box::map(s) : around});
    } else {
      for (int64_t i = first; i < last; ++i) {
        groups.push_back({batch, i, i + 1, rois[by_image[i]].footprint});
      }
    }
    first = last;
  }
  return groups;
}

int64_t item_channels(int64_t channels, int64_t units, int64_t width, int64_t most) {
  const int64_t wanted = 2 * at::get_num_threads();
  int64_t chunk = most;
  while (chunk > width && (channels + chunk - 1) / chunk * units < wanted) chunk /= 2;
  return chunk;
}

#define DETKIT_DEFINE_COPY(T)                                                                   \
  DETKIT_CPU_CLONES void copy_box(T* planes, const RoiShape& s, int64_t n, const Box& box,      \
                                  int64_t c0, int64_t count, T* buffer, bool back) {            \
    T* first = planes + (n * s.channels + c0) * s.plane() + box.y0 * s.width + box.x0;          \
    if (back) {                                                                                 \
      transpose_planes<T, true>(first, s.plane(), s.width, box.rows(), box.cols(), count,       \
                                buffer);                                                        \
    } else {                                                                                    \
      transpose_planes<T, false>(first, s.plane(), s.width, box.rows(), box.cols(), count,      \
                                 buffer);                                                       \
    }                                                                                           \
  }
DETKIT_DEFINE_COPY(float)
DETKIT_DEFINE_COPY(double)
#undef DETKIT_DEFINE_COPY

}  // namespace cpu
}  // namespace detkit
