#pragma once
/// \file keypoint_head_step.hpp
/// The keypoint head as a per-detection head of the Detector (Keypoint R-CNN bundles), on
/// the mechanism the mask head uses (roi_heads/detection_rows.hpp): pool the detections of
/// box inference (resized frame) with the bundle's keypoint pooler, run the keypoint head
/// through the executor (static_rois chunks) and keep each detection's heatmaps [K, S, S];
/// after postprocessing, follow its `kept` indices, decode each surviving detection's
/// heatmaps in the bundle's convention (heatmaps_to_keypoints.hpp: resized frame, from the
/// detection's resized box, as both frameworks decode before rescaling) and scale x and y
/// to the original image with the factors the boxes were scaled by.
/// Framework-free; allocation-free at steady state once reserved (the decoding's plane
/// buffer grows to the largest box seen).

#include <algorithm>
#include <cstddef>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "../concepts.hpp"
#include "../config.hpp"
#include "../detail/output_checks.hpp"
#include "../error.hpp"
#include "../postprocess/rescale_postprocess.hpp"
#include "../results.hpp"
#include "../roi_heads/detection_rows.hpp"
#include "heatmaps_to_keypoints.hpp"
#include "keypoint_types.hpp"

namespace rcnn {

class KeypointHeadStep {
 public:
  /// Set-up checks: a keypoint_rcnn bundle has its keypoint head and the executor runs it.
  template <class Exec>
  static void check(const ModelConfig& cfg) {
    if (cfg.architecture != Architecture::keypoint_rcnn) return;
    detail::require(cfg.keypoint_head.has_value() && cfg.modules.keypoint_head.has_value(),
                    "model.json: architecture \"keypoint_rcnn\" needs the keypoint_head object "
                    "and modules.keypoint_head");
    if constexpr (!KeypointExecutor<Exec>) {
      detail::fail("detector: the bundle is a Keypoint R-CNN (model.json architecture "
                   "\"keypoint_rcnn\") but the executor has no run_keypoint_head(const "
                   "TensorView&, KeypointHeadOutputs&) (concept rcnn::KeypointExecutor)");
    }
  }

  /// Capacity for `images` images of up to `detections` detections each.
  void reserve(const ModelConfig& cfg, std::size_t images, std::size_t detections) {
    rows_.reserve(cfg.keypoint_head->pooler, *cfg.modules.keypoint_head, cfg.backbone.channels,
                  images, detections);
    heatmaps_.reserve(images * detections * per_detection(*cfg.keypoint_head));
  }

  /// Pools image i's detections `dets(i)` (resized frame) for images 0..n-1.
  template <class RoIAlign, class DetsOf>
  void pool(RoIAlign& roi_align, const ModelConfig& cfg, const RoiLevels& lv,
            const BackboneOutputs& backbone, std::size_t n, DetsOf&& dets) {
    rows_.pool(roi_align, lv, backbone, n, std::forward<DetsOf>(dets), cfg.keypoint_head->pooler,
               *cfg.modules.keypoint_head, cfg.backbone.channels);
  }

  /// Runs the keypoint head over the pooled rows and keeps each detection's heatmaps.
  /// Returns the number of keypoint-head calls.
  template <class Exec>
  std::size_t run_head(Exec& exec, const ModelConfig& cfg) {
    const KeypointHeadConfig& kh = *cfg.keypoint_head;
    const std::size_t block = per_detection(kh);
    heatmaps_.resize(rows_.detections() * block);
    if constexpr (KeypointExecutor<Exec>) {
      return rows_.run(
          [&](const TensorView& in, std::size_t start, std::size_t r_n) {
            exec.run_keypoint_head(in, out_);
            detail::check_keypoint_head_outputs(cfg, out_, r_n);
            for (std::size_t r = 0; r < r_n; ++r) {
              const std::ptrdiff_t det = rows_.detection_of_row(start + r);
              if (det >= 0)
                std::copy_n(out_.heatmaps.data + r * block, block,
                            heatmaps_.data() + std::size_t(det) * block);
            }
          },
          cfg.backbone.channels, kh.pooler.resolution);
    } else {
      return 0;  // refused at set-up (check)
    }
  }

  /// Image i's keypoints: `res.detections` are the postprocessed detections (original
  /// image), `kept[k]` the index before postprocessing of detection k; `res.image_size` and
  /// `res.resized_size` are set. Fills `res.keypoints` (K per detection, original image).
  void decode(const ModelConfig& cfg, std::size_t i, std::span<const int> kept,
              DetectionResult& res) {
    const KeypointHeadConfig& kh = *cfg.keypoint_head;
    const std::size_t K = std::size_t(kh.num_keypoints);
    const std::size_t n = res.detections.size();
    check_kept(kept, n, rows_.count(i));
    const auto [sx, sy] = rescale_factors(res.resized_size, res.image_size, cfg.conventions);
    res.num_keypoints = int(K);
    res.keypoints.resize(n * K);
    for (std::size_t k = 0; k < n; ++k) {
      const std::span<Keypoint> out(res.keypoints.data() + k * K, K);
      decode_one(kh, rows_.first(i) + std::size_t(kept[k]), out);
      for (Keypoint& p : out) {
        p.x *= sx;
        p.y *= sy;
      }
    }
  }

  /// Records the first image's keypoint levels, features, heatmaps and the keypoints of
  /// every detection before postprocessing (resized frame).
  void record(const ModelConfig& cfg, Trace& trace) {
    const KeypointHeadConfig& kh = *cfg.keypoint_head;
    const std::size_t d0 = rows_.count(0), K = std::size_t(kh.num_keypoints);
    const std::span<const int> levels = rows_.rows().levels(0);
    trace.keypoint_levels.assign(levels.begin(), levels.end());
    const std::span<const float> f = rows_.rows().features(0);
    trace.keypoint_features.assign(f.begin(),
                                   f.begin() + std::ptrdiff_t(d0 * rows_.rows().roi_size()));
    trace.keypoint_heatmaps.assign(heatmaps_.begin(),
                                   heatmaps_.begin() + std::ptrdiff_t(d0 * per_detection(kh)));
    trace.keypoints_resized.resize(d0 * K);
    for (std::size_t d = 0; d < d0; ++d)
      decode_one(kh, d, std::span<Keypoint>(trace.keypoints_resized.data() + d * K, K));
  }

 private:
  static std::size_t per_detection(const KeypointHeadConfig& kh) {
    return std::size_t(kh.num_keypoints) * std::size_t(kh.heatmap_size) * kh.heatmap_size;
  }

  /// Decodes detection `det` (numbered across the batch) in the resized frame.
  void decode_one(const KeypointHeadConfig& kh, std::size_t det, std::span<Keypoint> out) {
    heatmaps_to_keypoints(heatmaps_.data() + det * per_detection(kh), kh.num_keypoints,
                          kh.heatmap_size, rows_.box(det), kh.decode, workspace_, out);
  }

  DetectionRows rows_;
  std::vector<float> heatmaps_;  ///< [detections, K, S, S]
  KeypointHeadOutputs out_;
  KeypointDecodeWorkspace workspace_;
};

}  // namespace rcnn
