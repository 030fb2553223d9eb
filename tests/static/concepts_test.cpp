// Static tests of the stage concepts (rcnn/concepts.hpp): types that must satisfy each one
// and types that must not. Compiled as part of the build (a failure is a build error).
// tests/compile_fail/ checks the messages a user sees for the negative cases.

#include <rcnn/concepts.hpp>
#include <rcnn/detector.hpp>
#include <rcnn/mask/omp_paste.hpp>
#include <rcnn/preprocess/fused_preprocess.hpp>
#include <rcnn/preprocess/omp_preprocess.hpp>
#include <rcnn/roi_align/omp_roi_align.hpp>
#include <rcnn/roi_align/roi_align_ref.hpp>
#include <rcnn/stages.hpp>

#include <span>
#include <vector>

namespace {

// ---- positive: every shipped policy satisfies its concept -----------------------------
static_assert(rcnn::NmsPolicy<rcnn::GreedyNms>);
static_assert(rcnn::NmsPolicy<rcnn::BitmaskNms>);
static_assert(rcnn::RoIAlignPolicy<rcnn::RoIAlignRef>);
static_assert(rcnn::RoIAlignPolicy<rcnn::OmpRoIAlign>);
static_assert(rcnn::PreprocessPolicy<rcnn::Detectron2Preprocess>);
static_assert(rcnn::PreprocessPolicy<rcnn::TorchvisionPreprocess>);
static_assert(rcnn::AnchorGeneratorPolicy<rcnn::GridAnchorGenerator>);
static_assert(rcnn::ProposalSelectorPolicy<rcnn::TopKProposalSelector, rcnn::BitmaskNms>);
static_assert(rcnn::BoxInferencePolicy<rcnn::SoftmaxBoxInference, rcnn::GreedyNms>);
static_assert(rcnn::PostprocessPolicy<rcnn::RescalePostprocess>);
static_assert(rcnn::MaskPastePolicy<rcnn::Detectron2PasteRef>);
static_assert(rcnn::MaskPastePolicy<rcnn::TorchvisionPasteRef>);
static_assert(rcnn::MaskPastePolicy<rcnn::OmpDetectron2Paste>);
static_assert(rcnn::MaskPastePolicy<rcnn::OmpTorchvisionPaste>);
static_assert(rcnn::ProfilerPolicy<rcnn::NoProfiler> && rcnn::ProfilerPolicy<rcnn::StageProfiler>);
static_assert(rcnn::StageBundle<rcnn::TorchvisionStages>);
static_assert(rcnn::StageBundle<rcnn::Detectron2Stages>);
static_assert(rcnn::StageBundle<rcnn::Detectron2ReferenceStages>);
static_assert(rcnn::StageBundle<rcnn::WithOmpPaste<rcnn::TorchvisionStages>>);
static_assert(rcnn::StageBundle<rcnn::WithProfiler<rcnn::WithOmpPaste<rcnn::Detectron2Stages>>>);
static_assert(rcnn::ThreadedStage<rcnn::OmpRoIAlign> && rcnn::ThreadedStage<rcnn::OmpDetectron2Paste>);
static_assert(!rcnn::ThreadedStage<rcnn::RoIAlignRef>);
// The one-pass and OpenMP preprocessing policies, and their bundle template.
static_assert(rcnn::PreprocessPolicy<rcnn::FusedTorchvisionPreprocess> &&
              rcnn::PreprocessPolicy<rcnn::FusedDetectron2Preprocess>);
static_assert(rcnn::PreprocessPolicy<rcnn::OmpTorchvisionPreprocess> &&
              rcnn::PreprocessPolicy<rcnn::OmpDetectron2Preprocess>);
static_assert(rcnn::ThreadedStage<rcnn::OmpTorchvisionPreprocess> &&
              !rcnn::ThreadedStage<rcnn::FusedDetectron2Preprocess>);
static_assert(rcnn::StageBundle<rcnn::WithProfiler<rcnn::WithOmpPreprocess<rcnn::WithOmpPaste<rcnn::Detectron2Stages>>>>);

// ---- a re-scoring NMS (writable scores) is an NmsPolicy too -----------------------------
struct Rescoring {
  void reserve(std::size_t) {}
  void operator()(std::span<const rcnn::Box>, std::span<float>, double, std::vector<int>&) {}
};
static_assert(rcnn::NmsPolicy<Rescoring>);

// ---- negative: what must not satisfy ------------------------------------------------------
struct NmsWithoutReserve {
  void operator()(std::span<const rcnn::Box>, std::span<const float>, double, std::vector<int>&) {}
};
static_assert(!rcnn::NmsPolicy<NmsWithoutReserve>);  // would silently allocate per image

struct NmsWrongKeep {
  void reserve(std::size_t) {}
  void operator()(std::span<const rcnn::Box>, std::span<const float>, double, std::vector<float>&) {}
};
static_assert(!rcnn::NmsPolicy<NmsWrongKeep>);

struct PostprocessWithoutKept {  // the signature before per-detection outputs followed indices
  void reserve(const rcnn::StageSizing&) {}
  void operator()(rcnn::Size, rcnn::Size, rcnn::Conventions, const rcnn::PostprocessConfig&,
                  std::vector<rcnn::Detection>&) {}
};
static_assert(!rcnn::PostprocessPolicy<PostprocessWithoutKept>);

struct RoIAlignWithoutReserve {
  void operator()(std::span<const rcnn::FeatureMap>, std::span<const float>,
                  std::span<const rcnn::Box>, std::span<const int>, const rcnn::PoolerConfig&,
                  std::span<float>) const {}
};
static_assert(!rcnn::RoIAlignPolicy<RoIAlignWithoutReserve>);

struct PasteWithoutConvention {
  void reserve(const rcnn::StageSizing&) {}
  void operator()(const rcnn::MaskProbs&, std::span<const rcnn::Box>, rcnn::Size, float,
                  std::vector<rcnn::InstanceMask>&) {}
};
static_assert(!rcnn::MaskPastePolicy<PasteWithoutConvention>);

struct OneNmsSlot : rcnn::Detectron2Stages {  // a bundle may replace a slot with a bad type
  using rpn_nms = NmsWithoutReserve;
};
static_assert(!rcnn::StageBundle<OneNmsSlot>);

struct NotABundle {};
static_assert(!rcnn::StageBundle<NotABundle>);

struct NotAnExecutor {
  void run_backbone_rpn(const rcnn::TensorView&, rcnn::BackboneOutputs&) {}
};
static_assert(!rcnn::Executor<NotAnExecutor>);

}  // namespace
