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
#include "preprocess/resize_shape.hpp"
#include "profiler.hpp"
#include "roi_align/level_mapper.hpp"
#include "roi_align/roi_align_ref.hpp"
#include "stages.hpp"
#include "types.hpp"

namespace rcnn {

/// Wall time of each stage of one call, in milliseconds (batch-level stages are divided
/// evenly among the batch's images).
struct StageTimes {
  double preprocess = 0, backbone_rpn = 0, anchors = 0, proposals = 0, roi_align = 0,
         box_head = 0, box_inference = 0, postprocess = 0;
  double total() const {
    return preprocess + backbone_rpn + anchors + proposals + roi_align + box_head +
           box_inference + postprocess;
  }
  /// (name, ms) pairs in pipeline order.
  template <class F>
  void for_each(F&& f) const {
    f("preprocess", preprocess);
    f("backbone_rpn", backbone_rpn);
    f("anchors", anchors);
    f("proposals", proposals);
    f("roi_align", roi_align);
    f("box_head", box_head);
    f("box_inference", box_inference);
    f("postprocess", postprocess);
  }
};

/// Detections of one image in original image coordinates, score descending.
struct DetectionResult {
  Size image_size;    ///< original image
  Size resized_size;  ///< what the network saw, before padding
  std::vector<Detection> detections;
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
/// Profiling: `Stages::profiler` (default `NoProfiler`, compiled out) receives every stage's
/// time and call count per batch (profiler.hpp); read it with `profiler()`.
template <class Exec, class RoIAlign = RoIAlignRef, class Stages = Detectron2Stages>
  requires Executor<Exec> && RoIAlignPolicy<RoIAlign> && StageBundle<Stages> &&
           ProfilerPolicy<profiler_of_t<Stages>>
class Detector {
 public:
  using executor_type = Exec;
  using roi_align_type = RoIAlign;
  using stages_type = Stages;
  using profiler_type = profiler_of_t<Stages>;

  Detector(ModelConfig config, Exec exec, RoIAlign roi_align = {})
      : cfg_(std::move(config)), exec_(std::move(exec)), roi_align_(std::move(roi_align)) {
    check_conventions(cfg_);
    const auto& b = cfg_.backbone;
    detail::require(!b.roi_strides.empty(), "model.json: backbone.roi_levels is empty");
    min_level_ = int(std::lround(std::log2(double(b.roi_strides.front()))));
    max_level_ = int(std::lround(std::log2(double(b.roi_strides.back()))));
    for (int s : b.roi_strides) scales_.push_back(float(1.0 / double(s)));
  }

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

    // 7. Box inference and 8. postprocess, per image.
    double t_inf = 0, t_post = 0;
    row = 0;
    for (std::size_t i = 0; i < n; ++i) {
      t0 = clock::now();
      const BoxHeadView head{logits_.data() + row * std::size_t(logits_width_),
                             deltas_.data() + row * std::size_t(deltas_width_),
                             int(proposals_[i].size()), logits_width_, deltas_width_};
      DetectionResult& res = results[i];
      box_inference_(std::span<const Box>(proposals_[i].boxes), head, pre_results_[i].resized,
                     cfg_.roi_heads, nms_, box_ws_, res.detections);
      row += padded_rows(proposals_[i].size(), static_rois);
      t_inf += ms_since(t0);
      if (trace && i == 0) trace->detections_resized = res.detections;
      t0 = clock::now();
      postprocess_(pre_results_[i].resized, pre_results_[i].original, cfg_.conventions,
                   cfg_.postprocess, res.detections);
      t_post += ms_since(t0);
      res.image_size = pre_results_[i].original;
      res.resized_size = pre_results_[i].resized;
    }
    batch_times.box_inference = t_inf;
    batch_times.postprocess = t_post;
    if constexpr (profiler_type::enabled) {
      profiler_.record(Stage::preprocess, batch_times.preprocess, n);
      profiler_.record(Stage::backbone_rpn, batch_times.backbone_rpn, 1);
      profiler_.record(Stage::anchors, batch_times.anchors, 1);
      profiler_.record(Stage::proposals, batch_times.proposals, n);
      profiler_.record(Stage::roi_align, batch_times.roi_align, n);
      profiler_.record(Stage::box_head, batch_times.box_head, head_calls);
      profiler_.record(Stage::box_inference, batch_times.box_inference, n);
      profiler_.record(Stage::postprocess, batch_times.postprocess, n);
      profiler_.end_batch(n);
    }
    const double inv = 1.0 / double(n);
    for (auto& r : results) {
      r.timing = batch_times;
      r.timing.preprocess *= inv;
      r.timing.backbone_rpn *= inv;
      r.timing.anchors *= inv;
      r.timing.proposals *= inv;
      r.timing.roi_align *= inv;
      r.timing.box_head *= inv;
      r.timing.box_inference *= inv;
      r.timing.postprocess *= inv;
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
    return "[" + std::to_string(s[0]) + ", " + std::to_string(s[1]) + ", " +
           std::to_string(s[2]) + ", " + std::to_string(s[3]) + "]";
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
    return "[" + std::to_string(t.shape[0]) + ", " + std::to_string(t.shape[1]) + ", " +
           std::to_string(t.shape[2]) + ", " + std::to_string(t.shape[3]) + "]";
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
};

}  // namespace rcnn
