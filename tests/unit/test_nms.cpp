// NMS policies (GreedyNms, BitmaskNms) and batched_nms against torchvision 0.14
// (references from tests/reference/gen_ops.py) and against each other.

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <span>
#include <string>
#include <vector>
#include <xtensor/xarray.hpp>
#include <xtensor/xnpy.hpp>

#include "rcnn/nms/batched_nms.hpp"
#include "rcnn/nms/bitmask_nms.hpp"
#include "rcnn/nms/greedy_nms.hpp"

namespace {

const std::string kOpsDir = RCNN_REFERENCE_DIR "/gen_ops";

nlohmann::json ops_manifest() {
  std::ifstream f(kOpsDir + "/manifest.json");
  REQUIRE_MESSAGE(f.good(), "missing " << kOpsDir
                                       << "/manifest.json: run tests/reference/gen_ops.py");
  return nlohmann::json::parse(f);
}

template <class T>
std::vector<T> load_vec(const std::string& case_dir, const std::string& name) {
  const auto a = xt::load_npy<T>(kOpsDir + "/" + case_dir + "/" + name + ".npy");
  return std::vector<T>(a.begin(), a.end());
}

std::vector<rcnn::Box> load_boxes(const std::string& case_dir) {
  const std::vector<float> f = load_vec<float>(case_dir, "boxes");
  std::vector<rcnn::Box> boxes(f.size() / 4);
  for (std::size_t i = 0; i < boxes.size(); ++i)
    boxes[i] = {f[4 * i], f[4 * i + 1], f[4 * i + 2], f[4 * i + 3]};
  return boxes;
}

std::vector<int> load_keep(const std::string& case_dir, const std::string& name = "keep") {
  const std::vector<std::int64_t> k = load_vec<std::int64_t>(case_dir, name);
  return std::vector<int>(k.begin(), k.end());
}

/// Random boxes with coordinates on a coarse grid (many exact ties, touching edges and
/// identical boxes) or continuous.
std::vector<rcnn::Box> random_boxes(std::mt19937& rng, int n, bool coarse) {
  std::uniform_real_distribution<float> pos(0.f, 200.f), side(0.f, 60.f);
  std::uniform_int_distribution<int> grid(0, 20);
  std::vector<rcnn::Box> boxes(static_cast<std::size_t>(n));
  for (auto& b : boxes) {
    if (coarse) {
      b.x1 = float(grid(rng)) * 4.f;
      b.y1 = float(grid(rng)) * 4.f;
      b.x2 = b.x1 + float(grid(rng));
      b.y2 = b.y1 + float(grid(rng));
    } else {
      b.x1 = pos(rng);
      b.y1 = pos(rng);
      b.x2 = b.x1 + side(rng);
      b.y2 = b.y1 + side(rng);
    }
  }
  return boxes;
}

}  // namespace

TEST_CASE_TEMPLATE("nms matches torchvision nms", Nms, rcnn::GreedyNms, rcnn::BitmaskNms) {
  const nlohmann::json m = ops_manifest();
  REQUIRE(m["nms"].size() >= 15);
  Nms nms;  // one instance for all cases: exercises workspace reuse across sizes
  std::vector<int> keep;
  for (const auto& c : m["nms"]) {
    const std::string dir = c["dir"];
    CAPTURE(dir);
    const auto boxes = load_boxes(dir);
    const auto scores = load_vec<float>(dir, "scores");
    const auto expected = load_keep(dir);
    nms(boxes, scores, c["iou_threshold"].get<double>(), keep);
    CHECK(keep == expected);
  }
}

TEST_CASE_TEMPLATE("batched_nms matches torchvision's per-group batched_nms", Nms,
                   rcnn::GreedyNms, rcnn::BitmaskNms) {
  const nlohmann::json m = ops_manifest();
  REQUIRE(m["batched_nms"].size() >= 6);
  Nms nms;
  rcnn::BatchedNmsWorkspace ws;
  std::vector<int> keep;
  for (const auto& c : m["batched_nms"]) {
    const std::string dir = c["dir"];
    CAPTURE(dir);
    const auto boxes = load_boxes(dir);
    const auto scores = load_vec<float>(dir, "scores");
    const auto groups = load_vec<std::int32_t>(dir, "groups");
    rcnn::batched_nms(nms, boxes, scores, std::span<const int>(groups.data(), groups.size()),
                      c["iou_threshold"].get<double>(), keep, ws);
    // Exact: per-group torchvision nms, union stable-sorted by score.
    CHECK(keep == load_keep(dir));
    // torchvision.ops.batched_nms itself: identical where its final (unstable) sort has no
    // ties and its path is exact; see the manifest flags set by gen_ops.py.
    const auto tv = load_keep(dir, "keep_torchvision");
    if (c["same_as_torchvision"].get<bool>()) CHECK(keep == tv);
    if (c["same_set_as_torchvision"].get<bool>()) {
      auto a = keep, b = tv;
      std::sort(a.begin(), a.end());
      std::sort(b.begin(), b.end());
      CHECK(a == b);
    }
  }
}

TEST_CASE("BitmaskNms equals GreedyNms on random inputs (every instruction set)") {
  std::mt19937 rng(12345);
  rcnn::GreedyNms greedy;
  std::vector<rcnn::BitmaskNms> bitmasks;
  for (rcnn::SimdIsa isa : {rcnn::SimdIsa::baseline, rcnn::SimdIsa::avx2, rcnn::SimdIsa::avx512})
    if (rcnn::simd_isa_supported(isa)) bitmasks.push_back(rcnn::BitmaskNms{{}, isa});
  MESSAGE("BitmaskNms kernels tested here: ", bitmasks.size());
  std::vector<int> k1, k2;
  const double thresholds[] = {0.0,  0.3, 0.5, 0.7, 1.0, -1.0, 0.5000000000000001,
                               std::numeric_limits<double>::quiet_NaN(),
                               std::numeric_limits<double>::infinity()};
  for (int trial = 0; trial < 45; ++trial) {
    const int n = trial < 20 ? trial : int(rng() % 1500);
    const bool coarse = trial % 2 == 0;
    auto boxes = random_boxes(rng, n, coarse);
    std::vector<float> scores(static_cast<std::size_t>(n));
    std::uniform_real_distribution<float> u(0.f, 1.f);
    for (auto& s : scores) s = coarse ? std::round(u(rng) * 5.f) / 5.f : u(rng);
    if (trial % 7 == 3 && n > 4) {
      scores[1] = std::numeric_limits<float>::quiet_NaN();
      scores[std::size_t(n) - 1] = std::numeric_limits<float>::quiet_NaN();
      boxes[2].x2 = std::numeric_limits<float>::quiet_NaN();
      boxes[3].y1 = std::numeric_limits<float>::infinity();
    }
    for (double thr : thresholds) {
      CAPTURE(n);
      CAPTURE(thr);
      greedy(boxes, scores, thr, k1);
      for (rcnn::BitmaskNms& bitmask : bitmasks) {
        const std::string isa = rcnn::simd_isa_name(bitmask.isa);
        CAPTURE(isa);
        bitmask(boxes, scores, thr, k2);
        CHECK(k1 == k2);
      }
    }
  }
}

TEST_CASE("BitmaskNms: a forced instruction set the CPU lacks is an rcnn::Error") {
  std::vector<rcnn::Box> boxes{{0, 0, 10, 10}, {1, 1, 10, 10}};
  std::vector<float> scores{0.9f, 0.8f};
  std::vector<int> keep;
  for (rcnn::SimdIsa isa : {rcnn::SimdIsa::avx2, rcnn::SimdIsa::avx512}) {
    rcnn::BitmaskNms nms{{}, isa};
    if (rcnn::simd_isa_supported(isa)) {
      nms(boxes, scores, 0.5, keep);
      CHECK(keep == std::vector<int>{0});
    } else {
      CHECK_THROWS_WITH_AS(nms(boxes, scores, 0.5, keep),
                           doctest::Contains("BitmaskNms: instruction set"), rcnn::Error);
    }
  }
}

TEST_CASE("nms_sort orders exactly as NmsScoreOrder (NaN, signed zeros, infinities, ties)") {
  std::mt19937 rng(99);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const float specials[] = {nan, -nan, 0.f, -0.f, inf, -inf, 1.f, -1.f,
                            std::numeric_limits<float>::denorm_min(),
                            -std::numeric_limits<float>::denorm_min(),
                            std::numeric_limits<float>::max(), std::numeric_limits<float>::lowest()};
  std::vector<std::uint64_t> keys;
  for (int trial = 0; trial < 50; ++trial) {
    const std::size_t n = std::size_t(rng() % 300);
    std::vector<float> scores(n);
    std::uniform_real_distribution<float> u(-3.f, 3.f);
    for (auto& s : scores) {
      const unsigned pick = rng() % 4;
      s = pick == 0 ? specials[rng() % std::size(specials)]
                    : (pick == 1 ? std::round(u(rng)) : u(rng));  // ties and plain values
    }
    std::vector<int> expected(n), got(n);
    for (std::size_t i = 0; i < n; ++i) expected[i] = int(i);
    std::sort(expected.begin(), expected.end(), rcnn::detail::NmsScoreOrder{scores.data()});
    rcnn::detail::nms_sort(scores.data(), n, keys, got.data());
    CAPTURE(trial);
    CHECK(got == expected);
  }
}

TEST_CASE("batched_nms: groups never suppress each other; policies agree") {
  std::mt19937 rng(777);
  rcnn::GreedyNms greedy;
  rcnn::BitmaskNms bitmask;
  rcnn::BatchedNmsWorkspace ws1, ws2;
  std::vector<int> k1, k2, single;
  for (int trial = 0; trial < 20; ++trial) {
    const int n = int(rng() % 1500);
    const auto boxes = random_boxes(rng, n, trial % 2 == 0);
    std::vector<float> scores(static_cast<std::size_t>(n));
    std::vector<int> groups(static_cast<std::size_t>(n));
    std::uniform_real_distribution<float> u(0.f, 1.f);
    for (auto& s : scores) s = u(rng);
    const bool sparse = trial % 3 == 0;
    for (auto& g : groups) g = sparse ? int(rng() % 4) * 100000000 - 150000000 : int(rng() % 6);
    rcnn::batched_nms(greedy, boxes, scores, groups, 0.5, k1, ws1);
    rcnn::batched_nms(bitmask, boxes, scores, groups, 0.5, k2, ws2);
    CHECK(k1 == k2);
    // Same result as running NMS on each group separately.
    std::vector<int> expected;
    std::vector<int> gs(groups);
    std::sort(gs.begin(), gs.end());
    gs.erase(std::unique(gs.begin(), gs.end()), gs.end());
    for (int g : gs) {
      std::vector<rcnn::Box> gb;
      std::vector<float> gsc;
      std::vector<int> idx;
      for (int i = 0; i < n; ++i)
        if (groups[std::size_t(i)] == g) {
          gb.push_back(boxes[std::size_t(i)]);
          gsc.push_back(scores[std::size_t(i)]);
          idx.push_back(i);
        }
      greedy(gb, gsc, 0.5, single);
      for (int k : single) expected.push_back(idx[std::size_t(k)]);
    }
    std::sort(expected.begin(), expected.end(), rcnn::detail::NmsScoreOrder{scores.data()});
    CHECK(k1 == expected);
  }
}

TEST_CASE("BitmaskNms reuses its workspace at steady state") {
  std::mt19937 rng(99);
  const auto boxes = random_boxes(rng, 3000, false);
  std::vector<float> scores(boxes.size());
  for (auto& s : scores) s = float(rng() % 100000) / 100000.f;
  rcnn::BitmaskNms nms;
  std::vector<int> keep;
  nms(boxes, scores, 0.7, keep);
  const void* p_order = nms.ws.order.data();
  const void* p_x1 = nms.ws.x1.data();
  const void* p_removed = nms.ws.removed.data();
  const void* p_keep = keep.data();
  for (int i = 0; i < 3; ++i) {
    nms(std::span(boxes).first(1000 + 500 * std::size_t(i)),
        std::span(scores).first(1000 + 500 * std::size_t(i)), 0.7, keep);
    nms(boxes, scores, 0.7, keep);
  }
  CHECK(nms.ws.order.data() == p_order);
  CHECK(nms.ws.x1.data() == p_x1);
  CHECK(nms.ws.removed.data() == p_removed);
  CHECK(keep.data() == p_keep);
}

TEST_CASE("NMS input validation and threshold conversion") {
  std::vector<rcnn::Box> boxes(3);
  std::vector<float> scores(2);
  std::vector<int> keep;
  CHECK_THROWS_AS(rcnn::GreedyNms{}(boxes, scores, 0.5, keep), rcnn::Error);
  CHECK_THROWS_AS(rcnn::BitmaskNms{}(boxes, scores, 0.5, keep), rcnn::Error);
  rcnn::GreedyNms g;
  rcnn::BatchedNmsWorkspace ws;
  std::vector<float> s3(3);
  std::vector<int> groups(2);
  CHECK_THROWS_AS(rcnn::batched_nms(g, boxes, s3, groups, 0.5, keep, ws), rcnn::Error);

  // float_threshold_below: x > t  <=>  double(x) > thr for every float x.
  for (double thr : {0.5, 0.7, 0.1, 1.0 / 3.0, 0.0, -0.0, 1e-300, 1e300, -1e300}) {
    const float t = rcnn::detail::float_threshold_below(thr);
    CAPTURE(thr);
    for (float x : {t, std::nextafter(t, INFINITY), std::nextafter(t, -INFINITY), 0.f, 1.f,
                    float(thr), INFINITY, -INFINITY})
      CHECK((x > t) == (double(x) > thr));
  }
}
