#pragma once
/// \file stage_io.hpp
/// What flows between the stages: the plain data types that the stage concepts
/// (concepts.hpp) name in their signatures, and `StageSizing`, the sizes every stage's
/// `reserve` receives before the first image. Framework-free, and free of any stage's
/// implementation: a custom stage includes this, not the reference stages.

#include <cstddef>
#include <span>

#include "types.hpp"

namespace rcnn {

/// Sizes produced by a preprocessing policy.
struct PreprocessResult {
  Size original;  ///< input image size
  Size resized;   ///< after resizing, before padding (the frame detections are produced in)
  Size padded;    ///< the tensor's spatial size
};

/// One RPN level of one image: objectness logits [A, H, W], deltas [4A, H, W] (channel
/// 4a + (dx, dy, dw, dh)) and the level's anchors in (y * W + x) * A + a order.
struct RpnLevelInput {
  FeatureMap objectness;
  FeatureMap deltas;
  std::span<const Box> anchors;
};

/// Box-head outputs of one image: logits [R, K + 1] and deltas [R, 4K], [R, 4(K + 1)] or
/// [R, 4], row-major.
struct BoxHeadView {
  const float* class_logits = nullptr;
  const float* box_deltas = nullptr;
  int rows = 0;
  int logits_width = 0;
  int deltas_width = 0;
  /// When set, [rows, logits_width] class probabilities to use instead of the softmax of
  /// `class_logits` (Cascade R-CNN: the stages' probabilities averaged); a row with a
  /// probability that is not finite is skipped, as Detectron2's valid_mask does.
  const float* class_probs = nullptr;
};

/// The largest work one image can bring to each stage, for `reserve` (the Detector computes
/// it from the bundle and an image size: `Detector::reserve_for`, or on the first image of a
/// size). A stage that has sized its scratch for these allocates nothing on such an image.
struct StageSizing {
  std::size_t images = 1;               ///< batch size
  std::size_t rpn_levels = 0;           ///< RPN levels
  std::size_t rpn_candidates = 0;       ///< sum over levels of min(pre_nms_topk, A*H*W)
  std::size_t rpn_level_candidates = 0; ///< the largest of those per-level counts
  std::size_t proposals = 0;            ///< RoIs per image after the RPN (post-NMS top-k)
  int num_classes = 0;                  ///< foreground classes K
  std::size_t box_candidates = 0;       ///< proposals * K: (box, class) pairs per image
  std::size_t detections = 0;           ///< detections per image
  Size image{};                         ///< the original image size the sizing is for
  Size resized{};                       ///< that image after resizing (before padding)
};

}  // namespace rcnn
