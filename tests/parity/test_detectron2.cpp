// Detectron2 parity: every stage of the C++ runtime against the reference outputs that a
// real Detectron2 v0.6 produced for the fixture bundles (tests/data/detectron2, FIXTURES.md).
#include "stage_parity.hpp"

#include <rcnn/detail/sha256.hpp>
#include <rcnn/mask/omp_paste.hpp>

#include "../support/fixture_masks.hpp"

namespace {

using namespace parity;
const fs::path kD2 = fs::path(RCNN_TEST_DATA_DIR) / "detectron2";
const char* kBundles[] = {"narrow_r101_fpn_shortest_edge", "narrow_r101_fpn_fixed800"};
const char* kPhotos[] = {"fruits", "messi5"};

}  // namespace

TEST_CASE("detectron2 fixtures: model.json describes the modules") {
  for (const char* b : kBundles) {
    CAPTURE(b);
    const auto cfg = rcnn::read_bundle(kD2 / b);
    CHECK(cfg.conventions == rcnn::Conventions::detectron2);
    CHECK(cfg.backbone.rpn_levels.size() == 5);
    CHECK(cfg.backbone.roi_levels.size() == 4);
    CHECK(cfg.roi_heads.num_classes + 1 == 81);
    CHECK(cfg.classes.size() == 80);
  }
  const auto fixed = rcnn::read_bundle(kD2 / "narrow_r101_fpn_fixed800");
  REQUIRE(fixed.modules.box_head.static_rois);
  CHECK(*fixed.modules.box_head.static_rois == 1000);
}

TEST_CASE("detectron2: a torchvision stage bundle refuses a detectron2 bundle") {
  CHECK_THROWS_WITH_AS(
      (rcnn::load<rcnn::TorchScriptExec, rcnn::RoIAlignRef, rcnn::TorchvisionStages>(
          kD2 / "narrow_r101_fpn_shortest_edge")),
      doctest::Contains("conventions"), rcnn::Error);
}

TEST_CASE("detectron2 stage parity") {
  for (const char* b : kBundles)
    for (const char* p : kPhotos) check_stages<rcnn::Detectron2Stages>(kD2 / b, kD2 / b / "cases" / p);
}

TEST_CASE("detectron2 end to end from the photo") {
  for (const char* b : kBundles)
    for (const char* p : kPhotos)
      CHECK(check_end_to_end<rcnn::Detectron2Stages>(kD2 / b, kD2 / b / "cases" / p) >= 20);
}

// ---------------------------------------------------------------------------------------
// Mask R-CNN (narrow_mask_rcnn_r101_fpn_shortest_edge): its box modules are the Faster R-CNN
// fixture's (same weights; symlinked in tests/data), so the box-stage reference files are
// read from narrow_r101_fpn_shortest_edge's cases.

namespace {

const fs::path kMaskBundle = kD2 / "narrow_mask_rcnn_r101_fpn_shortest_edge";
const fs::path kBoxBundle = kD2 / "narrow_r101_fpn_shortest_edge";

/// A real TorchScriptExec that records the mask head's row counts.
struct MaskRecordingExec {
  using Options = rcnn::TorchScriptOptions;
  MaskRecordingExec(const rcnn::ModelConfig& cfg, Options o) : inner(cfg, o) {}
  void run_backbone_rpn(const rcnn::TensorView& in, rcnn::BackboneOutputs& out) {
    inner.run_backbone_rpn(in, out);
  }
  void run_box_head(const rcnn::TensorView& in, rcnn::BoxHeadOutputs& out) {
    inner.run_box_head(in, out);
  }
  void run_mask_head(const rcnn::TensorView& in, rcnn::MaskHeadOutputs& out) {
    mask_head_rows.push_back(in.shape[0]);
    inner.run_mask_head(in, out);
  }
  rcnn::TorchScriptExec inner;
  std::vector<std::int64_t> mask_head_rows;
};
static_assert(rcnn::MaskExecutor<MaskRecordingExec>);
static_assert(rcnn::MaskExecutor<rcnn::TorchScriptExec>);
static_assert(!rcnn::MaskExecutor<parity::RecordingExec>);

using rcnn_test::MaskReport;

/// Each detection's mask against masks.npz (one mask per detection).
MaskReport compare_masks(const rcnn::DetectionResult& r, const rcnn_test::FixtureMasks& ref) {
  REQUIRE(r.masks.size() == r.detections.size());
  return rcnn_test::compare_masks(r.masks, r.image_size, ref);
}

}  // namespace

TEST_CASE("detectron2 Mask R-CNN: model.json and the mask head module") {
  const auto cfg = rcnn::read_bundle(kMaskBundle);
  CHECK(cfg.architecture == rcnn::Architecture::mask_rcnn);
  REQUIRE(cfg.mask_head);
  CHECK(cfg.mask_head->pooler.resolution == 14);
  CHECK(cfg.mask_head->paste == rcnn::MaskHeadConfig::Paste::detectron2);
  // A Faster R-CNN-only executor is refused with a message naming the missing member.
  rcnn::ModelConfig c = cfg;
  CHECK_THROWS_WITH_AS(
      (rcnn::Detector<parity::RecordingExec, rcnn::RoIAlignRef, rcnn::Detectron2Stages>(
          c, parity::RecordingExec(c, {1}))),
      doctest::Contains("run_mask_head"), rcnn::Error);
  // A paste policy of the other convention is refused.
  struct TvPaste : rcnn::Detectron2Stages {
    using mask_paste = rcnn::TorchvisionPasteRef;
  };
  CHECK_THROWS_WITH_AS((rcnn::Detector<rcnn::TorchScriptExec, rcnn::RoIAlignRef, TvPaste>(
                           c, rcnn::TorchScriptExec(c))),
                       doctest::Contains("mask_head.paste"), rcnn::Error);
}

TEST_CASE("detectron2 Mask R-CNN: mask features and mask logits from the reference stages") {
  // Mask RoIAlign on the reference feature maps and detection boxes (bit-identical to
  // Detectron2's mask_pooler: per-detection SHA-256 of mask_features.npy), then the mask
  // head through TorchScriptExec: its class channels against mask_logits_class.npy.
  const auto cfg = rcnn::read_bundle(kMaskBundle);
  const auto hashes = read_json(kMaskBundle / "mask_features.sha256.json");
  rcnn::TorchScriptExec exec(cfg);
  for (const char* p : kPhotos) {
    CAPTURE(p);
    const fs::path box_dir = kBoxBundle / "cases" / p, mask_dir = kMaskBundle / "cases" / p;
    const RoiFeatures f = roi_features(box_dir, cfg);  // the box fixture's feature maps
    const auto dets = npy(mask_dir / "detections_resized.npy");
    const std::size_t D = dets.shape()[0];
    std::vector<rcnn::Box> boxes(D);
    std::vector<int> classes(D), levels(D);
    for (std::size_t i = 0; i < D; ++i) {
      boxes[i] = {dets(i, 0), dets(i, 1), dets(i, 2), dets(i, 3)};
      classes[i] = int(dets(i, 5));
    }
    rcnn::assign_levels(boxes, cfg.mask_head->pooler, 2, 5, levels);
    const auto ref_levels = npy<std::int64_t>(mask_dir / "mask_level.npy");
    for (std::size_t i = 0; i < D; ++i) CHECK(levels[i] == ref_levels(i));
    const int C = cfg.backbone.channels, P = cfg.mask_head->pooler.resolution;
    const std::size_t roi = std::size_t(C) * P * P;
    std::vector<float> pooled(D * roi);
    rcnn::OmpRoIAlign pool;
    pool.num_threads = 2;
    pool(f.maps, f.scales, boxes, levels, cfg.mask_head->pooler, pooled);
    std::size_t hash_mismatch = 0;
    for (std::size_t i = 0; i < D; ++i) {
      const auto* bytes = reinterpret_cast<const char*>(pooled.data() + i * roi);
      hash_mismatch += rcnn::detail::sha256_hex(std::string_view(bytes, roi * sizeof(float))) !=
                       hashes[p]["per_detection"][i].get<std::string>();
    }
    CHECK(hash_mismatch == 0);

    rcnn::MaskHeadOutputs out;
    exec.run_mask_head({pooled.data(), {std::int64_t(D), C, P, P}}, out);
    REQUIRE(out.logits.shape == std::array<std::int64_t, 4>{std::int64_t(D), 80, 28, 28});
    const auto ref_logits = npy(mask_dir / "mask_logits_class.npy");
    double diff = 0;
    for (std::size_t i = 0; i < D; ++i)
      diff = std::max(diff, max_abs_diff(out.logits.data + (i * 80 + std::size_t(classes[i])) * 784,
                                         ref_logits.data() + i * 784, 784));
    MESSAGE(std::string(p) << ": mask logits (class channels) max |diff| " << diff << " over " << D
              << " detections; pooled features bit-identical: " << (hash_mismatch == 0));
    CHECK(diff <= 1e-4);
  }
}

TEST_CASE("detectron2 Mask R-CNN end to end from the photo") {
  // rcnn::load (reference paste) and an explicit Detector with the OpenMP paste, 1 and 2
  // LibTorch threads, and the mask head run in static chunks of 16 rows: the same masks.
  for (const char* p : kPhotos) {
    CAPTURE(p);
    const fs::path mask_dir = kMaskBundle / "cases" / p;
    const auto ref_dets = detections_json(mask_dir / "detections.json");
    const auto ref_masks = rcnn_test::read_fixture_masks((mask_dir / "masks.npz").string());
    cv::Mat img = rcnn::cv_io::read_image(kBoxBundle / "cases" / p / "image.jpg");
    cv::Mat storage;
    const rcnn::ImageView view = rcnn::cv_io::view(img, storage);

    auto any = rcnn::load<rcnn::TorchScriptExec>(kMaskBundle);
    CHECK(any.has_masks());
    rcnn::Trace trace;
    const auto r1 = any(view, &trace);
    const auto rep = match_detections(ref_dets, r1.detections);
    CHECK(rep.matched == ref_dets.size());
    CHECK(r1.detections.size() == ref_dets.size());
    const MaskReport m1 = compare_masks(r1, ref_masks);
    // Probabilities from the photo: the backbone differs from the fixture machine by ~1e-6
    // relative (other kernels), which reaches the sigmoid.
    const auto ref_probs = npy(mask_dir / "mask_probs.npy");
    REQUIRE(trace.mask_size == 28);
    REQUIRE(trace.mask_probs.size() == ref_probs.size());
    const double prob_diff = max_abs_diff(trace.mask_probs.data(), ref_probs.data(), ref_probs.size());
    const auto ref_levels = npy<std::int64_t>(mask_dir / "mask_level.npy");
    REQUIRE(trace.mask_levels.size() == ref_levels.size());
    for (std::size_t i = 0; i < ref_levels.size(); ++i) CHECK(trace.mask_levels[i] == ref_levels(i));
    MESSAGE(std::string(p) << ": end to end " << rep.matched << "/" << ref_dets.size()
              << " detections; masks min IoU " << m1.min_iou << ", max pixel-count diff "
              << m1.max_count_diff << " (" << m1.max_rel_count_diff * 100 << "%), "
              << m1.pixels << " mask pixels; mask probs max |diff| " << prob_diff);
    CHECK(m1.min_iou >= 0.99);
    CHECK(m1.max_rel_count_diff <= 0.01);
    CHECK(prob_diff <= 1e-3);
    CHECK(r1.timing.mask_head > 0);

    rcnn::ModelConfig cfg = rcnn::read_bundle(kMaskBundle);
    cfg.modules.mask_head->static_rois = 16;
    for (int threads : {1, 2}) {
      CAPTURE(threads);
      MaskRecordingExec exec(cfg, {threads});
      rcnn::OmpRoIAlign roi;
      roi.num_threads = 2;
      rcnn::Detector<MaskRecordingExec, rcnn::OmpRoIAlign,
                     rcnn::WithOmpPaste<rcnn::Detectron2Stages>>
          det(cfg, std::move(exec), roi);
      det.mask_paste().num_threads = 2;
      const auto r2 = det(view);
      const std::size_t D = r2.detections.size();
      CHECK(D == ref_dets.size());
      // ceil(D / 16) chunks of exactly 16 rows (the last one zero-padded).
      CHECK(det.executor().mask_head_rows ==
            std::vector<std::int64_t>((D + 15) / 16, std::int64_t(16)));
      const MaskReport m2 = compare_masks(r2, ref_masks);
      CHECK(m2.min_iou >= 0.99);
      CHECK(m2.max_rel_count_diff <= 0.01);
      if (threads == 1) {  // same networks and pooling: the same masks as rcnn::load's
        for (std::size_t i = 0; i < D; ++i) CHECK(r2.masks[i].bits == r1.masks[i].bits);
      }
    }
  }
}
