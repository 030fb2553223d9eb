#pragma once
/// \file load.hpp
/// One-call loading: `auto det = rcnn::load<rcnn::TorchScriptExec>("bundle"); det(image);`
/// picks the stage bundle matching the bundle's conventions at run time.

#include <filesystem>
#include <span>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "detector.hpp"
#include "io/bundle.hpp"
#include "stages.hpp"

namespace rcnn {

/// A detector over either convention, chosen from model.json when loaded. Forwards every
/// call to the Detector it holds (one std::visit per call). `Profiler` (profiler.hpp) is the
/// stages' profiling policy: NoProfiler (default, compiled out) or e.g. StageProfiler.
/// `Modifier::apply<S>` replaces each default stage bundle S (KeepStages: unchanged;
/// OmpPasteModifier in mask/omp_paste.hpp: OpenMP mask pasting).
template <class Exec, class RoIAlign = RoIAlignRef, class Profiler = NoProfiler,
          class Modifier = KeepStages>
class AnyDetector {
  template <class S>
  using with_profiler =
      std::conditional_t<std::is_same_v<Profiler, NoProfiler>, S, WithProfiler<S, Profiler>>;
  template <class S>
  using stages_of = with_profiler<typename Modifier::template apply<S>>;

 public:
  using TorchvisionDetector = Detector<Exec, RoIAlign, stages_of<TorchvisionStages>>;
  using Detectron2Detector = Detector<Exec, RoIAlign, stages_of<Detectron2Stages>>;

  explicit AnyDetector(TorchvisionDetector d) : impl_(std::move(d)) {}
  explicit AnyDetector(Detectron2Detector d) : impl_(std::move(d)) {}

  DetectionResult operator()(const ImageView& image, Trace* trace = nullptr) {
    return std::visit([&](auto& d) { return d(image, trace); }, impl_);
  }
  std::vector<DetectionResult> operator()(std::span<const ImageView> images) {
    return std::visit([&](auto& d) { return d(images); }, impl_);
  }
  void run(std::span<const ImageView> images, std::vector<DetectionResult>& out,
           Trace* trace = nullptr) {
    std::visit([&](auto& d) { d.run(images, out, trace); }, impl_);
  }
  const ModelConfig& config() const {
    return std::visit([](const auto& d) -> const ModelConfig& { return d.config(); }, impl_);
  }
  Exec& executor() {
    return std::visit([](auto& d) -> Exec& { return d.executor(); }, impl_);
  }
  RoIAlign& roi_align() {
    return std::visit([](auto& d) -> RoIAlign& { return d.roi_align(); }, impl_);
  }
  Profiler& profiler() {
    return std::visit([](auto& d) -> Profiler& { return d.profiler(); }, impl_);
  }
  /// True for Mask R-CNN bundles (results carry masks).
  bool has_masks() const {
    return std::visit([](const auto& d) { return d.has_masks(); }, impl_);
  }
  /// Threads of the mask paste policy, where it has a `num_threads` field (the OpenMP ones).
  void set_mask_paste_threads(int n) {
    std::visit(
        [n](auto& d) {
          if constexpr (requires { d.mask_paste().num_threads = n; }) d.mask_paste().num_threads = n;
        },
        impl_);
  }
  /// Calls `f(detector)` with the Detector it holds (either stage bundle).
  template <class F>
  decltype(auto) visit(F&& f) {
    return std::visit(std::forward<F>(f), impl_);
  }

 private:
  std::variant<TorchvisionDetector, Detectron2Detector> impl_;
};

/// Reads and validates a bundle, loads its modules with `Exec`, and builds the detector
/// whose stages match the bundle's conventions.
template <class Exec, class RoIAlign = RoIAlignRef, class Profiler = NoProfiler,
          class Modifier = KeepStages>
AnyDetector<Exec, RoIAlign, Profiler, Modifier> load(const std::filesystem::path& bundle_dir,
                                                     typename Exec::Options options = {},
                                                     RoIAlign roi_align = {}) {
  ModelConfig cfg = read_bundle(bundle_dir);
  Exec exec(cfg, options);
  using A = AnyDetector<Exec, RoIAlign, Profiler, Modifier>;
  if (cfg.conventions == Conventions::torchvision)
    return A(typename A::TorchvisionDetector(std::move(cfg), std::move(exec), std::move(roi_align)));
  return A(typename A::Detectron2Detector(std::move(cfg), std::move(exec), std::move(roi_align)));
}

/// Reads a bundle and builds a Detector with explicitly chosen stages; fails with a clear
/// error when the bundle's conventions differ from `Stages::conventions`.
template <class Exec, class RoIAlign = RoIAlignRef, class Stages = Detectron2Stages>
Detector<Exec, RoIAlign, Stages> load_as(const std::filesystem::path& bundle_dir,
                                         typename Exec::Options options = {},
                                         RoIAlign roi_align = {}) {
  ModelConfig cfg = read_bundle(bundle_dir);
  if (cfg.conventions != Stages::conventions)  // before loading the (large) modules
    Detector<Exec, RoIAlign, Stages>::check_conventions(cfg);
  Exec exec(cfg, options);
  return Detector<Exec, RoIAlign, Stages>(std::move(cfg), std::move(exec), std::move(roi_align));
}

}  // namespace rcnn
