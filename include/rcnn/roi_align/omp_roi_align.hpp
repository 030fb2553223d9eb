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
#include "roi_align_ref.hpp"

namespace rcnn {

/// Scratch of `OmpRoIAlign`: one bilinear-sample table per thread, each grown (before the
/// parallel region) to the largest RoI seen (P * P * grid_h * grid_w entries) and then reused.
struct OmpRoIAlignWorkspace {
  std::vector<std::vector<detail::BilinearSample>> tables;
};

/// Multi-level RoIAlign parallelised with OpenMP; same contract and bit-identical output as
/// `RoIAlignRef` (same float operations in the same order; only the loop nesting differs).
///
/// Per RoI, the bilinear sample table (four positions and four weights per sample, the
/// kernel's `pre_calc`) is built once and shared by all channels. Channels are pooled in
/// groups of 8: one pass over the table serves the group, with one accumulator per channel
/// (each summed in the kernel's order, so results stay bit-identical), and each output
/// plane is written contiguously. Work split: with at least 4 RoIs per thread the threads
/// take whole RoIs (dynamic schedule: RoIs differ in cost), each with its own table;
/// otherwise the RoIs are processed one after another and their channel groups are split
/// across the threads. `num_threads` goes to the `num_threads` clause of each parallel
/// region (values < 1 mean 1); the global OpenMP thread count is never changed.
///
/// Cost: O(R * C * P^2 * grid^2) multiply-adds + O(R * P^2 * grid^2) table entries.
/// No heap allocation once every thread's table has grown to the largest RoI seen.
/// Thread-safety: stateful (mutable workspace): use one instance per calling thread.
struct OmpRoIAlign {
  int num_threads = 1;
  mutable OmpRoIAlignWorkspace ws{};

  void operator()(std::span<const FeatureMap> maps, std::span<const float> spatial_scales,
                  std::span<const Box> rois, std::span<const int> levels,
                  const PoolerConfig& cfg, std::span<float> out) const {
    detail::check_roi_align_inputs(maps, spatial_scales, rois, levels, cfg, out, "OmpRoIAlign");
    const int threads = std::max(num_threads, 1);
    const long num_rois = long(rois.size());
    if (num_rois == 0) return;
    const int groups = (maps[0].channels + kChannelGroup - 1) / kChannelGroup;
    // Size every thread's table for the largest RoI of this call, before any parallel
    // region: whichever thread takes whichever RoI, nothing is allocated inside.
    std::size_t need = 0;
    for (std::size_t r = 0; r < rois.size(); ++r) {
      const detail::RoIAlignGeometry g =
          detail::roi_align_geometry(rois[r], spatial_scales[std::size_t(levels[r])],
                                     cfg.resolution, cfg.sampling_ratio, cfg.aligned);
      if (g.grid_h > 0 && g.grid_w > 0)
        need = std::max(need, std::size_t(g.grid_h) * std::size_t(g.grid_w));
    }
    need *= std::size_t(cfg.resolution) * std::size_t(cfg.resolution);
    if (ws.tables.size() < std::size_t(threads)) ws.tables.resize(std::size_t(threads));
    for (int t = 0; t < threads; ++t)
      if (ws.tables[std::size_t(t)].size() < need) ws.tables[std::size_t(t)].resize(need);
    if (threads == 1 || num_rois >= 4L * threads) {
#pragma omp parallel num_threads(threads)
      {
        std::vector<detail::BilinearSample>& table =
            ws.tables[std::size_t(omp_get_thread_num())];
#pragma omp for schedule(dynamic, 1)
        for (long r = 0; r < num_rois; ++r) {
          const detail::RoIAlignGeometry g = prepare(maps, spatial_scales, rois, levels, cfg,
                                                     std::size_t(r), table);
          const FeatureMap& map = maps[std::size_t(levels[std::size_t(r)])];
          for (int grp = 0; grp < groups; ++grp)
            pool_channels(map, g, cfg, table, std::size_t(r), grp, out);
        }
      }
    } else {
      std::vector<detail::BilinearSample>& table = ws.tables[0];
      for (long r = 0; r < num_rois; ++r) {
        const detail::RoIAlignGeometry g =
            prepare(maps, spatial_scales, rois, levels, cfg, std::size_t(r), table);
        const FeatureMap& map = maps[std::size_t(levels[std::size_t(r)])];
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int grp = 0; grp < groups; ++grp)
          pool_channels(map, g, cfg, table, std::size_t(r), grp, out);
      }
    }
  }

 private:
  /// Geometry of RoI r and its sample table, in the kernel's (ph, pw, iy, ix) order.
  static detail::RoIAlignGeometry prepare(std::span<const FeatureMap> maps,
                                          std::span<const float> spatial_scales,
                                          std::span<const Box> rois, std::span<const int> levels,
                                          const PoolerConfig& cfg, std::size_t r,
                                          std::vector<detail::BilinearSample>& table) {
    const std::size_t level = std::size_t(levels[r]);
    const FeatureMap& map = maps[level];
    const int pooled = cfg.resolution;
    const detail::RoIAlignGeometry g = detail::roi_align_geometry(
        rois[r], spatial_scales[level], pooled, cfg.sampling_ratio, cfg.aligned);
    if (g.grid_h <= 0 || g.grid_w <= 0) return g;
    detail::BilinearSample* t = table.data();  // sized by operator() for every RoI
    for (int ph = 0; ph < pooled; ++ph)
      for (int pw = 0; pw < pooled; ++pw)
        for (int iy = 0; iy < g.grid_h; ++iy) {
          const float y = detail::roi_align_coord(g.start_h, ph, g.bin_h, iy, g.grid_h);
          for (int ix = 0; ix < g.grid_w; ++ix) {
            const float x = detail::roi_align_coord(g.start_w, pw, g.bin_w, ix, g.grid_w);
            *t++ = detail::bilinear_sample(y, x, map.height, map.width);
          }
        }
    return g;
  }

  /// Channels are pooled in groups of this many: each table entry is read once per group,
  /// and the group's accumulators (one per channel, each in the kernel's order) vectorise.
  static constexpr int kChannelGroup = 8;

  /// out[r, c0 .. c0 + G - 1, :, :] from the sample table of RoI r.
  template <int G>
  static void pool_group(const FeatureMap& map, const detail::RoIAlignGeometry& g, int pooled,
                         const detail::BilinearSample* table, std::size_t r, int c0,
                         float* out) {
    const std::size_t bins = std::size_t(pooled) * pooled;
    const std::size_t plane = std::size_t(map.height) * map.width;
    const float* base = map.data + std::size_t(c0) * plane;
    float* o = out + (r * std::size_t(map.channels) + std::size_t(c0)) * bins;
    const std::size_t per_bin = std::size_t(g.grid_h) * std::size_t(g.grid_w);
    const detail::BilinearSample* t = table;
    for (std::size_t b = 0; b < bins; ++b) {
      float acc[G] = {};
      for (std::size_t k = 0; k < per_bin; ++k, ++t) {
        const detail::BilinearSample smp = *t;
        for (int j = 0; j < G; ++j) acc[j] = detail::accumulate_sample(acc[j], smp, base + j * plane);
      }
      for (int j = 0; j < G; ++j) o[std::size_t(j) * bins + b] = acc[j] / g.count;
    }
  }

  /// Channel group `group` (kChannelGroup channels, fewer for the last) of RoI r.
  static void pool_channels(const FeatureMap& map, const detail::RoIAlignGeometry& g,
                            const PoolerConfig& cfg,
                            const std::vector<detail::BilinearSample>& table, std::size_t r,
                            int group, std::span<float> out) {
    const int pooled = cfg.resolution;
    const int c0 = group * kChannelGroup;
    const int nc = std::min(kChannelGroup, map.channels - c0);
    if (g.grid_h <= 0 || g.grid_w <= 0) {  // no samples: 0 / count
      const std::size_t bins = std::size_t(pooled) * pooled;
      float* o = out.data() + (r * std::size_t(map.channels) + std::size_t(c0)) * bins;
      std::fill(o, o + std::size_t(nc) * bins, 0.f / g.count);
      return;
    }
    if (nc == kChannelGroup) {
      pool_group<kChannelGroup>(map, g, pooled, table.data(), r, c0, out.data());
    } else {
      for (int c = c0; c < c0 + nc; ++c) pool_group<1>(map, g, pooled, table.data(), r, c, out.data());
    }
  }
};

}  // namespace rcnn
