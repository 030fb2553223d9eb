#pragma once
/// \file load.hpp
/// One-call loading: `auto det = rcnn::load<rcnn::TorchScriptExec>("bundle"); det(image);`
/// picks the stage bundle matching the bundle's conventions at run time.
///
/// One customisation path: stage bundles (stages.hpp).
///  - `rcnn::load<Exec, RoIAlign, Custom>(dir)`, `Custom` a template mapping a default bundle
///    to yours (`rcnn::WithProfiler`, `rcnn::WithOmpPaste`, or your own
///    `template <class S> struct Mine : S { using box_nms = X; };`), gives an AnyDetector
///    that follows the bundle's conventions.
///  - `rcnn::load<Exec, RoIAlign, MyStages>(dir, options, roi_align, stages)`, `MyStages` a
///    concrete bundle, gives a `Detector<Exec, RoIAlign, MyStages>` with the stage values
///    you pass (`rcnn::StageSet<MyStages>{.box_nms = MySoftNms(0.3f)}`); a bundle of the
///    other conventions is refused before its modules are loaded.

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
/// call to the Detector it holds (one std::visit per call). `Custom<S>` is the stage bundle
/// used for each default bundle S (rcnn::Unchanged: the defaults).
template <class Exec, class RoIAlign = RoIAlignRef, template <class> class Custom = Unchanged>
class AnyDetector {
 public:
  using TorchvisionDetector = Detector<Exec, RoIAlign, Custom<TorchvisionStages>>;
  using Detectron2Detector = Detector<Exec, RoIAlign, Custom<Detectron2Stages>>;
  using profiler_type = typename TorchvisionDetector::profiler_type;
  static_assert(std::is_same_v<profiler_type, typename Detectron2Detector::profiler_type>,
                "rcnn::AnyDetector: both conventions' bundles must use the same profiler");

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
  profiler_type& profiler() {
    return std::visit([](auto& d) -> profiler_type& { return d.profiler(); }, impl_);
  }
  /// True for Mask R-CNN bundles (results carry masks).
  bool has_masks() const {
    return std::visit([](const auto& d) { return d.has_masks(); }, impl_);
  }
  /// True for Keypoint R-CNN bundles (results carry keypoints).
  bool has_keypoints() const {
    return std::visit([](const auto& d) { return d.has_keypoints(); }, impl_);
  }
  /// Detector::set_threads: the thread count of every OpenMP stage and of the RoIAlign.
  void set_threads(int n) {
    std::visit([n](auto& d) { d.set_threads(n); }, impl_);
  }
  /// Threads of the mask paste policy only, where it has a `num_threads` field.
  void set_mask_paste_threads(int n) {
    std::visit(
        [n](auto& d) {
          if constexpr (ThreadedStage<typename std::remove_cvref_t<decltype(d)>::mask_paste_type>)
            d.mask_paste().num_threads = n;
        },
        impl_);
  }
  /// Detector::reserve_for on the detector it holds.
  void reserve_for(Size image, std::size_t batch = 1) {
    std::visit([&](auto& d) { d.reserve_for(image, batch); }, impl_);
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
/// whose stages (`Custom` of the default bundle) match the bundle's conventions.
template <class Exec, class RoIAlign = RoIAlignRef, template <class> class Custom = Unchanged>
AnyDetector<Exec, RoIAlign, Custom> load(const std::filesystem::path& bundle_dir,
                                         typename Exec::Options options = {},
                                         RoIAlign roi_align = {}) {
  ModelConfig cfg = read_bundle(bundle_dir);
  Exec exec(cfg, options);
  using A = AnyDetector<Exec, RoIAlign, Custom>;
  if (cfg.conventions == Conventions::torchvision)
    return A(typename A::TorchvisionDetector(std::move(cfg), std::move(exec), std::move(roi_align)));
  return A(typename A::Detectron2Detector(std::move(cfg), std::move(exec), std::move(roi_align)));
}

/// Reads a bundle and builds a Detector with the concrete stage bundle `Stages` and the
/// given stage values; fails with a clear error, before loading the modules, when the
/// bundle's conventions differ from `Stages::conventions`.
template <class Exec, class RoIAlign, class Stages>
  requires StageBundle<Stages>
Detector<Exec, RoIAlign, Stages> load(const std::filesystem::path& bundle_dir,
                                      typename Exec::Options options, RoIAlign roi_align,
                                      StageSet<Stages> stages) {
  ModelConfig cfg = read_bundle(bundle_dir);
  Detector<Exec, RoIAlign, Stages>::check_conventions(cfg);
  Exec exec(cfg, options);
  return Detector<Exec, RoIAlign, Stages>(std::move(cfg), std::move(exec), std::move(roi_align),
                                          std::move(stages));
}

/// The same with default-constructed stages.
template <class Exec, class RoIAlign, class Stages>
  requires StageBundle<Stages>
Detector<Exec, RoIAlign, Stages> load(const std::filesystem::path& bundle_dir,
                                      typename Exec::Options options = {},
                                      RoIAlign roi_align = {}) {
  ModelConfig cfg = read_bundle(bundle_dir);
  Detector<Exec, RoIAlign, Stages>::check_conventions(cfg);
  Exec exec(cfg, options);
  return Detector<Exec, RoIAlign, Stages>(std::move(cfg), std::move(exec), std::move(roi_align));
}

}  // namespace rcnn
