#pragma once
// Output contracts of the proposal selector and the box inference stage, checked by the unit
// tests and the fuzzers (fuzz/fuzz_stages.cpp) on arbitrary logits and deltas. Each checker
// returns "" when the output is valid, else a description of the first violation.
#include <rcnn/config.hpp>
#include <rcnn/types.hpp>

#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

namespace rcnn_test {

inline std::string box_problem(const rcnn::Box& b, rcnn::Size image) {
  if (!std::isfinite(b.x1) || !std::isfinite(b.y1) || !std::isfinite(b.x2) ||
      !std::isfinite(b.y2))
    return "box is not finite";
  const float w = float(image.width), h = float(image.height);
  if (b.x1 < 0.f || b.y1 < 0.f || b.x2 > w || b.y2 > h || b.x1 > w || b.y1 > h || b.x2 < 0.f ||
      b.y2 < 0.f)
    return "box is outside the image";
  return "";
}

/// TopKProposalSelector output for `levels` RPN levels.
inline std::string proposals_problem(const rcnn::ScoredBoxes& p, rcnn::Size image,
                                     const rcnn::RpnConfig& cfg, std::size_t levels) {
  if (p.boxes.size() != p.scores.size()) return "boxes and scores differ in length";
  if (p.size() > std::size_t(cfg.post_nms_topk)) return "more proposals than post_nms_topk";
  if (p.size() > levels * std::size_t(cfg.pre_nms_topk))
    return "more proposals than levels x pre_nms_topk";
  for (std::size_t i = 0; i < p.size(); ++i) {
    const std::string at = "proposal " + std::to_string(i) + ": ";
    if (auto e = box_problem(p.boxes[i], image); !e.empty()) return at + e;
    const float w = p.boxes[i].width(), h = p.boxes[i].height();
    const bool big = cfg.min_box_size_inclusive
                         ? (w >= cfg.min_box_size && h >= cfg.min_box_size)
                         : (w > cfg.min_box_size && h > cfg.min_box_size);
    if (!big) return at + "smaller than rpn.min_box_size";
    if (!std::isfinite(p.scores[i])) return at + "score is not finite";
    if (cfg.score_threshold && !(p.scores[i] >= *cfg.score_threshold))
      return at + "score below rpn.score_threshold";
    if (i > 0 && p.scores[i] > p.scores[i - 1]) return at + "scores not sorted descending";
  }
  return "";
}

/// SoftmaxBoxInference output (resized frame).
inline std::string detections_problem(const std::vector<rcnn::Detection>& dets, rcnn::Size image,
                                      const rcnn::RoiHeadsConfig& cfg) {
  if (dets.size() > std::size_t(cfg.detections_per_image))
    return "more detections than detections_per_image";
  for (std::size_t i = 0; i < dets.size(); ++i) {
    const std::string at = "detection " + std::to_string(i) + ": ";
    const rcnn::Detection& d = dets[i];
    if (auto e = box_problem(d.box, image); !e.empty()) return at + e;
    if (!std::isfinite(d.score) || !(d.score > cfg.score_threshold) || d.score > 1.f)
      return at + "score not in (score_threshold, 1]";
    if (d.class_id < 0 || d.class_id >= cfg.num_classes) return at + "class id out of range";
    if (i > 0 && d.score > dets[i - 1].score) return at + "scores not sorted descending";
  }
  return "";
}

}  // namespace rcnn_test
