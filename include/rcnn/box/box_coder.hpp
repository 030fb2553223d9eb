#pragma once
/// \file box_coder.hpp
/// Box decoding: apply (dx, dy, dw, dh) deltas to reference boxes.

#include <algorithm>
#include <array>
#include <cmath>

#include "../types.hpp"

namespace rcnn {

/// Delta decoder shared by torchvision's `BoxCoder.decode_single` and Detectron2's
/// `Box2BoxTransform.apply_deltas`: the two are the same float32 arithmetic, in this order.
/// `weights` divide the deltas; dw, dh are clamped from above at `scale_clamp`
/// (log(1000 / 16) in both frameworks) so exp() cannot overflow on wild deltas.
/// NaN deltas give NaN boxes; callers filter non-finite results.
struct BoxCoder {
  std::array<float, 4> weights{1.f, 1.f, 1.f, 1.f};
  float scale_clamp = 4.135166556742356f;

  Box decode(const Box& ref, float dx, float dy, float dw, float dh) const {
    const float width = ref.x2 - ref.x1;
    const float height = ref.y2 - ref.y1;
    const float ctr_x = ref.x1 + 0.5f * width;
    const float ctr_y = ref.y1 + 0.5f * height;
    dx = dx / weights[0];
    dy = dy / weights[1];
    dw = dw / weights[2];
    dh = dh / weights[3];
    // torch.clamp(max=) propagates NaN; std::min(NaN, c) returns its first argument (NaN).
    dw = std::min(dw, scale_clamp);
    dh = std::min(dh, scale_clamp);
    const float pred_ctr_x = dx * width + ctr_x;
    const float pred_ctr_y = dy * height + ctr_y;
    const float pred_w = std::exp(dw) * width;
    const float pred_h = std::exp(dh) * height;
    const float half_w = 0.5f * pred_w;
    const float half_h = 0.5f * pred_h;
    return Box{pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w,
               pred_ctr_y + half_h};
  }
};

/// Clamp a box to [0, width] x [0, height] (Detectron2 `Boxes.clip`, torchvision
/// `clip_boxes_to_image`). NaN coordinates stay NaN.
inline Box clip_box(const Box& b, Size image) {
  const float w = float(image.width), h = float(image.height);
  auto clamp = [](float v, float hi) { return v < 0.f ? 0.f : (v > hi ? hi : v); };
  return Box{clamp(b.x1, w), clamp(b.y1, h), clamp(b.x2, w), clamp(b.y2, h)};
}

inline bool is_finite(const Box& b) {
  return std::isfinite(b.x1) && std::isfinite(b.y1) && std::isfinite(b.x2) &&
         std::isfinite(b.y2);
}

/// Size filter: keep boxes with width and height >= min (inclusive, torchvision
/// `remove_small_boxes`) or > min (exclusive, Detectron2 `Boxes.nonempty`).
inline bool big_enough(const Box& b, float min_size, bool inclusive) {
  const float w = b.x2 - b.x1, h = b.y2 - b.y1;
  return inclusive ? (w >= min_size && h >= min_size) : (w > min_size && h > min_size);
}

}  // namespace rcnn
