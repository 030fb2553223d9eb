#pragma once
// Helpers for tests that run the Detector on the C++ fake executor (no LibTorch): the
// fixture bundles' model.json as configs, and a deterministic BGR test pattern.

#include <rcnn/io/bundle.hpp>
#include <rcnn/types.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

namespace rcnn_test {

/// A fixture bundle's model.json (default: the Faster R-CNN one), as if read from `dir`.
inline rcnn::ModelConfig fixture_config(const char* bundle = "narrow_r101_fpn_shortest_edge",
                                        const char* dir = "/bundles/narrow") {
  const std::filesystem::path p =
      std::filesystem::path(RCNN_TEST_DATA_DIR) / "detectron2" / bundle / "model.json";
  std::ifstream in(p);
  std::stringstream text;
  text << in.rdbuf();
  rcnn::ModelConfig cfg = rcnn::parse_model_json(text.str(), p.string());
  cfg.bundle_dir = dir;
  return cfg;
}

/// A BGR test pattern: smooth gradients plus a few bright rectangles.
struct TestImage {
  std::vector<std::uint8_t> pixels;
  rcnn::ImageView view;
  TestImage(int h, int w, int seed = 0, int channels = 3) {
    pixels.resize(std::size_t(h) * std::size_t(w) * std::size_t(channels));
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        for (int c = 0; c < channels; ++c) {
          int v = (x * 3 + y * 2 + c * 40 + seed * 17) % 256;
          if ((x / 16 + y / 12 + seed) % 5 == 0) v = 250 - c * 30;
          pixels[(std::size_t(y) * std::size_t(w) + std::size_t(x)) * std::size_t(channels) +
                 std::size_t(c)] = std::uint8_t(v);
        }
    view = {pixels.data(), h, w, channels};
  }
  TestImage(const TestImage&) = delete;  // `view` points into `pixels`
  TestImage& operator=(const TestImage&) = delete;
};

}  // namespace rcnn_test
