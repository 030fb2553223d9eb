#pragma once
/// \file omp_paste.hpp
/// OpenMP mask pasting, bit-identical to Detectron2PasteRef / TorchvisionPasteRef (needs
/// rcnn::omp / -fopenmp).

#ifndef _OPENMP
#error "rcnn/mask/omp_paste.hpp needs OpenMP: link rcnn::omp (or compile with -fopenmp)"
#endif

#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include "../config.hpp"
#include "../preprocess/torch_resize.hpp"
#include "../stage_io.hpp"
#include "../types.hpp"
#include "detectron2_paste.hpp"
#include "mask_types.hpp"
#include "torchvision_paste.hpp"

namespace rcnn {

namespace detail {

/// A band of output rows of one detection: one unit of parallel work.
struct OmpPasteItem {
  int det = 0;
  int row_begin = 0;
  int row_end = 0;
};

/// Where a detection's precomputed data starts in the workspace.
struct OmpPastePlan {
  std::size_t padded = 0;  ///< its (M + 2)^2 zero-padded mask
  std::size_t cols = 0;    ///< its `width` column taps
  std::size_t rows = 0;    ///< its `height` row taps
  std::int64_t tx0 = 0, ty0 = 0, tw = 1, th = 1;  ///< torchvision: integer box and resize size
};

/// Cuts every non-empty window into bands of about `kPixels` pixels (at least one row).
inline void omp_paste_items(std::span<const InstanceMask> masks, std::vector<OmpPasteItem>& items) {
  constexpr std::size_t kPixels = 16384;
  items.clear();
  for (std::size_t i = 0; i < masks.size(); ++i) {
    const InstanceMask& m = masks[i];
    if (m.width == 0) continue;
    const int band = int(std::clamp<std::size_t>(kPixels / std::size_t(m.width), 1,
                                                 std::size_t(m.height)));
    for (int r = 0; r < m.height; r += band)
      items.push_back({int(i), r, std::min(r + band, m.height)});
  }
}

/// Runs `item(k)` for k in [0, items): serially on the calling thread when `threads` < 2
/// (no OpenMP region: libgomp allocates a team for every region of one thread), else
/// dynamically scheduled over `threads` OpenMP threads.
template <class F>
inline void omp_paste_run(int items, int threads, const F& item) {
  if (threads < 2) {
    for (int k = 0; k < items; ++k) item(k);
    return;
  }
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int k = 0; k < items; ++k) item(k);
}

}  // namespace detail

/// Scratch of the OpenMP paste policies, grown to the largest call seen and then reused:
/// per-detection plans and padded masks, per-axis taps, work items.
struct OmpPasteWorkspace {
  std::vector<detail::OmpPastePlan> plans;
  std::vector<float> padded;
  std::vector<detail::D2AxisTap> d2_taps;
  std::vector<detail::LinearTap> tv_taps;
  std::vector<detail::OmpPasteItem> items;
};

namespace detail {

/// Sizes `out` and the plans for D masks of (M + 2)^2 padded cells: `window(i, plan)` returns
/// detection i's window (and may fill the plan's convention-specific fields); each plan gets
/// its padded-mask offset and its column and row tap ranges. Returns the number of taps.
template <class Window>
inline std::size_t omp_paste_plan(std::size_t D, int M, OmpPasteWorkspace& ws,
                                  std::vector<InstanceMask>& out, const Window& window) {
  const std::size_t SS = (std::size_t(M) + 2) * (std::size_t(M) + 2);
  out.resize(D);
  ws.plans.resize(D);
  if (ws.padded.size() < D * SS) ws.padded.resize(D * SS);
  std::size_t taps = 0;
  for (std::size_t i = 0; i < D; ++i) {
    OmpPastePlan& p = ws.plans[i];
    const PasteWindow w = window(i, p);
    out[i].reset(w.x0, w.y0, w.width(), w.height());
    p.padded = i * SS;
    p.cols = taps;
    p.rows = taps + std::size_t(out[i].width);
    taps = p.rows + std::size_t(out[i].height);
  }
  return taps;
}

}  // namespace detail

/// Detectron2 v0.6 mask pasting with OpenMP; same contract and bit-identical output as
/// `Detectron2PasteRef` (same float operations on the same values).
///
/// Plan (serial, O(D * M^2 + sum of window sides)): per detection, the window, the mask
/// zero-padded to (M + 2)^2 (so out-of-mask cells read 0 without tests) and one tap per
/// window column and row (`detail::detectron2_axis_tap`: the grid coordinate, its
/// unnormalisation and floor depend on one axis only). Paste: bands of rows of all
/// detections (about 16k pixels each), dynamically scheduled over `num_threads` threads
/// (values < 1 mean 1; the global OpenMP thread count is never changed); per pixel four
/// weight products and the three-FMA blend (FMA instructions where the CPU has them).
///
/// Cost: O(sum of window areas). No heap allocation once the workspace and `out`'s masks
/// have grown to the largest call seen. Thread-safety: stateful (mutable workspace): use one
/// instance per calling thread.
struct OmpDetectron2Paste {
  static constexpr MaskHeadConfig::Paste convention = MaskHeadConfig::Paste::detectron2;
  int num_threads = 1;
  OmpPasteWorkspace ws{};

  void reserve(const StageSizing& s) {
    ws.plans.reserve(s.detections);
    ws.items.reserve(s.detections);
  }

  void operator()(const MaskProbs& probs, std::span<const Box> boxes, Size image,
                  float threshold, std::vector<InstanceMask>& out) {
    detail::check_paste_inputs(probs, boxes, image, threshold, "OmpDetectron2Paste");
    const std::size_t D = std::size_t(probs.count);
    const int M = probs.size;
    const std::size_t S = std::size_t(M) + 2;
    const std::size_t taps = detail::omp_paste_plan(
        D, M, ws, out, [&](std::size_t i, detail::OmpPastePlan&) {
          return detail::detectron2_window(boxes[i], image);
        });
    if (ws.d2_taps.size() < taps) ws.d2_taps.resize(taps);
    for (std::size_t i = 0; i < D; ++i) {
      const InstanceMask& m = out[i];
      const detail::OmpPastePlan& p = ws.plans[i];
      const Box& b = boxes[i];
      detail::pad_mask(probs.mask(int(i)), M, ws.padded.data() + p.padded);
      for (int x = 0; x < m.width; ++x)
        ws.d2_taps[p.cols + std::size_t(x)] = detail::detectron2_axis_tap<true>(m.x0 + x, b.x1, b.x2, M);
      for (int y = 0; y < m.height; ++y)
        ws.d2_taps[p.rows + std::size_t(y)] = detail::detectron2_axis_tap<true>(m.y0 + y, b.y1, b.y2, M);
    }
    detail::omp_paste_items(out, ws.items);
    const int items = int(ws.items.size());
    InstanceMask* masks = out.data();
    const OmpPasteWorkspace& w = ws;
    const auto paste_item = [&](int k) {
      const detail::OmpPasteItem& it = w.items[std::size_t(k)];
      InstanceMask& m = masks[it.det];
      const detail::OmpPastePlan& p = w.plans[std::size_t(it.det)];
      for (int y = it.row_begin; y < it.row_end; ++y)
        detail::detectron2_row<true>(w.padded.data() + p.padded, S, w.d2_taps[p.rows + std::size_t(y)],
                                     w.d2_taps.data() + p.cols, m.width, threshold,
                                     m.bits.data() + std::size_t(y) * std::size_t(m.width));
    };
    detail::omp_paste_run(items, num_threads, paste_item);
  }
};

/// torchvision 0.14 mask pasting with OpenMP; same contract and bit-identical output as
/// `TorchvisionPasteRef`.
///
/// Plan (serial, O(D * M^2 + sum of visible window sides)): per detection, the expanded
/// integer box, the padded mask and the ATen interpolation tap of every visible column and
/// row (`detail::torch_linear_tap`). Paste: bands of rows, dynamically scheduled over
/// `num_threads` threads (values < 1 mean 1); per pixel ATen's channels-last bilinear value
/// (`detail::torch_bilinear_channels_last`). Only pixels inside the image are computed.
///
/// Cost: O(sum of visible window areas). No heap allocation at steady state. Thread-safety:
/// stateful (mutable workspace): use one instance per calling thread.
struct OmpTorchvisionPaste {
  static constexpr MaskHeadConfig::Paste convention = MaskHeadConfig::Paste::torchvision;
  int num_threads = 1;
  OmpPasteWorkspace ws{};

  void reserve(const StageSizing& s) {
    ws.plans.reserve(s.detections);
    ws.items.reserve(s.detections);
  }

  void operator()(const MaskProbs& probs, std::span<const Box> boxes, Size image,
                  float threshold, std::vector<InstanceMask>& out) {
    detail::check_paste_inputs(probs, boxes, image, threshold, "OmpTorchvisionPaste");
    const std::size_t D = std::size_t(probs.count);
    const int M = probs.size;
    const int S = M + 2;
    const std::size_t taps = detail::omp_paste_plan(
        D, M, ws, out, [&](std::size_t i, detail::OmpPastePlan& p) {
          const detail::TorchvisionPasteBox t = detail::torchvision_paste_box(boxes[i], M, image);
          p.tx0 = t.x0;
          p.ty0 = t.y0;
          p.tw = t.w;
          p.th = t.h;
          return t.window;
        });
    if (ws.tv_taps.size() < taps) ws.tv_taps.resize(taps);
    for (std::size_t i = 0; i < D; ++i) {
      const InstanceMask& m = out[i];
      const detail::OmpPastePlan& p = ws.plans[i];
      detail::pad_mask(probs.mask(int(i)), M, ws.padded.data() + p.padded);
      for (int x = 0; x < m.width; ++x)
        ws.tv_taps[p.cols + std::size_t(x)] = detail::torch_linear_tap(S, p.tw, std::int64_t(m.x0 + x) - p.tx0);
      for (int y = 0; y < m.height; ++y)
        ws.tv_taps[p.rows + std::size_t(y)] = detail::torch_linear_tap(S, p.th, std::int64_t(m.y0 + y) - p.ty0);
    }
    detail::omp_paste_items(out, ws.items);
    const int items = int(ws.items.size());
    InstanceMask* masks = out.data();
    const OmpPasteWorkspace& w = ws;
    const auto paste_item = [&](int k) {
      const detail::OmpPasteItem& it = w.items[std::size_t(k)];
      InstanceMask& m = masks[it.det];
      const detail::OmpPastePlan& p = w.plans[std::size_t(it.det)];
      const float* padded = w.padded.data() + p.padded;
      const detail::LinearTap* cols = w.tv_taps.data() + p.cols;
      for (int y = it.row_begin; y < it.row_end; ++y) {
        const detail::LinearTap& h = w.tv_taps[p.rows + std::size_t(y)];
        const float* r0 = padded + std::size_t(h.i0) * std::size_t(S);
        const float* r1 = padded + std::size_t(h.i1) * std::size_t(S);
        std::uint8_t* o = m.bits.data() + std::size_t(y) * std::size_t(m.width);
        for (int x = 0; x < m.width; ++x)
          o[x] = detail::torch_bilinear_channels_last(r0, r1, h, cols[x]) >= threshold ? 1 : 0;
      }
    };
    detail::omp_paste_run(items, num_threads, paste_item);
  }
};

/// `Stages` with the OpenMP paste of its conventions as `mask_paste`:
/// `rcnn::Detector<Exec, RoIAlign, rcnn::WithOmpPaste<rcnn::Detectron2Stages>>`, or for
/// either convention `rcnn::load<Exec, RoIAlign, rcnn::WithOmpPaste>(dir)`.
template <class Stages>
struct WithOmpPaste : Stages {
  using mask_paste = std::conditional_t<Stages::conventions == Conventions::torchvision,
                                        OmpTorchvisionPaste, OmpDetectron2Paste>;
};


}  // namespace rcnn
