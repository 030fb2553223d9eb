#pragma once
/// \file outputs.hpp
/// What an executor hands back: non-owning views of the networks' outputs. Framework-free.

#include <vector>

#include "../types.hpp"

namespace rcnn {

/// Outputs of `backbone_rpn` for a batch, in the bundle's level order. Views stay valid
/// until the executor's next `run_backbone_rpn` call.
///  - objectness[l]: [N, A, Hl, Wl]      (rpn level l)
///  - deltas[l]:     [N, 4A, Hl, Wl]     (rpn level l)
///  - features[l]:   [N, C, Hl, Wl]      (roi level l; contiguous NCHW or channels-last,
///                                      as `TensorView::layout` says)
struct BackboneOutputs {
  std::vector<TensorView> objectness;
  std::vector<TensorView> deltas;
  std::vector<TensorView> features;
};

/// Outputs of a RoI head: 2-D tensors stored as shape {R, width, 1, 1}. Views stay valid
/// until the executor's next call of the same head.
struct BoxHeadOutputs {
  TensorView class_logits;
  TensorView box_deltas;
};

/// Output of the mask head (Mask R-CNN bundles): raw logits [R, Km, M, M] (no sigmoid, every
/// class channel; docs/reference/bundle-format.md, "Modules"). Valid until the executor's next mask-head call.
struct MaskHeadOutputs {
  TensorView logits;
};

/// Output of the keypoint head (Keypoint R-CNN bundles): heatmap logits [R, K, S, S] (no
/// decoding; docs/reference/bundle-format.md, "keypoint_head"). Valid until the executor's
/// next keypoint-head call.
struct KeypointHeadOutputs {
  TensorView heatmaps;
};

}  // namespace rcnn
