// detail::topk_indices (radix selection on integer keys) against a full sort with
// detail::ScoreDescending, the order it must reproduce.

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "rcnn/detail/topk.hpp"

namespace {

std::vector<int> sorted_prefix(const std::vector<float>& scores, std::size_t k) {
  std::vector<int> idx(scores.size());
  for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = int(i);
  std::sort(idx.begin(), idx.end(), rcnn::detail::ScoreDescending{scores.data()});
  idx.resize(std::min(k, idx.size()));
  return idx;
}

}  // namespace

TEST_CASE("topk_indices equals the first k of a ScoreDescending sort") {
  std::mt19937 rng(2024);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const float specials[] = {nan, -nan, 0.f, -0.f, inf, -inf, 1.f, -1.f,
                            std::numeric_limits<float>::denorm_min(),
                            std::numeric_limits<float>::max(), std::numeric_limits<float>::lowest()};
  rcnn::detail::TopKWorkspace ws;
  std::vector<int> got;
  for (int trial = 0; trial < 200; ++trial) {
    const std::size_t n = trial < 10 ? std::size_t(trial) : std::size_t(rng() % 5000);
    std::vector<float> scores(n);
    std::normal_distribution<float> normal(0.f, 2.f);
    const int kind = trial % 4;  // plain, with specials, heavy ties, all equal
    for (auto& s : scores) {
      if (kind == 0) s = normal(rng);
      if (kind == 1) s = (rng() % 8 == 0) ? specials[rng() % std::size(specials)] : normal(rng);
      if (kind == 2) s = std::round(normal(rng));  // a few distinct values: big buckets
      if (kind == 3) s = 0.5f;
    }
    for (const std::size_t k : {std::size_t(0), std::size_t(1), std::size_t(7), n / 2, n,
                                n + 3, std::size_t(1000)}) {
      rcnn::detail::topk_indices(scores, k, got, ws);
      CAPTURE(trial);
      CAPTURE(n);
      CAPTURE(k);
      CHECK(got == sorted_prefix(scores, k));
    }
  }
}

TEST_CASE("topk_indices: a stream of inputs of one size reuses its buffers") {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> scores(20000);
  rcnn::detail::TopKWorkspace ws;
  std::vector<int> idx;
  for (auto& s : scores) s = normal(rng);
  rcnn::detail::topk_indices(scores, 1000, idx, ws);
  const void* sel = ws.selected.data();
  const void* out = idx.data();
  for (int round = 0; round < 10; ++round) {
    for (auto& s : scores) s = (round % 2) ? std::round(normal(rng)) : normal(rng);
    rcnn::detail::topk_indices(scores, 1000, idx, ws);
    CHECK(ws.selected.data() == sel);
    CHECK(idx.data() == out);
  }
}
