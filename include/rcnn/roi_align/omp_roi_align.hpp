#pragma once
/// \file omp_roi_align.hpp
/// OpenMP multi-level RoIAlign, bit-identical to RoIAlignRef (needs rcnn::omp / -fopenmp).

#ifndef _OPENMP
#error "rcnn/roi_align/omp_roi_align.hpp needs OpenMP: link rcnn::omp (or compile with -fopenmp)"
#endif

#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <span>
#include <vector>

#include "../config.hpp"
#include "../types.hpp"
#include "roi_align_plan.hpp"
#include "roi_align_ref.hpp"

namespace rcnn {

namespace detail {

/// dst[x * 8 + j] = src[j * plane + x] for x < n, j < 8: one row of 8 channel planes,
/// interleaved. (Measured: faster than 4 x 4 SSE transposes of unaligned rows here.)
inline void interleave8(const float* src, std::size_t plane, int n, float* dst) {
  for (int x = 0; x < n; ++x)
    for (std::size_t j = 0; j < 8; ++j) dst[std::size_t(x) * 8 + j] = src[j * plane + std::size_t(x)];
}

}  // namespace detail

/// Scratch of `OmpRoIAlign`: one plan per RoI and the processing order (grown to the most
/// RoIs seen, or set up front with `OmpRoIAlign::reserve`), and per thread a fixed-size tile
/// and per-axis sample buffer (allocated once per thread count).
struct OmpRoIAlignWorkspace {
  std::vector<detail::RoIAlignPlan> plans;
  std::vector<int> order;
  std::vector<std::vector<float>> tiles;                // per thread
  std::vector<std::vector<detail::AxisSample>> axes;  // per thread
};

/// Multi-level RoIAlign parallelised with OpenMP; same contract and bit-identical output as
/// `RoIAlignRef` (the same float operations on the same values in the same order; only the
/// loop nesting and the memory layout differ).
///
/// Plan (serial, O(R * P * grid)): per RoI, its geometry and the window of the map its
/// samples read; RoIs are then ordered by level and window position, so that consecutive
/// RoIs read overlapping, cache-resident rows.
/// Pool: channels are processed in groups of 8 and, within a group, RoI after RoI in that
/// order. Per RoI, the sample coordinates are computed once per axis (P * grid_h y values,
/// P * grid_w x values; a 2-D sample's weights and pixels are products and combinations of
/// its two axes' values, exactly as `bilinear_sample()` computes them), and the RoI's window
/// of the group's 8 planes (plus pixel (0, 0), which the kernel reads with weight 0 for
/// samples outside the map) is copied into a small tile with the 8 channels interleaved, so
/// each sample reads 4 contiguous 8-float vectors; the 8 accumulators (each summed in the
/// kernel's order) vectorise, and each output plane is written contiguously. Memory traffic
/// is about one pass over the 8 planes of a level per group instead of one window per RoI
/// and channel from anywhere in the maps. A RoI whose window exceeds the tile (`kTilePixels`)
/// or whose samples exceed `kMaxAxisSamples` (only RoIs far larger than their map) is pooled
/// straight from the map, as RoIAlignRef does.
/// Layouts: NCHW maps (above) and NHWC maps (the group's 8 channels of a pixel are already
/// contiguous: copied as they are); `SimdRoIAlign` is the faster choice for NHWC maps.
/// Work split: (channel group, RoI range) items, dynamically scheduled; RoI ranges are cut
/// only when there are fewer groups than threads. `num_threads` goes to the `num_threads`
/// clause of the parallel region (values < 1 mean 1); the global OpenMP thread count is
/// never changed.
///
/// Cost: O(R * C * P^2 * grid^2) multiply-adds + O(R * C * window) copies (window <= the
/// RoI's extent in the map + 2 rows and columns) + an O(R log R) sort. Memory: 32 bytes per
/// RoI, and per thread a 128 KiB tile and 40 KiB of axis samples. No heap allocation once
/// the RoI count has been seen (or reserved) and the thread count has not grown.
/// Thread-safety: stateful (mutable workspace): use one instance per calling thread.
struct OmpRoIAlign {
  int num_threads = 1;
  mutable OmpRoIAlignWorkspace ws{};

  /// Tile capacity in pixels (of 8 channels each), the (0, 0) pixel included.
  static constexpr std::size_t kTilePixels = 4096;
  /// Per-axis sample capacity of one RoI: P * (grid_h + grid_w).
  static constexpr std::size_t kMaxAxisSamples = 2048;

  /// Sizes the workspace for calls with up to `rois` RoIs (and the current thread count).
  void reserve(std::size_t rois) const {
    ws.plans.reserve(rois);
    ws.order.reserve(rois);
    reserve_threads(std::size_t(std::max(num_threads, 1)));
  }

  void operator()(std::span<const FeatureMap> maps, std::span<const float> spatial_scales,
                  std::span<const Box> rois, std::span<const int> levels,
                  const PoolerConfig& cfg, std::span<float> out) const {
    detail::check_roi_align_inputs(maps, spatial_scales, rois, levels, cfg, out, "OmpRoIAlign");
    const int threads = std::max(num_threads, 1);
    const std::size_t R = rois.size();
    if (R == 0) return;
    // Everything is sized before the parallel region: nothing is allocated inside.
    reserve_threads(std::size_t(threads));
    plan(maps, spatial_scales, rois, levels, cfg);
    const int channels = maps[0].channels;
    const int groups = (channels + kGroup - 1) / kGroup;
    const int chunks = int(std::min<std::size_t>(R, std::size_t(std::max(1, (threads + groups - 1) / groups))));
    const int items = groups * chunks;
    const int pooled = cfg.resolution;
    const auto run_item = [&](int item, std::size_t t) {
      float* tile = ws.tiles[t].data();
      detail::AxisSample* axes = ws.axes[t].data();
      const int grp = item / chunks, chunk = item % chunks;
      const std::size_t first = R * std::size_t(chunk) / std::size_t(chunks);
      const std::size_t last = R * std::size_t(chunk + 1) / std::size_t(chunks);
      for (std::size_t k = first; k < last; ++k) {
        const std::size_t r = std::size_t(ws.order[k]);
        const detail::RoIAlignPlan& p = ws.plans[r];
        const FeatureMap& map = maps[std::size_t(p.level)];
        if (p.direct)
          pool_group_direct(map, p.g, pooled, r, grp, out);
        else
          pool_group(map, p, pooled, axes, tile, r, grp, out);
      }
    };
    if (threads == 1) {
      // No parallel region: no OpenMP overhead, and the OpenMP runtime's cached thread team
      // (reused only by regions of the same size) is left to the multi-threaded callers.
      for (int item = 0; item < items; ++item) run_item(item, 0);
      return;
    }
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int item = 0; item < items; ++item) run_item(item, std::size_t(omp_get_thread_num()));
  }

 private:
  /// Channels pooled together: one pass over a RoI's samples serves the group.
  static constexpr int kGroup = 8;

  void reserve_threads(std::size_t sets) const {
    if (ws.tiles.size() < sets) ws.tiles.resize(sets);
    if (ws.axes.size() < sets) ws.axes.resize(sets);
    for (std::size_t t = 0; t < sets; ++t) {
      if (ws.tiles[t].size() < kTilePixels * kGroup) ws.tiles[t].resize(kTilePixels * kGroup);
      if (ws.axes[t].size() < kMaxAxisSamples) ws.axes[t].resize(kMaxAxisSamples);
    }
  }

  /// Fills ws.plans and ws.order (grown to R when needed).
  void plan(std::span<const FeatureMap> maps, std::span<const float> spatial_scales,
            std::span<const Box> rois, std::span<const int> levels,
            const PoolerConfig& cfg) const {
    const std::size_t R = rois.size();
    if (ws.plans.size() < R) ws.plans.resize(R);
    if (ws.order.size() < R) ws.order.resize(R);
    detail::plan_rois(maps, spatial_scales, rois, levels, cfg, kMaxAxisSamples, kTilePixels - 1,
                      ws.axes[0].data(), std::span(ws.plans.data(), R),
                      std::span(ws.order.data(), R));
  }

  /// out[r, c0 .. c0 + 7, :, :] (fewer for the last group) of a RoI pooled from its tile.
  static void pool_group(const FeatureMap& map, const detail::RoIAlignPlan& p, int pooled,
                         detail::AxisSample* axes, float* tile, std::size_t r, int group,
                         std::span<float> out) {
    const std::size_t bins = std::size_t(pooled) * std::size_t(pooled);
    const int c0 = group * kGroup;
    const int nc = std::min(kGroup, map.channels - c0);
    float* o = out.data() + (r * std::size_t(map.channels) + std::size_t(c0)) * bins;
    const detail::RoIAlignGeometry& g = p.g;
    if (g.grid_h <= 0 || g.grid_w <= 0) {  // no samples: 0 / count
      std::fill(o, o + std::size_t(nc) * bins, 0.f / g.count);
      return;
    }
    // Per-axis samples, their indices turned into offsets (floats) into the tile. Outside
    // samples are never read through these (they read the (0, 0) pixel after the window).
    detail::AxisSample* ys = axes;
    detail::AxisSample* xs = axes + std::size_t(pooled) * std::size_t(g.grid_h);
    int unused_first, unused_last;
    detail::axis_samples(g.start_h, g.bin_h, g.grid_h, pooled, map.height, ys, unused_first,
                         unused_last);
    detail::axis_samples(g.start_w, g.bin_w, g.grid_w, pooled, map.width, xs, unused_first,
                         unused_last);
    for (int i = 0; i < pooled * g.grid_h; ++i) {
      ys[i].low = (ys[i].low - p.y0) * p.cols * kGroup;
      ys[i].high = (ys[i].high - p.y0) * p.cols * kGroup;
    }
    for (int i = 0; i < pooled * g.grid_w; ++i) {
      xs[i].low = (xs[i].low - p.x0) * kGroup;
      xs[i].high = (xs[i].high - p.x0) * kGroup;
    }
    // The window (and pixel (0, 0)) of the group's channels, interleaved: tile pixel
    // (y, x) holds the 8 channels at (y0 + y, x0 + x).
    // NHWC maps: the group's channels of a pixel are already contiguous (one copy per pixel).
    const std::size_t cs = map.channel_stride(), ps = map.pixel_stride();
    const float* base = map.data + std::size_t(c0) * cs;
    for (int y = 0; y < p.rows; ++y) {
      float* dst = tile + std::size_t(y) * std::size_t(p.cols) * kGroup;
      const std::size_t row = std::size_t(p.y0 + y) * std::size_t(map.width) + std::size_t(p.x0);
      if (nc == kGroup && map.layout == Layout::nchw) {
        detail::interleave8(base + row, cs, p.cols, dst);
      } else {
        for (int x = 0; x < p.cols; ++x) {
          const float* src = base + (row + std::size_t(x)) * ps;
          for (int j = 0; j < kGroup; ++j)
            dst[std::size_t(x) * kGroup + std::size_t(j)] = j < nc ? src[std::size_t(j) * cs] : 0.f;
        }
      }
    }
    const float* corner = tile + p.pixels() * kGroup;
    for (int j = 0; j < kGroup; ++j)
      tile[p.pixels() * kGroup + std::size_t(j)] = j < nc ? base[std::size_t(j) * cs] : 0.f;

    for (int ph = 0; ph < pooled; ++ph)
      for (int pw = 0; pw < pooled; ++pw) {
        float acc[kGroup] = {};
        for (int iy = 0; iy < g.grid_h; ++iy) {
          const detail::AxisSample& y = ys[ph * g.grid_h + iy];
          for (int ix = 0; ix < g.grid_w; ++ix) {
            const detail::AxisSample& x = xs[pw * g.grid_w + ix];
            const detail::BilinearTaps t = detail::bilinear_taps(y, x, tile, corner);
            // The kernel's step, `acc + (w1*v1 + w2*v2 + w3*v3 + w4*v4)`, per channel.
            for (int j = 0; j < kGroup; ++j)
              acc[j] = acc[j] + (t.w1 * t.p1[j] + t.w2 * t.p2[j] + t.w3 * t.p3[j] + t.w4 * t.p4[j]);
          }
        }
        const std::size_t b = std::size_t(ph) * std::size_t(pooled) + std::size_t(pw);
        for (int j = 0; j < kGroup; ++j) acc[j] = acc[j] / g.count;  // all 8: one vector op
        for (int j = 0; j < nc; ++j) o[std::size_t(j) * bins + b] = acc[j];
      }
  }

  /// The same, straight from the map (RoIs too large for the tile): RoIAlignRef's loop.
  static void pool_group_direct(const FeatureMap& map, const detail::RoIAlignGeometry& g,
                                int pooled, std::size_t r, int group, std::span<float> out) {
    const std::size_t bins = std::size_t(pooled) * std::size_t(pooled);
    const int c0 = group * kGroup;
    detail::pool_roi_channels(map, g, pooled, c0, std::min(c0 + kGroup, map.channels),
                              out.data() + r * std::size_t(map.channels) * bins);
  }
};

}  // namespace rcnn
