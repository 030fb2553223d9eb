#pragma once
/// \file mask_head_step.hpp
/// The mask head as a per-RoI head of the Detector (Mask R-CNN bundles): pool the
/// detections of box inference (resized frame) with the bundle's mask pooler, run the mask
/// head through the executor (RoiRows: static_rois chunks), keep each detection's class
/// channel through the sigmoid, and after postprocessing paste the masks of the detections
/// it kept (`kept` indices, concepts.hpp PostprocessPolicy) into the original image.
/// Framework-free; allocation-free at steady state once reserved.

#include <algorithm>
#include <cstddef>
#include <span>
#include <utility>
#include <vector>

#include "../concepts.hpp"
#include "../config.hpp"
#include "../detail/output_checks.hpp"
#include "../error.hpp"
#include "../results.hpp"
#include "../roi_heads/detection_rows.hpp"
#include "mask_inference.hpp"
#include "mask_types.hpp"

namespace rcnn {

class MaskHeadStep {
 public:
  /// Set-up checks: the executor can run the mask head and `Paste` pastes with the bundle's
  /// convention.
  template <class Exec, class Paste>
  static void check(const ModelConfig& cfg) {
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
    if (cfg.mask_head->paste != Paste::convention)
      detail::fail(std::string("model.json: mask_head.paste is \"") + name(cfg.mask_head->paste) +
                   "\" but the stages' mask_paste policy implements \"" +
                   name(Paste::convention) + "\"");
  }

  /// Capacity for `images` images of up to `detections` detections each.
  void reserve(const ModelConfig& cfg, std::size_t images, std::size_t detections) {
    rows_.reserve(cfg.mask_head->pooler, *cfg.modules.mask_head, cfg.backbone.channels, images,
                  detections);
    final_boxes_.reserve(detections);
    const std::size_t plane = std::size_t(cfg.mask_head->mask_size) * cfg.mask_head->mask_size;
    probs_.reserve(images * detections * plane);
    kept_probs_.reserve(detections * plane);
    spare_masks_.reserve(detections);
  }

  /// Pools image i's detections `dets(i)` (resized frame) for images 0..n-1.
  template <class RoIAlign, class DetsOf>
  void pool(RoIAlign& roi_align, const ModelConfig& cfg, const RoiLevels& lv,
            const BackboneOutputs& backbone, std::size_t n, DetsOf&& dets) {
    rows_.pool(roi_align, lv, backbone, n, std::forward<DetsOf>(dets), cfg.mask_head->pooler,
               *cfg.modules.mask_head, cfg.backbone.channels);
  }

  /// Runs the mask head over the pooled rows and keeps each detection's class channel
  /// through the sigmoid. Returns the number of mask-head calls.
  template <class Exec>
  std::size_t run_head(Exec& exec, const ModelConfig& cfg) {
    const int P = cfg.mask_head->pooler.resolution;
    size_ = cfg.mask_head->mask_size;
    const std::size_t plane = std::size_t(size_) * size_;
    probs_.resize(rows_.detections() * plane);
    if constexpr (MaskExecutor<Exec>) {
      const int Km = detail::expected_mask_channels(cfg);
      return rows_.run(
          [&](const TensorView& in, std::size_t start, std::size_t r_n) {
            exec.run_mask_head(in, out_);
            detail::check_mask_head_outputs(cfg, out_, r_n);
            const std::size_t per_row = std::size_t(Km) * plane;
            for (std::size_t r = 0; r < r_n; ++r) {
              const std::ptrdiff_t det = rows_.detection_of_row(start + r);
              if (det < 0) continue;
              const MaskLogitsView one{out_.logits.data + r * per_row, 1, Km, size_};
              mask_probabilities(one, std::span<const int>(&rows_.class_id(std::size_t(det)), 1),
                                 cfg.roi_heads.background_first, cfg.mask_head->class_agnostic,
                                 std::span<float>(probs_.data() + std::size_t(det) * plane, plane));
            }
          },
          cfg.backbone.channels, P);
    } else {
      return 0;  // refused at set-up (check)
    }
  }

  /// Pastes image i's masks: `res.detections` are the postprocessed detections, `kept[k]`
  /// the index before postprocessing of detection k (its probabilities).
  template <class Paste>
  void paste(Paste& paste_policy, const ModelConfig& cfg, std::size_t i,
             std::span<const int> kept, DetectionResult& res) {
    const std::size_t first = rows_.first(i);
    const std::size_t before = rows_.count(i);
    const std::size_t n = res.detections.size();
    const std::size_t plane = std::size_t(size_) * size_;
    const float* probs = probs_.data() + first * plane;
    if (!check_kept(kept, n, before)) {  // gather the survivors' probabilities, by index
      kept_probs_.resize(n * plane);
      for (std::size_t k = 0; k < n; ++k)
        std::copy_n(probs + std::size_t(kept[k]) * plane, plane, kept_probs_.data() + k * plane);
      probs = kept_probs_.data();
    }
    final_boxes_.resize(n);
    for (std::size_t k = 0; k < n; ++k) final_boxes_[k] = res.detections[k].box;
    // Masks beyond this image's count are parked (last first) instead of destroyed and come
    // back in the same order, so every position keeps its pixel buffer: at steady state
    // the paste allocates nothing.
    while (res.masks.size() > n) {
      spare_masks_.push_back(std::move(res.masks.back()));
      res.masks.pop_back();
    }
    while (res.masks.size() < n && !spare_masks_.empty()) {
      res.masks.push_back(std::move(spare_masks_.back()));
      spare_masks_.pop_back();
    }
    paste_policy(MaskProbs{probs, int(n), size_}, std::span<const Box>(final_boxes_),
                 res.image_size, cfg.mask_head->mask_threshold, res.masks);
  }

  /// Records the first image's mask levels, features and probabilities.
  void record(Trace& trace) const {
    const std::size_t d0 = rows_.count(0);
    const std::span<const int> levels = rows_.rows().levels(0);
    trace.mask_levels.assign(levels.begin(), levels.end());
    const std::span<const float> f = rows_.rows().features(0);
    trace.mask_features.assign(f.begin(),
                               f.begin() + std::ptrdiff_t(d0 * rows_.rows().roi_size()));
    const std::size_t plane = std::size_t(size_) * size_;
    trace.mask_probs.assign(probs_.begin(), probs_.begin() + std::ptrdiff_t(d0 * plane));
    trace.mask_size = size_;
  }

 private:
  DetectionRows rows_;
  std::vector<Box> final_boxes_;
  std::vector<float> probs_, kept_probs_;
  std::vector<InstanceMask> spare_masks_;  ///< parked mask buffers (see paste)
  MaskHeadOutputs out_;
  int size_ = 0;
};

}  // namespace rcnn
