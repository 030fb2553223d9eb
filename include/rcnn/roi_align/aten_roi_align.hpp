#pragma once
/// \file aten_roi_align.hpp
/// `AtenRoIAlign`: multi-level RoIAlign written with ATen tensor operations (gather-based
/// bilinear sampling), so it runs wherever the feature maps are: CPU tensors, or CUDA tensors
/// on a CUDA LibTorch (e.g. CudaExec::device_features()). Link rcnn::torch.
///
/// Semantics are RoIAlignRef's (torchvision 0.14 `roi_align` forward): same sampling geometry
/// in the same float32 operations (half-pixel offset when aligned, sides >= 1 when not,
/// adaptive grid ceil(size / P) or sampling_ratio, out-of-map samples zero, empty grids give
/// 0). Not bit-identical: the samples of a bin are summed by a tensor reduction instead of
/// one after another. Measured (tests/parity/test_deploy.cpp): max |difference| to RoIAlignRef
/// 7.6e-6 on the Detectron2 fixture's feature maps (1.9e-7 relative to the largest |feature|),
/// 3.6e-7 on random maps in [-3, 3]; the test asserts 1e-5 relative.

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "../config.hpp"
#include "../error.hpp"
#include "../exec/torch_exec_base.hpp"
#include "../types.hpp"
#include "roi_align_ref.hpp"

namespace rcnn {

/// RoIAlign with ATen operations. Two entry points:
///  - the rcnn::RoIAlignPolicy one (spans of host floats: the Detector's pipeline, tests);
///  - `pool(maps, scales, rois, levels, cfg)` on tensors of any one device, returning
///    [R, C, P, P] on that device.
/// Memory: RoIs are processed per level in chunks, sorted by sample-grid size, so that the
/// gathered samples of a chunk (C * n * P^2 * grid_h * grid_w floats) stay below
/// `max_chunk_elements` (one RoI at least).
/// Thread-safety: const and stateless; ATen's own intra-op threads do the work on the CPU
/// (`num_threads` > 0 sets them for the call).
struct AtenRoIAlign {
  std::int64_t max_chunk_elements = std::int64_t(1) << 22;
  int num_threads = 0;

  void reserve(std::size_t) {}  ///< LibTorch allocates its own tensors per call

  void operator()(std::span<const FeatureMap> maps, std::span<const float> spatial_scales,
                  std::span<const Box> rois, std::span<const int> levels,
                  const PoolerConfig& cfg, std::span<float> out) const {
    detail::check_roi_align_inputs(maps, spatial_scales, rois, levels, cfg, out, "AtenRoIAlign");
    if (rois.empty()) return;
    static_assert(sizeof(Box) == 4 * sizeof(float), "Box must be 4 packed floats");
    // ATen's errors (out of memory, device failures) leave as rcnn::Error.
    detail::torch_guarded("AtenRoIAlign", [&] {
      detail::IntraOpThreadsGuard threads(num_threads);
      c10::InferenceMode inference;
      const auto f32 = at::TensorOptions().dtype(at::kFloat);
      std::vector<at::Tensor> tmaps;
      for (const FeatureMap& m : maps)  // C x H x W with the map's strides (either layout)
        tmaps.push_back(at::from_blob(
            const_cast<float*>(m.data), {m.channels, m.height, m.width},
            {std::int64_t(m.channel_stride()), std::int64_t(m.width) * std::int64_t(m.pixel_stride()),
             std::int64_t(m.pixel_stride())},
            f32));
      const at::Tensor trois =
          at::from_blob(const_cast<Box*>(rois.data()), {std::int64_t(rois.size()), 4}, f32);
      const at::Tensor tlevels =
          at::from_blob(const_cast<int*>(levels.data()), {std::int64_t(levels.size())},
                        at::TensorOptions().dtype(at::kInt))
              .to(at::kLong);
      const at::Tensor pooled = pool(tmaps, spatial_scales, trois, tlevels, cfg);
      at::Tensor dst = at::from_blob(out.data(), pooled.sizes(), f32);
      dst.copy_(pooled);
    });
  }

  /// maps: one [C, H, W] float32 tensor per level (one image), all on one device;
  /// spatial_scales: 1/stride per level; rois: [R, 4] (x1, y1, x2, y2) in the image frame;
  /// levels: [R] integer level index per RoI. Returns [R, C, P, P] float32 on the maps'
  /// device. Errors: rcnn::Error on mismatched shapes or out-of-range levels.
  at::Tensor pool(const std::vector<at::Tensor>& maps, std::span<const float> spatial_scales,
                  const at::Tensor& rois, const at::Tensor& levels, const PoolerConfig& cfg) const {
    detail::require(!maps.empty(), "AtenRoIAlign: no feature maps");
    detail::require(spatial_scales.size() == maps.size(),
                    "AtenRoIAlign: " + std::to_string(spatial_scales.size()) +
                        " spatial scales for " + std::to_string(maps.size()) + " feature maps");
    detail::require(cfg.resolution > 0, "AtenRoIAlign: resolution <= 0");
    detail::require(rois.dim() == 2 && rois.size(1) == 4,
                    "AtenRoIAlign: rois has shape " + detail::shape_string(rois) + ", expected [R, 4]");
    detail::require(levels.dim() == 1 && levels.size(0) == rois.size(0),
                    "AtenRoIAlign: levels has shape " + detail::shape_string(levels) +
                        ", expected [" + std::to_string(rois.size(0)) + "]");
    const at::Device device = maps[0].device();
    const std::int64_t C = maps[0].size(0);
    for (std::size_t l = 0; l < maps.size(); ++l) {
      const at::Tensor& m = maps[l];
      detail::require(m.dim() == 3 && m.size(0) == C && m.scalar_type() == at::kFloat &&
                          m.device() == device && m.size(1) > 0 && m.size(2) > 0,
                      "AtenRoIAlign: feature map " + std::to_string(l) + " has shape " +
                          detail::shape_string(m) + ", expected float32 [" + std::to_string(C) +
                          ", H, W] on " + device.str());
    }
    const std::int64_t R = rois.size(0), P = cfg.resolution;
    at::Tensor out = at::zeros({R, C, P, P}, maps[0].options());
    if (R == 0) return out;
    const at::Tensor r_all = rois.to(device, at::kFloat).contiguous();
    const at::Tensor l_all = levels.to(device, at::kLong);
    const std::int64_t lo = l_all.min().item<std::int64_t>(), hi = l_all.max().item<std::int64_t>();
    detail::require(lo >= 0 && hi < std::int64_t(maps.size()),
                    "AtenRoIAlign: a RoI has level " + std::to_string(lo < 0 ? lo : hi) +
                        ", expected 0.." + std::to_string(maps.size() - 1));
    for (std::size_t l = 0; l < maps.size(); ++l) {
      const at::Tensor idx = (l_all == std::int64_t(l)).nonzero().squeeze(1);
      if (idx.numel() == 0) continue;
      out.index_copy_(0, idx, pool_level(maps[l].contiguous(), spatial_scales[l],
                                         r_all.index_select(0, idx), cfg));
    }
    return out;
  }

 private:
  /// Per axis of a sample grid: low / high indices, their weights, inside-the-map mask.
  struct Axis {
    at::Tensor low, high, l, h, inside;
  };

  /// The bilinear_sample() logic of roi_align_ref.hpp along one axis of size `size`.
  static Axis axis(at::Tensor y, std::int64_t size) {
    Axis a;
    a.inside = (y >= -1.0f).logical_and(y <= float(size));  // NaN: outside
    y = at::where(a.inside, y, at::zeros_like(y));
    y = at::where(y <= 0.0f, at::zeros_like(y), y);
    at::Tensor low = y.to(at::kLong);
    const at::Tensor last = low >= size - 1;
    a.high = at::where(last, at::full_like(low, size - 1), low + 1);
    a.low = at::where(last, at::full_like(low, size - 1), low);
    y = at::where(last, a.low.to(at::kFloat), y);
    a.l = y - a.low.to(at::kFloat);
    a.h = 1.0f - a.l;
    return a;
  }

  at::Tensor pool_level(const at::Tensor& map, float scale, const at::Tensor& rois,
                        const PoolerConfig& cfg) const {
    const std::int64_t C = map.size(0), H = map.size(1), W = map.size(2);
    const std::int64_t P = cfg.resolution, n_all = rois.size(0);
    const auto fopt = rois.options();
    // Geometry, in roi_align_geometry()'s float32 operations.
    const float offset = cfg.aligned ? 0.5f : 0.f;
    const at::Tensor sw = rois.select(1, 0) * scale - offset;
    const at::Tensor sh = rois.select(1, 1) * scale - offset;
    const at::Tensor ew = rois.select(1, 2) * scale - offset;
    const at::Tensor eh = rois.select(1, 3) * scale - offset;
    at::Tensor rw = ew - sw, rh = eh - sh;
    if (!cfg.aligned) {
      rw = rw.clamp_min(1.0f);
      rh = rh.clamp_min(1.0f);
    }
    const at::Tensor bw = rw / float(P), bh = rh / float(P);
    auto grid = [&](const at::Tensor& size) {
      if (cfg.sampling_ratio > 0)
        return at::full({n_all}, std::int64_t(cfg.sampling_ratio), fopt.dtype(at::kLong));
      const at::Tensor q = (size / float(P)).ceil();
      const at::Tensor ok = (q > -2147483648.f).logical_and(q < 2147483648.f);  // NaN: 0
      return at::where(ok, q, at::zeros_like(q)).to(at::kLong);
    };
    const at::Tensor gh = grid(rh), gw = grid(rw);
    const at::Tensor count = (gh * gw).clamp_min(1).to(at::kFloat);
    at::Tensor result = at::empty({n_all, C, P, P}, map.options());

    // Chunks of RoIs with similar grids, each padded to its largest grid.
    const at::Tensor order = (gh.clamp_min(0) * gw.clamp_min(0)).argsort();
    const at::Tensor gh_sorted = gh.index_select(0, order).cpu();
    const at::Tensor gw_sorted = gw.index_select(0, order).cpu();
    const std::int64_t* ghs = gh_sorted.data_ptr<std::int64_t>();
    const std::int64_t* gws = gw_sorted.data_ptr<std::int64_t>();
    const at::Tensor flat = map.reshape({C, H * W});
    std::int64_t a = 0;
    while (a < n_all) {
      std::int64_t Gh = std::max<std::int64_t>(ghs[a], 1), Gw = std::max<std::int64_t>(gws[a], 1);
      std::int64_t b = a + 1;
      while (b < n_all) {
        const std::int64_t nGh = std::max(Gh, ghs[b]), nGw = std::max(Gw, gws[b]);
        if ((b + 1 - a) * C * P * P * nGh * nGw > max_chunk_elements) break;
        Gh = nGh;
        Gw = nGw;
        ++b;
      }
      const at::Tensor ci = order.slice(0, a, b);
      result.index_copy_(0, ci,
                         pool_chunk(flat, H, W, P, Gh, Gw, sh.index_select(0, ci),
                                    sw.index_select(0, ci), bh.index_select(0, ci),
                                    bw.index_select(0, ci), gh.index_select(0, ci),
                                    gw.index_select(0, ci), count.index_select(0, ci)));
      a = b;
    }
    return result;
  }

  /// n RoIs of one level: [n, C, P, P].
  static at::Tensor pool_chunk(const at::Tensor& flat, std::int64_t H, std::int64_t W,
                               std::int64_t P, std::int64_t Gh, std::int64_t Gw,
                               const at::Tensor& sh, const at::Tensor& sw, const at::Tensor& bh,
                               const at::Tensor& bw, const at::Tensor& gh, const at::Tensor& gw,
                               const at::Tensor& count) {
    const std::int64_t n = sh.size(0), C = flat.size(0);
    const auto fopt = sh.options();
    const at::Tensor p = at::arange(P, fopt);
    // Sample coordinates: start + p * bin + (i + .5f) * bin / grid, as roi_align_coord().
    auto coords = [&](const at::Tensor& start, const at::Tensor& bin, const at::Tensor& g,
                      std::int64_t G) {
      const at::Tensor i = at::arange(G, fopt) + 0.5f;              // [G]
      const at::Tensor s = start.view({n, 1, 1}), bn = bin.view({n, 1, 1});
      const at::Tensor base = s + p.view({1, P, 1}) * bn;           // [n, P, 1]
      const at::Tensor step = (i.view({1, 1, G}) * bn) / g.to(at::kFloat).view({n, 1, 1});
      return base + step;                                           // [n, P, G]
    };
    const at::Tensor y = coords(sh, bh, gh, Gh), x = coords(sw, bw, gw, Gw);
    const at::Tensor vy = at::arange(Gh, gh.options()).view({1, 1, Gh}) < gh.view({n, 1, 1});
    const at::Tensor vx = at::arange(Gw, gw.options()).view({1, 1, Gw}) < gw.view({n, 1, 1});
    const Axis ay = axis(y, H), ax = axis(x, W);
    // Broadcast to [n, P(ph), Gh, P(pw), Gw].
    auto Y = [&](const at::Tensor& t) { return t.view({n, P, Gh, 1, 1}); };
    auto X = [&](const at::Tensor& t) { return t.view({n, 1, 1, P, Gw}); };
    const at::Tensor m = Y(ay.inside.logical_and(vy.expand({n, P, Gh})))
                             .logical_and(X(ax.inside.logical_and(vx.expand({n, P, Gw}))));
    const at::Tensor zero = at::zeros({}, fopt);
    const at::Tensor w1 = at::where(m, Y(ay.h) * X(ax.h), zero);
    const at::Tensor w2 = at::where(m, Y(ay.h) * X(ax.l), zero);
    const at::Tensor w3 = at::where(m, Y(ay.l) * X(ax.h), zero);
    const at::Tensor w4 = at::where(m, Y(ay.l) * X(ax.l), zero);
    const at::Tensor izero = at::zeros({}, ay.low.options());
    auto gather = [&](const at::Tensor& yi, const at::Tensor& xi) {
      const at::Tensor pos = at::where(m, Y(yi) * W + X(xi), izero).reshape({-1});
      return flat.index_select(1, pos).view({C, n, P, Gh, P, Gw});
    };
    at::Tensor s = w1 * gather(ay.low, ax.low);
    s = s + w2 * gather(ay.low, ax.high);
    s = s + w3 * gather(ay.high, ax.low);
    s = s + w4 * gather(ay.high, ax.high);
    s = at::where(m, s, zero);
    const at::Tensor acc = s.sum({3, 5});  // [C, n, P, P]
    return (acc / count.view({1, n, 1, 1})).permute({1, 0, 2, 3}).contiguous();
  }
};

}  // namespace rcnn
