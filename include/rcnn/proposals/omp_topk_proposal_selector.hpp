#pragma once
/// \file omp_topk_proposal_selector.hpp
/// RPN proposal selection with the per-level top-k on `num_threads` OpenMP threads
/// (`OmpTopKProposalSelector`); the same proposals, in the same order, as
/// `TopKProposalSelector` for any thread count (tests/unit/test_omp_proposals.cpp). Needs
/// rcnn::omp / -fopenmp.

#ifndef _OPENMP
#error "rcnn/proposals/omp_topk_proposal_selector.hpp needs OpenMP: link rcnn::omp (or compile with -fopenmp)"
#endif

#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <type_traits>
#include <vector>

#include "../config.hpp"
#include "../detail/topk.hpp"
#include "../nms/greedy_nms.hpp"
#include "../stage_io.hpp"
#include "../types.hpp"
#include "topk_proposal_selector.hpp"

namespace rcnn {

/// `TopKProposalSelector` with the ranking (keys and top-k, most of its time: 256 K logits
/// for P2-P6 of an 800 x 1282 input) split over threads. Each level is cut into contiguous
/// cell ranges ("segments") of about (all logits) / (2 * threads) logits; the segments' top-k
/// run in parallel, and a level's top-k is the first k of its segments' winners merged by
/// (key, index). The top-k under that total order is unique and contained in the union of
/// the segments' top-k, so the result is the reference's exactly. Decoding is the
/// reference's, on the calling thread. The NMS per level (`batched_nms` over the levels in
/// the reference) runs one level per task, each with its own copy of the detector's NMS
/// policy (made on the first call, then reused), then the union is ordered as batched_nms
/// orders it (`detail::nms_sort_key`: score, then index). `num_threads` < 2: the
/// reference. Cost: the reference's, the ranking and the NMS divided over the threads, plus
/// a merge of at most (segments of a level) x k entries per level. No heap allocation once
/// the level sizes, thread count and NMS type have been seen. Stateful: one instance per
/// calling thread.
struct OmpTopKProposalSelector : TopKProposalSelector {
  int num_threads = 1;

  template <class Nms>
  void operator()(std::span<const RpnLevelInput> levels, Size image, const RpnConfig& cfg,
                  Nms& nms, ScoredBoxes& out) {
    const int threads = num_threads < 1 ? 1 : num_threads;
    if (threads == 1) {
      TopKProposalSelector::operator()(levels, image, cfg, nms, out);
      return;
    }
    prepare(levels, cfg, nms, out);
    const std::size_t k = std::size_t(cfg.pre_nms_topk);
    plan_segments(levels, threads);
    const std::ptrdiff_t S = std::ptrdiff_t(used_);
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (std::ptrdiff_t s = 0; s < S; ++s) rank_segment(levels, segments_[std::size_t(s)], k);
    // Per level: its segments' winners (each sorted by (key, index)) merged, the first k.
    std::size_t s = 0;
    level_begin_.resize(levels.size() + 1);
    for (std::size_t l = 0; l < levels.size(); ++l) {
      level_begin_[l] = ws.candidates.size();
      merged_.clear();
      for (; s < used_ && segments_[s].level == l; ++s) {
        const std::vector<std::uint64_t>& w = segments_[s].winners;
        spare_.resize(merged_.size() + w.size());
        std::merge(merged_.begin(), merged_.end(), w.begin(), w.end(), spare_.begin());
        merged_.swap(spare_);
      }
      if (merged_.size() > k) merged_.resize(k);
      order_.resize(merged_.size());
      for (std::size_t i = 0; i < merged_.size(); ++i) order_[i] = int(std::uint32_t(merged_[i]));
      append_candidates(l, levels[l], order_, image, cfg);
    }
    level_begin_[levels.size()] = ws.candidates.size();
    if constexpr (std::is_copy_constructible_v<Nms>)
      nms_per_level(cfg, nms, threads, out);
    else
      finish(cfg, nms, out);  // a policy that cannot be copied: the levels' NMS in turn
  }

 private:
  struct Segment {
    std::size_t level = 0, p0 = 0, p1 = 0;  ///< cells [p0, p1) of the level
    detail::TopKWorkspace topk;
    std::vector<int> order;
    std::vector<std::uint64_t> winners;  ///< (key << 32 | index in the level), sorted
  };

  /// segments_[0, used_): every level cut into ceil(logits / target) equal cell ranges, in
  /// level order (segments_ only grows, so their scratch is kept between calls).
  void plan_segments(std::span<const RpnLevelInput> levels, int threads) {
    std::size_t total = 0;
    for (const RpnLevelInput& in : levels)
      total += std::size_t(in.objectness.height) * std::size_t(in.objectness.width) *
               std::size_t(in.objectness.channels);
    const std::size_t target = std::max<std::size_t>(total / (2 * std::size_t(threads)), 4096);
    used_ = 0;
    for (std::size_t l = 0; l < levels.size(); ++l) {
      const RpnLevelInput& in = levels[l];
      const std::size_t cells = std::size_t(in.objectness.height) * std::size_t(in.objectness.width);
      const std::size_t n = cells * std::size_t(in.objectness.channels);
      const std::size_t parts = std::max<std::size_t>(1, std::min(cells, (n + target - 1) / target));
      for (std::size_t j = 0; j < parts; ++j) {
        if (segments_.size() <= used_) segments_.emplace_back();
        Segment& g = segments_[used_++];
        g.level = l;
        g.p0 = cells * j / parts;
        g.p1 = cells * (j + 1) / parts;
      }
    }
  }

  /// The segment's top-k as sorted (key << 32 | index in the level) entries.
  static void rank_segment(std::span<const RpnLevelInput> levels, Segment& g, std::size_t k) {
    const RpnLevelInput& in = levels[g.level];
    level_keys(in, g.p0, g.p1, g.topk.keys);
    detail::topk_indices_of_keys(g.topk.keys, k, g.order, g.topk);
    const std::size_t offset = g.p0 * std::size_t(in.objectness.channels);
    g.winners.resize(g.order.size());
    for (std::size_t i = 0; i < g.order.size(); ++i) {
      const std::size_t local = std::size_t(g.order[i]);
      g.winners[i] = (std::uint64_t(g.topk.keys[local]) << 32) | std::uint64_t(local + offset);
    }
  }

  /// One level's NMS: a copy of the detector's policy and its scratch.
  struct NmsSlotBase {
    virtual ~NmsSlotBase() = default;
  };
  template <class Nms>
  struct NmsSlot final : NmsSlotBase {
    explicit NmsSlot(const Nms& prototype) : nms(prototype) {}
    Nms nms;
    std::vector<Box> boxes;
    std::vector<float> scores;
    std::vector<int> keep;
  };

  /// `finish` with the levels' NMS in parallel: the candidates are in level order
  /// (level_begin_), so each level's are one contiguous run, ascending index within it, as
  /// batched_nms gathers a group's. Re-scored scores of kept boxes are written back.
  template <class Nms>
  void nms_per_level(const RpnConfig& cfg, Nms& nms, int threads, ScoredBoxes& out) {
    const std::size_t L = level_begin_.size() - 1;
    if (slots_.size() < L) slots_.resize(L);
    for (std::size_t l = 0; l < L; ++l)
      if (!slots_[l] || !dynamic_cast<NmsSlot<Nms>*>(slots_[l].get()))
        slots_[l] = std::make_unique<NmsSlot<Nms>>(nms);
    const std::ptrdiff_t n = std::ptrdiff_t(L);
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (std::ptrdiff_t l = 0; l < n; ++l) {
      auto& slot = static_cast<NmsSlot<Nms>&>(*slots_[std::size_t(l)]);
      const std::size_t b = level_begin_[std::size_t(l)], e = level_begin_[std::size_t(l) + 1];
      slot.boxes.assign(ws.candidates.boxes.begin() + std::ptrdiff_t(b),
                        ws.candidates.boxes.begin() + std::ptrdiff_t(e));
      slot.scores.assign(ws.candidates.scores.begin() + std::ptrdiff_t(b),
                         ws.candidates.scores.begin() + std::ptrdiff_t(e));
      slot.keep.clear();
      if (e > b)
        slot.nms(std::span<const Box>(slot.boxes), std::span<float>(slot.scores),
                 cfg.nms_threshold, slot.keep);
      for (const int k : slot.keep)
        ws.candidates.scores[b + std::size_t(k)] = slot.scores[std::size_t(k)];
    }
    // The union in batched_nms's order: by (score, index) keys.
    ws.nms.keys.clear();
    for (std::size_t l = 0; l < L; ++l)
      for (const int k : static_cast<NmsSlot<Nms>&>(*slots_[l]).keep) {
        const std::size_t i = level_begin_[l] + std::size_t(k);
        ws.nms.keys.push_back(detail::nms_sort_key(ws.candidates.scores[i], int(i)));
      }
    std::sort(ws.nms.keys.begin(), ws.nms.keys.end());
    const std::size_t k = std::min(ws.nms.keys.size(), std::size_t(cfg.post_nms_topk));
    out.boxes.resize(k);
    out.scores.resize(k);
    for (std::size_t i = 0; i < k; ++i) {
      const std::size_t src = std::size_t(std::uint32_t(ws.nms.keys[i]));
      out.boxes[i] = ws.candidates.boxes[src];
      out.scores[i] = ws.candidates.scores[src];
    }
  }

  std::vector<Segment> segments_;
  std::size_t used_ = 0;
  std::vector<std::size_t> level_begin_;
  std::vector<std::unique_ptr<NmsSlotBase>> slots_;
  std::vector<std::uint64_t> merged_, spare_;
  std::vector<int> order_;
};

/// `Stages` with `OmpTopKProposalSelector` as its proposal selector:
/// `rcnn::Detector<Exec, RoIAlign, rcnn::WithOmpProposals<rcnn::Detectron2Stages>>`.
template <class Stages>
struct WithOmpProposals : Stages {
  using proposal_selector = OmpTopKProposalSelector;
};

}  // namespace rcnn
