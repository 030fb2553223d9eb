#pragma once
/// \file level_mapper.hpp
/// FPN level assignment of RoIs (Eqn. 1 of the FPN paper), in each framework's float32 order.

#include <cmath>
#include <cstddef>
#include <span>
#include <string>

#include "../config.hpp"
#include "../error.hpp"
#include "../types.hpp"

namespace rcnn {

/// Level of one box, as an index relative to `min_level` (see `assign_levels`).
inline int assign_level(const Box& box, const PoolerConfig& cfg, int min_level, int max_level) {
  const float s = std::sqrt(box.area());
  const float ratio = s / cfg.canonical_box_size;
  const float lvl0 = float(cfg.canonical_level);
  const float level = cfg.level_eps_inside_log ? lvl0 + std::log2(ratio + cfg.level_eps)
                                               : (lvl0 + std::log2(ratio)) + cfg.level_eps;
  const float f = std::floor(level);
  // NaN (negative area) and -inf (zero area, eps outside the log) go to the first level.
  if (!(f >= float(min_level))) return 0;
  if (f > float(max_level)) return max_level - min_level;
  return int(f) - min_level;
}

/// Writes into `out[i]` the pooling level of `boxes[i]` as an index (0 = `min_level`).
///
/// Detectron2 (`cfg.level_eps_inside_log`, eps 1e-8):
///   floor(canonical_level + log2(sqrt(area) / canonical_box_size + eps))
/// torchvision's `LevelMapper` (eps outside, 1e-6):
///   floor(canonical_level + log2(sqrt(area) / canonical_box_size) + eps)
/// then clamped to [min_level, max_level]. float32 throughout, in that order (sqrtf,
/// division, [eps add,] log2f, add, [eps add,] floorf) like the frameworks' float tensor ops;
/// area = (x2 - x1) * (y2 - y1). Zero-area boxes map to `min_level`. Boxes with negative
/// area (inverted corners) give NaN and map to `min_level` here; the frameworks cast NaN to
/// int64 there (undefined), so such boxes have no reference behaviour.
///
/// Parity: torch evaluates `log2` of a float tensor with SLEEF's vectorised log2f (1 ulp)
/// for full vectors and libm's log2f for the tail, while this uses libm's `std::log2`; the
/// two can differ by an ulp (tests/unit/test_roi_align.cpp measures how often), which can
/// only change a level when the value lies within an ulp of an integer.
///
/// Pre: `out.size() == boxes.size()`, `min_level <= max_level` (else rcnn::Error).
/// Cost: O(N), no allocation, thread-safe.
inline void assign_levels(std::span<const Box> boxes, const PoolerConfig& cfg, int min_level,
                          int max_level, std::span<int> out) {
  if (out.size() != boxes.size())
    detail::fail("assign_levels: output holds " + std::to_string(out.size()) +
                 " levels, expected " + std::to_string(boxes.size()));
  if (min_level > max_level)
    detail::fail("assign_levels: min_level " + std::to_string(min_level) +
                 " > max_level " + std::to_string(max_level));
  for (std::size_t i = 0; i < boxes.size(); ++i)
    out[i] = assign_level(boxes[i], cfg, min_level, max_level);
}

}  // namespace rcnn
