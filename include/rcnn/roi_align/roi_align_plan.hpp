#pragma once
/// \file roi_align_plan.hpp
/// Per-RoI planning shared by the optimised RoIAlign policies (OmpRoIAlign, SimdRoIAlign):
/// per-axis bilinear samples, the window of the map a RoI reads, and a cache-friendly order.

#include <algorithm>
#include <cstddef>
#include <span>

#include "../config.hpp"
#include "../types.hpp"
#include "roi_align_ref.hpp"

namespace rcnn::detail {

/// One axis of a bilinear sample: `bilinear_sample()`'s per-axis half, with the indices
/// turned into offsets into a tile. A sample of the 2-D kernel is inside the map when both
/// of its axes are; its four weights are the products `h_y * h_x`, `h_y * l_x`, `l_y * h_x`,
/// `l_y * l_x` of its axes' values (float32, as `bilinear_sample()` computes them) and its
/// four pixels combine the axes' low / high indices.
struct AxisSample {
  int low = 0, high = 0;  ///< map indices; after planning, offsets in the RoI's tile
  float l = 0.f, h = 0.f;
  bool inside = false;
};

inline AxisSample axis_sample(float v, int size) {
  AxisSample a;
  a.inside = v >= -1.0f && v <= float(size);  // NaN: outside
  if (!a.inside) return a;
  if (v <= 0.f) v = 0.f;
  a.low = int(v);
  if (a.low >= size - 1) {
    a.high = a.low = size - 1;
    v = float(a.low);
  } else {
    a.high = a.low + 1;
  }
  a.l = v - float(a.low);
  a.h = float(1. - double(a.l));  // `1. - l`: double, as in the kernel
  return a;
}

/// The four bilinear taps of the 2-D sample (y, x): pointers `base + row offset + column
/// offset` and weights `h_y * h_x`, `h_y * l_x`, `l_y * h_x`, `l_y * l_x` (float32, as
/// `bilinear_sample()` computes them). A sample outside the map reads `outside` (the map's
/// pixel (0, 0)) four times with weight 0, as the kernel does. `Axis`: AxisSample (offsets
/// into a tile) or any type with the same members.
struct BilinearTaps {
  const float *p1, *p2, *p3, *p4;
  float w1, w2, w3, w4;
};

template <class Axis>
[[gnu::always_inline]] inline BilinearTaps bilinear_taps(const Axis& y, const Axis& x,
                                                         const float* base, const float* outside) {
  if (!(y.inside && x.inside)) return {outside, outside, outside, outside, 0.f, 0.f, 0.f, 0.f};
  return {base + (y.low + x.low), base + (y.low + x.high), base + (y.high + x.low),
          base + (y.high + x.high), y.h * x.h,  y.h * x.l, y.l * x.h, y.l * x.l};
}

/// The `pooled * grid` samples of one axis, in (p, i) order, and the range of map indices
/// the inside ones read; returns false when none is inside.
inline bool axis_samples(float start, float bin, int grid, int pooled, int size, AxisSample* out,
                         int& first, int& last) {
  first = size;
  last = -1;
  for (int p = 0; p < pooled; ++p)
    for (int i = 0; i < grid; ++i) {
      const AxisSample a = axis_sample(roi_align_coord(start, p, bin, i, grid), size);
      out[p * grid + i] = a;
      if (a.inside) {
        first = std::min(first, a.low);
        last = std::max(last, a.high);
      }
    }
  return last >= first;
}

/// What the tiled / SIMD policies precompute per RoI: its geometry and the window of its map that its
/// samples read (rows y0 .. y0 + rows - 1, columns x0 .. x0 + cols - 1; empty when no
/// sample is inside the map). `direct`: too many samples or too large a window for the
/// policy's fixed-size scratch; pooled straight from the map instead (`pool_roi_channels`).
struct RoIAlignPlan {
  RoIAlignGeometry g;
  int level = 0;
  int y0 = 0, x0 = 0, rows = 0, cols = 0;
  bool direct = false;
  std::size_t pixels() const { return std::size_t(rows) * std::size_t(cols); }
};

/// Plans every RoI (`plans[r]`) and orders them (`order`: level, then window row, then
/// column, so that neighbouring RoIs share cached rows). A RoI is `direct` when its per-axis
/// samples exceed `max_axis_samples` or its window exceeds `max_window_pixels`. `scratch`
/// holds at least `max_axis_samples` entries. Pre: `plans.size() == order.size() ==
/// rois.size()`, inputs checked. O(R * P * grid + R log R); no allocation.
inline void plan_rois(std::span<const FeatureMap> maps, std::span<const float> spatial_scales,
                      std::span<const Box> rois, std::span<const int> levels,
                      const PoolerConfig& cfg, std::size_t max_axis_samples,
                      std::size_t max_window_pixels, AxisSample* scratch,
                      std::span<RoIAlignPlan> plans, std::span<int> order) {
  const std::size_t R = rois.size();
  const int pooled = cfg.resolution;
  for (std::size_t r = 0; r < R; ++r) {
    RoIAlignPlan& p = plans[r];
    p = {};
    p.level = levels[r];
    p.g = roi_align_geometry(rois[r], spatial_scales[std::size_t(p.level)], pooled,
                             cfg.sampling_ratio, cfg.aligned);
    if (p.g.grid_h <= 0 || p.g.grid_w <= 0) continue;
    if (std::size_t(pooled) * (std::size_t(p.g.grid_h) + std::size_t(p.g.grid_w)) >
        max_axis_samples) {
      p.direct = true;
      continue;
    }
    const FeatureMap& map = maps[std::size_t(p.level)];
    int y_first, y_last, x_first, x_last;
    const bool in_y = axis_samples(p.g.start_h, p.g.bin_h, p.g.grid_h, pooled, map.height,
                                   scratch, y_first, y_last);
    const bool in_x = axis_samples(p.g.start_w, p.g.bin_w, p.g.grid_w, pooled, map.width,
                                   scratch, x_first, x_last);
    if (in_y && in_x) {
      p.y0 = y_first;
      p.x0 = x_first;
      p.rows = y_last - y_first + 1;
      p.cols = x_last - x_first + 1;
    }
    p.direct = p.pixels() > max_window_pixels;
  }
  for (std::size_t r = 0; r < R; ++r) order[r] = int(r);
  const RoIAlignPlan* pl = plans.data();
  std::sort(order.begin(), order.end(), [pl](int a, int b) {
    const RoIAlignPlan& pa = pl[a];
    const RoIAlignPlan& pb = pl[b];
    if (pa.level != pb.level) return pa.level < pb.level;
    if (pa.y0 != pb.y0) return pa.y0 < pb.y0;
    if (pa.x0 != pb.x0) return pa.x0 < pb.x0;
    return a < b;
  });
}

}  // namespace rcnn::detail
