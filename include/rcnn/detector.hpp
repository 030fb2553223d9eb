#pragma once
/// \file detector.hpp
/// `rcnn::Detector<Exec, RoIAlign, Stages>`: the policy host that runs a two-stage detector.
/// `run()` is the list of steps; what each step does lives in its stage folder, its timing
/// and tracing are done once around it (StepScope, profiler.hpp), and every check of the
/// executor's outputs is in detail/output_checks.hpp.
/// Includes neither LibTorch nor OpenCV: executors live in rcnn/exec/, image helpers in rcnn/cv/.

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "anchors/anchor_cache.hpp"
#include "concepts.hpp"
#include "config.hpp"
#include "detail/output_checks.hpp"
#include "error.hpp"
#include "exec/outputs.hpp"
#include "keypoints/keypoint_head_step.hpp"
#include "mask/mask_head_step.hpp"
#include "preprocess/batch_input.hpp"
#include "preprocess/preprocess.hpp"
#include "profiler.hpp"
#include "results.hpp"
#include "roi_align/roi_align_ref.hpp"
#include "roi_heads/cascade_step.hpp"
#include "roi_heads/roi_rows.hpp"
#include "stages.hpp"
#include "types.hpp"

namespace rcnn {

/// A two-stage detector. `Exec` runs the compiled networks (TorchScriptExec, NeuronExec, ...),
/// `RoIAlign` pools RoI features next to them, `Stages` names every other stage (stages.hpp);
/// the Detector owns one value of each (`StageSet<Stages>`, given to the constructor or
/// default-constructed).
/// Set-up (constructor) validates the bundle against the stages; `reserve_for(size)` sizes
/// every buffer for images of that size (else the first image of a size does), after which
/// an image of that size allocates nothing outside the networks.
/// Not thread-safe: use one Detector per thread (replicas).
/// Static shapes: with `modules.backbone_rpn.static_shape` every batch is padded to exactly
/// that [N, 3, H, W] (N must equal the batch size; an image whose resized size exceeds H x W
/// is an rcnn::Error naming the shape); with `modules.*.static_rois` the RoI heads get
/// exactly that many rows per call (zero rows appended, their outputs ignored).
/// Per-RoI heads (Mask R-CNN's mask head, Keypoint R-CNN's keypoint head) pool the
/// detections of box inference, run through the executor, and follow the detections that
/// postprocessing keeps by index. A Cascade R-CNN (roi_heads.cascade) runs the box head's
/// stages in turn on the same RoiRows, each on the boxes the previous one refined
/// (roi_heads/cascade_step.hpp).
/// Timing: every step is timed into `DetectionResult::timing`; `Stages::profiler`
/// (NoProfiler: compiled out) also receives every step's time and call count per batch.
template <class Exec, class RoIAlign = RoIAlignRef, class Stages = Detectron2Stages>
  requires Executor<Exec> && RoIAlignPolicy<RoIAlign> && StageBundle<Stages>
class Detector {
 public:
  using executor_type = Exec;
  using roi_align_type = RoIAlign;
  using stages_type = Stages;
  using stage_set_type = StageSet<Stages>;
  using profiler_type = typename Stages::profiler;
  using mask_paste_type = typename Stages::mask_paste;

  /// True when every stage of the bundle can be default-constructed (else the stages must
  /// be passed to the constructor).
  static constexpr bool default_stages = stages_default_constructible<Stages>;

  Detector(ModelConfig config, Exec exec, RoIAlign roi_align, StageSet<Stages> stages)
      : cfg_(std::move(config)),
        exec_(std::move(exec)),
        roi_align_(std::move(roi_align)),
        stages_(std::move(stages)) {
    check_conventions(cfg_);
    detail::require(!cfg_.backbone.roi_strides.empty(), "model.json: backbone.roi_levels is empty");
    levels_ = RoiLevels(cfg_.backbone);
    MaskHeadStep::check<Exec, mask_paste_type>(cfg_);
    KeypointHeadStep::check<Exec>(cfg_);
    CascadeStep::check<Exec>(cfg_);
  }

  /// With every stage default-constructed.
  Detector(ModelConfig config, Exec exec, RoIAlign roi_align = RoIAlign{})
      : Detector(std::move(config), std::move(exec), std::move(roi_align), make_stages()) {}

  /// Whether this Detector type can run the bundle `cfg` (conventions, Mask R-CNN executor
  /// and paste convention, RoI levels), without building one (CUTLASS's `can_implement`);
  /// `why`, when given, receives the one-line reason it cannot.
  static bool can_implement(const ModelConfig& cfg, std::string* why = nullptr) {
    try {
      check_conventions(cfg);
      detail::require(!cfg.backbone.roi_strides.empty(), "model.json: backbone.roi_levels is empty");
      MaskHeadStep::check<Exec, mask_paste_type>(cfg);
      KeypointHeadStep::check<Exec>(cfg);
      CascadeStep::check<Exec>(cfg);
      return true;
    } catch (const Error& e) {
      if (why) *why = e.what();
      return false;
    }
  }

  /// True when the bundle is a Mask R-CNN (detections carry masks).
  bool has_masks() const { return cfg_.architecture == Architecture::mask_rcnn; }
  /// True when the bundle is a Keypoint R-CNN (detections carry keypoints).
  bool has_keypoints() const { return cfg_.architecture == Architecture::keypoint_rcnn; }
  /// True when the bundle is a Cascade R-CNN (roi_heads.cascade: several box-head stages).
  bool is_cascade() const { return !cfg_.roi_heads.cascade.empty(); }

  /// Throws rcnn::Error when the bundle's conventions differ from the stages'.
  static void check_conventions(const ModelConfig& cfg) {
    if (cfg.conventions == Stages::conventions) return;
    detail::fail(std::string("model.json: conventions: the bundle follows \"") +
                 to_string(cfg.conventions) + "\" but the detector's stages implement \"" +
                 to_string(Stages::conventions) +
                 "\"; use the matching stage bundle (rcnn::TorchvisionStages or "
                 "rcnn::Detectron2Stages), or rcnn::load(), which picks it from the bundle");
  }

  const ModelConfig& config() const { return cfg_; }
  Exec& executor() { return exec_; }
  RoIAlign& roi_align() { return roi_align_; }
  StageSet<Stages>& stages() { return stages_; }
  /// The mask paste policy (e.g. to set OmpDetectron2Paste::num_threads).
  mask_paste_type& mask_paste() { return stages_.mask_paste; }
  profiler_type& profiler() { return stages_.profiler; }
  const profiler_type& profiler() const { return stages_.profiler; }

  /// Sets `num_threads` on the RoIAlign policy and every stage that has one
  /// (ThreadedStage: the OpenMP policies); the executor's threads are its own option.
  void set_threads(int n) {
    const auto set = [n](auto& stage) {
      if constexpr (ThreadedStage<std::remove_cvref_t<decltype(stage)>>) stage.num_threads = n;
    };
    set(roi_align_);
    stages_.for_each(set);
  }

  /// Sizes every buffer and stage for batches of `batch` images of `image` pixels (before
  /// the first image: the CUTLASS-style initialize), so that such a batch allocates nothing
  /// outside the networks.
  void reserve_for(Size image, std::size_t batch = 1) {
    const Size resized = detail::checked_resized_shape(image, cfg_.input, cfg_.conventions);
    const Size padded = detail::padded_shape(resized, cfg_.input.size_divisibility,
                                             detail::static_input_size(cfg_, batch));
    cells_.clear();
    for (int stride : cfg_.backbone.rpn_strides)
      cells_.push_back(std::size_t((padded.height + stride - 1) / stride) *
                       std::size_t((padded.width + stride - 1) / stride));
    input_.reserve(batch, padded);
    anchors_.reserve(cfg_, cells_);
    StageSizing s = stage_sizing(cfg_, batch, cells_);
    s.image = image;
    s.resized = resized;
    reserve(s);
  }

  /// Detects objects in one image.
  DetectionResult operator()(const ImageView& image, Trace* trace = nullptr) {
    std::vector<DetectionResult> results;
    run(std::span<const ImageView>(&image, 1), results, trace);
    return std::move(results.front());
  }

  /// Detects objects in a batch (one backbone call on the images padded to a common size).
  std::vector<DetectionResult> operator()(std::span<const ImageView> images) {
    std::vector<DetectionResult> results;
    run(images, results, nullptr);
    return results;
  }

  /// Batch entry point writing into caller-owned results (reused across calls).
  /// `trace`, when given, records the first image's intermediate results.
  void run(std::span<const ImageView> images, std::vector<DetectionResult>& results,
           Trace* trace = nullptr) {
    const std::size_t n = images.size();
    detail::require(n > 0, "detector: empty batch");
    results.resize(n);
    times_ = {};
    preprocess(images, trace);
    backbone_rpn(n);
    anchors(trace);
    reserve_batch(n);
    proposals(n, trace);
    box_roi_align(n, 0, trace);
    box_head(0);
    if (is_cascade()) cascade_stages(n, trace);
    box_inference(n, results, trace);
    if (has_masks()) mask_head(n, results, trace);
    if (has_keypoints()) keypoint_head(n, results, trace);
    postprocess(n, results, trace);
    if (has_masks()) mask_paste(n, results);
    if (has_keypoints()) keypoints(n, results);
    finish(n, results);
  }

 private:
  // ---- the steps, in pipeline order --------------------------------------------------

  void preprocess(std::span<const ImageView> images, Trace* trace) {
    auto step = scope(Stage::preprocess, images.size());
    input_.build(stages_.preprocess, cfg_, images, detail::static_input_size(cfg_, images.size()));
    if (trace) {
      trace->padded = input_.padded();
      trace->input.assign(input_.first().begin(), input_.first().end());
    }
  }

  void backbone_rpn(std::size_t n) {
    auto step = scope(Stage::backbone_rpn, 1);
    exec_.run_backbone_rpn(input_.view(), backbone_);
    detail::check_backbone_outputs(cfg_, backbone_, n, input_.padded());
  }

  void anchors(Trace* trace) {
    auto step = scope(Stage::anchors, 1);
    anchors_.update(stages_.anchor_generator, cfg_, backbone_.objectness, input_.padded());
    if (trace) trace->anchors = anchors_.all();
  }

  void proposals(std::size_t n, Trace* trace) {
    auto step = scope(Stage::proposals, n);
    const std::size_t L = cfg_.backbone.rpn_levels.size();
    proposals_.resize(n);
    rpn_inputs_.resize(L);
    for (std::size_t i = 0; i < n; ++i) {
      for (std::size_t l = 0; l < L; ++l)
        rpn_inputs_[l] = RpnLevelInput{backbone_.objectness[l].image(std::int64_t(i)),
                                       backbone_.deltas[l].image(std::int64_t(i)),
                                       anchors_.level(l)};
      stages_.proposal_selector(std::span<const RpnLevelInput>(rpn_inputs_),
                                input_.image(i).resized, cfg_.rpn, stages_.rpn_nms, proposals_[i]);
    }
    if (trace) trace->proposals = proposals_[0];
  }

  /// Pools the boxes of box-head stage `stage` (0: the proposals; cascade stages: the
  /// previous stage's refined boxes).
  void box_roi_align(std::size_t n, std::size_t stage, Trace* trace) {
    auto step = scope(Stage::roi_align, n);
    const ModuleConfig& module =
        stage == 0 ? cfg_.modules.box_head : cfg_.modules.cascade_box_heads[stage - 1];
    const RoiRows::Spec spec{&cfg_.roi_heads.pooler, module.static_rois.value_or(0),
                             /*pad_empty_images=*/true};
    box_rows_.pool(
        roi_align_, levels_, backbone_.features, n,
        [&](std::size_t i) { return head_boxes(i, stage); }, spec, cfg_.backbone.channels);
    if (trace && stage == 0) {
      const std::span<const int> lv = box_rows_.levels(0);
      trace->box_levels.assign(lv.begin(), lv.end());
      const std::span<const float> f = box_rows_.features(0);
      trace->box_features.assign(
          f.begin(), f.begin() + std::ptrdiff_t(proposals_[0].size() * box_rows_.roi_size()));
    }
  }

  /// The box head of stage `stage` (0 but for Cascade R-CNN), one call per static_rois chunk
  /// (or one for the batch); outputs copied into [rows, K + 1] logits and [rows, deltas] deltas.
  void box_head(std::size_t stage) {
    auto step = scope(Stage::box_head, 0);
    const std::size_t rows = box_rows_.rows();
    logits_width_ = cfg_.roi_heads.num_classes + 1;
    deltas_width_ = detail::expected_deltas_width(cfg_.roi_heads);
    logits_.resize(rows * std::size_t(logits_width_));
    deltas_.resize(rows * std::size_t(deltas_width_));
    const std::size_t calls = box_rows_.run(
        [&](const TensorView& in, std::size_t start, std::size_t r) {
          if (stage == 0) {
            exec_.run_box_head(in, head_out_);
          } else if constexpr (CascadeExecutor<Exec>) {
            exec_.run_cascade_box_head(stage, in, head_out_);
          }  // else refused at set-up (CascadeStep::check)
          detail::check_box_head_outputs(cfg_, head_out_, r);
          std::copy_n(head_out_.class_logits.data, r * std::size_t(logits_width_),
                      logits_.data() + start * std::size_t(logits_width_));
          std::copy_n(head_out_.box_deltas.data, r * std::size_t(deltas_width_),
                      deltas_.data() + start * std::size_t(deltas_width_));
        },
        cfg_.backbone.channels, cfg_.roi_heads.pooler.resolution);
    step.set_calls(calls);
  }

  /// Cascade R-CNN: stages 1, 2, ... of the box head, each on the boxes the previous stage
  /// refined (cascade_step.hpp); every stage's class probabilities are summed, then averaged.
  /// Timed as the roi_align, box_head and box_inference steps they are made of.
  void cascade_stages(std::size_t n, Trace* trace) {
    const std::vector<CascadeStageConfig>& stages = cfg_.roi_heads.cascade;
    cascade_.begin(n, logits_width_, [&](std::size_t i) { return proposals_[i].size(); });
    if (trace) trace->cascade_boxes.clear();
    for (std::size_t k = 1; k <= stages.size(); ++k) {
      {
        auto step = scope(Stage::box_inference, 0);
        for (std::size_t i = 0; i < n; ++i) {
          const std::size_t row = box_rows_.first_row(i);
          cascade_.add_probabilities(i, logits_.data() + row * std::size_t(logits_width_));
          if (k < stages.size())
            cascade_.refine(i, head_boxes(i, k - 1),
                            deltas_.data() + row * std::size_t(deltas_width_), deltas_width_,
                            stages[k - 1].box_weights, cfg_.roi_heads.scale_clamp,
                            input_.image(i).resized);
        }
        if (k == stages.size()) {
          cascade_.average(stages.size());
          break;
        }
        cascade_.next_stage();
        if (trace) {
          const std::span<const Box> b = cascade_.boxes(0);
          trace->cascade_boxes.emplace_back(b.begin(), b.end());
        }
      }
      box_roi_align(n, k, trace);
      box_head(k);
    }
  }

  /// Image i's boxes at box-head stage `stage`: the proposals, or a cascade stage's boxes.
  std::span<const Box> head_boxes(std::size_t i, std::size_t stage) const {
    if (stage == 0) return proposals_[i].boxes;
    return cascade_.boxes(i);
  }

  void box_inference(std::size_t n, std::vector<DetectionResult>& results, Trace* trace) {
    auto step = scope(Stage::box_inference, n);
    const std::size_t last = is_cascade() ? cfg_.roi_heads.cascade.size() - 1 : 0;
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t row = box_rows_.first_row(i);
      const BoxHeadView head{logits_.data() + row * std::size_t(logits_width_),
                             deltas_.data() + row * std::size_t(deltas_width_),
                             int(proposals_[i].size()), logits_width_, deltas_width_,
                             is_cascade() ? cascade_.probabilities(i) : nullptr};
      stages_.box_inference(head_boxes(i, last), head, input_.image(i).resized, cfg_.roi_heads,
                            stages_.box_nms, results[i].detections);
    }
    if (trace) trace->detections_resized = results[0].detections;
  }

  /// Mask R-CNN: pool the detections (resized frame), run the mask head, keep each
  /// detection's class channel through the sigmoid (pasted after postprocessing).
  void mask_head(std::size_t n, std::vector<DetectionResult>& results, Trace* trace) {
    {
      auto step = scope(Stage::mask_roi_align, n);
      masks_.pool(roi_align_, cfg_, levels_, backbone_, n,
                  [&](std::size_t i) { return std::span<const Detection>(results[i].detections); });
    }
    auto step = scope(Stage::mask_head, 0);
    step.set_calls(masks_.run_head(exec_, cfg_));
    if (trace) masks_.record(*trace);
  }

  /// Keypoint R-CNN: pool the detections (resized frame), run the keypoint head, keep each
  /// detection's heatmaps (decoded after postprocessing).
  void keypoint_head(std::size_t n, std::vector<DetectionResult>& results, Trace* trace) {
    {
      auto step = scope(Stage::keypoint_roi_align, n);
      keypoints_.pool(roi_align_, cfg_, levels_, backbone_, n, [&](std::size_t i) {
        return std::span<const Detection>(results[i].detections);
      });
    }
    auto step = scope(Stage::keypoint_head, 0);
    step.set_calls(keypoints_.run_head(exec_, cfg_));
    if (trace) keypoints_.record(cfg_, *trace);
  }

  void postprocess(std::size_t n, std::vector<DetectionResult>& results, Trace* trace) {
    auto step = scope(Stage::postprocess, n);
    kept_.resize(std::max(kept_.size(), n));
    for (std::size_t i = 0; i < n; ++i) {
      DetectionResult& res = results[i];
      stages_.postprocess(input_.image(i).resized, input_.image(i).original, cfg_.conventions,
                          cfg_.postprocess, res.detections, kept_[i]);
      res.image_size = input_.image(i).original;
      res.resized_size = input_.image(i).resized;
      if (!has_masks()) res.masks.clear();
      if (!has_keypoints()) res.keypoints.clear(), res.num_keypoints = 0;
    }
    if (trace) trace->kept = kept_[0];
  }

  /// Masks of the detections postprocessing kept, by index, into the original image.
  void mask_paste(std::size_t n, std::vector<DetectionResult>& results) {
    auto step = scope(Stage::mask_paste, n);
    for (std::size_t i = 0; i < n; ++i)
      masks_.paste(stages_.mask_paste, cfg_, i, std::span<const int>(kept_[i]), results[i]);
  }

  /// Keypoints of the detections postprocessing kept, by index, into the original image.
  void keypoints(std::size_t n, std::vector<DetectionResult>& results) {
    auto step = scope(Stage::keypoint_decode, n);
    for (std::size_t i = 0; i < n; ++i)
      keypoints_.decode(cfg_, i, std::span<const int>(kept_[i]), results[i]);
  }

  void finish(std::size_t n, std::vector<DetectionResult>& results) {
    if constexpr (profiler_type::enabled) stages_.profiler.end_batch(n);
    for (auto& r : results) {
      r.timing = times_;
      r.timing.scale(1.0 / double(n));
    }
  }

  // ---- set-up and sizing ---------------------------------------------------------------

  StepScope<profiler_type> scope(Stage s, std::size_t calls) {
    return StepScope<profiler_type>(stages_.profiler, &times_[s], s, calls);
  }

  static StageSet<Stages> make_stages() {
    static_assert(default_stages,
                  "rcnn::Detector: a stage of this bundle has no default constructor; pass the "
                  "stages: Detector(cfg, exec, roi_align, rcnn::StageSet<Stages>{...}) or "
                  "rcnn::load<Exec, RoIAlign, Stages>(dir, options, roi_align, stages)");
    if constexpr (default_stages) return StageSet<Stages>{};
    else return std::declval<StageSet<Stages>>();
  }

  /// Sizes the buffers for the most proposals an image of this batch's size can have, so
  /// that no later image of the size grows one. A few comparisons once they are that large.
  void reserve_batch(std::size_t n) {
    cells_.clear();
    for (const TensorView& o : backbone_.objectness)
      cells_.push_back(std::size_t(o.shape[2] * o.shape[3]));
    StageSizing s = stage_sizing(cfg_, n, cells_);
    s.image = input_.image(0).original;
    s.resized = input_.image(0).resized;
    reserve(s);
  }

  void reserve(const StageSizing& s) {
    const std::size_t roi_size = std::size_t(cfg_.backbone.channels) *
                                 cfg_.roi_heads.pooler.resolution *
                                 cfg_.roi_heads.pooler.resolution;
    const int static_rois = cfg_.modules.box_head.static_rois.value_or(0);
    box_rows_.reserve(s.images, s.proposals, roi_size, static_rois);
    const std::size_t rows = s.images * padded_rows(s.proposals, static_rois);
    logits_.reserve(rows * std::size_t(cfg_.roi_heads.num_classes + 1));
    deltas_.reserve(rows * std::size_t(detail::expected_deltas_width(cfg_.roi_heads)));
    proposals_.resize(std::max(proposals_.size(), s.images));
    for (auto& p : proposals_) {
      p.boxes.reserve(s.proposals);
      p.scores.reserve(s.proposals);
    }
    kept_.resize(std::max(kept_.size(), s.images));
    for (auto& k : kept_) k.reserve(s.detections);
    if (is_cascade()) cascade_.reserve(s.images, s.proposals, cfg_.roi_heads.num_classes + 1);
    stages_.preprocess.reserve(s);
    stages_.anchor_generator.reserve(s);
    stages_.rpn_nms.reserve(s.rpn_level_candidates);
    stages_.proposal_selector.reserve(s);
    stages_.box_nms.reserve(s.proposals);
    stages_.box_inference.reserve(s);
    stages_.postprocess.reserve(s);
    roi_align_.reserve(std::max(s.proposals, s.images * s.detections));
    if (has_masks()) {
      masks_.reserve(cfg_, s.images, s.detections);
      stages_.mask_paste.reserve(s);
    }
    if (has_keypoints()) keypoints_.reserve(cfg_, s.images, s.detections);
  }

  ModelConfig cfg_;
  Exec exec_;
  RoIAlign roi_align_;
  StageSet<Stages> stages_;
  RoiLevels levels_;
  StageTimes times_;
  // Workspaces: sized by reserve_for or the first image of a size, reused afterwards.
  std::vector<std::size_t> cells_;
  BatchInput input_;
  BackboneOutputs backbone_;
  AnchorCache anchors_;
  std::vector<RpnLevelInput> rpn_inputs_;
  std::vector<ScoredBoxes> proposals_;
  RoiRows box_rows_;
  BoxHeadOutputs head_out_;
  std::vector<float> logits_, deltas_;
  int logits_width_ = 0, deltas_width_ = 0;
  std::vector<std::vector<int>> kept_;  ///< per image: postprocess's kept indices
  MaskHeadStep masks_;
  KeypointHeadStep keypoints_;
  CascadeStep cascade_;
};

}  // namespace rcnn
