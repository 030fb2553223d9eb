// Detectron2 parity: every stage of the C++ runtime against the reference outputs that a
// real Detectron2 v0.6 produced for the fixture bundles (tests/data/detectron2, FIXTURES.md).
#include "stage_parity.hpp"

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
      (rcnn::load_as<rcnn::TorchScriptExec, rcnn::RoIAlignRef, rcnn::TorchvisionStages>(
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
