#pragma once
/// \file concepts.hpp
/// The stage contracts of rcnn, as C++20 concepts. `Detector` checks its policies against
/// them, so a policy with a missing or mistyped member fails with one readable line.
/// docs/how-to/write-a-stage-policy.md shows a custom policy for each.

#include <concepts>
#include <span>
#include <vector>

#include "anchors/grid_anchor_generator.hpp"
#include "box/softmax_box_inference.hpp"
#include "config.hpp"
#include "exec/outputs.hpp"
#include "mask/mask_types.hpp"
#include "preprocess/preprocess.hpp"
#include "proposals/topk_proposal_selector.hpp"
#include "types.hpp"

namespace rcnn {

/// Runs the two compiled networks. `run_backbone_rpn` takes the normalised, padded batch
/// [N, 3, H, W] and fills per-level views (valid until the next call); `run_box_head` takes
/// pooled RoI features [R, C, P, P] and fills [R, K+1] logits and [R, 4K'] deltas.
/// Pre: shapes as the bundle says. Post: outputs float32, contiguous, shapes checked.
/// Errors: rcnn::Error naming the module and tensor.
template <class E>
concept Executor = requires(E& exec, const TensorView& input, BackboneOutputs& backbone,
                            BoxHeadOutputs& head) {
  { exec.run_backbone_rpn(input, backbone) } -> std::same_as<void>;
  { exec.run_box_head(input, head) } -> std::same_as<void>;
};

/// An executor that can also run a Mask R-CNN bundle's mask head: `run_mask_head` takes
/// pooled mask features [R, C, P, P] and fills raw logits [R, Km, 2P, 2P] (valid until its
/// next call). Optional: a Detector built on a mask_rcnn bundle with an executor without it
/// refuses the bundle with an rcnn::Error.
template <class E>
concept MaskExecutor = Executor<E> && requires(E& exec, const TensorView& input,
                                               MaskHeadOutputs& out) {
  { exec.run_mask_head(input, out) } -> std::same_as<void>;
};

/// Pools RoIs from multi-level feature maps. Pre: `levels[i]` indexes `maps`, `out` holds
/// R * C * P * P floats. Post: out[r] = RoIAlign of rois[r] on maps[levels[r]] with
/// `cfg`'s resolution / sampling ratio / alignment. Must be bit-identical to RoIAlignRef.
template <class R>
concept RoIAlignPolicy = requires(const R& pool, std::span<const FeatureMap> maps,
                                  std::span<const float> scales, std::span<const Box> rois,
                                  std::span<const int> levels, const PoolerConfig& cfg,
                                  std::span<float> out) {
  { pool(maps, scales, rois, levels, cfg, out) } -> std::same_as<void>;
};

/// Non-maximum suppression: keep = indices of kept boxes, descending score.
template <class N>
concept NmsPolicy = requires(N& nms, std::span<const Box> boxes, std::span<const float> scores,
                             double iou, std::vector<int>& keep) {
  { nms(boxes, scores, iou, keep) } -> std::same_as<void>;
};

/// Image -> normalised padded CHW input (see preprocess/preprocess.hpp).
template <class P>
concept PreprocessPolicy = requires(P& pre, const ImageView& img, const InputConfig& cfg,
                                    std::vector<float>& out, std::optional<Size> pad_to) {
  { pre(img, cfg, out, pad_to) } -> std::same_as<PreprocessResult>;
};

/// Anchors of one level for a grid (see anchors/grid_anchor_generator.hpp).
template <class G>
concept AnchorGeneratorPolicy =
    requires(const G& gen, const AnchorConfig& cfg, Conventions conv, std::size_t level,
             int stride, Size grid, Size padded, std::vector<Box>& out) {
      { gen(cfg, conv, level, stride, grid, padded, out) } -> std::same_as<void>;
    };

/// Proposal selection of one image (see proposals/topk_proposal_selector.hpp).
template <class S, class Nms>
concept ProposalSelectorPolicy =
    requires(const S& sel, std::span<const RpnLevelInput> levels, Size image,
             const RpnConfig& cfg, Nms& nms, ProposalWorkspace& ws, ScoredBoxes& out) {
      { sel(levels, image, cfg, nms, ws, out) } -> std::same_as<void>;
    };

/// Box-head inference of one image (see box/softmax_box_inference.hpp).
template <class B, class Nms>
concept BoxInferencePolicy =
    requires(const B& inf, std::span<const Box> proposals, const BoxHeadView& head, Size image,
             const RoiHeadsConfig& cfg, Nms& nms, BoxInferenceWorkspace& ws,
             std::vector<Detection>& out) {
      { inf(proposals, head, image, cfg, nms, ws, out) } -> std::same_as<void>;
    };

/// Maps detections back to the original image.
template <class P>
concept PostprocessPolicy = requires(const P& post, Size resized, Size original,
                                     Conventions conv, const PostprocessConfig& cfg,
                                     std::vector<Detection>& dets) {
  { post(resized, original, conv, cfg, dets) } -> std::same_as<void>;
};

/// Pastes M x M mask probabilities into the image (see mask/detectron2_paste.hpp,
/// mask/torchvision_paste.hpp): out[i] = the binary mask of probs.mask(i) over boxes[i]
/// (original image frame), `value >= threshold`. `convention` names the framework rule it
/// implements (model.json's `mask_head.paste`).
template <class P>
concept MaskPastePolicy =
    requires(const P& paste, const MaskProbs& probs, std::span<const Box> boxes, Size image,
             float threshold, std::vector<InstanceMask>& out) {
      { P::convention } -> std::convertible_to<MaskHeadConfig::Paste>;
      { paste(probs, boxes, image, threshold, out) } -> std::same_as<void>;
    };

/// A stage bundle: the defaulted stages of a detector plus the conventions it implements.
template <class S>
concept StageBundle =
    requires {
      { S::conventions } -> std::convertible_to<Conventions>;
      typename S::preprocess;
      typename S::anchor_generator;
      typename S::nms;
      typename S::proposal_selector;
      typename S::box_inference;
      typename S::postprocess;
    } && PreprocessPolicy<typename S::preprocess> &&
    AnchorGeneratorPolicy<typename S::anchor_generator> && NmsPolicy<typename S::nms> &&
    ProposalSelectorPolicy<typename S::proposal_selector, typename S::nms> &&
    BoxInferencePolicy<typename S::box_inference, typename S::nms> &&
    PostprocessPolicy<typename S::postprocess>;

}  // namespace rcnn
