#pragma once
/// \file roi_align_ref.hpp
/// Reference multi-level RoIAlign: torchvision 0.14's CPU `roi_align` forward, per RoI.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <string>

#include "../config.hpp"
#include "../error.hpp"
#include "../types.hpp"

namespace rcnn {

namespace detail {

/// Per-RoI sampling geometry of torchvision's `roi_align` forward kernel (float32, the
/// kernel's operation order).
struct RoIAlignGeometry {
  float start_h = 0.f, start_w = 0.f;  ///< roi_start in feature-map pixels
  float bin_h = 0.f, bin_w = 0.f;      ///< bin size
  int grid_h = 0, grid_w = 0;          ///< samples per bin and axis (<= 0: no samples)
  float count = 1.f;                   ///< divisor: max(grid_h * grid_w, 1)
};

/// Adaptive samples per bin along one axis, `int(ceil(roi_size / pooled))` as the kernel
/// computes it. A NaN or out-of-int-range value (non-finite or absurd RoI, undefined
/// behaviour in the kernel) gives 0: no samples.
inline int adaptive_grid(float roi_size, int pooled) {
  const float q = std::ceil(roi_size / float(pooled));
  return (q > -2147483648.f && q < 2147483648.f) ? int(q) : 0;
}

inline RoIAlignGeometry roi_align_geometry(const Box& roi, float spatial_scale, int pooled,
                                           int sampling_ratio, bool aligned) {
  RoIAlignGeometry g;
  const float offset = aligned ? 0.5f : 0.f;
  g.start_w = roi.x1 * spatial_scale - offset;
  g.start_h = roi.y1 * spatial_scale - offset;
  const float end_w = roi.x2 * spatial_scale - offset;
  const float end_h = roi.y2 * spatial_scale - offset;
  float roi_w = end_w - g.start_w;
  float roi_h = end_h - g.start_h;
  if (!aligned) {
    roi_w = std::max(roi_w, 1.f);
    roi_h = std::max(roi_h, 1.f);
  }
  g.bin_h = roi_h / float(pooled);
  g.bin_w = roi_w / float(pooled);
  g.grid_h = sampling_ratio > 0 ? sampling_ratio : adaptive_grid(roi_h, pooled);
  g.grid_w = sampling_ratio > 0 ? sampling_ratio : adaptive_grid(roi_w, pooled);
  g.count = float(std::max(g.grid_h * g.grid_w, 1));
  return g;
}

/// Sample coordinate along one axis: start + p * bin + (i + .5f) * bin / grid.
inline float roi_align_coord(float start, int p, float bin, int i, int grid) {
  return start + float(p) * bin + float(i + .5f) * bin / float(grid);
}

/// One bilinear sample: four flat positions in the H x W plane and their weights. An
/// out-of-map sample has all positions 0 and all weights 0, as in the kernel.
struct BilinearSample {
  int pos1 = 0, pos2 = 0, pos3 = 0, pos4 = 0;
  float w1 = 0.f, w2 = 0.f, w3 = 0.f, w4 = 0.f;
};

/// Bilinear sample at (y, x) of an H x W map, the kernel's `pre_calc` entry. The range test
/// is the kernel's `y < -1 || y > H || x < -1 || x > W` written so that a NaN coordinate
/// also counts as outside (the kernel would cast NaN to int: undefined).
inline BilinearSample bilinear_sample(float y, float x, int height, int width) {
  BilinearSample s;
  if (!(y >= -1.0f && y <= float(height) && x >= -1.0f && x <= float(width))) return s;
  if (y <= 0.f) y = 0.f;
  if (x <= 0.f) x = 0.f;
  int y_low = int(y), x_low = int(x), y_high, x_high;
  if (y_low >= height - 1) {
    y_high = y_low = height - 1;
    y = float(y_low);
  } else {
    y_high = y_low + 1;
  }
  if (x_low >= width - 1) {
    x_high = x_low = width - 1;
    x = float(x_low);
  } else {
    x_high = x_low + 1;
  }
  const float ly = y - float(y_low), lx = x - float(x_low);
  const float hy = float(1. - double(ly)), hx = float(1. - double(lx));  // `1. - l`: double
  s.w1 = hy * hx;
  s.w2 = hy * lx;
  s.w3 = ly * hx;
  s.w4 = ly * lx;
  s.pos1 = y_low * width + x_low;
  s.pos2 = y_low * width + x_high;
  s.pos3 = y_high * width + x_low;
  s.pos4 = y_high * width + x_high;
  return s;
}

/// `acc + (w1*v1 + w2*v2 + w3*v3 + w4*v4)`, the kernel's accumulation step, on one channel
/// whose pixel p is `channel[p * pixel_stride]` (1 for NCHW maps, C for NHWC).
inline float accumulate_sample(float acc, const BilinearSample& s, const float* channel,
                               std::size_t pixel_stride) {
  const auto v = [&](int pos) { return channel[std::size_t(pos) * pixel_stride]; };
  return acc + (s.w1 * v(s.pos1) + s.w2 * v(s.pos2) + s.w3 * v(s.pos3) + s.w4 * v(s.pos4));
}

/// out[c * P * P ..] for channels [c_begin, c_end) of one RoI, straight from the map (either
/// layout): the kernel's loop, sample weights recomputed per channel.
inline void pool_roi_channels(const FeatureMap& map, const RoIAlignGeometry& g, int pooled,
                              int c_begin, int c_end, float* out) {
  const std::size_t bins = std::size_t(pooled) * std::size_t(pooled);
  const std::size_t ps = map.pixel_stride();
  for (int c = c_begin; c < c_end; ++c) {
    const float* channel = map.data + std::size_t(c) * map.channel_stride();
    float* o = out + std::size_t(c) * bins;
    for (int ph = 0; ph < pooled; ++ph) {
      for (int pw = 0; pw < pooled; ++pw) {
        float acc = 0.f;
        for (int iy = 0; iy < g.grid_h; ++iy) {
          const float y = roi_align_coord(g.start_h, ph, g.bin_h, iy, g.grid_h);
          for (int ix = 0; ix < g.grid_w; ++ix) {
            const float x = roi_align_coord(g.start_w, pw, g.bin_w, ix, g.grid_w);
            acc = accumulate_sample(acc, bilinear_sample(y, x, map.height, map.width), channel,
                                    ps);
          }
        }
        o[std::size_t(ph) * std::size_t(pooled) + std::size_t(pw)] = acc / g.count;
      }
    }
  }
}

/// Checks the arguments of a multi-level RoIAlign call; throws rcnn::Error.
inline void check_roi_align_inputs(std::span<const FeatureMap> maps,
                                   std::span<const float> spatial_scales,
                                   std::span<const Box> rois, std::span<const int> levels,
                                   const PoolerConfig& cfg, std::span<float> out,
                                   const char* who) {
  const std::string w(who);
  if (maps.empty() && !rois.empty()) fail(w + ": no feature maps");
  if (spatial_scales.size() != maps.size())
    fail(w + ": " + std::to_string(spatial_scales.size()) + " spatial scales for " +
         std::to_string(maps.size()) + " feature maps");
  if (levels.size() != rois.size())
    fail(w + ": " + std::to_string(levels.size()) + " levels for " +
         std::to_string(rois.size()) + " RoIs");
  if (cfg.resolution <= 0) fail(w + ": resolution " + std::to_string(cfg.resolution) + " <= 0");
  const int channels = maps.empty() ? 0 : maps[0].channels;
  for (std::size_t l = 0; l < maps.size(); ++l) {
    if (maps[l].channels != channels)
      fail(w + ": feature map " + std::to_string(l) + " has " +
           std::to_string(maps[l].channels) + " channels, expected " + std::to_string(channels));
    if (maps[l].height <= 0 || maps[l].width <= 0 || (maps[l].data == nullptr && channels > 0))
      fail(w + ": feature map " + std::to_string(l) + " is empty (" +
           std::to_string(maps[l].height) + " x " + std::to_string(maps[l].width) + ")");
  }
  const std::size_t expected =
      rois.size() * std::size_t(channels) * std::size_t(cfg.resolution) * cfg.resolution;
  if (out.size() != expected)
    fail(w + ": output holds " + std::to_string(out.size()) + " floats, expected " +
         std::to_string(expected) + " (R * C * P * P)");
  for (std::size_t r = 0; r < levels.size(); ++r)
    if (levels[r] < 0 || std::size_t(levels[r]) >= maps.size())
      fail(w + ": RoI " + std::to_string(r) + " has level " + std::to_string(levels[r]) +
           ", expected 0.." + std::to_string(int(maps.size()) - 1));
}

}  // namespace detail

/// Reference multi-level RoIAlign (torchvision 0.14 CPU `roi_align` forward, float32).
///
/// maps: one FeatureMap per RoI level (same channel count; NCHW or NHWC, see `Layout`; the
/// layout changes only where values are read, not the arithmetic); spatial_scales: 1/stride per
/// level (float, as the kernel casts it); rois: boxes in the image frame; levels: level index
/// per RoI (from `assign_levels`); out: [R, C, P, P] contiguous, P = cfg.resolution (fully
/// written, no need to pre-zero). Uses cfg.resolution, cfg.sampling_ratio (<= 0: adaptive,
/// ceil(roi_size / P)) and cfg.aligned (half-pixel offset; when false RoI sides are forced
/// to >= 1).
///
/// Per RoI and channel, each output bin is `(sum over samples iy, ix of
/// (w1*v1 + w2*v2 + w3*v3 + w4*v4)) / count`, accumulated in the kernel's order. RoIs with a
/// non-positive sample grid (empty or inverted boxes with aligned = true) give 0, as in the
/// kernel. Where the kernel has undefined behaviour (NaN RoI coordinates, adaptive grids
/// beyond int range) samples count as outside the map, so such RoIs give 0 too.
/// Errors: rcnn::Error on mismatched sizes or a level outside [0, maps.size()).
///
/// Cost: O(R * C * P^2 * grid^2); the sample weights are recomputed for every channel
/// (this is the plain reference; OmpRoIAlign shares them). No allocation; thread-safe.
struct RoIAlignRef {
  void reserve(std::size_t) {}  ///< stateless: nothing to size

  void operator()(std::span<const FeatureMap> maps, std::span<const float> spatial_scales,
                  std::span<const Box> rois, std::span<const int> levels,
                  const PoolerConfig& cfg, std::span<float> out) const {
    detail::check_roi_align_inputs(maps, spatial_scales, rois, levels, cfg, out, "RoIAlignRef");
    const int pooled = cfg.resolution;
    const std::size_t bins = std::size_t(pooled) * pooled;
    for (std::size_t r = 0; r < rois.size(); ++r) {
      const FeatureMap& map = maps[std::size_t(levels[r])];
      const detail::RoIAlignGeometry g = detail::roi_align_geometry(
          rois[r], spatial_scales[std::size_t(levels[r])], pooled, cfg.sampling_ratio,
          cfg.aligned);
      detail::pool_roi_channels(map, g, pooled, 0, map.channels,
                                out.data() + r * std::size_t(map.channels) * bins);
    }
  }
};

}  // namespace rcnn
