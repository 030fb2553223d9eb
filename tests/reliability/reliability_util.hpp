#pragma once
// Helpers of the reliability tests (tests/reliability): temporary directories, error
// capture, fixture bundle copies with an edited model.json.
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <rcnn/error.hpp>

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

/// The rcnn::Error message `f` throws ("" when it throws none). Any other exception type
/// propagates, which fails the test: the library must report through rcnn::Error only.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const rcnn::Error& e) {
    return e.what();
  }
  return "";
}

inline bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

/// A fresh directory under the system temp directory, removed on destruction.
struct TempDir {
  fs::path path;
  TempDir() {
    static std::atomic<unsigned> counter{0};
    std::random_device rd;
    path = fs::temp_directory_path() /
           ("rcnn-reliability-" + std::to_string(rd()) + "-" + std::to_string(counter++));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

inline std::string read_text(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

inline void write_bytes(const fs::path& file, const std::string& bytes) {
  std::ofstream out(file, std::ios::binary);
  out << bytes;
  REQUIRE(out.good());
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
