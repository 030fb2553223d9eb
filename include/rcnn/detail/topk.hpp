#pragma once
/// \file topk.hpp
/// Top-k selection by score: radix selection on order-preserving integer keys, then a sort
/// of the k winners; O(n + k log k).

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
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

/// A 32-bit key whose ascending order is `ScoreDescending`'s order of scores: descending,
/// -0 equal to +0, NaN last (0xFFFFFFFF, which no number maps to). Ties (equal keys) are
/// broken by the index, as `ScoreDescending` does.
inline std::uint32_t score_descending_key(float score) {
  // Branch-free (the key loops vectorise): -0 -> +0; negative: ~u, else u | sign bit
  // (ascending order of the float); inverted for descending; NaN (any sign) -> 0xFFFFFFFF.
  std::uint32_t u;
  std::memcpy(&u, &score, sizeof u);
  u = u == 0x80000000u ? 0u : u;
  const std::uint32_t sign = std::uint32_t(std::int32_t(u) >> 31);
  const std::uint32_t key = ~(u ^ (sign | 0x80000000u));
  return (u & 0x7FFFFFFFu) > 0x7F800000u ? 0xFFFFFFFFu : key;
}

/// Scratch of `topk_indices`, sized by the input (n) and then reused.
struct TopKWorkspace {
  std::array<std::uint32_t, 2048> histogram{};
  std::vector<std::uint64_t> selected;  ///< (key << 32 | index) of the winners' buckets
  std::vector<std::uint32_t> keys;      ///< `score_descending_key` of every score
};

/// Writes into `idx` the indices of the `k` smallest `keys` (the `score_descending_key`s of
/// scores), sorted by (key, index): for the keys of scores, the indices of the `k` highest
/// scores sorted by `ScoreDescending` (descending score, ties by ascending index, NaN last),
/// the first k of a full `ScoreDescending` sort.
///
/// Algorithm: a histogram of the keys' top 11 bits finds the bucket holding the k-th key;
/// the (key, index) pairs of that bucket and the ones before it are gathered as 64-bit
/// integers, cut to k with `nth_element` and sorted. Two passes over the scores and no
/// comparator calls on the losers. `ws.selected` is reserved for n entries, so a stream
/// of inputs of one size allocates only on the first call.
inline void topk_indices_of_keys(std::span<const std::uint32_t> keys, std::size_t k,
                                 std::vector<int>& idx, TopKWorkspace& ws) {
  const std::size_t n = keys.size();
  k = std::min(k, n);
  idx.resize(k);
  if (k == 0) return;
  constexpr int kShift = 32 - 11;
  ws.histogram.fill(0);
  for (std::size_t i = 0; i < n; ++i) ++ws.histogram[keys[i] >> kShift];
  std::uint32_t boundary = 0;
  std::size_t count = 0;  // entries in buckets <= boundary
  while ((count += ws.histogram[boundary]) < k) ++boundary;
  ws.selected.reserve(n);
  ws.selected.resize(count);
  std::uint64_t* out = ws.selected.data();
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t key = keys[i];
    if ((key >> kShift) <= boundary) *out++ = (std::uint64_t(key) << 32) | std::uint32_t(i);
  }
  if (count > k) {
    std::nth_element(ws.selected.begin(), ws.selected.begin() + std::ptrdiff_t(k),
                     ws.selected.end());
    ws.selected.resize(k);
  }
  std::sort(ws.selected.begin(), ws.selected.end());
  for (std::size_t i = 0; i < k; ++i) idx[i] = int(std::uint32_t(ws.selected[i]));
}

/// Writes into `idx` the indices of the `k` highest scores, sorted by `ScoreDescending`:
/// the keys (branch-free, vectorised) into `ws.keys`, then `topk_indices_of_keys`.
inline void topk_indices(std::span<const float> scores, std::size_t k, std::vector<int>& idx,
                         TopKWorkspace& ws) {
  const std::size_t n = scores.size();
  ws.keys.resize(n);
  for (std::size_t i = 0; i < n; ++i) ws.keys[i] = score_descending_key(scores[i]);
  topk_indices_of_keys(ws.keys, k, idx, ws);
}

/// As above with a temporary workspace (allocates; for one-off calls and tests).
inline void topk_indices(std::span<const float> scores, std::size_t k, std::vector<int>& idx) {
  TopKWorkspace ws;
  topk_indices(scores, k, idx, ws);
}

/// Indices 0..n-1 sorted by descending score (stable on ties).
inline void argsort_descending(std::span<const float> scores, std::vector<int>& idx) {
  topk_indices(scores, scores.size(), idx);
}

}  // namespace rcnn::detail
