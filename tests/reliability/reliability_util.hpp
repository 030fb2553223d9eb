#pragma once
// Helpers of the reliability tests (tests/reliability): temporary directories, error
// capture, fixture bundle copies with an edited model.json.
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <rcnn/error.hpp>

#include "../support/test_util.hpp"

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace reliability {

namespace fs = std::filesystem;
using nlohmann::json;

inline const fs::path kD2 = fs::path(RCNN_TEST_DATA_DIR) / "detectron2";
inline const fs::path kBundle = kD2 / "narrow_r101_fpn_shortest_edge";

using rcnn_test::contains;
using rcnn_test::error_of;
using rcnn_test::read_text;
using rcnn_test::TempDir;

/// Writes `bytes` to `file` (rcnn_test::write_text).
inline void write_bytes(const fs::path& file, const std::string& bytes) {
  rcnn_test::write_text(file, bytes);
}

inline json fixture_json() { return json::parse(read_text(kBundle / "model.json")); }

/// Copies the fixture bundle into `dir` (modules symlinked: they are large) with the
/// model.json `doc`.
inline fs::path make_bundle(const fs::path& dir, const json& doc) {
  fs::create_directories(dir);
  for (const char* module : {"backbone_rpn.pt", "box_head.pt"})
    if (!fs::exists(dir / module)) fs::create_symlink(kBundle / module, dir / module);
  write_bytes(dir / "model.json", doc.dump(2));
  return dir;
}

}  // namespace reliability
