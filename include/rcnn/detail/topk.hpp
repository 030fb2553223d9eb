#pragma once
/// \file topk.hpp
/// Top-k selection by score: nth_element + sort of the k winners, O(n + k log k).

#include <algorithm>
#include <cmath>
#include <span>
#include <vector>

namespace rcnn::detail {

/// Descending score, ties broken by ascending index (deterministic). NaN ranks below
/// every number, so a NaN score is never selected ahead of a real one.
struct ScoreDescending {
  const float* scores;
  bool operator()(int a, int b) const {
    const float sa = scores[a], sb = scores[b];
    const bool na = std::isnan(sa), nb = std::isnan(sb);
    if (na != nb) return nb;  // the non-NaN one first
    if (!na && sa != sb) return sa > sb;
    return a < b;
  }
};

/// Writes into `idx` the indices of the `k` highest scores, sorted descending.
inline void topk_indices(std::span<const float> scores, std::size_t k, std::vector<int>& idx) {
  const std::size_t n = scores.size();
  k = std::min(k, n);
  idx.resize(n);
  for (std::size_t i = 0; i < n; ++i) idx[i] = int(i);
  ScoreDescending cmp{scores.data()};
  if (k < n) {
    std::nth_element(idx.begin(), idx.begin() + std::ptrdiff_t(k), idx.end(), cmp);
    idx.resize(k);
  }
  std::sort(idx.begin(), idx.end(), cmp);
}

/// Indices 0..n-1 sorted by descending score (stable on ties).
inline void argsort_descending(std::span<const float> scores, std::vector<int>& idx) {
  topk_indices(scores, scores.size(), idx);
}

}  // namespace rcnn::detail
