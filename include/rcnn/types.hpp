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

/// Memory order of a feature map: `nchw` (planar, each channel's H x W plane contiguous;
/// what the frameworks return by default) or `nhwc` (channels-last: the C values of each
/// pixel contiguous; PyTorch's `torch.channels_last`). See model.json `features_layout`.
enum class Layout : std::uint8_t { nchw, nhwc };

/// "nchw" / "nhwc".
inline const char* layout_name(Layout l) { return l == Layout::nhwc ? "nhwc" : "nchw"; }

/// Non-owning view of one image's feature map: C x H x W float32, contiguous in `layout`
/// (CHW planes, or HWC pixels). Value (c, y, x) is `data[c * channel_stride() + (y * width + x)
/// * pixel_stride()]`.
struct FeatureMap {
  const float* data = nullptr;
  int channels = 0;
  int height = 0;
  int width = 0;
  Layout layout = Layout::nchw;
  std::size_t size() const { return std::size_t(channels) * height * width; }
  /// Distance in floats between channel c and c + 1 of one pixel.
  std::size_t channel_stride() const {
    return layout == Layout::nhwc ? 1 : std::size_t(height) * std::size_t(width);
  }
  /// Distance in floats between pixel p and p + 1 (row-major) of one channel.
  std::size_t pixel_stride() const { return layout == Layout::nhwc ? std::size_t(channels) : 1; }
};

/// Non-owning view of a float32 tensor of logical shape [N, C, H, W], contiguous in `layout`
/// (NCHW, or NHWC = channels-last; `shape` is NCHW either way, as in PyTorch).
struct TensorView {
  const float* data = nullptr;
  std::array<std::int64_t, 4> shape{0, 0, 0, 0};
  Layout layout = Layout::nchw;
  std::size_t numel() const {
    return std::size_t(shape[0]) * shape[1] * shape[2] * shape[3];
  }
  /// Image n of the batch as a C x H x W feature map (same layout).
  FeatureMap image(std::int64_t n) const {
    const std::size_t per = std::size_t(shape[1]) * shape[2] * shape[3];
    return {data + per * n, int(shape[1]), int(shape[2]), int(shape[3]), layout};
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
