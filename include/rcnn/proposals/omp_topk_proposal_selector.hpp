#pragma once
/// \file omp_topk_proposal_selector.hpp
/// RPN proposal selection with the per-level work on `num_threads` OpenMP threads
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

/// `TopKProposalSelector` with its per-level work on threads, in two parallel loops:
/// 1. the ranking (keys and top-k; 256 K logits for P2-P6 of an 800 x 1282 input): each
///    level is cut into contiguous cell ranges ("segments") of about (all logits) /
///    (2 * threads) logits, each segment's top-k computed on its own;
/// 2. per level: the first k of its segments' winners merged by (key, index), decoded,
///    clipped and filtered, and that level's NMS, with the level's own copy of the
///    detector's NMS policy (made on the first call, then reused).
/// Then, on the calling thread, the kept boxes of all levels ordered as `batched_nms`
/// orders them (`detail::nms_sort_key`: score, then index in the levels' concatenated
/// candidates) and cut at post_nms_topk. Why it is the reference exactly: the top-k under
/// the total order (key, index) is unique and contained in the union of the segments'
/// top-k; a level's candidates are the reference's in the same order, and batched_nms runs
/// the NMS on each level's candidates in that order. `num_threads` < 2, or an NMS policy
/// that cannot be copied: the reference. Cost: the reference's divided over the threads,
/// plus a merge of at most (segments of a level) x k entries per level. No heap
/// allocation once the level sizes, thread count and NMS type have been seen. Stateful:
/// one instance per calling thread.
struct OmpTopKProposalSelector : TopKProposalSelector {
  int num_threads = 1;

  template <class Nms>
  void operator()(std::span<const RpnLevelInput> levels, Size image, const RpnConfig& cfg,
                  Nms& nms, ScoredBoxes& out) {
    const int threads = num_threads < 1 ? 1 : num_threads;
    if constexpr (std::is_copy_constructible_v<Nms>) {
      if (threads > 1) {
        run(levels, image, cfg, nms, out, threads);
        return;
      }
    }
    TopKProposalSelector::operator()(levels, image, cfg, nms, out);
  }

 private:
  struct Segment {
    std::size_t level = 0, p0 = 0, p1 = 0;  ///< cells [p0, p1) of the level
    detail::TopKWorkspace topk;
    std::vector<int> order;
    std::vector<std::uint64_t> winners;  ///< (key << 32 | index in the level), sorted
  };

  /// One level's work: its merged top-k, its candidates and what its NMS keeps.
  struct Slot {
    virtual ~Slot() = default;
    std::vector<std::uint64_t> merged, spare;
    std::vector<int> order;
    ScoredBoxes candidates;
    std::vector<int> keep;
  };
  /// A slot with the level's copy of the NMS policy.
  template <class Nms>
  struct NmsSlot final : Slot {
    explicit NmsSlot(const Nms& prototype) : nms(prototype) {}
    Nms nms;
  };

  template <class Nms>
  void run(std::span<const RpnLevelInput> levels, Size image, const RpnConfig& cfg, Nms& nms,
           ScoredBoxes& out, int threads) {
    prepare(levels, cfg, nms, out);
    const std::size_t k = std::size_t(cfg.pre_nms_topk);
    const std::size_t L = levels.size();
    plan_segments(levels, threads);
    if (slots_.size() < L) slots_.resize(L);
    for (std::size_t l = 0; l < L; ++l)
      if (!slots_[l] || !dynamic_cast<NmsSlot<Nms>*>(slots_[l].get()))
        slots_[l] = std::make_unique<NmsSlot<Nms>>(nms);
    const std::ptrdiff_t S = std::ptrdiff_t(used_);
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (std::ptrdiff_t s = 0; s < S; ++s) rank_segment(levels, segments_[std::size_t(s)], k);
    const std::ptrdiff_t n = std::ptrdiff_t(L);
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (std::ptrdiff_t l = 0; l < n; ++l)
      level_nms(levels, std::size_t(l), static_cast<NmsSlot<Nms>&>(*slots_[std::size_t(l)]),
                image, cfg, k);
    // The union in batched_nms's order: (score, index in the concatenated candidates).
    ws.nms.keys.clear();
    std::size_t begin = 0;
    for (std::size_t l = 0; l < L; ++l) {
      const Slot& slot = *slots_[l];
      for (const int j : slot.keep)
        ws.nms.keys.push_back(detail::nms_sort_key(slot.candidates.scores[std::size_t(j)],
                                                   int(begin + std::size_t(j))));
      slot_begin_[l] = begin;
      begin += slot.candidates.size();
    }
    std::sort(ws.nms.keys.begin(), ws.nms.keys.end());
    const std::size_t kept = std::min(ws.nms.keys.size(), std::size_t(cfg.post_nms_topk));
    out.boxes.resize(kept);
    out.scores.resize(kept);
    for (std::size_t i = 0; i < kept; ++i) {
      const std::size_t g = std::size_t(std::uint32_t(ws.nms.keys[i]));
      std::size_t l = 0;
      while (l + 1 < L && slot_begin_[l + 1] <= g) ++l;
      const Slot& slot = *slots_[l];
      out.boxes[i] = slot.candidates.boxes[g - slot_begin_[l]];
      out.scores[i] = slot.candidates.scores[g - slot_begin_[l]];
    }
  }

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
    slot_begin_.resize(levels.size());
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

  /// Level l: its segments' winners merged, the first k decoded into the slot's candidates
  /// (the reference's candidates of that level, in its order), then the slot's NMS on
  /// them, as batched_nms runs it on the level's group (re-scored scores stay in the slot).
  template <class Nms>
  void level_nms(std::span<const RpnLevelInput> levels, std::size_t l, NmsSlot<Nms>& slot,
                 Size image, const RpnConfig& cfg, std::size_t k) const {
    slot.merged.clear();
    for (std::size_t s = 0; s < used_; ++s) {
      if (segments_[s].level != l) continue;
      const std::vector<std::uint64_t>& w = segments_[s].winners;
      slot.spare.resize(slot.merged.size() + w.size());
      std::merge(slot.merged.begin(), slot.merged.end(), w.begin(), w.end(), slot.spare.begin());
      slot.merged.swap(slot.spare);
    }
    if (slot.merged.size() > k) slot.merged.resize(k);
    slot.order.resize(slot.merged.size());
    for (std::size_t i = 0; i < slot.merged.size(); ++i)
      slot.order[i] = int(std::uint32_t(slot.merged[i]));
    slot.candidates.clear();
    decode_candidates(levels[l], slot.order, image, cfg, slot.candidates);
    slot.keep.clear();
    if (!slot.candidates.boxes.empty())
      slot.nms(std::span<const Box>(slot.candidates.boxes),
               std::span<float>(slot.candidates.scores), cfg.nms_threshold, slot.keep);
  }

  std::vector<Segment> segments_;
  std::size_t used_ = 0;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::vector<std::size_t> slot_begin_;
};

/// `Stages` with `OmpTopKProposalSelector` as its proposal selector:
/// `rcnn::Detector<Exec, RoIAlign, rcnn::WithOmpProposals<rcnn::Detectron2Stages>>`.
template <class Stages>
struct WithOmpProposals : Stages {
  using proposal_selector = OmpTopKProposalSelector;
};

}  // namespace rcnn
