#pragma once
/// \file concepts.hpp
/// The stage contracts of rcnn, as C++20 concepts. `Detector` checks its policies against
/// them, so a policy with a missing or mistyped member fails with one readable line.
/// docs/how-to/write-a-stage-policy.md shows a custom policy for each; tests/static checks
/// types that must and must not satisfy each one.
///
/// One rule for every stage:
///  - A stage is a value the Detector owns (built by default, or passed in through
///    `rcnn::StageSet`, stages.hpp) and calls through a non-const reference, from one thread
///    at a time. Scratch is an ordinary member of the stage (no `mutable` needed).
///  - `reserve(...)` sizes that scratch for the largest work an image can bring
///    (`StageSizing`, stage_io.hpp; NMS and RoIAlign take a count). The Detector calls it
///    before the first image of a size (and from `Detector::reserve_for`), so that at steady
///    state no stage allocates. A stateless stage writes `void reserve(...) {}`.
///  - A stage reports failures as rcnn::Error (error.hpp).
/// This header includes only the data types of the signatures, never a stage's
/// implementation.

#include <concepts>
#include <cstddef>
#include <optional>
#include <span>
#include <vector>

#include "config.hpp"
#include "exec/outputs.hpp"
#include "mask/mask_types.hpp"
#include "profiler.hpp"
#include "stage_io.hpp"
#include "types.hpp"

namespace rcnn {

/// Runs the two compiled networks. `run_backbone_rpn` takes the normalised, padded batch
/// [N, 3, H, W] and fills per-level views (valid until the next call); `run_box_head` takes
/// pooled RoI features [R, C, P, P] and fills [R, K+1] logits and [R, 4K'] deltas.
/// Pre: shapes as the bundle says. Post: outputs float32, shapes checked by the Detector
/// (detail/output_checks.hpp). Errors: rcnn::Error naming the module and tensor.
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

/// An executor that can also run a Keypoint R-CNN bundle's keypoint head: `run_keypoint_head`
/// takes pooled keypoint features [R, C, P, P] and fills heatmap logits [R, K, S, S] (valid
/// until its next call). Optional, like MaskExecutor: a Detector built on a keypoint_rcnn
/// bundle with an executor without it fails at construction with a clear error.
template <class E>
concept KeypointExecutor = Executor<E> && requires(E& exec, const TensorView& input,
                                                   KeypointHeadOutputs& out) {
  { exec.run_keypoint_head(input, out) } -> std::same_as<void>;
};

/// An executor that can also run the box heads of a Cascade R-CNN's later stages:
/// `run_cascade_box_head(stage, input, out)` runs stage `stage` (>= 1; stage 0 is
/// `run_box_head`) on pooled features [R, C, P, P], with `run_box_head`'s outputs. Optional:
/// a Detector built on a cascade bundle with an executor without it refuses the bundle.
template <class E>
concept CascadeExecutor = Executor<E> && requires(E& exec, std::size_t stage,
                                                  const TensorView& input, BoxHeadOutputs& out) {
  { exec.run_cascade_box_head(stage, input, out) } -> std::same_as<void>;
};

/// Pools RoIs from multi-level feature maps. Pre: `levels[i]` indexes `maps`, `out` holds
/// R * C * P * P floats. Post: out[r] = RoIAlign of rois[r] on maps[levels[r]] with
/// `cfg`'s resolution / sampling ratio / alignment. Must be bit-identical to RoIAlignRef.
/// `reserve(rois)`: capacity for calls with up to that many RoIs.
template <class R>
concept RoIAlignPolicy = requires(R& pool, std::span<const FeatureMap> maps,
                                  std::span<const float> scales, std::span<const Box> rois,
                                  std::span<const int> levels, const PoolerConfig& cfg,
                                  std::span<float> out, std::size_t n) {
  { pool(maps, scales, rois, levels, cfg, out) } -> std::same_as<void>;
  { pool.reserve(n) } -> std::same_as<void>;
};

/// Non-maximum suppression of one group of boxes: `keep` = indices of the kept boxes in
/// descending (final) score order. `scores` is writable: a re-scoring policy (soft-NMS)
/// stores each kept box's final score at its index; a policy that takes
/// `std::span<const float>` declares that it does not re-score.
/// `reserve(n)`: capacity for calls with up to n boxes.
/// The Detector has two NMS slots: `rpn_nms` (per RPN level, inside the proposal selector)
/// and `box_nms` (per class, inside box inference).
template <class N>
concept NmsPolicy = requires(N& nms, std::span<const Box> boxes, std::span<float> scores,
                             double iou, std::vector<int>& keep, std::size_t n) {
  { nms(boxes, scores, iou, keep) } -> std::same_as<void>;
  { nms.reserve(n) } -> std::same_as<void>;
};

/// A stage sized with `reserve(const StageSizing&)`.
template <class P>
concept SizedStage = requires(P& p, const StageSizing& s) {
  { p.reserve(s) } -> std::same_as<void>;
};

/// Image -> normalised padded CHW input (see preprocess/preprocess.hpp). `pad_to`: pad to
/// exactly this size (static-shape modules).
template <class P>
concept PreprocessPolicy = SizedStage<P> && requires(P& pre, const ImageView& img,
                                                     const InputConfig& cfg,
                                                     std::vector<float>& out,
                                                     std::optional<Size> pad_to) {
  { pre(img, cfg, out, pad_to) } -> std::same_as<PreprocessResult>;
};

/// Anchors of one level for a grid (see anchors/grid_anchor_generator.hpp).
template <class G>
concept AnchorGeneratorPolicy =
    SizedStage<G> && requires(G& gen, const AnchorConfig& cfg, Conventions conv,
                              std::size_t level, int stride, Size grid, Size padded,
                              std::vector<Box>& out) {
      { gen(cfg, conv, level, stride, grid, padded, out) } -> std::same_as<void>;
    };

/// Proposal selection of one image with the RPN's NMS policy `Nms` (see
/// proposals/topk_proposal_selector.hpp). Output: proposals in the resized frame.
template <class S, class Nms>
concept ProposalSelectorPolicy =
    SizedStage<S> && requires(S& sel, std::span<const RpnLevelInput> levels, Size image,
                              const RpnConfig& cfg, Nms& nms, ScoredBoxes& out) {
      { sel(levels, image, cfg, nms, out) } -> std::same_as<void>;
    };

/// Box-head inference of one image with the per-class NMS policy `Nms` (see
/// box/softmax_box_inference.hpp). Output: detections in the resized frame, best first.
template <class B, class Nms>
concept BoxInferencePolicy =
    SizedStage<B> && requires(B& inf, std::span<const Box> proposals, const BoxHeadView& head,
                              Size image, const RoiHeadsConfig& cfg, Nms& nms,
                              std::vector<Detection>& out) {
      { inf(proposals, head, image, cfg, nms, out) } -> std::same_as<void>;
    };

/// Maps detections back to the original image, in place, and reports what it kept:
/// `kept[i]` = the index, before the call, of output detection i (strictly increasing when
/// the policy only drops; any order when it reorders). Everything per detection (masks,
/// keypoints) follows `kept`; a policy may change boxes and scores freely.
template <class P>
concept PostprocessPolicy =
    SizedStage<P> && requires(P& post, Size resized, Size original, Conventions conv,
                              const PostprocessConfig& cfg, std::vector<Detection>& dets,
                              std::vector<int>& kept) {
      { post(resized, original, conv, cfg, dets, kept) } -> std::same_as<void>;
    };

/// Pastes M x M mask probabilities into the image (see mask/detectron2_paste.hpp,
/// mask/torchvision_paste.hpp): out[i] = the binary mask of probs.mask(i) over boxes[i]
/// (original image frame), `value >= threshold`. `convention` names the framework rule it
/// implements (model.json's `mask_head.paste`).
template <class P>
concept MaskPastePolicy =
    SizedStage<P> && requires(P& paste, const MaskProbs& probs, std::span<const Box> boxes,
                              Size image, float threshold, std::vector<InstanceMask>& out) {
      { P::convention } -> std::convertible_to<MaskHeadConfig::Paste>;
      { paste(probs, boxes, image, threshold, out) } -> std::same_as<void>;
    };

/// A stage with a run-time thread count (the OpenMP policies): `Detector::set_threads`
/// sets it on every stage that has one.
template <class P>
concept ThreadedStage = requires(P& p) {
  { p.num_threads } -> std::convertible_to<int>;
};

/// A stage bundle: the stage types of a detector and the conventions they implement. The
/// default bundles (stages.hpp) name every slot; a user bundle derives from one and
/// replaces what it changes: `struct Mine : rcnn::Detectron2Stages { using box_nms = X; };`.
/// The Detector holds one value of each slot in an `rcnn::StageSet<Bundle>`.
template <class S>
concept StageBundle =
    requires {
      { S::conventions } -> std::convertible_to<Conventions>;
      typename S::preprocess;
      typename S::anchor_generator;
      typename S::rpn_nms;
      typename S::proposal_selector;
      typename S::box_nms;
      typename S::box_inference;
      typename S::postprocess;
      typename S::mask_paste;
      typename S::profiler;
    } && PreprocessPolicy<typename S::preprocess> &&
    AnchorGeneratorPolicy<typename S::anchor_generator> && NmsPolicy<typename S::rpn_nms> &&
    NmsPolicy<typename S::box_nms> &&
    ProposalSelectorPolicy<typename S::proposal_selector, typename S::rpn_nms> &&
    BoxInferencePolicy<typename S::box_inference, typename S::box_nms> &&
    PostprocessPolicy<typename S::postprocess> && MaskPastePolicy<typename S::mask_paste> &&
    ProfilerPolicy<typename S::profiler>;

}  // namespace rcnn
