#pragma once
/// \file keypoint_types.hpp
/// A decoded keypoint (Keypoint R-CNN). Framework-free.

namespace rcnn {

/// One keypoint of a detection: position (pixels, continuous coordinates: the centre of
/// heatmap cell d is d + 0.5) and score, as the bundle's `keypoint_head.decode` convention
/// defines it (Detectron2: the heatmap's spatial softmax at the peak; torchvision: the
/// upsampled logit at the peak).
struct Keypoint {
  float x = 0.f, y = 0.f, score = 0.f;
};

}  // namespace rcnn
