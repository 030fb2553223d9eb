#pragma once
/// \file detector.hpp
/// `rcnn::Detector<Exec, RoIAlign, Stages>`: the policy host that runs a two-stage detector.
/// Includes neither LibTorch nor OpenCV: executors live in rcnn/exec/, image helpers in rcnn/cv/.

#include <chrono>
#include <cmath>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "concepts.hpp"
#include "config.hpp"
#include "error.hpp"
#include "exec/outputs.hpp"
#include "mask/mask_inference.hpp"
#include "mask/mask_types.hpp"
#include "preprocess/resize_shape.hpp"
#include "profiler.hpp"
#include "roi_align/level_mapper.hpp"
#include "roi_align/roi_align_ref.hpp"
#include "stages.hpp"
#include "types.hpp"

namespace rcnn {

/// Wall time of each stage of one call, in milliseconds (batch-level stages are divided
/// evenly among the batch's images).
/// The mask stages are 0 for Faster R-CNN bundles.
struct StageTimes {
  double preprocess = 0, backbone_rpn = 0, anchors = 0, proposals = 0, roi_align = 0,
         box_head = 0, box_inference = 0, postprocess = 0;
  /// Mask R-CNN: pooling the detections' mask features; the mask head network; class
  /// channel + sigmoid + pasting into the original image.
  double mask_roi_align = 0, mask_head = 0, mask_paste = 0;
  double total() const {
    return preprocess + backbone_rpn + anchors + proposals + roi_align + box_head +
           box_inference + postprocess + mask_roi_align + mask_head + mask_paste;
  }
  /// (name, ms) pairs in the order of rcnn::Stage (profiler.hpp); `with_masks` false skips
  /// the three mask stages.
  template <class F>
  void for_each(F&& f, bool with_masks = true) const {
    f("preprocess", preprocess);
    f("backbone_rpn", backbone_rpn);
    f("anchors", anchors);
    f("proposals", proposals);
    f("roi_align", roi_align);
    f("box_head", box_head);
    f("box_inference", box_inference);
    f("postprocess", postprocess);
    if (!with_masks) return;
    f("mask_roi_align", mask_roi_align);
    f("mask_head", mask_head);
    f("mask_paste", mask_paste);
  }
  /// Every field times `k` (per-image shares of a batch).
  void scale(double k) {
    for (double* v : {&preprocess, &backbone_rpn, &anchors, &proposals, &roi_align, &box_head,
                      &box_inference, &postprocess, &mask_roi_align, &mask_head, &mask_paste})
      *v *= k;
  }
};

/// Detections of one image in original image coordinates, score descending.
/// Mask R-CNN bundles: `masks[i]` is the binary instance mask of `detections[i]` in the
/// original image, cropped to the window the paste evaluated (InstanceMask::expand or
/// rcnn::cv_io::to_mat give the full H x W mask); `masks` is empty for Faster R-CNN bundles.
struct DetectionResult {
  Size image_size;    ///< original image
  Size resized_size;  ///< what the network saw, before padding
  std::vector<Detection> detections;
  std::vector<InstanceMask> masks;
  StageTimes timing;
};

/// Intermediate results of one image, recorded when a Trace is passed (tests, debugging).
struct Trace {
  std::vector<float> input;  ///< this image's normalised padded CHW input
  Size padded;
  std::vector<std::vector<Box>> anchors;  ///< per rpn level
  ScoredBoxes proposals;
  std::vector<int> box_levels;
  std::vector<float> box_features;  ///< [P, C, R, R]
  std::vector<Detection> detections_resized;
  // Mask R-CNN bundles only (empty otherwise):
  std::vector<int> mask_levels;      ///< per detection_resized, index into roi_levels
  std::vector<float> mask_features;  ///< [D, C, P, P] the mask pooler's output
  std::vector<float> mask_probs;     ///< [D, M, M] sigmoid of each detection's class channel
  int mask_size = 0;                 ///< M
};

/// A Faster R-CNN. `Exec` runs the compiled networks (TorchScriptExec, NeuronExec, ...),
/// `RoIAlign` pools RoI features next to them, `Stages` supplies every other stage.
/// Set-up (constructor) validates the bundle against the stages and sizes nothing yet;
/// the first image of a size sizes the workspaces, later images of that size reuse them.
/// Not thread-safe: use one Detector per thread (replicas).
/// Static shapes: with `modules.backbone_rpn.static_shape` every batch is padded to exactly
/// that [N, 3, H, W] (N must equal the batch size; an image whose resized size exceeds H x W
/// is an rcnn::Error naming the shape); with `modules.*.static_rois` the box head gets
/// exactly that many rows per call (zero boxes appended, their rows ignored).
/// Mask R-CNN (`architecture` "mask_rcnn"): the final boxes of box inference (resized frame)
/// are pooled with the bundle's `mask_head` pooler, the mask head runs through the executor
/// (which must satisfy `MaskExecutor`; `modules.mask_head.static_rois` pads like the box
/// head), each detection's class channel goes through the sigmoid, and after postprocessing
/// `Stages::mask_paste` (its convention must be the bundle's `mask_head.paste`) pastes the
/// masks into the original image.
/// Profiling: `Stages::profiler` (default `NoProfiler`, compiled out) receives every stage's
/// time and call count per batch (profiler.hpp); read it with `profiler()`.
template <class Exec, class RoIAlign = RoIAlignRef, class Stages = Detectron2Stages>
  requires Executor<Exec> && RoIAlignPolicy<RoIAlign> && StageBundle<Stages> &&
           ProfilerPolicy<profiler_of_t<Stages>> && MaskPastePolicy<mask_paste_of_t<Stages>>
class Detector {
 public:
  using executor_type = Exec;
  using roi_align_type = RoIAlign;
  using stages_type = Stages;
  using profiler_type = profiler_of_t<Stages>;
  using mask_paste_type = mask_paste_of_t<Stages>;

  Detector(ModelConfig config, Exec exec, RoIAlign roi_align = {})
      : cfg_(std::move(config)), exec_(std::move(exec)), roi_align_(std::move(roi_align)) {
    check_conventions(cfg_);
    const auto& b = cfg_.backbone;
    detail::require(!b.roi_strides.empty(), "model.json: backbone.roi_levels is empty");
    min_level_ = int(std::lround(std::log2(double(b.roi_strides.front()))));
    max_level_ = int(std::lround(std::log2(double(b.roi_strides.back()))));
    for (int s : b.roi_strides) scales_.push_back(float(1.0 / double(s)));
    check_masks(cfg_);
  }

  /// True when the bundle is a Mask R-CNN (detections carry masks).
  bool has_masks() const { return cfg_.architecture == Architecture::mask_rcnn; }

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
  typename Stages::nms& nms() { return nms_; }
  /// The mask paste policy (e.g. to set OmpDetectron2Paste::num_threads).
  mask_paste_type& mask_paste() { return mask_paste_; }
  profiler_type& profiler() { return profiler_; }
  const profiler_type& profiler() const { return profiler_; }

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
    using clock = std::chrono::steady_clock;
    auto ms_since = [](clock::time_point t0) {
      return std::chrono::duration<double, std::milli>(clock::now() - t0).count();
    };
    const std::size_t n = images.size();
    detail::require(n > 0, "detector: empty batch");
    results.resize(n);
    StageTimes batch_times;

    // 1. Preprocess.
    auto t0 = clock::now();
    std::optional<Size> pad_to;
    if (cfg_.modules.backbone_rpn.static_shape) {
      const auto& s = *cfg_.modules.backbone_rpn.static_shape;
      pad_to = Size{int(s[2]), int(s[3])};
      detail::require(std::int64_t(n) == s[0], [&] {
        return "detector: " + cfg_.modules.backbone_rpn.file + " was compiled for batch " +
               std::to_string(s[0]) + " (static_shape), got " + std::to_string(n) + " images";
      });
    }
    pre_results_.resize(n);
    Size padded;
    if (n == 1) {
      check_fits_static_shape(images[0], pad_to);
      pre_results_[0] = preprocess_(images[0], cfg_.input, input_, pad_to);
      check_padded(pre_results_[0], pad_to);
      padded = pre_results_[0].padded;
    } else {
      per_image_.resize(n);
      for (std::size_t i = 0; i < n; ++i) {
        check_fits_static_shape(images[i], pad_to);
        pre_results_[i] = preprocess_(images[i], cfg_.input, per_image_[i], pad_to);
        check_padded(pre_results_[i], pad_to);
        padded.height = std::max(padded.height, pre_results_[i].padded.height);
        padded.width = std::max(padded.width, pre_results_[i].padded.width);
      }
      const std::size_t plane = std::size_t(padded.height) * padded.width;
      input_.assign(n * 3 * plane, 0.f);
      for (std::size_t i = 0; i < n; ++i) {
        const Size p = pre_results_[i].padded;
        for (int c = 0; c < 3; ++c)
          for (int y = 0; y < p.height; ++y) {
            const float* src = per_image_[i].data() + (std::size_t(c) * p.height + y) * p.width;
            float* dst = input_.data() + (i * 3 + c) * plane + std::size_t(y) * padded.width;
            std::copy(src, src + p.width, dst);
          }
      }
    }
    batch_times.preprocess = ms_since(t0);
    if (trace) {
      trace->padded = padded;
      const std::size_t per = 3 * std::size_t(padded.height) * padded.width;
      trace->input.assign(input_.begin(), input_.begin() + std::ptrdiff_t(per));
    }

    // 2. Backbone + RPN head.
    t0 = clock::now();
    const TensorView input_view{input_.data(),
                                {std::int64_t(n), 3, padded.height, padded.width}};
    exec_.run_backbone_rpn(input_view, backbone_);
    batch_times.backbone_rpn = ms_since(t0);
    check_backbone_outputs(n, padded);

    // 3. Anchors (cached per padded size and grid).
    t0 = clock::now();
    update_anchors(padded);
    batch_times.anchors = ms_since(t0);
    if (trace) trace->anchors = anchors_;

    const std::size_t L = cfg_.backbone.rpn_levels.size();
    const std::size_t RL = cfg_.backbone.roi_levels.size();
    const int C = cfg_.backbone.channels;
    const int P = cfg_.roi_heads.pooler.resolution;
    const std::size_t roi_size = std::size_t(C) * P * P;
    proposals_.resize(n);
    rpn_inputs_.resize(L);
    maps_.resize(RL);
    levels_.resize(n);
    reserve_workspaces(n, roi_size);

    // 4. Proposals, 5. RoIAlign, per image, into one [sum P_i, C, P, P] buffer.
    double t_prop = 0, t_pool = 0;
    std::size_t total_rois = 0;
    for (std::size_t i = 0; i < n; ++i) {
      t0 = clock::now();
      for (std::size_t l = 0; l < L; ++l) {
        rpn_inputs_[l] = RpnLevelInput{backbone_.objectness[l].image(std::int64_t(i)),
                                       backbone_.deltas[l].image(std::int64_t(i)),
                                       std::span<const Box>(anchors_[l])};
      }
      proposal_selector_(std::span<const RpnLevelInput>(rpn_inputs_), pre_results_[i].resized,
                         cfg_.rpn, nms_, proposal_ws_, proposals_[i]);
      t_prop += ms_since(t0);
      total_rois += proposals_[i].size();
    }
    t0 = clock::now();
    const int static_rois = cfg_.modules.box_head.static_rois.value_or(0);
    // With static_rois the head sees exactly that many rows per image (zero-padded).
    std::size_t head_rows = 0;
    for (std::size_t i = 0; i < n; ++i) head_rows += padded_rows(proposals_[i].size(), static_rois);
    box_features_.resize(head_rows * roi_size);
    std::size_t row = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const auto& boxes = proposals_[i].boxes;
      for (std::size_t l = 0; l < RL; ++l) maps_[l] = backbone_.features[l].image(std::int64_t(i));
      levels_[i].resize(boxes.size());
      assign_levels(std::span<const Box>(boxes), cfg_.roi_heads.pooler, min_level_, max_level_,
                    std::span<int>(levels_[i]));
      float* dst = box_features_.data() + row * roi_size;
      roi_align_(std::span<const FeatureMap>(maps_), std::span<const float>(scales_),
                 std::span<const Box>(boxes), std::span<const int>(levels_[i]),
                 cfg_.roi_heads.pooler, std::span<float>(dst, boxes.size() * roi_size));
      const std::size_t rows_i = padded_rows(boxes.size(), static_rois);
      std::fill(dst + boxes.size() * roi_size, dst + rows_i * roi_size, 0.f);
      row += rows_i;
    }
    t_pool = ms_since(t0);
    batch_times.proposals = t_prop;
    batch_times.roi_align = t_pool;
    if (trace) {
      trace->proposals = proposals_[0];
      trace->box_levels = levels_[0];
      trace->box_features.assign(box_features_.begin(),
                                 box_features_.begin() +
                                     std::ptrdiff_t(proposals_[0].size() * roi_size));
    }

    // 6. Box head: one call per static_rois chunk, or one call for the whole batch.
    t0 = clock::now();
    const std::size_t head_calls = run_box_head(head_rows, static_rois, C, P);
    batch_times.box_head = ms_since(t0);

    // 7. Box inference, per image (resized frame).
    double t_inf = 0;
    row = 0;
    for (std::size_t i = 0; i < n; ++i) {
      t0 = clock::now();
      const BoxHeadView head{logits_.data() + row * std::size_t(logits_width_),
                             deltas_.data() + row * std::size_t(deltas_width_),
                             int(proposals_[i].size()), logits_width_, deltas_width_};
      box_inference_(std::span<const Box>(proposals_[i].boxes), head, pre_results_[i].resized,
                     cfg_.roi_heads, nms_, box_ws_, results[i].detections);
      row += padded_rows(proposals_[i].size(), static_rois);
      t_inf += ms_since(t0);
    }
    batch_times.box_inference = t_inf;
    if (trace) trace->detections_resized = results[0].detections;

    // Mask R-CNN: pool the detections' mask features (resized frame), run the mask head,
    // take each detection's class channel through the sigmoid (pasted after postprocessing).
    std::size_t mask_head_calls = 0;
    if (has_masks()) {
      mask_head_calls = run_mask_stages(n, results, batch_times);
      if (trace) record_mask_trace(*trace);
    }

    // 8. Postprocess (original frame), then paste the masks with the final boxes, per image.
    double t_post = 0, t_paste = 0;
    for (std::size_t i = 0; i < n; ++i) {
      DetectionResult& res = results[i];
      t0 = clock::now();
      if (has_masks()) before_post_.assign(res.detections.begin(), res.detections.end());
      postprocess_(pre_results_[i].resized, pre_results_[i].original, cfg_.conventions,
                   cfg_.postprocess, res.detections);
      t_post += ms_since(t0);
      res.image_size = pre_results_[i].original;
      res.resized_size = pre_results_[i].resized;
      if (has_masks()) {
        t0 = clock::now();
        paste_masks(i, res);
        t_paste += ms_since(t0);
      } else {
        res.masks.clear();
      }
    }
    batch_times.postprocess = t_post;
    batch_times.mask_paste += t_paste;
    if constexpr (profiler_type::enabled) {
      profiler_.record(Stage::preprocess, batch_times.preprocess, n);
      profiler_.record(Stage::backbone_rpn, batch_times.backbone_rpn, 1);
      profiler_.record(Stage::anchors, batch_times.anchors, 1);
      profiler_.record(Stage::proposals, batch_times.proposals, n);
      profiler_.record(Stage::roi_align, batch_times.roi_align, n);
      profiler_.record(Stage::box_head, batch_times.box_head, head_calls);
      profiler_.record(Stage::box_inference, batch_times.box_inference, n);
      profiler_.record(Stage::postprocess, batch_times.postprocess, n);
      if (has_masks()) {
        profiler_.record(Stage::mask_roi_align, batch_times.mask_roi_align, n);
        profiler_.record(Stage::mask_head, batch_times.mask_head, mask_head_calls);
        profiler_.record(Stage::mask_paste, batch_times.mask_paste, n);
      }
      profiler_.end_batch(n);
    }
    for (auto& r : results) {
      r.timing = batch_times;
      r.timing.scale(1.0 / double(n));
    }
  }

 private:
  static std::size_t padded_rows(std::size_t rows, int static_rois) {
    if (static_rois <= 0) return rows;
    const std::size_t s = std::size_t(static_rois);
    return std::max<std::size_t>(1, (rows + s - 1) / s) * s;
  }

  std::string static_shape_string() const {
    const auto& s = *cfg_.modules.backbone_rpn.static_shape;
    return dims_string(s[0], s[1], s[2], s[3]);
  }

  /// "[a, b, c, d]", built by appending (GCC 12 warns -Wrestrict falsely on
  /// `"[" + std::to_string(...)` chains once inlined).
  static std::string dims_string(std::int64_t a, std::int64_t b, std::int64_t c, std::int64_t d) {
    std::string out("[");
    for (const std::int64_t v : {a, b, c, d}) {
      if (out.size() > 1) out += ", ";
      out += std::to_string(v);
    }
    out += ']';
    return out;
  }

  /// With a static input shape, an image whose resized size (as the bundle's resize rule
  /// gives it) exceeds H x W cannot be run: say so before preprocessing it.
  void check_fits_static_shape(const ImageView& image, const std::optional<Size>& pad_to) const {
    if (!pad_to || image.height <= 0 || image.width <= 0) return;  // bad images: preprocess
    const Size r = resized_shape({image.height, image.width}, cfg_.input.resize, cfg_.conventions);
    if (r.height <= pad_to->height && r.width <= pad_to->width) return;
    detail::fail("detector: image " + std::to_string(image.height) + "x" +
                 std::to_string(image.width) + " resizes to " + std::to_string(r.height) + "x" +
                 std::to_string(r.width) + ", larger than the static input shape " +
                 static_shape_string() + " (modules.backbone_rpn.static_shape) that " +
                 cfg_.modules.backbone_rpn.file +
                 " was compiled for; use input.resize \"fixed\" with at most " +
                 std::to_string(pad_to->height) + "x" + std::to_string(pad_to->width) +
                 ", or export the module for a larger shape");
  }

  /// A preprocessing policy must honour `pad_to`.
  void check_padded(const PreprocessResult& r, const std::optional<Size>& pad_to) const {
    if (!pad_to || r.padded == *pad_to) return;
    detail::fail("detector: the preprocess policy padded to " + std::to_string(r.padded.height) +
                 "x" + std::to_string(r.padded.width) + ", but " +
                 cfg_.modules.backbone_rpn.file + " needs exactly the static input shape " +
                 static_shape_string() + " (modules.backbone_rpn.static_shape)");
  }

  /// A module file as messages name it: its path in the bundle directory.
  std::string module_path(const ModuleConfig& m) const {
    return cfg_.bundle_dir.empty() ? m.file : cfg_.bundle_dir + "/" + m.file;
  }

  /// The backbone's outputs must agree with model.json: level counts, anchors per cell,
  /// channels, and grids of about input / stride (floor or ceil: strided convolutions and
  /// pooling round either way).
  void check_backbone_outputs(std::size_t n, Size padded) const {
    const auto& b = cfg_.backbone;
    // Messages are built only on failure: no allocation per image.
    const auto module = [&] { return module_path(cfg_.modules.backbone_rpn); };
    detail::require(
        backbone_.objectness.size() == b.rpn_levels.size() &&
            backbone_.deltas.size() == b.rpn_levels.size() &&
            backbone_.features.size() == b.roi_levels.size(),
        [&] {
          return module() + ": returned " + std::to_string(backbone_.objectness.size()) + "/" +
                 std::to_string(backbone_.deltas.size()) + "/" +
                 std::to_string(backbone_.features.size()) +
                 " objectness/deltas/feature tensors, model.json expects " +
                 std::to_string(b.rpn_levels.size()) + "/" + std::to_string(b.rpn_levels.size()) +
                 "/" + std::to_string(b.roi_levels.size()) +
                 " (backbone.rpn_levels / backbone.rpn_levels / backbone.roi_levels)";
        });
    const auto check_grid = [&](const TensorView& t, const char* what, const std::string& lvl,
                                int stride) {
      const auto fits = [&](std::int64_t got, int side) {
        return got >= side / stride && got <= (side + stride - 1) / stride;
      };
      detail::require(fits(t.shape[2], padded.height) && fits(t.shape[3], padded.width), [&] {
        return module() + ": " + what + " " + lvl + " has shape " + shape_str(t) +
               " for an input of " + std::to_string(padded.height) + "x" +
               std::to_string(padded.width) + ", expected a grid of about " +
               std::to_string((padded.height + stride - 1) / stride) + "x" +
               std::to_string((padded.width + stride - 1) / stride) +
               " (input / backbone.strides." + lvl + " = " + std::to_string(stride) +
               " in model.json)";
      });
    };
    for (std::size_t l = 0; l < b.rpn_levels.size(); ++l) {
      const auto& o = backbone_.objectness[l];
      const auto& d = backbone_.deltas[l];
      const int A = cfg_.anchors.anchors_per_cell(l);
      const std::string& lvl = b.rpn_levels[l];
      detail::require(o.shape[0] == std::int64_t(n) && o.shape[1] == A, [&] {
        return module() + ": objectness of level " + lvl + " has shape " + shape_str(o) +
               ", expected [" + std::to_string(n) + ", " + std::to_string(A) +
               ", H, W] (anchors per cell = " + std::to_string(cfg_.anchors.sizes_at(l).size()) +
               " anchors.sizes x " + std::to_string(cfg_.anchors.aspect_ratios_at(l).size()) +
               " anchors.aspect_ratios in model.json)";
      });
      detail::require(d.shape[0] == std::int64_t(n) && d.shape[1] == 4 * A &&
                          d.shape[2] == o.shape[2] && d.shape[3] == o.shape[3],
                      [&] {
                        return module() + ": deltas of level " + lvl + " has shape " +
                               shape_str(d) + ", expected [" + std::to_string(n) + ", " +
                               std::to_string(4 * A) + ", " + std::to_string(o.shape[2]) + ", " +
                               std::to_string(o.shape[3]) + "]";
                      });
      check_grid(o, "objectness of level", lvl, b.rpn_strides[l]);
    }
    for (std::size_t l = 0; l < b.roi_levels.size(); ++l) {
      const auto& f = backbone_.features[l];
      detail::require(f.shape[0] == std::int64_t(n) && f.shape[1] == b.channels, [&] {
        return module() + ": feature map " + b.roi_levels[l] + " has shape " + shape_str(f) +
               ", expected [" + std::to_string(n) + ", " + std::to_string(b.channels) +
               ", H, W] (backbone.channels in model.json)";
      });
      check_grid(f, "feature map", b.roi_levels[l], b.roi_strides[l]);
    }
  }

  static std::string shape_str(const TensorView& t) {
    return dims_string(t.shape[0], t.shape[1], t.shape[2], t.shape[3]);
  }

  void update_anchors(Size padded) {
    const std::size_t L = cfg_.backbone.rpn_levels.size();
    anchors_.resize(L);
    anchor_grids_.resize(L);
    for (std::size_t l = 0; l < L; ++l) {
      const Size grid{int(backbone_.objectness[l].shape[2]), int(backbone_.objectness[l].shape[3])};
      if (anchor_padded_ == padded && anchor_grids_[l] == grid && !anchors_[l].empty()) continue;
      anchor_gen_(cfg_.anchors, cfg_.conventions, l, cfg_.backbone.rpn_strides[l], grid, padded,
                  anchors_[l]);
      anchor_grids_[l] = grid;
    }
    anchor_padded_ = padded;
  }


  /// Mask R-CNN set-up checks: the executor can run the mask head and the stages paste
  /// with the bundle's convention.
  static void check_masks(const ModelConfig& cfg) {
    if (cfg.architecture != Architecture::mask_rcnn) return;
    detail::require(cfg.mask_head.has_value() && cfg.modules.mask_head.has_value(),
                    "model.json: architecture \"mask_rcnn\" needs the mask_head object and "
                    "modules.mask_head");
    if constexpr (!MaskExecutor<Exec>) {
      detail::fail("detector: the bundle is a Mask R-CNN (model.json architecture "
                   "\"mask_rcnn\") but the executor has no run_mask_head(const TensorView&, "
                   "MaskHeadOutputs&) (concept rcnn::MaskExecutor)");
    }
    const auto name = [](MaskHeadConfig::Paste p) {
      return p == MaskHeadConfig::Paste::detectron2 ? "detectron2" : "torchvision";
    };
    if (cfg.mask_head->paste != mask_paste_type::convention)
      detail::fail(std::string("model.json: mask_head.paste is \"") + name(cfg.mask_head->paste) +
                   "\" but the stages' mask_paste policy implements \"" +
                   name(mask_paste_type::convention) + "\"");
  }

  /// Expected mask-head channels: K (background last), K + 1 (background first), 1 (agnostic).
  int expected_mask_channels() const {
    if (cfg_.mask_head->class_agnostic) return 1;
    return cfg_.roi_heads.background_first ? cfg_.roi_heads.num_classes + 1
                                           : cfg_.roi_heads.num_classes;
  }

  /// Pools every image's detections (resized frame) into one [rows, C, P, P] buffer (each
  /// image's rows padded to a multiple of static_rois), runs the mask head per chunk and
  /// writes each detection's class-channel probabilities into `mask_probs_`. Returns the
  /// number of mask-head calls.
  std::size_t run_mask_stages(std::size_t n, const std::vector<DetectionResult>& results,
                              StageTimes& times) {
    using clock = std::chrono::steady_clock;
    const auto t_start = clock::now();
    const MaskHeadConfig& mcfg = *cfg_.mask_head;
    const std::size_t RL = cfg_.backbone.roi_levels.size();
    const int C = cfg_.backbone.channels;
    const int P = mcfg.pooler.resolution;
    const std::size_t roi_size = std::size_t(C) * P * P;
    const int static_rois = cfg_.modules.mask_head->static_rois.value_or(0);
    // Rows: per image its detections, then zero rows up to the static chunk size.
    std::size_t total = 0, rows = 0;
    mask_first_.resize(n + 1);
    for (std::size_t i = 0; i < n; ++i) {
      mask_first_[i] = total;
      total += results[i].detections.size();
      if (!results[i].detections.empty()) rows += padded_rows(results[i].detections.size(), static_rois);
    }
    mask_first_[n] = total;
    mask_features_.resize(rows * roi_size);
    mask_row_det_.resize(rows);
    mask_boxes_.resize(total);
    mask_classes_.resize(total);
    mask_levels_.resize(total);
    std::size_t row = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const auto& dets = results[i].detections;
      if (dets.empty()) continue;
      const std::size_t first = mask_first_[i];
      for (std::size_t d = 0; d < dets.size(); ++d) {
        mask_boxes_[first + d] = dets[d].box;
        mask_classes_[first + d] = dets[d].class_id;
      }
      const std::span<const Box> boxes(mask_boxes_.data() + first, dets.size());
      const std::span<int> levels(mask_levels_.data() + first, dets.size());
      assign_levels(boxes, mcfg.pooler, min_level_, max_level_, levels);
      for (std::size_t l = 0; l < RL; ++l) maps_[l] = backbone_.features[l].image(std::int64_t(i));
      float* dst = mask_features_.data() + row * roi_size;
      roi_align_(std::span<const FeatureMap>(maps_), std::span<const float>(scales_), boxes,
                 std::span<const int>(levels), mcfg.pooler,
                 std::span<float>(dst, dets.size() * roi_size));
      const std::size_t rows_i = padded_rows(dets.size(), static_rois);
      std::fill(dst + dets.size() * roi_size, dst + rows_i * roi_size, 0.f);
      for (std::size_t r = 0; r < rows_i; ++r)
        mask_row_det_[row + r] = r < dets.size() ? std::ptrdiff_t(first + r) : -1;
      row += rows_i;
    }
    const auto t_head = clock::now();
    times.mask_roi_align = std::chrono::duration<double, std::milli>(t_head - t_start).count();

    // Mask head, one call per static_rois chunk (or one call); the class channel of each
    // real row through the sigmoid.
    std::size_t calls = 0;
    double t_probs = 0;
    const std::size_t chunk = static_rois > 0 ? std::size_t(static_rois) : rows;
    const int M = 2 * P;
    const std::size_t plane = std::size_t(M) * M;
    mask_size_ = M;
    mask_probs_.resize(total * plane);
    if constexpr (MaskExecutor<Exec>) {
      const auto module = [&] { return module_path(*cfg_.modules.mask_head); };
      for (std::size_t start = 0; start < rows; start += chunk) {
        const std::size_t r_n = std::min(chunk, rows - start);
        const TensorView in{mask_features_.data() + start * roi_size,
                            {std::int64_t(r_n), C, P, P}};
        exec_.run_mask_head(in, mask_out_);
        ++calls;
        const TensorView& lg = mask_out_.logits;
        const int Km = expected_mask_channels();
        detail::require(lg.shape[0] == std::int64_t(r_n) && lg.shape[1] == Km &&
                            lg.shape[2] == M && lg.shape[3] == M,
                        [&] {
                          return module() + ": returned mask logits " + shape_str(lg) +
                                 " for " + std::to_string(r_n) + " RoIs, expected [" +
                                 std::to_string(r_n) + ", " + std::to_string(Km) + ", " +
                                 std::to_string(M) + ", " + std::to_string(M) +
                                 "] (mask_head.pooler_resolution " + std::to_string(P) +
                                 " x 2; channels from roi_heads.num_classes, "
                                 "roi_heads.background and mask_head.class_agnostic)";
                        });
        const auto t_p = clock::now();
        const std::size_t per_row = std::size_t(Km) * plane;
        for (std::size_t r = 0; r < r_n; ++r) {
          const std::ptrdiff_t det = mask_row_det_[start + r];
          if (det < 0) continue;
          const MaskLogitsView one{lg.data + r * per_row, 1, Km, M};
          mask_probabilities(one, std::span<const int>(&mask_classes_[std::size_t(det)], 1),
                             cfg_.roi_heads.background_first, mcfg.class_agnostic,
                             std::span<float>(mask_probs_.data() + std::size_t(det) * plane,
                                              plane));
        }
        t_probs += std::chrono::duration<double, std::milli>(clock::now() - t_p).count();
      }
    }
    times.mask_head =
        std::chrono::duration<double, std::milli>(clock::now() - t_head).count() - t_probs;
    times.mask_paste = t_probs;  // the pasting itself is added per image
    return calls;
  }

  void record_mask_trace(Trace& trace) const {
    const std::size_t d0 = mask_first_[1] - mask_first_[0];
    const std::size_t roi_size = std::size_t(cfg_.backbone.channels) *
                                 cfg_.mask_head->pooler.resolution *
                                 cfg_.mask_head->pooler.resolution;
    const std::size_t plane = std::size_t(mask_size_) * mask_size_;
    trace.mask_levels.assign(mask_levels_.begin(), mask_levels_.begin() + std::ptrdiff_t(d0));
    trace.mask_features.assign(mask_features_.begin(),
                               mask_features_.begin() + std::ptrdiff_t(d0 * roi_size));
    trace.mask_probs.assign(mask_probs_.begin(), mask_probs_.begin() + std::ptrdiff_t(d0 * plane));
    trace.mask_size = mask_size_;
  }

  /// Pastes image i's masks with its final boxes. Postprocessing may drop detections (empty
  /// after clipping) but keeps the order, so the survivors are matched to the detections
  /// before it by (class, score) in order.
  void paste_masks(std::size_t i, DetectionResult& res) {
    const std::size_t first = mask_first_[i];
    const std::size_t before = mask_first_[i + 1] - first;
    const std::size_t kept = res.detections.size();
    const std::size_t plane = std::size_t(mask_size_) * mask_size_;
    const float* probs = mask_probs_.data() + first * plane;
    if (kept != before) {
      kept_probs_.resize(kept * plane);
      std::size_t j = 0;
      for (std::size_t k = 0; k < kept; ++k) {
        const Detection& d = res.detections[k];
        while (j < before && !(before_post_[j].class_id == d.class_id &&
                               before_post_[j].score == d.score))
          ++j;
        detail::require(j < before, "detector: the postprocess policy changed a detection's "
                                    "class or score; masks cannot follow it");
        std::copy_n(probs + j * plane, plane, kept_probs_.data() + k * plane);
        ++j;
      }
      probs = kept_probs_.data();
    }
    final_boxes_.resize(kept);
    for (std::size_t k = 0; k < kept; ++k) final_boxes_[k] = res.detections[k].box;
    // Masks beyond this image's count are parked (last first) instead of destroyed and come
    // back in the same order, so every position keeps its pixel buffer: at steady state
    // the paste allocates nothing.
    while (res.masks.size() > kept) {
      spare_masks_.push_back(std::move(res.masks.back()));
      res.masks.pop_back();
    }
    while (res.masks.size() < kept && !spare_masks_.empty()) {
      res.masks.push_back(std::move(spare_masks_.back()));
      spare_masks_.pop_back();
    }
    mask_paste_(MaskProbs{probs, int(kept), mask_size_}, std::span<const Box>(final_boxes_),
                res.image_size, cfg_.mask_head->mask_threshold, res.masks);
  }

  /// Returns how many times the head ran.
  std::size_t run_box_head(std::size_t head_rows, int static_rois, int C, int P) {
    std::size_t calls = 0;
    const std::size_t roi_size = std::size_t(C) * P * P;
    const std::size_t chunk = static_rois > 0 ? std::size_t(static_rois) : head_rows;
    const auto module = [&] { return module_path(cfg_.modules.box_head); };
    for (std::size_t start = 0; start < head_rows || (head_rows == 0 && start == 0);
         start += std::max<std::size_t>(chunk, 1)) {
      const std::size_t rows = std::min(chunk, head_rows - start);
      if (rows == 0) {  // no proposals anywhere: the head is not run
        logits_width_ = cfg_.roi_heads.num_classes + 1;
        deltas_width_ = expected_deltas_width();
        break;
      }
      const TensorView in{box_features_.data() + start * roi_size,
                          {std::int64_t(rows), C, P, P}};
      exec_.run_box_head(in, head_out_);
      ++calls;
      const auto& lg = head_out_.class_logits;
      const auto& dl = head_out_.box_deltas;
      detail::require(lg.shape[0] == std::int64_t(rows) && dl.shape[0] == std::int64_t(rows), [&] {
        return module() + ": returned " + std::to_string(lg.shape[0]) + " logit rows and " +
               std::to_string(dl.shape[0]) + " delta rows for " + std::to_string(rows) + " RoIs";
      });
      logits_width_ = int(lg.shape[1]);
      deltas_width_ = int(dl.shape[1]);
      detail::require(logits_width_ == cfg_.roi_heads.num_classes + 1, [&] {
        return module() + ": class_logits has " + std::to_string(logits_width_) +
               " columns, model.json roi_heads.num_classes + 1 = " +
               std::to_string(cfg_.roi_heads.num_classes + 1);
      });
      detail::require(deltas_width_ == expected_deltas_width(), [&] {
        return module() + ": box_deltas has " + std::to_string(deltas_width_) +
               " columns, expected " + std::to_string(expected_deltas_width()) +
               " from model.json roi_heads (background, class_agnostic)";
      });
      if (start == 0) {
        logits_.resize(head_rows * std::size_t(logits_width_));
        deltas_.resize(head_rows * std::size_t(deltas_width_));
      }
      std::copy(lg.data, lg.data + rows * std::size_t(logits_width_),
                logits_.data() + start * std::size_t(logits_width_));
      std::copy(dl.data, dl.data + rows * std::size_t(deltas_width_),
                deltas_.data() + start * std::size_t(deltas_width_));
    }
    return calls;
  }

  /// Sizes the per-image buffers for the most proposals an image of this input size can
  /// have, min(post_nms_topk, sum over levels of min(pre_nms_topk, A * H * W)), so that no
  /// later image of the size grows one (steady state: no heap allocation per image).
  /// A few comparisons once they are that large.
  void reserve_workspaces(std::size_t n, std::size_t roi_size) {
    const std::size_t pre = std::size_t(std::max(cfg_.rpn.pre_nms_topk, 0));
    std::size_t candidates = 0;
    for (const TensorView& o : backbone_.objectness)
      candidates += std::min(std::size_t(o.shape[1] * o.shape[2] * o.shape[3]), pre);
    const std::size_t rois =
        std::min(candidates, std::size_t(std::max(cfg_.rpn.post_nms_topk, 0)));
    const std::size_t rows = n * padded_rows(rois, cfg_.modules.box_head.static_rois.value_or(0));
    box_features_.reserve(rows * roi_size);
    logits_.reserve(rows * std::size_t(cfg_.roi_heads.num_classes + 1));
    deltas_.reserve(rows * std::size_t(expected_deltas_width()));
    for (auto& levels : levels_) levels.reserve(rois);
    box_ws_.reserve(rois, cfg_.roi_heads.num_classes);
    detail::reserve_nms(nms_, rois);
    if constexpr (requires { roi_align_.reserve(rois); }) roi_align_.reserve(rois);
    if (has_masks()) {
      // Mask stages: at most detections_per_image per image.
      const std::size_t D = std::size_t(std::max(cfg_.roi_heads.detections_per_image, 0));
      const int P = cfg_.mask_head->pooler.resolution;
      const std::size_t mrows = n * padded_rows(D, cfg_.modules.mask_head->static_rois.value_or(0));
      mask_features_.reserve(mrows * std::size_t(cfg_.backbone.channels) * P * P);
      mask_row_det_.reserve(mrows);
      for (auto* v : {&mask_boxes_, &final_boxes_}) v->reserve(n * D);
      mask_classes_.reserve(n * D);
      mask_levels_.reserve(n * D);
      mask_probs_.reserve(n * D * 4 * P * P);
      kept_probs_.reserve(D * 4 * P * P);
      before_post_.reserve(D);
      spare_masks_.reserve(D);
      if constexpr (requires { roi_align_.reserve(n * D); }) roi_align_.reserve(std::max(rois, n * D));
    }
  }

  int expected_deltas_width() const {
    const auto& r = cfg_.roi_heads;
    if (r.class_agnostic_box_regression) return 4;
    return r.background_first ? 4 * (r.num_classes + 1) : 4 * r.num_classes;
  }

  ModelConfig cfg_;
  Exec exec_;
  RoIAlign roi_align_;
  typename Stages::preprocess preprocess_{};
  typename Stages::anchor_generator anchor_gen_{};
  typename Stages::nms nms_{};
  typename Stages::proposal_selector proposal_selector_{};
  typename Stages::box_inference box_inference_{};
  typename Stages::postprocess postprocess_{};
  mask_paste_type mask_paste_{};
  [[no_unique_address]] profiler_type profiler_{};

  int min_level_ = 2, max_level_ = 5;
  std::vector<float> scales_;
  // Workspaces: sized by the first image of a size, reused afterwards.
  std::vector<float> input_;
  std::vector<std::vector<float>> per_image_;
  std::vector<PreprocessResult> pre_results_;
  BackboneOutputs backbone_;
  std::vector<std::vector<Box>> anchors_;
  std::vector<Size> anchor_grids_;
  Size anchor_padded_{};
  std::vector<RpnLevelInput> rpn_inputs_;
  ProposalWorkspace proposal_ws_;
  std::vector<ScoredBoxes> proposals_;
  std::vector<FeatureMap> maps_;
  std::vector<std::vector<int>> levels_;
  std::vector<float> box_features_;
  BoxHeadOutputs head_out_;
  std::vector<float> logits_, deltas_;
  int logits_width_ = 0, deltas_width_ = 0;
  BoxInferenceWorkspace box_ws_;
  // Mask R-CNN workspaces.
  std::vector<std::size_t> mask_first_;      ///< per image, its first detection's index
  std::vector<std::ptrdiff_t> mask_row_det_; ///< per mask-head row, detection or -1 (padding)
  std::vector<Box> mask_boxes_, final_boxes_;
  std::vector<int> mask_classes_, mask_levels_;
  std::vector<float> mask_features_, mask_probs_, kept_probs_;
  std::vector<Detection> before_post_;
  std::vector<InstanceMask> spare_masks_;  ///< parked mask buffers (see paste_masks)
  MaskHeadOutputs mask_out_;
  int mask_size_ = 0;
};

}  // namespace rcnn
