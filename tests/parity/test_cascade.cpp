// Cascade R-CNN parity against a real Detectron2 v0.6 run during the test: the model zoo's
// Misc/cascade_mask_rcnn_R_50_FPN_3x (three box-head stages) exported by
// tools/export_detectron2.py with seeded weights, and CascadeROIHeads' inference stage by stage
// on real photos (tests/reference/gen_cascade.py writes build/reference/gen_cascade/: the
// gen_detectron2.py case files, stage 0's under the standard names, and cascade_boxes_<k>,
// cascade_box_features_<k>, cascade_class_logits_<k>, cascade_box_deltas_<k>, cascade_scores).
#include "mask_parity.hpp"

#include <rcnn/roi_heads/cascade_step.hpp>

namespace {

using namespace parity;
const fs::path kRef = fs::path(RCNN_REFERENCE_DIR) / "gen_cascade";

std::vector<std::pair<fs::path, fs::path>> cases() { return reference_cases(kRef); }

/// RecordingExec (Faster R-CNN only, on purpose: test_detectron2.cpp checks its refusal of a
/// Mask R-CNN) plus the mask head of the cascade Mask R-CNN bundles.
struct CascadeMaskExec : RecordingExec {
  using RecordingExec::RecordingExec;
  void run_mask_head(const rcnn::TensorView& in, rcnn::MaskHeadOutputs& out) { inner.run_mask_head(in, out); }
};

std::string stage_file(const std::string& name, std::size_t k) {
  return k == 0 ? name + ".npy" : "cascade_" + name + "_" + std::to_string(k) + ".npy";
}

/// Stages 1, 2 of one case fed the reference inputs of each stage, then the averaged
/// probabilities and the final box inference.
void check_cascade_stages(const fs::path& bundle, const fs::path& dir) {
  const std::string label = bundle.filename().string() + "/" + dir.filename().string();
  CAPTURE(label);
  const rcnn::ModelConfig cfg = rcnn::read_bundle(bundle);
  const auto meta = read_json(dir / "meta.json");
  const rcnn::Size resized{meta["resized_height"].get<int>(), meta["resized_width"].get<int>()};
  const std::size_t S = cfg.roi_heads.cascade.size();
  REQUIRE(S == 3);
  const int width = cfg.roi_heads.num_classes + 1;
  rcnn::TorchScriptExec exec(cfg, rcnn::TorchScriptOptions{1});
  const RoiFeatures maps = roi_features(dir, cfg);
  const auto proposals = boxes_of(npy(dir / "proposals.npy"));
  const std::size_t R = proposals.size();

  rcnn::CascadeStep step;
  step.begin(1, width, [&](std::size_t) { return R; });
  std::vector<rcnn::Box> boxes = proposals;  // stage k's input boxes (reference)
  double worst_boxes = 0, worst_features = 0, worst_logits = 0, worst_deltas = 0;
  for (std::size_t k = 0; k < S; ++k) {
    CAPTURE(k);
    const auto logits = npy(dir / stage_file("class_logits", k));
    const auto deltas = npy(dir / stage_file("box_deltas", k));
    REQUIRE(logits.shape()[0] == R);
    REQUIRE(deltas.shape()[1] == 4);  // class-agnostic
    if (k > 0) {
      // The stage's pooled features and head outputs, fed its reference boxes.
      const auto ref_feat = npy(dir / stage_file("box_features", k));
      std::vector<int> levels(R);
      const int min_level = int(std::lround(std::log2(cfg.backbone.roi_strides.front())));
      const int max_level = int(std::lround(std::log2(cfg.backbone.roi_strides.back())));
      rcnn::assign_levels(std::span<const rcnn::Box>(boxes), cfg.roi_heads.pooler, min_level, max_level,
                          std::span<int>(levels));
      std::vector<float> pooled(ref_feat.size());
      rcnn::RoIAlignRef{}(maps.maps, maps.scales, boxes, levels, cfg.roi_heads.pooler, pooled);
      worst_features = std::max(worst_features, max_abs_diff(pooled.data(), ref_feat.data(), ref_feat.size()) /
                                                    scale_of(ref_feat));
      rcnn::BoxHeadOutputs head;
      exec.run_cascade_box_head(k, {ref_feat.data(),
                                    {std::int64_t(R), std::int64_t(ref_feat.shape()[1]),
                                     std::int64_t(ref_feat.shape()[2]), std::int64_t(ref_feat.shape()[3])}},
                                head);
      REQUIRE(head.class_logits.numel() == logits.size());
      worst_logits = std::max(worst_logits, max_abs_diff(head.class_logits.data, logits.data(), logits.size()) /
                                                scale_of(logits));
      worst_deltas = std::max(worst_deltas, max_abs_diff(head.box_deltas.data, deltas.data(), deltas.size()) /
                                                scale_of(deltas));
    }
    step.add_probabilities(0, logits.data());
    if (k + 1 < S) {
      // The next stage's boxes: this stage's deltas decoded with its weights, clipped.
      step.refine(0, boxes, deltas.data(), 4, cfg.roi_heads.cascade[k].box_weights, cfg.roi_heads.scale_clamp,
                  resized);
      step.next_stage();
      const auto ref_next = boxes_of(npy(dir / stage_file("boxes", k + 1)));
      REQUIRE(ref_next.size() == R);
      const std::span<const rcnn::Box> got = step.boxes(0);
      worst_boxes = std::max(worst_boxes, max_abs_diff(reinterpret_cast<const float*>(got.data()),
                                                       reinterpret_cast<const float*>(ref_next.data()), R * 4));
      boxes = ref_next;
    }
  }
  step.average(S);
  const auto ref_scores = npy(dir / "cascade_scores.npy");
  REQUIRE(ref_scores.size() == R * std::size_t(width));
  const double score_diff = max_abs_diff(step.probabilities(0), ref_scores.data(), ref_scores.size());
  MESSAGE(label << ": cascade stages 1-2: refined boxes max |diff| " << worst_boxes
                << " px, RoIAlign max relative |diff| " << worst_features << ", heads max relative |diff| logits "
                << worst_logits << " deltas " << worst_deltas << "; averaged probabilities max |diff| "
                << score_diff);
  CHECK(worst_boxes <= 1e-4);
  CHECK(worst_features <= 1e-5);
  CHECK(worst_logits <= 1e-5);
  CHECK(worst_deltas <= 1e-5);
  CHECK(score_diff <= 1e-6);  // the softmax's last bit (ATen's vectorised sum)

  // Box inference on the reference averaged probabilities and the last stage's deltas/boxes.
  const auto last_deltas = npy(dir / stage_file("box_deltas", S - 1));
  const rcnn::BoxHeadView head{nullptr, last_deltas.data(), int(R), width, 4, ref_scores.data()};
  std::vector<rcnn::Detection> dets;
  rcnn::Detectron2Stages::box_nms nms;
  rcnn::Detectron2Stages::box_inference{}(boxes, head, resized, cfg.roi_heads, nms, dets);
  const auto ref = npy(dir / "detections_resized.npy");
  REQUIRE(dets.size() == ref.shape()[0]);
  double box_diff = 0, det_score_diff = 0;
  std::size_t class_differ = 0;
  for (std::size_t i = 0; i < dets.size(); ++i) {
    class_differ += dets[i].class_id != int(ref(i, 5));
    det_score_diff = std::max(det_score_diff, std::abs(double(dets[i].score) - ref(i, 4)));
    const float got[4] = {dets[i].box.x1, dets[i].box.y1, dets[i].box.x2, dets[i].box.y2};
    for (std::size_t c = 0; c < 4; ++c) box_diff = std::max(box_diff, std::abs(double(got[c]) - ref(i, c)));
  }
  MESSAGE(label << ": cascade box inference " << dets.size() << " detections, max |box diff| " << box_diff
                << " px, max |score diff| " << det_score_diff);
  CHECK(class_differ == 0);
  CHECK(box_diff <= 1e-3);
  CHECK(det_score_diff <= 1e-6);
}

}  // namespace

TEST_CASE("cascade: bundles exported from Misc/cascade_mask_rcnn_R_50_FPN_3x by export_detectron2.py") {
  if (generator_skipped(kRef)) return;
  const auto index = read_json(kRef / "index.json");
  REQUIRE(index["bundles"].size() == 2);
  for (const auto& [name, b] : index["bundles"].items()) {
    CAPTURE(name);
    CHECK(b["config"].get<std::string>() == "Misc/cascade_mask_rcnn_R_50_FPN_3x.yaml");
    const auto cfg = rcnn::read_bundle(kRef / name);
    CHECK(cfg.architecture == rcnn::Architecture::mask_rcnn);
    CHECK(cfg.roi_heads.class_agnostic_box_regression);
    REQUIRE(cfg.roi_heads.cascade.size() == 3);
    const std::array<std::array<float, 4>, 3> weights{{{10, 10, 5, 5}, {20, 20, 10, 10}, {30, 30, 15, 15}}};
    for (std::size_t k = 0; k < 3; ++k) CHECK(cfg.roi_heads.cascade[k].box_weights == weights[k]);
    CHECK(cfg.roi_heads.box_weights == weights[2]);
    CHECK(cfg.roi_heads.cascade[0].module == "box_head");
    REQUIRE(cfg.modules.cascade_box_heads.size() == 2);
    CHECK(cfg.modules.cascade_box_heads[0].file == "box_head_stage1.pt");
    CHECK(cfg.modules.cascade_box_heads[1].file == "box_head_stage2.pt");
    if (name.find("fixed800") != std::string::npos)
      for (const auto& m : cfg.modules.cascade_box_heads) CHECK(m.static_rois == 1000);
  }
  CHECK(cases().size() == 3);
}

TEST_CASE("cascade stage parity") {
  if (generator_skipped(kRef)) return;
  for (const auto& [bundle, dir] : cases()) {
    check_stages<rcnn::Detectron2Stages>(bundle, dir);  // through stage 0's box head
    check_cascade_stages(bundle, dir);
    check_mask_stages<rcnn::Detectron2Stages>(bundle, dir);
  }
}

TEST_CASE("cascade end to end from the photo") {
  if (generator_skipped(kRef)) return;
  for (const auto& [bundle, dir] : cases()) {
    // Detections (same class, IoU >= 0.99, |score diff| <= 1e-3) and masks (IoU >= 0.99).
    check_mask_end_to_end<rcnn::Detectron2Stages>(bundle, dir);
    CHECK(detections_json(dir / "detections.json").size() >= 15);

    // Every stage's module ran, each on the bundle's static rows where it has them.
    const rcnn::ModelConfig cfg = rcnn::read_bundle(bundle);
    CascadeMaskExec exec(cfg, {1});
    rcnn::Detector<CascadeMaskExec, rcnn::OmpRoIAlign, rcnn::Detectron2Stages> det(cfg, std::move(exec));
    cv::Mat img = rcnn::cv_io::read_image(dir / "image.jpg");
    cv::Mat storage;
    rcnn::Trace trace;
    const auto result = det(rcnn::cv_io::view(img, storage), &trace);
    const auto& rec = det.executor();
    REQUIRE(rec.cascade_rows.size() == rec.box_head_rows.size() * 2);
    for (std::size_t c = 0; c < rec.cascade_rows.size(); ++c) {
      CHECK(rec.cascade_rows[c].first == 1 + c / rec.box_head_rows.size());
      CHECK(rec.cascade_rows[c].second == rec.box_head_rows[c % rec.box_head_rows.size()]);
    }
    if (cfg.modules.box_head.static_rois) CHECK(rec.box_head_rows.front() == *cfg.modules.box_head.static_rois);
    // The refined boxes of each stage, from the photo (the backbone's float differences on
    // this CPU reach them through the RPN: the same bound as the proposals').
    REQUIRE(trace.cascade_boxes.size() == 2);
    for (std::size_t k = 1; k <= 2; ++k) {
      const auto ref = boxes_of(npy(dir / ("cascade_boxes_" + std::to_string(k) + ".npy")));
      REQUIRE(trace.cascade_boxes[k - 1].size() == ref.size());
      const double d = max_abs_diff(reinterpret_cast<const float*>(trace.cascade_boxes[k - 1].data()),
                                    reinterpret_cast<const float*>(ref.data()), ref.size() * 4);
      MESSAGE(bundle.filename().string() << "/" << dir.filename().string() << ": stage " << k
                                         << " boxes from the photo max |diff| " << d << " px");
      CHECK(d <= 5e-3);
    }
    CHECK(result.detections.size() == detections_json(dir / "detections.json").size());
  }
}
