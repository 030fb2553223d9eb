#pragma once
/// \file stages.hpp
/// Default stage bundles, one per framework convention. Override one stage by deriving:
/// `struct MyStages : rcnn::Detectron2Stages { using nms = MyNms; };`

#include "anchors/grid_anchor_generator.hpp"
#include "box/softmax_box_inference.hpp"
#include "config.hpp"
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
};

/// Stages reproducing Detectron2 0.6's `GeneralizedRCNN` inference (DefaultPredictor).
struct Detectron2Stages : TorchvisionStages {
  static constexpr Conventions conventions = Conventions::detectron2;
  using preprocess = Detectron2Preprocess;  ///< Pillow-exact uint8 bilinear resize first
};

/// The plain reference stages (greedy NMS) of each convention: the baseline every optimised
/// stage is tested against.
struct TorchvisionReferenceStages : TorchvisionStages {
  using nms = GreedyNms;
};
struct Detectron2ReferenceStages : Detectron2Stages {
  using nms = GreedyNms;
};

}  // namespace rcnn
