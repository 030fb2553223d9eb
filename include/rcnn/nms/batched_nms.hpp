#pragma once
/// \file batched_nms.hpp
/// NMS applied independently per group (class), torchvision 0.14 `batched_nms` semantics.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "../error.hpp"
#include "../types.hpp"
#include "greedy_nms.hpp"

namespace rcnn {

/// Scratch of `batched_nms`, grown to the largest input seen and then reused.
struct BatchedNmsWorkspace {
  std::vector<int> perm;          ///< input indices bucketed by group, ascending within a group
  std::vector<int> counts;        ///< counting-sort histogram (dense group ids)
  std::vector<Box> boxes;         ///< one group's boxes
  std::vector<float> scores;      ///< one group's scores
  std::vector<int> group_keep;    ///< one group's NMS result (indices into the group)
  std::vector<std::uint64_t> keys;  ///< sort keys of the final order (detail::nms_sort_key)

  /// Capacity for inputs of up to `n` boxes with at most `max_group` boxes per group: later
  /// such calls (with group ids spanning at most min(n, 4096) + 1024 values) allocate
  /// nothing here. (`batched_nms`'s `keep` and the NMS policy's scratch are reserved by
  /// their owners: `keep.reserve(n)`, `nms.reserve(max_group)`.)
  void reserve(std::size_t n, std::size_t max_group) {
    perm.reserve(n);
    counts.reserve(std::min(n, std::size_t(4096)) + 1025);
    keys.reserve(n);
    boxes.reserve(max_group);
    scores.reserve(max_group);
    group_keep.reserve(max_group);
  }
};

/// Batched NMS: boxes only suppress boxes with the same `groups` id.
///
/// Contract: `boxes`, `scores`, `groups` have equal lengths (else rcnn::Error); group ids are
/// arbitrary ints. `keep` is cleared and receives the kept indices of all groups, sorted by
/// `detail::NmsScoreOrder` (descending score, NaN first, ties by ascending index).
///
/// Equals torchvision 0.14's `_batched_nms_vanilla` (the path `batched_nms` takes on CPU for
/// more than 1000 boxes): per group, `nms` on that group's boxes in ascending index order,
/// then the union sorted by score. Differences: torchvision's final `sort(descending=True)`
/// is not stable, so among kept boxes with *equal* scores its order is unspecified; here it
/// is by index (= the stable sort). For up to 1000 boxes torchvision's `batched_nms` uses the
/// coordinate-offset trick instead, which rounds the shifted coordinates and can in rare
/// cases differ from per-group NMS; this function always computes the exact per-group result.
///
/// Algorithm: bucket the indices by group once (counting sort when the id range is at most
/// about N, otherwise a sort by (group, index)), gather each group's boxes and scores into
/// contiguous scratch, run `nms` on it and map its keep list back.
///
/// Cost: O(N) (or O(N log N) for sparse ids) bucketing + the per-group NMS costs + a final
/// O(K log K) sort. No heap allocation once `ws`, `keep` and the policy's own scratch have
/// grown to the largest input seen. Not thread-safe for a shared `ws` or a shared stateful
/// `nms`.
/// `scores` is any contiguous range of float (a vector, a span). Re-scoring policies
/// (soft-NMS: `operator()` takes `std::span<float>` scores and lowers them) see each group's
/// scores in scratch; the final scores of the kept boxes are written back into `scores`,
/// which must then be writable, and the union is ordered by them.
template <class Nms, class Scores>
void batched_nms(Nms& nms, std::span<const Box> boxes, Scores&& score_range,
                 std::span<const int> groups, double iou_threshold, std::vector<int>& keep,
                 BatchedNmsWorkspace& ws) {
  const auto scores = std::span(score_range);
  constexpr bool writable = !std::is_const_v<typename decltype(scores)::element_type>;
  static_assert(writable || std::is_invocable_v<Nms&, std::span<const Box>, std::span<const float>,
                                                double, std::vector<int>&>,
                "batched_nms: a re-scoring NMS policy (taking std::span<float> scores) needs "
                "writable scores");
  detail::check_nms_inputs(boxes, scores, "batched_nms");
  if (groups.size() != boxes.size())
    detail::fail("batched_nms: boxes and groups differ in length (" +
                 std::to_string(boxes.size()) + " boxes, " + std::to_string(groups.size()) +
                 " group ids)");
  keep.clear();
  const std::size_t n = boxes.size();
  if (n == 0) return;

  // Bucket the indices by group, ascending index within each group.
  const auto [gmin_it, gmax_it] = std::minmax_element(groups.begin(), groups.end());
  const std::int64_t gmin = *gmin_it;
  const std::int64_t range = std::int64_t(*gmax_it) - gmin + 1;
  std::vector<int>& perm = ws.perm;
  perm.resize(n);
  if (range <= std::int64_t(n) + 1024) {
    std::vector<int>& counts = ws.counts;
    counts.assign(std::size_t(range) + 1, 0);
    for (std::size_t i = 0; i < n; ++i) ++counts[std::size_t(groups[i] - gmin) + 1];
    for (std::size_t g = 1; g < counts.size(); ++g) counts[g] += counts[g - 1];
    for (std::size_t i = 0; i < n; ++i) perm[std::size_t(counts[std::size_t(groups[i] - gmin)]++)] = int(i);
  } else {
    std::iota(perm.begin(), perm.end(), 0);
    std::sort(perm.begin(), perm.end(), [&](int a, int b) {
      const int ga = groups[std::size_t(a)], gb = groups[std::size_t(b)];
      return ga != gb ? ga < gb : a < b;
    });
  }

  // NMS per group (runs of equal ids in perm).
  keep.reserve(n);
  for (std::size_t begin = 0; begin < n;) {
    const int g = groups[std::size_t(perm[begin])];
    std::size_t end = begin + 1;
    while (end < n && groups[std::size_t(perm[end])] == g) ++end;
    const std::size_t m = end - begin;
    ws.boxes.resize(m);
    ws.scores.resize(m);
    for (std::size_t k = 0; k < m; ++k) {
      const std::size_t src = std::size_t(perm[begin + k]);
      ws.boxes[k] = boxes[src];
      ws.scores[k] = scores[src];
    }
    nms(std::span<const Box>(ws.boxes.data(), m), std::span<float>(ws.scores.data(), m),
        iou_threshold, ws.group_keep);
    for (const int k : ws.group_keep) {
      const int src = perm[begin + std::size_t(k)];
      keep.push_back(src);
      if constexpr (writable) scores[std::size_t(src)] = ws.scores[std::size_t(k)];  // re-scored
    }
    begin = end;
  }
  // Final order: detail::NmsScoreOrder, sorted as integer keys.
  ws.keys.resize(keep.size());
  for (std::size_t i = 0; i < keep.size(); ++i)
    ws.keys[i] = detail::nms_sort_key(scores[std::size_t(keep[i])], keep[i]);
  std::sort(ws.keys.begin(), ws.keys.end());
  for (std::size_t i = 0; i < keep.size(); ++i) keep[i] = int(std::uint32_t(ws.keys[i]));
}

}  // namespace rcnn
