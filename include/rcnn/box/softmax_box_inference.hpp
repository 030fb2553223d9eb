#pragma once
/// \file softmax_box_inference.hpp
/// Box-head inference: softmax, per-class decode, clip, score threshold, per-class NMS,
/// top-k per image (Detectron2 `fast_rcnn_inference_single_image`, torchvision
/// `RoIHeads.postprocess_detections`).

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <vector>

#include "../config.hpp"
#include "../error.hpp"
#include "../nms/batched_nms.hpp"
#include "../stage_io.hpp"
#include "box_coder.hpp"

namespace rcnn {

/// Reusable scratch of the box inference stage.
struct BoxInferenceWorkspace {
  std::vector<float> probs;
  ScoredBoxes candidates;
  std::vector<int> candidate_classes;
  std::vector<int> keep;
  BatchedNmsWorkspace nms;

  /// Capacity for up to `rows` proposals of `num_classes` classes (at most rows * classes
  /// candidates, at most `rows` per class): later calls with at most `rows` proposals
  /// allocate nothing here (the NMS policy is reserved by its owner).
  void reserve(std::size_t rows, int num_classes) {
    const std::size_t most = rows * std::size_t(std::max(num_classes, 0));
    probs.reserve(std::size_t(std::max(num_classes, 0)) + 1);
    candidates.boxes.reserve(most);
    candidates.scores.reserve(most);
    candidate_classes.reserve(most);
    keep.reserve(most);
    nms.reserve(most, rows);
  }
};

/// Reference box inference. Settings from the bundle's `roi_heads`: the background column
/// (`first` for torchvision, `last` for Detectron2), class-specific or agnostic deltas,
/// `score_threshold` (strictly greater), optional `min_box_size` (inclusive, torchvision's
/// 1e-2), `nms_threshold` per class and `detections_per_image`. Candidates are enumerated
/// row-major (proposal, class) as both frameworks do, which fixes the order of ties.
/// Rows whose probabilities are not finite (NaN or +Inf logits) and boxes that are not
/// finite are skipped (Detectron2's `valid_mask`); a -Inf logit is a probability of 0.
/// Output: detections in the resized frame, score descending; class_id is 0-based.
/// The NMS policy is the detector's `box_nms`, run per class; a re-scoring one (soft-NMS)
/// gives the detections their new scores and order.
/// Stateful (owns its scratch): one instance per thread.
struct SoftmaxBoxInference {
  BoxInferenceWorkspace ws;

  /// Capacity for `s.proposals` rows of `s.num_classes` classes.
  void reserve(const StageSizing& s) { ws.reserve(s.proposals, s.num_classes); }

  template <class Nms>
  void operator()(std::span<const Box> proposals, const BoxHeadView& head, Size image,
                  const RoiHeadsConfig& cfg, Nms& nms, std::vector<Detection>& out) {
    const int K = cfg.num_classes;
    const int R = int(proposals.size());
    detail::require(head.rows >= R, [&] {
      return "box inference: box head returned " + std::to_string(head.rows) + " rows for " +
             std::to_string(R) + " proposals";
    });
    detail::require(head.logits_width == K + 1, [&] {
      return "box inference: class_logits has " + std::to_string(head.logits_width) +
             " columns, expected num_classes + 1 = " + std::to_string(K + 1);
    });
    const bool agnostic = cfg.class_agnostic_box_regression;
    const int expected_deltas = agnostic ? 4 : (cfg.background_first ? 4 * (K + 1) : 4 * K);
    detail::require(head.deltas_width == expected_deltas, [&] {
      return "box inference: box_deltas has " + std::to_string(head.deltas_width) +
             " columns, expected " + std::to_string(expected_deltas);
    });
    const BoxCoder coder{cfg.box_weights, cfg.scale_clamp};
    const int first_fg = cfg.background_first ? 1 : 0;
    ws.probs.resize(std::size_t(K) + 1);
    ws.candidates.clear();
    ws.candidate_classes.clear();
    // Capacity for the most candidates R proposals can give (R * K, at most R per class), and
    // for the output: no call with at most this many proposals grows a buffer again.
    ws.reserve(std::size_t(R), K);
    nms.reserve(std::size_t(R));
    out.reserve(std::size_t(std::max(cfg.detections_per_image, 0)));
    for (int r = 0; r < R; ++r) {
      if (head.class_probs) {
        if (!finite_row(head.class_probs + std::size_t(r) * head.logits_width, K + 1,
                        ws.probs.data()))
          continue;
      } else if (!softmax(head.class_logits + std::size_t(r) * head.logits_width, K + 1,
                          ws.probs.data())) {
        continue;
      }
      const float* deltas = head.box_deltas + std::size_t(r) * head.deltas_width;
      for (int c = 0; c < K; ++c) {
        const float score = ws.probs[std::size_t(c + first_fg)];
        if (!(score > cfg.score_threshold)) continue;
        const float* d = deltas + (agnostic ? 0 : 4 * (c + (cfg.background_first ? 1 : 0)));
        Box box = coder.decode(proposals[std::size_t(r)], d[0], d[1], d[2], d[3]);
        if (!is_finite(box)) continue;
        box = clip_box(box, image);
        if (cfg.min_box_size && !big_enough(box, *cfg.min_box_size, true)) continue;
        ws.candidates.boxes.push_back(box);
        ws.candidates.scores.push_back(score);
        ws.candidate_classes.push_back(c);
      }
    }
    batched_nms(nms, std::span<const Box>(ws.candidates.boxes),
                std::span<float>(ws.candidates.scores),
                std::span<const int>(ws.candidate_classes), cfg.nms_threshold, ws.keep, ws.nms);
    const std::size_t k = std::min(ws.keep.size(), std::size_t(cfg.detections_per_image));
    out.resize(k);
    for (std::size_t i = 0; i < k; ++i) {
      const auto j = std::size_t(ws.keep[i]);
      out[i] = Detection{ws.candidates.boxes[j], ws.candidates.scores[j],
                         ws.candidate_classes[j]};
    }
  }

  /// Copies n probabilities to p; false when one is not finite (Detectron2's valid_mask).
  static bool finite_row(const float* x, int n, float* p) {
    for (int i = 0; i < n; ++i) {
      if (!std::isfinite(x[i])) return false;
      p[i] = x[i];
    }
    return true;
  }

  /// Softmax over n logits as ATen's CPU kernel orders it: max, exp(x - max), sum, then
  /// multiply by 1 / sum. Returns false when a probability would not be finite, as
  /// Detectron2's `valid_mask` drops such rows: a NaN or +Inf logit, or every logit -Inf.
  /// A -Inf logit next to finite ones is a probability of 0, as in torch.softmax.
  static bool softmax(const float* x, int n, float* p) {
    float m = x[0];
    for (int i = 0; i < n; ++i) {
      if (std::isnan(x[i]) || x[i] == std::numeric_limits<float>::infinity()) return false;
      m = x[i] > m ? x[i] : m;
    }
    if (!std::isfinite(m)) return false;  // every logit -Inf
    float sum = 0.f;
    for (int i = 0; i < n; ++i) {
      p[i] = std::exp(x[i] - m);
      sum += p[i];
    }
    const float inv = 1.0f / sum;
    for (int i = 0; i < n; ++i) p[i] = p[i] * inv;
    return true;
  }
};

}  // namespace rcnn
