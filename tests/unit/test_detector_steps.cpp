// The Detector's mechanisms (issue 15): per-detection outputs (masks, keypoints) follow
// postprocessing by the indices it keeps; stages are values (constructor parameters, separate RPN / box NMS slots);
// re-scoring NMS through batched_nms; set_threads; reserve_for.

#include <doctest/doctest.h>

#include <rcnn/detector.hpp>
#include <rcnn/mask/detectron2_paste.hpp>
#include <rcnn/nms/batched_nms.hpp>
#include <rcnn/nms/greedy_nms.hpp>

#include <cmath>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "../support/fake_detector.hpp"
#include "../support/fake_exec.hpp"

namespace {

using rcnn_test::fixture_config;
using rcnn_test::TestImage;

/// Box inference that returns a fixed list of detections (resized frame), whatever the head
/// says: lets a test choose detections that share class and score.
struct FixedBoxInference {
  std::vector<rcnn::Detection> dets;
  void reserve(const rcnn::StageSizing&) {}
  template <class Nms>
  void operator()(std::span<const rcnn::Box>, const rcnn::BoxHeadView&, rcnn::Size,
                  const rcnn::RoiHeadsConfig&, Nms&, std::vector<rcnn::Detection>& out) {
    out = dets;
  }
};
struct FixedStages : rcnn::Detectron2Stages {
  using box_inference = FixedBoxInference;
};

/// An NMS with a constructor parameter that counts its calls (greedy NMS inside).
struct TaggedNms {
  explicit TaggedNms(int t) : tag(t) {}
  int tag;
  int calls = 0;
  void reserve(std::size_t) {}
  void operator()(std::span<const rcnn::Box> boxes, std::span<const float> scores, double iou,
                  std::vector<int>& keep) {
    ++calls;
    rcnn::GreedyNms{}(boxes, scores, iou, keep);
  }
};
struct TaggedBoxNms : rcnn::Detectron2Stages {
  using box_nms = TaggedNms;
};

/// A re-scoring NMS: keeps every box and multiplies each score by 1 / (1 + its rank).
struct RankDecayNms {
  void reserve(std::size_t) {}
  void operator()(std::span<const rcnn::Box> boxes, std::span<float> scores, double iou,
                  std::vector<int>& keep) {
    rcnn::GreedyNms{}(boxes, scores, 1.0 + iou, keep);  // IoU > 1 never suppresses: all, sorted
    for (std::size_t r = 0; r < keep.size(); ++r) scores[std::size_t(keep[r])] /= float(r + 1);
  }
};

/// FakeExec with a keypoint head: row r's heatmap for keypoint k peaks at a cell set by the
/// row's mean pooled feature, so that every detection decodes to its own positions.
struct KeypointFakeExec : rcnn_test::FakeExec {
  using rcnn_test::FakeExec::FakeExec;
  std::vector<float> heatmaps;
  int K = 3, S = 8;
  void run_keypoint_head(const rcnn::TensorView& rois, rcnn::KeypointHeadOutputs& out) {
    const std::int64_t R = rois.shape[0];
    const std::size_t per = std::size_t(rois.shape[1] * rois.shape[2] * rois.shape[3]);
    const std::size_t plane = std::size_t(S) * std::size_t(S);
    heatmaps.assign(std::size_t(R) * std::size_t(K) * plane, 0.f);
    for (std::int64_t r = 0; r < R; ++r) {
      double mean = 0;
      for (std::size_t i = 0; i < per; ++i) mean += rois.data[std::size_t(r) * per + i];
      const std::size_t cell = std::size_t(std::abs(std::lround(1e4 * mean))) % plane;
      for (int k = 0; k < K; ++k)
        heatmaps[(std::size_t(r) * std::size_t(K) + std::size_t(k)) * plane +
                 (cell + 5 * std::size_t(k)) % plane] = 5.f;
    }
    out.heatmaps = {heatmaps.data(), {R, K, S, S}};
  }
};

}  // namespace

static_assert(rcnn::NmsPolicy<RankDecayNms>);
static_assert(rcnn::KeypointExecutor<KeypointFakeExec>);
static_assert(!rcnn::KeypointExecutor<rcnn_test::FakeExec>);

TEST_CASE("keypoints follow postprocessing by index, scaled like the boxes") {
  rcnn::ModelConfig cfg = fixture_config("narrow_r101_fpn_shortest_edge", "/bundles/kp");
  cfg.architecture = rcnn::Architecture::keypoint_rcnn;
  rcnn::KeypointHeadConfig kh;
  kh.num_keypoints = 3;
  kh.heatmap_size = 8;
  kh.keypoint_names = {"a", "b", "c"};
  cfg.keypoint_head = kh;
  cfg.modules.keypoint_head = rcnn::ModuleConfig{"keypoint_head.pt", std::nullopt, 2, std::nullopt};
  REQUIRE(cfg.postprocess.drop_empty);
  const TestImage img(60, 90);
  // Resized frame 320 x 480; detection 0 has zero width and is dropped by postprocessing.
  FixedBoxInference fixed;
  fixed.dets = {{{100.f, 50.f, 100.f, 150.f}, 0.75f, 3},
                {{20.f, 20.f, 200.f, 160.f}, 0.75f, 3},
                {{240.f, 120.f, 470.f, 310.f}, 0.75f, 3}};
  std::string why;
  CHECK_FALSE((rcnn::Detector<rcnn_test::FakeExec, rcnn::RoIAlignRef, FixedStages>::can_implement(cfg, &why)));
  CHECK(why.find("run_keypoint_head") != std::string::npos);
  rcnn::Detector<KeypointFakeExec, rcnn::RoIAlignRef, FixedStages> det(
      cfg, KeypointFakeExec(cfg), rcnn::RoIAlignRef{},
      rcnn::StageSet<FixedStages>{.box_inference = fixed});
  CHECK(det.has_keypoints());
  rcnn::Trace trace;
  const rcnn::DetectionResult r = det(img.view, &trace);
  REQUIRE(r.detections.size() == 2);
  CHECK(trace.kept == std::vector<int>{1, 2});
  REQUIRE(r.num_keypoints == 3);
  REQUIRE(r.keypoints.size() == 6);
  REQUIRE(trace.keypoints_resized.size() == 9);
  REQUIRE(trace.keypoint_heatmaps.size() == 3 * 3 * 64);
  CHECK(r.masks.empty());
  const float sx = float(double(r.image_size.width) / double(r.resized_size.width));
  const float sy = float(double(r.image_size.height) / double(r.resized_size.height));
  for (std::size_t k = 0; k < 2; ++k) {
    CAPTURE(k);
    const std::size_t j = std::size_t(trace.kept[k]);
    for (std::size_t p = 0; p < 3; ++p) {
      const rcnn::Keypoint& want = trace.keypoints_resized[j * 3 + p];
      const rcnn::Keypoint& got = r.keypoints_of(k)[p];
      CHECK(got.x == want.x * sx);
      CHECK(got.y == want.y * sy);
      CHECK(got.score == want.score);
      // Decoded inside the detection's resized box.
      CHECK(want.x >= trace.detections_resized[j].box.x1);
      CHECK(want.x <= trace.detections_resized[j].box.x2);
    }
    // What a match by position would have given differs: the test can fail.
    CHECK(trace.keypoints_resized[k * 3].x != trace.keypoints_resized[j * 3].x);
  }
}

static_assert(rcnn::StageBundle<TaggedBoxNms>);
static_assert(!rcnn::Detector<rcnn_test::FakeExec, rcnn::RoIAlignRef, TaggedBoxNms>::default_stages);

TEST_CASE("masks follow postprocessing by index: two survivors with equal class and score") {
  const rcnn::ModelConfig cfg =
      fixture_config("narrow_mask_rcnn_r101_fpn_shortest_edge", "/bundles/mask");
  REQUIRE(cfg.postprocess.drop_empty);
  const TestImage img(60, 90);
  // Resized frame 320 x 480. Detection 0 has zero width: postprocessing drops it. 1 and 2
  // share class and score, so a match by (class, score) would give them 0's and 1's masks.
  FixedBoxInference fixed;
  fixed.dets = {{{100.f, 50.f, 100.f, 150.f}, 0.75f, 3},
                {{20.f, 20.f, 200.f, 160.f}, 0.75f, 3},
                {{240.f, 120.f, 470.f, 310.f}, 0.75f, 3}};
  rcnn::Detector<rcnn_test::FakeExec, rcnn::RoIAlignRef, FixedStages> det(
      cfg, rcnn_test::FakeExec(cfg), rcnn::RoIAlignRef{},
      rcnn::StageSet<FixedStages>{.box_inference = fixed});
  rcnn::Trace trace;
  const rcnn::DetectionResult r = det(img.view, &trace);
  REQUIRE(r.detections.size() == 2);
  REQUIRE(r.masks.size() == 2);
  CHECK(trace.kept == std::vector<int>{1, 2});
  REQUIRE(trace.mask_probs.size() == 3 * 28 * 28);
  const std::size_t plane = 28 * 28;
  const auto paste = [&](std::size_t j, const rcnn::Box& box) {
    std::vector<rcnn::InstanceMask> out(1);
    rcnn::Detectron2PasteRef{}(rcnn::MaskProbs{trace.mask_probs.data() + j * plane, 1, 28},
                               std::span<const rcnn::Box>(&box, 1), r.image_size,
                               cfg.mask_head->mask_threshold, out);
    return out[0];
  };
  for (std::size_t k = 0; k < 2; ++k) {
    CAPTURE(k);
    const rcnn::InstanceMask want = paste(std::size_t(trace.kept[k]), r.detections[k].box);
    CHECK(r.masks[k].x0 == want.x0);
    CHECK(r.masks[k].y0 == want.y0);
    CHECK(r.masks[k].bits == want.bits);
    // What a match by value would have pasted differs: the test can fail.
    CHECK(paste(k, r.detections[k].box).bits != want.bits);
  }
}

TEST_CASE("stages are values: a box NMS with a constructor parameter, the RPN NMS unchanged") {
  const rcnn::ModelConfig cfg = fixture_config();
  const TestImage img(60, 90);
  rcnn::Detector<rcnn_test::FakeExec, rcnn::RoIAlignRef, TaggedBoxNms> det(
      cfg, rcnn_test::FakeExec(cfg), rcnn::RoIAlignRef{},
      rcnn::StageSet<TaggedBoxNms>{.box_nms = TaggedNms(7)});
  static_assert(std::is_same_v<decltype(det.stages().rpn_nms), rcnn::BitmaskNms>);
  rcnn::Detector<rcnn_test::FakeExec, rcnn::RoIAlignRef, rcnn::Detectron2Stages> plain(
      cfg, rcnn_test::FakeExec(cfg));
  rcnn::Trace t1, t2;
  const auto r1 = det(img.view, &t1);
  const auto r2 = plain(img.view, &t2);
  CHECK(det.stages().box_nms.tag == 7);
  CHECK(det.stages().box_nms.calls > 0);  // per class with candidates
  CHECK(t1.proposals.boxes == t2.proposals.boxes);
  REQUIRE(r1.detections.size() == r2.detections.size());
  for (std::size_t i = 0; i < r1.detections.size(); ++i) {
    CHECK(r1.detections[i].box == r2.detections[i].box);
    CHECK(r1.detections[i].score == r2.detections[i].score);
  }
}

TEST_CASE("batched_nms: a re-scoring policy's scores are written back and order the union") {
  const std::vector<rcnn::Box> boxes{{0, 0, 10, 10}, {1, 1, 11, 11}, {50, 50, 60, 60},
                                     {51, 51, 61, 61}};
  std::vector<float> scores{0.9f, 0.8f, 0.7f, 0.6f};
  const std::vector<int> groups{0, 0, 1, 1};
  std::vector<int> keep;
  rcnn::BatchedNmsWorkspace ws;
  RankDecayNms nms;
  rcnn::batched_nms(nms, boxes, scores, groups, 0.5, keep, ws);
  CHECK(scores == std::vector<float>{0.9f, 0.4f, 0.7f, 0.3f});
  CHECK(keep == std::vector<int>{0, 2, 1, 3});
}

TEST_CASE("can_implement: the set-up checks without building a detector") {
  using D2 = rcnn::Detector<rcnn_test::FakeExec, rcnn::RoIAlignRef, rcnn::Detectron2Stages>;
  using Tv = rcnn::Detector<rcnn_test::FakeExec, rcnn::RoIAlignRef, rcnn::TorchvisionStages>;
  const rcnn::ModelConfig cfg = fixture_config();
  std::string why;
  CHECK(D2::can_implement(cfg, &why));
  CHECK(why.empty());
  CHECK(!Tv::can_implement(cfg, &why));
  CHECK(why.find("conventions") != std::string::npos);
  CHECK_THROWS_AS(Tv(cfg, rcnn_test::FakeExec(cfg)), rcnn::Error);  // the constructor agrees
}

TEST_CASE("set_threads and reserve_for") {
  const rcnn::ModelConfig cfg = fixture_config();
  rcnn::Detector<rcnn_test::FakeExec, rcnn::RoIAlignRef, rcnn::Detectron2Stages> det(
      cfg, rcnn_test::FakeExec(cfg));
  det.set_threads(2);  // no threaded stage here: compiles and does nothing
  det.reserve_for({60, 90});
  const TestImage img(60, 90);
  rcnn::Detector<rcnn_test::FakeExec, rcnn::RoIAlignRef, rcnn::Detectron2Stages> fresh(
      cfg, rcnn_test::FakeExec(cfg));
  const auto a = det(img.view);
  const auto b = fresh(img.view);
  REQUIRE(a.detections.size() == b.detections.size());
  for (std::size_t i = 0; i < a.detections.size(); ++i) CHECK(a.detections[i].box == b.detections[i].box);
}
