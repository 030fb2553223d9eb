#pragma once
// Small helpers shared by the C++ tests: rcnn::Error capture, substring test, temporary
// directories, whole-file read / write (doctest REQUIREs on I/O failures).
#include <doctest/doctest.h>

#include <rcnn/error.hpp>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>

namespace rcnn_test {

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
  std::filesystem::path path;
  explicit TempDir(const std::string& prefix = "rcnn-test") {
    static std::atomic<unsigned> counter{0};
    std::random_device rd;
    path = std::filesystem::temp_directory_path() /
           (prefix + "-" + std::to_string(rd()) + "-" + std::to_string(counter++));
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

inline std::string read_text(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "cannot open " << file.string());
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

inline void write_text(const std::filesystem::path& file, const std::string& bytes) {
  std::ofstream out(file, std::ios::binary);
  out << bytes;
  REQUIRE(out.good());
}

}  // namespace rcnn_test
