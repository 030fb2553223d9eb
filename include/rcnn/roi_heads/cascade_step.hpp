#pragma once
/// \file cascade_step.hpp
/// Cascade R-CNN's box-head stages (Detectron2 `CascadeROIHeads`, inference), as a step of
/// the Detector. Stage 0 is the bundle's box head on the RPN proposals; stage k >= 1 runs its
/// own box head (`modules.<roi_heads.cascade[k].module>`) on the boxes of stage k - 1: that
/// stage's class-agnostic deltas decoded on its boxes with its `box_weights`, clipped to the
/// (resized) image and kept even when empty, so that the rows of every stage stay aligned
/// (`_create_proposals_from_boxes`). The final detections use the last stage's boxes and
/// deltas with the stages' softmax probabilities summed in stage order and multiplied by
/// float(1 / stages) (`sum(scores_per_stage) * (1.0 / num_cascade_stages)`).
/// This class holds the boxes and probability sums between stages; pooling and running the
/// heads are the Detector's RoiRows and executor. Framework-free; allocation-free once
/// reserved.

#include <cmath>
#include <cstddef>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "../box/box_coder.hpp"
#include "../box/softmax_box_inference.hpp"
#include "../concepts.hpp"
#include "../config.hpp"
#include "../error.hpp"
#include "../types.hpp"

namespace rcnn {

class CascadeStep {
 public:
  /// Set-up check: a cascade bundle needs an executor that runs the later stages' heads.
  template <class Exec>
  static void check(const ModelConfig& cfg) {
    if (cfg.roi_heads.cascade.empty()) return;
    detail::require(cfg.modules.cascade_box_heads.size() + 1 == cfg.roi_heads.cascade.size(),
                    "model.json: roi_heads.cascade names " +
                        std::to_string(cfg.roi_heads.cascade.size()) + " stages but modules has " +
                        std::to_string(cfg.modules.cascade_box_heads.size() + 1) +
                        " box heads for them");
    if constexpr (!CascadeExecutor<Exec>) {
      detail::fail("detector: the bundle is a Cascade R-CNN (model.json roi_heads.cascade) but "
                   "the executor has no run_cascade_box_head(std::size_t, const TensorView&, "
                   "BoxHeadOutputs&) (concept rcnn::CascadeExecutor)");
    }
  }

  /// Capacity for `images` images of up to `boxes` boxes each and `width` = K + 1 classes.
  void reserve(std::size_t images, std::size_t boxes, int width) {
    for (auto& b : boxes_) b.reserve(images * boxes);
    probs_.reserve(images * boxes * std::size_t(width));
    row_.reserve(std::size_t(width));
    first_.reserve(images + 1);
  }

  /// Starts a batch whose image i has `count(i)` proposals; `width` = K + 1.
  template <class CountOf>
  void begin(std::size_t n, int width, CountOf&& count) {
    width_ = width;
    first_.resize(n + 1);
    std::size_t total = 0;
    for (std::size_t i = 0; i < n; ++i) {
      first_[i] = total;
      total += count(i);
    }
    first_[n] = total;
    for (auto& b : boxes_) b.resize(total);
    probs_.assign(total * std::size_t(width), 0.f);
    row_.resize(std::size_t(width));
    current_ = -1;
  }

  /// Adds the softmax of image i's class logits ([count(i) rows, width], row-major) to its
  /// probability sums. A row whose softmax is not finite becomes NaN (as torch.softmax gives),
  /// which box inference skips.
  void add_probabilities(std::size_t i, const float* logits) {
    float* sum = probs_.data() + first_[i] * std::size_t(width_);
    const std::size_t rows = first_[i + 1] - first_[i];
    for (std::size_t r = 0; r < rows; ++r, logits += width_, sum += width_) {
      if (SoftmaxBoxInference::softmax(logits, width_, row_.data())) {
        for (int c = 0; c < width_; ++c) sum[c] += row_[std::size_t(c)];
      } else {
        for (int c = 0; c < width_; ++c) sum[c] = std::numeric_limits<float>::quiet_NaN();
      }
    }
  }

  /// The next stage's boxes of image i: `deltas` ([count(i) rows, deltas_width], the first 4
  /// columns class-agnostic) decoded on `boxes` with `weights`, clipped to `image`.
  void refine(std::size_t i, std::span<const Box> boxes, const float* deltas, int deltas_width,
              const std::array<float, 4>& weights, float scale_clamp, Size image) {
    const BoxCoder coder{weights, scale_clamp};
    std::vector<Box>& out = boxes_[std::size_t(current_ + 1) % 2];
    Box* dst = out.data() + first_[i];
    for (std::size_t r = 0; r < boxes.size(); ++r, deltas += deltas_width)
      dst[r] = clip_box(coder.decode(boxes[r], deltas[0], deltas[1], deltas[2], deltas[3]), image);
  }

  /// After every image's `refine`: the refined boxes become the current ones.
  void next_stage() { current_ = (current_ + 1) % 2; }

  /// Divides the sums by the number of stages as Detectron2 does: times float(1 / stages).
  void average(std::size_t stages) {
    const float scale = float(1.0 / double(stages));
    for (float& p : probs_) p = p * scale;
  }

  /// Image i's boxes of the current stage (after the first `next_stage`).
  std::span<const Box> boxes(std::size_t i) const {
    const std::vector<Box>& b = boxes_[std::size_t(current_)];
    return {b.data() + first_[i], first_[i + 1] - first_[i]};
  }
  /// Image i's class probabilities [count(i), width] (averaged after `average`).
  const float* probabilities(std::size_t i) const {
    return probs_.data() + first_[i] * std::size_t(width_);
  }

 private:
  std::vector<Box> boxes_[2];  ///< the current stage's boxes and the next's, batch-flat
  std::vector<float> probs_;   ///< [boxes, width] probability sums
  std::vector<float> row_;
  std::vector<std::size_t> first_;  ///< per image, its first box
  int width_ = 0;
  int current_ = -1;
};

}  // namespace rcnn
