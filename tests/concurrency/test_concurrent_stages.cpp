// Concurrency of the core (issue 6), without LibTorch or OpenMP so that ThreadSanitizer sees
// every access (`make test-tsan` builds this file alone with -fsanitize=thread):
//  1. many threads run proposal selection + level mapping + RoIAlign + box inference, each
//     with its own workspaces and NMS, on shared read-only inputs: bit-identical to one thread;
//  2. one Detector per thread (replicas) over a plain C++ executor whose weights all replicas
//     share read-only: bit-identical to one thread.
// The same test with the LibTorch pipeline is tests/reliability/test_libtorch.cpp.
#include <doctest/doctest.h>

#include <rcnn/anchors/grid_anchor_generator.hpp>
#include <rcnn/box/softmax_box_inference.hpp>
#include <rcnn/detector.hpp>
#include <rcnn/io/bundle.hpp>
#include <rcnn/nms/bitmask_nms.hpp>
#include <rcnn/proposals/topk_proposal_selector.hpp>
#include <rcnn/roi_align/level_mapper.hpp>
#include <rcnn/roi_align/roi_align_ref.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <latch>
#include <memory>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "../support/fake_exec.hpp"

namespace {

namespace fs = std::filesystem;
constexpr int kThreads = 4;

/// Shared, read-only inputs of the stage pipeline: two RPN levels and two feature maps.
struct SharedInputs {
  rcnn::Size image{96, 128};
  rcnn::RpnConfig rpn;
  rcnn::RoiHeadsConfig heads;
  std::vector<std::vector<rcnn::Box>> anchors;
  std::vector<std::vector<float>> logits, deltas, features;
  std::vector<rcnn::RpnLevelInput> levels;
  std::vector<rcnn::FeatureMap> maps;
  std::vector<float> scales{0.25f, 0.125f};
  std::vector<float> head_logits, head_deltas;  // for up to kMaxRois rows
  static constexpr int kChannels = 8, kMaxRois = 200;

  SharedInputs() {
    rpn.pre_nms_topk = 300;
    rpn.post_nms_topk = 150;
    heads.num_classes = 5;
    heads.score_threshold = 0.1f;
    heads.detections_per_image = 40;
    heads.pooler.resolution = 4;
    std::mt19937 rng(42);
    std::normal_distribution<float> normal(0.f, 1.f);
    rcnn::AnchorConfig ac;
    ac.sizes = {{16.f}, {32.f}};
    ac.aspect_ratios = {{0.5f, 1.f, 2.f}};
    const int strides[2] = {4, 8};
    for (std::size_t l = 0; l < 2; ++l) {
      const int s = strides[l];
      const rcnn::Size grid{image.height / s, image.width / s};
      anchors.emplace_back();
      rcnn::GridAnchorGenerator{}(ac, rcnn::Conventions::detectron2, l, s, grid, image,
                                  anchors.back());
      const std::size_t cells = std::size_t(grid.height) * std::size_t(grid.width);
      logits.emplace_back(3 * cells);
      deltas.emplace_back(12 * cells);
      features.emplace_back(std::size_t(kChannels) * cells);
      for (float& v : logits.back()) v = normal(rng);
      for (float& v : deltas.back()) v = 0.2f * normal(rng);
      for (float& v : features.back()) v = normal(rng);
    }
    for (std::size_t l = 0; l < 2; ++l) {
      const int s = strides[l];
      const int H = image.height / s, W = image.width / s;
      levels.push_back({{logits[l].data(), 3, H, W}, {deltas[l].data(), 12, H, W}, anchors[l]});
      maps.push_back({features[l].data(), kChannels, H, W});
    }
    head_logits.resize(std::size_t(kMaxRois) * 6);
    head_deltas.resize(std::size_t(kMaxRois) * 20);
    for (float& v : head_logits) v = 2.f * normal(rng);
    for (float& v : head_deltas) v = 0.1f * normal(rng);
  }
};

/// Everything one pipeline run produces, compared bit for bit.
struct StageOutputs {
  rcnn::ScoredBoxes proposals;
  std::vector<int> levels;
  std::vector<float> pooled;
  std::vector<rcnn::Detection> detections;
  bool operator==(const StageOutputs& o) const {
    const auto same_bytes = [](const auto& a, const auto& b) {
      return a.size() == b.size() &&
             (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(a[0])) == 0);
    };
    return same_bytes(proposals.boxes, o.proposals.boxes) &&
           same_bytes(proposals.scores, o.proposals.scores) && levels == o.levels &&
           same_bytes(pooled, o.pooled) && same_bytes(detections, o.detections);
  }
};

/// Per-thread state: workspaces and stateful policies are never shared.
struct StageWorker {
  rcnn::BitmaskNms nms;
  rcnn::TopKProposalSelector select;
  rcnn::SoftmaxBoxInference infer;
  rcnn::RoIAlignRef roi_align;

  void run(const SharedInputs& in, StageOutputs& out) {
    select(std::span<const rcnn::RpnLevelInput>(in.levels), in.image, in.rpn, nms, out.proposals);
    const std::size_t R = std::min<std::size_t>(out.proposals.size(), SharedInputs::kMaxRois);
    const std::span<const rcnn::Box> rois(out.proposals.boxes.data(), R);
    out.levels.resize(R);
    rcnn::assign_levels(rois, in.heads.pooler, 2, 3, std::span<int>(out.levels));  // 0 or 1
    const int P = in.heads.pooler.resolution;
    out.pooled.resize(R * SharedInputs::kChannels * std::size_t(P * P));
    roi_align(std::span<const rcnn::FeatureMap>(in.maps), std::span<const float>(in.scales), rois,
              std::span<const int>(out.levels), in.heads.pooler, std::span<float>(out.pooled));
    const rcnn::BoxHeadView head{in.head_logits.data(), in.head_deltas.data(), int(R), 6, 20};
    infer(rois, head, in.image, in.heads, nms, out.detections);
  }
};

rcnn::ModelConfig fixture_config() {
  const fs::path p =
      fs::path(RCNN_TEST_DATA_DIR) / "detectron2" / "narrow_r101_fpn_shortest_edge" / "model.json";
  std::ifstream in(p);
  std::stringstream text;
  text << in.rdbuf();
  rcnn::ModelConfig cfg = rcnn::parse_model_json(text.str(), p.string());
  // Smaller inputs and fewer proposals keep the run short under ThreadSanitizer.
  cfg.input.resize.min_size = 96;
  cfg.input.resize.max_size = 160;
  cfg.rpn.pre_nms_topk = 200;
  cfg.rpn.post_nms_topk = 100;
  return cfg;
}

struct Pattern {
  int height, width;
  std::vector<std::uint8_t> pixels;
  Pattern(int h, int w, int seed) : height(h), width(w) {
    pixels.resize(std::size_t(h) * std::size_t(w) * 3);
    for (std::size_t i = 0; i < pixels.size(); ++i)
      pixels[i] = std::uint8_t((i * 7 + std::size_t(seed) * 31 + (i / 97) * 13) % 256);
  }
  rcnn::ImageView view() const { return {pixels.data(), height, width, 3}; }
};

using FakeDetector = rcnn::Detector<rcnn_test::FakeExec, rcnn::RoIAlignRef, rcnn::Detectron2Stages>;

}  // namespace

TEST_CASE("concurrency: stages on shared read-only inputs are bit-identical to one thread") {
  const SharedInputs inputs;
  StageOutputs reference;
  StageWorker{}.run(inputs, reference);
  REQUIRE(reference.proposals.size() > 50);
  REQUIRE(!reference.detections.empty());

  constexpr int kIterations = 3;
  std::vector<std::vector<StageOutputs>> outputs(kThreads, std::vector<StageOutputs>(kIterations));
  std::latch start(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      StageWorker worker;  // reused across iterations: workspaces grow once
      start.arrive_and_wait();
      for (int i = 0; i < kIterations; ++i) worker.run(inputs, outputs[std::size_t(t)][std::size_t(i)]);
    });
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t)
    for (int i = 0; i < kIterations; ++i) {
      CAPTURE(t);
      CAPTURE(i);
      CHECK(outputs[std::size_t(t)][std::size_t(i)] == reference);
    }
}

TEST_CASE("concurrency: one Detector per thread sharing read-only weights equals one thread") {
  const rcnn::ModelConfig cfg = fixture_config();
  const auto weights = rcnn_test::FakeWeights::make(cfg);
  const std::vector<Pattern> images = {Pattern(48, 64, 1), Pattern(64, 48, 2), Pattern(40, 40, 3)};

  // Reference: one detector, one thread.
  std::vector<std::vector<rcnn::Detection>> reference;
  {
    FakeDetector det(cfg, rcnn_test::FakeExec(cfg, {}, weights));
    for (const auto& im : images) reference.push_back(det(im.view()).detections);
  }
  REQUIRE(!reference[0].empty());

  std::vector<std::vector<std::vector<rcnn::Detection>>> got(kThreads);
  std::latch start(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      FakeDetector det(cfg, rcnn_test::FakeExec(cfg, {}, weights));
      got[std::size_t(t)].resize(images.size());
      start.arrive_and_wait();
      // Each thread visits the images in a different order: workspaces resize between sizes.
      for (std::size_t k = 0; k < images.size(); ++k) {
        const std::size_t i = (k + std::size_t(t)) % images.size();
        got[std::size_t(t)][i] = det(images[i].view()).detections;
      }
    });
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t)
    for (std::size_t i = 0; i < images.size(); ++i) {
      CAPTURE(t);
      CAPTURE(i);
      const auto& a = got[std::size_t(t)][i];
      const auto& b = reference[i];
      REQUIRE(a.size() == b.size());
      CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(rcnn::Detection)) == 0);
    }
}
