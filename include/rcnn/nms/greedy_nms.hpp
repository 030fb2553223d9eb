#pragma once
/// \file greedy_nms.hpp
/// Reference non-maximum suppression: torchvision 0.14's CPU `nms` kernel, step for step.

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "../error.hpp"
#include "../types.hpp"

namespace rcnn {

namespace detail {

/// The order torchvision's `nms` visits boxes in: `scores.sort(stable=True, descending=True)`.
/// Descending score; NaN ranks above every number (+inf included), as torch's sort puts NaN
/// first when descending; ties (equal scores, -0 == +0, NaN vs NaN) by ascending index.
/// A strict total order on indices, so `std::sort` with it gives the stable-sort result
/// without the stable sort's temporary buffer.
struct NmsScoreOrder {
  const float* scores;
  bool operator()(int a, int b) const {
    const float sa = scores[a], sb = scores[b];
    const bool na = std::isnan(sa), nb = std::isnan(sb);
    if (na != nb) return na;  // NaN first
    if (!na && sa != sb) return sa > sb;
    return a < b;
  }
};

/// A 64-bit key whose ascending order is `NmsScoreOrder`'s: the high 32 bits order the
/// scores descending with NaN first and -0 equal to +0, the low 32 bits are the index (the
/// tie-break). Sorting these integers replaces sorting indices with a comparator that
/// loads two scores and tests them for NaN at every comparison.
inline std::uint64_t nms_sort_key(float score, int index) {
  std::uint32_t k = 0;  // NaN: before every number
  if (!std::isnan(score)) {
    std::uint32_t u;
    const float s = score == 0.f ? 0.f : score;  // -0 -> +0
    std::memcpy(&u, &s, sizeof u);
    const std::uint32_t ascending = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    k = ~ascending;  // descending; never 0 for a number
  }
  return (std::uint64_t(k) << 32) | std::uint32_t(index);
}

/// Writes into order[0 .. n) the indices 0 .. n-1 in `NmsScoreOrder` (descending score, NaN
/// first, ties by index), sorting 64-bit keys (`keys` is scratch, resized to n).
inline void nms_sort(const float* scores, std::size_t n, std::vector<std::uint64_t>& keys,
                     int* order) {
  keys.resize(n);
  for (std::size_t i = 0; i < n; ++i) keys[i] = nms_sort_key(scores[i], int(i));
  std::sort(keys.begin(), keys.end());
  for (std::size_t i = 0; i < n; ++i) order[i] = int(std::uint32_t(keys[i]));
}

/// Checks the NMS inputs; throws rcnn::Error (message built only on failure).
inline void check_nms_inputs(std::span<const Box> boxes, std::span<const float> scores,
                             const char* who) {
  if (boxes.size() != scores.size())
    fail(std::string(who) + ": boxes and scores differ in length (" +
         std::to_string(boxes.size()) + " boxes, " + std::to_string(scores.size()) +
         " scores)");
  if (boxes.size() > std::size_t(INT_MAX))
    fail(std::string(who) + ": too many boxes (" + std::to_string(boxes.size()) + ")");
}

/// `std::max(a, b)` exactly as the kernel calls it: `(a < b) ? b : a` (NaN in `b` yields `a`,
/// NaN in `a` yields NaN). Written out so vectorised loops keep the same NaN semantics.
inline float kernel_max(float a, float b) { return (a < b) ? b : a; }
/// `std::min(a, b)`: `(b < a) ? b : a`.
inline float kernel_min(float a, float b) { return (b < a) ? b : a; }

}  // namespace detail

/// Greedy NMS, the reference policy (torchvision 0.14 CPU `nms`, float32 boxes).
///
/// Contract: `boxes[i]` / `scores[i]` describe box i (equal lengths, else rcnn::Error).
/// Boxes are visited in `detail::NmsScoreOrder` (descending score, stable on ties); each box
/// not yet suppressed is kept and suppresses every later box j with
/// `double(inter / (area_i + area_j - inter)) > iou_threshold`, where
/// `inter = max(0, xx2 - xx1) * max(0, yy2 - yy1)` and areas are `(x2 - x1) * (y2 - y1)`, all
/// in float32 in that order. `keep` is cleared and receives the kept indices in visiting
/// order (descending score). Degenerate boxes (zero area) give IoU 0/0 = NaN against each
/// other, which never suppresses, exactly as in torchvision.
///
/// NaN scores: ranked above every number, like `torch.sort(descending=True)`; so a box with a
/// NaN score is visited first (NaN scores among themselves by index) and, unless suppressed
/// by an earlier NaN-scored box, kept. Deterministic and identical to torchvision.
///
/// Cost: O(N log N) sort + O(N * K) IoUs (K = boxes kept); no heap allocation (the visiting
/// order is built in `keep`'s storage and suppression is marked in place). Stateless and
/// thread-safe.
struct GreedyNms {
  void reserve(std::size_t) {}  ///< stateless: nothing to size
  void operator()(std::span<const Box> boxes, std::span<const float> scores,
                  double iou_threshold, std::vector<int>& keep) const {
    detail::check_nms_inputs(boxes, scores, "GreedyNms");
    const int n = int(boxes.size());
    keep.resize(std::size_t(n));
    if (n == 0) return;
    // keep[] first holds the visiting order; a suppressed entry is marked as ~index (< 0).
    // Kept indices are compacted to the front: position num_kept <= _i, already consumed.
    int* order = keep.data();
    std::iota(order, order + n, 0);
    std::sort(order, order + n, detail::NmsScoreOrder{scores.data()});
    int num_kept = 0;
    for (int oi = 0; oi < n; ++oi) {
      const int i = order[oi];
      if (i < 0) continue;  // suppressed
      order[num_kept++] = i;
      const Box& bi = boxes[std::size_t(i)];
      const float iarea = bi.area();
      for (int oj = oi + 1; oj < n; ++oj) {
        const int j = order[oj];
        if (j < 0) continue;
        const Box& bj = boxes[std::size_t(j)];
        const float xx1 = detail::kernel_max(bi.x1, bj.x1);
        const float yy1 = detail::kernel_max(bi.y1, bj.y1);
        const float xx2 = detail::kernel_min(bi.x2, bj.x2);
        const float yy2 = detail::kernel_min(bi.y2, bj.y2);
        const float w = detail::kernel_max(0.f, xx2 - xx1);
        const float h = detail::kernel_max(0.f, yy2 - yy1);
        const float inter = w * h;
        const float ovr = inter / (iarea + bj.area() - inter);
        if (double(ovr) > iou_threshold) order[oj] = ~j;
      }
    }
    keep.resize(std::size_t(num_kept));
  }
};

}  // namespace rcnn
