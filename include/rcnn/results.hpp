#pragma once
/// \file results.hpp
/// What a Detector returns: detections (and masks) per image, the stage times, and the
/// optional trace of intermediate results. Framework-free.

#include <cstddef>
#include <span>
#include <vector>

#include "keypoints/keypoint_types.hpp"
#include "mask/mask_types.hpp"
#include "profiler.hpp"
#include "types.hpp"

namespace rcnn {

/// Wall time of each stage of one call, in milliseconds (batch-level stages are divided
/// evenly among the batch's images). Always measured (two clock reads per step); the
/// profiler policy, when enabled (rcnn::StageProfiler), also accumulates them over images.
/// The mask stages are 0 for Faster R-CNN bundles.
struct StageTimes {
  double preprocess = 0, backbone_rpn = 0, anchors = 0, proposals = 0, roi_align = 0,
         box_head = 0, box_inference = 0, postprocess = 0;
  /// Mask R-CNN: pooling the detections' mask features; the mask head network and each
  /// detection's class channel through the sigmoid; pasting into the original image.
  double mask_roi_align = 0, mask_head = 0, mask_paste = 0;
  /// Keypoint R-CNN: pooling the detections' keypoint features; the keypoint head network;
  /// decoding the heatmaps into keypoints in the original image.
  double keypoint_roi_align = 0, keypoint_head = 0, keypoint_decode = 0;

  /// The field of a stage.
  double& operator[](Stage s) {
    double* fields[kNumStages] = {&preprocess,    &backbone_rpn, &anchors,        &proposals,
                                  &roi_align,     &box_head,     &box_inference,  &postprocess,
                                  &mask_roi_align, &mask_head,   &mask_paste,
                                  &keypoint_roi_align, &keypoint_head, &keypoint_decode};
    return *fields[std::size_t(s)];
  }
  double operator[](Stage s) const { return const_cast<StageTimes&>(*this)[s]; }

  double total() const {
    double t = 0;
    for (std::size_t i = 0; i < kNumStages; ++i) t += (*this)[Stage(int(i))];
    return t;
  }
  /// (name, ms) pairs in the order of rcnn::Stage (profiler.hpp); `with_masks` false skips
  /// the mask and keypoint stages.
  template <class F>
  void for_each(F&& f, bool with_masks = true) const {
    const std::size_t n = with_masks ? kNumStages : kNumBoxStages;
    for (std::size_t i = 0; i < n; ++i) f(stage_name(Stage(int(i))), (*this)[Stage(int(i))]);
  }
  /// Every field times `k` (per-image shares of a batch).
  void scale(double k) {
    for (std::size_t i = 0; i < kNumStages; ++i) (*this)[Stage(int(i))] *= k;
  }
};

/// Detections of one image in original image coordinates, score descending.
/// Mask R-CNN bundles: `masks[i]` is the binary instance mask of `detections[i]` in the
/// original image, cropped to the window the paste evaluated (InstanceMask::expand or
/// rcnn::cv_io::to_mat give the full H x W mask); `masks` is empty for Faster R-CNN bundles.
struct DetectionResult {
  Size image_size;    ///< original image
  Size resized_size;  ///< what the network saw, before padding
  std::vector<Detection> detections;
  std::vector<InstanceMask> masks;
  /// Keypoint R-CNN bundles: `num_keypoints` (K) keypoints per detection, detection-major
  /// (detection i's are keypoints[i * K .. i * K + K), in the bundle's keypoint_names order;
  /// original image pixels); empty (K = 0) for other bundles.
  std::vector<Keypoint> keypoints;
  int num_keypoints = 0;
  StageTimes timing;

  /// Detection i's K keypoints.
  std::span<const Keypoint> keypoints_of(std::size_t i) const {
    const std::size_t K = std::size_t(num_keypoints);
    return {keypoints.data() + i * K, K};
  }
};

/// Intermediate results of one image, recorded when a Trace is passed (tests, debugging).
struct Trace {
  std::vector<float> input;  ///< this image's normalised padded CHW input
  Size padded;
  std::vector<std::vector<Box>> anchors;  ///< per rpn level
  ScoredBoxes proposals;
  std::vector<int> box_levels;
  std::vector<float> box_features;  ///< [P, C, R, R]
  std::vector<Detection> detections_resized;
  std::vector<int> kept;  ///< postprocess: index in detections_resized of each final detection
  /// Cascade R-CNN only: the boxes of stages 1, 2, ... (each stage's refined input boxes).
  std::vector<std::vector<Box>> cascade_boxes;
  // Mask R-CNN bundles only (empty otherwise):
  std::vector<int> mask_levels;      ///< per detection_resized, index into roi_levels
  std::vector<float> mask_features;  ///< [D, C, P, P] the mask pooler's output
  std::vector<float> mask_probs;     ///< [D, M, M] sigmoid of each detection's class channel
  int mask_size = 0;                 ///< M
  // Keypoint R-CNN bundles only (empty otherwise):
  std::vector<int> keypoint_levels;        ///< per detection_resized, index into roi_levels
  std::vector<float> keypoint_features;    ///< [D, C, P, P] the keypoint pooler's output
  std::vector<float> keypoint_heatmaps;    ///< [D, K, S, S] the keypoint head's output
  std::vector<Keypoint> keypoints_resized; ///< [D, K] decoded, resized frame (before postprocess)
};

}  // namespace rcnn
