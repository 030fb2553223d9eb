#pragma once
/// \file stages.hpp
/// Default stage bundles, one per framework convention. Override one stage by deriving:
/// `struct MyStages : rcnn::Detectron2Stages { using nms = MyNms; };`

#include <type_traits>

#include "anchors/grid_anchor_generator.hpp"
#include "box/softmax_box_inference.hpp"
#include "config.hpp"
#include "mask/detectron2_paste.hpp"
#include "mask/torchvision_paste.hpp"
#include "nms/bitmask_nms.hpp"
#include "nms/greedy_nms.hpp"
#include "postprocess/rescale_postprocess.hpp"
#include "preprocess/preprocess.hpp"
#include "proposals/topk_proposal_selector.hpp"

namespace rcnn {

/// Stages reproducing torchvision 0.14's `GeneralizedRCNN` inference. The numeric switches
/// (rounding of anchors, sigmoid scores, background column, ...) come from the bundle; the
/// bundle's `conventions` must be "torchvision" (checked when the detector is built).
struct TorchvisionStages {
  static constexpr Conventions conventions = Conventions::torchvision;
  using preprocess = TorchvisionPreprocess;  ///< normalise, then float bilinear resize
  using anchor_generator = GridAnchorGenerator;
  using nms = BitmaskNms;
  using proposal_selector = TopKProposalSelector;
  using box_inference = SoftmaxBoxInference;
  using postprocess = RescalePostprocess;
  /// Mask R-CNN bundles only. The OpenMP pastes (mask/omp_paste.hpp, rcnn::omp) are
  /// selected with rcnn::WithOmpPaste<Stages> (the core needs no OpenMP).
  using mask_paste = TorchvisionPasteRef;
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
  using nms = GreedyNms;
};
struct Detectron2ReferenceStages : Detectron2Stages {
  using nms = GreedyNms;
};

/// A stage-bundle modifier for rcnn::load / rcnn::AnyDetector (its `Modifier` parameter):
/// `apply<S>` is the bundle used in place of S. This one changes nothing;
/// rcnn::OmpPasteModifier (mask/omp_paste.hpp) selects the OpenMP mask pastes.
struct KeepStages {
  template <class S>
  using apply = S;
};

namespace detail {
template <class S>
struct mask_paste_of {
  using type = std::conditional_t<S::conventions == Conventions::torchvision,
                                  TorchvisionPasteRef, Detectron2PasteRef>;
};
template <class S>
  requires requires { typename S::mask_paste; }
struct mask_paste_of<S> {
  using type = typename S::mask_paste;
};
}  // namespace detail

/// The mask paste policy of a stage bundle: its `mask_paste`, or when it names none the
/// reference paste of its conventions.
template <class Stages>
using mask_paste_of_t = typename detail::mask_paste_of<Stages>::type;

}  // namespace rcnn
