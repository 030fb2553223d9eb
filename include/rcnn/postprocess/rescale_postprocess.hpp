#pragma once
/// \file rescale_postprocess.hpp
/// Map detections from the resized frame back to the original image.

#include <array>
#include <vector>

#include "../box/box_coder.hpp"
#include "../config.hpp"
#include "../stage_io.hpp"
#include "../types.hpp"

namespace rcnn {

/// The x and y factors from the resized frame to the original image, rounded to float32 as
/// each framework does (Detectron2: float32(double(W) / w); torchvision: float32(W) /
/// float32(w)); boxes and keypoints are scaled by them.
inline std::array<float, 2> rescale_factors(Size resized, Size original, Conventions conv) {
  if (conv == Conventions::detectron2)
    return {float(double(original.width) / double(resized.width)),
            float(double(original.height) / double(resized.height))};
  return {float(original.width) / float(resized.width),
          float(original.height) / float(resized.height)};
}

/// Reference postprocessing. Scales x and y separately by original / resized, in float32
/// the way each framework rounds the factor (Detectron2: float32(double(W) / w);
/// torchvision: float32(W) / float32(w)); then, as the bundle's `postprocess` says, clips
/// to the original image and drops boxes with zero width or height (Detectron2), keeping
/// the order. `kept[i]` receives the index (before this call) of output detection i.
/// Cost O(D), in place. Stateless.
struct RescalePostprocess {
  void reserve(const StageSizing&) {}

  void operator()(Size resized, Size original, Conventions conv, const PostprocessConfig& cfg,
                  std::vector<Detection>& dets, std::vector<int>& kept) const {
    const auto [sx, sy] = rescale_factors(resized, original, conv);
    kept.clear();
    std::size_t n = 0;
    for (std::size_t i = 0; i < dets.size(); ++i) {
      Detection d = dets[i];
      d.box = Box{d.box.x1 * sx, d.box.y1 * sy, d.box.x2 * sx, d.box.y2 * sy};
      if (cfg.clip) d.box = clip_box(d.box, original);
      if (cfg.drop_empty && !big_enough(d.box, 0.f, false)) continue;
      dets[n++] = d;
      kept.push_back(int(i));
    }
    dets.resize(n);
  }
};

}  // namespace rcnn
