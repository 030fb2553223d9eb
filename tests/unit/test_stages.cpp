// Anchor generator and box coder against torchvision's own classes (tests/reference/gen_stages.py),
// plus the framework-independent parts of proposal selection and box inference.
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xnpy.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include <rcnn/anchors/grid_anchor_generator.hpp>
#include <rcnn/box/box_coder.hpp>
#include <rcnn/box/softmax_box_inference.hpp>
#include <rcnn/nms/greedy_nms.hpp>
#include <rcnn/postprocess/rescale_postprocess.hpp>
#include <rcnn/proposals/topk_proposal_selector.hpp>
#include <rcnn/roi_align/level_mapper.hpp>

namespace fs = std::filesystem;

namespace {
const fs::path kRef = fs::path(RCNN_REFERENCE_DIR) / "gen_stages";

xt::xarray<float> npy(const std::string& name) {
  const fs::path p = kRef / name;
  REQUIRE_MESSAGE(fs::exists(p), "missing " << p << " (run ctest: the reference fixture makes it)");
  return xt::load_npy<float>(p.string());
}
}  // namespace

TEST_CASE("box coder equals torchvision BoxCoder.decode_single") {
  const auto boxes = npy("coder_boxes.npy");
  const auto deltas = npy("coder_deltas.npy");
  for (const char* name : {"rpn", "roi"}) {
    CAPTURE(name);
    const auto ref = npy(std::string("coder_") + name + "_decoded.npy");
    rcnn::BoxCoder coder;
    if (std::string(name) == "roi") coder.weights = {10.f, 10.f, 5.f, 5.f};
    double max_rel = 0;
    const std::size_t n = boxes.shape()[0];
    for (std::size_t i = 0; i < n; ++i) {
      const rcnn::Box b{boxes(i, 0), boxes(i, 1), boxes(i, 2), boxes(i, 3)};
      const rcnn::Box d = coder.decode(b, deltas(i, 0), deltas(i, 1), deltas(i, 2), deltas(i, 3));
      const float got[4] = {d.x1, d.y1, d.x2, d.y2};
      // Relative to the box's magnitude: x1 = ctr - w / 2 may cancel to ~0.
      double scale = 1.0;
      for (int k = 0; k < 4; ++k) scale = std::max(scale, std::abs(double(ref(i, std::size_t(k)))));
      for (int k = 0; k < 4; ++k)
        max_rel = std::max(max_rel, std::abs(got[k] - ref(i, std::size_t(k))) / scale);
    }
    MESSAGE("box coder " << std::string(name) << ": max relative difference " << max_rel);
    // exp() of ATen's vectorised (SLEEF) kernel and libm's expf differ in the last bit on
    // some inputs: 1 ulp of the box size (6e-8 relative) after the subtraction.
    CHECK(max_rel <= 2.5e-7);
  }
}

TEST_CASE("anchors equal torchvision AnchorGenerator") {
  std::ifstream f(kRef / "manifest.json");
  REQUIRE(f.good());
  const auto manifest = nlohmann::json::parse(f)["anchors"];
  for (const auto& [name, c] : manifest.items()) {
    CAPTURE(name);
    rcnn::AnchorConfig cfg;
    cfg.sizes = c["sizes"].get<std::vector<std::vector<float>>>();
    cfg.aspect_ratios = c["aspect_ratios"].get<std::vector<std::vector<float>>>();
    cfg.round_cell_anchors = true;
    cfg.stride_from = rcnn::AnchorConfig::StrideFrom::image;
    const auto ref = npy("anchors_" + name + ".npy");
    const rcnn::Size image{c["image_size"][0].get<int>(), c["image_size"][1].get<int>()};
    std::size_t row = 0;
    for (std::size_t l = 0; l < c["grids"].size(); ++l) {
      const rcnn::Size grid{c["grids"][l][0].get<int>(), c["grids"][l][1].get<int>()};
      std::vector<rcnn::Box> out;
      rcnn::GridAnchorGenerator{}(cfg, rcnn::Conventions::torchvision, l, /*stride unused*/ 0,
                                  grid, image, out);
      REQUIRE(out.size() == c["counts"][l].get<std::size_t>());
      for (const auto& b : out) {
        REQUIRE(b.x1 == ref(row, 0));
        REQUIRE(b.y1 == ref(row, 1));
        REQUIRE(b.x2 == ref(row, 2));
        REQUIRE(b.y2 == ref(row, 3));
        ++row;
      }
    }
    CHECK(row == ref.shape()[0]);
  }
}

TEST_CASE("anchors and level mapper with one feature map (Detectron2 C4 / DC5)") {
  // One level, 5 sizes x 3 aspect ratios: 15 anchors per cell, Detectron2's size-major cell
  // order (DefaultAnchorGenerator.generate_cell_anchors), shifted by the stride of 16.
  rcnn::AnchorConfig cfg;
  cfg.sizes = {{32.f, 64.f, 128.f, 256.f, 512.f}};
  cfg.aspect_ratios = {{0.5f, 1.f, 2.f}};
  REQUIRE(cfg.anchors_per_cell(0) == 15);
  std::vector<rcnn::Box> out;
  const rcnn::Size grid{3, 4};
  rcnn::GridAnchorGenerator{}(cfg, rcnn::Conventions::detectron2, 0, 16, grid, {48, 64}, out);
  REQUIRE(out.size() == 3u * 4u * 15u);
  // Cell (y 2, x 3), anchor 7 = size 128 (index 2), ratio 1 (index 1): a 128 x 128 square.
  const rcnn::Box b = out[(2 * 4 + 3) * 15 + 7];
  CHECK(b.x1 == 48.f - 64.f);
  CHECK(b.y1 == 32.f - 64.f);
  CHECK(b.x2 == 48.f + 64.f);
  CHECK(b.y2 == 32.f + 64.f);
  // Anchor 3 = size 64, ratio 0.5: w = sqrt(64^2 / 0.5), h = 0.5 w (wider than high).
  const rcnn::Box c = out[3];
  CHECK(c.x2 - c.x1 == doctest::Approx(64.0 * std::sqrt(2.0)).epsilon(1e-6));
  CHECK(c.y2 - c.y1 == doctest::Approx(32.0 * std::sqrt(2.0)).epsilon(1e-6));

  // Detectron2's ROIPooler with one level assigns no level: every box, tiny, huge or empty,
  // is pooled from that map. The mapper with min_level == max_level (log2 16 = 4) agrees.
  rcnn::PoolerConfig pooler;
  const std::vector<rcnn::Box> boxes{{0, 0, 1, 1}, {0, 0, 2000, 2000}, {5, 5, 5, 5}, {0, 0, 224, 224}};
  std::vector<int> levels(boxes.size(), -1);
  rcnn::assign_levels(std::span<const rcnn::Box>(boxes), pooler, 4, 4, std::span<int>(levels));
  CHECK(levels == std::vector<int>(boxes.size(), 0));
}

TEST_CASE("proposal selector: edge cases") {
  rcnn::RpnConfig cfg;
  cfg.pre_nms_topk = 5;
  cfg.post_nms_topk = 3;
  rcnn::GreedyNms nms;
  rcnn::TopKProposalSelector select;
  rcnn::ScoredBoxes out;
  // One level, 1 anchor per cell, 2x3 grid of disjoint anchors.
  std::vector<rcnn::Box> anchors;
  for (int y = 0; y < 2; ++y)
    for (int x = 0; x < 3; ++x) anchors.push_back({x * 20.f, y * 20.f, x * 20.f + 10, y * 20.f + 10});
  std::vector<float> logits{0.1f, 0.5f, -1.f, 2.f, std::numeric_limits<float>::quiet_NaN(), 0.3f};
  std::vector<float> deltas(4 * 6, 0.f);
  const rcnn::RpnLevelInput lvl{{logits.data(), 1, 2, 3}, {deltas.data(), 4, 2, 3}, anchors};

  SUBCASE("top-k, NaN never selected, post-NMS cap") {
    select(std::span(&lvl, 1), {100, 100}, cfg, nms, out);
    REQUIRE(out.size() == 3);
    CHECK(out.scores == std::vector<float>{2.f, 0.5f, 0.3f});
    CHECK(out.boxes[0] == anchors[3]);
  }
  SUBCASE("NaN deltas drop the box") {
    deltas[3 * 1 + 0] = std::numeric_limits<float>::quiet_NaN();  // dx of cell 3
    select(std::span(&lvl, 1), {100, 100}, cfg, nms, out);
    for (const auto& b : out.boxes) CHECK(std::isfinite(b.x1));
    CHECK(out.scores[0] == 0.5f);
  }
  SUBCASE("all boxes degenerate after clipping: no proposals") {
    select(std::span(&lvl, 1), {0, 0}, cfg, nms, out);
    CHECK(out.size() == 0);
  }
  SUBCASE("sigmoid scores and a score threshold") {
    cfg.nms_scores = rcnn::RpnConfig::NmsScores::sigmoid;
    cfg.score_threshold = 0.6f;
    select(std::span(&lvl, 1), {100, 100}, cfg, nms, out);
    REQUIRE(out.size() == 2);  // sigmoid(2) = 0.88, sigmoid(0.5) = 0.62, sigmoid(0.3) = 0.57
    CHECK(out.scores[0] == doctest::Approx(1 / (1 + std::exp(-2.0))));
  }
}

TEST_CASE("box inference: edge cases") {
  rcnn::RoiHeadsConfig cfg;
  cfg.num_classes = 2;
  cfg.detections_per_image = 2;
  rcnn::GreedyNms nms;
  rcnn::SoftmaxBoxInference infer;
  std::vector<rcnn::Detection> out;
  std::vector<rcnn::Box> props{{0, 0, 10, 10}, {50, 50, 60, 60}, {20, 20, 30, 30}};
  // background last: columns (c0, c1, bg)
  std::vector<float> logits{5, 0, 0, 0, 4, 0, 0, 0, 9};
  std::vector<float> deltas(3 * 8, 0.f);
  rcnn::BoxHeadView head{logits.data(), deltas.data(), 3, 3, 8};

  SUBCASE("scores all below threshold") {
    cfg.score_threshold = 0.999f;
    infer(props, head, {100, 100}, cfg, nms, out);
    CHECK(out.empty());
  }
  SUBCASE("cap at detections_per_image, score order") {
    cfg.score_threshold = 0.0f;
    infer(props, head, {100, 100}, cfg, nms, out);
    REQUIRE(out.size() == 2);
    CHECK(out[0].score >= out[1].score);
    CHECK(out[0].class_id == 0);
    CHECK(out[1].class_id == 1);
  }
  SUBCASE("non-finite logits skip the row") {
    logits[0] = std::numeric_limits<float>::infinity();
    cfg.score_threshold = 0.5f;
    infer(props, head, {100, 100}, cfg, nms, out);
    REQUIRE(out.size() == 1);
    CHECK(out[0].class_id == 1);
  }
  SUBCASE("wrong logits width is a clear error") {
    head.logits_width = 4;
    CHECK_THROWS_WITH_AS(infer(props, head, {100, 100}, cfg, nms, out),
                         doctest::Contains("num_classes + 1 = 3"), rcnn::Error);
  }
}

TEST_CASE("postprocess: rescale, clip, drop empty") {
  std::vector<rcnn::Detection> dets{{{10, 10, 20, 20}, 0.9f, 0}, {{100, 5, 120, 6}, 0.8f, 1}};
  rcnn::PostprocessConfig cfg;
  std::vector<int> kept;
  rcnn::RescalePostprocess{}({50, 100}, {100, 50}, rcnn::Conventions::detectron2, cfg, dets, kept);
  REQUIRE(dets.size() == 1);  // the second box lies right of the image: empty after clipping
  CHECK(kept == std::vector<int>{0});
  CHECK(dets[0].box == rcnn::Box{5, 20, 10, 40});
}
