#pragma once
/// \file types.hpp
/// Plain data types shared by every stage: boxes, non-owning tensor views, detections.
/// Framework-free: no LibTorch, no OpenCV.

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace rcnn {

/// Axis-aligned box, corners (x1, y1, x2, y2) in pixels, float32 like both frameworks.
struct Box {
  float x1 = 0.f, y1 = 0.f, x2 = 0.f, y2 = 0.f;
  float width() const { return x2 - x1; }
  float height() const { return y2 - y1; }
  /// Area computed as the frameworks do: (x2 - x1) * (y2 - y1) in float32.
  float area() const { return (x2 - x1) * (y2 - y1); }
  friend bool operator==(const Box&, const Box&) = default;
};
static_assert(sizeof(Box) == 4 * sizeof(float), "Box must be layout-compatible with float[4]");

/// Non-owning view of one image's feature map, contiguous CHW float32.
struct FeatureMap {
  const float* data = nullptr;
  int channels = 0;
  int height = 0;
  int width = 0;
  std::size_t size() const { return std::size_t(channels) * height * width; }
};

/// Non-owning view of a contiguous NCHW float32 tensor.
struct TensorView {
  const float* data = nullptr;
  std::array<std::int64_t, 4> shape{0, 0, 0, 0};
  std::size_t numel() const {
    return std::size_t(shape[0]) * shape[1] * shape[2] * shape[3];
  }
  /// Image n of the batch as a CHW feature map.
  FeatureMap image(std::int64_t n) const {
    const std::size_t per = std::size_t(shape[1]) * shape[2] * shape[3];
    return {data + per * n, int(shape[1]), int(shape[2]), int(shape[3])};
  }
};

/// Height and width in pixels.
struct Size {
  int height = 0;
  int width = 0;
  friend bool operator==(const Size&, const Size&) = default;
};

/// One detection in the frame it was produced in (resized frame inside the pipeline,
/// original image after postprocessing). `class_id` indexes `ModelConfig::classes`
/// (0-based, background excluded, for both conventions).
struct Detection {
  Box box;
  float score = 0.f;
  int class_id = 0;
};

/// Boxes with one score each (proposals: objectness logit or probability).
struct ScoredBoxes {
  std::vector<Box> boxes;
  std::vector<float> scores;
  std::size_t size() const { return boxes.size(); }
  void clear() {
    boxes.clear();
    scores.clear();
  }
};

/// Interleaved 8-bit image view (HWC, `channels` 1, 3 or 4, rows `step` bytes apart).
struct ImageView {
  const std::uint8_t* data = nullptr;
  int height = 0;
  int width = 0;
  int channels = 3;
  std::size_t step = 0;  ///< bytes between rows; 0 means width * channels
  /// Channel order of a 3/4-channel image: true for BGR(A) (OpenCV's), false for RGB(A).
  bool bgr = true;
  std::size_t row_step() const { return step ? step : std::size_t(width) * channels; }
};

}  // namespace rcnn
