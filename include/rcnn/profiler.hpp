#pragma once
/// \file profiler.hpp
/// Stage profiling as an optional policy of `rcnn::Detector`. A stage bundle selects it with
/// `using profiler = ...;` (absent: `NoProfiler`, whose calls are empty inline functions and
/// compile to nothing). `StageProfiler` accumulates every stage's calls and wall time over
/// many images and prints them as a table. Framework-free.
///
///     struct Profiled : rcnn::Detectron2Stages { using profiler = rcnn::StageProfiler; };
///     rcnn::Detector<rcnn::TorchScriptExec, rcnn::OmpRoIAlign, Profiled> det(cfg, exec, roi);
///     for (...) det(image);
///     det.profiler().print(stderr);
/// or, equivalently, `rcnn::WithProfiler<rcnn::Detectron2Stages>`.

#include <array>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdio>
#include <string>

namespace rcnn {

/// The stages of a detector, in pipeline order (the members of `StageTimes`).
enum class Stage : int {
  preprocess,
  backbone_rpn,
  anchors,
  proposals,
  roi_align,
  box_head,
  box_inference,
  postprocess,
  mask_roi_align,  ///< Mask R-CNN only: pooling the detections' mask features
  mask_head,       ///< Mask R-CNN only: the mask head network
  mask_paste,      ///< Mask R-CNN only: class channel, sigmoid, paste into the image
  keypoint_roi_align,  ///< Keypoint R-CNN only: pooling the detections' keypoint features
  keypoint_head,       ///< Keypoint R-CNN only: the keypoint head network
  keypoint_decode      ///< Keypoint R-CNN only: heatmaps to keypoints, into the image
};
inline constexpr std::size_t kNumStages = 14;
/// The stages every detector runs (the mask and keypoint stages follow them).
inline constexpr std::size_t kNumBoxStages = 8;

inline constexpr const char* stage_name(Stage s) {
  constexpr const char* names[kNumStages] = {
      "preprocess",    "backbone_rpn", "anchors",        "proposals", "roi_align", "box_head",
      "box_inference", "postprocess",  "mask_roi_align", "mask_head", "mask_paste",
      "keypoint_roi_align", "keypoint_head", "keypoint_decode"};
  return names[std::size_t(s)];
}

/// A profiling policy. `record(stage, ms, calls)` is called once per stage and batch with
/// the stage's wall time over the batch and how many times it ran (e.g. box_head once per
/// static_rois chunk, proposals once per image); `end_batch(images)` after the batch.
template <class P>
concept ProfilerPolicy = requires(P& p, Stage s, double ms, std::size_t n) {
  { P::enabled } -> std::convertible_to<bool>;
  { p.record(s, ms, n) } -> std::same_as<void>;
  { p.end_batch(n) } -> std::same_as<void>;
};

/// The default: records nothing; every call is an empty inline function.
struct NoProfiler {
  static constexpr bool enabled = false;
  void record(Stage, double, std::size_t) {}
  void end_batch(std::size_t) {}
};

/// Accumulates, per stage: calls, total wall time; and the number of images and batches.
/// Not thread-safe (like the Detector that owns it); combine replicas with `merge`.
class StageProfiler {
 public:
  static constexpr bool enabled = true;

  struct Entry {
    std::size_t calls = 0;
    double total_ms = 0;
  };

  void record(Stage s, double ms, std::size_t calls) {
    Entry& e = entries_[std::size_t(s)];
    e.calls += calls;
    e.total_ms += ms;
  }
  void end_batch(std::size_t images) {
    images_ += images;
    ++batches_;
  }

  /// Adds another profiler's counts (e.g. of another replica).
  void merge(const StageProfiler& o) {
    for (std::size_t i = 0; i < kNumStages; ++i) {
      entries_[i].calls += o.entries_[i].calls;
      entries_[i].total_ms += o.entries_[i].total_ms;
    }
    images_ += o.images_;
    batches_ += o.batches_;
  }
  void reset() { *this = StageProfiler{}; }

  const Entry& operator[](Stage s) const { return entries_[std::size_t(s)]; }
  std::size_t images() const { return images_; }
  std::size_t batches() const { return batches_; }
  /// Sum of every stage's total: the images' detector time.
  double total_ms() const {
    double t = 0;
    for (const Entry& e : entries_) t += e.total_ms;
    return t;
  }
  /// Mean time per call of a stage (0 when it never ran).
  double mean_ms(Stage s) const {
    const Entry& e = (*this)[s];
    return e.calls ? e.total_ms / double(e.calls) : 0.0;
  }
  /// The stage's share of the images' total time, in percent.
  double share_percent(Stage s) const {
    const double t = total_ms();
    return t > 0 ? 100.0 * (*this)[s].total_ms / t : 0.0;
  }

  /// The table: one row per stage (calls, total ms, mean ms per call, ms per image, share of
  /// the image's time; the mask stages only when they ran), then the total.
  std::string table() const {
    std::string out;
    char line[160];
    std::snprintf(line, sizeof line, "%-14s %8s %12s %10s %10s %7s\n", "stage", "calls",
                  "total ms", "mean ms", "ms/image", "share");
    out += line;
    const double per = images_ ? 1.0 / double(images_) : 0.0;
    for (std::size_t i = 0; i < kNumStages; ++i) {
      const Stage s = Stage(int(i));
      const Entry& e = entries_[i];
      if (i >= kNumBoxStages && e.calls == 0) continue;
      std::snprintf(line, sizeof line, "%-14s %8zu %12.3f %10.3f %10.3f %6.1f%%\n",
                    stage_name(s), e.calls, e.total_ms, mean_ms(s), e.total_ms * per,
                    share_percent(s));
      out += line;
    }
    std::snprintf(line, sizeof line, "%-14s %8zu %12.3f %10s %10.3f %6.1f%%\n", "total",
                  images_, total_ms(), "", total_ms() * per, total_ms() > 0 ? 100.0 : 0.0);
    out += line;
    std::snprintf(line, sizeof line, "(%zu images in %zu batches; calls of \"total\" = images)\n",
                  images_, batches_);
    out += line;
    return out;
  }
  void print(std::FILE* f) const { std::fputs(table().c_str(), f); }

 private:
  std::array<Entry, kNumStages> entries_{};
  std::size_t images_ = 0, batches_ = 0;
};

/// Times one step of a batch, as an RAII scope: on leaving it, adds the step's wall time to
/// `*slot` (the batch's StageTimes, which every DetectionResult carries: two clock reads per
/// step) and, when the profiler is enabled, records it there too (`calls` times;
/// `set_calls` when the count is known only at the end). With NoProfiler the recording
/// compiles to nothing.
template <class Profiler>
class StepScope {
 public:
  using clock = std::chrono::steady_clock;
  StepScope(Profiler& profiler, double* slot, Stage stage, std::size_t calls)
      : profiler_(profiler), slot_(slot), stage_(stage), calls_(calls), start_(clock::now()) {
    // Optional hook: a profiler that measures something of its own (e.g. CPU time).
    if constexpr (requires { profiler.begin(stage); }) profiler.begin(stage);
  }
  StepScope(const StepScope&) = delete;
  StepScope& operator=(const StepScope&) = delete;
  ~StepScope() {
    const double ms = std::chrono::duration<double, std::milli>(clock::now() - start_).count();
    *slot_ += ms;
    if constexpr (Profiler::enabled) profiler_.record(stage_, ms, calls_);
  }
  void set_calls(std::size_t calls) { calls_ = calls; }

 private:
  Profiler& profiler_;
  double* slot_;
  Stage stage_;
  std::size_t calls_;
  clock::time_point start_;
};

/// `Base` with its profiler replaced by `Profiler`.
template <class Base, class Profiler = StageProfiler>
struct WithProfiler : Base {
  using profiler = Profiler;
};

/// The profiler a stage bundle selects.
template <class Stages>
using profiler_of_t = typename Stages::profiler;

}  // namespace rcnn
