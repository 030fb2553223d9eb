// torchvision parity: bundles exported by tools/export_torchvision.py with seeded weights,
// compared stage by stage with torchvision 0.14 run during the test
// (tests/reference/gen_torchvision.py writes build/reference/gen_torchvision/).
#include "stage_parity.hpp"

namespace {
using namespace parity;
const fs::path kRef = fs::path(RCNN_REFERENCE_DIR) / "gen_torchvision";

std::vector<std::pair<fs::path, fs::path>> cases() { return reference_cases(kRef); }
}  // namespace

TEST_CASE("torchvision: references exist") {
  const auto all = cases();
  CHECK(all.size() >= 4);
}

TEST_CASE("torchvision: a detectron2 stage bundle refuses a torchvision bundle") {
  const auto all = cases();
  REQUIRE(!all.empty());
  CHECK_THROWS_WITH_AS(
      (rcnn::load<rcnn::TorchScriptExec, rcnn::RoIAlignRef, rcnn::Detectron2Stages>(all[0].first)),
      doctest::Contains("conventions"), rcnn::Error);
}

TEST_CASE("torchvision stage parity") {
  for (const auto& [bundle, dir] : cases()) check_stages<rcnn::TorchvisionStages>(bundle, dir);
}

TEST_CASE("torchvision end to end from the photo") {
  for (const auto& [bundle, dir] : cases())
    CHECK(check_end_to_end<rcnn::TorchvisionStages>(bundle, dir) >= 15);
}
