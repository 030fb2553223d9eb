// Detectron2 parity against a real Detectron2 v0.6 run during the test: bundles exported from
// model-zoo configs by tools/export_detectron2.py (its real code path) with seeded weights, and
// every stage of Detectron2's own inference on real photos (tests/reference/gen_detectron2.py
// writes build/reference/gen_detectron2/; case files as the committed fixtures'). Without
// Detectron2 the generator writes skipped.txt and these tests skip with its line (CI, with
// RCNN_REQUIRE_PEERS=1, fails in the generator instead).
#include <fstream>
#include <map>
#include <set>

#include "mask_parity.hpp"

namespace {

using namespace parity;
const fs::path kRef = fs::path(RCNN_REFERENCE_DIR) / "gen_detectron2";

/// True (after printing why) when the generator found no Detectron2.
bool skipped() { return generator_skipped(kRef); }

std::vector<std::pair<fs::path, fs::path>> cases() { return reference_cases(kRef); }

/// Detectron2's C4 and DC5 bundles: one feature map (no FPN).
bool one_feature_map(const std::string& bundle) {
  return bundle.find("_C4_") != std::string::npos || bundle.find("_DC5_") != std::string::npos;
}

/// The generator's measured agreement of the exported modules with eager Detectron2.
std::string python_checks(const fs::path& dir) {
  return read_json(dir / "meta.json")["checks"].dump();
}

}  // namespace

TEST_CASE("detectron2 live: bundles exported from the model zoo by export_detectron2.py") {
  if (skipped()) return;
  const auto index = read_json(kRef / "index.json");
  MESSAGE("references by " << index["generator"].get<std::string>() << " with Detectron2 "
                           << index["detectron2"].get<std::string>() << ", torch "
                           << index["torch"].get<std::string>());
  std::set<std::string> configs;
  for (const auto& [name, b] : index["bundles"].items()) {
    CAPTURE(name);
    configs.insert(b["config"].get<std::string>());
    const auto cfg = rcnn::read_bundle(kRef / name);
    CHECK(cfg.conventions == rcnn::Conventions::detectron2);
    if (!one_feature_map(name)) {  // FPN; C4 / DC5: their own test case below
      CHECK(cfg.backbone.rpn_levels.size() == 5);
      CHECK(cfg.backbone.roi_levels.size() == 4);
    }
    CHECK(cfg.roi_heads.num_classes == 80);
    CHECK(cfg.classes.size() == 80);
    CHECK(cfg.classes[68] == "microwave");
    // Detectron2's COCO metadata: contiguous class 68 is COCO category 78.
    const auto mj = read_json(kRef / name / "model.json");
    REQUIRE(mj.contains("category_ids"));
    CHECK(mj["category_ids"].size() == 80);
    CHECK(mj["category_ids"][68].get<int>() == 78);
    if (name.find("fixed800") != std::string::npos) {
      REQUIRE(cfg.modules.backbone_rpn.static_shape);
      CHECK((*cfg.modules.backbone_rpn.static_shape == std::array<std::int64_t, 4>{1, 3, 800, 800}));
      REQUIRE(cfg.modules.box_head.static_rois);
      CHECK(*cfg.modules.box_head.static_rois == 1000);
    }
    if (cfg.architecture == rcnn::Architecture::mask_rcnn && !one_feature_map(name)) {
      REQUIRE(cfg.mask_head);
      CHECK(cfg.mask_head->paste == rcnn::MaskHeadConfig::Paste::detectron2);
      CHECK(cfg.mask_head->pooler.resolution == 14);
      CHECK(cfg.mask_head->pooler.aligned);
    }
  }
  const std::set<std::string> want{"COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml",
                                   "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml",
                                   "COCO-Detection/faster_rcnn_R_50_C4_3x.yaml",
                                   "COCO-Detection/faster_rcnn_R_50_DC5_3x.yaml",
                                   "COCO-InstanceSegmentation/mask_rcnn_R_50_C4_3x.yaml"};
  CHECK(configs == want);
  CHECK(cases().size() >= 5);
}

TEST_CASE("detectron2 live stage parity") {
  if (skipped()) return;
  for (const auto& [bundle, dir] : cases()) {
    MESSAGE(bundle.filename().string() << "/" << dir.filename().string()
                                       << ": exported modules vs eager Detectron2 (Python) " << python_checks(dir));
    check_stages<rcnn::Detectron2Stages>(bundle, dir);
    if (rcnn::read_bundle(bundle).architecture == rcnn::Architecture::mask_rcnn)
      check_mask_stages<rcnn::Detectron2Stages>(bundle, dir);
  }
}

TEST_CASE("detectron2 live end to end from the photo") {
  if (skipped()) return;
  for (const auto& [bundle, dir] : cases()) {
    if (rcnn::read_bundle(bundle).architecture == rcnn::Architecture::mask_rcnn) {
      // Detections (same class, IoU >= 0.99, |score diff| <= 1e-3) and masks (IoU >= 0.99).
      check_mask_end_to_end<rcnn::Detectron2Stages>(bundle, dir);
      CHECK(detections_json(dir / "detections.json").size() >= 15);
    } else {
      CHECK(check_end_to_end<rcnn::Detectron2Stages>(bundle, dir) >= 15);
    }
  }
}

TEST_CASE("detectron2 live: C4 and DC5 bundles (one feature map) from the model zoo") {
  if (skipped()) return;
  const auto index = read_json(kRef / "index.json");
  // name -> (feature map, RoI pooler resolution): Res5ROIHeads pools 14x14 on res4; DC5's
  // StandardROIHeads 7x7 on res5, which the dilation keeps at stride 16.
  const std::map<std::string, std::pair<std::string, int>> want{
      {"faster_rcnn_R_50_C4_shortest_edge", {"res4", 14}},
      {"faster_rcnn_R_50_DC5_shortest_edge", {"res5", 7}},
      {"mask_rcnn_R_50_C4_shortest_edge", {"res4", 14}}};
  for (const auto& [name, level_and_pool] : want) {
    CAPTURE(name);
    REQUIRE(index["bundles"].contains(name));
    const auto cfg = rcnn::read_bundle(kRef / name);
    const auto& [level, pool] = level_and_pool;
    CHECK(cfg.backbone.rpn_levels == std::vector<std::string>{level});
    CHECK(cfg.backbone.roi_levels == std::vector<std::string>{level});
    CHECK(cfg.backbone.rpn_strides == std::vector<int>{16});
    CHECK(cfg.backbone.roi_strides == std::vector<int>{16});
    CHECK(cfg.input.size_divisibility == 0);  // a plain ResNet pads nothing
    CHECK(cfg.anchors.anchors_per_cell(0) == 15);  // 5 sizes x 3 aspect ratios on one level
    CHECK(cfg.rpn.pre_nms_topk == 6000);
    CHECK(cfg.rpn.post_nms_topk == 1000);
    CHECK(cfg.roi_heads.pooler.resolution == pool);
    CHECK(cfg.roi_heads.pooler.aligned);
    if (cfg.architecture == rcnn::Architecture::mask_rcnn) {
      REQUIRE(cfg.mask_head);
      // Res5ROIHeads: the box pooler on the detections, res5, the deconvolution: 14x14 logits.
      CHECK(cfg.mask_head->pooler.resolution == 14);
      CHECK(cfg.mask_head->mask_size == 14);
      CHECK(cfg.mask_head->paste == rcnn::MaskHeadConfig::Paste::detectron2);
    }
    std::size_t n = 0;
    for (const auto& [bundle, dir] : cases()) n += bundle.filename() == name;
    CHECK(n == index.at("bundles").at(name).at("cases").size());  // run by the stage and end-to-end cases above
    CHECK(n >= 1);
  }
}
