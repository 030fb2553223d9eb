// torchvision Mask R-CNN parity: a maskrcnn_resnet50_fpn bundle exported by
// tools/export_torchvision.py with seeded weights, compared stage by stage with torchvision
// 0.14 run during the test (tests/reference/gen_tv_masks.py writes
// build/reference/gen_tv_masks/; case files as the Detectron2 mask fixture's).
#include "mask_parity.hpp"

namespace {

using namespace parity;
const fs::path kRef = fs::path(RCNN_REFERENCE_DIR) / "gen_tv_masks";
std::vector<std::pair<fs::path, fs::path>> cases() { return reference_cases(kRef); }

}  // namespace

TEST_CASE("torchvision Mask R-CNN: references and bundle") {
  const auto all = cases();
  REQUIRE(all.size() >= 2);
  const auto cfg = rcnn::read_bundle(all[0].first);
  CHECK(cfg.architecture == rcnn::Architecture::mask_rcnn);
  REQUIRE(cfg.mask_head);
  CHECK(cfg.mask_head->paste == rcnn::MaskHeadConfig::Paste::torchvision);
  CHECK(cfg.mask_head->pooler.resolution == 14);
  CHECK(cfg.mask_head->pooler.sampling_ratio == 2);
  CHECK_FALSE(cfg.mask_head->pooler.aligned);
  CHECK_FALSE(cfg.mask_head->class_agnostic);
  // Detectron2's paste for a torchvision bundle is refused.
  struct D2Paste : rcnn::TorchvisionStages {
    using mask_paste = rcnn::Detectron2PasteRef;
  };
  rcnn::ModelConfig c = cfg;
  CHECK_THROWS_WITH_AS((rcnn::Detector<rcnn::TorchScriptExec, rcnn::RoIAlignRef, D2Paste>(
                           c, rcnn::TorchScriptExec(c))),
                       doctest::Contains("mask_head.paste"), rcnn::Error);
}

TEST_CASE("torchvision Mask R-CNN stage parity") {
  for (const auto& [bundle, dir] : cases()) {
    check_stages<rcnn::TorchvisionStages>(bundle, dir);  // the Faster R-CNN stages
    check_mask_stages<rcnn::TorchvisionStages>(bundle, dir);
  }
}

TEST_CASE("torchvision Mask R-CNN end to end from the photo") {
  for (const auto& [bundle, dir] : cases()) check_mask_end_to_end<rcnn::TorchvisionStages>(bundle, dir);
}
