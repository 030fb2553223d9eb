#pragma once
/// \file stages.hpp
/// Default stage bundles, one per framework convention, and `StageSet`, the stage values a
/// Detector owns. Override one stage by deriving:
/// `struct MyStages : rcnn::Detectron2Stages { using box_nms = MySoftNms; };`
/// and give stages with run-time parameters as values:
/// `rcnn::StageSet<MyStages>{.box_nms = MySoftNms(0.5f)}` (Detector's constructor,
/// rcnn::load).

#include <concepts>
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

}  // namespace rcnn
