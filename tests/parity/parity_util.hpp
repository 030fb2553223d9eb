#pragma once
// Helpers shared by the parity tests: .npy loading, tolerant comparisons, detection matching.
// LibTorch before doctest: its glog headers define CHECK too, and the test's CHECK must be
// doctest's (a failure reported and counted, not a glog abort).
#include <rcnn/exec/torchscript_exec.hpp>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xnpy.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <rcnn/types.hpp>

namespace parity {

namespace fs = std::filesystem;

inline nlohmann::json read_json(const fs::path& p) {
  std::ifstream f(p);
  REQUIRE_MESSAGE(f.good(), "cannot open " << p);
  return nlohmann::json::parse(f);
}

template <class T = float>
xt::xarray<T> npy(const fs::path& p) {
  REQUIRE_MESSAGE(fs::exists(p), "missing reference file " << p);
  return xt::load_npy<T>(p.string());
}

inline std::vector<rcnn::Box> boxes_of(const xt::xarray<float>& a) {
  std::vector<rcnn::Box> out(a.shape()[0]);
  for (std::size_t i = 0; i < out.size(); ++i)
    out[i] = {a(i, 0), a(i, 1), a(i, 2), a(i, 3)};
  return out;
}

/// max |a - b| over equally long float ranges.
template <class A, class B>
double max_abs_diff(const A& a, const B& b, std::size_t n) {
  double m = 0;
  for (std::size_t i = 0; i < n; ++i) m = std::max(m, std::abs(double(a[i]) - double(b[i])));
  return m;
}

inline double iou(const rcnn::Box& a, const rcnn::Box& b) {
  const double iw = std::max(0.0, double(std::min(a.x2, b.x2)) - std::max(a.x1, b.x1));
  const double ih = std::max(0.0, double(std::min(a.y2, b.y2)) - std::max(a.y1, b.y1));
  const double inter = iw * ih;
  const double u = double(a.area()) + double(b.area()) - inter;
  return u > 0 ? inter / u : (a == b ? 1.0 : 0.0);
}

struct RefDetection {
  rcnn::Box box;
  float score;
  int class_id;
};

inline std::vector<RefDetection> detections_json(const fs::path& p) {
  std::vector<RefDetection> out;
  for (const auto& d : read_json(p)) {
    const auto& b = d.at("box");
    out.push_back({{b[0].get<float>(), b[1].get<float>(), b[2].get<float>(), b[3].get<float>()},
                   d.at("score").get<float>(),
                   d.at("class_id").get<int>()});
  }
  return out;
}

struct MatchReport {
  std::size_t matched = 0;
  double min_iou = 1.0;
  double max_score_diff = 0.0;
};

/// Every reference detection must find its own candidate of the same class with
/// IoU >= min_iou and |score difference| <= max_score_diff (one-to-one, greedy in the
/// reference order). Also requires the same number of detections.
inline MatchReport match_detections(const std::vector<RefDetection>& ref,
                                    const std::vector<rcnn::Detection>& got, double min_iou = 0.99,
                                    double max_score_diff = 1e-3) {
  MatchReport rep;
  std::vector<bool> used(got.size(), false);
  for (const auto& r : ref) {
    int best = -1;
    double best_iou = -1;
    for (std::size_t j = 0; j < got.size(); ++j) {
      if (used[j] || got[j].class_id != r.class_id) continue;
      if (std::abs(double(got[j].score) - r.score) > max_score_diff) continue;
      const double v = iou(r.box, got[j].box);
      if (v > best_iou) best_iou = v, best = int(j);
    }
    if (best >= 0 && best_iou >= min_iou) {
      used[std::size_t(best)] = true;
      ++rep.matched;
      rep.min_iou = std::min(rep.min_iou, best_iou);
      rep.max_score_diff =
          std::max(rep.max_score_diff, std::abs(double(got[std::size_t(best)].score) - r.score));
    }
  }
  return rep;
}

}  // namespace parity
