#pragma once
/// \file stages.hpp
/// Default stage bundles, one per framework convention, and `StageSet`, the stage values a
/// Detector owns. Override one stage by deriving:
/// `struct MyStages : rcnn::Detectron2Stages { using box_nms = MySoftNms; };`
/// and give stages with run-time parameters as values:
/// `rcnn::StageSet<MyStages>{.box_nms = MySoftNms(0.5f)}` (Detector's constructor,
/// rcnn::load).

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <span>
#include <type_traits>

#include "anchors/grid_anchor_generator.hpp"
#include "box/softmax_box_inference.hpp"
#include "concepts.hpp"
#include "config.hpp"
#include "mask/detectron2_paste.hpp"
#include "mask/torchvision_paste.hpp"
#include "nms/bitmask_nms.hpp"
#include "nms/greedy_nms.hpp"
#include "postprocess/rescale_postprocess.hpp"
#include "preprocess/preprocess.hpp"
#include "profiler.hpp"
#include "proposals/topk_proposal_selector.hpp"

namespace rcnn {

/// Stages reproducing torchvision 0.14's `GeneralizedRCNN` inference. The numeric switches
/// (rounding of anchors, sigmoid scores, background column, ...) come from the bundle; the
/// bundle's `conventions` must be "torchvision" (checked when the detector is built).
struct TorchvisionStages {
  static constexpr Conventions conventions = Conventions::torchvision;
  using preprocess = TorchvisionPreprocess;  ///< normalise, then float bilinear resize
  using anchor_generator = GridAnchorGenerator;
  using rpn_nms = BitmaskNms;  ///< per RPN level, inside the proposal selector
  using proposal_selector = TopKProposalSelector;
  using box_nms = BitmaskNms;  ///< per class, inside box inference
  using box_inference = SoftmaxBoxInference;
  using postprocess = RescalePostprocess;
  /// Mask R-CNN bundles only. The OpenMP pastes (mask/omp_paste.hpp, rcnn::omp) are
  /// selected with rcnn::WithOmpPaste<Stages> (the core needs no OpenMP).
  using mask_paste = TorchvisionPasteRef;
  /// NoProfiler: compiled out; rcnn::WithProfiler<Stages> selects rcnn::StageProfiler.
  using profiler = NoProfiler;
};

/// Stages reproducing Detectron2 0.6's `GeneralizedRCNN` inference (DefaultPredictor).
struct Detectron2Stages : TorchvisionStages {
  static constexpr Conventions conventions = Conventions::detectron2;
  using preprocess = Detectron2Preprocess;  ///< Pillow-exact uint8 bilinear resize first
  using mask_paste = Detectron2PasteRef;
};

/// The plain reference stages (greedy NMS) of each convention: the baseline every optimised
/// stage is tested against.
struct TorchvisionReferenceStages : TorchvisionStages {
  using rpn_nms = GreedyNms;
  using box_nms = GreedyNms;
};
struct Detectron2ReferenceStages : Detectron2Stages {
  using rpn_nms = GreedyNms;
  using box_nms = GreedyNms;
};

/// The default bundle of a convention.
template <Conventions C>
using DefaultStages =
    std::conditional_t<C == Conventions::torchvision, TorchvisionStages, Detectron2Stages>;

/// A bundle template that changes nothing: `rcnn::load`'s default customisation.
template <class S>
using Unchanged = S;

/// The stage values of a detector with bundle `S`: one member per slot, owned by the
/// Detector (`Detector::stages()`). An aggregate: build it with designated initializers for
/// the stages that need run-time parameters, the rest default-constructed:
/// `rcnn::StageSet<MyStages>{.box_nms = MySoftNms(0.5f)}`.
template <class S>
struct StageSet {
  typename S::preprocess preprocess{};
  typename S::anchor_generator anchor_generator{};
  typename S::rpn_nms rpn_nms{};
  typename S::proposal_selector proposal_selector{};
  typename S::box_nms box_nms{};
  typename S::box_inference box_inference{};
  typename S::postprocess postprocess{};
  typename S::mask_paste mask_paste{};
  [[no_unique_address]] typename S::profiler profiler{};

  /// Calls `f(stage)` for every stage value (not the profiler).
  template <class F>
  void for_each(F&& f) {
    f(preprocess);
    f(anchor_generator);
    f(rpn_nms);
    f(proposal_selector);
    f(box_nms);
    f(box_inference);
    f(postprocess);
    f(mask_paste);
  }
};

/// True when every stage of bundle `S` can be default-constructed (a StageSet<S>{} exists).
template <class S>
inline constexpr bool stages_default_constructible =
    std::default_initializable<typename S::preprocess> &&
    std::default_initializable<typename S::anchor_generator> &&
    std::default_initializable<typename S::rpn_nms> &&
    std::default_initializable<typename S::proposal_selector> &&
    std::default_initializable<typename S::box_nms> &&
    std::default_initializable<typename S::box_inference> &&
    std::default_initializable<typename S::postprocess> &&
    std::default_initializable<typename S::mask_paste> &&
    std::default_initializable<typename S::profiler>;

/// The largest work a batch of `n` images can bring to each stage, for a bundle `cfg` whose
/// RPN level l has `cells[l]` grid cells.
inline StageSizing stage_sizing(const ModelConfig& cfg, std::size_t n,
                                std::span<const std::size_t> cells) {
  StageSizing s;
  s.images = n;
  s.rpn_levels = cells.size();
  const std::size_t pre = std::size_t(std::max(cfg.rpn.pre_nms_topk, 0));
  for (std::size_t l = 0; l < cells.size(); ++l) {
    const std::size_t m = std::min(cells[l] * std::size_t(cfg.anchors.anchors_per_cell(l)), pre);
    s.rpn_candidates += m;
    s.rpn_level_candidates = std::max(s.rpn_level_candidates, m);
  }
  s.proposals = std::min(s.rpn_candidates, std::size_t(std::max(cfg.rpn.post_nms_topk, 0)));
  s.num_classes = cfg.roi_heads.num_classes;
  s.box_candidates = s.proposals * std::size_t(std::max(s.num_classes, 0));
  s.detections = std::size_t(std::max(cfg.roi_heads.detections_per_image, 0));
  return s;
}

}  // namespace rcnn
