#pragma once
/// \file topk_proposal_selector.hpp
/// RPN proposal selection: per-level top-k, decode, clip, size / score filters, NMS per
/// level, post-NMS top-k (Detectron2 `find_top_rpn_proposals`, torchvision
/// `RegionProposalNetwork.filter_proposals`).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "../box/box_coder.hpp"
#include "../config.hpp"
#include "../detail/topk.hpp"
#include "../nms/batched_nms.hpp"
#include "../stage_io.hpp"
#include "../types.hpp"

namespace rcnn {

/// Reusable scratch of the proposal selector (sized on the first image, then reused).
struct ProposalWorkspace {
  std::vector<int> order;
  ScoredBoxes candidates;
  std::vector<int> candidate_levels;
  std::vector<int> keep;
  BatchedNmsWorkspace nms;
  detail::TopKWorkspace topk;
};

/// Reference proposal selector. Settings come from the bundle's `rpn` object:
/// `pre_nms_topk` per level on the logits; scores are the logits (`nms_scores` logits,
/// Detectron2) or their sigmoid (torchvision); boxes are clipped to the resized image,
/// filtered by `min_box_size` (inclusive or not) and `score_threshold` (sigmoid >=), then
/// suppressed per level at `nms_threshold` and cut at `post_nms_topk`.
/// Non-finite boxes or scores are dropped (Detectron2 does this at inference too).
/// Output: proposals in descending score order, scores as ranked (logit or probability).
/// The NMS policy is the detector's `rpn_nms` (scores it re-scores are the ones ranked).
/// Stateful (owns its scratch): one instance per thread.
struct TopKProposalSelector {
  ProposalWorkspace ws;

  /// Capacity for `s.rpn_candidates` candidates (at most `s.rpn_level_candidates` per level).
  void reserve(const StageSizing& s) {
    ws.candidates.boxes.reserve(s.rpn_candidates);
    ws.candidates.scores.reserve(s.rpn_candidates);
    ws.candidate_levels.reserve(s.rpn_candidates);
    ws.keep.reserve(s.rpn_candidates);
    ws.nms.reserve(s.rpn_candidates, s.rpn_level_candidates);
  }

  template <class Nms>
  void operator()(std::span<const RpnLevelInput> levels, Size image, const RpnConfig& cfg,
                  Nms& nms, ScoredBoxes& out) {
    prepare(levels, cfg, nms, out);
    for (std::size_t l = 0; l < levels.size(); ++l) {
      const RpnLevelInput& in = levels[l];
      level_keys(in, 0, std::size_t(in.objectness.height) * std::size_t(in.objectness.width),
                 ws.topk.keys);
      detail::topk_indices_of_keys(ws.topk.keys, std::size_t(cfg.pre_nms_topk), ws.order, ws.topk);
      append_candidates(l, in, ws.order, image, cfg);
    }
    finish(cfg, nms, out);
  }

  /// torch.sigmoid in float32: 1 / (1 + exp(-x)).
  static float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

 protected:
  /// Checks the levels' anchor counts and reserves the workspace, `nms` and `out` for the
  /// most candidates these inputs can give (per level min(top-k, A*H*W)), so that images of
  /// one size never grow them after the first.
  template <class Nms>
  void prepare(std::span<const RpnLevelInput> levels, const RpnConfig& cfg, Nms& nms,
               ScoredBoxes& out) {
    ws.candidates.clear();
    ws.candidate_levels.clear();
    std::size_t most = 0, most_per_level = 0;
    for (std::size_t l = 0; l < levels.size(); ++l) {
      const RpnLevelInput& in = levels[l];
      const std::size_t n = std::size_t(in.objectness.height) * std::size_t(in.objectness.width) *
                            std::size_t(in.objectness.channels);
      detail::require(in.anchors.size() == n, [&] {
        return "proposals: level " + std::to_string(l) + " has " +
               std::to_string(in.anchors.size()) + " anchors, expected " + std::to_string(n);
      });
      const std::size_t m = std::min(n, std::size_t(std::max(cfg.pre_nms_topk, 0)));
      most += m;
      most_per_level = std::max(most_per_level, m);
    }
    ws.candidates.boxes.reserve(most);
    ws.candidates.scores.reserve(most);
    ws.candidate_levels.reserve(most);
    ws.keep.reserve(most);
    ws.nms.reserve(most, most_per_level);
    nms.reserve(most_per_level);
    const std::size_t most_out = std::min(most, std::size_t(std::max(cfg.post_nms_topk, 0)));
    out.boxes.reserve(most_out);
    out.scores.reserve(most_out);
  }

  /// The ranking keys of cells [p0, p1) of a level's logits, in the heads' (y, x, a) order:
  /// keys[(p - p0) * A + a] (one pass, no copy of the logits: the winners' logits are read
  /// back from the map).
  static void level_keys(const RpnLevelInput& in, std::size_t p0, std::size_t p1,
                         std::vector<std::uint32_t>& keys) {
    const std::size_t A = std::size_t(in.objectness.channels);
    const std::size_t hw = std::size_t(in.objectness.height) * std::size_t(in.objectness.width);
    keys.resize((p1 - p0) * A);
    for (std::size_t a = 0; a < A; ++a) {
      const float* src = in.objectness.data + a * hw;
      std::uint32_t* dst = keys.data() + a;
      for (std::size_t p = p0; p < p1; ++p) dst[(p - p0) * A] = detail::score_descending_key(src[p]);
    }
  }

  /// Decodes, clips and filters a level's top-k (`order`: indices in (y, x, a) order, best
  /// first) into the candidates.
  void append_candidates(std::size_t l, const RpnLevelInput& in, std::span<const int> order,
                         Size image, const RpnConfig& cfg) {
    decode_candidates(in, order, image, cfg, ws.candidates);
    ws.candidate_levels.resize(ws.candidates.size(), int(l));
  }

  /// The decoding of `append_candidates`, appending to `out` (boxes and scores).
  static void decode_candidates(const RpnLevelInput& in, std::span<const int> order, Size image,
                                const RpnConfig& cfg, ScoredBoxes& out) {
    const BoxCoder coder{cfg.box_weights, cfg.scale_clamp};
    const bool use_sigmoid = cfg.nms_scores == RpnConfig::NmsScores::sigmoid;
    const std::size_t A = std::size_t(in.objectness.channels);
    const std::size_t hw = std::size_t(in.objectness.height) * std::size_t(in.objectness.width);
    for (int i : order) {
      const std::size_t p = std::size_t(i) / A;
      const std::size_t a = std::size_t(i) % A;
      const float* d = in.deltas.data + (4 * a) * hw + p;
      Box box = coder.decode(in.anchors[std::size_t(i)], d[0], d[hw], d[2 * hw], d[3 * hw]);
      const float logit = in.objectness.data[a * hw + p];
      const float score = use_sigmoid ? sigmoid(logit) : logit;
      if (!is_finite(box) || !std::isfinite(score)) continue;
      box = clip_box(box, image);
      if (!big_enough(box, cfg.min_box_size, cfg.min_box_size_inclusive)) continue;
      if (cfg.score_threshold && !(score >= *cfg.score_threshold)) continue;
      out.boxes.push_back(box);
      out.scores.push_back(score);
    }
  }

  /// NMS per level over the candidates, then the post-NMS top-k into `out`.
  template <class Nms>
  void finish(const RpnConfig& cfg, Nms& nms, ScoredBoxes& out) {
    batched_nms(nms, std::span<const Box>(ws.candidates.boxes),
                std::span<float>(ws.candidates.scores),
                std::span<const int>(ws.candidate_levels), cfg.nms_threshold, ws.keep, ws.nms);
    const std::size_t k = std::min(ws.keep.size(), std::size_t(cfg.post_nms_topk));
    out.boxes.resize(k);
    out.scores.resize(k);
    for (std::size_t i = 0; i < k; ++i) {
      out.boxes[i] = ws.candidates.boxes[std::size_t(ws.keep[i])];
      out.scores[i] = ws.candidates.scores[std::size_t(ws.keep[i])];
    }
  }
};

}  // namespace rcnn
