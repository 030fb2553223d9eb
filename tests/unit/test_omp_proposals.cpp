// OmpTopKProposalSelector (rcnn/proposals/omp_topk_proposal_selector.hpp) against the
// reference TopKProposalSelector: the same proposals and scores, bit for bit, for 1-4
// threads, on FPN-shaped levels with ties across segments (quantised logits), NaN / inf /
// -0 logits, both score conventions, small and large top-k, two NMS policies, and changing
// level sizes (the workspace reused).
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <random>
#include <vector>

#include "rcnn/anchors/grid_anchor_generator.hpp"
#include "rcnn/nms/bitmask_nms.hpp"
#include "rcnn/nms/greedy_nms.hpp"
#include "rcnn/proposals/omp_topk_proposal_selector.hpp"
#include "rcnn/proposals/topk_proposal_selector.hpp"

namespace {

/// P2..P6 inputs of a `height` x `width` padded image, 3 anchors per cell. `quantum` > 0
/// rounds the logits to its multiples, so that many logits tie (also across segments).
struct Levels {
  std::vector<std::vector<float>> objectness, deltas;
  std::vector<std::vector<rcnn::Box>> anchors;
  std::vector<rcnn::RpnLevelInput> inputs;

  Levels(int height, int width, float quantum, std::uint32_t seed) {
    rcnn::AnchorConfig cfg;
    cfg.sizes = {{32}, {64}, {128}, {256}, {512}};
    cfg.aspect_ratios = {{0.5f, 1.f, 2.f}};
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.f, 1.f);
    const int strides[] = {4, 8, 16, 32, 64};
    for (std::size_t l = 0; l < 5; ++l) {
      const int h = (height + strides[l] - 1) / strides[l], w = (width + strides[l] - 1) / strides[l];
      const std::size_t hw = std::size_t(h) * std::size_t(w);
      std::vector<float> o(3 * hw), d(12 * hw);
      for (float& v : o) {
        v = 2.f * normal(rng);
        if (quantum > 0) v = std::round(v / quantum) * quantum;
      }
      for (float& v : d) v = 0.2f * normal(rng);
      objectness.push_back(std::move(o));
      deltas.push_back(std::move(d));
      std::vector<rcnn::Box> a;
      rcnn::GridAnchorGenerator{}(cfg, rcnn::Conventions::torchvision, l, strides[l], {h, w},
                                  {height, width}, a);
      anchors.push_back(std::move(a));
    }
    for (std::size_t l = 0; l < 5; ++l) {
      const int h = (height + strides[l] - 1) / strides[l], w = (width + strides[l] - 1) / strides[l];
      inputs.push_back({{objectness[l].data(), 3, h, w}, {deltas[l].data(), 12, h, w}, anchors[l]});
    }
  }
};

bool same(const rcnn::ScoredBoxes& a, const rcnn::ScoredBoxes& b) {
  return a.boxes.size() == b.boxes.size() && a.scores.size() == b.scores.size() &&
         (a.boxes.empty() ||
          std::memcmp(a.boxes.data(), b.boxes.data(), a.boxes.size() * sizeof(rcnn::Box)) == 0) &&
         (a.scores.empty() ||
          std::memcmp(a.scores.data(), b.scores.data(), a.scores.size() * sizeof(float)) == 0);
}

template <class Nms = rcnn::BitmaskNms>
void check_all_threads(const Levels& lv, rcnn::Size image, const rcnn::RpnConfig& cfg,
                       rcnn::OmpTopKProposalSelector& omp) {
  rcnn::TopKProposalSelector ref;
  Nms nms_ref, nms_omp;
  rcnn::ScoredBoxes expected, got;
  ref(std::span<const rcnn::RpnLevelInput>(lv.inputs), image, cfg, nms_ref, expected);
  REQUIRE(!expected.boxes.empty());
  for (int threads = 1; threads <= 4; ++threads) {
    omp.num_threads = threads;
    omp(std::span<const rcnn::RpnLevelInput>(lv.inputs), image, cfg, nms_omp, got);
    INFO("threads " << threads << ", pre_nms_topk " << cfg.pre_nms_topk);
    CHECK(got.boxes.size() == expected.boxes.size());
    CHECK(same(got, expected));
  }
}

}  // namespace

TEST_CASE("omp proposals: identical to the reference selector") {
  rcnn::OmpTopKProposalSelector omp;  // one instance throughout: its workspace is reused
  rcnn::RpnConfig cfg;
  cfg.nms_threshold = 0.7;
  SUBCASE("800 x 1282, torchvision settings, continuous and tied logits") {
    cfg.pre_nms_topk = 1000;
    cfg.post_nms_topk = 1000;
    cfg.nms_scores = rcnn::RpnConfig::NmsScores::sigmoid;
    for (float quantum : {0.f, 0.25f, 1.f}) {
      const Levels lv(800, 1282, quantum, 3);
      INFO("quantum " << quantum);
      check_all_threads(lv, {800, 1282}, cfg, omp);
    }
  }
  SUBCASE("sizes change between calls; small and large top-k; logits with NaN, inf, -0") {
    cfg.post_nms_topk = 300;
    struct Shape {
      int h, w, k;
    };
    for (const Shape& shape : {Shape{320, 352, 1000}, Shape{800, 800, 2000}, Shape{96, 160, 1},
                               Shape{512, 700, 57}}) {
      const int h = shape.h, w = shape.w, k = shape.k;
      Levels lv(h, w, 0.5f, std::uint32_t(h + w));
      std::vector<float>& p2 = lv.objectness[0];
      p2[7] = std::numeric_limits<float>::quiet_NaN();
      p2[p2.size() / 2] = std::numeric_limits<float>::infinity();
      p2[p2.size() - 3] = -0.f;
      p2[p2.size() / 3] = 0.f;
      cfg.pre_nms_topk = k;
      cfg.nms_scores = rcnn::RpnConfig::NmsScores::logits;
      check_all_threads(lv, rcnn::Size{h, w}, cfg, omp);
      check_all_threads<rcnn::GreedyNms>(lv, rcnn::Size{h, w}, cfg, omp);  // another NMS type
      cfg.nms_scores = rcnn::RpnConfig::NmsScores::sigmoid;
      cfg.score_threshold = 0.3f;
      check_all_threads(lv, rcnn::Size{h, w}, cfg, omp);
      cfg.score_threshold.reset();
    }
  }
}
