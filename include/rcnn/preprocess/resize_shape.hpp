#pragma once
/// \file resize_shape.hpp
/// Output size of the resize stage, computed exactly as each framework computes it.
///
/// * Detectron2 0.6 `ResizeShortestEdge.get_transform` (Python doubles, `int(x + 0.5)`).
/// * torchvision 0.14 `_resize_image_and_masks`: the scale is a float32 *tensor* computation,
///   `min(800.0 / min_side, 1333.0 / max_side)` where `python_float / tensor` is
///   `tensor.reciprocal() * python_float` in float32; `F.interpolate(...,
///   recompute_scale_factor=True)` then takes `floor(side * scale)` in double. Doing the scale
///   in double instead gives a different size for many images (375x500 -> 799x1066 in
///   torchvision, 800x1066 in double).
/// * `ResizeConfig::Mode::fixed`: exactly (height, width) for both.

#include <algorithm>
#include <cmath>
#include <string>

#include "rcnn/config.hpp"
#include "rcnn/error.hpp"
#include "rcnn/types.hpp"

namespace rcnn {

/// Largest image side (input or resized) the preprocessing stage accepts, in pixels.
/// Keeps every index and fixed-point sum comfortably inside 32-bit integers.
inline constexpr int kMaxImageSide = 16384;

namespace detail {
/// A non-negative side computed in double as an int, saturated at INT_MAX (absurd
/// configurations, e.g. min_size near 2^31, then fail the kMaxImageSide check instead of
/// overflowing the conversion).
inline int saturated_side(double v) {
  return v >= 2147483647.0 ? 2147483647 : int(v);
}
}  // namespace detail

/// Detectron2 `ResizeShortestEdge` output size for one `short_edge` / `max_size` pair.
/// Mirrors the Python (double arithmetic, truncating `int(x + 0.5)`).
inline Size detectron2_shortest_edge_shape(Size in, int short_edge, int max_size) {
  const double h = in.height;
  const double w = in.width;
  const double size = double(short_edge) * 1.0;
  double scale = size / std::min(h, w);
  double newh = 0.0;
  double neww = 0.0;
  if (in.height < in.width) {
    newh = size;
    neww = scale * w;
  } else {
    newh = scale * h;
    neww = size;
  }
  if (std::max(newh, neww) > double(max_size)) {
    scale = double(max_size) * 1.0 / std::max(newh, neww);
    newh = newh * scale;
    neww = neww * scale;
  }
  // Python int() truncates toward zero; the values are non-negative.
  return {detail::saturated_side(newh + 0.5), detail::saturated_side(neww + 0.5)};
}

/// torchvision `GeneralizedRCNNTransform` output size (eval mode, `min_size` = the last entry).
inline Size torchvision_shortest_edge_shape(Size in, int min_size, int max_size) {
  const float min_side = float(std::min(in.height, in.width));
  const float max_side = float(std::max(in.height, in.width));
  // self_min_size / min_size  ==  min_size.reciprocal() * self_min_size, all float32.
  const float s_min = (1.0f / min_side) * float(min_size);
  const float s_max = (1.0f / max_side) * float(max_size);
  const float scale = std::min(s_min, s_max);
  // interpolate(recompute_scale_factor=True): floor(float(size) * scale_factor) in double.
  return {detail::saturated_side(std::floor(double(in.height) * double(scale))),
          detail::saturated_side(std::floor(double(in.width) * double(scale)))};
}

/// Resized size of an `in`-sized image under `cfg` and the framework rules `conv`.
/// Throws rcnn::Error for an empty input or non-positive configuration values.
inline Size resized_shape(Size in, const ResizeConfig& cfg, Conventions conv) {
  detail::require(in.height > 0 && in.width > 0, [&] {
    return "resized_shape: empty image (" + std::to_string(in.height) + "x" +
           std::to_string(in.width) + ")";
  });
  if (cfg.mode == ResizeConfig::Mode::fixed) {
    detail::require(cfg.height > 0 && cfg.width > 0, [&] {
      return "resize: fixed size must be positive, got " + std::to_string(cfg.height) + "x" +
             std::to_string(cfg.width);
    });
    return {cfg.height, cfg.width};
  }
  detail::require(cfg.min_size > 0 && cfg.max_size > 0, [&] {
    return "resize: min_size and max_size must be positive, got " + std::to_string(cfg.min_size) +
           " and " + std::to_string(cfg.max_size);
  });
  return conv == Conventions::detectron2
             ? detectron2_shortest_edge_shape(in, cfg.min_size, cfg.max_size)
             : torchvision_shortest_edge_shape(in, cfg.min_size, cfg.max_size);
}

}  // namespace rcnn
